"""``Learner``: the agent's training side inside a Ray actor.

Each update draws one ``(B, T)`` batch from the replay shards and calls ``agent.train``. Only the
single-process rule decides whether an update happens (``Trainer._train_owed`` in
:mod:`wm_ray.loops.train`, ARCHITECTURE.md invariant 2), applied to the sum over all shards:

    samples_per_insert * (inserted - min_size) - sampled >= B * T

where ``inserted`` and ``sampled`` are the sums of the shards' ``limiter_inserts`` and
``limiter_samples`` (``ReplayShard.stats()``) and ``min_size`` is counted once for the whole
replay, as in the single-process loop. One round of ``stats`` calls tells how many updates are
owed; the learner then counts them down locally (each update samples exactly ``B * T`` steps and
only the learner samples) and asks the shards again only when the count reaches zero, to pick up
inserts made meanwhile. With ``samples_per_insert <= 0`` the rule, like the reference, never owes.

Batch split: the ``B`` sequences of an update are drawn from the shards with a multinomial
over the shards' ``valid_sequences`` (a seeded generator), then each shard samples its share in
one call; this is the same distribution as sampling ``B`` sequences uniformly from the union of
all shards. Prefetch: the next update's ``sample`` calls are issued before the current update
runs, so sampling overlaps training; one batch is in flight at most, and only when that update
is owed, so no sampled batch is ever discarded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray.actor import ActorHandle

from wm_ray.config import Config
from wm_ray.loops.setup import make_vector_env
from wm_ray.metrics import Mean
from wm_ray.registry import create_model

LEARNER_SEED_OFFSET = 7919
"""The batch-split generator is seeded with ``run.seed + LEARNER_SEED_OFFSET``."""


class Learner:
    """Trains the agent on batches from the replay shards and publishes its acting weights.

    Args:
        config: the run config (model, replay batch shape and limiter settings, seed).
        shards: handles of the replay-shard actors (see :mod:`wm_ray.actors.replay_shard`).
        weights_store: a :class:`~wm_ray.actors.weights.WeightStore` handle, or None to publish
            nothing.
        publish_every: updates between publishes of ``agent.acting_weights()``.
        spaces: ``(obs_space, act_space)``; None builds one env of ``config.env`` to read them.
    """

    def __init__(
        self,
        config: Config,
        shards: list[ActorHandle],
        weights_store: ActorHandle | None = None,
        publish_every: int = 1,
        spaces: tuple[Any, Any] | None = None,
    ) -> None:
        if not shards:
            raise ValueError("Learner needs at least one replay shard handle, got none")
        if publish_every < 1:
            raise ValueError(f"publish_every must be >= 1, got {publish_every}")
        torch.set_num_threads(1)  # several torch processes share the node's cores
        self.config = config
        self.shards = list(shards)
        self.weights_store = weights_store
        self.publish_every = int(publish_every)
        if spaces is None:
            venv = make_vector_env(config.env, seed=config.run.seed, num_envs=1)
            try:
                spaces = (venv.obs_space, venv.act_space)
            finally:
                venv.close()
        obs_space, act_space = spaces
        self.agent = create_model(config.run.model, obs_space, act_space, config)
        self.batch_size = int(config.replay.batch_size)
        self.seq_len = int(config.replay.seq_len)
        self.train_state = self.agent.init_train(self.batch_size)
        self.rng = np.random.default_rng(config.run.seed + LEARNER_SEED_OFFSET)
        self.updates = 0
        self.version = -1
        if weights_store is not None:
            latest: Any = ray.get(weights_store.latest_version.remote())
            self.version = int(latest)

    def _owed(self) -> tuple[int, list[float]]:
        """Updates the shards' limiters owe now, and each shard's valid sequence count."""
        stats: list[dict[str, float]] = ray.get([shard.stats.remote() for shard in self.shards])
        replay = self.config.replay
        inserted = sum(s["limiter_inserts"] for s in stats)
        sampled = sum(s["limiter_samples"] for s in stats)
        valid = [s["valid_sequences"] for s in stats]
        if inserted < replay.min_size or sum(valid) <= 0:
            return 0, valid
        debt = replay.samples_per_insert * (inserted - replay.min_size) - sampled
        return max(0, int(debt // (self.batch_size * self.seq_len))), valid

    def _request(self, valid: list[float]) -> list[Any]:
        """Issue one batch's ``sample`` calls: ``B`` split over shards ∝ valid sequences."""
        counts = self.rng.multinomial(self.batch_size, np.asarray(valid) / sum(valid))
        return [
            shard.sample.remote(int(count), self.seq_len)
            for shard, count in zip(self.shards, counts, strict=True)
            if count > 0
        ]

    def _gather(self, refs: list[Any]) -> dict[str, np.ndarray]:
        """Wait for one batch's parts and concatenate them along the batch axis."""
        parts: list[Any] = ray.get(refs)
        if any(part is None for part in parts):
            raise RuntimeError("a replay shard had no valid sequence although its stats had some")
        return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}

    def _publish(self) -> None:
        if self.weights_store is None:
            return
        self.version += 1
        ray.get(self.weights_store.publish.remote(self.version, self.agent.acting_weights()))

    def train(self, max_updates: int) -> dict[str, Any]:
        """Run up to ``max_updates`` updates, as many as the limiters owe (see module doc).

        Returns:
            ``updates`` done in this call, the latest published ``version`` and the mean
            ``metrics`` of those updates.
        """
        means = Mean()
        done = 0
        owed, valid = self._owed() if max_updates > 0 else (0, [])
        pending = self._request(valid) if owed > 0 else None
        while pending is not None:
            batch = self._gather(pending)
            owed, done = owed - 1, done + 1
            pending = None
            if done < max_updates:
                if owed <= 0:
                    owed, valid = self._owed()
                if owed > 0:
                    pending = self._request(valid)  # prefetch: overlaps the update below
            self.train_state, metrics = self.agent.train(batch, self.train_state)
            means.add(metrics)
            self.updates += 1
            if self.updates % self.publish_every == 0:
                self._publish()
        return {"updates": done, "version": self.version, "metrics": means.pop()}

    def save(self, directory: str | Path) -> None:
        """Write the agent (``<directory>/agent``) and the counters (``learner.json``)."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        self.agent.save(path / "agent")
        counters = {"updates": self.updates, "version": self.version}
        (path / "learner.json").write_text(json.dumps(counters))

    def load(self, directory: str | Path) -> None:
        """Restore what :meth:`save` wrote (the version never goes below the store's)."""
        path = Path(directory)
        self.agent.load(path / "agent")
        counters = json.loads((path / "learner.json").read_text())
        self.updates = int(counters["updates"])
        self.version = max(self.version, int(counters["version"]))

    def ping(self) -> int:
        """Health check: returns the number of updates so far."""
        return self.updates


def remote_learner(config: Config, prefix: str = "", **options: Any) -> Any:
    """The Ray actor class of :class:`Learner` with its options set.

    Usage: ``remote_learner(config).remote(config, shards, store, publish_every, spaces)``.

    Args:
        config: the run config (``resources.gpus_per_learner``, ``resources.namespace``).
        prefix: actor-name prefix (the name is ``f"{prefix}learner-0"``).
        **options: further ``ray.actor.ActorClass.options`` (they override the defaults; the
            config has no ``cpus_per_learner`` yet, so ``num_cpus`` defaults to 1).
    """
    defaults: dict[str, Any] = {
        "num_cpus": 1,
        "num_gpus": config.resources.gpus_per_learner,
        "name": f"{prefix}learner-0",
        "namespace": config.resources.namespace,
    }
    return ray.remote(Learner).options(**{**defaults, **options})
