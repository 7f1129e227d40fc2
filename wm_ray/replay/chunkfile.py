"""Atomic, self-checking on-disk chunk files.

One file holds one chunk: consecutive steps ``(L, ...)`` of one stream. Layout::

    prefix   20 bytes  b"WMRCHUNK" | u16 version | u16 flags (0) | u32 header_len | u32 header_crc32
    header   header_len bytes of UTF-8 JSON, space-padded so the payload starts 64-byte aligned
    payload  raw C-order array bytes; each key at its header ``offset`` (64-byte aligned)

The JSON header records ``stream``, ``index``, ``seq`` (the replay's global insertion sequence
number, which restores insertion order on reload), ``length`` (L), ``inserted_before`` (steps the
replay had inserted before this chunk), ``payload_bytes`` and per key ``dtype``, ``shape``,
``offset``, ``nbytes`` and ``crc32``. A file is written to a hidden temporary file in the same
directory, flushed and fsync'd, then ``os.replace``'d onto its final name and the directory is
fsync'd, so a reader sees either the whole file or none of it. Any mismatch found on reading
(truncation, bad magic, checksum, header/payload disagreement) raises :class:`CorruptChunkError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MAGIC = b"WMRCHUNK"
VERSION = 1
SUFFIX = ".chunk"
TEMP_SUFFIX = ".tmp"
_PREFIX = struct.Struct("<8sHHII")
_ALIGN = 64
_SAFE = re.compile(r"[A-Za-z0-9_.-]")
_ALLOWED_KINDS = "biufc"


class CorruptChunkError(ValueError):
    """A chunk file that cannot be trusted; ``path`` names the file and ``reason`` says why."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"corrupt replay chunk file {self.path}: {reason}")


@dataclass(frozen=True)
class ChunkHeader:
    """The parsed, validated header of a chunk file (no payload read yet)."""

    path: Path
    stream: str
    index: int
    seq: int
    length: int
    inserted_before: int
    payload_start: int
    payload_bytes: int
    keys: dict[str, dict[str, Any]]

    @property
    def nbytes(self) -> int:
        """Bytes of the stored arrays (the payload without alignment padding)."""
        return sum(int(entry["nbytes"]) for entry in self.keys.values())


def chunk_filename(stream: str, index: int, seq: int) -> str:
    """A file name for any stream string: ``<seq>_<escaped stream>_<index>.chunk``.

    Characters outside ``[A-Za-z0-9_.-]`` are %-escaped (UTF-8); long names are shortened with a
    hash. The name is for humans; the header is authoritative and ``seq`` makes it unique.
    """
    safe = "".join(
        ch if _SAFE.fullmatch(ch) else "".join(f"%{b:02X}" for b in ch.encode()) for ch in stream
    )
    if len(safe) > 80:
        safe = safe[:64] + "~" + hashlib.sha1(stream.encode()).hexdigest()[:12]
    return f"{seq:012d}_{safe}_{index:09d}{SUFFIX}"


