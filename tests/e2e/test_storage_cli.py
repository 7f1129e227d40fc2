"""``wm-ray train/eval --run-dir URI`` as a user runs it, with a new machine in between.

The "remote" is a directory reached through a ``file://`` URI; each "machine" is its own
staging root (``WM_RAY_STAGING``), and the first one is deleted before the run resumes. The
random agent keeps it fast: what is tested is the storage, not learning (the unit tests in
``tests/unit/test_storage.py`` move multi-MiB binary checkpoints).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from wm_ray.config_io import load_config
from wm_ray.metrics import read_jsonl
from wm_ray.rundir import checkpoint as ckpt

ARGS = [
    "--configs",
    "debug",
    "--env",
    "fake:vector-discrete",
    "--set",
    "run.model=random",
    "env.num_envs=2",
    "replay.chunk_len=16",
    "replay.min_size=64",
    "replay.samples_per_insert=8",
    "run.checkpoint_every=96",
    "eval.every=0",
    "eval.episodes=1",
    "logging.every=32",
    "logging.tensorboard=false",
    "--quiet",
]


def wm_ray(staging: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WM_RAY_STAGING": str(staging)}
    return subprocess.run(
        [sys.executable, "-m", "wm_ray.cli", *args], capture_output=True, text=True, env=env
    )


def test_a_uri_run_resumes_and_evaluates_from_fresh_machines(tmp_path: Path) -> None:
    remote = tmp_path / "remote" / "run1"
    uri = remote.as_uri()
    machine_a, machine_b, machine_c = (tmp_path / m for m in ("a", "b", "c"))

    result = wm_ray(
        machine_a, "train", *ARGS, "--single-process", "--steps", "160", "--run-dir", uri
    )
    assert result.returncode == 0, result.stderr
    assert f"synced to:  {uri}" in result.stdout
    assert load_config(remote).run.run_dir == uri
    first = read_jsonl(remote / "metrics.jsonl")
    assert first[-1]["step"] == 160
    assert (remote / "checkpoints/latest").read_text().strip() == "step-000000000160"
    assert list((remote / "replay/shard-0").glob("*.chunk"))
    shutil.rmtree(machine_a)  # the first machine is gone

    result = wm_ray(
        machine_b, "train", "--run-dir", uri, "--resume", "--single-process", "--steps", "224"
    )
    assert result.returncode == 0, result.stderr
    assert "done: 224 env steps" in result.stdout
    assert "resumed from" in result.stderr and "at 160 env steps" in result.stderr
    records = read_jsonl(remote / "metrics.jsonl")
    assert len(records) > len(first) and records[: len(first)] == first
    assert records[-1]["step"] == 224
    assert (remote / "checkpoints/latest").read_text().strip() == "step-000000000224"
    meta = ckpt.verify_checkpoint(remote / "checkpoints/step-000000000224")
    assert meta["step"] == 224
    state = ckpt.load_state(remote / "checkpoints/step-000000000224")
    assert state["counters"]["env_steps"] == 224 and state["counters"]["updates"] > 0
    assert load_config(remote).run.steps == 224

    result = wm_ray(machine_c, "eval", "--run-dir", uri, "--episodes", "1")
    assert result.returncode == 0, result.stderr
    assert "over 1 episodes" in result.stdout and "step-000000000224" in result.stdout
    assert any(machine_c.iterdir()), "eval worked in its own staging dir"

    result = wm_ray(machine_c, "train", *ARGS, "--steps", "160", "--run-dir", uri)
    assert result.returncode == 2 and "already holds a run" in result.stderr
    result = wm_ray(machine_c, "eval", "--run-dir", "nosuch://bucket/run")
    assert result.returncode == 2 and "'nosuch://bucket/run' cannot be opened" in result.stderr
