"""IRIS tokenizer on real Pong frames: held-out reconstruction and codebook use, grad vs EMA.

    python -m benchmarks.iris_tokenizer_bench [--quick] [--updates 100] [--batch 64]
        [--channels 16] [--vocab 512] [--embed-dim 64] [--lr 1e-3] [--threads 1]
        [--modes grad ema] [--out PATH]

Frames: ``ALE/Pong-v5`` through the repo's env factory (``make_vector_env``: 64 x 64 RGB,
frameskip 4, sticky actions), 4 envs with uniformly random actions. Training frames come from
seed 0, held-out frames from seed 1000 (other episodes). For each codebook mode a tokenizer
(same seed, so the same initial weights) is trained for ``--updates`` updates of ``--batch``
frames drawn uniformly from the training set, with the repo ``Optimizer`` (Adam, global-norm
clip); no perceptual loss (no VGG weights here). On the held-out frames it reports:

- ``l1`` / ``mse`` / ``psnr`` (dB, from the mean MSE) of ``encode_decode``, pixels in [0, 1];
- ``fg_mse``: MSE on "foreground" pixels only, those differing from the mean training frame by
  more than 0.1 in some channel (ball, paddles, scores: what the mean frame cannot predict);
- ``codes_used`` (distinct codes / vocab) and ``perplexity`` (exp entropy of the token
  histogram) over all held-out tokens;

and the same figures for two baselines measured in the same run: the mean training frame as
the prediction for every frame, and the untrained tokenizer. ``--quick`` shrinks everything
(a smoke test; its JSON / markdown go to the temp directory unless ``--out`` is given).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine_tag, median, write_result
from wm_ray import metrics as M
from wm_ray.config import EnvConfig
from wm_ray.envs import action_batch_sample
from wm_ray.loops.setup import make_vector_env
from wm_ray.models.common import Optimizer
from wm_ray.models.iris.config import TokenizerConfig
from wm_ray.models.iris.losses import TOKENIZER, tokenizer_loss
from wm_ray.models.iris.tokenizer import Tokenizer

ENV_ID = "ALE/Pong-v5"
NUM_ENVS = 4
FG_THRESHOLD = 0.1


def collect_frames(count: int, seed: int) -> torch.Tensor:
    """``count`` Pong frames ``(count, 64, 64, 3)`` uint8 under uniformly random actions."""
    venv = make_vector_env(EnvConfig(id=ENV_ID, num_envs=NUM_ENVS), seed=seed)
    rng = np.random.default_rng(seed)
    frames = [venv.reset()["image"]]
    while sum(len(f) for f in frames) < count:
        frames.append(venv.step(action_batch_sample(venv.act_space, NUM_ENVS, rng))["image"])
    venv.close()
    return torch.from_numpy(np.concatenate(frames)[:count])


def image_metrics(pred: torch.Tensor, target: torch.Tensor, fg: torch.Tensor) -> dict[str, float]:
    """L1, MSE, PSNR and foreground MSE of ``pred`` vs ``target`` ``(N, C, H, W)`` in [0, 1]."""
    err = pred - target
    mse = float(err.pow(2).mean())
    fg_err = err.pow(2).mean(dim=1)[fg]  # per pixel, over channels
    return {
        "l1": float(err.abs().mean()),
        "mse": mse,
        "psnr": 10 * math.log10(1.0 / max(mse, 1e-12)),
        "fg_mse": float(fg_err.mean()) if fg_err.numel() else float("nan"),
    }


def token_metrics(tokens: torch.Tensor, vocab: int) -> dict[str, float]:
    counts = torch.bincount(tokens.reshape(-1), minlength=vocab).double()
    probs = counts / counts.sum()
    entropy = float(-(probs[probs > 0] * probs[probs > 0].log()).sum())
    return {"codes_used": float((counts > 0).double().mean()), "perplexity": math.exp(entropy)}


@torch.no_grad()
def evaluate(tok: Tokenizer, frames: torch.Tensor, fg: torch.Tensor, chunk: int = 256) -> dict:
    """Reconstruction and token figures of ``tok`` on ``frames (N, C, H, W)``."""
    tok.eval()
    tokens = torch.cat([tok.tokenize(frames[i : i + chunk]) for i in range(0, len(frames), chunk)])
    recon = torch.cat([tok.decode(tokens[i : i + chunk]) for i in range(0, len(tokens), chunk)])
    tok.train()
    return {**image_metrics(recon.clamp(0, 1), frames, fg), **token_metrics(tokens, tok.vocab)}


def train_mode(
    mode: str, cfg: TokenizerConfig, train: torch.Tensor, held: torch.Tensor, fg: torch.Tensor,
    args: argparse.Namespace,
) -> dict[str, Any]:  # fmt: skip
    cfg = dataclasses.replace(cfg, codebook=mode)  # type: ignore[arg-type]
    torch.manual_seed(args.seed)
    tok = Tokenizer(cfg, image_size=train.shape[-1], channels=train.shape[1])
    untrained = evaluate(tok, held, fg)
    opt = Optimizer(tok.parameters(), lr=cfg.lr, clip=cfg.clip)
    gen = torch.Generator().manual_seed(args.seed + 1)
    times, curve, resets = [], [], 0.0
    log_every = max(1, args.updates // 6)
    for step in range(1, args.updates + 1):
        batch = train[torch.randint(0, len(train), (args.batch,), generator=gen)]
        start = time.perf_counter()
        loss, metrics = tokenizer_loss(tok, batch)
        opt.step(loss)
        times.append(time.perf_counter() - start)
        resets += float(metrics.get(M.diagnostic(TOKENIZER, "dead_reset"), 0.0))
        if step % log_every == 0 or step == args.updates:
            row = {"update": step, **{k.rsplit("/", 1)[1]: float(v) for k, v in metrics.items()}}
            curve.append(row)
            print(
                f"  {mode} {step:4d}: l1 {row['l1']:.4f} l2 {row['l2']:.5f} commit "
                f"{row['commitment']:.4f} usage {row['usage']:.3f} ppl {row['perplexity']:.1f} "
                f"({times[-1]:.2f} s/update)",
                flush=True,
            )
    trained = evaluate(tok, held, fg)
    return {
        "untrained": untrained,
        "trained": trained,
        "s_per_update": median(times),
        "train_s": sum(times),
        "dead_codes_reset": resets,
        "curve": curve,
        "params": sum(p.numel() for p in tok.parameters()),
    }


def markdown(result: dict[str, Any]) -> str:
    setup, base = result["setup"], result["mean_frame"]
    lines = [
        "# IRIS tokenizer on Pong frames (CPU)",
        "",
        f"`python -m benchmarks.iris_tokenizer_bench` on `{machine_tag()}` "
        f"({setup['threads']} torch thread(s)); JSON: `iris_tokenizer.json`. "
        f"{setup['train_frames']} training frames (seed 0) and {setup['held_out_frames']} "
        f"held-out frames (seed 1000) of {ENV_ID} under random actions, 64x64 RGB. Tokenizer: "
        f"channels {setup['channels']}, res_blocks {setup['res_blocks']}, attention at "
        f"{list(setup['attn_resolutions'])}, vocab {setup['vocab']}, embed_dim "
        f"{setup['embed_dim']}, {setup['tokens']} tokens/frame, L1 + L2 loss (no perceptual "
        f"term), beta {setup['beta']}, Adam lr {setup['lr']}, {setup['updates']} updates of "
        f"{setup['batch']} frames, dead-code check every {setup['dead_code_every']} updates.",
        "",
        "Held-out frames (`fg MSE`: pixels that differ from the mean training frame by > "
        f"{FG_THRESHOLD}, {100 * result['fg_fraction']:.2f}% of them):",
        "",
        "| prediction | L1 | MSE | PSNR dB | fg MSE | codes used | perplexity |",
        "|---|---|---|---|---|---|---|",
        f"| mean training frame | {base['l1']:.4f} | {base['mse']:.5f} | {base['psnr']:.1f} "
        f"| {base['fg_mse']:.4f} | - | - |",
    ]
    for mode, res in result["modes"].items():
        for name in ("untrained", "trained"):
            m = res[name]
            lines.append(
                f"| {mode}: {name} | {m['l1']:.4f} | {m['mse']:.5f} | {m['psnr']:.1f} | "
                f"{m['fg_mse']:.4f} | {m['codes_used']:.3f} | {m['perplexity']:.1f} |"
            )
    lines += ["", "| mode | params | s / update (median) | training s | codes reset |"]
    lines.append("|---|---|---|---|---|")
    for mode, res in result["modes"].items():
        lines.append(
            f"| {mode} | {res['params']:,} | {res['s_per_update']:.2f} | {res['train_s']:.0f} | "
            f"{res['dead_codes_reset']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--updates", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--train-frames", type=int, default=3072)
    parser.add_argument("--held-out-frames", type=int, default=1024)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--embed-dim", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--dead-code-every", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modes", nargs="+", default=["grad", "ema"])
    parser.add_argument("--out", type=Path, default=None, help="JSON path (markdown beside it)")
    args = parser.parse_args()
    if args.quick:
        args.updates, args.batch, args.train_frames, args.held_out_frames = 4, 16, 256, 128
        args.channels, args.vocab, args.dead_code_every = 8, 64, 2
        if args.out is None:
            args.out = Path(tempfile.gettempdir()) / "iris_tokenizer_quick.json"
    torch.set_num_threads(args.threads)
    wall = time.perf_counter()

    start = time.perf_counter()
    train = Tokenizer.preprocess(collect_frames(args.train_frames, seed=0))
    held = Tokenizer.preprocess(collect_frames(args.held_out_frames, seed=1000))
    collect_s = time.perf_counter() - start
    mean_frame = train.mean(0, keepdim=True)
    fg = ((held - mean_frame).abs() > FG_THRESHOLD).any(dim=1)  # (N, H, W)
    print(f"collected {len(train)} + {len(held)} frames in {collect_s:.1f} s", flush=True)
    baseline = image_metrics(mean_frame.expand_as(held), held, fg)

    cfg = TokenizerConfig(
        vocab=args.vocab,
        embed_dim=args.embed_dim,
        tokens=16,
        channels=args.channels,
        res_blocks=1,
        attn_resolutions=(8,),
        lr=args.lr,
        dead_code_every=args.dead_code_every,
        batch_frames=args.batch,
    )
    modes = {}
    for mode in args.modes:
        modes[mode] = train_mode(mode, cfg, train, held, fg, args)
        t = modes[mode]["trained"]
        print(
            f"{mode}: held-out MSE {t['mse']:.5f} (mean frame {baseline['mse']:.5f}, untrained "
            f"{modes[mode]['untrained']['mse']:.5f}), fg MSE {t['fg_mse']:.4f} (mean frame "
            f"{baseline['fg_mse']:.4f}), PSNR {t['psnr']:.1f} dB, codes used "
            f"{t['codes_used']:.3f}, perplexity {t['perplexity']:.1f}",
            flush=True,
        )
    setup = {
        **{k: v for k, v in dataclasses.asdict(cfg).items() if k != "codebook"},
        "env": ENV_ID,
        "updates": args.updates,
        "batch": args.batch,
        "train_frames": len(train),
        "held_out_frames": len(held),
        "threads": args.threads,
        "seed": args.seed,
        "quick": args.quick,
        "perceptual": "off (no VGG weights)",
    }
    result = {
        "setup": setup,
        "collect_s": collect_s,
        "fg_fraction": float(fg.float().mean()),
        "mean_frame": baseline,
        "modes": modes,
        "wall_s": time.perf_counter() - wall,
    }
    path = write_result("iris_tokenizer", result, args.out)
    md = path.with_suffix(".md")
    md.write_text(markdown(result))
    print(f"wrote {path} and {md} ({result['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
