"""Configuration of the DreamerV3 agent: the ``dreamer`` section of the root config.

The defaults are tuned for fast single-machine CPU runs on small vector tasks (the default task,
CartPole-v1, reaches an eval return above 400 in about 5 minutes on 2 cores): the debug-size
networks, discount 0.99, probability-valued imagined continues, backprop through the dynamics
for discrete actions too, and larger learning rates. ``configs/dreamer.yaml`` restores DreamerV3's
own settings (Hafner et al. 2023, hyperparameter table) at size S, and
``configs/size_{debug,xs,s,m,l}.yaml`` switch network sizes. The agent reads only
``config.dreamer``, ``config.run.seed``, ``config.run.device``, ``config.replay.batch_size`` and
``config.replay.seq_len`` (see :class:`RootConfig`). This module imports neither torch nor
``wm_ray.config`` at run time, so the root config can build its section from it cheaply.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol

from wm_ray.models.rssm.config import CEMConfig, RSSMConfig, check_cem
from wm_ray.types import Ranges

if TYPE_CHECKING:  # wm_ray.config builds its ``dreamer`` section from this module
    from wm_ray.config import ReplayConfig, RunConfig
    from wm_ray.registry import Capabilities

__all__ = [
    "ActorCriticConfig",
    "CEMConfig",
    "DreamerConfig",
    "LossConfig",
    "OptimConfig",
    "RSSMConfig",
    "RootConfig",
    "capabilities",
    "check_config",
    "validate",
]


@dataclass(frozen=True)
class LossConfig:
    """World-model loss scales (DreamerV3 eq. 5) and free bits."""

    free_bits: float = 1.0
    """Each KL term is clipped from below at this many nats (per step)."""
    dyn_scale: float = 0.5
    """Dynamics loss KL(sg(post) || prior): trains the prior."""
    rep_scale: float = 0.1
    """Representation loss KL(post || sg(prior)): regularizes the posterior."""
    image_scale: float = 1.0
    """Image reconstruction (sum of squared errors in x / 255 - 0.5 space)."""
    vector_scale: float = 1.0
    """Vector reconstruction (sum of squared errors against symlog(vector))."""
    reward_scale: float = 1.0
    """Two-hot cross-entropy of the reward head."""
    cont_scale: float = 1.0
    """Binary cross-entropy of the continue head (target 1 - is_terminal)."""


@dataclass(frozen=True)
class ActorCriticConfig:
    """Behavior learning in imagination (DreamerV3 sec. 3)."""

    RANGES: ClassVar[Ranges] = {
        **dict.fromkeys(("gamma", "lam", "actor_unimix", "slow_critic_fraction"), (0, 1)),
        **{"retnorm_decay": (0, 1), "retnorm_low": (0, 100), "retnorm_high": (0, 100)},
    }

    horizon: int = 30
    """Imagined steps from every posterior state of a batch (DreamerV3: 15)."""
    gamma: float = 0.99
    """Discount (DreamerV3: 0.997 = 1 - 1/333)."""
    lam: float = 0.95
    """Lambda of the lambda-returns."""
    actor_grad: Literal["auto", "reinforce", "dynamics"] = "dynamics"
    """Actor gradient; auto (DreamerV3): reinforce for discrete, dynamics backprop for continuous
    actions; dynamics: backprop through the model (straight-through for discrete actions)."""
    entropy: float = 1e-3
    """Actor entropy regularizer (on normalized returns; DreamerV3: 3e-4)."""
    actor_unimix: float = 0.01
    """Uniform mix of the discrete action distribution."""
    actor_min_std: float = 0.1
    """Lower bound of the continuous action std."""
    actor_max_std: float = 1.0
    """Upper bound of the continuous action std."""
    imag_cont: Literal["mode", "mean"] = "mean"
    """Imagined continue flags: the head's probability (mean) or its mode (0/1, DreamerV3)."""
    slow_critic_fraction: float = 0.02
    """EMA step of the slow critic toward the critic, once per update."""
    slow_critic_reg: float = 1.0
    """Weight of the critic's cross-entropy toward the slow critic's prediction."""
    slow_critic_target: bool = False
    """Compute lambda-returns with the slow critic instead of the online critic."""
    retnorm_decay: float = 0.99
    """EMA decay of the return percentiles."""
    retnorm_limit: float = 1.0
    """Returns are scaled by max(limit, P95 - P5): never scaled up."""
    retnorm_low: float = 5.0
    """Lower return percentile."""
    retnorm_high: float = 95.0
    """Upper return percentile."""


