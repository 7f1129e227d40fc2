"""Files of a directory on a pyarrow filesystem: ``s3://``, ``gs://``, ``hdfs://``, ``abfs://``,
``file://``.

:class:`RemoteDir` is the file layer of a run directory given as a URI (``RunStorage`` in
:mod:`wm_ray.rundir.sync` adds the run's layout: checkpoints, mirrored files, replay chunks):
single-file upload and download under temporary names, deletes, listings, and the record of what
this process last uploaded, so unchanged files are not sent again.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
from collections.abc import Iterable
from pathlib import Path

import pyarrow.fs as pafs

from wm_ray.config_io import ConfigError
from wm_ray.rundir.paths import is_uri

VALID = (
    "a plain path, or a URI with a scheme pyarrow supports: file:///abs/path, "
    "s3://bucket/prefix, gs://bucket/prefix, hdfs://host/path, "
    "abfs://container@account.dfs.core.windows.net/path"
)
_UPLOADING = ".upload"
_BLOCK = 8 << 20


def _signature(stat: os.stat_result) -> tuple[int, int, int]:
    return stat.st_size, stat.st_mtime_ns, stat.st_ino


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


class RemoteDir:
    """A directory on a pyarrow filesystem, addressed by paths relative to its root.

    Args:
        uri: ``scheme://...`` of the run directory.

    Raises:
        ConfigError: when pyarrow cannot open ``uri`` (unknown scheme, a relative ``file://``,
            a filesystem this pyarrow build lacks, unreachable credentials or region).
    """

    def __init__(self, uri: str) -> None:
        if not is_uri(uri):
            raise ConfigError(
                f"run directory {uri!r} is not a URI; valid run directories are {VALID}"
            )
        try:
            filesystem, root = pafs.FileSystem.from_uri(uri)
        except (ValueError, OSError, NotImplementedError, ImportError, RuntimeError) as err:
            raise ConfigError(
                f"run directory {uri!r} cannot be opened ({_first_line(err)}); valid run "
                f"directories are {VALID}"
            ) from None
        self.uri = uri.rstrip("/")
        self.filesystem: pafs.FileSystem = filesystem
        self.root = root.rstrip("/")
        self._is_local = isinstance(filesystem, pafs.LocalFileSystem)
        self._uploaded: dict[str, tuple[int, int, int]] = {}
        self._dirs: set[str] = set()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"

    # -- paths -------------------------------------------------------------------------------

    def path(self, rel: str = "") -> str:
        """The filesystem path of ``rel`` (``""`` is the run root)."""
        rel = rel.strip("/")
        return f"{self.root}/{rel}" if rel else self.root

    def display(self, rel: str = "") -> str:
        """``rel`` as a URI, for messages: ``s3://bucket/run/checkpoints/latest``."""
        rel = rel.strip("/")
        return f"{self.uri}/{rel}" if rel else self.uri

    # -- single files ------------------------------------------------------------------------

    def exists(self, rel: str) -> bool:
        """Whether a file or directory ``rel`` exists."""
        info = self.filesystem.get_file_info(self.path(rel))
        return info.type != pafs.FileType.NotFound

    def read_bytes(self, rel: str) -> bytes:
        """The content of file ``rel`` (``FileNotFoundError`` when it does not exist)."""
        with self.filesystem.open_input_stream(self.path(rel)) as stream:
            return bytes(stream.read())

    def read_text(self, rel: str) -> str:
        """The UTF-8 content of file ``rel``."""
        return self.read_bytes(rel).decode()

    def _mkdir(self, rel_dir: str) -> None:
        if rel_dir in self._dirs:
            return
        self.filesystem.create_dir(self.path(rel_dir), recursive=True)
        self._dirs.add(rel_dir)

    def upload_file(self, local: str | Path, rel: str) -> None:
        """Copy the local file to ``rel`` (on a local filesystem via a temporary name, so a
        reader never sees half a file; object stores publish an object only when complete)."""
        local = Path(local)
        stat = local.stat()
        self._mkdir(posixpath.dirname(rel.strip("/")))
        target = self.path(rel)
        temp = f"{target}.{os.getpid()}{_UPLOADING}" if self._is_local else target
        with local.open("rb") as source, self.filesystem.open_output_stream(temp) as out:
            for block in iter(lambda: source.read(_BLOCK), b""):
                out.write(block)
        if temp != target:
            self.filesystem.move(temp, target)
        self._uploaded[rel.strip("/")] = _signature(stat)

    def download_file(self, rel: str, local: str | Path) -> Path:
        """Copy file ``rel`` to ``local`` (written under a temporary name, then renamed)."""
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        temp = local.with_name(f".{local.name}.download")
        try:
            with (
                self.filesystem.open_input_stream(self.path(rel)) as stream,
                temp.open("wb") as out,
            ):
                while block := stream.read(_BLOCK):
                    out.write(block)
            os.replace(temp, local)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        self._uploaded[rel.strip("/")] = _signature(local.stat())
        return local

    def delete_file(self, rel: str) -> None:
        """Delete file ``rel`` if it exists."""
        with contextlib.suppress(FileNotFoundError):
            self.filesystem.delete_file(self.path(rel))
        self._uploaded.pop(rel.strip("/"), None)

    def delete_dir(self, rel: str) -> None:
        """Delete directory ``rel`` and everything under it, if it exists."""
        with contextlib.suppress(FileNotFoundError):
            self.filesystem.delete_dir(self.path(rel))
        prefix = rel.strip("/") + "/"
        for key in [k for k in self._uploaded if k.startswith(prefix)]:
            del self._uploaded[key]
        self._dirs = {d for d in self._dirs if d != rel.strip("/") and not d.startswith(prefix)}

    # -- listings and trees ------------------------------------------------------------------

    def list_files(self, rel: str = "") -> dict[str, int]:
        """Every file under ``rel`` (recursively): ``{path relative to rel: size}``; leftovers
        of an interrupted :meth:`upload_file` are not listed."""
        base = self.path(rel)
        selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        out = {}
        for info in self.filesystem.get_file_info(selector):
            if info.type == pafs.FileType.File and not info.path.endswith(_UPLOADING):
                out[posixpath.relpath(info.path, base)] = int(info.size or 0)
        return out

    def list_dirs(self, rel: str = "") -> list[str]:
        """Names of the subdirectories directly under ``rel`` (sorted)."""
        selector = pafs.FileSelector(self.path(rel), recursive=False, allow_not_found=True)
        infos = self.filesystem.get_file_info(selector)
        return sorted(info.base_name for info in infos if info.type == pafs.FileType.Directory)

    def changed(self, local: Path, rel: str) -> bool:
        """Whether ``local`` differs (size, mtime or inode: an atomic replace makes a new one)
        from what this process last uploaded to (or downloaded from) ``rel``."""
        return self._uploaded.get(rel.strip("/")) != _signature(local.stat())

    def upload_tree(
        self, local_dir: str | Path, rel: str = "", skip: Iterable[str] = ()
    ) -> list[str]:
        """Upload the files under ``local_dir`` that changed since their last upload.

        Hidden files and directories (``.tmp-*``, in-progress writes) and ``*.tmp`` files are
        never sent; ``skip`` names further top-level entries to leave out. Remote files with no
        local counterpart are kept. Returns the uploaded paths (relative to the run root).
        """
        root = Path(local_dir)
        if not root.is_dir():
            return []
        skipped = set(skip)
        uploaded = []
        for path in sorted(root.rglob("*")):
            parts = path.relative_to(root).parts
            if parts[0] in skipped or any(p.startswith(".") for p in parts):
                continue
            if not path.is_file() or path.name.endswith(".tmp"):
                continue
            target = posixpath.join(rel, *parts) if rel else posixpath.join(*parts)
            if self.changed(path, target):
                self.upload_file(path, target)
                uploaded.append(target)
        return uploaded
