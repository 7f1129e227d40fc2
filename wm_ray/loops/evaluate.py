"""Evaluation episodes with the agent's eval mode (greedy / mode actions)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from wm_ray.config_io import ConfigError
from wm_ray.core import Agent
from wm_ray.envs.vector import VectorEnvLike
from wm_ray.episodes import metric_values
from wm_ray.loops.driver import Driver
from wm_ray.metrics import eval_metric

logger = logging.getLogger(__name__)


def evaluate(
    agent: Agent, venv: VectorEnvLike, episodes: int, video: bool = False
) -> dict[str, Any]:
    """Run ``episodes`` complete episodes (starting from fresh resets) in eval mode.

    Returns:
        ``eval/return`` and ``eval/length`` (means), ``eval/episodes``, the per-episode
        ``returns`` list; for envs that report per-step metrics ``eval/<name>`` (mean of the
        value at each episode's last step, e.g. ``eval/success``) and ``episode_metrics``
        (``{name: per-episode values}``); and with ``video`` for image tasks ``frames``
        (T, H, W, C) uint8 of the first episode of env 0.
    """
    frames: list[np.ndarray] = []
    recording = video and "image" in venv.obs_space.spaces

    def record(step: dict[str, np.ndarray]) -> None:
        nonlocal recording
        if recording:
            frames.append(step["image"][0])
            if step["is_last"][0]:
                recording = False

    driver = Driver(venv, agent, sinks=(record,), mode="eval")
    driver.reset()
    done: list[dict[str, Any]] = []
    while len(done) < episodes:
        driver.run(episodes=1)
        done += driver.episodes.pop()
    done = done[:episodes]
    returns = [float(ep["return"]) for ep in done]
    out: dict[str, Any] = {
        "eval/return": float(np.mean(returns)),
        "eval/length": float(np.mean([ep["length"] for ep in done])),
        "eval/episodes": len(done),
        "returns": returns,
    }
    values = metric_values(done)
    for name, per_episode in values.items():
        out[eval_metric(name)] = float(np.mean(per_episode))
    if values:
        out["episode_metrics"] = values
    if frames:
        out["frames"] = np.stack(frames)
    return out


def merge_evaluations(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One result of several :func:`evaluate` results (e.g. of several eval workers): the
    means over all their episodes; no ``frames``."""
    returns = [r for part in parts for r in part["returns"]]
    lengths = [part["eval/length"] * part["eval/episodes"] for part in parts]
    result: dict[str, Any] = {
        "eval/return": float(np.mean(returns)),
        "eval/length": float(sum(lengths) / len(returns)),
        "eval/episodes": len(returns),
        "returns": returns,
    }
    values: dict[str, list[float]] = {}
    for part in parts:
        for name, per_episode in part.get("episode_metrics", {}).items():
            values.setdefault(name, []).extend(per_episode)
    for name, per_episode in values.items():
        result[eval_metric(name)] = float(np.mean(per_episode))
    if values:
        result["episode_metrics"] = values
    return result


def evaluate_run(
    run_dir: str | Path, episodes: int | None = None, video: bool = False, which: str = "latest"
) -> dict[str, Any]:
    """Load a run's config and a checkpoint (``latest``, ``best`` or a path) and evaluate it.

    ``run_dir`` is a path or a filesystem URI; a URI run's checkpoint is restored into its
    staging directory first (:meth:`wm_ray.rundir.sync.RunStorage.restore`) and a video is
    uploaded to its ``videos/``.
    """
    from wm_ray.envs.registry import max_envs
    from wm_ray.factory import create_model
    from wm_ray.loops.setup import make_vector_env
    from wm_ray.media import write_video
    from wm_ray.rundir.open import open_checkpoint

    (local, storage), config, path = open_checkpoint(run_dir, which, "evaluate")
    episodes = episodes or config.eval.episodes
    if episodes < 1:
        raise ConfigError(
            f"the run's config has eval.episodes={config.eval.episodes} (it did not evaluate): "
            "pass --episodes N (N >= 1)"
        )
    limit = max_envs(config.env.id, config.env.backend)  # unity:editor: 1
    num_envs = min(config.eval.num_envs, limit or config.eval.num_envs)
    venv = make_vector_env(config.env, seed=config.run.seed + 2 * 10**6, num_envs=num_envs)
    if video and "image" not in venv.obs_space.spaces:
        logger.warning(
            "no video: %s gives vector observations only (a run trained with env.pixels=true "
            "records its image observations)",
            config.env.id,
        )
        video = False
    try:
        agent = create_model(config.run.model, venv.obs_space, venv.act_space, config)
        agent.load(path / "agent")
        result = evaluate(agent, venv, episodes, video=video)
    finally:
        venv.close()
    result["checkpoint"] = str(path)
    if "frames" in result:
        frames = result.pop("frames")
        target = write_video(frames, local / "videos" / f"eval-{path.name}.mp4")
        result["video"] = str(target)
        if storage is not None:
            storage.upload_file(target, f"videos/{target.name}")
            result["video_uri"] = storage.display(f"videos/{target.name}")
    return result
