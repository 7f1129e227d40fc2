"""The IRIS tokenizer: a VQ-VAE from frames to a grid of discrete tokens (Micheli et al. 2023).

A convolutional encoder maps a frame ``(C, H, W)`` in [0, 1] to a ``g x g`` grid of
``embed_dim`` vectors (``g = sqrt(tokens)``, 4 x 4 for the paper's 16 tokens); each vector is
replaced by its nearest codebook entry (``vocab`` of them) and a convolutional decoder
reconstructs the frame from the quantized grid. Tokens are numbered row-major over the grid.

Architecture (the paper's, after VQGAN; widths from :class:`TokenizerConfig`): encoder =
3x3 conv_in, then one stage per resolution from ``image_size`` down to ``g``: ``res_blocks``
residual blocks (GroupNorm, SiLU, 3x3 conv, twice; 1x1 skip when widths differ), a single-head
self-attention block when the stage's resolution is in ``attn_resolutions``, and a stride-2 3x3
downsample after every stage but the last; a middle res / attention / res; GroupNorm, SiLU and a
3x3 conv to ``embed_dim``. The decoder mirrors it: 3x3 conv_in from ``embed_dim``, middle
res / attention / res, one stage per resolution from ``g`` up with ``res_blocks + 1`` residual
blocks (as IRIS's decoder), attention where listed, nearest x2 upsample + 3x3 conv between
stages, and GroupNorm, SiLU, 3x3 conv out. The networks see pixels in [-1, 1]; the interface
uses [0, 1].

Training (:func:`wm_ray.models.iris.losses.tokenizer_loss`): straight-through VQ, reconstruction
``l1 * |x - x_hat| + l2 * (x - x_hat)^2`` (+ ``perceptual`` x LPIPS with a weights file),
commitment ``beta * |z_e - sg(e)|^2`` and, in ``codebook=grad`` mode, the codebook loss
``|sg(z_e) - e|^2``. In ``codebook=ema`` mode the codebook is not trained by gradients but
moved to the EMA of the encoder outputs assigned to each code (Laplace-smoothed cluster sizes,
van den Oord et al. 2017, appendix). Both modes track an EMA of each code's usage and every
``dead_code_every`` training calls re-seed the codes whose usage share fell under
``dead_code_threshold / vocab`` with random encoder outputs of the batch. All of that state is
in buffers, and under a ``torch.distributed`` group the statistics are averaged and the new
rows broadcast from rank 0 so every rank keeps the same codebook. The steps are
:mod:`wm_ray.models.common.vq`'s (shared with Genie); the state stays on this module.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wm_ray.models.common.nets import bottle
from wm_ray.models.common.vq import (
    nearest_codes,
    new_codebook,
    reset_dead_codes,
    update_statistics,
)
from wm_ray.models.iris.config import TokenizerConfig
from wm_ray.models.iris.perceptual import PerceptualLoss
from wm_ray.operators.tensors import unit_channels_first


def _norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups that always divide ``channels``."""
    return nn.GroupNorm(math.gcd(32, channels), channels, eps=1e-6)


class ResBlock(nn.Module):
    """``x + conv(silu(norm(conv(silu(norm(x))))))`` with a 1x1 skip when widths differ."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            _norm(in_ch),
            nn.SiLU(),
            nn.Conv2d(in_ch, out_ch, 3, padding=1),
            _norm(out_ch),
            nn.SiLU(),
            nn.Conv2d(out_ch, out_ch, 3, padding=1),
        )
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """``(N, in_ch, H, W) -> (N, out_ch, H, W)``."""
        return self.skip(x) + self.net(x)


class AttnBlock(nn.Module):
    """Single-head self-attention over the ``H * W`` positions, residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, H, W) -> (N, C, H, W)``."""
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, c, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)  # (N, HW, C), scale 1 / sqrt(C)
        return x + self.proj(out.transpose(-1, -2).reshape(n, c, h, w))


class Downsample(nn.Module):
    """Stride-2 3x3 conv after padding right and bottom by one: ``(H, W) -> (H/2, W/2)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest x2 upsample then a 3x3 conv: ``(H, W) -> (2H, 2W)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _resolutions(image_size: int, grid: int) -> list[int]:
    """The stage resolutions ``[image_size, image_size / 2, ..., grid]``."""
    ratio = image_size // grid if grid > 0 else 0
    if ratio < 1 or ratio & (ratio - 1) or ratio * grid != image_size:
        raise ValueError(
            f"image_size {image_size} must be the token grid side {grid} times a power of 2"
        )
    return [image_size >> i for i in range(ratio.bit_length())]


