"""Configuration of Genie (Bruce et al., "Genie: Generative Interactive Environments", ICML
2024): the ``genie`` section of the root config (the registry's ``genie`` line adds it).

Genie has three parts, each an ST transformer (spatial attention within a frame, causal
temporal attention over frames, MLP; :class:`STConfig` sizes one): the video tokenizer (a VQ-VAE
from clips to ``(T, N)`` tokens), the latent action model (a VQ-VAE whose codes are the latent
actions between consecutive frames) and the MaskGIT dynamics model over tokens and latent
actions. The defaults are a mid-size model (~15M tokenizer, ~50M dynamics parameters, a size
for one GPU) with the paper's discrete choices: 1024 tokenizer codes of dimension 32, 8 latent
actions, 16-frame clips, masking rate ~ U(0.5, 1), 25 MaskGIT steps at temperature 2. The
paper's own sizes (a 200M tokenizer, 300M LAM, up to 10.7B dynamics) are out of scope for a
default. Imports neither torch nor ray nor ``wm_ray.config``.

Genie learns from video: it never acts on what it learned. Env workers fill replay through the
section's ``behaviour`` policy (uniform random, or the acting policy of another run's
checkpoint), and offline video enters replay through ``wm-ray ingest``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol

from wm_ray.config_checks import value_range
from wm_ray.types import Ranges

if TYPE_CHECKING:  # wm_ray.config imports this module to add the ``genie`` section
    from wm_ray.config import ReplayConfig, RunConfig


@dataclass(frozen=True)
class STConfig:
    """One ST transformer: ``layers`` blocks of width ``width`` with ``heads`` heads."""

    width: int = 256
    """Token width; ``heads`` must divide it."""
    layers: int = 6
    """ST blocks (spatial attention, temporal attention, MLP)."""
    heads: int = 4
    """Attention heads of both attentions."""
    mlp: int = 4
    """Hidden width of each block's MLP in multiples of ``width``."""


@dataclass(frozen=True)
class TokenizerConfig:
    """The video tokenizer: ``patch x patch`` patches -> ST encoder -> VQ -> ST decoder."""

    RANGES: ClassVar[Ranges] = {"dead_code_every": (0, None), "ema_decay": (0, 1)}

    patch: int = 4
    """Patch side; must divide the frame side (64 x 64 frames: 16 x 16 = 256 tokens)."""
    vocab: int = 1024
    """Codebook entries (the paper: 1024)."""
    code_dim: int = 32
    """Size of each codebook vector (the paper: 32)."""
    encoder: STConfig = field(default_factory=lambda: STConfig(256, 6, 4))
    decoder: STConfig = field(default_factory=lambda: STConfig(256, 8, 4))
    codebook: Literal["grad", "ema"] = "grad"
    """grad: codebook loss ||sg(z) - e||^2; ema: EMA k-means updates instead."""
    beta: float = 0.25
    """Commitment loss weight ||z - sg(e)||^2."""
    ema_decay: float = 0.99
    """Decay of the code-usage EMA (and of the EMA codebook's statistics)."""
    dead_code_every: int = 200
    """Training calls between dead-code resets (0: never)."""
    dead_code_threshold: float = 1e-3
    """A code whose usage share falls below threshold / vocab is re-seeded from the batch."""
    lr: float = 3e-4
    clip: float = 1.0
    """Global gradient-norm clip."""


@dataclass(frozen=True)
class LatentActionConfig:
    """The latent action model: from frames ``<= t`` and ``t + 1`` one of ``vocab`` codes that
    a decoder needs, with frames ``<= t``, to reconstruct frame ``t + 1``."""

    RANGES: ClassVar[Ranges] = {"ema_decay": (0, 1), "dead_code_every": (0, None)}

    patch: int = 16
    """Patch side of the LAM's pixel input (coarser than the tokenizer's)."""
    vocab: int = 8
    """Latent actions (the paper: 8)."""
    code_dim: int = 32
    """Size of each latent-action code vector (the paper: 32)."""
    encoder: STConfig = field(default_factory=lambda: STConfig(256, 4, 4))
    decoder: STConfig = field(default_factory=lambda: STConfig(256, 4, 4))
    beta: float = 0.25
    ema_decay: float = 0.99
    dead_code_every: int = 200
    """Training calls between re-seeding of unused latent actions (0: never); with only 8 codes
    a collapse onto a few of them is the LAM's usual failure."""
    dead_code_threshold: float = 1e-3
    """An action whose usage share falls below threshold / vocab is re-seeded from the batch."""
    lr: float = 3e-4
    clip: float = 1.0


@dataclass(frozen=True)
class DynamicsConfig:
    """The MaskGIT dynamics model over tokens and latent-action embeddings."""

    RANGES: ClassVar[Ranges] = {"mask_min": (0, 1), "mask_max": (0, 1)}

    model: STConfig = field(default_factory=lambda: STConfig(512, 12, 8))
    mask_min: float = 0.5
    """Training: each clip's masking rate ~ U(mask_min, mask_max) (the paper: U(0.5, 1))."""
    mask_max: float = 1.0
    steps: int = 25
    """MaskGIT sampling steps per generated frame (the paper: 25)."""
    temperature: float = 2.0
    """MaskGIT sampling temperature (the paper: 2)."""
    schedule: Literal["cosine", "linear"] = "cosine"
    """Share of tokens still masked after each step (MaskGIT: cosine)."""
    lr: float = 3e-4
    weight_decay: float = 0.0
    clip: float = 1.0


