"""DIAMOND speed: imagination throughput (eager vs compiled denoiser, same run) and the update.

    python benchmarks/diamond_bench.py [--sizes debug paper] [--batch 32] [--horizon 15]
        [--modes eager compiled] [--repeats 3] [--quick]

Imagination: ``B`` dreams of ``H`` steps from random 64x64 context frames with uniformly random
actions (``wm_ray.models.diamond.imagination.DiffusionDream``): each step samples the next
frame with the schedule (EDM: 3 denoiser calls) and steps the reward / termination model.
``compiled`` wraps the denoiser in ``torch.compile`` (fixed shapes); both modes draw the same
start noise, and ``max_diff`` is the largest difference of their frames (float rounding, then
the uint8 levels). Reported: imagined frames/s (``B x H / seconds``), medians over
``--repeats`` rollouts after a warm-up rollout (which compiles). The update: one
``DiamondAgent.train`` of all three parts on a random ``B x T`` batch at the preset's own
sizes (``debug`` = ``diamond diamond_debug``: B4 x T8; ``paper`` = ``diamond``: B32 x T19).
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
from wm_ray.models.common.testing import fake_batch
from wm_ray.models.diamond.imagination import DiffusionDream

SIZE, ACTIONS = 64, 6


def agent_for(size: str, device: str) -> Any:
    presets = ["diamond"] + (["diamond_debug"] if size == "debug" else [])
    config = build_config(presets, [f"run.device={device}"])
    obs = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8)})
    return create_model("diamond", obs, gym.spaces.Discrete(ACTIONS), config), config


def rollout(agent: Any, net: Any, batch: int, horizon: int, seed: int) -> dict[str, Any]:
    device = agent.device
    gen = torch.Generator(device).manual_seed(seed)
    k = agent.cfg.diffusion.context
    frames = torch.rand((batch, k, 3, SIZE, SIZE), generator=gen, device=device) * 2 - 1
    acts = torch.randint(0, ACTIONS, (horizon + k, batch), generator=gen, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    state = agent.reward_end.initial(batch, device)
    sync()
    tick = time.perf_counter()
    dream = DiffusionDream(
        net, agent.schedule, agent.reward_end, frames, acts[: k - 1].T, state, gen
    )
    out = [dream.step(acts[k + t]).obs for t in range(horizon)]
    sync()
    return {"seconds": time.perf_counter() - tick, "frames": torch.stack(out)}


def bench(
    size: str, batch: int, horizon: int, repeats: int, device: str, modes: list[str]
) -> dict[str, Any]:
    torch.manual_seed(0)
    agent, config = agent_for(size, device)
    agent.nets.eval()
    nets = {"eager": agent.denoiser}
    if "compiled" in modes:
        nets["compiled"] = torch.compile(agent.denoiser, dynamic=False)
    per_mode: dict[str, Any] = {}
    first: dict[str, torch.Tensor] = {}
    for mode in modes:
        warm = rollout(agent, nets[mode], batch, 2, 0)["seconds"]
        runs = [rollout(agent, nets[mode], batch, horizon, s) for s in range(repeats)]
        seconds = median([r["seconds"] for r in runs])
        first[mode] = runs[0]["frames"]
        per_mode[mode] = {"seconds": seconds, "frames_per_s": batch * horizon / seconds,
                          "warmup_s": warm}  # fmt: skip
    if "eager" in first and "compiled" in first:
        diff = (first["eager"] - first["compiled"]).abs().max()
        per_mode["compiled"]["max_diff"] = float(diff)
        per_mode["compiled"]["speedup_vs_eager"] = (
            per_mode["eager"]["seconds"] / per_mode["compiled"]["seconds"]
        )
    b, t = config.replay.batch_size, config.replay.seq_len
    data = fake_batch(agent.obs_space, agent.act_space, b, t)
    agent.train(data, None)  # warm-up
    ticks = []
    for _ in range(repeats):
        tick = time.perf_counter()
        _, metrics = agent.train(data, None)
        ticks.append(time.perf_counter() - tick)
    parts = {k: v for k, v in metrics.items() if k.startswith("time/")}
    return {"size": size, "params": agent.param_counts(), "batch": batch, "horizon": horizon,
            "imagination": per_mode, "update": {"batch": [b, t], "seconds": median(ticks),
                                                **parts}}  # fmt: skip


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    gpu = torch.cuda.is_available()
    p.add_argument("--sizes", nargs="+", default=["debug", "paper"], choices=["debug", "paper"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--horizon", type=int, default=15)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if gpu else "cpu")
    p.add_argument("--modes", nargs="+", default=["eager", "compiled"],
                   choices=["eager", "compiled"])  # fmt: skip
    p.add_argument("--quick", action="store_true", help="debug size, batch 4, horizon 3, eager")
    p.add_argument("--out", type=Path, default=None)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.quick:
        args.sizes, args.batch, args.horizon, args.repeats, args.modes = (
            ["debug"], 4, 3, 1, ["eager"],
        )  # fmt: skip
    rows = []
    for size in args.sizes:
        row = bench(size, args.batch, args.horizon, args.repeats, args.device, args.modes)
        rows.append(row)
        line = f"{size:6s} {row['params']['total']:>10,} params  B{args.batch} H{args.horizon}:"
        for mode, m in row["imagination"].items():
            line += f"\n    imagination {mode:8s} {m['frames_per_s']:>9,.1f} frames/s"
            if "speedup_vs_eager" in m:
                line += f" ({m['speedup_vs_eager']:.2f}x eager, max diff {m['max_diff']:.3g})"
        u = row["update"]
        line += f"\n    update B{u['batch'][0]}xT{u['batch'][1]}: {u['seconds'] * 1e3:,.0f} ms"
        print(line, flush=True)
    setup = {"device": args.device, "image": SIZE, "actions": ACTIONS}
    print(f"wrote {write_result('diamond', {'setup': setup, 'results': rows}, args.out)}")


if __name__ == "__main__":
    main()
