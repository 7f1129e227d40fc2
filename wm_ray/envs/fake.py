"""Deterministic fake envs for tests (``fake:image-discrete``, ``fake:vector-continuous``, ...).

A task is ``<obs>-<action>`` with ``<obs>`` one of ``image``, ``vector``, ``image-vector`` and
``<action>`` one of ``discrete`` (Discrete(4)) or ``continuous`` (Box(-1, 1, (2,))).
Observations encode the env's state so that tests can check ordering and seeding:

- ``vector`` (6,): [step in episode, seed of the last seeded reset (-1 if none), episode index,
  uniform noise drawn from ``np_random`` at reset, last action (sum for Box; 0 after reset),
  steps taken by this env instance];
- ``image`` (S, S, 3): channel 0 = step % 256, channel 1 = seed % 256, channel 2 = episode % 256.

Reward is ``1 + 0.1 * last action``. An episode lasts ``episode_length`` steps and ends as a
termination (``truncate=True``: a truncation). ``fail_at=k`` makes the instance raise
RuntimeError on its k-th step (counted over its whole life), for crash tests.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from wm_ray.envs.base import AddImage, DefaultSeed, StepResult, observation_keys

OPTIONS = frozenset({"episode_length", "fail_at", "truncate", "pixels", "image_size"})
"""Keyword options of :func:`make` besides ``seed``."""

_OBS = {"image": ("image",), "vector": ("vector",), "image-vector": ("image", "vector")}
_ACT = ("discrete", "continuous")
VECTOR_DIM = 6


def owns(env_id: str) -> bool:
    """Fake ids always carry the ``fake:`` prefix, so no plain id belongs here."""
    return False


def list_ids() -> list[str]:
    """All fake ids, ``fake:<obs>-<action>``."""
    return [f"fake:{obs}-{act}" for obs in _OBS for act in _ACT]


class FakeEnv(gym.Env):
    """A tiny deterministic env whose observations expose its internal counters.

    Args:
        keys: Observation keys to emit (``image`` and/or ``vector``).
        discrete: Discrete(4) actions if True, else Box(-1, 1, (2,)).
        episode_length: Steps per episode.
        fail_at: Raise RuntimeError on this step of the instance (None: never).
        truncate: End episodes as truncation instead of termination.
        image_size: Side of ``image``.
    """

    def __init__(
        self,
        keys: tuple[str, ...],
        discrete: bool,
        *,
        episode_length: int = 10,
        fail_at: int | None = None,
        truncate: bool = False,
        image_size: int = 64,
    ) -> None:
        self._keys = keys
        self._length = episode_length
        self._fail_at = fail_at
        self._truncate = truncate
        self._size = image_size
        self.metadata = {"render_modes": ["rgb_array"]}
        self.render_mode = "rgb_array"
        obs: dict[str, spaces.Space] = {}
        if "image" in keys:
            obs["image"] = spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
        if "vector" in keys:
            obs["vector"] = spaces.Box(-np.inf, np.inf, (VECTOR_DIM,), np.float32)
        self.observation_space = spaces.Dict(obs)
        self.action_space = spaces.Discrete(4) if discrete else spaces.Box(-1, 1, (2,), np.float32)
        self._step = 0
        self._seed = -1
        self._episode = -1
        self._noise = 0.0
        self._last_action = 0.0
        self._total = 0

    def _obs(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        if "image" in self._keys:
            out["image"] = self.render()
        if "vector" in self._keys:
            values = [self._step, self._seed, self._episode, self._noise, self._last_action]
            out["vector"] = np.array([*values, self._total], np.float32)
        return out

    def render(self) -> np.ndarray:  # type: ignore[override]
        """The image observation: (S, S, 3) uint8 filled with the counters."""
        image = np.empty((self._size, self._size, 3), np.uint8)
        image[..., 0] = self._step % 256
        image[..., 1] = self._seed % 256
        image[..., 2] = self._episode % 256
        return image

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start an episode; ``seed`` reseeds ``np_random`` and is recorded in the obs."""
        super().reset(seed=seed)
        if seed is not None:
            self._seed = seed
        self._step = 0
        self._episode += 1
        self._noise = float(self.np_random.uniform())
        self._last_action = 0.0
        return self._obs(), {}

    def step(self, action: Any) -> StepResult:
        """Advance one step; raises RuntimeError at ``fail_at``."""
        self._total += 1
        if self._fail_at is not None and self._total == self._fail_at:
            raise RuntimeError(f"fake env failure at step {self._total} (fail_at={self._fail_at})")
        self._step += 1
        self._last_action = float(np.sum(action))
        done = self._step >= self._length
        terminated, truncated = (False, done) if self._truncate else (done, False)
        return self._obs(), 1.0 + 0.1 * self._last_action, terminated, truncated, {}


def make(
    task: str,
    *,
    seed: int | None = None,
    episode_length: int = 10,
    fail_at: int | None = None,
    truncate: bool = False,
    pixels: bool = False,
    image_size: int = 64,
) -> gym.Env:
    """Make a fake env, e.g. ``image-discrete`` (the id without ``fake:``).

    Args:
        task: ``<obs>-<action>``, see the module docstring.
        seed: Seed of the first reset.
        episode_length: Steps per episode.
        fail_at: Raise RuntimeError on this step of the instance.
        truncate: End episodes as truncation instead of termination.
        pixels: Add the rendered ``image`` to vector-only tasks.
        image_size: Side of ``image``.

    Returns:
        The fake env (already in the canonical dict format).
    """
    obs, _, act = task.removeprefix("fake:").rpartition("-")
    if obs not in _OBS or act not in _ACT:
        raise ValueError(f"unknown fake task {task!r}; valid ids: {list_ids()}")
    if episode_length < 1:
        raise ValueError(f"episode_length must be >= 1, got {episode_length}")
    env: gym.Env = FakeEnv(
        _OBS[obs],
        act == "discrete",
        episode_length=episode_length,
        fail_at=fail_at,
        truncate=truncate,
        image_size=image_size,
    )
    if pixels and "image" not in observation_keys(env):
        env = AddImage(env, image_size)
    return DefaultSeed(env, seed)


class FakeFactory:
    """Picklable ``make_fn`` for :class:`wm_ray.envs.VectorEnv` tests that bypass the registry.

    Args:
        task: Fake task, e.g. ``image-discrete``.
        **options: Options of :func:`make` (``episode_length``, ``fail_at``, ...).
    """

    def __init__(self, task: str, **options: Any) -> None:
        self.task = task
        self.options = options

    def __call__(self, index: int) -> gym.Env:
        """Build the fake env for env ``index`` (the index is not used)."""
        return make(self.task, **self.options)
