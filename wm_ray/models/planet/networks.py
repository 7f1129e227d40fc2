"""Networks of the PlaNet agent (Hafner et al. 2019): encoder, decoder, reward head, world model.

- :func:`reduce_bits`: uint8 frames -> ``bits``-bit model-space frames in [-0.5, 0.5), with
  uniform dequantization noise (training) or at the bins' centres (acting).
- :class:`Encoder`: the shared :class:`ConvEncoder` on the reduced frames and/or an MLP on
  ``symlog(vector)``; the features are concatenated into the embedding ``e_t``.
- :class:`Decoder`: :class:`ConvDecoder` image means (model space) and/or an MLP predicting
  ``symlog(vector)``.
- :class:`WorldModel`: encoder + the Gaussian :class:`~wm_ray.models.rssm.rssm.RSSM` + decoder +
  a scalar reward head. No continue head: PlaNet's tasks never terminate.

All modules accept any leading dims, e.g. ``(B, T, ...)``; heads read ``feat = [h, s]``.
"""

from __future__ import annotations

import torch
from torch import nn

from wm_ray.models.common import MLP, ConvDecoder, ConvEncoder, count_params, init_zero_, symlog
from wm_ray.models.common.noise import Source, rand
from wm_ray.models.planet.config import PlanetConfig
from wm_ray.models.rssm.rssm import RSSM, State

__all__ = ["RSSM", "Decoder", "Encoder", "State", "WorldModel", "param_counts", "reduce_bits"]


def reduce_bits(image: torch.Tensor, bits: int, noise: bool, gen: Source = None) -> torch.Tensor:
    """Frames ``(..., H, W, C)`` of uint8 pixels -> float32 frames of ``bits`` bits in model
    space (PlaNet sec. 5: "we reduce the bit depth of the observations to 5 bits"):

        x = floor(pixel / 2^(8 - bits)) / 2^bits - 0.5 + u / 2^bits

    with ``u ~ U[0, 1)`` (dequantization noise) when ``noise``, else ``u = 0.5`` (the bin's
    centre: the noise's mean, deterministic for acting). The result lies in [-0.5, 0.5).
    """
    levels = 2**bits
    binned = torch.div(image.to(torch.int32), 2 ** (8 - bits), rounding_mode="floor").float()
    if noise:
        offset = rand(tuple(image.shape), binned, gen)
    else:
        offset = torch.full_like(binned, 0.5)
    return (binned + offset) / levels - 0.5


class Encoder(nn.Module):
    """Observations ``{image (..., H, W, C) uint8, vector (..., D)}`` -> embedding ``(..., E)``.

    Args:
        shapes: observation shapes (``wm_ray.models.common.data.obs_shapes``).
        config: the ``planet`` section.
    """

    def __init__(self, shapes: dict[str, tuple[int, ...]], config: PlanetConfig) -> None:
        super().__init__()
        self.bits = config.bits
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

    def prepare(
        self, obs: dict[str, torch.Tensor], noise: bool, gen: Source = None
    ) -> dict[str, torch.Tensor]:
        """The model-space inputs (and reconstruction targets): bit-reduced ``image`` and
        ``symlog(vector)``."""
        out = {}
        if "image" in obs and self.cnn is not None:
            out["image"] = reduce_bits(obs["image"], self.bits, noise, gen)
        if "vector" in obs and self.mlp is not None:
            out["vector"] = symlog(obs["vector"].float())
        return out

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Embed :meth:`prepare`'s inputs, every leading index at once."""
        parts = []
        if self.cnn is not None:
            parts.append(self.cnn.encode(inputs["image"]))
        if self.mlp is not None:
            parts.append(self.mlp(inputs["vector"]))
        return torch.cat(parts, -1)


class Decoder(nn.Module):
    """``feat (..., F)`` -> ``{image (..., H, W, C), vector (..., D)}`` means in model space."""

    def __init__(
        self, feat_dim: int, shapes: dict[str, tuple[int, ...]], config: PlanetConfig
    ) -> None:
        super().__init__()
        self.cnn: ConvDecoder | None = None
        self.mlp: MLP | None = None
        if "image" in shapes:
            size, _, channels = shapes["image"]
            self.cnn = ConvDecoder(feat_dim, channels, config.cnn_depth, size, config.cnn_min_res)
        if "vector" in shapes:
            self.mlp = MLP(feat_dim, shapes["vector"][0], config.units, config.layers)

    def forward(self, feat: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        if self.cnn is not None:
            out["image"] = self.cnn(feat)
        if self.mlp is not None:
            out["vector"] = self.mlp(feat)
        return out


class WorldModel(nn.Module):
    """Encoder, Gaussian RSSM, decoder and reward head.

    Args:
        shapes: observation shapes.
        action_dim: size ``A`` of the continuous action.
        config: the ``planet`` section.
        acting: without the decoder (what acting and planning need: encoder, RSSM, reward).
    """

    decoder: Decoder

    def __init__(
        self,
        shapes: dict[str, tuple[int, ...]],
        action_dim: int,
        config: PlanetConfig,
        acting: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = Encoder(shapes, config)
        self.rssm = RSSM(config.rssm, self.encoder.out_dim, action_dim)
        feat = self.rssm.feat_dim
        self.reward = MLP(feat, 1, config.units, config.layers)
        assert self.reward.out is not None
        init_zero_(self.reward.out)
        if not acting:
            self.decoder = Decoder(feat, shapes, config)

    def predict_reward(self, state: State) -> torch.Tensor:
        """The mean reward ``(...)`` of the step into ``state``."""
        return self.reward(self.rssm.feat(state)).squeeze(-1)


def param_counts(wm: WorldModel) -> dict[str, int]:
    """Parameters per part (``encoder``, ``rssm``, ``decoder``, ``reward``) and ``total``."""
    parts = {"encoder": wm.encoder, "rssm": wm.rssm, "decoder": wm.decoder, "reward": wm.reward}
    counts = {name: count_params(module) for name, module in parts.items()}
    counts["total"] = sum(counts.values())
    return counts
