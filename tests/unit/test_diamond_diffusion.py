"""DIAMOND's diffusion core: EDM and DDPM math against closed forms, the denoiser networks, and
their losses falling on a toy next-frame task (tiny sizes, CPU, seconds)."""

from __future__ import annotations

import dataclasses
import itertools
import math
import subprocess
import sys

import pytest
import torch
from torch import Tensor

from wm_ray.models.common.noise import Tape
from wm_ray.models.diamond.config import (
    DenoiserConfig,
    DiffusionConfig,
    DiffusionCoreConfig,
    check_config,
)
from wm_ray.models.diamond.ddpm import DDPM
from wm_ray.models.diamond.diffusion import (
    EDM,
    Condition,
    Net,
    edm_preconditioners,
    karras_sigmas,
    make_schedule,
    quantize,
    stack_context,
)
from wm_ray.models.diamond.dit import DiTDenoiser
from wm_ray.models.diamond.networks import UNetDenoiser, build_denoiser

K, C, S, A = 4, 1, 8, 3  # context frames, channels, frame side, actions
UNET = DenoiserConfig(kind="unet", channels=(8, 16), res_blocks=1, cond_dim=16)
DIT = DenoiserConfig(kind="dit", cond_dim=16, patch=2, width=32, depth=2, heads=2)


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def cond_of(b: int, gen: torch.Generator | None = None) -> Condition:
    ctx = torch.rand(b, K * C, S, S, generator=gen) * 2 - 1
    return Condition(ctx, torch.randint(0, A, (b, K), generator=gen))


def zero_net(x: Tensor, c_noise: Tensor, ctx: Tensor, act: Tensor) -> Tensor:
    return torch.zeros_like(x)


# ------------------------------------------------------------------------------ config


