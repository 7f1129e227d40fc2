"""Offline data as an env: ``dataset:<path>`` plays the episodes of a ``wm-ray ingest`` data
set (or a run directory's replay), so a family that learns from video (Genie, JEPA) trains on
a data set alone through the ordinary loops: env steps are frames streamed from the data, the
train ratio, checkpoints, resume and the Ray runtime work unchanged, and the data is replayed
again and again (epochs) as long as the run lasts.

- Each env plays whole episodes, one at a time, in an order drawn from its seed (env ``i`` of
  a vector env gets its own seed, so envs stream different episodes); one episode is in memory
  per env, read from its chunk files when it starts.
- An episode is a stream's steps between ``is_first`` flags (a source may hold several); it
  ends where the data ends it: ``is_terminal`` is a termination, any other end a truncation.
  Episodes of one step (nothing to step to) are skipped.
- The reward is the data's (0 where the source had none).
- **A video takes no actions**: the action space is ``Discrete(1)`` and whatever the policy
  sends is ignored, so the action stored in replay is always 0. Recorded action labels are not
  reproduced here; to train on them, preload the data set instead (``replay.preload``).
- ``env.image_size`` may only restate the data's frame side (frames are not resized here;
  ingest again with ``--image-size``).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from wm_ray.envs.base import DefaultSeed, StepResult
from wm_ray.replay import chunkfile
from wm_ray.replay.dataset import chunk_files, read_dataset

OPTIONS = frozenset({"image_size", "time_limit"})


def owns(env_id: str) -> bool:
    """Data sets are named with the ``dataset:`` prefix only."""
    return False


def list_ids() -> list[str]:
    """No fixed ids: ``dataset:<path to a data set directory>``."""
    return []


def _episodes(root: Path) -> list[list[Path]]:
    """The chunk files of each stream, in order (one stream may hold several episodes)."""
    meta = read_dataset(root)
    recorded = None if meta is None else {s.get("stream") for s in meta.get("sources", [])}
    streams: dict[str, list[tuple[int, Path]]] = {}
    for header in chunk_files(root):
        if recorded is None or header.stream in recorded:
            streams.setdefault(header.stream, []).append((header.index, header.path))
    return [[path for _, path in sorted(chunks)] for _, chunks in sorted(streams.items())]


class DatasetEnv(gym.Env):
    """Plays a data set's episodes (see the module docstring).

    Args:
        root: the data set directory.
        image_size: the frame side the run expects (must be the data's), or None.
        time_limit: cut episodes to this many steps (a truncation), or None.
    """

    def __init__(self, root: Path, image_size: int | None = None, time_limit: int | None = None):
        self.root = root
        self.streams = _episodes(root)
        if not self.streams:
            raise ValueError(
                f"dataset:{root} holds no chunk files (a directory written by `wm-ray ingest "
                "... --out DIR`, or a run directory with replay chunks)"
            )
        _, first = chunkfile.load_chunk_file(self.streams[0][0])
        if "image" not in first:
            raise ValueError(f"dataset:{root} has no image frames (keys {sorted(first)})")
        shape = tuple(first["image"].shape[1:])
        if image_size is not None and shape[:2] != (image_size, image_size):
            raise ValueError(
                f"env.image_size={image_size} differs from dataset:{root}'s frames {shape}; "
                "leave env.image_size unset or ingest again with --image-size"
            )
        self.time_limit = time_limit
        self.observation_space = spaces.Dict({"image": spaces.Box(0, 255, shape, np.uint8)})
        self.action_space = spaces.Discrete(1)
        self.metadata = {"render_modes": ["rgb_array"]}
        self.render_mode = "rgb_array"
        self._order: list[int] = []
        self._pending: list[dict[str, np.ndarray]] = []
        self._episode: dict[str, np.ndarray] = {}
        self._t = 0

    def _load(self, stream: int) -> list[dict[str, np.ndarray]]:
        """The episodes of one stream, split at ``is_first``, each of 2+ steps."""
        parts = [chunkfile.load_chunk_file(path)[1] for path in self.streams[stream]]
        data = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
        starts = np.flatnonzero(data["is_first"]).tolist()
        bounds = sorted({0, *starts, len(data["image"])})
        out = []
        for lo, hi in itertools.pairwise(bounds):
            if hi - lo >= 2:
                out.append({key: value[lo:hi] for key, value in data.items()})
        return out

    def _next_episode(self) -> dict[str, np.ndarray]:
        for _ in range(2 * len(self.streams) + 1):
            if not self._pending:
                if not self._order:
                    self._order = self.np_random.permutation(len(self.streams)).tolist()
                self._pending = self._load(self._order.pop())
            if self._pending:
                return self._pending.pop(0)
        raise ValueError(f"dataset:{self.root} has no episode of 2 or more steps")

    def render(self) -> np.ndarray:  # type: ignore[override]
        return self._episode["image"][self._t]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start the next episode of this env's order (a new seed draws a new order)."""
        super().reset(seed=seed)
        if seed is not None:
            self._order, self._pending = [], []
        self._episode, self._t = self._next_episode(), 0
        return {"image": self.render()}, {}

    def step(self, action: Any) -> StepResult:
        """The next recorded frame; the action is ignored (a video takes none)."""
        self._t += 1
        ep, t = self._episode, self._t
        last = t == len(ep["image"]) - 1
        terminated = bool(ep["is_terminal"][t]) if "is_terminal" in ep else False
        limit = self.time_limit is not None and t >= self.time_limit
        truncated = (last or limit) and not terminated
        reward = float(ep["reward"][t]) if "reward" in ep else 0.0
        return {"image": self.render()}, reward, terminated, truncated, {}


def make(
    task: str, *, seed: int | None = None, image_size: int | None = None,
    time_limit: int | None = None,
) -> gym.Env:  # fmt: skip
    """The env of the data set at path ``task`` (``dataset:<path>`` without the prefix)."""
    root = Path(task).expanduser()
    if not root.is_dir():
        raise ValueError(f"dataset:{task}: no such directory (a `wm-ray ingest --out` directory)")
    return DefaultSeed(DatasetEnv(root, image_size, time_limit), seed)
