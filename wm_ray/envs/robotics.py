"""Gymnasium Robotics tasks (``robotics:FetchReach-v4``, ``HandReach-v3``, ``PointMaze_UMaze-v3``).

Fetch, Shadow hand (reach, manipulate), Adroit, PointMaze / AntMaze and Franka Kitchen, as
registered by ``gymnasium_robotics`` (imported only when an env is made, listed or an id that
looks like one of these families is resolved). Plain ids work too (``FetchReach-v4``).

Observations: goal-conditioned Dict observations are flattened into ``vector`` in the fixed
order :data:`GOAL_ORDER` (``observation``, ``desired_goal``, ``achieved_goal``; any other key
after them by name; nested dicts such as Franka Kitchen's goals in their own key order).
:func:`vector_layout` gives ``{key: slice}`` of an env made here, so ``vector[layout[
"desired_goal"]]`` is the goal. Plain Box observations (Adroit) are the whole ``vector``.

Success: every env reports the per-step metric ``success`` (``info["is_success"]`` for Fetch
and hands, ``info["success"]`` for mazes and Adroit, no task left in
``info["tasks_to_complete"]`` for the kitchen) through :class:`~wm_ray.envs.base.StepMetrics`;
the loops log its value at episodes' last steps as ``episode/success`` and ``eval/success``.

Actions are Box(-1, 1) (the shared wrappers). Episode ends: the registry's TimeLimit (Fetch: 50
steps) truncates; Fetch and hand tasks never terminate. ``pixels=True`` renders ``rgb_array`` at
``image_size`` with the fast MuJoCo render flags where the env exposes its renderer.

Legacy ids: the mujoco-py ids (``FetchReach-v1``, ``HandReach-v0``, ``HandManipulate*-v0``) and
unregistered versions are refused with the id to use (``FetchReach-v4``); MuJoCo locomotion ids
(``HalfCheetah-v3``) belong to the ``mujoco`` backend, which refuses its retired versions.

gymnasium-robotics 1.4.2 with mujoco >= 3.5 fails to build Fetch and hand envs (its joint
helpers compare a numpy joint type to a MuJoCo enum with ``in``, which is False there);
:func:`_patch_joint_helpers` replaces those helpers for hinge and slide joints when needed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
import logging
import re
import sys
import warnings
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from wm_ray.envs.base import (
    GENERIC_OPTIONS,
    RetiredIdError,
    StepMetrics,
    disable_slow_render_flags,
    ensure_gl_backend,
    find_wrapper,
    standard_wrappers,
)

OPTIONS = GENERIC_OPTIONS
"""Keyword options of :func:`make` besides ``seed``."""

GOAL_ORDER = ("observation", "desired_goal", "achieved_goal")
"""Order of a goal-conditioned observation's entries in ``vector``."""
SUCCESS = "success"
"""The per-step metric every robotics env reports (1.0: the goal is reached)."""

logger = logging.getLogger(__name__)
_ENTRY = "gymnasium_robotics"
_FAMILIES = ("Fetch", "Hand", "Adroit", "PointMaze", "AntMaze", "FrankaKitchen")
_LOCOMOTION = ("gymnasium_robotics.envs.mujoco.", "gymnasium_robotics.envs.multiagent_mujoco")
_VERSION = re.compile(r"^(?P<base>.+)-v(?P<version>\d+)$")


def _load() -> None:
    """Import gymnasium_robotics (registers its ids) and fix its joint helpers if needed."""
    if importlib.util.find_spec(_ENTRY) is None:
        raise ImportError("the robotics backend needs `pip install wm_ray[robotics]`")
    ensure_gl_backend()
    if _ENTRY not in sys.modules:
        notices = io.StringIO()  # it prints a release notice about Adroit v1 to stderr
        with warnings.catch_warnings(), contextlib.redirect_stderr(notices):
            warnings.simplefilter("ignore")
            import gymnasium_robotics  # noqa: F401  (registers the ids)
        if notices.getvalue().strip():
            logger.debug("gymnasium_robotics: %s", notices.getvalue().strip())
    _patch_joint_helpers()


