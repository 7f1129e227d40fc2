"""Vector-quantization steps shared by the families with a codebook (IRIS's tokenizer, Genie's
tokenizer and latent action model); van den Oord et al. 2017.

The functions work on any module that holds the codebook state as its own parameter and
buffers (:class:`CodebookHolder`): ``codebook (V, D)``, ``usage (V,)`` (EMA of each code's share
of the assignments) and, for an EMA codebook, ``ema_cluster_size (V,)`` and
``ema_embed_sum (V, D)``. Keeping the state on the holder keeps each family's checkpoint keys.

- :func:`nearest_codes`: the nearest code of each vector (no gradient).
- :func:`update_statistics`: the usage EMA and, in EMA mode, the EMA k-means codebook update
  (Laplace-smoothed cluster sizes, the paper's appendix).
- :func:`reset_dead_codes`: re-seed codes whose usage share fell under ``threshold / V`` with
  random vectors of the batch.

Under a ``torch.distributed`` group the statistics are averaged over ranks and re-seeded rows
broadcast from rank 0, so every rank keeps the same codebook.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from wm_ray.models.common.distributed import world_size

LAPLACE_EPS = 1e-5


class CodebookHolder(Protocol):
    """A module holding codebook state (the EMA buffers only in EMA mode)."""

    @property
    def vocab(self) -> int: ...

    @property
    def codebook(self) -> Tensor: ...

    @property
    def usage(self) -> Tensor: ...

    @property
    def ema_cluster_size(self) -> Tensor: ...

    @property
    def ema_embed_sum(self) -> Tensor: ...


def new_codebook(vocab: int, dim: int) -> Tensor:
    """A ``(vocab, dim)`` codebook drawn from ``U(-1 / vocab, 1 / vocab)``."""
    return torch.empty(vocab, dim).uniform_(-1.0 / vocab, 1.0 / vocab)


@torch.no_grad()
def nearest_codes(flat: Tensor, book: Tensor) -> Tensor:
    """Vectors ``flat (M, D)`` -> ``(M,)`` int64 indices of their nearest rows of ``book``."""
    flat = flat.detach().to(book.dtype)
    book = book.detach()
    dist = flat.pow(2).sum(1, keepdim=True) - 2.0 * flat @ book.t() + book.pow(2).sum(1)[None]
    return dist.argmin(dim=1)


@torch.no_grad()
def update_statistics(
    m: CodebookHolder,
    flat_z: Tensor,
    flat_idx: Tensor,
    counts: Tensor,
    ema: bool,
    decay: float,
) -> None:
    """One batch's statistics: vectors ``flat_z (M, D)`` (in the codebook's dtype), their
    codes ``flat_idx (M,)`` and the code counts ``(V,)``. Updates ``usage`` and, when ``ema``,
    the EMA buffers and the codebook."""
    size, v = world_size(), m.vocab
    share = counts.to(m.codebook.dtype) / flat_idx.numel()
    if ema:
        sums = torch.zeros_like(m.codebook).index_add_(0, flat_idx, flat_z)
        stats = torch.cat([share, counts.to(sums.dtype), sums.reshape(-1)])
        if size > 1:
            torch.distributed.all_reduce(stats)
            stats.div_(size)
        share, counts, sums = stats[:v], stats[v : 2 * v], stats[2 * v :].view_as(sums)
        m.ema_cluster_size.mul_(decay).add_(counts, alpha=1.0 - decay)
        m.ema_embed_sum.mul_(decay).add_(sums, alpha=1.0 - decay)
        n = m.ema_cluster_size.sum()
        smoothed = (m.ema_cluster_size + LAPLACE_EPS) / (n + v * LAPLACE_EPS) * n
        m.codebook.copy_(m.ema_embed_sum / smoothed.unsqueeze(1))
    elif size > 1:
        torch.distributed.all_reduce(share)
        share.div_(size)
    m.usage.mul_(decay).add_(share, alpha=1.0 - decay)


@torch.no_grad()
def reset_dead_codes(m: CodebookHolder, flat_z: Tensor, threshold: float, ema: bool) -> Tensor:
    """Re-seed codes with usage share < ``threshold / V`` from random rows of ``flat_z (M, D)``;
    returns how many (a 0-dim tensor, no host sync). A revived code's usage restarts at the
    average share (a grace period)."""
    v, rows_in = m.vocab, flat_z.shape[0]
    total = m.usage.sum()
    dead = m.usage < (threshold / v) * total
    if rows_in >= v:
        pick = torch.randperm(rows_in, device=flat_z.device)[:v]
    else:
        pick = torch.randint(0, rows_in, (v,), device=flat_z.device)
    rows = flat_z[pick].contiguous()
    if world_size() > 1:
        torch.distributed.broadcast(rows, src=0)
    mask = dead.unsqueeze(1)
    m.codebook.copy_(torch.where(mask, rows, m.codebook))
    if ema:
        m.ema_cluster_size.copy_(torch.where(dead, 1.0, m.ema_cluster_size))
        m.ema_embed_sum.copy_(torch.where(mask, rows, m.ema_embed_sum))
    m.usage.copy_(torch.where(dead, total / v, m.usage))
    return dead.sum().to(flat_z.dtype)
