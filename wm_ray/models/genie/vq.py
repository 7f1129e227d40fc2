"""Vector quantization for Genie's tokenizer and latent action model (van den Oord et al. 2017).

:class:`VectorQuantizer` maps vectors ``(..., D)`` to their nearest codebook entries (``vocab``
of them) with a straight-through gradient to the input. Its loss is ``beta * ||z - sg(e)||^2``
(commitment) plus, in ``codebook=grad`` mode, the codebook loss ``||sg(z) - e||^2``; in
``codebook=ema`` mode the codebook takes no gradient and moves to the EMA of the vectors
assigned to each code (Laplace-smoothed cluster sizes, the paper's appendix). Both modes keep an
EMA of each code's usage and every ``dead_code_every`` training calls re-seed the codes whose
usage share fell below ``dead_code_threshold / vocab`` with random input vectors of the batch.
Under a ``torch.distributed`` group the statistics are averaged over ranks and re-seeded rows
broadcast from rank 0, so every rank keeps the same codebook.

The steps are :mod:`wm_ray.models.common.vq`'s, shared with IRIS's tokenizer (which keeps the
codebook state on itself, so its checkpoint keys are unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wm_ray.models.common.vq import (
    nearest_codes,
    new_codebook,
    reset_dead_codes,
    update_statistics,
)


@dataclass
class Quantized:
    """What :meth:`VectorQuantizer.forward` returns.

    Attributes:
        z_q: ``(..., D)`` the codebook vectors, straight-through: forward values are the codes,
            the gradient passes to the input ``z`` unchanged.
        indices: ``(...)`` int64 code of each vector.
        loss: scalar ``beta * commitment + codebook``.
        metrics: detached 0-dim ``commitment``, ``codebook``, ``usage`` (share of codes used by
            this batch), ``perplexity`` and, on the training calls that check, ``dead_reset``.
    """

    z_q: Tensor
    indices: Tensor
    loss: Tensor
    metrics: dict[str, Tensor]


class VectorQuantizer(nn.Module):
    """A codebook of ``vocab`` vectors of size ``dim``.

    Args:
        vocab: codebook entries ``V``.
        dim: code size ``D``.
        codebook: ``grad`` (trained by the codebook loss) or ``ema`` (EMA k-means updates).
        beta: commitment weight.
        ema_decay: decay of the usage EMA (and, in ``ema`` mode, of the cluster statistics).
        dead_code_every: training calls between dead-code checks (0: never).
        dead_code_threshold: dead when usage share < threshold / vocab.

    Buffers: ``usage (V,)``, ``calls ()`` and in ``ema`` mode ``ema_cluster_size (V,)`` and
    ``ema_embed_sum (V, D)``.
    """

    codebook: nn.Parameter
    usage: Tensor
    calls: Tensor
    ema_cluster_size: Tensor
    ema_embed_sum: Tensor

    def __init__(
        self,
        vocab: int,
        dim: int,
        codebook: str = "grad",
        beta: float = 0.25,
        ema_decay: float = 0.99,
        dead_code_every: int = 200,
        dead_code_threshold: float = 1e-3,
    ) -> None:
        super().__init__()
        if codebook not in ("grad", "ema"):
            raise ValueError(f"codebook={codebook!r} must be 'grad' or 'ema'")
        if vocab < 1 or dim < 1:
            raise ValueError(f"vocab={vocab} and dim={dim} must be >= 1")
        if not 0 <= ema_decay < 1:
            raise ValueError(f"ema_decay={ema_decay} must be in [0, 1)")
        self.vocab, self.dim, self.mode, self.beta = vocab, dim, codebook, beta
        self.ema_decay = ema_decay
        self.dead_code_every, self.dead_code_threshold = dead_code_every, dead_code_threshold
        init = new_codebook(vocab, dim)
        self.codebook = nn.Parameter(init, requires_grad=codebook == "grad")
        self.register_buffer("usage", torch.zeros(vocab))
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))
        if codebook == "ema":
            # Consistent start: sum / size = the initial codebook, so unassigned codes stay put.
            self.register_buffer("ema_cluster_size", torch.ones(vocab))
            self.register_buffer("ema_embed_sum", init.clone())
        self._calls_host: int | None = None  # host copy of ``calls`` (read once, then counted)
        self.register_load_state_dict_post_hook(_forget_calls)

    @torch.no_grad()
    def nearest(self, z: Tensor) -> Tensor:
        """Vectors ``(..., D)`` -> ``(...)`` int64 indices of their nearest codes."""
        if z.shape[-1] != self.dim:
            raise ValueError(f"expected vectors (..., {self.dim}), got {tuple(z.shape)}")
        return nearest_codes(z.reshape(-1, self.dim), self.codebook).reshape(z.shape[:-1])

    def lookup(self, indices: Tensor) -> Tensor:
        """Codes ``(...)`` int64 -> codebook vectors ``(..., D)``."""
        return F.embedding(indices, self.codebook)

    def forward(self, z: Tensor) -> Quantized:
        """Quantize ``z (..., D)``; in training mode also update the codebook statistics."""
        indices = self.nearest(z)
        e = self.lookup(indices).to(z.dtype)
        commitment = (z - e.detach()).pow(2).mean()
        book = (z.detach() - e).pow(2).mean() if self.mode == "grad" else z.new_zeros(())
        flat_idx = indices.reshape(-1)
        ones = torch.ones(flat_idx.shape, device=z.device)  # float32 counts under autocast
        counts = torch.zeros(self.vocab, device=z.device).index_add_(0, flat_idx, ones)
        probs = counts / max(flat_idx.numel(), 1)
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum()
        metrics = {
            "commitment": commitment,
            "codebook": book,
            "usage": (counts > 0).float().mean(),
            "perplexity": entropy.exp(),
        }
        if self.training and flat_idx.numel():
            reset = self.update(z.detach().reshape(-1, self.dim), flat_idx, counts)
            if reset is not None:
                metrics["dead_reset"] = reset
        z_q = z + (e - z).detach()
        loss = self.beta * commitment + book
        return Quantized(z_q, indices, loss, {k: v.detach() for k, v in metrics.items()})

    @torch.no_grad()
    def update(self, flat_z: Tensor, flat_idx: Tensor, counts: Tensor) -> Tensor | None:
        """EMA codebook / usage / dead-code updates from one batch: vectors ``flat_z (M, D)``,
        their codes ``flat_idx (M,)`` and the code counts ``(V,)``; returns the number of codes
        re-seeded on the calls that check for dead codes, else None."""
        flat_z = flat_z.to(self.codebook.dtype)
        ema = self.mode == "ema"
        update_statistics(self, flat_z, flat_idx, counts, ema, self.ema_decay)
        self.calls.add_(1)
        if self._calls_host is None:  # once after construction / loading: no per-call sync
            self._calls_host = int(self.calls.item())
        else:
            self._calls_host += 1
        if not self.dead_code_every or self._calls_host % self.dead_code_every:
            return None
        return reset_dead_codes(self, flat_z, self.dead_code_threshold, ema)


def _forget_calls(module: Any, incompatible_keys: Any) -> None:
    """``load_state_dict`` post-hook: the host copy of ``calls`` must be re-read."""
    module._calls_host = None
