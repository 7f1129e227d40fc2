"""Losses of PlaNet: Hafner, Lillicrap, Fischer, Villegas, Ha, Lee, Davidson, "Learning Latent
Dynamics for Planning from Pixels", ICML 2019 (arXiv:1811.04551), sections 3-4.

The variational bound (eq. 3), per step of a replayed ``(B, T)`` batch, negated and averaged::

    L = - ln p(o_t | s_t) - ln p(r_t | s_t) + max(F, KL(q(s_t | h_t, o_t) || p(s_t | h_t)))

with unit-variance Gaussian likelihoods (``-ln p = 0.5 * squared error`` summed over the
observation dims, constants dropped) of the 5-bit image, ``symlog(vector)`` and the reward, and
free nats ``F = 3``: a KL term below ``F`` nats is constant (no gradient), so the model is free
to use that much information per step.

Latent overshooting (eq. 7, optional): from every posterior state ``s_t`` the prior alone
predicts ``s_{t+d}`` open loop for ``d = 2 .. D``; each multi-step prior is pulled toward the
posterior of its step with the gradient stopped at the posterior (sec. 4)::

    L_over = mean_{d = 2..D} mean_t max(F, KL(sg(q(s_{t+d} | ...)) || p(s_{t+d} | s_t, a_{t:t+d})))

Predictions that would cross an episode start (``is_first``) or leave the sequence are masked.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from wm_ray import metrics as M
from wm_ray.models.common.data import SeqBatch
from wm_ray.models.common.noise import Source
from wm_ray.models.planet.config import LossConfig
from wm_ray.models.planet.networks import State, WorldModel
from wm_ray.models.rssm.latents import Latent, latent_kl

Metrics = dict[str, torch.Tensor]


def free_nats_kl(
    post: torch.Tensor,
    prior: torch.Tensor,
    dist: Callable[[torch.Tensor], Latent],
    free_nats: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``max(free_nats, KL(q || p))`` per step, and the unclipped KL (detached).

    Args:
        post: posterior stats ``(..., K)``.
        prior: prior stats ``(..., K)``.
        dist: stats -> latent distribution (``RSSM.dist``).
        free_nats: nats below which the term is constant.

    Returns:
        Two tensors of shape ``(...)``; gradients reach both distributions where the KL is above
        ``free_nats``, and neither below it.
    """
    kl = latent_kl(dist(post), dist(prior))
    return kl.clamp(min=free_nats), kl.detach()


def overshooting_kl(
    wm: WorldModel,
    posts: State,
    post_stats: torch.Tensor,
    prev_action: torch.Tensor,
    is_first: torch.Tensor,
    distance: int,
    free_nats: float,
    gen: Source = None,
) -> torch.Tensor:
    """The latent overshooting term ``L_over`` of the module docstring (a scalar).

    Args:
        posts: posterior states ``(B, T, ...)`` (the open-loop starts; with gradient).
        post_stats: posterior stats ``(B, T, K)`` (targets; their gradient is stopped).
        prev_action: ``(B, T, A)`` (``prev_action[:, t]`` leads into step t).
        is_first: ``(B, T)`` bool.
        distance: ``D``; terms for ``d = 2 .. D`` (none if ``D < 2``).
        free_nats: as in :func:`free_nats_kl`.
        gen: random source of the prior samples.
    """
    batch, steps = is_first.shape
    if distance < 2 or steps < 3:
        return post_stats.new_zeros(())
    pad = distance
    action = torch.cat([prev_action, prev_action.new_zeros(batch, pad, prev_action.shape[-1])], 1)
    first = torch.cat([is_first, is_first.new_ones(batch, pad)], 1)
    target = torch.cat([post_stats, post_stats.new_zeros(batch, pad, post_stats.shape[-1])], 1)
    target = target.detach()
    state = posts.map(lambda x: x.flatten(0, 1))
    valid = torch.ones(batch, steps, dtype=torch.bool, device=is_first.device)
    terms = []
    for d in range(1, distance + 1):
        valid = valid & ~first[:, d : d + steps]
        state, prior_stats = wm.rssm.img_step(
            state, action[:, d : d + steps].reshape(batch * steps, -1), gen
        )
        if d < 2:
            continue
        if not bool(valid.any()):
            break
        kl, _ = free_nats_kl(
            target[:, d : d + steps], prior_stats.reshape(batch, steps, -1), wm.rssm.dist, free_nats
        )
        weight = valid.float()
        terms.append((kl * weight).sum() / weight.sum())
    if not terms:
        return post_stats.new_zeros(())
    return torch.stack(terms).mean()


def world_model_loss(
    wm: WorldModel, data: SeqBatch, cfg: LossConfig, bits_noise: bool = True, gen: Source = None
) -> tuple[torch.Tensor, Metrics]:
    """The negative ELBO (plus overshooting) of a batch, and metrics.

    Args:
        wm: the world model.
        data: a replayed batch.
        cfg: the ``planet.loss`` section.
        bits_noise: dequantization noise on the reduced images.
        gen: random source (dequantization noise, latent samples).

    Returns:
        The scalar loss and 0-dim metrics named as in :mod:`wm_ray.metrics`
        (``train/loss/world_model/<term>``, ``train/world_model/kl``, ...).
    """
    inputs = wm.encoder.prepare(data.obs, bits_noise, gen)
    embed = wm.encoder(inputs)
    posts, post_stats, prior_stats = wm.rssm.observe(
        embed, data.prev_action, data.is_first, gen=gen
    )
    feat = wm.rssm.feat(posts)
    kl, raw_kl = free_nats_kl(post_stats, prior_stats, wm.rssm.dist, cfg.free_nats)
    terms = {"kl": kl}
    scales = {"kl": cfg.kl_scale}
    recon = wm.decoder(feat)
    if "image" in recon:
        terms["image"] = 0.5 * (recon["image"] - inputs["image"]).square().sum((-3, -2, -1))
        scales["image"] = cfg.image_scale
    if "vector" in recon:
        terms["vector"] = 0.5 * (recon["vector"] - inputs["vector"]).square().sum(-1)
        scales["vector"] = cfg.vector_scale
    terms["reward"] = 0.5 * (wm.reward(feat).squeeze(-1) - data.reward).square()
    scales["reward"] = cfg.reward_scale
    means = {name: term.mean() for name, term in terms.items()}
    if cfg.overshooting >= 2:
        means["overshooting"] = overshooting_kl(
            wm,
            posts,
            post_stats,
            data.prev_action,
            data.is_first,
            cfg.overshooting,
            cfg.free_nats,
            gen,
        )
        scales["overshooting"] = cfg.overshooting_scale
    loss = torch.stack([scales[name] * value for name, value in means.items()]).sum()
    metrics = {M.loss(M.WORLD_MODEL, name): value.detach() for name, value in means.items()}
    metrics[M.loss(M.WORLD_MODEL)] = loss.detach()
    metrics[M.diagnostic(M.WORLD_MODEL, "kl")] = raw_kl.mean()
    prior_entropy = wm.rssm.dist(prior_stats.detach()).entropy().mean()
    metrics[M.diagnostic(M.WORLD_MODEL, "prior_entropy")] = prior_entropy
    post_entropy = wm.rssm.dist(post_stats.detach()).entropy().mean()
    metrics[M.diagnostic(M.WORLD_MODEL, "post_entropy")] = post_entropy
    return loss, metrics
