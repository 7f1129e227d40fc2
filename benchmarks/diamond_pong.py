"""DIAMOND's parts on real ALE Pong frames of a random policy (CPU, minutes): the issue's checks.

    python benchmarks/diamond_pong.py [--steps 2000] [--channels 16 32] [--side 32]
        [--reward-steps 400] [--reward-seeds 0 1 2] [--threads 1]

- **Next frame**: the denoiser (a small U-Net, DIAMOND's EDM sampler: 3 Euler steps,
  sigma_max 5) trained ``--steps`` Adam steps with the agent's loss
  (``wm_ray.models.diamond.losses.denoiser_loss``) on one random-policy episode (seed 0); on
  every transition of another episode (seed 1) the MSE of the 3-step sample of the next frame,
  of copying the last frame (the baseline, same frames), of the sample given the frames and
  actions of another transition, and of the sample given its own frames but another
  transition's actions. The MSEs are split into the pixels that change between the two frames
  (``dynamic``: the paddles, the ball, the score) and the rest (``static``).
- **Reward**: the reward / termination model (``reward_end_loss``) trained ``--reward-steps``
  on 3,000 random-policy steps (episodes run to their end), then run over 1,000 held-out steps
  (seed 1): its balanced accuracy over the reward-sign classes present (a constant
  prediction, the majority class's included, scores ``1 / k``), the recall and precision of
  its nonzero predictions, and plain accuracy against the majority's (:func:`sign_scores`).

``tests/e2e/test_diamond_pong.py`` runs the next-frame check at a CI budget with these
functions. Writes ``benchmarks/results/<machine>/diamond_pong.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine_tag, write_result
from wm_ray.envs import atari
from wm_ray.models.common import Optimizer
from wm_ray.models.diamond.config import DenoiserConfig, DiffusionConfig, RewardEndConfig
from wm_ray.models.diamond.diffusion import EDM, Condition, make_schedule, stack_context
from wm_ray.models.diamond.imagination import context_window
from wm_ray.models.diamond.losses import denoiser_loss, reward_end_loss
from wm_ray.models.diamond.networks import build_denoiser
from wm_ray.models.diamond.reward_end import RewardEndModel, reward_class

CONTEXT = 4
"""DIAMOND's context frames and actions."""


class Episodes(NamedTuple):
    """Random-policy steps: frames ``(T, 1, S, S)`` in [-1, 1], actions ``(T,)``, the reward
    that arrived with each frame, and episode starts / terminations (bool)."""

    frames: Tensor
    actions: Tensor
    reward: Tensor
    is_first: Tensor
    is_terminal: Tensor
    num_actions: int


def pong(
    seed: int, steps: int, side: int = 32, until_end: bool = True, grayscale: bool = True
) -> Episodes:
    """``steps`` steps of ALE Pong (``side x side``, grayscale or RGB) under a uniformly random
    policy from a reset; ``until_end``: stop at the first episode's end, else reset and go on."""
    env = atari.make("ALE/Pong-v5", seed=seed, image_size=side, grayscale=grayscale)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    frames, actions, rewards, firsts, terminals = [], [], [], [], []
    reward, terminal, first = 0.0, False, True
    for _ in range(steps):
        action = int(rng.integers(env.action_space.n))
        frames.append(obs["image"])
        actions.append(action)
        rewards.append(reward)
        firsts.append(first)
        terminals.append(terminal)
        obs, reward, terminal, truncated, _ = env.step(action)
        first = False
        if terminal or truncated:
            if until_end:
                break
            frames.append(obs["image"])
            actions.append(0)
            rewards.append(reward)
            firsts.append(False)
            terminals.append(terminal)
            obs, _ = env.reset()
            reward, terminal, first = 0.0, False, True
    num_actions = int(env.action_space.n)
    env.close()
    image = torch.tensor(np.stack(frames)).reshape(len(frames), side, side, -1).permute(0, 3, 1, 2)
    return Episodes(
        image.float() / 127.5 - 1.0,
        torch.tensor(actions),
        torch.tensor(rewards, dtype=torch.float32),
        torch.tensor(firsts),
        torch.tensor(terminals),
        num_actions,
    )


def _windows(n: int, count: int, length: int, gen: torch.Generator) -> Tensor:
    start = torch.randint(0, n - length, (count,), generator=gen)
    return start[:, None] + torch.arange(length)


