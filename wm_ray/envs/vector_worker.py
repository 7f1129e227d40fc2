"""One env slot of a :class:`~wm_ray.envs.vector.VectorEnv` and the process that can host it.

:class:`EnvSlot` implements the per-env semantics (reset as an input, first-reset seeding,
rebuild after an exception); ``serial`` vector envs hold the slots directly, ``subprocess``
ones run each slot in a child process (:func:`worker_main`) behind a :class:`ChildHandle`.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import multiprocessing.connection
import signal
import traceback
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from wm_ray.envs.base import METRICS_INFO_KEY, metric_names

logger = logging.getLogger(__name__)

MakeFn = Callable[[int], gym.Env]
Transition = tuple[dict[str, np.ndarray], float, bool, bool, bool, dict[str, float]]
"""(obs, reward, is_first, is_last, is_terminal, metrics) of one env; ``metrics`` holds the
env's per-step metrics (``info[METRICS_INFO_KEY]``, empty for envs without any)."""
Spaces = tuple[spaces.Space, spaces.Space, tuple[str, ...]]
"""(observation space, action space, metric names) of one env."""

MAX_REBUILDS = 3
"""Consecutive failed rebuilds of one env before the error is raised."""


class EnvFailure(RuntimeError):
    """An env that kept failing after :data:`MAX_REBUILDS` rebuilds (one line: the env and its
    last error)."""


class ObservationError(ValueError):
    """An observation that does not match the env's observation space, or is not finite."""


def check_observation(obs: Any, space: Any, index: int) -> None:
    """Refuse an observation a model must never see: a missing or extra key, a wrong shape or
    dtype, NaN or inf (raises :class:`ObservationError` naming the key and what is valid)."""
    if not isinstance(obs, dict) or set(obs) != set(space.spaces):
        got = sorted(obs) if isinstance(obs, dict) else type(obs).__name__
        raise ObservationError(
            f"env {index} returned observation keys {got}; its space has {sorted(space.spaces)}"
        )
    for key, sub in space.spaces.items():
        value = obs[key]
        shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
        if shape != sub.shape or dtype != sub.dtype:
            raise ObservationError(
                f"env {index} returned observation {key!r} of shape {shape} and dtype {dtype}; "
                f"its space wants shape {sub.shape} and dtype {sub.dtype}"
            )
        if np.issubdtype(sub.dtype, np.floating) and not np.all(np.isfinite(value)):
            bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
            raise ObservationError(
                f"env {index} returned observation {key!r} with {bad} NaN or inf values; "
                "observations must be finite"
            )


def env_spaces(env: gym.Env) -> Spaces:
    """The spaces and metric names of an env (what a vector env checks across its envs)."""
    return env.observation_space, env.action_space, metric_names(env)


def _metrics(info: dict[str, Any]) -> dict[str, float]:
    return {name: float(value) for name, value in info.get(METRICS_INFO_KEY, {}).items()}


def derive_seed(seed: int, index: int, restarts: int) -> int:
    """Seed of env ``index``'s first reset after ``restarts`` rebuilds (``seed + index`` at 0)."""
    if restarts == 0:
        return seed + index
    return int(np.random.SeedSequence([seed, index, restarts]).generate_state(1)[0])


