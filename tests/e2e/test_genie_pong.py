"""Genie on real ALE Pong at toy sizes, through the CLI: an offline video is ingested
(``wm-ray ingest``) and preloaded into replay beside what env workers collect with the behaviour
policy, the tokenizer trains first and then the latent action model and the dynamics, the run
checkpoints and resumes with every logged loss finite, and ``wm-ray play`` dreams a video from
a real frame with latent actions (scripted and by keyboard)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_smoke import play_scripted_and_by_keyboard, train_and_resume, wm_ray

from wm_ray.envs import atari
from wm_ray.media import write_video
from wm_ray.metrics import read_jsonl

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not atari.list_ids(), reason="ale-py is not installed"),
]

ARGS = [
    "--configs", "genie", "atari", "genie_debug", "debug",
    "--set", "run.device=cpu", "env.num_envs=2", "replay.min_size=128",
    "replay.samples_per_insert=16", "run.checkpoint_every=250", "eval.every=0",
    "env.time_limit=100", "env.image_size=16", "logging.every=50", "logging.tensorboard=false",
]  # fmt: skip


def _square_video(path: Path, steps: int = 48) -> Path:
    """An mp4 of a bright square walking over a dark 16x16 frame (written 4x upscaled)."""
    frames = np.zeros((steps, 16, 16, 3), np.uint8)
    for t in range(steps):
        x, y = (3 * t) % 12, (t // 4) % 12
        frames[t, y : y + 4, x : x + 4] = 220
    return write_video(frames, path, fps=10)


def test_genie_pong_trains_in_stages_checkpoints_resumes_and_dreams(tmp_path: Path) -> None:
    data = tmp_path / "video-data"
    ingested = wm_ray(
        "ingest", str(_square_video(tmp_path / "clip.mp4")), "--out", str(data),
        "--image-size", "16",
    )  # fmt: skip
    assert ingested.returncode == 0, ingested.stderr[-3000:]
    steps = json.loads((data / "dataset.json").read_text())["total_steps"]
    assert steps == 48
    run_dir = tmp_path / "genie"
    parts = ("train/loss/tokenizer/total", "train/loss/lam/total", "train/loss/dynamics/total")
    train_and_resume(run_dir, [*ARGS, f"replay.preload={data}"], parts)
    assert read_jsonl(run_dir / "metrics.jsonl")[-1]["replay/preloaded_steps"] == steps
    # the staged schedule: the tokenizer alone first, then (frozen) the LAM and the dynamics
    records = read_jsonl(run_dir / "metrics.jsonl")
    trained = [r for r in records if any(k.startswith("train/loss/") for k in r)]
    first, last = trained[0], trained[-1]
    assert "train/loss/tokenizer/total" in first and "train/loss/dynamics/total" not in first
    assert "train/loss/dynamics/total" in last and "train/loss/tokenizer/total" not in last
    play_scripted_and_by_keyboard(run_dir, tmp_path / "dream.mp4")
