"""Wrappers shared by every backend: canonical dict observations, action repeat, rendering.

Every env that a backend's ``make`` returns has a :class:`gymnasium.spaces.Dict` observation
space holding ``image`` (H, W, C) uint8 and/or ``vector`` (D,) float32 (see ``wm_ray.types``).
Box actions with finite bounds are exposed as Box(-1, 1): an incoming action is clipped to
[-1, 1] and then mapped linearly to the true bounds by gymnasium's ``RescaleAction``.

Wrapper order built by :func:`standard_wrappers` (inner to outer)::

    base env -> ActionRepeat -> TimeLimit (agent steps) -> DictObservation -> AddImage
             -> RescaleAction -> clip -> DefaultSeed

A backend whose envs report per-step scalar metrics (e.g. robotics' ``success``) wraps the result
in :class:`StepMetrics` (outermost): it declares the metric names and puts their values in
``info[METRICS_INFO_KEY]`` at every reset and step; the vector env returns them as
``metric/<name>`` (see ``wm_ray.types.METRIC_PREFIX``).

Gymnasium has no generic action-repeat wrapper (``MaxAndSkipObservation`` max-pools frames) and
its ``AddRenderObservation`` neither resizes nor uses our keys, hence the hand-written ones here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, SupportsFloat, TypeVar, cast

import cv2
import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.wrappers import RescaleAction, TimeLimit, TransformAction

IMAGE_KEY = "image"
VECTOR_KEY = "vector"
GENERIC_OPTIONS = frozenset({"pixels", "image_size", "action_repeat", "time_limit"})
"""Options every vector-observation backend accepts (besides ``seed``)."""
METRICS_INFO_KEY = "wm_ray.metrics"
"""``info`` key of an env's per-step scalar metrics, ``{name: float}`` (:class:`StepMetrics`)."""

EnvT = TypeVar("EnvT", bound=gym.Env)


class RetiredIdError(ValueError):
    """An env id that cannot run here (e.g. it needs mujoco-py); the message names the id to
    use instead. ``make_env`` passes it on unchanged."""


StepResult = tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]


def ensure_gl_backend() -> None:
    """Default ``MUJOCO_GL`` to ``egl`` on headless Linux (call before importing mujoco)."""
    if sys.platform.startswith("linux") and "MUJOCO_GL" not in os.environ:
        if not os.environ.get("DISPLAY"):
            os.environ["MUJOCO_GL"] = "egl"


def disable_slow_render_flags(flags: np.ndarray) -> None:
    """Turn off shadows, reflections and skybox in a MuJoCo ``mjvScene.flags`` array, in place.

    On a CPU (Mesa) renderer this makes 64x64 frames about 4-6x faster.
    """
    import mujoco  # heavy, only for backends that render with MuJoCo

    for flag in ("mjRND_SHADOW", "mjRND_REFLECTION", "mjRND_SKYBOX"):
        flags[getattr(mujoco.mjtRndFlag, flag)] = 0


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an (H, W, C) or (H, W) uint8 frame to (size, size, C) with area interpolation."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[:2] != (size, size):
        channels = image.shape[2]
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        image = image.reshape(size, size, channels)
    return np.ascontiguousarray(image, dtype=np.uint8)


