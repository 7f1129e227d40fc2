"""The runs of a benchmark: one ordinary run directory per (task, seed), trained by
``wm-ray train`` subprocesses, at most ``parallel`` at once, resumable.

``DIR/runs/<task>/seed-<s>`` is the run of ``task`` with ``run.seed = s``; ``DIR/logs/`` holds
each subprocess's output. A run is *done* when its latest checkpoint's counters reached the
step target and hold an evaluation at that step (the final evaluation a run ends with); a
run with a checkpoint short of that is resumed (``--resume``); a directory without a checkpoint
(stopped before its first one) is cleared and started afresh. A run's score is that final
evaluation: ``last_eval_return`` of its latest checkpoint's ``state.json`` counters, the mean
return over ``eval.episodes`` episodes (the ``eval/return`` of the last evaluation line of
``metrics.jsonl``, and ``eval_return`` of ``train``'s summary).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wm_ray.benchmark.suites import Suite, Task, protocol_overrides, task_dirname
from wm_ray.config import Config
from wm_ray.config_io import ConfigError, build_config, diff, load_config
from wm_ray.rundir.checkpoint import CheckpointError, latest_checkpoint, read_run_state
from wm_ray.rundir.open import RESUMABLE_KEYS


@dataclass
class Run:
    """One (task, seed) run of a benchmark and how to train it."""

    task: Task
    seed: int
    run_dir: Path
    log: Path
    configs: tuple[str, ...]
    overrides: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.task.name} seed {self.seed}"

    def config(self) -> Config:
        return build_config(self.configs, [*self.overrides, f"run.run_dir={self.run_dir}"])


def plan(
    suite: Suite, seeds: int, out: Path, configs: Sequence[str], sets: Sequence[str]
) -> list[Run]:
    """The runs of ``suite`` x seeds ``0 .. seeds-1`` under ``out``: the user's presets, then the
    suite's; the user's overrides, then the suite's protocol (:func:`protocol_overrides`: it
    wins), then the task's env id, the seed and the run's name."""
    runs, protocol = [], protocol_overrides(suite)
    for task in suite.tasks:
        name = task_dirname(task.name)
        for seed in range(seeds):
            overrides = (
                *sets,
                *protocol,
                f"env.id={task.id}",
                f"run.seed={seed}",
                f"run.name={name}-seed{seed}",
            )
            runs.append(
                Run(
                    task,
                    seed,
                    out / "runs" / name / f"seed-{seed}",
                    out / "logs" / f"{name}-seed-{seed}.log",
                    (*configs, *suite.configs),
                    overrides,
                )
            )
    return runs


def protocol_notes(suite: Suite, sets: Sequence[str]) -> list[str]:
    """One line per user override whose key the suite's protocol sets again (the suite wins)."""
    fixed = {s.partition("=")[0].strip(): s for s in protocol_overrides(suite)}
    return [
        f"--set {s} is replaced by the suite's protocol ({fixed[s.partition('=')[0].strip()]})"
        for s in sets
        if s.partition("=")[0].strip() in fixed
    ]


def check_scored(config: Config, single_process: bool) -> None:
    """Refuse a config whose runs end without the final evaluation that scores them."""
    if config.eval.episodes < 1:
        raise ConfigError("a benchmark scores each run by its final evaluation: eval.episodes >= 1")
    if not single_process and config.resources.eval_workers < 1:
        raise ConfigError(
            "a benchmark scores each run by its final evaluation: resources.eval_workers >= 1 "
            "(or --single-process)"
        )


def run_state(run_dir: Path) -> dict[str, Any] | None:
    """The counters of the run's latest checkpoint (``state.json``), or None without one."""
    try:
        path = latest_checkpoint(run_dir)
        if path is None:
            return None
        state = read_run_state(json.loads((path / "state.json").read_text()))
    except (CheckpointError, OSError, ValueError):
        return None
    counters: dict[str, Any] = state["counters"]
    return counters


def status(run: Run, config: Config) -> str:
    """``done``, ``resume`` (a checkpoint short of done), ``restart`` (files but no
    checkpoint) or ``new``. Raises ConfigError when the run holds a different config."""
    if not run.run_dir.exists() or not any(run.run_dir.iterdir()):
        return "new"
    counters = run_state(run.run_dir)
    if counters is None:
        return "restart"
    saved = load_config(run.run_dir)  # a checkpointed run without its config: an error
    changed = {k: v for k, v in diff(saved, config).items() if k not in RESUMABLE_KEYS}
    if changed:
        shown = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(changed.items()))
        raise ConfigError(
            f"{run.run_dir} was trained with another config ({shown}); benchmark into a new "
            "--out, or with the options it was started with"
        )
    return "done" if is_done(counters, config) else "resume"


def is_done(counters: dict[str, Any], config: Config) -> bool:
    """At the step target, with the final evaluation recorded at that step."""
    steps = int(counters.get("env_steps", 0))
    evaluated = counters.get("last_eval_return") is not None
    return steps >= config.run.steps and evaluated and counters.get("last_eval_step") == steps


