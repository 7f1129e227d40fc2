"""Soak: the default run on the Ray runtime for a long time with replay held at its RAM budget,
sampling the resident memory of every process of the run (driver, GCS, raylet, each actor).

Usage (not in CI; an hour by default)::

    python -m benchmarks.soak --minutes 60 [--ram-budget 64MiB] [--every 15]

It runs ``wm-ray train`` (the embedded default: Dreamer on CartPole-v1, every actor kind) with
``replay.ram_budget`` small enough that replay reaches it within the first minutes and then
evicts chunks for the rest of the run, and ``run.steps`` too large to finish, then stops it
with SIGTERM (the graceful path: final checkpoint) after ``--minutes``. Every ``--every``
seconds it reads ``VmRSS`` of every descendant process of the driver from ``/proc`` (Ray's
processes carry their actor class in their title: ``ray::EnvWorker``, ...). The result, in
``benchmarks/results/<machine>/soak.json``: per process kind the RSS after warm-up (the first
fifth of the run), at the end, the maximum and the least-squares slope in MiB per hour, flat
when the growth from warm-up to the end stays under 10 % (or 32 MiB); and the replay's stored
bytes against its budget from ``metrics.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result

REPO = Path(__file__).resolve().parents[1]


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree[ppid].append(int(entry.name))
    return tree


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    tree, out, todo = _children(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += tree.get(p, [])
    return out


def kind_of(pid: int) -> str:
    """A process's kind: ``ray::<Actor>`` from its title, else its program name."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return "?"
    match = re.match(r"ray::(\w+)", cmd)
    if match:
        return f"ray::{match.group(1)}"
    for name in ("gcs_server", "raylet", "wm-ray", "log_monitor", "dashboard", "runtime_env"):
        if name in cmd:
            return name
    return Path(cmd.split(" ", 1)[0]).name or "?"


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope (value per second) of ``(t, value)`` points."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (v - mv) for t, v in points) / den if den > 0 else 0.0


def summarize(samples: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """Per kind (summed over the processes of a kind): warm-up, end, max, slope, flat."""
    warm_at = seconds / 5
    kinds: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for sample in samples:
        for kind, mib in sample["rss_mib"].items():
            kinds[kind].append((sample["t"], mib))
    out = {}
    for kind, points in sorted(kinds.items()):
        after = [(t, v) for t, v in points if t >= warm_at] or points
        warm, end = after[0][1], after[-1][1]
        growth = end - warm
        out[kind] = {
            "warm_mib": round(warm, 1),
            "end_mib": round(end, 1),
            "max_mib": round(max(v for _, v in points), 1),
            "growth_mib": round(growth, 1),
            "slope_mib_per_hour": round(_slope(after) * 3600, 1),
            "flat": growth < max(0.10 * warm, 32.0),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--every", type=float, default=15.0, help="seconds between samples")
    parser.add_argument("--ram-budget", default="64MiB", help="replay.ram_budget")
    parser.add_argument("--out", default=None)
    parser.add_argument("train_args", nargs="*", help="more wm-ray train arguments")
    args = parser.parse_args()
    run_dir = Path(tempfile.mkdtemp(prefix="wm-ray-soak-")) / "run"
    argv = [
        str(REPO / ".venv" / "bin" / "wm-ray"),
        "train",
        "--run-dir",
        str(run_dir),
        "--set",
        f"replay.ram_budget={args.ram_budget}",
        "run.steps=100000000",
        "logging.progress_every=60",
        *args.train_args,
    ]
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    driver = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    start, samples = time.perf_counter(), []
    try:
        while (elapsed := time.perf_counter() - start) < args.minutes * 60:
            if driver.poll() is not None:
                raise SystemExit(f"the run ended early (exit {driver.returncode})")
            by_kind: dict[str, float] = defaultdict(float)
            for pid in descendants(driver.pid):
                mib = rss_mib(pid)
                if mib is not None:
                    by_kind[kind_of(pid)] += mib
            samples.append({"t": round(elapsed, 1), "rss_mib": dict(by_kind)})
            time.sleep(args.every)
    finally:
        driver.send_signal(signal.SIGTERM)
        try:
            log, _ = driver.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            driver.kill()
            log, _ = driver.communicate()
    seconds = time.perf_counter() - start
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = metrics[-1] if metrics else {}
    replay_steps = [m["replay/size"] for m in metrics if "replay/size" in m]
    result = {
        "minutes": round(seconds / 60, 1),
        "command": " ".join(argv[1:]),
        "ram_budget": args.ram_budget,
        "env_steps": last.get("step"),
        "updates": last.get("counters/updates"),
        "replay_steps_max": max(replay_steps, default=None),
        "replay_steps_end": replay_steps[-1] if replay_steps else None,
        "restarts": {k: v for k, v in last.items() if k.startswith("counters/restarts/")},
        "processes": summarize(samples, seconds),
        "samples": samples,
        "log_tail": log.decode(errors="replace").splitlines()[-5:],
    }
    result["flat"] = all(p["flat"] for p in result["processes"].values())
    path = write_result("soak", result, Path(args.out) if args.out else None)
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
