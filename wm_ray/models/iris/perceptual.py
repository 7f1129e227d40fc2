"""LPIPS-style perceptual distance on a frozen VGG16 (Zhang et al. 2018), loaded from a file.

IRIS adds this term to its tokenizer's reconstruction loss. Nothing is downloaded at run time:
:meth:`PerceptualLoss.from_file` reads a ``torch.load(weights_only=True)`` dict that holds the
13 convolutions of torchvision's ``vgg16().features`` under their torchvision names
(``features.{i}.weight`` / ``features.{i}.bias``) and, optionally, the five LPIPS linear layers
(``lin{0..4}.model.1.weight``, shapes ``(1, C, 1, 1)``, as in the ``lpips`` package's
``vgg.pth``). Merge both into one dict to use the calibrated LPIPS metric.

The distance between images ``x`` and ``y`` (floats in [0, 1], ``(N, 1 or 3, H, W)``):
ImageNet-normalize both (grayscale repeated to 3 channels; this equals LPIPS's scaling layer on
[-1, 1] inputs), take the VGG activations after relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3,
unit-normalize each over channels, square the difference, weight the channels with the LPIPS
linear layer (or average them uniformly without one), average over space and sum over the five
layers. Every weight is frozen and the module stays in eval mode.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
"""torchvision ``vgg16().features`` up to relu5_3 (its final max-pool is never needed)."""
_TAPS = (3, 8, 15, 22, 29)
"""Indices in ``features`` of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3."""
TAP_CHANNELS = (64, 128, 256, 512, 512)
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def vgg16_features() -> nn.Sequential:
    """torchvision's ``vgg16().features`` layout (same indices) up to relu5_3, randomly init."""
    layers: list[nn.Module] = []
    in_ch = 3
    for item in _VGG16:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            out_ch = int(item)
            layers += [nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.ReLU(inplace=False)]
            in_ch = out_ch
    return nn.Sequential(*layers)


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Key -> shape of every VGG16 tensor :meth:`PerceptualLoss.from_file` needs."""
    shapes: dict[str, tuple[int, ...]] = {}
    for i, layer in enumerate(vgg16_features()):
        if isinstance(layer, nn.Conv2d):
            shapes[f"features.{i}.weight"] = tuple(layer.weight.shape)
            shapes[f"features.{i}.bias"] = (layer.out_channels,)
    return shapes


def lin_shapes() -> dict[str, tuple[int, ...]]:
    """Key -> shape of the optional LPIPS linear layers."""
    return {f"lin{i}.model.1.weight": (1, c, 1, 1) for i, c in enumerate(TAP_CHANNELS)}


def _unit(feat: Tensor, eps: float = 1e-10) -> Tensor:
    return feat / (feat.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


class PerceptualLoss(nn.Module):
    """Frozen LPIPS-style distance; build it with :meth:`from_file`.

    Args:
        features: a :func:`vgg16_features` stack with the weights loaded.
        lins: the five LPIPS channel weights ``(1, C, 1, 1)``, or ``None`` for a uniform mean.
    """

    mean: Tensor
    std: Tensor

    def __init__(self, features: nn.Sequential, lins: list[Tensor] | None = None) -> None:
        super().__init__()
        self.features = features
        self.lins = nn.ParameterList(
            [nn.Parameter(w.detach().clone(), requires_grad=False) for w in lins or []]
        )
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> PerceptualLoss:
        """Always eval mode (the module is frozen)."""
        return super().train(False)

    @classmethod
    def from_file(cls, path: str | Path) -> PerceptualLoss:
        """Load VGG16 (+ optional LPIPS linear) weights from ``path``; see the module docstring.

        Raises:
            ValueError: naming ``path`` when the file is missing or unreadable, or when a VGG
                key is missing / mis-shaped, or the LPIPS keys are partial / mis-shaped.
        """
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"perceptual weights file {str(path)!r} does not exist")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # any unpickling error means a bad file
            raise ValueError(
                f"perceptual weights file {str(path)!r} cannot be read: {exc}"
            ) from exc
        if not isinstance(state, dict):
            raise ValueError(
                f"perceptual weights file {str(path)!r} must hold a dict of tensors, "
                f"got {type(state).__name__}"
            )
        problems = []
        for key, shape in expected_shapes().items():
            value = state.get(key)
            if not isinstance(value, Tensor):
                problems.append(f"missing {key}")
            elif tuple(value.shape) != shape:
                problems.append(f"{key} has shape {tuple(value.shape)}, expected {shape}")
        present = [key for key in lin_shapes() if key in state]
        if present and len(present) != len(lin_shapes()):
            missing = sorted(set(lin_shapes()) - set(present))
            problems.append(f"LPIPS linear layers are partial: missing {', '.join(missing)}")
        for key in present:
            value, shape = state[key], lin_shapes()[key]
            if not isinstance(value, Tensor) or tuple(value.shape) != shape:
                got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                problems.append(f"{key} has shape {got}, expected {shape}")
        if problems:
            raise ValueError(
                f"perceptual weights file {str(path)!r} is not VGG16 (+ LPIPS) weights: "
                + "; ".join(problems)
            )
        features = vgg16_features()
        features.load_state_dict(
            {k.removeprefix("features."): state[k].float() for k in expected_shapes()}
        )
        lins = [state[k].float() for k in lin_shapes()] if present else None
        return cls(features, lins)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Distance between ``x`` and ``y`` ``(N, 1 or 3, H, W)`` in [0, 1] -> ``(N,)``.

        Gradients flow to both inputs (not to the frozen weights).
        """
        if x.shape != y.shape or x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(
                f"expected two images (N, 1 or 3, H, W) of one shape, got {tuple(x.shape)} and "
                f"{tuple(y.shape)}"
            )
        n = x.shape[0]
        both = torch.cat([x, y]).to(self.mean.dtype)
        if both.shape[1] == 1:
            both = both.expand(-1, 3, -1, -1)
        h = (both - self.mean) / self.std
        total = both.new_zeros(n)
        tap = 0
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i == _TAPS[tap]:
                diff = (_unit(h[:n]) - _unit(h[n:])).pow(2)
                if len(self.lins):
                    per_pixel = (diff * self.lins[tap]).sum(dim=1)
                else:
                    per_pixel = diff.mean(dim=1)
                total = total + per_pixel.mean(dim=(1, 2))
                tap += 1
                if tap == len(_TAPS):
                    break
        return total
