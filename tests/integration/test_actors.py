"""Env workers and replay shards on a real local Ray cluster (fast: fake envs, tiny models)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import ray

from wm_ray.actors import remote_env_worker, remote_replay_shard
from wm_ray.config import Config
from wm_ray.config_io import build_config
from wm_ray.rundir.paths import shard_directory

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_cluster")]

NUM_ENVS = 2
CHUNK_LEN = 16


def make_config(presets: tuple[str, ...] = (), *extra: str) -> Config:
    return build_config(
        presets,
        [
            "env.id=fake:vector-discrete",
            f"env.num_envs={NUM_ENVS}",
            "run.model=random",
            f"replay.chunk_len={CHUNK_LEN}",
            "replay.batch_size=4",
            "replay.seq_len=8",
            "replay.min_size=16",
            "resources.namespace=wm_ray_test",
            *extra,
        ],
    )


def start_shards(config: Config, prefix: str, root: Path, count: int, track: Any) -> list[Any]:
    return [
        track(
            remote_replay_shard(config, i, prefix).remote(config, i, str(shard_directory(root, i)))
        )
        for i in range(count)
    ]


def start_worker(config: Config, prefix: str, index: int, shards: list[Any], track: Any) -> Any:
    return track(
        remote_env_worker(config, index, prefix, num_cpus=0.5).remote(config, index, shards)
    )


def whole_vector_steps(steps: int, num_envs: int = NUM_ENVS) -> int:
    return -(-steps // num_envs) * num_envs


def test_env_worker_streams_chunks_to_two_shards_and_loses_no_step(
    tmp_path: Path, actors: Any
) -> None:
    # 16 streams with random names: P(all hash to one of 2 shards) = 2 ** -15.
    config = make_config((), "env.num_envs=16")
    prefix = f"t-{uuid.uuid4().hex[:6]}-"
    shards = start_shards(config, prefix, tmp_path, 2, actors)
    worker = start_worker(config, prefix, 0, shards, actors)
    steps = 1001  # not a multiple of num_envs nor of chunk_len: partial chunks are flushed too
    result = ray.get(worker.collect.remote(steps))
    acked = ray.get([shard.acknowledged.remote() for shard in shards])
    assert result["env_steps"] == whole_vector_steps(steps, 16) == 1008
    assert result["acked_steps"] == result["env_steps"]
    assert sum(acked) == result["env_steps"]
    assert all(count > 0 for count in acked), f"a shard received nothing: {acked}"
    assert result["episodes"] and all(ep["weights_version"] == -1 for ep in result["episodes"])
    assert result["restarts"] == 0
    # A second call continues the same streams; nothing is lost across calls either.
    again = ray.get(worker.collect.remote(40))
    acked = ray.get([shard.acknowledged.remote() for shard in shards])
    assert sum(acked) == result["env_steps"] + again["env_steps"]


def test_killed_replay_shard_restarts_from_its_chunks_with_the_same_acknowledged_count(
    tmp_path: Path, actors: Any
) -> None:
    config = make_config()
    prefix = f"t-{uuid.uuid4().hex[:6]}-"
    (shard,) = start_shards(config, prefix, tmp_path, 1, actors)
    worker = start_worker(config, prefix, 0, [shard], actors)
    result = ray.get(worker.collect.remote(96))
    before = ray.get(shard.acknowledged.remote())
    assert before == result["env_steps"] == 96
    ray.kill(shard, no_restart=True)
    deadline = time.monotonic() + 30
    with pytest.raises(ray.exceptions.RayActorError):  # ray.kill is asynchronous: poll
        while time.monotonic() < deadline:
            ray.get(shard.ping.remote())
            time.sleep(0.1)
    deadline = time.monotonic() + 10
    while True:  # the dead actor's name is released asynchronously
        try:
            (restarted,) = start_shards(config, prefix, tmp_path, 1, actors)
            break
        except ValueError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    assert ray.get(restarted.acknowledged.remote()) == before
    batch = ray.get(restarted.sample.remote(4, 8))
    assert batch is not None
    assert batch["action"].shape[:2] == (4, 8)
    assert ray.get(restarted.stats.remote())["steps"] == before


def test_two_workers_collect_in_parallel(tmp_path: Path, actors: Any) -> None:
    config = make_config()
    prefix = f"t-{uuid.uuid4().hex[:6]}-"
    shards = start_shards(config, prefix, tmp_path, 2, actors)
    workers = [start_worker(config, prefix, i, shards, actors) for i in range(2)]
    results = ray.get([worker.collect.remote(64) for worker in workers])
    acked = ray.get([shard.acknowledged.remote() for shard in shards])
    assert [r["env_steps"] for r in results] == [64, 64]
    assert sum(r["acked_steps"] for r in results) == sum(acked) == 128
    streams = {ep["stream"].rsplit("-", 1)[0] for r in results for ep in r["episodes"]}
    assert len(streams) == 2, f"each worker has its own stream prefix, got {streams}"


def test_worker_pulls_weights_only_when_the_version_changes(tmp_path: Path, actors: Any) -> None:
    from wm_ray.factory import create_model
    from wm_ray.loops.setup import make_vector_env

    class WeightSource:
        """A minimal weight-version registry (``latest_version``, ``get``) as workers expect.

        Defined in the test so that Ray pickles it by value (the test module is not importable
        in Ray workers).
        """

        def __init__(self, weights: dict[str, Any]) -> None:
            self.version = 0
            self.weights = weights
            self.gets = 0

        def latest_version(self) -> int:
            return self.version

        def get(self) -> tuple[int, dict[str, Any]]:
            self.gets += 1
            return self.version, self.weights

        def publish(self, weights: dict[str, Any]) -> int:
            self.version += 1
            self.weights = weights
            return self.version

        def num_gets(self) -> int:
            return self.gets

    config = make_config(("size_debug",), "run.model=dreamer", "run.device=cpu")
    venv = make_vector_env(config.env, seed=0)
    try:
        learner = create_model("dreamer", venv.obs_space, venv.act_space, config)
    finally:
        venv.close()
    source = actors(ray.remote(WeightSource).options(num_cpus=0).remote(learner.acting_weights()))
    prefix = f"t-{uuid.uuid4().hex[:6]}-"
    shards = start_shards(config, prefix, tmp_path, 1, actors)
    worker = actors(
        remote_env_worker(config, 0, prefix, num_cpus=0.5).remote(config, 0, shards, source)
    )
    first = ray.get(worker.collect.remote(24))
    assert first["weights_version"] == 0 and first["weight_pulls"] == 1
    assert first["episodes"] and {ep["weights_version"] for ep in first["episodes"]} == {0}
    second = ray.get(worker.collect.remote(24))
    assert second["weight_pulls"] == 1 and ray.get(source.num_gets.remote()) == 1
    changed = learner.acting_weights()
    assert ray.get(source.publish.remote(changed)) == 1
    third = ray.get(worker.collect.remote(24))
    assert third["weights_version"] == 1 and third["weight_pulls"] == 2
    assert {ep["weights_version"] for ep in third["episodes"]} == {1}
    assert ray.get(source.num_gets.remote()) == 2
    assert sum(ray.get([s.acknowledged.remote() for s in shards])) == 72
