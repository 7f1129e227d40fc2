"""Metric names, and the sinks: ``<run_dir>/metrics.jsonl``, TensorBoard, a progress line.

Every JSONL line is one object with ``step`` (env steps) and ``time`` (seconds since the run
started) plus the names below. The names are the same for every family and for both loops:
the loops write the runtime's, every agent's ``train`` returns the learner's (``train/...`` and
``time/...``), built with :func:`loss`, :func:`grad_norm`, :func:`diagnostic` and
:func:`timing`. The README lists them once ("Metrics").
"""

from __future__ import annotations

import collections
import json
import math
import os
import socket
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
REPLAY_PRELOADED = "replay/preloaded_steps"
"""Steps of ``replay.preload``'s data sets stored in replay at the start (not env steps)."""
UPDATES = "counters/updates"
EPISODES = "counters/episodes"
ENV_RESTARTS = "counters/env_restarts"
ENV_STEPS = "counters/env_steps"
ACKED_STEPS = "counters/acked_steps"
NONFINITE_UPDATES = "counters/nonfinite_updates"
"""Learner updates whose losses or gradients were NaN or inf (skipped by the optimizers)."""
WEIGHTS_VERSION = "weights/version"
WEIGHTS_LAG = "weights/lag"


def episode_metric(name: str) -> str:
    """``episode/<name>``: mean over recent training episodes of an env's per-step metric at
    each episode's last step (``episode/success``; only for envs that report metrics)."""
    return f"episode/{name}"


def eval_metric(name: str) -> str:
    """``eval/<name>``: the same mean over an evaluation's episodes (``eval/success``)."""
    return f"eval/{name}"


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


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _tty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


