"""Peer benchmark: wm_ray's Dreamer against RLlib's DreamerV3 (Ray 2.60, torch) on the CPU.

    python benchmarks/peer_rllib_bench.py [--sizes mini xs] [--batch 16 64] [--repeats 5]
                                          [--warmup 2] [--threads N] [--skip-updates]
                                          [--skip-learning] [--budget-minutes 15] [--target 400]
                                          [--rllib-training-ratio 1024 ...] [--merge] [--out PATH]

Both systems run in this one process tree on the same machine in the same run, with the same
torch intra-op thread count (``--threads``, default: all cores), on the CPU.

1. ms per update at a matched size. RLlib: ``DreamerV3Config`` on CartPole-v1, framework torch,
   ``num_env_runners=0`` and ``num_learners=0`` (sampling and the learner in this process;
   building the algorithm still starts a local Ray instance, which idles beside both timings).
   One ``algo.train()`` fills its replay buffer (B*T random-action steps) and makes its first
   update; one B x T batch sampled from that buffer is the fixed batch of both systems. An RLlib
   update is ``algo.learner_group.update(batch=...)`` exactly as its ``training_step`` calls it
   (numpy batch in; world model + actor + critic losses, three backward passes and Adam steps,
   the critic EMA, its metrics); a wm_ray update is ``agent.train(batch)`` of
   ``create_model("dreamer", ...)`` with ``--configs dreamer size_<s>`` (DreamerV3's own settings:
   REINFORCE actor gradients for discrete actions like RLlib's, horizon 15, 255 bins), the same
   batch converted to the wm_ray step convention (same arrays). After ``--warmup`` updates of each,
   ``--repeats`` updates are timed alternately (RLlib, wm_ray, RLlib, ...), so drift of the
   machine hits both alike; figures are medians, every repeat kept. Sizes: ``xs`` = RLlib
   ``XS`` vs ``size_xs`` (paper sizes, GRU 256, MLPs 256 x 1, 32x32 latents), likewise ``s``,
   ``m``, ``l``; ``mini`` = RLlib ``mini`` (GRU 64, MLPs 64 x 1, 16x16 latents) vs ``size_debug``
   with ``rssm.stoch=16 rssm.classes=16``. Parameter counts (trainable, without the critic's EMA
   copy) are reported per part for both. ``ratio = RLlib ms / wm_ray ms`` (issue 7 goal: >= 3 at
   a matched size on the CPU).
2. Time to eval return >= ``--target`` on CartPole-v1, each system in its own CartPole setup, with
   a wall-clock budget each (``--budget-minutes``, counted from launch, set-up included).
   wm_ray: ``wm-ray train --single-process`` with the defaults of ``make run`` (debug-size
   networks, train ratio 32, B16 x T32, 4 envs) in a child process, evaluated every
   ``--eval-every`` env steps on ``--eval-episodes`` episodes; the run is stopped (SIGTERM) at
   the target or the budget. RLlib: the ``algo.train()`` loop of RLlib's tuned CartPole example
   (``model_size="XS"``, ``training_ratio=1024``, B16 x T64; ``--rllib-learn-size``, and
   ``--rllib-training-ratio R1 R2 ...`` for one run per ratio, e.g. ``1024 32``, 32 being wm_ray's
   default replayed steps per env step; ``--rllib-fragment auto`` sets ``rollout_fragment_length``
   to B*T / ratio, without which RLlib 2.60 runs every ratio below B*T at B*T, see
   ``fragment_for``), evaluated on RLlib's own evaluation env runner (``explore=False``, the
   weights synced from the learner as ``Algorithm.evaluate`` does) every ``--eval-every`` env
   steps and, since it steps the env slowly, also every ``--rllib-eval-every-seconds``, and once
   more when the budget runs out. Evaluation time
   counts in both. Seconds are reported both from the start of the training loop (``loop_s``)
   and from launch (``wall_s``).

JSON: ``benchmarks/results/<machine>/peer_rllib.json`` (written after part 1 and after every
learning run; ``learning`` lists the runs, each with its ``name``: ``wm_ray``,
``rllib_ratio<R>[_fragment<F>]``) and a summary table ``peer_rllib.md`` beside it. Every part
records the machine's CPU seconds meanwhile (``machine_cpu_s``: ``others`` is CPU time of other
jobs, ``steal`` the hypervisor's), which tells a quiet measurement from a disturbed one.
``--merge`` keeps what an existing result file holds and this invocation does not redo (e.g.
rerun only wm_ray's learning run with ``--skip-updates --merge --rllib-training-ratio``); a run
found disturbed can be moved by hand from ``learning`` to ``disturbed_runs``, which the summary
lists as not counted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine_tag, median, write_result
from wm_ray.config_io import build_config
from wm_ray.factory import create_model

ENV_ID = "CartPole-v1"
GOAL = 3.0
# size name -> (RLlib model_size, wm_ray presets after "dreamer", wm_ray overrides)
SIZES: dict[str, tuple[str, list[str], list[str]]] = {
    "mini": ("mini", ["size_debug"], ["dreamer.rssm.stoch=16", "dreamer.rssm.classes=16"]),
    "xs": ("XS", ["size_xs"], []),
    "s": ("S", ["size_s"], []),
    "m": ("M", ["size_m"], []),
    "l": ("L", ["size_l"], []),
}
PARTS = ("encoder", "rssm", "decoder", "reward", "cont", "actor", "critic")


# ------------------------------------------------------------------------------------ RLlib


def quiet_rllib() -> None:
    """Keep RLlib's and gymnasium's start-up chatter out of the benchmark's output."""
    warnings.filterwarnings("ignore")
    for name in ("ray", "ray.rllib", "ray.tune"):
        logging.getLogger(name).setLevel(logging.ERROR)


