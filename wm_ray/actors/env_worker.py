"""``EnvWorker``: a vector env, an acting-only agent and a driver inside a Ray actor.

The worker steps its vector env with one batched policy call per vector step (never a Ray call
per env step), cuts the step stream into per-env chunks with a
:class:`~wm_ray.replay.StreamWriter` and sends each chunk asynchronously to the replay shard that
owns its stream (``crc32(stream) % num_shards``). At most ``max_in_flight`` adds are
unacknowledged at once: beyond that the worker waits for the oldest (explicit backpressure).
Weights are pulled from a weight-source actor every ``pull_every`` vector steps of a
:meth:`EnvWorker.collect` call (a version check; the weights move only when the version is
newer than the one in use). An add whose shard died is sent again, after the
coordinator restarted the shard under the same name (adds are idempotent), so a shard crash loses
none of the worker's steps.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections import deque
from typing import Any

import numpy as np
import ray
import torch
from ray.actor import ActorHandle
from ray.exceptions import RayActorError

from wm_ray.actors.naming import actor_name, actor_options, resolve
from wm_ray.actors.wire import unpack
from wm_ray.config import Config
from wm_ray.factory import create_model
from wm_ray.loops.driver import Driver
from wm_ray.loops.setup import make_vector_env
from wm_ray.replay import StreamWriter
from wm_ray.replay.sharding import stable_shard

ENV_SEED_STRIDE = 1000
"""Env seeds of worker ``i`` start at ``run.seed + ENV_SEED_STRIDE * i``."""


class EnvWorker:
    """Env worker ``index``: collects experience into the replay shards.

    Args:
        config: the run config (env, model, replay chunk length, seeds).
        index: the worker index; seeds its envs and names its streams ``w<index>-<uid>-<env>``.
        shards: handles of the replay-shard actors (see :mod:`wm_ray.actors.replay_shard`).
        weights: an actor with ``latest_version() -> int`` and
            ``get() -> (version, weights or ObjectRef of weights)``, or None to keep the
            initial weights.
        max_in_flight: the most unacknowledged ``add_chunk`` calls before the worker waits.
        prefix: the run's actor-name prefix (to look up restarted shards by name).
        pull_every: vector steps between weight-version checks inside one ``collect`` call
            (0: only at its start). Fresher acting weights, for one small call each.
    """

    def __init__(
        self,
        config: Config,
        index: int,
        shards: list[ActorHandle],
        weights: ActorHandle | None = None,
        max_in_flight: int = 8,
        prefix: str = "",
        pull_every: int = 16,
    ) -> None:
        if not shards:
            raise ValueError("EnvWorker needs at least one replay shard handle, got none")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        torch.set_num_threads(1)  # several torch processes share the node's cores
        self.index = int(index)
        self.shards = list(shards)
        self.namespace = config.resources.namespace
        self.shard_names = [actor_name(prefix, "replay-shard", i) for i in range(len(shards))]
        self.weights = weights
        self.max_in_flight = int(max_in_flight)
        if pull_every < 0:
            raise ValueError(f"pull_every must be >= 0 vector steps, got {pull_every}")
        self.pull_every = int(pull_every)
        acting = dataclasses.replace(
            config, run=dataclasses.replace(config.run, device="cpu", seed=config.run.seed + index)
        )
        self.venv = make_vector_env(config.env, seed=config.run.seed + ENV_SEED_STRIDE * index)
        self.agent = create_model(
            config.run.model, self.venv.obs_space, self.venv.act_space, acting, acting=True
        )
        self.stream_prefix = f"w{index}-{uuid.uuid4().hex[:8]}"
        self.writer = StreamWriter(
            self._send, self.venv.num_envs, config.replay.chunk_len, self.stream_prefix
        )
        self.driver = Driver(
            self.venv, self.agent, sinks=(self.writer.add,), names=list(self.writer.streams)
        )
        self.weights_version = -1
        self.weight_pulls = 0
        self.acked_steps = 0
        self.shard_restarts = 0
        self._in_flight: deque[tuple[Any, int, str, int, dict[str, np.ndarray]]] = deque()

    def _send(self, stream: str, index: int, chunk: dict[str, np.ndarray]) -> Any:
        """Writer sink: add the chunk to its shard asynchronously, waiting past the bound."""
        shard = stable_shard(stream, len(self.shards))
        ref: Any = self.shards[shard].add_chunk.remote(stream, index, chunk)
        self._in_flight.append((ref, shard, stream, index, chunk))
        while len(self._in_flight) > self.max_in_flight:
            self._ack_oldest()
        return ref

    def _ack_oldest(self) -> None:
        """Wait for the oldest in-flight add; resend it (and what followed) if its shard died."""
        ref, shard, stream, index, chunk = self._in_flight[0]
        while True:
            try:
                self.acked_steps += int(ray.get(ref))
                break
            except RayActorError:
                self.shards[shard] = resolve(self.shard_names[shard], self.namespace)
                self.shard_restarts += 1
                ref = self.shards[shard].add_chunk.remote(stream, index, chunk)
        self._in_flight.popleft()

    def _drain(self) -> None:
        """Wait until every in-flight add is acknowledged."""
        while self._in_flight:
            self._ack_oldest()

    def pull_weights(self) -> bool:
        """Load the weight source's weights if their version is newer; returns whether it did."""
        if self.weights is None:
            return False
        latest: Any = ray.get(self.weights.latest_version.remote())
        if int(latest) <= self.weights_version:
            return False
        version, weights = ray.get(self.weights.get.remote())
        if isinstance(weights, ray.ObjectRef):
            weights = ray.get(weights)
        self.agent.load_acting_weights(unpack(weights))
        self.weights_version = int(version)
        self.weight_pulls += 1
        return True

    def collect(self, steps: int) -> dict[str, Any]:
        """Step until ``steps`` more env steps (whole vector steps) are taken and acknowledged.

        Returns:
            ``env_steps`` and ``acked_steps`` of this call, ``episodes`` completed in it (each
            tagged with ``weights_version``; with ``metrics``, e.g. ``{"success": 1.0}``, for
            envs that report per-step metrics), ``restarts`` (env rebuilds so far),
            ``weights_version`` and ``weight_pulls`` (so far).
        """
        env_before, acked_before = self.driver.env_steps, self.acked_steps
        segment = self.pull_every * self.venv.num_envs if self.pull_every else steps
        episodes: list[dict[str, Any]] = []
        remaining = steps
        while remaining > 0:
            self.pull_weights()  # a cheap version check unless newer weights exist
            start = self.driver.env_steps
            self.driver.run(steps=min(remaining, segment))
            remaining -= self.driver.env_steps - start
            episodes += [
                {**episode, "weights_version": self.weights_version}
                for episode in self.driver.episodes.pop()
            ]
        self.writer.flush()
        self._drain()
        return {
            "env_steps": self.driver.env_steps - env_before,
            "acked_steps": self.acked_steps - acked_before,
            "episodes": episodes,
            "restarts": self.venv.restarts,
            "weights_version": self.weights_version,
            "weight_pulls": self.weight_pulls,
            "stream_prefix": self.stream_prefix,
        }

    def streams(self) -> str:
        """This worker's stream-name prefix (each actor incarnation has a fresh one)."""
        return self.stream_prefix

    def ping(self) -> int:
        """Health check: returns the worker index."""
        return self.index

    def close(self) -> None:
        """Wait for in-flight adds and close the vector env."""
        self._drain()
        self.venv.close()


def remote_env_worker(config: Config, index: int, prefix: str = "", **options: Any) -> Any:
    """The Ray actor class of :class:`EnvWorker` with its options set.

    Usage: ``remote_env_worker(config, i).remote(config, i, shards, weights)``.

    Args:
        config: the run config (``resources.cpus_per_env_worker``, ``resources.namespace``).
        index: the worker index (part of the actor name ``f"{prefix}env-worker-{index}"``).
        prefix: actor-name prefix, e.g. a run id.
        **options: further ``ray.actor.ActorClass.options`` (they override the defaults).
    """
    defaults = actor_options(
        config, "env-worker", index, prefix, num_cpus=config.resources.cpus_per_env_worker
    )
    return ray.remote(EnvWorker).options(**{**defaults, **options})
