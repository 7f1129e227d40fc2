"""Shared model math: transforms, distributions, returns, nets and the optimizer wrapper."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from wm_ray.models.common import (
    MLP,
    BernoulliSafe,
    BoundedNormal,
    CategoricalLatent,
    ConvDecoder,
    ConvEncoder,
    OneHotCategorical,
    Optimizer,
    ReturnNormalizer,
    TwoHot,
    TwoHotDist,
    count_params,
    init_zero_,
    lambda_returns,
    postprocess_image,
    preprocess_image,
    symexp,
    symlog,
    twohot_bins,
    twohot_decode,
    twohot_encode,
)
from wm_ray.models.common.testing import assert_close_to_scale


def _random_trajectory(
    batch: int, horizon: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    reward = torch.randn(batch, horizon, generator=g, dtype=torch.float64)
    cont = (torch.rand(batch, horizon, generator=g) > 0.2).double()
    cont[0, horizon // 2] = 0.0  # a terminal state mid-horizon
    cont[1] = torch.rand(horizon, generator=g, dtype=torch.float64)  # probabilities, not flags
    value = torch.randn(batch, horizon + 1, generator=g, dtype=torch.float64)
    return reward, cont, value


def _n_step_return(
    reward: torch.Tensor,
    cont: torch.Tensor,
    value: torch.Tensor,
    gamma: float,
    b: int,
    t: int,
    n: int,
) -> float:
    """G_t^(n) = sum_k (prod_{j<k} gamma c_{t+j}) r_{t+k} + (prod_{j<n} gamma c_{t+j}) v_{t+n}."""
    total, discount = 0.0, 1.0
    for k in range(n):
        total += discount * float(reward[b, t + k])
        discount *= gamma * float(cont[b, t + k])
    return total + discount * float(value[b, t + n])


def test_lambda_returns_equal_a_naive_loop() -> None:
    # Forward view: R_t = (1 - lam) sum_{n < N} lam^(n-1) G^(n) + lam^(N-1) G^(N), N = H - t.
    gamma, lam = 0.9, 0.7
    reward, cont, value = _random_trajectory(4, 9, seed=1)
    batch, horizon = reward.shape
    expected = torch.zeros(batch, horizon, dtype=torch.float64)
    for b in range(batch):
        for t in range(horizon):
            last = horizon - t
            mix = sum(
                (1 - lam) * lam ** (n - 1) * _n_step_return(reward, cont, value, gamma, b, t, n)
                for n in range(1, last)
            )
            tail = lam ** (last - 1) * _n_step_return(reward, cont, value, gamma, b, t, last)
            expected[b, t] = mix + tail
    got = lambda_returns(reward, cont, value, gamma, lam)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    assert got[0, horizon // 2] == reward[0, horizon // 2]  # no bootstrap past a terminal


def test_lambda_returns_with_lam_1_are_discounted_sums_and_lam_0_are_td_targets() -> None:
    gamma = 0.95
    reward, cont, value = _random_trajectory(3, 7, seed=2)
    horizon = reward.shape[1]
    monte_carlo = torch.zeros_like(reward)
    for t in range(horizon):
        for b in range(reward.shape[0]):
            monte_carlo[b, t] = _n_step_return(reward, cont, value, gamma, b, t, horizon - t)
    torch.testing.assert_close(lambda_returns(reward, cont, value, gamma, 1.0), monte_carlo)
    td = reward + gamma * cont * value[:, 1:]
    torch.testing.assert_close(lambda_returns(reward, cont, value, gamma, 0.0), td)
    with pytest.raises(ValueError, match="value must be"):
        lambda_returns(reward, cont, value[:, :-1], gamma, 0.5)


def test_symlog_symexp_round_trip() -> None:
    magnitudes = torch.logspace(-8, 6, 141, dtype=torch.float64)
    x = torch.cat([-magnitudes, torch.zeros(1, dtype=torch.float64), magnitudes])
    torch.testing.assert_close(symexp(symlog(x)), x, rtol=1e-12, atol=0.0)
    torch.testing.assert_close(symlog(symexp(symlog(x))), symlog(x), rtol=1e-12, atol=0.0)
    torch.testing.assert_close(symexp(symlog(x.float())), x.float(), rtol=2e-6, atol=1e-12)
    assert torch.equal(torch.sign(symlog(x)), torch.sign(x))
    assert symlog(torch.tensor(1e6)).item() == pytest.approx(math.log1p(1e6))


def test_twohot_round_trip_recovers_values() -> None:
    bins = twohot_bins()
    assert bins.shape == (255,) and bool((bins[1:] > bins[:-1]).all())
    assert torch.equal(bins, -bins.flip(0)) and bins[127] == 0.0
    g = torch.Generator().manual_seed(0)
    x = symexp(torch.empty(2000).uniform_(-14.0, 14.0, generator=g))
    x = torch.cat([x, bins[::17], torch.zeros(1)])
    weights = twohot_encode(x, bins)
    torch.testing.assert_close(twohot_decode(weights, bins), x, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weights.sum(-1), torch.ones(len(x)))
    nonzero = weights > 0
    assert int(nonzero.sum(-1).max()) <= 2
    idx = torch.arange(255).expand_as(weights)
    spread = idx.masked_fill(~nonzero, -1).amax(-1) - idx.masked_fill(~nonzero, 999).amin(-1)
    assert int(spread.max()) <= 1  # the two bins are neighbours
    outside = twohot_encode(torch.tensor([1e12, -1e12]), bins)
    assert outside[0, -1] == 1.0 and outside[1, 0] == 1.0
    torch.testing.assert_close(TwoHot().decode(torch.zeros(3, 255)), torch.zeros(3))


def test_twohot_log_prob_is_maximized_at_the_target() -> None:
    head = TwoHot()
    target = torch.tensor([3.7, -250.0, 0.0, 12345.0])
    logits = torch.zeros(4, 255, requires_grad=True)
    assert torch.equal(head(logits).mean(), torch.zeros(4))  # zero logits predict exactly 0
    opt = torch.optim.Adam([logits], lr=1.0)
    for _ in range(60):
        loss = -head(logits).log_prob(target).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    dist = TwoHotDist(logits.detach(), head.bins)
    torch.testing.assert_close(dist.mean(), target, rtol=1e-2, atol=1e-2)
    at_target = dist.log_prob(target)
    for factor in (0.5, 1.5, -1.0):
        assert bool((at_target >= dist.log_prob(target * factor + 1.0)).all())


def test_unimix_keeps_every_probability_above_one_percent_over_k() -> None:
    logits = torch.tensor([[1e4, -1e4, 0.0, -50.0], [0.0, 0.0, 0.0, 0.0]])
    dist = OneHotCategorical(logits, unimix=0.01)
    assert bool((dist.probs >= 0.01 / 4 * (1 - 1e-6)).all())
    torch.testing.assert_close(dist.probs.sum(-1), torch.ones(2))
    assert bool(
        torch.isfinite(dist.entropy()).all() and (dist.entropy() <= math.log(4) + 1e-6).all()
    )
    torch.testing.assert_close(dist.log_prob(dist.mode()), dist.probs.max(-1).values.log())


def test_straight_through_sample_is_one_hot_with_nonzero_gradients() -> None:
    logits = torch.randn(16, 8, requires_grad=True)
    sample = OneHotCategorical(logits).sample(torch.Generator().manual_seed(0))
    assert torch.equal(sample.detach().sum(-1), torch.ones(16))
    assert set(sample.detach().unique().tolist()) <= {0.0, 1.0}
    (sample * torch.randn(16, 8)).sum().backward()
    assert logits.grad is not None and float(logits.grad.abs().sum()) > 0


def test_latent_kl_is_zero_with_itself_and_nonnegative_otherwise() -> None:
    torch.manual_seed(0)
    post = CategoricalLatent.from_flat(torch.randn(5, 3, 32 * 32) * 3, classes=32)
    prior = CategoricalLatent(torch.randn(5, 3, 32, 32) * 3)
    assert post.sample().shape == (5, 3, 32, 32) and post.entropy().shape == (5, 3)
    torch.testing.assert_close(post.kl(post), torch.zeros(5, 3))
    kl = post.kl(prior)
    assert kl.shape == (5, 3) and bool((kl >= 0).all()) and float(kl.min()) > 0
    expected = (post.probs * (post.probs.log() - prior.probs.log())).sum((-2, -1))
    torch.testing.assert_close(kl, expected, rtol=1e-4, atol=1e-4)


def test_bounded_normal_and_bernoulli_match_reference_densities() -> None:
    torch.manual_seed(0)
    mean, std = torch.randn(6, 3) * 5, torch.randn(6, 3) * 5
    dist = BoundedNormal(mean, std, minstd=0.1, maxstd=1.0)
    assert bool((dist.mean().abs() <= 1).all() and (dist.scale >= 0.1).all())
    assert bool((dist.scale <= 1.0).all())
    ref = torch.distributions.Normal(dist.loc, dist.scale)
    action = dist.sample()
    torch.testing.assert_close(dist.log_prob(action), ref.log_prob(action).sum(-1))
    torch.testing.assert_close(dist.entropy(), ref.entropy().sum(-1))
    assert bool((dist.sample(clip=True).abs() <= 1).all())
    flag = BernoulliSafe(torch.tensor([-200.0, 0.0, 200.0]))
    assert torch.equal(flag.mode(), torch.tensor([0.0, 0.0, 1.0]))
    log_p = flag.log_prob(torch.tensor([1.0, 1.0, 1.0]))
    assert bool(torch.isfinite(log_p).all()) and log_p[0] == pytest.approx(-200.0)
    assert log_p[1] == pytest.approx(math.log(0.5))


def test_return_normalizer_scale_is_max_1_range_and_tracks_with_ema() -> None:
    norm = ReturnNormalizer(decay=0.99)
    returns = torch.linspace(0.0, 100.0, 1001)  # P5 = 5, P95 = 95
    low = high = 0.0
    for step in range(300):
        offset, scale = norm(returns)
        low, high = 0.99 * low + 0.01 * 5.0, 0.99 * high + 0.01 * 95.0
        assert float(offset) == pytest.approx(low, rel=1e-4)
        assert float(scale) == pytest.approx(max(1.0, high - low), rel=1e-4)
        if step == 0:
            assert float(scale) == 1.0  # a range of 0.9 is never scaled up
    assert float(norm.scale) == pytest.approx(90.0 * (1 - 0.99**300), rel=1e-4)
    copy = ReturnNormalizer()
    copy.load_state_dict(norm.state_dict())
    assert torch.equal(copy.scale, norm.scale) and torch.equal(copy.offset, norm.offset)


def test_conv_encoder_decoder_and_mlp_shapes() -> None:
    torch.manual_seed(0)
    images = torch.randint(0, 256, (2, 3, 64, 64, 3), dtype=torch.uint8)
    encoder = ConvEncoder(channels=3, depth=8)
    feat = encoder(images)
    assert feat.shape == (2, 3, encoder.out_dim) and encoder.out_dim == 64 * 4 * 4
    decoder = ConvDecoder(in_dim=20, channels=3, depth=8)
    recon = decoder(torch.randn(2, 3, 20))
    assert recon.shape == (2, 3, 64, 64, 3) and recon.dtype == torch.float32
    assert torch.equal(postprocess_image(preprocess_image(images)), images)
    with pytest.raises(ValueError, match="expected images"):
        encoder(torch.zeros(2, 32, 32, 3, dtype=torch.uint8))
    mlp = MLP(10, 4, hidden=16, layers=2)
    assert mlp(torch.randn(2, 3, 10)).shape == (2, 3, 4)
    assert MLP(10, None, hidden=16, layers=2)(torch.randn(5, 10)).shape == (5, 16)
    assert count_params(mlp) == 10 * 16 + 2 * 16 + 16 * 16 + 2 * 16 + 16 * 4 + 4
    assert mlp.out is not None
    init_zero_(mlp.out)
    assert torch.equal(mlp(torch.randn(7, 10)), torch.zeros(7, 4))


def _global_grad_norm(params: list[nn.Parameter]) -> float:
    return math.sqrt(sum(float(p.grad.square().sum()) for p in params if p.grad is not None))


def test_optimizer_clips_the_global_grad_norm_and_touches_only_its_params() -> None:
    torch.manual_seed(0)
    model, other = nn.Linear(8, 8), nn.Linear(8, 8)
    opt = Optimizer(model.parameters(), lr=1e-3, clip=1.0)
    loss = (1000.0 * model(other(torch.randn(32, 8)))).square().mean()
    metrics = opt.step(loss)
    params = list(model.parameters())
    assert float(metrics["grad_norm"]) > 10.0
    assert _global_grad_norm(params) == pytest.approx(1.0, rel=1e-4)
    assert all(p.grad is None for p in other.parameters())
    agc = Optimizer(model.parameters(), lr=1e-3, clip=0.0, agc=0.01)
    norms = [float(p.detach().norm()) for p in params]  # AGC uses the norms before the update
    agc.step((1000.0 * model(torch.randn(32, 8))).square().mean())
    for p, norm in zip(params, norms):
        assert p.grad is not None
        assert float(p.grad.norm()) == pytest.approx(0.01 * max(norm, 1e-3), rel=1e-4)
    skipped_before = [p.detach().clone() for p in params]
    opt.step(model(torch.randn(2, 8)).sum() * float("nan"))
    assert opt.skipped == 1 and all(torch.equal(a, b) for a, b in zip(skipped_before, params))


def test_optimizer_state_round_trip_restores_exactly() -> None:
    torch.manual_seed(0)
    first = nn.Sequential(nn.Linear(4, 16), nn.SiLU(), nn.Linear(16, 1))
    second = nn.Sequential(nn.Linear(4, 16), nn.SiLU(), nn.Linear(16, 1))
    opt_a = Optimizer(first.parameters(), lr=1e-2, clip=0.5, warmup=5)
    data = [torch.randn(8, 4) for _ in range(6)]
    for x in data[:3]:
        opt_a.step(first(x).square().mean())
    second.load_state_dict(first.state_dict())
    opt_b = Optimizer(second.parameters(), lr=1e-2, clip=0.5, warmup=5)
    opt_b.load_state_dict(opt_a.state_dict())
    assert opt_b.steps == 3 and opt_b.current_lr() == opt_a.current_lr()
    for x in data[3:]:
        metrics_a = opt_a.step(first(x).square().mean())
        metrics_b = opt_b.step(second(x).square().mean())
        assert torch.equal(metrics_a["grad_norm"], metrics_b["grad_norm"])
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.equal(a, b)


def test_twohot_log_prob_gathers_the_same_value_as_the_dense_target() -> None:
    from wm_ray.models.common.transforms import TwoHotDist, twohot_bins, twohot_encode

    bins = twohot_bins()
    logits = torch.randn(7, 5, 255)
    target = torch.randn(7, 5) * 30
    target[0, 0] = 1e9  # beyond the last bin
    dense = (twohot_encode(target, bins) * torch.log_softmax(logits, -1)).sum(-1)
    torch.testing.assert_close(TwoHotDist(logits, bins).log_prob(target), dense)


def test_twohot_log_prob_traced_into_a_graph_matches_eager_with_its_gradient() -> None:
    # Under torch.compile log_prob weighs the bins by comparing indices (no gather/scatter):
    # the same value and gradient, at the edges too (beyond both ends, exactly on a bin).
    bins = twohot_bins()
    target = torch.randn(6, 9) * 30
    target[0, :4] = torch.tensor([1e9, -1e9, 0.0, float(bins[200])])

    def loss(logits: torch.Tensor) -> torch.Tensor:
        return -(TwoHotDist(logits, bins).log_prob(target) * torch.arange(9.0)).sum()

    logits = torch.randn(6, 9, 255, requires_grad=True)
    eager = loss(logits)
    (grad,) = torch.autograd.grad(eager, logits)
    traced = torch.compile(loss, backend="aot_eager", fullgraph=True)(logits)
    (traced_grad,) = torch.autograd.grad(traced, logits)
    assert_close_to_scale(traced, eager, 1e-6, what="loss")
    assert_close_to_scale(traced_grad, grad, 1e-6, what="gradient")


def test_learning_rate_warms_up_then_decays_linearly_to_its_floor() -> None:
    net = torch.nn.Linear(2, 1)
    opt = Optimizer(net.parameters(), lr=1.0, warmup=2, anneal=4, anneal_to=0.2)
    rates = []
    for _ in range(8):
        rates.append(opt.current_lr())
        opt.step(net(torch.ones(1, 2)).sum())
    assert rates == pytest.approx([0.5, 1.0, 1.0, 0.8, 0.6, 0.4, 0.2, 0.2])
    held = Optimizer(net.parameters(), lr=1.0, anneal=2, anneal_to=0.5, anneal_after=3)
    rates = []
    for _ in range(7):
        rates.append(held.current_lr())
        held.step(net(torch.ones(1, 2)).sum())
    assert rates == pytest.approx([1.0, 1.0, 1.0, 1.0, 0.75, 0.5, 0.5])
    with pytest.raises(ValueError, match="anneal_to must be in"):
        Optimizer(net.parameters(), lr=1.0, anneal=4, anneal_to=0.0)


def test_read_only_batches_become_owned_tensors_without_a_warning() -> None:
    """Batches that arrive zero-copy from Ray's object store are read-only numpy arrays."""
    import warnings

    import gymnasium as gym

    from wm_ray.models.common.data import ActionSpec, batch_tensors, obs_shapes
    from wm_ray.models.common.testing import fake_batch, vector_space

    obs_space, act_space = vector_space(4), gym.spaces.Discrete(2)
    batch = fake_batch(obs_space, act_space, 2, 5)
    for array in batch.values():
        array.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = batch_tensors(
            batch, obs_shapes(obs_space), ActionSpec.of(act_space), torch.device("cpu")
        )
    vector = data.obs["vector"]
    vector.add_(1.0)  # the tensor owns its memory: writing does not touch the caller's array
    assert torch.allclose(vector - 1.0, torch.as_tensor(batch["vector"].copy()))
