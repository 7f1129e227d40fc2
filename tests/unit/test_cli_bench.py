"""`wm-ray bench` / `python -m benchmarks.suite`: one list of benchmark steps, run as `make bench`.

No benchmark runs here: the suite is exercised with --dry-run, and its runner with injected
steps that are one-line `python -c` commands.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import suite  # noqa: E402
from wm_ray import bench, cli  # noqa: E402
from wm_ray.config_io import build_config  # noqa: E402

MAKE_BENCH = [  # every benchmark step, in order
    ("replay", ["benchmarks/replay_bench.py"]),
    (
        "learner",
        ["benchmarks/learner_bench.py", "--sizes", "default", "debug", "xs", "--modes", "compiled"],
    ),
    ("compile", ["benchmarks/compile_bench.py"]),
    ("learner_presets", ["benchmarks/learner_bench.py", "--families", "presets"]),
    ("cem", ["benchmarks/cem_bench.py"]),
    ("profile", ["benchmarks/profile_update.py"]),
    ("runtime", ["benchmarks/runtime_bench.py"]),
    ("worker_memory", ["benchmarks/worker_memory_bench.py"]),
    ("iris", ["benchmarks/iris_bench.py"]),
    ("iris_tokenizer", ["-m", "benchmarks.iris_tokenizer_bench"]),
    ("peer", ["benchmarks/peer_rllib_bench.py", "--budget-minutes", "15"]),
    ("summary", ["-m", "benchmarks.summary"]),
]


def run_suite(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.suite", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def planned(stdout: str) -> list[tuple[str, str]]:
    """(step name, command) of each step a suite run printed."""
    lines = stdout.splitlines()
    return [
        (line.split("] ", 1)[1].split(":", 1)[0], lines[i + 1].strip().removeprefix("$ "))
        for i, line in enumerate(lines)
        if line.startswith("==> [")
    ]


def names(steps: list[suite.Step]) -> list[str]:
    return [step.name for step in steps]


def test_dry_run_lists_every_step_in_order_as_make_bench_did() -> None:
    result = run_suite("--dry-run")
    assert result.returncode == 0, result.stderr
    expected = [(name, " ".join([sys.executable, *argv])) for name, argv in MAKE_BENCH]
    assert planned(result.stdout) == expected
    assert "dry run" in result.stdout


def test_makefile_bench_runs_the_suite() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\nbench: $(STAMP)\n", 1)[1].split("\n\n", 1)[0]
    assert recipe == "\t$(PY) -m benchmarks.suite --peer-budget-minutes $(PEER_BUDGET_MINUTES)"
    assert "\nPEER_BUDGET_MINUTES ?= 15\n" in makefile


@pytest.mark.parametrize(
    ("only", "skip", "expected"),
    [
        (["learner"], [], ["learner", "summary"]),  # summary is implicit and runs last
        (["summary", "iris", "replay"], [], ["replay", "iris", "summary"]),  # suite order
        (["learner"], ["summary"], ["learner"]),
        (["summary"], [], ["summary"]),
        (
            None,
            ["peer"],
            [
                "replay",
                "learner",
                "compile",
                "learner_presets",
                "cem",
                "profile",
                "runtime",
                "worker_memory",
                "iris",
                "iris_tokenizer",
                "summary",
            ],
        ),
        (["learner", "peer"], ["peer"], ["learner", "summary"]),
    ],
)
def test_only_and_skip_select_steps(
    only: list[str] | None, skip: list[str], expected: list[str]
) -> None:
    assert names(suite.build_steps(only, skip)) == expected


def test_only_and_skip_reach_the_command_line() -> None:
    result = run_suite("--dry-run", "--only", "learner")
    assert [name for name, _ in planned(result.stdout)] == ["learner", "summary"]
    result = run_suite("--dry-run", "--skip", "peer")
    steps = [name for name, _ in planned(result.stdout)]
    assert "peer" not in steps and steps[-1] == "summary" and len(steps) == len(MAKE_BENCH) - 1


@pytest.mark.parametrize("option", ["--only", "--skip"])
def test_unknown_step_names_it_and_the_valid_ones(option: str) -> None:
    with pytest.raises(ValueError, match=r"'lerner' in " + option):
        if option == "--only":
            suite.build_steps(only=["lerner"])
        else:
            suite.build_steps(skip=["lerner"])
    result = run_suite("--dry-run", option, "learner", "lerner")
    assert result.returncode == 2
    assert "unknown benchmark step 'lerner'" in result.stderr
    assert "valid steps: " + ", ".join(suite.STEP_NAMES) in result.stderr
    assert "==>" not in result.stdout  # nothing planned, let alone run


def test_peer_budget_reaches_the_peer_command() -> None:
    result = run_suite("--dry-run", "--only", "peer", "--peer-budget-minutes", "3")
    assert result.returncode == 0, result.stderr
    assert planned(result.stdout) == [
        ("peer", f"{sys.executable} benchmarks/peer_rllib_bench.py --budget-minutes 3"),
        ("summary", f"{sys.executable} -m benchmarks.summary"),
    ]
    (peer,) = suite.build_steps(["peer"], ["summary"], peer_budget_minutes=2.5)
    assert peer.argv[-2:] == ("--budget-minutes", "2.5")
    with pytest.raises(ValueError, match="must be positive"):
        suite.build_steps(peer_budget_minutes=0)


def test_cli_bench_dry_run_prints_the_suite_commands(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    args = ["--dry-run", "--only", "learner", "peer", "--peer-budget-minutes", "3"]
    assert cli.main(["bench", *args]) == 0
    out = capfd.readouterr().out
    assert out == run_suite(*args).stdout
    assert [name for name, _ in planned(out)] == ["learner", "peer", "summary"]
    assert "--budget-minutes 3" in out

    assert cli.main(["bench", "--dry-run", "--skip", "peer", "summary"]) == 0
    out = capfd.readouterr().out
    assert [name for name, _ in planned(out)] == [n for n, _ in MAKE_BENCH[:-2]]


def test_cli_bench_passes_the_suite_exit_code(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    assert cli.main(["bench", "--dry-run", "--skip", "nosuch"]) == 2
    assert "unknown benchmark step 'nosuch'" in capfd.readouterr().err


@pytest.mark.parametrize("cwd_is_checkout", [True, False])
def test_cli_bench_looks_in_the_current_directory_then_beside_the_package(
    cwd_is_checkout: bool,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(ROOT if cwd_is_checkout else tmp_path)
    monkeypatch.setattr(bench, "_package_parent", lambda: tmp_path if cwd_is_checkout else ROOT)
    assert cli.main(["bench", "--dry-run", "--only", "replay"]) == 0
    assert f"benchmark suite in {ROOT}: replay, summary" in capfd.readouterr().out


def test_cli_bench_without_a_checkout_says_so(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "benchmarks").mkdir()  # a benchmarks/ without the suite is not a checkout
    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(bench, "_package_parent", lambda: site)
    assert cli.main(["bench", "--dry-run"]) == 2
    captured = capfd.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "wm-ray: error: wm-ray bench needs a source checkout: benchmarks/ not found in "
        f"{tmp_path} or {site}; clone the repository and run it there\n"
    )


def exit_step(name: str, code: int) -> suite.Step:
    """A step that writes ``<name>.ran`` into its working directory and exits ``code``."""
    script = f"open('{name}.ran', 'w').close(); raise SystemExit({code})"
    return suite.Step(name, ("-c", script), f"exits {code}")


def ran(root: Path) -> list[str]:
    return sorted(p.stem for p in root.glob("*.ran"))


def test_run_steps_stops_at_the_first_failure(
    capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    steps = [exit_step("a", 0), exit_step("b", 3), exit_step("c", 0), exit_step("d", 0)]
    assert suite.run_steps(steps, root=tmp_path) == 1
    assert ran(tmp_path) == ["a", "b"]  # run in root, and nothing after the failure
    captured = capfd.readouterr()
    assert "<== a: ok in " in captured.out and "<== b: FAILED (exit 3) after " in captured.out
    assert "==> [3/4] c" not in captured.out
    assert "step 'b' failed (exit 3); stopped, not run: c, d (--keep-going runs them)" in (
        captured.err
    )


def test_run_steps_keep_going_runs_all_then_fails(
    capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    steps = [exit_step("a", 3), exit_step("b", 0), exit_step("c", 5), exit_step("d", 0)]
    assert suite.run_steps(steps, root=tmp_path, keep_going=True) == 1
    assert ran(tmp_path) == ["a", "b", "c", "d"]
    assert "2 of 4 steps failed: a (exit 3), c (exit 5)" in capfd.readouterr().err


def test_run_steps_success_and_dry_run(capfd: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    steps = [exit_step("a", 0), exit_step("b", 0)]
    assert suite.run_steps(steps, root=tmp_path, dry_run=True) == 0
    assert ran(tmp_path) == []
    assert suite.run_steps(steps, root=tmp_path) == 0
    assert ran(tmp_path) == ["a", "b"]
    assert "benchmark suite: 2 steps ok in " in capfd.readouterr().out


def test_steps_get_the_makefile_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("MUJOCO_GL", "PYOPENGL_PLATFORM", "RAY_USAGE_STATS_ENABLED"):
        monkeypatch.delenv(key, raising=False)
    env = suite.child_env()
    assert env["MUJOCO_GL"] == env["PYOPENGL_PLATFORM"] == "egl"
    assert env["RAY_USAGE_STATS_ENABLED"] == "0"
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    assert suite.child_env()["PYOPENGL_PLATFORM"] == "osmesa"


def test_gpu_check_dry_run_names_existing_files_and_arguments_that_parse() -> None:
    """benchmarks/gpu_check.sh runs on a GPU machine only; its dry run checks here that every
    step's script exists and that the learner bench and the profile accept its arguments."""
    out = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--dry-run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert out.returncode == 0, out.stderr
    assert "dry run ok" in out.stdout
    steps = [line for line in out.stdout.splitlines() if line.startswith(sys.executable)]
    assert any("--modes eager captured" in s and "jax50m" in s and "bf16" in s for s in steps)
    assert any("--modes compiled captured" in s and "fp32" in s for s in steps)
    assert any("--iris-sizes paper" in s and "captured" in s for s in steps)
    assert any("iris_bench.py" in s and "captured" in s for s in steps)


