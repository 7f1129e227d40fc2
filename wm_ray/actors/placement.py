"""Placement of a run's actors: one placement group built from the resources config.

Learners and env workers get one bundle each (``{"CPU": cpus_per_learner, "GPU":
gpus_per_learner}`` and ``{"CPU": cpus_per_env_worker}``), and so do eval workers and replay
shards when their CPU share is above zero; actors that ask for nothing (the default for shards,
eval workers and the weight store) are scheduled outside the group. The group's strategy comes
from ``resources.strategy`` (``PACK`` on one machine, ``SPREAD`` to put env workers on several
nodes); a group the cluster cannot hold fails after ``resources.placement_timeout`` seconds with
what was asked and what the cluster has.

This is the only module that builds placement groups (ARCHITECTURE.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from wm_ray.config import ResourcesConfig
from wm_ray.config_io import ConfigError


def _bundle(cpus: float, gpus: float = 0.0) -> dict[str, float]:
    return {k: float(v) for k, v in (("CPU", cpus), ("GPU", gpus)) if v > 0}


def plan(resources: ResourcesConfig) -> list[tuple[str, int, dict[str, float]]]:
    """``(kind, index, bundle)`` for every actor that asks for resources, learners first."""
    r = resources
    for name in ("env_workers", "replay_shards", "learners"):
        if getattr(r, name) < 1:
            raise ValueError(f"resources.{name} must be >= 1, got {getattr(r, name)}")
    if r.eval_workers < 0:
        raise ValueError(f"resources.eval_workers must be >= 0, got {r.eval_workers}")
    wanted = [
        ("learner", r.learners, _bundle(r.cpus_per_learner, r.gpus_per_learner)),
        ("env-worker", r.env_workers, _bundle(r.cpus_per_env_worker)),
        ("eval-worker", r.eval_workers, _bundle(r.cpus_per_eval_worker)),
        ("replay-shard", r.replay_shards, _bundle(r.cpus_per_shard)),
    ]
    return [(kind, i, bundle) for kind, n, bundle in wanted if bundle for i in range(n)]


def required(resources: ResourcesConfig) -> dict[str, float]:
    """Total CPUs and GPUs the run's placement group reserves."""
    total: dict[str, float] = {"CPU": 0.0, "GPU": 0.0}
    for _, _, bundle in plan(resources):
        for key, value in bundle.items():
            total[key] += value
    return total


def local_cpus(resources: ResourcesConfig, physical: int) -> int:
    """CPUs to declare for an embedded local cluster: the machine's, or what the run reserves.

    Ray's CPU counts are logical (for scheduling, not enforcement), so declaring more CPUs than
    the machine has lets the local preset's actors share a small machine's cores.
    """
    return max(int(physical), math.ceil(required(resources)["CPU"]))


@dataclass
class Placement:
    """The run's placement group and which bundle each actor uses."""

    group: PlacementGroup | None
    bundles: dict[tuple[str, int], int] = field(default_factory=dict)

    def options(self, kind: str, index: int) -> dict[str, Any]:
        """Ray actor options placing actor ``(kind, index)`` into its bundle (or nothing)."""
        slot = self.bundles.get((kind, index))
        if self.group is None or slot is None:
            return {}
        return {
            "scheduling_strategy": PlacementGroupSchedulingStrategy(
                placement_group=self.group, placement_group_bundle_index=slot
            )
        }

    def remove(self) -> None:
        if self.group is not None:
            remove_placement_group(self.group)
            self.group = None


def create_placement(resources: ResourcesConfig, name: str = "") -> Placement:
    """Reserve the run's bundles; raises ``ConfigError`` naming the shortfall on timeout."""
    wanted = plan(resources)
    if not wanted:
        return Placement(None)
    group = placement_group(
        [bundle for _, _, bundle in wanted], strategy=resources.strategy, name=name
    )
    ready, _ = ray.wait([group.ready()], timeout=resources.placement_timeout)
    if not ready:
        remove_placement_group(group)
        need = required(resources)
        have = ray.cluster_resources()
        raise ConfigError(
            f"the Ray cluster cannot place this run within {resources.placement_timeout:g} s: "
            f"it needs CPU {need['CPU']:g}, GPU {need['GPU']:g} in {len(wanted)} bundles "
            f"(strategy {resources.strategy}); the cluster has CPU {have.get('CPU', 0):g}, "
            f"GPU {have.get('GPU', 0):g}. Lower resources.* (env_workers, learners, "
            "cpus_per_*, gpus_per_learner) or add nodes"
        )
    return Placement(group, {(kind, i): slot for slot, (kind, i, _) in enumerate(wanted)})
