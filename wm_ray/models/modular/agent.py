"""The ModularRSSM agent: Dreamer's learning (world-model objective, actor-critic in imagination,
or CEM planning) over a world model assembled from interchangeable parts.

The world model is Dreamer's (:class:`wm_ray.models.dreamer.networks.WorldModel`: RSSM, reward
and continue heads) with the encoders and decoders of ``modular.encoder`` / ``modular.decoder``
(:mod:`wm_ray.models.modular.networks`) and the RSSM sequence model of ``modular.backbone``
(:mod:`wm_ray.models.rssm.backbones`). Training, acting, planning, checkpoints and the compiled
update are :class:`~wm_ray.models.dreamer.agent.DreamerAgent`'s, reading the ``modular`` section.
"""

from __future__ import annotations

from wm_ray.models.dreamer.agent import DreamerAgent
from wm_ray.models.dreamer.networks import (
    Actor,
    Critic,
    WorldModel,
    build_acting_networks,
    build_networks,
)
from wm_ray.models.modular.networks import ModularWorldModel


class ModularAgent(DreamerAgent):
    """ModularRSSM (see the module docstring and the package README).

    Args:
        obs_space: single-env Dict space with ``image`` (H, W, C) uint8 and/or ``vector`` (D,).
        act_space: Discrete or flat Box (actions in [-1, 1]).
        config: the root config (reads ``modular``, ``run.seed``, ``run.device``).
        acting: only the encoders, the RSSM and the actor (env and eval workers).
    """

    family = "modular"

    def build_networks(self) -> tuple[WorldModel, Actor, Critic]:
        return build_networks(
            self.shapes, self.act.dim, self.act.discrete, self.cfg, ModularWorldModel
        )

    def build_acting_networks(self) -> tuple[WorldModel, Actor, Critic | None]:
        return build_acting_networks(
            self.shapes, self.act.dim, self.act.discrete, self.cfg, ModularWorldModel
        )
