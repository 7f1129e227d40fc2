"""Losses of IRIS: Micheli, Alonso, Fleuret, "Transformers are Sample-Efficient World Models",
ICLR 2023, sections 2.1-2.3 and appendix.

- :func:`tokenizer_loss`: the discrete autoencoder's straight-through VQ loss (reconstruction,
  commitment, codebook, optional perceptual), plus the codebook statistics of a training call.
- :func:`world_model_loss`: next-token cross-entropy of the transformer over the interleaved
  ``[z^1 .. z^K, a]`` blocks, and the reward and termination losses at the action tokens.
- The actor-critic's loss in imagination is the shared
  :func:`wm_ray.models.common.imagination.reinforce_loss`.

Metric names follow :mod:`wm_ray.metrics` (``train/loss/<part>/<term>``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from wm_ray import metrics as M
from wm_ray.models.iris.tokenizer import Tokenizer
from wm_ray.models.iris.transformer import WorldModel

IGNORE = -100
TOKENIZER = "tokenizer"


def tokenizer_loss(tok: Tokenizer, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """The tokenizer loss on frames ``x (N, C, H, W)`` in [0, 1], straight-through VQ.

    In training mode this also updates the codebook statistics (EMA codebook in ``ema`` mode,
    code usage, call count) and periodically re-seeds dead codes (``Tokenizer.update_codebook``).
    No host syncs (except one read of ``calls`` after construction or ``load_state_dict``).

    Returns:
        The scalar loss and detached 0-dim metrics: the terms ``l1, l2, commitment, codebook``
        (and ``perceptual`` when enabled), the code ``usage`` and ``perplexity``, and
        ``dead_reset`` on the calls that check for dead codes.
    """
    cfg = tok.cfg
    z_e = tok.encode(x)
    z_q, indices = tok.quantize(z_e)
    z_st = z_e + (z_q - z_e).detach()
    x_hat = tok._decode_z(z_st)
    err = x - x_hat
    terms = {"l1": err.abs().mean(), "l2": err.pow(2).mean()}
    terms["commitment"] = (z_e - z_q.detach()).pow(2).mean()
    if cfg.codebook == "grad":
        terms["codebook"] = (z_e.detach() - z_q).pow(2).mean()
    else:
        terms["codebook"] = z_e.new_zeros(())
    total = (
        cfg.l1 * terms["l1"]
        + cfg.l2 * terms["l2"]
        + cfg.beta * terms["commitment"]
        + terms["codebook"]
    )
    if tok.perceptual_loss is not None:
        terms["perceptual"] = tok.perceptual_loss(x, x_hat).mean()
        total = total + cfg.perceptual * terms["perceptual"]
    metrics = {M.loss(TOKENIZER, name): value for name, value in terms.items()}
    metrics[M.loss(TOKENIZER)] = total
    flat_idx = indices.reshape(-1)
    # index_add_, not bincount: bincount reads the max index back to the host on CUDA.
    dev = z_e.device
    ones = torch.ones(flat_idx.shape, device=dev)  # float32 counts even under autocast
    counts = torch.zeros(tok.vocab, device=dev).index_add_(0, flat_idx, ones)
    probs = counts / flat_idx.numel()
    metrics[M.diagnostic(TOKENIZER, "usage")] = (counts > 0).float().mean()
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum()
    metrics[M.diagnostic(TOKENIZER, "perplexity")] = entropy.exp()
    if tok.training:
        flat_z = z_e.detach().permute(0, 2, 3, 1).reshape(-1, z_e.shape[1])
        reset = tok.update_codebook(flat_z, flat_idx, counts)
        if reset is not None:
            metrics[M.diagnostic(TOKENIZER, "dead_reset")] = reset
    return total, {k: v.detach() for k, v in metrics.items()}


def world_model_loss(
    wm: WorldModel,
    tokens: torch.Tensor,
    actions: torch.Tensor,
    is_first: torch.Tensor,
    reward: torch.Tensor,
    is_terminal: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Next-token cross-entropy plus reward and termination losses on replayed sequences.

    Args:
        tokens: ``(B, T, K)`` frame tokens; actions ``(B, T)`` model actions (0-based);
            is_first, reward, is_terminal ``(B, T)`` as stored (``wm_ray.types``).

    The transition ``t -> t+1`` is learned only where step ``t + 1`` continues the episode of
    step ``t`` (not ``is_first``); the first token of an episode's first frame has no target.
    """
    batch, steps, k = tokens.shape
    block = k + 1
    out = wm(wm.interleave(tokens, actions), mask=wm.training_mask(is_first))
    ids = torch.cat([tokens, torch.full_like(tokens[:, :, :1], IGNORE)], 2)
    ids[:, :, 0] = ids[:, :, 0].masked_fill(is_first, IGNORE)
    flat = ids.flatten(1)
    targets = torch.cat([flat[:, 1:], torch.full_like(flat[:, :1], IGNORE)], 1)
    logits = out.obs_logits.flatten(0, 1).float()
    obs_loss = F.cross_entropy(logits, targets.flatten(), ignore_index=IGNORE)
    with torch.no_grad():
        valid_tok = targets.flatten() != IGNORE
        correct = (logits.argmax(-1) == targets.flatten()) & valid_tok
        accuracy = correct.sum() / valid_tok.sum().clamp(min=1)
    at_action = slice(None), slice(None, -1), k
    reward_logits = out.reward_logits.view(batch, steps, block, -1)[at_action]
    end_logits = out.end_logits.view(batch, steps, block)[at_action]
    valid = (~is_first[:, 1:]).float()
    norm = valid.sum().clamp(min=1.0)
    reward_loss = (wm.reward_loss(reward_logits.float(), reward[:, 1:]) * valid).sum() / norm
    end_target = is_terminal[:, 1:].float()
    end_bce = F.binary_cross_entropy_with_logits(end_logits.float(), end_target, reduction="none")
    end_loss = (end_bce * valid).sum() / norm
    loss = obs_loss + reward_loss + end_loss
    metrics = {
        M.loss(M.WORLD_MODEL): loss.detach(),
        M.loss(M.WORLD_MODEL, "obs"): obs_loss.detach(),
        M.loss(M.WORLD_MODEL, "reward"): reward_loss.detach(),
        M.loss(M.WORLD_MODEL, "end"): end_loss.detach(),
        M.diagnostic(M.WORLD_MODEL, "obs_accuracy"): accuracy,
    }
    return loss, metrics
