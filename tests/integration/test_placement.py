"""Placement plans from resource presets (pure bookkeeping: no cluster needed)."""

from __future__ import annotations

import pytest

from wm_ray.actors.placement import local_cpus, plan, required
from wm_ray.config import ResourcesConfig
from wm_ray.config_io import build_config


def resources(*presets: str, overrides: tuple[str, ...] = ()) -> ResourcesConfig:
    return build_config(list(presets), list(overrides)).resources


def test_local_preset_reserves_learner_and_worker_cpus_and_fits_a_two_core_machine() -> None:
    local = resources("resources/local")
    assert local == build_config([], []).resources, "the defaults are the local preset"
    kinds = [kind for kind, _, _ in plan(local)]
    assert kinds == ["learner", "env-worker"]  # shards, eval workers ask for nothing
    assert required(local) == {"CPU": 3.0, "GPU": 0.0}
    assert local_cpus(local, physical=2) == 3 and local_cpus(local, physical=16) == 16


def test_gpu_presets_put_one_gpu_per_learner() -> None:
    multi = resources("multi_gpu", overrides=("resources.learners=4",))
    bundles = [bundle for kind, _, bundle in plan(multi) if kind == "learner"]
    assert bundles == [{"CPU": 2.0, "GPU": 1.0}] * 4
    cluster = resources("cluster")
    assert cluster.strategy == "SPREAD" and required(cluster)["GPU"] == cluster.learners
    assert {kind for kind, _, _ in plan(cluster)} == {
        "learner",
        "env-worker",
        "eval-worker",
        "replay-shard",
    }


def test_zero_actors_is_refused_with_the_key() -> None:
    with pytest.raises(ValueError, match=r"resources\.env_workers'? must be >= 1, got 0"):
        plan(resources(overrides=("resources.env_workers=0",)))
