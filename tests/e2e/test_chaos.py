"""Chaos: SIGKILL a run's actors of every kind and then its driver on an external Ray head;
``wm-ray train --resume`` finishes and nothing acknowledged is lost (``benchmarks/chaos.py``).

One token-auth head (``deploy/local_cluster.sh``, ports 6391/8291/..., away from
test_job_submit's) is shared by the families of ``wm_ray.registry.list_models()``: a family added
to the registry is covered by its registry line (its ``test_config`` size). Each case runs the CI
mode of the chaos run: 2 env workers, 2 replay shards, 2 learners, 1 eval worker; one env worker,
one replay shard, one learner and the eval worker SIGKILLed in turn from outside (by PID, from the
dashboard's state API), each restart counted; then the driver SIGKILLed after a checkpoint that
counts them, its actors gone, and the run resumed to completion. The longer mode:
``python -m benchmarks.chaos --model dreamer --long``.

This module never imports ray: the head and the runs are separate processes, as on a user's
cluster.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import chaos
from wm_ray.registry import list_models

pytestmark = [pytest.mark.integration, pytest.mark.slow]

XFAIL: dict[str, str] = {}
"""Families whose chaos run cannot pass yet: family -> the reason, naming the bug."""


@pytest.fixture(scope="module")
def cluster() -> Iterator[chaos.Cluster]:
    if chaos._ray_bin() is None:
        pytest.skip("the `ray` CLI is not installed")
    if not sys.platform.startswith("linux") or shutil.which("setsid") is None:
        pytest.skip("deploy/local_cluster.sh needs Linux (/proc, setsid)")
    head = chaos.start_cluster(cpus=4)
    try:
        yield head
    finally:
        head.stop()


@pytest.mark.parametrize(
    "family",
    [
        pytest.param(f, marks=pytest.mark.xfail(reason=XFAIL[f], strict=True)) if f in XFAIL else f
        for f in list_models()
    ],
)
def test_a_run_survives_sigkill_of_every_actor_kind_and_of_its_driver(
    cluster: chaos.Cluster, family: str, tmp_path: Path
) -> None:
    result = chaos.run_chaos(cluster, family, tmp_path, chaos.CI)
    shown = json.dumps(
        {k: result[k] for k in ("problems", "kills", "restarts_counted", "steps", "continuity")},
        indent=1,
    )
    steps = result["steps"]
    assert result["exit_code"] == 0, result["output_tail"]
    assert steps["final_env_steps"] == steps["target"], shown
    # Every acknowledged step is in replay: the chunk files on disk hold exactly the steps the
    # coordinator counted, which the shards' totals and the last metrics line agree with.
    on_disk = steps["on_disk"] + sum(steps["shards_evicted"])  # none evicted at this size
    assert on_disk == steps["acked_coordinator"] == sum(steps["shards_inserted"]), shown
    assert steps["acked_metrics_last_line"] == steps["acked_coordinator"], shown
    assert not steps["duplicate_chunks"] and steps["manifest_matches_disk"], shown
    # Each kill counted once, per kind, through the driver's death (from the checkpoint).
    for kind in chaos.KINDS:
        assert result["kills"][kind] == 1 == result["restarts_counted"][kind], shown
    assert result["kills"]["driver"] == 1
    # The dead driver's actors went away, the resumed run created its named actors again and
    # continued from the checkpoint's counters, limiter and weights version.
    killed = result["driver_kills"][0]
    assert killed["actors_before_kill"] == 8 and killed["placement_groups_before_kill"] == 1
    assert not killed["lingering_actors"], shown
    assert all(not c["problems"] for c in result["continuity"]), shown
    assert not result["monotonic_within_drivers"], shown
    assert not result["alive_after"], shown
    assert not result["problems"], shown
