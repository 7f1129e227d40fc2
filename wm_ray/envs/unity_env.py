"""The gymnasium env behind the ``unity`` backend: one agent of one behaviour of a Unity build.

See :mod:`wm_ray.envs.unity` for the id forms, the options and the observation, action, episode,
seeding and failure rules this class implements with ``mlagents_envs`` (imported only here, when
an env is made).
"""

from __future__ import annotations

import atexit
import logging
import math
import warnings
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from wm_ray.envs.base import IMAGE_KEY, VECTOR_KEY
from wm_ray.envs.unity_ports import PortLease, lease_free_port, try_lease

EDITOR = "editor"
BUILD_BASE_PORT = 5005  # ML-Agents' UnityEnvironment.BASE_ENVIRONMENT_PORT
EDITOR_PORT = 5004  # ML-Agents' UnityEnvironment.DEFAULT_EDITOR_PORT
PORT_RANGE = 1000
"""Ports tried from ``base_port + worker_id`` before giving up."""
DEFAULT_TIMEOUT_WAIT = 60
DEFAULT_TIME_SCALE = 20.0
CLOSE_WAIT_S = 5
"""Seconds a closing build may take to quit before it is killed."""
MAX_IDLE_STEPS = 1000
"""Academy steps to wait for the agent's next decision (DecisionRequester periods)."""

logger = logging.getLogger(__name__)


class UnityEnvError(RuntimeError):
    """A build this backend cannot drive (its behaviours, agents or spaces) or a failed build."""


