"""The Dreamer RSSM: one GRU step per env step, acting and training agree, resets, sampling."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from wm_ray.models.common.testing import assert_close_to_scale
from wm_ray.models.dreamer.networks import State, build_networks
from wm_ray.models.dreamer.testing import DEBUG
from wm_ray.models.rssm.latents import sample_onehot


def _rssm(latent: str = "categorical"):
    cfg = dataclasses.replace(DEBUG, rssm=dataclasses.replace(DEBUG.rssm, latent=latent))
    torch.manual_seed(0)
    wm, _, _ = build_networks({"vector": (5,)}, 3, True, cfg)
    return wm.rssm


def _inputs(batch: int = 3, steps: int = 7) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    embed = torch.randn(batch, steps, 64, generator=g)  # debug encoder width: 64 units
    action = torch.nn.functional.one_hot(torch.randint(0, 3, (batch, steps), generator=g), 3)
    is_first = torch.zeros(batch, steps, dtype=torch.bool)
    is_first[:, 0] = True
    is_first[1, 4] = True
    return embed, action.float(), is_first


def test_observe_runs_the_gru_exactly_once_per_step() -> None:
    rssm = _rssm()
    calls = []
    rssm.core.register_forward_hook(lambda *_: calls.append(1))
    embed, action, is_first = _inputs(steps=7)
    rssm.observe(embed, action, is_first)
    assert len(calls) == 7


@pytest.mark.parametrize("latent", ["categorical", "gaussian"])
def test_batched_observe_matches_the_acting_step_by_step_posterior(latent: str) -> None:
    rssm = _rssm(latent)
    embed, action, is_first = _inputs()
    with torch.no_grad():
        posts, post_stats, prior_stats = rssm.observe(
            embed, action, is_first, gen=torch.Generator().manual_seed(5)
        )
        gen = torch.Generator().manual_seed(5)
        state = rssm.initial(3)
        deters, stats = [], []
        for t in range(embed.shape[1]):
            state, s = rssm.obs_step(state, action[:, t], embed[:, t], is_first[:, t], gen)
            deters.append(state.deter)
            stats.append(s)
    torch.testing.assert_close(posts.deter, torch.stack(deters, 1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(post_stats, torch.stack(stats, 1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(prior_stats, rssm.prior_stats(posts.deter))


def test_is_first_inside_a_sequence_restarts_from_the_initial_state() -> None:
    rssm = _rssm()
    embed, action, is_first = _inputs()
    with torch.no_grad():
        full, _, _ = rssm.observe(embed, action, is_first, gen=torch.Generator().manual_seed(2))
        restarted, _, _ = rssm.observe(
            embed[1:2, 4:], action[1:2, 4:], is_first[1:2, 4:], gen=torch.Generator()
        )
    # the deterministic state after a reset does not depend on what came before it
    torch.testing.assert_close(full.deter[1, 4], restarted.deter[0, 0])


def test_initial_state_reset_ignores_the_stale_previous_action() -> None:
    rssm = _rssm()
    stale = State(torch.randn(2, 64), torch.randn(2, 64))
    state, action = rssm.reset(stale, torch.ones(2, 3), torch.tensor([True, False]))
    init = rssm.initial(1)
    assert torch.equal(state.deter[0], init.deter[0]) and torch.equal(action[0], torch.zeros(3))
    assert torch.equal(state.deter[1], stale.deter[1]) and torch.equal(action[1], torch.ones(3))


def test_sample_onehot_draws_from_probs_with_straight_through_gradients() -> None:
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.97, 0.01, 0.01, 0.01]], requires_grad=True)
    samples = sample_onehot(probs.expand(20_000, 2, 4), torch.Generator().manual_seed(0))
    assert torch.equal(samples.detach().sum(-1), torch.ones(20_000, 2))
    torch.testing.assert_close(samples.detach().mean(0), probs.detach(), atol=0.01, rtol=0)
    weights = torch.arange(4.0)
    (grad,) = torch.autograd.grad((sample_onehot(probs) * weights).sum(), [probs])
    assert torch.equal(grad, weights.expand(2, 4))


def test_compiled_steps_sample_the_same_latents_with_the_same_gradients() -> None:
    """run.compile=true compiles the GRU step and the heads; sampling stays eager, so the
    compiled RSSM draws the same latents from the same generator, and its stats and gradients
    match the eager ones to float rounding (through observe, an episode start and imagination)."""
    eager, compiled = _rssm(), _rssm()
    compiled.compile_steps()
    embed, action, is_first = _inputs(batch=3, steps=6)
    outputs = []
    for rssm in (eager, compiled):
        gen = torch.Generator().manual_seed(3)
        posts, post, prior = rssm.observe(embed, action, is_first, gen=gen)
        state = State(posts.deter[:, -1], posts.stoch[:, -1])
        img, img_stats = rssm.img_step(state, action[:, -1], gen)
        loss = post.square().mean() + prior.square().mean() + img.deter.square().mean()
        loss.backward()
        grads = [p.grad.clone() for p in rssm.parameters() if p.grad is not None]
        outputs.append((posts.stoch, img.stoch, post, prior, img_stats, *grads))
    for i, (a, b) in enumerate(zip(*outputs, strict=True)):
        # fused kernels sum in another order: equal at the scale of each tensor
        assert_close_to_scale(a, b, 1e-4, what=f"output {i}")
    assert torch.equal(outputs[0][0], outputs[1][0]), "different latent samples"
    assert torch.equal(outputs[0][1], outputs[1][1]), "different imagined samples"
