"""The benchmark suite: every benchmark in order, then the expected-speed table.

    python -m benchmarks.suite [--only NAME ...] [--skip NAME ...] [--peer-budget-minutes 15]
        [--keep-going] [--dry-run]

``make bench`` and ``wm-ray bench`` both run this module; ``STEPS`` below is the one list of
benchmark steps. Each step runs as ``<this python> ARGV...`` in the repository root, one after
the other, with a header and its wall time. The first failing step stops the suite (exit 1)
unless ``--keep-going``, which runs every step and exits 1 at the end naming the failed ones.

Step selection: steps always run in the order of ``STEPS`` whatever the order on the command
line. ``--only`` picks steps; ``summary`` (which regenerates the README's expected-speed table
and ``results/<tag>/SUMMARY.md`` from the JSON) is implicit and still runs last, so
``--only learner`` runs ``learner`` then ``summary``; ``--skip summary`` leaves it out.
``--skip`` drops steps from what ``--only`` (or the full list) selected.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PEER_BUDGET_MINUTES = 15.0
SUMMARY = "summary"


@dataclass(frozen=True)
class Step:
    name: str
    argv: tuple[str, ...]
    """Arguments after the Python interpreter, relative to the repository root; the
    placeholder ``{peer_budget_minutes}`` is filled in by ``build_steps``."""
    description: str


STEPS: tuple[Step, ...] = (
    Step(
        "replay",
        ("benchmarks/replay_bench.py",),
        "replay insert steps/s (memory and persisted) and sample time vs a numpy gather",
    ),
    Step(
        "learner",
        ("benchmarks/learner_bench.py", "--sizes", "default", "debug", "xs", "--modes", "compiled"),
        "learner updates/s per family and size, eager and the compiled update",
    ),
    Step(
        "compile",
        ("benchmarks/compile_bench.py",),
        "the compiled update from a cold cache: warm-up, its parts, kernels, speed-up and "
        "payback of the whole-update graphs and of per-step regions",
    ),
    Step(
        "learner_presets",
        ("benchmarks/learner_bench.py", "--families", "presets"),
        "learner updates/s of the other families' learning-run configurations (PlaNet, "
        "ModularRSSM per backbone)",
    ),
    Step(
        "cem",
        ("benchmarks/cem_bench.py",),
        "CEM planning latency per vector step: one batched call for 16 envs vs a per-env loop",
    ),
    Step(
        "profile",
        ("benchmarks/profile_update.py",),
        "where a Dreamer update's time goes: phases and top operators (torch profiler)",
    ),
    Step(
        "runtime",
        ("benchmarks/runtime_bench.py",),
        "Ray runtime costs: env-worker overhead, worker scaling, weight latency, prefetch",
    ),
    Step(
        "worker_memory",
        ("benchmarks/worker_memory_bench.py",),
        "env worker memory: the acting-only agent vs the whole learner",
    ),
    Step(
        "iris",
        ("benchmarks/iris_bench.py",),
        "IRIS imagination speed: KV-cached token sampling vs recomputing the context",
    ),
    Step(
        "iris_tokenizer",
        ("-m", "benchmarks.iris_tokenizer_bench"),
        "IRIS tokenizer on real Pong frames: reconstruction and codebook use, grad vs EMA",
    ),
    Step(
        "peer",
        (
            "benchmarks/peer_rllib_bench.py",
            "--budget-minutes",
            "{peer_budget_minutes}",
        ),
        "wm_ray's Dreamer against RLlib's DreamerV3 (per update, and CartPole learning runs)",
    ),
    Step(
        SUMMARY,
        ("-m", "benchmarks.summary"),
        "regenerate the README's expected-speed table and results/<tag>/SUMMARY.md",
    ),
)

STEP_NAMES: tuple[str, ...] = tuple(step.name for step in STEPS)

CHILD_ENV_DEFAULTS = {"MUJOCO_GL": "egl", "RAY_USAGE_STATS_ENABLED": "0"}
"""Set for the steps unless already set, as the Makefile exports them (plus PYOPENGL_PLATFORM
following MUJOCO_GL), so ``wm-ray bench`` outside make runs them the same way."""


def _check_names(names: Iterable[str], option: str) -> None:
    for name in names:
        if name not in STEP_NAMES:
            raise ValueError(
                f"unknown benchmark step {name!r} in {option}; valid steps: {', '.join(STEP_NAMES)}"
            )


def build_steps(
    only: Sequence[str] | None = None,
    skip: Sequence[str] = (),
    peer_budget_minutes: float = DEFAULT_PEER_BUDGET_MINUTES,
) -> list[Step]:
    """The steps to run, in suite order, with their options filled in.

    ``only``: these steps (``summary`` is added unless skipped); ``None`` or empty: all.
    ``skip``: left out. An unknown name raises ``ValueError`` naming it and the valid names.
    """
    _check_names(only or (), "--only")
    _check_names(skip, "--skip")
    if not peer_budget_minutes > 0:
        raise ValueError(f"--peer-budget-minutes must be positive, got {peer_budget_minutes}")
    wanted = set(only or STEP_NAMES) | {SUMMARY}
    fill = {"peer_budget_minutes": f"{peer_budget_minutes:g}"}
    return [
        Step(step.name, tuple(arg.format(**fill) for arg in step.argv), step.description)
        for step in STEPS
        if step.name in wanted and step.name not in skip
    ]


def command(step: Step, python: str = sys.executable) -> list[str]:
    return [python, *step.argv]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    for key, value in CHILD_ENV_DEFAULTS.items():
        env.setdefault(key, value)
    env.setdefault("PYOPENGL_PLATFORM", env["MUJOCO_GL"])
    return env


def run_child(cmd: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> int:
    """Run ``cmd`` to its end: its exit code. Interrupted (Ctrl-C, or SIGTERM turned into
    KeyboardInterrupt by ``main``), the child is terminated and waited for, then it re-raises,
    so no benchmark is left running behind the suite."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s"