def _patch_joint_helpers() -> None:
    """Make ``gymnasium_robotics.utils.mujoco_utils``' joint helpers work with scalar joints.

    They assert ``joint_type in (mjJNT_HINGE, mjJNT_SLIDE)`` with a numpy integer, which MuJoCo
    3.5+ enums do not compare equal to. The replacements handle hinge and slide joints (one
    qpos and one qvel entry) themselves and leave free and ball joints to the originals.
    """
    import mujoco
    from gymnasium_robotics.utils import mujoco_utils

    hinge, slide = mujoco.mjtJoint.mjJNT_HINGE, mujoco.mjtJoint.mjJNT_SLIDE
    if getattr(mujoco_utils, "_wm_ray_patched", False) or np.int32(int(slide)) in (hinge, slide):
        return
    scalar = (int(hinge), int(slide))

    def wrap(original: Any, field: str, address: str, setter: bool) -> Any:
        def helper(model: Any, data: Any, name: str, *value: Any) -> Any:
            joint = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
            if joint == -1 or int(model.jnt_type[joint]) not in scalar:
                return original(model, data, name, *value)
            start = int(getattr(model, address)[joint])
            array = getattr(data, field)
            if setter:
                array[start : start + 1] = np.asarray(value[0], np.float64).reshape(1)
                return None
            return array[start : start + 1].copy()

        return helper

    for name, field, address, setter in (
        ("set_joint_qpos", "qpos", "jnt_qposadr", True),
        ("get_joint_qpos", "qpos", "jnt_qposadr", False),
        ("set_joint_qvel", "qvel", "jnt_dofadr", True),
        ("get_joint_qvel", "qvel", "jnt_dofadr", False),
    ):
        setattr(mujoco_utils, name, wrap(getattr(mujoco_utils, name), field, address, setter))
    mujoco_utils._wm_ray_patched = True


def _entry(spec: gym.envs.registration.EnvSpec) -> str:
    entry = spec.entry_point
    return entry if isinstance(entry, str) else getattr(entry, "__module__", "")


def _is_robotics(env_id: str) -> bool:
    """A gymnasium_robotics task (not one of the mujoco-py locomotion ids it re-registers, such
    as ``HalfCheetah-v3``, nor a multi-agent one)."""
    spec = gym.registry.get(env_id)
    if spec is None:
        return False
    entry = _entry(spec)
    return entry.startswith(_ENTRY) and not entry.startswith(_LOCOMOTION)


def _needs_mujoco_py(env_id: str) -> bool:
    return ":MujocoPy" in _entry(gym.registry[env_id])


def owns(env_id: str) -> bool:
    """Whether ``env_id`` is a gymnasium_robotics id (or a retired version of one).

    gymnasium_robotics is imported only for ids of its families (``Fetch...``, ``Hand...``,
    ``Adroit...``, ``PointMaze...``, ``AntMaze...``, ``FrankaKitchen...``) or when it is loaded.
    """
    if not env_id.startswith(_FAMILIES) and _ENTRY not in sys.modules:
        return False
    if importlib.util.find_spec(_ENTRY) is None:
        return False
    _load()
    return _is_robotics(env_id) or replacement(env_id) is not None


def list_ids() -> list[str]:
    """``robotics:<id>`` of every registered id that runs here (no mujoco-py ids); [] without
    gymnasium_robotics."""
    if importlib.util.find_spec(_ENTRY) is None or importlib.util.find_spec("mujoco") is None:
        return []
    _load()
    ids = [key for key in gym.registry if _is_robotics(key) and not _needs_mujoco_py(key)]
    return sorted(f"robotics:{key}" for key in ids)


def replacement(env_id: str) -> str | None:
    """The id to use instead of a mujoco-py or unregistered version of a robotics id
    (``FetchReach-v1`` -> ``FetchReach-v4``); None for usable and unknown ids."""
    if _is_robotics(env_id) and not _needs_mujoco_py(env_id):
        return None
    match = _VERSION.match(env_id)
    if match is None:
        return None
    versions = []
    for key in gym.registry:
        other = _VERSION.match(key)
        same = other is not None and other["base"] == match["base"]
        if same and _is_robotics(key) and not _needs_mujoco_py(key):
            assert other is not None
            versions.append((int(other["version"]), key))
    return max(versions)[1] if versions else None


def _legacy_error(task: str) -> RetiredIdError | None:
    current = replacement(task)
    if current is not None:
        why = "needs mujoco-py, which cannot run here" if task in gym.registry else "is unknown"
        return RetiredIdError(
            f"Gymnasium Robotics id {task!r} {why}; use {current!r} (robotics:{current}, on "
            "the mujoco bindings) instead"
        )
    from wm_ray.envs import mujoco as mujoco_backend

    current = mujoco_backend.replacement(task)
    if current is not None or mujoco_backend.owns(task):
        use = current or task
        return RetiredIdError(
            f"{task!r} is a Gymnasium MuJoCo id, not a Gymnasium Robotics one; use "
            f"{use!r} (mujoco:{use}) with the mujoco backend"
        )
    return None