class Progress:
    """What a run is doing, from its first step: a live line on a terminal and plain lines in
    logs.

    - **Live line** (stderr, or stdout, when one is a terminal): rewritten in place at most
      every ``live_every`` seconds.
    - **Plain lines** (stdout when it is not a terminal: ``make run > log``, nohup, CI, the logs
      of ``ray job submit``): one line every ``every`` seconds, no control characters.

    Each shows env steps of the total, env fps and train fps (replayed steps per second), the
    replay ratio, updates, the mean episode return and the
    last eval return, and the ETA from the fps of this invocation (a resumed run counts only
    the steps taken since it started). The plain lines' fps are since the previous plain line;
    the live line's over the last ``live_window`` seconds (steps arrive in bursts: the env
    workers wait while the learner catches up, and a 2-second window would flicker between 0
    and a burst's rate).

    Args:
        total_steps: the run's target env steps.
        enabled: show anything at all.
        start: env steps already done when this invocation started (a resumed run).
        every: seconds between plain lines.
        live_every: seconds between redraws of the live line.
        live_window: seconds over which the live line's fps are measured.
        stdout, stderr: the streams (for tests).
    """

    def __init__(
        self,
        total_steps: int,
        enabled: bool = True,
        start: int = 0,
        every: float = 30.0,
        live_every: float = 2.0,
        live_window: float = 20.0,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        name: str = "",
    ) -> None:
        stdout = stdout or sys.stdout
        stderr = stderr or sys.stderr
        self.total = total_steps
        self.name = name
        self.live = next((s for s in (stderr, stdout) if _tty(s)), None) if enabled else None
        self.plain = stdout if enabled and not _tty(stdout) else None
        self.every, self.live_every = float(every), float(live_every)
        self.live_window = float(live_window)
        now = time.perf_counter()
        self.origin = (now, start)
        # per kind, the (time, step, replayed) points its fps are measured from, oldest first
        self.windows: dict[str, collections.deque[tuple[float, int, float | None]]] = {
            "live": collections.deque([(now, start, None)]),
            "plain": collections.deque([(now, start, None)]),
        }
        self.last_live = -math.inf
        self.last_plain = now
        self.values: dict[str, float] = {}
        self.first_replayed: float | None = None
        self.shown = False
        if self.plain is not None:
            resumed = f" (resuming at {start:,})" if start else ""
            self._write_plain(f"started{resumed}: {start:,}/{total_steps:,} env steps")

    @property
    def enabled(self) -> bool:
        return self.live is not None or self.plain is not None

    def tick(self, step: int, replayed: float = 0.0, force: bool = False, **values: float) -> None:
        """Called as often as the loop likes; draws when a line is due.

        Args:
            step: env steps so far (of the whole run).
            replayed: replayed (trained-on) steps so far: updates * B * T.
            force: draw both kinds now.
            **values: shown by name, e.g. ``ratio``, ``updates``, ``ret``, ``eval``; NaN ones
                are left out; a value once given is kept until it changes.
        """
        if not self.enabled:
            return
        self.values.update(values)
        if self.first_replayed is None:
            self.first_replayed = replayed
        now = time.perf_counter()
        if self.live is not None and (force or now - self.last_live >= self.live_every):
            self.last_live = now
            text = self._text("live", now, step, replayed)
            self.live.write(f"\r{text}\x1b[K")
            self.live.flush()
            self.shown = True
        if self.plain is not None and (force or now - self.last_plain >= self.every):
            self.last_plain = now
            self._write_plain(self._text("plain", now, step, replayed))

    def _text(self, kind: str, now: float, step: int, replayed: float) -> str:
        points = self.windows[kind]
        if kind == "live":  # the base: the newest point at least live_window old
            while len(points) > 1 and points[1][0] <= now - self.live_window:
                points.popleft()
        then, step0, replayed0 = points[0]
        if kind == "plain":  # since the previous plain line
            points.clear()
        points.append((now, step, replayed))
        if replayed0 is None:  # the first line: count from this invocation's first tick
            replayed0 = self.first_replayed if self.first_replayed is not None else replayed
        seconds = max(now - then, 1e-9)
        env_fps = (step - step0) / seconds
        train_fps = (replayed - replayed0) / seconds
        elapsed = now - self.origin[0]
        run_fps = (step - self.origin[1]) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - step) / run_fps if run_fps > 0 else math.nan
        percent = 100.0 * step / self.total if self.total else 0.0
        parts = [
            f"{step:,}/{self.total:,} steps ({percent:.0f}%)",
            f"env {env_fps:,.0f} fps",
            f"train {train_fps:,.0f} fps",
        ]
        for key, value in self.values.items():
            if value == value:  # not NaN
                shown = f"{value:,.0f}" if key == "updates" else f"{value:.3g}"
                parts.append(f"{key} {shown}")
        parts.append(f"ETA {_duration(eta)}" if step < self.total else "done")
        return "  ".join(parts)

    def _write_plain(self, text: str) -> None:
        assert self.plain is not None
        stamp = time.strftime("%H:%M:%S")
        name = f" {self.name}" if self.name else ""
        self.plain.write(f"[{stamp}]{name} {text}\n")
        self.plain.flush()

    def close(self) -> None:
        if self.live is not None and self.shown:
            self.live.write("\n")
            self.live.flush()
        self.live = self.plain = None


class TensorBoardSink:
    """Scalars as TensorBoard event files in ``<run_dir>/tb`` (``tensorboard --logdir runs``).

    Written synchronously (TFRecord-framed ``Event`` protos, flushed with every record), not
    through ``SummaryWriter``: its writer thread turns a full disk into a traceback on stderr
    that no caller can catch. Here the ``OSError`` reaches the loop, which stops with a
    one-line error, as for the JSONL file.
    """

    def __init__(self, directory: str | Path) -> None:
        from tensorboard.compat.proto import event_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter

        self._event = event_pb2.Event
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}"
        self._file = open(directory / f"{name}.wm_ray", "ab")  # noqa: SIM115 (closed by close)
        self._records = RecordWriter(self._file)
        self._put(self._event(wall_time=time.time(), file_version="brain.Event:2"))

    def _put(self, event: Any) -> None:
        self._records.write(event.SerializeToString())
        self._records.flush()

    def write(self, record: dict[str, Any]) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        values = [
            Summary.Value(tag=key, simple_value=float(value))
            for key, value in record.items()
            if key != "step" and isinstance(value, (int, float)) and math.isfinite(value)
        ]
        event = self._event(wall_time=time.time(), step=int(record["step"]))
        event.summary.value.extend(values)
        self._put(event)

    def close(self) -> None:
        self._file.close()


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
