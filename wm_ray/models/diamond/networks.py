"""The raw denoiser networks ``F`` of the DIAMOND family: DIAMOND's U-Net and a DiT.

Both have the same call signature (:data:`wm_ray.models.diamond.diffusion.Net`)::

    F(x (B, C, H, W), c_noise (B,), context (B, K*C, H, W), actions (B, K) int) -> (B, C, H, W)

with frames in model space (about [-1, 1], scaled by the schedule), channels-first. The output
is what the schedule asks of ``F`` (EDM: the preconditioned target; DDPM: the noise); the
networks know nothing of the schedule.

**Conditioning vector** (both networks, :class:`Conditioning`): random Fourier features of
``c_noise`` — ``[cos(2 pi w c), sin(2 pi w c)]`` with fixed ``w ~ N(0, I)`` of ``cond_dim / 2``
frequencies (a buffer, saved with the weights) — plus the ``K`` action embeddings of
``cond_dim / K`` dims each, concatenated (oldest first), through Linear -> SiLU -> Linear:
``cond (B, cond_dim)``.

**U-Net** (:class:`UNetDenoiser`, DIAMOND's). Input: ``[context, x]`` concatenated on channels,
``(K + 1) C`` of them, 3x3 conv to ``channels[0]``. Down: per level ``res_blocks`` residual
blocks, a stride-2 3x3 conv between levels; middle: two residual blocks with self-attention
(``mid_attention``); up: per level ``res_blocks + 1`` residual blocks, each taking the previous
output concatenated with the matching down-path activation (the level's input and each of its
blocks' outputs, latest first, as in ADM), nearest x2 upsampling + 3x3 conv between levels;
GroupNorm, SiLU and a zero-initialized 3x3 conv to ``C`` (so ``F = 0`` at init). Residual
block: ``skip(h) + conv2(silu(AdaGN2(conv1(silu(AdaGN1(h, cond))), cond)))``, where
``AdaGN(h, cond) = GroupNorm(h) * (1 + scale) + shift`` with ``(scale, shift)`` a linear map of
``cond`` (noise level and actions enter every block that way); ``conv2`` starts at zero.
GroupNorm uses groups of about 32 channels (at least one group).

**DiT** (:class:`DiTDenoiser`, Peebles & Xie 2023). ``[context, x]`` on channels is cut into
``patch x patch`` patches, linearly embedded to ``width`` (a strided conv) plus fixed 2-D sin-cos
positions; ``depth`` adaLN-Zero blocks: with ``(shift, scale, gate) x 2`` a linear map of
``silu(cond)`` (zero-initialized, so every block starts as the identity),
``h += gate1 * attn(LN(h) (1 + scale1) + shift1)`` and ``h += gate2 * mlp(LN(h) (1 + scale2)
+ shift2)``; a final adaLN (shift, scale) LayerNorm and a zero-initialized linear map to
``patch^2 C`` values per token, un-patchified to ``(B, C, H, W)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wm_ray.models.diamond.config import DenoiserConfig

_GROUP_SIZE = 32
_ATTN_HEAD_DIM = 8


def _groups(channels: int) -> int:
    """Groups of GroupNorm: the largest divisor of ``channels`` up to ``channels // 32``."""
    g = max(1, channels // _GROUP_SIZE)
    while channels % g:
        g -= 1
    return g


def _zero(layer: nn.Linear | nn.Conv2d) -> None:
    """Zero a layer's weight and bias (an output layer that starts silent)."""
    nn.init.zeros_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def check_inputs(
    x: Tensor,
    c_noise: Tensor,
    context: Tensor,
    actions: Tensor,
    channels: int,
    frames: int,
) -> None:
    """Refuse inputs that are not ``x (B, C, H, W)``, ``c_noise (B,)``,
    ``context (B, K*C, H, W)``, ``actions (B, K)`` integer, naming what was given."""
    k = frames
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"x must be (B, {channels}, H, W), got shape {tuple(x.shape)}")
    b, _, h, w = x.shape
    if tuple(c_noise.shape) != (b,):
        raise ValueError(f"c_noise must be ({b},) (one per frame), got {tuple(c_noise.shape)}")
    if tuple(context.shape) != (b, k * channels, h, w):
        raise ValueError(
            f"context must be ({b}, {k * channels}, {h}, {w}) ({k} frames of {channels} "
            f"channels stacked on channels), got {tuple(context.shape)}"
        )
    if tuple(actions.shape) != (b, k):
        raise ValueError(f"actions must be ({b}, {k}) (the last {k}), got {tuple(actions.shape)}")
    if actions.dtype.is_floating_point or actions.dtype.is_complex or actions.dtype == torch.bool:
        raise ValueError(f"actions must be integer action indices, got dtype {actions.dtype}")


