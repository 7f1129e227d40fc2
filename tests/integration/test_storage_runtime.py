"""The Ray runtime with its run directory on a filesystem URI and persisted replay.

The "remote" is a directory reached through a ``file://`` URI. The coordinator and the replay
shards work in staging directories under ``$WM_RAY_STAGING`` (passed to the shards by the
coordinator); the first run's staging root is deleted before the run resumes, as on a new
machine, so everything the resumed run has comes from the remote: config, metrics, the
checkpoint (the agent travels to the learner as bytes) and every shard's chunk files.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
import ray

from wm_ray.actors.coordinator import Coordinator
from wm_ray.config import Config
from wm_ray.config_io import build_config, load_config
from wm_ray.metrics import read_jsonl
from wm_ray.rundir import checkpoint as ckpt

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_cluster")]


def make_config(uri: str, steps: int) -> Config:
    return build_config(
        ["size_debug"],
        [
            "run.model=dreamer",
            "run.device=cpu",
            f"run.run_dir={uri}",
            f"run.steps={steps}",
            "run.checkpoint_every=128",
            "env.id=fake:vector-discrete",
            "env.num_envs=2",
            "replay.persist=true",
            "replay.chunk_len=16",
            "replay.batch_size=4",
            "replay.seq_len=8",
            "replay.min_size=64",
            "replay.samples_per_insert=1",
            "eval.every=0",
            "logging.every=64",
            "logging.progress=false",
            "logging.tensorboard=false",
            "resources.namespace=wm_ray_test",
            "resources.replay_shards=2",
            "resources.eval_workers=0",
            "resources.cpus_per_env_worker=0.25",
            "resources.cpus_per_learner=0.25",
        ],
    )


def shard_steps(coordinator: Coordinator) -> tuple[int, int]:
    """``(stored steps, acknowledged steps)`` summed over the coordinator's shards."""
    stats = ray.get([shard.stats.remote() for shard in coordinator.graph.shards])
    return int(sum(s["steps"] for s in stats)), int(sum(s["inserted_steps"] for s in stats))


def test_a_uri_run_resumes_with_its_replay_from_a_wiped_staging_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = tmp_path / "remote" / "run"
    uri = remote.as_uri()
    monkeypatch.setenv("WM_RAY_STAGING", str(tmp_path / "machine-a"))
    coordinator = Coordinator(make_config(uri, 192), uri, prefix=f"t{uuid.uuid4().hex[:6]}.")
    try:
        first = coordinator.run()
        stored, acked = shard_steps(coordinator)
        digest = ray.get(coordinator.graph.learners[0].digest.remote())
    finally:
        coordinator.close()
    assert first["run_dir"] == uri and first["env_steps"] == first["acked_steps"] == 192
    assert stored == acked == 192 and first["updates"] > 0
    assert load_config(remote).run.run_dir == uri
    lines = len(read_jsonl(remote / "metrics.jsonl"))
    latest = remote / "checkpoints" / (remote / "checkpoints/latest").read_text().strip()
    assert latest.name == "step-000000000192"
    state = ckpt.load_state(latest)  # verified: every file of the remote copy
    for i, manifest in enumerate(state["shard_manifests"]):
        uploaded = sorted(p.name for p in (remote / f"replay/shard-{i}").glob("*.chunk"))
        assert uploaded == sorted(manifest["files"]), f"shard {i}: remote chunks != checkpoint"
    shutil.rmtree(tmp_path / "machine-a")  # a new machine: nothing local survives

    monkeypatch.setenv("WM_RAY_STAGING", str(tmp_path / "machine-b"))
    coordinator = Coordinator(
        make_config(uri, 256), uri, resume=True, prefix=f"t{uuid.uuid4().hex[:6]}."
    )
    try:
        # Restored before any step: every acknowledged step and the checkpointed weights.
        assert shard_steps(coordinator) == (stored, acked)
        assert ray.get(coordinator.graph.learners[0].digest.remote()) == digest
        second = coordinator.run()
    finally:
        coordinator.close()
    assert second["env_steps"] == second["acked_steps"] == 256
    assert second["updates"] > first["updates"]
    assert second["local_dir"].startswith(str(tmp_path / "machine-b"))
    meta = ckpt.verify_checkpoint(remote / "checkpoints/step-000000000256")
    assert meta["step"] == 256
    assert (remote / "checkpoints/latest").read_text().strip() == "step-000000000256"
    records = read_jsonl(remote / "metrics.jsonl")
    assert len(records) > lines and records[-1]["step"] == 256
    chunks = sum(len(list((remote / f"replay/shard-{i}").glob("*.chunk"))) for i in range(2))
    assert chunks * 16 == 256, "every acknowledged chunk is on the remote"
