"""``wm-ray benchmark``: a suite x seeds of ordinary training runs, then reliable aggregates.

``DIR/benchmark.json`` records the suite, the seeds, the user's presets and overrides and every
command given, so ``wm-ray benchmark --out DIR`` continues a benchmark and
``--aggregate-only`` re-aggregates it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from wm_ray.benchmark import report, runner
from wm_ray.benchmark.suites import BUILTIN, load_suite, suite_from_dict
from wm_ray.config_io import ConfigError

MANIFEST = "benchmark.json"
DEFAULT_SEEDS = 5


def _parallel_arg(text: str) -> int | str:
    return "auto" if text == "auto" else _count(text)


def _parallel(args: argparse.Namespace, configs: list[Any], jobs: int) -> tuple[int, str]:
    """``--parallel``: the number given, or with ``auto`` as many runs as the resources hold
    (the cluster's with ``--address``, else this machine's)."""
    if args.parallel != "auto":
        return int(args.parallel), ""
    if args.address and not args.single_process:
        have = runner.cluster_resources(args.address)
    else:
        have = runner.machine_resources()
    return runner.auto_parallel(configs, jobs, have, args.single_process)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (>= 1), got {value}")
    return value


def command_line(args: argparse.Namespace, suite: str, seeds: int) -> str:
    """The command, every option spelled out (what ``command.txt`` and ``benchmark.json`` keep)."""
    argv = ["wm-ray", "benchmark", "--out", args.out]
    if args.aggregate_only:
        return shlex.join([*argv, "--aggregate-only", "--bootstrap-reps", str(args.bootstrap_reps)])
    argv += ["--suite", suite, "--seeds", str(seeds)]
    if args.configs:
        argv += ["--configs", *args.configs]
    if args.overrides:
        argv += ["--set", *args.overrides]
    argv += ["--parallel", str(args.parallel), "--bootstrap-reps", str(args.bootstrap_reps)]
    if args.address:
        argv += ["--address", args.address]
    if args.single_process:
        argv.append("--single-process")
    return shlex.join(argv)


def _manifest(out: Path) -> dict[str, Any] | None:
    path = out / MANIFEST
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _resolve(args: argparse.Namespace, saved: dict[str, Any] | None) -> dict[str, Any]:
    """The benchmark of this invocation: the given options, checked against a saved one."""
    if args.suite is None:
        if saved is None:
            raise ConfigError(f"--suite is needed: {args.out} holds no benchmark yet")
        if args.configs or args.overrides:
            raise ConfigError("--configs / --set without --suite: the benchmark keeps its own")
        return {**saved, "seeds": max(args.seeds or 0, saved["seeds"])}
    suite = load_suite(args.suite).to_dict()
    wanted = {"suite": suite, "configs": args.configs, "overrides": args.overrides}
    if saved is not None:
        differs = [k for k, v in wanted.items() if saved[k] != v]
        if differs:
            raise ConfigError(
                f"{args.out} holds a benchmark started with other {' and '.join(differs)} "
                f"(see {Path(args.out) / MANIFEST}); give its options (or only --out to "
                "continue it), or benchmark into another --out"
            )
    seeds = args.seeds or (saved["seeds"] if saved else DEFAULT_SEEDS)
    return {**wanted, "seeds": max(seeds, saved["seeds"]) if saved else seeds}


def cmd_benchmark(args: argparse.Namespace) -> int:
    out = Path(args.out)
    saved = _manifest(out)
    if args.aggregate_only:
        if saved is None:
            raise ConfigError(f"--aggregate-only: {out} holds no benchmark ({MANIFEST} missing)")
        bench = saved
    else:
        bench = _resolve(args, saved)
    suite = suite_from_dict(bench["suite"])
    runs = runner.plan(suite, bench["seeds"], out, bench["configs"], bench["overrides"])
    configs = [run.config() for run in runs]  # unknown presets or keys fail before any run
    if not args.aggregate_only:
        for config in configs:
            runner.check_scored(config, args.single_process)
    shown = command_line(args, args.suite or suite.name, bench["seeds"])
    jobs: list[tuple[runner.Run, list[str], str]] = []
    failed: list[str] = []
    if not args.aggregate_only:
        for note in runner.protocol_notes(suite, bench["overrides"]):
            print(f"wm-ray: note: {note}", file=sys.stderr)
        states = [runner.status(run, config) for run, config in zip(runs, configs, strict=True)]
        for run, config, state in zip(runs, configs, states, strict=True):
            if state == "done":
                continue
            how = "resume" if state == "resume" else "new"
            argv = runner.train_argv(run, how, config.run.steps, args.address, args.single_process)
            jobs.append((run, argv, state))
        counts = {s: states.count(s) for s in ("done", "resume", "restart", "new") if s in states}
        parallel, why = _parallel(args, configs, len(jobs))
        print(
            f"benchmark {suite.name}: {len(suite.tasks)} tasks x {bench['seeds']} seeds = "
            f"{len(runs)} runs ({', '.join(f'{n} {s}' for s, n in counts.items())}); "
            f"at most {parallel} at once{f' ({why})' if why else ''}"
        )
        if args.dry_run:
            for run, argv, state in jobs:
                print(f"[{state}] {run.label}: {shlex.join(argv)}")
            return 0
        out.mkdir(parents=True, exist_ok=True)
        history = [*(saved or {}).get("commands", []), {"time": time.time(), "command": shown}]
        bench = {**bench, "commands": history}
        (out / MANIFEST).write_text(json.dumps(bench, indent=1) + "\n")
        for run, _, state in jobs:
            if state == "restart":
                print(f"{run.run_dir} stopped before its first checkpoint: starting it afresh")
                runner.clear(run.run_dir)
        codes = runner.execute([(run, argv) for run, argv, _ in jobs], parallel)
        failed = [label for label, code in codes.items() if code != 0]
        for run, config in zip(runs, configs, strict=True):  # exit 0, yet no final score
            if run.label in codes and codes[run.label] == 0 and runner.score(run, config) is None:
                failed.append(f"{run.label} (ended without its final evaluation)")
    records = []
    for run, config in zip(runs, configs, strict=True):
        value = runner.score(run, config)
        records.append(
            {"task": run.task.name, "env_id": run.task.id, "seed": run.seed, "score": value}
            | {"run_dir": str(run.run_dir.relative_to(out))}
        )
    models = sorted({config.run.model for config in configs})
    method = f"wm_ray {'/'.join(models)}"
    results = report.collect_results(suite, records, args.bootstrap_reps, method=method)
    commands = [c["command"] for c in bench.get("commands", [])]
    if args.aggregate_only:
        commands.append(shown)
    train_lines = [  # how each run was started (resumes add --resume --steps N)
        f"# {run.label}: "
        + shlex.join(runner.train_argv(run, "new", 0, args.address, args.single_process))
        for run in runs
    ]
    where = report.write_results(results, out / "results", commands + train_lines)
    for name, agg in results["aggregates"].items():
        print(
            f"  {report.STAT_NAMES[name]:15s} {agg['value']:.3f} "
            f"[{agg['low']:.3f}, {agg['high']:.3f}] ({results['unit']})"
        )
    print(f"results: {where} (results.md, aggregates.csv, scores.csv, profile.png, ...)")
    if results["missing"]:
        print(f"not done: {', '.join(results['missing'])}", file=sys.stderr)
    if failed:
        print(f"wm-ray: error: {len(failed)} runs failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def add_benchmark_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``benchmark`` subcommand's parser."""
    p: argparse.ArgumentParser = sub.add_parser(
        "benchmark",
        help="train a suite (atari100k, dmc_vision, dmc_proprio, a YAML task list) x seeds "
        "and aggregate the scores (IQM, bootstrap CIs, tables, profiles)",
        description="One ordinary training run per (task, seed) under OUT/runs/<task>/seed-<s>,\n"
        "with the suite's protocol applied over --configs / --set. Finished runs are not\n"
        "repeated; interrupted ones resume. Score of a run: its final evaluation return.\n"
        "Aggregates, per-seed raw scores and the exact commands land in OUT/results.",
        epilog="examples:\n"
        "  wm-ray benchmark --suite atari100k --seeds 5 --configs dreamer --out bench/a100k\n"
        "  wm-ray benchmark --suite my_tasks.yaml --seeds 3 --configs debug --out bench/mine\n"
        "  wm-ray benchmark --out bench/a100k        # continue it\n"
        "  wm-ray benchmark --out bench/a100k --aggregate-only",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--suite",
        default=None,
        metavar="SUITE",
        help=f"{', '.join(BUILTIN)}, or a YAML file: a list of env ids, or a mapping with tasks "
        "(and configs, set, normalise: atari|raw, target); default: OUT's benchmark",
    )
    p.add_argument(
        "--seeds", type=_count, default=None, help=f"seeds 0..N-1 (default {DEFAULT_SEEDS})"
    )
    p.add_argument(
        "--configs",
        nargs="+",
        action="extend",
        default=[],
        metavar="PRESET",
        help="presets applied before the suite's (e.g. --configs dreamer)",
    )
    p.add_argument(
        "--set",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="overrides applied before the suite's protocol (the protocol wins on its keys)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="the benchmark directory")
    p.add_argument(
        "--parallel",
        type=_parallel_arg,
        default="auto",
        metavar="K",
        help="runs at once, or auto (default): as many as the CPUs and GPUs hold (the "
        "cluster's with --address, else this machine's) for one run's resources.* needs",
    )
    p.add_argument(
        "--address", default=None, help="the Ray cluster every run joins (auto, host:port)"
    )
    p.add_argument(
        "--single-process",
        action="store_true",
        help="train each run in the single-process loop, without Ray (small runs, debugging)",
    )
    p.add_argument(
        "--aggregate-only", action="store_true", help="re-aggregate OUT's runs; train nothing"
    )
    p.add_argument(
        "--bootstrap-reps",
        type=int,
        default=2000,
        metavar="N",
        help="stratified bootstrap replicates of the 95%% CIs (default 2000; 0: no CIs)",
    )
    p.add_argument("--dry-run", action="store_true", help="list the runs to train and stop")
    p.set_defaults(func=cmd_benchmark)
    return p


__all__ = ["add_benchmark_parser", "cmd_benchmark", "command_line"]
