"""Replay throughput: insert steps/s (memory and persisted) and sample time vs a numpy gather.

Usage::

    python benchmarks/replay_bench.py [--out benchmarks/results/<machine-tag>/replay.json]
                                      [--repeats 5] [--dir /path/for/persisted/chunks]

Steps are 64x64x3 uint8 images plus action, reward and flags, inserted in chunks of 64. Sampling
draws B16 x T64 batches; the baseline gathers the same number of bytes (B*T rows of one step's
bytes, as B runs of T consecutive rows) from a preallocated array with ``np.take``. All figures are
medians over repeats; the JSON also holds every repeat and the machine description.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result
from wm_ray.config import ReplayConfig
from wm_ray.replay import Replay

CHUNK, SIDE, BATCH, SEQ, STREAMS = 64, 64, 16, 64, 16


def make_chunks(count: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Distinct chunks ``(64, ...)`` reused round-robin by the insert loops."""
    rng = np.random.default_rng(seed)
    return [
        {
            "image": rng.integers(0, 256, (CHUNK, SIDE, SIDE, 3), dtype=np.uint8),
            "action": rng.integers(0, 6, CHUNK),
            "reward": rng.normal(size=CHUNK).astype(np.float32),
            "is_first": np.arange(CHUNK) == 0,
            "is_last": np.zeros(CHUNK, bool),
            "is_terminal": np.zeros(CHUNK, bool),
        }
        for _ in range(count)
    ]


def config(capacity: int) -> ReplayConfig:
    return ReplayConfig(
        capacity=capacity,
        ram_budget="4GiB",
        chunk_len=CHUNK,
        batch_size=BATCH,
        seq_len=SEQ,
        min_size=0,
        samples_per_insert=0.0,
    )


def insert_rate(chunks: list[dict[str, np.ndarray]], n: int, directory: Path | None) -> float:
    """Steps/s inserting ``n`` chunks into a replay holding at most 8192 steps (with eviction)."""
    replay = Replay(config(8192), directory)
    start = time.perf_counter()
    for k in range(n):
        replay.add_chunk(f"s{k % STREAMS}", k // STREAMS, chunks[k % len(chunks)])
    return n * CHUNK / (time.perf_counter() - start)


def per_call(fn: Callable[[], object], calls: int) -> float:
    """Mean seconds per call of ``fn`` over ``calls`` calls (after one warm-up call)."""
    fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def sample_phase(chunks: list[dict[str, np.ndarray]], repeats: int, raw: dict) -> float:
    """Time ``Replay.sample`` and the numpy gather of the same bytes; returns bytes per step."""
    filled = Replay(config(16_384), seed=0)
    for k in range(16_384 // CHUNK):
        filled.add_chunk(f"s{k % STREAMS}", k // STREAMS, chunks[k % len(chunks)])
    step_bytes = filled.stats()["bytes"] / len(filled)
    rows = 16_384
    source = np.random.default_rng(1).integers(0, 256, (rows, int(step_bytes)), dtype=np.uint8)
    target = np.empty((BATCH * SEQ, int(step_bytes)), np.uint8)
    rng = np.random.default_rng(2)

    def numpy_take(out: np.ndarray | None = None) -> np.ndarray:
        starts = rng.integers(0, rows - SEQ, BATCH)
        index = (starts[:, None] + np.arange(SEQ)).reshape(-1)
        return np.take(source, index, axis=0, out=out, mode="clip")

    for _ in range(repeats):
        raw["sample"].append(per_call(filled.sample, 30))
        raw["take"].append(per_call(numpy_take, 30))
        raw["take_out"].append(per_call(lambda: numpy_take(target), 30))
    return step_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="where persisted chunks go")
    args = parser.parse_args()
    chunks = make_chunks(8)
    raw: dict[str, list[float]] = {k: [] for k in ("mem", "disk", "sample", "take", "take_out")}

    step_bytes = sample_phase(chunks, args.repeats, raw)
    batch_bytes = BATCH * SEQ * step_bytes
    for _ in range(args.repeats):
        raw["mem"].append(insert_rate(chunks, 512, None))
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            raw["disk"].append(insert_rate(chunks, 128, Path(tmp)))

    med = {key: statistics.median(values) for key, values in raw.items()}
    result = {
        "insert_steps_per_s_memory": med["mem"],
        "insert_steps_per_s_persisted": med["disk"],
        "sample_ms": med["sample"] * 1e3,
        "numpy_copy_ms": med["take"] * 1e3,
        "numpy_copy_preallocated_ms": med["take_out"] * 1e3,
        "sample_over_numpy_copy": med["sample"] / med["take"],
        "sample_gb_per_s": batch_bytes / med["sample"] / 1e9,
        "setup": {
            "step": f"{SIDE}x{SIDE}x3 uint8 image + action, reward, flags",
            "step_bytes": step_bytes,
            "chunk_len": CHUNK,
            "batch": [BATCH, SEQ],
            "batch_bytes": batch_bytes,
            "repeats": args.repeats,
            "persist_dir": str(args.dir or tempfile.gettempdir()),
        },
        "repeats_raw": raw,
    }
    out = write_result("replay", result, args.out)
    for key, value in result.items():
        if isinstance(value, float):
            print(f"{key:>30}: {value:,.3f}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
