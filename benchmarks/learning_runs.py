"""Learning curves of finished runs, read from their run directories, as JSON plus a table.

Usage:
    python -m benchmarks.learning_runs --name dreamer_cartpole_learning --target 400 \
        "make run, seed 0=runs/s0" "make run, seed 1=runs/s1" ...

Every ``LABEL=RUN_DIR`` pair names a finished (or stopped) run; its ``metrics.jsonl`` gives the
evaluations (``eval/return`` with its env step and wall-clock seconds) and the closing counters.
The JSON (``benchmarks/results/<machine>/<name>.json``) keeps every evaluation of every run, the
best and final return, the first evaluation at or above ``--target`` and the run's wall time;
the markdown table printed on stdout is the one in ``dreamer_learning.md``. Nothing is
measured here: the runs are (``make run``, ``wm-ray train ...``); this only reads what they
wrote, so the figures in the results can be regenerated from the run directories.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from benchmarks.common import write_result


def read_run(run_dir: Path, target: float) -> dict[str, Any]:
    """The evaluations and closing figures of one run directory."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise SystemExit(f"{run_dir}: no metrics.jsonl (is this a run directory?)")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    evals = [
        {"step": int(r["step"]), "time_s": float(r.get("time", 0.0)), "return": r["eval/return"]}
        for r in rows
        if r.get("eval/return") is not None
    ]
    if not evals:
        raise SystemExit(f"{run_dir}: no evaluation in metrics.jsonl")
    first = next((e for e in evals if e["return"] >= target), None)
    best = max(evals, key=lambda e: e["return"])
    last = rows[-1]
    return {
        "run_dir": str(run_dir),
        "evals": evals,
        "best": best,
        "final": evals[-1],
        "first_at_or_above_target": first,
        "env_steps": int(last.get("counters/env_steps", last.get("step", 0))),
        "updates": int(last.get("counters/updates", 0)),
        "wall_s": float(last.get("time", 0.0)),
    }


def _bucket(step: int) -> int:
    """Env steps rounded to 500 (the Ray runtime evaluates at the first round past a multiple)."""
    return (step + 250) // 500 * 500


def table(runs: dict[str, dict[str, Any]], target: float) -> str:
    """One row per run: evaluations every few thousand steps, best, final, first >= target."""
    steps = sorted({_bucket(e["step"]) for r in runs.values() for e in r["evals"]})
    head = ["run", *(f"{s / 1000:g}k" for s in steps), "best", f"first >= {target:.0f}", "wall"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, r in runs.items():
        by_step = {_bucket(e["step"]): e["return"] for e in r["evals"]}
        cells = [f"{by_step[s]:.0f}" if s in by_step else "" for s in steps]
        first = r["first_at_or_above_target"]
        reached = f"{first['step']:,} steps, {first['time_s'] / 60:.1f} min" if first else "no"
        best = r["best"]
        lines.append(
            "| "
            + " | ".join(
                [
                    label,
                    *cells,
                    f"**{best['return']:.1f}** ({_bucket(best['step']) / 1000:g}k)",
                    reached,
                    f"{r['wall_s'] / 60:.1f} min",
                ]
            )
            + " |"
        )
    hits = sum(r["first_at_or_above_target"] is not None for r in runs.values())
    bests = [r["best"]["return"] for r in runs.values()]
    finals = [r["final"]["return"] for r in runs.values()]
    lines.append("")
    lines.append(
        f"{hits} of {len(runs)} runs reach {target:.0f}; best eval return "
        f"{min(bests):.0f}-{max(bests):.0f} (median {statistics.median(bests):.0f}), final "
        f"{min(finals):.0f}-{max(finals):.0f} (median {statistics.median(finals):.0f})."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="LABEL=RUN_DIR")
    parser.add_argument("--name", default="learning_runs", help="result file name (no .json)")
    parser.add_argument("--target", type=float, default=400.0)
    parser.add_argument("--note", default="", help="what was run, kept in the JSON")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: results/)")
    args = parser.parse_args(argv)
    runs = {}
    for item in args.runs:
        label, sep, run_dir = item.rpartition("=")
        if not sep or not label:
            raise SystemExit(f"{item!r}: expected LABEL=RUN_DIR")
        runs[label] = read_run(Path(run_dir), args.target)
    path = write_result(
        args.name, {"target": args.target, "note": args.note, "runs": runs}, out=args.out
    )
    print(table(runs, args.target))
    print(f"\nwritten: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
