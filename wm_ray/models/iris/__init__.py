"""IRIS (Micheli, Alonso, Fleuret, ICLR 2023): discrete autoencoder, causal transformer world
model, actor-critic learned in imagination. See the family README.

``IrisAgent`` implements ``wm_ray.core.Agent``; ``IrisConfig`` is the ``iris`` section of the
root config. The config classes import without torch; ``IrisAgent`` is imported on first access.
Pure torch: nothing here imports Ray.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wm_ray.models.iris.config import (
    ActorCriticConfig,
    IrisConfig,
    ScheduleConfig,
    TokenizerConfig,
    WorldModelConfig,
)

if TYPE_CHECKING:
    from wm_ray.models.iris.agent import IrisAgent


def __getattr__(name: str) -> Any:
    if name == "IrisAgent":
        from wm_ray.models.iris.agent import IrisAgent

        return IrisAgent
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ActorCriticConfig",
    "IrisAgent",
    "IrisConfig",
    "ScheduleConfig",
    "TokenizerConfig",
    "WorldModelConfig",
]
