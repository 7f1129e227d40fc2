"""Cut a vector env's step stream into per-env chunks.

An env worker calls :meth:`StreamWriter.add` once per vector-env step with arrays ``(N, ...)``;
every ``chunk_len`` steps it hands one chunk ``(chunk_len, ...)`` per env to a sink such as
``Replay.add_chunk`` (or a function that calls a replay shard asynchronously). Env ``i`` is
stream ``f"{prefix}-{i}"`` with chunk indices 0, 1, 2, ...; give a restarted worker a new prefix
so its streams never link to the old ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from wm_ray.types import FLAG_KEYS, check_step_keys

Sink = Callable[[str, int, dict[str, np.ndarray]], Any]


class StreamWriter:
    """Per-env chunk accumulation for one vector env.

    Args:
        sink: called as ``sink(stream, index, chunk)`` for every finished chunk; its return
            values (e.g. object refs of asynchronous adds) are handed back by :meth:`add` and
            :meth:`flush`. Emitted arrays are never reused by the writer, so the sink may keep them.
        num_envs: N, envs of the vector env.
        chunk_len: steps per emitted chunk.
        prefix: stream name prefix; env ``i`` is ``f"{prefix}-{i}"``.
    """

    def __init__(self, sink: Sink, num_envs: int, chunk_len: int = 64, prefix: str = "env") -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if chunk_len < 1:
            raise ValueError(f"chunk_len must be >= 1, got {chunk_len}")
        self.sink = sink
        self.num_envs = int(num_envs)
        self.chunk_len = int(chunk_len)
        self.prefix = prefix
        self.streams = [f"{prefix}-{i}" for i in range(num_envs)]
        self.next_index = [0] * num_envs
        self.steps_added = 0
        self.chunks_emitted = 0
        self._buffers: dict[str, np.ndarray] | None = None
        self._keys: tuple[str, ...] | None = None
        self._fill = 0

    def add(self, step: dict[str, Any]) -> list[Any]:
        """Append one vector-env step (arrays ``(N, ...)``).

        Returns:
            The sink's results for the chunks this step completed (usually none).

        Raises:
            ValueError: for missing step keys, a wrong leading env axis or changed keys.
        """
        check_step_keys(step)
        arrays = {key: np.asarray(value) for key, value in step.items()}
        for key in FLAG_KEYS:
            arrays[key] = arrays[key].astype(bool, copy=False)
        for key, value in arrays.items():
            if value.shape[:1] != (self.num_envs,):
                raise ValueError(
                    f"step key {key!r} has shape {value.shape}; expected a leading env axis of "
                    f"{self.num_envs} (N, ...)"
                )
        if self._keys is None:
            self._keys = tuple(arrays)
        elif set(arrays) != set(self._keys):
            raise ValueError(f"step keys {sorted(arrays)} changed from {sorted(self._keys)}")
        if self._buffers is None:
            self._buffers = {
                key: np.empty((self.num_envs, self.chunk_len, *value.shape[1:]), value.dtype)
                for key, value in arrays.items()
            }
        for key, value in arrays.items():
            self._buffers[key][:, self._fill] = value
        self._fill += 1
        self.steps_added += self.num_envs
        return self._emit() if self._fill == self.chunk_len else []

    def flush(self) -> list[Any]:
        """Emit the partially filled chunks (fewer than ``chunk_len`` steps), if any."""
        return self._emit() if self._fill else []

    def _emit(self) -> list[Any]:
        assert self._buffers is not None
        buffers, fill = self._buffers, self._fill
        self._buffers, self._fill = None, 0
        results = []
        for i, stream in enumerate(self.streams):
            chunk = {key: buf[i, :fill] for key, buf in buffers.items()}
            results.append(self.sink(stream, self.next_index[i], chunk))
            self.next_index[i] += 1
            self.chunks_emitted += 1
        return results
