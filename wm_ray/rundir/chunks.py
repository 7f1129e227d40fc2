"""Replay chunk files of a run directory on a filesystem URI (the replay shards' sync).

Chunk files never change once written (:mod:`wm_ray.replay.chunkfile`), so keeping a remote
copy means uploading new names and deleting the names the local replay evicted;
:class:`ChunkMirror` does that, and downloads what a fresh node's staging directory lacks.
"""

from __future__ import annotations

import logging
from pathlib import Path

from wm_ray.replay import chunkfile
from wm_ray.rundir.remote import RemoteDir

logger = logging.getLogger(__name__)


def _chunk_seq(name: str) -> int:
    """The insertion sequence number a chunk file's name starts with (see
    :func:`wm_ray.replay.chunkfile.chunk_filename`); names of another form sort last."""
    head = name.split("_", 1)[0]
    return int(head) if head.isdigit() else 1 << 62


class ChunkMirror(RemoteDir):
    """A :class:`RemoteDir` that mirrors directories of replay chunk files."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self._chunks: dict[str, set[str]] = {}

    def _remote_chunks(self, rel: str) -> set[str]:
        known = self._chunks.get(rel)
        if known is None:
            known = {
                name
                for name in self.list_files(rel)
                if "/" not in name and name.endswith(chunkfile.SUFFIX)
            }
            self._chunks[rel] = known
        return known

    def download_chunks(self, rel: str, local_dir: Path) -> int:
        """Download the chunk files under ``rel`` that ``local_dir`` lacks; returns how many.

        Files already there (a staging dir that survived, e.g. a shard restarted on its node)
        are kept. Remote files older than the newest local one are not fetched: the local
        replay evicted them since the last sync (eviction is oldest first), and the next sync
        deletes them remotely. Files quarantined locally (``corrupt/``) are not fetched again.
        """
        known = self._remote_chunks(rel)
        local_dir.mkdir(parents=True, exist_ok=True)
        finished, _ = chunkfile.list_chunk_files(local_dir)
        newest = max((_chunk_seq(path.name) for path in finished), default=-1)
        missing = [
            name
            for name in sorted(known)
            if _chunk_seq(name) > newest
            and not (local_dir / name).exists()
            and not (local_dir / "corrupt" / name).exists()
        ]
        for name in missing:
            self.download_file(f"{rel}/{name}", local_dir / name)
        if missing:
            logger.info(
                "replay: downloaded %d chunk files from %s", len(missing), self.display(rel)
            )
        return len(missing)

    def sync_chunks(self, local_dir: Path, rel: str) -> tuple[int, int]:
        """Upload new chunk files of ``local_dir`` to ``rel`` and delete the remote copies of
        evicted ones; returns ``(uploaded, deleted)``.

        Chunk files never change once written, so a name known to be uploaded is never sent
        again. Quarantined files (``corrupt/``) keep their remote copy.
        """
        known = self._remote_chunks(rel)
        finished, _ = chunkfile.list_chunk_files(local_dir)
        names = {path.name for path in finished}
        new = sorted(names - known)
        for name in new:
            self.upload_file(local_dir / name, f"{rel}/{name}")
            known.add(name)
        gone = sorted(n for n in known - names if not (local_dir / "corrupt" / n).exists())
        for name in gone:
            self.delete_file(f"{rel}/{name}")
            known.discard(name)
        return len(new), len(gone)
