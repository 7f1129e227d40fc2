"""Genie's parts on a toy video with known actions (CPU, minutes): the issue's two checks.

    python benchmarks/genie_toy.py [--lam-steps 1000] [--seeds 0 1] [--ci] [--no-blind]

The video (``Toy.scene``): ``scroll`` (the default), a random binary texture of ``cell``-pixel
cells seen through a ``size x size`` window (16 x 16 x 1) that each frame moves by one of 4
actions drawn uniformly (``step`` pixels up, down, left or right, wrapping around), like a
camera; or ``square``, a white square moved the same way (on which the LAM's codes learn the
square's new position rather than its move: the genie README). Either way the action is a
function of the frame pair. Genie is trained on the frames only, in its staged schedule, with
the model modules directly:

1. the video tokenizer (:class:`VideoTokenizer`) alone;
2. then the latent action model (:class:`LatentActionModel`, its own reconstruction loss) and
   the MaskGIT dynamics (:class:`DynamicsModel`) together, the dynamics on the frozen
   tokenizer's tokens and the LAM's inferred codes (integers: stop-gradient).

Measured on held-out clips (another seed):

- **Latent actions vs the true ones**: purity (share of transitions whose code's most frequent
  true action is theirs; chance: the largest action share, ~0.25) and the normalized mutual
  information ``2 I(code; action) / (H(code) + H(action))`` (0 for independent, 1 for a
  relabelling), and the same two for codes shuffled across transitions (the baseline).
- **Controllability** (the paper's section 4, ``Delta_t PSNR``): from each clip's first frame
  the dynamics generates ``horizon`` frames (MaskGIT) with the latent actions the LAM infers from
  the real clip, and again with latent actions drawn uniformly from the 8; both are decoded by
  the tokenizer and compared with the real frame ``horizon``:
  ``Delta PSNR = PSNR(real, generated with inferred) - PSNR(real, generated with random)``.
  Also reported: the PSNR of the tokenizer's own reconstruction (the ceiling) and of copying
  the first frame.

Each run is repeated with ``blind=True`` (the dynamics trained and evaluated with the codes the
LAM infers from another clip), the baseline that must score at chance.
``tests/e2e/test_genie_toy.py`` runs it at the :data:`CI` budget with these functions. Writes
``benchmarks/results/<machine>/genie_toy.json`` (``genie_toy_ci.json`` with ``--ci``).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from dataclasses import field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result
from wm_ray.models.genie.config import (
    DynamicsConfig,
    LatentActionConfig,
    STConfig,
    TokenizerConfig,
)
from wm_ray.models.genie.dynamics import DynamicsModel, MaskGITSampler, generate
from wm_ray.models.genie.latent_actions import LatentActionModel
from wm_ray.models.genie.tokenizer import VideoTokenizer, to_unit

MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))
"""The true actions as (rows, columns) directions: up, down, left, right."""


TOKENIZER = TokenizerConfig(
    patch=4,
    vocab=32,
    code_dim=16,
    encoder=STConfig(32, 1, 2, 2),
    decoder=STConfig(32, 1, 2, 2),
    dead_code_every=50,
    lr=1e-2,
)
LAM = LatentActionConfig(
    patch=4,
    vocab=8,
    code_dim=8,
    encoder=STConfig(32, 2, 4, 2),
    decoder=STConfig(32, 2, 4, 2),
    dead_code_every=50,
    dead_code_threshold=0.5,
    lr=1e-3,
)
DYNAMICS = DynamicsConfig(model=STConfig(64, 2, 4, 2), steps=8, lr=3e-3)


@dataclasses.dataclass(frozen=True)
class Toy:
    """The toy video and the sizes of the three parts."""

    scene: str = "scroll"
    """``scroll``: a random texture (``step``-pixel cells, half of them white) scrolled by the
    action, like a camera; ``square``: a ``square``-pixel white square moved by the action."""
    size: int = 16
    square: int = 4
    cell: int = 2
    """Side of the texture's cells (``scroll``)."""
    step: int = 2
    frames: int = 4
    """Frames per training clip (the LAM, dynamics and tokenizer context)."""
    tokenizer: TokenizerConfig = field(default_factory=lambda: TOKENIZER)
    lam: LatentActionConfig = field(default_factory=lambda: LAM)
    dynamics: DynamicsConfig = field(default_factory=lambda: DYNAMICS)
    batch: int = 32
    dynamics_batch: int = 0
    """Clips of each batch the dynamics trains on (0: all of them)."""
    tokenizer_steps: int = 600
    lam_steps: int = 1000