def test_default_config_is_valid_and_torch_free() -> None:
    assert check_config(DiffusionCoreConfig(), image_size=64, num_actions=18) == []
    code = (
        "import sys; import wm_ray.models.diamond.config, wm_ray.models.diamond; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_check_config_names_each_problem() -> None:
    cfg = DiffusionCoreConfig(
        DenoiserConfig(kind="dit", heads=5, cond_dim=18, width=384),
        DiffusionConfig(sigma_min=6.0, sigma_data=0.0, ddpm_sample_steps=2000, context=4),
    )
    problems = "\n".join(check_config(cfg, image_size=30))
    for needle in (
        "denoiser.heads=5 (must divide width=384)",
        "denoiser.patch=4 (must divide the frame side 30)",
        "denoiser.cond_dim=18 (must be a multiple of diffusion.context=4",
        "diffusion.sigma_min=6.0 (must be < sigma_max=5.0)",
        "diffusion.sigma_data=0.0 (must be > 0)",
        "diffusion.ddpm_sample_steps=2000",
    ):
        assert needle in problems, problems
    unet = DiffusionCoreConfig(DenoiserConfig(channels=(8, 8, 8, 8)), DiffusionConfig(steps=0))
    problems = "\n".join(check_config(unet, image_size=20))
    assert "frame side 20 must be a multiple of 8" in problems
    assert "diffusion.steps=0 (must be >= 1)" in problems


# ------------------------------------------------------------------------------ EDM math


def test_preconditioners_match_the_formulas() -> None:
    sd, off = 0.5, 0.3
    sigma = torch.tensor([2e-3, 0.1, 0.5, 1.0, 5.0, 20.0], dtype=torch.float64)
    for offset in (0.0, off):
        p = edm_preconditioners(sigma, sd, offset)
        for i, sig in enumerate(sigma.tolist()):
            s = math.sqrt(sig**2 + offset**2)
            assert p.c_skip[i].item() == pytest.approx(sd**2 / (s**2 + sd**2), rel=1e-12)
            assert p.c_out[i].item() == pytest.approx(s * sd / math.sqrt(s**2 + sd**2), rel=1e-12)
            assert p.c_in[i].item() == pytest.approx(1 / math.sqrt(s**2 + sd**2), rel=1e-12)
            assert p.c_noise[i].item() == pytest.approx(math.log(s) / 4, rel=1e-12)


def test_effective_target_has_unit_variance() -> None:
    """lambda = 1 / c_out^2 makes F's target (x0 - c_skip x) / c_out unit-variance for data of
    std sigma_data at every noise level (EDM's point of the preconditioning)."""
    g = torch.Generator().manual_seed(0)
    for sigma in (0.01, 0.3, 2.0, 20.0):
        p = edm_preconditioners(torch.tensor(sigma, dtype=torch.float64), 0.5)
        x0 = 0.5 * torch.randn(200_000, generator=g, dtype=torch.float64)
        x = x0 + sigma * torch.randn(200_000, generator=g, dtype=torch.float64)
        target = (x0 - p.c_skip * x) / p.c_out
        assert target.var().item() == pytest.approx(1.0, abs=0.02)
        assert (p.c_in * x).var().item() == pytest.approx(1.0, abs=0.02)


def test_karras_schedule_end_points_and_rho_spacing() -> None:
    sig = karras_sigmas(3, 2e-3, 5.0, 7)
    assert len(sig) == 4 and sig[0] == 5.0 and sig[2] == 2e-3 and sig[3] == 0.0
    mid = ((5.0 ** (1 / 7) + 2e-3 ** (1 / 7)) / 2) ** 7
    assert sig[1] == pytest.approx(mid, rel=1e-12)  # about 0.283
    many = karras_sigmas(20, 2e-3, 80.0, 7)
    roots = [s ** (1 / 7) for s in many[:-1]]
    gaps = [b - a for a, b in itertools.pairwise(roots)]
    assert all(g == pytest.approx(gaps[0], rel=1e-9) for g in gaps)
    assert all(a > b for a, b in itertools.pairwise(many))
    assert karras_sigmas(1, 2e-3, 5.0, 7) == [5.0, 0.0]
    assert EDM(DiffusionConfig()).sigmas == sig
    with pytest.raises(ValueError, match="sigma_min"):
        karras_sigmas(3, 5.0, 2e-3, 7)


def test_training_sigmas_are_log_normal_and_clipped() -> None:
    edm = EDM(DiffusionConfig())
    g = torch.Generator().manual_seed(1)
    sigma = edm.training_sigmas(400_000, torch.zeros(1, dtype=torch.float64), g)
    logs = sigma.log()
    # the clip at 20 (2.8 std above the mean) moves the moments by < 0.01
    assert logs.mean().item() == pytest.approx(-0.4, abs=0.01)
    assert logs.std().item() == pytest.approx(1.2, abs=0.015)
    assert sigma.min().item() >= 2e-3 and sigma.max().item() <= 20.0
    assert (sigma == 20.0).float().mean().item() == pytest.approx(0.0023, abs=0.0005)


def test_denoiser_applies_the_network_exactly_once() -> None:
    edm = EDM(DiffusionConfig())
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5, C, S, S, generator=g) * 3
    cond = cond_of(5, g)
    sigma = torch.tensor([0.01, 0.3, 1.0, 5.0, 20.0])
    p = edm.preconditioners(sigma)
    # F = 0: D(x) = c_skip x, exactly
    assert torch.equal(edm.denoise(zero_net, x, sigma, cond), p.c_skip.view(-1, 1, 1, 1) * x)
    # F = identity on its input: D(x) = (c_skip + c_out c_in) x -- F sees c_in x, scaled once
    calls: list[tuple[Tensor, ...]] = []

    def ident(xi: Tensor, cn: Tensor, ctx: Tensor, act: Tensor) -> Tensor:
        calls.append((xi, cn, ctx, act))
        return xi

    d = edm.denoise(ident, x, sigma, cond)
    want = (p.c_skip + p.c_out * p.c_in).view(-1, 1, 1, 1) * x
    torch.testing.assert_close(d, want)
    assert len(calls) == 1
    torch.testing.assert_close(calls[0][1], p.c_noise)
    torch.testing.assert_close(calls[0][2], cond.context / 0.5)
    assert torch.equal(calls[0][3], cond.actions)


