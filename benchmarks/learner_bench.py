"""Learner speed per family: updates/s per size preset, and where an update's time goes.

    python benchmarks/learner_bench.py [--families dreamer iris] [--sizes debug xs]
                                       [--obs vector image] [--iris-sizes debug] [--repeats 3]

Results: ``learner.json`` (Dreamer) and ``learner_iris.json`` (IRIS) in the machine's folder.

For each size and observation kind, one update (world model + actor-critic in imagination) on a
fixed B16 x T64 batch is timed after warm-up; the agent reports its world-model and actor-critic
seconds. Baseline, measured in the same run: one forward + backward + Adam step of a plain MLP
with the same parameter count on the same B*T rows, a dense-compute floor for an update of that
size. ``ratio_to_dense_floor`` = update time / baseline time shows the cost of the recurrence,
imagination and many small ops. CPU by default; on a GPU also sizes m and l.

IRIS: one update with all three parts active (tokenizer, world model, actor-critic in
imagination; ``iris.start.*`` = 0) on 64x64 Atari-like frames at the preset's own batch
(``debug`` = ``iris iris_debug``: B4 x T8; ``paper`` = ``iris``: B64 x T20, on a GPU by default:
on a CPU one update takes minutes), with the same dense-floor baseline.
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
from wm_ray.config import Config
from wm_ray.config_io import build_config
from wm_ray.factory import create_model

B, T = 16, 64


def spaces(obs: str) -> tuple[gym.spaces.Dict, gym.Space]:
    if obs == "image":
        space = gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
        return gym.spaces.Dict({"image": space}), gym.spaces.Discrete(6)
    vector = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
    return gym.spaces.Dict({"vector": vector}), gym.spaces.Discrete(2)


def fake_batch(obs: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    batch: dict[str, np.ndarray] = {
        "action": rng.integers(0, 2, (B, T)),
        "reward": rng.normal(size=(B, T)).astype(np.float32),
        "is_first": np.zeros((B, T), bool),
        "is_last": np.zeros((B, T), bool),
        "is_terminal": rng.random((B, T)) < 0.01,
    }
    if obs == "image":
        batch["image"] = rng.integers(0, 255, (B, T, 64, 64, 3), dtype=np.uint8)
    else:
        batch["vector"] = rng.normal(size=(B, T, 4)).astype(np.float32)
    return batch


def dense_floor(params: int, device: str, repeats: int, rows: int = B * T) -> float:
    """Seconds of fwd+bwd+Adam of a 3-layer MLP with ~``params`` weights on ``rows`` rows."""
    width = max(int((params / 2) ** 0.5), 8)
    net = torch.nn.Sequential(
        torch.nn.Linear(width, width), torch.nn.SiLU(),
        torch.nn.Linear(width, width), torch.nn.SiLU(),
        torch.nn.Linear(width, 1),
    ).to(device)  # fmt: skip
    opt = torch.optim.Adam(net.parameters(), 1e-4)
    x = torch.randn(rows, width, device=device)
    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        loss = net(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return median(times)


def time_updates(
    size: str, obs: str, device: str, repeats: int, compile: bool
) -> tuple[Any, list[float], list[float], list[float], float]:
    """(agent, update seconds, world-model seconds, actor-critic seconds, warm-up seconds)."""
    config = build_config(
        ["dreamer", f"size_{size}"],
        [
            f"run.device={device}",
            f"run.compile={str(compile).lower()}",
            f"replay.batch_size={B}",
            f"replay.seq_len={T}",
        ],
    )
    obs_space, act_space = spaces(obs)
    agent = create_model("dreamer", obs_space, act_space, config)
    batch = fake_batch(obs, np.random.default_rng(0))
    state = agent.init_train(B)
    start = time.perf_counter()
    for _ in range(2):  # with compile: the compilation happens here
        state, _ = agent.train(batch, state)
    warmup = time.perf_counter() - start
    totals, wm, ac = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        state, metrics = agent.train(batch, state)
        totals.append(time.perf_counter() - start)
        wm.append(metrics["time/world_model"])
        ac.append(metrics["time/actor_critic"])
    return agent, totals, wm, ac, warmup


def bench(size: str, obs: str, device: str, repeats: int, compile: bool = False) -> dict[str, Any]:
    agent, totals, wm, ac, _ = time_updates(size, obs, device, repeats, compile=False)
    params = agent.param_counts()["total"]
    update = median(totals)
    floor = dense_floor(params, device, repeats)
    row = {
        "family": "dreamer",
        "size": size,
        "obs": obs,
        "device": device,
        "params": params,
        "update_s": update,
        "updates_per_s": 1.0 / update,
        "replayed_steps_per_s": B * T / update,
        "world_model_s": median(wm),
        "actor_critic_s": median(ac),
        "world_model_share": median(wm) / (median(wm) + median(ac)),
        "dense_floor_s": floor,
        "ratio_to_dense_floor": update / floor,
    }
    if compile:  # run.compile=true, timed after the eager agent in the same run
        _, totals, wm, ac, warmup = time_updates(size, obs, device, repeats, compile=True)
        row.update(
            compiled_update_s=median(totals),
            compiled_world_model_s=median(wm),
            compiled_actor_critic_s=median(ac),
            compile_warmup_s=warmup,
            compile_speedup=update / median(totals),
        )
    return row


def iris_batch(b: int, t: int, actions: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "image": rng.integers(0, 255, (b, t, 64, 64, 3), dtype=np.uint8),
        "action": rng.integers(0, actions, (b, t)),
        "reward": rng.normal(size=(b, t)).astype(np.float32),
        "is_first": np.zeros((b, t), bool),
        "is_last": np.zeros((b, t), bool),
        "is_terminal": rng.random((b, t)) < 0.01,
    }


def iris_config(size: str, device: str) -> Config:
    """IRIS at ``size`` (``debug`` or ``paper``) with all three parts training from update 0.

    The env preset comes first: ``atari`` sets ``replay.seq_len`` 64 (Dreamer's T), and the
    family preset after it sets IRIS's own 20 (``wm-ray show-config`` shows who set what).
    """
    presets = ["atari", "iris"] + (["iris_debug"] if size == "debug" else [])
    starts = [f"iris.start.{part}=0" for part in ("tokenizer", "world_model", "actor_critic")]
    return build_config(presets, [f"run.device={device}", *starts])


def bench_iris(size: str, device: str, repeats: int) -> dict[str, Any]:
    config = iris_config(size, device)
    b, t = config.replay.batch_size, config.replay.seq_len
    obs_space, act_space = spaces("image")
    agent = create_model("iris", obs_space, act_space, config)
    batch = iris_batch(b, t, int(act_space.n), np.random.default_rng(0))  # type: ignore[attr-defined]
    state = agent.init_train(b)
    for _ in range(2):
        state, _ = agent.train(batch, state)
    totals: list[float] = []
    parts: dict[str, list[float]] = {"tokenizer": [], "world_model": [], "actor_critic": []}
    for _ in range(repeats):
        start = time.perf_counter()
        state, metrics = agent.train(batch, state)
        totals.append(time.perf_counter() - start)
        for part, values in parts.items():
            values.append(metrics[f"time/{part}"])
    params = agent.param_counts()["total"]
    update = median(totals)
    floor = dense_floor(params, device, repeats, rows=b * t)
    return {
        "family": "iris",
        "size": size,
        "obs": "image",
        "device": device,
        "batch": [b, t],
        "params": params,
        "update_s": update,
        "updates_per_s": 1.0 / update,
        "replayed_steps_per_s": b * t / update,
        **{f"{part}_s": median(values) for part, values in parts.items()},
        "dense_floor_s": floor,
        "ratio_to_dense_floor": update / floor,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    gpu = torch.cuda.is_available()
    parser.add_argument("--families", nargs="+", default=["dreamer", "iris"],
                        choices=["dreamer", "iris"])  # fmt: skip
    parser.add_argument("--sizes", nargs="+", default=["debug", "xs", "s", "m", "l"] if gpu
                        else ["debug", "xs"])  # fmt: skip
    parser.add_argument("--obs", nargs="+", default=["vector", "image"])
    parser.add_argument("--iris-sizes", nargs="+", default=["debug", "paper"] if gpu
                        else ["debug"], choices=["debug", "paper"])  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--compile", action="store_true", help="also time run.compile=true (torch.compile)"
    )
    parser.add_argument("--device", default="cuda" if gpu else "cpu")
    parser.add_argument("--out", type=Path, default=None, help="Dreamer JSON path")
    args = parser.parse_args()
    setup = {
        "batch": [B, T],
        "repeats": args.repeats,
        "device": args.device,
        "compile": args.compile,
    }
    if "dreamer" in args.families:
        rows = []
        for size in args.sizes:
            for obs in args.obs:
                row = bench(size, obs, args.device, args.repeats, args.compile)
                rows.append(row)
                print(
                    f"dreamer {size:5s} {obs:6s} {row['params']:>11,} params  "
                    f"{row['updates_per_s']:7.2f} updates/s  wm {row['world_model_s'] * 1e3:7.1f} "
                    f"ms  ac {row['actor_critic_s'] * 1e3:7.1f} ms  "
                    f"{row['ratio_to_dense_floor']:5.1f}x dense floor"
                    + (
                        f"  compiled {row['compile_speedup']:.2f}x "
                        f"(warm-up {row['compile_warmup_s']:.0f} s)"
                        if args.compile
                        else ""
                    ),
                    flush=True,
                )
        path = write_result("learner", {"setup": setup, "results": rows}, args.out)
        print(f"wrote {path}")
    if "iris" in args.families:
        rows = []
        for size in args.iris_sizes:
            row = bench_iris(size, args.device, args.repeats)
            rows.append(row)
            print(
                f"iris {size:5s} B{row['batch'][0]}xT{row['batch'][1]} "
                f"{row['params']:>11,} params  "
                f"{row['updates_per_s']:7.2f} updates/s  tokenizer {row['tokenizer_s'] * 1e3:.1f} "
                f"ms  wm {row['world_model_s'] * 1e3:.1f} ms  ac {row['actor_critic_s'] * 1e3:.1f} "
                f"ms  {row['ratio_to_dense_floor']:5.1f}x dense floor",
                flush=True,
            )
        setup = {"repeats": args.repeats, "device": args.device}
        path = write_result("learner_iris", {"setup": setup, "results": rows})
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