CI = Toy(
    tokenizer_steps=300,
    lam_steps=700,
    dynamics_batch=16,
    dynamics=DynamicsConfig(model=STConfig(32, 2, 4, 2), steps=8, lr=3e-3),
)
"""The CI budget (``tests/e2e/test_genie_toy.py``): about a minute of one CPU thread."""


def square_clips(
    toy: Toy, batch: int, frames: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """``batch`` clips ``(B, frames, S, S, 1)`` uint8 of the square moved by random actions,
    and the actions ``(B, frames - 1)`` int64 (indices into :data:`MOVES`)."""
    s, step = toy.size, toy.step
    actions = torch.randint(0, len(MOVES), (batch, frames - 1), generator=generator)
    start = torch.randint(0, s // step, (batch, 1, 2), generator=generator) * step
    moves = torch.tensor(MOVES)[actions] * step  # (B, T - 1, 2)
    pos = torch.cat([start, start + moves.cumsum(1)], dim=1) % s  # (B, T, 2)
    grid = torch.arange(s)
    if toy.scene == "square":  # pos: the square's top-left corner
        rows = (grid[None, None, :] - pos[..., :1]) % s < toy.square  # (B, T, S)
        cols = (grid[None, None, :] - pos[..., 1:]) % s < toy.square
        video = rows[..., :, None] & cols[..., None, :]
    elif toy.scene == "scroll":  # pos: the view's offset into the texture
        c = toy.cell
        cells = torch.rand(batch, s // c, s // c, generator=generator) < 0.5
        texture = cells.repeat_interleave(c, 1).repeat_interleave(c, 2)  # (B, S, S)
        rows = (grid[None, None, :] - pos[..., :1]) % s  # (B, T, S) texture row of each row
        cols = (grid[None, None, :] - pos[..., 1:]) % s
        b = torch.arange(batch)[:, None, None, None]
        video = texture[b, rows[..., :, None], cols[..., None, :]]
    else:
        raise ValueError(f"scene={toy.scene!r} must be 'square' or 'scroll'")
    return (video.to(torch.uint8) * 255)[..., None], actions


def train_tokenizer(toy: Toy, seed: int = 0) -> tuple[VideoTokenizer, dict[str, float]]:
    """The tokenizer trained ``toy.tokenizer_steps`` Adam steps on fresh clips."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    tok = VideoTokenizer(toy.tokenizer, toy.size, 1, toy.frames).train()
    opt = torch.optim.Adam(tok.parameters(), lr=toy.tokenizer.lr)
    mse = math.nan
    for _ in range(toy.tokenizer_steps):
        video, _ = square_clips(toy, toy.batch, toy.frames, gen)
        loss, metrics = tok.loss(video)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tok.parameters(), toy.tokenizer.clip)
        opt.step()
        mse = float(metrics["train/loss/tokenizer/mse"])
    return tok.eval(), {"final_mse": mse}


def train_lam_and_dynamics(
    toy: Toy, tok: VideoTokenizer, seed: int = 0, blind: bool = False
) -> tuple[LatentActionModel, DynamicsModel, dict[str, float]]:
    """The LAM and the dynamics trained together ``toy.lam_steps`` steps on fresh clips; the
    dynamics on the frozen tokenizer's tokens and the LAM's codes (integers, no gradient).

    ``blind`` (a check that the measures can fail): the dynamics is given the codes the LAM
    infers from other clips of the batch, which carry nothing of this clip's actions."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    lam = LatentActionModel(toy.lam, toy.size, 1, toy.frames).train()
    dyn = DynamicsModel(toy.dynamics, toy.tokenizer.vocab, tok.tokens, toy.lam.vocab, toy.frames)
    dyn.train()
    lam_opt = torch.optim.Adam(lam.parameters(), lr=toy.lam.lr)
    dyn_opt = torch.optim.Adam(dyn.parameters(), lr=toy.dynamics.lr)
    lam_mse = dyn_loss = math.nan
    for _ in range(toy.lam_steps):
        video, _ = square_clips(toy, toy.batch, toy.frames, gen)
        loss, metrics = lam.loss(video)
        lam_opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lam.parameters(), toy.lam.clip)
        lam_opt.step()
        lam_mse = float(metrics["train/loss/lam/mse"])
        video = video[: toy.dynamics_batch or None]
        codes = lam.infer(_other_clips(video, gen) if blind else video)
        tokens = tok.tokenize(video)
        loss, metrics = dyn.loss(tokens, codes)
        dyn_opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(dyn.parameters(), toy.dynamics.clip)
        dyn_opt.step()
        dyn_loss = float(metrics["train/loss/dynamics/total"])
    return lam.eval(), dyn.eval(), {"lam_final_mse": lam_mse, "dynamics_final_loss": dyn_loss}


def _other_clips(video: Tensor, gen: torch.Generator) -> Tensor:
    """The clips rotated by a random nonzero shift in the batch: each row gets another clip."""
    shift = int(torch.randint(1, video.shape[0], (), generator=gen))
    return video.roll(shift, dims=0)


def purity_nmi(codes: Tensor, actions: Tensor, vocab: int, classes: int) -> dict[str, float]:
    """Purity and normalized mutual information of ``codes`` against ``actions`` (same shape)."""
    joint = torch.zeros(vocab, classes, dtype=torch.float64)
    joint.index_put_((codes.flatten(), actions.flatten()), torch.ones(codes.numel()).double(), True)
    n = joint.sum()
    p = joint / n
    pc, pa = p.sum(1), p.sum(0)
    nz = p > 0
    mi = float((p[nz] * (p[nz] / (pc[:, None] * pa[None, :])[nz]).log()).sum())
    hc = float(-(pc[pc > 0] * pc[pc > 0].log()).sum())
    ha = float(-(pa[pa > 0] * pa[pa > 0].log()).sum())
    return {
        "purity": float(joint.max(1).values.sum() / n),
        "nmi": 2 * mi / (hc + ha) if hc + ha > 0 else 0.0,
        "codes_used": int((pc > 0).sum()),
    }


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """PSNR (dB) of each frame of ``(B, T, H, W, C)`` in [0, 1] (peak 1): ``(B, T)``; the MSE is
    floored at 1e-6 (a cap of 60 dB: an exact frame is no infinity)."""
    mse = (a - b).pow(2).flatten(2).mean(2).clamp_min(1e-6)
    return -10.0 * mse.log10()


@torch.no_grad()
def evaluate(
    toy: Toy,
    tok: VideoTokenizer,
    lam: LatentActionModel,
    dyn: DynamicsModel,
    clips: int = 128,
    horizon: int = 3,
    seed: int = 123,
    blind: bool = False,
) -> dict[str, Any]:
    """Purity / NMI of the LAM's codes and the controllability (Delta PSNR at each of
    ``horizon`` frames generated from one context frame) on ``clips`` held-out clips of
    ``horizon + 1`` frames; ``blind``: each clip is given the codes of another clip."""
    if not 1 <= horizon < toy.frames:
        raise ValueError(f"horizon={horizon} must be in [1, {toy.frames - 1}]")
    gen = torch.Generator().manual_seed(seed)
    video, actions = square_clips(toy, clips, horizon + 1, gen)
    codes = lam.infer(_other_clips(video, gen) if blind else video)
    shuffled = codes.flatten()[torch.randperm(codes.numel(), generator=gen)].view_as(codes)
    majority = float(torch.bincount(actions.flatten()).max() / actions.numel())
    tokens = tok.tokenize(video)
    random_codes = torch.randint(0, lam.vocab, codes.shape, generator=gen)
    sampler = MaskGITSampler(toy.dynamics.steps, toy.dynamics.temperature, toy.dynamics.schedule)
    real = to_unit(video[:, 1:])

    def rollout(acts: Tensor) -> Tensor:  # PSNR (B, horizon) of frames 1 .. horizon
        out = generate(dyn, tokens[:, :1], acts, horizon, sampler, gen)
        return psnr(tok.decode(out[:, 1:]).clamp(0, 1), real)

    inferred, rand = rollout(codes), rollout(random_codes)
    recon = psnr(tok.decode(tokens[:, 1:]).clamp(0, 1), real)
    copy = psnr(to_unit(video[:, :1]).expand_as(real), real)
    per_step = {
        "psnr_inferred": inferred.mean(0).tolist(),
        "psnr_random": rand.mean(0).tolist(),
        "delta_psnr": (inferred - rand).mean(0).tolist(),
        "psnr_tokenizer_reconstruction": recon.mean(0).tolist(),
        "psnr_copy_first_frame": copy.mean(0).tolist(),
    }
    return {
        "clips": clips,
        "horizon": horizon,
        "latent_actions": purity_nmi(codes, actions, lam.vocab, len(MOVES)),
        "shuffled_codes": purity_nmi(shuffled, actions, lam.vocab, len(MOVES)),
        "chance_purity": majority,
        **{k: v[-1] for k, v in per_step.items()},
        "per_step": per_step,
    }


def run(toy: Toy, seed: int = 0, horizon: int = 3, blind: bool = False) -> dict[str, Any]:
    """Train both stages on ``toy`` and :func:`evaluate`; seconds of each stage included."""
    clock = time.perf_counter, time.process_time
    start = [f() for f in clock]
    tok, tok_info = train_tokenizer(toy, seed)
    mid = [f() for f in clock]
    lam, dyn, info = train_lam_and_dynamics(toy, tok, seed, blind)
    end = [f() for f in clock]
    result = evaluate(toy, tok, lam, dyn, horizon=horizon, seed=seed + 123, blind=blind)
    done = [f() for f in clock]
    result["training"] = {**tok_info, **info}
    for i, kind in enumerate(("seconds", "cpu_seconds")):
        result["training"][f"tokenizer_{kind}"] = mid[i] - start[i]
        result["training"][f"lam_dynamics_{kind}"] = end[i] - mid[i]
        result["training"][f"eval_{kind}"] = done[i] - end[i]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokenizer-steps", type=int, default=Toy.tokenizer_steps)
    parser.add_argument("--lam-steps", type=int, default=Toy.lam_steps)
    parser.add_argument("--ci", action="store_true", help="the CI budget (benchmarks.genie_toy.CI)")
    parser.add_argument("--horizon", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--no-blind", action="store_true", help="skip the blind baseline")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    toy = CI if args.ci else Toy(tokenizer_steps=args.tokenizer_steps, lam_steps=args.lam_steps)
    runs = []
    for seed in args.seeds:
        row: dict[str, Any] = {"seed": seed, "lam": run(toy, seed, args.horizon)}
        print(row, flush=True)
        if not args.no_blind:
            row["blind_baseline"] = run(toy, seed, args.horizon, blind=True)
            print(row["blind_baseline"], flush=True)
        runs.append(row)
    result = {"settings": dataclasses.asdict(toy), "threads": args.threads, "runs": runs}
    print(write_result("genie_toy" + ("_ci" if args.ci else ""), result, args.out))


if __name__ == "__main__":
    main()
