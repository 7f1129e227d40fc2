"""Data conventions shared by every room: step dicts, chunks and batches.

A *step* is one time index of one environment, stored as a flat dict of arrays (the
DreamerV3 "embodied" convention):

- observation keys: ``image`` (H, W, C) uint8 and/or ``vector`` (D,) float32;
- ``reward`` float32: the reward that arrived together with this observation (0 on is_first);
- ``is_first`` bool: this observation starts an episode (after reset or an env rebuild);
- ``is_last`` bool: this observation ends an episode (termination *or* truncation);
- ``is_terminal`` bool: the episode ended in a true terminal state. Truncation (a time limit)
  sets is_last without is_terminal, so value bootstrapping uses ``is_terminal`` only;
- ``action``: the action the policy chose *at* this observation (int64 index for discrete
  spaces, float32 vector in [-1, 1] for continuous ones). The action stored with an is_last
  step is never executed: the env resets on the next call instead.

A vector env emits the same keys with a leading env axis ``(N, ...)``; a *chunk* is a run of
consecutive steps of one stream (one env of one worker) with a leading time axis ``(L, ...)``;
a sampled *batch* has ``(B, T, ...)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Ranges = dict[str, tuple[float | None, float | None]]
"""A config class's ``RANGES``: valid ``(low, high)`` (inclusive, None: unbounded) per field."""

OBS_KEYS = ("image", "vector")
FLAG_KEYS = ("is_first", "is_last", "is_terminal")
REWARD_KEY = "reward"
ACTION_KEY = "action"
METRIC_PREFIX = "metric/"
"""Prefix of a vector env's per-step scalar metrics (``metric/success`` (N,) float32): reported
by env backends (``wm_ray.envs.base.StepMetrics``), read by the driver's episode statistics and
never passed to the policy or to replay."""

Step = dict[str, Any]
Arrays = dict[str, np.ndarray]


def obs_keys(arrays: Arrays) -> list[str]:
    """The observation keys present in ``arrays``, in canonical order."""
    return [key for key in OBS_KEYS if key in arrays]


def split_metrics(arrays: Arrays) -> tuple[Arrays, Arrays]:
    """``(arrays without the metric keys, {metric name: values})`` (see :data:`METRIC_PREFIX`)."""
    rest = {k: v for k, v in arrays.items() if not k.startswith(METRIC_PREFIX)}
    metrics = {k[len(METRIC_PREFIX) :]: v for k, v in arrays.items() if k.startswith(METRIC_PREFIX)}
    return rest, metrics


def check_step_keys(arrays: Arrays) -> None:
    """Raise ``ValueError`` naming what is missing when ``arrays`` breaks the step convention."""
    missing = [key for key in (*FLAG_KEYS, REWARD_KEY) if key not in arrays]
    if not obs_keys(arrays):
        missing.append("image or vector")
    if missing:
        raise ValueError(
            f"step data is missing {missing}; a step needs an observation key of {OBS_KEYS}, "
            f"{REWARD_KEY!r} and {FLAG_KEYS} (got keys {sorted(arrays)})"
        )
