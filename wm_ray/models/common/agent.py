"""The skeleton every family's agent shares (the agent protocol of ``wm_ray.core``).

:class:`AgentBase` holds what is the same in every family: the learner device, the sampling
generator (seeded from ``run.seed``, saved with checkpoints), the update counter, the input
checks of ``policy``, acting weights, save / load of modules, optimizers, generator and
counters, metrics turned into floats with one device sync, parameter counts. A family's agent
subclasses it and provides:

- ``family`` (the registry name; it names the checkpoint files);
- in its constructor, after ``super().__init__``: its networks, given to :meth:`_set_networks`
  (with ``acting=True`` only what acting needs: no optimizers, no training-only networks);
- :meth:`acting_modules` (what env workers load) and, when learning, :meth:`optimizers`;
- ``init_policy``, ``policy``, ``init_train``, ``train`` and ``report``.

Acting-only agents (``acting=True``) are what env and eval workers build: ``train`` refuses
(:meth:`require_learner`), and :meth:`load` reads only the acting modules of a checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from wm_ray.models.common import persist
from wm_ray.models.common.data import device_tensor
from wm_ray.models.common.device import resolve_device
from wm_ray.models.common.optim import Optimizer

MODES = ("explore", "eval")


class AgentBase:
    """Shared agent skeleton (see the module docstring).

    Args:
        obs_space: the single-env Dict observation space.
        act_space: the single-env action space.
        config: the root config (reads ``run.seed``, ``run.device`` and the family's section).
        acting: build only what acting needs.
    """

    family: ClassVar[str] = ""

    def __init__(self, obs_space: Any, act_space: Any, config: Any, acting: bool = False) -> None:
        if not self.family:
            raise TypeError(f"{type(self).__name__} must set the class attribute 'family'")
        self.config = config
        self.obs_space, self.act_space = obs_space, act_space
        self.acting = bool(acting)
        self.device = resolve_device(config.run.device)
        # run.cpu_rng: a CPU generator whose draws are moved (wm_ray.models.common.noise)
        where = "cpu" if config.run.cpu_rng else self.device
        self.gen = torch.Generator(where).manual_seed(config.run.seed)
        self.updates = 0
        self.nets = nn.ModuleDict()

    def _set_networks(self, modules: Mapping[str, nn.Module]) -> None:
        """Register the agent's networks (saved, loaded and counted) and move them to the device."""
        self.nets = nn.ModuleDict(dict(modules)).to(self.device)

    # ----------------------------------------------------------------------------- checks

    def check_policy_inputs(
        self, obs: Mapping[str, Any], streams: int, mode: str, keys: tuple[str, ...] = ()
    ) -> torch.Tensor:
        """Validate a ``policy`` call; returns ``is_first`` as a bool tensor on the device.

        Args:
            obs: the ``(N, ...)`` observation dict.
            streams: N, the streams the carry holds.
            mode: ``explore`` or ``eval``.
            keys: observation keys the family needs besides ``is_first``.
        """
        if mode not in MODES:
            raise ValueError(f"policy mode must be 'explore' or 'eval', got {mode!r}")
        missing = [k for k in ("is_first", *keys) if k not in obs]
        if missing:
            raise ValueError(f"obs needs {missing} (got keys {sorted(obs)})")
        is_first = device_tensor(np.asarray(obs["is_first"], bool), self.device)
        if is_first.shape != (streams,):
            raise ValueError(
                f"obs['is_first'] has shape {tuple(is_first.shape)} but the carry holds "
                f"{streams} streams (init_policy(N) with the env count)"
            )
        return is_first

    def require_learner(self) -> None:
        """Raise if this agent was built for acting only."""
        if self.acting:
            raise RuntimeError(
                f"this {self.family} agent was built for acting only (acting=True): it has no "
                "optimizers or training networks; build it with acting=False to train"
            )

    # ----------------------------------------------------------------------------- metrics

    def to_floats(
        self, tensors: Mapping[str, torch.Tensor], times: Mapping[str, float] | None = None
    ) -> dict[str, float]:
        """0-dim metric tensors as floats (one device sync for all), plus ``times``."""
        out: dict[str, float] = {}
        if tensors:
            stacked = torch.stack([v.detach().float().to(self.device) for v in tensors.values()])
            out = {k: float(v) for k, v in zip(tensors, stacked.tolist())}
        out.update(times or {})
        return out

    def param_counts(self) -> dict[str, int]:
        """Parameters per registered network and their ``total``."""
        counts = {name: sum(p.numel() for p in m.parameters()) for name, m in self.nets.items()}
        counts["total"] = sum(counts.values())
        return counts

    # ----------------------------------------------------------------------------- weights

    def acting_modules(self) -> dict[str, nn.Module]:
        """The modules an env worker needs to act (what :meth:`acting_weights` ships)."""
        raise NotImplementedError(f"{type(self).__name__} must define acting_modules()")

    def acting_weights(self) -> dict[str, Any]:
        """CPU copies of the state dicts of :meth:`acting_modules`."""
        return persist.cpu_state_dicts(self.acting_modules())

    def load_acting_weights(self, weights: dict[str, Any]) -> None:
        """Load what :meth:`acting_weights` returned (e.g. on an env worker)."""
        persist.load_state_dicts(self.acting_modules(), weights)

    def optimizers(self) -> dict[str, Optimizer]:
        """The optimizers by name (saved with the agent); none for an acting agent."""
        return {}

    # ----------------------------------------------------------------------------- state

    def counters(self) -> dict[str, int]:
        """Counters saved with the agent."""
        return {"updates": self.updates}

    def load_counters(self, counters: Mapping[str, Any]) -> None:
        self.updates = int(counters.get("updates", 0))

    def save(self, directory: Path) -> None:
        """Write the networks, optimizer states, generator and counters into ``directory``."""
        persist.save(
            Path(directory), self.nets, self.optimizers(), self.gen, self.counters(), self.family
        )

    def load(self, directory: Path) -> None:
        """Restore what :meth:`save` wrote, exactly. An acting agent reads only its own
        networks from a learner's checkpoint (and no optimizer state)."""
        counters = persist.load(
            Path(directory),
            self.nets,
            self.optimizers(),
            self.gen,
            self.family,
            subset=self.acting,
        )
        self.load_counters(counters)

    def random_state(self) -> Any:
        """The sampling generator's state (tests compare outputs under equal randomness)."""
        return self.gen.get_state()

    def set_random_state(self, state: Any) -> None:
        self.gen.set_state(state)


Mode = Literal["explore", "eval"]

__all__ = ["MODES", "AgentBase", "Mode"]
