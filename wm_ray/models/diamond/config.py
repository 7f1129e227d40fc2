"""Configuration of DIAMOND (Alonso et al., NeurIPS 2024): the ``diamond`` section.

The diffusion core:
``DenoiserConfig`` picks and sizes the network ``F`` (``kind: unet`` — DIAMOND's U-Net — or
``kind: dit``, a diffusion transformer after Peebles & Xie 2023); ``DiffusionConfig`` picks the
noise schedule (``schedule: edm`` — EDM, Karras et al. 2022, with DIAMOND's settings — or
``schedule: ddpm``, Ho et al. 2020) and the number of context frames. The defaults are the
paper's (its public ``config/agent/default.yaml``, ``config/trainer.yaml``); the family README
lists every deviation. :class:`DiamondConfig` is the ``diamond`` section of the root config:
the two core configs, the reward / termination model, the actor-critic, the staged start of
the three parts and the denoiser's optimizer; :func:`validate` is the registry's validator.
Imports neither torch nor ``wm_ray.config``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol

from wm_ray.config_checks import value_range
from wm_ray.types import Ranges

if TYPE_CHECKING:  # wm_ray.config imports this module to add the ``diamond`` section
    from wm_ray.config import ReplayConfig, RunConfig


@dataclass(frozen=True)
class DenoiserConfig:
    """The network ``F(x_noisy, c_noise, context, actions) -> (B, C, H, W)``.

    ``unet``: DIAMOND's U-Net; one level per entry of ``channels``, ``res_blocks`` residual
    blocks per level on the way down and ``res_blocks + 1`` on the way up, a stride-2 conv
    between levels, two residual blocks (with self-attention when ``mid_attention``) at the
    bottom. ``dit``: ``depth`` adaLN-Zero transformer blocks of ``width`` over the
    ``patch x patch`` patches. Both condition every block on a vector of ``cond_dim`` made from
    the noise level and the last ``context`` actions.
    """

    RANGES: ClassVar[Ranges] = {"dropout": (0, 1)}

    kind: Literal["unet", "dit"] = "unet"
    """unet: DIAMOND's U-Net (the paper); dit: a diffusion transformer."""
    cond_dim: int = 256
    """Width of the conditioning vector (noise-level features + flattened action embeddings);
    each of the ``context`` actions is embedded in ``cond_dim / context`` dims."""
    channels: tuple[int, ...] = (64, 64, 64, 64)
    """unet: channels of each resolution level (DIAMOND: 64 at all four levels)."""
    res_blocks: int = 2
    """unet: residual blocks per level on the way down (``res_blocks + 1`` on the way up)."""
    mid_attention: bool = True
    """unet: self-attention in the two bottom residual blocks (DIAMOND: yes, none elsewhere)."""
    patch: int = 4
    """dit: patch side; the frame side must be a multiple of it."""
    width: int = 384
    """dit: token width."""
    depth: int = 6
    """dit: transformer blocks."""
    heads: int = 6
    """dit: attention heads; must divide ``width``."""
    mlp_ratio: float = 4.0
    """dit: hidden width of each block's MLP over ``width``."""
    dropout: float = 0.0
    """dit: dropout on attention weights and MLP hidden units (the DiT paper uses none)."""


