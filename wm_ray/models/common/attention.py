"""A pre-norm transformer block with an additive attention mask, shared by the transformer parts
of the families (the RSSM's transformer backbone, the ViT encoder).

Queries, keys and values come from one Linear; attention is ``scaled_dot_product_attention``
with an optional additive ``bias (B, heads, Nq, Nk)`` (``-inf`` hides a key; ALiBi distances or
any other bias add to the scores); then a GELU MLP. Both sub-layers are residual. With
``mlp=0`` the block is attention only (Genie's ST blocks: spatial attention, then temporal
attention + MLP).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AttentionBlock(nn.Module):
    """Pre-norm attention + MLP block.

    Args:
        dim: width (divisible by ``heads``).
        heads: attention heads.
        mlp: hidden width of the MLP in multiples of ``dim``; 0: no MLP sub-layer.
    """

    def __init__(self, dim: int, heads: int, mlp: int = 4) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} must be divisible by heads={heads}")
        if mlp < 0:
            raise ValueError(f"mlp={mlp} must be >= 0 (0: no MLP sub-layer)")
        self.heads, self.head_dim = heads, dim // heads
        # Registration order (norm1, norm2, qkv, proj, mlp) fixes the parameter order that
        # optimizer checkpoints rely on: keep it.
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim) if mlp else None
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.mlp = (
            nn.Sequential(nn.Linear(dim, mlp * dim), nn.GELU(), nn.Linear(mlp * dim, dim))
            if mlp
            else None
        )

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values ``(..., N, dim)`` of ``x (..., N, dim)``."""
        q, k, v = self.qkv(self.norm1(x)).chunk(3, -1)
        return q, k, v

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, self.head_dim)).transpose(-3, -2)

    def attend(
        self,
        x: torch.Tensor,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The block's output for ``x (B, Nq, dim)`` given its queries ``q`` and the keys and
        values ``(B, Nk, dim)`` it attends over (its own, or a cache's with them)."""
        mask = None if bias is None else bias.to(q.dtype)
        out = F.scaled_dot_product_attention(
            self._split(q), self._split(k), self._split(v), attn_mask=mask
        )
        x = x + self.proj(out.transpose(-3, -2).flatten(-2))
        if self.mlp is None or self.norm2 is None:
            return x
        return x + self.mlp(self.norm2(x))

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """Self-attention over ``x (B, N, dim)``."""
        return self.attend(x, *self.project(x), bias)
