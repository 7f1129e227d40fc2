"""Configuration of the ModularRSSM family: the ``modular`` section of the root config.

Everything of Dreamer's section (``wm_ray.models.dreamer.config.DreamerConfig``: sizes, the
RSSM's latents, world-model loss, actor-critic, optimizers, ``planner: actor | cem``) plus the
choice of parts: ``encoder``, ``decoder`` and ``backbone`` by name, and the settings of the
ViT encoder and the transformer backbone. Imports without torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from wm_ray.models.dreamer.config import DreamerConfig, check_config
from wm_ray.types import Ranges

if TYPE_CHECKING:
    from wm_ray.config import Config
    from wm_ray.registry import Capabilities

ENCODERS = {"conv": "image", "mlp": "vector", "vit": "image"}
"""Built-in encoders and the observation key each reads."""
DECODERS = {"conv": "image", "mlp": "vector"}
"""Built-in decoders and the observation key each reconstructs."""
BACKBONES = ("gru", "lstm", "transformer")
"""Built-in RSSM sequence models (``wm_ray.models.rssm.backbones``)."""


@dataclass(frozen=True)
class ViTConfig:
    """The ViT encoder (Dosovitskiy et al. 2021): patch embedding, learned positions,
    ``depth`` pre-norm transformer blocks, then a Linear from all patch features to ``out``."""

    patch: int = 8
    """Patch side in pixels (must divide the image side)."""
    width: int = 64
    """Token width (divisible by ``heads``)."""
    depth: int = 2
    """Transformer blocks."""
    heads: int = 4
    """Attention heads."""
    mlp: int = 4
    """MLP hidden width in multiples of ``width``."""
    out: int = 256
    """Size of the embedding the RSSM's posterior reads."""


@dataclass(frozen=True)
class TransformerConfig:
    """The transformer backbone (``backbone: transformer``): causal over a sliding window of
    the last ``context`` steps, width ``rssm.deter``, ALiBi positions, a key/value cache.
    The defaults are sized for the CPU runs of small tasks, like Dreamer's (with one block over
    8 steps an update costs 1.0-1.25x the LSTM's; two blocks over 16 ~1.8x); raise both for
    tasks that need longer memory."""

    context: int = 8
    """Steps a step attends over, its own included."""
    layers: int = 1
    """Transformer blocks."""
    heads: int = 4
    """Attention heads (must divide ``rssm.deter``)."""
    mlp: int = 2
    """MLP hidden width in multiples of ``rssm.deter``."""


@dataclass(frozen=True)
class ModularConfig(DreamerConfig):
    """The ``modular`` section: Dreamer's settings plus the parts."""

    RANGES: ClassVar[Ranges] = DreamerConfig.RANGES

    encoder: str = "auto"
    """Encoders, ``+``-joined: ``conv`` / ``vit`` (image), ``mlp`` (vector), ``module:Class``
    (a ``wm_ray.models.modular.networks.EncoderPart``); ``auto``: conv for image and mlp for
    vector, whichever the env gives."""
    decoder: str = "auto"
    """Decoders, ``+``-joined: ``conv`` (image), ``mlp`` (vector), ``module:Class`` (a
    ``DecoderPart``); ``auto``: one per observation key the encoders read."""
    backbone: str = "gru"
    """The RSSM's sequence model: ``gru``, ``lstm``, ``transformer`` or ``module:Class`` (a
    ``wm_ray.models.rssm.backbones.Backbone``)."""
    vit: ViTConfig = field(default_factory=ViTConfig)
    """The ViT encoder."""
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    """The transformer backbone."""


def part_names(value: str) -> list[str]:
    """The ``+``-joined part names of ``encoder`` / ``decoder``."""
    return [name.strip() for name in value.split("+") if name.strip()]


def explicit_keys(value: str, table: dict[str, str]) -> set[str]:
    """Observation keys the named built-in parts of ``value`` read (none for ``auto``)."""
    return {table[name] for name in part_names(value) if name in table}


def check_parts(config: ModularConfig) -> list[str]:
    """Problems of the part choices, each naming the value and what is valid."""
    bad = []
    for key, value, table in (
        ("encoder", config.encoder, ENCODERS),
        ("decoder", config.decoder, DECODERS),
    ):
        names = part_names(value)
        valid = f"auto, {', '.join(table)}, '+'-joined, or module:Class"
        if not names:
            bad.append(f"modular.{key}={value!r} (valid: {valid})")
        for name in names:
            if name == "auto" and len(names) > 1:
                bad.append(f"modular.{key}={value!r} (auto stands alone)")
            elif name not in table and name != "auto" and ":" not in name:
                bad.append(f"modular.{key}={value!r}: unknown part {name!r} (valid: {valid})")
    if config.backbone not in BACKBONES and ":" not in config.backbone:
        bad.append(
            f"modular.backbone={config.backbone!r} (valid: {', '.join(BACKBONES)}, or module:Class)"
        )
    vit, tf = config.vit, config.transformer
    positive = {
        "vit.patch": vit.patch,
        "vit.width": vit.width,
        "vit.depth": vit.depth,
        "vit.heads": vit.heads,
        "vit.mlp": vit.mlp,
        "vit.out": vit.out,
        "transformer.context": tf.context,
        "transformer.layers": tf.layers,
        "transformer.heads": tf.heads,
        "transformer.mlp": tf.mlp,
    }
    bad += [f"modular.{k}={v} (must be > 0)" for k, v in positive.items() if v <= 0]
    if vit.heads > 0 and vit.width % vit.heads:
        bad.append(f"modular.vit.width={vit.width} (must be divisible by vit.heads={vit.heads})")
    if config.backbone == "transformer" and tf.heads > 0 and config.rssm.deter % tf.heads:
        bad.append(
            f"modular.rssm.deter={config.rssm.deter} (the transformer backbone's width: must be "
            f"divisible by transformer.heads={tf.heads})"
        )
    return bad


def validate(config: Config) -> None:
    """The registry's validator: Dreamer's checks of the section, then the parts'."""
    check_config(config.modular, "modular")
    bad = check_parts(config.modular)
    if bad:
        raise ValueError("invalid modular config: " + "; ".join(bad))


def capabilities(config: Config) -> tuple[Capabilities, str] | None:
    """The registry's per-config capabilities: the observation kinds the chosen built-in parts
    need (``encoder=vit`` images, ``decoder=mlp`` a vector; ``auto`` fits any), and with
    ``planner: cem`` continuous actions only."""
    from wm_ray.registry import MODELS

    cfg = config.modular
    caps, settings = MODELS["modular"].capabilities, []
    needs = explicit_keys(cfg.encoder, ENCODERS) | explicit_keys(cfg.decoder, DECODERS)
    if needs:
        auto = "auto" in part_names(cfg.encoder) + part_names(cfg.decoder)
        observations = caps.observations if auto else tuple(sorted(needs))
        caps = dataclasses.replace(caps, observations=observations, needs=tuple(sorted(needs)))
        settings.append(f"modular.encoder={cfg.encoder} modular.decoder={cfg.decoder}")
    if cfg.planner == "cem":
        caps = dataclasses.replace(caps, actions=("continuous",))
        settings.append("modular.planner=cem")
    return (caps, " ".join(settings)) if settings else None