@dataclass(frozen=True)
class DiffusionConfig:
    """The noise schedule: EDM (the paper) or DDPM, and how many past frames condition it."""

    RANGES: ClassVar[Ranges] = {"beta_start": (0, 1), "beta_end": (0, 1)}

    schedule: Literal["edm", "ddpm"] = "edm"
    """edm: Karras et al. 2022 with DIAMOND's settings (the paper); ddpm: Ho et al. 2020."""
    context: int = 4
    """Past frames (and actions) conditioning the next frame (DIAMOND: 4)."""
    # --- EDM
    sigma_data: float = 0.5
    """Standard deviation of the data (frames in [-1, 1])."""
    p_mean: float = -0.4
    """Training noise levels: ``ln(sigma) ~ N(p_mean, p_std^2)``."""
    p_std: float = 1.2
    train_sigma_min: float = 2e-3
    """Training noise levels are clipped to ``[train_sigma_min, train_sigma_max]`` (DIAMOND)."""
    train_sigma_max: float = 20.0
    offset_noise: float = 0.3
    """Std of the per-(frame, channel) constant noise added in training (DIAMOND: 0.3); the
    preconditioners see ``sigma' = sqrt(sigma^2 + offset_noise^2)`` in training and sampling."""
    steps: int = 3
    """Euler steps (network calls) per sampled frame (DIAMOND: 3)."""
    sigma_min: float = 2e-3
    """Sampling: the last nonzero noise level of the Karras schedule."""
    sigma_max: float = 5.0
    """Sampling: the first noise level (DIAMOND: 5, not EDM's image default 80)."""
    rho: float = 7.0
    """Sampling: the schedule's spacing exponent (Karras et al.: 7)."""
    init_noise: Literal["sigma_max", "unit"] = "sigma_max"
    """Sampling starts from ``N(0, sigma_max^2)`` (EDM, Algorithm 1); ``unit``: ``N(0, 1)`` as
    DIAMOND's released code does."""
    clamp: bool = True
    """Sampling: clamp each denoised estimate to [-1, 1] (DIAMOND)."""
    quantize: bool = True
    """Sampling: round each denoised estimate to the 256 uint8 levels (DIAMOND; implies clamp)."""
    # --- DDPM
    ddpm_steps: int = 1000
    """Diffusion steps T of the linear beta schedule."""
    beta_start: float = 1e-4
    beta_end: float = 0.02
    ddpm_sample_steps: int = 0
    """Ancestral sampling steps: 0 uses all T; fewer respaces the schedule (Nichol & Dhariwal
    2021) over evenly spaced steps of the T."""


@dataclass(frozen=True)
class DiffusionCoreConfig:
    """The two parts together (the agent's section embeds these two fields)."""

    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)


@dataclass(frozen=True)
class DenoiserTrainConfig:
    """How the denoiser learns: its optimizer and how many next frames per replayed sequence."""

    RANGES: ClassVar[Ranges] = {"warmup": (0, None), "clip": (0, None)}

    targets: int = 1
    """Next frames learned per replayed sequence and update (DIAMOND: one segment of
    ``context + 1`` frames per batch row, 32 rows)."""
    lr: float = 1e-4
    weight_decay: float = 0.01
    clip: float = 1.0
    """Global gradient-norm clip (DIAMOND: 1 for the denoiser)."""
    warmup: int = 100
    """Updates of linear learning-rate warmup (DIAMOND: 100)."""


@dataclass(frozen=True)
class RewardEndConfig:
    """The reward / termination model: a CNN over ``[o_t, o_{t+1}]`` (adaptive group norm on
    the action ``a_t``), an LSTM over the transitions, heads for the reward's sign (3 classes)
    and the end of the episode (a Bernoulli logit)."""

    RANGES: ClassVar[Ranges] = {"burn_in": (0, None), "warmup": (0, None), "clip": (0, None)}

    channels: tuple[int, ...] = (32, 32, 32, 32)
    """Channels of each level; every level ends with a stride-2 conv (the frame side must be a
    multiple of ``2^levels``)."""
    res_blocks: int = 2
    """Residual blocks per level."""
    cond_dim: int = 128
    """Width of the action embedding that conditions every block."""
    lstm: int = 512
    batch_norm: bool = True
    """Batch-normalize the flattened features (per feature, no affine; running statistics in
    eval) and scale them by ``F^(-1/4)`` before the LSTM. Not in DIAMOND: centered, the
    static background no longer moves every LSTM input weight the same way under Adam (the
    pre-activations by about lr x F per update), and scaled, the gates start unsaturated
    (``README.md``, *On ALE Pong*)."""
    class_balance: bool = False
    """Weight the reward-sign cross-entropy by the inverse frequency of each class in the batch
    (not in DIAMOND; its probabilities are then no longer calibrated)."""
    burn_in: int = 4
    """Replayed transitions that only warm the LSTM up before the loss counts (DIAMOND: 4)."""
    lr: float = 1e-4
    weight_decay: float = 0.01
    clip: float = 100.0
    warmup: int = 100


