"""Learning-curve PNGs and videos written at the end of runs and evaluations."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def plot_curve(records: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Episode and eval returns against env steps, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for key, style in (("episode/return", "-"), ("eval/return", "o-")):
        points = [(r["step"], r[key]) for r in records if r.get(key) is not None]
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, style, label=key, markersize=4)
    ax.set_xlabel("env steps")
    ax.set_ylabel("return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_video(frames: np.ndarray, path: str | Path, fps: int = 20, scale: int = 4) -> Path:
    """Write uint8 frames ``(T, H, W, C)`` as an mp4 (upscaled ``scale`` times, nearest)."""
    import imageio.v2 as imageio

    frames = np.asarray(frames, np.uint8)
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3):
        raise ValueError(f"video frames must be (T, H, W, 1 or 3) uint8, got {frames.shape}")
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    if scale > 1:
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with imageio.get_writer(path, fps=fps, macro_block_size=1) as writer:
        for frame in frames:
            writer.append_data(frame)  # type: ignore[attr-defined]
    return path