@dataclass(frozen=True)
class ScheduleConfig:
    """The staged schedule, in agent updates (``train`` calls): the tokenizer first, then the
    latent action model and the dynamics together (the paper's order)."""

    RANGES: ClassVar[Ranges] = {"tokenizer": (0, None), "dynamics": (0, None)}

    tokenizer: int = 0
    """Update at which the tokenizer starts training."""
    dynamics: int = 5_000
    """Update at which the LAM and the dynamics start (on the tokenizer's tokens)."""
    freeze_tokenizer: bool = True
    """Stop training the tokenizer when the dynamics starts, so the dynamics learns fixed
    targets (the paper trains the tokenizer first); false trains all three from then on."""


@dataclass(frozen=True)
class GenieConfig:
    """The ``genie`` section."""

    frames: int = 16
    """Frames per training clip, and the temporal context of every part (the paper: 16). A
    replayed sequence gives its last ``frames`` steps (``replay.seq_len >= frames``)."""
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    lam: LatentActionConfig = field(default_factory=LatentActionConfig)
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    start: ScheduleConfig = field(default_factory=ScheduleConfig)
    behaviour: str = "random"
    """How env workers act: ``random`` (uniform over the action space), or the path of
    another run's directory (its family's acting policy from its latest checkpoint, read
    by every env worker: a path all nodes reach)."""


class RootConfig(Protocol):
    """What the agent reads from the root ``wm_ray.config.Config``."""

    @property
    def run(self) -> RunConfig: ...

    @property
    def replay(self) -> ReplayConfig: ...

    @property
    def genie(self) -> GenieConfig: ...


def check_root(config: RootConfig) -> list[str]:
    """Every problem of the ``genie`` section against the rest of the root config."""
    bad = check_config(config.genie)
    replay = config.replay
    if replay.seq_len < config.genie.frames:
        bad.append(
            f"replay.seq_len={replay.seq_len} (must be >= genie.frames={config.genie.frames}: "
            "each replayed sequence gives one clip)"
        )
    if replay.cross_episodes:
        bad.append(
            "replay.cross_episodes=true (Genie's clips must stay inside one episode: a cut to "
            "another episode is not an action; set replay.cross_episodes=false, as the genie "
            "presets do)"
        )
    if not config.genie.behaviour.strip():
        bad.append("genie.behaviour='' (must be 'random' or a run directory)")
    return bad


def validate_root(config: RootConfig) -> None:
    """The registry's validator: raise ``ValueError`` naming every bad value."""
    bad = check_root(config)
    if bad:
        raise ValueError("invalid genie config: " + "; ".join(bad))


def check_config(cfg: GenieConfig, image_size: int | None = None) -> list[str]:
    """Every problem of ``cfg`` as ``"genie.<key>=value (what is valid)"``; empty when valid.

    ``image_size`` (the frame side), when given, is checked against the patch sizes.
    """
    tok, lam, dyn = cfg.tokenizer, cfg.lam, cfg.dynamics
    bad = _ranges(cfg, "genie.")
    bad += _ranges(tok, "genie.tokenizer.") + _ranges(lam, "genie.lam.")
    bad += _ranges(dyn, "genie.dynamics.") + _ranges(cfg.start, "genie.start.")
    for key, st in (
        ("tokenizer.encoder", tok.encoder),
        ("tokenizer.decoder", tok.decoder),
        ("lam.encoder", lam.encoder),
        ("lam.decoder", lam.decoder),
        ("dynamics.model", dyn.model),
    ):
        bad += _ranges(st, f"genie.{key}.")
        if st.heads >= 1 and st.width % st.heads:
            bad.append(f"genie.{key}.heads={st.heads} (must divide genie.{key}.width={st.width})")
    if tok.codebook not in ("grad", "ema"):
        bad.append(f"genie.tokenizer.codebook={tok.codebook!r} (must be 'grad' or 'ema')")
    if dyn.schedule not in ("cosine", "linear"):
        bad.append(f"genie.dynamics.schedule={dyn.schedule!r} (must be 'cosine' or 'linear')")
    if dyn.mask_min > dyn.mask_max:
        bad.append(f"genie.dynamics.mask_min={dyn.mask_min} (must be <= mask_max={dyn.mask_max})")
    if cfg.start.freeze_tokenizer and cfg.start.dynamics <= cfg.start.tokenizer:
        bad.append(
            f"genie.start.dynamics={cfg.start.dynamics} (must be > genie.start.tokenizer="
            f"{cfg.start.tokenizer} while genie.start.freeze_tokenizer=true, or the tokenizer "
            "never trains)"
        )
    if cfg.frames < 2:
        bad.append(f"genie.frames={cfg.frames} (must be >= 2: a frame and its successor)")
    if image_size is not None:
        if image_size < 1:
            bad.append(f"image size {image_size} (must be >= 1)")
        for key, patch in (("tokenizer.patch", tok.patch), ("lam.patch", lam.patch)):
            if patch >= 1 and image_size >= 1 and image_size % patch:
                bad.append(f"genie.{key}={patch} (must divide the frame side {image_size})")
    return bad


def validate(cfg: GenieConfig, image_size: int | None = None) -> None:
    """Raise ``ValueError`` naming every bad value of ``cfg`` (see :func:`check_config`)."""
    bad = check_config(cfg, image_size)
    if bad:
        raise ValueError("invalid genie config: " + "; ".join(bad))


def _ranges(cfg: object, prefix: str) -> list[str]:
    """Every number of ``cfg`` outside its :func:`~wm_ray.config_checks.value_range` (the
    class's ``RANGES``, else: counts >= 1, other numbers >= 0) and the ones that must be
    strictly positive at 0."""
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


_POSITIVE = frozenset(("lr", "temperature"))
