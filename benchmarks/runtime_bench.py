"""Ray runtime costs: env-worker overhead, 1 -> 2 worker scaling, weight latency, learner prefetch.

    python benchmarks/runtime_bench.py [--steps 20000] [--dreamer-steps 10000] [--repeats 3]
                                       [--updates 20] [--publishes 20] [--models random dreamer]
                                       [--quick] [--set k=v ...] [--out PATH]

Runs on a fresh local Ray cluster started here (``num_cpus = max(2, os.cpu_count())``, no
dashboard), on CartPole-v1 vector observations with 4 envs per worker, ``chunk_len`` 64, in-memory
replay shards and Dreamer at ``size_debug`` on the CPU. Every actor is warmed up before it is timed
(actor start-up and the torch import are excluded); timings are wall clock in this process around
``ray.get`` of the remote call(s); figures are medians over ``--repeats``, with every repeat kept
under ``repeats_raw``. ``--quick`` runs every part at a tiny scale (a smoke test; its JSON goes to
the temp directory unless ``--out`` is given); most of its time is actor start-up.

1. Env-worker overhead: steps/s of ``EnvWorker.collect(steps)`` (batched policy call per vector
   step, chunking, async adds to one shard, drained before it returns) against the baseline, a
   plain 1-CPU Ray actor that builds the same ``make_vector_env(config.env, seed)`` and steps it
   with random batched actions for the same number of steps (no policy, no replay).
   ``ratio = worker / raw`` (goal >= 0.9 for ``run.model=random``, which isolates the runtime;
   with Dreamer the ratio also holds the policy's inference cost).
2. Scaling: aggregate steps/s of K=1 and K=2 env workers (each its own vector env and CPU, both
   streaming to the same 2 shards) for the same total steps, alternating (two workers exist
   throughout; K=1 runs worker 0 alone); ``ratio = K2 / K1`` (ideally ~2 on 2 free cores).
3. Weight publish-to-use latency: this process publishes Dreamer's acting weights as version v to
   a ``WeightStore`` (as ``Learner._publish`` does), then calls ``EnvWorker.pull_weights`` until it
   returns True; median and p90 of publish, pull and total, plus the weights' size.
4. Learner prefetch: ``Learner.train(N)`` of Dreamer (B16 x T32) on two shards prefilled by an env
   worker, with ``prefetch=True`` and ``prefetch=False`` (alternating); updates/s, replayed
   steps/s and ``ratio = prefetch / no prefetch``. ``prefetch_ceiling`` is the ratio perfect
   overlap would give: no-prefetch update time / (that time - one batch's fetch time).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import pickle
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np
import ray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import median, write_result
from wm_ray.actors import (
    remote_env_worker,
    remote_learner,
    remote_replay_shard,
    remote_weight_store,
)
from wm_ray.config import Config, EnvConfig
from wm_ray.config_io import build_config, to_dict
from wm_ray.envs.vector import action_batch_sample
from wm_ray.loops.setup import make_vector_env

NAMESPACE = "wm_ray_bench"
NUM_ENVS, CHUNK = 4, 64
B, T, MIN_SIZE, SPI = 16, 32, 1024, 64.0
GOAL = 0.9


def make_config(model: str, *extra: str) -> Config:
    """CartPole-v1, 4 envs, chunk_len 64, Dreamer size_debug on the CPU, plus ``extra``.

    The ``size_debug`` preset only for Dreamer: a preset of another family is refused.
    """
    return build_config(
        ["size_debug"] if model == "dreamer" else [],
        [
            f"run.model={model}",
            "run.device=cpu",
            "env.id=CartPole-v1",
            f"env.num_envs={NUM_ENVS}",
            "env.vector=serial",
            f"replay.chunk_len={CHUNK}",
            "replay.capacity=500000",
            "replay.ram_budget=2GiB",
            f"resources.namespace={NAMESPACE}",
            "resources.cpus_per_learner=1",  # two learners (prefetch on / off) exist at once
            *extra,
        ],
    )


class RawEnvStepper:
    """Baseline actor: the worker's vector env stepped with random batched actions only."""

    def __init__(self, env: EnvConfig, seed: int) -> None:
        self.venv = make_vector_env(env, seed=seed)
        self.rng = np.random.default_rng(seed)
        self.venv.reset()

    def run(self, steps: int) -> int:
        """Step until ``steps`` env steps (whole vector steps) are taken; returns the count."""
        taken = 0
        while taken < steps:
            action = action_batch_sample(self.venv.act_space, self.venv.num_envs, self.rng)
            self.venv.step(action)
            taken += self.venv.num_envs
        return taken


