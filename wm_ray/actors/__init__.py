"""Ray actors: thin wrappers that place the Ray-free objects of ``wm_ray`` inside Ray.

Every module here exposes a plain class (usable and testable without Ray, except for the Ray
calls it makes to other actors) and a ``remote_*`` helper that returns the configured Ray actor
class. No math lives here (ARCHITECTURE.md invariant 1).

The names below are imported on first use, not with the package: a Ray worker process imports
only its actor's module, so a replay shard or the weight store never imports torch (~250 MB of
resident memory and ~1.5 s of CPU per actor start), which env workers and learners need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wm_ray.actors.env_worker import EnvWorker, remote_env_worker
    from wm_ray.actors.learner import Learner, remote_learner
    from wm_ray.actors.replay_shard import ReplayShard, remote_replay_shard
    from wm_ray.actors.weights import WeightStore, remote_weight_store

_MODULES = {
    "EnvWorker": "env_worker",
    "remote_env_worker": "env_worker",
    "Learner": "learner",
    "remote_learner": "learner",
    "ReplayShard": "replay_shard",
    "remote_replay_shard": "replay_shard",
    "WeightStore": "weights",
    "remote_weight_store": "weights",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "EnvWorker",
    "Learner",
    "ReplayShard",
    "WeightStore",
    "remote_env_worker",
    "remote_learner",
    "remote_replay_shard",
    "remote_weight_store",
]
