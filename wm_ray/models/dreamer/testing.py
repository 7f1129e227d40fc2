"""Fakes for tests and speed measurements: spaces, replay-like batches, a root config.

:func:`root_config` returns the real ``wm_ray.config.Config`` once it has a ``dreamer`` section,
and otherwise a minimal stand-in with the three sections the agent reads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from wm_ray.config import Config, ReplayConfig, RunConfig
from wm_ray.models.dreamer.config import DreamerConfig, RootConfig, RSSMConfig

DEBUG = DreamerConfig(
    units=64, layers=1, cnn_depth=8, rssm=RSSMConfig(deter=64, hidden=64, stoch=8, classes=8)
)
"""The ``size_debug`` preset as a config object."""


@dataclass(frozen=True)
class StandInConfig:
    """The sections of the root config that the agent reads."""

    run: RunConfig = field(default_factory=RunConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    dreamer: DreamerConfig = field(default_factory=DreamerConfig)


def root_config(dreamer: DreamerConfig = DEBUG, seed: int = 0, device: str = "cpu") -> RootConfig:
    """A root config with ``dreamer``, ``run.seed`` and ``run.device`` set."""
    run = RunConfig(model="dreamer", seed=seed, device=device)
    if any(f.name == "dreamer" for f in dataclasses.fields(Config)):
        config: Any = dataclasses.replace(Config(), run=run)
        return dataclasses.replace(config, dreamer=dreamer)
    return StandInConfig(run=run, dreamer=dreamer)


def image_space(size: int = 64, channels: int = 3) -> gym.spaces.Dict:
    """``{image: (size, size, channels) uint8}``."""
    return gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (size, size, channels), np.uint8)})


def vector_space(dim: int = 4) -> gym.spaces.Dict:
    """``{vector: (dim,) float32}``, unbounded."""
    return gym.spaces.Dict({"vector": gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)})


def fake_batch(
    obs_space: gym.spaces.Dict,
    act_space: gym.Space,
    batch: int,
    length: int,
    seed: int = 0,
    first_prob: float = 0.02,
    terminal_prob: float = 0.02,
) -> dict[str, np.ndarray]:
    """A random ``(B, T, ...)`` batch in the replay format of ``wm_ray.types``.

    Observations are smooth in time (a random walk), so a world model can learn them.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for key, space in obs_space.spaces.items():
        shape = (batch, length, *(space.shape or ()))
        walk = np.cumsum(rng.normal(0.0, 0.1, shape), axis=1)
        if key == "image":
            base = rng.uniform(0, 255, (batch, 1, *shape[2:]))
            out[key] = np.clip(base + 40.0 * walk, 0, 255).astype(np.uint8)
        else:
            out[key] = walk.astype(np.float32)
    if isinstance(act_space, gym.spaces.Discrete):
        start = int(act_space.start)
        out["action"] = rng.integers(start, start + int(act_space.n), (batch, length))
    else:
        shape = (batch, length, *(act_space.shape or ()))
        out["action"] = rng.uniform(-1.0, 1.0, shape).astype(np.float32)
    out["reward"] = rng.normal(0.0, 1.0, (batch, length)).astype(np.float32)
    out["is_first"] = rng.random((batch, length)) < first_prob
    out["is_terminal"] = rng.random((batch, length)) < terminal_prob
    out["is_last"] = out["is_terminal"].copy()
    return out


def obs_step(batch: dict[str, np.ndarray], t: int) -> dict[str, np.ndarray]:
    """Step ``t`` of every sequence of a batch as an ``(N, ...)`` env observation."""
    return {k: np.asarray(v)[:, t] for k, v in batch.items() if k != "action"}
