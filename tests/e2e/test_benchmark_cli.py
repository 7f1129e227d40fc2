"""``wm-ray benchmark`` end to end, as a user runs it: a 2-task x 2-seed suite given as a YAML
list (the ``random`` family, 200 steps, single-process runs: ~3 s each), its aggregates checked
against values computed here by hand from the per-seed raw scores, the raw scores against the
runs' own metrics, an interrupted run resumed, and a second invocation that repeats nothing."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from wm_ray.metrics import read_jsonl

PROTOCOL = [
    "run.model=random",
    "env.num_envs=1",
    "eval.every=0",
    "eval.episodes=3",
    "eval.num_envs=1",
]
SUITE = """\
tasks:
  - fake:vector-discrete
  - {id: CartPole-v1, name: cartpole}
set: [%s, run.steps=200]
target: 15
"""


def wm_ray(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wm_ray.cli", *args], capture_output=True, text=True, cwd=cwd
    )


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_benchmark_a_yaml_suite_end_to_end(tmp_path: Path) -> None:
    (tmp_path / "suite.yaml").write_text(SUITE % ", ".join(PROTOCOL))
    # cartpole seed 1 was interrupted at 100 of its 200 steps (the same config otherwise)
    interrupted = tmp_path / "out" / "runs" / "cartpole" / "seed-1"
    sets = [*PROTOCOL, "run.steps=100", "env.id=CartPole-v1", "run.seed=1"]
    sets.append("run.name=cartpole-seed1")
    first = wm_ray(
        "train", "--single-process", "--quiet", "--run-dir", str(interrupted), "--set", *sets,
        cwd=tmp_path,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr

    args = ["benchmark", "--suite", "suite.yaml", "--seeds", "2", "--out", "out"]
    args += ["--single-process", "--bootstrap-reps", "300"]
    result = wm_ray(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 runs (1 resume, 3 new)" in result.stdout, result.stdout
    out = tmp_path / "out"
    results = out / "results"

    # per-seed raw scores: each run's final evaluation, as its own metrics.jsonl records it
    scores = _csv(results / "scores.csv")
    assert [(r["task"], r["seed"]) for r in scores] == [
        ("fake:vector-discrete", "0"),
        ("fake:vector-discrete", "1"),
        ("cartpole", "0"),
        ("cartpole", "1"),
    ]
    for row in scores:
        lines = [
            x for x in read_jsonl(out / row["run_dir"] / "metrics.jsonl") if "eval/return" in x
        ]
        assert lines[-1]["step"] == 200
        assert float(row["score"]) == pytest.approx(lines[-1]["eval/return"])
    steps = [x["step"] for x in read_jsonl(interrupted / "metrics.jsonl") if "eval/return" in x]
    assert steps == [100, 200]  # resumed, not restarted
    assert json.loads((results / "scores.json").read_text())[0]["score"] == pytest.approx(
        float(scores[0]["score"])
    )

    # aggregates by hand from the raw scores
    x = {
        t: [float(r["score"]) for r in scores if r["task"] == t]
        for t in ("fake:vector-discrete", "cartpole")
    }
    means = [np.mean(v) for v in x.values()]
    pooled = sorted(x["fake:vector-discrete"] + x["cartpole"])
    expected = {
        "mean": (means[0] + means[1]) / 2,
        "median": (means[0] + means[1]) / 2,
        "iqm": (pooled[1] + pooled[2]) / 2,  # 4 runs: one cut from each end
        "optimality_gap": 15 - sum(min(v, 15) for v in pooled) / 4,
    }
    aggregates = {r["statistic"]: r for r in _csv(results / "aggregates.csv")}
    assert set(aggregates) == set(expected)
    for name, value in expected.items():
        row = aggregates[name]
        assert float(row["value"]) == pytest.approx(value), name
        assert float(row["low"]) <= float(row["value"]) <= float(row["high"]), name
    tasks = {r["task"]: r for r in _csv(results / "tasks.csv")}
    a, b = x["cartpole"]
    assert float(tasks["cartpole"]["mean"]) == pytest.approx((a + b) / 2)
    assert float(tasks["cartpole"]["se"]) == pytest.approx(abs(a - b) / 2)  # n=2: |a-b|/2
    assert "| cartpole | 2 |" in (results / "results.md").read_text()
    assert "\\begin{tabular}" in (results / "results.tex").read_text()
    assert (results / "profile.png").stat().st_size > 1000
    command = (results / "command.txt").read_text().splitlines()
    assert command[0].startswith("wm-ray benchmark --out out --suite suite.yaml --seeds 2")
    assert sum(line.startswith("# ") and " train " in line for line in command) == 4
    for run in ("fake_vector-discrete/seed-0", "cartpole/seed-1"):
        assert (out / "runs" / run / "config.yaml").is_file()  # ordinary run directories

    # a second invocation repeats nothing; --aggregate-only gives the same aggregates
    logs = {p: p.stat().st_mtime_ns for p in (out / "logs").iterdir()}
    again = wm_ray(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "(4 done)" in again.stdout and "started" not in again.stdout
    assert {p: p.stat().st_mtime_ns for p in (out / "logs").iterdir()} == logs
    only = wm_ray(
        "benchmark", "--out", "out", "--aggregate-only", "--bootstrap-reps", "300", cwd=tmp_path
    )
    assert only.returncode == 0, only.stderr
    assert {r["statistic"]: r for r in _csv(results / "aggregates.csv")} == aggregates
