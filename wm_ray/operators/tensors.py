"""The pixel and action math the families' agents and their operators share (torch).

The agents call these on what replay and env workers give them (uint8 ``(..., H, W, C)``
frames, env action indices) and on the frames their networks produce (back to uint8); the
operators (:mod:`wm_ray.operators.families`) call them after turning raw inputs into that form,
so an operator's ``model_input`` is exactly what the family's networks see and its
``to_pixels`` what the agent shows of their output.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from wm_ray.models.common.data import device_tensor


def image_tensor(
    image: Any,
    image_shape: tuple[int, int, int],
    device: torch.device,
    *,
    lead: int | None = None,
    min_lead: int = 0,
    cast: bool = False,
) -> torch.Tensor:
    """Frames ``(..., H, W, C)`` as a tensor on ``device``, their shape checked.

    Args:
        image: an array or tensor of frames.
        image_shape: the family's ``(H, W, C)``.
        device: target device.
        lead: exactly this many leading dims (None: any number of at least ``min_lead``).
        min_lead: the fewest leading dims.
        cast: convert to uint8 first (``np.asarray(image, np.uint8)``); else keep the dtype.
    """
    tensor = device_tensor(np.asarray(image, np.uint8) if cast else np.asarray(image), device)
    leading = tensor.ndim - 3
    ok = tuple(tensor.shape[-3:]) == tuple(image_shape) and leading >= min_lead
    if lead is not None:
        ok = ok and leading == lead
    if not ok:
        dims = "N, " * lead if lead is not None else "..., "
        raise ValueError(f"expected images ({dims}{tuple(image_shape)}), got {tuple(tensor.shape)}")
    return tensor


def signed(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [-1, 1] (``x / 127.5 - 1``); layout unchanged."""
    return pixels.float().div(127.5).sub(1.0)


def signed_channels_first(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 ``(..., H, W, C)`` -> float32 ``(..., C, H, W)`` in [-1, 1] (DIAMOND)."""
    return signed(pixels.movedim(-1, -3))


def unit_channels_first(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 ``(..., H, W, C)`` -> float32 ``(..., C, H, W)`` in [0, 1], contiguous (IRIS)."""
    return (pixels.movedim(-1, -3).float() / 255.0).contiguous()


def signed_to_pixels(frames: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`signed`: floats in [-1, 1] -> uint8 (clamped, rounded); layout
    unchanged."""
    return ((frames.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


def unit_to_pixels(frames: torch.Tensor) -> torch.Tensor:
    """Floats in [0, 1] -> uint8 (clamped, rounded); layout unchanged."""
    return (frames.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


def action_indices(
    action: Any,
    shape: tuple[int, ...],
    num_actions: int,
    start: int,
    device: torch.device,
    what: str = "actions",
) -> torch.Tensor:
    """Env actions (indices from ``start``) -> 0-based int64 model actions of ``shape`` on
    ``device``; raises ``ValueError`` when the shape or a value is wrong."""
    actions = device_tensor(np.asarray(action), device).long() - start
    if tuple(actions.shape) != tuple(shape) or (
        actions.numel() and (actions.min() < 0 or actions.max() >= num_actions)
    ):
        got = np.asarray(action)
        values = (
            f"{got.tolist()}" if got.size <= 8 else f"shape {got.shape}, {got.min()}..{got.max()}"
        )
        raise ValueError(
            f"{what} must be {tuple(shape)} indices of {num_actions} actions (from {start}), "
            f"got {values}"
        )
    return actions


__all__ = [
    "action_indices",
    "image_tensor",
    "signed",
    "signed_channels_first",
    "signed_to_pixels",
    "unit_channels_first",
    "unit_to_pixels",
]
