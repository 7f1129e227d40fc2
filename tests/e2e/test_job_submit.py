"""`ray job submit` against a token-auth Ray head started by deploy/local_cluster.sh.

The head runs as its own set of processes (its own temp dir and non-default ports), so it does
not collide with the `ray.init()` cluster that tests/integration starts in the same session.
This module never imports ray: everything goes through the CLI and the dashboard's HTTP API,
as a user on another machine would do it.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "local_cluster.sh"

# Away from Ray's defaults (6379, 8265, 52365, 10001, workers 10002-19999), which a
# `ray.init()` or `ray start` cluster elsewhere on the machine may be using.
PORTS = {
    "WM_RAY_PORT": "6390",
    "WM_RAY_DASHBOARD_PORT": "8290",
    "WM_RAY_AGENT_PORT": "52390",
    "WM_RAY_CLIENT_PORT": "20090",
    "WM_RAY_MIN_WORKER_PORT": "20100",
    "WM_RAY_MAX_WORKER_PORT": "20199",
}
DASHBOARD = f"http://127.0.0.1:{PORTS['WM_RAY_DASHBOARD_PORT']}"
# Submission ids of the jobs the tests below submit (in any order).
OUR_JOBS = {"wm-ray-e2e-ok", "wm-ray-e2e-train", "wm-ray-e2e-submit", "wm-ray-e2e-bad-preset"}

JOB_SCRIPT = """\
import sys
from pathlib import Path

import ray

ray.init()  # inside a job: RAY_ADDRESS and the auth settings come from the head


@ray.remote
def touch(path: str) -> str:
    Path(path).write_text("ok")
    return path


print("E2E_MARKER", ray.get(touch.remote(sys.argv[1])), ray.cluster_resources()["CPU"])
"""


def _ray_bin() -> str | None:
    venv_ray = REPO / ".venv" / "bin" / "ray"
    if venv_ray.is_file() and os.access(venv_ray, os.X_OK):
        return str(venv_ray)
    return shutil.which("ray")


def _clean_env() -> dict[str, str]:
    """The test process's environment without any RAY_* setting (a `ray.init()` earlier in the
    session sets RAY_AUTH_MODE in os.environ, for instance)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}


