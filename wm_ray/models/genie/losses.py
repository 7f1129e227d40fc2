"""Genie's training steps (the three parts' losses are their modules' ``loss`` methods).

:func:`tokenizer_step` trains the video tokenizer on a clip. :func:`lam_dynamics_step` trains
the latent action model on its own reconstruction loss and the dynamics on masked-token
prediction over the tokenizer's tokens and the LAM's codes, which enter as integer ids under
``no_grad``: the dynamics loss never reaches the LAM (the paper's stop-gradient).
"""

from __future__ import annotations

import torch
from torch import Tensor

from wm_ray import metrics as M
from wm_ray.models.common.optim import Optimizer
from wm_ray.models.genie.dynamics import DYNAMICS, DynamicsModel
from wm_ray.models.genie.latent_actions import LAM, LatentActionModel
from wm_ray.models.genie.tokenizer import TOKENIZER, VideoTokenizer


def tokenizer_step(tokenizer: VideoTokenizer, opt: Optimizer, clip: Tensor) -> dict[str, Tensor]:
    """One tokenizer update on ``clip (B, T, H, W, C)``; its metrics."""
    tokenizer.train()
    loss, metrics = tokenizer.loss(clip)
    stats = opt.step(loss)
    metrics[M.grad_norm(TOKENIZER)] = stats["grad_norm"]
    return metrics


def lam_dynamics_step(
    tokenizer: VideoTokenizer,
    lam: LatentActionModel,
    dynamics: DynamicsModel,
    lam_opt: Optimizer,
    dyn_opt: Optimizer,
    clip: Tensor,
    generator: torch.Generator,
) -> tuple[Tensor, dict[str, Tensor]]:
    """One update of the LAM and the dynamics on ``clip``; returns the latent actions the
    dynamics was given ``(B, T - 1)`` and the metrics."""
    tokenizer.eval()
    tokens = tokenizer.tokenize(clip)
    lam.train()
    loss, metrics = lam.loss(clip)
    stats = lam_opt.step(loss)
    metrics[M.grad_norm(LAM)] = stats["grad_norm"]
    actions = lam.infer(clip)  # int64 under no_grad
    dynamics.train()
    mask = dynamics.sample_mask(tokens.shape, generator)
    loss, more = dynamics.loss(tokens, actions, mask)
    stats = dyn_opt.step(loss)
    metrics.update(more)
    metrics[M.grad_norm(DYNAMICS)] = stats["grad_norm"]
    return actions, metrics
