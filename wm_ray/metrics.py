"""Metric sinks: ``<run_dir>/metrics.jsonl`` and a one-line terminal progress display.

Every JSONL line is one object with ``step`` (env steps) and ``time`` (seconds since the run
started) plus metric names such as ``episode/return``, ``fps/env``, ``replay/size``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO


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
    """A live status line: env steps, fps, latest return, ETA."""

    def __init__(self, total_steps: int, stream: TextIO = sys.stderr, enabled: bool = True) -> None:
        self.total = total_steps
        self.stream = stream
        self.enabled = enabled and stream.isatty()
        self.start = time.perf_counter()

    def update(self, step: int, **values: float) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        fps = step / elapsed if elapsed > 0 else 0.0
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
