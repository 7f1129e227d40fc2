"""The two noise schedules of the DIAMOND family behind one interface: EDM and DDPM.

Frames are float tensors ``(B, C, H, W)`` in model space [-1, 1]. The network ``F`` is *raw*:
``F(x_in (B, C, H, W), c_noise (B,), context (B, K*C, H, W), actions (B, K) int) -> (B, C, H,
W)``, where ``context`` stacks the last ``K`` frames on channels (oldest first) and ``actions``
are the last ``K`` actions. A schedule never lets ``F`` see anything but these four tensors and
applies it exactly once per denoiser evaluation. Both schedules implement :class:`Schedule`:

- ``loss(net, x0, cond, gen) -> ()``: the training loss of ``net`` on clean next frames ``x0``;
- ``sample(net, noise_shape, cond, gen) -> (B, C, H, W)``: a sampled next frame;
- ``loss_plan(shape)`` / ``sample_plan(shape)``: the random draws each makes, in order, for a
  :class:`~wm_ray.models.common.noise.Tape` (``gen`` may be a generator, a tape or ``None``).

**EDM** (Karras et al. 2022, with DIAMOND's settings). The denoiser is

    D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma), ctx, a)

with ``s = sqrt(sigma^2 + offset^2)`` (DIAMOND: the preconditioners see the total noise std,
the per-pixel noise plus the per-channel offset noise) and

    c_skip = sigma_data^2 / (s^2 + sigma_data^2)   c_out = s sigma_data / sqrt(s^2 + sigma_data^2)
    c_in   = 1 / sqrt(s^2 + sigma_data^2)          c_noise = ln(s) / 4

and the context frames enter as ``ctx / sigma_data`` (DIAMOND). Training draws
``ln sigma ~ N(P_mean, P_std^2)`` clipped to ``[train_sigma_min, train_sigma_max]``, noises
``x = x0 + offset * n_c + sigma * n`` (``n_c ~ N(0, I)`` of shape ``(B, C, 1, 1)``, "offset
noise", Guttenberg 2023) and minimizes EDM's loss
``lambda(sigma) ||D(x; sigma) - x0||^2`` with ``lambda = 1 / c_out^2``, i.e. the plain MSE of
``F`` against its effective target ``(x0 - c_skip x) / c_out`` (unit variance at every sigma).
Sampling integrates the probability-flow ODE ``dx / dsigma = (x - D(x; sigma)) / sigma`` with
Euler steps over Karras et al.'s schedule (:func:`karras_sigmas`), from ``N(0, sigma_max^2)``
(or ``N(0, 1)``, DIAMOND's code) to sigma = 0; each ``D`` is clamped to [-1, 1] and rounded to
the 256 uint8 levels (DIAMOND) when configured, and the last step (to sigma 0) returns ``D``.

**DDPM** (Ho et al. 2020). Linear ``beta_t`` from ``beta_start`` to ``beta_end`` over
``t = 0 .. T-1``, ``alpha_t = 1 - beta_t``, ``abar_t = prod_{s <= t} alpha_s``;
``q(x_t | x0) = N(sqrt(abar_t) x0, (1 - abar_t) I)``; the posterior
``q(x_{t-1} | x_t, x0) = N(c0_t x0 + ct_t x_t, beta~_t I)`` with
``c0_t = beta_t sqrt(abar_{t-1}) / (1 - abar_t)``,
``ct_t = (1 - abar_{t-1}) sqrt(alpha_t) / (1 - abar_t)``,
``beta~_t = beta_t (1 - abar_{t-1}) / (1 - abar_t)`` (``abar_{-1} = 1``). ``F`` predicts the
noise: the loss is ``||eps - F(x_t, c_noise(t), ctx, a)||^2`` with ``t`` uniform. The timestep
enters ``F`` as ``c_noise(t) = ln(sigma_t) / 4`` with ``sigma_t = sqrt((1 - abar_t) / abar_t)``,
the noise level of the equivalent variance-exploding process, so both schedules feed ``F`` the
same kind of noise input. Ancestral sampling starts at ``x_{T-1} ~ N(0, I)``, estimates
``x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)`` (clamped to [-1, 1] when configured) and
draws ``x_{t-1}`` from the posterior (no noise at the last step). ``ddpm_sample_steps < T``
respaces (Nichol & Dhariwal 2021): on ``S`` evenly spaced steps ``tau_i``, the same formulas
with ``abar`` restricted to them and ``beta'_i = 1 - abar_{tau_i} / abar_{tau_{i-1}}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wm_ray.models.common import noise
from wm_ray.models.common.noise import Plan, Source
from wm_ray.models.diamond.config import DiffusionConfig

if TYPE_CHECKING:
    from wm_ray.models.diamond.ddpm import DDPM

Net = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
"""The raw network ``F(x_in, c_noise, context, actions) -> (B, C, H, W)``."""


class Condition(NamedTuple):
    """What the next frame is conditioned on."""

    context: Tensor
    """``(B, K * C, H, W)``: the last ``K`` frames in [-1, 1], oldest first, on channels."""
    actions: Tensor
    """``(B, K)`` integer: the actions taken after each context frame (the last one leads to
    the frame being denoised)."""


def stack_context(frames: Tensor) -> Tensor:
    """``(B, K, C, H, W)`` frames -> ``(B, K * C, H, W)`` (frame-major channels)."""
    if frames.dim() != 5:
        raise ValueError(f"context frames must be (B, K, C, H, W), got {tuple(frames.shape)}")
    return frames.flatten(1, 2)


def quantize(x: Tensor) -> Tensor:
    """Clamp to [-1, 1] and round to the nearest of the 256 levels ``k / 127.5 - 1``."""
    return torch.round((x.clamp(-1.0, 1.0) + 1.0) * 127.5) / 127.5 - 1.0


class Schedule(Protocol):
    """A noise schedule: the training loss and the sampler of a raw network ``F``."""

    def loss(
        self, net: Net, x0: Tensor, cond: Condition, gen: Source = None, mask: Tensor | None = None
    ) -> Tensor:
        """Scalar loss of ``net`` on clean frames ``x0 (B, C, H, W)``; ``mask (B,)`` keeps the
        samples it marks (the mean is over them)."""
        ...

    def sample(
        self, net: Net, noise_shape: tuple[int, ...], cond: Condition, gen: Source = None
    ) -> Tensor:
        """A denoised frame ``(B, C, H, W) = noise_shape`` given ``cond``."""
        ...

    def loss_plan(self, shape: tuple[int, ...]) -> Plan:
        """The draws :meth:`loss` makes for ``x0`` of ``shape``, in order."""
        ...

    def sample_plan(self, shape: tuple[int, ...]) -> Plan:
        """The draws :meth:`sample` makes for ``noise_shape = shape``, in order."""
        ...


def _masked_mse(pred: Tensor, target: Tensor, mask: Tensor | None) -> Tensor:
    """Mean squared error over all elements, or over the samples ``mask (B,)`` keeps."""
    if mask is None:
        return F.mse_loss(pred, target)
    per_sample = (pred - target).square().flatten(1).mean(1)
    weight = mask.to(per_sample.dtype)
    return (per_sample * weight).sum() / weight.sum().clamp_min(1.0)


def _check_shape(name: str, x: Tensor, cond: Condition) -> None:
    """Refuse frames that are not ``(B, C, H, W)`` or disagree with ``cond``'s batch."""
    if x.dim() != 4:
        raise ValueError(f"{name} must be (B, C, H, W), got shape {tuple(x.shape)}")
    b = x.shape[0]
    if cond.context.shape[0] != b or cond.actions.shape[0] != b:
        raise ValueError(
            f"{name} has batch {b} but the condition has context {tuple(cond.context.shape)} "
            f"and actions {tuple(cond.actions.shape)}"
        )


