"""Network building blocks of DreamerV3 (Hafner et al. 2023, appendix): MLPs and conv stacks.

Conventions: images stay channels-last ``(..., H, W, C)`` with raw pixel values (uint8) outside
the networks, matching ``wm_ray.types``; :func:`preprocess_image` maps them to ``x / 255 - 0.5``
and the decoder predicts that same space channels-last, so the image loss compares
``decoder(feat)`` with ``preprocess_image(image)`` directly. Layers are initialized with
DreamerV3's truncated normal of variance ``1 / fan_avg`` (:func:`init_fan_avg_`) and biases 0;
reward and critic output layers are zeroed (:func:`init_zero_`) so they start predicting 0.
All modules accept any number of leading dims, e.g. ``(B, T, ...)``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
from torch import nn

from wm_ray.models.common.onehot import Features, OneHotInput, linear


def init_fan_avg_(module: nn.Module) -> nn.Module:
    """Truncated-normal (+-2 std) ``1 / fan_avg`` init of every Linear/Conv weight; zero biases."""
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            w = layer.weight
            receptive = w[0][0].numel()
            fan_avg = (w.shape[0] + w.shape[1]) * receptive / 2
            std = math.sqrt(1.0 / fan_avg) / 0.87962566103423978  # std of N(0,1) cut at +-2
            nn.init.trunc_normal_(w, 0.0, std, -2 * std, 2 * std)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return module


def init_zero_(module: nn.Module) -> nn.Module:
    """Zero every parameter of ``module`` (use on an output layer); returns ``module``."""
    with torch.no_grad():
        for param in module.parameters():
            param.zero_()
    return module


def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    """The number of scalar parameters in ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def bottle(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, event_dims: int
) -> torch.Tensor:
    """Apply ``fn`` (which takes one batch axis) to ``x (..., *event)`` with any leading dims.

    ``x`` of shape ``(B, T, *event)`` is flattened to ``(B * T, *event)``, and the result
    ``(B * T, *out)`` is reshaped to ``(B, T, *out)``.
    """
    lead = x.shape[: x.dim() - event_dims]
    y = fn(x.reshape(-1, *x.shape[x.dim() - event_dims :]))
    return y.reshape(*lead, *y.shape[1:])


def preprocess_image(image: torch.Tensor) -> torch.Tensor:
    """Raw pixel values (uint8, 0..255) to float32 ``x / 255 - 0.5``; shape unchanged."""
    return image.float() / 255.0 - 0.5


def postprocess_image(x: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`preprocess_image`, rounded and clipped to uint8."""
    return ((x.detach() + 0.5) * 255.0).round().clamp(0, 255).to(torch.uint8)


class MLP(nn.Module):
    """``layers`` x (Linear -> norm -> act), then an optional Linear output layer.

    Args:
        in_dim: input features.
        out_dim: output features; ``None`` returns the last hidden features (``hidden``).
        hidden: width of every hidden layer.
        layers: number of hidden layers.
        norm: normalization factory taking the width (``None`` disables; biases are used then).
        act: activation class.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int | None,
        hidden: int,
        layers: int,
        norm: Callable[[int], nn.Module] | None = nn.LayerNorm,
        act: type[nn.Module] = nn.SiLU,
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        for i in range(layers):
            blocks.append(nn.Linear(in_dim if i == 0 else hidden, hidden, bias=norm is None))
            blocks += [norm(hidden), act()] if norm is not None else [act()]
        self.trunk = nn.Sequential(*blocks)
        last = hidden if layers > 0 else in_dim
        self.out = nn.Linear(last, out_dim) if out_dim is not None else None
        self.out_dim = out_dim if out_dim is not None else last
        init_fan_avg_(self)

    def forward(self, x: Features) -> torch.Tensor:
        """``(..., in_dim) -> (..., out_dim)``; a :class:`OneHotInput` enters the first layer
        through :func:`~wm_ray.models.common.onehot.linear`.

        Traced into a graph (``run.compile``), the leading dims are folded into rows first:
        there, a strided input of 3 dims (the imagined states after the first) read with
        weights that take no gradient (a frozen head) becomes a batched product with the
        weight repeated for every row, ~1.3x slower than one product. Eager keeps torch's own
        folding, which is no slower there (the eager update stays as it was)."""
        lead, fold = x.shape[:-1], torch.compiler.is_compiling()
        if fold:
            x = x.map(_rows) if isinstance(x, OneHotInput) else _rows(x)
        if isinstance(x, OneHotInput):
            layers = [*self.trunk, *([self.out] if self.out is not None else [])]
            first = layers[0]
            assert isinstance(first, nn.Linear)
            h = linear(first, x)
            for layer in layers[1:]:
                h = layer(h)
        else:
            h = self.trunk(x)
            h = self.out(h) if self.out is not None else h
        return h.reshape(*lead, h.shape[-1]) if fold else h


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1])


