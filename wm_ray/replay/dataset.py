"""Data sets on disk (``wm-ray ingest``'s output) and preloading them into replay.

A data set directory has the layout of a run's replay: chunk files in ``<dir>/replay/shard-0``
(:mod:`wm_ray.replay.chunkfile`), one stream per ingested episode, plus ``<dir>/dataset.json``
describing it (sources, steps, skipped files, image shape, whether the actions are real
labels). ``replay.preload`` names such directories (a run directory's replay works too); their
chunks are stored in a run's replay before training starts (:func:`preload`), kept in memory
only and counted as ``preloaded_steps``, not as inserted steps: the train ratio stays a ratio
to env steps. Numpy and stdlib only, like the rest of :mod:`wm_ray.replay`.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wm_ray.replay import chunkfile
from wm_ray.replay.storage import Spec, spec_mismatch
from wm_ray.types import ACTION_KEY, FLAG_KEYS, OBS_KEYS, REWARD_KEY

if TYPE_CHECKING:
    from wm_ray.replay.buffer import Replay

logger = logging.getLogger(__name__)

DATASET_FILE = "dataset.json"
DATASET_FORMAT = "wm_ray.dataset/1"


def preload_paths(value: str | Sequence[str]) -> list[Path]:
    """``replay.preload`` as a list of directories (a single string is one directory)."""
    items = [value] if isinstance(value, str) else list(value)
    return [Path(item).expanduser() for item in items if str(item)]


def chunk_dirs(root: str | Path) -> list[Path]:
    """The chunk directories of a data set or run directory: ``<root>/replay/shard-*``."""
    base = Path(root) / "replay"
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if p.is_dir() and p.name.startswith("shard-"))


def read_dataset(root: str | Path) -> dict[str, Any] | None:
    """``<root>/dataset.json`` parsed, or None where there is none (e.g. a run directory)."""
    path = Path(root) / DATASET_FILE
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"data set {root}: unreadable {DATASET_FILE} ({err})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"data set {root}: {DATASET_FILE} is not a JSON object")
    return meta


def chunk_files(root: str | Path) -> list[chunkfile.ChunkHeader]:
    """Headers of every finished chunk file of ``root`` in insertion (``seq``) order; corrupt
    headers are skipped with a warning."""
    headers = []
    for directory in chunk_dirs(root):
        for path in chunkfile.list_chunk_files(directory)[0]:
            try:
                headers.append(chunkfile.read_chunk_header(path))
            except chunkfile.CorruptChunkError as err:
                logger.warning("preload: skipping %s (%s)", path, err.reason)
    return sorted(headers, key=lambda h: (h.seq, str(h.path)))


def stored_spec(root: str | Path) -> Spec:
    """Keys, dtypes and step shapes of a data set's chunks (from its first chunk's header).

    Raises:
        ValueError: when ``root`` holds no chunk files.
    """
    headers = chunk_files(root)
    if not headers:
        raise ValueError(f"{root} holds no replay chunk files (expected {root}/replay/shard-*/)")
    return {
        key: (str(entry["dtype"]), tuple(int(n) for n in entry["shape"][1:]))
        for key, entry in headers[0].keys.items()
    }


def env_spec(obs_space: Any, act_space: Any) -> Spec:
    """The stored spec of an env's steps (see :mod:`wm_ray.types`): observation keys as the
    space says, int64 actions for discrete spaces, float32 for continuous ones."""
    spec: Spec = {}
    spaces = getattr(obs_space, "spaces", {})
    for key in OBS_KEYS:
        if key in spaces:
            spec[key] = (np.dtype(spaces[key].dtype).str, tuple(spaces[key].shape))
    if hasattr(act_space, "n"):
        spec[ACTION_KEY] = (np.dtype(np.int64).str, ())
    else:
        spec[ACTION_KEY] = (np.dtype(np.float32).str, tuple(act_space.shape))
    spec[REWARD_KEY] = (np.dtype(np.float32).str, ())
    for key in FLAG_KEYS:
        spec[key] = (np.dtype(bool).str, ())
    return spec


def labels_of(root: str | Path) -> bool:
    """Whether a data set's actions are real labels (a run directory's always are)."""
    meta = read_dataset(root)
    return True if meta is None else bool(meta.get("labels", True))


def check_preload(roots: Sequence[str | Path], expected: Spec) -> str | None:
    """Why the data sets cannot be preloaded into a run whose steps have spec ``expected``
    (a sentence naming the directory and the difference), or None when they can."""
    for root in roots:
        if not Path(root).is_dir():
            return f"replay.preload: {root} is not a directory"
        try:
            spec = stored_spec(root)
        except ValueError as err:
            return f"replay.preload: {err}"
        if not labels_of(root) and ACTION_KEY in spec and ACTION_KEY in expected:
            spec[ACTION_KEY] = expected[ACTION_KEY]  # placeholder zeros take the env's form
        problem = spec_mismatch(expected, spec)
        if problem:
            env_image = expected.get("image", (None, None))[1]
            data_image = spec.get("image", (None, None))[1]
            if env_image != data_image:
                problem = f"its image shape {data_image} differs from the env's {env_image}"
            return f"replay.preload: {root} does not fit this run: {problem}"
    return None


def adapt(data: dict[str, np.ndarray], expected: Spec | None, labels: bool) -> dict[str, Any]:
    """Placeholder actions (a data set without labels) in the run's action form: zeros."""
    if labels or expected is None or ACTION_KEY not in expected:
        return data
    dtype, shape = expected[ACTION_KEY]
    length = len(data[ACTION_KEY])
    return {**data, ACTION_KEY: np.zeros((length, *shape), np.dtype(dtype))}


def iter_chunks(root: str | Path) -> Iterator[tuple[str, int, dict[str, np.ndarray]]]:
    """``(stream, index, arrays)`` of every chunk of ``root`` in insertion order: of a data
    set only the streams its ``dataset.json`` lists (whole sources); corrupt files are skipped
    with a warning."""
    meta = read_dataset(root)
    recorded = None if meta is None else {s.get("stream") for s in meta.get("sources", [])}
    for header in chunk_files(root):
        if recorded is not None and header.stream not in recorded:
            continue
        try:
            _, data = chunkfile.load_chunk_file(header.path)
        except (chunkfile.CorruptChunkError, OSError) as err:
            logger.warning("preload: skipping %s (%s)", header.path, err)
            continue
        yield header.stream, header.index, data


def preload(
    shards: Sequence[Replay],
    roots: Sequence[str | Path],
    expected: Spec | None = None,
    only: int | None = None,
    num_shards: int | None = None,
) -> int:
    """Store the chunks of the data sets ``roots`` in replay shards; returns the steps stored.

    A stream goes to shard ``crc32(stream) % S`` as env streams do. ``shards`` are all ``S``
    shards (the single-process loop), or with ``only=i`` and ``num_shards=S`` the one shard
    ``i`` (a Ray replay-shard actor loads its own share). ``expected``: the run's step spec;
    actions of a data set without labels are stored as zeros of its action form.

    Raises:
        ValueError: a chunk that does not fit the replay's keys, dtypes or shapes.
    """
    total = num_shards if num_shards is not None else len(shards)
    steps = 0
    for root in roots:
        labels = labels_of(root)
        before = steps
        for stream, index, data in iter_chunks(root):
            shard = zlib.crc32(stream.encode("utf-8")) % total
            if only is not None and shard != only:
                continue
            target = shards[0] if only is not None else shards[shard]
            steps += target.preload_chunk(stream, index, adapt(data, expected, labels))
        logger.info("replay: preloaded %d steps from %s", steps - before, root)
    return steps
