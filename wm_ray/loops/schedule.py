"""One run schedule for both loops: counters, logging, evaluation, checkpoints, best eval.

The single-process loop (:mod:`wm_ray.loops.train`) and the Ray runtime's coordinator
(:mod:`wm_ray.actors.coordinator`) keep the same :class:`RunCounters` (saved in every
checkpoint's run state, so either loop resumes the other's runs) and the same
:class:`Schedule`: a metrics line every ``logging.every`` env steps, and at every
``eval.every`` / ``run.checkpoint_every`` env steps (multiples of them) a checkpoint, whose
weights are then evaluated; a new best mean eval return tags that checkpoint ``best``. The
lines hold the runtime's metrics of :mod:`wm_ray.metrics`, each loop adding its own.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wm_ray import metrics as M
from wm_ray.config import Config
from wm_ray.metrics import Mean, Progress
from wm_ray.replay.limiter import Pacer

KINDS = ("learner", "env-worker", "eval-worker", "replay-shard")
"""Actor kinds the Ray runtime restarts (``counters/restarts/<kind>``)."""
logger = logging.getLogger(__name__)

RECENT_EPISODES = 20
"""The progress line's ``ret``: the mean return of the last this many training episodes."""
EVAL_SEED_OFFSET = 10**6
"""Eval envs are seeded ``run.seed + EVAL_SEED_OFFSET`` (+ 1000 per eval worker)."""


class TrainingDiverged(RuntimeError):
    """The learner's losses or gradients stayed NaN or inf for ``run.nonfinite_limit`` updates
    in a row (the message says which; the loops add the last good checkpoint)."""


def diverged(err: TrainingDiverged, run_dir: Path, shown: str) -> TrainingDiverged:
    """``err`` with the run's last good checkpoint and how to go on from it."""
    from wm_ray.rundir import checkpoint as ckpt

    try:
        latest = ckpt.latest_checkpoint(run_dir)
    except ckpt.CheckpointError:
        latest = None
    if latest is None:
        return TrainingDiverged(f"{err}; no checkpoint was written before it")
    return TrainingDiverged(
        f"{err}; the last good checkpoint is {latest.name}: continue from it with "
        f"'wm-ray train --run-dir {shown} --resume --allow-config-change --set ...' (e.g. a "
        "lower learning rate)"
    )


