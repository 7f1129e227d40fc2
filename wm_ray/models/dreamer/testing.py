"""Dreamer at test size for tests and speed measurements (the generic fakes are in
:mod:`wm_ray.models.common.testing`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from wm_ray.config import Config, RunConfig
from wm_ray.models.common.testing import fake_batch, image_space, obs_step, vector_space
from wm_ray.models.dreamer.config import DreamerConfig, RSSMConfig

__all__ = ["DEBUG", "fake_batch", "image_space", "obs_step", "root_config", "vector_space"]

DEBUG = DreamerConfig(
    units=64, layers=1, cnn_depth=8, rssm=RSSMConfig(deter=64, hidden=64, stoch=8, classes=8)
)
"""The ``size_debug`` preset as a config object."""


def root_config(dreamer: DreamerConfig = DEBUG, seed: int = 0, device: str = "cpu") -> Config:
    """A root config with the ``dreamer`` section, ``run.seed`` and ``run.device`` set."""
    run = RunConfig(model="dreamer", seed=seed, device=device)
    sections: dict[str, Any] = {"run": run, "dreamer": dreamer}
    return dataclasses.replace(Config(), **sections)
