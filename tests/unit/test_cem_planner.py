"""The CEM planner (wm_ray.models.rssm.planning) on toy world models whose best action
sequences are known in closed form, its batching over envs and candidates, and the CEM setting
of the Dreamer family (planner: cem)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from wm_ray.config_io import build_config
from wm_ray.models.rssm.config import CEMConfig
from wm_ray.models.rssm.planning import cem_plan, explore, imagine_returns
from wm_ray.models.rssm.rssm import State

CEM = CEMConfig(horizon=5, candidates=400, iterations=8, top_k=40)


def _tracking_model(targets: torch.Tensor, candidates: int) -> tuple[Any, Any]:
    """A toy world model whose state holds the step count and the last action; its reward is
    ``-|a_k - targets[env, k]|^2``, so the best sequence of env ``n`` is ``targets[n]``.
    States are env-major: row ``m`` belongs to env ``m // candidates``."""

    def step(s: State, action: torch.Tensor) -> State:
        return State(torch.cat([s.deter[:, :1] + 1, action], -1), s.stoch)

    def reward(s: State) -> torch.Tensor:
        k = s.deter[:, 0].long() - 1
        env = torch.arange(s.deter.shape[0]) // candidates
        return -(s.deter[:, 1:] - targets[env, k]).square().sum(-1)

    return step, reward


def _start(n: int, action_dim: int) -> State:
    return State(torch.zeros(n, 1 + action_dim), torch.zeros(n, 0))


def test_cem_finds_the_best_sequence_of_every_env_in_one_call() -> None:
    gen = torch.Generator().manual_seed(0)
    targets = torch.rand(3, CEM.horizon, 2, generator=gen) * 1.6 - 0.8  # (N, H, A) in [-.8, .8]
    step, reward = _tracking_model(targets, CEM.candidates)
    plan = cem_plan(_start(3, 2), step, reward, 2, CEM, gen)
    assert plan.action.shape == (3, 2) and plan.mean.shape == (3, CEM.horizon, 2)
    # each env converged to its own optimum (actions span [-1, 1]; 0.05 is 2.5% of it)
    assert (plan.mean - targets).abs().max() < 0.05, (plan.mean - targets).abs().max()
    assert torch.equal(plan.action, plan.mean[:, 0])
    assert (plan.score > -0.01 * CEM.horizon).all()  # the elites' return is close to 0


def test_cem_plans_through_the_dynamics_of_a_quadratic_reward_model() -> None:
    """A point at x moves by 0.5 * a per step; reward -(x - goal)^2 after every step. Reaching
    the goal at once is best: the first action is (goal - x0) / 0.5, then 0."""
    gen = torch.Generator().manual_seed(1)
    x0 = torch.tensor([[0.0], [0.2], [-0.3]])
    goal = torch.tensor([0.3, -0.1, 0.0])
    best_first = (goal - x0[:, 0]) / 0.5  # 0.6, -0.6, 0.6

    def step(s: State, action: torch.Tensor) -> State:
        return State(s.deter + 0.5 * action, s.stoch)

    def reward(s: State) -> torch.Tensor:
        env = torch.arange(s.deter.shape[0]) // CEM.candidates
        return -(s.deter[:, 0] - goal[env]).square()

    plan = cem_plan(State(x0, torch.zeros(3, 0)), step, reward, 1, CEM, gen)
    assert (plan.action[:, 0] - best_first).abs().max() < 0.05, plan.action
    # later actions hold the point still: their effect on the return is ~0 either way, so only
    # the sum of the plan's displacement is pinned down
    travelled = x0[:, 0] + 0.5 * plan.mean[:, :, 0].sum(1)
    assert (travelled - goal).abs().max() < 0.1


def test_one_plan_is_one_batched_program_over_envs_and_candidates() -> None:
    """No loop over envs or candidates: the model is called horizon x iterations times, each
    time with all N * J states."""
    cfg = CEMConfig(horizon=4, candidates=50, iterations=3, top_k=5)
    calls: list[int] = []

    def step(s: State, action: torch.Tensor) -> State:
        calls.append(action.shape[0])
        return State(s.deter + action, s.stoch)

    start = State(torch.zeros(7, 3), torch.zeros(7, 0))
    plan = cem_plan(start, step, lambda s: -s.deter.square().sum(-1), 3, cfg, torch.Generator())
    assert calls == [7 * 50] * (4 * 3)
    assert plan.action.shape == (7, 3) and plan.std.shape == (7, 4, 3)
    assert plan.action.abs().max() <= 1.0


