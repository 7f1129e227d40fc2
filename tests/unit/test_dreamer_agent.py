"""DreamerAgent behind the agent protocol: acting, training, reports, weights and checkpoints."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from wm_ray.core import Agent
from wm_ray.models.dreamer import DreamerAgent
from wm_ray.models.dreamer.testing import (
    DEBUG,
    fake_batch,
    image_space,
    obs_step,
    root_config,
    vector_space,
)

IMAGE_VECTOR = gym.spaces.Dict({**image_space(16).spaces, **vector_space(3).spaces})
DISCRETE = gym.spaces.Discrete(3, start=1)
CONTINUOUS = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

EXPECTED_METRICS = {
    "train/loss/world_model/image",
    "train/loss/world_model/vector",
    "train/loss/world_model/dyn",
    "train/loss/world_model/rep",
    "train/loss/world_model/reward",
    "train/loss/world_model/cont",
    "train/loss/actor/total",
    "train/loss/critic/total",
    "train/actor/entropy",
    "train/actor/return_scale",
    "train/grad_norm/world_model",
    "time/world_model",
    "time/actor_critic",
}


def _agent(obs_space=IMAGE_VECTOR, act_space=DISCRETE, seed: int = 0, **changes) -> DreamerAgent:
    return DreamerAgent(
        obs_space, act_space, root_config(dataclasses.replace(DEBUG, **changes), seed)
    )


def test_dreamer_agent_satisfies_the_agent_protocol() -> None:
    assert isinstance(_agent(), Agent)


@pytest.mark.parametrize(
    ("obs_space", "act_space"),
    [(IMAGE_VECTOR, DISCRETE), (vector_space(4), CONTINUOUS), (image_space(16, 1), CONTINUOUS)],
)
def test_policy_returns_env_actions_of_the_right_shape_dtype_and_range(
    obs_space, act_space
) -> None:
    agent = _agent(obs_space, act_space)
    batch = fake_batch(obs_space, act_space, 5, 3, seed=2)
    carry = agent.init_policy(5)
    for t in range(3):
        for mode in ("explore", "eval"):
            _, action, outs = agent.policy(carry, obs_step(batch, t), mode=mode)
            if isinstance(act_space, gym.spaces.Discrete):
                assert action.dtype == np.int64 and action.shape == (5,)
                assert action.min() >= 1 and action.max() <= 3
            else:
                assert action.dtype == np.float32 and action.shape == (5, 2)
                assert np.abs(action).max() <= 1.0
            assert outs == {}
        carry, _, _ = agent.policy(carry, obs_step(batch, t))


def test_is_first_resets_the_state_to_that_of_a_fresh_carry() -> None:
    agent = _agent(vector_space(4), CONTINUOUS)
    batch = fake_batch(vector_space(4), CONTINUOUS, 3, 4, seed=5, first_prob=0.0)
    carry = agent.init_policy(3)
    for t in range(3):
        carry, _, _ = agent.policy(carry, obs_step(batch, t))
    obs = obs_step(batch, 3)
    obs["is_first"] = np.array([True, True, False])
    rng_state = agent.gen.get_state()
    (stale, _), act_stale, _ = agent.policy(carry, obs)
    agent.gen.set_state(rng_state)
    (fresh, _), act_fresh, _ = agent.policy(agent.init_policy(3), obs)
    assert torch.equal(stale.deter[:2], fresh.deter[:2])
    assert torch.equal(stale.stoch[:2], fresh.stoch[:2])
    assert np.array_equal(act_stale[:2], act_fresh[:2])
    assert not torch.equal(stale.deter[2], fresh.deter[2])  # the continuing stream kept its state


def test_train_reports_named_finite_metrics_and_counts_updates() -> None:
    agent = _agent()
    state = agent.init_train(4)
    state, metrics = agent.train(fake_batch(IMAGE_VECTOR, DISCRETE, 4, 8), state)
    assert state is None and agent.updates == 1
    assert set(metrics) >= EXPECTED_METRICS
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize("latent", ["categorical", "gaussian"])
def test_world_model_loss_falls_by_a_third_on_a_fixed_batch(latent: str) -> None:
    opt = dataclasses.replace(DEBUG.opt, model_lr=1e-3)
    agent = _agent(opt=opt, rssm=dataclasses.replace(DEBUG.rssm, latent=latent))
    batch = fake_batch(IMAGE_VECTOR, DISCRETE, 4, 16, seed=1)
    losses = [agent.train(batch, None)[1]["train/loss/world_model/total"] for _ in range(30)]
    assert losses[-1] <= 0.7 * losses[0], losses


def test_report_gives_real_prediction_error_strips_for_images_only() -> None:
    agent = _agent()
    media = agent.report(fake_batch(IMAGE_VECTOR, DISCRETE, 2, 8))
    assert set(media) == {"openloop"}
    assert media["openloop"].dtype == np.uint8 and media["openloop"].shape == (8, 16, 48, 3)
    vector_agent = _agent(vector_space(4), CONTINUOUS)
    assert vector_agent.report(fake_batch(vector_space(4), CONTINUOUS, 2, 8)) == {}


def test_acting_weights_make_another_agent_act_identically() -> None:
    source, target = _agent(seed=1), _agent(seed=2)
    source.train(fake_batch(IMAGE_VECTOR, DISCRETE, 2, 8), None)
    weights = source.acting_weights()
    assert set(weights) == {"encoder", "rssm", "actor"}
    assert all(t.device.type == "cpu" for part in weights.values() for t in part.values())
    target.load_acting_weights(weights)
    obs = obs_step(fake_batch(IMAGE_VECTOR, DISCRETE, 4, 1), 0)
    source.gen.manual_seed(7)
    target.gen.manual_seed(7)
    (s1, _), a1, _ = source.policy(source.init_policy(4), obs)
    (s2, _), a2, _ = target.policy(target.init_policy(4), obs)
    assert torch.equal(s1.deter, s2.deter) and np.array_equal(a1, a2)
    with pytest.raises(ValueError, match="lack"):
        target.load_acting_weights({"encoder": weights["encoder"]})


def _snapshot(agent: DreamerAgent) -> dict[str, torch.Tensor]:
    out = {f"net.{k}": v.detach().clone() for k, v in agent.nets.state_dict().items()}
    for name, opt in (("model", agent.model_opt), ("actor", agent.actor_opt)):
        for i, state in enumerate(opt.opt.state_dict()["state"].values()):
            for key, value in state.items():
                out[f"{name}.{i}.{key}"] = torch.as_tensor(value).clone()
    return out


@pytest.mark.parametrize("act_space", [DISCRETE, CONTINUOUS])
def test_checkpoint_round_trip_restores_weights_and_optimizer_state_exactly(
    tmp_path: Path, act_space: gym.Space
) -> None:
    agent = _agent(act_space=act_space)
    batch = fake_batch(IMAGE_VECTOR, act_space, 3, 8, seed=4)
    agent.train(batch, None)
    agent.save(tmp_path / "ckpt")
    saved = _snapshot(agent)
    _, expected = agent.train(batch, None)  # the step that follows the checkpoint
    changed = _snapshot(agent)
    assert any(not torch.equal(saved[k], changed[k]) for k in saved)
    agent.load(tmp_path / "ckpt")
    restored = _snapshot(agent)
    assert saved.keys() == restored.keys()
    assert all(torch.equal(saved[k], restored[k]) for k in saved)
    assert agent.updates == 1 and agent.model_opt.steps == 1
    other = _agent(act_space=act_space, seed=9)  # different init and sampling stream
    other.load(tmp_path / "ckpt")
    _, again = other.train(batch, None)
    for key, value in expected.items():
        if key.startswith("train/"):
            assert again[key] == value, key


def test_bad_spaces_devices_batches_and_checkpoints_fail_with_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="Discrete or flat Box"):
        _agent(act_space=gym.spaces.MultiBinary(3))
    with pytest.raises(ValueError, match="'image' and 'vector'"):
        _agent(obs_space=gym.spaces.Dict({"pixels": image_space(16)["image"]}))
    with pytest.raises(ValueError, match=r"run\.device"):
        DreamerAgent(vector_space(), DISCRETE, root_config(DEBUG, device="tpu"))
    with pytest.raises(ValueError, match=r"dreamer\.ac\.horizon"):
        _agent(ac=dataclasses.replace(DEBUG.ac, horizon=0))
    agent = _agent()
    batch = fake_batch(IMAGE_VECTOR, DISCRETE, 2, 4)
    with pytest.raises(ValueError, match="missing"):
        agent.train({k: v for k, v in batch.items() if k != "is_terminal"}, None)
    with pytest.raises(ValueError, match="discrete actions"):
        agent.train({**batch, "action": batch["action"] + 5}, None)
    with pytest.raises(ValueError, match="'vector' has shape"):
        agent.policy(agent.init_policy(2), {**obs_step(batch, 0), "vector": np.zeros((2, 7))})
    with pytest.raises(FileNotFoundError, match="no dreamer weights"):
        agent.load(tmp_path)
    _agent(vector_space(4), CONTINUOUS).save(tmp_path / "other")
    with pytest.raises(ValueError, match="do not fit"):
        agent.load(tmp_path / "other")


def _run_agent(seed: int = 0, device: str = "cpu", **run: object) -> DreamerAgent:
    config = root_config(DEBUG, seed, device)
    config = dataclasses.replace(config, run=dataclasses.replace(config.run, **run))
    return DreamerAgent(IMAGE_VECTOR, DISCRETE, config)


def _first_update(agent: DreamerAgent) -> dict[str, float]:
    return agent.train(fake_batch(IMAGE_VECTOR, DISCRETE, 4, 8, seed=3), None)[1]


def test_channels_last_convs_give_the_same_update() -> None:
    plain, fast = _run_agent(), _run_agent(channels_last=True)
    assert fast.wm.decoder.cnn is not None and fast.wm.encoder.cnn is not None
    conv = fast.wm.encoder.cnn.net[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    a, b = _first_update(plain), _first_update(fast)
    for key in (
        "train/loss/world_model/image",
        "train/loss/world_model/total",
        "train/loss/actor/total",
        "train/loss/critic/total",
    ):
        assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key


def test_bf16_autocast_runs_the_forward_passes_in_bf16_and_keeps_fp32_weights() -> None:
    plain, half = _run_agent(), _run_agent(precision="bf16")
    seen: list[torch.dtype] = []
    assert half.wm.encoder.mlp is not None
    half.wm.encoder.mlp.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    a, b = _first_update(plain), _first_update(half)
    assert seen == [torch.bfloat16]
    assert all(p.dtype == torch.float32 for p in half.nets.parameters())
    assert all(math.isfinite(v) for v in b.values())
    # bf16 keeps ~3 significant digits: the same losses to a few percent, not bit-equal
    for key in (
        "train/loss/world_model/image",
        "train/loss/world_model/vector",
        "train/loss/world_model/total",
    ):
        assert b[key] == pytest.approx(a[key], rel=0.05), key
    assert b["train/loss/world_model/image"] != a["train/loss/world_model/image"]
