"""Learner and weight store on a real local Ray cluster (fake envs, tiny models)."""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest
import ray

from wm_ray.actors import (
    remote_env_worker,
    remote_learner,
    remote_replay_shard,
    remote_weight_store,
)
from wm_ray.actors.wire import WireTensor
from wm_ray.config import Config
from wm_ray.config_io import build_config

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_cluster")]

BATCH, SEQ, MIN_SIZE, SPI = 4, 8, 64, 4


def make_config(presets: tuple[str, ...] = (), *extra: str, num_envs: int = 2) -> Config:
    return build_config(
        presets,
        [
            f"env.num_envs={num_envs}",
            "env.id=fake:vector-discrete",
            "run.model=random",
            "replay.chunk_len=16",
            f"replay.batch_size={BATCH}",
            f"replay.seq_len={SEQ}",
            f"replay.min_size={MIN_SIZE}",
            f"replay.samples_per_insert={SPI}",
            "resources.namespace=wm_ray_test",
            *extra,
        ],
    )


def start_pipeline(config: Config, track: Any, store: bool) -> tuple[Any, list[Any], Any, Any]:
    """A worker, two in-memory shards, a learner and (optionally) a weight store."""
    prefix = f"t-{uuid.uuid4().hex[:6]}-"
    shards = [
        track(remote_replay_shard(config, i, prefix).remote(config, i, None)) for i in range(2)
    ]
    weights = track(remote_weight_store(config, prefix).remote()) if store else None
    worker = track(
        remote_env_worker(config, 0, prefix, num_cpus=0.5).remote(config, 0, shards, weights)
    )
    learner = track(remote_learner(config, prefix, num_cpus=0.5).remote(config, shards, weights, 1))
    return worker, shards, learner, weights


def owed_updates(inserted: int) -> int:
    return max(0, math.floor(SPI * (inserted - MIN_SIZE) / (BATCH * SEQ)))


def test_weight_store_versions_increase_monotonically(actors: Any) -> None:
    config = make_config()
    store = actors(remote_weight_store(config, f"t-{uuid.uuid4().hex[:6]}-").remote())
    assert ray.get(store.latest_version.remote()) == -1
    ray.get(store.publish.remote(0, {"w": [1.0]}))
    ray.get(store.publish.remote(1, {"w": [2.0]}))
    assert ray.get(store.latest_version.remote()) == 1
    with pytest.raises(ValueError, match="1 is not newer than the current version 1"):
        ray.get(store.publish.remote(1, {"w": [3.0]}))
    version, ref = ray.get(store.get.remote())
    assert version == 1 and isinstance(ref, ray.ObjectRef)
    assert ray.get(ref) == {"w": [2.0]}


def test_learner_trains_only_when_the_limiter_owes_samples(actors: Any) -> None:
    # 16 streams with random names: P(all hash to one of 2 shards) = 2 ** -15.
    config = make_config(num_envs=16)
    worker, shards, learner, _ = start_pipeline(config, actors, store=False)
    # Before min_size nothing is owed.
    ray.get(worker.collect.remote(MIN_SIZE - 16))
    assert ray.get(learner.train.remote(1000))["updates"] == 0
    ray.get(worker.collect.remote(96))  # 144 inserted: 4 * 80 / 32 = 10 updates owed
    inserted = sum(ray.get([s.acknowledged.remote() for s in shards]))
    assert inserted == MIN_SIZE - 16 + 96
    first = ray.get(learner.train.remote(1000))
    assert first["updates"] == owed_updates(inserted) == 10
    assert ray.get(learner.train.remote(1000))["updates"] == 0  # stops when the debt is paid
    stats = ray.get([s.stats.remote() for s in shards])
    assert sum(s["limiter_samples"] for s in stats) == 10 * BATCH * SEQ
    assert all(s["limiter_samples"] > 0 for s in stats), "both shards serve the batches"
    # max_updates caps a call; the rest is still owed afterwards.
    ray.get(worker.collect.remote(48))  # 192 inserted: 16 owed in total
    inserted = sum(ray.get([s.acknowledged.remote() for s in shards]))
    assert ray.get(learner.train.remote(3))["updates"] == 3
    assert ray.get(learner.train.remote(1000))["updates"] == owed_updates(inserted) - 13 == 3
    assert ray.get(learner.train.remote(1000))["updates"] == 0


def test_dreamer_pipeline_publishes_weights_the_worker_uses(actors: Any) -> None:
    config = make_config(("size_debug",), "run.model=dreamer", "run.device=cpu")
    worker, _, learner, store = start_pipeline(config, actors, store=True)
    first = ray.get(worker.collect.remote(MIN_SIZE + 16))  # 80 inserted: 2 updates owed
    assert first["weights_version"] == -1
    result = ray.get(learner.train.remote(1000))
    assert result["updates"] == owed_updates(MIN_SIZE + 16) == 2
    # Publishes are asynchronous (one skipped while the previous is in flight); the reported
    # version is in the store when train returns.
    assert 0 <= result["version"] <= 1
    assert result["version"] == ray.get(store.latest_version.remote())
    # What the store holds is packed (numpy arrays): its process never needs torch.
    held = ray.get(ray.get(store.get.remote())[1])
    assert held and all(isinstance(v, WireTensor) for part in held.values() for v in part.values())
    assert result["metrics"] and all(math.isfinite(v) for v in result["metrics"].values())
    second = ray.get(worker.collect.remote(64))
    assert second["weights_version"] == result["version"] and second["weight_pulls"] == 1
    assert second["episodes"], "the fake env ends episodes within 64 steps"
    assert {ep["weights_version"] for ep in second["episodes"]} == {result["version"]}
