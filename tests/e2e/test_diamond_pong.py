"""DIAMOND on real ALE Pong at toy sizes, through the CLI: collect -> denoiser, reward /
termination model and actor-critic -> checkpoint -> resume, with every logged loss finite,
then ``wm-ray play`` dreams a video from a real frame (scripted and keyboard actions)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from wm_ray.metrics import read_jsonl
from wm_ray.rundir import checkpoint as ckpt

pytestmark = pytest.mark.slow

ARGS = [
    "--configs", "diamond", "atari", "diamond_debug", "debug",
    "--set", "run.device=cpu", "env.num_envs=2", "replay.min_size=128",
    "replay.samples_per_insert=16", "run.checkpoint_every=250", "eval.every=0",
    "env.time_limit=100", "env.image_size=16", "logging.every=50", "logging.tensorboard=false",
]  # fmt: skip


def wm_ray(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wm_ray.cli", *args], capture_output=True, text=True, timeout=900
    )


def test_diamond_pong_trains_checkpoints_resumes_and_dreams(tmp_path: Path) -> None:
    run_dir = tmp_path / "diamond"
    result = wm_ray(
        "train", *ARGS, "--single-process", "--steps", "300", "--run-dir", str(run_dir), "--quiet"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_jsonl(run_dir / "metrics.jsonl")
    train = [(k, v) for r in records for k, v in r.items() if k.startswith("train/")]
    for part in (
        "train/loss/denoiser/total",
        "train/loss/reward_end/total",
        "train/loss/actor/total",
    ):
        assert any(k == part for k, _ in train), f"no {part} logged: {records[-1]}"
    assert all(v is not None and math.isfinite(v) for _, v in train)
    first = ckpt.load_state(ckpt.latest_checkpoint(run_dir))  # type: ignore[arg-type]
    assert first["counters"]["env_steps"] == 300 and first["counters"]["updates"] > 20

    result = wm_ray(
        "train", "--run-dir", str(run_dir), "--resume", "--single-process", "--steps", "400"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    second = ckpt.load_state(ckpt.latest_checkpoint(run_dir))  # type: ignore[arg-type]
    assert second["counters"]["env_steps"] == 400
    assert second["counters"]["updates"] > first["counters"]["updates"]

    video = tmp_path / "dream.mp4"
    result = wm_ray(
        "play", "--run-dir", str(run_dir), "--steps", "12", "--actions", "2,3", "--warmup", "5",
        "--out", str(video),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "dreamed 12 steps" in result.stdout and video.stat().st_size > 0
    keyboard = subprocess.run(
        [sys.executable, "-m", "wm_ray.cli", "play", "--run-dir", str(run_dir), "--keyboard"],
        input="2\n\n3\nq\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert keyboard.returncode == 0, keyboard.stderr[-3000:]
    assert "dreamed 3 steps" in keyboard.stdout