class FourierFeatures(nn.Module):
    """``c (B,) -> [cos(2 pi w c), sin(2 pi w c)] (B, dim)`` with fixed ``w ~ N(0, I)``."""

    weight: Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"Fourier feature dim {dim} must be even")
        self.register_buffer("weight", torch.randn(dim // 2))

    def forward(self, c: Tensor) -> Tensor:
        f = 2 * math.pi * c.unsqueeze(-1) * self.weight.to(c.dtype)
        return torch.cat([f.cos(), f.sin()], dim=-1)


class Conditioning(nn.Module):
    """``(c_noise (B,), actions (B, K)) -> cond (B, cond_dim)``: Fourier features of the noise
    level plus the flattened action embeddings, through Linear -> SiLU -> Linear."""

    def __init__(self, cond_dim: int, frames: int, num_actions: int) -> None:
        super().__init__()
        if cond_dim % frames:
            raise ValueError(
                f"cond_dim={cond_dim} must be a multiple of the context frames {frames}"
            )
        self.noise = FourierFeatures(cond_dim)
        self.action = nn.Embedding(num_actions, cond_dim // frames)
        self.proj = nn.Sequential(
            nn.Linear(cond_dim, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim)
        )

    def forward(self, c_noise: Tensor, actions: Tensor) -> Tensor:
        a = self.action(actions.long()).flatten(1)
        return self.proj(self.noise(c_noise) + a.to(c_noise.dtype))


# ---------------------------------------------------------------------------------- U-Net


class AdaGroupNorm(nn.Module):
    """``GroupNorm(h) * (1 + scale) + shift`` with ``(scale, shift) = Linear(cond)``."""

    def __init__(self, channels: int, cond_dim: int) -> None:
        super().__init__()
        self.groups = _groups(channels)
        self.linear = nn.Linear(cond_dim, 2 * channels)

    def forward(self, h: Tensor, cond: Tensor) -> Tensor:
        scale, shift = self.linear(cond)[:, :, None, None].chunk(2, dim=1)
        return F.group_norm(h, self.groups, eps=1e-5) * (1 + scale) + shift


class SelfAttention2d(nn.Module):
    """Multi-head self-attention over the ``H * W`` positions (heads of 8 channels),
    ``h + proj(attn(GroupNorm(h)))`` with ``proj`` starting at zero."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.heads = max(1, channels // _ATTN_HEAD_DIM)
        while channels % self.heads:
            self.heads -= 1
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        _zero(self.proj)

    def forward(self, h: Tensor) -> Tensor:
        b, c, hh, ww = h.shape
        qkv = self.qkv(self.norm(h)).reshape(b, 3, self.heads, c // self.heads, hh * ww)
        q, k, v = qkv.transpose(-1, -2).unbind(1)  # (B, heads, HW, c / heads)
        out = F.scaled_dot_product_attention(q, k, v)
        return h + self.proj(out.transpose(-1, -2).reshape(b, c, hh, ww))


class ResBlock(nn.Module):
    """``skip(h) + conv2(silu(AdaGN2(conv1(silu(AdaGN1(h))))))``, optional attention after."""

    def __init__(self, in_ch: int, out_ch: int, cond_dim: int, attention: bool = False) -> None:
        super().__init__()
        self.norm1 = AdaGroupNorm(in_ch, cond_dim)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = AdaGroupNorm(out_ch, cond_dim)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        self.attn = SelfAttention2d(out_ch) if attention else nn.Identity()

    def forward(self, h: Tensor, cond: Tensor) -> Tensor:
        r = self.conv1(F.silu(self.norm1(h, cond)))
        r = self.conv2(F.silu(self.norm2(r, cond)))
        return self.attn(self.skip(h) + r)


class UNetDenoiser(nn.Module):
    """DIAMOND's U-Net ``F`` (module docstring).

    Args:
        cfg: the denoiser config (``channels``, ``res_blocks``, ``cond_dim``,
            ``mid_attention``).
        channels: frame channels ``C``.
        frames: context frames ``K``.
        num_actions: size of the discrete action space.

    The frame side must be a multiple of ``2^(len(cfg.channels) - 1)``.
    """

    def __init__(self, cfg: DenoiserConfig, channels: int, frames: int, num_actions: int) -> None:
        super().__init__()
        if not cfg.channels or cfg.res_blocks < 1:
            raise ValueError(
                f"the U-Net needs one or more levels and res_blocks >= 1, got channels="
                f"{cfg.channels}, res_blocks={cfg.res_blocks}"
            )
        self.channels, self.frames, self.levels = channels, frames, len(cfg.channels)
        cd = cfg.cond_dim
        self.cond = Conditioning(cd, frames, num_actions)
        widths = cfg.channels
        self.conv_in = nn.Conv2d((frames + 1) * channels, widths[0], 3, padding=1)

        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips = [widths[0]]  # widths of the saved activations, in order
        ch = widths[0]
        for i, width in enumerate(widths):
            blocks = nn.ModuleList()
            for _ in range(cfg.res_blocks):
                blocks.append(ResBlock(ch, width, cd))
                ch = width
                skips.append(ch)
            self.down.append(blocks)
            if i < len(widths) - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.mid = nn.ModuleList(
            [ResBlock(ch, ch, cd, cfg.mid_attention), ResBlock(ch, ch, cd, cfg.mid_attention)]
        )
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, width in reversed(list(enumerate(widths))):
            blocks = nn.ModuleList()
            for _ in range(cfg.res_blocks + 1):
                blocks.append(ResBlock(ch + skips.pop(), width, cd))
                ch = width
            self.up.append(blocks)
            if i > 0:
                self.upsample.append(nn.Conv2d(ch, ch, 3, padding=1))
        assert not skips
        self.norm_out = nn.GroupNorm(_groups(ch), ch)
        self.conv_out = nn.Conv2d(ch, channels, 3, padding=1)
        _zero(self.conv_out)

    def forward(self, x: Tensor, c_noise: Tensor, context: Tensor, actions: Tensor) -> Tensor:
        """``(B, C, H, W), (B,), (B, K*C, H, W), (B, K) -> (B, C, H, W)``."""
        check_inputs(x, c_noise, context, actions, self.channels, self.frames)
        factor = 2 ** (self.levels - 1)
        if x.shape[-2] % factor or x.shape[-1] % factor:
            raise ValueError(
                f"the U-Net's {self.levels} levels need H and W multiples of {factor}, got "
                f"{tuple(x.shape[-2:])}"
            )
        cond = self.cond(c_noise, actions)
        h = self.conv_in(torch.cat([context, x], dim=1))
        saved = [h]
        for i, blocks in enumerate(self.down):
            assert isinstance(blocks, nn.ModuleList)
            for block in blocks:
                h = block(h, cond)
                saved.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
                saved.append(h)
        for block in self.mid:
            h = block(h, cond)
        for i, blocks in enumerate(self.up):
            assert isinstance(blocks, nn.ModuleList)
            for block in blocks:
                h = block(torch.cat([h, saved.pop()], dim=1), cond)
            if i < len(self.upsample):
                h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


# ------------------------------------------------------------------------------------ DiT


def sincos_2d(height: int, width: int, dim: int, device: torch.device | None = None) -> Tensor:
    """Fixed 2-D sin-cos positions ``(height * width, dim)``, row-major: the first ``dim / 2``
    features encode the row, the rest the column, each as ``[sin(p w_i), cos(p w_i)]`` with
    ``w_i = 10000^(-i / (dim / 4))``, ``i < dim / 4`` (``dim`` a multiple of 4)."""
    if dim % 4:
        raise ValueError(f"sin-cos position dim {dim} must be a multiple of 4")
    omega = 10000.0 ** (-torch.arange(dim // 4, dtype=torch.float64, device=device) / (dim // 4))

    def one(pos: Tensor) -> Tensor:
        f = pos.double()[:, None] * omega
        return torch.cat([f.sin(), f.cos()], dim=1)

    rows = torch.arange(height, device=device).repeat_interleave(width)
    cols = torch.arange(width, device=device).repeat(height)
    return torch.cat([one(rows), one(cols)], dim=1).float()


def _modulate(h: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """``h (B, N, D) * (1 + scale) + shift`` with ``shift, scale (B, D)``."""
    return h * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    """An adaLN-Zero transformer block conditioned on ``cond (B, cond_dim)``."""

    def __init__(
        self, width: int, heads: int, cond_dim: int, mlp_ratio: float, dropout: float
    ) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden),
            nn.GELU(approximate="tanh"),
            nn.Dropout(dropout),
            nn.Linear(hidden, width),
        )
        self.ada = nn.Linear(cond_dim, 6 * width)
        _zero(self.ada)

    def forward(self, h: Tensor, cond: Tensor) -> Tensor:
        """``(B, N, width), (B, cond_dim) -> (B, N, width)``."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(F.silu(cond)).chunk(6, dim=1)
        b, n, d = h.shape
        qkv = self.qkv(_modulate(self.norm1(h), shift1, scale1))
        q, k, v = qkv.view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        att = F.scaled_dot_product_attention(q, k, v, dropout_p=p).transpose(1, 2).reshape(b, n, d)
        h = h + gate1[:, None] * self.proj(att)
        return h + gate2[:, None] * self.mlp(_modulate(self.norm2(h), shift2, scale2))


class DiTDenoiser(nn.Module):
    """A diffusion-transformer ``F`` with the U-Net's signature (module docstring).

    Args:
        cfg: the denoiser config (``patch``, ``width``, ``depth``, ``heads``, ``mlp_ratio``,
            ``dropout``, ``cond_dim``).
        channels: frame channels ``C``.
        frames: context frames ``K``.
        num_actions: size of the discrete action space.

    The frame sides must be multiples of ``patch``.
    """

    def __init__(self, cfg: DenoiserConfig, channels: int, frames: int, num_actions: int) -> None:
        super().__init__()
        if cfg.width % cfg.heads:
            raise ValueError(f"DiT heads={cfg.heads} must divide width={cfg.width}")
        if cfg.width % 4:
            raise ValueError(f"DiT width={cfg.width} must be a multiple of 4 (2-D positions)")
        self.channels, self.frames, self.patch, self.width = channels, frames, cfg.patch, cfg.width
        self.cond = Conditioning(cfg.cond_dim, frames, num_actions)
        self.embed = nn.Conv2d((frames + 1) * channels, cfg.width, cfg.patch, stride=cfg.patch)
        self.blocks = nn.ModuleList(
            DiTBlock(cfg.width, cfg.heads, cfg.cond_dim, cfg.mlp_ratio, cfg.dropout)
            for _ in range(cfg.depth)
        )
        self.norm_out = nn.LayerNorm(cfg.width, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Linear(cfg.cond_dim, 2 * cfg.width)
        self.out = nn.Linear(cfg.width, cfg.patch * cfg.patch * channels)
        self._init()

    def _init(self) -> None:
        """Xavier-uniform linear layers and patch embedding, zero biases; the adaLN maps and
        the output layer at zero (adaLN-Zero)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        w = self.embed.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        if self.embed.bias is not None:
            nn.init.zeros_(self.embed.bias)
        for block in self.blocks:
            assert isinstance(block, DiTBlock)
            _zero(block.ada)
        _zero(self.ada_out)
        _zero(self.out)

    def forward(self, x: Tensor, c_noise: Tensor, context: Tensor, actions: Tensor) -> Tensor:
        """``(B, C, H, W), (B,), (B, K*C, H, W), (B, K) -> (B, C, H, W)``."""
        check_inputs(x, c_noise, context, actions, self.channels, self.frames)
        b, c, height, width = x.shape
        p = self.patch
        if height % p or width % p:
            raise ValueError(f"the DiT's patch {p} must divide H and W, got {tuple(x.shape[-2:])}")
        gh, gw = height // p, width // p
        cond = self.cond(c_noise, actions)
        h = self.embed(torch.cat([context, x], dim=1)).flatten(2).transpose(1, 2)  # (B, N, D)
        h = h + sincos_2d(gh, gw, self.width, h.device).to(h.dtype)
        for block in self.blocks:
            h = block(h, cond)
        shift, scale = self.ada_out(F.silu(cond)).chunk(2, dim=1)
        h = self.out(_modulate(self.norm_out(h), shift, scale))  # (B, N, p * p * C)
        h = h.view(b, gh, gw, p, p, c).permute(0, 5, 1, 3, 2, 4)
        return h.reshape(b, c, height, width)


def build_denoiser(
    cfg: DenoiserConfig, channels: int, frames: int, num_actions: int
) -> UNetDenoiser | DiTDenoiser:
    """The network ``cfg.kind`` names, for ``channels``-channel frames, ``frames`` context
    frames and ``num_actions`` discrete actions."""
    if cfg.kind == "unet":
        return UNetDenoiser(cfg, channels, frames, num_actions)
    if cfg.kind == "dit":
        return DiTDenoiser(cfg, channels, frames, num_actions)
    raise ValueError(f"denoiser.kind={cfg.kind!r} (must be 'unet' or 'dit')")
