"""The networks of the DIAMOND family: the raw denoisers ``F`` (DIAMOND's U-Net and a DiT) and
:func:`build_networks`, which builds the agent's three parts: the denoiser, the reward /
termination model (:mod:`~wm_ray.models.diamond.reward_end`) and the CNN + LSTM actor-critic
(:class:`~wm_ray.models.common.actor_critic.ActorCritic`, shared with IRIS).

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
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wm_ray.models.common.actor_critic import ActorCritic
from wm_ray.models.diamond.config import DenoiserConfig, DiamondConfig

if TYPE_CHECKING:
    from wm_ray.models.diamond.reward_end import RewardEndModel

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


def build_denoiser(cfg: DenoiserConfig, channels: int, frames: int, num_actions: int) -> nn.Module:
    """The network ``cfg.kind`` names, for ``channels``-channel frames, ``frames`` context
    frames and ``num_actions`` discrete actions."""
    from wm_ray.models.diamond.dit import DiTDenoiser

    if cfg.kind == "unet":
        return UNetDenoiser(cfg, channels, frames, num_actions)
    if cfg.kind == "dit":
        return DiTDenoiser(cfg, channels, frames, num_actions)
    raise ValueError(f"denoiser.kind={cfg.kind!r} (must be 'unet' or 'dit')")


class Networks(NamedTuple):
    """DIAMOND's three parts (:func:`build_networks`)."""

    denoiser: nn.Module | None
    """The raw network ``F`` (None for an acting-only agent)."""
    reward_end: RewardEndModel | None
    """The reward / termination model (None for an acting-only agent)."""
    actor_critic: ActorCritic


def build_networks(
    cfg: DiamondConfig, image_shape: tuple[int, int, int], actions: int, acting: bool = False
) -> Networks:
    """The parts for frames ``image_shape = (H, W, C)`` and ``actions`` discrete actions; with
    ``acting`` only the actor-critic (the policy acts on real frames)."""
    size, _, channels = image_shape
    ac = ActorCritic(channels, size, actions, cfg.ac.cnn_depth, cfg.ac.lstm)
    if acting:
        return Networks(None, None, ac)
    denoiser = build_denoiser(cfg.denoiser, channels, cfg.diffusion.context, actions)
    from wm_ray.models.diamond.reward_end import RewardEndModel

    reward_end = RewardEndModel(cfg.reward_end, channels, size, actions)
    return Networks(denoiser, reward_end, ac)
