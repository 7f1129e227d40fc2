"""In-memory chunk storage: linking, capacity and RAM accounting, oldest-first eviction.

A :class:`Chunk` holds consecutive steps ``(L, ...)`` of one stream. Chunk ``(s, k)`` links to
``(s, k - 1)`` and ``(s, k + 1)`` only while that exact chunk is stored, so linked chunks are
always gap-free runs of one stream. :class:`ChunkStore` keeps chunks in insertion order (a FIFO
of positions ``head..tail-1``); eviction always removes the oldest chunk, so positions of live
chunks stay contiguous and every sampling structure can be indexed by ``pos - head``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wm_ray.types import FLAG_KEYS, check_step_keys

Spec = dict[str, tuple[str, tuple[int, ...]]]
"""Per key: dtype string and the per-step shape (without the leading time axis)."""

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_BYTES = re.compile(r"\s*(\d[\d_]*(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*")


def parse_bytes(value: str | int, name: str = "ram_budget") -> int:
    """Parse a positive byte count: ``1000000``, ``"512MiB"``, ``"8GiB"``, ``"1.5GB"``.

    Units (case-insensitive): B, KB/MB/GB/TB (powers of 1000), KiB/MiB/GiB/TiB (powers of 1024).

    Raises:
        ValueError: naming ``name``, the bad value and the accepted forms.
    """
    number: float | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str) and (match := _BYTES.fullmatch(value)):
        unit = match.group(2).lower()
        if unit in _UNITS:
            number = float(match.group(1).replace("_", "")) * _UNITS[unit]
    if number is None or number < 1:
        raise ValueError(
            f"invalid {name} {value!r}: expected a positive byte count such as 1000000, or a "
            "number with a unit B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB "
            "(powers of 1024), e.g. '512MiB', '8GiB', '1.5GB'"
        )
    return int(number)


def spec_of(data: dict[str, np.ndarray]) -> Spec:
    """The per-key dtype and per-step shape of chunk arrays ``(L, ...)``."""
    return {key: (value.dtype.str, tuple(value.shape[1:])) for key, value in data.items()}


def spec_mismatch(expected: Spec, got: Spec) -> str | None:
    """A sentence describing how ``got`` differs from ``expected``, or None when equal."""
    if set(expected) != set(got):
        return f"keys {sorted(got)} differ from the stored keys {sorted(expected)}"
    for key, (dtype, shape) in expected.items():
        if got[key] != (dtype, shape):
            return (
                f"key {key!r} has dtype {np.dtype(got[key][0])} and step shape {got[key][1]}, "
                f"stored chunks have {np.dtype(dtype)} and {shape}"
            )
    return None


@dataclass(eq=False, slots=True)
class Chunk:
    """Consecutive steps ``(L, ...)`` of one stream plus its links and bookkeeping.

    Attributes:
        seq: global insertion sequence number (also stored in the chunk file).
        start_step: steps the replay had inserted before this chunk (its first step's id).
        pos: position in the store's FIFO (set by :meth:`ChunkStore.add`).
    """

    stream: str
    index: int
    seq: int
    start_step: int
    data: dict[str, np.ndarray]
    length: int = 0
    nbytes: int = 0
    is_first: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    path: Path | None = None
    pos: int = -1
    prev: Chunk | None = None
    next: Chunk | None = None

    def __post_init__(self) -> None:
        self.length = int(next(iter(self.data.values())).shape[0])
        self.nbytes = sum(int(value.nbytes) for value in self.data.values())
        self.is_first = np.asarray(self.data["is_first"], dtype=bool)


class ChunkStore:
    """Chunks in insertion order with per-stream links and capacity/RAM accounting.

    Args:
        capacity: maximum stored steps.
        ram_budget: maximum bytes of stored arrays (sum of ``nbytes``).
    """

    def __init__(self, capacity: int, ram_budget: int) -> None:
        if capacity < 1:
            raise ValueError(f"replay capacity must be >= 1 step, got {capacity}")
        self.capacity = int(capacity)
        self.ram_budget = int(ram_budget)
        self.steps = 0
        self.nbytes = 0
        self.head = 0
        self.tail = 0
        self.spec: Spec | None = None
        self._fifo: list[Chunk | None] = []
        self._base = 0
        self._by_key: dict[tuple[str, int], Chunk] = {}
        self._stream_chunks: dict[str, int] = {}

    @property
    def num_chunks(self) -> int:
        return self.tail - self.head

    @property
    def num_streams(self) -> int:
        return len(self._stream_chunks)

    def get(self, stream: str, index: int) -> Chunk | None:
        """The stored chunk ``(stream, index)``, if any."""
        return self._by_key.get((stream, index))

    def at(self, pos: int) -> Chunk:
        """The chunk at FIFO position ``pos`` (``head <= pos < tail``)."""
        chunk = self._fifo[pos - self._base]
        assert chunk is not None, pos
        return chunk

    def check_spec(self, chunk: Chunk) -> None:
        """Raise ``ValueError`` when the chunk's keys, dtypes or step shapes differ from storage."""
        if self.spec is None:
            return
        problem = spec_mismatch(self.spec, spec_of(chunk.data))
        if problem:
            raise ValueError(
                f"chunk {chunk.index} of stream {chunk.stream!r} does not match the replay: "
                f"{problem}"
            )

    def add(self, chunk: Chunk) -> None:
        """Append ``chunk`` as the newest and link it to its stored neighbours."""
        key = (chunk.stream, chunk.index)
        if key in self._by_key:
            raise ValueError(f"chunk {chunk.index} of stream {chunk.stream!r} is already stored")
        self.check_spec(chunk)
        if self.spec is None:
            self.spec = spec_of(chunk.data)
        chunk.pos = self.tail
        self._fifo.append(chunk)
        self.tail += 1
        self._by_key[key] = chunk
        self._stream_chunks[chunk.stream] = self._stream_chunks.get(chunk.stream, 0) + 1
        chunk.prev = self._by_key.get((chunk.stream, chunk.index - 1))
        chunk.next = self._by_key.get((chunk.stream, chunk.index + 1))
        if chunk.prev is not None:
            chunk.prev.next = chunk
        if chunk.next is not None:
            chunk.next.prev = chunk
        self.steps += chunk.length
        self.nbytes += chunk.nbytes

    def over_limits(self) -> bool:
        """True while stored steps exceed ``capacity`` or stored bytes exceed ``ram_budget``."""
        return self.steps > self.capacity or self.nbytes > self.ram_budget

    def pop_oldest(self) -> tuple[Chunk, Chunk | None]:
        """Remove the oldest chunk; returns it and its former predecessor (whose window shrank)."""
        if self.head == self.tail:
            raise IndexError("pop from an empty ChunkStore")
        chunk = self.at(self.head)
        self._fifo[self.head - self._base] = None
        self.head += 1
        dead = self.head - self._base
        if dead >= 1024 and 2 * dead >= len(self._fifo):
            del self._fifo[:dead]
            self._base = self.head
        del self._by_key[(chunk.stream, chunk.index)]
        remaining = self._stream_chunks[chunk.stream] - 1
        if remaining:
            self._stream_chunks[chunk.stream] = remaining
        else:
            del self._stream_chunks[chunk.stream]
        prev = chunk.prev
        if prev is not None:
            prev.next = None
        if chunk.next is not None:
            chunk.next.prev = None
        chunk.prev = chunk.next = None
        self.steps -= chunk.length
        self.nbytes -= chunk.nbytes
        return chunk, prev

    def oldest_first(self) -> Iterator[Chunk]:
        """Stored chunks from oldest to newest."""
        for pos in range(self.head, self.tail):
            yield self.at(pos)

    def newest_first(self) -> Iterator[Chunk]:
        """Stored chunks from newest to oldest."""
        for pos in range(self.tail - 1, self.head - 1, -1):
            yield self.at(pos)


def validated_chunk(stream: str, index: int, chunk: dict[str, Any]) -> dict[str, np.ndarray]:
    """Check a chunk offered to :meth:`~wm_ray.replay.buffer.Replay.add_chunk` and return
    C-contiguous private copies of its arrays (flags as bool).

    Raises:
        ValueError: naming what is wrong with ``stream``, ``index`` or the arrays.
    """
    if not isinstance(stream, str) or not stream:
        raise ValueError(f"stream must be a non-empty string, got {stream!r}")
    if isinstance(index, bool) or not isinstance(index, int | np.integer) or index < 0:
        raise ValueError(f"chunk index must be an integer >= 0, got {index!r}")
    if not isinstance(chunk, dict) or not chunk:
        raise ValueError(f"chunk must be a non-empty dict of arrays, got {type(chunk)}")
    check_step_keys(chunk)
    data = {key: np.array(value, order="C", copy=True) for key, value in chunk.items()}
    for key in FLAG_KEYS:
        data[key] = data[key].astype(bool, copy=False)
    lengths = {key: value.shape[0] if value.ndim else None for key, value in data.items()}
    if len(set(lengths.values())) != 1 or None in lengths.values() or 0 in lengths.values():
        raise ValueError(
            f"chunk {index} of stream {stream!r}: every array needs the same leading time "
            f"axis L >= 1 (L, ...); got lengths {lengths}"
        )
    return data