@dataclass(frozen=True)
class OptimConfig:
    """Three Adam optimizers with global-norm clipping (DreamerV3 appendix)."""

    model_lr: float = 6e-4
    """World-model learning rate (DreamerV3: 1e-4)."""
    model_eps: float = 1e-8
    """World-model Adam epsilon."""
    model_clip: float = 1000.0
    """World-model gradient-norm clip."""
    actor_lr: float = 1e-4
    """Actor learning rate (DreamerV3: 3e-5)."""
    actor_eps: float = 1e-5
    """Actor Adam epsilon."""
    actor_clip: float = 100.0
    """Actor gradient-norm clip."""
    critic_lr: float = 5e-4
    """Critic learning rate (DreamerV3: 3e-5)."""
    critic_eps: float = 1e-5
    """Critic Adam epsilon."""
    critic_clip: float = 100.0
    """Critic gradient-norm clip."""
    warmup: int = 0
    """Linear learning-rate warmup steps of all three optimizers (0: none)."""
    anneal: int = 0
    """Updates of linear learning-rate decay of all three optimizers, to ``anneal_to`` times the
    rates (0: constant rates, as in DreamerV3)."""
    anneal_to: float = 0.1
    """Fraction of the learning rates the decay ends at (and keeps afterwards)."""
    anneal_after: int = 0
    """Updates at the full rates (after the warmup) before the decay begins."""


@dataclass(frozen=True)
class DreamerConfig:
    """The ``dreamer`` section: sizes of the networks plus the nested sections above."""

    RANGES: ClassVar[Ranges] = {"layers": (0, None)}

    units: int = 128
    """Width of every MLP (vector encoder and decoder, reward, continue, actor, critic)."""
    layers: int = 1
    """Hidden layers of every MLP."""
    cnn_depth: int = 8
    """Channels of the first conv stage; they double at every stage."""
    cnn_min_res: int = 4
    """Resolution at which the conv encoder stops (and the decoder starts)."""
    bins: int = 255
    """Two-hot bins of the reward head and the critic."""
    report_context: int = 5
    """report(): posterior steps before the open-loop prediction starts."""
    encoder: str = "conv"
    """The image encoder: ``conv`` (DreamerV3's CNN, trained with the world model) or ``jepa``
    (the target encoder of a JEPA run, ``jepa_run``: frozen, or fine-tuned with
    ``jepa_finetune``; its patch features, concatenated, are the image embedding)."""
    jepa_run: str = ""
    """``encoder: jepa``: the directory of a ``jepa`` run; its latest checkpoint's target
    encoder is loaded when the agent is built (every env worker's too: a path all nodes
    reach). Its frames must have the env's image shape."""
    jepa_finetune: bool = False
    """``encoder: jepa``: train the loaded encoder with the world model (else it stays frozen)."""
    planner: Literal["actor", "cem"] = "actor"
    """How the agent acts: ``actor`` (the policy learned in imagination) or ``cem`` (PlaNet's
    model-predictive control: CEM over action sequences on the learned reward and continue
    heads, plus the critic at the horizon with ``cem.value``; continuous actions only). The
    actor and critic are trained either way."""
    cem: CEMConfig = field(default_factory=CEMConfig)
    """The CEM planner of ``planner: cem``."""
    rssm: RSSMConfig = field(default_factory=lambda: RSSMConfig(deter=128, hidden=128))
    """The RSSM (GRU and layers around it 128 wide by default)."""
    loss: LossConfig = field(default_factory=LossConfig)
    """World-model loss scales."""
    ac: ActorCriticConfig = field(default_factory=ActorCriticConfig)
    """Actor-critic learning in imagination."""
    opt: OptimConfig = field(default_factory=OptimConfig)
    """Optimizers."""


