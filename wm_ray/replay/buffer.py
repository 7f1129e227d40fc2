"""``Replay``: chunked, optionally disk-persisted sequence replay (the facade loops and shards use).

Insert whole chunks of one stream, sample ``(B, T, ...)`` batches of valid sequences (see
:mod:`wm_ray.replay.sequences`), and account the sample:insert ratio in :attr:`Replay.limiter`.
With a directory, every chunk is a durable file before :meth:`Replay.add_chunk` returns, evicted
chunks' files are deleted, and a new ``Replay`` on the same directory reloads what is there in
insertion order. One ``Replay`` owns its directory (give each shard its own); it is not
thread-safe.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from wm_ray.config import ReplayConfig
from wm_ray.replay import chunkfile
from wm_ray.replay.chunkfile import ChunkHeader, CorruptChunkError
from wm_ray.replay.limiter import Limiter, pacing_tolerance
from wm_ray.replay.selectors import make_selector
from wm_ray.replay.sequences import SequenceIndex, gather
from wm_ray.replay.storage import (
    Chunk,
    ChunkStore,
    Spec,
    parse_bytes,
    spec_mismatch,
    spec_of,
    validated_chunk,
)
from wm_ray.types import check_step_keys

logger = logging.getLogger(__name__)

_COUNTERS = (
    "inserted_steps",
    "inserted_chunks",
    "duplicate_chunks",
    "stale_chunks",
    "sampled_sequences",
    "sampled_steps",
    "evicted_chunks",
    "evicted_steps",
    "corrupt_chunks",
)


class EmptyReplayError(RuntimeError):
    """``sample`` was called while no valid sequence of the requested length is stored."""


class Replay:
    """Chunk storage + sequence sampling + sample:insert limiter (see module doc).

    Args:
        config: capacity, RAM budget, batch/sequence defaults, selector and limiter settings.
        directory: where chunk files live; None keeps everything in memory (the caller maps
            ``config.persist`` to ``<run_dir>/replay[/shard-i]`` or None). Existing chunk files
            are reloaded (corrupt ones quarantined to ``directory/corrupt``, see :attr:`corrupt`).
        seed: seed of the sampling generator.
        tolerance: of the limiter; default :func:`~wm_ray.replay.limiter.pacing_tolerance` with
            inserts of one chunk (a run passes its own: the loops insert rounds of chunks).

    Attributes:
        limiter: the sample:insert limiter. ``add_chunk`` and ``sample`` record into it but never
            block: callers consult ``limiter.can_insert`` / ``limiter.can_sample`` first.
        corrupt: ``(quarantined path, reason)`` of every chunk file refused at load.
    """

    def __init__(
        self,
        config: ReplayConfig,
        directory: str | Path | None = None,
        seed: int = 0,
        tolerance: float | None = None,
    ) -> None:
        self.config = config
        self.store = ChunkStore(config.capacity, parse_bytes(config.ram_budget))
        if tolerance is None:
            tolerance = pacing_tolerance(config, config.chunk_len)
        self.limiter = Limiter(config.samples_per_insert, tolerance, config.min_size)
        self.limiter.check_sizes(config.chunk_len, config.batch_size * config.seq_len)
        self.selector = make_selector(config)
        self.directory = Path(directory) if directory is not None else None
        self.corrupt: list[tuple[Path, str]] = []
        self._rng = np.random.default_rng(seed)
        self._indexes: dict[int, SequenceIndex] = {}
        self._next_seq = 0
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._evicted_upto: dict[str, int] = {}
        self.preloaded_steps = 0
        self._unlink_later: list[Path] = []
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._reload()
        reload_keys = ("evicted_chunks", "evicted_steps", "corrupt_chunks")
        self._reload_counts = {key: self._counts[key] for key in reload_keys}

    def __len__(self) -> int:
        """Stored steps."""
        return self.store.steps

    def add_chunk(self, stream: str, index: int, chunk: dict[str, np.ndarray]) -> int:
        """Store consecutive steps ``(L, ...)`` of ``stream`` as its chunk number ``index``.

        With a directory the chunk file is written atomically and fsync'd before this returns.
        A chunk already stored under ``(stream, index)`` is acknowledged without storing it again
        (at-least-once delivery is safe; counted as ``duplicate_chunks``), and so is a chunk no
        newer than an already evicted chunk of its stream (a late re-delivery of evicted data;
        counted as ``stale_chunks``). Afterwards the oldest chunks are evicted until both
        ``capacity`` and ``ram_budget`` hold. Flag arrays are stored as bool.

        Returns:
            L, the steps acknowledged.

        Raises:
            ValueError: naming what is wrong with ``stream``, ``index`` or the arrays.
        """
        data = validated_chunk(stream, index, chunk)
        self._delete_evicted_files()
        length = len(next(iter(data.values())))
        if self.store.get(stream, index) is not None:
            self._counts["duplicate_chunks"] += 1
            return length
        if index <= self._evicted_upto.get(stream, -1):
            self._counts["stale_chunks"] += 1
            return length
        new = Chunk(stream, int(index), self._next_seq, self._counts["inserted_steps"], data)
        self.store.check_spec(new)
        if self.directory is not None:
            new.path = chunkfile.write_chunk_file(
                self.directory, stream, new.index, new.seq, new.start_step, data
            )
        self._insert(new)
        self._next_seq += 1
        self._counts["inserted_steps"] += length
        self._counts["inserted_chunks"] += 1
        self.limiter.on_insert(length)
        while self.store.over_limits():
            self._evict_oldest()
        return length

    def preload_chunk(self, stream: str, index: int, chunk: dict[str, np.ndarray]) -> int:
        """Store a chunk of a data set (``replay.preload``, :mod:`wm_ray.replay.dataset`).

        Kept in memory only (the data set is its own copy on disk) and counted as
        ``preloaded_steps``, not as inserted steps, so the limiter's ratio stays one to env
        steps. A chunk already stored is skipped. Returns the steps stored.
        """
        data = validated_chunk(stream, index, chunk)
        if self.store.get(stream, index) is not None:
            return 0
        new = Chunk(stream, int(index), -1, self._counts["inserted_steps"], data)
        self._insert(new)
        self.preloaded_steps += new.length
        while self.store.over_limits():
            self._evict_oldest(later=True)
        return new.length

    def can_sample(self, seq_len: int | None = None) -> bool:
        """Whether at least one valid sequence of ``seq_len`` steps (default config) is stored."""
        return self.sequence_index(seq_len or self.config.seq_len).total > 0

    def sample(
        self, batch_size: int | None = None, seq_len: int | None = None
    ) -> dict[str, np.ndarray]:
        """A batch of valid sequences chosen by the configured selector.

        Returns:
            ``{key: (B, T, ...)}`` arrays with the stored dtypes (uint8 images stay uint8).

        Raises:
            EmptyReplayError: when no valid sequence of length T is stored.
        """
        batch = int(batch_size or self.config.batch_size)
        length = int(seq_len or self.config.seq_len)
        if batch < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        index = self.sequence_index(length)
        if index.total == 0:
            raise EmptyReplayError(
                f"no valid sequence of {length} steps in the replay ({self.store.steps} steps in "
                f"{self.store.num_chunks} chunks of {self.store.num_streams} streams); check "
                "can_sample() first"
            )
        positions, offsets = self.selector.select(
            index, self.store, self._counts["inserted_steps"], batch, self._rng
        )
        assert self.store.spec is not None
        out = gather(self.store, self.store.spec, positions, offsets, length)
        self._counts["sampled_sequences"] += batch
        self._counts["sampled_steps"] += batch * length
        self.limiter.on_sample(batch * length)
        return out

    @property
    def spec(self) -> Spec | None:
        """Per key: dtype string and step shape of the stored data (None while empty)."""
        return self.store.spec

    def stats(self) -> dict[str, float]:
        """Storage, traffic and limiter figures, all as floats (for metric sinks)."""
        out = {
            "steps": float(self.store.steps),
            "chunks": float(self.store.num_chunks),
            "streams": float(self.store.num_streams),
            "bytes": float(self.store.nbytes),
            "capacity": float(self.store.capacity),
            "ram_budget": float(self.store.ram_budget),
            "fill": self.store.steps / self.store.capacity,
            "valid_sequences": float(self.sequence_index(self.config.seq_len).total),
        }
        out.update({key: float(value) for key, value in self._counts.items()})
        out["inserted_total"] = out["inserted_steps"]
        out["preloaded_steps"] = float(self.preloaded_steps)
        out.update(self.limiter.stats())
        return out

    def state_dict(self) -> dict[str, Any]:
        """Counters, limiter and generator state (JSON-able); the data itself lives in the files.

        A checkpoint commits the start: the files its reload evicted are deleted now.
        """
        self._delete_evicted_files()
        return {
            "version": 1,
            "next_seq": self._next_seq,
            "counters": dict(self._counts),
            "limiter": self.limiter.state_dict(),
            "rng": self._rng.bit_generator.state,
            "evicted_upto": dict(self._evicted_upto),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (call it right after construction).

        Insert counters take the larger of the saved and the reloaded value: chunks acknowledged
        after the state was saved are still on disk and count as inserted (the learner owes them
        samples, within the limiter's tolerance). Evictions and quarantines done by this
        instance's reload are added to the saved counts.
        """
        saved = dict(state["counters"])
        for key in ("inserted_steps", "inserted_chunks"):
            saved[key] = max(int(saved[key]), self._counts[key])
        self._counts.update(
            {key: int(saved.get(key, 0)) + self._reload_counts.get(key, 0) for key in _COUNTERS}
        )
        for stream, index in state.get("evicted_upto", {}).items():
            self._evicted_upto[stream] = max(int(index), self._evicted_upto.get(stream, -1))
        self._next_seq = max(int(state["next_seq"]), self._next_seq)
        limiter = dict(state["limiter"])
        limiter["inserts"] = max(int(limiter["inserts"]), self._counts["inserted_steps"])
        self.limiter.load_state_dict(limiter)
        self._rng.bit_generator.state = state["rng"]
        for index in self._indexes.values():
            index.version += 1

    def manifest(self) -> dict[str, Any]:
        """What a checkpoint records: chunk files present (oldest first) and counts."""
        self._delete_evicted_files()  # a checkpoint commits the start, as in state_dict
        return {
            "format": "wm_ray.replay/1",
            "directory": str(self.directory) if self.directory is not None else None,
            "files": [c.path.name for c in self.store.oldest_first() if c.path is not None],
            "chunks": self.store.num_chunks,
            "steps": self.store.steps,
            "bytes": self.store.nbytes,
            "streams": self.store.num_streams,
            "next_seq": self._next_seq,
            "inserted_steps": self._counts["inserted_steps"],
            "corrupt": [str(path) for path, _ in self.corrupt],
        }

    def _insert(self, chunk: Chunk) -> None:
        self.store.add(chunk)
        for index in self._indexes.values():
            index.on_add(chunk)

    def _evict_oldest(self, later: bool = False) -> None:
        """Evict the oldest chunk; its file goes now (``later``: at the next insert or save)."""
        chunk, prev = self.store.pop_oldest()
        for index in self._indexes.values():
            index.on_evict(chunk, prev)
        self._count_eviction(chunk.stream, chunk.index, chunk.length)
        if chunk.path is not None:
            self._unlink_later.append(chunk.path)
            if not later:
                self._delete_evicted_files()

    def _delete_evicted_files(self) -> None:
        """Delete the files of evicted chunks.

        Evictions while the replay starts (its reload under a smaller ``capacity`` or
        ``ram_budget``, a data set preloaded on top) delete their files only here, at the first
        insert or checkpoint: a start that fails after the replay was opened (a resume refused
        because the checkpoint's weights do not fit) leaves every chunk file where it was.
        """
        for path in self._unlink_later:
            try:
                path.unlink(missing_ok=True)
            except OSError as e:
                logger.warning("replay: could not delete evicted chunk file %s: %s", path, e)
        self._unlink_later.clear()

    def _count_eviction(self, stream: str, index: int, length: int) -> None:
        self._counts["evicted_chunks"] += 1
        self._counts["evicted_steps"] += length
        self._evicted_upto[stream] = max(index, self._evicted_upto.get(stream, -1))

    def sequence_index(self, seq_len: int) -> SequenceIndex:
        """The valid-start index for ``seq_len``, built on first use and kept up to date."""
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        index = self._indexes.get(seq_len)
        if index is None:
            index = SequenceIndex(seq_len, self.config.cross_episodes, self.store.head)
            index.build(self.store.oldest_first())
            self._indexes[seq_len] = index
        return index

    def _quarantine(self, path: Path, reason: str) -> None:
        assert self.directory is not None
        target = chunkfile.quarantine(path, self.directory)
        self.corrupt.append((target, reason))
        self._counts["corrupt_chunks"] += 1
        logger.warning("replay: refused chunk file %s (%s); moved to %s", path, reason, target)

    def _reload(self) -> None:
        """Load the directory's chunk files: newest first while capacity and RAM allow.

        Files older than the newest run that fits are evicted, exactly as if the limits had been
        applied while inserting (their files deleted at the first insert or checkpoint:
        :meth:`_delete_evicted_files`); corrupt, partial and inconsistent files are quarantined.
        """
        assert self.directory is not None
        finished, temps = chunkfile.list_chunk_files(self.directory)
        for path in temps:
            self._quarantine(path, "incomplete write: temporary file of an interrupted add_chunk")
        headers: list[ChunkHeader] = []
        for path in finished:
            try:
                headers.append(chunkfile.read_chunk_header(path))
            except CorruptChunkError as e:
                self._quarantine(path, e.reason)
        if not headers:
            return
        newest = max(headers, key=lambda h: h.seq)
        self._next_seq = newest.seq + 1
        self._counts["inserted_chunks"] = self._next_seq
        self._counts["inserted_steps"] = newest.inserted_before + newest.length
        kept: list[tuple[ChunkHeader, dict[str, np.ndarray]]] = []
        seen: dict[tuple[str, int], Path] = {}
        spec: Spec | None = None
        steps = nbytes = 0
        for header in sorted(headers, key=lambda h: h.seq, reverse=True):
            if kept and (
                steps + header.length > self.store.capacity
                or nbytes + header.nbytes > self.store.ram_budget
            ):
                # Everything this old was evicted (or would have been): drop it as eviction does
                # (its file deleted once the run goes on).
                self._unlink_later.append(header.path)
                self._count_eviction(header.stream, header.index, header.length)
                steps = self.store.capacity + 1  # keep evicting every older file
                continue
            key = (header.stream, header.index)
            try:
                _, data = chunkfile.load_chunk_file(header.path)
                check_step_keys(data)
                problem = spec_mismatch(spec, spec_of(data)) if spec is not None else None
                if key in seen:
                    problem = f"duplicate of stream {key[0]!r} chunk {key[1]} in {seen[key].name}"
                if problem:
                    raise CorruptChunkError(header.path, problem)
            except (CorruptChunkError, ValueError) as e:
                self._quarantine(header.path, getattr(e, "reason", str(e)))
                continue
            spec = spec or spec_of(data)
            seen[key] = header.path
            kept.append((header, data))
            steps += header.length
            nbytes += header.nbytes
        for header, data in reversed(kept):
            chunk = Chunk(header.stream, header.index, header.seq, header.inserted_before, data)
            chunk.path = header.path
            self._insert(chunk)
        while self.store.over_limits():  # a single chunk larger than the limits
            self._evict_oldest(later=True)
        logger.info(
            "replay: reloaded %d chunks (%d steps) from %s",
            self.store.num_chunks,
            self.store.steps,
            self.directory,
        )
        self.limiter.on_insert(self._counts["inserted_steps"])
        # Without a saved state, assume the reloaded data was sampled on-ratio (no debt).
        self.limiter.samples = max(0, int(self.limiter.debt))
