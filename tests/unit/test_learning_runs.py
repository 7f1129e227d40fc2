"""benchmarks/learning_runs.py reads learning curves from run directories (real files)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import learning_runs  # noqa: E402


def _run(tmp_path: Path, name: str, evals: list[tuple[int, float]]) -> Path:
    run_dir = tmp_path / name
    run_dir.mkdir()
    rows = []
    for i, (step, ret) in enumerate(evals):
        rows.append({"step": step - 100, "time": 10.0 * i + 5, "episode/return": 1.0})
        rows.append({"step": step, "time": 10.0 * i + 9, "eval/return": ret})
    rows.append({"step": evals[-1][0], "time": 99.0, "counters/env_steps": evals[-1][0]})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run_dir


def test_best_final_and_first_evaluation_at_the_target(tmp_path: Path) -> None:
    a = _run(tmp_path, "a", [(2500, 10.0), (5000, 420.0), (7680, 300.0)])
    b = _run(tmp_path, "b", [(2500, 12.0), (5000, 390.0)])
    out = tmp_path / "result.json"
    assert learning_runs.main(["--out", str(out), f"seed 0={a}", f"seed 1={b}"]) == 0
    runs = json.loads(out.read_text())["runs"]
    assert runs["seed 0"]["best"]["return"] == 420.0
    assert runs["seed 0"]["final"] == {"step": 7680, "time_s": 29.0, "return": 300.0}
    assert runs["seed 0"]["first_at_or_above_target"]["step"] == 5000
    assert runs["seed 1"]["first_at_or_above_target"] is None
    text = learning_runs.table(runs, 400.0)
    assert "| 2.5k | 5k | 7.5k |" in text  # 7,680 steps sits in the 7.5k column
    assert "1 of 2 runs reach 400" in text


def test_a_directory_without_metrics_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"no metrics\.jsonl"):
        learning_runs.main(["--out", str(tmp_path / "r.json"), f"x={tmp_path}"])
    with pytest.raises(SystemExit, match="expected LABEL=RUN_DIR"):
        learning_runs.main([str(tmp_path)])
