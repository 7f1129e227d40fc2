"""A batch of Brax envs stepped by one jitted call, with :class:`~wm_ray.envs.VectorEnv` semantics.

Each :meth:`BraxVectorEnv.step` is a single ``jax.jit`` call over all N envs: the actions are
clipped to [-1, 1], every env is stepped ``action_repeat`` times (an env whose episode ends
inside the repeat is frozen for the rest of it), and a fresh reset state is computed for every
env and selected with ``jnp.where`` for the envs whose previous step had ``is_last``. Those envs
return ``is_first`` with reward 0 and their action is ignored, exactly as in ``VectorEnv``.
Computing a reset for every env on every step costs a little compute but no branch per env.

Ends: Brax's ``done`` is ``is_terminal`` (and ``is_last``); reaching the time limit (agent steps,
default ``ceil(1000 / action_repeat)``, i.e. Brax's ``episode_length`` of 1000 env steps) is
``is_last`` without ``is_terminal``.

Seeding: env ``i`` starts from ``jax.random.PRNGKey(seed + i)`` (as ``VectorEnv`` seeds env ``i``
with ``seed + i``), so env ``i`` of a batch steps exactly like env 0 of a batch seeded
``seed + i``; each env keeps its own key for later resets.

Crash recovery: if the jitted step raises or returns a non-finite observation, the whole batch
is reset with keys derived from (seed, i, restarts), every env returns ``is_first`` and
``restarts`` grows by one. A fourth failure (of a step or of the reset) with no good step
since the first one raises ``RuntimeError``, so a deterministic failure cannot loop forever.

Pixels: the MuJoCo model of the Brax system is rendered per env with ``mujoco.Renderer`` from
the env's ``q``/``qd`` (shadows, reflections and skybox off), from ``camera`` or else the
model's ``track`` camera, or else MuJoCo's free camera.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from gymnasium import spaces

from wm_ray.envs.base import IMAGE_KEY, VECTOR_KEY, disable_slow_render_flags
from wm_ray.envs.vector_worker import MAX_REBUILDS
from wm_ray.types import REWARD_KEY

logger = logging.getLogger(__name__)
BRAX_EPISODE_LENGTH = 1000
"""Brax's default episode length in env steps (``brax.envs.create``)."""
_PROGRAMS: dict[tuple[str, int, bool], Any] = {}


