"""The CLI smoke run the Pong tests of the families with a dream (IRIS, DIAMOND) share: train
300 steps -> checkpoint -> resume to 400, every logged training value finite, then ``wm-ray
play`` scripted (a video) and by keyboard. Imported by those tests (not a test module)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

from wm_ray.metrics import read_jsonl
from wm_ray.rundir import checkpoint as ckpt


def wm_ray(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wm_ray.cli", *args], capture_output=True, text=True, timeout=900
    )


def train_and_resume(
    run_dir: Path, args: list[str], parts: tuple[str, ...]
) -> list[dict[str, Any]]:
    """Train ``args`` 300 steps single-process into ``run_dir``: each metric of ``parts`` is
    logged, every ``train/`` value finite, the checkpoint at 300 steps after over 20 updates;
    then resume to 400 steps with more updates. Returns the first run's metrics records."""
    result = wm_ray(
        "train", *args, "--single-process", "--steps", "300", "--run-dir", str(run_dir), "--quiet"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_jsonl(run_dir / "metrics.jsonl")
    train = [(k, v) for r in records for k, v in r.items() if k.startswith("train/")]
    for part in parts:
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
    return records


def play_scripted_and_by_keyboard(run_dir: Path, video: Path) -> None:
    """``wm-ray play`` dreams 12 scripted steps into ``video`` and 3 steps by keyboard."""
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
