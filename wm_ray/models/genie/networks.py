"""Building Genie's three networks from the ``genie`` section and the frame shape."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from wm_ray.models.genie.config import GenieConfig
from wm_ray.models.genie.dynamics import DynamicsModel
from wm_ray.models.genie.latent_actions import LatentActionModel
from wm_ray.models.genie.tokenizer import VideoTokenizer


class Networks(NamedTuple):
    tokenizer: VideoTokenizer
    lam: LatentActionModel
    dynamics: DynamicsModel


def build_networks(cfg: GenieConfig, image_shape: tuple[int, int, int]) -> Networks:
    """The tokenizer, the latent action model and the dynamics for ``(H, W, C)`` frames."""
    side, channels = image_shape[0], image_shape[2]
    tokenizer = VideoTokenizer(cfg.tokenizer, side, channels, cfg.frames)
    lam = LatentActionModel(cfg.lam, side, channels, cfg.frames)
    dynamics = DynamicsModel(
        cfg.dynamics, cfg.tokenizer.vocab, tokenizer.tokens, cfg.lam.vocab, cfg.frames
    )
    return Networks(tokenizer, lam, dynamics)


class ActionLabels(nn.Module):
    """How often each latent action co-occurred with each true env action in training data
    (discrete action spaces): a decayed count matrix ``(latent vocab, env actions)``, saved
    with the agent. ``wm-ray play`` names each latent action by its most frequent env action.

    Args:
        latent: the latent-action vocabulary.
        actions: the env's action count (0: no labels are kept, e.g. continuous actions).
        decay: per-update decay of the old counts, so the table follows the LAM as it learns.
    """

    counts: Tensor

    def __init__(self, latent: int, actions: int, decay: float = 0.999) -> None:
        super().__init__()
        self.decay = decay
        self.register_buffer("counts", torch.zeros(latent, max(actions, 0)))

    @torch.no_grad()
    def update(self, latent: Tensor, actions: Tensor) -> None:
        """Count pairs of latent actions and env actions (both int64, same shape)."""
        if not self.counts.shape[1]:
            return
        pairs = latent.reshape(-1) * self.counts.shape[1] + actions.reshape(-1)
        fresh = torch.bincount(pairs, minlength=self.counts.numel()).view_as(self.counts)
        self.counts.mul_(self.decay).add_(fresh.to(self.counts.dtype))

    def table(self) -> list[tuple[int | None, float]]:
        """Per latent action: ``(its most frequent env action, that action's share)``;
        ``(None, 0.0)`` for one never seen (or without labels)."""
        counts = self.counts.detach().cpu()
        out: list[tuple[int | None, float]] = []
        for row in counts:
            total = float(row.sum())
            if not row.numel() or total <= 0:
                out.append((None, 0.0))
                continue
            best = int(row.argmax())
            out.append((best, float(row[best]) / total))
        return out
