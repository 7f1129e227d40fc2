"""The JEPA agent at toy size: the checks of its config, the frames an update uses, the
schedules following the saved update counter, features, the report and the behaviour policy."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from wm_ray.config_io import build_config
from wm_ray.factory import create_model
from wm_ray.models.common.testing import fake_batch, image_space
from wm_ray.validate import validate_run

BASE = ["jepa_debug"]
SETS = ["run.model=jepa", "run.device=cpu"]
SPACE, ACTIONS = image_space(16, 3), gym.spaces.Discrete(4)


def _agent(*extra: str, acting: bool = False, space: gym.spaces.Dict = SPACE) -> object:
    config = build_config(BASE, [*SETS, *extra])
    return create_model("jepa", space, ACTIONS, config, acting=acting)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("jepa.encoder.heads=3", "jepa.encoder.heads=3"),
        ("jepa.mask.target_scale_min=0.5", "jepa.mask.target_scale_min=0.5"),
        ("jepa.frames=17", r"jepa.frames=17 \(must be <= replay.batch_size x replay.seq_len"),
        ("jepa.ema_start=0.9999", "jepa.ema_start=0.9999"),
    ],
)
def test_bad_settings_are_refused_before_a_run_naming_the_key(override: str, named: str) -> None:
    extra = ["jepa.ema_end=0.999"] if "ema_start" in override else []
    config = build_config(BASE, [*SETS, override, *extra])
    with pytest.raises(ValueError, match=rf"invalid jepa config: .*{named}"):
        validate_run(config)


def test_a_patch_that_does_not_fit_the_frames_is_refused_when_the_agent_is_built() -> None:
    with pytest.raises(ValueError, match=r"jepa.patch=3 \(must divide the frame side 16\)"):
        _agent("jepa.patch=3")
    with pytest.raises(ValueError, match="square image observations"):
        _agent(space=gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (16, 8, 3), np.uint8)}))


def test_an_update_uses_the_configured_frames_and_the_schedules_follow_the_counter(
    tmp_path: Path,
) -> None:
    agent = _agent("jepa.steps=4", "jepa.ema_start=0.9", "jepa.optim.warmup=2")
    batch = fake_batch(SPACE, ACTIONS, batch=4, length=4, seed=0)
    taus = []
    for _ in range(3):
        _, metrics = agent.train(batch, None)  # type: ignore[attr-defined]
        taus.append(metrics["train/jepa/momentum"])
    assert taus == pytest.approx([0.9, 0.925, 0.95])
    assert metrics["train/jepa/context_patches"] >= 2
    assert metrics["train/jepa/target_patches"] >= 1
    assert metrics["train/jepa/target_std"] > 0.0 and metrics["time/jepa"] > 0.0
    assert metrics["train/jepa/weight_decay"] > 0.04  # the cosine toward 0.4
    agent.save(tmp_path / "agent")  # type: ignore[attr-defined]
    fresh = _agent("jepa.steps=4", "jepa.ema_start=0.9", "jepa.optim.warmup=2")
    fresh.load(tmp_path / "agent")  # type: ignore[attr-defined]
    assert fresh.counters()["updates"] == 3  # type: ignore[attr-defined]
    _, after = fresh.train(batch, None)  # type: ignore[attr-defined]
    assert after["train/jepa/momentum"] == pytest.approx(0.975)
    # jepa.frames=0: every replayed frame; a fixed count draws that many
    seen = [_frames_per_update(_agent(f"jepa.frames={n}"), batch) for n in (0, 5)]
    assert seen == [16, 5]


def _frames_per_update(agent: object, batch: dict[str, np.ndarray]) -> int:
    """How many frames the target encoder read in one update."""
    sizes: list[int] = []
    hook = agent.target.register_forward_hook(  # type: ignore[attr-defined]
        lambda module, args, out: sizes.append(int(args[0].shape[0]))
    )
    agent.train(batch, None)  # type: ignore[attr-defined]
    hook.remove()
    return sizes[0]


def test_features_and_the_report_have_their_shapes() -> None:
    agent = _agent()
    images = np.random.default_rng(0).integers(0, 256, (2, 3, 16, 16, 3), dtype=np.uint8)
    assert tuple(agent.features(images).shape) == (6, 32)  # type: ignore[attr-defined]
    assert tuple(agent.features(images[0], pooled=False).shape) == (3, 16, 32)  # type: ignore[attr-defined]
    media = agent.report({"image": images})  # type: ignore[attr-defined]
    strip = media["masks"]
    assert strip.shape == (1, 16, 48, 3) and strip.dtype == np.uint8
    np.testing.assert_array_equal(strip[0, :, :16], images[0, 0])
    assert (strip[0, :, 16:32] <= images[0, 0]).all()  # hidden patches dimmed, shown kept


def test_random_behaviour_acts_in_the_action_space_and_the_acting_agent_has_no_networks() -> None:
    agent = _agent(acting=True)
    obs = {"image": np.zeros((256, 16, 16, 3), np.uint8), "is_first": np.ones(256, bool)}
    _, action, _ = agent.policy(agent.init_policy(256), obs)  # type: ignore[attr-defined]
    counts = np.bincount(action, minlength=4)
    assert counts.sum() == 256 and counts.min() > 30
    assert agent.param_counts() == {"total": 0}  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="acting only"):
        agent.train({"image": obs["image"]}, None)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("presets", "sizes"),
    [
        (["jepa"], (21_000_000, 22_000_000)),
        (["jepa", "jepa_small"], (2_500_000, 3_000_000)),
        (["jepa", "jepa_base"], (84_000_000, 86_000_000)),
    ],
)
def test_the_presets_validate_and_build_at_their_sizes(
    presets: list[str], sizes: tuple[int, int]
) -> None:
    config = build_config(presets, ["run.device=cpu"])
    validate_run(config)
    agent = create_model("jepa", image_space(64, 3), ACTIONS, config)
    counts = agent.param_counts()  # type: ignore[attr-defined]
    assert counts["encoder"] == counts["target"]
    assert sizes[0] < counts["encoder"] < sizes[1], (
        counts
    )  # ViT-S 21.4M, ViT-Ti class 2.7M, ViT-B 85M
    assert counts["predictor"] < 0.2 * counts["encoder"]
