"""``Learner``: the agent's training side inside a Ray actor; L learners form one group.

Each update draws one ``(B, T)`` batch from the replay shards and calls ``agent.train``. The
run's pacing rule (:class:`~wm_ray.replay.limiter.Pacer`, the one the single-process loop calls,
ARCHITECTURE.md invariant 2) decides how many updates are owed, over the sums of the shards'
``limiter_inserts`` and ``limiter_samples`` (``ReplayShard.stats()``), with ``min_size`` counted
once for the whole replay. One round of ``stats`` calls tells how many updates are
owed; the learners then count them down locally (each update samples exactly ``B * T`` steps in
all and only learners sample) and ask the shards again only when the count reaches zero, to pick
up inserts made meanwhile. ``sampled`` never goes below the steps the group is known to have
drawn (a restarted shard's limiter must not make old updates owed again). With
``samples_per_insert <= 0`` the rule, like the reference, never owes.

Several learners (``resources.learners = L``) form one ``torch.distributed`` process group (gloo
on CPU, NCCL on GPU; :mod:`wm_ray.models.common.distributed`): rank 0 alone reads the shards'
stats and broadcasts the owed count, so every rank runs the same number of updates; each rank
samples ``B / L`` sequences, and the optimizers average gradients over the group before clipping
and stepping, so the weights stay identical. Rank 0 publishes acting weights and hands the
agent's files to the coordinator for checkpoints (:meth:`Learner.agent_files`; restored with
:meth:`Learner.load_agent_files`), so checkpoints need no filesystem shared with the learners.

Batch split: a rank's sequences are drawn from the shards with a multinomial over the shards'
``valid_sequences`` (:func:`~wm_ray.replay.sharding.split_batch`, a seeded generator), then
each shard samples its share in one call; this is the same distribution as sampling uniformly
from the union of all shards, and the single-process loop splits its batches the same way.
Prefetch: the next
update's ``sample`` calls are issued before the current update runs, so sampling overlaps
training; one batch is in flight at most, and only when that update is owed, so no sampled
batch is ever discarded. A shard that dies mid-call is looked up again by name (the coordinator
restarts it) and the request is repeated.
"""

from __future__ import annotations

import datetime
import hashlib
import socket
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray.actor import ActorHandle
from ray.exceptions import RayActorError

from wm_ray.actors.naming import actor_name, actor_options, resolve
from wm_ray.actors.wire import pack
from wm_ray.config import Config
from wm_ray.factory import create_model
from wm_ray.loops.schedule import run_pacer
from wm_ray.loops.setup import make_vector_env
from wm_ray.metrics import Mean
from wm_ray.replay.sharding import SPLIT_SEED_OFFSET, concat_parts, split_batch
from wm_ray.rundir import checkpoint as ckpt

GROUP_TIMEOUT_S = 120.0
"""How long a collective may wait for the other ranks before failing (a dead rank)."""


