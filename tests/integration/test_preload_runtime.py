"""``replay.preload`` on the Ray runtime: each replay shard loads its share of a data set."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest

from wm_ray.actors.coordinator import Coordinator
from wm_ray.actors.replay_shard import ReplayShard
from wm_ray.config_io import build_config
from wm_ray.factory import env_spaces
from wm_ray.ingest.core import ingest
from wm_ray.replay.dataset import env_spec
from wm_ray.replay.sharding import stable_shard

pytestmark = pytest.mark.integration


def make_data(tmp: Path, files: int = 6) -> Path:
    src = tmp / "src"
    src.mkdir()
    for i in range(files):
        frames = np.full((10 + i, 8, 8, 3), i, np.uint8)
        np.savez(src / f"{i}.npz", image=frames, action=np.arange(10 + i) % 4)
    ingest([src], tmp / "data", chunk_len=4)
    return tmp / "data"


def make_config(tmp: Path, data: Path, *extra: str):  # type: ignore[no-untyped-def]
    return build_config(
        ["debug"],
        [
            "run.model=random",
            "env.id=fake:image-discrete",
            "env.image_size=8",
            "env.num_envs=2",
            "run.steps=128",
            f"run.run_dir={tmp / 'run'}",
            f"replay.preload={data}",
            "replay.chunk_len=16",
            "replay.min_size=32",
            "replay.samples_per_insert=1",
            "replay.seq_len=4",
            "resources.replay_shards=2",
            "resources.eval_workers=0",
            "resources.namespace=wm_ray_test",
            "resources.cpus_per_env_worker=0.25",
            "resources.cpus_per_learner=0.25",
            "eval.every=0",
            "logging.every=64",
            "logging.progress=false",
            "logging.tensorboard=false",
            *extra,
        ],
    )


def test_each_shard_loads_its_share(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    config = make_config(tmp_path, data)
    spec = env_spec(*env_spaces(config))
    shards = [ReplayShard(config, i, preload_spec=spec) for i in range(2)]
    total = sum(10 + i for i in range(6))
    assert sum(s.replay.preloaded_steps for s in shards) == total
    for i, shard in enumerate(shards):
        for chunk in shard.replay.store.oldest_first():
            assert stable_shard(chunk.stream, 2) == i
        assert shard.stats()["preloaded_steps"] == shard.replay.preloaded_steps
        assert shard.acknowledged() == 0  # not env steps


@pytest.mark.usefixtures("ray_cluster")
def test_a_runtime_run_preloads(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    config = make_config(tmp_path, data)
    coordinator = Coordinator(config, tmp_path / "run", prefix=f"t{uuid.uuid4().hex[:6]}.")
    try:
        summary = coordinator.run()
    finally:
        coordinator.close()
    assert summary["env_steps"] == 128
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    final = json.loads(lines[-1])
    assert final["replay/preloaded_steps"] == sum(10 + i for i in range(6))
    assert final["counters/acked_steps"] == 128