def write_chunk_file(
    directory: Path,
    stream: str,
    index: int,
    seq: int,
    inserted_before: int,
    chunk: dict[str, np.ndarray],
    fsync: bool = True,
) -> Path:
    """Write ``chunk`` (arrays ``(L, ...)``, C-contiguous) atomically; returns the final path.

    The file is complete and (with ``fsync``) durable when this returns; on error no final file
    exists and the temporary file is removed.
    """
    arrays = {key: np.ascontiguousarray(value) for key, value in chunk.items()}
    for key, value in arrays.items():
        if value.dtype.kind not in _ALLOWED_KINDS:
            raise ValueError(f"cannot store key {key!r} with dtype {value.dtype} (numeric only)")
    length = int(next(iter(arrays.values())).shape[0]) if arrays else 0
    entries: dict[str, dict[str, Any]] = {}
    offset = 0
    for key, value in arrays.items():
        entries[key] = {
            "dtype": value.dtype.str,
            "shape": list(value.shape),
            "offset": offset,
            "nbytes": int(value.nbytes),
            "crc32": zlib.crc32(_raw(value)),
        }
        offset = _aligned(offset + value.nbytes)
    header = {
        "stream": stream,
        "index": int(index),
        "seq": int(seq),
        "length": length,
        "inserted_before": int(inserted_before),
        "payload_bytes": offset,
        "keys": entries,
    }
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (_aligned(_PREFIX.size + len(text)) - _PREFIX.size - len(text))
    prefix = _PREFIX.pack(MAGIC, VERSION, 0, len(text), zlib.crc32(text))
    final = directory / chunk_filename(stream, index, seq)
    temp = directory / f".{final.name}.{os.getpid()}{TEMP_SUFFIX}"
    try:
        with open(temp, "wb") as f:
            f.write(prefix)
            f.write(text)
            for value in arrays.values():
                f.write(_raw(value))
                f.write(b"\0" * (_aligned(value.nbytes) - value.nbytes))
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(temp, final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    if fsync:
        _fsync_directory(directory)
    return final


def read_chunk_header(path: str | Path) -> ChunkHeader:
    """Read and validate a chunk file's prefix and header, and check the file size.

    Raises:
        CorruptChunkError: naming the file and what is wrong with it.
    """
    path = Path(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        raw = f.read(_PREFIX.size)
        if len(raw) < _PREFIX.size:
            raise CorruptChunkError(path, f"truncated: {size} bytes, shorter than the prefix")
        magic, version, _flags, header_len, header_crc = _PREFIX.unpack(raw)
        if magic != MAGIC:
            raise CorruptChunkError(path, f"bad magic {magic!r} (not a wm_ray chunk file)")
        if version != VERSION:
            raise CorruptChunkError(path, f"unsupported format version {version} (need {VERSION})")
        text = f.read(header_len)
    if len(text) < header_len:
        raise CorruptChunkError(
            path, f"truncated: {size} bytes, inside the {header_len}-byte header"
        )
    if zlib.crc32(text) != header_crc:
        raise CorruptChunkError(path, "header checksum mismatch (header bytes were altered)")
    try:
        head = json.loads(text)
        header = ChunkHeader(
            path=path,
            stream=str(head["stream"]),
            index=int(head["index"]),
            seq=int(head["seq"]),
            length=int(head["length"]),
            inserted_before=int(head["inserted_before"]),
            payload_start=_PREFIX.size + header_len,
            payload_bytes=int(head["payload_bytes"]),
            keys=dict(head["keys"]),
        )
    except (ValueError, KeyError, TypeError) as e:
        raise CorruptChunkError(path, f"unreadable header ({type(e).__name__}: {e})") from None
    _check_entries(header)
    expected = header.payload_start + header.payload_bytes
    if size < expected:
        raise CorruptChunkError(path, f"truncated: {size} bytes, header promises {expected}")
    if size > expected:
        raise CorruptChunkError(path, f"{size} bytes, header promises {expected} (extra data)")
    return header


def load_chunk_file(path: str | Path) -> tuple[ChunkHeader, dict[str, np.ndarray]]:
    """Read a whole chunk file and verify every key's crc32.

    Returns:
        The header and the arrays ``{key: (L, ...)}`` (writable views of one buffer).

    Raises:
        CorruptChunkError: naming the file and what is wrong with it.
    """
    header = read_chunk_header(path)
    buffer = bytearray(header.payload_start + header.payload_bytes)
    with open(header.path, "rb") as f:
        got = f.readinto(buffer)
    if got != len(buffer):
        raise CorruptChunkError(header.path, f"truncated while reading ({got} of {len(buffer)})")
    data: dict[str, np.ndarray] = {}
    for key, entry in header.keys.items():
        start = header.payload_start + int(entry["offset"])
        raw = memoryview(buffer)[start : start + int(entry["nbytes"])]
        crc = zlib.crc32(raw)
        if crc != int(entry["crc32"]):
            raise CorruptChunkError(
                header.path,
                f"checksum mismatch in key {key!r} (stored crc32 {entry['crc32']}, data {crc})",
            )
        dtype = np.dtype(entry["dtype"])
        shape = tuple(entry["shape"])
        data[key] = np.frombuffer(buffer, dtype, int(np.prod(shape)), start).reshape(shape)
    return header, data


def list_chunk_files(directory: Path) -> tuple[list[Path], list[Path]]:
    """The finished chunk files and the leftover temporary files (interrupted writes)."""
    if not directory.is_dir():
        return [], []
    finished = sorted(p for p in directory.iterdir() if p.is_file() and p.name.endswith(SUFFIX))
    temps = sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and p.name.startswith(".") and p.name.endswith(TEMP_SUFFIX)
    )
    return finished, temps


def quarantine(path: Path, directory: Path) -> Path:
    """Move ``path`` into ``directory/corrupt/`` (never deleting data); returns the new path."""
    target_dir = directory / "corrupt"
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / path.name
    n = 0
    while target.exists():
        n += 1
        target = target_dir / f"{path.name}.{n}"
    os.replace(path, target)
    return target


def _check_entries(header: ChunkHeader) -> None:
    """Header/payload consistency: dtype, shape, sizes and offsets of every key."""
    if header.length < 1:
        raise CorruptChunkError(header.path, f"header length {header.length} < 1")
    end = 0
    for key, entry in header.keys.items():
        try:
            dtype = np.dtype(entry["dtype"])
            shape = tuple(int(n) for n in entry["shape"])
            offset, nbytes, _ = int(entry["offset"]), int(entry["nbytes"]), int(entry["crc32"])
        except (KeyError, TypeError, ValueError) as e:
            raise CorruptChunkError(header.path, f"bad header entry for key {key!r}: {e}") from None
        if dtype.kind not in _ALLOWED_KINDS or not shape or shape[0] != header.length:
            raise CorruptChunkError(
                header.path,
                f"key {key!r}: dtype {dtype} / shape {shape} do not fit length {header.length}",
            )
        if min(shape) < 0 or nbytes != int(np.prod(shape)) * dtype.itemsize:
            raise CorruptChunkError(
                header.path, f"key {key!r}: {nbytes} bytes do not match {dtype} {shape}"
            )
        if offset < end or offset + nbytes > header.payload_bytes:
            raise CorruptChunkError(
                header.path, f"key {key!r}: bytes {offset}..{offset + nbytes} fall outside payload"
            )
        end = offset + nbytes


def _raw(array: np.ndarray) -> memoryview:
    """The bytes of a C-contiguous array as a flat byte view (no copy)."""
    return array.reshape(-1).view(np.uint8).data


def _aligned(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def _fsync_directory(directory: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