class UnityEnv(gym.Env):
    """One agent of one behaviour of a Unity build (raw ``image`` size; see the module doc).

    Args:
        file_name: The build's executable, or None for the Editor.
        seed: Seed sent to the build at launch.
        behavior: Behaviour name (with or without ``?team=...``); None: the only one.
        camera: Index of the visual observation to use as ``image`` (None: the only one).
        first_port: First port to try (the Editor's port for ``file_name=None``).
        timeout_wait: Seconds to wait for the build to start and to answer each step.
        no_graphics: Launch with ``-nographics -batchmode``.
        time_scale: Engine time scale.
    """

    def __init__(
        self,
        file_name: str | None,
        *,
        seed: int = 0,
        behavior: str | None = None,
        camera: int | None = None,
        first_port: int = BUILD_BASE_PORT,
        timeout_wait: int = DEFAULT_TIMEOUT_WAIT,
        no_graphics: bool = False,
        time_scale: float = DEFAULT_TIME_SCALE,
    ) -> None:
        self._file_name = file_name
        self._first_port = first_port
        self._launch_args = {"timeout_wait": timeout_wait, "no_graphics": no_graphics}
        self._time_scale = time_scale
        self._wanted_behavior = behavior
        self._env: Any = None
        self._lease: PortLease | None = None
        self._spec: Any = None
        self._agent: int | None = None
        self._broken = False
        self._seed_warned = False
        try:
            self._launch(seed)
            self._build_spaces(camera)
        except BaseException:
            self.close()
            raise

    @property
    def port(self) -> int | None:
        """The port of the connection to the build (None when closed)."""
        return self._lease.port if self._lease is not None else None

    @property
    def behavior_name(self) -> str:
        """The full name of the driven behaviour (``Name?team=0``)."""
        return str(self._behavior)

    @property
    def pid(self) -> int | None:
        """The build's process id (None for the Editor or when closed)."""
        process = getattr(self._env, "_process", None)
        return None if process is None else int(process.pid)

    def _where(self) -> str:
        return f"Unity {self._file_name or EDITOR} (port {self.port}, pid {self.pid})"

    def _launch(self, seed: int) -> None:
        """Start the build (or wait for the Editor) with ``seed`` and reset it once."""
        from mlagents_envs.environment import UnityEnvironment
        from mlagents_envs.exception import UnityWorkerInUseException
        from mlagents_envs.side_channel.engine_configuration_channel import (
            EngineConfigurationChannel,
        )

        first = self._first_port
        while True:
            if self._file_name is None:
                lease = try_lease(first)
                if lease is None:
                    raise UnityEnvError(
                        f"port {first} for the Unity Editor is taken (another env or program "
                        "uses it); the Editor serves one env at a time (num_envs=1)"
                    )
                logger.warning(
                    "waiting up to %s s for the Unity Editor on port %d: press Play",
                    self._launch_args["timeout_wait"],
                    first,
                )
            else:
                lease = lease_free_port(first, PORT_RANGE - (first - self._first_port))
            engine = EngineConfigurationChannel()
            engine.set_configuration_parameters(time_scale=self._time_scale)
            try:
                with warnings.catch_warnings():  # its version check uses distutils
                    warnings.filterwarnings("ignore", "distutils", DeprecationWarning)
                    self._env = UnityEnvironment(
                        self._file_name,
                        worker_id=0,
                        base_port=lease.port,
                        seed=seed % 2**31,  # the protocol's seed is an int32
                        side_channels=[engine],
                        **self._launch_args,
                    )
            except UnityWorkerInUseException:  # bound by someone between our test and ML-Agents'
                lease.release()
                if self._file_name is None:
                    raise
                first = lease.port + 1
                continue
            except Exception as error:
                lease.release()
                where = self._file_name or EDITOR
                raise UnityEnvError(f"starting Unity {where} failed: {error}") from error
            self._lease = lease
            break
        self._launch_seed, self._fresh, self._broken = seed, True, False
        self._call(self._env.reset)
        for _ in range(MAX_IDLE_STEPS):  # behaviours appear with their agents' first decisions
            if self._env.behavior_specs:
                break
            self._call(self._env.step)
        self._behavior = self._pick_behavior(dict(self._env.behavior_specs))
        spec = self._env.behavior_specs[self._behavior]
        if self._spec is not None and spec != self._spec:
            raise UnityEnvError(f"{self._where()} changed its behaviour spec on relaunch: {spec}")
        self._spec = spec
        self._first_decision()

    def _pick_behavior(self, specs: dict[str, Any]) -> str:
        names = sorted(specs)
        if not names:
            raise UnityEnvError(f"{self._where()} has no behaviour after {MAX_IDLE_STEPS} steps")
        wanted = self._wanted_behavior
        if wanted is None:
            if len(names) > 1:
                raise UnityEnvError(
                    f"{self._where()} has several behaviours {names}; choose one with "
                    "behavior=<name> (env.behavior)"
                )
            return names[0]
        for name in names:
            if wanted in (name, name.partition("?")[0]):
                return name
        raise UnityEnvError(f"{self._where()} has no behaviour {wanted!r}; it has {names}")

    def _build_spaces(self, camera: int | None) -> None:
        actions = self._spec.action_spec
        behavior = f"behaviour {self._behavior!r} of {self._where()}"
        self._branches: tuple[int, ...] | None = None
        if actions.continuous_size and actions.discrete_size:
            raise UnityEnvError(
                f"{behavior} has hybrid actions ({actions.continuous_size} continuous and "
                f"discrete branches {tuple(actions.discrete_branches)}); the unity backend takes "
                "continuous or discrete actions, not both"
            )
        if actions.continuous_size:
            self.action_space: spaces.Space = spaces.Box(
                -1.0, 1.0, (actions.continuous_size,), np.float32
            )
        elif actions.discrete_size:
            self._branches = tuple(int(n) for n in actions.discrete_branches)
            self.action_space = spaces.Discrete(math.prod(self._branches))
        else:
            raise UnityEnvError(f"{behavior} has no actions")
        shapes = [tuple(obs.shape) for obs in self._spec.observation_specs]
        visual = [i for i, shape in enumerate(shapes) if len(shape) == 3]
        self._vector = [i for i, shape in enumerate(shapes) if len(shape) != 3]
        self._visual: int | None = None
        if camera is not None:
            if not 0 <= camera < len(visual):
                raise UnityEnvError(
                    f"camera={camera}, but {behavior} has {len(visual)} visual observations "
                    f"{[shapes[i] for i in visual]} (valid: 0..{len(visual) - 1})"
                )
            self._visual = visual[camera]
        elif len(visual) > 1:
            raise UnityEnvError(
                f"{behavior} has {len(visual)} visual observations {[shapes[i] for i in visual]}; "
                "choose one with camera=<index> (env.camera)"
            )
        elif visual:
            self._visual = visual[0]
        out: dict[str, spaces.Space] = {}
        if self._visual is not None:
            out[IMAGE_KEY] = spaces.Box(0, 255, shapes[self._visual], np.uint8)
        size = sum(math.prod(shapes[i]) for i in self._vector)
        if size:
            out[VECTOR_KEY] = spaces.Box(-np.inf, np.inf, (size,), np.float32)
        if not out:
            raise UnityEnvError(f"{behavior} has no observations")
        self.observation_space = spaces.Dict(out)

    def _call(self, method: Callable[[], Any]) -> None:
        """Run an ML-Agents call; its errors become :class:`UnityEnvError` naming the build."""
        from mlagents_envs.exception import UnityException

        try:
            method()
        except UnityException as error:
            self._broken = True
            raise UnityEnvError(
                f"{self._where()} failed: {type(error).__name__}: {error}"
            ) from error

    def _steps(self) -> tuple[Any, Any]:
        """(decision steps, terminal steps) of the behaviour; refuses a second agent."""
        decision, terminal = self._env.get_steps(self._behavior)
        agents = {int(a) for a in decision.agent_id} | {int(a) for a in terminal.agent_id}
        if len(agents) > 1 or (self._agent is not None and agents - {self._agent}):
            raise UnityEnvError(
                f"behaviour {self._behavior!r} of {self._where()} has several agents "
                f"(ids {sorted(agents)}); the unity backend drives exactly one agent per env"
            )
        return decision, terminal

    def _first_decision(self) -> None:
        """Step the academy until the agent asks for its first decision after a reset."""
        self._agent = None
        for _ in range(MAX_IDLE_STEPS):
            decision, _ = self._steps()
            if len(decision):
                self._agent = int(decision.agent_id[0])
                return
            self._call(self._env.step)
        raise UnityEnvError(f"no agent of {self._where()} asked for a decision after a reset")

    def _observation(self, steps: Any, agent: int) -> dict[str, np.ndarray]:
        index = steps.agent_id_to_index[agent]
        out: dict[str, np.ndarray] = {}
        if self._visual is not None:
            image = np.asarray(steps.obs[self._visual][index], np.float32)
            out[IMAGE_KEY] = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
        if self._vector:
            parts = [np.asarray(steps.obs[i][index], np.float32).ravel() for i in self._vector]
            out[VECTOR_KEY] = np.concatenate(parts)
        return out

    def _actions(self, action: Any) -> Any:
        from mlagents_envs.base_env import ActionTuple

        if self._branches is None:
            values = np.asarray(action, np.float32).reshape(1, -1)
            if values.shape[1] != self.action_space.shape[0]:  # type: ignore[index]
                raise ValueError(f"action {action!r} does not fit {self.action_space}")
            return ActionTuple(continuous=np.clip(values, -1.0, 1.0))
        flat = int(action)
        if not 0 <= flat < math.prod(self._branches):
            raise ValueError(f"action {action!r} is outside {self.action_space}")
        digits = np.unravel_index(flat, self._branches)
        return ActionTuple(discrete=np.array([digits], np.int32))

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start an episode; a ``seed`` relaunches the build with it (see the module doc); the
        Editor keeps the seed it connected with (a new connection needs Play pressed again)."""
        super().reset(seed=seed)
        if self._env is None:
            raise UnityEnvError(f"{self._where()} is closed")
        if seed is not None and self._file_name is None:  # the Editor: never reconnects
            if seed != self._launch_seed and not self._seed_warned:
                logger.warning(
                    "%s keeps the seed it connected with (%d): reset(seed=%d) does not "
                    "reconnect, which would need Play pressed again",
                    self._where(),
                    self._launch_seed,
                    seed,
                )
                self._seed_warned = True
            seed = None
        if seed is not None and not (self._fresh and seed == self._launch_seed):
            self._shutdown()
            self._launch(seed)
        elif not self._fresh:
            self._call(self._env.reset)
            self._first_decision()
        self._fresh = False
        decision, _ = self._steps()
        assert self._agent is not None
        return self._observation(decision, self._agent), {}

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Act until the agent's next decision or the end of its episode."""
        agent = self._agent
        if agent is None or self._env is None:
            raise UnityEnvError(f"{self._where()}: call reset() before step() after an episode end")
        self._fresh = False
        actions = self._actions(action)
        self._call(lambda: self._env.set_actions(self._behavior, actions))
        for _ in range(MAX_IDLE_STEPS):
            self._call(self._env.step)
            decision, terminal = self._steps()
            if agent in terminal.agent_id_to_index:  # its next episode's start is dropped
                self._agent = None
                interrupted = bool(terminal[agent].interrupted)
                reward = float(terminal[agent].reward)
                info = {"interrupted": interrupted}
                return (
                    self._observation(terminal, agent),
                    reward,
                    not interrupted,
                    interrupted,
                    info,
                )
            if agent in decision.agent_id_to_index:
                reward = float(decision[agent].reward)
                return self._observation(decision, agent), reward, False, False, {}
        raise UnityEnvError(
            f"the agent of {self._where()} took no decision in {MAX_IDLE_STEPS} academy steps"
        )

    def _shutdown(self) -> None:
        where = self._where()
        env, self._env = self._env, None
        if env is not None:
            atexit.unregister(env._close)  # ML-Agents registers every env, keeping it alive
            process = getattr(env, "_process", None)
            if self._broken and process is not None and process.poll() is None:
                process.kill()  # hung or half-dead: no point waiting for it to quit
            try:
                env._close(timeout=CLOSE_WAIT_S)  # close() would wait timeout_wait (60 s)
            except Exception:  # best effort on a broken connection
                logger.debug("closing %s failed", where, exc_info=True)
        if self._lease is not None:
            self._lease.release()
            self._lease = None

    def close(self) -> None:
        """Stop the build (killed if it does not quit within 5 s) and free its port."""
        self._shutdown()
        self._agent = None
