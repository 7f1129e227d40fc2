"""Losses of DIAMOND: Alonso et al., "Diffusion for World Modeling: Visual Details Matter in
Atari", NeurIPS 2024, sections 2-3 and appendix.

- :func:`denoiser_loss`: the schedule's denoising loss (EDM's preconditioned MSE, or DDPM's
  noise MSE) of next frames drawn from the replayed sequences, conditioned on the ``K`` frames
  and actions before each (padded across episode starts, masked where the next frame starts a
  new episode).
- :func:`reward_end_loss`: cross-entropy of the reward's sign class and the Bernoulli
  termination's binary cross-entropy on the replayed transitions, after a burn-in.
- The actor-critic's loss in imagination is the shared
  :func:`wm_ray.models.common.imagination.reinforce_loss` (REINFORCE with a value baseline,
  lambda-returns, an entropy bonus), over :func:`~wm_ray.models.common.imagination.rollout`.

Frames are ``(B, T, C, H, W)`` in [-1, 1], actions ``(B, T)`` 0-based, ``reward[:, t]`` the
reward that arrived with step ``t``. Metric names follow :mod:`wm_ray.metrics`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wm_ray import metrics as M
from wm_ray.models.common.imagination import reinforce_loss, rollout
from wm_ray.models.common.noise import Source
from wm_ray.models.diamond.diffusion import Condition, Schedule, stack_context
from wm_ray.models.diamond.imagination import context_window
from wm_ray.models.diamond.reward_end import REWARD_CLASSES, RewardEndModel, reward_class

DENOISER = "denoiser"
REWARD_END = "reward_end"

__all__ = [
    "DENOISER",
    "REWARD_END",
    "denoiser_loss",
    "reinforce_loss",
    "reward_end_loss",
    "rollout",
]


def denoiser_loss(
    schedule: Schedule,
    net: nn.Module,
    frames: Tensor,
    actions: Tensor,
    is_first: Tensor,
    context: int,
    targets: int,
    gen: torch.Generator | None,
    noise_gen: Source = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The denoising loss on ``targets`` next frames per sequence.

    Each target index ``j`` is drawn uniformly from ``context .. T - 1`` (with ``gen``); the
    frame ``o_j`` is denoised given ``o_{j-K} .. o_{j-1}`` and ``a_{j-K} .. a_{j-1}``
    (:func:`~wm_ray.models.diamond.imagination.context_window`); targets that start an
    episode (``is_first[:, j]``) are masked out. ``noise_gen`` feeds the schedule.
    """
    b, t = frames.shape[:2]
    if t < context + 1:
        raise ValueError(f"sequences of {t} frames cannot hold {context} context frames + 1")
    rows = torch.arange(b, device=frames.device).repeat(targets)
    j = torch.randint(context, t, (b * targets,), generator=gen, device=frames.device)
    ctx, act = context_window(frames[rows], actions[rows], is_first[rows], j - 1, context)
    x0 = frames[rows, j]
    mask = ~is_first[rows, j]
    loss = schedule.loss(net, x0, Condition(stack_context(ctx), act), noise_gen, mask=mask)
    metrics = {
        M.loss(DENOISER): loss.detach(),
        M.diagnostic(DENOISER, "valid"): mask.float().mean(),
    }
    return loss, metrics


def reward_end_loss(
    model: RewardEndModel,
    frames: Tensor,
    actions: Tensor,
    reward: Tensor,
    is_first: Tensor,
    is_terminal: Tensor,
    burn_in: int,
    class_balance: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Reward-sign cross-entropy plus termination BCE on the transitions ``t -> t + 1``.

    The LSTM runs over all ``T - 1`` transitions from a zero state, reset at episode starts;
    the first ``burn_in`` only warm it up (no loss, no gradient from later steps). A
    transition counts where ``o_{t+1}`` continues the episode of ``o_t``; its targets are
    ``sign(reward[:, t + 1])`` and ``is_terminal[:, t + 1]``. ``class_balance``: each counted
    transition's cross-entropy is weighted by ``n / (k n_c)`` (``n`` counted transitions, ``n_c``
    of them in its class, ``k`` classes present in the batch), so every class present weighs
    the same.
    """
    b = frames.shape[0]
    state = model.initial(b, frames.device)
    reward_logits, end_logits, _ = model(
        frames[:, :-1], actions[:, :-1], frames[:, 1:], is_first[:, :-1], state, burn_in
    )
    valid = (~is_first[:, 1:]).float()
    valid[:, :burn_in] = 0.0
    norm = valid.sum().clamp(min=1.0)
    target = reward_class(reward[:, 1:])
    ce = F.cross_entropy(reward_logits.flatten(0, 1).float(), target.flatten(), reduction="none")
    weight = valid * _class_weights(target, valid) if class_balance else valid
    reward_loss = (ce.view_as(valid) * weight).sum() / norm
    end_target = is_terminal[:, 1:].float()
    bce = F.binary_cross_entropy_with_logits(end_logits.float(), end_target, reduction="none")
    end_loss = (bce * valid).sum() / norm
    loss = reward_loss + end_loss
    with torch.no_grad():
        hit = (reward_logits.argmax(-1) == target).float()
        accuracy = (hit * valid).sum() / norm
    metrics = {
        M.loss(REWARD_END): loss.detach(),
        M.loss(REWARD_END, "reward"): reward_loss.detach(),
        M.loss(REWARD_END, "end"): end_loss.detach(),
        M.diagnostic(REWARD_END, "reward_accuracy"): accuracy,
    }
    return loss, metrics


def _class_weights(target: Tensor, valid: Tensor) -> Tensor:
    """``n / (k n_c)`` for each transition of class ``c`` among the ``valid`` ones."""
    counts = torch.zeros(REWARD_CLASSES, device=target.device).index_add_(
        0, target.flatten(), valid.flatten()
    )
    present = counts > 0
    per_class = torch.where(present, valid.sum() / (present.sum() * counts.clamp(min=1)), 0.0)
    return per_class[target]
