"""CEM planning latency per vector step: one batched planner call for all envs vs a loop over
the envs, on the same PlaNet model, measured in the same run.

    python benchmarks/cem_bench.py [--envs 16] [--candidates 1000] [--horizon 12]
        [--iterations 8] [--top-k 100] [--presets planet_dmc] [--repeats 3] [--threads N]

The planner is ``wm_ray.models.rssm.planning.cem_plan`` through ``PlanetAgent.plan`` (the RSSM's
prior steps and the reward head): the batched call plans ``N * J`` trajectories as one tensor
program; the baseline calls it once per env (``J`` trajectories each), as a per-env policy
would. The model sizes come from the presets (``planet_dmc``: the paper's RSSM 200 + 30), the
planner sizes from the flags (default: the paper's, 16 envs). Reported: milliseconds per vector
step of each (medians over ``--repeats``) and ``speedup`` = loop / batched; the results go to
``benchmarks/results/<machine>/cem.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import median, write_result
from wm_ray.config_io import build_config
from wm_ray.factory import create_model
from wm_ray.models.common.device import synchronize


def _timed(fn: Any, device: torch.device, repeats: int) -> list[float]:
    fn()  # warm-up
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, default=16)
    parser.add_argument("--candidates", type=int, default=1000)
    parser.add_argument("--horizon", type=int, default=12)
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--top-k", type=int, default=100)
    parser.add_argument("--presets", nargs="+", default=["planet_dmc"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = [
        f"run.device={args.device}",
        f"planet.cem.candidates={args.candidates}",
        f"planet.cem.horizon={args.horizon}",
        f"planet.cem.iterations={args.iterations}",
        f"planet.cem.top_k={args.top_k}",
    ]
    config = build_config(args.presets, overrides)
    obs_space = gym.spaces.Dict({"vector": gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)})
    act_space = gym.spaces.Box(-1.0, 1.0, (6,), np.float32)  # cheetah's 6 actions
    agent = create_model("planet", obs_space, act_space, config, acting=True)
    n = args.envs
    with torch.no_grad():
        state = agent.wm.rssm.initial(n)
        state = state.map(lambda x: x + 0.1 * torch.randn_like(x))
        singles = [state.map(lambda x, i=i: x[i : i + 1]) for i in range(n)]

        def batched() -> None:
            agent.plan(state)

        def looped() -> None:
            for one in singles:
                agent.plan(one)

        t_batched = _timed(batched, agent.device, args.repeats)
        t_looped = _timed(looped, agent.device, args.repeats)
    cem = config.planet.cem
    result = {
        "envs": n,
        "candidates": cem.candidates,
        "horizon": cem.horizon,
        "iterations": cem.iterations,
        "top_k": cem.top_k,
        "presets": args.presets,
        "rssm": {"deter": config.planet.rssm.deter, "stoch": config.planet.rssm.stoch},
        "device": str(agent.device),
        "batched_ms": 1000 * median(t_batched),
        "looped_ms": 1000 * median(t_looped),
        "speedup": median(t_looped) / median(t_batched),
        "repeats": args.repeats,
    }
    path = write_result("cem", result, args.out)
    print(
        f"CEM {n} envs x {cem.candidates} x {cem.horizon} x {cem.iterations} on {agent.device}: "
        f"batched {result['batched_ms']:.0f} ms, per-env loop {result['looped_ms']:.0f} ms per "
        f"vector step (x{result['speedup']:.2f}); {path}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
