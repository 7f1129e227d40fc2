"""ModularRSSM: the backbones (the transformer's cache against its full-window forward, memory
through observe and acting alike), the parts (ViT on real Pong frames, user parts by import
path) and the refusals of unfit combinations."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import pytest
import torch

from wm_ray.config_io import build_config
from wm_ray.envs import atari
from wm_ray.factory import create_model
from wm_ray.models.modular.config import validate
from wm_ray.models.rssm.backbones import (
    Backbone,
    NormLSTMCell,
    TransformerCore,
    build_backbone,
)
from wm_ray.models.rssm.config import RSSMConfig
from wm_ray.models.rssm.rssm import RSSM
from wm_ray.registry import UnsupportedError, check_supported, get_model_spec
from wm_ray.validate import validate_run

BACKBONE_NAMES = ("gru", "lstm", "transformer")


@dataclass(frozen=True)
class _Options:
    context: int = 3
    layers: int = 2
    heads: int = 2
    mlp: int = 2


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal up to float rounding, scaled to the magnitude compared."""
    scale = float(max(a.abs().max(), b.abs().max(), 1.0))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5 * scale)


def _step_all(core: Backbone, xs: torch.Tensor, is_first: torch.Tensor) -> torch.Tensor:
    """Step ``core`` through ``xs (B, T, I)`` one input at a time, resetting its memory (and
    ``h``) where ``is_first``."""
    batch, steps, _ = xs.shape
    h = xs.new_zeros(batch, core.deter)
    memory = core.initial_memory(batch, xs)
    fresh = core.initial_memory(batch, xs)
    outs = []
    for t in range(steps):
        first = is_first[:, t]
        memory = tuple(
            torch.where(first.reshape(-1, *[1] * (m.dim() - 1)), f, m)
            for f, m in zip(fresh, memory)
        )
        h = torch.where(first[:, None], torch.zeros_like(h), h)
        h, memory = core.step(xs[:, t], h, memory)
        outs.append(h)
    return torch.stack(outs, 1)


def test_transformer_cached_steps_equal_the_full_window_forward() -> None:
    torch.manual_seed(0)
    core = TransformerCore(6, 8, _Options())
    xs = torch.randn(2, 11, 6)
    is_first = torch.zeros(2, 11, dtype=torch.bool)
    is_first[:, 0] = True
    is_first[1, 5] = True  # stream 1 starts a new episode mid-sequence
    with torch.no_grad():
        _close(_step_all(core, xs, is_first), core.forward_window(xs, is_first))


def test_transformer_sees_exactly_its_window_and_its_episode() -> None:
    """One layer sees exactly ``context`` inputs (a stack of L layers sees L * (context - 1) + 1,
    as its cache does); no layer sees past the episode's start."""
    torch.manual_seed(0)
    context = 3
    core = TransformerCore(4, 8, _Options(context=context, layers=1))
    xs = torch.randn(1, 9, 4)
    is_first = torch.zeros(1, 9, dtype=torch.bool)
    is_first[0, 0] = True
    with torch.no_grad():
        base = core.forward_window(xs, is_first)
        t = 7
        outside = xs.clone()
        outside[0, t - context] += 5.0  # just out of step t's window
        assert torch.equal(core.forward_window(outside, is_first)[0, t], base[0, t])
        inside = xs.clone()
        inside[0, t - context + 1] += 5.0  # the oldest input step t sees
        assert not torch.allclose(core.forward_window(inside, is_first)[0, t], base[0, t])
        core = TransformerCore(4, 8, _Options(context=context, layers=2))
        is_first[0, t] = True  # a new episode at t: nothing before it is seen
        alone = core.forward_window(xs, is_first)[0, t]
        _close(alone, core.forward_window(xs[:, t : t + 1], is_first[:, t : t + 1])[0, 0])