def use_channels_last(module: nn.Module) -> nn.Module:
    """Conv weights (and :class:`ConvDecoder` inputs) of ``module`` in channels-last memory
    format; :class:`ConvEncoder` inputs already are (their pixels arrive ``(..., H, W, C)``).
    The same results in another layout: cuDNN's fast NHWC kernels on GPUs with tensor cores."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            with torch.no_grad():
                layer.weight.data = layer.weight.data.contiguous(memory_format=torch.channels_last)
        if isinstance(layer, ConvDecoder):
            layer.channels_last = True
    return module


class ChannelNorm(nn.LayerNorm):
    """LayerNorm over the channels of ``(N, C, H, W)`` feature maps (per pixel)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _stages(image_size: int, min_res: int) -> int:
    ratio = image_size // min_res if min_res > 0 else 0
    if ratio < 2 or ratio & (ratio - 1) or ratio * min_res != image_size:
        raise ValueError(
            f"image_size {image_size} must be min_res {min_res} times a power of 2 (>= 2)"
        )
    return ratio.bit_length() - 1


class ConvEncoder(nn.Module):
    """Images ``(..., H, W, C)`` uint8 -> features ``(..., out_dim)``.

    Stride-2 4x4 convs (no bias) + channel LayerNorm + SiLU halve the resolution from
    ``image_size`` down to ``min_res``; stage ``i`` has ``depth * 2**i`` channels. For 64x64 and
    ``depth=32``: 32, 64, 128, 256 channels, ``out_dim = 256 * 4 * 4 = 4096``.
    """

    def __init__(
        self, channels: int = 3, depth: int = 32, image_size: int = 64, min_res: int = 4
    ) -> None:
        super().__init__()
        self.image_shape = (image_size, image_size, channels)
        blocks: list[nn.Module] = []
        in_ch = channels
        for i in range(_stages(image_size, min_res)):
            out_ch = depth * 2**i
            blocks += [
                nn.Conv2d(in_ch, out_ch, 4, 2, 1, bias=False),
                ChannelNorm(out_ch),
                nn.SiLU(),
            ]
            in_ch = out_ch
        self.net = nn.Sequential(*blocks, nn.Flatten())
        self.out_dim = in_ch * min_res * min_res
        init_fan_avg_(self)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``(..., H, W, C)`` raw pixels -> ``(..., out_dim)`` float32."""
        if tuple(image.shape[-3:]) != self.image_shape:
            raise ValueError(f"expected images (..., {self.image_shape}), got {tuple(image.shape)}")
        return self.encode(preprocess_image(image))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., H, W, C)`` images already in model space (float, about [-0.5, 0.5], e.g.
        PlaNet's bit-reduced frames) -> ``(..., out_dim)``."""
        if tuple(x.shape[-3:]) != self.image_shape:
            raise ValueError(f"expected images (..., {self.image_shape}), got {tuple(x.shape)}")
        return bottle(self.net, x.movedim(-1, -3), 3)


class ConvDecoder(nn.Module):
    """Features ``(..., in_dim)`` -> image means ``(..., H, W, C)`` in ``x / 255 - 0.5`` space.

    A Linear to ``(depth * 2**(S-1), min_res, min_res)``, then stride-2 4x4 transposed convs with
    channel LayerNorm + SiLU doubling the resolution; the last one outputs ``channels`` with no
    norm or activation.
    """

    def __init__(
        self,
        in_dim: int,
        channels: int = 3,
        depth: int = 32,
        image_size: int = 64,
        min_res: int = 4,
    ) -> None:
        super().__init__()
        stages = _stages(image_size, min_res)
        widths = [depth * 2**i for i in reversed(range(stages))]
        self.start = (widths[0], min_res, min_res)
        self.linear = nn.Linear(in_dim, math.prod(self.start))
        blocks: list[nn.Module] = []
        for in_ch, out_ch in itertools.pairwise(widths):
            blocks += [nn.ConvTranspose2d(in_ch, out_ch, 4, 2, 1, bias=False), ChannelNorm(out_ch)]
            blocks.append(nn.SiLU())
        blocks.append(nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1))
        self.net = nn.Sequential(*blocks)
        self.channels_last = False
        init_fan_avg_(self)

    def _decode(self, feat: torch.Tensor) -> torch.Tensor:
        x = self.linear(feat).reshape(-1, *self.start)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x).movedim(-3, -1)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        """``(..., in_dim) -> (..., H, W, C)`` float32 means."""
        return bottle(self._decode, feat, 1)
