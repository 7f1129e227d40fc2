"""A benchmark's results: per-seed raw scores, per-task means, aggregates, exports.

Everything lands in ``DIR/results/``: ``scores.csv`` / ``scores.json`` (one row per run: raw
score and, for Atari, the human-normalised one), ``tasks.csv`` (per task: seeds, mean and
standard error), ``aggregates.csv`` / ``aggregates.json`` (mean, median, IQM, optimality gap
with stratified-bootstrap 95% intervals), ``results.md`` and ``results.tex`` (the tables, with
published comparison rows where the protocol matches), ``profile.png`` (the performance
profile) and ``command.txt`` (the exact command lines).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wm_ray.benchmark import stats
from wm_ray.benchmark.suites import Suite, atari_table, published

STAT_NAMES = {"mean": "Mean", "median": "Median", "iqm": "IQM", "optimality_gap": "Optimality gap"}


def normaliser(suite: Suite) -> tuple[str, Any]:
    """``(unit, function of (task name, raw score))`` of the suite's reported scores."""
    if suite.normalise != "atari":
        return "raw return", lambda task, x: x
    games = atari_table()["games"]

    def norm(task: str, x: float) -> float:
        return stats.human_normalised(x, games[task]["human"], games[task]["random"])

    return "human-normalised score", norm


def collect_results(
    suite: Suite,
    records: list[dict[str, Any]],
    reps: int,
    seed: int = 0,
    method: str = "this benchmark",
) -> dict[str, Any]:
    """Per-task and aggregate statistics of ``records`` (``{task, seed, score, ...}``; runs
    without a score are listed as missing); ``method`` names the table row."""
    unit, norm = normaliser(suite)
    per_task: dict[str, list[float]] = {t.name: [] for t in suite.tasks}
    raw: dict[str, list[float]] = {t.name: [] for t in suite.tasks}
    for r in records:
        if r["score"] is not None:
            r["normalised"] = norm(r["task"], r["score"]) if suite.normalise != "raw" else None
            raw[r["task"]].append(r["score"])
            per_task[r["task"]].append(norm(r["task"], r["score"]))
    tasks = []
    for t in suite.tasks:
        mean, se = stats.task_mean_se(raw[t.name])
        row = {"task": t.name, "env_id": t.id, "seeds": len(raw[t.name]), "mean": mean, "se": se}
        if suite.normalise != "raw":
            row["normalised_mean"], row["normalised_se"] = stats.task_mean_se(per_task[t.name])
        tasks.append(row)
    scored = {k: v for k, v in per_task.items() if v}
    return {
        "suite": suite.to_dict(),
        "method": method,
        "unit": unit,
        "confidence": 0.95,
        "bootstrap_reps": reps,
        "tasks_scored": len(scored),
        "missing": [f"{r['task']} seed {r['seed']}" for r in records if r["score"] is None],
        "aggregates": stats.aggregate(scored, suite.target, reps, seed=seed),
        "per_task": tasks,
        "runs": records,
        "published": comparison(suite),
    }


def comparison(suite: Suite) -> dict[str, Any]:
    """The published scores under the suite's protocol (``{}`` when none matches)."""
    if not suite.published:
        return {}
    found: dict[str, Any] = published().get(suite.published, {})
    return found