def start_ray() -> None:
    """A local Ray instance without dashboard (RLlib's Algorithm would start one anyway)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=os.cpu_count() or 1,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
        )


def stop_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def build_rllib(
    model_size: str,
    batch: tuple[int, int],
    training_ratio: float,
    seed: int,
    eval_episodes: int,
    rollout_fragment_length: int = 1,
) -> Any:
    """RLlib's DreamerV3 on CartPole-v1, torch, everything local to this process."""
    from ray.rllib.algorithms.dreamerv3 import DreamerV3Config

    start_ray()
    config = (
        DreamerV3Config()
        .environment(ENV_ID)
        .framework("torch")
        .training(
            model_size=model_size,
            batch_size_B=batch[0],
            batch_length_T=batch[1],
            training_ratio=training_ratio,
        )
        .env_runners(num_env_runners=0, rollout_fragment_length=rollout_fragment_length)
        .learners(num_learners=0)
        # An interval this large never triggers RLlib's own schedule, but makes the algorithm
        # build a local evaluation env runner (explore=False), which rllib_eval() samples.
        .evaluation(
            evaluation_interval=10**9,
            evaluation_duration=eval_episodes,
            evaluation_duration_unit="episodes",
            evaluation_num_env_runners=0,
        )
        .debugging(seed=seed, log_level="ERROR")
    )
    build = getattr(config, "build_algo", None) or config.build
    return build()


def rllib_module(algo: Any) -> Any:
    from ray.rllib.core import DEFAULT_MODULE_ID

    return algo.learner_group._learner.module[DEFAULT_MODULE_ID].unwrapped()


def trainable(*modules: Any) -> int:
    """Trainable parameters of ``modules``. RLlib's critic keeps its EMA copy as parameters
    (``mlp_ema``, ``return_layer_ema``) whose ``requires_grad`` its imagination code switches
    back on; they never get gradients and are left out by name, like wm_ray's slow critic."""
    return sum(
        p.numel()
        for m in modules
        for name, p in m.named_parameters()
        if p.requires_grad and "_ema" not in name
    )


def rllib_param_counts(algo: Any) -> dict[str, int]:
    """Trainable parameters per part, named like wm_ray's ``param_counts`` (the actor's
    return-percentile EMAs are parameters without gradients, not counted)."""
    module = rllib_module(algo)
    wm = module.world_model
    counts = {
        "encoder": trainable(wm.encoder),
        "rssm": trainable(
            wm.posterior_mlp,
            wm.posterior_representation_layer,
            wm.dynamics_predictor,
            wm.sequence_model,
        )
        + wm.initial_h.numel(),
        "decoder": trainable(wm.decoder),
        "reward": trainable(wm.reward_predictor),
        "cont": trainable(wm.continue_predictor),
        "actor": trainable(module.actor),
        "critic": trainable(module.critic),
    }
    counts["total"] = sum(counts.values())
    whole = trainable(wm, module.actor, module.critic)
    if whole != counts["total"]:
        counts["unassigned"] = whole - counts["total"]
    return counts


def rllib_batch(sample: dict[str, np.ndarray], num_actions: int) -> Any:
    """The multi-agent batch RLlib's training_step hands its learner group (one-hot actions)."""
    from ray.rllib.policy.sample_batch import SampleBatch
    from ray.rllib.utils.numpy import one_hot

    data = {key: value.copy() for key, value in sample.items()}
    data["actions_ints"] = data["actions"]
    data["actions"] = one_hot(data["actions_ints"], depth=num_actions)
    return SampleBatch(data).as_multi_agent()


def rllib_update(algo: Any, sample: dict[str, np.ndarray], num_actions: int) -> float:
    """Seconds of one ``learner_group.update`` on ``sample`` (batch prepared before the clock)."""
    from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

    batch = rllib_batch(sample, num_actions)
    start = time.perf_counter()
    algo.learner_group.update(batch=batch, timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: 0})
    return time.perf_counter() - start


