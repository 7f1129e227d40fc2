"""The Genie agent: the staged schedule, the checks of its config, the latent-action labels,
the dream session, and the behaviour policies env workers act with (uniform, or another run's
checkpoint). Real networks at toy size, real files on disk."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from wm_ray.config_io import build_config, save_config, to_yaml
from wm_ray.factory import create_model
from wm_ray.models.common.testing import fake_batch, image_space
from wm_ray.models.genie.networks import ActionLabels
from wm_ray.rundir import checkpoint as ckpt
from wm_ray.validate import validate_run

BASE = ["genie", "genie_debug"]
SETS = ["run.device=cpu", "genie.start.dynamics=2"]
SPACE, ACTIONS = image_space(16, 3), gym.spaces.Discrete(4)


def _agent(*extra: str, acting: bool = False) -> object:
    config = build_config(BASE, [*SETS, *extra])
    return create_model("genie", SPACE, ACTIONS, config, acting=acting)


def _batch(seed: int = 0) -> dict[str, np.ndarray]:
    batch = fake_batch(SPACE, ACTIONS, batch=4, length=6, seed=seed)
    batch["is_first"][:] = False  # replay.cross_episodes=false: one episode per sequence
    return batch


def test_the_tokenizer_trains_alone_then_frozen_while_the_lam_and_dynamics_train() -> None:
    agent = _agent()
    seen = []
    for _ in range(4):
        tok = {k: v.clone() for k, v in agent.tokenizer.state_dict().items()}  # type: ignore[attr-defined]
        _, metrics = agent.train(_batch(), None)  # type: ignore[attr-defined]
        changed = any(
            not torch.equal(v, tok[k])
            for k, v in agent.tokenizer.state_dict().items()  # type: ignore[attr-defined]
        )
        parts = {k.split("/")[2] for k in metrics if k.startswith("train/loss/")}
        seen.append((sorted(parts), changed))
    assert seen == [(["tokenizer"], True)] * 2 + [(["dynamics", "lam"], False)] * 2
    unfrozen = _agent("genie.start.freeze_tokenizer=false")
    for _ in range(3):
        _, metrics = unfrozen.train(_batch(), None)  # type: ignore[attr-defined]
    assert {"train/loss/tokenizer/total", "train/loss/dynamics/total"} <= set(metrics)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("replay.cross_episodes=true", "replay.cross_episodes=true"),
        ("replay.seq_len=3", "replay.seq_len=3"),
        ("genie.dynamics.model.heads=3", "genie.dynamics.model.heads=3"),
        ("genie.frames=8", r"replay.seq_len=4 \(must be >= genie.frames=8"),
    ],
)
def test_bad_settings_are_refused_before_a_run_naming_the_key(override: str, named: str) -> None:
    config = build_config(BASE, ["run.device=cpu", override])
    with pytest.raises(ValueError, match=rf"invalid genie config: .*{named}"):
        validate_run(config)


def test_action_labels_name_each_latent_action_by_its_most_frequent_env_action() -> None:
    labels = ActionLabels(latent=3, actions=4, decay=1.0)
    latent = torch.tensor([0, 0, 0, 1, 1, 2])
    env = torch.tensor([2, 2, 1, 3, 3, 0])
    labels.update(latent, env)
    assert labels.table() == [(2, pytest.approx(2 / 3)), (3, 1.0), (0, 1.0)]
    assert ActionLabels(3, 0).table() == [(None, 0.0)] * 3  # continuous actions: no labels


def test_training_counts_latent_actions_against_the_replayed_env_actions() -> None:
    agent = _agent("genie.start.dynamics=0", "genie.start.freeze_tokenizer=false")
    batch = _batch()
    agent.train(batch, None)  # type: ignore[attr-defined]
    counts = agent.labels.counts  # type: ignore[attr-defined]
    frames = agent.cfg.frames  # type: ignore[attr-defined]
    assert float(counts.sum()) == pytest.approx(4 * (frames - 1))  # one per transition
    env_counts = np.bincount(batch["action"][:, -frames:-1].ravel(), minlength=4)
    np.testing.assert_allclose(counts.sum(0).numpy(), env_counts)
    names = agent.latent_actions()  # type: ignore[attr-defined]
    assert len(names) == 8 and any(env is not None for _, env in names)


def test_a_dream_steps_with_latent_actions_and_refuses_others() -> None:
    agent = _agent("genie.start.dynamics=0", "genie.start.freeze_tokenizer=false")
    frames = _batch()["image"][:2, 0]
    dream, start = agent.dream_reset(frames)  # type: ignore[attr-defined]
    assert start.shape == (2, 16, 16, 3) and start.dtype == np.uint8
    for step in range(6):  # beyond genie.frames: the context stays a window of the last ones
        frame, reward, end = agent.dream_step(dream, np.array([step % 8, 7]))  # type: ignore[attr-defined]
        assert frame.shape == (2, 16, 16, 3) and frame.dtype == np.uint8
        assert dream.tokens.shape[1] <= agent.cfg.frames - 1  # type: ignore[attr-defined]
        assert dream.actions.shape[1] == dream.tokens.shape[1] - 1
    assert not reward.any() and not end.any()
    with pytest.raises(ValueError, match=r"latent actions must be 2 indices in \[0, 8\)"):
        agent.dream_step(dream, np.array([8, 0]))  # type: ignore[attr-defined]


def test_random_behaviour_acts_uniformly_in_the_action_space() -> None:
    agent = _agent(acting=True)
    obs = {"image": np.zeros((512, 16, 16, 3), np.uint8), "is_first": np.ones(512, bool)}
    _, action, _ = agent.policy(agent.init_policy(512), obs)  # type: ignore[attr-defined]
    counts = np.bincount(action, minlength=4)
    assert counts.sum() == 512 and counts.min() > 80  # each of 4 actions ~128 times
    box = gym.spaces.Box(-2.0, 3.0, (2,), np.float32)
    config = build_config(BASE, SETS)
    cont = create_model("genie", SPACE, box, config, acting=True)
    _, values, _ = cont.policy(cont.init_policy(512), obs)
    assert values.shape == (512, 2) and values.min() >= -2.0 and values.max() <= 3.0
    assert values.min() < -1.5 and values.max() > 2.5


def test_a_behaviour_from_another_run_acts_as_that_runs_policy(tmp_path: Path) -> None:
    other = build_config(["diamond", "diamond_debug"], ["run.device=cpu", "run.seed=5"])
    diamond = create_model("diamond", SPACE, ACTIONS, other)
    diamond.train(fake_batch(SPACE, ACTIONS, 4, 8), None)  # weights unlike a fresh agent's
    run = tmp_path / "diamond-run"
    save_config(other, run)
    ckpt.save_checkpoint(run, 100, diamond.save, {"counters": {}}, to_yaml(other))
    genie = _agent(f"genie.behaviour={run}", acting=True)
    obs = {"image": _batch()["image"][:, 0], "is_first": np.ones(4, bool)}
    state = genie.random_state()  # type: ignore[attr-defined]
    acts = []
    for agent in (genie, diamond):
        agent.set_random_state(state[1] if agent is diamond else state)  # type: ignore[attr-defined]
        _, action, _ = agent.policy(agent.init_policy(4), obs, "eval")  # type: ignore[attr-defined]
        acts.append(action)
    np.testing.assert_array_equal(acts[0], acts[1])
    with pytest.raises(ValueError, match=r"genie.behaviour=.*nothing.* must be 'random' or a run"):
        _agent(f"genie.behaviour={tmp_path / 'nothing'}", acting=True)