def train_denoiser(
    data: Episodes,
    steps: int,
    channels: tuple[int, ...] = (16, 16),
    lr: float = 3e-3,
    seed: int = 0,
) -> tuple[nn.Module, EDM]:
    """A U-Net of ``channels`` (one residual block per level, no attention) trained ``steps``
    AdamW steps (one-cycle learning rate, gradients clipped at 1) with the agent's denoiser
    loss on 4 windows of 8 frames x 4 targets per step; the schedule is the paper's."""
    torch.manual_seed(seed)
    schedule = make_schedule(DiffusionConfig())
    assert isinstance(schedule, EDM)
    cfg = DenoiserConfig(cond_dim=32, channels=channels, res_blocks=1, mid_attention=False)
    net = build_denoiser(cfg, data.frames.shape[1], CONTEXT, data.num_actions)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-2)
    anneal = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    seq = 2 * CONTEXT
    first = torch.zeros(4, seq, dtype=torch.bool)
    first[:, 0] = True  # each window starts its own episode: the context never reaches before it
    for _ in range(steps):
        index = _windows(len(data.frames), 4, seq, gen)
        frames, actions = data.frames[index], data.actions[index]
        loss, _ = denoiser_loss(schedule, net, frames, actions, first, CONTEXT, 4, gen, gen)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        anneal.step()
    return net.eval(), schedule


def next_frame_mse(net: nn.Module, schedule: EDM, data: Episodes, seed: int = 1) -> dict[str, Any]:
    """MSEs on every transition ``t-1 -> t`` (``t >= CONTEXT``) of ``data`` (one episode): the
    3-step sample, copying frame ``t-1``, and the sample given a shuffled transition's context,
    each whole and split into static / dynamic pixels (their sum is the whole)."""
    target = torch.arange(CONTEXT, len(data.frames))
    truth = data.frames[target]
    starts = torch.zeros(1, len(data.frames), dtype=torch.bool)
    starts[0, 0] = True
    gen = torch.Generator().manual_seed(seed)

    def sample(ends: Tensor, actions_of: Tensor | None = None) -> Tensor:
        n = len(ends)
        ctx, act = context_window(
            data.frames[None].expand(n, -1, -1, -1, -1),
            data.actions[None].expand(n, -1),
            starts.expand(n, -1),
            ends,
            CONTEXT,
        )
        if actions_of is not None:  # the same frames, the actions of other transitions
            act = context_window(
                data.frames[None, :, :0].expand(n, -1, -1, -1, -1),
                data.actions[None].expand(n, -1),
                starts.expand(n, -1),
                actions_of,
                CONTEXT,
            )[1]
        with torch.no_grad():
            cond = Condition(stack_context(ctx), act)
            return schedule.sample(net, tuple(truth.shape), cond, torch.Generator().manual_seed(1))

    last = data.frames[target - 1]
    dynamic = last != truth

    def split(pred: Tensor) -> dict[str, float]:
        err = (pred - truth) ** 2
        total = err.numel()
        return {
            "mse": float(err.mean()),
            "static": float(err[~dynamic].sum()) / total,
            "dynamic": float(err[dynamic].sum()) / total,
        }

    shuffled = target[torch.randperm(len(target), generator=gen)] - 1
    return {
        "transitions": len(target),
        "dynamic_pixels": float(dynamic.float().mean()),
        "sample": split(sample(target - 1)),
        "copy_last_frame": split(last),
        "sample_other_context": split(sample(shuffled)),
        "sample_other_actions": split(sample(target - 1, shuffled)),
    }


REWARD_CONFIG = RewardEndConfig(
    channels=(16, 16), res_blocks=1, cond_dim=16, lstm=64, burn_in=2, lr=1e-3, warmup=0,
    class_balance=True,
)  # fmt: skip
"""The reward check's model: debug-like sizes; every other setting is the agent's default."""


def train_reward_end(
    train: Episodes,
    steps: int,
    cfg: RewardEndConfig = REWARD_CONFIG,
    windows: int = 16,
    length: int = 12,
    seed: int = 0,
    shuffle_next: bool = False,
) -> RewardEndModel:
    """The reward / termination model trained as the agent trains it (its loss with
    ``cfg.burn_in`` and ``cfg.class_balance``, its optimizer at ``cfg``'s settings) for
    ``steps`` updates, each on ``windows`` uniformly drawn windows of ``length`` frames (as
    replay draws sequences). ``shuffle_next``: each transition's next frame is taken from a
    random other step (a control: the reward is then not in the frames)."""
    torch.manual_seed(seed)
    model = RewardEndModel(cfg, train.frames.shape[1], train.frames.shape[-1], train.num_actions)
    opt = Optimizer(
        model.parameters(), cfg.lr, clip=cfg.clip, weight_decay=cfg.weight_decay,
        warmup=cfg.warmup,
    )  # fmt: skip
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(train.frames), generator=gen)
    for _ in range(steps):
        i = _windows(len(train.frames), windows, length, gen)
        frames = train.frames[i]
        if shuffle_next:
            frames = torch.cat([frames[:, :1], train.frames[perm[i[:, 1:]]]], 1)
        loss, _ = reward_end_loss(
            model, frames, train.actions[i], train.reward[i], train.is_first[i],
            train.is_terminal[i], cfg.burn_in, cfg.class_balance,
        )  # fmt: skip
        opt.step(loss)
    return model.eval()