def _num(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return f"{x:.{digits}f}"


def _csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    return buf.getvalue()


def aggregate_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per statistic: ``statistic, value, low, high`` (this benchmark)."""
    return [{"statistic": k, **v} for k, v in results["aggregates"].items()]


def _table(head: list[str], rows: list[list[str]], latex: bool) -> str:
    if latex:
        lines = [
            "\\begin{tabular}{l" + "r" * (len(head) - 1) + "}",
            "\\toprule",
            " & ".join(_tex(h) for h in head) + " \\\\",
            "\\midrule",
            *(" & ".join(_tex(c) for c in row) + " \\\\" for row in rows),
            "\\bottomrule",
            "\\end{tabular}",
        ]
        return "\n".join(lines) + "\n"
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _tex(text: str) -> str:
    for a, b in (("\\", "\\textbackslash{}"), ("_", "\\_"), ("%", "\\%"), ("&", "\\&")):
        text = text.replace(a, b)
    return text.replace("#", "\\#").replace("[", "{[}").replace("]", "{]}")


def tables(results: dict[str, Any], latex: bool = False) -> str:
    """The aggregate table (with published rows) and the per-task table, Markdown or LaTeX."""
    aggs = results["aggregates"]
    names = list(aggs)
    head = ["method", *(STAT_NAMES[n] for n in names)]
    ours = [results["method"]] + [
        f"{_num(aggs[n]['value'])} [{_num(aggs[n]['low'])}, {_num(aggs[n]['high'])}]" for n in names
    ]
    rows = [ours]
    pub = results["published"]
    for method, values in pub.get("aggregates", {}).items():
        rows.append([f"{method} (published)", *(_num(values.get(n)) for n in names)])
    task_head = ["task", "seeds", "mean", "s.e."]
    normalised = results["suite"]["normalise"] != "raw"
    if normalised:
        task_head += ["normalised mean", "normalised s.e."]
    published_tasks = pub.get("tasks", {})
    methods = sorted({m for t in published_tasks.values() for m in t})
    task_head += [f"{m} (published)" for m in methods]
    task_rows = []
    for t in results["per_task"]:
        row = [t["task"], str(t["seeds"]), _num(t["mean"], 1), _num(t["se"], 1)]
        if normalised:
            row += [_num(t["normalised_mean"]), _num(t["normalised_se"])]
        row += [_num(published_tasks.get(t["task"], {}).get(m), 1) for m in methods]
        task_rows.append(row)
    unit = results["unit"]
    conf = f"{round(results['confidence'] * 100)}% stratified-bootstrap CI"
    title = f"{results['suite']['name']}: {unit} over {results['tasks_scored']} tasks ({conf})"
    if latex:
        return (
            f"% {title}\n"
            + _table(head, rows, True)
            + "% per task (raw return)\n"
            + _table(task_head, task_rows, True)
        )
    missing = results["missing"]
    note = f"\nNot done (left out): {', '.join(missing)}\n" if missing else ""
    source = f"\nPublished rows: {pub['protocol']}.\n" if pub else ""
    return (
        f"## {title}\n\n"
        + _table(head, rows, False)
        + source
        + note
        + "\n## Per task (raw return)\n\n"
        + _table(task_head, task_rows, False)
    )


def plot_profile(results: dict[str, Any], path: Path, reps: int = 200) -> Path | None:
    """The performance profile (fraction of runs above each score) as a PNG."""
    runs = [r for r in results["runs"] if r["score"] is not None]
    if not runs:
        return None
    key = "normalised" if results["suite"]["normalise"] != "raw" else "score"
    scores: dict[str, list[float]] = {}
    for r in runs:
        scores.setdefault(r["task"], []).append(float(r[key]))
    values = np.concatenate([np.asarray(v) for v in scores.values()])
    lo, hi = float(values.min()), float(values.max())
    pad = max((hi - lo) * 0.05, 1e-6)
    taus = np.linspace(lo - pad, hi + pad, 101)
    prof = stats.performance_profile(scores, taus, reps=reps)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(taus, prof["fraction"], label=results["method"])
    if prof["low"] is not None:
        ax.fill_between(taus, prof["low"], prof["high"], alpha=0.25, label="95% CI")
    ax.set_xlabel(results["unit"] + " (tau)")
    ax.set_ylabel("fraction of runs with score > tau")
    ax.set_title(f"{results['suite']['name']}: performance profile")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _clean(x: Any) -> Any:
    """JSON-able: NaN as null."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    return x


def write_results(results: dict[str, Any], out: Path, commands: list[str]) -> Path:
    """Write every export into ``out`` (``DIR/results``); returns ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    runs = results["runs"]
    cols = ["task", "env_id", "seed", "score", "normalised", "run_dir"]
    (out / "scores.csv").write_text(_csv(runs, cols))
    (out / "scores.json").write_text(json.dumps(_clean(runs), indent=1) + "\n")
    task_cols = ["task", "env_id", "seeds", "mean", "se", "normalised_mean", "normalised_se"]
    (out / "tasks.csv").write_text(_csv(results["per_task"], task_cols))
    rows = aggregate_rows(results)
    (out / "aggregates.csv").write_text(_csv(rows, ["statistic", "value", "low", "high"]))
    full = {**results, "commands": commands}
    (out / "aggregates.json").write_text(json.dumps(_clean(full), indent=1) + "\n")
    (out / "results.md").write_text(tables(results))
    (out / "results.tex").write_text(tables(results, latex=True))
    (out / "command.txt").write_text("\n".join(commands) + "\n")
    plot_profile(results, out / "profile.png", reps=min(results["bootstrap_reps"], 200))
    return out


__all__ = ["aggregate_rows", "collect_results", "plot_profile", "tables", "write_results"]