def score(run: Run, config: Config) -> float | None:
    """The run's final evaluation return (None when the run is not done)."""
    counters = run_state(run.run_dir)
    if counters is None or not is_done(counters, config):
        return None
    return float(counters["last_eval_return"])


def train_argv(
    run: Run, how: str, steps: int, address: str | None, single_process: bool
) -> list[str]:
    """The ``wm-ray train`` command line of a run (``how``: ``new`` or ``resume``)."""
    argv = [sys.executable, "-m", "wm_ray.cli", "train", "--run-dir", str(run.run_dir), "--quiet"]
    if how == "resume":
        argv += ["--resume", "--steps", str(steps)]
    else:
        if run.configs:
            argv += ["--configs", *run.configs]
        argv += ["--set", *run.overrides]
    if address:
        argv += ["--address", address]
    if single_process:
        argv.append("--single-process")
    return argv


def run_needs(config: Config, single_process: bool) -> dict[str, float]:
    """CPUs and GPUs one run holds: its placement group on the Ray runtime; in the single-process
    loop, the learner's and one env worker's CPU shares (both run in the one process)."""
    r = config.resources
    if single_process:
        return {"CPU": max(1.0, r.cpus_per_learner + r.cpus_per_env_worker), "GPU": 0.0}
    from wm_ray.actors.placement import required  # imports ray: only for the Ray runtime

    return required(r)


def cluster_resources(address: str) -> dict[str, float]:
    """The CPUs and GPUs of the Ray cluster at ``address`` (joined briefly as a driver)."""
    import logging

    import ray

    ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    try:
        return {k: float(v) for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}
    finally:
        ray.shutdown()


def machine_resources() -> dict[str, float]:
    """This machine's CPUs and CUDA devices (what an embedded cluster per run competes for)."""
    import os

    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return {"CPU": float(os.cpu_count() or 1), "GPU": float(gpus)}


def auto_parallel(
    configs: Sequence[Config], jobs: int, have: dict[str, float], single_process: bool
) -> tuple[int, str]:
    """How many runs fit at once in ``have`` (the cluster's or the machine's CPUs and GPUs), at
    least 1 and at most ``jobs``; with the reason, for the log. The largest run's needs decide
    (runs of one suite differ only by task and seed, so they need the same)."""
    needs = [run_needs(config, single_process) for config in configs] or [{"CPU": 1.0}]
    need = {k: max(n.get(k, 0.0) for n in needs) for k in ("CPU", "GPU")}
    fits = [int(have.get(k, 0.0) // v) for k, v in need.items() if v > 0]
    k = max(1, min([*fits, max(jobs, 1)]))
    why = ", ".join(
        f"{key} {have.get(key, 0.0):g} / {value:g} per run" for key, value in need.items() if value
    )
    return k, f"auto: {why}"


def execute(jobs: list[tuple[Run, list[str]]], parallel: int, echo: Any = print) -> dict[str, int]:
    """Run the commands, at most ``parallel`` at once, each one's output in its run's log;
    ``{label: exit code}``. Ctrl-C / SIGTERM stops the running ones (they checkpoint) first."""
    pending = list(jobs)
    running: list[tuple[Run, subprocess.Popen[bytes], float]] = []
    codes: dict[str, int] = {}
    try:
        while pending or running:
            while pending and len(running) < parallel:
                run, argv = pending.pop(0)
                run.log.parent.mkdir(parents=True, exist_ok=True)
                with run.log.open("a") as log:
                    log.write(f"\n$ {' '.join(argv)}\n")
                    log.flush()
                    # its own session: a Ctrl-C on the terminal reaches only this process,
                    # which then stops each run once (a second signal could cut short the
                    # final checkpoint a stopped run writes)
                    proc = subprocess.Popen(
                        argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                    )
                echo(f"started {run.label} -> {run.run_dir} (log {run.log})")
                running.append((run, proc, time.monotonic()))
            time.sleep(0.2)
            for item in list(running):
                run, proc, started = item
                code = proc.poll()
                if code is None:
                    continue
                running.remove(item)
                codes[run.label] = code
                took = time.monotonic() - started
                state = "finished" if code == 0 else f"FAILED (exit {code}; see {run.log})"
                echo(f"{state}: {run.label} in {took / 60:.1f} min")
    except KeyboardInterrupt:
        for _, proc, _ in running:
            proc.terminate()
        for _, proc, _ in running:
            proc.wait()
        raise
    return codes


def clear(run_dir: Path) -> None:
    """Remove a run directory that holds no checkpoint (a start that stopped before one)."""
    shutil.rmtree(run_dir)


__all__ = [
    "Run",
    "auto_parallel",
    "check_scored",
    "clear",
    "cluster_resources",
    "execute",
    "is_done",
    "machine_resources",
    "plan",
    "protocol_notes",
    "run_needs",
    "run_state",
    "score",
    "status",
    "train_argv",
]