@dataclass
class Head:
    ray_bin: str
    client_env: dict[str, str]  # what `local_cluster.sh env` exports, on top of a clean env
    token: str

    def ray(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120):
        return subprocess.run(
            [self.ray_bin, *args],
            env=self.client_env if env is None else env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def api(self, path: str, token: str | None) -> tuple[int, str]:
        request = urllib.request.Request(DASHBOARD + path)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()


@pytest.fixture(scope="module")
def head() -> Iterator[Head]:
    ray_bin = _ray_bin()
    if ray_bin is None:
        pytest.skip("the `ray` CLI is not installed")
    if not sys.platform.startswith("linux") or shutil.which("setsid") is None:
        pytest.skip("deploy/local_cluster.sh needs Linux (/proc, setsid)")

    # Short path: Ray puts unix sockets under the temp dir (108-byte limit).
    cluster_dir = tempfile.mkdtemp(prefix="wmrj-", dir="/tmp")
    script_env = {
        **_clean_env(),
        **PORTS,
        "RAY_BIN": ray_bin,
        "WM_RAY_CPUS": "2",
        "WM_RAY_CLUSTER_DIR": cluster_dir,
        "WM_RAY_STOP_GRACE": "2",
    }

    def script(command: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(SCRIPT), command],
            env=script_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    try:
        started = script("start", timeout=150)
        assert started.returncode == 0, f"start failed:\n{started.stdout}\n{started.stderr}"
        exports = dict(
            shlex.split(line)[1].split("=", 1)
            for line in started.stdout.splitlines()
            if line.startswith("export ")
        )
        assert exports["RAY_AUTH_MODE"] == "token", started.stdout
        assert exports["RAY_API_SERVER_ADDRESS"] == DASHBOARD, started.stdout
        assert script("env", timeout=30).stdout == started.stdout
        token = Path(exports["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
        yield Head(ray_bin=ray_bin, client_env={**_clean_env(), **exports}, token=token)
    finally:
        stopped = script("stop", timeout=60)
        shutil.rmtree(cluster_dir, ignore_errors=True)
        assert stopped.returncode == 0, stopped.stderr


def test_submitted_job_connects_with_token_and_runs_a_task(head: Head, tmp_path: Path) -> None:
    workdir = tmp_path / "job"
    workdir.mkdir()
    (workdir / "script.py").write_text(JOB_SCRIPT)
    marker = tmp_path / "marker.txt"

    result = head.ray(
        "job",
        "submit",
        "--submission-id",
        "wm-ray-e2e-ok",
        "--working-dir",
        str(workdir),
        "--",
        "python",
        "script.py",
        str(marker),
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"E2E_MARKER {marker} 2.0" in output, output
    assert marker.read_text() == "ok"

    status, body = head.api("/api/jobs/wm-ray-e2e-ok", head.token)
    assert status == 200, body
    assert json.loads(body)["status"] == "SUCCEEDED", body


def test_clients_without_the_right_token_are_refused(head: Head, tmp_path: Path) -> None:
    (tmp_path / "script.py").write_text("print('must not run')\n")
    submit = ("job", "submit", "--working-dir", str(tmp_path), "--", "python", "script.py")
    address = {"RAY_API_SERVER_ADDRESS": DASHBOARD}

    # No auth settings at all: the CLI sends no Authorization header (it only does so when
    # RAY_AUTH_MODE=token in the client's own environment).
    missing = head.ray(*submit, env={**_clean_env(), **address})
    assert missing.returncode != 0
    assert "Unauthorized: Missing authentication token" in missing.stderr, missing.stderr

    wrong = head.ray(
        *submit,
        env={**_clean_env(), **address, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64},
    )
    assert wrong.returncode != 0
    assert "Forbidden: Invalid authentication token" in wrong.stderr, wrong.stderr

    assert head.api("/api/jobs/", None)[0] == 401
    assert head.api("/api/jobs/", "0" * 64)[0] == 403
    status, body = head.api("/api/jobs/", head.token)
    assert status == 200, body
    submitted = {job["submission_id"] for job in json.loads(body) if job["type"] == "SUBMISSION"}
    assert "wm-ray-e2e-ok" in submitted or not submitted, body
    assert not submitted - OUR_JOBS, body  # the refused submissions created no job


def _small_run(run_dir: Path, name: str) -> list[str]:
    """`wm-ray train` arguments of a run that fits the head's 2 CPUs and takes seconds."""
    return [
        "--configs", "debug", "size_debug", "--env", "fake:vector-discrete", "--steps", "256",
        "--run-dir", str(run_dir), "--set", f"run.name={name}", "env.num_envs=2",
        "replay.chunk_len=16", "replay.batch_size=4", "replay.seq_len=8", "replay.min_size=64",
        "replay.samples_per_insert=2", "eval.episodes=1", "logging.tensorboard=false",
        "resources.cpus_per_learner=1",  # the head has 2 CPUs: learner 1 + env worker 1
    ]  # fmt: skip


def test_wm_ray_train_runs_as_a_submitted_job(head: Head, tmp_path: Path) -> None:
    """`ray job submit -- wm-ray train --address auto ...`: the run joins the head's cluster,
    names its actors with the run name, and leaves a checkpoint and metrics in --run-dir."""
    run_dir = tmp_path / "run"
    train = [sys.executable, "-m", "wm_ray.cli", "train", "--address", "auto", "--quiet"]
    settings = _small_run(run_dir, "e2ejob")
    result = head.ray(
        "job", "submit", "--submission-id", "wm-ray-e2e-train", "--", *train, *settings,
        timeout=300,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "done: 256 env steps" in output, output
    assert (run_dir / "checkpoints" / "latest").is_file(), output
    last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["counters/env_steps"] == last["counters/acked_steps"] == 256
    status, body = head.api("/api/jobs/wm-ray-e2e-train", head.token)
    assert status == 200 and json.loads(body)["status"] == "SUCCEEDED", body


def _wm_ray(head: Head, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The `wm-ray` CLI as a client on this machine, with `local_cluster.sh env`'s settings."""
    return subprocess.run(
        [sys.executable, "-m", "wm_ray.cli", *args],
        env=head.client_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def test_wm_ray_submit_runs_training_and_follows_it(head: Head, tmp_path: Path) -> None:
    """`wm-ray submit -- <train args>`: submits `wm-ray train --address auto ...` through the
    job API with the token from the environment, streams the job's output, exits 0 on success,
    and the run dir holds metrics and a checkpoint."""
    run_dir = tmp_path / "run"
    result = _wm_ray(
        head,
        "submit",
        "--address",  # explicit, over RAY_API_SERVER_ADDRESS / RAY_ADDRESS of the environment
        DASHBOARD,
        "--submission-id",
        "wm-ray-e2e-submit",
        "--",
        "--quiet",
        *_small_run(run_dir, "e2esubmit"),
        "--set",  # no eval worker: one actor process less to start
        "resources.eval_workers=0",
        "eval.every=0",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "submitted job wm-ray-e2e-submit" in result.stdout, output
    assert "done: 256 env steps" in result.stdout, output  # the job's own output, streamed
    assert "job wm-ray-e2e-submit SUCCEEDED" in result.stdout, output
    assert (run_dir / "checkpoints" / "latest").is_file(), output
    last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["counters/env_steps"] == 256
    status, body = head.api("/api/jobs/wm-ray-e2e-submit", head.token)
    assert status == 200, body
    job = json.loads(body)
    assert job["status"] == "SUCCEEDED", body
    assert job["entrypoint"].startswith("wm-ray train --address auto --quiet "), body


def test_wm_ray_submit_fails_clearly_on_a_bad_preset(head: Head, tmp_path: Path) -> None:
    run_dir = str(tmp_path / "never")
    bad = ["--configs", "debug", "nosuchpreset", "--run-dir", run_dir]

    # Checked locally first: nothing reaches the cluster.
    local = _wm_ray(head, "submit", "--submission-id", "wm-ray-e2e-not-sent", "--", *bad)
    assert local.returncode == 2, local.stdout + local.stderr
    assert "unknown preset 'nosuchpreset'" in local.stderr, local.stderr
    assert head.api("/api/jobs/wm-ray-e2e-not-sent", head.token)[0] == 404

    # Sent anyway (--no-check; the address comes from RAY_API_SERVER_ADDRESS): the job fails on
    # the cluster and `wm-ray submit` says so, with the job's last log lines.
    remote = _wm_ray(
        head, "submit", "--no-check", "--submission-id", "wm-ray-e2e-bad-preset", "--", *bad
    )
    assert remote.returncode == 1, remote.stdout + remote.stderr
    assert "job wm-ray-e2e-bad-preset FAILED" in remote.stderr, remote.stderr
    assert "unknown preset 'nosuchpreset'" in remote.stderr.split("last ", 1)[-1], remote.stderr
    status, body = head.api("/api/jobs/wm-ray-e2e-bad-preset", head.token)
    assert status == 200 and json.loads(body)["status"] == "FAILED", body
    assert not Path(run_dir).exists()
