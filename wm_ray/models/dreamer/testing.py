"""Fakes for tests and speed measurements: spaces, replay-like batches, a root config.

:func:`root_config` returns the real ``wm_ray.config.Config`` once it has a ``dreamer`` section,
and otherwise a minimal stand-in with the three sections the agent reads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from wm_ray.config import Config, ReplayConfig, RunConfig
from wm_ray.models.common.testing import fake_batch, image_space, obs_step, vector_space
from wm_ray.models.dreamer.config import DreamerConfig, RootConfig, RSSMConfig

__all__ = ["DEBUG", "fake_batch", "image_space", "obs_step", "root_config", "vector_space"]

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