class Actors:
    """Creates unique actor-name prefixes and kills what was tracked (named actors must go)."""

    def __init__(self) -> None:
        self.handles: list[Any] = []

    @staticmethod
    def prefix() -> str:
        return f"bench-{uuid.uuid4().hex[:6]}-"

    def track(self, handle: Any) -> Any:
        self.handles.append(handle)
        return handle

    def kill_all(self) -> None:
        for handle in self.handles:
            ray.kill(handle)
        self.handles.clear()


def timed(call: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """``(ray.get(call(*args)), seconds)``."""
    start = time.perf_counter()
    out = ray.get(call(*args))
    return out, time.perf_counter() - start


def collect_all(workers: list[Any], steps: int) -> list[Any]:
    """Start ``collect(steps)`` on every worker at once."""
    return [worker.collect.remote(steps) for worker in workers]


def sample_all(shards: list[Any], batch_size: int, seq_len: int) -> list[Any]:
    """One batch as a learner requests it: ``batch_size`` split evenly over the shards."""
    return [shard.sample.remote(batch_size // len(shards), seq_len) for shard in shards]


def whole_chunks(steps: int) -> int:
    """``steps`` rounded up to whole chunks of every env (no partial chunk at a call's end)."""
    unit = NUM_ENVS * CHUNK
    return max(unit, math.ceil(steps / unit) * unit)


def model_steps(model: str, args: argparse.Namespace) -> int:
    """Env steps of a timed collect: ``--dreamer-steps`` for Dreamer (slower), else ``--steps``."""
    return int(args.dreamer_steps if model == "dreamer" else args.steps)


def p90(values: list[float]) -> float:
    return float(np.percentile(values, 90))


def tree_nbytes(tree: Any) -> int:
    """Bytes of the tensors / arrays in a nested dict or list."""
    if isinstance(tree, dict):
        return sum(tree_nbytes(v) for v in tree.values())
    if isinstance(tree, (list, tuple)):
        return sum(tree_nbytes(v) for v in tree)
    if hasattr(tree, "element_size") and hasattr(tree, "numel"):
        return int(tree.element_size() * tree.numel())
    return int(getattr(tree, "nbytes", 0))


def new_worker(
    config: Config, index: int, shards: list[Any], prefix: str, weights: Any = None
) -> Any:
    cls = remote_env_worker(config, index, prefix)
    return cls.remote(config, index, shards, weights, config.resources.max_in_flight, prefix)


def new_shards(config: Config, count: int, prefix: str, actors: Actors) -> list[Any]:
    return [
        actors.track(remote_replay_shard(config, i, prefix).remote(config, i, None))
        for i in range(count)
    ]


# -- 1. env-worker overhead ----------------------------------------------------------------------


def worker_overhead(model: str, args: argparse.Namespace, raw: dict[str, Any]) -> dict[str, Any]:
    config = make_config(model, *args.set)
    actors, prefix = Actors(), Actors.prefix()
    shards = new_shards(config, 1, prefix, actors)
    worker = actors.track(new_worker(config, 0, shards, prefix))
    baseline_cls = ray.remote(RawEnvStepper).options(
        num_cpus=config.resources.cpus_per_env_worker, namespace=NAMESPACE
    )
    baseline = actors.track(baseline_cls.remote(config.env, config.run.seed))
    steps = whole_chunks(model_steps(model, args))
    warm = whole_chunks(1)
    ray.get([worker.collect.remote(warm), baseline.run.remote(warm)])
    worker_rates, raw_rates = [], []
    for _ in range(args.repeats):  # alternating, never concurrently
        taken, seconds = timed(baseline.run.remote, steps)
        raw_rates.append(taken / seconds)
        out, seconds = timed(worker.collect.remote, steps)
        if out["acked_steps"] != out["env_steps"]:
            raise RuntimeError(f"worker acknowledged {out['acked_steps']} of {out['env_steps']}")
        worker_rates.append(out["env_steps"] / seconds)
    actors.kill_all()
    raw[f"overhead_{model}"] = {"worker": worker_rates, "raw_env": raw_rates}
    ratio = median(worker_rates) / median(raw_rates)
    return {
        "model": model,
        "steps": steps,
        "worker_steps_per_s": median(worker_rates),
        "raw_env_steps_per_s": median(raw_rates),
        "ratio": ratio,
        "goal": GOAL,
        "meets_goal": ratio >= GOAL,
    }


# -- 2. scaling 1 -> 2 workers -------------------------------------------------------------------


def scaling(model: str, args: argparse.Namespace, raw: dict[str, Any]) -> dict[str, Any]:
    config = make_config(model, *args.set)
    total = 2 * whole_chunks(math.ceil(model_steps(model, args) / 2))  # K=2 split in whole chunks
    actors, prefix = Actors(), Actors.prefix()
    shards = new_shards(config, 2, prefix, actors)
    workers = [actors.track(new_worker(config, i, shards, prefix)) for i in range(2)]
    ray.get(collect_all(workers, whole_chunks(1)))
    rates: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(args.repeats):  # alternating; the idle worker holds its CPU but uses none
        for k in (1, 2):
            outs, seconds = timed(collect_all, workers[:k], total // k)
            rates[k].append(sum(o["env_steps"] for o in outs) / seconds)
    actors.kill_all()
    raw[f"scaling_{model}"] = {"k1": rates[1], "k2": rates[2]}
    return {
        "model": model,
        "total_steps": total,
        "shards": 2,
        "k1_steps_per_s": median(rates[1]),
        "k2_steps_per_s": median(rates[2]),
        "ratio": median(rates[2]) / median(rates[1]),
    }


# -- 3. weight publish-to-use latency ------------------------------------------------------------


def weight_latency(args: argparse.Namespace, raw: dict[str, Any]) -> dict[str, Any]:
    from wm_ray.factory import create_model

    config = make_config("dreamer", *args.set)
    actors, prefix = Actors(), Actors.prefix()
    shards = new_shards(config, 1, prefix, actors)
    store = actors.track(remote_weight_store(config, prefix).remote())
    worker = actors.track(new_worker(config, 0, shards, prefix, weights=store))
    venv = make_vector_env(config.env, seed=config.run.seed, num_envs=1)
    try:
        agent = create_model("dreamer", venv.obs_space, venv.act_space, config)
    finally:
        venv.close()
    weights = agent.acting_weights()
    ray.get(worker.ping.remote())
    warmup = 2
    publish_s, pull_s, total_s = [], [], []
    version = -1
    for version in range(warmup + args.publishes):
        start = time.perf_counter()
        ray.get(store.publish.remote(version, weights))
        published = time.perf_counter()
        if not ray.get(worker.pull_weights.remote()):
            raise RuntimeError(f"the worker did not load weight version {version}")
        loaded = time.perf_counter()
        if version >= warmup:
            publish_s.append(published - start)
            pull_s.append(loaded - published)
            total_s.append(loaded - start)
    used = ray.get(worker.collect.remote(NUM_ENVS))["weights_version"]
    actors.kill_all()
    if used != version:
        raise RuntimeError(f"the worker acts with version {used}, not the last one {version}")
    raw["weight_latency"] = {"publish": publish_s, "pull": pull_s, "total": total_s}
    ms = 1e3
    return {
        "publishes": args.publishes,
        "weights_tensor_bytes": tree_nbytes(weights),
        "weights_pickled_bytes": len(pickle.dumps(weights)),
        "worker_weights_version": used,
        "total_ms_median": median(total_s) * ms,
        "total_ms_p90": p90(total_s) * ms,
        "publish_ms_median": median(publish_s) * ms,
        "publish_ms_p90": p90(publish_s) * ms,
        "pull_ms_median": median(pull_s) * ms,
        "pull_ms_p90": p90(pull_s) * ms,
    }


# -- 4. learner with and without prefetch --------------------------------------------------------


def learner_prefetch(args: argparse.Namespace, raw: dict[str, Any]) -> dict[str, Any]:
    config = make_config(
        "dreamer",
        f"replay.batch_size={B}",
        f"replay.seq_len={T}",
        f"replay.min_size={MIN_SIZE}",
        f"replay.samples_per_insert={SPI}",
        *args.set,
    )
    batch = config.replay.batch_size * config.replay.seq_len
    warmup = args.learner_warmup
    needed = 2 * (warmup + args.repeats * args.updates)  # both learners draw on the same debt
    steps = whole_chunks(
        config.replay.min_size + math.ceil(1.25 * needed * batch / config.replay.samples_per_insert)
    )
    actors, prefix = Actors(), Actors.prefix()
    shards = new_shards(config, 2, prefix, actors)
    filler_config = dataclasses.replace(config, run=dataclasses.replace(config.run, model="random"))
    filler = new_worker(filler_config, 0, shards, prefix)
    ray.get(filler.collect.remote(steps))
    ray.kill(filler)  # frees its CPU for the learners
    stats = ray.get([s.stats.remote() for s in shards])
    inserted = sum(s["limiter_inserts"] for s in stats)
    owed = int((config.replay.samples_per_insert * (inserted - config.replay.min_size)) // batch)
    if owed < needed:
        raise RuntimeError(f"only {owed} updates owed after prefill, {needed} needed")
    learners = {}
    for flag in (False, True):
        cls = remote_learner(config, prefix, name=f"{prefix}learner-prefetch-{flag}")
        learners[flag] = actors.track(cls.remote(config, shards, None, 1, None, prefetch=flag))
    for flag, learner in learners.items():
        done = ray.get(learner.train.remote(warmup))["updates"]
        if done != warmup:
            raise RuntimeError(f"warm-up ran {done} of {warmup} updates (prefetch={flag})")
    rates: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeats):
        for flag, learner in learners.items():
            out, seconds = timed(learner.train.remote, args.updates)
            if out["updates"] != args.updates:
                raise RuntimeError(f"ran {out['updates']} of {args.updates} updates")
            rates[flag].append(out["updates"] / seconds)
    # One batch's fetch as the learner issues it (B split over the shards, in parallel).
    fetch_s = []
    for _ in range(5):
        _, seconds = timed(sample_all, shards, config.replay.batch_size, config.replay.seq_len)
        fetch_s.append(seconds)
    actors.kill_all()
    raw["learner"] = {"no_prefetch": rates[False], "prefetch": rates[True], "fetch_s": fetch_s}
    off, on = median(rates[False]), median(rates[True])
    update_s = 1.0 / off
    fetch = median(fetch_s)
    return {
        "batch": [config.replay.batch_size, config.replay.seq_len],
        "updates_per_call": args.updates,
        "min_size": config.replay.min_size,
        "samples_per_insert": config.replay.samples_per_insert,
        "prefill_steps": steps,
        "owed_after_prefill": owed,
        "no_prefetch_updates_per_s": off,
        "prefetch_updates_per_s": on,
        "no_prefetch_replayed_steps_per_s": off * batch,
        "prefetch_replayed_steps_per_s": on * batch,
        "ratio": on / off,
        "batch_fetch_ms": fetch * 1e3,
        "prefetch_ceiling": update_s / max(update_s - fetch, 1e-9),
    }


# -- main ----------------------------------------------------------------------------------------


def summary(result: dict[str, Any]) -> list[str]:
    lines = []
    for row in result["env_worker_overhead"]:
        lines.append(
            f"env worker {row['model']:>7}: {row['worker_steps_per_s']:>9,.0f} steps/s vs raw env "
            f"{row['raw_env_steps_per_s']:>9,.0f} -> {row['ratio']:.2f} (goal >= {GOAL})"
        )
    for row in result["scaling"]:
        lines.append(
            f"scaling    {row['model']:>7}: K1 {row['k1_steps_per_s']:>9,.0f}  K2 "
            f"{row['k2_steps_per_s']:>9,.0f} steps/s -> {row['ratio']:.2f}x"
        )
    w = result["weight_latency"]
    lines.append(
        f"weights publish->use: median {w['total_ms_median']:.1f} ms, p90 {w['total_ms_p90']:.1f} "
        f"ms (publish {w['publish_ms_median']:.1f}, pull {w['pull_ms_median']:.1f}); "
        f"{w['weights_tensor_bytes']:,} bytes"
    )
    lr = result["learner_prefetch"]
    lines.append(
        f"learner B{lr['batch'][0]}xT{lr['batch'][1]}: no prefetch "
        f"{lr['no_prefetch_updates_per_s']:.2f} upd/s, prefetch {lr['prefetch_updates_per_s']:.2f} "
        f"upd/s -> {lr['ratio']:.2f}x (fetch {lr['batch_fetch_ms']:.1f} ms, ceiling "
        f"{lr['prefetch_ceiling']:.2f}x)"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20_000, help="env steps per timed measurement")
    parser.add_argument("--dreamer-steps", type=int, default=10_000, help="the same, for Dreamer")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--updates", type=int, default=20, help="learner updates per timed call")
    parser.add_argument("--publishes", type=int, default=20, help="timed weight publishes")
    parser.add_argument("--models", nargs="+", default=["random", "dreamer"])
    parser.add_argument("--quick", action="store_true", help="tiny scale, for smoke use")
    parser.add_argument("--set", nargs="*", default=[], metavar="K=V", help="config overrides")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.learner_warmup = 2
    if args.quick:
        args.steps, args.repeats, args.updates, args.publishes = 1024, 1, 2, 3
        args.dreamer_steps = 1024
        args.learner_warmup = 1
    if args.out is None and args.quick:  # keep smoke figures out of the real result file
        args.out = Path(tempfile.gettempdir()) / "wm_ray_bench" / "runtime.json"

    started = time.perf_counter()
    ray.init(
        address="local",
        num_cpus=max(2, os.cpu_count() or 1),
        include_dashboard=False,
        log_to_driver=False,
        namespace=NAMESPACE,
    )
    raw: dict[str, Any] = {}
    seconds: dict[str, float] = {}

    def section(name: str, fn: Callable[..., Any], *fn_args: Any) -> Any:
        print(f"{name} ...", end=" ", flush=True)
        start = time.perf_counter()
        out = fn(*fn_args, args, raw)
        seconds[name] = time.perf_counter() - start
        print(f"{seconds[name]:.1f} s", flush=True)
        return out

    try:
        result: dict[str, Any] = {
            "env_worker_overhead": [
                section(f"env-worker overhead, {m}", worker_overhead, m) for m in args.models
            ],
            "scaling": [section(f"scaling 1 -> 2 workers, {m}", scaling, m) for m in args.models],
            "weight_latency": section("weight publish-to-use latency", weight_latency),
            "learner_prefetch": section("learner with / without prefetch", learner_prefetch),
        }
    finally:
        ray.shutdown()
    result["setup"] = {
        "steps": args.steps,
        "dreamer_steps": args.dreamer_steps,
        "repeats": args.repeats,
        "updates": args.updates,
        "learner_warmup": args.learner_warmup,
        "publishes": args.publishes,
        "quick": args.quick,
        "ray_num_cpus": max(2, os.cpu_count() or 1),
        "wall_s": time.perf_counter() - started,
        "section_wall_s": seconds,
        "config": to_dict(make_config("dreamer", *args.set)),
    }
    result["repeats_raw"] = raw
    path = write_result("runtime", result, args.out)
    print("\n".join(summary(result)))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
