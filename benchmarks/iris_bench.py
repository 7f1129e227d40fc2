"""IRIS imagination speed: KV-cached token sampling vs recomputing the context for every token.

    python benchmarks/iris_bench.py [--sizes debug paper] [--batch 64] [--horizon 20] [--quick]

One imagined rollout = the start frame's K tokens, then per step an action token and K sampled
frame tokens, each a transformer step (``wm_ray.models.iris.imagination.Dream``): the world
model alone, with uniformly random actions (the actor-critic and the decoder cost the same in
both variants). The baseline, measured in the same run on the same weights and seeds, is the
full recomputation of the history under the same sliding-window mask for every token; both
sample the same tokens. Reported: tokens/s of each and ``speedup`` = cached / full, medians
over ``--repeats`` rollouts. Batch 64, horizon 20 (the paper's imagination); on a CPU the paper
size runs at batch 8 with one full-recomputation rollout, which alone takes minutes there.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import median, write_result
from wm_ray.models.iris.config import WorldModelConfig
from wm_ray.models.iris.imagination import Dream
from wm_ray.models.iris.transformer import WorldModel

SIZES = {
    "debug": WorldModelConfig(layers=2, heads=2, embed_dim=64, dropout=0.0, context=20),
    "paper": WorldModelConfig(dropout=0.0),  # 10 layers, 4 heads, 256 wide, 20-frame context
}
VOCAB, TOKENS, ACTIONS = 512, 16, 6


def rollout(wm: WorldModel, batch: int, horizon: int, cached: bool, seed: int) -> dict[str, Any]:
    gen = torch.Generator(next(wm.parameters()).device).manual_seed(seed)
    device = next(wm.parameters()).device
    start = torch.randint(0, VOCAB, (batch, TOKENS), generator=gen, device=device)
    actions = torch.randint(0, ACTIONS, (horizon, batch), generator=gen, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    tick = time.perf_counter()
    dream = Dream(wm, batch, cached=cached)
    dream.observe(start)
    frames = []
    for t in range(horizon):
        dream.act(actions[t])
        frames.append(dream.generate(1.0, gen))
    sync()
    seconds = time.perf_counter() - tick
    return {"seconds": seconds, "tokens": dream.tokens_fed * batch, "frames": torch.stack(frames)}


def bench(size: str, batch: int, horizon: int, repeats: int, device: str) -> dict[str, Any]:
    torch.manual_seed(0)
    wm = WorldModel(SIZES[size], VOCAB, TOKENS, ACTIONS).to(device).eval()
    rollout(wm, min(batch, 4), 2, True, 0)  # warm-up
    cached = [rollout(wm, batch, horizon, True, seed) for seed in range(repeats)]
    full_repeats = 1 if (size == "paper" and device == "cpu") else repeats
    full = [rollout(wm, batch, horizon, False, seed) for seed in range(full_repeats)]
    same = bool(torch.equal(cached[0]["frames"], full[0]["frames"]))
    tokens = cached[0]["tokens"]
    cached_s = median([r["seconds"] for r in cached])
    full_s = median([r["seconds"] for r in full])
    return {
        "size": size,
        "params": sum(p.numel() for p in wm.parameters()),
        "batch": batch,
        "horizon": horizon,
        "tokens_per_rollout": tokens,
        "cached_s": cached_s,
        "full_s": full_s,
        "cached_tokens_per_s": tokens / cached_s,
        "full_tokens_per_s": tokens / full_s,
        "speedup": full_s / cached_s,
        "same_samples": same,
        "repeats": {"cached": repeats, "full": full_repeats},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    gpu = torch.cuda.is_available()
    parser.add_argument("--sizes", nargs="+", default=["debug", "paper"], choices=list(SIZES))
    parser.add_argument("--batch", type=int, default=None, help="default 64 (paper size on CPU: 8)")
    parser.add_argument("--horizon", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if gpu else "cpu")
    parser.add_argument("--quick", action="store_true", help="debug size, batch 8, horizon 4")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.batch, args.horizon, args.repeats = ["debug"], 8, 4, 1
    rows = []
    for size in args.sizes:
        batch = args.batch or (8 if size == "paper" and args.device == "cpu" else 64)
        row = bench(size, batch, args.horizon, args.repeats, args.device)
        rows.append(row)
        print(
            f"{size:6s} {row['params']:>10,} params  B{row['batch']} H{row['horizon']}: cached "
            f"{row['cached_tokens_per_s']:>10,.0f} tokens/s, full recomputation "
            f"{row['full_tokens_per_s']:>8,.0f} tokens/s, speedup {row['speedup']:.1f}x "
            f"(same samples: {row['same_samples']})",
            flush=True,
        )
    setup = {"device": args.device, "vocab": VOCAB, "tokens_per_frame": TOKENS}
    path = write_result("iris_imagination", {"setup": setup, "results": rows}, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