# ----------------------------------------------------------------------------------- EDM


class Preconditioners(NamedTuple):
    """EDM's ``c_skip, c_out, c_in, c_noise``, each shaped like the ``sigma`` they came from."""

    c_skip: Tensor
    c_out: Tensor
    c_in: Tensor
    c_noise: Tensor


def edm_preconditioners(
    sigma: Tensor, sigma_data: float, offset_noise: float = 0.0
) -> Preconditioners:
    """EDM's preconditioners at noise level ``sigma`` (any shape), with
    ``s = sqrt(sigma^2 + offset_noise^2)``: ``c_skip = sd^2 / (s^2 + sd^2)``,
    ``c_out = s sd / sqrt(s^2 + sd^2)``, ``c_in = 1 / sqrt(s^2 + sd^2)``, ``c_noise = ln(s) / 4``
    (``sd = sigma_data``; Karras et al. 2022, Table 1)."""
    s2 = sigma.square() + offset_noise**2
    total = s2 + sigma_data**2
    c_skip = sigma_data**2 / total
    c_out = s2.sqrt() * sigma_data * total.rsqrt()
    c_in = total.rsqrt()
    c_noise = s2.log() / 8.0  # ln(s) / 4 = ln(s^2) / 8
    return Preconditioners(c_skip, c_out, c_in, c_noise)


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float) -> list[float]:
    """Karras et al.'s ``steps`` noise levels and a final 0 (``steps + 1`` floats):
    ``sigma_i = (sigma_max^(1/rho) + i / (steps - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``
    for ``i = 0 .. steps - 1`` (only ``sigma_max`` when ``steps`` is 1), so the first is
    ``sigma_max``, the last nonzero ``sigma_min``, evenly spaced in ``sigma^(1/rho)``."""
    if steps < 1:
        raise ValueError(f"steps={steps} (must be >= 1)")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min={sigma_min} < sigma_max={sigma_max}")
    hi, lo = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    if steps == 1:
        return [float(sigma_max), 0.0]
    sigmas = [(hi + i / (steps - 1) * (lo - hi)) ** rho for i in range(steps)]
    sigmas[0], sigmas[-1] = float(sigma_max), float(sigma_min)  # exact end points
    return [*sigmas, 0.0]


