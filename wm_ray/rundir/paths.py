"""Where a run's files live: run directories, staging directories of URI runs, replay shards.

A run directory (``run.run_dir``) is a plain path or a filesystem URI; a URI run works in a
local staging directory (``$WM_RAY_STAGING`` or ``~/.cache/wm_ray/staging``, then
``<last path component>-<8 hex of sha1(uri)>``). Replay shard ``i`` keeps its chunk files in
``<run_dir>/replay/shard-<i>``, in the single-process loop (one shard, or more) and on the Ray
runtime alike, so either can resume the other's runs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from pathlib import Path

from wm_ray.config import Config
from wm_ray.replay import chunkfile

logger = logging.getLogger(__name__)

STAGING_ENV = "WM_RAY_STAGING"
"""Environment variable naming the staging root (default :data:`DEFAULT_STAGING`)."""
DEFAULT_STAGING = "~/.cache/wm_ray/staging"
REPLAY_DIR = "replay"
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(value: str | Path) -> bool:
    """True for ``scheme://...`` strings; a plain (absolute or relative) path is not a URI."""
    return isinstance(value, str) and bool(_URI.match(value))


def staging_root(root: str | Path | None = None) -> Path:
    """``root``, else ``$WM_RAY_STAGING``, else ``~/.cache/wm_ray/staging`` (``~`` expanded)."""
    chosen = root or os.environ.get(STAGING_ENV) or DEFAULT_STAGING
    return Path(chosen).expanduser()


def staging_dir(uri: str, root: str | Path | None = None) -> Path:
    """Where a URI run works locally: ``<staging root>/<last component>-<8 hex of sha1(uri)>``."""
    uri = uri.rstrip("/")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", uri.split("?", 1)[0].rsplit("/", 1)[-1]).strip("._")
    digest = hashlib.sha1(uri.encode()).hexdigest()[:8]
    return staging_root(root) / f"{name or 'run'}-{digest}"


def run_name(config: Config) -> str:
    """``run.name``, or ``<model>-<env>-<date>-<time>``."""
    if config.run.name:
        return config.run.name
    env = re.sub(r"[^A-Za-z0-9]+", "_", config.env.id).strip("_").lower()
    return f"{config.run.model}-{env}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_location(config: Config) -> str | Path:
    """The run directory as configured: a filesystem URI string, or a path (default
    ``runs/<run name>``)."""
    if is_uri(config.run.run_dir):
        return config.run.run_dir
    return Path(config.run.run_dir) if config.run.run_dir else Path("runs") / run_name(config)


def local_run_dir(config: Config) -> Path:
    """The local directory a run works in: its path, or the staging directory of a URI."""
    location = run_location(config)
    return staging_dir(location) if isinstance(location, str) else location


def shard_relpath(index: int) -> str:
    """Shard ``index``'s chunk directory relative to the run directory: ``replay/shard-<i>``."""
    return f"{REPLAY_DIR}/shard-{index}"


def shard_directory(run_dir: str | Path, index: int) -> Path:
    """Where shard ``index`` of a run keeps its chunk files: ``<run_dir>/replay/shard-<index>``."""
    return Path(run_dir) / shard_relpath(index)


def migrate_flat_replay(run_dir: str | Path) -> int:
    """Move chunk files of the old single-process layout (``replay/*.chunk``) into
    ``replay/shard-0``; returns how many moved (0 for a run in the current layout)."""
    flat = Path(run_dir) / REPLAY_DIR
    if not flat.is_dir():
        return 0
    finished, temps = chunkfile.list_chunk_files(flat)
    files = [*finished, *temps]
    if not files:
        return 0
    target = shard_directory(run_dir, 0)
    target.mkdir(parents=True, exist_ok=True)
    for path in files:
        os.replace(path, target / path.name)
    corrupt = flat / "corrupt"
    if corrupt.is_dir() and not (target / "corrupt").exists():
        os.replace(corrupt, target / "corrupt")
    logger.info("moved %d chunk files of %s into %s (the shard layout)", len(files), flat, target)
    return len(files)


__all__ = [
    "DEFAULT_STAGING",
    "REPLAY_DIR",
    "STAGING_ENV",
    "is_uri",
    "local_run_dir",
    "migrate_flat_replay",
    "run_location",
    "run_name",
    "shard_directory",
    "shard_relpath",
    "staging_dir",
    "staging_root",
]
