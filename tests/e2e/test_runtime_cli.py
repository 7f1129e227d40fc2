"""``wm-ray train`` on the Ray runtime as a user runs it: a killed driver, SIGTERM, --resume.

Each ``wm-ray train`` here starts its own embedded local Ray cluster (the default), so killing
the command kills its whole cluster, as when a laptop run is interrupted.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from wm_ray.rundir import checkpoint as ckpt

pytestmark = pytest.mark.slow

WM_RAY = [sys.executable, "-m", "wm_ray.cli"]
ARGS = [
    "--configs",
    "debug",
    "size_debug",
    "--env",
    "fake:vector-discrete",
    "--set",
    "env.num_envs=2",
    "replay.chunk_len=16",
    "replay.batch_size=4",
    "replay.seq_len=8",
    "replay.min_size=64",
    "replay.samples_per_insert=4",
    "run.checkpoint_every=128",
    "eval.every=256",
    "logging.every=64",
    "logging.tensorboard=false",
    "--quiet",
]


def records(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def start(run_dir: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*WM_RAY, "train", *ARGS, "--run-dir", str(run_dir), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(condition: Any, proc: subprocess.Popen[str], what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"wm-ray exited ({proc.returncode}) before {what}: {proc.stdout}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def latest_step(run_dir: Path) -> int:
    try:
        path = ckpt.latest_checkpoint(run_dir)
    except ckpt.CheckpointError:
        return -1
    return -1 if path is None else int(path.name.split("-")[1])


def test_killed_driver_resumes_and_sigterm_stops_with_a_final_checkpoint(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    # 1. SIGKILL the driver (and with it its embedded cluster) after the first checkpoint.
    proc = start(run_dir, "--steps", "640")
    wait_for(lambda: latest_step(run_dir) >= 128, proc, "the first checkpoint")
    proc.kill()
    proc.wait(timeout=30)
    first = ckpt.latest_checkpoint(run_dir)
    assert first is not None
    saved = ckpt.load_state(first)["counters"]
    assert saved["env_steps"] >= 128 and saved["updates"] > 0

    # 2. Resume; SIGTERM it once it has logged past 384 steps: it checkpoints and exits 130.
    proc = start(run_dir, "--resume", "--steps", "640")
    wait_for(lambda: any(r["step"] >= 384 for r in records(run_dir)), proc, "384 steps")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    stopped = ckpt.latest_checkpoint(run_dir)
    assert stopped is not None
    state = ckpt.load_state(stopped)
    counters = state["counters"]
    assert counters["env_steps"] >= 384 and int(stopped.name.split("-")[1]) == counters["env_steps"]
    assert counters["updates"] >= saved["updates"]
    # Every step counted by then is in the replay shard (flushed, nothing in flight).
    assert state["shards"][0]["counters"]["inserted_steps"] >= counters["env_steps"]

    # 3. Resume to the end: counters continue from the checkpoint, never restart from zero.
    result = subprocess.run(
        [*WM_RAY, "train", "--run-dir", str(run_dir), "--resume", "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    log = records(run_dir)
    resumed = [r for r in log if r["step"] > counters["env_steps"] and "counters/updates" in r]
    assert resumed and min(r["counters/updates"] for r in resumed) >= counters["updates"]
    final = ckpt.load_state(ckpt.latest_checkpoint(run_dir) or run_dir)["counters"]
    assert final["env_steps"] == 640 and final["episodes"] >= counters["episodes"]
    losses = [v for r in log for k, v in r.items() if k.startswith("train/loss/")]
    assert losses and all(math.isfinite(v) for v in losses)
