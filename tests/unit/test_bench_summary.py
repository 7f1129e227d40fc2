"""The README's expected-speed table is generated from the benchmark JSON and kept in sync."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import summary  # noqa: E402


def _learner(update_s: float, dense_s: float) -> dict[str, object]:
    return {
        "setup": {"batch": [16, 64]},
        "results": [
            {
                "size": "debug",
                "obs": "vector",
                "params": 250_000,
                "update_s": update_s,
                "updates_per_s": 1 / update_s,
                "replayed_steps_per_s": 1024 / update_s,
                "dense_floor_s": dense_s,
            }
        ],
        "machine": {"cpu_count": 2, "torch": "2.13.0", "torch_threads": 2, "python": "3.11"},
    }


def test_readme_table_matches_the_committed_results() -> None:
    assert summary.main(["--check"]) == 0, "run `python -m benchmarks.summary` and commit"


def test_rows_quote_figure_baseline_and_their_ratio(tmp_path: Path) -> None:
    tag = tmp_path / "cpu-test"
    tag.mkdir()
    (tag / "learner.json").write_text(json.dumps(_learner(0.5, 0.05)))
    text = summary.table(tag)
    row = next(line for line in text.splitlines() if "Dreamer update" in line)
    assert "500 ms" in row and "2.00 upd/s" in row and "2,048 replayed" in row, row
    assert "50.0 ms" in row and "| 10.0x |" in row, row


def test_stale_readme_is_detected_and_regenerated(tmp_path: Path) -> None:
    results = tmp_path / "results"
    (results / "cpu-test").mkdir(parents=True)
    (results / "cpu-test" / "learner.json").write_text(json.dumps(_learner(0.5, 0.05)))
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{summary.BEGIN}\nold\n{summary.END}\n\nafter\n")
    args = ["--results", str(results), "--readme", str(readme)]
    assert summary.main([*args, "--check"]) == 1
    assert summary.main(args) == 0
    assert summary.main([*args, "--check"]) == 0
    text = readme.read_text()
    assert "old" not in text and "| 10.0x |" in text and text.endswith("after\n")
    # a new measurement makes the table stale again
    (results / "cpu-test" / "learner.json").write_text(json.dumps(_learner(0.25, 0.05)))
    assert summary.main([*args, "--check"]) == 1


def test_learner_modes_get_rows_with_their_counts_and_gpu_rows_are_said_pending(
    tmp_path: Path,
) -> None:
    data = _learner(0.5, 0.05)
    counts = {"op_calls": 30_000, "cuda_kernels": 0, "cuda_launches": 0, "gpu_busy_s": 0.0}
    data["results"][0]["modes"] = {  # type: ignore[index]
        "eager": {"update_s": 0.5, **counts, "gpu_busy_share": 0.0},
        "compiled": {"update_s": 0.25, "warmup_s": 300.0, "speedup": 2.0, **counts,
                     "op_calls": 5_000, "gpu_busy_share": 0.0},
    }  # fmt: skip
    results = tmp_path / "results"
    (results / "cpu-test").mkdir(parents=True)
    (results / "cpu-test" / "learner.json").write_text(json.dumps(data))
    block = summary.readme_block(results)
    eager = next(line for line in block.splitlines() if "B16xT64 |" in line)
    compiled = next(line for line in block.splitlines() if "`run.compile=true`" in line)
    assert "30,000 op calls" in eager, eager
    assert "250 ms (5,000 op calls; first three updates 300 s" in compiled, compiled
    assert "eager: 500 ms | 2.00x |" in compiled, compiled
    assert summary.GPU_PENDING in block
    (results / "cuda-h100").mkdir()
    assert summary.GPU_PENDING not in summary.readme_block(results)


def test_broken_result_files_are_named(tmp_path: Path) -> None:
    tag = tmp_path / "cpu-test"
    tag.mkdir()
    (tag / "replay.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"replay\.json: not valid JSON"):
        summary.table(tag)
    (tag / "replay.json").unlink()
    broken = _learner(0.5, 0.05)
    del broken["results"][0]["dense_floor_s"]  # type: ignore[index]
    (tag / "learner.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match=r"learner\.json: missing field 'dense_floor_s'"):
        summary.table(tag)


def test_readme_without_markers_is_refused(tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(ROOT / "benchmarks" / "results", results)
    readme = tmp_path / "README.md"
    readme.write_text("# no table here\n")
    with pytest.raises(ValueError, match="no expected-speed block"):
        summary.main(["--results", str(results), "--readme", str(readme)])


def test_update_profile_splits_an_update_into_phases_and_ranks_real_operators() -> None:
    from benchmarks import profile_update

    row = profile_update.profile_size("debug", "vector", "cpu", repeats=1, top=4)
    assert list(row["phases_s"]) == list(profile_update.PHASES)
    assert all(seconds > 0 for seconds in row["phases_s"].values())
    assert row["update_s"] == pytest.approx(sum(row["phases_s"].values()))
    assert 0 < row["matmul_share"] < 1 and row["profiled_gflop"] > 0
    assert len(row["top_ops"]) == 4 and row["op_calls"] > 1000
    shares = [op["share"] for op in row["top_ops"]]
    assert shares == sorted(shares, reverse=True) and all(op["op"] for op in row["top_ops"])
    text = profile_update.markdown({"tag": "test", "batch": [16, 64], "rows": [row]})
    assert "| imagination (15 steps) |" in text and "`aten::" in text
    (line,) = summary.profile_rows({"batch": [16, 64], "rows": [row]})
    assert "matrix products" in line[1] and line[2].startswith("largest phase: ")
