"""Dreamer size presets: YAML contents, pinned parameter counts, and the config wiring."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

from wm_ray import config_io
from wm_ray.config import Config
from wm_ray.models.dreamer.config import DreamerConfig
from wm_ray.models.dreamer.networks import build_networks, param_counts
from wm_ray.models.dreamer.testing import DEBUG

SIZES = ("debug", "xs", "s", "m", "l")

# Image 64x64x3 + 6 discrete actions; world model + actor + critic (slow critic not counted).
# The paper's table lists XS 8M, S 18M, M 37M, L 77M.
PINNED = {
    "debug": 398_056,
    "xs": 8_262_440,
    "s": 17_922_952,
    "m": 36_896_456,
    "l": 76_748_808,
}

PAPER = {  # DreamerV3 model-size table: GRU units, CNN depth, MLP units, MLP layers
    "xs": (256, 24, 256, 1),
    "s": (512, 32, 512, 2),
    "m": (1024, 48, 640, 3),
    "l": (2048, 64, 768, 4),
}


def _apply(obj: Any, updates: dict[str, Any]) -> Any:
    """Nested mapping onto nested frozen dataclasses; an unknown key raises TypeError."""
    changes = {
        key: _apply(getattr(obj, key), value) if isinstance(value, dict) else value
        for key, value in updates.items()
    }
    return dataclasses.replace(obj, **changes)


def _size(name: str) -> DreamerConfig:
    preset = config_io.load_preset(f"size_{name}")
    assert set(preset) == {"dreamer"}, preset
    config = _apply(DreamerConfig(), preset["dreamer"])
    assert isinstance(config, DreamerConfig)
    return config


def _counts(config: DreamerConfig) -> dict[str, int]:
    with torch.device("meta"):  # no memory, no init cost
        nets = build_networks({"image": (64, 64, 3)}, 6, True, config)
    return param_counts(*nets)


def test_size_presets_have_pinned_parameter_counts_that_grow_with_size() -> None:
    totals = [_counts(_size(name))["total"] for name in SIZES]
    assert dict(zip(SIZES, totals)) == PINNED
    assert totals == sorted(totals) and len(set(totals)) == len(totals)


@pytest.mark.parametrize("name", list(PAPER))
def test_size_presets_follow_the_paper_table_with_32x32_latents(name: str) -> None:
    config = _size(name)
    assert (config.rssm.deter, config.cnn_depth, config.units, config.layers) == PAPER[name]
    assert config.rssm.hidden == config.units
    assert (config.rssm.stoch, config.rssm.classes) == (32, 32)


def test_debug_matches_the_testing_config_and_the_defaults_are_debug_at_128_wide() -> None:
    assert _size("debug") == DEBUG
    default = DreamerConfig()
    assert (default.units, default.rssm.deter, default.rssm.hidden) == (128, 128, 128)
    assert (default.rssm.stoch, default.rssm.classes) == (DEBUG.rssm.stoch, DEBUG.rssm.classes)
    assert (default.layers, default.cnn_depth) == (DEBUG.layers, DEBUG.cnn_depth)


def test_dreamer_preset_selects_the_model_with_the_paper_settings_at_size_s() -> None:
    preset = config_io.load_preset("dreamer")
    assert preset["run"]["model"] == "dreamer"
    assert preset["dreamer"]["ac"]["gamma"] == 0.997  # the paper's settings
    assert {k: v for k, v in preset["dreamer"].items() if k not in ("ac", "opt")} == (
        config_io.load_preset("size_s")["dreamer"]
    )


@pytest.mark.skipif(
    not any(f.name == "dreamer" for f in dataclasses.fields(Config)),
    reason="the dreamer section is not wired into wm_ray.config.Config yet",
)
def test_presets_apply_to_the_root_config() -> None:
    config = config_io.build_config(["dreamer", "size_xs"])
    assert config.run.model == "dreamer"
    xs = _size("xs")
    assert (config.dreamer.units, config.dreamer.rssm) == (xs.units, xs.rssm)
    assert config.dreamer.opt.actor_lr == 3e-5 and config.dreamer.ac.actor_grad == "auto"