@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
def test_observe_equals_acting_step_by_step_with_resets(backbone: str) -> None:
    """The training path (observe over a sequence) and the acting path (obs_step per step)
    carry the backbone's memory alike, resets included: same draws, same posteriors."""
    torch.manual_seed(0)
    config = RSSMConfig(deter=8, hidden=8, stoch=4, classes=3)
    rssm = RSSM(config, 5, 2, build_backbone(backbone, 8, 8, _Options()))
    batch, steps = 3, 7
    embed, action = torch.randn(batch, steps, 5), torch.randn(batch, steps, 2)
    is_first = torch.zeros(batch, steps, dtype=torch.bool)
    is_first[:, 0] = True
    is_first[0, 3] = is_first[2, 5] = True
    with torch.no_grad():
        posts, post_stats, _ = rssm.observe(
            embed, action, is_first, gen=torch.Generator().manual_seed(1)
        )
        gen = torch.Generator().manual_seed(1)
        state = rssm.initial(batch)
        for t in range(steps):
            state, stats = rssm.obs_step(state, action[:, t], embed[:, t], is_first[:, t], gen)
            _close(stats, post_stats[:, t])
            _close(state.deter, posts.deter[:, t])
            for mine, theirs in zip(state.memory, posts.memory):
                assert torch.equal(mine, theirs[:, t])
    if backbone != "gru":
        assert posts.memory and all(m.shape[:2] == (batch, steps) for m in posts.memory)


def test_lstm_cell_state_carries_what_h_does_not() -> None:
    torch.manual_seed(0)
    cell = NormLSTMCell(3, 4)
    x, h = torch.randn(2, 3), torch.zeros(2, 4)
    c = torch.randn(2, 4)
    out_a, _ = cell.step(x, h, (c,))
    out_b, _ = cell.step(x, h, (torch.zeros_like(c),))
    assert not torch.allclose(out_a, out_b)


# ----------------------------------------------------------------------------- agents


def _config(*overrides: str):  # type: ignore[no-untyped-def]
    return build_config(
        ["debug", "modular_debug"], ["run.model=modular", "run.device=cpu", *overrides]
    )


def _spaces(image: int | None, vector: int | None) -> gym.spaces.Dict:
    obs: dict[str, gym.Space] = {}
    if image:
        obs["image"] = gym.spaces.Box(0, 255, (image, image, 3), np.uint8)
    if vector:
        obs["vector"] = gym.spaces.Box(-np.inf, np.inf, (vector,), np.float32)
    return gym.spaces.Dict(obs)


def test_one_set_picks_the_backbone_and_the_parts() -> None:
    agent = create_model(
        "modular", _spaces(16, 4), gym.spaces.Discrete(3),
        _config("modular.backbone=lstm", "modular.encoder=vit+mlp", "modular.decoder=conv"),
    )  # fmt: skip
    assert isinstance(agent.wm.rssm.core, NormLSTMCell)
    assert [type(p).__name__ for p in agent.wm.encoder.parts] == [
        "ViTEncoderPart",
        "MLPEncoderPart",
    ]
    assert [type(p).__name__ for p in agent.wm.decoder.parts] == ["ConvDecoderPart"]


@pytest.mark.parametrize(
    ("overrides", "space", "match"),
    [
        (["modular.decoder=conv"], _spaces(None, 4), r"decoder=conv does not .* without image"),
        (["modular.encoder=vit"], _spaces(None, 4), r"encoder=vit .* kind vector, without image"),
        (["modular.encoder=mlp"], _spaces(16, None), r"encoder=mlp .* kind image, without vec"),
        (["modular.vit.patch=5"], _spaces(16, None), r"vit.patch=5 must divide.*16x16"),
    ],
)
def test_parts_that_do_not_fit_the_env_are_refused_naming_what_fits(
    overrides: list[str], space: gym.spaces.Dict, match: str
) -> None:
    config = _config(*overrides, *(["modular.encoder=vit"] if "patch" in overrides[0] else []))
    with pytest.raises(UnsupportedError, match=match):
        create_model("modular", space, gym.spaces.Discrete(3), config)