class EnvSlot:
    """One env with the reset-as-input logic and crash recovery (serial mode and each child).

    Args:
        make_fn: Builds the env for ``index``.
        index: Env index within the vector env.
        seed: Base seed of the vector env.
        restarts: Rebuilds of this env so far (selects the first reset's seed).

    Attributes:
        restarts: Rebuilds of this env so far.
        errors: ``repr`` of each exception that caused a rebuild, not yet taken by the caller.
    """

    def __init__(self, make_fn: MakeFn, index: int, seed: int, restarts: int = 0) -> None:
        self._make_fn = make_fn
        self.index = index
        self._base_seed = seed
        self.restarts = restarts
        self.errors: list[str] = []
        self.env: gym.Env | None = make_fn(index)
        self._next_seed: int | None = derive_seed(seed, index, restarts)
        self._done = True
        self._failing = 0  # failures since the last successful step

    def reset(self) -> Transition:
        """Reset the env (an ``is_first`` transition)."""
        return self._guarded(None)

    def step(self, action: Any) -> Transition:
        """Step the env, or reset it if its last transition had ``is_last``."""
        return self._guarded(None if self._done else action)

    def take_errors(self) -> list[str]:
        """The errors behind rebuilds since the last call (and forget them)."""
        errors, self.errors = self.errors, []
        return errors

    def _run(self, action: Any) -> Transition:
        assert self.env is not None
        space = self.env.observation_space
        if action is None:
            obs, info = self.env.reset(seed=self._next_seed)
            check_observation(obs, space, self.index)
            self._next_seed = None
            self._done = False
            return obs, 0.0, True, False, False, _metrics(info)
        obs, reward, terminated, truncated, info = self.env.step(action)
        check_observation(obs, space, self.index)
        if not math.isfinite(float(reward)):
            raise ObservationError(f"env {self.index} returned reward {reward}; it must be finite")
        self._done = bool(terminated or truncated)
        return obs, float(reward), False, self._done, bool(terminated), _metrics(info)

    def _guarded(self, action: Any) -> Transition:
        try:
            result = self._run(action)
            if action is not None:
                self._failing = 0
            return result
        except Exception as error:  # any env failure triggers a rebuild
            last = error
        self._failing += 1
        if self._failing > MAX_REBUILDS:  # it fails again at once after every rebuild
            raise EnvFailure(
                f"env {self.index} failed again right after each of {MAX_REBUILDS} rebuilds; "
                f"the last error: {last}"
            ) from last
        for _ in range(MAX_REBUILDS):
            self.restarts += 1
            self.errors.append(repr(last))
            self.close()
            try:
                self.env = self._make_fn(self.index)
                self._next_seed = derive_seed(self._base_seed, self.index, self.restarts)
                return self._run(None)
            except Exception as error:
                last = error
        raise EnvFailure(
            f"env {self.index} failed {MAX_REBUILDS} rebuilds in a row; the last error: {last}"
        ) from last

    def close(self) -> None:
        """Close the env, ignoring errors."""
        if self.env is not None:
            try:
                self.env.close()
            except Exception:  # best effort on a possibly broken env
                logger.debug("closing env %d failed", self.index, exc_info=True)
            self.env = None


def log_rebuild(index: int, error: str, restarts: int) -> None:
    """Log the rebuild of env ``index`` (the ``restarts``-th) caused by ``error``."""
    logger.warning(
        "env %d failed (%s); rebuilt it (restart %d of this env); its episode ends without is_last",
        index,
        error,
        restarts,
    )


def worker_main(
    conn: mp.connection.Connection, make_fn: MakeFn, index: int, seed: int, restarts: int
) -> None:
    """Child process loop: serve ("reset" | "step" | "close", payload) requests for one env.

    Replies are ("ready", (obs_space, act_space, metric names)), ("ok", (transition, rebuild
    errors)) or ("error", traceback) for failures that rebuilding could not fix.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        slot = EnvSlot(make_fn, index, seed, restarts)
        assert slot.env is not None
        conn.send(("ready", env_spaces(slot.env)))
    except Exception:
        conn.send(("error", traceback.format_exc()))
        conn.close()
        return
    try:
        while True:
            command, payload = conn.recv()
            if command == "close":
                break
            try:
                result = slot.reset() if command == "reset" else slot.step(payload)
            except Exception:
                conn.send(("error", traceback.format_exc()))
                break
            conn.send(("ok", (result, slot.take_errors())))
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass
    finally:
        slot.close()
        conn.close()


class ChildHandle:
    """Parent-side handle of one env process; call :meth:`wait_ready` after construction."""

    def __init__(self, ctx: Any, make_fn: MakeFn, index: int, seed: int, restarts: int) -> None:
        self.index = index
        self.conn, child_conn = ctx.Pipe()
        self.process = ctx.Process(
            target=worker_main,
            args=(child_conn, make_fn, index, seed, restarts),
            name=f"wm_ray-env-{index}",
            daemon=True,
        )
        self.process.start()
        child_conn.close()

    def wait_ready(self) -> Spaces:
        """Wait until the env is built; its (observation space, action space, metric names)."""
        try:
            kind, payload = self.recv()
        except (EOFError, ConnectionResetError) as error:
            self.kill()
            code = self.process.exitcode
            raise RuntimeError(
                f"env {self.index} process exited during startup ({code})"
            ) from error
        if kind != "ready":
            self.kill()
            raise RuntimeError(f"building env {self.index} in a subprocess failed:\n{payload}")
        return payload

    def send(self, message: tuple[str, Any]) -> None:
        self.conn.send(message)

    def recv(self, poll_s: float = 0.5) -> tuple[str, Any]:
        """The next reply; raises EOFError when the process died without sending one."""
        while not self.conn.poll(poll_s):
            if not self.process.is_alive() and not self.conn.poll(0):
                raise EOFError(f"env process {self.process.pid} exited")
        return self.conn.recv()

    def kill(self) -> None:
        """Stop the process (best effort) and close the pipe."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()
