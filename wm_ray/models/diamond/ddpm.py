"""The DDPM schedule of the DIAMOND family (Ho et al. 2020): the math is stated in
:mod:`wm_ray.models.diamond.diffusion`'s docstring; this module holds its implementation."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from wm_ray.models.common import noise
from wm_ray.models.common.noise import Plan, Source
from wm_ray.models.diamond.config import DiffusionConfig
from wm_ray.models.diamond.diffusion import (
    Condition,
    Net,
    _check_shape,
    _masked_mse,
    quantize,
)


def _posterior_tables(abar: Tensor) -> dict[str, Tensor]:
    """Float64 tables over the steps of ``abar`` (a decreasing chain of cumulative alphas; the
    step before the first has ``abar = 1``): ``coef_x0``, ``coef_xt``, ``var`` and ``log_var``
    of ``q(x_{i-1} | x_i, x0)`` (``log_var[0]`` = ``log_var[1]``: ``var[0]`` is 0)."""
    prev = torch.cat([abar.new_ones(1), abar[:-1]])
    beta = 1.0 - abar / prev
    coef_x0 = beta * prev.sqrt() / (1.0 - abar)
    coef_xt = (1.0 - prev) * (1.0 - beta).sqrt() / (1.0 - abar)
    var = beta * (1.0 - prev) / (1.0 - abar)
    log_var = torch.cat([var[1:2], var[1:]]).log() if len(var) > 1 else var.clamp_min(1e-20).log()
    return {"coef_x0": coef_x0, "coef_xt": coef_xt, "var": var, "log_var": log_var}


class DDPM(nn.Module):
    """DDPM with epsilon prediction and (optionally respaced) ancestral sampling (module
    docstring). The tables are non-persistent float32 buffers (computed in float64), so they
    follow ``.to(device)`` and stay out of ``state_dict``.

    Buffers over the ``T`` training steps: ``betas``, ``alphas_cumprod``,
    ``alphas_cumprod_prev``, ``posterior_coef_x0``, ``posterior_coef_xt``,
    ``posterior_variance``, ``c_noise``; over the ``S`` sampling steps: ``sample_t`` (the
    steps, increasing) and ``s_*`` (the respaced posterior tables, ``s_c_noise``).
    """

    betas: Tensor
    alphas_cumprod: Tensor
    alphas_cumprod_prev: Tensor
    posterior_coef_x0: Tensor
    posterior_coef_xt: Tensor
    posterior_variance: Tensor
    c_noise: Tensor
    sample_t: Tensor
    s_coef_x0: Tensor
    s_coef_xt: Tensor
    s_log_var: Tensor
    s_sqrt_recip_abar: Tensor
    s_sqrt_recipm1_abar: Tensor
    s_c_noise: Tensor

    def __init__(self, cfg: DiffusionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        t_max = cfg.ddpm_steps
        if not 0 < cfg.beta_start <= cfg.beta_end < 1:
            raise ValueError(f"need 0 < beta_start={cfg.beta_start} <= beta_end={cfg.beta_end} < 1")
        steps = cfg.ddpm_sample_steps or t_max
        if not 1 <= steps <= t_max:
            raise ValueError(f"ddpm_sample_steps={cfg.ddpm_sample_steps} (must be in [0, {t_max}])")
        betas = torch.linspace(cfg.beta_start, cfg.beta_end, t_max, dtype=torch.float64)
        abar = torch.cumprod(1.0 - betas, 0)
        full = _posterior_tables(abar)
        # the respaced chain: S evenly spaced steps from T - 1 down to 0 (all T when S = T)
        ts = torch.linspace(t_max - 1, 0, steps, dtype=torch.float64).round().long().flip(0)
        sub = _posterior_tables(abar[ts])

        def c_noise(ab: Tensor) -> Tensor:
            return ((1.0 - ab) / ab).log() / 8.0  # ln(sigma_t) / 4, sigma_t^2 = (1 - ab) / ab

        tables = {
            "betas": betas,
            "alphas_cumprod": abar,
            "alphas_cumprod_prev": torch.cat([abar.new_ones(1), abar[:-1]]),
            "posterior_coef_x0": full["coef_x0"],
            "posterior_coef_xt": full["coef_xt"],
            "posterior_variance": full["var"],
            "c_noise": c_noise(abar),
            "s_coef_x0": sub["coef_x0"],
            "s_coef_xt": sub["coef_xt"],
            "s_log_var": sub["log_var"],
            "s_sqrt_recip_abar": abar[ts].rsqrt(),
            "s_sqrt_recipm1_abar": (1.0 / abar[ts] - 1.0).sqrt(),
            "s_c_noise": c_noise(abar[ts]),
        }
        for name, value in tables.items():
            self.register_buffer(name, value.float(), persistent=False)
        self.register_buffer("sample_t", ts, persistent=False)

    @staticmethod
    def _at(table: Tensor, t: Tensor, like: Tensor) -> Tensor:
        """``table[t]`` shaped ``(B, 1, 1, 1)`` in ``like``'s dtype."""
        return table[t].to(like.dtype).view(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` for steps ``t (B,)``."""
        ab = self._at(self.alphas_cumprod, t, x0)
        return ab.sqrt() * x0 + (1.0 - ab).sqrt() * eps

    def posterior(self, x0: Tensor, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of ``q(x_{t-1} | x_t, x0)`` (variance 0 at ``t = 0``)."""
        mean = self._at(self.posterior_coef_x0, t, x0) * x0
        mean = mean + self._at(self.posterior_coef_xt, t, xt) * xt
        return mean, self._at(self.posterior_variance, t, x0)

    def predict_x0(self, xt: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """``x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``."""
        ab = self._at(self.alphas_cumprod, t, xt)
        return (xt - (1.0 - ab).sqrt() * eps) * ab.rsqrt()

    def loss(
        self, net: Net, x0: Tensor, cond: Condition, gen: Source = None, mask: Tensor | None = None
    ) -> Tensor:
        """``||eps - F(x_t, c_noise(t), ctx, a)||^2``, ``t`` uniform on ``0 .. T-1``."""
        _check_shape("x0", x0, cond)
        b, t_max = x0.shape[0], self.cfg.ddpm_steps
        u = noise.rand((b,), x0, gen, dtype=torch.float32)
        t = (u * t_max).long().clamp_max(t_max - 1)
        eps = noise.randn(tuple(x0.shape), x0, gen)
        out = net(
            self.q_sample(x0, t, eps), self.c_noise[t].to(x0.dtype), cond.context, cond.actions
        )
        return _masked_mse(out, eps, mask)

    def loss_plan(self, shape: tuple[int, ...]) -> Plan:
        return [("rand", (shape[0],)), ("randn", tuple(shape))]

    def sample(
        self, net: Net, noise_shape: tuple[int, ...], cond: Condition, gen: Source = None
    ) -> Tensor:
        """Ancestral sampling over the ``S`` steps of ``sample_t`` from ``N(0, I)``; ``S``
        network calls. Run it under ``torch.no_grad()`` unless gradients are wanted."""
        like = cond.context
        x = noise.randn(tuple(noise_shape), like, gen)
        _check_shape("noise", x, cond)
        b, n = x.shape[0], len(self.sample_t)
        for i in range(n - 1, -1, -1):
            c = self.s_c_noise[i].to(x.dtype).expand(b)
            eps = net(x, c, cond.context, cond.actions)
            x0 = (self.s_sqrt_recip_abar[i] * x - self.s_sqrt_recipm1_abar[i] * eps).to(x.dtype)
            if self.cfg.clamp or self.cfg.quantize:
                x0 = x0.clamp(-1.0, 1.0)
            x = self.s_coef_x0[i] * x0 + self.s_coef_xt[i] * x
            if i > 0:
                z = noise.randn(tuple(x.shape), like, gen)
                x = x + (0.5 * self.s_log_var[i]).exp() * z
        return quantize(x) if self.cfg.quantize else x

    def sample_plan(self, shape: tuple[int, ...]) -> Plan:
        return [("randn", tuple(shape))] * len(self.sample_t)


__all__ = ["DDPM"]
