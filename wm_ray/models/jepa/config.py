"""Configuration of I-JEPA (Assran et al., "Self-Supervised Learning from Images with a
Joint-Embedding Predictive Architecture", CVPR 2023): the ``jepa`` section of the root config
(the registry's ``jepa`` line adds it).

A ViT context encoder sees one large block of patches with the target blocks cut out; a
narrower ViT predictor, given the context tokens and a learned mask token at each target
position, predicts the target encoder's features of the target patches; the target encoder is
an EMA of the context encoder (momentum rising linearly from ``ema_start`` to ``ema_end``). The
defaults are ViT-S-class on 64x64 frames (width 384, depth 12, 6 heads, patch 8: 64 patches; a
predictor of width 192 and depth 6) with the paper's masking: 4 target blocks of scale
(0.15, 0.2) and aspect ratio (0.75, 1.5), one context block of scale (0.85, 1.0). Imports
neither torch nor ray nor ``wm_ray.config``.

JEPA learns representations from frames and never acts on them: env workers fill replay
through ``behaviour`` (uniform random, or another run's acting policy), as Genie's do.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol

from wm_ray.config_checks import value_range
from wm_ray.models.rssm.config import CEMConfig, check_cem
from wm_ray.types import Ranges

if TYPE_CHECKING:  # wm_ray.config imports this module to add the ``jepa`` section
    from wm_ray.config import ReplayConfig, RunConfig


@dataclass(frozen=True)
class ViTConfig:
    """A stack of ``depth`` pre-norm attention blocks of width ``width``."""

    width: int = 384
    """Token width; ``heads`` must divide it."""
    depth: int = 12
    heads: int = 6
    mlp: int = 4
    """Hidden width of each block's MLP in multiples of ``width``."""


