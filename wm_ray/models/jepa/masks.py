"""I-JEPA's mask collators over a ``(rows, cols)`` patch grid (patch indices are row-major).

:class:`MultiBlockMaskCollator` is the paper's (Assran et al. 2023, section 3): per image,
``targets`` blocks of one shape for the whole batch (a share ~ U(target_scale) of the patches,
aspect ratio ~ U(aspect)), and one square context block (share ~ U(context_scale)) from which
every target patch is removed. A placement whose context keeps fewer than ``min_keep``
patches is redrawn (``tries`` times; then the context is every non-target patch). Context
lengths differ between images; every image keeps the batch's shortest length, a random subset
of its own (the reference keeps the first indices, which favours the top rows).

:class:`RandomMaskCollator` draws a share ~ U(ratio) of the patches as one target set and
keeps the rest as the context. Both draw from a ``torch.Generator`` only, so a seed fixes them.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from wm_ray.models.jepa.config import MaskConfig, block_shape


class Masks(NamedTuple):
    """One batch's split of the patch grid (sorted int64 patch indices)."""

    context: Tensor
    """``(B, K)``: the patches the context encoder sees."""
    targets: Tensor
    """``(M, B, T)``: ``M`` target sets per image, the patches the predictor predicts."""


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + float(torch.rand((), generator=generator)) * (high - low)


def _randint(high: int, generator: torch.Generator) -> int:
    """Uniform in ``[0, high)``."""
    return int(torch.randint(high, (), generator=generator))


class MultiBlockMaskCollator:
    """The paper's multiblock masking (see the module docstring).

    Args:
        grid: ``(rows, cols)`` of patches.
        targets: target blocks per image.
        target_scale: range of each target block's share of the grid.
        aspect: range of the target blocks' height / width.
        context_scale: range of the context block's share of the grid (square).
        min_keep: fewest context patches per image.
        tries: placements drawn before the context falls back to every non-target patch.
    """

    def __init__(
        self,
        grid: tuple[int, int],
        targets: int = 4,
        target_scale: tuple[float, float] = (0.15, 0.2),
        aspect: tuple[float, float] = (0.75, 1.5),
        context_scale: tuple[float, float] = (0.85, 1.0),
        min_keep: int = 4,
        tries: int = 20,
    ) -> None:
        self.rows, self.cols = grid
        if self.rows < 1 or self.cols < 1 or targets < 1 or min_keep < 1:
            raise ValueError(
                f"need a grid, targets and min_keep >= 1: {grid}, {targets}, {min_keep}"
            )
        self.n = self.rows * self.cols
        self.targets, self.min_keep, self.tries = targets, min_keep, tries
        self.target_scale, self.aspect, self.context_scale = target_scale, aspect, context_scale

    @classmethod
    def from_config(cls, cfg: MaskConfig, grid: tuple[int, int]) -> MultiBlockMaskCollator:
        return cls(
            grid,
            cfg.targets,
            (cfg.target_scale_min, cfg.target_scale_max),
            (cfg.aspect_min, cfg.aspect_max),
            (cfg.context_scale_min, cfg.context_scale_max),
            cfg.min_keep,
        )

    def _block(self, h: int, w: int, generator: torch.Generator) -> Tensor:
        """A bool ``(rows, cols)`` grid with one ``h x w`` block at a random place."""
        top = _randint(self.rows - h + 1, generator)
        left = _randint(self.cols - w + 1, generator)
        grid = torch.zeros(self.rows, self.cols, dtype=torch.bool)
        grid[top : top + h, left : left + w] = True
        return grid

    def _one(
        self, target: tuple[int, int], context: tuple[int, int], generator: torch.Generator
    ) -> tuple[list[Tensor], Tensor]:
        """One image's target index sets and context indices."""
        for _ in range(self.tries):
            blocks = [self._block(*target, generator) for _ in range(self.targets)]
            covered = torch.stack(blocks).any(0)
            keep = self._block(*context, generator) & ~covered
            if int(keep.sum()) >= self.min_keep:
                break
        else:  # every non-target patch
            keep = ~covered
            if int(keep.sum()) < self.min_keep:
                raise RuntimeError(
                    f"the {self.targets} target blocks of {target} leave {int(keep.sum())} of "
                    f"{self.n} patches, fewer than min_keep={self.min_keep}"
                )
        return [b.flatten().nonzero()[:, 0] for b in blocks], keep.flatten().nonzero()[:, 0]

    def __call__(self, batch: int, generator: torch.Generator) -> Masks:
        """The masks of ``batch`` images."""
        target = block_shape(
            self.rows,
            self.cols,
            _uniform(*self.target_scale, generator),
            _uniform(*self.aspect, generator),
        )
        context = block_shape(self.rows, self.cols, _uniform(*self.context_scale, generator), 1.0)
        drawn = [self._one(target, context, generator) for _ in range(batch)]
        shortest = min(len(ctx) for _, ctx in drawn)
        contexts = []
        for _, ctx in drawn:
            pick = torch.randperm(len(ctx), generator=generator)[:shortest]
            contexts.append(ctx[pick].sort().values)
        targets = torch.stack([torch.stack([t[m] for t, _ in drawn]) for m in range(self.targets)])
        return Masks(torch.stack(contexts), targets)


class RandomMaskCollator:
    """A random share ~ U(ratio) of the patches are the targets, the rest the context.

    Args:
        grid: ``(rows, cols)`` of patches.
        ratio: range of the target share (one share per batch).
        min_keep: fewest context patches (the share is capped to leave them).
    """

    def __init__(
        self, grid: tuple[int, int], ratio: tuple[float, float] = (0.4, 0.6), min_keep: int = 4
    ) -> None:
        self.n = grid[0] * grid[1]
        if self.n < 2 or not 1 <= min_keep < self.n:
            raise ValueError(f"need 2+ patches and 1 <= min_keep < {self.n}: {grid}, {min_keep}")
        self.ratio, self.min_keep = ratio, min_keep

    @classmethod
    def from_config(cls, cfg: MaskConfig, grid: tuple[int, int]) -> RandomMaskCollator:
        return cls(grid, (cfg.ratio_min, cfg.ratio_max), cfg.min_keep)

    def __call__(self, batch: int, generator: torch.Generator) -> Masks:
        share = _uniform(*self.ratio, generator)
        count = min(max(1, int(self.n * share)), self.n - self.min_keep)
        order = torch.stack([torch.randperm(self.n, generator=generator) for _ in range(batch)])
        targets = order[:, :count].sort(-1).values
        return Masks(order[:, count:].sort(-1).values, targets[None])


def make_collator(
    cfg: MaskConfig, grid: tuple[int, int]
) -> MultiBlockMaskCollator | RandomMaskCollator:
    """The collator ``jepa.mask.kind`` names."""
    if cfg.kind == "random":
        return RandomMaskCollator.from_config(cfg, grid)
    return MultiBlockMaskCollator.from_config(cfg, grid)
