"""The DiT denoiser of the DIAMOND family (Peebles & Xie 2023): described in
:mod:`wm_ray.models.diamond.networks`'s docstring (``denoiser.kind: dit``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wm_ray.models.diamond.config import DenoiserConfig
from wm_ray.models.diamond.networks import Conditioning, _zero, check_inputs


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


__all__ = ["DiTBlock", "DiTDenoiser", "sincos_2d"]
