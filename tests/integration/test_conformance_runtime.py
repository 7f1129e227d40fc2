"""Runs that move between the two loops: a run started by ``--single-process`` resumes on the
Ray runtime and then again in one process, its counters, log and replay continuing each time.

Every family of ``list_models()`` runs on the Ray runtime in ``tests/e2e/test_chaos.py`` (at its
conformance test size, on a fake env of a kind it claims; every step acknowledged, learning
families update with finite losses, evaluation, a verified checkpoint), with its actors and
driver killed on the way.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from wm_ray.actors.coordinator import Coordinator
from wm_ray.config import Config
from wm_ray.config_io import build_config
from wm_ray.loops.train import train as train_single
from wm_ray.rundir import checkpoint as ckpt

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_cluster")]

RUNTIME = (
    "run.device=cpu",
    "env.num_envs=2",
    "env.image_size=16",
    "replay.chunk_len=16",
    "replay.min_size=32",
    "replay.samples_per_insert=4",
    "eval.every=0",
    "logging.every=32",
    "logging.progress=false",
    "logging.tensorboard=false",
    "resources.namespace=wm_ray_test",
    "resources.cpus_per_env_worker=0.25",
    "resources.cpus_per_learner=0.25",
    "resources.eval_workers=1",
    "eval.episodes=1",
    "eval.num_envs=1",
)


def _coordinate(config: Config, run_dir: Path, resume: bool = False) -> dict[str, Any]:
    coordinator = Coordinator(config, run_dir, resume=resume, prefix=f"t{uuid.uuid4().hex[:6]}.")
    try:
        return coordinator.run()
    finally:
        coordinator.close()


def _log(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _moving_config(run_dir: Path, steps: int) -> Config:
    return build_config(
        ["debug"],
        [
            "run.model=dreamer",
            *RUNTIME,
            "env.id=fake:vector-discrete",
            f"run.steps={steps}",
            f"run.run_dir={run_dir}",
            "eval.every=64",
        ],
    )


def test_a_single_process_run_resumes_on_the_ray_runtime_and_back(tmp_path: Path) -> None:
    first = train_single(_moving_config(tmp_path, 128), tmp_path)
    assert first["env_steps"] == 128 and first["updates"] > 0

    second = _coordinate(_moving_config(tmp_path, 256), tmp_path, resume=True)
    assert second["env_steps"] == 256, "the runtime continued the single-process counters"
    assert second["acked_steps"] == 256, "the shard reloaded the single-process replay"
    assert second["updates"] > first["updates"] and second["episodes"] > first["episodes"]
    state = ckpt.load_state(second["checkpoint"])
    assert state["counters"]["env_steps"] == 256 and len(state["shards"]) == 1

    third = train_single(_moving_config(tmp_path, 320), tmp_path, resume=True)
    assert third["env_steps"] == 320, "the single-process loop continued the runtime's counters"
    assert third["updates"] > second["updates"] and third["episodes"] >= second["episodes"]
    manifest = ckpt.load_state(third["checkpoint"])["shard_manifests"][0]
    assert manifest["inserted_steps"] == 320, "every step of the three runs is in the replay"
    steps = [r["step"] for r in _log(tmp_path)]
    assert steps == sorted(steps) and steps[-1] == 320, "one log, continued by each run"
