"""Aggregate statistics over per-seed scores (Agarwal et al. 2021, "Deep RL at the Edge of the
Statistical Precipice", the definitions of their ``rliable`` library), in numpy.

Scores are ``{task: array of per-seed scores}``; tasks may have different numbers of seeds.

- ``mean``: the mean over tasks of each task's mean over seeds.
- ``median``: the median over tasks of each task's mean over seeds.
- ``iqm``: the interquartile mean of all runs pooled: the mean of the runs left after cutting
  ``floor(n / 4)`` from each end of the sorted scores (``scipy.stats.trim_mean(x, 0.25)``).
- ``optimality_gap``: ``target - mean(min(x, target))`` over all runs pooled: how far the runs
  fall short of ``target`` on average (scores above it count as ``target``).

Confidence intervals are percentile intervals of a stratified bootstrap: each replicate
resamples, per task, that task's seeds with replacement, and recomputes the statistic.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

Scores = Mapping[str, Sequence[float] | np.ndarray]
Statistic = Callable[[list[np.ndarray]], float]


def human_normalised(score: float, human: float, random: float) -> float:
    """``(score - random) / (human - random)``: 0 plays like a random agent, 1 like a human."""
    return (score - random) / (human - random)


def task_mean_se(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and standard error of the mean (sample std with ddof 1 over sqrt(n); NaN for n=1)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan")
    se = float(np.std(x, ddof=1) / np.sqrt(x.size)) if x.size > 1 else float("nan")
    return float(x.mean()), se


def mean_of_means(runs: list[np.ndarray]) -> float:
    return float(np.mean([r.mean() for r in runs]))


def median_of_means(runs: list[np.ndarray]) -> float:
    return float(np.median([r.mean() for r in runs]))


def iqm(runs: list[np.ndarray]) -> float:
    """Interquartile mean of all runs pooled (``floor(n/4)`` cut from each end)."""
    x = np.sort(np.concatenate(runs))
    cut = x.size // 4
    return float(x[cut : x.size - cut].mean())


def optimality_gap(runs: list[np.ndarray], target: float = 1.0) -> float:
    """``target - mean(min(x, target))`` over all runs pooled."""
    x = np.concatenate(runs)
    return float(target - np.minimum(x, target).mean())


def statistics(target: float | None) -> dict[str, Statistic]:
    """The aggregates reported, by name (no optimality gap without a target)."""
    stats: dict[str, Statistic] = {"mean": mean_of_means, "median": median_of_means, "iqm": iqm}
    if target is not None:
        stats["optimality_gap"] = lambda runs: optimality_gap(runs, target)
    return stats


def stratified_bootstrap(
    runs: list[np.ndarray],
    statistic: Statistic,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """The ``confidence`` percentile interval of ``statistic`` over ``reps`` stratified
    bootstrap replicates (each task's seeds resampled with replacement, tasks kept)."""
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, r.size, size=(reps, r.size)) for r in runs]
    values = np.array(
        [statistic([r[d[i]] for r, d in zip(runs, draws, strict=True)]) for i in range(reps)]
    )
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def aggregate(
    scores: Scores,
    target: float | None = None,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """``{statistic: {"value", "low", "high"}}`` over ``scores`` (tasks without a seed are
    left out); ``reps=0`` gives no intervals (``low`` / ``high`` NaN)."""
    runs = [np.asarray(v, dtype=np.float64) for v in scores.values() if len(v)]
    if not runs:
        return {}
    out = {}
    for name, fn in statistics(target).items():
        value = fn(runs)
        low, high = (float("nan"),) * 2
        if reps > 0:
            low, high = stratified_bootstrap(runs, fn, reps, confidence, seed)
        out[name] = {"value": value, "low": low, "high": high}
    return out


def performance_profile(
    scores: Scores, taus: np.ndarray, reps: int = 0, seed: int = 0
) -> dict[str, Any]:
    """The run-score distribution: the fraction of all runs scoring above each ``tau``, and
    with ``reps`` a 95% stratified-bootstrap band (``low`` / ``high``, else None)."""
    runs = [np.asarray(v, dtype=np.float64) for v in scores.values() if len(v)]

    def profile(rs: list[np.ndarray]) -> np.ndarray:
        x = np.concatenate(rs)
        return np.asarray((x[None, :] > taus[:, None]).mean(axis=1))

    out: dict[str, Any] = {"tau": taus, "fraction": profile(runs), "low": None, "high": None}
    if reps > 0:
        rng = np.random.default_rng(seed)
        curves = np.stack(
            [profile([r[rng.integers(0, r.size, r.size)] for r in runs]) for _ in range(reps)]
        )
        out["low"], out["high"] = np.percentile(curves, [2.5, 97.5], axis=0)
    return out


__all__ = [
    "aggregate",
    "human_normalised",
    "iqm",
    "mean_of_means",
    "median_of_means",
    "optimality_gap",
    "performance_profile",
    "statistics",
    "stratified_bootstrap",
    "task_mean_se",
]
