"""The spatio-temporal (ST) transformer of Genie (Bruce et al. 2024, section 2 and figure 4).

Tokens ``(B, T, N, D)``: ``T`` frames of ``N`` tokens each. Every :class:`STBlock` applies,
each as a pre-norm residual sub-layer,

1. spatial attention: the ``N`` tokens of one frame attend to each other (no mask);
2. temporal attention: the ``T`` tokens at one spatial position attend over time, causally and
   including the frame itself (frame ``t`` sees frames ``0..t``; the seed's "0..t-1" would
   leave frame 0 with no key at all);
3. an MLP (one per block, after both attentions, as in the paper).

Both attentions are :class:`~wm_ray.models.common.attention.AttentionBlock`: the spatial one
without its MLP, the temporal one with it and an additive ``-inf`` bias above the diagonal. The
memory cost is ``O(T N^2 + N T^2)`` rather than the ``O((T N)^2)`` of full attention, and
because no sub-layer mixes frames except the causal temporal attention, output frame ``t``
depends on input frames ``<= t`` only. :class:`STTransformer` adds learned spatial and temporal
position embeddings, stacks the blocks and ends with a LayerNorm.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from wm_ray.models.common.attention import AttentionBlock
from wm_ray.models.genie.config import STConfig


def causal_bias(frames: int, device: torch.device | None = None) -> Tensor:
    """The additive temporal mask ``(T, T)``: 0 where key frame <= query frame, else ``-inf``
    (the diagonal is visible: a frame attends to itself)."""
    hidden = torch.ones(frames, frames, dtype=torch.bool, device=device).triu(1)
    return torch.zeros(frames, frames, device=device).masked_fill(hidden, float("-inf"))


class STBlock(nn.Module):
    """Spatial attention, causal temporal attention, MLP; each pre-norm and residual.

    Args:
        dim: token width (divisible by ``heads``).
        heads: heads of both attentions.
        mlp: MLP hidden width in multiples of ``dim``.
    """

    def __init__(self, dim: int, heads: int, mlp: int = 4) -> None:
        super().__init__()
        if mlp < 1:
            raise ValueError(f"mlp={mlp} must be >= 1 (the block's MLP hidden width / dim)")
        self.spatial = AttentionBlock(dim, heads, mlp=0)
        self.temporal = AttentionBlock(dim, heads, mlp=mlp)

    def forward(self, x: Tensor, bias: Tensor | None = None) -> Tensor:
        """``x (B, T, N, D) -> (B, T, N, D)``; ``bias (T, T)`` masks the temporal attention
        (:func:`causal_bias`; None: every frame sees every frame)."""
        b, t, n, d = x.shape
        x = self.spatial(x.reshape(b * t, n, d)).reshape(b, t, n, d)
        xt = x.transpose(1, 2).reshape(b * n, t, d)
        xt = self.temporal(xt, bias)
        return xt.reshape(b, n, t, d).transpose(1, 2)


class STTransformer(nn.Module):
    """Position embeddings, ``cfg.layers`` :class:`STBlock` s and a final LayerNorm.

    Args:
        cfg: width, layers, heads and MLP ratio.
        tokens: tokens per frame ``N`` (the spatial positions).
        max_frames: the most frames ``T`` a clip may have (the temporal positions).
        causal: mask the temporal attention so frame ``t`` sees frames ``0..t`` (Genie's
            tokenizer, LAM and dynamics all are causal); False lets every frame see every frame.
    """

    causal_mask: Tensor

    def __init__(self, cfg: STConfig, tokens: int, max_frames: int, causal: bool = True) -> None:
        super().__init__()
        if cfg.heads < 1 or cfg.width % cfg.heads:
            raise ValueError(f"width={cfg.width} must be divisible by heads={cfg.heads}")
        if tokens < 1 or max_frames < 1:
            raise ValueError(f"tokens={tokens} and max_frames={max_frames} must be >= 1")
        self.tokens, self.max_frames, self.causal = tokens, max_frames, causal
        self.spatial_pos = nn.Parameter(torch.randn(tokens, cfg.width) * 0.02)
        self.temporal_pos = nn.Parameter(torch.randn(max_frames, cfg.width) * 0.02)
        self.blocks = nn.ModuleList(
            STBlock(cfg.width, cfg.heads, cfg.mlp) for _ in range(cfg.layers)
        )
        self.norm = nn.LayerNorm(cfg.width)
        self.register_buffer("causal_mask", causal_bias(max_frames), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """Tokens ``(B, T, N, D) -> (B, T, N, D)`` with ``T <= max_frames``, ``N = tokens``."""
        if x.ndim != 4 or x.shape[2] != self.tokens or not 1 <= x.shape[1] <= self.max_frames:
            raise ValueError(
                f"expected tokens (B, T <= {self.max_frames}, {self.tokens}, D), got "
                f"{tuple(x.shape)}"
            )
        t = x.shape[1]
        x = x + self.spatial_pos + self.temporal_pos[:t, None, :]
        bias = self.causal_mask[:t, :t].to(x.dtype) if self.causal else None
        for block in self.blocks:
            x = block(x, bias)
        return self.norm(x)