def test_edm_loss_is_the_mse_on_the_effective_target() -> None:
    edm = EDM(DiffusionConfig())
    shape = (3, C, S, S)
    g = torch.Generator().manual_seed(3)
    x0, cond = torch.rand(shape, generator=g) * 2 - 1, cond_of(3, g)
    tape = Tape.draw(edm.loss_plan(shape), g, "cpu")
    z_sigma, n, n_off = (tape.flat["randn"][a:b] for a, b in ((0, 3), (3, 195), (195, 198)))
    loss = edm.loss(zero_net, x0, cond, tape)
    assert tape.used_up
    sigma = (-0.4 + 1.2 * z_sigma).exp().clamp(2e-3, 20.0)
    x = x0 + sigma.view(-1, 1, 1, 1) * n.view(shape) + 0.3 * n_off.view(3, C, 1, 1)
    p = edm_preconditioners(sigma, 0.5, 0.3)
    target = (x0 - p.c_skip.view(-1, 1, 1, 1) * x) / p.c_out.view(-1, 1, 1, 1)
    torch.testing.assert_close(loss, target.square().mean())
    replay = Tape(tape.flat["rand"], tape.flat["randn"], tape.plan)  # the same draws again
    masked = edm.loss(zero_net, x0, cond, replay, mask=torch.tensor([True, False, True]))
    torch.testing.assert_close(masked, target[[0, 2]].square().mean())


def edm_oracle(x0: Tensor, sd: float = 0.5) -> Net:
    """A raw network whose preconditioned denoiser returns ``x0`` at every noise level: it
    recovers ``s`` from ``c_noise = ln(s) / 4`` and ``x`` from ``c_in x``."""

    def net(x_in: Tensor, c_noise: Tensor, ctx: Tensor, act: Tensor) -> Tensor:
        s2 = (8 * c_noise.double()).exp().view(-1, 1, 1, 1)
        x = x_in.double() * (s2 + sd**2).sqrt()
        c_skip, c_out = sd**2 / (s2 + sd**2), s2.sqrt() * sd / (s2 + sd**2).sqrt()
        return ((x0.double() - c_skip * x) / c_out).to(x_in.dtype)

    return net


@pytest.mark.parametrize("init_noise", ["sigma_max", "unit"])
def test_euler_sampler_recovers_the_oracle_frame(init_noise: str) -> None:
    g = torch.Generator().manual_seed(4)
    x0 = quantize(torch.rand(6, C, S, S, generator=g) * 2 - 1)  # on the uint8 grid
    cond = cond_of(6, g)
    calls = []
    oracle = edm_oracle(x0)

    def counted(*args: Tensor) -> Tensor:
        calls.append(1)
        return oracle(*args)

    edm = EDM(DiffusionConfig(init_noise=init_noise))  # type: ignore[arg-type]
    with torch.no_grad():
        out = edm.sample(counted, (6, C, S, S), cond, g)
    assert len(calls) == 3
    assert torch.equal(out, x0)
    raw = EDM(DiffusionConfig(quantize=False, clamp=False, steps=5))
    with torch.no_grad():
        torch.testing.assert_close(raw.sample(oracle, (6, C, S, S), cond, g), x0, atol=1e-5, rtol=0)


def test_euler_sampler_integrates_the_probability_flow_ode() -> None:
    """For data N(0, sd^2) the exact denoiser is c_skip x (F = 0 without offset noise) and the
    ODE maps x(sigma_max) to x(0) = x(sigma_max) sd / sqrt(sigma_max^2 + sd^2)."""
    cfg = DiffusionConfig(offset_noise=0.0, quantize=False, clamp=False, steps=400, sigma_min=1e-4)
    edm = EDM(cfg)
    shape = (2, C, S, S)
    g = torch.Generator().manual_seed(5)
    tape = Tape.draw(edm.sample_plan(shape), g, "cpu", torch.float64)
    start = tape.flat["randn"].view(shape) * 5.0
    cond = cond_of(2, g)
    cond = Condition(cond.context.double(), cond.actions)
    out = edm.sample(zero_net, shape, cond, tape)
    assert tape.used_up
    torch.testing.assert_close(out, start * 0.5 / math.sqrt(25 + 0.25), rtol=1e-2, atol=1e-4)


# ----------------------------------------------------------------------------- DDPM math


