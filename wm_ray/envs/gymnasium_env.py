"""Gymnasium registry envs that no other backend owns (classic control, toy text, box2d, ...).

Observations become the canonical dict (``vector``; Discrete observations one-hot); with
``pixels=True`` the env is made with ``render_mode="rgb_array"`` and the frame is resized to
``image_size`` (cv2, INTER_AREA) as ``image``. Classic-control rendering needs ``pygame``.

``time_limit`` counts agent steps: it replaces the registry's ``max_episode_steps`` (which
counts raw steps) rather than stacking on top of it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from typing import Any

import gymnasium as gym

from wm_ray.envs.base import GENERIC_OPTIONS, standard_wrappers

OPTIONS = GENERIC_OPTIONS
"""Keyword options of :func:`make` besides ``seed``."""

# Entry-point module prefixes of other backends, and optional packages some gymnasium envs need.
_FOREIGN = ("gymnasium.envs.mujoco", "ale_py", "gymnasium_robotics")
_REQUIRES = {"gymnasium.envs.box2d": "Box2D", "gymnasium.envs.phys2d": "jax"}
_REQUIRES["gymnasium.envs.tabular"] = "jax"


def _entry_module(spec: gym.envs.registration.EnvSpec) -> str:
    entry = spec.entry_point
    if isinstance(entry, str):
        return entry.split(":")[0]
    return f"{getattr(entry, '__module__', '')}.{getattr(entry, '__name__', '')}"


def owns(env_id: str) -> bool:
    """Whether ``env_id`` is in gymnasium's registry and belongs to no other backend."""
    spec = gym.registry.get(env_id)
    if spec is None or env_id.startswith("ALE/"):
        return False
    return not _entry_module(spec).startswith(_FOREIGN)


def _usable(spec: gym.envs.registration.EnvSpec) -> bool:
    module = _entry_module(spec)
    if "._raise_" in module:  # placeholders that only raise (mujoco-py, shimmy)
        return False
    for prefix, package in _REQUIRES.items():
        if module.startswith(prefix) and importlib.util.find_spec(package) is None:
            return False
    return True


def list_ids() -> list[str]:
    """Gymnasium ids this backend can make with the installed packages."""
    return sorted(key for key, spec in gym.registry.items() if owns(key) and _usable(spec))


def make_registered(
    task: str,
    *,
    seed: int | None,
    pixels: bool,
    image_size: int,
    action_repeat: int | None,
    time_limit: int | None,
    make_kwargs: dict[str, Any] | None = None,
) -> gym.Env:
    """Make a registered gymnasium id with the shared wrappers (used by gymnasium and mujoco).

    Args:
        task: A gymnasium id.
        seed: Seed of the first reset.
        pixels: Add a rendered ``image``.
        image_size: Side of ``image``.
        action_repeat: Repeats per agent step (None: 1).
        time_limit: Maximum agent steps (None: the registry's limit).
        make_kwargs: Extra keyword arguments for :func:`gymnasium.make`.

    Returns:
        The wrapped env.
    """
    spec = gym.registry.get(task)
    if spec is None:
        raise ValueError(
            f"unknown gymnasium env id {task!r}; see wm_ray.envs.gymnasium_env.list_ids()"
        )
    repeat = 1 if action_repeat is None else action_repeat
    kwargs = dict(make_kwargs or {})
    if pixels:
        kwargs["render_mode"] = "rgb_array"
    if time_limit is not None:
        spec = dataclasses.replace(spec, max_episode_steps=None)
    env = gym.make(spec, **kwargs)
    return standard_wrappers(
        env,
        seed=seed,
        pixels=pixels,
        image_size=image_size,
        action_repeat=repeat,
        time_limit=time_limit,
    )


def make(
    task: str,
    *,
    seed: int | None = None,
    pixels: bool = False,
    image_size: int = 64,
    action_repeat: int | None = None,
    time_limit: int | None = None,
) -> gym.Env:
    """Make a gymnasium registry env, e.g. ``CartPole-v1``.

    Args:
        task: A gymnasium id owned by this backend.
        seed: Seed of the first reset.
        pixels: Add the ``rgb_array`` rendering as ``image``.
        image_size: Side of ``image``.
        action_repeat: Repeats per agent step (default 1).
        time_limit: Maximum agent steps per episode (default: the registry's limit).

    Returns:
        An env following the ``wm_ray.envs`` observation/action contract.
    """
    if task in gym.registry and not owns(task):
        raise ValueError(f"{task!r} belongs to another backend (atari, mujoco or robotics)")
    return make_registered(
        task,
        seed=seed,
        pixels=pixels,
        image_size=image_size,
        action_repeat=action_repeat,
        time_limit=time_limit,
    )
