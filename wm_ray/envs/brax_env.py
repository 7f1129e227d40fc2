"""Brax envs (``brax:ant``, ``brax:inverted_pendulum``, ...): JAX physics, batched natively.

A Brax vector env is one batched env (:class:`~wm_ray.envs.brax_vector.BraxVectorEnv`): all N
envs step in one jitted call. :func:`make_vector` is the natively batched hook that
``wm_ray.loops.setup.make_vector_env`` uses instead of N Python envs; :func:`make` returns one
env (a batch of 1) behind the gymnasium API for the registry, ``wm-ray list envs`` and reading
spaces. ``vector`` is Brax's observation (float32), actions are Box(-1, 1) (Brax's own range;
clipped), ``action_repeat`` defaults to 1 and the time limit to Brax's 1000 env steps.

JAX is imported only when a Brax env is made or listed. Before that, :func:`configure_jax` sets,
unless the user already set them, ``JAX_PLATFORMS=cpu`` (the physics stays on the CPU next to
torch; set ``JAX_PLATFORMS=cuda`` to run it on a GPU) and ``XLA_PYTHON_CLIENT_PREALLOCATE=false``
(JAX does not reserve 75% of a GPU's memory next to torch). jax 0.10.2 has no XLA flag for the
CPU thread count (see docs/environments.md).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import warnings
from typing import Any

import gymnasium as gym
import numpy as np

from wm_ray.envs.base import GENERIC_OPTIONS, ensure_gl_backend
from wm_ray.envs.brax_vector import BraxVectorEnv

OPTIONS = GENERIC_OPTIONS | {"camera"}
"""Keyword options of :func:`make` and :func:`make_vector` besides ``seed``."""

JAX_DEFAULTS = {"JAX_PLATFORMS": "cpu", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
"""Environment variables set before JAX is imported, unless the user has set them."""


def configure_jax() -> None:
    """Set :data:`JAX_DEFAULTS` where unset and ``MUJOCO_GL`` (see ``ensure_gl_backend``)."""
    for name, value in JAX_DEFAULTS.items():
        os.environ.setdefault(name, value)
    ensure_gl_backend()


def _registry() -> dict[str, Any]:
    configure_jax()
    with contextlib.redirect_stdout(io.StringIO()):  # mujoco.mjx prints a note about warp
        from brax import envs  # heavy: jax, flax, mujoco

    return dict(envs._envs)  # brax.envs.register_environment's table


def owns(env_id: str) -> bool:
    """Brax ids always carry the ``brax:`` prefix, so no plain id belongs here."""
    return False


def list_ids() -> list[str]:
    """Brax's registered envs as ``brax:<name>``; [] when brax is not installed."""
    if importlib.util.find_spec("brax") is None:
        return []
    return sorted(f"brax:{name}" for name in _registry())


_ENVS: dict[str, Any] = {}


def brax_env(task: str) -> Any:
    """The raw Brax env of a registered name (built once per process)."""
    if importlib.util.find_spec("brax") is None:
        raise ImportError("the brax backend needs `pip install wm_ray[brax]`")
    registry = _registry()
    if task not in registry:
        raise ValueError(f"unknown brax task {task!r}; valid tasks: {sorted(registry)}")
    if task not in _ENVS:
        with warnings.catch_warnings():  # brax.io.mjcf: "not actively being maintained"
            warnings.filterwarnings("ignore", "Brax System", UserWarning)
            _ENVS[task] = registry[task]()
    return _ENVS[task]


def make_vector(
    task: str,
    num_envs: int,
    seed: int = 0,
    *,
    pixels: bool = False,
    image_size: int = 64,
    action_repeat: int | None = None,
    time_limit: int | None = None,
    camera: int | None = None,
) -> BraxVectorEnv:
    """N envs of a Brax task stepped by one jitted call (``VectorEnv``'s interface).

    Args:
        task: A registered Brax name, e.g. ``inverted_pendulum``.
        num_envs: N.
        seed: Base seed; env ``i`` starts from ``PRNGKey(seed + i)``.
        pixels: Add a MuJoCo-rendered ``image`` per env (refused for systems without a model).
        image_size: Side of ``image``.
        action_repeat: Env steps per agent step (default 1).
        time_limit: Agent steps per episode (default: 1000 env steps).
        camera: MuJoCo camera id (default: the model's ``track`` camera, else the free one).
    """
    return BraxVectorEnv(
        task,
        brax_env(task),
        num_envs,
        seed,
        pixels=pixels,
        image_size=image_size,
        action_repeat=1 if action_repeat is None else action_repeat,
        time_limit=time_limit,
        camera=camera,
    )


class BraxEnv(gym.Env):
    """One Brax env (a batch of 1) behind the gymnasium API.

    ``terminated`` is Brax's ``done``; reaching the time limit is ``truncated``. The first reset
    without a seed uses the make-time seed.
    """

    def __init__(self, batch: BraxVectorEnv) -> None:
        self._batch = batch
        self.metadata = {"render_modes": []}
        self.observation_space = batch.obs_space
        self.action_space = batch.act_space

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start an episode; ``seed`` restarts the env's key sequence from ``PRNGKey(seed)``."""
        super().reset(seed=seed)
        if seed is not None:
            self._batch.reseed(seed)
        return self._single(self._batch.reset()), {}

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Advance one agent step."""
        out = self._batch.step(np.asarray(action, np.float32)[None])
        terminated = bool(out["is_terminal"][0])
        truncated = bool(out["is_last"][0]) and not terminated
        return self._single(out), float(out["reward"][0]), terminated, truncated, {}

    def _single(self, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {key: out[key][0] for key in self._batch.obs_space.spaces}

    def close(self) -> None:
        """Free the renderer."""
        self._batch.close()


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
    """One Brax env as a gymnasium env (options as in :func:`make_vector`)."""
    batch = make_vector(
        task,
        1,
        int(np.random.default_rng().integers(2**31)) if seed is None else seed,
        pixels=pixels,
        image_size=image_size,
        action_repeat=action_repeat,
        time_limit=time_limit,
        camera=camera,
    )
    return BraxEnv(batch)
