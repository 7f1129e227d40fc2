"""Learner speed per family: updates/s per size preset and learner mode, and where an update's
time goes.

    python benchmarks/learner_bench.py [--families dreamer iris presets] [--sizes debug xs jax12m]
        [--obs vector image] [--modes eager compiled captured] [--precision fp32 bf16]
        [--iris-sizes debug] [--repeats 3]

Results: ``learner.json`` (Dreamer), ``learner_iris.json`` (IRIS) and ``learner_presets.json``
(``--families presets``: the eager update of the learning runs' configurations of the other
families, e.g. PlaNet's ``planet`` and ModularRSSM's ``modular`` per backbone, on vector
observations at each preset's own batch) in the machine's folder.

For each size, observation kind and precision, one update (world model + actor-critic in
imagination) on a fixed B16 x T64 batch is timed after warm-up (size ``default``: the ``make
run`` configuration at its own batch); the agent reports its world-model and actor-critic
seconds. Baselines, measured in the same run: the eager update (for ``compiled``, the whole
update under ``torch.compile``, and ``captured``, that update as CUDA graphs on a GPU, each
timed in alternation with the eager update, so that a change of the machine's load hits both
alike), and one forward + backward + Adam step of a plain MLP with the same parameter count on
the same B*T rows, a dense-compute floor for an update of that size (``ratio_to_dense_floor``
shows the cost of the recurrence, imagination and many small ops). The arithmetic floor: the
update's matrix-product FLOPs (torch's FLOP counter, ``gflop``) at this machine's peak
matrix-product rate at that precision (one large square product, ``gemm_rate_gflops``):
``flop_floor_s``, the time those products alone take. One more update of each mode runs under
``torch.profiler``: operator calls (``aten::`` ops; the compiled graphs run as generated
kernels instead), CUDA kernels, launches (a CUDA-graph replay is one) and the GPU's busy
share of the update. Sizes ``jax1m`` / ``jax12m`` / ``jax50m`` match danijar/dreamerv3's
size1m / 12m / 50m. CPU by default; on a GPU also sizes m and l.

IRIS: one update with all three parts active (tokenizer, world model, actor-critic in
imagination; ``iris.start.*`` = 0) on 64x64 Atari-like frames at the preset's own batch
(``debug`` = ``iris iris_debug``: B4 x T8; ``paper`` = ``iris``: B64 x T20, on a GPU by default:
on a CPU one update takes minutes), with the same dense-floor baseline; ``--modes`` apply to
IRIS's imagination (``compiled``: its one-token step under ``torch.compile``; ``captured``:
each imagined frame one CUDA-graph replay), reported against the eager update of the same run
as ``actor_critic_speedup`` (the part imagination is in) and ``speedup`` (the whole update).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine_tag, median, write_result
from wm_ray.config import Config
from wm_ray.config_io import build_config
from wm_ray.factory import create_model
from wm_ray.models.common.device import synchronize

B, T = 16, 64


def spaces(obs: str) -> tuple[gym.spaces.Dict, gym.Space]:
    if obs == "image":
        space = gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
        return gym.spaces.Dict({"image": space}), gym.spaces.Discrete(6)
    vector = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
    return gym.spaces.Dict({"vector": vector}), gym.spaces.Discrete(2)


def fake_batch(obs: str, rng: np.random.Generator, b: int = B, t: int = T) -> dict[str, np.ndarray]:
    """A random ``(b, t)`` batch of ``obs`` observations (``image`` 64x64x3 or ``vector`` 4)."""
    batch: dict[str, np.ndarray] = {
        "action": rng.integers(0, 2, (b, t)),
        "reward": rng.normal(size=(b, t)).astype(np.float32),
        "is_first": np.zeros((b, t), bool),
        "is_last": np.zeros((b, t), bool),
        "is_terminal": rng.random((b, t)) < 0.01,
    }
    if obs == "image":
        batch["image"] = rng.integers(0, 255, (b, t, 64, 64, 3), dtype=np.uint8)
    else:
        batch["vector"] = rng.normal(size=(b, t, 4)).astype(np.float32)
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


MODES: dict[str, list[str]] = {
    "eager": ["run.compile=false"],
    "compiled": ["run.compile=true"],
    "captured": ["run.compile=true", "run.compile_mode=reduce-overhead"],
}
"""Learner modes: eager (the reference), the compiled update, and the compiled update captured
as CUDA graphs (GPU only)."""

JAX_SIZES: dict[str, list[str]] = {
    name: [
        f"dreamer.rssm.deter={deter}",
        f"dreamer.rssm.hidden={hidden}",
        f"dreamer.rssm.classes={classes}",
        "dreamer.rssm.stoch=32",
        f"dreamer.cnn_depth={depth}",
        f"dreamer.units={units}",
        "dreamer.layers=3",
    ]
    for name, (deter, hidden, classes, depth, units) in {
        "jax1m": (512, 64, 4, 4, 64),
        "jax12m": (2048, 256, 16, 16, 256),
        "jax50m": (4096, 512, 32, 32, 512),
    }.items()
}
"""Sizes matched to danijar/dreamerv3's ``size1m`` / ``size12m`` / ``size50m`` presets (on top of
the ``dreamer`` preset), for comparison with JAX DreamerV3's update times at B16 x T64."""

