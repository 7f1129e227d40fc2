"""``wm-ray ingest``: offline data (video, arrays, HDF5, image folders) into replay chunks.

Every source is one episode stream (``is_first`` at its first step, ``is_last`` at its end;
``is_terminal`` only where the source marks it, a terminal flag before the end also ends an
episode there): a stream ``ingest-<run id>-<n>`` cut into chunks of ``chunk_len`` steps, written
as chunk files (:mod:`wm_ray.replay.chunkfile`, atomic) into ``<out>/replay/shard-0``, the
layout of a run's replay. ``<out>/dataset.json`` describes the data set: sources and their
steps, skipped files with reasons, the image shape, whether the actions are real labels.

Nothing half-written is kept: a source is read whole before any of its chunks is written, so a
bad file leaves nothing behind; a failed write removes the source's chunks written so far;
``dataset.json`` is rewritten atomically after every source and is the record of what is
complete: preloading reads only the streams it lists, and ``--append`` first deletes chunk files
of streams it does not list (a source cut off by a kill).
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wm_ray.ingest.readers import Episode, Frames, Source, SourceError, discover, read
from wm_ray.replay import chunkfile
from wm_ray.replay.dataset import DATASET_FILE, DATASET_FORMAT, chunk_files, read_dataset
from wm_ray.rundir.paths import shard_directory

logger = logging.getLogger(__name__)


class IngestError(ValueError):
    """The ingest as a whole cannot run (a bad output directory or option)."""


def steps_of(episode: Episode) -> dict[str, np.ndarray]:
    """The step arrays ``(T, ...)`` of one source (see :mod:`wm_ray.types`).

    Actions and rewards may have T entries, or T - 1 (between frames: the action of the last
    frame becomes 0, a reward arrives with the next frame and the first one is 0).
    """
    frames = episode.frames
    length = len(frames)

    def per_step(name: str, value: np.ndarray, pad_front: bool) -> np.ndarray:
        if value.ndim == 0 or len(value) not in (length, length - 1):
            raise SourceError(f"{name} has shape {value.shape}, need {length} (or {length - 1})")
        if value.dtype.kind not in "biuf":
            raise SourceError(f"{name} has dtype {value.dtype}, need numbers")
        if len(value) == length - 1:
            pad = np.zeros((1, *value.shape[1:]), value.dtype)
            value = np.concatenate([pad, value] if pad_front else [value, pad])
        return value

    if episode.action is None:
        action = np.zeros(length, np.int64)
    else:
        action = per_step("action", episode.action, pad_front=False)
        action = action.astype(np.float32 if action.dtype.kind == "f" else np.int64)
    reward = np.zeros(length, np.float32)
    if episode.reward is not None:
        reward = per_step("reward", episode.reward, pad_front=True).astype(np.float32)
        if reward.ndim != 1:
            raise SourceError(f"reward has shape {reward.shape}, need ({length},)")
    terminal = np.zeros(length, bool)
    if episode.terminal is not None:
        if episode.terminal.shape != (length,):
            raise SourceError(f"terminal flags have shape {episode.terminal.shape}, need {length}")
        terminal = episode.terminal.astype(bool)
    is_last = terminal.copy()
    is_last[-1] = True
    is_first = np.zeros(length, bool)
    is_first[0] = True
    is_first[1:] = is_last[:-1]
    return {
        "image": frames,
        "action": action,
        "reward": reward,
        "is_first": is_first,
        "is_last": is_last,
        "is_terminal": terminal,
    }


class Dataset:
    """The output directory: its spec, its next chunk numbers and its ``dataset.json``."""

    def __init__(self, out: Path, append: bool, chunk_len: int, options: dict[str, Any]) -> None:
        self.out = out
        self.chunks = shard_directory(out, 0)
        self.chunk_len = chunk_len
        self.options = options
        self.run = uuid.uuid4().hex[:8]  # stream names never repeat those of earlier runs
        self.seq = 0
        self.steps = 0
        self.meta: dict[str, Any] = {"sources": [], "skipped": []}
        existing = read_dataset(out) if out.is_dir() else None
        if out.exists() and not out.is_dir():
            raise IngestError(f"--out {out} exists and is not a directory")
        if out.is_dir() and any(out.iterdir()):
            if not append:
                raise IngestError(
                    f"--out {out} is not empty; give a new directory, or --append to add to the "
                    "data set there"
                )
            if existing is None:
                raise IngestError(f"--append: {out} has no {DATASET_FILE} (not a data set)")
            self.meta = existing
            self._drop_unrecorded()
            headers = chunk_files(out)
            if headers:
                newest = max(headers, key=lambda h: h.seq)
                self.seq, self.steps = newest.seq + 1, newest.inserted_before + newest.length
        self.streams = len(self.meta["sources"])

    def _drop_unrecorded(self) -> None:
        """Delete chunk and temporary files of sources that ``dataset.json`` does not list."""
        recorded = {source["stream"] for source in self.meta["sources"]}
        for path in chunkfile.list_chunk_files(self.chunks)[1]:
            path.unlink(missing_ok=True)
        for header in chunk_files(self.out):
            if header.stream not in recorded:
                logger.warning("ingest: deleting %s (of an unfinished source)", header.path.name)
                header.path.unlink(missing_ok=True)

    def fit(self, steps: dict[str, np.ndarray], has_labels: bool) -> None:
        """Refuse a source that does not match the data set's image and action form."""
        shape = list(steps["image"].shape[1:])
        if self.meta.get("image_shape") not in (None, shape):
            raise SourceError(
                f"image shape {tuple(shape)} differs from the data set's "
                f"{tuple(self.meta['image_shape'])} (give --image-size N, and --grayscale for "
                "mixed color)"
            )
        if "labels" in self.meta and self.meta["labels"] != has_labels:
            have = "has" if has_labels else "has no"
            other = "has" if self.meta["labels"] else "has no"
            raise SourceError(f"{have} actions, the data set {other} action labels")
        action = steps["action"]
        form = {"dtype": action.dtype.name, "shape": list(action.shape[1:])}
        known = self.meta.get("actions")
        if has_labels and known and {k: known[k] for k in form} != form:
            raise SourceError(
                f"actions are {form['dtype']} {form['shape']}, the data set's "
                f"{known['dtype']} {known['shape']}"
            )

    def add(self, source: Source, steps: dict[str, np.ndarray], has_labels: bool) -> int:
        """Write one source's chunks; returns its steps."""
        self.fit(steps, has_labels)
        self.chunks.mkdir(parents=True, exist_ok=True)
        length = len(steps["image"])
        stream = f"ingest-{self.run}-{self.streams:06d}"
        written: list[Path] = []
        try:
            for index, start in enumerate(range(0, length, self.chunk_len)):
                part = {k: v[start : start + self.chunk_len] for k, v in steps.items()}
                written.append(
                    chunkfile.write_chunk_file(
                        self.chunks, stream, index, self.seq, self.steps, part
                    )
                )
                self.seq += 1
                self.steps += len(part["image"])
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        self.streams += 1
        self.meta["image_shape"] = list(steps["image"].shape[1:])
        self.meta["labels"] = has_labels
        action = steps["action"]
        if has_labels:
            known = self.meta.get("actions") or {}
            count = None
            if action.dtype.kind == "i":
                count = max(int(known.get("count") or 0), int(action.max()) + 1)
            form = {"dtype": action.dtype.name, "shape": list(action.shape[1:]), "count": count}
            self.meta["actions"] = form
        else:
            self.meta["actions"] = None
        episodes = int(steps["is_first"].sum())
        self.meta["sources"].append(
            {
                "path": str(source.path),
                "format": source.format,
                "stream": stream,
                "steps": length,
                "episodes": episodes,
                "terminal": bool(steps["is_terminal"].any()),
            }
        )
        self.save(complete=False)  # the record of what is whole
        return length

    def save(self, complete: bool) -> Path:
        """Write ``dataset.json`` atomically (temp file, fsync, rename)."""
        from wm_ray import __version__

        sources = self.meta["sources"]
        actions = self.meta.get("actions")
        self.meta.update(
            {
                "format": DATASET_FORMAT,
                "chunk_format": chunkfile.VERSION,
                "wm_ray_version": __version__,
                "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "complete": complete,
                "action_count": actions.get("count") if actions else None,
                "total_steps": sum(s["steps"] for s in sources),
                "total_episodes": sum(s["episodes"] for s in sources),
                "options": self.options,
            }
        )
        path = self.out / DATASET_FILE
        temp = self.out / f".{DATASET_FILE}.{os.getpid()}.tmp"
        try:
            with open(temp, "w") as f:
                f.write(json.dumps(self.meta, indent=2) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return path


def ingest(
    sources: Sequence[str | Path],
    out: str | Path,
    image_size: int | None = None,
    grayscale: bool = False,
    chunk_len: int = 64,
    fmt: str = "auto",
    append: bool = False,
) -> dict[str, Any]:
    """Ingest ``sources`` into the data set directory ``out``; returns a summary (``ingested``
    sources, ``steps``, ``skipped`` as ``[path, reason]``, ``dataset``: the json's path or None
    when nothing was ingested and nothing written).

    Raises:
        IngestError: ``out`` not empty without ``append``, or not a data set with it; options
            out of range.
    """
    if chunk_len < 1:
        raise IngestError(f"--chunk-len must be >= 1, got {chunk_len}")
    if image_size is not None and not 1 <= image_size <= 4096:
        raise IngestError(f"--image-size must be in 1..4096, got {image_size}")
    out = Path(out)
    options = {"image_size": image_size, "grayscale": grayscale, "format": fmt}
    dataset = Dataset(out, append, chunk_len, {**options, "chunk_len": chunk_len})
    created = not out.exists()
    found, skipped = discover(sources, fmt)
    for path_, reason in skipped:
        logger.warning("ingest: skipped %s: %s", path_, reason)
    frames = Frames(image_size, grayscale)
    ingested = steps_total = 0
    complete = False
    try:
        for source in found:
            try:
                episode = read(source, frames)
                steps = steps_of(episode)
                added = dataset.add(source, steps, episode.action is not None)
                steps_total += added
                ingested += 1
                logger.info("ingest: %s: %d steps", source.path, added)
            except SourceError as err:
                skipped.append((str(source.path), err.reason))
                logger.warning("ingest: skipped %s: %s", source.path, err.reason)
        complete = True
    finally:
        dataset.meta["skipped"] += [{"path": p, "reason": r} for p, r in skipped]
        path: Path | None = None
        if ingested or dataset.meta["sources"]:
            path = dataset.save(complete)
        elif created and out.is_dir():
            for directory in (dataset.chunks, dataset.chunks.parent, out):
                if directory.is_dir() and not any(directory.iterdir()):
                    directory.rmdir()
    return {
        "dataset": str(path) if path else None,
        "ingested": ingested,
        "steps": steps_total,
        "skipped": [list(item) for item in skipped],
        "total_steps": dataset.meta.get("total_steps", 0),
    }
