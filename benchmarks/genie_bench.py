"""Genie speed: MaskGIT generation (tokens/s) against its own model-call floor, and the update.

    python benchmarks/genie_bench.py [--sizes debug small paper] [--batch 8] [--frames 4]
        [--repeats 3] [--quick]

Generation: ``B`` dreams of ``--frames`` new frames from one real-sized context frame with
uniformly random latent actions (``wm_ray.models.genie.dynamics.generate``, the config's
MaskGIT steps, temperature and schedule; ``debug`` = ``genie genie_debug``, ``small`` =
``genie genie_small``, ``paper`` = ``genie``; 64x64x3 frames). Reported: generated tokens/s
(``B x frames x N / seconds``) and the floor measured in the same run: the same number of
dynamics forward passes at the same shapes back to back, with no sampling. ``overhead`` =
generation / floor: what the sampler (softmax, multinomial draws, sorting, re-masking) adds to
the model calls; there is no key/value cache yet, so every step re-runs the whole context.
The update: one ``GenieAgent.train`` with all three parts training on a random batch at the
preset's own batch and clip length. Medians over ``--repeats`` after a warm-up.
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
from wm_ray.models.genie.dynamics import generate

SIZE, ACTIONS = 64, 6
PRESETS = {"debug": ["genie", "genie_debug"], "small": ["genie", "genie_small"], "paper": ["genie"]}
ALL_PARTS = ["genie.start.dynamics=0", "genie.start.freeze_tokenizer=false"]


def agent_for(size: str, device: str) -> Any:
    config = build_config(PRESETS[size], [f"run.device={device}", *ALL_PARTS])
    obs = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8)})
    return create_model("genie", obs, gym.spaces.Discrete(ACTIONS), config)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def generation(agent: Any, batch: int, frames: int, seed: int) -> float:
    """Seconds to generate ``frames`` frames for ``batch`` dreams from one context frame."""
    dyn, device = agent.dynamics, agent.device
    gen = torch.Generator(device).manual_seed(seed)
    context = torch.randint(0, dyn.vocab, (batch, 1, dyn.tokens), generator=gen, device=device)
    acts = torch.randint(0, dyn.actions, (batch, frames), generator=gen, device=device)
    _sync(device)
    tick = time.perf_counter()
    generate(dyn, context, acts, frames, generator=gen)
    _sync(device)
    return time.perf_counter() - tick


@torch.no_grad()
def floor(agent: Any, batch: int, frames: int) -> float:
    """Seconds of the forward passes generation makes (steps per frame, each over the context
    the frame sees), with nothing else."""
    dyn, device, steps = agent.dynamics, agent.device, agent.cfg.dynamics.steps
    _sync(device)
    tick = time.perf_counter()
    for f in range(frames):
        t = min(f + 2, dyn.max_frames)  # the context frames and the frame being decoded
        tokens = torch.zeros(batch, t, dyn.tokens, dtype=torch.long, device=device)
        acts = torch.zeros(batch, t - 1, dtype=torch.long, device=device)
        for _ in range(steps):
            dyn(tokens, acts)
    _sync(device)
    return time.perf_counter() - tick


def bench(size: str, batch: int, frames: int, repeats: int, device: str) -> dict[str, Any]:
    torch.manual_seed(0)
    agent = agent_for(size, device)
    agent.nets.eval()
    generation(agent, batch, 1, 0)  # warm-up
    gen_s = median([generation(agent, batch, frames, s) for s in range(repeats)])
    floor_s = median([floor(agent, batch, frames) for _ in range(repeats)])
    tokens = batch * frames * agent.dynamics.tokens
    config = agent.config
    b, t = config.replay.batch_size, config.replay.seq_len
    data = fake_batch(agent.obs_space, agent.act_space, b, t)
    data["is_first"][:] = False
    agent.train(data, None)  # warm-up
    ticks = []
    for _ in range(repeats):
        tick = time.perf_counter()
        _, metrics = agent.train(data, None)
        ticks.append(time.perf_counter() - tick)
    parts = {k: v for k, v in metrics.items() if k.startswith("time/")}
    return {
        "size": size, "presets": PRESETS[size], "params": agent.param_counts(),
        "steps": agent.cfg.dynamics.steps, "tokens_per_frame": agent.dynamics.tokens,
        "generation": {"batch": batch, "frames": frames, "seconds": gen_s,
                       "tokens_per_s": tokens / gen_s, "floor_s": floor_s,
                       "overhead": gen_s / floor_s},
        "update": {"batch": [b, t], "seconds": median(ticks), **parts},
    }  # fmt: skip


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    gpu = torch.cuda.is_available()
    p.add_argument("--sizes", nargs="+", default=["debug", "small"] + (["paper"] if gpu else []),
                   choices=list(PRESETS))  # fmt: skip
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if gpu else "cpu")
    p.add_argument("--quick", action="store_true", help="debug size, batch 2, 2 frames, 1 repeat")
    p.add_argument("--out", type=Path, default=None)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.quick:
        args.sizes, args.batch, args.frames, args.repeats = ["debug"], 2, 2, 1
    rows = []
    for size in args.sizes:
        row = bench(size, args.batch, args.frames, args.repeats, args.device)
        rows.append(row)
        g, u = row["generation"], row["update"]
        print(
            f"{size:6s} {row['params']['total']:>11,} params  MaskGIT {row['steps']} steps x "
            f"{row['tokens_per_frame']} tokens, B{g['batch']} x {g['frames']} frames: "
            f"{g['tokens_per_s']:,.0f} tokens/s ({g['overhead']:.2f}x the model-call floor); "
            f"update B{u['batch'][0]}xT{u['batch'][1]}: {u['seconds'] * 1e3:,.0f} ms",
            flush=True,
        )
    setup = {"device": args.device, "image": SIZE, "actions": ACTIONS}
    print(f"wrote {write_result('genie', {'setup': setup, 'results': rows}, args.out)}")


if __name__ == "__main__":
    main()
