"""Opening runs: a run directory given as a path or a URI, its config, its checkpoints, resume.

``--run-dir`` (``run.run_dir``) is a plain path, used as it is, or a filesystem URI worked on in
a local staging directory (:class:`~wm_ray.rundir.sync.RunStorage` keeps the two in sync).
"""

from __future__ import annotations

from pathlib import Path

from wm_ray.config import Config
from wm_ray.config_io import ConfigError, diff, from_dict, load_config
from wm_ray.rundir import checkpoint as ckpt
from wm_ray.rundir.paths import is_uri, staging_dir
from wm_ray.rundir.sync import RunStorage

RESUMABLE_KEYS = {"run.steps", "run.run_dir", "logging.progress", "resources.address"}
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
    import yaml

    storage = RunStorage(str(value))
    if not storage.exists("config.yaml"):
        raise ConfigError(f"no config.yaml in run directory {str(value)!r}")
    return from_dict(yaml.safe_load(storage.read_text("config.yaml")) or {})


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
    ckpt.verify_checkpoint(path)
    return (local, storage), config, path


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


__all__ = [
    "RESUMABLE_KEYS",
    "RunStorage",
    "load_run_config",
    "open_checkpoint",
    "resolve_resume",
    "resolve_run_dir",
]