@dataclass(frozen=True)
class ActorCriticConfig:
    """The CNN + LSTM actor-critic (:class:`~wm_ray.models.common.actor_critic.ActorCritic`,
    channels ``d, d, 2d, 2d``), trained in imagination with REINFORCE and a value baseline."""

    RANGES: ClassVar[Ranges] = {
        "burn_in": (0, None),
        "gamma": (0, 1),
        "lam": (0, 1),
        "epsilon": (0, 1),
        "warmup": (0, None),
        "clip": (0, None),
    }

    cnn_depth: int = 32
    lstm: int = 512
    horizon: int = 15
    """Imagined steps from each start (DIAMOND: 15)."""
    gamma: float = 0.985
    lam: float = 0.95
    entropy: float = 0.001
    burn_in: int = 4
    """Real frames fed to the LSTM before imagination starts; <= replay.seq_len - 1."""
    epsilon: float = 0.01
    """Acting (explore): probability of a uniformly random action (DIAMOND: 0.01)."""
    eval_temperature: float = 1.0
    """Acting (eval): policy temperature (0: the most likely action)."""
    lr: float = 1e-4
    weight_decay: float = 0.0
    clip: float = 100.0
    warmup: int = 100


@dataclass(frozen=True)
class ScheduleConfig:
    """When each part starts training, in agent updates; once started, a part trains on every
    update. DIAMOND trains all three from the start (after its first collection)."""

    RANGES: ClassVar[Ranges] = dict.fromkeys(("denoiser", "reward_end", "actor_critic"), (0, None))

    denoiser: int = 0
    reward_end: int = 0
    actor_critic: int = 0


@dataclass(frozen=True)
class DiamondConfig:
    """The ``diamond`` section."""

    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    denoiser_train: DenoiserTrainConfig = field(default_factory=DenoiserTrainConfig)
    reward_end: RewardEndConfig = field(default_factory=RewardEndConfig)
    ac: ActorCriticConfig = field(default_factory=ActorCriticConfig)
    start: ScheduleConfig = field(default_factory=ScheduleConfig)

    @property
    def core(self) -> DiffusionCoreConfig:
        """The diffusion core's two configs."""
        return DiffusionCoreConfig(self.denoiser, self.diffusion)


class RootConfig(Protocol):
    """What the agent reads from the root ``wm_ray.config.Config``."""

    @property
    def run(self) -> RunConfig: ...

    @property
    def replay(self) -> ReplayConfig: ...

    @property
    def diamond(self) -> DiamondConfig: ...


def validate(config: RootConfig) -> None:
    """The registry's validator: raise ``ValueError`` naming every bad value of the section."""
    bad = check_diamond(config.diamond, seq_len=config.replay.seq_len)
    if bad:
        raise ValueError("invalid diamond config: " + "; ".join(bad))


def check_diamond(
    cfg: DiamondConfig,
    image_size: int | None = None,
    num_actions: int | None = None,
    seq_len: int | None = None,
) -> list[str]:
    """Every problem of the ``diamond`` section (the core's :func:`check_config` and the
    agent's parts), as ``"diamond.<key>=value (what is valid)"``."""
    bad = check_config(cfg.core, image_size, num_actions)
    for name in ("denoiser_train", "reward_end", "ac", "start"):
        bad += _ranges(getattr(cfg, name), f"diamond.{name}.")
    re, ac, k = cfg.reward_end, cfg.ac, cfg.diffusion.context
    if not re.channels or any(c < 1 for c in re.channels):
        bad.append(f"diamond.reward_end.channels={re.channels} (must be one or more widths)")
    if image_size is not None:
        if image_size % 16:
            bad.append(f"image size {image_size} (the actor-critic needs a multiple of 16)")
        factor = 2 ** len(re.channels)
        if image_size % factor:
            bad.append(
                f"diamond.reward_end.channels={re.channels} ({len(re.channels)} levels: the "
                f"frame side {image_size} must be a multiple of {factor})"
            )
    if seq_len is not None:
        if seq_len < k + 1:
            bad.append(
                f"diamond.diffusion.context={k} (replay.seq_len={seq_len} must hold the "
                f"context and a next frame: >= {k + 1})"
            )
        if ac.burn_in > seq_len - 1:
            bad.append(
                f"diamond.ac.burn_in={ac.burn_in} (must be <= replay.seq_len - 1 = "
                f"{seq_len - 1}: the last frame of a sequence starts imagination)"
            )
        if re.burn_in > seq_len - 2:
            bad.append(
                f"diamond.reward_end.burn_in={re.burn_in} (must be <= replay.seq_len - 2 = "
                f"{seq_len - 2}: a sequence of T frames holds T - 1 transitions, one must count)"
            )
    return bad