class Learner:
    """Trains the agent on batches from the replay shards and publishes its acting weights.

    Args:
        config: the run config (model, replay batch shape and limiter settings, seed, device).
        shards: handles of the replay-shard actors (see :mod:`wm_ray.actors.replay_shard`).
        weights_store: a :class:`~wm_ray.actors.weights.WeightStore` handle, or None to publish
            nothing.
        publish_every: updates between publishes of ``agent.acting_weights()``.
        spaces: ``(obs_space, act_space)``; None builds one env of ``config.env`` to read them.
        prefetch: request the next batch before the current update runs (off: sample, then
            train, strictly in turn; for benchmarks).
        rank: this learner's rank in the group, ``0 <= rank < world_size``.
        world_size: L, learners in the group; ``replay.batch_size`` must be divisible by it.
        prefix: the run's actor-name prefix (to look up restarted shards by name).
    """

    def __init__(
        self,
        config: Config,
        shards: list[ActorHandle],
        weights_store: ActorHandle | None = None,
        publish_every: int = 1,
        spaces: tuple[Any, Any] | None = None,
        prefetch: bool = True,
        rank: int = 0,
        world_size: int = 1,
        prefix: str = "",
    ) -> None:
        if not shards:
            raise ValueError("Learner needs at least one replay shard handle, got none")
        if publish_every < 1:
            raise ValueError(f"publish_every must be >= 1, got {publish_every}")
        if not 0 <= rank < world_size:
            raise ValueError(f"learner rank {rank} is not in [0, {world_size})")
        if config.replay.batch_size % world_size:
            raise ValueError(
                f"replay.batch_size {config.replay.batch_size} is not divisible by "
                f"resources.learners {world_size}; each learner samples an equal share"
            )
        torch.set_num_threads(max(1, int(config.resources.cpus_per_learner)))
        self.config = config
        self.shards = list(shards)
        self.namespace = config.resources.namespace
        self.shard_names = [actor_name(prefix, "replay-shard", i) for i in range(len(shards))]
        self.weights_store = weights_store
        self.publish_every = int(publish_every)
        self.prefetch = bool(prefetch)
        self.rank, self.world_size = int(rank), int(world_size)
        if spaces is None:
            venv = make_vector_env(config.env, seed=config.run.seed, num_envs=1)
            try:
                spaces = (venv.obs_space, venv.act_space)
            finally:
                venv.close()
        obs_space, act_space = spaces
        self.agent = create_model(config.run.model, obs_space, act_space, config)
        self.batch_size = int(config.replay.batch_size)
        self.local_batch = self.batch_size // self.world_size
        self.seq_len = int(config.replay.seq_len)
        self.train_state = self.agent.init_train(self.local_batch)
        self.rng = np.random.default_rng(config.run.seed + SPLIT_SEED_OFFSET + self.rank)
        self.pacer = run_pacer(config, config.resources.env_workers)
        self.updates = 0
        self.version = -1
        self.sampled_floor = 0.0
        self._publishing: Any = None
        if weights_store is not None:
            latest: Any = ray.get(weights_store.latest_version.remote())
            self.version = int(latest)

    # -- the group -------------------------------------------------------------------------

    def group_address(self) -> tuple[str, int]:
        """Rank 0: this node's IP and a free TCP port for the group's rendezvous."""
        with socket.socket() as sock:
            sock.bind(("", 0))
            port = int(sock.getsockname()[1])
        return ray.util.get_node_ip_address(), port

    def join_group(self, address: str, port: int) -> str:
        """Join the ``world_size`` group at ``address:port`` (every rank calls this at once).

        Returns:
            The backend: ``nccl`` when the agent trains on CUDA, else ``gloo``.
        """
        from wm_ray.models.common import distributed

        backend = "nccl" if distributed.agent_device(self.agent).type == "cuda" else "gloo"
        torch.distributed.init_process_group(
            backend,
            init_method=f"tcp://{address}:{port}",
            rank=self.rank,
            world_size=self.world_size,
            timeout=datetime.timedelta(seconds=GROUP_TIMEOUT_S),
        )
        distributed.broadcast_modules(self.agent)  # identical start, whatever the init did
        return backend

    def _broadcast(self, values: list[float]) -> list[float]:
        """Rank 0's ``values`` on every rank (a no-op for a single learner)."""
        if self.world_size == 1:
            return values
        from wm_ray.models.common import distributed

        return distributed.broadcast_floats(values, self.agent)

    # -- shards ----------------------------------------------------------------------------

    def _stats(self) -> list[dict[str, float]]:
        while True:
            try:
                stats: list[dict[str, float]] = ray.get([s.stats.remote() for s in self.shards])
                return stats
            except RayActorError:
                self._reresolve()

    def _reresolve(self) -> None:
        """Look every shard up by name again (after one died and was restarted)."""
        self.shards = [resolve(name, self.namespace) for name in self.shard_names]

    def _owed(self) -> tuple[int, list[float]]:
        """Updates the shards' limiters owe now (decided by rank 0), and the shards' valid
        sequence counts."""
        message = [0.0] * (1 + len(self.shards))
        if self.rank == 0:
            stats = self._stats()
            inserted = sum(s["limiter_inserts"] for s in stats)
            sampled = max(sum(s["limiter_samples"] for s in stats), self.sampled_floor)
            self.sampled_floor = sampled
            valid = [s["valid_sequences"] for s in stats]
            owed = self.pacer.owed(inserted, sampled) if sum(valid) > 0 else 0
            message = [float(owed), *valid]
        message = self._broadcast(message)
        return int(message[0]), list(message[1:])

    def _request(self, valid: list[float]) -> tuple[list[Any], list[int]]:
        """Issue one batch's ``sample`` calls: ``B / L`` split over shards ∝ valid sequences."""
        counts = split_batch(self.rng, self.local_batch, valid)
        wanted = [(i, c) for i, c in enumerate(counts) if c > 0]
        refs = [self.shards[i].sample.remote(c, self.seq_len) for i, c in wanted]
        return refs, [i for i, _ in wanted] + [c for _, c in wanted]

    def _gather(self, request: tuple[list[Any], list[int]]) -> dict[str, np.ndarray]:
        """Wait for one batch's parts and concatenate them along the batch axis."""
        refs, plan = request
        while True:
            try:
                parts: list[Any] = ray.get(refs)
                break
            except RayActorError:
                self._reresolve()
                half = len(plan) // 2
                refs = [
                    self.shards[i].sample.remote(c, self.seq_len)
                    for i, c in zip(plan[:half], plan[half:], strict=True)
                ]
        if any(part is None for part in parts):
            raise RuntimeError("a replay shard had no valid sequence although its stats had some")
        return concat_parts(parts)

    # -- training --------------------------------------------------------------------------

    def _publish(self, sync: bool = False) -> None:
        """Publish the acting weights as the next version.

        Asynchronous by default: the update loop never waits for the store, and while the
        previous publish is still in flight this one is skipped (the next one carries newer
        weights anyway). ``sync`` waits for the previous and this publish.
        """
        if self.weights_store is None or self.rank != 0:
            return
        if self._publishing is not None:
            if not sync and not ray.wait([self._publishing], timeout=0)[0]:
                return
            ray.get(self._publishing)
        self.version += 1
        self._publishing = self.weights_store.publish.remote(
            self.version, pack(self.agent.acting_weights())
        )
        if sync:
            ray.get(self._publishing)

    def publish(self) -> int:
        """Publish the current acting weights now and wait for it (rank 0); returns the version."""
        self._publish(sync=True)
        return self.version

    def train(self, max_updates: int) -> dict[str, Any]:
        """Run up to ``max_updates`` updates, as many as the limiters owe (see module doc).

        Every rank of a group must be called with the same ``max_updates``.

        Returns:
            ``updates`` done in this call, the latest published ``version``, the mean
            ``metrics`` of those updates and ``sampled``, the steps the group knows it has
            sampled (its floor, which a restarted shard's limiter may have forgotten).
        """
        means = Mean()
        done = 0
        owed, valid = self._owed() if max_updates > 0 else (0, [])
        pending = self._request(valid) if owed > 0 else None

        def next_request() -> tuple[list[Any], list[int]] | None:
            nonlocal owed, valid
            if done >= max_updates:
                return None
            if owed <= 0:
                owed, valid = self._owed()
            return self._request(valid) if owed > 0 else None

        while pending is not None:
            batch = self._gather(pending)
            owed, done = owed - 1, done + 1
            pending = next_request() if self.prefetch else None  # overlaps the update below
            self.train_state, metrics = self.agent.train(batch, self.train_state)
            means.add(metrics)
            self.updates += 1
            self.sampled_floor += self.batch_size * self.seq_len
            if self.updates % self.publish_every == 0:
                self._publish()
            if not self.prefetch:
                pending = next_request()
        if self._publishing is not None:
            ray.get(self._publishing)  # the reported version is in the store
        return {
            "updates": done,
            "version": self.version,
            "metrics": means.pop(),
            "sampled": self.sampled_floor,
        }

    # -- state -----------------------------------------------------------------------------

    def save_agent(self, directory: str) -> None:
        """Write the agent into ``directory`` (the checkpoint's ``agent/``)."""
        self.agent.save(Path(directory))

    def load_agent(self, directory: str) -> None:
        """Load the agent a checkpoint's ``agent/`` holds."""
        self.agent.load(Path(directory))

    def agent_files(self) -> dict[str, bytes]:
        """The files ``agent.save`` writes, as ``{relative path: bytes}``.

        Written through a temporary directory on the learner's node, so the coordinator can put
        them into a checkpoint on its own node: no filesystem is shared.
        """
        with tempfile.TemporaryDirectory(prefix="wm_ray-agent-") as tmp:
            self.agent.save(Path(tmp) / "agent")
            return ckpt.read_files(Path(tmp) / "agent")

    def load_agent_files(self, files: dict[str, bytes], shown: str) -> None:
        """Load an agent from :meth:`agent_files` output (a checkpoint's ``agent/`` files);
        errors name ``shown`` (the checkpoint's agent directory) instead of the copy loaded."""
        with tempfile.TemporaryDirectory(prefix="wm_ray-agent-") as tmp:
            directory = ckpt.write_files(Path(tmp) / "agent", files)
            try:
                self.agent.load(directory)
            except ValueError as err:
                raise ValueError(str(err).replace(str(directory), shown)) from None

    def counters(self) -> dict[str, Any]:
        """What a checkpoint records of the learner: updates, version, sampled floor."""
        return {
            "updates": self.updates,
            "version": self.version,
            "sampled_floor": self.sampled_floor,
        }

    def load_counters(self, counters: dict[str, Any]) -> None:
        """Restore :meth:`counters` (the version never goes below the store's)."""
        self.updates = int(counters["updates"])
        self.version = max(self.version, int(counters["version"]))
        self.sampled_floor = float(counters.get("sampled_floor", 0.0))

    def save(self, directory: str | Path) -> None:
        """Write the agent (``<directory>/agent``) and the counters (``learner.json``)."""
        import json

        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        self.save_agent(str(path / "agent"))
        (path / "learner.json").write_text(json.dumps(self.counters()))

    def load(self, directory: str | Path) -> None:
        """Restore what :meth:`save` wrote."""
        import json

        path = Path(directory)
        self.load_agent(str(path / "agent"))
        self.load_counters(json.loads((path / "learner.json").read_text()))

    def digest(self) -> str:
        """SHA-256 over every parameter of the agent's modules (identical learners agree)."""
        from wm_ray.models.common import distributed

        digest = hashlib.sha256()
        for name, tensor in distributed.named_parameters(self.agent):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def ping(self) -> int:
        """Health check: returns the number of updates so far."""
        return self.updates

    def close(self) -> None:
        """Leave the process group (if any)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def remote_learner(config: Config, prefix: str = "", rank: int = 0, **options: Any) -> Any:
    """The Ray actor class of :class:`Learner` with its options set.

    Usage: ``remote_learner(config).remote(config, shards, store, publish_every, spaces)``.

    Args:
        config: the run config (``resources.cpus_per_learner``, ``resources.gpus_per_learner``,
            ``resources.namespace``).
        prefix: actor-name prefix (the name is ``f"{prefix}learner-{rank}"``).
        rank: the learner's rank (names the actor).
        **options: further ``ray.actor.ActorClass.options`` (they override the defaults).
    """
    res = config.resources
    defaults = actor_options(
        config,
        "learner",
        rank,
        prefix,
        num_cpus=res.cpus_per_learner,
        num_gpus=res.gpus_per_learner,
    )
    return ray.remote(Learner).options(**{**defaults, **options})
