"""Replay in shards: which shard owns a stream, how a batch splits over shards, S shards as one.

The Ray runtime runs one :class:`~wm_ray.replay.Replay` per replay-shard actor; the
single-process loop runs the same shards in its own process (:class:`ShardedReplay`), so both
keep the same data layout (``<run_dir>/replay/shard-<i>``) and the same sampling distribution,
and either can resume the other's runs. A stream goes to shard ``crc32(stream) % S``; a batch of
``B`` sequences is split over the shards by a multinomial over their valid sequence counts,
which samples the union of the shards uniformly.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wm_ray.config import ReplayConfig
from wm_ray.replay.buffer import EmptyReplayError, Replay

SPLIT_SEED_OFFSET = 7919
"""The batch-split generator of learner rank r is seeded ``run.seed + SPLIT_SEED_OFFSET + r``
(the single-process loop is rank 0)."""


def stable_shard(stream: str, num_shards: int) -> int:
    """The shard that owns ``stream``: ``crc32(stream) % num_shards`` (stable across processes)."""
    return zlib.crc32(stream.encode("utf-8")) % num_shards


def split_batch(rng: np.random.Generator, batch_size: int, valid: Sequence[float]) -> list[int]:
    """How many of ``batch_size`` sequences each shard samples: multinomial over ``valid``."""
    total = float(sum(valid))
    if total <= 0:
        raise EmptyReplayError("no replay shard holds a valid sequence")
    counts = rng.multinomial(batch_size, np.asarray(valid, dtype=np.float64) / total)
    return [int(c) for c in counts]


def concat_parts(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Sampled parts of one batch, concatenated along the batch axis."""
    if len(parts) == 1:
        return parts[0]
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


class ShardedReplay:
    """``S`` replays used as one, the way the Ray runtime's shards are (see module doc).

    Args:
        config: the ``replay`` section (each shard gets the whole capacity and RAM budget, as a
            shard actor does).
        directories: one chunk directory per shard (None entries keep a shard in memory).
        seed: shard ``i`` samples with ``seed + i``; the batch split uses ``seed + split_seed``.
        tolerance: the shards' limiter tolerance (see ``pacing_tolerance``).
        split_seed: offset of the batch-split generator's seed.
    """

    def __init__(
        self,
        config: ReplayConfig,
        directories: Sequence[Path | None],
        seed: int = 0,
        tolerance: float | None = None,
        split_seed: int = 0,
    ) -> None:
        if not directories:
            raise ValueError("ShardedReplay needs at least one shard")
        self.config = config
        self.shards = [
            Replay(config, directory, seed=seed + i, tolerance=tolerance)
            for i, directory in enumerate(directories)
        ]
        self._rng = np.random.default_rng(seed + split_seed)

    def __len__(self) -> int:
        return sum(len(shard) for shard in self.shards)

    def add_chunk(self, stream: str, index: int, chunk: dict[str, np.ndarray]) -> int:
        """Store a chunk in the shard that owns ``stream``; returns the steps acknowledged."""
        return self.shards[stable_shard(stream, len(self.shards))].add_chunk(stream, index, chunk)

    def can_sample(self, seq_len: int | None = None) -> bool:
        return any(shard.can_sample(seq_len) for shard in self.shards)

    def sample(
        self, batch_size: int | None = None, seq_len: int | None = None
    ) -> dict[str, np.ndarray]:
        """A ``(B, T, ...)`` batch, split over the shards by their valid sequences."""
        if len(self.shards) == 1:
            return self.shards[0].sample(batch_size, seq_len)
        batch = int(batch_size or self.config.batch_size)
        length = int(seq_len or self.config.seq_len)
        valid = [float(shard.sequence_index(length).total) for shard in self.shards]
        counts = split_batch(self._rng, batch, valid)
        parts = [shard.sample(n, length) for shard, n in zip(self.shards, counts) if n > 0]
        return concat_parts(parts)

    @property
    def inserted(self) -> int:
        """Steps inserted into all shards (the pacing rule's ``inserted``)."""
        return sum(shard.limiter.inserts for shard in self.shards)

    @property
    def sampled(self) -> int:
        """Steps sampled from all shards (the pacing rule's ``sampled``)."""
        return sum(shard.limiter.samples for shard in self.shards)

    def stats(self) -> dict[str, float]:
        """The shards' figures summed (``fill`` and limits are per shard and left out)."""
        out: dict[str, float] = {}
        for shard in self.shards:
            for key, value in shard.stats().items():
                if key not in ("fill", "capacity", "ram_budget"):
                    out[key] = out.get(key, 0.0) + value
        return out

    def state_dicts(self) -> list[dict[str, Any]]:
        return [shard.state_dict() for shard in self.shards]

    def manifests(self) -> list[dict[str, Any]]:
        return [shard.manifest() for shard in self.shards]

    def load_state_dicts(self, states: Sequence[dict[str, Any]]) -> None:
        """Restore every shard's state (a checkpoint's ``shards``)."""
        if len(states) != len(self.shards):
            raise ValueError(
                f"the checkpoint has {len(states)} replay shards, this run {len(self.shards)} "
                "(resources.replay_shards)"
            )
        for shard, state in zip(self.shards, states, strict=True):
            shard.load_state_dict(state)


__all__ = ["SPLIT_SEED_OFFSET", "ShardedReplay", "concat_parts", "split_batch", "stable_shard"]
