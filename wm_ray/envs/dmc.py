"""DeepMind Control Suite tasks as gymnasium envs (``dmc:walker-walk``).

Task names are ``domain-task``; ``cup`` is short for ``ball_in_cup`` and tasks keep their
underscores (``cartpole-swingup_sparse``). ``vector`` is the concatenation of the flattened
proprioceptive observations. With ``pixels=True`` an ``image`` is rendered at ``image_size``
from camera ``camera`` (default 0, 2 for quadruped) through one persistent
:class:`dm_control.mujoco.Camera` whose scene has shadows, reflections and skybox switched off
(``mjvScene.flags``); on a 2-core CPU with Mesa EGL that renders 64x64 walker frames at ~220 per
second instead of ~45 with the default flags. ``MUJOCO_GL`` defaults to ``egl`` (set it to
``osmesa`` where EGL is missing).

Episode ends: a LAST time step with discount 0 is ``terminated``; with discount 1 (the task's
time limit) it is ``truncated``. ``action_repeat`` defaults to 2. ``time_limit`` counts agent
steps and replaces the task's own limit (1000 control steps for most tasks).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from wm_ray.envs.base import (
    GENERIC_OPTIONS,
    disable_slow_render_flags,
    ensure_gl_backend,
    standard_wrappers,
)

OPTIONS = GENERIC_OPTIONS | {"camera"}
"""Keyword options of :func:`make` besides ``seed``."""

DOMAIN_ALIASES = {"cup": "ball_in_cup"}
DEFAULT_CAMERAS = {"quadruped": 2}
DEFAULT_ACTION_REPEAT = 2


def owns(env_id: str) -> bool:
    """dm_control ids always carry the ``dmc:`` prefix, so no plain id belongs here."""
    return False


def _all_tasks() -> list[tuple[str, str]]:
    ensure_gl_backend()
    from dm_control import suite  # heavy, imported on demand

    return list(suite.ALL_TASKS)


def list_ids() -> list[str]:
    """All suite tasks as ``dmc:domain-task`` (``cup`` for ball_in_cup); [] without dm_control."""
    if importlib.util.find_spec("dm_control") is None:
        return []
    aliases = {full: short for short, full in DOMAIN_ALIASES.items()}
    return sorted(f"dmc:{aliases.get(d, d)}-{t}" for d, t in _all_tasks())


def parse_task(task: str) -> tuple[str, str]:
    """Split ``domain-task`` into dm_control's (domain, task), resolving aliases.

    Raises:
        ValueError: naming the valid tasks when ``task`` is not a suite task.
    """
    domain, _, name = task.partition("-")
    domain = DOMAIN_ALIASES.get(domain, domain)
    known = {(d.lower(), t.lower()): (d, t) for d, t in _all_tasks()}
    found = known.get((domain.lower(), name.lower()))
    if found is None:
        raise ValueError(f"unknown dm_control task {task!r}; valid tasks: {list_ids()}")
    return found


class DMCEnv(gym.Env):
    """A dm_control suite task behind the gymnasium API (raw ``vector`` obs, true action bounds).

    Args:
        domain: Suite domain, e.g. ``walker``.
        task: Suite task, e.g. ``walk``.
        seed: Seed of the task's random state (None: nondeterministic).
        camera: Camera id used by :meth:`render`.
        image_size: Side of rendered frames.
        unlimited: Remove the task's own time limit (a TimeLimit wrapper takes over).
    """

    def __init__(
        self,
        domain: str,
        task: str,
        *,
        seed: int | None = None,
        camera: int = 0,
        image_size: int = 64,
        unlimited: bool = False,
    ) -> None:
        ensure_gl_backend()
        from dm_control import suite  # heavy, imported on demand

        task_kwargs: dict[str, Any] = {"random": seed}
        if unlimited:
            task_kwargs["time_limit"] = float("inf")
        self._env = suite.load(domain, task, task_kwargs=task_kwargs)
        self._camera_id = camera
        self._size = image_size
        self._camera: Any = None
        self.metadata = {"render_modes": ["rgb_array"]}
        self.render_mode = "rgb_array"
        obs_spec = self._env.observation_spec()
        dim = sum(int(np.prod(spec.shape)) for spec in obs_spec.values())
        self.observation_space = spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        act = self._env.action_spec()
        self.action_space = spaces.Box(
            act.minimum.astype(np.float32), act.maximum.astype(np.float32), act.shape, np.float32
        )

    def _flat(self, observation: dict[str, Any]) -> np.ndarray:
        return np.concatenate([np.asarray(v, np.float32).ravel() for v in observation.values()])

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode; ``seed`` reseeds the task's random state."""
        super().reset(seed=seed)
        if seed is not None:
            self._env.task._random = np.random.RandomState(seed)  # suite tasks keep it here
        time_step = self._env.reset()
        return self._flat(time_step.observation), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Advance one control step (terminated iff LAST with discount 0)."""
        time_step = self._env.step(np.asarray(action, np.float64))
        reward = float(time_step.reward or 0.0)
        last = time_step.last()
        terminated = bool(last and time_step.discount == 0.0)
        truncated = bool(last and not terminated)
        info = {"discount": float(time_step.discount)}
        return self._flat(time_step.observation), reward, terminated, truncated, info

    def render(self) -> np.ndarray:  # type: ignore[override]
        """An (image_size, image_size, 3) uint8 frame with the fast render flags."""
        if self._camera is None:
            from dm_control.mujoco import Camera

            physics = self._env.physics
            self._camera = Camera(physics, self._size, self._size, self._camera_id)
            disable_slow_render_flags(self._camera.scene.flags)
        return np.asarray(self._camera.render(), dtype=np.uint8)

    def close(self) -> None:
        """Free the rendering scene and contexts; the env is unusable afterwards."""
        if self._camera is not None:
            self._camera.scene.free()
            self._camera = None
            self._env.physics.free()  # GL contexts now, not in a noisy interpreter-exit hook
        self._env.close()


def make(
    task: str,
    *,
    seed: int | None = None,
    pixels: bool = False,
    image_size: int = 64,
    action_repeat: int | None = None,
    time_limit: int | None = None,
    camera: int | None = None,
) -> gym.Env:
    """Make a dm_control suite task, e.g. ``walker-walk``.

    Args:
        task: ``domain-task`` (``cup-catch``, ``cartpole-swingup_sparse``).
        seed: Seed of the first reset (and of the task at construction).
        pixels: Add a rendered ``image``.
        image_size: Side of ``image``.
        action_repeat: Repeats per agent step (default 2).
        time_limit: Maximum agent steps per episode (default: the task's own limit).
        camera: Camera id (default 0, 2 for quadruped).

    Returns:
        An env following the ``wm_ray.envs`` observation/action contract.
    """
    if importlib.util.find_spec("dm_control") is None:
        raise ImportError("the dmc backend needs `pip install wm_ray[dmc]`")
    domain, name = parse_task(task)
    if camera is None:
        camera = DEFAULT_CAMERAS.get(domain, 0)
    env = DMCEnv(
        domain,
        name,
        seed=seed,
        camera=camera,
        image_size=image_size,
        unlimited=time_limit is not None,
    )
    return standard_wrappers(
        env,
        seed=seed,
        pixels=pixels,
        image_size=image_size,
        action_repeat=DEFAULT_ACTION_REPEAT if action_repeat is None else action_repeat,
        time_limit=time_limit,
    )
