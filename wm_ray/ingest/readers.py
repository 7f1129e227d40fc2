"""Readers of offline data for ``wm-ray ingest``: video files, arrays, HDF5, image folders.

Each reader returns a :class:`Episode` of uint8 frames ``(T, H, W, C)`` already resized and
converted by a :class:`Frames` transform, plus the source's optional per-step arrays (actions,
rewards, terminal flags) as found. Anything wrong with one source raises :class:`SourceError`
with a one-line reason; the caller reports it by name and goes on with the others.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

VIDEO_EXTS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".gif", ".mpg", ".mpeg"})
ARRAY_EXTS = frozenset({".npz", ".npy"})
HDF5_EXTS = frozenset({".h5", ".hdf5", ".hdf"})
IMAGE_EXTS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})
FORMATS = ("auto", "video", "npz", "hdf5", "images")
FRAME_KEYS = ("image", "images", "frames", "obs", "observation", "observations")
ACTION_KEYS = ("action", "actions")
REWARD_KEYS = ("reward", "rewards")
TERMINAL_KEYS = ("is_terminal", "terminal", "terminals", "done", "dones")


class SourceError(Exception):
    """One source cannot be ingested; ``reason`` says why in one line."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass
class Episode:
    """One source's steps: transformed frames and the optional arrays it carried."""

    frames: np.ndarray
    action: np.ndarray | None = None
    reward: np.ndarray | None = None
    terminal: np.ndarray | None = None


@dataclass(frozen=True)
class Source:
    path: Path
    format: str


def kind_of(path: Path) -> str | None:
    """The format of a file by its extension (``video``, ``npz``, ``hdf5``, ``images``)."""
    ext = path.suffix.lower()
    for kind, exts in (
        ("video", VIDEO_EXTS),
        ("npz", ARRAY_EXTS),
        ("hdf5", HDF5_EXTS),
        ("images", IMAGE_EXTS),
    ):
        if ext in exts:
            return kind
    return None


def natural_key(path: Path) -> list[Any]:
    """Sort key of names with numbers in numeric order (``frame2`` before ``frame10``)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def _children(directory: Path) -> list[Path]:
    return sorted((p for p in directory.iterdir() if not p.name.startswith(".")), key=natural_key)


def image_files(directory: Path) -> list[Path]:
    """The image frames directly inside ``directory``, in natural name order."""
    return [p for p in _children(directory) if p.is_file() and p.suffix.lower() in IMAGE_EXTS]


def discover(paths: Iterable[str | Path], fmt: str = "auto") -> tuple[list[Source], list[Any]]:
    """Expand SOURCE arguments into episodes' sources; returns ``(sources, skipped)`` where
    ``skipped`` holds ``(path, reason)`` of what cannot be a source."""
    sources: list[Source] = []
    skipped: list[tuple[str, str]] = []

    def visit(path: Path, top: bool) -> None:
        if path.is_dir():
            if fmt in ("auto", "images") and image_files(path):
                sources.append(Source(path, "images"))
                return
            for child in _children(path):
                visit(child, False)
            return
        if not path.exists():
            skipped.append((str(path), "does not exist"))
            return
        kind = kind_of(path)
        if kind is None or kind == "images":
            if top or kind is None:
                what = "a single image (give its folder)" if kind else "not a known file type"
                skipped.append((str(path), what))
            return
        if fmt not in ("auto", kind):
            skipped.append((str(path), f"a {kind} file, not {fmt} (--format {fmt})"))
            return
        sources.append(Source(path, kind))

    for item in paths:
        visit(Path(item), True)
    return sources, skipped


class Frames:
    """Per-frame conversion to the data set's form: uint8 ``(H, W, C)``, C in {1, 3}.

    Args:
        image_size: resize to ``N x N`` (area averaging when shrinking, bilinear when growing);
            None keeps the source's size.
        grayscale: convert to one channel.
    """

    def __init__(self, image_size: int | None = None, grayscale: bool = False) -> None:
        self.image_size = image_size
        self.grayscale = grayscale

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        import cv2

        if frame.dtype != np.uint8:
            raise SourceError(f"frames have dtype {frame.dtype}, need uint8")
        if frame.ndim == 2:
            frame = frame[..., None]
        if frame.ndim != 3 or frame.shape[-1] not in (1, 3, 4) or min(frame.shape[:2]) < 1:
            raise SourceError(f"a frame has shape {frame.shape}, need (H, W) or (H, W, 1|3|4)")
        if frame.shape[-1] == 4:
            frame = frame[..., :3]
        if self.grayscale and frame.shape[-1] == 3:
            frame = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)[..., None]
        if self.image_size is not None and frame.shape[:2] != (self.image_size,) * 2:
            n = self.image_size
            shrink = n < frame.shape[0] or n < frame.shape[1]
            method = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
            channels = frame.shape[-1]
            frame = cv2.resize(np.ascontiguousarray(frame), (n, n), interpolation=method)
            frame = frame.reshape(n, n, channels)
        return np.ascontiguousarray(frame)

    def stack(self, frames: Iterable[np.ndarray], names: list[str] | None = None) -> np.ndarray:
        """Convert every frame and stack them ``(T, H, W, C)``; frames of different shapes
        (after conversion) are an error naming the first odd one."""
        out: list[np.ndarray] = []
        for t, frame in enumerate(frames):
            frame = self(np.asarray(frame))
            if out and frame.shape != out[0].shape:
                name = names[t] if names else f"frame {t}"
                raise SourceError(
                    f"{name} has shape {frame.shape}, earlier frames {out[0].shape} (mixed sizes;"
                    " give --image-size N to resize all frames)"
                )
            out.append(frame)
        if not out:
            raise SourceError("no frames")
        return np.stack(out)


def _first(arrays: dict[str, Any], keys: tuple[str, ...]) -> Any:
    return next((arrays[k] for k in keys if k in arrays), None)


def _from_arrays(arrays: dict[str, Any], frames: Frames, what: str) -> Episode:
    images = _first(arrays, FRAME_KEYS)
    if images is None:
        raise SourceError(f"no frames: {what} has none of the keys {list(FRAME_KEYS)}")
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise SourceError(f"frames have dtype {images.dtype}, need uint8")
    if images.ndim not in (3, 4):
        raise SourceError(f"frames have shape {images.shape}, need (T, H, W) or (T, H, W, C)")
    return Episode(
        frames.stack(images),
        *(
            None if (a := _first(arrays, keys)) is None else np.asarray(a)
            for keys in (ACTION_KEYS, REWARD_KEYS, TERMINAL_KEYS)
        ),
    )


def read_npz(path: Path, frames: Frames) -> Episode:
    """An ``.npz`` (keys: frames, optional action, reward, terminal) or a ``.npy`` of frames."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return _from_arrays({"frames": loaded}, frames, "the array")
        with loaded:
            arrays = {key: loaded[key] for key in loaded.files}
    except SourceError:
        raise
    except Exception as err:  # zipfile, pickle and format errors of a damaged file
        raise SourceError(f"unreadable ({type(err).__name__}: {_line(err)})") from None
    return _from_arrays(arrays, frames, "the file")


