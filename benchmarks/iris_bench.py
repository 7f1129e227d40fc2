"""IRIS imagination speed: the KV-cached steps (eager, compiled, captured) vs recomputing the
context for every token.

    python benchmarks/iris_bench.py [--sizes debug paper] [--batch 64] [--horizon 20]
        [--modes eager compiled captured] [--quick]

One imagined rollout = the start frame's K tokens, then per step an action token and K sampled
frame tokens, each a transformer step (``wm_ray.models.iris.imagination.Dream.frame``): the
world model alone, with uniformly random actions (the actor-critic and the decoder cost the same
in every variant). The cached steps run on a ``Stepper`` in each of ``--modes``: ``eager``,
``compiled`` (the one-token step under ``torch.compile``) and ``captured`` (each imagined frame
one CUDA-graph replay; GPU only, skipped on a CPU). The baseline, measured in the same run on
the same weights and seeds, is the full recomputation of the history under the same
sliding-window mask for every token; all sample the same tokens (``same_samples``). Reported:
tokens/s of each, ``speedup`` = full / cached eager, and each mode's speedup over cached eager,
medians over ``--repeats`` rollouts after a warm-up rollout (which compiles and captures).
Batch 64, horizon 20 (the paper's imagination); on a CPU the paper size runs at batch 8 with one
full-recomputation rollout, which alone takes minutes there.
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
from wm_ray.models.iris.imagination import Dream, Stepper
from wm_ray.models.iris.transformer import WorldModel

SIZES = {
    "debug": WorldModelConfig(layers=2, heads=2, embed_dim=64, dropout=0.0, context=20),
    "paper": WorldModelConfig(dropout=0.0),  # 10 layers, 4 heads, 256 wide, 20-frame context
}
VOCAB, TOKENS, ACTIONS = 512, 16, 6


def rollout(
    wm: WorldModel, batch: int, horizon: int, stepper: Stepper | None, seed: int
) -> dict[str, Any]:
    """One timed rollout: cached through ``stepper``, or full recomputation when None."""
    gen = torch.Generator(next(wm.parameters()).device).manual_seed(seed)
    device = next(wm.parameters()).device
    start = torch.randint(0, VOCAB, (batch, TOKENS), generator=gen, device=device)
    actions = torch.randint(0, ACTIONS, (horizon, batch), generator=gen, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    tick = time.perf_counter()
    dream = Dream(wm, batch, cached=stepper is not None, stepper=stepper)
    dream.observe(start)
    frames = [dream.frame(actions[t], 1.0, gen)[0] for t in range(horizon)]
    sync()
    seconds = time.perf_counter() - tick
    return {"seconds": seconds, "tokens": dream.tokens_fed * batch, "frames": torch.stack(frames)}


def bench(
    size: str, batch: int, horizon: int, repeats: int, device: str, modes: list[str]
) -> dict[str, Any]:
    torch.manual_seed(0)
    wm = WorldModel(SIZES[size], VOCAB, TOKENS, ACTIONS).to(device).eval()
    runs: dict[str, list[dict[str, Any]]] = {}
    warmup: dict[str, float] = {}
    for mode in modes:
        if mode == "captured" and not device.startswith("cuda"):
            continue
        stepper = Stepper(wm, batch, mode)  # type: ignore[arg-type]
        warmup[mode] = rollout(wm, batch, 2, stepper, 0)["seconds"]  # compiles, captures
        runs[mode] = [rollout(wm, batch, horizon, stepper, seed) for seed in range(repeats)]
    full_repeats = 1 if (size == "paper" and device == "cpu") else repeats
    full = [rollout(wm, batch, horizon, None, seed) for seed in range(full_repeats)]
    tokens = full[0]["tokens"]
    full_s = median([r["seconds"] for r in full])
    eager_s = median([r["seconds"] for r in runs["eager"]]) if "eager" in runs else None
    per_mode = {}
    for mode, results in runs.items():
        seconds = median([r["seconds"] for r in results])
        per_mode[mode] = {
            "seconds": seconds,
            "tokens_per_s": tokens / seconds,
            "speedup_vs_full": full_s / seconds,
            "speedup_vs_eager": eager_s / seconds if eager_s else None,
            "warmup_s": warmup[mode],
            "same_samples": bool(torch.equal(results[0]["frames"], full[0]["frames"])),
        }
    return {
        "size": size,
        "params": sum(p.numel() for p in wm.parameters()),
        "batch": batch,
        "horizon": horizon,
        "tokens_per_rollout": tokens,
        "full_s": full_s,
        "full_tokens_per_s": tokens / full_s,
        "modes": per_mode,
        **(
            {
                "cached_s": eager_s,
                "cached_tokens_per_s": tokens / eager_s,
                "speedup": full_s / eager_s,
                "same_samples": per_mode["eager"]["same_samples"],
            }
            if eager_s
            else {}
        ),
        "repeats": {"cached": repeats, "full": full_repeats},
    }


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    gpu = torch.cuda.is_available()
    parser.add_argument("--sizes", nargs="+", default=["debug", "paper"], choices=list(SIZES))
    parser.add_argument("--batch", type=int, default=None, help="default 64 (paper size on CPU: 8)")
    parser.add_argument("--horizon", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if gpu else "cpu")
    parser.add_argument("--modes", nargs="+", default=["eager", "compiled", "captured"],
                        choices=["eager", "compiled", "captured"])  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="debug size, batch 8, horizon 4")
    parser.add_argument("--out", type=Path, default=None)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.quick:
        args.sizes, args.batch, args.horizon, args.repeats = ["debug"], 8, 4, 1
        args.modes = ["eager"]
    rows = []
    for size in args.sizes:
        batch = args.batch or (8 if size == "paper" and args.device == "cpu" else 64)
        row = bench(size, batch, args.horizon, args.repeats, args.device, args.modes)
        rows.append(row)
        line = (
            f"{size:6s} {row['params']:>10,} params  B{row['batch']} H{row['horizon']}: full "
            f"recomputation {row['full_tokens_per_s']:>8,.0f} tokens/s"
        )
        for mode, m in row["modes"].items():
            line += (
                f"\n    cached {mode:8s} {m['tokens_per_s']:>10,.0f} tokens/s, "
                f"{m['speedup_vs_full']:.1f}x full, {m['speedup_vs_eager']:.2f}x cached eager "
                f"(warm-up {m['warmup_s']:.1f} s; same samples: {m['same_samples']})"
            )
        print(line, flush=True)
    setup = {"device": args.device, "vocab": VOCAB, "tokens_per_frame": TOKENS}
    path = write_result("iris_imagination", {"setup": setup, "results": rows}, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
