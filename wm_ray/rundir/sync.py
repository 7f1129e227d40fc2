"""A run directory on a filesystem URI, kept in sync with its staging directory: ``RunStorage``.

``--run-dir`` (``run.run_dir``) is either a plain path, used as it is, or a URI that
``pyarrow.fs.FileSystem.from_uri`` opens. A URI run works in a local *staging directory*
(:func:`~wm_ray.rundir.paths.staging_dir`) and :class:`RunStorage` keeps the remote copy up to
date:

- ``config.yaml`` when the run starts; ``metrics.jsonl``, ``tb/``, ``videos/``,
  ``summary.json`` and ``curve.png`` at every checkpoint and at the end (only files whose size
  or mtime changed since their last upload are sent again).
- Checkpoints (:meth:`RunStorage.sync_checkpoints`), safely on object stores that have no
  rename: every file of ``checkpoints/step-N/`` except ``meta.json``, then ``meta.json``, then
  the ``checkpoints/latest`` pointer. A remote checkpoint without ``meta.json`` is incomplete
  and never chosen. Rotation (the newest :data:`wm_ray.rundir.checkpoint.KEEP`) applies
  remotely too, and a tag such as ``best`` is uploaded again (``meta.json`` deleted first) when
  it changes.
- Replay chunk files (:meth:`RunStorage.sync_chunks`): they are immutable once written, so new
  files are uploaded and evicted ones deleted, before the checkpoint that counts them.

:meth:`RunStorage.prepare` opens the staging directory for a run: a resume, ``eval`` or
``play`` downloads what the staging directory lacks (:meth:`RunStorage.restore`: ``config.yaml``,
the checkpoint ``latest`` names and ``best``, verified file by file, and for a resume
``metrics.jsonl`` and the replay chunks); a new run starts from an empty staging directory. One
process writes a run at a time.

Credentials reach pyarrow the standard way of each filesystem (e.g. ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION`` / ``AWS_ENDPOINT_URL`` or an instance role for S3;
``GOOGLE_APPLICATION_CREDENTIALS`` for GCS), or as URI query options pyarrow documents
(``s3://bucket/run?region=eu-west-1``).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable
from pathlib import Path

from wm_ray.config_io import ConfigError
from wm_ray.rundir import checkpoint as ckpt
from wm_ray.rundir.chunks import ChunkMirror

logger = logging.getLogger(__name__)

MIRRORED_FILES = ("config.yaml", "metrics.jsonl", "summary.json", "curve.png")
"""Run files copied to the remote at every sync (whole files, when they changed)."""
MIRRORED_TREES = ("tb", "videos")
"""Run subdirectories copied to the remote at every sync (changed files only)."""


def _meta_step(meta: bytes) -> int:
    """The step a checkpoint's ``meta.json`` records (-1 when unreadable)."""
    try:
        return int(json.loads(meta)["step"])
    except (ValueError, KeyError, TypeError):
        return -1


