"""I-JEPA's objective (Assran et al., "Self-Supervised Learning from Images with a
Joint-Embedding Predictive Architecture", CVPR 2023, section 3 and appendix C).

The target encoder reads the whole frame under ``no_grad``; its features are layer-normed
(without affine parameters) and gathered at each target set. The context encoder reads the
context patches, the predictor predicts every target set from them, and the loss is the
smooth L1 (or squared) distance to the targets, averaged over sets, patches and channels. After
the optimizer step the target encoder moves toward the context encoder by an EMA whose
momentum rises linearly from ``ema_start`` to ``ema_end`` (:func:`momentum`). The target is a
stop-gradient: no loss reaches it, and only :func:`ema_update` changes it.

``target_std`` (the mean over channels of the per-channel standard deviation of the layer-
normed target features, over every patch of the batch) is the collapse monitor: about 1 for
spread features, 0 when every patch maps to one vector.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wm_ray import metrics as M
from wm_ray.models.common.optim import Optimizer
from wm_ray.models.jepa.masks import Masks
from wm_ray.models.jepa.networks import Encoder, Predictor, gather

JEPA = "jepa"
"""The metric part of the family's losses and diagnostics."""


def momentum(step: int, steps: int, start: float, end: float) -> float:
    """The EMA momentum at update ``step``: linear from ``start`` to ``end`` over ``steps``."""
    return start + (end - start) * min(1.0, max(step, 0) / max(steps, 1))


def cosine(step: int, steps: int, start: float, end: float) -> float:
    """A cosine from ``start`` at step 0 to ``end`` at ``steps`` (then kept): the weight-decay
    schedule."""
    done = min(1.0, max(step, 0) / max(steps, 1))
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * done))


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """``target <- tau * target + (1 - tau) * online``, parameter by parameter."""
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.lerp_(o.detach(), 1.0 - tau)


@torch.no_grad()
def target_features(target: Encoder, frames: Tensor) -> Tensor:
    """Layer-normed target-encoder features ``(B, N, D)`` of whole frames (no gradient)."""
    h = target(frames)
    return F.layer_norm(h, h.shape[-1:])


def feature_std(features: Tensor) -> Tensor:
    """Mean over channels of each channel's std over all tokens of ``(..., D)`` features."""
    return features.reshape(-1, features.shape[-1]).float().std(0).mean()


def jepa_loss(
    encoder: Encoder,
    predictor: Predictor,
    targets: Tensor,
    frames: Tensor,
    masks: Masks,
    kind: str = "smooth_l1",
) -> tuple[Tensor, dict[str, Tensor]]:
    """The prediction loss of ``targets (B, N, D)`` (the layer-normed target features of
    ``frames``) at ``masks.targets`` from the context ``masks.context``; metrics too."""
    context = encoder(frames, masks.context)
    pred = predictor(context, masks.context, masks.targets)
    m, b, t = masks.targets.shape
    wanted = gather(targets.repeat(m, 1, 1), masks.targets.reshape(m * b, t)).reshape(pred.shape)
    if kind == "mse":
        loss = F.mse_loss(pred, wanted)
    else:
        loss = F.smooth_l1_loss(pred, wanted)
    metrics = {
        M.loss(JEPA): loss.detach(),
        M.diagnostic(JEPA, "target_std"): feature_std(targets.detach()),
        M.diagnostic(JEPA, "context_std"): feature_std(
            F.layer_norm(context.detach(), context.shape[-1:])
        ),
        M.diagnostic(JEPA, "pred_std"): feature_std(pred.detach()),
    }
    return loss, metrics


def jepa_step(
    encoder: Encoder,
    predictor: Predictor,
    target: Encoder,
    opt: Optimizer,
    frames: Tensor,
    masks: Masks,
    tau: float,
    weight_decay: float,
    kind: str = "smooth_l1",
) -> dict[str, Tensor]:
    """One I-JEPA update: the loss, an AdamW step of the encoder and predictor at
    ``weight_decay`` (on the decayed parameter group), then the EMA of the target at ``tau``."""
    encoder.train()
    predictor.train()
    target.eval()
    targets = target_features(target, frames)
    loss, metrics = jepa_loss(encoder, predictor, targets, frames, masks, kind)
    opt.opt.param_groups[0]["weight_decay"] = weight_decay  # the decayed group (weights)
    stats = opt.step(loss)
    ema_update(target, encoder, tau)
    metrics[M.grad_norm(JEPA)] = stats["grad_norm"]
    metrics[M.diagnostic(JEPA, "lr")] = stats["lr"]
    metrics[M.diagnostic(JEPA, "momentum")] = torch.tensor(tau)
    metrics[M.diagnostic(JEPA, "weight_decay")] = torch.tensor(weight_decay)
    return metrics


def split_decay(modules: list[nn.Module]) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(all trainable parameters, those exempt from weight decay)``: biases, norms, the mask
    token (every parameter of fewer than 2 dims, or named ``mask_token``)."""
    params, exempt = [], []
    for module in modules:
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            params.append(p)
            if p.ndim < 2 or name.endswith("mask_token"):
                exempt.append(p)
    return params, exempt
