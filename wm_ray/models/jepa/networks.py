"""I-JEPA's networks: a ViT encoder over patch tokens (the context encoder and, as its EMA copy,
the target encoder) and a narrower ViT predictor with a learned mask token.

Both carry fixed 2D sin-cos positions (the paper's), so the encoder can read any subset of the
patches (``keep``) and the predictor can place a mask token at any target patch. Blocks are the
shared pre-norm :class:`~wm_ray.models.common.attention.AttentionBlock`; weights start as the
reference's truncated normals (std 0.02) with each block's output projections rescaled by
``1 / sqrt(2 * layer)``.
"""

from __future__ import annotations

import copy
import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from wm_ray.models.common.attention import AttentionBlock
from wm_ray.models.jepa.config import JEPAConfig, ViTConfig


def sincos_2d(width: int, rows: int, cols: int) -> Tensor:
    """Fixed positions ``(rows * cols, width)``, row-major: half the channels encode the row,
    half the column, each as sines and cosines of geometric frequencies."""
    if width % 4:
        raise ValueError(f"2D sin-cos positions need a width divisible by 4, got {width}")
    quarter = width // 4
    freqs = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    row, col = torch.meshgrid(
        torch.arange(rows, dtype=torch.float64), torch.arange(cols, dtype=torch.float64),
        indexing="ij",
    )  # fmt: skip
    parts = []
    for axis in (row, col):
        angles = axis.reshape(-1, 1) * freqs
        parts += [angles.sin(), angles.cos()]
    return torch.cat(parts, 1).float()


def gather(tokens: Tensor, index: Tensor) -> Tensor:
    """``tokens (B, N, D)`` at ``index (B, K)`` -> ``(B, K, D)``."""
    return tokens.gather(1, index[..., None].expand(-1, -1, tokens.shape[-1]))


def _init(module: nn.Module, depth_scaled: nn.ModuleList) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for layer, block in enumerate(depth_scaled, 1):
        assert isinstance(block, AttentionBlock)
        block.proj.weight.data.div_(math.sqrt(2.0 * layer))
        if block.mlp is not None:
            last = block.mlp[-1]
            assert isinstance(last, nn.Linear)
            last.weight.data.div_(math.sqrt(2.0 * layer))


class Encoder(nn.Module):
    """ViT over ``patch x patch`` patches of ``(B, H, W, C)`` frames in [-1, 1].

    Args:
        cfg: width, depth, heads, MLP ratio.
        image_size: the frame side.
        channels: the frame channels.
        patch: the patch side (divides ``image_size``).
    """

    pos: Tensor

    def __init__(self, cfg: ViTConfig, image_size: int, channels: int, patch: int) -> None:
        super().__init__()
        self.patch, self.side = patch, image_size // patch
        self.tokens, self.width = self.side * self.side, cfg.width
        self.embed = nn.Linear(patch * patch * channels, cfg.width)
        self.register_buffer("pos", sincos_2d(cfg.width, self.side, self.side), persistent=False)
        self.blocks = nn.ModuleList(
            AttentionBlock(cfg.width, cfg.heads, cfg.mlp) for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.width)
        _init(self, self.blocks)

    def patchify(self, frames: Tensor) -> Tensor:
        """``(B, H, W, C)`` -> ``(B, N, p * p * C)``, row-major patches."""
        b, _, _, c = frames.shape
        p, s = self.patch, self.side
        x = frames.reshape(b, s, p, s, p, c).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(b, s * s, p * p * c)

    def forward(self, frames: Tensor, keep: Tensor | None = None) -> Tensor:
        """Features ``(B, K, width)`` of the patches ``keep (B, K)`` (all ``N`` when None)."""
        x = self.embed(self.patchify(frames)) + self.pos
        if keep is not None:
            x = gather(x, keep)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class Predictor(nn.Module):
    """From context features and the target positions, the target features.

    Context tokens are projected to the predictor's width and given their positions; each
    target patch enters as the learned mask token plus its position; after the blocks, the
    target tokens are projected back to the encoder's width.

    Args:
        cfg: the predictor's width, depth, heads, MLP ratio.
        encoder_width: the encoder's width (input and output).
        side: the patch grid's side.
    """

    pos: Tensor

    def __init__(self, cfg: ViTConfig, encoder_width: int, side: int) -> None:
        super().__init__()
        self.embed = nn.Linear(encoder_width, cfg.width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.register_buffer("pos", sincos_2d(cfg.width, side, side), persistent=False)
        self.blocks = nn.ModuleList(
            AttentionBlock(cfg.width, cfg.heads, cfg.mlp) for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.width)
        self.out = nn.Linear(cfg.width, encoder_width)
        _init(self, self.blocks)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, context: Tensor, context_index: Tensor, target_index: Tensor) -> Tensor:
        """``context (B, K, D)`` at patches ``context_index (B, K)``; predictions
        ``(M, B, T, D)`` for the target sets ``target_index (M, B, T)`` (one pass each, batched
        as ``M * B`` sequences)."""
        m, b, t = target_index.shape
        pos = self.pos.expand(b, -1, -1)
        ctx = self.embed(context) + gather(pos, context_index)
        ctx = ctx.repeat(m, 1, 1)
        targets = target_index.reshape(m * b, t)
        queries = self.mask_token + gather(pos.repeat(m, 1, 1), targets)
        x = torch.cat([ctx, queries], 1)
        for block in self.blocks:
            x = block(x)
        return self.out(self.norm(x[:, -t:])).reshape(m, b, t, -1)


class Networks(NamedTuple):
    encoder: Encoder
    predictor: Predictor
    target: Encoder


def build_networks(cfg: JEPAConfig, image_shape: tuple[int, int, int]) -> Networks:
    """The context encoder, the predictor and the target encoder (a copy of the encoder that
    no gradient reaches: its parameters do not require gradients)."""
    side, channels = image_shape[0], image_shape[2]
    encoder = Encoder(cfg.encoder, side, channels, cfg.patch)
    predictor = Predictor(cfg.predictor, cfg.encoder.width, encoder.side)
    target = copy.deepcopy(encoder).requires_grad_(False)
    return Networks(encoder, predictor, target)