def rllib_eval(algo: Any, episodes: int) -> list[float]:
    """Returns of ``episodes`` episodes on RLlib's evaluation env runner, greedy actions."""
    algo.eval_env_runner_group.sync_weights(
        from_worker_or_learner_group=algo.learner_group, inference_only=True
    )
    done = algo.eval_env_runner.sample(num_episodes=episodes, explore=False)
    return [float(e.get_return()) for e in done][:episodes]


# ----------------------------------------------------------------------------------- wm_ray


def wm_ray_agent(size: str, batch: tuple[int, int], seed: int, compiled: bool = False) -> Any:
    _, presets, overrides = SIZES[size]
    config = build_config(
        ["dreamer", *presets],
        [
            *overrides,
            f"run.compile={str(compiled).lower()}",
            "run.device=cpu",
            f"run.seed={seed}",
            f"replay.batch_size={batch[0]}",
            f"replay.seq_len={batch[1]}",
        ],
    )
    env = gym.make(ENV_ID)
    obs_space = gym.spaces.Dict({"vector": env.observation_space})
    act_space = env.action_space
    env.close()
    return create_model("dreamer", obs_space, act_space, config)


def wm_ray_batch(sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """RLlib's replay sample in wm_ray's step convention (``wm_ray/types.py``): the same arrays;
    both store the reward that arrived with an observation and the action chosen at it."""
    return {
        "vector": sample["obs"].astype(np.float32),
        "action": sample["actions"].astype(np.int64),
        "reward": sample["rewards"].astype(np.float32),
        "is_first": sample["is_first"].astype(bool),
        "is_last": sample["is_last"].astype(bool),
        "is_terminal": sample["is_terminated"].astype(bool),
    }


# --------------------------------------------------------------------------- part 1: updates


def bench_updates(
    size: str, batch: tuple[int, int], repeats: int, warmup: int, seed: int, compiled: bool = False
) -> dict[str, Any]:
    rllib_size = SIZES[size][0]
    # training_ratio = B*T: the first train() fills the buffer with B*T steps, then updates once.
    algo = build_rllib(rllib_size, batch, float(batch[0] * batch[1]), seed, eval_episodes=1)
    try:
        algo.train()
        sample = algo.replay_buffer.sample(batch_size_B=batch[0], batch_length_T=batch[1])
        agent = wm_ray_agent(size, batch, seed)
        num_actions = agent.act.dim
        data = wm_ray_batch(sample)
        state = agent.init_train(batch[0])

        def wm_ray_update() -> tuple[float, dict[str, float]]:
            nonlocal state
            start = time.perf_counter()
            state, metrics = agent.train(data, state)
            return time.perf_counter() - start, metrics

        fast = wm_ray_agent(size, batch, seed, compiled=True) if compiled else None
        fast_state = fast.init_train(batch[0]) if fast is not None else None

        def compiled_update() -> float:
            nonlocal fast_state
            assert fast is not None
            start = time.perf_counter()
            fast_state, _ = fast.train(data, fast_state)
            return time.perf_counter() - start

        for _ in range(warmup):
            rllib_update(algo, sample, num_actions)
            wm_ray_update()
        compile_s = sum(compiled_update() for _ in range(3)) if fast is not None else None
        rllib_s, wm_s, wm_wm, wm_ac, fast_s = [], [], [], [], []
        cpu_before = cpu_times()
        threads = set()
        for _ in range(repeats):
            rllib_s.append(rllib_update(algo, sample, num_actions))
            seconds, metrics = wm_ray_update()
            wm_s.append(seconds)
            wm_wm.append(metrics["time/world_model"])
            wm_ac.append(metrics["time/actor_critic"])
            if fast is not None:
                fast_s.append(compiled_update())
            threads.add(torch.get_num_threads())
        machine_cpu_s = cpu_delta(cpu_before)
        rllib_params = rllib_param_counts(algo)
    finally:
        algo.stop()
    wm_params = dict(agent.param_counts())
    rllib_ms, wm_ms = median(rllib_s) * 1e3, median(wm_s) * 1e3
    extra: dict[str, Any] = {}
    if fast_s:  # the compiled update, timed in the same alternation
        fast_ms = median(fast_s) * 1e3
        extra = {
            "wm_ray_compiled_update_s": fast_s,
            "wm_ray_compiled_ms_per_update": fast_ms,
            "wm_ray_compiled_first_updates_s": compile_s,
            "ratio_rllib_to_wm_ray_compiled": rllib_ms / fast_ms,
            "goal_met_compiled": rllib_ms / fast_ms >= GOAL,
        }
    return {
        "size": size,
        "rllib_model_size": rllib_size,
        "wm_ray_configs": ["dreamer", *SIZES[size][1]],
        "wm_ray_overrides": SIZES[size][2],
        "batch": list(batch),
        "torch_threads_during_timing": sorted(threads),
        "params": {"rllib": rllib_params, "wm_ray": wm_params},
        "params_ratio_rllib_to_wm_ray": rllib_params["total"] / wm_params["total"],
        "rllib_update_s": rllib_s,
        "wm_ray_update_s": wm_s,
        "wm_ray_world_model_s": wm_wm,
        "wm_ray_actor_critic_s": wm_ac,
        "rllib_ms_per_update": rllib_ms,
        "wm_ray_ms_per_update": wm_ms,
        "ratio_rllib_to_wm_ray": rllib_ms / wm_ms,
        "goal": GOAL,
        "goal_met": rllib_ms / wm_ms >= GOAL,
        "machine_cpu_s_during_timing": machine_cpu_s,
        **extra,
    }


# -------------------------------------------------------------------------- part 2: learning


def first_reaching(evals: list[dict[str, Any]], target: float) -> dict[str, Any] | None:
    return next((e for e in evals if e["eval_return"] >= target), None)


def learning_summary(
    name: str,
    settings: dict[str, Any],
    evals: list[dict[str, Any]],
    target: float,
    budget_s: float,
    total_wall_s: float,
    env_steps: int,
    **extra: Any,
) -> dict[str, Any]:
    hit = first_reaching(evals, target)
    best = max(evals, key=lambda e: e["eval_return"]) if evals else None
    return {
        "system": name,
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "settings": settings,
        "target": target,
        "budget_s": budget_s,
        "reached": hit is not None,
        "loop_s_to_target": hit["loop_s"] if hit else None,
        "wall_s_to_target": hit["wall_s"] if hit else None,
        "env_steps_to_target": hit["env_steps"] if hit else None,
        "best_eval_return": best["eval_return"] if best else None,
        "best_eval_env_steps": best["env_steps"] if best else None,
        "env_steps_done": env_steps,
        "wall_s_spent": total_wall_s,
        "evals": evals,
        **extra,
    }


def read_evals(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Eval records (env steps, loop seconds, mean return) of a run's metrics.jsonl so far."""
    evals: list[dict[str, Any]] = []
    steps = 0
    if not path.exists():
        return evals, steps
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line being written
            continue
        steps = max(steps, int(record.get("step", 0)))
        if "eval/return" in record:
            evals.append(
                {
                    "env_steps": int(record["step"]),
                    "loop_s": float(record["time"]),
                    "eval_return": float(record["eval/return"]),
                }
            )
    return evals, steps


def wm_ray_command() -> list[str]:
    script = Path(sys.executable).with_name("wm-ray")
    return [str(script)] if script.exists() else [sys.executable, "-m", "wm_ray.cli"]


def learn_wm_ray(args: argparse.Namespace) -> dict[str, Any]:
    """``wm-ray train --single-process`` (make run's defaults) until the target or the budget."""
    run_dir = Path(tempfile.mkdtemp(prefix="peer_wm_ray_"))
    overrides = [
        f"eval.every={args.eval_every}",
        f"eval.episodes={args.eval_episodes}",
        f"run.seed={args.seed}",
        *args.wm_ray_set,
    ]
    command = [
        *wm_ray_command(),
        "train",
        "--single-process",
        "--quiet",
        "--run-dir",
        str(run_dir / "run"),
        "--steps",
        str(10**8),
        *(["--configs", *args.wm_ray_configs] if args.wm_ray_configs else []),
        "--set",
        *overrides,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    budget_s = args.budget_minutes * 60
    metrics = run_dir / "run" / "metrics.jsonl"
    log = (run_dir / "stdout.log").open("w")
    cpu_before = cpu_times()
    launch = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    evals: list[dict[str, Any]] = []
    steps, seen, offset = 0, 0, None
    try:
        while True:
            now = time.perf_counter() - launch
            evals, steps = read_evals(metrics)
            for e in evals[seen:]:
                # wall_s: loop seconds plus the set-up before the loop, estimated from the first
                # record seen (poll delay included; see 'wall_s_note').
                if offset is None:
                    offset = max(now - e["loop_s"], 0.0)
                e["wall_s"] = e["loop_s"] + offset
                print(
                    f"  wm_ray  {e['env_steps']:>7,} steps  {e['loop_s']:7.1f} s  "
                    f"eval {e['eval_return']:6.1f}",
                    flush=True,
                )
            seen = len(evals)
            if first_reaching(evals, args.target) or now >= budget_s or proc.poll() is not None:
                break
            time.sleep(1.0)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # wm-ray stops like on Ctrl-C
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
    total = time.perf_counter() - launch
    tail = (run_dir / "stdout.log").read_text()[-2000:]
    failed = proc.returncode not in (0, 130, -signal.SIGTERM) and not first_reaching(
        evals, args.target
    )
    shutil.rmtree(run_dir, ignore_errors=True)
    settings = {
        "command": " ".join(["wm-ray", *command[len(wm_ray_command()) :]]).replace(
            str(run_dir / "run"), "RUN_DIR"
        ),
        "mode": "single-process (wm_ray/loops/train.py), no Ray",
        "config": "make run defaults (wm_ray/config.py): Dreamer size debug, train ratio 32, "
        "B16 x T32, 4 envs" + (f"; presets {args.wm_ray_configs}" if args.wm_ray_configs else ""),
        "overrides": overrides,
        "threads": args.threads,
    }
    return learning_summary(
        "wm_ray",
        settings,
        evals,
        args.target,
        budget_s,
        total,
        steps,
        wall_s_note="wall_s = loop_s + set-up seconds before the loop (process start, imports, "
        "envs, agent), estimated to within the 1 s poll interval",
        machine_cpu_s=cpu_delta(cpu_before),
        **({"error_tail": tail} if failed else {}),
    )


def fragment_for(training_ratio: float, batch: tuple[int, int]) -> int:
    """Env steps per ``algo.train()`` sample that make RLlib 2.60's DreamerV3 keep
    ``training_ratio``: its ``training_step`` samples ``rollout_fragment_length`` steps (one env)
    per iteration and then updates until ``B*T`` per sampled step reach the ratio, at least once.
    Its check for sampling more reads a top-level ``num_env_steps_trained_lifetime`` that the
    learner logs under ``learners/__all_modules__``, so it never samples more: with a fragment
    of 1, every ratio below ``B*T`` runs at ``B*T`` (one update per env step)."""
    return max(1, round(batch[0] * batch[1] / training_ratio))


def learn_rllib(args: argparse.Namespace, training_ratio: float, fragment: int) -> dict[str, Any]:
    """RLlib's DreamerV3 ``algo.train()`` loop until the target or the budget."""
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, EPISODE_RETURN_MEAN

    budget_s = args.budget_minutes * 60
    batch = (args.rllib_batch[0], args.rllib_batch[1])
    cpu_before = cpu_times()
    launch = time.perf_counter()
    algo = build_rllib(
        args.rllib_learn_size, batch, training_ratio, args.seed, args.eval_episodes, fragment
    )
    loop_start = time.perf_counter()
    evals: list[dict[str, Any]] = []
    train_returns: list[float] = []
    steps, iterations, updates = 0, 0, 0
    next_eval, last_eval = args.eval_every, loop_start

    def evaluate() -> dict[str, Any]:
        returns = rllib_eval(algo, args.eval_episodes)
        now = time.perf_counter()
        record = {
            "env_steps": steps,
            "loop_s": now - loop_start,
            "wall_s": now - launch,
            "eval_return": float(np.mean(returns)),
            "episodes": len(returns),
        }
        print(
            f"  rllib   {steps:>7,} steps  {record['loop_s']:7.1f} s  eval "
            f"{record['eval_return']:6.1f}  ({updates} updates)",
            flush=True,
        )
        return record

    try:
        while True:
            result = algo.train()
            iterations += 1
            runners = result.get(ENV_RUNNER_RESULTS, {})
            steps = int(result.get("num_env_steps_sampled_lifetime", 0)) or int(
                runners.get("num_env_steps_sampled_lifetime", 0)
            )
            updates = int(result.get("num_grad_updates_lifetime", 0))
            if EPISODE_RETURN_MEAN in runners and not np.isnan(runners[EPISODE_RETURN_MEAN]):
                train_returns.append(float(runners[EPISODE_RETURN_MEAN]))
            now = time.perf_counter()
            out_of_time = now - launch >= budget_s
            if (
                steps >= next_eval
                or now - last_eval >= args.rllib_eval_every_seconds
                or out_of_time
            ):
                evals.append(evaluate())
                last_eval = time.perf_counter()
                while next_eval <= steps:
                    next_eval += args.eval_every
                if evals[-1]["eval_return"] >= args.target:
                    break
            if out_of_time:
                break
    finally:
        algo.stop()
        stop_ray()
    settings = {
        "api": "DreamerV3Config().environment('CartPole-v1').framework('torch').training("
        f"model_size={args.rllib_learn_size!r}, training_ratio={training_ratio:g}, "
        f"batch_size_B={batch[0]}, batch_length_T={batch[1]}), num_env_runners=0, "
        f"rollout_fragment_length={fragment}, num_learners=0; algo.train() loop",
        "model_size": args.rllib_learn_size,
        "training_ratio": training_ratio,
        "rollout_fragment_length": fragment,
        "batch": list(batch),
        "num_envs_per_env_runner": 1,
        "eval": f"{args.eval_episodes} episodes, explore=False, every {args.eval_every} env steps "
        f"or {args.rllib_eval_every_seconds} s, and at the end of the budget",
        "threads": torch.get_num_threads(),
    }
    return learning_summary(
        "rllib",
        settings,
        evals,
        args.target,
        budget_s,
        time.perf_counter() - launch,
        steps,
        iterations=iterations,
        updates=updates,
        # replayed steps per env step after the B*T-step prefill: the ratio that really ran
        effective_training_ratio=updates
        * batch[0]
        * batch[1]
        / max(steps - batch[0] * batch[1], 1),
        build_s=loop_start - launch,
        machine_cpu_s=cpu_delta(cpu_before),
        best_train_episode_return=max(train_returns) if train_returns else None,
    )


# ------------------------------------------------------------------------------------ output


def cpu_times() -> dict[str, float]:
    """Machine-wide CPU seconds so far (Linux ``/proc/stat``; empty elsewhere)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except (OSError, ValueError):
        return {}
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "busy": (user + nice + system + irq + softirq) / tick,
        "idle": (idle + iowait) / tick,
        "steal": steal / tick,
        "benchmark": own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime,
    }


def cpu_delta(before: dict[str, float]) -> dict[str, float]:
    """CPU seconds of the whole machine since ``before``: ``busy`` (all processes), of it
    ``benchmark`` (this process and its finished children, e.g. the wm-ray run) and ``others``
    (the rest: other jobs on the machine, plus Ray's daemons while RLlib runs), ``idle``, and
    ``steal`` (vCPU time the hypervisor gave to other machines). Large ``others`` or ``steal``
    mean a distorted timing."""
    after = cpu_times()
    delta = {key: round(after[key] - before[key], 2) for key in before if key in after}
    if "busy" in delta and "benchmark" in delta:
        delta["others"] = round(max(delta["busy"] - delta["benchmark"], 0.0), 2)
    return delta


def versions() -> dict[str, str]:
    import ray

    out = {"ray": ray.__version__, "torch": torch.__version__, "gymnasium": gym.__version__}
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        out["wm_ray"] = version("wm_ray")
    return out


def fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} s"


def markdown(result: dict[str, Any]) -> str:
    setup = result["setup"]
    lines = [
        f"# Peer: wm_ray Dreamer vs RLlib DreamerV3 ({machine_tag()})",
        "",
        f"`benchmarks/peer_rllib_bench.py`, ray {setup['versions']['ray']}, torch "
        f"{setup['versions']['torch']}, {setup['threads']} torch threads for both, CPU. "
        "Raw figures: `peer_rllib.json`.",
    ]
    if result.get("updates"):
        lines += [
            "",
            "## ms per update (world model + actor + critic), CartPole-v1 vectors, "
            f"B{setup['batch'][0]} x T{setup['batch'][1]}, median of {setup['repeats']} "
            "alternating repeats",
            "",
            "| size (RLlib / wm_ray) | params RLlib | params wm_ray | RLlib ms | wm_ray ms "
            "| RLlib / wm_ray | goal >= 3x | CPU s of other jobs |",
            "|---|---|---|---|---|---|---|---|",
        ]
    for row in result.get("updates", []):
        wm_cfg = " ".join(row["wm_ray_configs"][1:] + row["wm_ray_overrides"])
        lines.append(
            f"| {row['rllib_model_size']} / {wm_cfg} | {row['params']['rllib']['total']:,} | "
            f"{row['params']['wm_ray']['total']:,} | {row['rllib_ms_per_update']:,.0f} | "
            f"{row['wm_ray_ms_per_update']:,.0f} | **{row['ratio_rllib_to_wm_ray']:.2f}x** | "
            f"{'met' if row['goal_met'] else 'not met'} | "
            f"{row.get('machine_cpu_s_during_timing', {}).get('others', '-')} |"
        )
        if "wm_ray_compiled_ms_per_update" in row:
            lines.append(
                f"| {row['rllib_model_size']} / {wm_cfg} `run.compile=true` | "
                f"{row['params']['rllib']['total']:,} | {row['params']['wm_ray']['total']:,} | "
                f"{row['rllib_ms_per_update']:,.0f} | {row['wm_ray_compiled_ms_per_update']:,.0f} "
                f"| **{row['ratio_rllib_to_wm_ray_compiled']:.2f}x** | "
                f"{'met' if row['goal_met_compiled'] else 'not met'} | (same run) |"
            )
    if result.get("updates"):
        verdicts = ", ".join(
            f"{row['ratio_rllib_to_wm_ray']:.2f}x at {row['rllib_model_size']}"
            for row in result["updates"]
        )
        met = all(row["goal_met"] for row in result["updates"])
        lines += [
            "",
            f"Issue 7 goal, a Dreamer update >= {GOAL:g}x faster than RLlib DreamerV3 at a matched "
            f"size on the CPU: **{'met' if met else 'not met'}** ({verdicts}).",
        ]
        lines += ["", "Parameters per part (RLlib / wm_ray):", ""]
        lines.append("| size | " + " | ".join(PARTS) + " |")
        lines.append("|---" * (len(PARTS) + 1) + "|")
        for row in result["updates"]:
            r, w = row["params"]["rllib"], row["params"]["wm_ray"]
            cells = [f"{r.get(p, 0):,} / {w.get(p, 0):,}" for p in PARTS]
            lines.append(f"| {row['size']} | " + " | ".join(cells) + " |")
    learning = [(run["name"], run) for run in result.get("learning") or []]
    if learning:
        first = learning[0][1]
        lines += [
            "",
            f"## Time to eval return >= {first['target']:.0f} on CartPole-v1 "
            f"(budget {first['budget_s'] / 60:g} min each)",
            "",
            "| run | settings | reached | loop s | wall s | env steps | best eval (at steps) "
            "| steps done | CPU s of other jobs | measured |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, run in learning:
            s = run["settings"]
            what = (
                f"`{s['command']}`"
                if run["system"] == "wm_ray"
                else f"{s['model_size']}, training_ratio {s['training_ratio']:g} (effective "
                f"{run.get('effective_training_ratio', float('nan')):.0f}), fragment "
                f"{s.get('rollout_fragment_length', 1)}, B{s['batch'][0]}xT{s['batch'][1]}"
            )
            best = (
                "-"
                if run["best_eval_return"] is None
                else f"{run['best_eval_return']:.1f} ({run['best_eval_env_steps']:,})"
            )
            steps = run["env_steps_to_target"]
            others = run.get("machine_cpu_s", {}).get("others")
            lines.append(
                f"| {name} | {what} | {'yes' if run['reached'] else '**not reached**'} | "
                f"{fmt_s(run['loop_s_to_target'])} | {fmt_s(run['wall_s_to_target'])} | "
                f"{'-' if steps is None else f'{steps:,}'} | {best} | {run['env_steps_done']:,} | "
                f"{'-' if others is None else f'{others:,.0f}'} | {run.get('measured_at', '-')} |"
            )
        notes = [f"- `{name}`: {run['note']}" for name, run in learning if run.get("note")]
        if notes:
            lines += ["", *notes]
        for run in result.get("disturbed_runs") or []:
            outcome = (
                f"eval >= {run['target']:g} after {run['wall_s_to_target']:,.0f} s wall, "
                f"{run['env_steps_to_target']:,} env steps"
                if run["reached"]
                else f"not reached, best {run['best_eval_return']}"
            )
            lines.append(f"- not counted, `{run['name']}` ({outcome}): {run.get('note', '')}")
        wm = next((run for name, run in learning if name == "wm_ray"), None)
        wm = wm if wm is not None and wm["reached"] else None
        for _, run in learning:
            if wm is not None and run["system"] == "rllib" and run["reached"]:
                ratio = run["wall_s_to_target"] / wm["wall_s_to_target"]
                lines += [
                    "",
                    f"Time-to-target ratio RLlib (ratio {run['settings']['training_ratio']:g}) / "
                    f"wm_ray, wall: {ratio:.2f}x.",
                ]
    return "\n".join(lines) + "\n"


def save(result: dict[str, Any], out: Path | None) -> Path:
    path = write_result("peer_rllib", result, out)
    path.with_suffix(".md").write_text(markdown(result))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["mini", "xs"], choices=sorted(SIZES))
    parser.add_argument("--batch", nargs=2, type=int, default=[16, 64], metavar=("B", "T"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--wm-ray-compiled",
        action="store_true",
        help="part 1 also times wm_ray with run.compile=true (its compilation, minutes on a "
        "CPU, runs before the timing), alternating with the other two",
    )
    parser.add_argument("--skip-updates", action="store_true", help="only part 2")
    parser.add_argument("--skip-learning", action="store_true", help="only part 1")
    parser.add_argument("--budget-minutes", type=float, default=15.0)
    parser.add_argument("--target", type=float, default=400.0)
    parser.add_argument("--eval-every", type=int, default=2500, help="env steps")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--rllib-learn-size", default="XS")
    parser.add_argument(
        "--rllib-training-ratio",
        type=float,
        nargs="*",
        default=[1024.0],
        help="one RLlib learning run per value (default: its tuned CartPole example's 1024; "
        "none: no RLlib learning run)",
    )
    parser.add_argument(
        "--rllib-fragment",
        default="auto",
        help="rollout_fragment_length of RLlib's learning runs; auto: B*T / ratio, which makes "
        "ratios below B*T take effect in RLlib 2.60 (see fragment_for); 1: RLlib's default",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the learning runs (and, with --skip-updates, the update timings) of the "
        "existing result file that this invocation does not redo",
    )
    parser.add_argument("--rllib-batch", nargs=2, type=int, default=[16, 64], metavar=("B", "T"))
    parser.add_argument("--rllib-eval-every-seconds", type=float, default=120.0)
    parser.add_argument("--wm-ray-configs", nargs="*", default=[], help="presets for part 2")
    parser.add_argument("--wm-ray-set", nargs="*", default=[], help="overrides for part 2")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    quiet_rllib()
    torch.set_num_threads(args.threads)
    batch = (args.batch[0], args.batch[1])
    result: dict[str, Any] = {
        "setup": {
            "env": ENV_ID,
            "device": "cpu",
            "threads": args.threads,
            "batch": list(batch),
            "repeats": args.repeats,
            "warmup": args.warmup,
            "seed": args.seed,
            "versions": versions(),
        },
    }
    previous: dict[str, Any] = {}
    out = (
        args.out or Path(__file__).resolve().parent / "results" / machine_tag() / "peer_rllib.json"
    )
    if args.merge and out.exists():
        previous = json.loads(out.read_text())
        if args.skip_updates and previous.get("updates"):
            result["updates"] = previous["updates"]
            result["updates_from_previous_run"] = True
        if previous.get("learning"):
            result["learning"] = list(previous["learning"])
        if previous.get("disturbed_runs"):
            result["disturbed_runs"] = previous["disturbed_runs"]
    started = time.perf_counter()
    result["setup"]["load_avg_at_start"] = list(os.getloadavg())
    if not args.skip_updates:
        result["updates"] = []
        for size in args.sizes:
            row = bench_updates(
                size, batch, args.repeats, args.warmup, args.seed, args.wm_ray_compiled
            )
            result["updates"].append(row)
            p = row["params"]
            print(
                f"{size:5s} params RLlib {p['rllib']['total']:,} / wm_ray {p['wm_ray']['total']:,}"
                f"  RLlib {row['rllib_ms_per_update']:8.1f} ms  wm_ray "
                f"{row['wm_ray_ms_per_update']:8.1f} ms  ratio {row['ratio_rllib_to_wm_ray']:.2f}x"
                f" (goal {GOAL:g}x {'met' if row['goal_met'] else 'not met'})"
                + (
                    f"; wm_ray compiled {row['wm_ray_compiled_ms_per_update']:8.1f} ms, ratio "
                    f"{row['ratio_rllib_to_wm_ray_compiled']:.2f}x"
                    if "wm_ray_compiled_ms_per_update" in row
                    else ""
                ),
                flush=True,
            )
        result["updates_wall_s"] = time.perf_counter() - started
        path = save(result, args.out)
        print(f"wrote {path}", flush=True)
    stop_ray()  # wm_ray's single-process run needs no Ray; RLlib's run starts its own again
    if not args.skip_learning:
        result["setup"]["load_avg_before_learning"] = list(os.getloadavg())
        learning_start = time.perf_counter()
        result.setdefault("learning", [])
        learners: dict[str, Callable[[], dict[str, Any]]] = {"wm_ray": partial(learn_wm_ray, args)}
        for ratio in args.rllib_training_ratio:
            if args.rllib_fragment == "auto":
                fragment = fragment_for(ratio, (args.rllib_batch[0], args.rllib_batch[1]))
            else:
                fragment = int(args.rllib_fragment)
            name = f"rllib_ratio{ratio:g}" + (f"_fragment{fragment}" if fragment > 1 else "")
            learners[name] = partial(learn_rllib, args, ratio, fragment)
        for name, learn in learners.items():
            run = {"name": name, **learn()}
            # a rerun replaces the run of the same name (--merge), in its place
            names = [r["name"] for r in result["learning"]]
            if name in names:
                result["learning"][names.index(name)] = run
            else:
                result["learning"].append(run)
            print(
                f"{run['system']}: "
                + (
                    f"eval >= {args.target:g} at {run['env_steps_to_target']:,} env steps, "
                    f"{run['loop_s_to_target']:.0f} s loop / {run['wall_s_to_target']:.0f} s wall"
                    if run["reached"]
                    else f"not reached in {run['wall_s_spent']:.0f} s; best eval "
                    f"{run['best_eval_return']} after {run['env_steps_done']:,} env steps"
                ),
                flush=True,
            )
            path = save(result, args.out)
        result["learning_wall_s"] = time.perf_counter() - learning_start
        path = save(result, args.out)
        print(f"wrote {path}", flush=True)


if __name__ == "__main__":
    main()
