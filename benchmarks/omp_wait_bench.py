"""How the learner's OpenMP threads wait (``resources.omp_wait``): spinning vs passive, alone and
next to a busy process.

    python benchmarks/omp_wait_bench.py [--rounds 2] [--updates 6]

The ``make run`` configuration's Dreamer update (learner bench size ``default``, 2 torch threads)
is timed in a fresh process per measurement, because OpenMP reads ``OMP_WAIT_POLICY`` once at
start: ``spin`` (the variable unset: OpenMP's default) and ``passive`` (``PASSIVE``), each alone
and next to a process that keeps one core busy. The four measurements run in rotation, ``rounds``
times, so a change of the machine's load hits all alike. Written: ``omp_wait.json`` in the
machine's results folder, with the median update per case and the ratios passive / spin.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import median, write_result

CASES = [(wait, busy) for busy in (False, True) for wait in ("spin", "passive")]
BUSY_LOOP = "while True:\n    pass\n"


def child(updates: int) -> None:
    """Time ``updates`` updates after one warm-up; print the seconds as JSON."""
    import time

    import numpy as np
    import torch

    from benchmarks.learner_bench import dreamer_config, fake_batch, spaces
    from wm_ray.factory import create_model

    torch.set_num_threads(2)
    config = dreamer_config("default", "cpu", [])
    agent = create_model("dreamer", *spaces("vector"), config)
    batch = fake_batch(
        "vector", np.random.default_rng(0), config.replay.batch_size, config.replay.seq_len
    )
    agent.train(batch, None)
    seconds = []
    for _ in range(updates):
        start = time.perf_counter()
        agent.train(batch, None)
        seconds.append(time.perf_counter() - start)
    print(json.dumps(seconds))


def measure(wait: str, busy: bool, updates: int) -> list[float]:
    """One fresh process's update seconds for ``wait`` (next to a busy process if ``busy``)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if wait == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    neighbour = subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) if busy else None
    try:
        out = subprocess.run(
            [sys.executable, __file__, "--child", "--updates", str(updates)],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
    return [float(x) for x in json.loads(out.strip().splitlines()[-1])]


def bench(rounds: int, updates: int) -> dict[str, Any]:
    times: dict[tuple[str, bool], list[float]] = {case: [] for case in CASES}
    for _ in range(rounds):
        for wait, busy in CASES:
            times[(wait, busy)] += measure(wait, busy, updates)
            print(f"[{wait}, busy={busy}] {median(times[(wait, busy)]) * 1e3:.0f} ms", flush=True)
    rows = [
        {"omp_wait": wait, "busy_neighbour": busy, "update_s": median(t), "all_s": t}
        for (wait, busy), t in times.items()
    ]
    ratio = {
        f"passive_over_spin_{'busy' if busy else 'alone'}": median(times[("passive", busy)])
        / median(times[("spin", busy)])
        for busy in (False, True)
    }
    return {"config": "learner bench size default, 2 torch threads", "rows": rows, **ratio}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=2, help="rotations of the four cases")
    p.add_argument("--updates", type=int, default=6, help="timed updates per measurement")
    p.add_argument("--out", type=Path, default=None, help="JSON path")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.updates < 1 or args.rounds < 1:
        p.error(f"--rounds and --updates must be >= 1, got {args.rounds} and {args.updates}")
    if args.child:
        child(args.updates)
        return
    result = bench(args.rounds, args.updates)
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))
    print("written:", write_result("omp_wait", result, args.out))


if __name__ == "__main__":
    main()
