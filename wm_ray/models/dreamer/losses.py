"""Losses of DreamerV3: Hafner, Pasukonis, Ba, Lillicrap, "Mastering Diverse Domains through
World Models", arXiv:2301.04104 (2023), sections 2-3 and appendix.

World model (eq. 5), averaged over the ``(B, T)`` steps of a replayed batch::

    L = L_pred + 0.5 * max(1, KL(sg(q) || p)) + 0.1 * max(1, KL(q || sg(p)))
    L_pred = image SSE + symlog(vector) SSE + two-hot reward CE + continue BCE

Actor-critic in imagination (eqs. 7-11): from every posterior state ``s_0`` of the batch
(detached), the actor and the prior roll out ``H = 15`` steps ``s_0 .. s_H``. Reward and continue
are predicted from the state they arrive with, so ``r_t, c_{t+1}`` of the transition
``s_t -> s_{t+1}`` come from ``s_{t+1}``; ``c_0 = 1 - is_terminal`` of the replayed start. With
``R_t`` the lambda-returns (:func:`~wm_ray.models.common.lambda_returns`, bootstrapped with the
critic), ``S = max(1, P95(R) - P5(R))`` (EMA) and trajectory weights
``w_t = prod_{j <= t} (gamma c_j) / gamma`` (0 after an imagined terminal)::

    actor  = -sum_t w_t [ sg((R_t - v(s_t)) / S) log pi(a_t | s_t) + eta H[pi(. | s_t)] ]
             (REINFORCE; with dynamics backprop the first term is (R_t - sg(v(s_t))) / S)
    critic = -sum_t w_t [ log p_v(sg(R_t) | s_t) + log p_v(sg(v_slow(s_t)) | s_t) ]

All sums are means over ``(N, H)`` here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import nn

from wm_ray import metrics as M
from wm_ray.models.common import (
    BoundedNormal,
    Features,
    OneHotCategorical,
    OneHotInput,
    ReturnNormalizer,
    TwoHotDist,
    lambda_returns,
    preprocess_image,
    symlog,
)
from wm_ray.models.common.data import SeqBatch
from wm_ray.models.common.noise import Source
from wm_ray.models.dreamer.config import ActorCriticConfig, LossConfig
from wm_ray.models.dreamer.networks import Actor, Critic, State, WorldModel
from wm_ray.models.rssm.latents import Latent, latent_kl
from wm_ray.models.rssm.rssm import stack_states

Metrics = dict[str, torch.Tensor]


def kl_losses(
    post: torch.Tensor,
    prior: torch.Tensor,
    dist: Callable[[torch.Tensor], Latent],
    free_bits: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """KL balancing with free bits, per step.

    Args:
        post: posterior stats ``(...)``.
        prior: prior stats ``(...)``.
        dist: builds a latent distribution from stats (``RSSM.dist``).
        free_bits: nats below which a term is constant (clipped, zero gradient).

    Returns:
        ``dyn = max(free_bits, KL(sg(q) || p))`` (gradient to the prior only),
        ``rep = max(free_bits, KL(q || sg(p)))`` (gradient to the posterior only) and the
        unclipped ``KL(q || p)`` (detached), each of shape ``(...)`` without the stats axis.
    """
    dyn = latent_kl(dist(post.detach()), dist(prior))
    rep = latent_kl(dist(post), dist(prior.detach()))
    return dyn.clamp(min=free_bits), rep.clamp(min=free_bits), dyn.detach()


def world_model_loss(
    wm: WorldModel, data: SeqBatch, cfg: LossConfig, gen: Source = None
) -> tuple[torch.Tensor, Metrics, State]:
    """The world-model loss of a batch.

    Returns:
        The scalar loss, metrics (0-dim tensors named as in :mod:`wm_ray.metrics`: the term
        means ``train/loss/world_model/<term>``, the KL and the latent entropies) and
        the posterior states ``(B, T, ...)`` (with gradient; detach them to start imagination).
    """
    embed = wm.encoder(data.obs)
    posts, post_stats, prior_stats = wm.rssm.observe(
        embed, data.prev_action, data.is_first, gen=gen
    )
    feat = wm.rssm.features(posts)
    dyn, rep, kl = kl_losses(post_stats, prior_stats, wm.rssm.dist, cfg.free_bits)
    terms = {"dyn": dyn, "rep": rep}
    scales = {"dyn": cfg.dyn_scale, "rep": cfg.rep_scale}
    recon = wm.decoder(feat)
    if "image" in recon:
        target = preprocess_image(data.obs["image"])
        terms["image"] = (recon["image"] - target).square().sum((-3, -2, -1))
        scales["image"] = cfg.image_scale
    if "vector" in recon:
        target = symlog(data.obs["vector"].float())
        terms["vector"] = (recon["vector"] - target).square().sum(-1)
        scales["vector"] = cfg.vector_scale
    terms["reward"] = -wm.reward_dist(feat).log_prob(data.reward)
    cont = (~data.is_terminal).float()
    logits = wm.cont_logits(feat)
    terms["cont"] = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, cont, reduction="none"
    )
    scales.update(reward=cfg.reward_scale, cont=cfg.cont_scale)
    means = {name: term.mean() for name, term in terms.items()}
    loss = torch.stack([scales[name] * value for name, value in means.items()]).sum()
    metrics = {M.loss(M.WORLD_MODEL, name): value.detach() for name, value in means.items()}
    metrics[M.diagnostic(M.WORLD_MODEL, "kl")] = kl.mean()
    prior_entropy = wm.rssm.dist(prior_stats.detach()).entropy().mean()
    metrics[M.diagnostic(M.WORLD_MODEL, "prior_entropy")] = prior_entropy
    post_entropy = wm.rssm.dist(post_stats.detach()).entropy().mean()
    metrics[M.diagnostic(M.WORLD_MODEL, "post_entropy")] = post_entropy
    return loss, metrics, posts


def frozen(module: nn.Module) -> Callable[..., Any]:
    """``module`` with its parameters detached: gradients reach its inputs, never its weights."""
    params = {name: p.detach() for name, p in module.named_parameters()}
    return lambda *args: torch.func.functional_call(module, params, args)


def model_action(action: torch.Tensor, discrete: bool) -> torch.Tensor:
    """The action as the RSSM reads it: one-hot, or ``a / max(1, |a|)`` (sg on the divisor)."""
    if discrete:
        return action
    return action / action.detach().abs().clamp(min=1.0)


class Imagined(NamedTuple):
    """An imagined trajectory of ``N`` starts and ``H`` steps.

    Attributes:
        feat: ``(N, H + 1, F)`` model states ``s_0 .. s_H`` (a ``OneHotInput`` for categorical
            latents: ``RSSM.features``).
        action: ``(N, H, A)`` actions ``a_0 .. a_{H-1}`` (raw samples).
        reward: ``(N, H)`` predicted rewards of ``s_t -> s_{t+1}`` (from ``s_{t+1}``).
        cont: ``(N, H + 1)`` continue flags: ``c_0`` from the data, then predicted.
        weight: ``(N, H + 1)`` detached ``prod_{j <= t} (gamma c_j) / gamma``.
        policy: ``(N, H, P)`` raw actor outputs at ``s_0 .. s_{H-1}``, always with gradient to
            the actor's parameters (computed on detached states; reused by the actor loss).
    """

    feat: Features
    action: torch.Tensor
    reward: torch.Tensor
    cont: torch.Tensor
    weight: torch.Tensor
    policy: torch.Tensor


def imagine(
    wm: WorldModel,
    actor: Actor,
    start: State,
    start_cont: torch.Tensor,
    cfg: ActorCriticConfig,
    gen: Source = None,
) -> Imagined:
    """Roll the actor and the prior out for ``cfg.horizon`` steps from ``start (N, ...)``.

    The actor reads detached states; gradients flow through the sampled actions into the
    dynamics, rewards and values (used by dynamics backprop; wrap in ``torch.no_grad`` else:
    the actor outputs keep their gradient either way).
    """
    rssm = wm.rssm
    state = start
    states = [state]
    actions, outs = [], []
    for _ in range(cfg.horizon):
        with torch.enable_grad():
            outs.append(actor.net(rssm.features(state.map(torch.Tensor.detach))))
        action = actor.dist(outs[-1]).sample(gen)
        actions.append(action)
        state, _ = rssm.img_step(state, model_action(action, actor.discrete), gen)
        states.append(state)
    feat = rssm.features(stack_states(states))
    after = feat.map(lambda x: x[:, 1:]) if isinstance(feat, OneHotInput) else feat[:, 1:]
    reward = wm.reward_dist(after).mean()
    logits = wm.cont_logits(after)
    pred_cont = (logits > 0).float() if cfg.imag_cont == "mode" else torch.sigmoid(logits)
    cont = torch.cat([start_cont[:, None].to(pred_cont), pred_cont], 1)
    weight = torch.cumprod(cfg.gamma * cont.detach(), 1) / cfg.gamma
    with torch.enable_grad():
        policy = torch.stack(outs, 1)
    return Imagined(feat, torch.stack(actions, 1), reward, cont, weight, policy)


class ACLosses(NamedTuple):
    """Output of :func:`actor_critic_losses`.

    Attributes:
        actor_loss: scalar.
        critic_loss: scalar.
        returns: ``(N, H)`` lambda-returns ``R_0 .. R_{H-1}`` (differentiable if dynamics).
        metrics: 0-dim tensors.
    """

    actor_loss: torch.Tensor
    critic_loss: torch.Tensor
    returns: torch.Tensor
    metrics: Metrics


def actor_critic_losses(
    traj: Imagined,
    actor: Actor,
    critic: Critic,
    slow_critic: Critic,
    retnorm: ReturnNormalizer,
    cfg: ActorCriticConfig,
    dynamics: bool,
) -> ACLosses:
    """Actor and critic losses of an imagined trajectory (updates ``retnorm``).

    Args:
        traj: from :func:`imagine`; with gradients through ``feat`` and ``reward`` if
            ``dynamics``.
        dynamics: backpropagate returns through the dynamics instead of REINFORCE.

    Returns:
        Losses, returns and metrics (entropy, return scale, means of imagined quantities).
    """
    horizon = traj.action.shape[1]
    feat_sg = traj.feat.detach()
    critic_dist = critic(feat_sg)
    with torch.no_grad():
        slow_value = slow_critic(feat_sg).mean()
    target_net = slow_critic if cfg.slow_critic_target else critic
    if dynamics:
        # through the critic to the imagined states, never into the critic's weights: the
        # actor loss then reaches only the actor's parameters, so one backward pass of both
        # losses gives each network its own loss's gradient (a compiled update needs that)
        boot = frozen(target_net)(traj.feat).mean()
    else:
        boot = slow_value if cfg.slow_critic_target else critic_dist.mean().detach()
    cont = traj.cont[:, 1:] if dynamics else traj.cont[:, 1:].detach()
    returns = lambda_returns(traj.reward, cont, boot, cfg.gamma, cfg.lam)
    _, scale = retnorm(returns.detach())
    base = boot[:, :horizon].detach()
    adv = (returns - base) / scale
    weight = traj.weight[:, :horizon]
    policy: OneHotCategorical | BoundedNormal = actor.dist(traj.policy)
    entropy = policy.entropy()
    if dynamics:
        objective = adv
    else:
        objective = policy.log_prob(traj.action.detach()) * adv.detach()
    actor_loss = -(weight * (objective + cfg.entropy * entropy)).mean()
    values = TwoHotDist(critic_dist.logits[:, :horizon], critic_dist.bins)
    critic_nll = -values.log_prob(returns.detach())
    critic_nll = critic_nll - cfg.slow_critic_reg * values.log_prob(slow_value[:, :horizon])
    critic_loss = (weight * critic_nll).mean()
    metrics = {
        M.ACTOR_ENTROPY: entropy.detach().mean(),
        M.RETURN_SCALE: scale.detach(),
        M.IMAG_RETURN: returns.detach().mean(),
        M.IMAG_VALUE: base.mean(),
        M.IMAG_REWARD: traj.reward.detach().mean(),
        M.IMAG_WEIGHT: weight.mean(),
        M.IMAG_ADVANTAGE: adv.detach().mean(),
    }
    return ACLosses(actor_loss, critic_loss, returns, metrics)