def test_ddpm_tables() -> None:
    ddpm = DDPM(DiffusionConfig(schedule="ddpm"))
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    torch.testing.assert_close(ddpm.betas, betas.float())
    abar = torch.cumprod(1 - betas, 0)
    torch.testing.assert_close(ddpm.alphas_cumprod, abar.float())
    assert ddpm.alphas_cumprod_prev[0].item() == 1.0
    assert torch.equal(ddpm.sample_t, torch.arange(1000))
    sigma_t = ((1 - abar) / abar).sqrt()
    torch.testing.assert_close(ddpm.c_noise, (sigma_t.log() / 4).float())
    assert ddpm.state_dict() == {}  # tables are not checkpointed
    respaced = DDPM(DiffusionConfig(schedule="ddpm", ddpm_sample_steps=10))
    assert respaced.sample_t.tolist() == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]
    one = DDPM(DiffusionConfig(schedule="ddpm", ddpm_sample_steps=1))
    assert one.sample_t.tolist() == [999] and one.s_coef_x0.item() == pytest.approx(1.0)


def test_q_sample_mean_and_variance() -> None:
    ddpm = DDPM(DiffusionConfig(schedule="ddpm"))
    g = torch.Generator().manual_seed(6)
    for t in (0, 10, 500, 999):
        ab = ddpm.alphas_cumprod[t].item()
        x0 = torch.full((100_000, 1, 1, 1), 0.7)
        tt = torch.full((100_000,), t)
        xt = ddpm.q_sample(x0, tt, torch.randn(x0.shape, generator=g))
        assert xt.mean().item() == pytest.approx(
            math.sqrt(ab) * 0.7, abs=4 * math.sqrt(1 - ab) / 300
        )
        assert xt.var().item() == pytest.approx(1 - ab, rel=0.02)
        torch.testing.assert_close(
            ddpm.q_sample(x0[:3], tt[:3], torch.zeros(3, 1, 1, 1)), math.sqrt(ab) * x0[:3]
        )


def test_posterior_matches_bayes_rule() -> None:
    """q(x_{t-1} | x_t, x0) ∝ N(x_{t-1}; sqrt(abar_{t-1}) x0, 1 - abar_{t-1}) N(x_t;
    sqrt(alpha_t) x_{t-1}, beta_t): precision 1 / (1 - abar_{t-1}) + alpha_t / beta_t."""
    ddpm = DDPM(DiffusionConfig(schedule="ddpm"))
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    x0 = torch.tensor([0.3, -0.8, 0.5]).view(3, 1, 1, 1)
    xt = torch.tensor([1.1, 0.2, -2.0]).view(3, 1, 1, 1)
    for t in (1, 2, 50, 500, 999):
        prev, beta = abar[t - 1].item(), betas[t].item()
        var = 1 / (1 / (1 - prev) + (1 - beta) / beta)
        mean = var * (math.sqrt(prev) * x0.double() / (1 - prev) + math.sqrt(1 - beta) * xt / beta)
        m, v = ddpm.posterior(x0, xt, torch.full((3,), t))
        torch.testing.assert_close(m.double(), mean, rtol=1e-4, atol=1e-6)
        assert v.flatten()[0].item() == pytest.approx(var, rel=1e-4)
    m, v = ddpm.posterior(x0, xt, torch.zeros(3, dtype=torch.long))
    torch.testing.assert_close(m, x0)  # t = 0: the posterior is x0 itself
    assert v.abs().max().item() == 0.0
    eps = torch.randn(3, 1, 1, 1)
    ts = torch.tensor([5, 300, 900])
    torch.testing.assert_close(
        ddpm.predict_x0(ddpm.q_sample(x0, ts, eps), ts, eps), x0, atol=1e-4, rtol=0
    )


def ddpm_oracle(x0: Tensor) -> Net:
    """The noise that makes the epsilon-prediction's x0 estimate equal ``x0``."""

    def net(x: Tensor, c_noise: Tensor, ctx: Tensor, act: Tensor) -> Tensor:
        ab = 1 / (1 + (8 * c_noise.double()).exp()).view(-1, 1, 1, 1)
        return ((x.double() - ab.sqrt() * x0.double()) / (1 - ab).sqrt()).to(x.dtype)

    return net


