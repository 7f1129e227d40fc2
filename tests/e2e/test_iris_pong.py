"""IRIS on real ALE Pong at toy sizes.

1. The world model learns dynamics: after a bounded number of updates, its next-token loss on
   held-out Pong sequences (another env seed) falls below the unigram entropy of those tokens,
   and below their mean per-slot entropy too (the best a model could do that knows where in the
   frame a token sits but ignores the past frames and actions), so it predicts from context.
2. The CLI smoke run: collect -> tokenizer -> world model -> actor-critic (staged) ->
   checkpoint -> resume, with every logged loss finite, then ``wm-ray play`` dreams a video.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_smoke import play_scripted_and_by_keyboard, train_and_resume, wm_ray

from wm_ray.config import EnvConfig
from wm_ray.config_io import build_config
from wm_ray.loops.setup import make_vector_env
from wm_ray.metrics import read_jsonl
from wm_ray.models.common import Optimizer
from wm_ray.models.iris.losses import tokenizer_loss, world_model_loss
from wm_ray.models.iris.tokenizer import Tokenizer
from wm_ray.models.iris.transformer import WorldModel

pytestmark = pytest.mark.slow


def collect_pong(seed: int, steps: int) -> dict[str, np.ndarray]:
    """``steps`` random-policy steps of one Pong env: images, actions, is_first, rewards."""
    venv = make_vector_env(EnvConfig(id="ALE/Pong-v5", num_envs=1), seed=seed)
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("image", "action", "is_first", "reward")}
    obs = venv.reset()
    n = venv.act_space.n  # type: ignore[attr-defined]
    for _ in range(steps):
        action = rng.integers(0, n, size=1)
        for key in ("image", "is_first", "reward"):
            out[key].append(obs[key][0])
        out["action"].append(action[0])
        obs = venv.step(action)
    venv.close()
    return {k: np.stack(v) for k, v in out.items()}


def windows(data: dict[str, torch.Tensor], starts: np.ndarray, length: int) -> dict:
    idx = torch.as_tensor(starts)[:, None] + torch.arange(length)
    return {k: v[idx] for k, v in data.items()}


def test_world_model_beats_unigram_and_per_slot_entropy_on_held_out_pong() -> None:
    torch.manual_seed(0)
    # The EMA codebook: after a few dozen updates the gradient codebook still gives each grid
    # cell one code (tokens that encode position only), the EMA one already encodes content.
    config = build_config(["iris", "iris_debug"], ["run.device=cpu", "iris.tokenizer.codebook=ema"])
    train_raw, test_raw = collect_pong(seed=1, steps=700), collect_pong(seed=2, steps=200)
    tokenizer = Tokenizer(config.iris.tokenizer, image_size=64, channels=3)
    frames = Tokenizer.preprocess(torch.as_tensor(train_raw["image"]))
    opt = Optimizer(tokenizer.parameters(), 1e-3, clip=10.0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(60):
        pick = torch.randint(0, len(frames), (32,), generator=gen)
        loss, _ = tokenizer_loss(tokenizer, frames[pick])
        opt.step(loss)
    tokenizer.eval()

    def tokens_of(raw: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {
            "tokens": tokenizer.tokenize(Tokenizer.preprocess(torch.as_tensor(raw["image"]))),
            "actions": torch.as_tensor(raw["action"]).long(),
            "is_first": torch.as_tensor(raw["is_first"]).bool(),
            "reward": torch.as_tensor(raw["reward"]).float(),
            "is_terminal": torch.zeros(len(raw["action"]), dtype=torch.bool),
        }

    train, test = tokens_of(train_raw), tokens_of(test_raw)

    def entropy(tokens: torch.Tensor) -> float:
        counts = torch.bincount(tokens.flatten(), minlength=tokenizer.vocab).double()
        probs = counts[counts > 0] / counts.sum()
        return float(-(probs * probs.log()).sum())

    unigram = entropy(test["tokens"])
    per_slot = float(np.mean([entropy(test["tokens"][:, k]) for k in range(tokenizer.tokens)]))
    assert per_slot > 0.2, f"held-out tokens hardly vary per slot ({per_slot:.3f} nats)"

    length = 8
    wm = WorldModel(config.iris.world_model, tokenizer.vocab, tokenizer.tokens, 6)
    wm_opt = Optimizer(wm.parameters(), 1e-3, clip=10.0)
    test_starts = np.arange(0, len(test["actions"]) - length, length)

    def held_out_loss() -> float:
        wm.eval()
        with torch.no_grad():
            batch = windows(test, test_starts, length)
            _, metrics = world_model_loss(wm, **batch)
        wm.train()
        return float(metrics["train/loss/world_model/obs"])

    start_loss = held_out_loss()
    rng = np.random.default_rng(0)
    losses = []
    for update in range(400):
        starts = rng.integers(0, len(train["actions"]) - length, size=16)
        loss, _ = world_model_loss(wm, **windows(train, starts, length))
        wm_opt.step(loss)
        if update % 50 == 49:
            losses.append(held_out_loss())
            if losses[-1] < per_slot:
                break
    assert losses[-1] < per_slot < unigram, (
        f"held-out next-token loss {losses} (from {start_loss:.3f}) never fell below the "
        f"per-slot entropy {per_slot:.3f} nats (unigram entropy {unigram:.3f})"
    )


ARGS = [
    "--configs", "iris", "atari", "iris_debug", "debug",
    "--set", "run.device=cpu", "env.num_envs=2", "replay.min_size=128",
    "replay.samples_per_insert=16", "run.checkpoint_every=250", "eval.every=0",
    "env.time_limit=100", "env.image_size=32", "logging.every=50", "logging.tensorboard=false",
    "iris.start.world_model=8", "iris.start.actor_critic=16",
]  # fmt: skip


def test_iris_pong_trains_every_stage_checkpoints_resumes_and_dreams(tmp_path: Path) -> None:
    run_dir = tmp_path / "iris"
    parts = ("train/loss/tokenizer/total", "train/loss/world_model/total", "train/loss/actor/total")
    records = train_and_resume(run_dir, ARGS, parts)
    later = read_jsonl(run_dir / "metrics.jsonl")[len(records) :]
    assert any("train/loss/actor/total" in r for r in later)
    assert all(math.isfinite(v) for r in later for k, v in r.items() if k.startswith("train/"))
    play_scripted_and_by_keyboard(run_dir, tmp_path / "dream.mp4")
    bad = wm_ray("play", "--run-dir", str(run_dir), "--actions", "2,99")
    assert bad.returncode == 2 and "valid indices are 0..5" in bad.stderr
