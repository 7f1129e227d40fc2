"""Run directories: their paths, checkpoints, and the sync of runs on filesystem URIs.

- ``paths``: run and staging directories, the replay shards' chunk directories.
- ``checkpoint``: atomic, checksummed checkpoints and the run state they record (one format
  for the single-process loop and the Ray runtime).
- ``remote``: the file layer of a pyarrow filesystem (``s3://``, ``gs://``, ``file://`` ...).
- ``chunks``: mirroring replay chunk files to a remote.
- ``storage``: ``RunStorage`` (a run on a URI: uploads, restores), ``resolve_run_dir``,
  ``open_checkpoint``.

No Ray here; ``storage``, ``remote`` and ``chunks`` import pyarrow when they are imported.
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