def test_learner_bench_merge_keeps_rows_and_modes_a_run_does_not_redo(tmp_path: Path) -> None:
    """gpu_check runs the learner bench several times; --merge adds each run's rows to the
    file, and of a redone row keeps the modes that run did not time."""
    import json

    from benchmarks.learner_bench import merged

    def row(size: str, precision: str, **modes: float) -> dict[str, object]:
        times = {m: {"update_s": v} for m, v in modes.items()}
        return {"family": "dreamer", "size": size, "obs": "image", "precision": precision,
                "update_s": 1.0, "modes": times}  # fmt: skip

    path = tmp_path / "learner.json"
    before = [row("jax1m", "bf16", eager=1.0, captured=0.1),
              row("jax12m", "bf16", eager=2.0, captured=0.2)]  # fmt: skip
    path.write_text(json.dumps({"results": before}))
    rows = merged("learner", [row("jax12m", "bf16", eager=2.5, compiled=1.0),
                              row("jax12m", "fp32", eager=3.0)], path)  # fmt: skip
    by_key = {(r["size"], r["precision"]): r["modes"] for r in rows}
    assert by_key[("jax1m", "bf16")] == {"eager": {"update_s": 1.0}, "captured": {"update_s": 0.1}}
    assert by_key[("jax12m", "bf16")] == {
        "eager": {"update_s": 2.5}, "captured": {"update_s": 0.2}, "compiled": {"update_s": 1.0}
    }  # fmt: skip
    assert by_key[("jax12m", "fp32")] == {"eager": {"update_s": 3.0}}
    assert len(rows) == 3
    assert merged("learner", rows[:1], tmp_path / "absent.json") == rows[:1]


