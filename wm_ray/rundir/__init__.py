"""Run directories: their paths, checkpoints, and the sync of runs on filesystem URIs.

- ``paths``: run and staging directories, the replay shards' chunk directories.
- ``checkpoint``: atomic, checksummed checkpoints and the run state they record (one format
  for the single-process loop and the Ray runtime).
- ``remote``: the file layer of a pyarrow filesystem (``s3://``, ``gs://``, ``file://`` ...).
- ``chunks``: mirroring replay chunk files to a remote.
- ``sync``: ``RunStorage``, a run on a URI kept in sync with its staging directory (uploads,
  verified restores).
- ``open``: opening runs by path or URI: ``resolve_run_dir``, ``load_run_config``,
  ``open_checkpoint``, ``resolve_resume``.

No Ray here; ``open``, ``sync``, ``remote`` and ``chunks`` import pyarrow.
"""

from __future__ import annotations

from wm_ray.rundir.checkpoint import CheckpointError
from wm_ray.rundir.paths import (
    STAGING_ENV,
    is_uri,
    local_run_dir,
    run_location,
    run_name,
    shard_directory,
    shard_relpath,
    staging_dir,
)

__all__ = [
    "STAGING_ENV",
    "CheckpointError",
    "is_uri",
    "local_run_dir",
    "run_location",
    "run_name",
    "shard_directory",
    "shard_relpath",
    "staging_dir",
]
