"""The driver pairs each observation with the action chosen at it and executes that action."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from wm_ray.envs.fake import FakeFactory
from wm_ray.envs.vector import VectorEnv
from wm_ray.loops.driver import Driver


class ScriptedAgent:
    """Acts ``(step in episode + env) % 4`` and counts its batched policy calls."""

    def __init__(self) -> None:
        self.calls = 0

    def init_policy(self, batch_size: int) -> None:
        return None

    def policy(self, carry: Any, obs: dict[str, np.ndarray], mode: str = "explore") -> Any:
        self.calls += 1
        step = obs["vector"][:, 0].astype(np.int64)
        return carry, (step + np.arange(len(step))) % 4, {}


@pytest.fixture
def venv() -> Any:
    env = VectorEnv(FakeFactory("fake:vector-discrete", episode_length=5), num_envs=3, seed=0)
    yield env
    env.close()


def test_stored_steps_pair_obs_with_the_action_executed_at_it(venv: VectorEnv) -> None:
    agent = ScriptedAgent()
    steps: list[dict[str, np.ndarray]] = []
    driver = Driver(venv, agent, sinks=(steps.append,))  # type: ignore[arg-type]
    driver.run(steps=60)
    assert driver.env_steps == 60 and agent.calls == 20  # one batched call per vector step
    for t in range(len(steps)):
        expected = (steps[t]["vector"][:, 0].astype(np.int64) + np.arange(3)) % 4
        np.testing.assert_array_equal(steps[t]["action"], expected)
        if t + 1 < len(steps):
            nxt = steps[t + 1]
            executed = ~nxt["is_first"]  # after is_last the env resets and ignores the action
            assert np.all(executed == ~steps[t]["is_last"])
            np.testing.assert_allclose(
                nxt["reward"][executed], 1 + 0.1 * steps[t]["action"][executed], rtol=1e-6
            )


def test_episodes_are_counted_with_their_returns(venv: VectorEnv) -> None:
    driver = Driver(venv, ScriptedAgent())  # type: ignore[arg-type]
    driver.run(episodes=4)
    episodes = driver.episodes.pop()
    assert len(episodes) >= 4
    for episode in episodes:
        env = int(episode["stream"])
        actions = [(t + env) % 4 for t in range(5)]
        assert episode["length"] == 5 and episode["terminal"]
        assert episode["return"] == pytest.approx(sum(1 + 0.1 * a for a in actions))