def _is_image(space: spaces.Space) -> bool:
    return isinstance(space, spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3


def _flat_box(key: str, space: spaces.Space) -> spaces.Box:
    flat = spaces.flatten_space(space)
    if not isinstance(flat, spaces.Box):
        raise ValueError(f"observation entry {key or space!r} of {space} cannot become a vector")
    return flat


def _flatten(space: spaces.Space, value: Any) -> np.ndarray:
    return np.ravel(cast(np.ndarray, spaces.flatten(space, value)))


def observation_keys(env: gym.Env) -> set[str]:
    """The keys of ``env``'s Dict observation space (empty for other spaces)."""
    space = env.observation_space
    return set(space.spaces) if isinstance(space, spaces.Dict) else set()


class DictObservation(gym.ObservationWrapper):
    """Convert any observation space into the canonical ``image``/``vector`` dict.

    A uint8 Box of rank 3 becomes ``image`` (resized to ``image_size``); everything else is
    flattened with :func:`gymnasium.spaces.flatten` (Discrete -> one-hot, Dict/Tuple ->
    concatenation in key order) into a float32 ``vector``. A Dict space may hold at most one
    image entry.

    Args:
        env: The env to wrap.
        image_size: Side of the square ``image``.
    """

    def __init__(self, env: gym.Env, image_size: int = 64) -> None:
        super().__init__(env)
        self._size = image_size
        space = env.observation_space
        self._is_dict = isinstance(space, spaces.Dict)
        parts = dict(space.spaces) if isinstance(space, spaces.Dict) else {"": space}
        images = [key for key, sub in parts.items() if _is_image(sub)]
        if len(images) > 1:
            raise ValueError(f"observation has several image entries {images}; expected at most 1")
        self._image_key = images[0] if images else None
        self._rest = {key: sub for key, sub in parts.items() if key != self._image_key}
        out: dict[str, spaces.Space] = {}
        if self._image_key is not None:
            shape = parts[self._image_key].shape
            assert shape is not None
            channels = shape[-1]
            out[IMAGE_KEY] = spaces.Box(0, 255, (image_size, image_size, channels), np.uint8)
        if self._rest:
            flat = [_flat_box(key, sub) for key, sub in self._rest.items()]
            with np.errstate(over="ignore"):  # float64 bounds beyond float32 become +-inf
                low = np.concatenate([np.asarray(f.low, np.float32).ravel() for f in flat])
                high = np.concatenate([np.asarray(f.high, np.float32).ravel() for f in flat])
            out[VECTOR_KEY] = spaces.Box(low, high, low.shape, np.float32)
        self.observation_space = spaces.Dict(out)

    def observation(self, observation: Any) -> dict[str, np.ndarray]:
        """Map a raw observation to the canonical dict."""
        parts = observation if self._is_dict else {"": observation}
        out: dict[str, np.ndarray] = {}
        if self._image_key is not None:
            out[IMAGE_KEY] = resize_image(np.asarray(parts[self._image_key]), self._size)
        if self._rest:
            flat = [_flatten(sub, parts[key]) for key, sub in self._rest.items()]
            out[VECTOR_KEY] = np.concatenate(flat).astype(np.float32)
        return out


class AddImage(gym.Wrapper):
    """Add the ``rgb_array`` rendering of the env, resized to ``image_size``, as ``image``.

    Wrap outside :class:`ActionRepeat` so that only agent steps are rendered.

    Args:
        env: An env with a Dict observation space (see :class:`DictObservation`) and
            ``render_mode == "rgb_array"``.
        image_size: Side of the square ``image``.
    """

    def __init__(self, env: gym.Env, image_size: int = 64) -> None:
        super().__init__(env)
        if env.render_mode != "rgb_array":
            raise ValueError(f"pixels=True needs render_mode 'rgb_array', got {env.render_mode!r}")
        space = env.observation_space
        if not isinstance(space, spaces.Dict):
            raise TypeError(f"AddImage needs a Dict observation space, got {space}")
        self._size = image_size
        image = spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
        self.observation_space = spaces.Dict({IMAGE_KEY: image, **space.spaces})

    def _add(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        frame: Any = self.env.render()
        if frame is None:
            raise RuntimeError("render() returned None; cannot add an image observation")
        frame = np.asarray(frame)
        if frame.ndim == 2:
            frame = np.repeat(frame[:, :, None], 3, axis=2)
        return {IMAGE_KEY: resize_image(frame[:, :, :3], self._size), **obs}

    def reset(self, **kwargs: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Reset and render."""
        obs, info = self.env.reset(**kwargs)
        return self._add(obs), info

    def step(self, action: Any) -> StepResult:
        """Step and render."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._add(obs), reward, terminated, truncated, info


class ActionRepeat(gym.Wrapper):
    """Repeat each action ``amount`` times, summing rewards; stop early when the episode ends.

    Args:
        env: The env to wrap.
        amount: Repeats per agent step (>= 1).
    """

    def __init__(self, env: gym.Env, amount: int) -> None:
        super().__init__(env)
        if amount < 1:
            raise ValueError(f"action_repeat must be >= 1, got {amount}")
        self.amount = amount

    def step(self, action: Any) -> StepResult:
        """Apply ``action`` up to ``amount`` times."""
        total = 0.0
        for _ in range(self.amount):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, info


class DefaultSeed(gym.Wrapper):
    """Use the make-time ``seed`` for the first ``reset()`` that is not given one.

    Args:
        env: The env to wrap.
        seed: Seed for the first unseeded reset (and the action space); None: no effect.
    """

    def __init__(self, env: gym.Env, seed: int | None) -> None:
        super().__init__(env)
        self._pending = seed
        if seed is not None:
            self.action_space.seed(seed)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        """Reset, seeding with the make-time seed the first time none is given."""
        if seed is None:
            seed = self._pending
        self._pending = None
        return self.env.reset(seed=seed, options=options)


def _clip_unit(action: np.ndarray) -> np.ndarray:
    return np.clip(action, -1.0, 1.0)


def normalize_actions(env: gym.Env) -> gym.Env:
    """Expose a finite Box action space as Box(-1, 1): clip to [-1, 1], then rescale inside."""
    space = env.action_space
    if isinstance(space, spaces.Box) and np.all(np.isfinite(space.low) & np.isfinite(space.high)):
        if not (np.all(space.low == -1) and np.all(space.high == 1)):
            env = RescaleAction(env, np.float32(-1.0), np.float32(1.0))
        env = TransformAction(env, _clip_unit, env.action_space)
    return env


def standard_wrappers(
    env: gym.Env,
    *,
    seed: int | None,
    pixels: bool,
    image_size: int,
    action_repeat: int,
    time_limit: int | None,
) -> gym.Env:
    """Apply the shared wrapper stack (see the module docstring) to a raw gymnasium env.

    Args:
        env: The backend's env (raw observations, true action bounds).
        seed: Seed of the first reset (see :class:`DefaultSeed`).
        pixels: Add the rendered ``image`` (``env`` must render ``rgb_array``).
        image_size: Side of ``image``.
        action_repeat: Repeats per agent step.
        time_limit: Maximum agent steps per episode (truncation); None: no extra limit.

    Returns:
        The wrapped env with the canonical observation/action contract.
    """
    if action_repeat != 1:
        env = ActionRepeat(env, action_repeat)
    if time_limit is not None:
        env = TimeLimit(env, time_limit)
    env = DictObservation(env, image_size)
    if pixels and IMAGE_KEY not in observation_keys(env):
        env = AddImage(env, image_size)
    env = normalize_actions(env)
    return DefaultSeed(env, seed)


class StepMetrics(gym.Wrapper):
    """Report per-step scalar metrics: ``info[METRICS_INFO_KEY] = {name: float}`` for ``names``.

    The vector env reads the names with :func:`metric_names` and returns each metric as a
    ``metric/<name>`` (N,) float32 entry of its step dicts; the driver keeps the value at the
    last step of every episode (e.g. ``success``) and the loops log their means.

    Args:
        env: The env to wrap (its own ``info`` is kept).
        names: The metric names (fixed for the env's lifetime).
        measure: Maps the env's ``info`` of a reset or step to metric values; a name it leaves
            out is 0.0.
    """

    def __init__(
        self,
        env: gym.Env,
        names: tuple[str, ...],
        measure: Callable[[Mapping[str, Any]], Mapping[str, float]],
    ) -> None:
        super().__init__(env)
        if not names:
            raise ValueError("StepMetrics needs at least one metric name")
        self.metric_names = tuple(names)
        self._measure = measure

    def _report(self, info: dict[str, Any]) -> dict[str, Any]:
        values = self._measure(info)
        return {**info, METRICS_INFO_KEY: {k: float(values.get(k, 0.0)) for k in self.metric_names}}

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """Reset, reporting the metrics of the reset ``info``."""
        obs, info = self.env.reset(**kwargs)
        return obs, self._report(info)

    def step(self, action: Any) -> StepResult:
        """Step, reporting the metrics of the step's ``info``."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, self._report(info)


def metric_names(env: gym.Env) -> tuple[str, ...]:
    """The per-step metric names ``env`` reports (see :class:`StepMetrics`); () for none."""
    wrapper = find_wrapper(env, StepMetrics)
    return wrapper.metric_names if wrapper is not None else ()


def find_wrapper(env: gym.Env, kind: type[EnvT]) -> EnvT | None:
    """The outermost wrapper (or base env) in ``env``'s chain that is an instance of ``kind``."""
    current: gym.Env | None = env
    while current is not None:
        if isinstance(current, kind):
            return current
        current = getattr(current, "env", None)
    return None