def _build_programs(env: Any, action_repeat: int, with_q: bool) -> tuple[Any, Any]:
    """(jitted reset(keys, limit), jitted step(carry, actions)) for a raw Brax env; the time
    limit is data, not a constant, so changing it does not recompile."""
    import jax
    import jax.numpy as jnp

    def obs_of(state: Any) -> Any:
        leaves = jax.tree_util.tree_leaves(state.obs)
        return jnp.concatenate([jnp.ravel(x) for x in leaves]).astype(jnp.float32)

    def select(mask: Any, a: Any, b: Any) -> Any:
        def pick(x: Any, y: Any) -> Any:
            x, y = jnp.asarray(x), jnp.asarray(y)
            return jnp.where(mask.reshape(mask.shape + (1,) * (y.ndim - mask.ndim)), x, y)

        return jax.tree_util.tree_map(pick, a, b)

    def normal(state: Any) -> Any:  # Brax may return Python floats as reward/done
        return state.replace(
            reward=jnp.asarray(state.reward, jnp.float32), done=jnp.asarray(state.done, jnp.float32)
        )

    def reset_one(key: Any) -> tuple[Any, Any]:
        key, sub = jax.random.split(key)
        return normal(env.reset(sub)), key

    def step_one(state: Any, action: Any) -> tuple[Any, Any, Any]:
        total = jnp.float32(0.0)
        done = jnp.bool_(False)
        for _ in range(action_repeat):
            nxt = normal(env.step(state, action))
            state = select(done, state, nxt)
            total = total + jnp.where(done, 0.0, nxt.reward)
            done = done | (nxt.done > 0)
        return state, total, done

    def output(state: Any, first: Any, last: Any, terminal: Any, reward: Any) -> dict[str, Any]:
        out = {
            VECTOR_KEY: jax.vmap(obs_of)(state),
            REWARD_KEY: reward.astype(jnp.float32),
            "is_first": first,
            "is_last": last,
            "is_terminal": terminal,
        }
        if with_q:
            out["q"], out["qd"] = state.pipeline_state.q, state.pipeline_state.qd
        return out

    def reset(keys: Any, limit: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        state, keys = jax.vmap(reset_one)(keys)
        n = keys.shape[0]
        no = jnp.zeros(n, bool)
        t = jnp.zeros(n, jnp.int32)
        carry = {"state": state, "key": keys, "t": t, "last": no, "limit": limit}
        return carry, output(state, ~no, no, no, jnp.zeros(n))

    def step(carry: dict[str, Any], actions: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        actions = jnp.clip(actions.astype(jnp.float32), -1.0, 1.0)
        stepped, reward, done = jax.vmap(step_one)(carry["state"], actions)
        fresh, new_keys = jax.vmap(reset_one)(carry["key"])
        first = carry["last"]
        state = select(first, fresh, stepped)
        keys = select(first, new_keys, carry["key"])
        t = jnp.where(first, 0, carry["t"] + 1)
        terminal = ~first & done
        last = terminal | (~first & (t >= carry["limit"]))
        carry = {"state": state, "key": keys, "t": t, "last": last, "limit": carry["limit"]}
        return carry, output(state, first, last, terminal, jnp.where(first, 0.0, reward))

    return jax.jit(reset), jax.jit(step)


def programs(task: str, env: Any, action_repeat: int, with_q: bool) -> Any:
    """The jitted (reset, step) of a task, shared by every env with the same settings (one
    compile per batch size instead of one per env object)."""
    key = (task, action_repeat, with_q)
    if key not in _PROGRAMS:
        _PROGRAMS[key] = _build_programs(env, action_repeat, with_q)
    return _PROGRAMS[key]


class _Renderer:
    """Renders Brax states of one MuJoCo model offscreen, one env at a time."""

    def __init__(self, task: str, model: Any, size: int, camera: int | None) -> None:
        import mujoco

        global_ = model.vis.global_
        global_.offwidth, global_.offheight = (
            max(global_.offwidth, size),
            max(global_.offheight, size),
        )
        if camera is None:
            camera = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, "track")
        elif not -1 <= camera < model.ncam:
            raise ValueError(f"camera {camera} out of range for brax:{task} (-1..{model.ncam - 1})")
        self._camera = camera
        self._model = model
        self._data = mujoco.MjData(model)
        self._mujoco = mujoco
        try:
            self._renderer = mujoco.Renderer(model, size, size)
        except Exception as err:
            raise RuntimeError(f"cannot render brax:{task} with MuJoCo: {err!r}") from err
        disable_slow_render_flags(self._renderer.scene.flags)

    def frames(self, q: np.ndarray, qd: np.ndarray) -> np.ndarray:
        """(N, size, size, 3) uint8 frames of the N states given by positions and velocities."""
        out = []
        for qpos, qvel in zip(q, qd, strict=True):
            self._data.qpos[:], self._data.qvel[:] = qpos, qvel
            self._mujoco.mj_forward(self._model, self._data)
            self._renderer.update_scene(self._data, camera=self._camera)
            out.append(self._renderer.render().copy())
        return np.stack(out).astype(np.uint8)

    def close(self) -> None:
        self._renderer.close()


class BraxVectorEnv:
    """N envs of one Brax task as a single batched env (``VectorEnv``'s interface).

    Args:
        task: Registered Brax env name, e.g. ``inverted_pendulum``.
        env: The raw Brax env (``brax.envs.get_environment(task)``).
        num_envs: N.
        seed: Base seed (>= 0); env ``i`` starts from ``PRNGKey(seed + i)``.
        pixels: Add a rendered ``image`` per env.
        image_size: Side of ``image``.
        action_repeat: Physics env steps per agent step (>= 1).
        time_limit: Agent steps per episode (truncation); None: ``ceil(1000 / action_repeat)``.
        camera: MuJoCo camera id (-1: free camera); None: ``track`` if the model has it.

    Attributes:
        obs_space, act_space, num_envs, mode (``batched``), restarts, pids (empty).
    """

    mode = "batched"

    def __init__(
        self,
        task: str,
        env: Any,
        num_envs: int,
        seed: int = 0,
        *,
        pixels: bool = False,
        image_size: int = 64,
        action_repeat: int = 1,
        time_limit: int | None = None,
        camera: int | None = None,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if action_repeat < 1:
            raise ValueError(f"action_repeat must be >= 1, got {action_repeat}")
        if time_limit is not None and time_limit < 1:
            raise ValueError(f"time_limit must be >= 1, got {time_limit}")
        self.num_envs = num_envs
        self.restarts = 0
        self.pids: list[int] = []
        self._task = task
        self._seed = seed
        self._closed = False
        self._reseeded = False
        self._failures = 0
        self._renderer: _Renderer | None = None
        if pixels:
            model = getattr(getattr(env, "sys", None), "mj_model", None)
            if model is None:
                raise ValueError(
                    f"brax:{task} has no MuJoCo model to render, so pixels=True is not possible "
                    "for it; use pixels=False"
                )
            self._renderer = _Renderer(task, model, image_size, camera)
        self._limit = np.int32(time_limit or math.ceil(BRAX_EPISODE_LENGTH / action_repeat))
        self._reset_fn, self._step_fn = programs(task, env, action_repeat, pixels)
        self._carry, first = self._reset_fn(self._keys(0), self._limit)
        self._pending: dict[str, np.ndarray] | None = self._host(first)
        dim = self._pending[VECTOR_KEY].shape[1]
        obs: dict[str, spaces.Space] = {}
        if pixels:
            obs[IMAGE_KEY] = spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
        obs[VECTOR_KEY] = spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        self.obs_space = spaces.Dict(obs)
        self.act_space = spaces.Box(-1.0, 1.0, (int(env.action_size),), np.float32)

    def _keys(self, restarts: int) -> Any:
        import jax

        seeds = (self._seed + np.arange(self.num_envs, dtype=np.uint64)) % 2**32
        keys = jax.vmap(jax.random.PRNGKey)(seeds.astype(np.uint32))
        if restarts:
            keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, restarts)
        return keys

    def _host(self, out: dict[str, Any]) -> dict[str, np.ndarray]:
        step = {key: np.asarray(value) for key, value in out.items()}
        if not np.isfinite(step[VECTOR_KEY]).all():
            bad = np.flatnonzero(~np.isfinite(step[VECTOR_KEY]).all(axis=1)).tolist()
            raise FloatingPointError(f"brax:{self._task} returned non-finite observations {bad}")
        q, qd = step.pop("q", None), step.pop("qd", None)
        if self._renderer is not None:
            step[IMAGE_KEY] = self._renderer.frames(q, qd)  # type: ignore[arg-type]
        return step

    def reseed(self, seed: int) -> None:
        """Use ``seed`` as the base seed from the next :meth:`reset` on."""
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self._seed = seed
        self._pending = None
        self._reseeded = True

    def reset(self) -> dict[str, np.ndarray]:
        """Reset every env: a step dict with ``is_first`` all True and reward 0.

        The first reset after construction (or :meth:`reseed`) starts env ``i`` from
        ``PRNGKey(seed + i)``; later resets continue each env's own key sequence.
        """
        self._check_open()
        if self._pending is not None:
            step, self._pending = self._pending, None
            return step
        keys = self._keys(0) if self._reseeded else self._carry["key"]
        self._reseeded = False
        self._carry, first = self._reset_fn(keys, self._limit)
        return self._host(first)

    def step(self, action: np.ndarray) -> dict[str, np.ndarray]:
        """Apply ``action[i]`` (shape (N, A)) to env i, or reset env i after ``is_last``."""
        self._check_open()
        action = np.asarray(action, np.float32)
        if action.shape != (self.num_envs, *self.act_space.shape):
            raise ValueError(
                f"action must have shape {(self.num_envs, *self.act_space.shape)}, "
                f"got {action.shape}"
            )
        self._pending = None
        self._reseeded = False
        try:
            carry, out = self._step_fn(self._carry, action)
            step = self._host(out)
        except Exception as error:  # any failure of the jitted physics or non-finite output
            return self._recover(error)
        self._carry = carry
        self._failures = 0
        return step

    def _recover(self, error: Exception) -> dict[str, np.ndarray]:
        """Reset the whole batch with fresh keys after a failed step: every env ``is_first``."""
        while True:
            self._failures += 1
            self.restarts += 1
            logger.warning(
                "brax:%s batch reset after %r (restart %d)", self._task, error, self.restarts
            )
            if self._failures > MAX_REBUILDS:
                self.close()
                raise RuntimeError(
                    f"brax:{self._task} failed {self._failures} times in a row (no good step "
                    "between); giving up"
                ) from error
            try:
                carry, out = self._reset_fn(self._keys(self.restarts), self._limit)
                step = self._host(out)
            except Exception as reset_error:
                error = reset_error
                continue
            self._carry = carry
            return step

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("BraxVectorEnv is closed")

    def close(self) -> None:
        """Free the renderer (idempotent); the env is unusable afterwards."""
        if self._closed:
            return
        self._closed = True
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __enter__(self) -> BraxVectorEnv:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
