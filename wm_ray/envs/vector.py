"""Vectorized envs with DreamerV3 semantics: reset is an input, episode boundaries are data.

:meth:`VectorEnv.step` applies ``action[i]`` to env ``i``, except that an env whose previous
step had ``is_last`` is reset instead (its action is ignored) and returns an ``is_first`` step
with reward 0. Every call returns a step dict (see ``wm_ray.types``) with a leading (N,) axis:
the observation keys, ``reward`` float32, ``is_first``, ``is_last`` and ``is_terminal`` bool,
and for envs that report per-step metrics (``wm_ray.envs.base.StepMetrics``) one
``metric/<name>`` float32 entry per metric (the driver keeps them out of the policy and replay).

Seeding: env ``i`` is seeded with ``seed + i`` on its first reset; later resets do not reseed.

Crash recovery: if an env raises in ``reset`` or ``step`` it is closed (best effort), rebuilt
with ``make_fn(i)``, reset with a fresh seed derived from (seed, i, restarts of env i), and the
returned step for it is ``is_first``. The interrupted episode simply ends without an
``is_last`` step (consumers see a new ``is_first`` instead). In ``subprocess`` mode the child
process does this itself; if the child dies (killed, segfault), the parent notices the broken
pipe, starts a new process and returns ``is_first`` for that env. Both count in ``restarts``.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
from typing import Any, Literal, Protocol

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from wm_ray.envs.vector_worker import (
    MAX_REBUILDS,
    ChildHandle,
    EnvSlot,
    MakeFn,
    Transition,
    env_spaces,
    log_rebuild,
)
from wm_ray.types import FLAG_KEYS, METRIC_PREFIX, OBS_KEYS, REWARD_KEY


class VectorEnvLike(Protocol):
    """What the loops use of a vector env: :class:`VectorEnv`, or a natively batched backend's
    env (a backend module's ``make_vector``, e.g. Brax), with the same step semantics."""

    obs_space: spaces.Dict
    act_space: spaces.Space
    num_envs: int

    @property
    def mode(self) -> str: ...

    @property
    def restarts(self) -> int: ...

    @property
    def pids(self) -> list[int]: ...

    def reset(self) -> dict[str, np.ndarray]: ...

    def step(self, action: np.ndarray) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...

    def __enter__(self) -> VectorEnvLike: ...

    def __exit__(self, *exc_info: object) -> None: ...


class VectorEnv:
    """``num_envs`` envs stepped together, in this process or one process per env.

    Args:
        make_fn: Builds env ``i`` as ``make_fn(i)``; must be picklable for ``subprocess``
            (see :class:`EnvFactory`).
        num_envs: Number of envs (N).
        seed: Base seed (>= 0); env i's first reset uses ``seed + i``.
        mode: ``serial`` steps the envs in this process; ``subprocess`` runs one process per env
            (multiprocessing ``forkserver`` context, pipes).

    Attributes:
        obs_space: Observation space of a single env (a Dict).
        act_space: Action space of a single env.
        num_envs: N.
        restarts: Env rebuilds after an exception or a dead subprocess.
        metric_names: Per-step metrics the envs report (``metric/<name>`` step entries).
    """

    def __init__(
        self,
        make_fn: MakeFn,
        num_envs: int,
        seed: int = 0,
        mode: Literal["serial", "subprocess"] = "serial",
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if mode not in ("serial", "subprocess"):
            raise ValueError(f"mode must be 'serial' or 'subprocess', got {mode!r}")
        self.num_envs = num_envs
        self.mode = mode
        self._make_fn = make_fn
        self._seed = seed
        self._env_restarts = [0] * num_envs
        self._closed = False
        self._slots: list[EnvSlot] = []
        self._children: list[ChildHandle] = []
        try:
            if mode == "serial":
                self._slots = [EnvSlot(make_fn, i, seed) for i in range(num_envs)]
                envs = [slot.env for slot in self._slots if slot.env is not None]
                all_spaces = [env_spaces(env) for env in envs]
            else:
                methods = mp.get_all_start_methods()
                self._ctx = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
                for i in range(num_envs):  # start all, then wait: envs build in parallel
                    self._children.append(ChildHandle(self._ctx, make_fn, i, seed, 0))
                all_spaces = [child.wait_ready() for child in self._children]
            obs_space, self.act_space, self.metric_names = all_spaces[0]
            if any(pair != all_spaces[0] for pair in all_spaces):
                raise ValueError(f"envs built by {make_fn!r} have different spaces: {all_spaces}")
            if not isinstance(obs_space, spaces.Dict):
                raise ValueError(f"env observation space must be a Dict, got {obs_space}")
            self.obs_space: spaces.Dict = obs_space
        except BaseException:
            self.close()
            raise
        self._keys = [key for key in OBS_KEYS if key in self.obs_space.spaces]

    @property
    def restarts(self) -> int:
        """Total env rebuilds (exceptions and dead subprocesses)."""
        if self.mode == "serial":
            return sum(slot.restarts for slot in self._slots)
        return sum(self._env_restarts)

    @property
    def pids(self) -> list[int]:
        """Process ids of the env processes (empty in serial mode)."""
        return [child.process.pid for child in self._children if child.process.pid is not None]

    def reset(self) -> dict[str, np.ndarray]:
        """Reset every env: a step dict with ``is_first`` all True and reward 0."""
        return self._run([("reset", None)] * self.num_envs)

    def step(self, action: np.ndarray) -> dict[str, np.ndarray]:
        """Apply ``action[i]`` (shape (N, ...)) to env i, or reset env i after ``is_last``."""
        action = np.asarray(action)
        if action.shape[:1] != (self.num_envs,):
            raise ValueError(f"action must have leading axis {self.num_envs}, got {action.shape}")
        discrete = isinstance(self.act_space, spaces.Discrete)
        actions = [int(a) if discrete else np.asarray(a, np.float32) for a in action]
        return self._run([("step", a) for a in actions])

    def _run(self, commands: list[tuple[str, Any]]) -> dict[str, np.ndarray]:
        if self._closed:
            raise RuntimeError("VectorEnv is closed")
        try:
            if self.mode == "serial":
                results = [self._run_slot(slot, *cmd) for slot, cmd in zip(self._slots, commands)]
            else:
                results = self._run_children(commands)
        except BaseException:
            self.close()  # an env that rebuilding cannot fix leaves the batch inconsistent
            raise
        return self._stack(results)

    @staticmethod
    def _run_slot(slot: EnvSlot, command: str, payload: Any) -> Transition:
        result = slot.reset() if command == "reset" else slot.step(payload)
        errors = slot.take_errors()
        for n, error in enumerate(errors, start=slot.restarts - len(errors) + 1):
            log_rebuild(slot.index, error, n)
        return result

    def _run_children(self, commands: list[tuple[str, Any]]) -> list[Transition]:
        sent = []
        for child, command in zip(self._children, commands, strict=True):
            try:
                child.send(command)
                sent.append(True)
            except (BrokenPipeError, ConnectionResetError, OSError):
                sent.append(False)
        results = []
        for i, ok in enumerate(sent):
            try:
                if not ok:
                    raise EOFError("send failed")
                kind, payload = self._children[i].recv()
            except (EOFError, ConnectionResetError, OSError) as error:
                results.append(self._respawn(i, error))
                continue
            if kind == "error":
                raise RuntimeError(f"env {i} failed in its subprocess:\n{payload}")
            result, errors = payload
            for message in errors:
                self._env_restarts[i] += 1
                log_rebuild(i, message, self._env_restarts[i])
            results.append(result)
        return results

    def _respawn(self, index: int, cause: BaseException) -> Transition:
        """Replace the dead process of env ``index``; the new env's ``is_first`` transition."""
        for _ in range(MAX_REBUILDS):
            self._env_restarts[index] += 1
            old = self._children[index]
            log_rebuild(
                index, f"process {old.process.pid} died: {cause!r}", self._env_restarts[index]
            )
            old.kill()
            restarts = self._env_restarts[index]
            try:
                child = ChildHandle(self._ctx, self._make_fn, index, self._seed, restarts)
                self._children[index] = child
                child.wait_ready()
                child.send(("reset", None))
                kind, payload = child.recv()
                if kind == "ok":
                    return payload[0]
                cause = RuntimeError(payload)
            except (EOFError, ConnectionResetError, OSError, RuntimeError) as error:
                cause = error
        raise RuntimeError(
            f"env {index} process failed {MAX_REBUILDS} restarts in a row"
        ) from cause

    def _stack(self, results: list[Transition]) -> dict[str, np.ndarray]:
        out = {key: np.stack([r[0][key] for r in results]) for key in self._keys}
        out[REWARD_KEY] = np.array([r[1] for r in results], np.float32)
        for position, key in enumerate(FLAG_KEYS, start=2):
            out[key] = np.array([r[position] for r in results], bool)
        for name in self.metric_names:
            values = [r[5].get(name, np.nan) for r in results]
            out[METRIC_PREFIX + name] = np.array(values, np.float32)
        return out

    def close(self) -> None:
        """Close every env and stop the env processes (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for slot in self._slots:
            slot.close()
        for child in self._children:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError, OSError):
                child.send(("close", None))
        for child in self._children:
            child.process.join(timeout=5)
            child.kill()

    def __enter__(self) -> VectorEnv:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class EnvFactory:
    """Picklable ``make_fn`` for :class:`VectorEnv`: ``wm_ray.envs.registry.make_env`` per index.

    Args:
        env_id: Env id, e.g. ``CartPole-v1`` or ``dmc:walker-walk``.
        backend: Backend name or ``auto``.
        **options: Backend options (``pixels``, ``image_size``, ...).
    """

    def __init__(self, env_id: str, backend: str = "auto", **options: Any) -> None:
        self.env_id = env_id
        self.backend = backend
        self.options = options

    def __call__(self, index: int) -> gym.Env:
        """Build env ``index`` (seeding happens at the vector env's first reset)."""
        from wm_ray.envs.registry import make_env  # imports wm_ray.config: only when envs are made

        return make_env(self.env_id, backend=self.backend, **self.options)

    def __repr__(self) -> str:
        options = "".join(f", {key}={value!r}" for key, value in self.options.items())
        return f"EnvFactory({self.env_id!r}, backend={self.backend!r}{options})"


def action_batch_sample(act_space: spaces.Space, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random actions shaped (N, ...): int64 for Discrete/MultiDiscrete, float32 for Box.

    Box dimensions with infinite bounds are sampled from a standard normal.
    """
    if isinstance(act_space, spaces.Discrete):
        return (int(act_space.start) + rng.integers(0, int(act_space.n), size=n)).astype(np.int64)
    if isinstance(act_space, spaces.MultiDiscrete):
        nvec = np.asarray(act_space.nvec)
        sample = rng.integers(0, nvec, size=(n, *nvec.shape)) + np.asarray(act_space.start)
        return sample.astype(np.int64)
    if isinstance(act_space, spaces.Box):
        shape = (n, *act_space.shape)
        low = np.broadcast_to(act_space.low, act_space.shape)
        high = np.broadcast_to(act_space.high, act_space.shape)
        finite = np.isfinite(low) & np.isfinite(high)
        uniform = rng.uniform(np.where(finite, low, 0.0), np.where(finite, high, 1.0), size=shape)
        return np.where(finite, uniform, rng.standard_normal(shape)).astype(np.float32)
    raise TypeError(
        f"cannot sample actions of {act_space}; expected Discrete, MultiDiscrete or Box"
    )
