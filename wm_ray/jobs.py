"""``wm-ray submit``: a training run as a job on a Ray cluster, followed to its end.

The command line (``wm_ray.cli``) checks the ``wm-ray train`` arguments locally; this module
talks to the cluster's job API (``ray.job_submission``): submit, stream the logs, report the
final status with the last log lines of a failed job. Token auth comes from the environment as
for ``ray job submit``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

SUBMIT_DEFAULT_ADDRESS = "http://127.0.0.1:8265"
"""Job API used by ``wm-ray submit`` when neither --address nor the environment names one."""
ADDRESS_VARIABLES = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
"""Where Ray's job client looks for the cluster (in this order); they override its argument."""


def submit_and_follow(args: argparse.Namespace, entrypoint: str, run_dir: str) -> int:
    """Submit ``entrypoint`` to the job API of ``args.address`` (see :data:`ADDRESS_VARIABLES`)
    and, unless ``args.no_wait``, stream its logs until it ends: 0 when it succeeded, 1 (with
    its status and last ``args.tail_lines`` log lines) otherwise, 130 when interrupted."""
    import asyncio
    import os
    import time

    from ray.exceptions import RayError
    from ray.job_submission import JobStatus, JobSubmissionClient

    # Ray's client lets RAY_API_SERVER_ADDRESS / RAY_ADDRESS override its address argument;
    # an explicit --address wins here, so hide them while the client resolves it.
    hidden: dict[str, str] = {}
    address = args.address
    if address is not None:
        hidden = {k: os.environ.pop(k) for k in ADDRESS_VARIABLES if k in os.environ}
    elif not any(k in os.environ for k in ADDRESS_VARIABLES):
        address = SUBMIT_DEFAULT_ADDRESS
    runtime_env: dict[str, object] = {}
    if args.working_dir:
        runtime_env = {"working_dir": args.working_dir, "excludes": [".git"]}
    try:
        client = JobSubmissionClient(address)
        job_id = client.submit_job(
            entrypoint=entrypoint,
            submission_id=args.submission_id,
            runtime_env=runtime_env or None,
            metadata={"wm_ray": "train", "run_dir": run_dir},
        )
    except (ConnectionError, RuntimeError, RayError) as err:
        print(
            f"wm-ray: error: submitting to {address or 'the cluster'} failed: {err}",
            file=sys.stderr,
        )
        return 1
    finally:
        os.environ.update(hidden)
    print(f"wm-ray: submitted job {job_id} to {client.get_address()}: {entrypoint}", flush=True)
    if args.no_wait:
        print(f"follow it with: ray job logs --follow {job_id}   (status: ray job status {job_id})")
        return 0

    async def follow() -> None:
        async for lines in client.tail_job_logs(job_id):
            print(lines, end="", flush=True)

    try:
        try:
            asyncio.run(follow())
        except RuntimeError as err:  # the log stream broke off: the status below still counts
            print(f"wm-ray: log stream ended: {err}", file=sys.stderr)
        status = client.get_job_status(job_id)
        while not status.is_terminal():
            time.sleep(1.0)
            status = client.get_job_status(job_id)
    except KeyboardInterrupt:
        print(
            f"wm-ray: stopped following; job {job_id} keeps running "
            f"(ray job stop {job_id} ends it)",
            file=sys.stderr,
        )
        return 130
    except (ConnectionError, RayError) as err:
        print(
            f"wm-ray: error: lost the cluster while following job {job_id}: {err}", file=sys.stderr
        )
        return 1
    if status == JobStatus.SUCCEEDED:
        print(f"wm-ray: job {job_id} SUCCEEDED")
        return 0
    # Ray's message on a failed entrypoint repeats up to 20,000 characters of its logs: keep
    # its first line, then the last log lines.
    reason = (client.get_job_info(job_id).message or "").strip().split("\n", 1)[0]
    reason = reason.split(", last available logs", 1)[0]
    lines = client.get_job_logs(job_id).rstrip("\n").splitlines()
    tail = lines[-args.tail_lines :] if args.tail_lines > 0 else []
    print(
        f"wm-ray: job {job_id} {status.value}"
        + (f": {reason}" if reason else "")
        + (f"\n  last {len(tail)} log lines:\n    " + "\n    ".join(tail) if tail else ""),
        file=sys.stderr,
    )
    return 1


def add_submit_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``submit`` subcommand's parser (its ``func`` is set by the caller)."""
    p: argparse.ArgumentParser = sub.add_parser(
        "submit",
        help="run `wm-ray train ARGS` as a job on a Ray cluster and follow it",
        description="Submit `wm-ray train TRAIN_ARGS` (with --address auto added) to a Ray "
        "cluster's job API and stream its logs until it ends; exit 0 if it succeeded. Token "
        "auth comes from the environment as for `ray job submit` (RAY_AUTH_MODE=token and "
        "RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN).",
        usage="wm-ray submit [options] -- TRAIN_ARGS...",
    )
    p.add_argument(
        "--address",
        default=None,
        help=f"the cluster's job API, e.g. {SUBMIT_DEFAULT_ADDRESS} (default: "
        f"$RAY_API_SERVER_ADDRESS, then $RAY_ADDRESS, then {SUBMIT_DEFAULT_ADDRESS})",
    )
    p.add_argument(
        "--working-dir",
        default=None,
        help="upload this directory as the job's working dir (its code is imported first); "
        "default: the cluster's installed wm_ray",
    )
    p.add_argument("--submission-id", default=None, help="job id (default: chosen by Ray)")
    p.add_argument("--no-wait", action="store_true", help="return once the job is submitted")
    p.add_argument(
        "--no-check",
        action="store_true",
        help="skip building the config locally first (presets that exist only on the cluster)",
    )
    p.add_argument(
        "--tail-lines",
        type=int,
        default=20,
        help="log lines repeated when the job fails (default 20)",
    )
    p.add_argument(
        "train_args",
        nargs=argparse.REMAINDER,
        metavar="TRAIN_ARGS",
        help="after --: arguments of `wm-ray train`; --run-dir must be absolute or a URI",
    )
    return p