def run_steps(
    steps: Sequence[Step],
    *,
    root: Path = ROOT,
    keep_going: bool = False,
    dry_run: bool = False,
    python: str = sys.executable,
    out: TextIO | None = None,
) -> int:
    """Run ``steps`` one by one in ``root``: 0 when all succeeded, else 1 (stopping at the
    first failure unless ``keep_going``). ``dry_run`` only prints the commands."""
    out = out or sys.stdout
    print(
        f"benchmark suite in {root}: {', '.join(s.name for s in steps)}"
        + (" (dry run: nothing runs)" if dry_run else ""),
        file=out,
    )
    failed: list[tuple[str, int]] = []
    start = time.monotonic()
    env = child_env()
    for i, step in enumerate(steps, 1):
        cmd = command(step, python)
        print(f"==> [{i}/{len(steps)}] {step.name}: {step.description}", file=out)
        print(f"    $ {shlex.join(cmd)}", file=out, flush=True)
        if dry_run:
            continue
        step_start = time.monotonic()
        code = run_child(cmd, root, env)
        took = _duration(time.monotonic() - step_start)
        if code == 0:
            print(f"<== {step.name}: ok in {took}", file=out, flush=True)
            continue
        failed.append((step.name, code))
        print(f"<== {step.name}: FAILED (exit {code}) after {took}", file=out, flush=True)
        if not keep_going:
            rest = [s.name for s in steps[i:]]
            print(
                f"benchmark suite: step {step.name!r} failed (exit {code}); stopped"
                + (f", not run: {', '.join(rest)} (--keep-going runs them)" if rest else ""),
                file=sys.stderr,
            )
            return 1
    if dry_run:
        return 0
    total = _duration(time.monotonic() - start)
    if failed:
        names = ", ".join(f"{name} (exit {code})" for name, code in failed)
        print(
            f"benchmark suite: {len(failed)} of {len(steps)} steps failed: {names} (total {total})",
            file=sys.stderr,
        )
        return 1
    print(f"benchmark suite: {len(steps)} steps ok in {total}", file=out)
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.suite",
        description="Run the benchmark suite (as make bench); summary runs last unless skipped.",
        epilog="steps, in order: "
        + "; ".join(f"{step.name}: {step.description}" for step in STEPS),
    )
    parser.add_argument(
        "--only",
        nargs="+",
        action="extend",
        metavar="NAME",
        default=None,
        help="run only these steps (summary still runs last unless --skip summary)",
    )
    parser.add_argument(
        "--skip", nargs="+", action="extend", metavar="NAME", default=[], help="leave out steps"
    )
    parser.add_argument(
        "--peer-budget-minutes",
        type=float,
        default=DEFAULT_PEER_BUDGET_MINUTES,
        metavar="MIN",
        help="wall-clock budget of each CartPole learning run in the peer step "
        f"(default {DEFAULT_PEER_BUDGET_MINUTES:g})",
    )
    parser.add_argument(
        "--keep-going",
        action="store_true",
        help="run every step even after a failure (exit 1 at the end naming the failed ones)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the commands without running them"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        steps = build_steps(args.only, args.skip, args.peer_budget_minutes)
    except ValueError as err:
        parser.error(str(err))  # usage error: exit 2
    if not steps:
        parser.error("no step left to run")

    def _terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM stops the running step as Ctrl-C does

    signal.signal(signal.SIGTERM, _terminate)
    try:
        return run_steps(steps, keep_going=args.keep_going, dry_run=args.dry_run)
    except KeyboardInterrupt:
        print("benchmark suite: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
