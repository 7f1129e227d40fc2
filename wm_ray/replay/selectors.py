"""Which sequences to sample: uniform over all valid starts, or mixed with the most recent ones.

A selector returns FIFO positions and offsets ``(B,)`` of sequence starts; it reads only the
:class:`~wm_ray.replay.sequences.SequenceIndex` and the store's insertion order, and draws all
randomness from the generator it is given, so a restored generator reproduces its samples.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from wm_ray.config import ReplayConfig
from wm_ray.replay.sequences import SequenceIndex
from wm_ray.replay.storage import ChunkStore

SELECTORS = ("uniform", "recency")


class Selector(Protocol):
    def select(
        self,
        index: SequenceIndex,
        store: ChunkStore,
        inserted_total: int,
        n: int,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``n`` valid starts: (FIFO positions (n,), offsets (n,))."""
        ...


class Uniform:
    """Every valid start equally likely: a chunk with probability proportional to its number of
    valid starts, then one of its valid offsets uniformly."""

    def select(
        self,
        index: SequenceIndex,
        store: ChunkStore,
        inserted_total: int,
        n: int,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray]:
        return index.draw_uniform(n, rng)


class Recency:
    """Mix of recent and uniform starts.

    With probability ``fraction`` a draw is a start among the newest ``window`` inserted steps,
    otherwise a uniform one.

    A start is recent when its step id (``chunk.start_step + offset``, counted over all inserted
    steps) is at least ``inserted_total - window``. Recent starts are drawn uniformly among
    themselves; with none available, every draw is uniform.
    """

    def __init__(self, fraction: float, window: int) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"recency_fraction must be in [0, 1], got {fraction}")
        if window < 1:
            raise ValueError(f"recency_window must be >= 1 step, got {window}")
        self.fraction = float(fraction)
        self.window = int(window)
        self._cache_key: tuple[int, int, int] | None = None
        self._cache: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def select(
        self,
        index: SequenceIndex,
        store: ChunkStore,
        inserted_total: int,
        n: int,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray]:
        recent = rng.random(n) < self.fraction
        k = int(recent.sum())
        candidates = self._recent_starts(index, store, inserted_total) if k else None
        if candidates is None:
            return index.draw_uniform(n, rng)
        positions, lows, cumsum = candidates
        pos = np.empty(n, np.int64)
        offs = np.empty(n, np.int64)
        if k < n:
            pos[~recent], offs[~recent] = index.draw_uniform(n - k, rng)
        r = rng.integers(int(cumsum[-1]), size=k)
        which = np.searchsorted(cumsum, r, side="right")
        within = r - np.concatenate([[0], cumsum])[which]
        pos[recent] = positions[which]
        offs[recent] = [
            index.offsets(p)[low + w]
            for p, low, w in zip(positions[which].tolist(), lows[which].tolist(), within.tolist())
        ]
        return pos, offs

    def _recent_starts(
        self, index: SequenceIndex, store: ChunkStore, inserted_total: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Chunks holding recent valid starts: (positions, first recent offset index, cumsum of
        recent counts), or None when there are none. Cached until the index or total changes."""
        key = (id(index), index.version, inserted_total)
        if key == self._cache_key:
            return self._cache
        threshold = inserted_total - self.window
        positions, lows, counts = [], [], []
        for chunk in store.newest_first():
            if chunk.start_step + chunk.length <= threshold:
                break
            starts = index.offsets(chunk.pos)
            low = int(np.searchsorted(starts, threshold - chunk.start_step))
            if len(starts) > low:
                positions.append(chunk.pos)
                lows.append(low)
                counts.append(len(starts) - low)
        result = None
        if counts:
            result = (np.asarray(positions), np.asarray(lows), np.cumsum(counts))
        self._cache_key, self._cache = key, result
        return result


def make_selector(config: ReplayConfig) -> Selector:
    """The selector named by ``config.selector``.

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    if config.selector == "uniform":
        return Uniform()
    if config.selector == "recency":
        return Recency(config.recency_fraction, config.recency_window)
    raise ValueError(f"unknown replay selector {config.selector!r}; valid: {', '.join(SELECTORS)}")
