"""Metric names, and the sinks: ``<run_dir>/metrics.jsonl``, TensorBoard, a progress line.

Every JSONL line is one object with ``step`` (env steps) and ``time`` (seconds since the run
started) plus the names below. The names are the same for every family and for both loops:
the loops write the runtime's, every agent's ``train`` returns the learner's (``train/...`` and
``time/...``), built with :func:`loss`, :func:`grad_norm`, :func:`diagnostic` and
:func:`timing`. The README lists them once ("Metrics").
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO

# -- the runtime's metrics (both loops) --------------------------------------------------------
STEP = "step"
TIME = "time"
EPISODE_RETURN = "episode/return"
EPISODE_LENGTH = "episode/length"
EVAL_RETURN = "eval/return"
EVAL_LENGTH = "eval/length"
EVAL_EPISODES = "eval/episodes"
EVAL_BEST_RETURN = "eval/best_return"
FPS_ENV = "fps/env"
FPS_TRAIN = "fps/train"
REPLAY_SIZE = "replay/size"
REPLAY_RATIO = "replay/ratio"
REPLAY_DEBT = "replay/debt"
REPLAY_TOLERANCE = "replay/tolerance"
UPDATES = "counters/updates"
EPISODES = "counters/episodes"
ENV_RESTARTS = "counters/env_restarts"
ENV_STEPS = "counters/env_steps"
ACKED_STEPS = "counters/acked_steps"
WEIGHTS_VERSION = "weights/version"
WEIGHTS_LAG = "weights/lag"


def restarts(kind: str) -> str:
    """``counters/restarts/<kind>``: restarts of one actor kind (``env-worker``, ...)."""
    return f"counters/restarts/{kind}"


# -- the learner's metrics (every family) ------------------------------------------------------
WORLD_MODEL = "world_model"
ACTOR = "actor"
CRITIC = "critic"
ACTOR_CRITIC = "actor_critic"
"""Parts of an agent that have losses; a family adds its own (e.g. IRIS's ``tokenizer``)."""
TOTAL = "total"
IMAG_RETURN = "train/imag/return"
"""Mean lambda-return of the imagined trajectories."""
IMAG_VALUE = "train/imag/value"
"""Mean critic value of the imagined states."""
IMAG_REWARD = "train/imag/reward"
"""Mean predicted reward of the imagined transitions."""
IMAG_WEIGHT = "train/imag/weight"
"""Mean loss weight of the imagined steps (discounted continuation, 0 after an end)."""
IMAG_ADVANTAGE = "train/imag/advantage"
ACTOR_ENTROPY = "train/actor/entropy"
RETURN_SCALE = "train/actor/return_scale"


def loss(part: str, term: str = TOTAL) -> str:
    """``train/loss/<part>/<term>``: a loss term of one part (``total`` is what it minimizes)."""
    return f"train/loss/{part}/{term}"


def grad_norm(part: str) -> str:
    """``train/grad_norm/<part>``: the gradient norm of one part's optimizer, before clipping."""
    return f"train/grad_norm/{part}"


def diagnostic(part: str, name: str) -> str:
    """``train/<part>/<name>``: a diagnostic that is not a loss (``train/world_model/kl``)."""
    return f"train/{part}/{name}"


def timing(part: str) -> str:
    """``time/<part>``: seconds per update spent in one part."""
    return f"time/{part}"


class JsonlSink:
    """Appends one JSON object per ``write`` and flushes, so a crash loses at most one line."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a")

    def write(self, record: dict[str, Any]) -> None:
        clean = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in record.items()
        }
        self._file.write(json.dumps(clean) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


class Progress:
    """A live status line: env steps, fps, latest return, ETA.

    Args:
        total_steps: the run's target env steps.
        stream: where the line goes (only when it is a terminal).
        enabled: show it at all.
        start: env steps already done when the line starts (a resumed run): fps and ETA count
            only the steps taken since.
    """

    def __init__(
        self,
        total_steps: int,
        stream: TextIO = sys.stderr,
        enabled: bool = True,
        start: int = 0,
    ) -> None:
        self.total = total_steps
        self.stream = stream
        self.enabled = enabled and stream.isatty()
        self.start = time.perf_counter()
        self.first_step = start

    def update(self, step: int, **values: float) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        fps = (step - self.first_step) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - step) / fps if fps > 0 else float("nan")
        shown = " ".join(f"{k} {v:.3g}" for k, v in values.items() if v == v)
        self.stream.write(
            f"\r{step:>9,}/{self.total:,} steps  {fps:7.0f} fps  {shown}  ETA {eta:5.0f}s "
        )
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
        self.enabled = False


class TensorBoardSink:
    """Scalars as TensorBoard event files in ``<run_dir>/tb`` (``tensorboard --logdir runs``)."""

    def __init__(self, directory: str | Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(str(directory))

    def write(self, record: dict[str, Any]) -> None:
        step = int(record["step"])
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                self._writer.add_scalar(key, value, step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class MetricsLogger:
    """Fans one record out to the configured sinks: JSONL, TensorBoard."""

    def __init__(self, run_dir: str | Path, jsonl: bool = True, tensorboard: bool = True) -> None:
        self.sinks: list[JsonlSink | TensorBoardSink] = []
        if jsonl:
            self.sinks.append(JsonlSink(Path(run_dir) / "metrics.jsonl"))
        if tensorboard:
            self.sinks.append(TensorBoardSink(Path(run_dir) / "tb"))

    def write(self, record: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.write(record)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


class Mean:
    """Running means of scalar metrics between log steps."""

    def __init__(self) -> None:
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def add(self, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self._sums[key] = self._sums.get(key, 0.0) + float(value)
            self._counts[key] = self._counts.get(key, 0) + 1

    def pop(self) -> dict[str, float]:
        out = {k: self._sums[k] / self._counts[k] for k in self._sums}
        self._sums, self._counts = {}, {}
        return out