def check_config(
    cfg: DiffusionCoreConfig,
    image_size: int | None = None,
    num_actions: int | None = None,
    prefix: str = "diamond.",
) -> list[str]:
    """Every problem of ``cfg`` as ``"<prefix>field=value (what is valid)"``; empty when valid.

    ``image_size`` (the frame side) and ``num_actions``, when given, are checked against the
    denoiser (U-Net levels, DiT patch). The caller raises ``ValueError`` with the list.
    """
    den, dif = cfg.denoiser, cfg.diffusion
    d, f = f"{prefix}denoiser.", f"{prefix}diffusion."
    bad: list[str] = []
    if den.kind not in ("unet", "dit"):
        bad.append(f"{d}kind={den.kind!r} (must be 'unet' or 'dit')")
    if dif.schedule not in ("edm", "ddpm"):
        bad.append(f"{f}schedule={dif.schedule!r} (must be 'edm' or 'ddpm')")
    if dif.init_noise not in ("sigma_max", "unit"):
        bad.append(f"{f}init_noise={dif.init_noise!r} (must be 'sigma_max' or 'unit')")
    bad += _ranges(den, d) + _ranges(dif, f)
    if not den.channels or any(c < 1 for c in den.channels):
        bad.append(f"{d}channels={den.channels} (must be one or more positive widths)")
    if dif.context >= 1 and den.cond_dim % dif.context:
        bad.append(
            f"{d}cond_dim={den.cond_dim} (must be a multiple of diffusion.context="
            f"{dif.context}: each action is embedded in cond_dim / context dims)"
        )
    if den.cond_dim % 2:
        bad.append(f"{d}cond_dim={den.cond_dim} (must be even: cos and sin noise features)")
    if den.kind == "dit" and den.heads >= 1 and den.width % den.heads:
        bad.append(f"{d}heads={den.heads} (must divide width={den.width})")
    if den.kind == "dit" and den.width % 4:
        bad.append(f"{d}width={den.width} (must be a multiple of 4: 2-D sin-cos positions)")
    if dif.sigma_min >= dif.sigma_max:
        bad.append(f"{f}sigma_min={dif.sigma_min} (must be < sigma_max={dif.sigma_max})")
    if dif.train_sigma_min >= dif.train_sigma_max:
        bad.append(
            f"{f}train_sigma_min={dif.train_sigma_min} (must be < train_sigma_max="
            f"{dif.train_sigma_max})"
        )
    if dif.beta_start > dif.beta_end or dif.beta_end >= 1:
        bad.append(f"{f}beta_end={dif.beta_end} (need beta_start={dif.beta_start} <= beta_end < 1)")
    if dif.ddpm_sample_steps > dif.ddpm_steps:
        bad.append(
            f"{f}ddpm_sample_steps={dif.ddpm_sample_steps} (must be <= ddpm_steps="
            f"{dif.ddpm_steps}; 0 uses all)"
        )
    if image_size is not None:
        if den.kind == "unet":
            factor = 2 ** max(len(den.channels) - 1, 0)
            if image_size % factor:
                bad.append(
                    f"{d}channels={den.channels} ({len(den.channels)} levels halve the frame "
                    f"{len(den.channels) - 1} times: the frame side {image_size} must be a "
                    f"multiple of {factor})"
                )
        elif den.patch >= 1 and image_size % den.patch:
            bad.append(f"{d}patch={den.patch} (must divide the frame side {image_size})")
    if num_actions is not None and num_actions < 1:
        bad.append(f"num_actions={num_actions} (the denoiser needs a discrete action space)")
    return bad


def _ranges(cfg: object, prefix: str) -> list[str]:
    """Every number of ``cfg`` outside its :func:`~wm_ray.config_checks.value_range` (the
    class's ``RANGES``, else the config-wide rule: counts >= 1, other numbers >= 0), and the
    ones that must be strictly positive at 0."""
    bad = []
    for f in fields(cfg):  # type: ignore[arg-type]
        v = getattr(cfg, f.name)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        lo, hi = value_range(type(cfg), f.name)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            valid = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
            bad.append(f"{prefix}{f.name}={v} (must be {valid})")
        elif f.name in _POSITIVE and v <= 0:
            bad.append(f"{prefix}{f.name}={v} (must be > 0)")
    return bad


_POSITIVE = frozenset(
    (
        "mlp_ratio",
        "sigma_data",
        "p_std",
        "train_sigma_min",
        "train_sigma_max",
        "sigma_min",
        "sigma_max",
        "rho",
        "beta_start",
        "lr",
        "lstm",
        "cnn_depth",
    )
)
