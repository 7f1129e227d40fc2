"""Smoke test of ``benchmarks/peer_rllib_bench.py`` part 1 at a toy batch.

RLlib's DreamerV3 (``mini``) and wm_ray's Dreamer (``size_debug`` with 16x16 latents) must have
the same trainable parameters in every part, and both must make updates on the shared batch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.peer_rllib_bench import PARTS, bench_updates

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_cluster")]


def test_matched_sizes_and_updates() -> None:
    row = bench_updates("mini", (2, 8), repeats=1, warmup=0, seed=0)
    rllib, wm_ray = row["params"]["rllib"], row["params"]["wm_ray"]
    assert "unassigned" not in rllib
    assert {p: rllib[p] for p in PARTS} == {p: wm_ray[p] for p in PARTS}
    assert rllib["total"] == wm_ray["total"]
    assert row["rllib_ms_per_update"] > 0 and row["wm_ray_ms_per_update"] > 0
    assert row["ratio_rllib_to_wm_ray"] == pytest.approx(
        row["rllib_ms_per_update"] / row["wm_ray_ms_per_update"]
    )