LAUNCH_APIS = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cudaGraphLaunch")
"""CUDA runtime calls that each launch work on the GPU (a graph replay is one launch)."""


SIZES = ["default", "debug", "xs", "s", "m", "l", "xl", *JAX_SIZES]
"""The sizes :func:`dreamer_config` builds."""


def dreamer_config(size: str, device: str, run: list[str]) -> Config:
    """``default`` is the ``make run`` configuration at its own batch; the other sizes are
    the ``dreamer`` preset at a size preset (or a :data:`JAX_SIZES` entry), at B16 x T64."""
    overrides = [f"run.device={device}", *run]
    if size == "default":
        return build_config([], overrides)
    presets = ["dreamer"] + ([] if size in JAX_SIZES else [f"size_{size}"])
    batch = [f"replay.batch_size={B}", f"replay.seq_len={T}"]
    return build_config(presets, [*batch, *JAX_SIZES.get(size, []), *overrides])


def update_row(
    family: str,
    size: str,
    obs: str,
    device: str,
    batch: tuple[int, int],
    params: int,
    update: float,
    floor: float,
    counts: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    """The fields every learner row has: the eager update against the dense floor, with the
    profiled counts as mode ``eager`` (``extra``: the family's own fields, e.g. its parts)."""
    b, t = batch
    parts = {k: v for k, v in extra.items() if k.endswith("_s") and not k.endswith("floor_s")}
    return {
        "family": family,
        "size": size,
        "obs": obs,
        "device": device,
        "batch": [b, t],
        "params": params,
        "update_s": update,
        "updates_per_s": 1.0 / update,
        "replayed_steps_per_s": b * t / update,
        **extra,
        "dense_floor_s": floor,
        "ratio_to_dense_floor": update / floor,
        "modes": {
            "eager": {
                "update_s": update,
                **parts,
                **counts,
                "gpu_busy_share": counts["gpu_busy_s"] / update,
            }
        },
    }


def count_update(agent: Any, batch: dict[str, np.ndarray], state: Any) -> dict[str, Any]:
    """Operator calls (CPU), CUDA kernels, launches and busy seconds of one profiled update."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if agent.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        agent.train(batch, state)
        synchronize(agent.device)
    events = prof.events()
    kernels = [e for e in events if e.device_type == DeviceType.CUDA]
    spans = sorted((e.time_range.start, e.time_range.end) for e in kernels)
    busy_us, reach = 0.0, float("-inf")
    for begin, end in spans:  # the union of the kernels' intervals
        busy_us += max(0.0, end - max(begin, reach))
        reach = max(reach, end)
    return {
        "op_calls": sum(1 for e in events if e.name.startswith("aten::")),
        "cuda_kernels": len(kernels),
        "cuda_launches": sum(1 for e in events if e.name.startswith(LAUNCH_APIS)),
        "gpu_busy_s": busy_us / 1e6,
    }


def update_flops(agent: Any, batch: dict[str, np.ndarray], state: Any) -> float:
    """Floating-point operations of one eager update (matrix products and convolutions, as
    torch's FLOP counter counts them): the arithmetic of the update as written."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        agent.train(batch, state)
    return float(counter.get_total_flops())


def gemm_rate(device: str, precision: str, repeats: int = 10) -> float:
    """FLOP/s of one large square matrix product at ``precision`` on ``device`` (n = 1024 on a
    CPU, 8192 on a GPU): the machine's matrix-product peak, at which an update's FLOPs give the
    time its matrix products alone would take."""
    n = 8192 if device.startswith("cuda") else 1024
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        a @ b
        synchronize(torch.device(device))
        if i >= 2:
            times.append(time.perf_counter() - start)
    return 2 * n**3 / median(times)


def time_updates(
    size: str, obs: str, device: str, repeats: int, run: list[str]
) -> tuple[Any, list[float], list[float], list[float], float, dict[str, Any]]:
    """(agent, update seconds, world-model seconds, actor-critic seconds, warm-up seconds,
    counts of one profiled update)."""
    config = dreamer_config(size, device, run)
    obs_space, act_space = spaces(obs)
    agent = create_model("dreamer", obs_space, act_space, config)
    batch = fake_batch(
        obs, np.random.default_rng(0), config.replay.batch_size, config.replay.seq_len
    )
    state = agent.init_train(config.replay.batch_size)
    start = time.perf_counter()
    for _ in range(3):  # compiled: the compilation; captured: recording the CUDA graphs
        state, _ = agent.train(batch, state)
    synchronize(agent.device)
    warmup = time.perf_counter() - start
    totals, wm, ac = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        state, metrics = agent.train(batch, state)
        totals.append(time.perf_counter() - start)
        wm.append(metrics["time/world_model"])
        ac.append(metrics["time/actor_critic"])
    counts = count_update(agent, batch, state)
    return agent, totals, wm, ac, warmup, counts


def alternate(agents: list[Any], batch: dict[str, np.ndarray], repeats: int) -> list[list[float]]:
    """Seconds per update of each agent, the agents timed in rotation (first, second, ...,
    first, ...), so a change of the machine's load during the run hits all alike."""
    times: list[list[float]] = [[] for _ in agents]
    states = [agent.init_train(batch["action"].shape[0]) for agent in agents]
    for _ in range(max(repeats, 3)):
        for i, agent in enumerate(agents):
            start = time.perf_counter()
            states[i], _ = agent.train(batch, states[i])
            synchronize(agent.device)
            times[i].append(time.perf_counter() - start)
    return times


def bench(
    size: str,
    obs: str,
    device: str,
    repeats: int,
    modes: list[str],
    precision: str = "fp32",
) -> dict[str, Any]:
    """One size: the eager update and the dense floor, then each other mode in the same run."""
    run = [f"run.precision={precision}"] + (
        ["run.channels_last=true"] if precision == "bf16" else []
    )
    agent, totals, wm, ac, _, counts = time_updates(
        size, obs, device, repeats, run + MODES["eager"]
    )
    config = agent.config
    b, t = config.replay.batch_size, config.replay.seq_len
    params = agent.param_counts()["total"]
    update = median(totals)
    floor = dense_floor(params, device, repeats, rows=b * t)
    batch = fake_batch(obs, np.random.default_rng(0), b, t)  # the batch time_updates trains on
    flops = update_flops(agent, batch, None)
    rate = gemm_rate(device, precision)
    row = update_row(
        "dreamer", size, obs, device, (b, t), params, update, floor, counts,
        precision=precision, world_model_s=median(wm), actor_critic_s=median(ac),
        world_model_share=median(wm) / (median(wm) + median(ac)),
        gflop=flops / 1e9, gemm_rate_gflops=rate / 1e9, flop_floor_s=flops / rate,
    )  # fmt: skip
    for mode in modes:
        if mode == "eager" or (mode == "captured" and not device.startswith("cuda")):
            continue  # CUDA graphs need a GPU
        other, _, wm, ac, warmup, counts = time_updates(
            size, obs, device, repeats, run + MODES[mode]
        )
        eager_times, mode_times = alternate([agent, other], batch, repeats)
        seconds, eager_seconds = median(mode_times), median(eager_times)
        row["modes"][mode] = {
            "update_s": seconds,
            "world_model_s": median(wm),
            "actor_critic_s": median(ac),
            "warmup_s": warmup,
            "eager_alternated_s": eager_seconds,
            "speedup": eager_seconds / seconds,
            **counts,
            "gpu_busy_share": counts["gpu_busy_s"] / seconds,
        }
        if mode == "compiled":  # the fields the expected-speed table has read since issue 7
            row.update(
                compiled_update_s=seconds,
                compile_warmup_s=warmup,
                compile_speedup=eager_seconds / seconds,
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


def iris_config(size: str, device: str, run: list[str] | None = None) -> Config:
    """IRIS at ``size`` (``debug`` or ``paper``) with all three parts training from update 0.

    The env preset comes first: ``atari`` sets ``replay.seq_len`` 64 (Dreamer's T), and the
    family preset after it sets IRIS's own 20 (``wm-ray show-config`` shows who set what).
    """
    presets = ["atari", "iris"] + (["iris_debug"] if size == "debug" else [])
    starts = [f"iris.start.{part}=0" for part in ("tokenizer", "world_model", "actor_critic")]
    return build_config(presets, [f"run.device={device}", *starts, *(run or [])])


def time_iris(
    size: str, device: str, repeats: int, run: list[str]
) -> tuple[Any, dict[str, list[float]], float, dict[str, Any]]:
    """(agent, seconds of the update and of each part, warm-up seconds, counts of one
    profiled update)."""
    config = iris_config(size, device, run)
    b, t = config.replay.batch_size, config.replay.seq_len
    obs_space, act_space = spaces("image")
    agent = create_model("iris", obs_space, act_space, config)
    batch = iris_batch(b, t, int(act_space.n), np.random.default_rng(0))  # type: ignore[attr-defined]
    state = agent.init_train(b)
    start = time.perf_counter()
    for _ in range(2):  # compiled: the compilation; captured: recording the CUDA graph
        state, _ = agent.train(batch, state)
    synchronize(agent.device)
    warmup = time.perf_counter() - start
    times: dict[str, list[float]] = {
        "update": [], "tokenizer": [], "world_model": [], "actor_critic": []
    }  # fmt: skip
    for _ in range(repeats):
        start = time.perf_counter()
        state, metrics = agent.train(batch, state)
        times["update"].append(time.perf_counter() - start)
        for part in ("tokenizer", "world_model", "actor_critic"):
            times[part].append(metrics[f"time/{part}"])
    return agent, times, warmup, count_update(agent, batch, state)


def bench_iris(
    size: str, device: str, repeats: int, modes: list[str] | None = None
) -> dict[str, Any]:
    """One IRIS size: the eager update and the dense floor, then each other mode (the
    imagination's token step compiled, or each imagined frame a CUDA-graph replay)."""
    agent, times, _, counts = time_iris(size, device, repeats, MODES["eager"])
    b, t = agent.config.replay.batch_size, agent.config.replay.seq_len
    params = agent.param_counts()["total"]
    update = median(times["update"])
    floor = dense_floor(params, device, repeats, rows=b * t)
    parts = {
        f"{part}_s": median(times[part]) for part in ("tokenizer", "world_model", "actor_critic")
    }
    row = update_row("iris", size, "image", device, (b, t), params, update, floor, counts, **parts)
    for mode in modes or []:
        if mode == "eager" or (mode == "captured" and not device.startswith("cuda")):
            continue  # CUDA graphs need a GPU
        _, times, warmup, counts = time_iris(size, device, repeats, MODES[mode])
        seconds = median(times["update"])
        imagination = median(times["actor_critic"])
        row["modes"][mode] = {
            "update_s": seconds,
            **{f"{part}_s": median(times[part]) for part in ("tokenizer", "world_model")},
            "actor_critic_s": imagination,
            "warmup_s": warmup,
            "speedup": update / seconds,
            "actor_critic_speedup": parts["actor_critic_s"] / imagination,
            **counts,
            "gpu_busy_share": counts["gpu_busy_s"] / seconds,
        }
    return row


GENIE_ALL = ["genie.start.dynamics=0", "genie.start.freeze_tokenizer=false"]
"""Genie's update with all three parts training (the staged schedule trains fewer)."""

PRESET_ROWS: dict[str, tuple[list[str], list[str]]] = {
    "planet": (["planet"], []),
    "modular-gru": (["modular"], ["modular.backbone=gru"]),
    "modular-lstm": (["modular"], ["modular.backbone=lstm"]),
    "modular-transformer": (["modular"], ["modular.backbone=transformer"]),
    "diamond-debug": (["diamond", "diamond_debug"], []),
    "genie-debug": (["genie", "genie_debug"], GENIE_ALL),
    "genie-small": (["genie", "genie_small"], GENIE_ALL),
    "jepa-debug": (["jepa", "jepa_debug"], []),
    "jepa-small": (["jepa", "jepa_small"], []),
    "jepa": (["jepa"], []),
}
"""``--families presets``: label -> (presets, overrides) of the configurations timed, each the
one a learning run of the README uses (family from its ``run.model``), at its own batch, on
vector observations where the family reads them, else 64x64 images."""


def preset_batch(
    obs: str, act_space: gym.Space, b: int, t: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """:func:`fake_batch` with actions of ``act_space`` (discrete indices or a Box in [-1, 1])."""
    batch = fake_batch(obs, rng, b, t)
    if isinstance(act_space, gym.spaces.Box):
        shape = (b, t, *act_space.shape)
        batch["action"] = rng.uniform(-1, 1, shape).astype(np.float32)
    return batch


def bench_preset(label: str, device: str, repeats: int) -> dict[str, Any]:
    """The eager update of one :data:`PRESET_ROWS` configuration and the dense floor; the
    family's own ``time/*`` metrics give the seconds of its parts."""
    from wm_ray.registry import get_model_spec

    presets, overrides = PRESET_ROWS[label]
    config = build_config(presets, [f"run.device={device}", *overrides])
    family = config.run.model
    caps = get_model_spec(family).capabilities
    obs = "vector" if "vector" in caps.observations else "image"
    obs_space, act_space = spaces(obs)
    if "discrete" not in caps.actions:
        act_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    agent = create_model(family, obs_space, act_space, config)
    b, t = config.replay.batch_size, config.replay.seq_len
    batch = preset_batch(obs, act_space, b, t, np.random.default_rng(0))
    state = agent.init_train(b)
    for _ in range(2):
        state, _ = agent.train(batch, state)
    totals, parts = [], {}
    for _ in range(repeats):
        start = time.perf_counter()
        state, metrics = agent.train(batch, state)
        totals.append(time.perf_counter() - start)
        for key, value in metrics.items():
            if key.startswith("time/"):
                parts.setdefault(f"{key[5:]}_s", []).append(value)
    counts = count_update(agent, batch, state)
    params = agent.param_counts()["total"]
    update = median(totals)
    floor = dense_floor(params, device, repeats, rows=b * t)
    return update_row(
        family, label, obs, device, (b, t), params, update, floor, counts,
        presets=presets, overrides=overrides,
        action="discrete" if isinstance(act_space, gym.spaces.Discrete) else "continuous",
        **{key: median(values) for key, values in parts.items()},
    )  # fmt: skip


def summary_line(row: dict[str, Any]) -> str:
    b, t = row["batch"]
    line = (
        f"{row['family']} {row['size']:6s} {row['obs']:6s} {row.get('precision', 'fp32')} "
        f"B{b}xT{t} "
        f"{row['params']:>11,} params  {row['update_s'] * 1e3:8.1f} ms/update  "
        f"{row['ratio_to_dense_floor']:5.1f}x dense floor"
    )
    for mode, m in row["modes"].items():
        launches = f", {m['cuda_launches']:,} launches" if m["cuda_kernels"] else ""
        line += (
            f"\n    {mode:8s} {m['update_s'] * 1e3:8.1f} ms  {m['op_calls']:,} op calls{launches}"
        )
        if mode != "eager":
            line += f"  {m['speedup']:.2f}x eager (warm-up {m['warmup_s']:.0f} s)"
    return line


def parser() -> argparse.ArgumentParser:
    gpu = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--families", nargs="+", default=["dreamer", "iris"],
                   choices=["dreamer", "iris", "presets"],
                   help="presets: the learning runs' configurations of other families "
                   "(--preset-rows)")  # fmt: skip
    p.add_argument("--preset-rows", nargs="+", default=list(PRESET_ROWS),
                   choices=list(PRESET_ROWS))  # fmt: skip
    p.add_argument("--sizes", nargs="+", default=["debug", "xs", "s", "m", "l"] if gpu
                   else ["debug", "xs"],
                   choices=SIZES)  # fmt: skip
    p.add_argument("--obs", nargs="+", default=["vector", "image"], choices=["vector", "image"])
    p.add_argument("--iris-sizes", nargs="+", default=["debug", "paper"] if gpu
                   else ["debug"], choices=["debug", "paper"])  # fmt: skip
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--modes", nargs="+", default=["eager"], choices=list(MODES),
                   help="learner modes timed after eager in the same run")  # fmt: skip
    p.add_argument("--compile", action="store_true", help="the same as --modes eager compiled")
    p.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    p.add_argument("--device", default="cuda" if gpu else "cpu")
    p.add_argument("--out", type=Path, default=None, help="Dreamer JSON path")
    p.add_argument(
        "--merge",
        action="store_true",
        help="keep the rows of the existing result files that this run does not redo (same "
        "size, observations and precision; of a redone row, the modes it does not time), so "
        "several shorter runs add up to one table",
    )
    return p


def merged(name: str, rows: list[dict[str, Any]], out: Path | None) -> list[dict[str, Any]]:
    """``rows`` after the rows of the existing ``name`` result that they do not replace."""
    path = out or Path(__file__).resolve().parent / "results" / machine_tag() / f"{name}.json"
    if not path.is_file():
        return rows

    def key(row: dict[str, Any]) -> tuple[Any, ...]:
        return (row.get("family"), row["size"], row["obs"], row.get("precision", "fp32"))

    old = {key(row): row for row in json.loads(path.read_text())["results"]}
    result = []
    for row in rows:  # a redone row keeps the modes this run did not time
        before = old.pop(key(row), None)
        if before is not None and "modes" in row:
            row = {**row, "modes": {**before.get("modes", {}), **row["modes"]}}
        result.append(row)
    return list(old.values()) + result


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    modes = list(dict.fromkeys(["eager", *args.modes, *(["compiled"] if args.compile else [])]))
    setup = {"batch": [B, T], "repeats": args.repeats, "device": args.device, "modes": modes}
    if "dreamer" in args.families:
        rows = []
        for size in args.sizes:
            for obs in args.obs:
                for precision in args.precision:
                    row = bench(size, obs, args.device, args.repeats, modes, precision)
                    rows.append(row)
                    print(summary_line(row), flush=True)
        if args.merge:
            rows = merged("learner", rows, args.out)
        path = write_result("learner", {"setup": setup, "results": rows}, args.out)
        print(f"wrote {path}")
    if "presets" in args.families:
        rows = []
        for label in args.preset_rows:
            row = bench_preset(label, args.device, args.repeats)
            rows.append(row)
            print(summary_line(row), flush=True)
        if args.merge:
            rows = merged("learner_presets", rows, None)
        path = write_result("learner_presets", {"setup": setup, "results": rows})
        print(f"wrote {path}")
    if "iris" in args.families:
        rows = []
        for size in args.iris_sizes:
            row = bench_iris(size, args.device, args.repeats, modes)
            rows.append(row)
            print(
                f"iris {size:5s} B{row['batch'][0]}xT{row['batch'][1]} "
                f"{row['params']:>11,} params  "
                f"{row['updates_per_s']:7.2f} updates/s  tokenizer {row['tokenizer_s'] * 1e3:.1f} "
                f"ms  wm {row['world_model_s'] * 1e3:.1f} ms  ac {row['actor_critic_s'] * 1e3:.1f} "
                f"ms  {row['ratio_to_dense_floor']:5.1f}x dense floor",
                flush=True,
            )
            for mode, m in row["modes"].items():
                if mode != "eager":
                    print(
                        f"    {mode:8s} {m['update_s'] * 1e3:8.1f} ms/update, actor-critic "
                        f"(imagination) {m['actor_critic_s'] * 1e3:.1f} ms: "
                        f"{m['actor_critic_speedup']:.2f}x eager (warm-up {m['warmup_s']:.0f} s)",
                        flush=True,
                    )
        setup = {"repeats": args.repeats, "device": args.device, "modes": modes}
        if args.merge:
            rows = merged("learner_iris", rows, None)
        path = write_result("learner_iris", {"setup": setup, "results": rows})
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