@dataclass(frozen=True)
class MaskConfig:
    """How each update splits the patch grid into context and targets (one block size per
    batch, drawn from the agent's generator)."""

    RANGES: ClassVar[Ranges] = {
        "target_scale_min": (0, 1),
        "target_scale_max": (0, 1),
        "context_scale_min": (0, 1),
        "context_scale_max": (0, 1),
        "ratio_min": (0, 1),
        "ratio_max": (0, 1),
    }

    kind: Literal["multiblock", "random"] = "multiblock"
    """multiblock: the paper's target blocks and context block; random: a random share
    ``ratio`` of the patches are the targets, the rest the context (the seeds' second
    collator; a weaker task, kept for comparison)."""
    targets: int = 4
    """Target blocks per image (the paper: 4)."""
    target_scale_min: float = 0.15
    """Each target block covers a share ~ U(min, max) of the patches (the paper: 0.15-0.2)."""
    target_scale_max: float = 0.2
    aspect_min: float = 0.75
    """Target blocks' height / width ~ U(min, max) (the paper: 0.75-1.5)."""
    aspect_max: float = 1.5
    context_scale_min: float = 0.85
    """The context block covers a share ~ U(min, max) (the paper: 0.85-1.0), square, before
    the target patches are removed from it."""
    context_scale_max: float = 1.0
    min_keep: int = 4
    """Fewest context patches an image keeps; a placement leaving fewer is redrawn."""
    ratio_min: float = 0.4
    """kind=random: the share of target patches ~ U(min, max)."""
    ratio_max: float = 0.6


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with a linear warmup, then a linear decay to ``lr_end_scale * lr`` at
    ``jepa.steps``; weight decay (not on biases and norms) follows a cosine from
    ``weight_decay`` to ``weight_decay_end`` over ``jepa.steps``."""

    RANGES: ClassVar[Ranges] = {"lr_end_scale": (0, 1), "warmup": (0, None)}

    lr: float = 1e-3
    """Peak learning rate (the paper: 1e-3 at batch 2048)."""
    warmup: int = 1_000
    """Updates of linear warmup."""
    lr_end_scale: float = 0.01
    """The learning rate at ``jepa.steps`` as a share of ``lr``."""
    weight_decay: float = 0.04
    """Weight decay at the start (the paper: 0.04)."""
    weight_decay_end: float = 0.4
    """Weight decay at ``jepa.steps`` (the paper: 0.4)."""
    clip: float = 0.0
    """Global gradient-norm clip (0: none, as in the paper)."""


@dataclass(frozen=True)
class WorldModelConfig:
    """The JEPA world model (beyond the seeds; in the spirit of DINO-WM): an action-conditioned
    predictor ``z' = z + f([z, a])`` in the frozen embedding space (the target encoder's
    features), trained on replayed transitions, and CEM planning toward a goal frame's
    embedding (:meth:`JEPAAgent.plan`)."""

    RANGES: ClassVar[Ranges] = {"start": (0, None), "clip": (0, None)}

    enabled: bool = False
    """Train the predictor (and allow planning)."""
    features: Literal["patches", "pooled"] = "patches"
    """The embedding: ``patches``, the target encoder's features of every patch, concatenated
    (as DINO-WM; where things are stays in it), or ``pooled``, their mean (one vector of the
    encoder's width; distances in it barely follow positions)."""
    start: int = 0
    """Update at which it starts training (e.g. once the encoder has learned something)."""
    hidden: int = 256
    layers: int = 2
    """Hidden layers of the MLP ``f``."""
    lr: float = 1e-3
    clip: float = 100.0
    cem: CEMConfig = field(
        default_factory=lambda: CEMConfig(horizon=5, candidates=256, iterations=5, top_k=32)
    )
    """The planner: score of a candidate = minus the sum over its steps of the mean squared
    distance of the imagined embedding to the goal's."""


@dataclass(frozen=True)
class JEPAConfig:
    """The ``jepa`` section."""

    RANGES: ClassVar[Ranges] = {"ema_start": (0, 1), "ema_end": (0, 1), "frames": (0, None)}

    patch: int = 8
    """Patch side; must divide the frame side (64x64 frames: 8x8 = 64 patches)."""
    encoder: ViTConfig = field(default_factory=ViTConfig)
    """The context encoder (and its EMA, the target encoder)."""
    predictor: ViTConfig = field(default_factory=lambda: ViTConfig(192, 6, 6))
    """The predictor (the paper: width 384 for ViT-H encoders, depth 12; narrower here)."""
    mask: MaskConfig = field(default_factory=MaskConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema_start: float = 0.996
    """EMA momentum of the target encoder at the first update (the paper: 0.996) ..."""
    ema_end: float = 1.0
    """... rising linearly to this at ``steps`` (the paper: 1.0), then kept."""
    steps: int = 100_000
    """Updates the schedules (learning rate, weight decay, EMA momentum) span."""
    loss: Literal["smooth_l1", "mse"] = "smooth_l1"
    """Distance between predictions and the layer-normed target features (the paper's code:
    smooth L1)."""
    frames: int = 0
    """Frames per update, drawn without replacement from the replayed ``batch_size x seq_len``
    frames (0: all of them)."""
    behaviour: str = "random"
    """How env workers act: ``random`` (uniform over the action space), or the path of
    another run's directory (its family's acting policy from its latest checkpoint)."""
    world_model: WorldModelConfig = field(default_factory=WorldModelConfig)


class RootConfig(Protocol):
    """What the agent reads from the root ``wm_ray.config.Config``."""

    @property
    def run(self) -> RunConfig: ...

    @property
    def replay(self) -> ReplayConfig: ...

    @property
    def jepa(self) -> JEPAConfig: ...


def check_root(config: RootConfig) -> list[str]:
    """Every problem of the ``jepa`` section against the rest of the root config."""
    bad = check_config(config.jepa)
    replay, cfg = config.replay, config.jepa
    if cfg.frames > replay.batch_size * replay.seq_len:
        bad.append(
            f"jepa.frames={cfg.frames} (must be <= replay.batch_size x replay.seq_len = "
            f"{replay.batch_size * replay.seq_len}, the frames one replayed batch holds)"
        )
    return bad


def validate_root(config: RootConfig) -> None:
    """The registry's validator: raise ``ValueError`` naming every bad value."""
    bad = check_root(config)
    if bad:
        raise ValueError("invalid jepa config: " + "; ".join(bad))


def check_config(cfg: JEPAConfig, image_size: int | None = None) -> list[str]:
    """Every problem of ``cfg`` as ``"jepa.<key>=value (what is valid)"``; empty when valid.

    ``image_size`` (the frame side), when given, is checked against the patch and the masks.
    """
    mask, optim = cfg.mask, cfg.optim
    bad = _ranges(cfg, "jepa.") + _ranges(mask, "jepa.mask.") + _ranges(optim, "jepa.optim.")
    for key, vit in (("encoder", cfg.encoder), ("predictor", cfg.predictor)):
        bad += _ranges(vit, f"jepa.{key}.")
        if vit.heads >= 1 and vit.width % vit.heads:
            bad.append(f"jepa.{key}.heads={vit.heads} (must divide jepa.{key}.width={vit.width})")
        if vit.width >= 1 and vit.width % 4:
            bad.append(f"jepa.{key}.width={vit.width} (must be a multiple of 4: 2D sin-cos)")
    if mask.kind not in ("multiblock", "random"):
        bad.append(f"jepa.mask.kind={mask.kind!r} (must be 'multiblock' or 'random')")
    if cfg.loss not in ("smooth_l1", "mse"):
        bad.append(f"jepa.loss={cfg.loss!r} (must be 'smooth_l1' or 'mse')")
    for lo, hi in (
        ("target_scale_min", "target_scale_max"),
        ("context_scale_min", "context_scale_max"),
        ("aspect_min", "aspect_max"),
        ("ratio_min", "ratio_max"),
    ):
        low, high = getattr(mask, lo), getattr(mask, hi)
        if low > high:
            bad.append(f"jepa.mask.{lo}={low} (must be <= jepa.mask.{hi}={high})")
        if lo != "aspect_min" and low <= 0:
            bad.append(f"jepa.mask.{lo}={low} (must be in (0, 1])")
    if mask.aspect_min <= 0:
        bad.append(f"jepa.mask.aspect_min={mask.aspect_min} (must be > 0)")
    if cfg.ema_start > cfg.ema_end:
        bad.append(f"jepa.ema_start={cfg.ema_start} (must be <= jepa.ema_end={cfg.ema_end})")
    if optim.lr <= 0:
        bad.append(f"jepa.optim.lr={optim.lr} (must be > 0)")
    if optim.lr_end_scale <= 0:
        bad.append(f"jepa.optim.lr_end_scale={optim.lr_end_scale} (must be in (0, 1])")
    if not cfg.behaviour.strip():
        bad.append("jepa.behaviour='' (must be 'random' or a run directory)")
    wm = cfg.world_model
    bad += _ranges(wm, "jepa.world_model.") + check_cem(wm.cem, "jepa.world_model.cem")
    if wm.lr <= 0:
        bad.append(f"jepa.world_model.lr={wm.lr} (must be > 0)")
    if wm.features not in ("patches", "pooled"):
        bad.append(f"jepa.world_model.features={wm.features!r} (must be 'patches' or 'pooled')")
    if image_size is not None:
        bad += _check_grid(cfg, image_size)
    return bad


def _check_grid(cfg: JEPAConfig, image_size: int) -> list[str]:
    """The patch against the frame side, and whether the masks leave ``min_keep`` context
    patches in the worst case."""
    if image_size < 1 or cfg.patch < 1:
        return [f"image size {image_size} (must be >= 1)"] if image_size < 1 else []
    if image_size % cfg.patch:
        return [f"jepa.patch={cfg.patch} (must divide the frame side {image_size})"]
    side = image_size // cfg.patch
    n, mask = side * side, cfg.mask
    if n < 2:
        return [f"jepa.patch={cfg.patch} (leaves {n} patch of a {image_size}-pixel frame; need 2+)"]
    if mask.kind == "random":
        most = max(1, int(n * mask.ratio_max))
    else:
        h, w = block_shape(side, side, mask.target_scale_max, mask.aspect_max)
        h2, w2 = block_shape(side, side, mask.target_scale_max, mask.aspect_min)
        most = mask.targets * max(h * w, h2 * w2)
    if n - most < mask.min_keep:
        return [
            f"jepa.mask.min_keep={mask.min_keep} (the targets may cover {most} of the {n} "
            f"patches of a {image_size}-pixel frame with jepa.patch={cfg.patch}, leaving "
            f"{n - most}: lower min_keep, the target scale or count, or the patch)"
        ]
    return []


def block_shape(rows: int, cols: int, scale: float, aspect: float) -> tuple[int, int]:
    """``(h, w)`` of a block covering ``scale`` of a ``rows x cols`` grid with ``h / w`` near
    ``aspect``: at least 1, and smaller than the grid side (the paper's rule) where it has
    more than one row or column."""
    area = max(1.0, rows * cols * scale)
    h = max(1, round((area * aspect) ** 0.5))
    w = max(1, round((area / aspect) ** 0.5))
    return min(h, max(1, rows - 1)), min(w, max(1, cols - 1))


def _ranges(cfg: object, prefix: str) -> list[str]:
    """Every number of ``cfg`` outside its :func:`~wm_ray.config_checks.value_range`."""
    bad = []
    for f in fields(cfg):  # type: ignore[arg-type]
        v = getattr(cfg, f.name)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        lo, hi = value_range(type(cfg), f.name)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            valid = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
            bad.append(f"{prefix}{f.name}={v} (must be {valid})")
    return bad