class RunStorage(ChunkMirror):
    """A run directory on a pyarrow filesystem (see the module docstring); opened, and refused
    with a clear error, as a :class:`~wm_ray.rundir.remote.RemoteDir`."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self._checkpoints: dict[str, bytes] = {}

    def mirror(self, local: Path) -> list[str]:
        """Upload the changed :data:`MIRRORED_FILES` and :data:`MIRRORED_TREES` of a run."""
        uploaded = []
        for name in MIRRORED_FILES:
            path = local / name
            if path.is_file() and self.changed(path, name):
                self.upload_file(path, name)
                uploaded.append(name)
        for name in MIRRORED_TREES:
            uploaded += self.upload_tree(local / name, name)
        return uploaded

    # -- checkpoints -------------------------------------------------------------------------

    def remote_checkpoints(self) -> tuple[list[str], list[str]]:
        """``(complete, incomplete)`` checkpoint directory names under ``checkpoints/``: complete
        ones have their ``meta.json``, incomplete ones (an interrupted upload) do not."""
        dirs: dict[str, bool] = {}
        for name in self.list_files("checkpoints"):
            head, _, tail = name.partition("/")
            if tail:
                dirs[head] = dirs.get(head, False) or tail == "meta.json"
        complete = sorted(name for name, done in dirs.items() if done)
        return complete, sorted(name for name, done in dirs.items() if not done)

    def upload_checkpoint(self, local_dir: Path) -> bool:
        """Upload one complete local checkpoint directory; returns whether anything was sent.

        Skipped when the remote ``meta.json`` equals the local one (same files and checksums).
        Otherwise the remote ``meta.json`` is deleted first (the remote copy is incomplete from
        then on), every other file is uploaded, remote files the checkpoint no longer has are
        deleted, and ``meta.json`` goes last.
        """
        rel = f"checkpoints/{local_dir.name}"
        meta = (local_dir / "meta.json").read_bytes()
        if self._checkpoints.get(rel) == meta:
            return False
        remote = self.list_files(rel)
        if "meta.json" in remote:
            if self.read_bytes(f"{rel}/meta.json") == meta:
                self._checkpoints[rel] = meta
                return False
            self.delete_file(f"{rel}/meta.json")
        files = sorted(
            p for p in local_dir.rglob("*") if p.is_file() and p != local_dir / "meta.json"
        )
        names = {p.relative_to(local_dir).as_posix() for p in files}
        for path in files:
            self.upload_file(path, f"{rel}/{path.relative_to(local_dir).as_posix()}")
        for name in sorted(set(remote) - names - {"meta.json"}):
            self.delete_file(f"{rel}/{name}")
        self.upload_file(local_dir / "meta.json", f"{rel}/meta.json")
        self._checkpoints[rel] = meta
        return True

    def sync_checkpoints(self, local: Path, keep: int = ckpt.KEEP) -> list[str]:
        """Bring the remote ``checkpoints/`` up to date with the local one; returns the names
        uploaded.

        The newest ``keep`` ``step-*`` checkpoints of both sides together are kept (the local
        rotation, applied remotely), tags (``best``) are uploaded when they changed, the
        ``latest`` pointer goes after the checkpoint it names, and then remote ``step-*``
        directories outside the kept set (rotated out, or left incomplete by an interrupted
        upload) are deleted.
        """
        root = local / "checkpoints"
        if not root.is_dir():
            return []
        local_names = sorted(
            p.name
            for p in root.iterdir()
            if p.is_dir() and not p.name.startswith(".") and (p / "meta.json").is_file()
        )
        complete, incomplete = self.remote_checkpoints()
        steps = sorted({n for n in [*local_names, *complete] if n.startswith("step-")})
        kept = set(steps[-keep:] if keep > 0 else steps)
        uploaded = [
            name
            for name in local_names
            if (not name.startswith("step-") or name in kept)
            and self.upload_checkpoint(root / name)
        ]
        pointer = root / "latest"
        if pointer.is_file():
            target = pointer.read_text().strip()
            if target in kept and self.changed(pointer, "checkpoints/latest"):
                self.upload_file(pointer, "checkpoints/latest")
        for name in sorted({*complete, *incomplete}):
            if name.startswith("step-") and name not in kept:
                self.delete_dir(f"checkpoints/{name}")
                self._checkpoints.pop(f"checkpoints/{name}", None)
        return uploaded

    def sync_run(self, local: Path) -> None:
        """Everything of a run but its replay: the mirrored files, then the checkpoints."""
        self.mirror(local)
        self.sync_checkpoints(local)

    def _download_checkpoint(self, name: str, local: Path) -> Path:
        """Download ``checkpoints/<name>`` into the staging dir and verify it there.

        Raises:
            CheckpointError: for an incomplete or corrupt remote checkpoint, naming the remote
                file; nothing is installed locally then.
        """
        rel = f"checkpoints/{name}"
        files = self.list_files(rel)
        if "meta.json" not in files:
            raise ckpt.CheckpointError(
                f"checkpoint {self.display(rel)} has no meta.json: its upload did not finish "
                "(incomplete checkpoints are never used)"
            )
        root = local / "checkpoints"
        temp, final = root / f".download-{name}", root / name
        shutil.rmtree(temp, ignore_errors=True)
        for file in sorted(files):
            self.download_file(f"{rel}/{file}", temp / file)
        try:
            ckpt.verify_checkpoint(temp)
        except ckpt.CheckpointError as err:
            shutil.rmtree(temp, ignore_errors=True)
            raise ckpt.CheckpointError(str(err).replace(str(temp), self.display(rel))) from None
        ckpt.replace_dir(temp, final)
        self._checkpoints[rel] = (final / "meta.json").read_bytes()
        return final

    def _local_matches(self, local: Path, name: str) -> bool:
        meta = local / "checkpoints" / name / "meta.json"
        rel = f"checkpoints/{name}/meta.json"
        return meta.is_file() and self.exists(rel) and meta.read_bytes() == self.read_bytes(rel)

    def _pull(self, local: Path, names: Iterable[str]) -> None:
        for name in names:
            if self.exists(name):
                self.download_file(name, local / name)

    def restore(
        self,
        local: Path,
        which: str = "latest",
        replay: str | None = None,
        metrics: bool = False,
    ) -> Path | None:
        """Make the staging dir ``local`` hold the remote run's checkpoint ``which``.

        ``which`` is ``latest`` (the remote ``checkpoints/latest`` pointer; ``best`` comes
        along when the remote has a complete one) or a checkpoint name such as ``best``. When
        the staging dir already holds that checkpoint, or a newer one (a higher step in its
        ``meta.json``: e.g. a final upload that failed, or a run training on this machine),
        nothing is downloaded; otherwise ``config.yaml`` and the checkpoint are, and the
        checkpoint is verified.

        Args:
            replay: a path relative to the run root: chunk files the staging dir lacks are
                downloaded from there as well.
            metrics: download ``metrics.jsonl`` along with the checkpoint (a resume continues
                the log; ``eval`` and ``play`` leave a local log alone).

        Returns:
            The local checkpoint directory, or None when neither side has ``which``.

        Raises:
            CheckpointError: for an incomplete or corrupt remote checkpoint (naming it).
        """
        local.mkdir(parents=True, exist_ok=True)
        if replay is not None:
            self.download_chunks(replay, local / replay)
        pointer = "checkpoints/latest"
        if which == "latest":
            name = self.read_text(pointer).strip() if self.exists(pointer) else None
            try:
                mine = ckpt.latest_checkpoint(local)
            except ckpt.CheckpointError:  # the pointer names a directory that is gone
                mine = None
        elif "/" not in which and "\\" not in which and which not in (".", ".."):
            name = which if self.exists(f"checkpoints/{which}") else None
            mine = ckpt.find_checkpoint(local, which)
        else:  # a checkpoint directory path: only the run's config is needed
            if not (local / "config.yaml").is_file():
                self._pull(local, ["config.yaml"])
            return ckpt.find_checkpoint(local, which)
        if name is None:
            if not (local / "config.yaml").is_file():
                self._pull(local, ["config.yaml", "metrics.jsonl"] if metrics else ["config.yaml"])
            return mine
        meta_rel = f"checkpoints/{name}/meta.json"
        if mine is not None and (mine / "meta.json").is_file() and self.exists(meta_rel):
            ours, theirs = (mine / "meta.json").read_bytes(), self.read_bytes(meta_rel)
            if ours == theirs or _meta_step(ours) > _meta_step(theirs):
                if ours != theirs:
                    logger.warning(
                        "staging dir %s holds %s at step %d, newer than %s in %s; using it",
                        local,
                        mine.name,
                        _meta_step(ours),
                        name,
                        self.uri,
                    )
                else:
                    self._checkpoints[f"checkpoints/{mine.name}"] = ours
                return mine
        path = self._download_checkpoint(name, local)
        self._pull(local, ["config.yaml", "metrics.jsonl"] if metrics else ["config.yaml"])
        if which == "latest":
            self.download_file(pointer, local / pointer)
            if "best" in self.remote_checkpoints()[0] and not self._local_matches(local, "best"):
                try:
                    self._download_checkpoint("best", local)
                except ckpt.CheckpointError as err:
                    logger.warning("not restoring the best checkpoint: %s", err)
        logger.info("restored %s from %s into %s", name, self.uri, local)
        return path

    def check_new_run(self) -> None:
        """Raise ``ConfigError`` when the remote already holds a run (a checkpoint pointer)."""
        if self.exists("checkpoints/latest"):
            raise ConfigError(
                f"run directory {self.uri} already holds a run (checkpoints/latest exists); pass "
                "--resume to continue it, or choose another --run-dir"
            )

    def prepare(
        self, local: Path, resume: bool = False, replay: str | None = None, new_run: bool = True
    ) -> Path | None:
        """Open the staging dir ``local`` for a run writing to this storage.

        With ``resume``: :meth:`restore` the latest checkpoint (and replay under ``replay``).
        Otherwise the staging dir is emptied (it is only a cache of the remote), and what a local
        run directory would carry over is downloaded: ``metrics.jsonl`` and the replay chunks.

        Args:
            new_run: refuse a remote that already holds a checkpoint (a new training run must
                not mix with an old one; ``--resume`` continues it).

        Returns:
            The restored local checkpoint (resume only), or None.

        Raises:
            ConfigError: for ``new_run`` on a remote that holds a run.
        """
        if resume:
            return self.restore(local, "latest", replay, metrics=True)
        if new_run:
            self.check_new_run()
        shutil.rmtree(local, ignore_errors=True)
        local.mkdir(parents=True, exist_ok=True)
        self._pull(local, ["metrics.jsonl"])
        if replay is not None:
            self.download_chunks(replay, local / replay)
        return None
