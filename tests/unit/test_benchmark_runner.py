"""``wm-ray benchmark``: the statistics against values computed by hand, suites, run states,
exports. The end-to-end run through the CLI is tests/e2e/test_benchmark_cli.py."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from wm_ray.benchmark import report, runner, stats
from wm_ray.benchmark.suites import (
    ATARI100K_GAMES,
    DMC_PROPRIO_TASKS,
    DMC_VISION_TASKS,
    atari_table,
    builtin_suite,
    load_suite,
)
from wm_ray.config_io import ConfigError, save_config

# Four tasks x two seeds. Task means: a 0.1, b 0.7, c 2.3, d 0.1.
SCORES = {"a": [0.0, 0.2], "b": [0.5, 0.9], "c": [1.5, 3.1], "d": [0.1, 0.1]}
RUNS = [np.asarray(v) for v in SCORES.values()]


def test_mean_and_median_are_over_task_means() -> None:
    assert stats.mean_of_means(RUNS) == pytest.approx((0.1 + 0.7 + 2.3 + 0.1) / 4)  # 0.8
    assert stats.median_of_means(RUNS) == pytest.approx((0.1 + 0.7) / 2)  # 0.4


def test_iqm_cuts_a_quarter_of_the_pooled_runs_from_each_end() -> None:
    # sorted: 0.0 0.1 0.1 0.2 | 0.5 0.9 1.5 3.1 -> cut 2 each end -> 0.1 0.2 0.5 0.9
    assert stats.iqm(RUNS) == pytest.approx((0.1 + 0.2 + 0.5 + 0.9) / 4)  # 0.425
    pooled = np.concatenate(RUNS)
    assert stats.iqm(RUNS) == pytest.approx(scipy.stats.trim_mean(pooled, 0.25))
    # 9 runs: floor(9/4) = 2 cut from each end -> the middle five
    assert stats.iqm([np.arange(9.0)]) == pytest.approx((2 + 3 + 4 + 5 + 6) / 5)


def test_optimality_gap_counts_scores_above_the_target_as_the_target() -> None:
    # min(x, 1): 0 .2 .5 .9 1 1 .1 .1 -> mean 3.8/8 = 0.475 -> gap 0.525
    assert stats.optimality_gap(RUNS, 1.0) == pytest.approx(0.525)
    assert stats.optimality_gap([np.array([500.0, 1200.0])], 1000.0) == pytest.approx(250.0)


def test_task_mean_and_standard_error() -> None:
    mean, se = stats.task_mean_se([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert se == pytest.approx(math.sqrt(5 / 3) / 2)  # sample std sqrt(5/3), n = 4
    mean, se = stats.task_mean_se([7.0])
    assert mean == 7.0 and math.isnan(se)


def test_human_normalisation_uses_the_table() -> None:
    pong = atari_table()["games"]["Pong"]
    assert (pong["human"], pong["random"]) == (14.6, -20.7)
    assert stats.human_normalised(14.6, 14.6, -20.7) == pytest.approx(1.0)
    assert stats.human_normalised(-20.7, 14.6, -20.7) == pytest.approx(0.0)
    assert stats.human_normalised(0.0, 14.6, -20.7) == pytest.approx(20.7 / 35.3)
    assert "iris" in atari_table()["source"]
    assert set(atari_table()["games"]) == set(ATARI100K_GAMES)


def test_intervals_hold_the_point_estimate_and_are_reproducible() -> None:
    rng = np.random.default_rng(1)
    scores = {f"t{i}": rng.normal(i * 0.3, 0.2, size=5) for i in range(6)}
    first = stats.aggregate(scores, target=1.0, reps=500)
    assert set(first) == {"mean", "median", "iqm", "optimality_gap"}
    for name, value in first.items():
        assert value["low"] <= value["value"] <= value["high"], name
        assert value["low"] < value["high"], name
    assert stats.aggregate(scores, target=1.0, reps=500) == first
    assert "optimality_gap" not in stats.aggregate(scores, reps=0)
    assert math.isnan(stats.aggregate(scores, reps=0)["mean"]["low"])


def test_bootstrap_is_stratified_by_task() -> None:
    # Seeds agree within each task: resampling within tasks cannot move any statistic (a
    # bootstrap over the pooled runs would mix the tasks' 1s and 3s).
    agg = stats.aggregate({"a": [1.0, 1.0, 1.0], "b": [3.0, 3.0]}, target=2.0, reps=200)
    assert agg["mean"] == {"value": 2.0, "low": 2.0, "high": 2.0}
    assert agg["optimality_gap"]["low"] == agg["optimality_gap"]["high"] == pytest.approx(0.6)


def test_performance_profile_is_the_fraction_of_runs_above_tau() -> None:
    prof = stats.performance_profile({"a": [0.0, 0.5], "b": [1.0, 2.0]}, np.array([-1, 0, 0.75, 2]))
    assert prof["fraction"].tolist() == [1.0, 0.75, 0.5, 0.0]
    band = stats.performance_profile({"a": [0.0, 0.5]}, np.array([0.25]), reps=100)
    assert 0.0 <= band["low"][0] <= band["fraction"][0] <= band["high"][0] <= 1.0


def test_builtin_suites_protocols() -> None:
    atari = builtin_suite("atari100k")
    assert len(atari.tasks) == 26 and atari.tasks[0].id == "ALE/Alien-v5"
    run = runner.plan(atari, 1, Path("/tmp/x"), ["dreamer"], ["run.steps=5", "replay.capacity=7"])[
        0
    ]
    config = run.config()
    assert config.replay.capacity == 7  # not part of the protocol
    assert config.run.steps == 100_000 and config.env.id == "ALE/Alien-v5"  # preset wins
    assert (config.env.action_repeat, config.env.sticky_actions, config.eval.episodes) == (
        4,
        0.0,
        100,
    )
    assert runner.protocol_notes(builtin_suite("dmc_vision"), ["run.steps=5"])
    assert runner.protocol_notes(atari, ["env.sticky_actions=0.25", "replay.capacity=5"]) == [
        "--set env.sticky_actions=0.25 is replaced by the suite's protocol (env.sticky_actions=0.0)"
    ]
    assert len(DMC_VISION_TASKS) == 20 and len(DMC_PROPRIO_TASKS) == 18
    vision = runner.plan(builtin_suite("dmc_vision"), 1, Path("/tmp/x"), [], [])[0].config()
    assert (vision.run.steps, vision.env.action_repeat, vision.env.pixels) == (500_000, 2, True)
    proprio = runner.plan(builtin_suite("dmc_proprio"), 1, Path("/tmp/x"), [], [])[0].config()
    assert (proprio.run.steps, proprio.env.pixels) == (250_000, False)


def test_dmc_suite_tasks_are_dm_control_tasks() -> None:
    pytest.importorskip("dm_control")
    from wm_ray.envs.dmc import parse_task

    for task in DMC_VISION_TASKS:
        parse_task(task)


def test_yaml_suites(tmp_path: Path) -> None:
    plain = tmp_path / "plain.yaml"
    plain.write_text("- CartPole-v1\n- fake:vector-discrete\n")
    suite = load_suite(str(plain))
    assert [t.id for t in suite.tasks] == ["CartPole-v1", "fake:vector-discrete"]
    assert (suite.name, suite.normalise, suite.target) == ("plain", "raw", None)
    full = tmp_path / "full.yaml"
    full.write_text(
        "tasks: [{id: ALE/Pong-v5, name: Pong}]\nnormalise: atari\nconfigs: [atari100k]\n"
        "set: {run.steps: 1000, env.sticky_actions: 0.25}\n"
    )
    suite = load_suite(str(full))
    assert suite.overrides == ("run.steps=1000", "env.sticky_actions=0.25")
    assert (suite.normalise, suite.target, suite.configs) == ("atari", 1.0, ("atari100k",))
    for text, needle in [
        ("tasks: [a]\nsteps: 3\n", "unknown keys"),
        ("tasks: [{id: a, name: x}, {id: b, name: x}]\n", "share a name"),
        ("tasks: [CartPole-v1]\nnormalise: atari\n", "no human/random"),
        ("{}\n", "expected a list"),
    ]:
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(ConfigError, match=needle):
            load_suite(str(bad))
    with pytest.raises(ConfigError, match="unknown suite"):
        load_suite("atari200k")


def _fake_run(tmp_path: Path, steps: int, eval_step: int | None) -> runner.Run:
    suite = load_suite("dmc_proprio")
    run = runner.plan(suite, 1, tmp_path, [], ["run.model=random"])[0]
    config = run.config()
    run.run_dir.mkdir(parents=True)
    save_config(config, run.run_dir)
    if steps:
        ckpt = run.run_dir / "checkpoints" / f"step-{steps:012d}"
        ckpt.mkdir(parents=True)
        counters = {"env_steps": steps, "last_eval_step": eval_step, "last_eval_return": 512.5}
        state = {"format": 2, "counters": counters, "shards": [], "shard_manifests": []}
        (ckpt / "state.json").write_text(json.dumps(state))
        (run.run_dir / "checkpoints" / "latest").write_text(ckpt.name)
    return run


@pytest.mark.parametrize(
    ("steps", "eval_step", "expected", "score"),
    [
        (0, None, "restart", None),
        (1000, 1000, "resume", None),
        (250_000, 240_000, "resume", None),  # stopped before the final evaluation
        (250_000, 250_000, "done", 512.5),
    ],
)
def test_run_states(
    tmp_path: Path, steps: int, eval_step: int | None, expected: str, score: float | None
) -> None:
    run = _fake_run(tmp_path, steps, eval_step)
    assert runner.status(run, run.config()) == expected
    assert runner.score(run, run.config()) == score


def test_a_run_with_another_config_is_refused(tmp_path: Path) -> None:
    run = _fake_run(tmp_path, 1000, 1000)
    changed = runner.Run(**{**run.__dict__, "overrides": (*run.overrides, "eval.episodes=3")})
    with pytest.raises(ConfigError, match=r"eval\.episodes"):
        runner.status(changed, changed.config())
    fresh = runner.plan(load_suite("dmc_proprio"), 2, tmp_path, [], [])[1]
    assert runner.status(fresh, fresh.config()) == "new"
    argv = runner.train_argv(run, "resume", 250_000, "auto", False)
    assert argv[4:] == [
        *("--run-dir", str(run.run_dir), "--quiet", "--resume", "--steps", "250000"),
        *("--address", "auto"),
    ]


def test_exports_parse_and_hold_the_published_rows(tmp_path: Path) -> None:
    suite = builtin_suite("atari100k")
    records = [
        {"task": "Pong", "env_id": "ALE/Pong-v5", "seed": s, "score": x, "run_dir": f"r{s}"}
        for s, x in enumerate([14.6, -20.7])
    ] + [{"task": "Breakout", "env_id": "ALE/Breakout-v5", "seed": 0, "score": 30.5}]
    results = report.collect_results(suite, records, reps=100)
    pong = next(t for t in results["per_task"] if t["task"] == "Pong")
    assert pong["normalised_mean"] == pytest.approx(0.5) and pong["mean"] == pytest.approx(-3.05)
    # tasks: Pong 0.5 (runs 1, 0), Breakout 1.0 -> mean 0.75, median 0.75, gap 1 - 2/3
    assert results["aggregates"]["mean"]["value"] == pytest.approx(0.75)
    assert results["aggregates"]["optimality_gap"]["value"] == pytest.approx(1 / 3)
    assert results["tasks_scored"] == 2 and len(results["missing"]) == 0
    out = report.write_results(results, tmp_path / "results", ["wm-ray benchmark ..."])
    with (out / "aggregates.csv").open() as f:
        rows = {r["statistic"]: r for r in csv.DictReader(f)}
    assert float(rows["mean"]["value"]) == pytest.approx(0.75)
    assert float(rows["iqm"]["low"]) <= float(rows["iqm"]["value"]) <= float(rows["iqm"]["high"])
    with (out / "scores.csv").open() as f:
        scores = list(csv.DictReader(f))
    assert [float(r["normalised"]) for r in scores] == pytest.approx([1.0, 0.0, 1.0])
    assert json.loads((out / "aggregates.json").read_text())["commands"] == ["wm-ray benchmark ..."]
    assert len(json.loads((out / "scores.json").read_text())) == 3
    md = (out / "results.md").read_text()
    assert "| DreamerV3 (published) | 1.245 | 0.480 |" in md and "| Pong | 2 |" in md
    tex = (out / "results.tex").read_text()
    assert tex.count("\\begin{tabular}") == tex.count("\\end{tabular}") == 2
    assert "DreamerV3 (published) & 1.245 & 0.480 &  & " in tex
    assert (out / "profile.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "command.txt").read_text() == "wm-ray benchmark ...\n"


def test_runs_must_end_with_the_evaluation_that_scores_them() -> None:
    run = runner.plan(load_suite("dmc_proprio"), 1, Path("/tmp/x"), [], [])[0]
    runner.check_scored(run.config(), single_process=False)
    no_eval = runner.Run(**{**run.__dict__, "overrides": (*run.overrides, "eval.episodes=0")})
    with pytest.raises(ConfigError, match=r"eval\.episodes >= 1"):
        runner.check_scored(no_eval.config(), single_process=True)
    workers = runner.Run(
        **{**run.__dict__, "overrides": (*run.overrides, "resources.eval_workers=0")}
    )
    runner.check_scored(workers.config(), single_process=True)
    with pytest.raises(ConfigError, match="eval_workers"):
        runner.check_scored(workers.config(), single_process=False)


def test_an_existing_benchmark_keeps_its_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from wm_ray import cli

    suite = tmp_path / "s.yaml"
    suite.write_text("tasks: [CartPole-v1]\nset: [run.model=random, run.steps=100]\n")
    out = tmp_path / "out"
    out.mkdir()
    saved = {
        "suite": load_suite(str(suite)).to_dict(),
        "configs": [],
        "overrides": ["replay.capacity=1000"],
        "seeds": 2,
        "commands": [],
    }
    (out / "benchmark.json").write_text(json.dumps(saved))
    base = ["benchmark", "--out", str(out), "--dry-run"]
    assert cli.main([*base, "--suite", str(suite)]) == 2  # without its --set
    assert "other overrides" in capsys.readouterr().err
    assert cli.main([*base, "--suite", str(suite), "--set", "replay.capacity=1000"]) == 0
    assert "1 tasks x 2 seeds = 2 runs (2 new)" in capsys.readouterr().out
    assert cli.main([*base, "--seeds", "3"]) == 0  # --out alone continues it; seeds may grow
    printed = capsys.readouterr().out
    assert "3 runs (3 new)" in printed and "run.seed=2" in printed
    assert cli.main(["benchmark", "--out", str(tmp_path / "none"), "--aggregate-only"]) == 2
    assert cli.main(["benchmark", "--out", str(tmp_path / "none")]) == 2
    assert "--suite is needed" in capsys.readouterr().err


def test_auto_parallel_fits_as_many_runs_as_the_resources_hold() -> None:
    from wm_ray.config import Config, ResourcesConfig

    cpu_run = Config()  # a learner's 2 CPUs + one env worker's 1 = 3 CPUs per run
    assert runner.run_needs(cpu_run, single_process=False) == {"CPU": 3.0, "GPU": 0.0}
    assert runner.auto_parallel([cpu_run] * 8, 8, {"CPU": 16.0}, False)[0] == 5  # 16 // 3
    assert runner.auto_parallel([cpu_run] * 8, 3, {"CPU": 16.0}, False)[0] == 3  # 3 jobs left
    k, why = runner.auto_parallel([cpu_run], 4, {"CPU": 2.0}, False)
    assert k == 1 and "CPU 2 / 3 per run" in why  # one run always goes, as on a small machine
    gpu_run = Config(resources=ResourcesConfig(learners=2, gpus_per_learner=1.0))
    assert runner.auto_parallel([gpu_run] * 8, 8, {"CPU": 64.0, "GPU": 4.0}, False)[0] == 2
    assert runner.auto_parallel([cpu_run, gpu_run], 8, {"CPU": 64.0, "GPU": 4.0}, False)[0] == 2
    assert runner.auto_parallel([gpu_run], 8, {"CPU": 64.0}, False)[0] == 1  # no GPU: 1, fails
    assert runner.run_needs(gpu_run, single_process=True) == {"CPU": 3.0, "GPU": 0.0}
