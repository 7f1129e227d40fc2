"""The uniform random agent: the baseline every score is normalized against.

It implements the agent protocol of ``wm_ray.core`` so the loops, replay and runtime can run
(and be tested) without a learned model. ``train`` performs no update: this agent does not
learn, by design, and reports no training metrics.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from wm_ray.config import Config

__all__ = ["RandomAgent", "sample_actions"]


def sample_actions(space: gym.Space, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` uniform actions: int64 ``(n,)`` for Discrete, float32 ``(n, A)`` for Box."""
    if isinstance(space, gym.spaces.Discrete):
        start, count = int(space.start), int(space.n)
        return (start + rng.integers(0, count, size=n)).astype(np.int64)
    if isinstance(space, gym.spaces.Box):
        low = np.broadcast_to(space.low, space.shape)
        high = np.broadcast_to(space.high, space.shape)
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            raise ValueError(f"cannot sample uniformly from an unbounded Box {space}")
        return rng.uniform(low, high, size=(n, *space.shape)).astype(np.float32)
    raise TypeError(f"unsupported action space {space}; expected Discrete or Box")


class RandomAgent:
    """Acts uniformly at random; ``train`` is a no-op that returns no metrics."""

    family = "random"

    def __init__(
        self,
        obs_space: gym.spaces.Dict,
        act_space: gym.Space,
        config: Config,
        acting: bool = False,
    ) -> None:
        self.acting = acting
        self.obs_space = obs_space
        self.act_space = act_space
        self.config = config
        self._rng = np.random.default_rng(config.run.seed)

    def init_policy(self, batch_size: int) -> None:
        return None

    def policy(
        self, carry: Any, obs: dict[str, np.ndarray], mode: Literal["explore", "eval"] = "explore"
    ) -> tuple[Any, np.ndarray, dict[str, np.ndarray]]:
        n = len(obs["is_first"])
        return carry, sample_actions(self.act_space, n, self._rng), {}

    def init_train(self, batch_size: int) -> None:
        return None

    def train(self, batch: dict[str, np.ndarray], state: Any) -> tuple[Any, dict[str, float]]:
        return state, {}

    def report(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {}

    def acting_weights(self) -> dict[str, Any]:
        return {}

    def load_acting_weights(self, weights: dict[str, Any]) -> None:
        return None

    def save(self, directory: Path) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        state = self._rng.bit_generator.state
        (Path(directory) / "random_agent.json").write_text(json.dumps(state))

    def load(self, directory: Path) -> None:
        path = Path(directory) / "random_agent.json"
        self._rng.bit_generator.state = json.loads(path.read_text())

    def random_state(self) -> Any:
        return self._rng.bit_generator.state

    def set_random_state(self, state: Any) -> None:
        self._rng.bit_generator.state = state
