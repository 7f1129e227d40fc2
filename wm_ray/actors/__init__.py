"""Ray actors: thin wrappers that place the Ray-free objects of ``wm_ray`` inside Ray.

Every module here exposes a plain class (usable and testable without Ray, except for the Ray
calls it makes to other actors) and a ``remote_*`` helper that returns the configured Ray actor
class. No math lives here (ARCHITECTURE.md invariant 1).
"""

from __future__ import annotations

from wm_ray.actors.env_worker import EnvWorker, remote_env_worker
from wm_ray.actors.learner import Learner, remote_learner
from wm_ray.actors.replay_shard import ReplayShard, remote_replay_shard
from wm_ray.actors.weights import WeightStore, remote_weight_store

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
