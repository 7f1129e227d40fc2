"""The in-process benchmark scripts of ``make bench`` at smoke scale, as a user runs them.

Two of them broke without a test noticing (the IRIS tokenizer bench called a method that had
moved, the runtime bench built a config the family check refuses): each script here runs end
to end in a subprocess with its smallest settings and must write its JSON. The figures are
not checked (they are noise at this scale); the Ray runtime bench starts its own cluster, so
only its configs are checked (``tests/unit/test_cli_bench.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPTS = {
    "iris_tokenizer": ["-m", "benchmarks.iris_tokenizer_bench", "--quick"],
    "iris_imagination": ["benchmarks/iris_bench.py", "--quick"],
    "diamond": ["benchmarks/diamond_bench.py", "--quick"],
    "genie": ["benchmarks/genie_bench.py", "--quick"],
    "replay": ["benchmarks/replay_bench.py", "--repeats", "1"],
    "cem": [
        "benchmarks/cem_bench.py",
        *("--presets", "planet", "--envs", "2", "--candidates", "32", "--top-k", "4"),
        *("--horizon", "3", "--iterations", "2", "--repeats", "1"),
    ],
}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_benchmark_script_runs_at_smoke_scale_and_writes_its_json(
    name: str, tmp_path: Path
) -> None:
    out = tmp_path / f"{name}.json"
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    proc = subprocess.run(
        [sys.executable, *SCRIPTS[name], "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["benchmark"] == name
    assert result["machine"]["torch"]
