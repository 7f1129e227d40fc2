"""Episode statistics from a stream of vector-env steps (Ray-free; used by loops and workers)."""

from __future__ import annotations

from typing import Any

import numpy as np

from wm_ray.types import REWARD_KEY, split_metrics


class EpisodeStats:
    """Running return and length per env; completed episodes queue up until :meth:`pop`.

    Args:
        num_envs: N, envs of the vector env.
        names: a name per env (e.g. replay stream ids); defaults to ``"0"``, ``"1"``, ...
    """

    def __init__(self, num_envs: int, names: list[str] | None = None) -> None:
        self.names = names or [str(i) for i in range(num_envs)]
        self._return = np.zeros(num_envs, np.float64)
        self._length = np.zeros(num_envs, np.int64)
        self._started = np.zeros(num_envs, bool)
        self._episodes: list[dict[str, Any]] = []

    def add(self, step: dict[str, np.ndarray]) -> None:
        """Account one vector step (``is_first``, ``is_last``, ``is_terminal``, ``reward`` (N,)
        and any ``metric/<name>`` entries, whose values at an episode's last step it keeps)."""
        _, metrics = split_metrics(step)
        first = np.asarray(step["is_first"], bool)
        last = np.asarray(step["is_last"], bool)
        reward = np.asarray(step[REWARD_KEY], np.float64).reshape(len(first))
        self._return = np.where(first, reward, self._return + reward)
        self._length = np.where(first, 0, self._length + 1)
        self._started |= first
        for i in np.flatnonzero(last & self._started).tolist():
            episode: dict[str, Any] = {
                "stream": self.names[i],
                "return": float(self._return[i]),
                "length": int(self._length[i]),
                "terminal": bool(step["is_terminal"][i]),
            }
            if metrics:
                episode["metrics"] = {name: float(v[i]) for name, v in metrics.items()}
            self._episodes.append(episode)
        self._started &= ~last

    def pop(self) -> list[dict[str, Any]]:
        """Episodes completed since the last call: ``{"stream", "return", "length", "terminal"}``
        and, for envs that report per-step metrics, ``"metrics"``: ``{name: value at the last
        step}`` (e.g. ``{"success": 1.0}``).

        ``length`` counts env transitions (steps after the is_first step); ``return`` sums the
        rewards of the episode's steps. Episodes whose is_first was never seen are skipped.
        """
        episodes, self._episodes = self._episodes, []
        return episodes

    def __len__(self) -> int:
        return len(self._episodes)


def metric_values(episodes: list[dict[str, Any]]) -> dict[str, list[float]]:
    """``{metric name: [value of each episode that has it]}`` of :meth:`EpisodeStats.pop`'s
    episodes (empty when the env reports no metrics)."""
    values: dict[str, list[float]] = {}
    for episode in episodes:
        for name, value in episode.get("metrics", {}).items():
            values.setdefault(name, []).append(float(value))
    return values