class EDM(nn.Module):
    """EDM preconditioning, training loss and Euler sampler (module docstring). No parameters
    or buffers: a module only so a world model can hold it next to its network."""

    def __init__(self, cfg: DiffusionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.sigmas = karras_sigmas(cfg.steps, cfg.sigma_min, cfg.sigma_max, cfg.rho)
        """The sampling noise levels, ``steps + 1`` floats ending with 0."""

    def preconditioners(self, sigma: Tensor) -> Preconditioners:
        """:func:`edm_preconditioners` with this schedule's ``sigma_data`` and offset noise."""
        return edm_preconditioners(sigma, self.cfg.sigma_data, self.cfg.offset_noise)

    def denoise(self, net: Net, x: Tensor, sigma: Tensor, cond: Condition) -> Tensor:
        """``D(x; sigma) = c_skip x + c_out F(c_in x, c_noise, ctx / sigma_data, a)``: the
        denoised estimate of ``x (B, C, H, W)`` at noise levels ``sigma (B,)``, calling ``net``
        exactly once. No clamping or rounding (the sampler does that)."""
        _check_shape("x", x, cond)
        p = self.preconditioners(sigma.to(x.dtype))
        c_skip, c_out, c_in = (c.view(-1, 1, 1, 1) for c in p[:3])
        out = net(c_in * x, p.c_noise, cond.context / self.cfg.sigma_data, cond.actions)
        return c_skip * x + c_out * out

    def training_sigmas(self, n: int, like: Tensor, gen: Source = None) -> Tensor:
        """``(n,)`` noise levels ``exp(P_mean + P_std z)``, ``z ~ N(0, 1)``, clipped to
        ``[train_sigma_min, train_sigma_max]``."""
        cfg = self.cfg
        z = noise.randn((n,), like, gen)
        return (cfg.p_mean + cfg.p_std * z).exp().clamp(cfg.train_sigma_min, cfg.train_sigma_max)

    def loss(
        self, net: Net, x0: Tensor, cond: Condition, gen: Source = None, mask: Tensor | None = None
    ) -> Tensor:
        """MSE of ``F(c_in x, c_noise, ...)`` against ``(x0 - c_skip x) / c_out`` with
        ``x = x0 + offset n_c + sigma n`` (equal to EDM's ``lambda``-weighted denoising loss)."""
        _check_shape("x0", x0, cond)
        b, c = x0.shape[:2]
        sigma = self.training_sigmas(b, x0, gen)
        x = x0 + sigma.view(-1, 1, 1, 1) * noise.randn(tuple(x0.shape), x0, gen)
        if self.cfg.offset_noise > 0:
            x = x + self.cfg.offset_noise * noise.randn((b, c, 1, 1), x0, gen)
        p = self.preconditioners(sigma)
        c_skip, c_out, c_in = (v.view(-1, 1, 1, 1) for v in p[:3])
        out = net(c_in * x, p.c_noise, cond.context / self.cfg.sigma_data, cond.actions)
        return _masked_mse(out, (x0 - c_skip * x) / c_out, mask)

    def loss_plan(self, shape: tuple[int, ...]) -> Plan:
        b, c = shape[:2]
        plan: list[tuple[noise.Kind, tuple[int, ...]]] = [("randn", (b,)), ("randn", tuple(shape))]
        if self.cfg.offset_noise > 0:
            plan.append(("randn", (b, c, 1, 1)))
        return plan

    def finish(self, d: Tensor) -> Tensor:
        """A denoised estimate as the sampler keeps it: rounded to the uint8 levels (which
        clamps) with ``quantize``, else clamped to [-1, 1] with ``clamp``, else as is."""
        if self.cfg.quantize:
            return quantize(d)
        return d.clamp(-1.0, 1.0) if self.cfg.clamp else d

    def sample(
        self, net: Net, noise_shape: tuple[int, ...], cond: Condition, gen: Source = None
    ) -> Tensor:
        """Euler steps ``x <- x + (x - D(x; sigma_i)) / sigma_i (sigma_{i+1} - sigma_i)`` over
        :attr:`sigmas` from ``x ~ N(0, sigma_max^2)`` (``init_noise: unit``: ``N(0, 1)``); the
        last step (to 0) returns ``D``. ``steps`` network calls; deterministic given the start
        noise. Run it under ``torch.no_grad()`` unless gradients are wanted."""
        like = cond.context
        x = noise.randn(tuple(noise_shape), like, gen)
        _check_shape("noise", x, cond)
        if self.cfg.init_noise == "sigma_max":
            x = x * self.sigmas[0]
        b = x.shape[0]
        for sigma, nxt in zip(self.sigmas[:-1], self.sigmas[1:]):
            d = self.finish(self.denoise(net, x, x.new_full((b,), sigma), cond))
            x = d if nxt == 0 else x + (x - d) * ((nxt - sigma) / sigma)
        return x

    def sample_plan(self, shape: tuple[int, ...]) -> Plan:
        return [("randn", tuple(shape))]


def make_schedule(cfg: DiffusionConfig) -> EDM | DDPM:
    """The schedule ``cfg.schedule`` names."""
    from wm_ray.models.diamond.ddpm import DDPM

    if cfg.schedule == "edm":
        return EDM(cfg)
    if cfg.schedule == "ddpm":
        return DDPM(cfg)
    raise ValueError(f"diffusion.schedule={cfg.schedule!r} (must be 'edm' or 'ddpm')")


__all__ = [
    "EDM",
    "Condition",
    "Net",
    "Preconditioners",
    "Schedule",
    "edm_preconditioners",
    "karras_sigmas",
    "make_schedule",
    "quantize",
    "stack_context",
]
