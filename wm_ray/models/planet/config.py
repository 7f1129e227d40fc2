"""Configuration of the PlaNet agent: the ``planet`` section of the root config.

The defaults are the paper's (Hafner et al. 2019, sec. 5 and appendix A): a Gaussian RSSM with a
200-unit deterministic and a 30-dimensional stochastic state, 5-bit images, free nats 3, Adam
with learning rate 1e-3 and epsilon 1e-4, gradients clipped at norm 1000, and the CEM planner
with horizon 12, 1,000 candidates, 8 iterations and the top 100 (``planet.cem``). Presets:
``configs/planet.yaml`` selects the family sized for small vector tasks on a CPU (Pendulum-v1),
``configs/planet_dmc.yaml`` restores the paper's settings for the DeepMind Control Suite from
pixels, ``configs/planet_debug.yaml`` is test-sized. This module imports neither torch nor
``wm_ray.config`` at run time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol

from wm_ray.models.rssm.config import CEMConfig, RSSMConfig, check_cem
from wm_ray.types import Ranges

if TYPE_CHECKING:
    from wm_ray.config import EnvConfig, ReplayConfig, RunConfig

__all__ = ["CEMConfig", "LossConfig", "PlanetConfig", "RSSMConfig", "RootConfig", "validate"]


@dataclass(frozen=True)
class LossConfig:
    """The ELBO of PlaNet (eq. 3) with free nats, and latent overshooting (eq. 7)."""

    RANGES: ClassVar[Ranges] = {"overshooting": (0, None)}

    free_nats: float = 3.0
    """KL terms below this many nats (per step) are constant: no gradient."""
    kl_scale: float = 1.0
    """Scale of the one-step KL(q(s_t | ...) || p(s_t | s_{t-1}, a_{t-1}))."""
    overshooting: int = 0
    """Latent overshooting distance D: KL terms of the priors predicted 2..D steps open loop
    against the (stop-gradient) posteriors. 0 or 1: the one-step ELBO only (the default)."""
    overshooting_scale: float = 1.0
    """Scale of the mean of the multi-step KL terms (the paper's beta_d, equal for all d)."""
    image_scale: float = 1.0
    """Image log-likelihood (unit-variance Gaussian: half the sum of squared errors)."""
    vector_scale: float = 1.0
    """Vector log-likelihood (unit-variance Gaussian on symlog(vector))."""
    reward_scale: float = 1.0
    """Reward log-likelihood (unit-variance Gaussian)."""


@dataclass(frozen=True)
class OptimConfig:
    """Adam over the whole world model (PlaNet: lr 1e-3, eps 1e-4, clip 1000)."""

    lr: float = 1e-3
    """Learning rate."""
    eps: float = 1e-4
    """Adam epsilon."""
    clip: float = 1000.0
    """Gradient-norm clip."""
    warmup: int = 0
    """Linear learning-rate warmup steps (0: none)."""


@dataclass(frozen=True)
class PlanetConfig:
    """The ``planet`` section: network sizes, image bits, losses, optimizer and planner."""

    RANGES: ClassVar[Ranges] = {"bits": (1, 8), "layers": (0, None)}

    units: int = 200
    """Width of the MLPs (vector encoder and decoder, reward head)."""
    layers: int = 2
    """Hidden layers of those MLPs."""
    cnn_depth: int = 32
    """Channels of the first conv stage of the image encoder / decoder (doubling per stage)."""
    cnn_min_res: int = 4
    """Resolution at which the conv encoder stops (and the decoder starts)."""
    bits: int = 5
    """Image bit depth: frames are reduced to ``bits`` bits and dequantized with uniform noise
    (PlaNet: 5)."""
    report_context: int = 5
    """report(): posterior steps before the open-loop prediction starts."""
    planner: Literal["cem"] = "cem"
    """How the agent acts: ``cem`` (model-predictive control in latent space)."""
    rssm: RSSMConfig = field(
        default_factory=lambda: RSSMConfig(
            latent="gaussian", deter=200, hidden=200, stoch=30, min_std=0.1, initial="zeros"
        )
    )
    """The RSSM: Gaussian latents (PlaNet: deterministic 200, stochastic 30)."""
    cem: CEMConfig = field(default_factory=CEMConfig)
    """The CEM planner (PlaNet: horizon 12, 1,000 candidates, 8 iterations, top 100)."""
    loss: LossConfig = field(default_factory=LossConfig)
    """ELBO scales, free nats, overshooting."""
    opt: OptimConfig = field(default_factory=OptimConfig)
    """The optimizer."""


class RootConfig(Protocol):
    """What the agent reads from the root ``wm_ray.config.Config``."""

    @property
    def run(self) -> RunConfig: ...

    @property
    def env(self) -> EnvConfig: ...

    @property
    def replay(self) -> ReplayConfig: ...

    @property
    def planet(self) -> PlanetConfig: ...


def validate(config: RootConfig) -> None:
    """The registry's validator: :func:`check_config` of the root config's section."""
    check_config(config.planet)


def check_config(config: PlanetConfig) -> None:
    """Raise ``ValueError`` naming every invalid setting of ``config`` and what is valid."""
    rssm, loss, opt = config.rssm, config.loss, config.opt
    bad = []
    if rssm.latent != "gaussian":
        bad.append(
            f"planet.rssm.latent={rssm.latent!r} (PlaNet's RSSM is Gaussian: use 'gaussian'; "
            "categorical latents are the dreamer family's)"
        )
    positive = {
        "units": config.units,
        "cnn_depth": config.cnn_depth,
        "cnn_min_res": config.cnn_min_res,
        "rssm.deter": rssm.deter,
        "rssm.hidden": rssm.hidden,
        "rssm.stoch": rssm.stoch,
        "rssm.min_std": rssm.min_std,
        "opt.lr": opt.lr,
        "opt.eps": opt.eps,
    }
    bad += [f"planet.{key}={value} (must be > 0)" for key, value in positive.items() if value <= 0]
    if not 1 <= config.bits <= 8:
        bad.append(f"planet.bits={config.bits} (must be in [1, 8])")
    nonneg = {
        "layers": config.layers,
        "loss.free_nats": loss.free_nats,
        "loss.overshooting": loss.overshooting,
        "opt.clip": opt.clip,
        "opt.warmup": opt.warmup,
    }
    bad += [f"planet.{k}={v} (must be >= 0)" for k, v in nonneg.items() if v < 0]
    bad += check_cem(config.cem, "planet.cem")
    if config.cem.value:
        bad.append("planet.cem.value=True (PlaNet has no critic: leave it false)")
    if bad:
        raise ValueError("invalid planet config: " + "; ".join(bad))
