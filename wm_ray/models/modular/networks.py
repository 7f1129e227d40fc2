"""Networks of ModularRSSM: the interchangeable encoders and decoders, the interfaces to add one,
and the world model assembled from them.

An **encoder part** (:class:`EncoderPart`) reads the observation keys it names in ``keys`` and
maps them to an embedding ``(..., out_dim)``; the parts chosen by ``modular.encoder`` are
concatenated into the ``e_t`` the RSSM's posterior reads. A **decoder part**
(:class:`DecoderPart`) maps the model state ``feat (..., F)`` to predictions of its ``keys``:
``image`` means in ``x / 255 - 0.5`` space ``(..., H, W, C)`` or ``vector`` predictions in symlog
space ``(..., D)``, the targets of Dreamer's world-model loss. Constructors take
``(shapes, config)`` and ``(feat_dim, shapes, config)``: the observation shapes
(``wm_ray.models.common.data.obs_shapes``) and the ``modular`` section.

Built in: encoders ``conv`` (DreamerV3's CNN), ``vit`` (a vision transformer) and ``mlp`` (on
``symlog(vector)``); decoders ``conv`` and ``mlp``. A user's part is named ``module:Class``.

:class:`ModularWorldModel` is Dreamer's world model (RSSM, reward and continue heads) with these
parts and the RSSM sequence model of ``modular.backbone`` (:mod:`wm_ray.models.rssm.backbones`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from wm_ray.models.common import (
    MLP,
    ConvDecoder,
    ConvEncoder,
    Features,
    bottle,
    init_fan_avg_,
    preprocess_image,
    symlog,
)
from wm_ray.models.common.attention import AttentionBlock
from wm_ray.models.common.onehot import dense
from wm_ray.models.dreamer.networks import WorldModel
from wm_ray.models.modular.config import ModularConfig, check_parts, part_names
from wm_ray.models.rssm.backbones import Backbone, build_backbone
from wm_ray.registry import UnsupportedError, import_object

Shapes = dict[str, tuple[int, ...]]


class EncoderPart(nn.Module):
    """Interface of an encoder: ``keys`` it reads, ``out_dim``, ``forward(obs) -> (..., E)``
    for observations with any leading dims (image uint8 ``(..., H, W, C)``, vector float)."""

    keys: ClassVar[tuple[str, ...]] = ()
    out_dim: int

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError


class DecoderPart(nn.Module):
    """Interface of a decoder: ``keys`` it predicts, ``forward(feat) -> {key: prediction}``."""

    keys: ClassVar[tuple[str, ...]] = ()

    def forward(self, feat: Features) -> dict[str, torch.Tensor]:
        raise NotImplementedError


def _image(shapes: Shapes) -> tuple[int, int, int]:
    height, width, channels = shapes["image"]
    if height != width:
        raise UnsupportedError(f"the conv parts need square images, got {height}x{width}")
    return height, width, channels


class ConvEncoderPart(EncoderPart):
    """DreamerV3's CNN on the image (``cnn_depth``, ``cnn_min_res``)."""

    keys = ("image",)

    def __init__(self, shapes: Shapes, config: ModularConfig) -> None:
        super().__init__()
        size, _, channels = _image(shapes)
        self.net = ConvEncoder(channels, config.cnn_depth, size, config.cnn_min_res)
        self.out_dim = self.net.out_dim

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net(obs["image"])


class MLPEncoderPart(EncoderPart):
    """An MLP on ``symlog(vector)`` (``units`` wide, ``layers`` deep)."""

    keys = ("vector",)

    def __init__(self, shapes: Shapes, config: ModularConfig) -> None:
        super().__init__()
        self.net = MLP(shapes["vector"][0], None, config.units, config.layers)
        self.out_dim = self.net.out_dim

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net(symlog(obs["vector"].float()))


class ViTEncoderPart(EncoderPart):
    """A vision transformer on the image: non-overlapping ``patch x patch`` patches embedded by
    one strided conv, learned position embeddings, ``depth`` pre-norm attention blocks, a final
    LayerNorm, then one Linear from all patch features (their order keeps where they are) to
    the ``out``-sized embedding."""

    keys = ("image",)

    def __init__(self, shapes: Shapes, config: ModularConfig) -> None:
        super().__init__()
        vit = config.vit
        height, width, channels = shapes["image"]
        if height % vit.patch or width % vit.patch:
            raise UnsupportedError(
                f"modular.vit.patch={vit.patch} must divide the image's sides {height}x{width}"
            )
        self.image_shape = (height, width, channels)
        tokens = (height // vit.patch) * (width // vit.patch)
        self.embed = nn.Conv2d(channels, vit.width, vit.patch, stride=vit.patch)
        self.pos = nn.Parameter(torch.zeros(1, tokens, vit.width))
        self.blocks = nn.ModuleList(
            AttentionBlock(vit.width, vit.heads, vit.mlp) for _ in range(vit.depth)
        )
        self.norm = nn.LayerNorm(vit.width)
        self.out = nn.Linear(tokens * vit.width, vit.out)
        self.out_dim = vit.out
        init_fan_avg_(self)
        nn.init.trunc_normal_(self.pos, std=0.02)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x.movedim(-1, -3)).flatten(2).transpose(1, 2) + self.pos
        for block in self.blocks:
            tokens = block(tokens)
        return self.out(self.norm(tokens).flatten(1))

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        image = obs["image"]
        if tuple(image.shape[-3:]) != self.image_shape:
            raise ValueError(f"expected images (..., {self.image_shape}), got {tuple(image.shape)}")
        return bottle(self._encode, preprocess_image(image), 3)


