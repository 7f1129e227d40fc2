"""Chunked, disk-persisted sequence replay with a sample:insert limiter (numpy + stdlib only).

- :class:`Replay` (``buffer.py``): the facade; ``add_chunk``, ``sample``, ``stats``, state and
  manifest for checkpoints, reload of a directory of chunk files.
- ``storage.py``: chunks, per-stream links, capacity/RAM accounting, oldest-first eviction.
- ``chunkfile.py``: the atomic, checksummed chunk file format.
- ``sequences.py``: valid sequence starts (kept incrementally) and the batch gather.
- ``selectors.py``: uniform and recency sampling.
- ``limiter.py``: Reverb-style samples-per-insert limiter, and the run's pacing rule (``Pacer``).
- ``writer.py``: :class:`StreamWriter`, vector-env steps to per-env chunks.
"""

from __future__ import annotations

from wm_ray.replay.buffer import EmptyReplayError, Replay
from wm_ray.replay.chunkfile import (
    ChunkHeader,
    CorruptChunkError,
    load_chunk_file,
    read_chunk_header,
    write_chunk_file,
)
from wm_ray.replay.limiter import Limiter, Pacer, ToleranceError, pacing_tolerance
from wm_ray.replay.selectors import Recency, Selector, Uniform, make_selector
from wm_ray.replay.sequences import SequenceIndex, gather, valid_starts
from wm_ray.replay.storage import Chunk, ChunkStore, parse_bytes
from wm_ray.replay.writer import StreamWriter

__all__ = [
    "Chunk",
    "ChunkHeader",
    "ChunkStore",
    "CorruptChunkError",
    "EmptyReplayError",
    "Limiter",
    "Pacer",
    "Recency",
    "Replay",
    "Selector",
    "SequenceIndex",
    "StreamWriter",
    "ToleranceError",
    "Uniform",
    "gather",
    "load_chunk_file",
    "make_selector",
    "pacing_tolerance",
    "parse_bytes",
    "read_chunk_header",
    "valid_starts",
    "write_chunk_file",
]
