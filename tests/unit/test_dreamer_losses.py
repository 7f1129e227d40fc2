"""Dreamer loss math: free bits, KL-balancing stop-gradients, imagination and the continue flag."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from wm_ray.models.common import CategoricalLatent, ReturnNormalizer
from wm_ray.models.dreamer.config import ActorCriticConfig, RSSMConfig
from wm_ray.models.dreamer.losses import actor_critic_losses, imagine, kl_losses
from wm_ray.models.dreamer.networks import State, build_networks
from wm_ray.models.dreamer.testing import DEBUG
from wm_ray.models.rssm.latents import GaussianLatent, Latent


def _categorical(stats: torch.Tensor) -> Latent:
    return CategoricalLatent.from_flat(stats, 4, 0.01)


def _gaussian(stats: torch.Tensor) -> Latent:
    mean, raw = stats.chunk(2, -1)
    return GaussianLatent(mean, torch.nn.functional.softplus(raw) + 0.1)


@pytest.mark.parametrize("dist", [_categorical, _gaussian])
def test_free_bits_clamp_is_constant_with_zero_gradient_below_and_equals_kl_above(dist) -> None:
    g = torch.Generator().manual_seed(0)
    near = torch.randn(6, 8, generator=g) * 0.01
    post = near.clone().requires_grad_()
    prior = (near + torch.randn(6, 8, generator=g) * 0.01).requires_grad_()
    dyn, rep, kl = kl_losses(post, prior, dist, free_bits=1.0)
    assert bool((kl < 1.0).all())
    assert torch.equal(dyn, torch.ones(6)) and torch.equal(rep, torch.ones(6))
    (dyn.sum() + rep.sum()).backward()
    assert post.grad is not None and prior.grad is not None
    assert float(post.grad.abs().max()) == 0.0 and float(prior.grad.abs().max()) == 0.0

    post = (torch.randn(6, 8, generator=g) * 5).requires_grad_()
    prior = (torch.randn(6, 8, generator=g) * 5).requires_grad_()
    dyn, rep, kl = kl_losses(post, prior, dist, free_bits=1.0)
    assert bool((kl > 1.0).all())
    torch.testing.assert_close(dyn, kl)
    torch.testing.assert_close(rep, kl)
    (dyn.sum() + rep.sum()).backward()
    assert post.grad is not None and float(post.grad.abs().sum()) > 0
    assert prior.grad is not None and float(prior.grad.abs().sum()) > 0


@pytest.mark.parametrize("dist", [_categorical, _gaussian])
def test_kl_balancing_dyn_trains_only_the_prior_and_rep_only_the_posterior(dist) -> None:
    g = torch.Generator().manual_seed(1)
    post = (torch.randn(5, 8, generator=g) * 3).requires_grad_()
    prior = (torch.randn(5, 8, generator=g) * 3).requires_grad_()
    dyn, rep, _ = kl_losses(post, prior, dist, free_bits=0.0)
    d_post, d_prior = torch.autograd.grad(dyn.sum(), [post, prior], allow_unused=True)
    assert d_post is None or float(d_post.abs().max()) == 0.0
    assert d_prior is not None and float(d_prior.abs().sum()) > 0
    r_post, r_prior = torch.autograd.grad(rep.sum(), [post, prior], allow_unused=True)
    assert r_prior is None or float(r_prior.abs().max()) == 0.0
    assert r_post is not None and float(r_post.abs().sum()) > 0


def _grads(loss: torch.Tensor, modules: dict[str, torch.nn.Module]) -> dict[str, float]:
    params = {name: list(module.parameters()) for name, module in modules.items()}
    flat = [p for ps in params.values() for p in ps]
    grads = torch.autograd.grad(loss, flat, allow_unused=True)
    out, i = {}, 0
    for name, ps in params.items():
        out[name] = sum(float(gr.abs().sum()) for gr in grads[i : i + len(ps)] if gr is not None)
        i += len(ps)
    return out


@pytest.mark.parametrize("latent", ["categorical", "gaussian"])
def test_kl_terms_reach_prior_head_or_posterior_side_parameters_only(latent: str) -> None:
    """One step from the zero state: the prior head (img_out, img_stats) gets only dyn
    gradients, the posterior head and the encoder only rep gradients. (The shared GRU receives
    both, as in the paper: it feeds prior and posterior.)"""
    rssm_cfg = dataclasses.replace(DEBUG.rssm, latent=latent, initial="zeros")
    cfg = dataclasses.replace(DEBUG, rssm=rssm_cfg)
    wm, _, _ = build_networks({"vector": (5,)}, 3, True, cfg)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in wm.parameters():  # break the symmetry of the zero state
            p.normal_(0.0, 0.5)
    vector = torch.randn(4, 1, 5)
    embed = wm.encoder({"vector": vector})
    is_first = torch.ones(4, 1, dtype=torch.bool)
    _, post, prior = wm.rssm.observe(embed, torch.zeros(4, 1, 3), is_first)
    dyn, rep, _ = kl_losses(post, prior, wm.rssm.dist, free_bits=0.0)
    rssm = wm.rssm
    prior_side = {"img_out": rssm.img_out, "img_stats": rssm.img_stats}
    post_side = {
        "obs_deter": rssm.obs_deter,
        "obs_embed": rssm.obs_embed,
        "obs_norm": rssm.obs_norm,
        "obs_stats": rssm.obs_stats,
        "encoder": wm.encoder,
    }
    g_dyn = _grads(dyn.mean(), {**prior_side, **post_side})
    g_rep = _grads(rep.mean(), {**prior_side, **post_side})
    for name in prior_side:
        assert g_dyn[name] > 0 and g_rep[name] == 0.0, (name, g_dyn[name], g_rep[name])
    for name in post_side:
        assert g_rep[name] > 0 and g_dyn[name] == 0.0, (name, g_dyn[name], g_rep[name])


def _forced_models(cont_logit: float, reward: float, value: float) -> tuple:
    wm, actor, critic = build_networks({"vector": (5,)}, 3, True, DEBUG)
    slow = build_networks({"vector": (5,)}, 3, True, DEBUG)[2]
    with torch.no_grad():
        assert wm.cont.out is not None and wm.reward.out is not None
        wm.cont.out.weight.zero_()
        wm.cont.out.bias.fill_(cont_logit)
        for head, target in ((wm.reward.out, reward), (critic.net.out, value)):
            assert head is not None
            head.weight.zero_()
            head.bias.copy_(torch.log(wm.twohot.encode(torch.tensor(target)) + 1e-12))
        slow.load_state_dict(critic.state_dict())
    return wm, actor, critic, slow


def _start(wm, n: int = 6) -> State:
    torch.manual_seed(3)
    vector = torch.randn(n, 4, 5)
    embed = wm.encoder({"vector": vector})
    is_first = torch.zeros(n, 4, dtype=torch.bool)
    is_first[:, 0] = True
    posts, _, _ = wm.rssm.observe(embed, torch.zeros(n, 4, 3), is_first)
    return State(posts.deter[:, -1].detach(), posts.stoch[:, -1].detach())


@pytest.mark.parametrize("imag_cont", ["mode", "mean"])
def test_imagination_stops_weights_and_returns_after_a_predicted_terminal(imag_cont: str) -> None:
    wm, actor, critic, slow = _forced_models(cont_logit=-30.0, reward=2.0, value=5.0)
    cfg = ActorCriticConfig(horizon=5, imag_cont=imag_cont)  # type: ignore[arg-type]
    with torch.no_grad():
        traj = imagine(wm, actor, _start(wm), torch.ones(6), cfg)
    assert traj.feat.shape[:2] == (6, 6) and traj.action.shape == (6, 5, 3)
    assert torch.equal(traj.cont[:, 0], torch.ones(6))
    zeros = torch.zeros(6, 5)
    torch.testing.assert_close(traj.cont[:, 1:], zeros, atol=1e-12, rtol=0)
    assert torch.equal(traj.weight[:, 0], torch.ones(6))
    torch.testing.assert_close(traj.weight[:, 1:], zeros, atol=1e-12, rtol=0)
    torch.testing.assert_close(traj.reward, torch.full((6, 5), 2.0), atol=1e-3, rtol=0)
    out = actor_critic_losses(traj, actor, critic, slow, ReturnNormalizer(), cfg, dynamics=False)
    # no bootstrap past a terminal: every return is just the reward of its transition
    torch.testing.assert_close(out.returns, traj.reward)


def test_imagination_bootstraps_with_discounted_values_while_continuing() -> None:
    wm, actor, critic, slow = _forced_models(cont_logit=30.0, reward=0.0, value=5.0)
    cfg = ActorCriticConfig(horizon=4, gamma=0.9, lam=0.0)
    with torch.no_grad():
        traj = imagine(wm, actor, _start(wm), torch.ones(6), cfg)
    torch.testing.assert_close(traj.weight[0], torch.tensor([1.0, 0.9, 0.81, 0.729, 0.6561]))
    out = actor_critic_losses(traj, actor, critic, slow, ReturnNormalizer(), cfg, dynamics=False)
    # one-step targets (lam = 0), zero rewards, constant values v: R_t = gamma * v
    torch.testing.assert_close(out.returns, torch.full((6, 4), 0.9 * 5.0), atol=1e-3, rtol=0)


def test_terminal_start_states_contribute_no_actor_or_critic_loss() -> None:
    wm, actor, critic, slow = _forced_models(cont_logit=30.0, reward=1.0, value=1.0)
    cfg = ActorCriticConfig(horizon=3)
    with torch.no_grad():
        traj = imagine(wm, actor, _start(wm), torch.zeros(6), cfg)
    assert float(traj.weight.abs().max()) == 0.0
    out = actor_critic_losses(traj, actor, critic, slow, ReturnNormalizer(), cfg, dynamics=False)
    assert float(out.actor_loss.detach()) == 0.0 and float(out.critic_loss.detach()) == 0.0


def test_dynamics_backprop_actor_gradient_flows_through_imagined_rewards() -> None:
    """Without entropy bonus the only gradient path to the actor is returns -> dynamics."""
    ac = dataclasses.replace(DEBUG.ac, entropy=0.0, horizon=4)
    rssm = RSSMConfig(deter=32, hidden=32, stoch=4, classes=4)
    cfg = dataclasses.replace(DEBUG, rssm=rssm, ac=ac)
    wm, actor, critic = build_networks({"vector": (5,)}, 2, False, cfg)
    slow = build_networks({"vector": (5,)}, 2, False, cfg)[2]
    assert wm.reward.out is not None
    with torch.no_grad():
        wm.reward.out.weight.normal_(0.0, 1.0)
    start = State(torch.randn(8, 32), torch.randn(8, 16))
    traj = imagine(wm, actor, start, torch.ones(8), cfg.ac)
    out = actor_critic_losses(traj, actor, critic, slow, ReturnNormalizer(), cfg.ac, dynamics=True)
    (grad,) = torch.autograd.grad(out.actor_loss, [actor.net.trunk[0].weight])
    assert float(grad.abs().sum()) > 0


def test_dynamics_backprop_reads_the_critic_without_training_it_by_the_actor_loss() -> None:
    """The actor loss bootstraps through the online critic (gradient to the imagined states),
    but none of it reaches the critic's weights: those learn from the critic loss alone, so
    one backward pass of the sum of both losses is exact (the compiled update's)."""
    ac = dataclasses.replace(DEBUG.ac, horizon=4, entropy=0.0)
    cfg = dataclasses.replace(DEBUG, ac=ac)
    wm, actor, critic = build_networks({"vector": (5,)}, 2, False, cfg)
    slow = build_networks({"vector": (5,)}, 2, False, cfg)[2]
    assert critic.net.out is not None and wm.cont.out is not None
    with torch.no_grad():
        critic.net.out.weight.normal_(0.0, 1.0)  # values that depend on the state
        wm.cont.out.weight.zero_()  # rewards (zero head) and continues carry no gradient:
        wm.cont.out.bias.fill_(30.0)  # the critic's bootstrap is the actor's only path
    start = State(torch.randn(8, 64), torch.randn(8, 64))
    traj = imagine(wm, actor, start, torch.ones(8), cfg.ac)
    out = actor_critic_losses(traj, actor, critic, slow, ReturnNormalizer(), cfg.ac, dynamics=True)
    critic_params = list(critic.parameters())
    from_actor = torch.autograd.grad(
        out.actor_loss, critic_params, retain_graph=True, allow_unused=True
    )
    assert all(g is None for g in from_actor)
    # ... while the bootstrap still carries the critic's gradient back to the actor
    (to_actor,) = torch.autograd.grad(
        out.actor_loss, [actor.net.trunk[0].weight], retain_graph=True
    )
    assert float(to_actor.abs().sum()) > 0
    together = torch.autograd.grad(
        out.actor_loss + out.critic_loss, critic_params, retain_graph=True
    )
    alone = torch.autograd.grad(out.critic_loss, critic_params)
    for a, b in zip(together, alone, strict=True):
        assert torch.equal(a, b)
