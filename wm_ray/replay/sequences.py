"""Valid sequence starts, kept incrementally, and the batch gather.

A start ``(chunk c, offset i)`` is valid for sequence length T when the T steps ``i .. i+T-1``
are present in ``c`` and its linked successors (same stream, no missing chunk). Without
``cross_episodes``, no step at positions ``1 .. T-1`` of the sequence may carry ``is_first``,
so the sequence stays inside one episode; with it, a sequence may run into the stream's next
episode, whose first step carries ``is_first`` so the model resets its state there.

The valid starts of chunk c depend only on c and the first T-1 steps after it, so when a chunk
arrives only the predecessors whose T-1-step look-ahead reaches it are recomputed, and when a
chunk is evicted only its former predecessors are.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from wm_ray.replay.storage import Chunk, ChunkStore, Spec


class SequenceIndex:
    """Valid starts for one sequence length, per chunk, in the store's FIFO order.

    Args:
        seq_len: T, steps per sampled sequence.
        cross_episodes: allow sequences to continue into the next episode of the same stream.
        head: FIFO position of the oldest stored chunk when the index is created.
    """

    def __init__(self, seq_len: int, cross_episodes: bool, head: int = 0) -> None:
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        self.seq_len = int(seq_len)
        self.cross_episodes = bool(cross_episodes)
        self.total = 0
        self.version = 0
        """Incremented on every change (lets selectors cache derived tables)."""
        self.head = head
        self.tail = head
        self._base = head
        self._counts = np.zeros(256, np.int64)
        self._offsets: dict[int, np.ndarray] = {}
        self._cumsum: np.ndarray | None = None

    def build(self, chunks: Iterable[Chunk]) -> None:
        """Index already stored chunks, oldest first (their successors are all in place)."""
        for chunk in chunks:
            self._append(chunk)
            self._refresh(chunk)

    def on_add(self, chunk: Chunk) -> None:
        """Index a newly stored (newest) chunk and update the predecessors it extends."""
        self._append(chunk)
        self._refresh(chunk)
        self._refresh_predecessors(chunk.prev)

    def on_evict(self, chunk: Chunk, prev: Chunk | None) -> None:
        """Drop the evicted oldest chunk and update its former predecessors."""
        assert chunk.pos == self.head, (chunk.pos, self.head)
        slot = chunk.pos - self._base
        self.total -= int(self._counts[slot])
        self._counts[slot] = 0
        self._offsets.pop(chunk.pos, None)
        self.head += 1
        self._cumsum = None
        self.version += 1
        self._refresh_predecessors(prev)

    def count(self, pos: int) -> int:
        """Number of valid starts in the chunk at FIFO position ``pos``."""
        return int(self._counts[pos - self._base])

    def offsets(self, pos: int) -> np.ndarray:
        """Valid start offsets (ascending) of the chunk at FIFO position ``pos``."""
        return self._offsets.get(pos, np.zeros(0, np.int64))

    def draw_uniform(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` starts uniform over all valid starts: (positions (n,), offsets (n,))."""
        if self.total <= 0:
            raise ValueError("no valid sequence start to draw from")
        live = self._counts[self.head - self._base : self.tail - self._base]
        if self._cumsum is None:
            self._cumsum = np.cumsum(live)
        r = rng.integers(self.total, size=n)
        slot = np.searchsorted(self._cumsum, r, side="right")
        within = r - (self._cumsum[slot] - live[slot])
        pos = slot + self.head
        offs = np.fromiter(
            (self._offsets[p][w] for p, w in zip(pos.tolist(), within.tolist())), np.int64, n
        )
        return pos, offs

    def _append(self, chunk: Chunk) -> None:
        assert chunk.pos == self.tail, (chunk.pos, self.tail)
        if self.tail - self._base >= len(self._counts):
            live = self._counts[self.head - self._base : self.tail - self._base]
            size = max(256, 2 * len(live))
            self._counts = np.zeros(size, np.int64)
            self._counts[: len(live)] = live
            self._base = self.head
        self.tail += 1
        self._cumsum = None
        self.version += 1

    def _refresh_predecessors(self, chunk: Chunk | None) -> None:
        """Recompute the chunks whose look-ahead of T-1 steps reaches past ``chunk``'s end."""
        ahead = 0
        while chunk is not None and ahead < self.seq_len - 1:
            self._refresh(chunk)
            ahead += chunk.length
            chunk = chunk.prev

    def _refresh(self, chunk: Chunk) -> None:
        offsets = valid_starts(chunk, self.seq_len, self.cross_episodes)
        slot = chunk.pos - self._base
        self.total += len(offsets) - int(self._counts[slot])
        self._counts[slot] = len(offsets)
        self._offsets[chunk.pos] = offsets
        self._cumsum = None
        self.version += 1


def valid_starts(chunk: Chunk, seq_len: int, cross_episodes: bool) -> np.ndarray:
    """Valid start offsets (ascending, int64) of ``chunk`` given its current successors."""
    need = seq_len - 1
    firsts = [chunk.is_first]
    ahead = 0
    succ = chunk.next
    while succ is not None and ahead < need:
        take = min(succ.length, need - ahead)
        firsts.append(succ.is_first[:take])
        ahead += take
        succ = succ.next
    last = min(chunk.length - 1, chunk.length + ahead - seq_len)
    if last < 0:
        return np.zeros(0, np.int64)
    starts = np.arange(last + 1, dtype=np.int64)
    if cross_episodes or seq_len == 1:
        return starts
    flags = np.concatenate(firsts) if len(firsts) > 1 else chunk.is_first
    csum = np.concatenate([[0], np.cumsum(flags, dtype=np.int64)])
    # is_first count at positions start+1 .. start+T-1 of the window.
    inside = csum[starts + seq_len] - csum[starts + 1]
    return starts[inside == 0]


def gather(
    store: ChunkStore, spec: Spec, positions: np.ndarray, offsets: np.ndarray, seq_len: int
) -> dict[str, np.ndarray]:
    """Copy the sequences starting at ``(positions[b], offsets[b])`` into new arrays.

    Each sequence is copied as one slice per chunk it touches (no per-step loop).

    Returns:
        ``{key: (B, T, ...)}`` with the stored dtypes.
    """
    batch = len(positions)
    out = {
        key: np.empty((batch, seq_len, *shape), np.dtype(dtype))
        for key, (dtype, shape) in spec.items()
    }
    keys = list(out)
    for b, (pos, offset) in enumerate(zip(positions.tolist(), offsets.tolist())):
        chunk: Chunk | None = store.at(pos)
        t = 0
        while t < seq_len:
            assert chunk is not None, "sequence ran past its linked chunks"
            n = min(chunk.length - offset, seq_len - t)
            data = chunk.data
            for key in keys:
                out[key][b, t : t + n] = data[key][offset : offset + n]
            t += n
            offset = 0
            chunk = chunk.next
    return out
