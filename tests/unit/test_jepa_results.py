"""JEPA's results at tiny CPU size (issue 21), through the agent on real data:

- collapse is caught: over a short training on ALE Pong frames the collapse monitor
  ``train/jepa/target_std`` stays near its start, while the same networks trained without the
  stop-gradient (the encoder's own features as targets, gradient flowing into them) collapse:
  the monitor falls and the predictor matches the targets trivially;
- a linear probe (ridge regression) on the target encoder's pooled features predicts the
  position of an object in toy images better after training than at the random init.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wm_ray.config_io import build_config
from wm_ray.envs import atari
from wm_ray.factory import create_model
from wm_ray.models.jepa.losses import jepa_loss
from wm_ray.models.jepa.masks import Masks

SIDE = 32
SETS = [
    "run.model=jepa", "run.device=cpu", "replay.batch_size=8", "replay.seq_len=4",
    "jepa.frames=0", "jepa.mask.targets=4", "jepa.mask.min_keep=4",
]  # fmt: skip
"""32x32 frames with patch 4: an 8x8 grid, the paper's 4 target blocks; 32 frames per update."""


def _agent(*extra: str) -> object:
    config = build_config(["jepa_debug"], [*SETS, *extra])
    space = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (SIDE, SIDE, 1), np.uint8)})
    return create_model("jepa", space, gym.spaces.Discrete(6), config)


def _pong_frames(steps: int = 300, seed: int = 0) -> np.ndarray:
    """``(steps, 32, 32, 1)`` uint8 grayscale ALE Pong frames under a uniform random policy."""
    env = atari.make("ALE/Pong-v5", seed=seed, image_size=SIDE, grayscale=True)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    frames = []
    for _ in range(steps):
        frames.append(obs["image"])
        obs, _, terminal, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
        if terminal or truncated:
            obs, _ = env.reset()
    env.close()
    return np.stack(frames).reshape(steps, SIDE, SIDE, 1)


def _batches(frames: np.ndarray, count: int, seed: int) -> list[np.ndarray]:
    """``count`` replay-like batches ``(8, 4, H, W, C)``: windows of consecutive frames."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(frames) - 4, (count, 8))
    return [np.stack([frames[s : s + 4] for s in row]) for row in starts]


@pytest.mark.skipif(not atari.list_ids(), reason="ale-py is not installed")
def test_the_collapse_monitor_stays_up_with_the_stop_gradient_and_falls_without_it() -> None:
    batches = _batches(_pong_frames(), 120, seed=0)
    healthy = _agent()
    stds, losses = [], []
    for batch in batches:
        _, metrics = healthy.train({"image": batch}, None)  # type: ignore[attr-defined]
        stds.append(metrics["train/jepa/target_std"])
        losses.append(metrics["train/loss/jepa/total"])
    # the same networks, optimizer and masks, but the targets are the encoder's own features
    # with the gradient flowing into them (no stop-gradient, no EMA target)
    broken = _agent()
    gen = torch.Generator().manual_seed(0)
    broken_stds, broken_losses = [], []
    for batch in batches:
        frames = broken._scale(broken._images(batch))  # type: ignore[attr-defined]
        masks: Masks = broken.collator(frames.shape[0], gen)  # type: ignore[attr-defined]
        own = broken.encoder(frames)  # type: ignore[attr-defined]
        targets = F.layer_norm(own, own.shape[-1:])
        loss, metrics = jepa_loss(broken.encoder, broken.predictor, targets, frames, masks)  # type: ignore[attr-defined]
        broken.opt.step(loss)  # type: ignore[attr-defined]
        broken_stds.append(float(metrics["train/jepa/target_std"]))
        broken_losses.append(float(metrics["train/loss/jepa/total"]))
    start = stds[0]
    assert start == pytest.approx(broken_stds[0])  # the same networks at the start
    assert start > 0.2  # layer-normed random-init features of Pong frames are spread
    assert min(stds) > 0.6 * start, (start, min(stds))  # the monitor stays up ...
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])  # ... while the loss falls
    assert np.mean(broken_stds[-10:]) < 0.3 * start, (start, broken_stds[-10:])  # collapse
    assert np.mean(broken_losses[-10:]) < 0.2 * np.mean(losses[-10:])  # a trivial match


def _toy_images(n: int, seed: int, obj: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 32x32 grayscale images of a bright ``obj x obj`` square on dim noise, and the
    square's position ``(row, col)`` scaled to [0, 1]."""
    rng = np.random.default_rng(seed)
    pos = rng.integers(0, SIDE - obj + 1, (n, 2))
    images = rng.integers(0, 26, (n, SIDE, SIDE, 1), dtype=np.uint8)
    for image, (r, c) in zip(images, pos, strict=True):
        image[r : r + obj, c : c + obj] = 255
    return images, pos / (SIDE - obj)


def _probe_error(
    train: torch.Tensor, y_train: np.ndarray, test: torch.Tensor, y_test: np.ndarray
) -> float:
    """Test mean squared error of a ridge regression from standardized features."""
    a, b = train.double(), test.double()
    mean, std = a.mean(0), a.std(0) + 1e-6
    a = torch.cat([(a - mean) / std, torch.ones(len(a), 1, dtype=a.dtype)], 1)
    b = torch.cat([(b - mean) / std, torch.ones(len(b), 1, dtype=b.dtype)], 1)
    ridge = 1e-2 * len(a) * torch.eye(a.shape[1], dtype=a.dtype)
    w = torch.linalg.solve(a.T @ a + ridge, a.T @ torch.as_tensor(y_train))
    return float(((b @ w - torch.as_tensor(y_test)) ** 2).mean())


def test_a_linear_probe_finds_the_object_position_better_in_trained_features() -> None:
    train_x, train_y = _toy_images(512, seed=0)
    test_x, test_y = _toy_images(256, seed=1)
    agent = _agent("jepa.optim.lr=5e-4", "jepa.ema_start=0.99")
    before = _probe_error(agent.features(train_x), train_y, agent.features(test_x), test_y)  # type: ignore[attr-defined]
    rng = np.random.default_rng(2)
    for _ in range(100):
        pick = rng.integers(0, len(train_x), 32)
        agent.train({"image": train_x[pick].reshape(8, 4, SIDE, SIDE, 1)}, None)  # type: ignore[attr-defined]
    after = _probe_error(agent.features(train_x), train_y, agent.features(test_x), test_y)  # type: ignore[attr-defined]
    variance = float(test_y.var(0).mean())
    assert before < variance  # random features already hold some of the position ...
    assert after < 0.25 * before, (before, after)  # ... trained ones far more