class GoalVector(gym.ObservationWrapper):
    """Flatten a Dict observation into one float32 Box in :data:`GOAL_ORDER`.

    Attributes:
        vector_layout: ``{entry name: slice}`` of the flat vector, in order.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        space = env.observation_space
        assert isinstance(space, spaces.Dict)
        rest = sorted(key for key in space.spaces if key not in GOAL_ORDER)
        self._keys = [key for key in GOAL_ORDER if key in space.spaces] + rest
        self.vector_layout: dict[str, slice] = {}
        start = 0
        for key in self._keys:
            size = spaces.flatdim(space[key])
            self.vector_layout[key] = slice(start, start + size)
            start += size
        self.observation_space = spaces.Box(-np.inf, np.inf, (start,), np.float32)

    def observation(self, observation: Any) -> np.ndarray:
        """The flat vector of a Dict observation."""
        space = self.env.observation_space
        assert isinstance(space, spaces.Dict)
        parts = [_flat(space[k], observation[k]) for k in self._keys]
        return np.concatenate(parts).astype(np.float32)


def _flat(space: spaces.Space, value: Any) -> np.ndarray:
    return np.ravel(np.asarray(spaces.flatten(space, value)))


def vector_layout(env: gym.Env) -> dict[str, slice]:
    """``{entry: slice}`` of ``vector`` for an env made here (``{"observation": ...}`` for a
    plain Box observation)."""
    wrapper = find_wrapper(env, GoalVector)
    if wrapper is not None:
        return dict(wrapper.vector_layout)
    space = env.observation_space
    assert isinstance(space, spaces.Dict)
    shape = space["vector"].shape
    assert shape is not None
    return {"observation": slice(0, int(shape[0]))}


def measure_success(info: Mapping[str, Any]) -> dict[str, float]:
    """``{"success": 0.0 or 1.0}`` from the ``info`` of a robotics env (0.0 when absent)."""
    if "is_success" in info:
        return {SUCCESS: float(info["is_success"])}
    if "success" in info:
        return {SUCCESS: float(info["success"])}
    if "tasks_to_complete" in info:
        return {SUCCESS: float(len(info["tasks_to_complete"]) == 0)}
    return {SUCCESS: 0.0}


def _use_fast_render_flags(env: gym.Env) -> None:
    """Fast render flags on the env's offscreen viewer (or that of a maze's inner robot)."""
    base = env.unwrapped
    for owner in (base, getattr(base, "point_env", None), getattr(base, "ant_env", None)):
        renderer = getattr(owner, "mujoco_renderer", None)
        if renderer is None:
            continue
        try:
            disable_slow_render_flags(renderer._get_viewer("rgb_array").scn.flags)
            return
        except AttributeError:
            break
    logger.debug("no fast MuJoCo render flags for %s; rendering is slower", env)


def make(
    task: str,
    *,
    seed: int | None = None,
    pixels: bool = False,
    image_size: int = 64,
    action_repeat: int | None = None,
    time_limit: int | None = None,
) -> gym.Env:
    """Make a Gymnasium Robotics env, e.g. ``FetchReach-v4``.

    Args:
        task: A gymnasium_robotics id (see :func:`list_ids`).
        seed: Seed of the first reset.
        pixels: Add the rendered frame as ``image``.
        image_size: Side of ``image`` (the render width and height).
        action_repeat: Repeats per agent step (default 1).
        time_limit: Maximum agent steps per episode (default: the registry's limit).

    Returns:
        An env following the ``wm_ray.envs`` contract, reporting the ``success`` metric.

    Raises:
        ValueError: for a mujoco-py, retired or unknown id (naming the id to use).
    """
    _load()
    error = _legacy_error(task)
    if error is not None:
        raise error
    if not _is_robotics(task):
        raise ValueError(f"unknown Gymnasium Robotics id {task!r}; valid ids: {list_ids()}")
    spec = gym.registry[task]
    kwargs: dict[str, Any] = {}
    if pixels:
        kwargs.update(render_mode="rgb_array", width=image_size, height=image_size)
    if time_limit is not None:
        spec = dataclasses.replace(spec, max_episode_steps=None)
    env = gym.make(spec, **kwargs)
    if isinstance(env.observation_space, spaces.Dict):
        env = GoalVector(env)
    wrapped = standard_wrappers(
        env,
        seed=seed,
        pixels=pixels,
        image_size=image_size,
        action_repeat=1 if action_repeat is None else action_repeat,
        time_limit=time_limit,
    )
    if pixels:
        _use_fast_render_flags(wrapped)
    return StepMetrics(wrapped, (SUCCESS,), measure_success)