class ConvDecoderPart(DecoderPart):
    """DreamerV3's transposed-conv decoder: image means in model space."""

    keys = ("image",)

    def __init__(self, feat_dim: int, shapes: Shapes, config: ModularConfig) -> None:
        super().__init__()
        size, _, channels = _image(shapes)
        self.net = ConvDecoder(feat_dim, channels, config.cnn_depth, size, config.cnn_min_res)

    def forward(self, feat: Features) -> dict[str, torch.Tensor]:
        return {"image": self.net(dense(feat))}


class MLPDecoderPart(DecoderPart):
    """An MLP predicting ``symlog(vector)``."""

    keys = ("vector",)

    def __init__(self, feat_dim: int, shapes: Shapes, config: ModularConfig) -> None:
        super().__init__()
        self.net = MLP(feat_dim, shapes["vector"][0], config.units, config.layers)

    def forward(self, feat: Features) -> dict[str, torch.Tensor]:
        return {"vector": self.net(feat)}


ENCODER_PARTS: dict[str, type[EncoderPart]] = {
    "conv": ConvEncoderPart,
    "mlp": MLPEncoderPart,
    "vit": ViTEncoderPart,
}
DECODER_PARTS: dict[str, type[DecoderPart]] = {"conv": ConvDecoderPart, "mlp": MLPDecoderPart}
AUTO = {"image": "conv", "vector": "mlp"}
"""The part ``auto`` picks per observation key."""


def _resolve(kind: str, name: str, table: dict[str, Any], base: type) -> Any:
    if name in table:
        return table[name]
    try:
        cls = import_object(name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"modular.{kind} part {name!r} cannot be imported: {err}") from err
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ValueError(f"modular.{kind} part {name!r} is {cls!r}, not a {base.__name__}")
    return cls


def _classes(
    kind: str, value: str, table: dict[str, Any], base: type, shapes: Shapes, keys: set[str]
) -> list[Any]:
    """The part classes of ``value`` (``auto``: one per key of ``keys``), each checked to read
    observation keys the env gives."""
    names = part_names(value)
    if names == ["auto"]:
        names = [AUTO[key] for key in ("image", "vector") if key in keys]
    classes = [_resolve(kind, name, table, base) for name in names]
    for name, cls in zip(names, classes):
        missing = [key for key in cls.keys if key not in shapes]
        if missing:
            fits = [n for n, c in table.items() if set(c.keys) <= set(shapes)]
            raise UnsupportedError(
                f"modular.{kind}={value} needs {'/'.join(missing)} observations ({name} reads "
                f"{'/'.join(cls.keys)}), the env gives {'/'.join(sorted(shapes)) or 'none'}; "
                f"valid here: {', '.join(['auto', *fits])}"
            )
    return classes


def decoder_classes(shapes: Shapes, config: ModularConfig, encoded: list[str]) -> list[Any]:
    """The decoder part classes of ``modular.decoder`` (``auto``: one per key the encoders
    read), checked to fit the env's observations; builds nothing."""
    return _classes("decoder", config.decoder, DECODER_PARTS, DecoderPart, shapes, set(encoded))


class Encoders(nn.Module):
    """The encoder parts of ``modular.encoder``; their embeddings are concatenated."""

    def __init__(self, shapes: Shapes, config: ModularConfig) -> None:
        super().__init__()
        classes = _classes("encoder", config.encoder, ENCODER_PARTS, EncoderPart, shapes,
                           set(shapes))  # fmt: skip
        self.parts: list[EncoderPart] = nn.ModuleList(  # type: ignore[assignment]
            cls(shapes, config) for cls in classes
        )
        self.keys = sorted({key for part in self.parts for key in part.keys})
        self.out_dim = sum(int(part.out_dim) for part in self.parts)

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = [part(obs) for part in self.parts]
        return parts[0] if len(parts) == 1 else torch.cat(parts, -1)


class Decoders(nn.Module):
    """The decoder parts of ``modular.decoder`` (``auto``: one per key the encoders read)."""

    def __init__(
        self, feat_dim: int, shapes: Shapes, config: ModularConfig, encoded: list[str]
    ) -> None:
        super().__init__()
        classes = decoder_classes(shapes, config, encoded)
        self.parts: list[DecoderPart] = nn.ModuleList(  # type: ignore[assignment]
            cls(feat_dim, shapes, config) for cls in classes
        )

    def forward(self, feat: Features) -> dict[str, torch.Tensor]:
        out: dict[str, Any] = {}
        for part in self.parts:
            out.update(part(feat))
        return out


class ModularWorldModel(WorldModel):
    """Dreamer's world model with the configured encoders, decoders and backbone."""

    encoder: Encoders

    def make_encoder(self, shapes: Shapes, config: Any) -> Encoders:
        bad = check_parts(config)
        if bad:
            raise ValueError("invalid modular config: " + "; ".join(bad))
        encoders = Encoders(shapes, config)
        # refuse an unfit decoder in acting workers too, where no decoder is built
        decoder_classes(shapes, config, encoders.keys)
        return encoders

    def make_decoder(self, feat_dim: int, shapes: Shapes, config: Any) -> Decoders:
        return Decoders(feat_dim, shapes, config, self.encoder.keys)

    def make_core(self, config: ModularConfig) -> Backbone:  # type: ignore[override]
        rssm = config.rssm
        return build_backbone(config.backbone, rssm.hidden, rssm.deter, config.transformer)