@pytest.mark.parametrize("steps", [0, 10])
def test_ancestral_sampling_recovers_the_oracle_frame(steps: int) -> None:
    cfg = DiffusionConfig(schedule="ddpm", ddpm_sample_steps=steps)
    ddpm = make_schedule(cfg)
    assert isinstance(ddpm, DDPM)
    g = torch.Generator().manual_seed(7)
    x0 = quantize(torch.rand(4, C, S, S, generator=g) * 2 - 1)
    cond, shape = cond_of(4, g), (4, C, S, S)
    tape = Tape.draw(ddpm.sample_plan(shape), g, "cpu")
    calls = []
    oracle = ddpm_oracle(x0)

    def counted(*args: Tensor) -> Tensor:
        calls.append(1)
        return oracle(*args)

    with torch.no_grad():
        out = ddpm.sample(counted, shape, cond, tape)
    assert tape.used_up and len(calls) == (steps or 1000)
    assert torch.equal(out, x0)


def test_ddpm_loss_is_epsilon_mse() -> None:
    ddpm = DDPM(DiffusionConfig(schedule="ddpm"))
    shape = (3, C, S, S)
    g = torch.Generator().manual_seed(8)
    x0, cond = torch.rand(shape, generator=g) * 2 - 1, cond_of(3, g)
    tape = Tape.draw(ddpm.loss_plan(shape), g, "cpu")
    seen: dict[str, Tensor] = {}

    def net(x: Tensor, c_noise: Tensor, ctx: Tensor, act: Tensor) -> Tensor:
        seen.update(x=x, c_noise=c_noise, ctx=ctx)
        return torch.zeros_like(x)

    loss = ddpm.loss(net, x0, cond, tape)
    assert tape.used_up
    t = (tape.flat["rand"] * 1000).long()
    eps = tape.flat["randn"].view(shape)
    torch.testing.assert_close(loss, eps.square().mean())
    torch.testing.assert_close(seen["x"], ddpm.q_sample(x0, t, eps))
    torch.testing.assert_close(seen["c_noise"], ddpm.c_noise[t])
    assert torch.equal(seen["ctx"], cond.context)


# ------------------------------------------------------------------------------ networks


@pytest.mark.parametrize("cfg", [UNET, DIT], ids=["unet", "dit"])
def test_network_shapes_zero_init_and_train_mode(cfg: DenoiserConfig) -> None:
    torch.manual_seed(0)
    net = build_denoiser(cfg, C, K, A)
    assert isinstance(net, UNetDenoiser if cfg.kind == "unet" else DiTDenoiser)
    cond = cond_of(2)
    x, c_noise = torch.randn(2, C, S, S), torch.randn(2)
    out = net(x, c_noise, cond.context, cond.actions)
    assert out.shape == (2, C, S, S) and not out.any()  # zero-initialized output layer
    assert net.train() is net and net.training
    assert net.eval() is net and not net.training
    assert net.train(False) is net and not any(m.training for m in net.modules())
    assert net.train(True) is net and all(m.training for m in net.modules())
    assert "train" not in vars(type(net))
    for schedule in (EDM(DiffusionConfig()), DDPM(DiffusionConfig(schedule="ddpm"))):
        assert schedule.eval() is schedule and not schedule.training


@pytest.mark.parametrize("cfg", [UNET, DIT], ids=["unet", "dit"])
def test_every_input_reaches_the_output(cfg: DenoiserConfig) -> None:
    torch.manual_seed(1)
    net = build_denoiser(cfg, C, K, A)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))  # move the zero-initialized layers
    cond = cond_of(2)
    x, c_noise = torch.randn(2, C, S, S), torch.randn(2)
    base = net(x, c_noise, cond.context, cond.actions)
    other_actions = (cond.actions + 1) % A
    for args in (
        (x + 0.5, c_noise, cond.context, cond.actions),
        (x, c_noise + 0.5, cond.context, cond.actions),
        (x, c_noise, cond.context.flip(1), cond.actions),
        (x, c_noise, cond.context, other_actions),
    ):
        assert not torch.allclose(net(*args), base)


