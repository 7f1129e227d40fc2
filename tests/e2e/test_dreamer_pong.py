"""CI smoke test: Dreamer (debug size) on ALE Pong through the CLI.

collect -> train -> eval -> checkpoint -> resume, checking that every logged loss is finite and
that the resumed run continues the counters; ``wm-ray eval`` of the best and the latest
checkpoint; a resume with a changed config is refused without ``--allow-config-change``.
Tiny batches keep it to about a minute.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

from wm_ray.metrics import read_jsonl
from wm_ray.rundir import checkpoint as ckpt

ARGS = [
    "--configs", "dreamer", "atari", "size_debug", "debug",
    "--set", "run.device=cpu", "env.num_envs=2", "replay.batch_size=4", "replay.seq_len=16",
    "replay.min_size=256", "replay.samples_per_insert=16", "run.checkpoint_every=300",
    "eval.every=400", "eval.episodes=1", "eval.num_envs=1", "env.time_limit=200",
    "logging.every=100", "logging.tensorboard=false",
]  # fmt: skip


def wm_ray(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wm_ray.cli", *args], capture_output=True, text=True, timeout=600
    )


def test_dreamer_pong_trains_evaluates_checkpoints_and_resumes(tmp_path: Path) -> None:
    run_dir = tmp_path / "pong"
    result = wm_ray("train", *ARGS, "--steps", "600", "--run-dir", str(run_dir), "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_jsonl(run_dir / "metrics.jsonl")
    losses = [(k, v) for r in records for k, v in r.items() if k.startswith("train/loss/")]
    assert losses, "no training happened"
    assert all(v is not None and math.isfinite(v) for _, v in losses), losses
    assert any("eval/return" in r for r in records)
    first = ckpt.load_state(ckpt.latest_checkpoint(run_dir))  # type: ignore[arg-type]
    assert first["counters"]["env_steps"] == 600 and first["counters"]["updates"] > 0
    assert list((run_dir / "videos").glob("eval-*.mp4")), "image task without an eval video"
    assert (run_dir / "curve.png").is_file() and "checkpoint:" in result.stdout
    result = wm_ray("eval", "--run-dir", str(run_dir), "--episodes", "1", "--checkpoint", "best")
    assert result.returncode == 0 and "over 1 episodes" in result.stdout, result.stderr[-3000:]
    result = wm_ray("train", "--run-dir", str(run_dir), "--resume", "--set", "env.num_envs=3")
    assert result.returncode == 2 and "allow-config-change" in result.stderr

    result = wm_ray("train", "--run-dir", str(run_dir), "--resume", "--steps", "800", "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    second = ckpt.load_state(ckpt.latest_checkpoint(run_dir))  # type: ignore[arg-type]
    assert second["counters"]["env_steps"] == 800
    assert second["counters"]["updates"] > first["counters"]["updates"]
    later = read_jsonl(run_dir / "metrics.jsonl")[len(records) :]
    assert all(math.isfinite(v) for r in later for k, v in r.items() if k.startswith("train/"))

    result = wm_ray("eval", "--run-dir", str(run_dir), "--episodes", "1", "--video")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "video" in result.stdout
