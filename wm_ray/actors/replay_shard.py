"""``ReplayShard``: one :class:`~wm_ray.replay.Replay` inside a Ray actor.

Env workers call :meth:`ReplayShard.add_chunk` asynchronously (a bounded number in flight per
worker); learners call :meth:`ReplayShard.sample`. With a directory every acknowledged chunk is
on disk before the call returns, so a shard actor started again on the same directory reloads
exactly the acknowledged steps (ARCHITECTURE.md invariant 4). A Ray actor runs one call at a
time by default, which is what the (not thread-safe) ``Replay`` needs.

When the run directory is a filesystem URI (:mod:`wm_ray.rundir.sync`) a shard is given the URI
instead of a directory: it keeps its chunk files in its own node's staging directory
(``<staging dir of the URI>/replay/shard-<i>``), downloads the remote's chunk files that
directory lacks before reloading (a shard started on a fresh node), and uploads its new chunk
files (and deletes the remote copies of evicted ones) when the coordinator calls
:meth:`ReplayShard.sync_storage`, before each checkpoint records the shard's state. Chunks
acknowledged after the last sync live only on the shard's node until the next one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import ray

from wm_ray.actors.naming import actor_options
from wm_ray.config import Config
from wm_ray.replay import Replay
from wm_ray.replay.dataset import preload, preload_paths
from wm_ray.replay.storage import Spec
from wm_ray.rundir.paths import shard_directory, shard_relpath, staging_dir
from wm_ray.rundir.sync import RunStorage


def _worker_of(stream: str) -> str:
    """The env-worker stream prefix of ``stream`` (``w0-1a2b3c4d-3`` -> ``w0-1a2b3c4d``)."""
    return stream.rsplit("-", 1)[0]


class ReplayShard:
    """Replay shard ``index``: storage, sampling and limiter of a share of the streams.

    Args:
        config: the run config; ``config.replay`` configures the storage and
            ``config.run.seed + index`` seeds the sampling generator.
        index: the shard's index in ``[0, resources.replay_shards)``.
        directory: this shard's own chunk-file directory (see :func:`shard_directory`), or None
            to keep everything in memory (nothing survives a crash then).
        storage: the run directory's URI instead of ``directory``: chunk files live in this
            node's staging directory and are synced to ``<storage>/replay/shard-<index>``.
        staging: the staging root for ``storage`` (default: ``$WM_RAY_STAGING`` on this node,
            else ``~/.cache/wm_ray/staging``).
        preload_spec: the run's step spec (:func:`wm_ray.replay.dataset.env_spec`) for
            ``replay.preload``: the shard stores its share of the data sets' chunks (their
            directories must be readable on its node).
    """

    def __init__(
        self,
        config: Config,
        index: int,
        directory: str | Path | None = None,
        storage: str | None = None,
        staging: str | None = None,
        preload_spec: Spec | None = None,
    ) -> None:
        self.index = int(index)
        self.storage: RunStorage | None = None
        if storage is not None:
            if directory is not None:
                raise ValueError("a replay shard takes a directory or a storage URI, not both")
            self.storage = RunStorage(storage)
            directory = shard_directory(staging_dir(storage, staging), self.index)
            self.storage.download_chunks(shard_relpath(self.index), directory)
        self.replay = Replay(config.replay, directory, seed=config.run.seed + self.index)
        self.by_worker: dict[str, int] = {}
        for stored in self.replay.store.oldest_first():  # reloaded chunks (evicted ones are gone)
            owner = _worker_of(stored.stream)
            self.by_worker[owner] = self.by_worker.get(owner, 0) + stored.length
        roots = preload_paths(config.replay.preload)
        if roots:  # this shard's share of the data sets, at every (re)start: memory only
            shards = config.resources.replay_shards
            preload([self.replay], roots, preload_spec, only=self.index, num_shards=shards)

    def add_chunk(self, stream: str, index: int, chunk: dict[str, np.ndarray]) -> int:
        """Store chunk ``index`` of ``stream`` (idempotent); returns the steps acknowledged.

        With a directory the chunk is durable before this returns.
        """
        before = self.replay.limiter.inserts
        steps = self.replay.add_chunk(stream, index, chunk)
        if self.replay.limiter.inserts > before:  # not a duplicate
            owner = _worker_of(stream)
            self.by_worker[owner] = self.by_worker.get(owner, 0) + steps
        return steps

    def acknowledged_from(self, stream_prefix: str) -> int:
        """Steps acknowledged from the streams of one env-worker incarnation (its prefix)."""
        return self.by_worker.get(stream_prefix, 0)

    def sample(self, batch_size: int | None = None, seq_len: int | None = None) -> Any:
        """A ``{key: (B, T, ...)}`` batch, or None while no valid sequence of ``seq_len`` is stored.

        The limiter is recorded into but not consulted here; callers check :meth:`stats`.
        """
        if not self.replay.can_sample(seq_len):
            return None
        return self.replay.sample(batch_size, seq_len)

    def can_sample(self, seq_len: int | None = None) -> bool:
        """Whether a sequence of ``seq_len`` steps (default: the config's) can be sampled."""
        return self.replay.can_sample(seq_len)

    def stats(self) -> dict[str, float]:
        """The replay's storage, traffic and limiter figures, plus ``shard``."""
        return {**self.replay.stats(), "shard": float(self.index)}

    def forget_samples(self) -> None:
        """Count no samples (the limiter of a reloaded replay assumes it was sampled on-ratio).

        For a shard restarted before the run's first checkpoint: the run's count of sampled
        steps is the learners' (exact), and a guess here could only make the shards' sum wrong.
        """
        self.replay.limiter.samples = 0

    def acknowledged(self) -> int:
        """Total acknowledged (inserted) steps, including those reloaded from the directory."""
        return int(self.replay.stats()["inserted_steps"])

    def manifest(self) -> dict[str, Any]:
        """The replay manifest a checkpoint records (chunk files and counts)."""
        return self.replay.manifest()

    def state_dict(self) -> dict[str, Any]:
        """Counters, limiter and generator state (the data itself lives in the chunk files)."""
        return self.replay.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (right after construction)."""
        self.replay.load_state_dict(state)

    def sync_storage(self) -> dict[str, int]:
        """Upload the chunk files written since the last sync to the run's storage and delete
        the remote copies of evicted ones; returns ``{"uploaded": n, "deleted": m}`` (zeros
        without a storage)."""
        if self.storage is None or self.replay.directory is None:
            return {"uploaded": 0, "deleted": 0}
        uploaded, deleted = self.storage.sync_chunks(
            self.replay.directory, shard_relpath(self.index)
        )
        return {"uploaded": uploaded, "deleted": deleted}

    def ping(self) -> int:
        """Health check: returns the shard index."""
        return self.index


def remote_replay_shard(config: Config, index: int, prefix: str = "", **options: Any) -> Any:
    """The Ray actor class of :class:`ReplayShard` with its options set.

    Usage: ``remote_replay_shard(config, i).remote(config, i, directory)``, or
    ``.remote(config, i, None, uri)`` for a run directory on a filesystem URI.

    Args:
        config: the run config (``resources.namespace`` names the Ray namespace).
        index: the shard index (part of the actor name ``f"{prefix}replay-shard-{index}"``).
        prefix: actor-name prefix, e.g. a run id, so that runs sharing a cluster do not clash.
        **options: further ``ray.actor.ActorClass.options`` (they override the defaults).
    """
    defaults = actor_options(
        config, "replay-shard", index, prefix, num_cpus=config.resources.cpus_per_shard
    )
    return ray.remote(ReplayShard).options(**{**defaults, **options})
