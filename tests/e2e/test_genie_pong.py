"""Genie on real ALE Pong at toy sizes, through the CLI: env workers act with the behaviour
policy, the tokenizer trains first and then the latent action model and the dynamics, the run
checkpoints and resumes with every logged loss finite, and ``wm-ray play`` dreams a video from
a real frame with latent actions (scripted and by keyboard)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_smoke import play_scripted_and_by_keyboard, train_and_resume

from wm_ray.envs import atari
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


def test_genie_pong_trains_in_stages_checkpoints_resumes_and_dreams(tmp_path: Path) -> None:
    run_dir = tmp_path / "genie"
    parts = ("train/loss/tokenizer/total", "train/loss/lam/total", "train/loss/dynamics/total")
    train_and_resume(run_dir, ARGS, parts)
    # the staged schedule: the tokenizer alone first, then (frozen) the LAM and the dynamics
    records = read_jsonl(run_dir / "metrics.jsonl")
    trained = [r for r in records if any(k.startswith("train/loss/") for k in r)]
    first, last = trained[0], trained[-1]
    assert "train/loss/tokenizer/total" in first and "train/loss/dynamics/total" not in first
    assert "train/loss/dynamics/total" in last and "train/loss/tokenizer/total" not in last
    play_scripted_and_by_keyboard(run_dir, tmp_path / "dream.mp4")