def test_learner_bench_sizes_match_the_jax_presets_and_refuse_unknown_ones() -> None:
    from benchmarks.learner_bench import dreamer_config, parser

    config = dreamer_config("jax12m", "cpu", ["run.compile=true"])
    rssm = config.dreamer.rssm
    assert (rssm.deter, rssm.hidden, rssm.classes, rssm.stoch) == (2048, 256, 16, 32)
    assert (config.dreamer.units, config.dreamer.layers, config.dreamer.cnn_depth) == (256, 3, 16)
    assert (config.replay.batch_size, config.replay.seq_len, config.run.compile) == (16, 64, True)
    default = dreamer_config("default", "cpu", [])
    assert default.dreamer.units == build_config([], []).dreamer.units
    with pytest.raises(SystemExit):
        parser().parse_args(["--sizes", "huge"])


def test_learner_bench_counts_an_updates_flops_in_proportion_to_its_rows() -> None:
    """The arithmetic floor of the learner rows: twice the batch, twice the matrix-product
    FLOPs of an update (every product is linear in its rows), and a positive GEMM rate."""
    import numpy as np

    from benchmarks.learner_bench import dreamer_config, fake_batch, gemm_rate, spaces, update_flops
    from wm_ray.factory import create_model

    flops = []
    for b in (2, 4):
        config = dreamer_config("debug", "cpu", [f"replay.batch_size={b}", "replay.seq_len=8"])
        agent = create_model("dreamer", *spaces("vector"), config)
        flops.append(
            update_flops(agent, fake_batch("vector", np.random.default_rng(0), b, 8), None)
        )
    assert flops[0] > 1e6
    assert flops[1] / flops[0] == pytest.approx(2.0, rel=0.01)
    assert gemm_rate("cpu", "fp32", repeats=1) > 1e8  # any CPU does > 0.1 GFLOP/s


@pytest.mark.parametrize("model", ["random", "dreamer"])
def test_runtime_bench_builds_the_config_of_each_model_it_times(model: str) -> None:
    """`make bench`'s runtime step times both models; a preset of the wrong family is refused
    by ``build_config`` (as it broke this step once), so each model's config must build."""
    from benchmarks.runtime_bench import make_config

    config = make_config(model, "env.id=ALE/Pong-v5")
    assert (config.run.model, config.env.id, config.env.num_envs) == (model, "ALE/Pong-v5", 4)
    if model == "dreamer":
        assert config.dreamer.units == build_config(["size_debug"], []).dreamer.units
