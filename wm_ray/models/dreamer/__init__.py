"""DreamerV3 (Hafner et al. 2023): RSSM world model + actor-critic learned in imagination.

``DreamerAgent`` implements ``wm_ray.core.Agent``; ``DreamerConfig`` is the ``dreamer`` section
of the root config. The config classes import without torch; ``DreamerAgent`` (and torch with
it) is imported on first access. Pure torch: nothing here imports Ray.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wm_ray.models.dreamer.config import (
    ActorCriticConfig,
    DreamerConfig,
    LossConfig,
    OptimConfig,
    RSSMConfig,
)

if TYPE_CHECKING:
    from wm_ray.models.dreamer.agent import DreamerAgent


def __getattr__(name: str) -> Any:
    if name == "DreamerAgent":
        from wm_ray.models.dreamer.agent import DreamerAgent

        return DreamerAgent
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ActorCriticConfig",
    "DreamerAgent",
    "DreamerConfig",
    "LossConfig",
    "OptimConfig",
    "RSSMConfig",
]