def read_hdf5(path: Path, frames: Frames) -> Episode:
    """An HDF5 file with the keys of an ``.npz`` as top-level datasets (needs ``h5py``)."""
    try:
        import h5py
    except ImportError:
        raise SourceError("reading HDF5 needs h5py: pip install h5py (or 'wm_ray[hdf5]')") from None
    try:
        with h5py.File(path, "r") as f:
            wanted = (*FRAME_KEYS, *ACTION_KEYS, *REWARD_KEYS, *TERMINAL_KEYS)
            arrays = {key: np.asarray(f[key][()]) for key in wanted if key in f}
    except Exception as err:
        raise SourceError(f"unreadable ({type(err).__name__}: {_line(err)})") from None
    return _from_arrays(arrays, frames, "the file")


def read_images(directory: Path, frames: Frames) -> Episode:
    """A folder of image frames in natural name order (one episode)."""
    from PIL import Image

    files = image_files(directory)

    def load(path: Path) -> np.ndarray:
        try:
            with Image.open(path) as img:
                if frames.grayscale:
                    return np.asarray(img.convert("L"))
                return np.asarray(img if img.mode in ("L", "RGB") else img.convert("RGB"))
        except Exception as err:
            raise SourceError(f"{path.name}: unreadable image ({_line(err)})") from None

    return Episode(frames.stack((load(p) for p in files), [p.name for p in files]))


def read_video(path: Path, frames: Frames) -> Episode:
    """A video file decoded by imageio's ffmpeg plugin (``imageio-ffmpeg``)."""
    try:
        import imageio.v2 as imageio
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        raise SourceError(
            "reading video needs imageio and imageio-ffmpeg: pip install imageio imageio-ffmpeg"
        ) from None
    try:
        reader = imageio.get_reader(str(path), "ffmpeg")
        try:
            meta = reader.get_meta_data()
            stacked = frames.stack(reader.iter_data())
        finally:
            reader.close()
    except SourceError:
        raise
    except Exception as err:
        raise SourceError(f"unreadable video ({type(err).__name__}: {_line(err)})") from None
    fps, duration = meta.get("fps"), meta.get("duration")
    if fps and duration and np.isfinite(fps * duration):
        promised = round(float(fps) * float(duration))
        if len(stacked) < promised - max(2, promised // 20):
            raise SourceError(
                f"truncated video: {len(stacked)} frames decoded, its header promises {promised}"
            )
    return Episode(stacked)


READERS = {"video": read_video, "npz": read_npz, "hdf5": read_hdf5, "images": read_images}


def read(source: Source, frames: Frames) -> Episode:
    """Read one source with the reader of its format."""
    return READERS[source.format](source.path, frames)


def _line(err: BaseException) -> str:
    """The first non-empty line of an error message (ffmpeg's are long)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__
