"""Where one Dreamer update's time goes: phases and the torch profiler's top operators.

    python benchmarks/profile_update.py [--sizes debug xs] [--obs vector] [--repeats 3]

For each size, one update on the learner bench's fixed B16 x T64 batch is split into its phases
(world-model forward, its backward + Adam, imagination, actor-critic losses, actor and critic
backward + Adam; medians over repeats, timed with a device synchronize), then one update runs
under ``torch.profiler`` with FLOP counting. Written: ``profile_dreamer.json`` and
``profile_dreamer.md`` (phase table, the share of time in matrix products and their achieved
GFLOP/s, the top operators by self time with their shapes) in the machine's results folder.

The matrix-product share and its GFLOP/s say how much of an update is compute a faster
implementation would also have to do, and how much is everything else (elementwise ops, Python
and dispatch between ops); the summary's peer rows say how that compares with RLlib.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine_tag, median, write_result
from benchmarks.learner_bench import JAX_SIZES, B, T, dreamer_config, fake_batch, spaces
from wm_ray.factory import create_model
from wm_ray.models.common.data import batch_tensors
from wm_ray.models.common.device import synchronize
from wm_ray.models.common.optim import frozen_weights
from wm_ray.models.dreamer.compiled import imagination_tape, world_model_part, world_model_tape
from wm_ray.models.dreamer.losses import actor_critic_losses, imagine

PHASES = (
    "world model forward",
    "world model backward + Adam",
    "imagination (15 steps)",
    "actor-critic losses",
    "actor backward + Adam",
    "critic backward + Adam",
)
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::_embedding_bag", "aten::convolution")


def phased_update(agent: Any, batch: dict[str, np.ndarray]) -> list[float]:
    """One update as ``DreamerAgent.train`` runs it, with a timestamp after each phase."""
    sync = lambda: synchronize(agent.device)  # noqa: E731
    marks = [time.perf_counter()]

    def mark() -> None:
        sync()
        marks.append(time.perf_counter())

    data = batch_tensors(batch, agent.shapes, agent.act, agent.device)
    loss, _, start = world_model_part(agent, data, world_model_tape(agent, *data.is_first.shape))
    mark()
    agent.model_opt.step(loss)
    mark()
    start_cont = (~data.is_terminal).flatten().float()
    tape = imagination_tape(agent, start.deter.shape[0])
    with frozen_weights(agent.wm), agent._autocast():
        with torch.set_grad_enabled(agent.dynamics):
            traj = imagine(agent.wm, agent.actor, start, start_cont, agent.cfg.ac, tape)
        mark()
        out = actor_critic_losses(
            traj,
            agent.actor,
            agent.critic,
            agent.slow_critic,
            agent.retnorm,
            agent.cfg.ac,
            agent.dynamics,
        )
        mark()
        agent.actor_opt.step(out.actor_loss)
        mark()
        agent.critic_opt.step(out.critic_loss)
    agent._update_slow_critic()
    mark()
    return [b - a for a, b in itertools.pairwise(marks)]


def profile_size(size: str, obs: str, device: str, repeats: int, top: int) -> dict[str, Any]:
    config = dreamer_config(size, device, [])
    obs_space, act_space = spaces(obs)
    agent = create_model("dreamer", obs_space, act_space, config)
    b, t = config.replay.batch_size, config.replay.seq_len
    batch = fake_batch(obs, np.random.default_rng(0), b, t)
    for _ in range(2):
        agent.train(batch, None)
    runs = [phased_update(agent, batch) for _ in range(repeats)]
    phases = {name: median([run[i] for run in runs]) for i, name in enumerate(PHASES)}
    total = sum(phases.values())

    activities = [ProfilerActivity.CPU]
    if device.startswith("cuda"):
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities, record_shapes=True, with_flops=True) as prof:
        agent.train(batch, None)
        synchronize(agent.device)
    events = prof.key_averages(group_by_input_shape=True)
    self_us = sum(e.self_cpu_time_total for e in events)
    matmul = [e for e in events if e.key.startswith(MATMUL_OPS)]
    matmul_us = sum(e.self_cpu_time_total for e in matmul)
    flops = sum(e.flops for e in events)
    ranked = sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]
    return {
        "size": size,
        "obs": obs,
        "device": device,
        "params": agent.param_counts()["total"],
        "update_s": total,
        "phases_s": phases,
        "profiled_self_s": self_us / 1e6,
        "matmul_self_s": matmul_us / 1e6,
        "matmul_share": matmul_us / self_us,
        "profiled_gflop": flops / 1e9,
        "matmul_gflop_per_s": flops / 1e9 / (matmul_us / 1e6) if matmul_us else 0.0,
        "op_calls": int(sum(e.count for e in events)),
        "top_ops": [
            {
                "op": e.key,
                "shapes": str(e.input_shapes),
                "calls": e.count,
                "self_ms": e.self_cpu_time_total / 1e3,
                "share": e.self_cpu_time_total / self_us,
            }
            for e in ranked
        ],
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# Where a Dreamer update's time goes (`{result['tag']}`)", ""]
    lines += [
        "B16 x T64 batch, CartPole-like vector observations, 2 discrete actions; phases are "
        "medians of timed updates, operators from one profiled update (self time, torch "
        "profiler; FLOPs counted for matrix products).",
        "",
    ]
    for row in result["rows"]:
        lines += [
            f"## size `{row['size']}` ({row['params'] / 1e6:.2f}M parameters), {row['obs']}",
            "",
            "| phase | ms | share |",
            "|---|---|---|",
        ]
        for name, seconds in row["phases_s"].items():
            lines.append(f"| {name} | {seconds * 1e3:,.0f} | {seconds / row['update_s']:.0%} |")
        lines += [
            f"| **update** | **{row['update_s'] * 1e3:,.0f}** | |",
            "",
            f"Matrix products (mm, addmm, embedding_bag, conv): {row['matmul_share']:.0%} of "
            f"the profiled operator time, {row['profiled_gflop']:.1f} GFLOP at "
            f"{row['matmul_gflop_per_s']:.0f} GFLOP/s; {row['op_calls']:,} operator calls "
            "in one update.",
            "",
            "| operator | input shapes | calls | self ms | share |",
            "|---|---|---|---|---|",
        ]
        for op in row["top_ops"]:
            shapes = op["shapes"].replace("|", "/")
            lines.append(
                f"| `{op['op']}` | `{shapes}` | {op['calls']} | {op['self_ms']:,.1f} | "
                f"{op['share']:.1%} |"
            )
        lines.append("")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    gpu = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", default=["debug", "xs"] + (["s", "m"] if gpu else []),
                   choices=["default", "debug", "xs", "s", "m", "l", "xl", *JAX_SIZES])  # fmt: skip
    p.add_argument("--obs", default="vector", choices=["vector", "image"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--top", type=int, default=15, help="operators listed per size")
    p.add_argument("--device", default="cuda" if gpu else "cpu")
    return p


def main() -> None:
    args = parser().parse_args()
    rows = []
    for size in args.sizes:
        row = profile_size(size, args.obs, args.device, args.repeats, args.top)
        rows.append(row)
        split = "  ".join(f"{k} {v * 1e3:.0f}" for k, v in row["phases_s"].items())
        print(
            f"{size:6s} {row['update_s'] * 1e3:7.0f} ms  matmul {row['matmul_share']:.0%}  {split}"
        )
    result = {"tag": machine_tag(), "batch": [B, T], "rows": rows}
    path = write_result("profile_dreamer", result)
    path.with_suffix(".md").write_text(markdown(result) + "\n")
    print(f"wrote {path} and {path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