def reward_scores(
    model: RewardEndModel, data: Episodes, burn_in: int, length: int = 12
) -> dict[str, Any]:
    """:func:`sign_scores` of ``model`` (eval mode) on the transitions of ``data``, run as in
    imagination: windows of ``length`` transitions from a zero state, each burnt in on its
    first ``burn_in`` real ones and scored on the rest; the windows tile the steps, so every
    transition after the first ``burn_in`` is scored once."""
    n = len(data.frames) - 1  # transitions
    starts = torch.arange(0, n - burn_in, length - burn_in)
    step = starts[:, None] + torch.arange(length)  # transition j: frames j -> j + 1
    real = step < n
    step = step.clamp(max=n - 1)
    frames, first = data.frames, data.is_first
    with torch.no_grad():
        logits, _, _ = model(
            frames[step], data.actions[step], frames[step + 1], first[step],
            model.initial(len(step), torch.device("cpu")),
        )  # fmt: skip
    scored = real & ~first[step + 1]
    scored[:, :burn_in] = False
    target = reward_class(data.reward[step + 1])[scored]
    return {
        "transitions": int(scored.sum()),
        "nonzero_rewards": int((target != 1).sum()),
        **sign_scores(logits.argmax(-1)[scored], target),
    }


def reward_check(train: Episodes, held: Episodes, steps: int, seed: int = 0) -> dict[str, Any]:
    """:func:`train_reward_end` for ``steps`` updates, scored on ``held`` and on ``train``."""
    start = time.perf_counter()
    model = train_reward_end(train, steps, seed=seed)
    seconds = time.perf_counter() - start
    return {
        "seed": seed,
        "train_seconds": seconds,
        "train_nonzero_rewards": int((train.reward != 0).sum()),
        "held": reward_scores(model, held, REWARD_CONFIG.burn_in),
        "train": reward_scores(model, train, REWARD_CONFIG.burn_in),
    }


def sign_scores(pred: Tensor, target: Tensor) -> dict[str, Any]:
    """Scores of predicted reward-sign classes against the true ones (both ``(N,)``).

    ``balanced_accuracy`` is the mean over the classes present of the share of that class
    predicted right: a constant prediction scores ``1 / k`` with ``k`` classes present
    (``majority_balanced_accuracy``), whatever the class shares. ``nonzero_recall`` is the
    share of the nonzero rewards predicted with the right sign, ``nonzero_precision`` the share
    of the nonzero predictions that are right (None when there are none); plain accuracy and
    the majority's accuracy are kept for reference."""
    present = target.unique()
    recalls = [float((pred[target == c] == c).float().mean()) for c in present]
    nonzero, said = target != 1, pred != 1
    right = int((said & (pred == target)).sum())
    return {
        "balanced_accuracy": sum(recalls) / len(recalls),
        "majority_balanced_accuracy": 1.0 / len(recalls),
        "nonzero_recall": right / int(nonzero.sum()) if nonzero.any() else None,
        "nonzero_precision": right / int(said.sum()) if said.any() else None,
        "accuracy": float((pred == target).float().mean()),
        "majority_accuracy": float((target == 1).float().mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="denoiser training steps")
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--side", type=int, default=32)
    parser.add_argument("--reward-steps", type=int, default=400)
    parser.add_argument("--reward-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result: dict[str, Any] = {"side": args.side, "threads": args.threads}
    if args.steps:
        start = time.perf_counter()
        net, schedule = train_denoiser(pong(0, 1200, args.side), args.steps, tuple(args.channels))
        result["next_frame"] = {
            "steps": args.steps,
            "channels": args.channels,
            "params": sum(p.numel() for p in net.parameters()),
            "train_seconds": time.perf_counter() - start,
            **next_frame_mse(net, schedule, pong(1, 300, args.side)),
        }
        print(result["next_frame"], flush=True)
    else:  # keep the last recorded next-frame check
        previous = Path(__file__).resolve().parent / "results" / machine_tag() / "diamond_pong.json"
        if args.out is None and previous.exists():
            result["next_frame"] = json.loads(previous.read_text()).get("next_frame")
    if args.reward_steps:
        train = pong(0, 3000, args.side, until_end=False)
        held = pong(1, 1000, args.side, until_end=False)
        result["reward"] = {
            "steps": args.reward_steps,
            "config": dataclasses.asdict(REWARD_CONFIG),
            "windows": "16 x 12 frames",
            "runs": [],
        }
        for seed in args.reward_seeds:
            run = reward_check(train, held, args.reward_steps, seed)
            print(run, flush=True)
            result["reward"]["runs"].append(run)
    print(write_result("diamond_pong", result, args.out))


if __name__ == "__main__":
    main()