def test_returns_weight_rewards_by_discount_and_continue_and_add_the_value() -> None:
    def step(s: State, action: torch.Tensor) -> State:
        return State(s.deter + 1, s.stoch)

    actions = torch.zeros(2, 3, 1)
    start = State(torch.zeros(2, 1), torch.zeros(2, 0))
    returns = imagine_returns(
        start,
        actions,
        step,
        reward=lambda s: torch.full((2,), 2.0),
        discount=0.5,
        cont=lambda s: torch.full((2,), 0.8),
        value=lambda s: s.deter[:, 0] * 10,  # 30 at the horizon
    )
    # w = 1, 0.4, 0.16, then 0.064 for the value
    expected = 2.0 * (1 + 0.4 + 0.16) + 0.064 * 30.0
    assert torch.allclose(returns, torch.full((2,), expected))


def test_exploration_noise_is_added_and_clipped() -> None:
    action = torch.zeros(2000, 2)
    noisy = explore(action, 0.3, torch.Generator().manual_seed(0))
    assert noisy.abs().max() <= 1.0
    assert abs(float(noisy.std()) - 0.3) < 0.02
    assert torch.equal(explore(action, 0.0), action)


def test_dreamer_plans_with_cem_on_its_reward_continue_and_critic() -> None:
    """planner: cem is a Dreamer setting: the acting agent gets the heads it plans with, acts
    within the action box, and acts exactly as the learner it got its weights from."""
    from wm_ray.conformance import spaces
    from wm_ray.factory import create_model

    config = build_config(
        ["debug", "size_debug"],
        [
            "run.device=cpu",
            "dreamer.planner=cem",
            "dreamer.cem.value=true",
            "dreamer.cem.horizon=3",
            "dreamer.cem.candidates=32",
            "dreamer.cem.iterations=2",
            "dreamer.cem.top_k=4",
        ],
    )
    obs_space, act_space = spaces(("vector",), "continuous")
    learner = create_model("dreamer", obs_space, act_space, config)
    actor = create_model("dreamer", obs_space, act_space, config, acting=True)
    assert {"reward", "cont", "critic"} <= set(learner.acting_weights())
    actor.load_acting_weights(learner.acting_weights())
    obs = {"vector": np.ones((2, 5), np.float32), "is_first": np.ones(2, bool)}
    state = learner.random_state()
    _, a, _ = learner.policy(learner.init_policy(2), obs, "eval")
    actor.set_random_state(state)
    _, b, _ = actor.policy(actor.init_policy(2), obs, "eval")
    assert a.shape == (2, 2) and np.abs(a).max() <= 1.0
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["planet.cem.top_k=2000"], "planet.cem.top_k=2000 (must be <= planet.cem.candidates"),
        (["planet.cem.discount=0"], "planet.cem.discount=0.0 (must be in (0, 1])"),
        (["planet.rssm.latent=categorical"], "planet.rssm.latent='categorical'"),
        (["planet.cem.value=true"], "planet.cem.value=True (PlaNet has no critic"),
    ],
)
def test_bad_planet_settings_are_refused_naming_the_value(overrides: list[str], named: str) -> None:
    from wm_ray.models.planet.config import validate

    config = build_config(["planet"], overrides)
    with pytest.raises(ValueError, match="invalid planet config") as err:
        validate(config)
    assert named in str(err.value)


def test_bad_values_are_refused_when_the_config_is_built() -> None:
    from wm_ray.config_checks import ConfigError

    with pytest.raises(ConfigError, match=r"'planet.bits' must be in \[1, 8\], got 9"):
        build_config(["planet"], ["planet.bits=9"])
    with pytest.raises(ConfigError, match=r"'planet.planner' expects one of 'cem'"):
        build_config(["planet"], ["planet.planner=mpc"])
    with pytest.raises(ConfigError, match=r"'dreamer.planner' expects one of 'actor', 'cem'"):
        build_config([], ["dreamer.planner=cme"])


@pytest.mark.parametrize("model", ["planet", "dreamer"])
def test_cem_on_a_discrete_env_is_refused_before_the_run_naming_what_is_valid(model: str) -> None:
    from wm_ray.registry import UnsupportedError
    from wm_ray.validate import validate_run

    sets = ["env.id=CartPole-v1", f"run.model={model}"]
    if model == "dreamer":
        sets.append("dreamer.planner=cem")
    config = build_config(["planet"] if model == "planet" else [], sets)
    with pytest.raises(UnsupportedError) as err:
        validate_run(config)
    text = str(err.value)
    assert "does not support discrete actions" in text and "actions continuous" in text, text
    if model == "dreamer":
        assert "with dreamer.planner=cem" in text


def test_dreamer_with_the_cem_planner_passes_the_conformance_checks() -> None:
    """(Vector observations only: planning starts after the encoder, the same for images.)"""
    from wm_ray.conformance import check_family
    from wm_ray.registry import get_model_spec

    spec = get_model_spec("dreamer")
    cem = ["planner=cem", "cem.horizon=3", "cem.candidates=16", "cem.iterations=2", "cem.top_k=4"]
    spec = spec._replace(test_config=(*spec.test_config, *(f"dreamer.{s}" for s in cem)))
    check_family(spec, ("vector",), "continuous")