def test_a_conv_decoder_on_a_vector_task_is_refused_before_the_run_starts() -> None:
    config = _config("modular.decoder=conv", "env.id=CartPole-v1")
    with pytest.raises(UnsupportedError, match=r"modular.decoder=conv does not.*without image"):
        validate_run(config)
    spec = get_model_spec("modular")
    check_supported(spec, _config("modular.decoder=conv"), _spaces(16, 4))  # both kinds: fine


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("modular.backbone=mamba", r"modular.backbone='mamba' \(valid: gru, lstm, transformer"),
        ("modular.encoder=resnet", r"unknown part 'resnet' \(valid: auto, conv, mlp, vit"),
        ("modular.decoder=auto+conv", r"auto stands alone"),
        ("modular.transformer.heads=3", r"modular.rssm.deter=64 .*transformer.heads=3"),
        ("modular.vit.heads=3", r"vit.width=32 \(must be divisible by vit.heads=3\)"),
        ("modular.transformer.context=0", r"modular.transformer.context' must be >= 1, got 0"),
    ],
)
def test_bad_part_settings_are_refused_by_the_validator(override: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        extra = ["modular.backbone=transformer"] if "heads=3" in override else []
        validate(_config(override, *extra))


def test_a_users_parts_by_import_path() -> None:
    """A backbone and an encoder written outside wm_ray, named ``module:Class``."""
    module = types.ModuleType("user_parts_for_test")

    class Elman(Backbone):
        def __init__(self, in_dim: int, deter: int, options: object) -> None:
            super().__init__(in_dim, deter)
            self.linear = torch.nn.Linear(in_dim + deter, deter)

        def step(self, x, h, memory):  # type: ignore[no-untyped-def]
            return torch.tanh(self.linear(torch.cat([x, h], -1))), ()

    from wm_ray.models.modular.networks import EncoderPart

    class Mean(EncoderPart):
        keys = ("vector",)

        def __init__(self, shapes, config) -> None:  # type: ignore[no-untyped-def]
            super().__init__()
            self.out_dim = 1

        def forward(self, obs):  # type: ignore[no-untyped-def]
            return obs["vector"].float().mean(-1, keepdim=True)

    module.Elman, module.Mean = Elman, Mean  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    try:
        config = _config(
            "modular.backbone=user_parts_for_test:Elman", "modular.encoder=user_parts_for_test:Mean"
        )
        validate(config)
        agent = create_model("modular", _spaces(None, 4), gym.spaces.Discrete(2), config)
        assert isinstance(agent.wm.rssm.core, Elman)
        assert agent.wm.encoder.out_dim == 1
        carry = agent.init_policy(2)
        obs = {"vector": np.ones((2, 4), np.float32), "is_first": np.ones(2, bool)}
        _, action, _ = agent.policy(carry, obs)
        assert action.shape == (2,)
        with pytest.raises(ValueError, match=r"not a Backbone subclass"):
            create_model(
                "modular", _spaces(None, 4), gym.spaces.Discrete(2),
                _config("modular.backbone=user_parts_for_test:Mean"),
            )  # fmt: skip
    finally:
        del sys.modules[module.__name__]


@pytest.mark.skipif(not atari.list_ids(), reason="ale-py is not installed")
def test_vit_encoder_learns_to_reconstruct_real_pong_frames() -> None:
    """The ViT encoder with the conv decoder at tiny size on frames of ALE Pong (random
    actions): the image reconstruction loss falls."""
    env = atari.make("ALE/Pong-v5", seed=0, image_size=32)
    rng = np.random.default_rng(0)
    frames, actions = [], []
    obs, _ = env.reset(seed=0)
    for _ in range(96):
        action = int(rng.integers(env.action_space.n))
        frames.append(obs["image"])
        actions.append(action)
        obs, *_ = env.step(action)
    env.close()
    config = _config(
        "modular.encoder=vit", "modular.vit.patch=8", "modular.cnn_min_res=4",
        "modular.opt.model_lr=1e-3",
    )  # fmt: skip
    obs_space = gym.spaces.Dict({"image": env.observation_space["image"]})
    agent = create_model("modular", obs_space, env.action_space, config)
    image, act = np.stack(frames), np.asarray(actions)
    steps = 16

    def batch() -> dict[str, np.ndarray]:
        starts = rng.integers(0, len(frames) - steps, 4)
        index = starts[:, None] + np.arange(steps)
        first = np.zeros((4, steps), bool)
        first[:, 0] = True
        return {
            "image": image[index],
            "action": act[index],
            "reward": np.zeros((4, steps), np.float32),
            "is_first": first,
            "is_terminal": np.zeros((4, steps), bool),
        }

    losses = []
    for _ in range(60):
        _, metrics = agent.train(batch(), None)
        losses.append(metrics["train/loss/world_model/image"])
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.5 * first, (first, last)


def test_the_cem_planner_plans_over_a_transformer_backbone() -> None:
    """``modular.planner=cem``: the planner's ``N x candidates`` rollouts carry the window
    cache of every env's state (repeated per candidate) and one call plans for all envs."""
    config = _config(
        "modular.backbone=transformer", "modular.planner=cem", "modular.cem.horizon=3",
        "modular.cem.candidates=8", "modular.cem.iterations=2", "modular.cem.top_k=2",
    )  # fmt: skip
    act_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    agent = create_model("modular", _spaces(None, 4), act_space, config)
    carry = agent.init_policy(3)
    rng = np.random.default_rng(0)
    for step in range(2):
        obs = {
            "vector": rng.normal(size=(3, 4)).astype(np.float32),
            "is_first": np.full(3, step == 0),
        }
        carry, action, _ = agent.policy(carry, obs, mode="eval")
        assert action.shape == (3, 2) and np.all(np.abs(action) <= 1.0)
    state = carry[0]
    assert state.memory[-1].shape == (3, config.modular.transformer.context - 1)
    assert state.memory[-1][:, -2:].all()  # the two steps since the reset are in the window,
    assert not state.memory[-1][:, :-2].any()


def test_the_compiled_update_matches_eager_with_a_backbone_memory() -> None:
    """Dreamer's whole-update graphs (``run.compile``) carry the backbone's memory (here the
    transformer's window cache) through the observe loop and imagination: the same losses as
    eager (``aot_eager``: the graphs run op by op, so the comparison is tight and the compile
    quick)."""
    from wm_ray.models.dreamer.compiled import CompiledUpdate

    overrides = ["modular.backbone=transformer", "modular.ac.actor_grad=reinforce"]
    space, act = _spaces(None, 3), gym.spaces.Discrete(2)
    eager = create_model("modular", space, act, _config(*overrides))
    compiled = create_model("modular", space, act, _config(*overrides))
    compiled.compiled = CompiledUpdate(compiled, backend="aot_eager")
    rng = np.random.default_rng(0)
    for i in range(2):
        first = rng.random((4, 8)) < 0.2
        first[:, 0] = True
        batch = {
            "vector": rng.normal(size=(4, 8, 3)).astype(np.float32),
            "action": rng.integers(0, 2, (4, 8)),
            "reward": rng.normal(size=(4, 8)).astype(np.float32),
            "is_first": first,
            "is_terminal": np.zeros((4, 8), bool),
        }
        a, b = eager.train(batch, None)[1], compiled.train(batch, None)[1]
        # the actor and critic losses at the first update only: after it, the imagined
        # rewards are the rounding of nearly uniform two-hot logits over bins up to 4.85e8
        # (test_dreamer_compiled.FIRST_ONLY)
        ac = ("actor/total", "critic/total") if i == 0 else ()
        for key in ("world_model/total", "world_model/vector", *ac):
            x, y = a[f"train/loss/{key}"], b[f"train/loss/{key}"]
            assert abs(x - y) <= 1e-4 * max(abs(x), abs(y), 1e-3), (key, x, y)
