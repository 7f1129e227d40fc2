"""Genie's MaskGIT dynamics model (Bruce et al. 2024, section 2.1; Chang et al. 2022, MaskGIT).

Input: the tokenizer's tokens ``(B, T, N)`` (ids in ``[0, vocab)``; id ``vocab`` is the mask
token) and the latent actions ``(B, T - 1)`` (ids in ``[0, actions)``). Each token id is
embedded, and the embedding of action ``a_t`` (the transition ``t -> t + 1``) is added to every
token of frame ``t + 1``; a causal ST transformer and a Linear head give logits
``(B, T, N, vocab)``. Output frame ``t`` depends on input frames ``<= t`` and actions
``< t`` only, so the logits of frame ``t + 1`` are the prediction of the next frame from the
past and ``a_t``.

**Stop-gradient**: the latent actions arrive as integer codes (the LAM's
:meth:`~wm_ray.models.genie.latent_actions.LatentActionModel.infer`) and are embedded here, so
no gradient of the dynamics loss reaches the LAM; the paper's stop-gradient, by construction.

**Training** (:meth:`DynamicsModel.loss`): per clip a rate ``r ~ U(mask_min, mask_max)`` (the
paper: U(0.5, 1)); each token of frames ``1 .. T - 1`` is replaced by the mask token with
probability ``r`` (frame 0 is always context); cross-entropy on the masked positions only.

**Sampling** (:class:`MaskGITSampler`, :func:`generate`): a new frame starts all masked; each of
``steps`` iterations predicts every position, samples the masked ones at ``temperature``, keeps
the most confident samples and re-masks the rest, the number still masked after step ``s``
being ``floor(N * cos(pi / 2 * s / steps))`` (at least 1 before the last step, 0 after it).
Frames are generated one after the other in time, each conditioned on the frames before it (the
last ``max_frames - 1`` of them) and their actions. Every step re-runs the whole context (no
key/value cache yet).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wm_ray import metrics as M
from wm_ray.models.genie.config import DynamicsConfig
from wm_ray.models.genie.st_transformer import STTransformer

DYNAMICS = "dynamics"


def masked_cross_entropy(logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """Mean cross-entropy of ``logits (..., V)`` against ``targets (...)`` over the positions
    where ``mask (...)`` is True (0 when none is); unmasked targets play no part."""
    ce = F.cross_entropy(logits.flatten(0, -2).float(), targets.flatten(), reduction="none")
    m = mask.flatten().to(ce.dtype)
    return (ce * m).sum() / m.sum().clamp_min(1.0)


def mask_schedule(tokens: int, steps: int, schedule: str = "cosine") -> list[int]:
    """How many of ``tokens`` masked positions are still masked after each of the ``steps``
    MaskGIT steps: ``floor(tokens * gamma(s / steps))`` with ``gamma(u) = cos(pi u / 2)``
    (``cosine``) or ``1 - u`` (``linear``), at least 1 before the last step (so it takes exactly
    ``steps`` steps) and 0 after it. Non-increasing."""
    if tokens < 1 or steps < 1:
        raise ValueError(f"tokens={tokens} and steps={steps} must be >= 1")
    if schedule not in ("cosine", "linear"):
        raise ValueError(f"schedule={schedule!r} must be 'cosine' or 'linear'")
    counts = []
    for s in range(1, steps):
        u = s / steps
        gamma = math.cos(math.pi / 2 * u) if schedule == "cosine" else 1.0 - u
        counts.append(max(1, min(tokens, math.floor(tokens * gamma + 1e-9))))
    return [*counts, 0]


class DynamicsModel(nn.Module):
    """Masked-token prediction of tokens ``(B, T, N)`` given latent actions ``(B, T - 1)``.

    Args:
        cfg: the ``genie.dynamics`` section.
        vocab: the tokenizer's vocabulary ``V`` (the mask token is id ``V``).
        tokens: tokens per frame ``N``.
        actions: the latent-action vocabulary.
        max_frames: the most frames a clip may have.
    """

    def __init__(
        self, cfg: DynamicsConfig, vocab: int, tokens: int, actions: int, max_frames: int = 16
    ) -> None:
        super().__init__()
        if vocab < 1 or tokens < 1 or actions < 1 or max_frames < 2:
            raise ValueError(
                f"vocab={vocab}, tokens={tokens}, actions={actions} must be >= 1 and "
                f"max_frames={max_frames} >= 2"
            )
        self.cfg, self.vocab, self.tokens = cfg, vocab, tokens
        self.actions, self.max_frames = actions, max_frames
        self.mask_id = vocab
        width = cfg.model.width
        self.token_embed = nn.Embedding(vocab + 1, width)
        self.action_embed = nn.Embedding(actions, width)
        self.transformer = STTransformer(cfg.model, tokens, max_frames)
        self.head = nn.Linear(width, vocab)

    def _check(self, tokens: Tensor, actions: Tensor) -> None:
        if tokens.ndim != 3 or tokens.shape[2] != self.tokens:
            raise ValueError(f"expected tokens (B, T, {self.tokens}), got {tuple(tokens.shape)}")
        b, t = tokens.shape[:2]
        if not 1 <= t <= self.max_frames:
            raise ValueError(f"clip of {t} frames (must be 1..{self.max_frames})")
        if tuple(actions.shape) != (b, t - 1):
            raise ValueError(
                f"expected actions (B, T - 1) = {(b, t - 1)}, got {tuple(actions.shape)}"
            )

    def check_ids(self, tokens: Tensor, actions: Tensor) -> None:
        """Refuse token ids outside ``[0, vocab)`` and actions outside ``[0, actions)`` (one
        host sync, so the loss and :func:`generate` check, the forward pass does not)."""
        self._check(tokens, actions)
        if tokens.numel() and not 0 <= int(tokens.min()) <= int(tokens.max()) < self.vocab:
            lo, hi = int(tokens.min()), int(tokens.max())
            raise ValueError(f"token ids must be in [0, {self.vocab}), got {lo}..{hi}")
        if actions.numel() and not 0 <= int(actions.min()) <= int(actions.max()) < self.actions:
            lo, hi = int(actions.min()), int(actions.max())
            raise ValueError(f"latent actions must be in [0, {self.actions}), got {lo}..{hi}")

    def forward(self, tokens: Tensor, actions: Tensor) -> Tensor:
        """Logits ``(B, T, N, vocab)`` of tokens ``(B, T, N)`` (mask id allowed) and actions
        ``(B, T - 1)`` int64; frame ``t``'s logits use frames ``<= t`` and actions ``< t``."""
        self._check(tokens, actions)
        x = self.token_embed(tokens)
        act = self.action_embed(actions.detach())  # integer codes: no gradient to the LAM
        x = torch.cat([x[:, :1], x[:, 1:] + act[:, :, None, :]], dim=1)
        return self.head(self.transformer(x))

    def mask_rates(self, batch: int, generator: torch.Generator | None = None) -> Tensor:
        """Per-clip masking rates ``(batch,)`` ~ U(mask_min, mask_max)."""
        lo, hi = self.cfg.mask_min, self.cfg.mask_max
        device = self.head.weight.device
        u = torch.rand(batch, generator=generator, device=device)
        return lo + (hi - lo) * u

    def sample_mask(self, shape: torch.Size, generator: torch.Generator | None = None) -> Tensor:
        """A training mask ``(B, T, N)`` bool: frame 0 never masked, each token of the later
        frames masked with its clip's rate from :meth:`mask_rates`."""
        b, t, n = shape
        rates = self.mask_rates(b, generator)
        u = torch.rand(b, t, n, generator=generator, device=rates.device)
        mask = u < rates[:, None, None]
        mask[:, 0] = False
        return mask

    def loss(
        self, tokens: Tensor, actions: Tensor, mask: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Masked-token prediction on tokens ``(B, T, N)``, ``T >= 2``, and latent actions
        ``(B, T - 1)``; ``mask (B, T, N)`` bool (default :meth:`sample_mask`).

        Returns:
            The cross-entropy on the masked positions and detached 0-dim metrics:
            ``train/loss/dynamics/total``, diagnostics ``accuracy`` (on the masked positions)
            and ``mask_rate``.
        """
        if tokens.ndim != 3 or tokens.shape[1] < 2:
            raise ValueError(f"expected tokens (B, T >= 2, N), got {tuple(tokens.shape)}")
        if mask is None:
            mask = self.sample_mask(tokens.shape)
        if mask.shape != tokens.shape or mask.dtype != torch.bool:
            raise ValueError(f"expected a bool mask {tuple(tokens.shape)}, got {mask.shape}")
        self.check_ids(tokens, actions)
        logits = self(tokens.masked_fill(mask, self.mask_id), actions)
        loss = masked_cross_entropy(logits, tokens, mask)
        with torch.no_grad():
            hit = (logits.argmax(-1) == tokens) & mask
            accuracy = hit.sum() / mask.sum().clamp_min(1)
            rate = mask[:, 1:].float().mean()
        metrics = {
            M.loss(DYNAMICS): loss.detach(),
            M.diagnostic(DYNAMICS, "accuracy"): accuracy,
            M.diagnostic(DYNAMICS, "mask_rate"): rate,
        }
        return loss, metrics


@dataclass
class Sampled:
    """What :meth:`MaskGITSampler.sample` returns: the tokens ``(B, N)`` int64 (none masked)
    and ``masked (steps + 1, B)``: how many were still masked before step 1 and after each
    step (the last row is 0)."""

    tokens: Tensor
    masked: Tensor


class MaskGITSampler:
    """Iterative parallel decoding of one frame (MaskGIT).

    Args:
        steps: iterations (the paper: 25).
        temperature: the masked positions are sampled from ``softmax(logits / temperature)``
            (the paper: 2); the confidence that decides which samples are kept is the
            untempered probability of the sampled token.
        schedule: ``cosine`` or ``linear`` (:func:`mask_schedule`).
    """

    def __init__(self, steps: int = 25, temperature: float = 2.0, schedule: str = "cosine"):
        if steps < 1:
            raise ValueError(f"steps={steps} must be >= 1")
        if not temperature > 0:
            raise ValueError(f"temperature={temperature} must be > 0")
        if schedule not in ("cosine", "linear"):
            raise ValueError(f"schedule={schedule!r} must be 'cosine' or 'linear'")
        self.steps, self.temperature, self.schedule = steps, temperature, schedule

    @torch.no_grad()
    def sample(
        self,
        logits_fn: Callable[[Tensor], Tensor],
        batch: int,
        tokens: int,
        mask_id: int,
        device: torch.device | None = None,
        generator: torch.Generator | None = None,
    ) -> Sampled:
        """Decode one frame of ``tokens`` positions for ``batch`` rows; ``logits_fn`` maps the
        current frame ``(B, N)`` (``mask_id`` where masked) to logits ``(B, N, V)``."""
        frame = torch.full((batch, tokens), mask_id, dtype=torch.int64, device=device)
        masked = torch.ones(batch, tokens, dtype=torch.bool, device=device)
        trace = [masked.sum(1)]
        for keep_masked in mask_schedule(tokens, self.steps, self.schedule):
            logits = logits_fn(frame).float()
            probs = (logits / self.temperature).softmax(-1)
            drawn = torch.multinomial(probs.flatten(0, 1), 1, generator=generator)
            drawn = drawn.view(batch, tokens)
            conf = logits.log_softmax(-1).gather(-1, drawn[..., None]).squeeze(-1)
            conf = conf.masked_fill(~masked, float("inf"))  # decided tokens stay decided
            candidate = torch.where(masked, drawn, frame)
            order = conf.argsort(dim=1)  # least confident first
            still = torch.zeros_like(masked)
            still.scatter_(1, order[:, :keep_masked], True)
            frame = candidate.masked_fill(still, mask_id)
            masked = still
            trace.append(masked.sum(1))
        return Sampled(frame, torch.stack(trace))


@torch.no_grad()
def generate(
    model: DynamicsModel,
    tokens_context: Tensor,
    actions: Tensor,
    frames: int,
    sampler: MaskGITSampler | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Roll the dynamics forward ``frames`` frames from ``tokens_context (B, T0, N)``.

    ``actions (B, T0 - 1 + frames)`` int64 are the latent actions of every transition, context
    ones included (action ``t`` leads from frame ``t`` to ``t + 1``). Each new frame is decoded
    by ``sampler`` (default: the config's steps, temperature and schedule) given the frames
    before it (the last ``max_frames - 1``). Returns the context and the new frames
    ``(B, T0 + frames, N)``.
    """
    if tokens_context.ndim != 3 or tokens_context.shape[1] < 1:
        raise ValueError(f"expected tokens (B, T0 >= 1, N), got {tuple(tokens_context.shape)}")
    if frames < 0:
        raise ValueError(f"frames={frames} must be >= 0")
    b, t0, n = tokens_context.shape
    if tuple(actions.shape) != (b, t0 - 1 + frames):
        raise ValueError(
            f"expected actions (B, T0 - 1 + frames) = {(b, t0 - 1 + frames)}, got "
            f"{tuple(actions.shape)}"
        )
    model.check_ids(tokens_context, actions[:, : t0 - 1])
    if actions.numel() and not 0 <= int(actions.min()) <= int(actions.max()) < model.actions:
        raise ValueError(f"latent actions must be in [0, {model.actions})")
    cfg = model.cfg
    sampler = sampler or MaskGITSampler(cfg.steps, cfg.temperature, cfg.schedule)
    out = tokens_context.long()
    for _ in range(frames):
        t = out.shape[1]
        start = max(0, t + 1 - model.max_frames)
        past, acts = out[:, start:], actions[:, start:t]

        def logits_fn(frame: Tensor, past: Tensor = past, acts: Tensor = acts) -> Tensor:
            return model(torch.cat([past, frame[:, None]], dim=1), acts)[:, -1]

        new = sampler.sample(logits_fn, b, n, model.mask_id, out.device, generator).tokens
        out = torch.cat([out, new[:, None]], dim=1)
    return out
