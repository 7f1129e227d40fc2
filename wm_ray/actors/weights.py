"""``WeightStore``: the weight-version registry that learners publish to and env workers pull from.

The store keeps only the newest ``(version, ObjectRef)`` pair. Published weights are put into
the Ray object store by the store itself (so the store owns them and they outlive the publishing
learner); :meth:`WeightStore.get` hands out the ObjectRef, so the bytes travel from the object
store to each worker directly and never through this actor again. Versions increase strictly
(ARCHITECTURE.md invariant 5); an older or repeated version is refused.

Learners publish weights packed by :mod:`wm_ray.actors.wire` (numpy arrays, no tensors), so this
actor's process never imports torch.
"""

from __future__ import annotations

from typing import Any

import ray

from wm_ray.actors.naming import actor_options
from wm_ray.config import Config


class WeightStore:
    """The newest published acting weights and their version.

    ``latest_version()`` is ``-1`` before the first publish.
    """

    def __init__(self) -> None:
        self.version = -1
        self.ref: Any = None

    def publish(self, version: int, weights: Any) -> None:
        """Store ``weights`` (a value or an ObjectRef of one) as ``version``.

        Raises:
            ValueError: when ``version`` is not newer than the current version.
        """
        version = int(version)
        if version <= self.version:
            raise ValueError(
                f"weight version {version} is not newer than the current version {self.version}; "
                "published versions must increase strictly"
            )
        self.ref = weights if isinstance(weights, ray.ObjectRef) else ray.put(weights)
        self.version = version

    def latest_version(self) -> int:
        """The newest published version, or ``-1`` before any publish."""
        return self.version

    def get(self) -> tuple[int, Any]:
        """``(version, ObjectRef of the weights)``; ``(-1, None)`` before any publish."""
        return self.version, self.ref

    def ping(self) -> int:
        """Health check: returns the latest version."""
        return self.version


def remote_weight_store(config: Config, prefix: str = "", **options: Any) -> Any:
    """The Ray actor class of :class:`WeightStore` with its options set.

    Usage: ``remote_weight_store(config).remote()``.

    Args:
        config: the run config (``resources.namespace`` names the Ray namespace).
        prefix: actor-name prefix (the name is ``f"{prefix}weight-store"``).
        **options: further ``ray.actor.ActorClass.options`` (they override the defaults).
    """
    defaults = actor_options(config, "weight-store", None, prefix, num_cpus=0)
    return ray.remote(WeightStore).options(**{**defaults, **options})
