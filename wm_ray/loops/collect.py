"""Collect experience with a (non-learning) policy into replay: ``wm-ray collect``.

The smallest end-to-end path through the rooms: config -> vector env -> agent policy -> replay
(chunks persisted in the run dir's ``replay/shard-0``, the layout of training runs) -> metrics.
Training loops build on the same pieces. A run
directory given as a URI is worked on in a local staging directory
(:mod:`wm_ray.rundir.sync`) and uploaded at the end: config, metrics, summary and the replay
chunk files.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from wm_ray.config import Config, ResourcesConfig
from wm_ray.config_io import save_config
from wm_ray.episodes import metric_values
from wm_ray.factory import create_model
from wm_ray.loops.driver import Driver
from wm_ray.loops.setup import make_vector_env
from wm_ray.metrics import JsonlSink, Progress, episode_metric
from wm_ray.replay import Replay, StreamWriter
from wm_ray.rundir.open import resolve_run_dir
from wm_ray.rundir.paths import shard_directory, shard_relpath

logger = logging.getLogger(__name__)


def _resources_diff(config: Config) -> dict[str, Any]:
    default = ResourcesConfig()
    return {
        f"resources.{f.name}": getattr(config.resources, f.name)
        for f in dataclasses.fields(default)
        if getattr(config.resources, f.name) != getattr(default, f.name)
    }


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else str(value)


def collect(config: Config, run_dir: str | Path, progress: bool = True) -> dict[str, Any]:
    """Run ``config.run.steps`` env steps with ``config.run.model``'s policy; return a summary.

    ``run_dir`` is a path or a filesystem URI; a URI run starts from the remote's metrics and
    replay chunks (as a local run directory would) and uploads its outputs at the end.
    """
    location = str(run_dir)
    run_dir, storage = resolve_run_dir(run_dir)
    if storage is not None:
        replay_rel = shard_relpath(0) if config.replay.persist else None
        storage.prepare(run_dir, replay=replay_rel, new_run=False)
    if config.resources != ResourcesConfig():
        logger.warning(
            "collect runs in this one process and ignores resources.* (%s); the actor counts "
            "apply to the Ray runtime",
            ", ".join(f"{k}={v}" for k, v in _resources_diff(config).items()),
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir)
    replay_dir = shard_directory(run_dir, 0) if config.replay.persist else None
    replay = Replay(config.replay, directory=replay_dir, seed=config.run.seed)
    metrics = JsonlSink(run_dir / "metrics.jsonl")
    venv = make_vector_env(config.env, seed=config.run.seed)
    try:
        agent = create_model(config.run.model, venv.obs_space, venv.act_space, config)
        writer = StreamWriter(
            replay.add_chunk, venv.num_envs, config.replay.chunk_len, f"w0-{uuid.uuid4().hex[:8]}"
        )
        driver = Driver(venv, agent, sinks=(writer.add,))
        bar = Progress(
            config.run.steps,
            enabled=progress and config.logging.progress,
            every=config.logging.progress_every,
            name=f"collect {config.run.model}/{config.env.id}",
        )
        start = time.perf_counter()
        returns: list[float] = []
        metric_history: dict[str, list[float]] = {}  # env metrics at episodes' last steps
        log_every = max(config.logging.every, venv.num_envs)
        while driver.env_steps < config.run.steps:
            target = driver.env_steps + min(log_every, config.run.steps - driver.env_steps)
            while driver.env_steps < target:
                driver.step()
                bar.tick(driver.env_steps)
            done = driver.episodes.pop()
            returns += [ep["return"] for ep in done]
            for name, values in metric_values(done).items():
                metric_history.setdefault(name, []).extend(values)
            elapsed = time.perf_counter() - start
            record = {
                "step": driver.env_steps,
                "time": elapsed,
                "fps/env": driver.env_steps / elapsed,
                "replay/size": len(replay),
                "counters/env_restarts": venv.restarts,
            }
            if returns:
                record["episode/return"] = float(np.mean(returns[-100:]))
            for name, values in metric_history.items():
                record[episode_metric(name)] = float(np.mean(values[-100:]))
            metrics.write(record)
            bar.tick(driver.env_steps, ret=record.get("episode/return", float("nan")))
        writer.flush()
        bar.close()
        elapsed = time.perf_counter() - start
        summary = {
            "run_dir": location,
            "local_dir": str(run_dir),
            "env": config.env.id,
            "model": config.run.model,
            "env_steps": driver.env_steps,
            "episodes": len(returns),
            "mean_return": float(np.mean(returns)) if returns else None,
            "seconds": elapsed,
            "fps_env": driver.env_steps / elapsed,
            "policy_seconds": driver.policy_time,
            "env_seconds": driver.env_time,
            "env_restarts": venv.restarts,
            "replay": replay.stats(),
        }
        for name, values in metric_history.items():
            summary[f"mean_{name}"] = float(np.mean(values))
        if replay.can_sample():
            batch = replay.sample()
            summary["sample_shapes"] = {k: list(v.shape) for k, v in batch.items()}
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=_plain) + "\n")
        if storage is not None:
            if replay.directory is not None:
                storage.sync_chunks(replay.directory, shard_relpath(0))
            storage.mirror(run_dir)
        return summary
    finally:
        venv.close()
        metrics.close()