@pytest.mark.parametrize("cfg", [UNET, DIT], ids=["unet", "dit"])
def test_clear_errors_for_wrong_shapes(cfg: DenoiserConfig) -> None:
    net = build_denoiser(cfg, C, K, A)
    cond = cond_of(2)
    x, c_noise = torch.randn(2, C, S, S), torch.randn(2)
    cases = [
        (
            (torch.randn(2, 3, S, S), c_noise, cond.context, cond.actions),
            r"x must be \(B, 1, H, W\)",
        ),
        ((x, torch.randn(2, 1), cond.context, cond.actions), r"c_noise must be \(2,\)"),
        ((x, c_noise, cond.context[:, :3], cond.actions), r"context must be \(2, 4, 8, 8\)"),
        ((x, c_noise, cond.context, cond.actions[:, :2]), r"actions must be \(2, 4\)"),
        ((x, c_noise, cond.context, cond.actions.float()), "integer action indices"),
    ]
    for args, match in cases:
        with pytest.raises(ValueError, match=match):
            net(*args)
    if cfg.kind == "unet":  # 3 levels: sides must be multiples of 4
        net, odd, match = (
            build_denoiser(dataclasses.replace(cfg, channels=(8, 8, 8)), C, K, A),
            6,
            "multiples of 4",
        )
    else:
        odd, match = 5, "patch 2 must divide"
    ctx = torch.randn(2, K * C, odd, odd)
    with pytest.raises(ValueError, match=match):
        net(torch.randn(2, C, odd, odd), c_noise, ctx, cond.actions)
    with pytest.raises(ValueError, match="heads=3 must divide width=32"):
        DiTDenoiser(dataclasses.replace(DIT, heads=3), C, K, A)
    with pytest.raises(ValueError, match=r"\(B, K, C, H, W\)"):
        stack_context(torch.randn(2, 4, S, S))
    edm = EDM(DiffusionConfig())
    with pytest.raises(ValueError, match="batch 3"):
        edm.loss(zero_net, torch.randn(3, C, S, S), cond)


# ------------------------------------------------------------------------- learning


def toy_batch(b: int, g: torch.Generator) -> tuple[Tensor, Condition]:
    """Context: 4 random smooth frames; next frame: the last one rolled by (action - 1)
    columns (actions 0, 1, 2 = left, stay, right)."""
    coarse = torch.rand(b, K, C, S // 2, S // 2, generator=g) * 2 - 1
    frames = coarse.repeat_interleave(2, -1).repeat_interleave(2, -2)
    actions = torch.randint(0, A, (b, K), generator=g)
    shift = actions[:, -1] - 1
    last = frames[:, -1]
    nxt = torch.stack([last[i].roll(int(shift[i]), dims=-1) for i in range(b)])
    return nxt, Condition(stack_context(frames), actions)


@pytest.mark.parametrize(
    ("cfg", "schedule"),
    [(UNET, "edm"), (DIT, "edm"), (UNET, "ddpm"), (DIT, "ddpm")],
    ids=["unet-edm", "dit-edm", "unet-ddpm", "dit-ddpm"],
)
def test_denoiser_loss_falls_on_a_toy_next_frame_task(cfg: DenoiserConfig, schedule: str) -> None:
    torch.manual_seed(0)
    sched = make_schedule(DiffusionConfig(schedule=schedule))  # type: ignore[arg-type]
    net = build_denoiser(cfg, C, K, A)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(9)
    x0_eval, cond_eval = toy_batch(256, g)

    def eval_loss(cond: Condition = cond_eval) -> float:
        with torch.no_grad():
            return sched.loss(net, x0_eval, cond, torch.Generator().manual_seed(10)).item()

    before = eval_loss()
    for _ in range(80):
        x0, cond = toy_batch(32, g)
        loss = sched.loss(net, x0, cond, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = eval_loss()
    assert after < 0.6 * before, (before, after)
    if schedule == "edm":  # the loss at low noise hides how the frame is predicted under DDPM
        # it learned to use the action and the past frames: wrong ones cost
        wrong_actions = eval_loss(Condition(cond_eval.context, (cond_eval.actions + 1) % A))
        wrong_frames = eval_loss(Condition(cond_eval.context.roll(1, 0), cond_eval.actions))
        assert wrong_actions > 1.15 * after and wrong_frames > 1.15 * after
