"""Opening runs: a run directory given as a path or a URI, its config, its checkpoints, resume.

``--run-dir`` (``run.run_dir``) is a plain path, used as it is, or a filesystem URI worked on in
a local staging directory (:class:`~wm_ray.rundir.sync.RunStorage` keeps the two in sync).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from wm_ray.config import Config
from wm_ray.config_io import ConfigError, diff, from_dict, load_config, read_yaml
from wm_ray.rundir import checkpoint as ckpt
from wm_ray.rundir.paths import is_uri, staging_dir
from wm_ray.rundir.sync import RunStorage

RESUMABLE_KEYS = {
    "run.steps",
    "run.run_dir",
    "logging.progress",
    "logging.progress_every",
    "resources.address",
}
"""Keys a ``--resume`` may change without ``--allow-config-change``."""


def resolve_run_dir(value: str | Path) -> tuple[Path, RunStorage | None]:
    """``(local directory, storage)`` of a run: ``(path, None)`` for a plain path, and
    ``(staging dir, RunStorage)`` for a URI.

    Raises:
        ConfigError: for a URI pyarrow cannot open (naming it and what is valid).
    """
    if is_uri(value):
        assert isinstance(value, str)
        return staging_dir(value), RunStorage(value)
    return Path(value), None


def load_run_config(value: str | Path) -> Config:
    """The saved ``config.yaml`` of a run given by path or URI (read remotely for a URI)."""
    if not is_uri(value):
        return load_config(value)
    storage = RunStorage(str(value))
    if not storage.exists("config.yaml"):
        raise ConfigError(f"no config.yaml in run directory {str(value)!r}")
    text = storage.read_text("config.yaml")
    return from_dict(read_yaml(Path("config.yaml"), f"run config of {value}", text))


def open_checkpoint(
    run_dir: str | Path, which: str, purpose: str
) -> tuple[tuple[Path, RunStorage | None], Config, Path]:
    """``((local dir, storage), config, verified checkpoint)`` of a run, for eval and play.

    ``run_dir`` is a path or a filesystem URI; a URI run is first restored into its staging
    directory (``storage`` is then its :class:`RunStorage`, else None).

    Raises:
        CheckpointError: the run has no checkpoint ``which`` (the message names ``purpose``,
            e.g. "evaluate"), or the checkpoint is incomplete or corrupt.
    """
    local, storage = resolve_run_dir(run_dir)
    if storage is not None:
        storage.restore(local, which)
    config = load_config(local)
    path = ckpt.find_checkpoint(local, which)
    if path is None:
        raise ckpt.CheckpointError(f"{run_dir} has no checkpoint {which!r} to {purpose}")
    try:
        ckpt.verify_checkpoint(path)
    except ckpt.CheckpointError as err:
        raise ckpt.refused(err, path, "pick one with --checkpoint NAME") from None
    return (local, storage), config, path


def resume_checkpoint(
    run_dir: Path, shown: str, shards: int | None = None
) -> tuple[Path, dict[str, Any]]:
    """``(path, verified run state)`` of the checkpoint ``latest`` names, for ``--resume``.

    Raises:
        ConfigError: the run has no checkpoint, or its number of replay shards is not
            ``shards`` (when given).
        CheckpointError: it is incomplete or corrupt (the message lists the others and how to
            resume from one).
    """
    path = ckpt.latest_checkpoint(run_dir)
    if path is None:
        raise ConfigError(f"--resume: {shown} has no checkpoint to resume from")
    try:
        state = ckpt.load_state(path)
    except ckpt.CheckpointError as err:
        how = f"to resume from one, write its name into {shown}/checkpoints/latest"
        raise ckpt.refused(err, path, how) from None
    if shards is not None and len(state["shards"]) != shards:
        raise ConfigError(
            f"--resume from {path}: the checkpoint has {len(state['shards'])} replay shards, "
            f"this run {shards} (resources.replay_shards)"
        )
    return path, state


def resolve_resume(requested: Config, run_dir: Path, allow_change: bool) -> Config:
    """The config to resume with: the saved one, unless the request changes it and that's allowed.

    ``run.steps`` (to train longer) and output-only keys may always change.
    """
    saved = load_config(run_dir)
    changed = {k: v for k, v in diff(saved, requested).items() if k not in RESUMABLE_KEYS}
    if changed and not allow_change:
        shown = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(changed.items()))
        raise ConfigError(
            f"--resume with a changed config ({shown}); pass --allow-config-change to accept it"
        )
    return requested


RUN_FILES = ("config.yaml", "checkpoints", "metrics.jsonl", "replay", "tb", "summary.json")
"""What a run directory holds; any one of them means a run is there."""


def check_fresh_run_dir(local: Path, shown: str | None = None) -> None:
    """Refuse to start a new run in a directory that holds one (``train`` without ``--resume``
    would mix the two: metrics, TensorBoard events, checkpoints and ``latest``).

    Raises:
        ConfigError: naming the directory, what is in it, and both ways out.
    """
    shown = shown or str(local)
    if local.exists() and not local.is_dir():
        raise ConfigError(f"--run-dir {shown} is a file, not a directory; choose another --run-dir")
    existing = next((p for p in (local, *local.absolute().parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ConfigError(f"--run-dir {shown}: {existing} is a file; choose another --run-dir")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"--run-dir {shown}: {existing} is not writable (read-only file system or no "
            "permission); choose another --run-dir"
        )
    found = [name for name in RUN_FILES if (local / name).exists()]
    if not found:
        return
    pointer = local / "checkpoints" / "latest"
    latest = pointer.read_text().strip() if pointer.is_file() else None
    what = ", ".join(found) + (f"; latest checkpoint {latest}" if latest else "")
    raise ConfigError(
        f"--run-dir {shown} already holds a run ({what}); continue it with "
        f"'wm-ray train --run-dir {shown} --resume', or start a new one in another --run-dir "
        f"(or remove {shown} first)"
    )


@contextmanager
def starting_run(local: Path, resume: bool, shown: str | None = None) -> Iterator[None]:
    """The start of a run in ``local``: a new run refuses a directory that holds one
    (:func:`check_fresh_run_dir`), and a new run that fails before its first checkpoint removes
    the directory it created, so a failed start leaves nothing half-made."""
    if not resume:
        check_fresh_run_dir(local, shown)
    created = not local.exists()
    try:
        yield
    except BaseException:
        kept = (local / "checkpoints" / "latest").exists()
        if created and not resume and local.is_dir() and not kept:
            shutil.rmtree(local, ignore_errors=True)
        raise


__all__ = [
    "RESUMABLE_KEYS",
    "RUN_FILES",
    "RunStorage",
    "check_fresh_run_dir",
    "load_run_config",
    "open_checkpoint",
    "resolve_resume",
    "resolve_run_dir",
    "resume_checkpoint",
    "starting_run",
]
