"""Behaviour policies: how a family that learns from video and never acts on what it learned
(Genie, JEPA) fills replay through env workers.

``<family>.behaviour: random`` draws uniform actions from the agent's generator (so they are
reproducible and saved with checkpoints); a run directory instead loads the acting-only agent
of that run's family from its latest checkpoint (e.g. a DIAMOND or Dreamer policy), so the
family learns from the video a competent player makes. The other run must have been trained on
the same observation and action spaces.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from wm_ray.models.common.agent import AgentBase


class RandomBehaviour:
    """Uniform actions over ``act_space`` drawn from ``generator`` (``key`` names the setting in
    errors)."""

    def __init__(
        self, act_space: gym.Space, generator: torch.Generator, key: str = "behaviour"
    ) -> None:
        if not isinstance(act_space, (gym.spaces.Discrete, gym.spaces.Box)):
            raise ValueError(f"{key}=random needs a Discrete or Box space: {act_space}")
        if isinstance(act_space, gym.spaces.Box) and not (
            np.all(np.isfinite(act_space.low)) and np.all(np.isfinite(act_space.high))
        ):
            raise ValueError(f"{key}=random cannot sample an unbounded {act_space}")
        self.space, self.gen = act_space, generator

    def init_policy(self, batch_size: int) -> None:
        return None

    def policy(self, carry: Any, obs: dict[str, Any], mode: str) -> tuple[Any, np.ndarray]:
        n = len(obs["is_first"])
        where = self.gen.device
        if isinstance(self.space, gym.spaces.Discrete):
            drawn = torch.randint(int(self.space.n), (n,), generator=self.gen, device=where)
            return carry, drawn.cpu().numpy().astype(np.int64) + int(self.space.start)
        shape = (n, *self.space.shape)
        unit = torch.rand(shape, generator=self.gen, device=where).cpu().numpy()
        low, high = self.space.low, self.space.high
        return carry, (low + unit * (high - low)).astype(np.float32)

    def random_state(self) -> Any:
        return None

    def set_random_state(self, state: Any) -> None:
        return None


class CheckpointBehaviour:
    """The acting policy of the run in ``run_dir`` (its latest checkpoint); ``key`` names the
    setting in errors and ``family`` the caller, whose own runs are refused (they do not act)."""

    def __init__(self, run_dir: str, obs_space: Any, act_space: Any, key: str, family: str) -> None:
        from wm_ray.factory import create_model
        from wm_ray.rundir.open import open_checkpoint

        try:
            _, config, path = open_checkpoint(run_dir, "latest", "act with")
        except Exception as err:
            raise ValueError(
                f"{key}={run_dir!r} must be 'random' or a run directory with a checkpoint: {err}"
            ) from None
        if config.run.model == family:
            raise ValueError(
                f"{key}={run_dir!r} is a {family} run: {family} does not act, so its "
                "behaviour must be 'random' or a run of a family that acts"
            )
        self.agent = create_model(config.run.model, obs_space, act_space, config, acting=True)
        self.agent.load(path / "agent")
        self.source = f"{config.run.model} from {path}"

    def init_policy(self, batch_size: int) -> Any:
        return self.agent.init_policy(batch_size)

    def policy(self, carry: Any, obs: dict[str, Any], mode: str) -> tuple[Any, np.ndarray]:
        carry, action, _ = self.agent.policy(carry, obs, mode)
        return carry, action

    def random_state(self) -> Any:
        return self.agent.random_state()

    def set_random_state(self, state: Any) -> None:
        self.agent.set_random_state(state)


def make_behaviour(
    behaviour: str, obs_space: Any, act_space: Any, generator: torch.Generator, family: str
) -> RandomBehaviour | CheckpointBehaviour:
    """The behaviour policy ``<family>.behaviour`` names: ``random`` or a run directory."""
    key = f"{family}.behaviour"
    if behaviour.strip().lower() == "random":
        return RandomBehaviour(act_space, generator, key)
    return CheckpointBehaviour(behaviour, obs_space, act_space, key, family)


class BehaviourAgent(AgentBase):
    """The skeleton of a family that learns from video and acts only through its behaviour
    policy (Genie, JEPA): square image observations, the section's ``behaviour``, acting
    methods that delegate to it, the behaviour's randomness in the agent's random state, and no
    acting weights (no update changes how env workers act).

    A subclass sets ``label`` (its name in messages) and calls :meth:`setup_behaviour` in its
    constructor after ``super().__init__``.
    """

    label: ClassVar[str] = ""

    def setup_behaviour(
        self, section: Any, obs_space: Any, act_space: Any, problems: Callable[[int], list[str]]
    ) -> None:
        """Check the observations (a square ``image``) and ``problems(frame side)`` (every
        problem of the config, raised together), then build ``section.behaviour``."""
        image = obs_space.spaces.get("image") if isinstance(obs_space, gym.spaces.Dict) else None
        shape = tuple(image.shape or ()) if image is not None else ()
        if len(shape) != 3 or shape[0] != shape[1]:
            raise ValueError(
                f"{self.label or self.family} needs square image observations (H, W, C); got "
                f"{obs_space} (set env.pixels=true for vector tasks)"
            )
        self.image_shape = (int(shape[0]), int(shape[1]), int(shape[2]))
        bad = problems(self.image_shape[0])
        if bad:
            raise ValueError(f"invalid {self.family} config: " + "; ".join(dict.fromkeys(bad)))
        self.behaviour = make_behaviour(
            section.behaviour, obs_space, act_space, self.gen, self.family
        )

    def init_policy(self, batch_size: int) -> Any:
        return self.behaviour.init_policy(batch_size)

    @torch.no_grad()
    def policy(
        self, carry: Any, obs: dict[str, np.ndarray], mode: Literal["explore", "eval"] = "explore"
    ) -> tuple[Any, np.ndarray, dict[str, np.ndarray]]:
        """The behaviour policy's actions (the family itself never acts)."""
        n = len(np.asarray(obs.get("is_first", ())))
        self.check_policy_inputs(obs, n, mode, ("image",))
        carry, action = self.behaviour.policy(carry, obs, mode)
        return carry, action, {}

    def random_state(self) -> Any:
        return (self.gen.get_state(), self.behaviour.random_state())

    def set_random_state(self, state: Any) -> None:
        self.gen.set_state(state[0])
        self.behaviour.set_random_state(state[1])

    def acting_modules(self) -> dict[str, nn.Module]:
        """None: env workers act with the behaviour policy, which no update changes."""
        return {}
