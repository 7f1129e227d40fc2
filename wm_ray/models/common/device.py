"""The learner's torch device from ``run.device``."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` -> ``cuda`` if available else ``cpu``; otherwise ``torch.device(name)``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(
            f"run.device {name!r} is not a torch device (auto, cpu, cuda, cuda:N)"
        ) from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"run.device is {name!r} but CUDA is not available; use auto or cpu")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on the CPU. For honest timings."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
