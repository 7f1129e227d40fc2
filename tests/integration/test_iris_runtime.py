"""IRIS on the Ray runtime: K=2 env workers stream into replay, one learner trains every stage
(tokenizer, world model, actor-critic) and publishes acting weights (tokenizer + actor-critic)
that the workers use. Toy sizes on a fake 32x32 image env: bookkeeping and finiteness, not
returns."""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path

import pytest

from wm_ray.actors.coordinator import Coordinator
from wm_ray.config_io import build_config
from wm_ray.rundir import checkpoint as ckpt

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_cluster")]


def test_iris_trains_every_stage_with_two_env_workers(tmp_path: Path) -> None:
    config = build_config(
        ["iris", "iris_debug"],
        [
            "run.device=cpu",
            f"run.run_dir={tmp_path}",
            "run.steps=384",
            "env.id=fake:image-discrete",
            "env.num_envs=2",
            "env.image_size=32",
            "replay.chunk_len=16",
            "replay.min_size=64",
            "replay.samples_per_insert=8",
            "iris.start.world_model=4",
            "iris.start.actor_critic=8",
            "eval.every=0",
            "logging.every=64",
            "logging.progress=false",
            "logging.tensorboard=false",
            "resources.namespace=wm_ray_test",
            "resources.env_workers=2",
            "resources.cpus_per_env_worker=0.25",
            "resources.cpus_per_learner=0.25",
            "resources.eval_workers=0",
        ],
    )
    coordinator = Coordinator(config, tmp_path, prefix=f"t{uuid.uuid4().hex[:6]}.")
    try:
        summary = coordinator.run()
    finally:
        coordinator.close()
    assert summary["env_steps"] == summary["acked_steps"] == 384
    assert summary["updates"] > 8
    log = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = {k: v for r in log for k, v in r.items() if k.startswith("train/")}
    for part in (
        "train/loss/tokenizer/total",
        "train/loss/world_model/obs",
        "train/loss/world_model/total",
        "train/loss/actor/total",
        "train/actor/entropy",
    ):
        assert part in train, f"no {part} in {sorted(train)}"
    assert all(math.isfinite(v) for r in log for k, v in r.items() if k.startswith("train/"))
    assert log[-1]["weights/version"] > 0
    state = ckpt.load_state(summary["checkpoint"])
    assert state["counters"]["env_steps"] == 384
    assert (Path(summary["checkpoint"]) / "agent" / "iris.safetensors").is_file()