class RootConfig(Protocol):
    """What the agent reads from the root ``wm_ray.config.Config``."""

    @property
    def run(self) -> RunConfig: ...

    @property
    def replay(self) -> ReplayConfig: ...

    @property
    def dreamer(self) -> DreamerConfig: ...


def validate(config: RootConfig) -> None:
    """The registry's validator: :func:`check_config` of the root config's section."""
    check_config(config.dreamer)


def check_config(config: DreamerConfig, section: str = "dreamer") -> None:
    """Raise ``ValueError`` naming every out-of-range setting of ``config`` (the root config's
    section ``section``: ``dreamer``, or a family built on Dreamer's, e.g. ``modular``)."""
    rssm, loss, ac, opt = config.rssm, config.loss, config.ac, config.opt
    positive = {
        "units": config.units,
        "cnn_depth": config.cnn_depth,
        "cnn_min_res": config.cnn_min_res,
        "rssm.deter": rssm.deter,
        "rssm.hidden": rssm.hidden,
        "rssm.stoch": rssm.stoch,
        "rssm.classes": rssm.classes,
        "rssm.min_std": rssm.min_std,
        "ac.horizon": ac.horizon,
        "opt.model_lr": opt.model_lr,
        "opt.actor_lr": opt.actor_lr,
        "opt.critic_lr": opt.critic_lr,
    }
    bad = [f"{key}={value} (must be > 0)" for key, value in positive.items() if value <= 0]
    nonneg = {
        "layers": config.layers,
        "loss.free_bits": loss.free_bits,
        "ac.entropy": ac.entropy,
        "opt.warmup": opt.warmup,
        "opt.anneal": opt.anneal,
        "opt.anneal_after": opt.anneal_after,
    }
    bad += [f"{k}={v} (must be >= 0)" for k, v in nonneg.items() if v < 0]
    unit = {
        "rssm.unimix": rssm.unimix,
        "ac.actor_unimix": ac.actor_unimix,
        "ac.retnorm_decay": ac.retnorm_decay,
    }
    bad += [f"{k}={v} (must be in [0, 1))" for k, v in unit.items() if not 0 <= v < 1]
    closed = {
        "ac.gamma": ac.gamma,
        "ac.lam": ac.lam,
        "ac.slow_critic_fraction": ac.slow_critic_fraction,
    }
    bad += [f"{k}={v} (must be in [0, 1])" for k, v in closed.items() if not 0 <= v <= 1]
    if not 0 < opt.anneal_to <= 1:
        bad.append(f"opt.anneal_to={opt.anneal_to} (must be in (0, 1])")
    if config.bins < 2:
        bad.append(f"bins={config.bins} (must be >= 2)")
    if not 0 < ac.actor_min_std <= ac.actor_max_std:
        bad.append(f"ac.actor_min_std/max_std={ac.actor_min_std}/{ac.actor_max_std}")
    if config.planner == "cem":
        bad += check_cem(config.cem, "cem")
    if section == "dreamer" and config.encoder not in ("conv", "jepa"):
        bad.append(f"encoder={config.encoder!r} (must be 'conv' or 'jepa')")
    if section == "dreamer" and config.encoder == "jepa" and not config.jepa_run.strip():
        bad.append("jepa_run='' (encoder=jepa needs the directory of a jepa run)")
    if bad:
        raise ValueError(f"invalid {section} config: " + "; ".join(f"{section}.{b}" for b in bad))


def capabilities(config: RootConfig, family: str = "dreamer") -> tuple[Capabilities, str] | None:
    """The registry's per-config capabilities: with ``planner: cem`` continuous actions only
    (the planner searches a continuous action box); with ``encoder: jepa`` (Dreamer's own
    section) image observations are needed."""
    from wm_ray.registry import MODELS

    section = getattr(config, family)
    caps, settings = MODELS[family].capabilities, []
    if section.planner == "cem":
        caps = dataclasses.replace(caps, actions=("continuous",))
        settings.append(f"{family}.planner=cem")
    if family == "dreamer" and section.encoder == "jepa":
        caps = dataclasses.replace(caps, needs=("image",))
        settings.append(f"{family}.encoder=jepa")
    return (caps, " and ".join(settings)) if settings else None
