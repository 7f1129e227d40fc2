"""Builders shared by the loops: run directories and vector envs from a config."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

from wm_ray.config import Config, EnvConfig
from wm_ray.envs.registry import env_options
from wm_ray.envs.vector import EnvFactory, VectorEnv

if TYPE_CHECKING:
    from wm_ray.storage import RunStorage


def make_vector_env(env: EnvConfig, seed: int, num_envs: int | None = None) -> VectorEnv:
    factory = EnvFactory(env.id, env.backend, **env_options(env))
    return VectorEnv(factory, num_envs or env.num_envs, seed=seed, mode=env.vector)


def run_name(config: Config) -> str:
    if config.run.name:
        return config.run.name
    env = re.sub(r"[^A-Za-z0-9]+", "_", config.env.id).strip("_").lower()
    return f"{config.run.model}-{env}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_location(config: Config) -> str | Path:
    """The run directory as configured: a filesystem URI string, or a path (default
    ``runs/<run name>``)."""
    from wm_ray.storage import is_uri

    if is_uri(config.run.run_dir):
        return config.run.run_dir
    return Path(config.run.run_dir) if config.run.run_dir else Path("runs") / run_name(config)


def run_dir(config: Config) -> Path:
    """The local directory a run works in: its path, or the staging directory of a URI."""
    from wm_ray.storage import staging_dir

    location = run_location(config)
    return staging_dir(location) if isinstance(location, str) else location


def open_checkpoint(
    run_dir: str | Path, which: str, purpose: str
) -> tuple[tuple[Path, RunStorage | None], Config, Path]:
    """``((local dir, storage), config, verified checkpoint)`` of a run, for eval and play.

    ``run_dir`` is a path or a filesystem URI; a URI run is first restored into its staging
    directory (``storage`` is then its :class:`~wm_ray.storage.RunStorage`, else None).

    Raises:
        CheckpointError: the run has no checkpoint ``which`` (the message names ``purpose``,
            e.g. "evaluate"), or the checkpoint is incomplete or corrupt.
    """
    from wm_ray import checkpoint as ckpt
    from wm_ray.config_io import load_config
    from wm_ray.storage import resolve_run_dir

    local, storage = resolve_run_dir(run_dir)
    if storage is not None:
        storage.restore(local, which)
    config = load_config(local)
    path = ckpt.find_checkpoint(local, which)
    if path is None:
        raise ckpt.CheckpointError(f"{run_dir} has no checkpoint {which!r} to {purpose}")
    ckpt.verify_checkpoint(path)
    return (local, storage), config, path