class Encoder(nn.Module):
    """Frames ``(N, channels, S, S)`` in [-1, 1] -> ``(N, embed_dim, g, g)``."""

    def __init__(self, cfg: TokenizerConfig, image_size: int, channels: int, grid: int) -> None:
        super().__init__()
        ch = cfg.channels
        layers: list[nn.Module] = [nn.Conv2d(channels, ch, 3, padding=1)]
        resolutions = _resolutions(image_size, grid)
        for i, res in enumerate(resolutions):
            layers += [ResBlock(ch, ch) for _ in range(cfg.res_blocks)]
            if res in cfg.attn_resolutions:
                layers.append(AttnBlock(ch))
            if i < len(resolutions) - 1:
                layers.append(Downsample(ch))
        layers += [ResBlock(ch, ch), AttnBlock(ch), ResBlock(ch, ch)]
        layers += [_norm(ch), nn.SiLU(), nn.Conv2d(ch, cfg.embed_dim, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """Quantized grids ``(N, embed_dim, g, g)`` -> frames ``(N, channels, S, S)`` in [-1, 1]."""

    def __init__(self, cfg: TokenizerConfig, image_size: int, channels: int, grid: int) -> None:
        super().__init__()
        ch = cfg.channels
        layers: list[nn.Module] = [nn.Conv2d(cfg.embed_dim, ch, 3, padding=1)]
        layers += [ResBlock(ch, ch), AttnBlock(ch), ResBlock(ch, ch)]
        resolutions = _resolutions(image_size, grid)[::-1]
        for i, res in enumerate(resolutions):
            layers += [ResBlock(ch, ch) for _ in range(cfg.res_blocks + 1)]
            if res in cfg.attn_resolutions:
                layers.append(AttnBlock(ch))
            if i < len(resolutions) - 1:
                layers.append(Upsample(ch))
        layers += [_norm(ch), nn.SiLU(), nn.Conv2d(ch, channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class Tokenizer(nn.Module):
    """Discrete autoencoder: frames ``(..., C, H, W)`` in [0, 1] <-> tokens ``(..., K)``.

    Args:
        cfg: the ``iris.tokenizer`` section.
        image_size: frame side ``H = W``; must be ``sqrt(cfg.tokens)`` times a power of 2.
        channels: frame channels ``C`` (3 RGB, 1 grayscale).
        perceptual: load the perceptual network when configured (False for acting copies).

    Attributes:
        vocab: codebook entries ``V``.
        tokens: tokens per frame ``K``.
        grid: token grid side ``g = sqrt(K)``.
        codebook: ``(V, D)`` parameter; frozen (``requires_grad=False``) in ``ema`` mode.

    Buffers (all in the ``state_dict``): ``usage (V,)`` EMA of each code's share of the
    assignments, ``calls ()`` training calls of :meth:`loss`, and in ``ema`` mode
    ``ema_cluster_size (V,)`` / ``ema_embed_sum (V, D)``. The perceptual network (when
    configured) is deliberately not a registered submodule: it is not in ``state_dict()``,
    ``parameters()`` or ``modules()``, but follows ``.to()`` / ``.cuda()`` / ``.float()``.
    """

    codebook: nn.Parameter
    usage: Tensor
    calls: Tensor
    ema_cluster_size: Tensor
    ema_embed_sum: Tensor

    def __init__(
        self,
        cfg: TokenizerConfig,
        image_size: int = 64,
        channels: int = 3,
        perceptual: bool = True,
    ) -> None:
        super().__init__()
        grid = round(math.sqrt(cfg.tokens))
        if grid * grid != cfg.tokens:
            raise ValueError(f"tokens must be a square, got {cfg.tokens}")
        if cfg.codebook not in ("grad", "ema"):
            raise ValueError(f"codebook must be 'grad' or 'ema', got {cfg.codebook!r}")
        self.cfg = cfg
        self.vocab, self.tokens, self.grid = cfg.vocab, cfg.tokens, grid
        self.channels, self.image_size = channels, image_size
        self.encoder = Encoder(cfg, image_size, channels, grid)
        self.decoder = Decoder(cfg, image_size, channels, grid)
        init = new_codebook(cfg.vocab, cfg.embed_dim)
        self.codebook = nn.Parameter(init, requires_grad=cfg.codebook == "grad")
        self.register_buffer("usage", torch.zeros(cfg.vocab))
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))
        if cfg.codebook == "ema":
            # Consistent start: sum / size = the initial codebook, so unassigned codes stay put.
            self.register_buffer("ema_cluster_size", torch.ones(cfg.vocab))
            self.register_buffer("ema_embed_sum", init.clone())
        self._perceptual: list[PerceptualLoss] = []  # a list keeps it out of state_dict
        if perceptual and cfg.perceptual_weights and cfg.perceptual > 0:
            self._perceptual.append(PerceptualLoss.from_file(cfg.perceptual_weights))
        self._calls_cache: int | None = None  # host copy of ``calls`` (read once, then counted)
        self.register_load_state_dict_post_hook(_forget_calls)

    # -- device handling of the unregistered perceptual network ------------------------------

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> Tokenizer:
        super()._apply(fn, recurse)
        for module in self._perceptual:
            module._apply(fn, recurse)
        return self

    @property
    def perceptual_loss(self) -> PerceptualLoss | None:
        """The frozen LPIPS network, or ``None`` when not configured."""
        return self._perceptual[0] if self._perceptual else None

    # -- interface -----------------------------------------------------------------------------

    @staticmethod
    def preprocess(image: Tensor) -> Tensor:
        """uint8 ``(..., H, W, C)`` -> float32 ``(..., C, H, W)`` in [0, 1] (contiguous)."""
        return unit_channels_first(image)

    def _check(self, x: Tensor) -> None:
        want = (self.channels, self.image_size, self.image_size)
        if tuple(x.shape[-3:]) != want:
            raise ValueError(f"expected frames (..., {want}), got {tuple(x.shape)}")

    def encode(self, x: Tensor) -> Tensor:
        """Frames ``(N, C, H, W)`` in [0, 1] -> continuous ``z_e (N, D, g, g)``."""
        self._check(x)
        return self.encoder(x * 2.0 - 1.0)

    def _nearest(self, flat: Tensor) -> Tensor:
        """``(M, D)`` vectors -> ``(M,)`` int64 indices of their nearest codes (no grad)."""
        return nearest_codes(flat, self.codebook)

    def quantize(self, z_e: Tensor) -> tuple[Tensor, Tensor]:
        """``z_e (N, D, g, g)`` -> ``(z_q (N, D, g, g), indices (N, K) int64)``.

        ``z_q`` holds the nearest codebook vectors (gradients reach the codebook, not ``z_e``:
        no straight-through here); ``indices`` are row-major over the grid.
        """
        n = z_e.shape[0]
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, z_e.shape[1])
        indices = self._nearest(flat).reshape(n, self.tokens)
        return self.embed(indices), indices

    def embed(self, indices: Tensor) -> Tensor:
        """Tokens ``(..., K)`` int64 -> codebook vectors ``(..., D, g, g)``."""
        if indices.shape[-1:] != (self.tokens,):
            raise ValueError(f"expected tokens (..., {self.tokens}), got {tuple(indices.shape)}")
        vectors = F.embedding(indices, self.codebook)  # (..., K, D)
        lead = indices.shape[:-1]
        return vectors.reshape(*lead, self.grid, self.grid, -1).movedim(-1, -3)

    def decode(self, indices: Tensor) -> Tensor:
        """Tokens ``(..., K)`` int64 -> frames ``(..., C, H, W)`` in [0, 1] space, unclamped."""
        return bottle(self._decode_z, self.embed(indices), 3)

    def _decode_z(self, z: Tensor) -> Tensor:
        """Grids ``(N, D, g, g)`` -> frames ``(N, C, H, W)`` in [0, 1] space, unclamped."""
        return (self.decoder(z) + 1.0) / 2.0

    @torch.no_grad()
    def tokenize(self, x: Tensor) -> Tensor:
        """Frames ``(..., C, H, W)`` in [0, 1] -> tokens ``(..., K)`` int64."""
        return bottle(lambda f: self.quantize(self.encode(f))[1], x, 3)

    @torch.no_grad()
    def encode_decode(self, x: Tensor) -> Tensor:
        """Frames ``(..., C, H, W)`` -> their reconstructions, clamped to [0, 1]."""
        return self.decode(self.tokenize(x)).clamp(0.0, 1.0)

    # -- training (the loss: ``wm_ray.models.iris.losses.tokenizer_loss``) ----------------------

    @torch.no_grad()
    def update_codebook(self, flat_z: Tensor, flat_idx: Tensor, counts: Tensor) -> Tensor | None:
        """EMA codebook / usage / dead-code updates from one training batch's encodings
        ``flat_z (M, D)``, their codes ``flat_idx (M,)`` and the code counts ``(V,)``; returns
        the number of codes re-seeded, on the calls that check for dead codes."""
        cfg = self.cfg
        flat_z = flat_z.to(self.codebook.dtype)
        update_statistics(self, flat_z, flat_idx, counts, cfg.codebook == "ema", cfg.ema_decay)
        self.calls.add_(1)
        if self._calls_cache is None:
            self._calls_cache = int(self.calls.item())  # once after construction / loading
        else:
            self._calls_cache += 1
        if not cfg.dead_code_every or self._calls_cache % cfg.dead_code_every:
            return None
        return self._reset_dead(flat_z)

    def _reset_dead(self, flat_z: Tensor) -> Tensor:
        """Re-seed codes with usage share < threshold / vocab from random rows of ``flat_z``."""
        return reset_dead_codes(
            self, flat_z, self.cfg.dead_code_threshold, self.cfg.codebook == "ema"
        )


def _forget_calls(module: Any, incompatible_keys: Any) -> None:
    """``load_state_dict`` post-hook: the host copy of ``calls`` must be re-read."""
    module._calls_cache = None