@dataclass
class RunCounters:
    """Everything a resumed run continues from (both loops)."""

    env_steps: int = 0
    updates: int = 0
    episodes: int = 0
    evals: int = 0
    seconds: float = 0.0
    env_restarts: int = 0
    last_eval_return: float | None = None
    last_eval_step: int = -1
    best_eval_return: float | None = None
    best_eval_step: int = -1
    weights_version: int = -1
    nonfinite_updates: int = 0
    restarts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))

    @classmethod
    def from_state(cls, saved: Mapping[str, Any]) -> RunCounters:
        """The counters of a checkpoint's run state (fields missing in old states default)."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in saved.items() if k in names and k != "restarts"}
        restarts = {**dict.fromkeys(KINDS, 0), **dict(saved.get("restarts", {}))}
        return cls(**values, restarts=restarts)

    def state(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def round_steps(config: Config) -> int:
    """Env steps one writer adds at once: one chunk per env of its vector env (a collection
    round on the Ray runtime, one vector step's finished chunks in the single-process loop)."""
    return config.replay.chunk_len * config.env.num_envs


def run_pacer(config: Config, writers: int = 1) -> Pacer:
    """The run's pacing rule: rounds of :func:`round_steps` from ``writers`` writers (the env
    workers; 1 in the single-process loop). Raises ``ToleranceError`` for a set tolerance that
    could stall the run."""
    return Pacer.of(config.replay, round_steps(config), writers)


def _next(step: int, every: int) -> int | None:
    """The first multiple of ``every`` after ``step`` (None when ``every`` is 0)."""
    return (step // every + 1) * every if every > 0 else None


class Schedule:
    """When a run logs, checkpoints and evaluates, and what its metrics lines hold.

    Args:
        config: the run config (``logging``, ``eval``, ``run.checkpoint_every``, ``replay``).
        counters: the run's counters (updated in place: evaluations, ``seconds``).
        pacer: the run's pacing rule (for ``replay/debt`` and ``replay/tolerance``).
        evaluating: whether this run evaluates at all (e.g. the runtime without eval workers).
    """

    def __init__(
        self, config: Config, counters: RunCounters, pacer: Pacer, evaluating: bool = True
    ) -> None:
        self.config, self.counters, self.pacer = config, counters, pacer
        step = counters.env_steps
        self.offset = counters.seconds
        self.start = time.perf_counter()
        self.window = (self.start, step, counters.updates)
        self.next_log = step + config.logging.every
        evaluating = evaluating and config.eval.episodes > 0
        self.next_eval = _next(step, config.eval.every) if evaluating else None
        self.next_ckpt = _next(step, config.run.checkpoint_every)
        self.means = Mean()
        self.returns: list[float] = []
        self.lengths: list[float] = []
        self.lags: list[float] = []
        self.episode_metrics: dict[str, list[float]] = {}
        self.recent: deque[float] = deque(maxlen=RECENT_EPISODES)
        self.nonfinite_run = 0
        self.progress = Progress(
            config.run.steps,
            enabled=config.logging.progress,
            start=step,
            every=config.logging.progress_every,
            name=f"{config.run.model}/{config.env.id}",
        )

    # -- what happened --------------------------------------------------------------------------

    def elapsed(self) -> float:
        """Seconds of the run so far, summed over resumes (also kept in the counters)."""
        self.counters.seconds = self.offset + time.perf_counter() - self.start
        return self.counters.seconds

    def episode(
        self,
        ret: float,
        length: float,
        lag: float | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> None:
        """A finished training episode (the weights lag it was collected with, and the env's
        per-step metrics at its last step, logged as ``episode/<name>``)."""
        self.counters.episodes += 1
        for name, value in (metrics or {}).items():
            self.episode_metrics.setdefault(name, []).append(float(value))
        self.returns.append(float(ret))
        self.recent.append(float(ret))
        self.lengths.append(float(length))
        if lag is not None:
            self.lags.append(float(lag))

    def trained(self, metrics: Mapping[str, float], updates: int = 1) -> None:
        """Updates done, with their (mean) metrics.

        Updates whose losses or gradient norms are not finite (the optimizers skipped them) are
        counted in ``counters/nonfinite_updates`` with a warning, and their metrics left out
        of the means. After ``run.nonfinite_limit`` of them in a row :class:`TrainingDiverged`
        is raised: the loops then stop without another checkpoint, so ``latest`` stays the
        last good one.
        """
        c = self.counters
        c.updates += int(updates)
        bad = sorted(
            k
            for k, v in metrics.items()
            if k.startswith(("train/loss/", "train/grad_norm/")) and not math.isfinite(v)
        )
        if not bad:
            self.nonfinite_run = 0
            if metrics:
                self.means.add(dict(metrics))
            return
        c.nonfinite_updates += int(updates)
        self.nonfinite_run += int(updates)
        limit = self.config.run.nonfinite_limit
        shown = ", ".join(f"{k}={metrics[k]}" for k in bad[:3]) + (" ..." if len(bad) > 3 else "")
        if self.nonfinite_run >= limit:
            raise TrainingDiverged(
                f"training stopped at {c.env_steps:,} env steps: {self.nonfinite_run} learner "
                f"updates in a row had non-finite losses or gradients ({shown}; "
                f"run.nonfinite_limit={limit})"
            )
        if self.nonfinite_run == int(updates) or c.nonfinite_updates % 100 < int(updates):
            logger.warning(
                "non-finite losses or gradients (%s): update skipped (%d in a row, %d in all; "
                "the run stops after %d in a row)",
                shown,
                self.nonfinite_run,
                c.nonfinite_updates,
                limit,
            )
        self.means.add({k: v for k, v in metrics.items() if math.isfinite(v)})

    def evaluated(self, result: Mapping[str, Any], step: int) -> bool:
        """Record an evaluation of the weights at ``step``; returns whether it is the best."""
        c = self.counters
        value = float(result[M.EVAL_RETURN])
        c.evals += 1
        c.last_eval_return, c.last_eval_step = value, step
        best = c.best_eval_return is None or value > c.best_eval_return
        if best:
            c.best_eval_return, c.best_eval_step = value, step
        return best

    # -- what is due ------------------------------------------------------------------------------

    def eval_due(self) -> bool:
        return self.next_eval is not None and self.counters.env_steps >= self.next_eval

    def checkpoint_due(self) -> bool:
        return self.next_ckpt is not None and self.counters.env_steps >= self.next_ckpt

    def log_due(self) -> bool:
        """Every ``logging.every`` env steps, and after ``logging.seconds`` without a line
        (when there are new steps), so a slow run's metrics file still fills."""
        c, (then, step, _) = self.counters, self.window
        late = time.perf_counter() - then >= self.config.logging.seconds > 0
        return c.env_steps >= self.next_log or (late and c.env_steps > step)

    def tick(self, inserted: float, sampled: float) -> None:
        """Called every loop iteration: the progress line and plain lines when due."""
        c = self.counters
        self.progress.tick(
            c.env_steps,
            sampled,
            ratio=sampled / inserted if inserted > 0 else float("nan"),
            updates=float(c.updates),
            ret=float(np.mean(self.recent)) if self.recent else float("nan"),
            eval=c.last_eval_return if c.last_eval_return is not None else float("nan"),
        )

    def checkpointed(self, evaluate: bool) -> None:
        """A checkpoint was written (and its weights will be evaluated if ``evaluate``)."""
        step = self.counters.env_steps
        if self.checkpoint_due():
            self.next_ckpt = _next(step, self.config.run.checkpoint_every)
        if evaluate and self.next_eval is not None:
            self.next_eval = _next(step, self.config.eval.every)

    def fresh_eval_needed(self) -> bool:
        """Whether the end of the run needs its own evaluation (none ran at this step)."""
        c = self.counters
        return self.config.eval.episodes > 0 and c.last_eval_step != c.env_steps

    # -- metrics lines ----------------------------------------------------------------------------

    def line(
        self,
        inserted: float,
        sampled: float,
        stored: float,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A metrics line: the runtime metrics, the means since the last line, and ``extra``.

        Args:
            inserted: steps inserted into replay so far (all shards).
            sampled: steps sampled from replay so far.
            stored: steps held in replay now.
            extra: the loop's own metrics (evaluation results, runtime counters).
        """
        c, cfg = self.counters, self.config
        now = time.perf_counter()
        seconds = max(now - self.window[0], 1e-9)
        batch = cfg.replay.batch_size * cfg.replay.seq_len
        record: dict[str, Any] = {
            M.STEP: c.env_steps,
            M.TIME: self.elapsed(),
            M.FPS_ENV: (c.env_steps - self.window[1]) / seconds,
            M.FPS_TRAIN: (c.updates - self.window[2]) * batch / seconds,
            M.REPLAY_SIZE: float(stored),
            M.REPLAY_RATIO: sampled / max(inserted, 1.0),
            M.REPLAY_DEBT: self.pacer.debt(inserted, sampled),
            M.REPLAY_TOLERANCE: self.pacer.tolerance,
            M.UPDATES: c.updates,
            M.EPISODES: c.episodes,
            M.ENV_RESTARTS: c.env_restarts,
            M.NONFINITE_UPDATES: c.nonfinite_updates,
        }
        if self.returns:
            record[M.EPISODE_RETURN] = float(np.mean(self.returns))
            record[M.EPISODE_LENGTH] = float(np.mean(self.lengths))
            self.returns, self.lengths = [], []
        for name, values in self.episode_metrics.items():
            record[M.episode_metric(name)] = float(np.mean(values))
        self.episode_metrics = {}
        if self.lags:
            record[M.WEIGHTS_LAG] = float(np.mean(self.lags))
            self.lags = []
        record.update(self.means.pop())
        record.update(extra or {})
        self.window = (now, c.env_steps, c.updates)
        self.next_log = c.env_steps + cfg.logging.every
        self.tick(inserted, sampled)
        return record

    def eval_record(self, result: Mapping[str, Any]) -> dict[str, Any]:
        """The ``eval/...`` metrics of an evaluation result, with the best return so far."""
        record = {k: v for k, v in result.items() if k.startswith("eval/")}
        record[M.EVAL_BEST_RETURN] = self.counters.best_eval_return
        return record

    def close(self) -> None:
        self.progress.close()


def run_summary(
    run_dir: Path,
    c: RunCounters,
    seconds: float,
    result: dict[str, Any],
    checkpoint: Path,
    curve: Path,
    location: str | None = None,
) -> dict[str, Any]:
    """What ``train`` returns (and the CLI prints): counters, evaluations, where outputs are.

    ``run_dir`` is ``location`` (the run directory as given: a path or a URI) and
    ``local_dir`` the local directory the files below are in (a URI run's staging directory).
    """
    videos = run_dir / "videos"
    best = c.best_eval_return is not None
    return {
        "run_dir": location or str(run_dir),
        "local_dir": str(run_dir),
        "env_steps": c.env_steps,
        "updates": c.updates,
        "episodes": c.episodes,
        "seconds": seconds,
        "eval_return": result.get("eval/return", c.last_eval_return),
        "best_eval_return": c.best_eval_return,
        "best_eval_step": c.best_eval_step,
        "best_checkpoint": str(run_dir / "checkpoints" / "best") if best else None,
        "eval_returns": result.get("returns"),
        "checkpoint": str(checkpoint),
        "curve": str(curve),
        "videos": str(videos) if videos.is_dir() else None,
    }


__all__ = [
    "EVAL_SEED_OFFSET",
    "KINDS",
    "RunCounters",
    "Schedule",
    "TrainingDiverged",
    "diverged",
    "round_steps",
    "run_pacer",
    "run_summary",
]
