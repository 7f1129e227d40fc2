"""Gymnasium's MuJoCo envs (``HalfCheetah-v5``, ``Walker2d-v5``, ...).

The ``vector`` observation is the env's own state vector; actions are exposed as Box(-1, 1)
and rescaled to the actuator bounds inside. With ``pixels=True`` the env is made with
``render_mode="rgb_array", width=height=image_size`` (and ``camera_id=camera`` if given), the
viewer's shadows, reflections and skybox are switched off (HalfCheetah 64x64 on 2 CPU cores:
~175 agent steps/s instead of ~27) and the frame is added as ``image``. ``MUJOCO_GL``
defaults to ``egl`` on headless Linux.

Retired ids (``HalfCheetah-v3``, ``Ant-v2``: gymnasium dropped the mujoco-py versions) are
refused with the current id to use (:func:`replacement`).
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

import gymnasium as gym

from wm_ray.envs.base import (
    GENERIC_OPTIONS,
    RetiredIdError,
    disable_slow_render_flags,
    ensure_gl_backend,
)
from wm_ray.envs.gymnasium_env import make_registered

OPTIONS = GENERIC_OPTIONS | {"camera"}
"""Keyword options of :func:`make` besides ``seed``."""

logger = logging.getLogger(__name__)
_ENTRY = "gymnasium.envs.mujoco"


def owns(env_id: str) -> bool:
    """Whether ``env_id``'s gymnasium registry entry point lives in ``gymnasium.envs.mujoco``,
    or ``env_id`` is an unregistered version of such an id (refused by :func:`make`)."""
    return _registered(env_id) or replacement(env_id) is not None


def replacement(env_id: str) -> str | None:
    """The newest version of a MuJoCo id that gymnasium cannot make (``HalfCheetah-v3``, a
    mujoco-py placeholder, or an unregistered version -> ``HalfCheetah-v5``); None for usable
    and unknown ids."""
    base, sep, version = env_id.rpartition("-v")
    if _registered(env_id) or not sep or not version.isdigit():
        return None
    versions = []
    for key in gym.registry:
        other, _, number = key.rpartition("-v")
        if other == base and number.isdigit() and _registered(key):
            versions.append((int(number), key))
    return max(versions)[1] if versions else None


def _registered(env_id: str) -> bool:
    spec = gym.registry.get(env_id)
    return (
        spec is not None
        and isinstance(spec.entry_point, str)
        and spec.entry_point.startswith(_ENTRY)
    )


def list_ids() -> list[str]:
    """MuJoCo ids in gymnasium's registry; [] when the ``mujoco`` package is missing."""
    if importlib.util.find_spec("mujoco") is None:
        return []
    return sorted(key for key in gym.registry if _registered(key))


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
    """Make a gymnasium MuJoCo env, e.g. ``HalfCheetah-v5``.

    Args:
        task: A gymnasium MuJoCo id.
        seed: Seed of the first reset.
        pixels: Add the rendered frame as ``image``.
        image_size: Side of ``image`` (the render width and height).
        action_repeat: Repeats per agent step (default 1; the env's own frame_skip is kept).
        time_limit: Maximum agent steps per episode (default: the registry's limit).
        camera: Camera id to render from (default: the env's default view).

    Returns:
        An env following the ``wm_ray.envs`` observation/action contract.
    """
    current = replacement(task)
    if current is not None:
        why = "needs mujoco-py, which cannot run here" if task in gym.registry else "is unknown"
        raise RetiredIdError(
            f"MuJoCo id {task!r} {why}; use {current!r} (the maintained version) instead"
        )
    if not owns(task):
        raise ValueError(f"{task!r} is not a gymnasium MuJoCo id; valid ids: {list_ids()}")
    if importlib.util.find_spec("mujoco") is None:
        raise ImportError("the mujoco backend needs `pip install wm_ray[mujoco]`")
    ensure_gl_backend()
    kwargs: dict[str, Any] = {}
    if pixels:
        kwargs.update(width=image_size, height=image_size)
        if camera is not None:
            kwargs["camera_id"] = camera
    env = make_registered(
        task,
        seed=seed,
        pixels=pixels,
        image_size=image_size,
        action_repeat=action_repeat,
        time_limit=time_limit,
        make_kwargs=kwargs,
    )
    if pixels:
        _use_fast_render_flags(env)
    return env


def _use_fast_render_flags(env: gym.Env) -> None:
    """Switch off shadows, reflections and skybox in the env's offscreen viewer.

    Gymnasium has no public switch for this; its ``MujocoRenderer`` builds the viewer in
    ``_get_viewer``. If that internal API changes we keep the default (slower) flags.
    """
    renderer = getattr(env.unwrapped, "mujoco_renderer", None)
    try:
        viewer = renderer._get_viewer("rgb_array")  # type: ignore[union-attr]
        disable_slow_render_flags(viewer.scn.flags)
    except AttributeError:
        logger.warning("could not set fast MuJoCo render flags for %s; rendering is slower", env)
