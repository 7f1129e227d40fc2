"""Networks of the DreamerV3 agent (Hafner et al. 2023): encoder, decoder, heads, actor, critic.

- :class:`Encoder`: a :class:`ConvEncoder` for ``image`` and an MLP on ``symlog(vector)``; their
  features are concatenated into the embedding ``e_t``.
- :class:`Decoder`: a :class:`ConvDecoder` for ``image`` (mean in ``x / 255 - 0.5`` space) and
  an MLP predicting ``symlog(vector)``.
- :class:`WorldModel`: encoder + :class:`~wm_ray.models.rssm.rssm.RSSM` + decoder + reward
  head (two-hot over 255 symexp bins, zero-initialized output) + continue head (Bernoulli logit).
- :class:`Actor`: unimix categorical (discrete) or :class:`BoundedNormal` (continuous).
- :class:`Critic`: two-hot value head, zero-initialized output.

All heads read the model state ``feat = [h, z]`` with any leading dims, e.g. ``(B, T, F)``:
a tensor, or a :class:`~wm_ray.models.common.OneHotInput` (``RSSM.features``) whose one-hot
``z`` the first layers read by gathering weight columns.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from wm_ray.models.common import (
    MLP,
    BoundedNormal,
    ConvDecoder,
    ConvEncoder,
    Features,
    OneHotCategorical,
    TwoHot,
    TwoHotDist,
    count_params,
    init_zero_,
    symlog,
)
from wm_ray.models.common.data import obs_shapes
from wm_ray.models.common.onehot import dense
from wm_ray.models.dreamer.config import DreamerConfig
from wm_ray.models.rssm.backbones import Backbone
from wm_ray.models.rssm.rssm import RSSM, State

__all__ = [
    "RSSM",
    "Actor",
    "Critic",
    "Decoder",
    "Encoder",
    "State",
    "WorldModel",
    "build_acting_networks",
    "build_networks",
    "obs_shapes",
    "param_counts",
]


class Encoder(nn.Module):
    """Observations ``{image (..., H, W, C) uint8, vector (..., D)}`` -> embedding ``(..., E)``."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], config: DreamerConfig) -> None:
        super().__init__()
        self.cnn: ConvEncoder | None = None
        self.mlp: MLP | None = None
        self.out_dim = 0
        if "image" in shapes:
            size, _, channels = shapes["image"]
            self.cnn = ConvEncoder(channels, config.cnn_depth, size, config.cnn_min_res)
            self.out_dim += self.cnn.out_dim
        if "vector" in shapes:
            self.mlp = MLP(shapes["vector"][0], None, config.units, config.layers)
            self.out_dim += self.mlp.out_dim

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Encode every leading index at once (e.g. all ``(B, T)`` steps of a batch)."""
        parts = []
        if self.cnn is not None:
            parts.append(self.cnn(obs["image"]))
        if self.mlp is not None:
            parts.append(self.mlp(symlog(obs["vector"].float())))
        return torch.cat(parts, -1)


class Decoder(nn.Module):
    """``feat (..., F)`` -> ``{image (..., H, W, C), vector (..., D)}`` predictions."""

    def __init__(
        self, feat_dim: int, shapes: dict[str, tuple[int, ...]], config: DreamerConfig
    ) -> None:
        super().__init__()
        self.cnn: ConvDecoder | None = None
        self.mlp: MLP | None = None
        if "image" in shapes:
            size, _, channels = shapes["image"]
            self.cnn = ConvDecoder(feat_dim, channels, config.cnn_depth, size, config.cnn_min_res)
        if "vector" in shapes:
            self.mlp = MLP(feat_dim, shapes["vector"][0], config.units, config.layers)

    def forward(self, feat: Features) -> dict[str, torch.Tensor]:
        """Image means in ``x / 255 - 0.5`` space; vector predictions in symlog space."""
        out = {}
        if self.cnn is not None:
            out["image"] = self.cnn(dense(feat))
        if self.mlp is not None:
            out["vector"] = self.mlp(feat)
        return out


class WorldModel(nn.Module):
    """Encoder, RSSM, decoder, reward and continue heads.

    Args:
        shapes: observation shapes from :func:`obs_shapes`.
        action_dim: size of the (one-hot) action the RSSM receives.
        config: the ``dreamer`` config section.
        acting: only what acting needs: the encoder and the RSSM, plus the reward and continue
            heads when the agent plans (``planner: cem``); no decoder.
    """

    decoder: nn.Module
    reward: MLP
    cont: MLP

    def __init__(
        self,
        shapes: dict[str, tuple[int, ...]],
        action_dim: int,
        config: DreamerConfig,
        acting: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = self.make_encoder(shapes, config)
        core = self.make_core(config)
        self.rssm = RSSM(config.rssm, self.encoder.out_dim, action_dim, core)
        self.twohot = TwoHot(config.bins)
        if acting and config.planner != "cem":
            return
        feat = self.rssm.feat_dim
        if not acting:
            self.decoder = self.make_decoder(feat, shapes, config)
        self.reward = MLP(feat, config.bins, config.units, config.layers)
        assert self.reward.out is not None
        init_zero_(self.reward.out)
        self.cont = MLP(feat, 1, config.units, config.layers)

    # A world model with other parts (``wm_ray.models.modular``) overrides these three.

    def make_encoder(self, shapes: dict[str, tuple[int, ...]], config: DreamerConfig) -> Any:
        """The encoder: a module with ``out_dim`` mapping observations to ``(..., E)``
        (``encoder: jepa``: a JEPA run's pretrained encoder, :mod:`.pretrained`)."""
        if config.encoder == "jepa":
            from wm_ray.models.dreamer.pretrained import JEPAEncoder

            return JEPAEncoder(shapes, config)
        return Encoder(shapes, config)

    def make_decoder(
        self, feat_dim: int, shapes: dict[str, tuple[int, ...]], config: DreamerConfig
    ) -> Any:
        """The decoder: ``feat (..., F)`` -> predictions of the observation keys it models."""
        return Decoder(feat_dim, shapes, config)

    def make_core(self, config: DreamerConfig) -> Backbone | None:
        """The RSSM's sequence model; None: the GRU."""
        return None

    def reward_dist(self, feat: Features) -> TwoHotDist:
        """Two-hot reward distribution ``(...)`` of ``feat (..., F)``."""
        return self.twohot(self.reward(feat))

    def cont_logits(self, feat: Features) -> torch.Tensor:
        """Continue logits ``(...)`` of ``feat (..., F)`` (1 = the episode goes on)."""
        return self.cont(feat).squeeze(-1)


class Actor(nn.Module):
    """The policy ``pi(a | feat)``.

    Args:
        feat_dim: model state size ``F``.
        action_dim: number of discrete actions, or continuous action dims.
        discrete: one-hot categorical actions if True, else :class:`BoundedNormal`.
        config: the ``dreamer`` config section.
    """

    def __init__(self, feat_dim: int, action_dim: int, discrete: bool, config: DreamerConfig):
        super().__init__()
        self.discrete = discrete
        self.ac = config.ac
        self.net = MLP(feat_dim, action_dim * (1 if discrete else 2), config.units, config.layers)

    def forward(self, feat: Features) -> OneHotCategorical | BoundedNormal:
        """The action distribution over ``(..., A)`` for ``feat (..., F)``."""
        return self.dist(self.net(feat))

    def dist(self, out: torch.Tensor) -> OneHotCategorical | BoundedNormal:
        """The action distribution of raw network outputs ``out (..., A or 2A)``."""
        if self.discrete:
            return OneHotCategorical(out, self.ac.actor_unimix)
        mean, std = out.chunk(2, -1)
        return BoundedNormal(mean, std, self.ac.actor_min_std, self.ac.actor_max_std)


class Critic(nn.Module):
    """The value ``v(feat)`` as a two-hot distribution over symexp bins (output starts at 0)."""

    def __init__(self, feat_dim: int, config: DreamerConfig) -> None:
        super().__init__()
        self.net = MLP(feat_dim, config.bins, config.units, config.layers)
        assert self.net.out is not None
        init_zero_(self.net.out)
        self.twohot = TwoHot(config.bins)

    def forward(self, feat: Features) -> TwoHotDist:
        """``(...)`` value distribution of ``feat (..., F)``."""
        return self.twohot(self.net(feat))


def build_networks(
    shapes: dict[str, tuple[int, ...]],
    action_dim: int,
    discrete: bool,
    config: DreamerConfig,
    world_model: type[WorldModel] = WorldModel,
) -> tuple[WorldModel, Actor, Critic]:
    """The trained networks; under ``with torch.device("meta")`` they cost no memory."""
    wm = world_model(shapes, action_dim, config)
    actor = Actor(wm.rssm.feat_dim, action_dim, discrete, config)
    return wm, actor, Critic(wm.rssm.feat_dim, config)


def build_acting_networks(
    shapes: dict[str, tuple[int, ...]],
    action_dim: int,
    discrete: bool,
    config: DreamerConfig,
    world_model: type[WorldModel] = WorldModel,
) -> tuple[WorldModel, Actor, Critic | None]:
    """What acting needs: the world model's encoder and RSSM (and, planning, its reward and
    continue heads), the actor, and the critic when the planner bootstraps with it."""
    wm = world_model(shapes, action_dim, config, acting=True)
    critic = None
    if config.planner == "cem" and config.cem.value:
        critic = Critic(wm.rssm.feat_dim, config)
    return wm, Actor(wm.rssm.feat_dim, action_dim, discrete, config), critic


def param_counts(wm: WorldModel, actor: Actor, critic: Critic) -> dict[str, int]:
    """Parameters per part (``encoder``, ``rssm``, ``decoder``, ``reward``, ``cont``, ``actor``,
    ``critic``) and their ``total``; the slow critic copy is not counted."""
    parts = {
        "encoder": wm.encoder,
        "rssm": wm.rssm,
        "decoder": wm.decoder,
        "reward": wm.reward,
        "cont": wm.cont,
        "actor": actor,
        "critic": critic,
    }
    counts = {name: count_params(module) for name, module in parts.items()}
    counts["total"] = sum(counts.values())
    return counts
