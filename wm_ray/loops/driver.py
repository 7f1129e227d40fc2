"""Steps a vector env with an agent: one batched policy call per vector step."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from wm_ray.core import Agent
from wm_ray.envs.vector import VectorEnvLike
from wm_ray.episodes import EpisodeStats
from wm_ray.types import ACTION_KEY, split_metrics

StepSink = Callable[[dict[str, np.ndarray]], Any]


class Driver:
    """Collects experience: ``obs -> policy -> {**obs, action} -> sinks -> venv.step(action)``.

    A stored step pairs an observation with the action chosen at it (see ``wm_ray.types``).
    The vector env's ``metric/<name>`` entries go to the episode statistics only (each finished
    episode keeps the values of its last step): the policy and the sinks (replay writers) never
    see them.
    """

    def __init__(
        self,
        venv: VectorEnvLike,
        agent: Agent,
        sinks: tuple[StepSink, ...] = (),
        mode: Literal["explore", "eval"] = "explore",
        names: list[str] | None = None,
    ) -> None:
        self.venv = venv
        self.agent = agent
        self.sinks = list(sinks)
        self.mode = mode
        self.episodes = EpisodeStats(venv.num_envs, names)  # names: e.g. replay stream ids
        self.env_steps = 0
        self.env_time = 0.0
        self.policy_time = 0.0
        self._obs: dict[str, np.ndarray] | None = None
        self._carry: Any = None

    def reset(self) -> None:
        start = time.perf_counter()
        self._obs = self.venv.reset()
        self.env_time += time.perf_counter() - start
        self._carry = self.agent.init_policy(self.venv.num_envs)

    def run(self, steps: int = 0, episodes: int = 0) -> None:
        """Step until ``steps`` more env steps or ``episodes`` more completed episodes."""
        target_steps = self.env_steps + steps if steps else None
        done_episodes = 0
        while True:
            if target_steps is not None and self.env_steps >= target_steps:
                return
            if episodes and done_episodes >= episodes:
                return
            done_episodes += self.step()

    def step(self) -> int:
        """One vector step; returns the number of episodes that completed."""
        if self._obs is None:
            self.reset()
        assert self._obs is not None
        obs, _ = split_metrics(self._obs)
        start = time.perf_counter()
        self._carry, action, _ = self.agent.policy(self._carry, obs, mode=self.mode)
        self.policy_time += time.perf_counter() - start
        step = {**obs, ACTION_KEY: np.asarray(action)}
        for sink in self.sinks:
            sink(step)
        before = len(self.episodes)
        self.episodes.add(self._obs)
        start = time.perf_counter()
        self._obs = self.venv.step(step[ACTION_KEY])
        self.env_time += time.perf_counter() - start
        self.env_steps += self.venv.num_envs
        return len(self.episodes) - before
