"""PlaNet (Hafner et al. 2019): a Gaussian RSSM world model and CEM planning in latent space.

``PlanetAgent`` implements ``wm_ray.core.Agent``; ``PlanetConfig`` is the ``planet`` section of
the root config. The config classes import without torch; ``PlanetAgent`` (and torch with it)
is imported on first access. Pure torch: nothing here imports Ray.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wm_ray.models.planet.config import CEMConfig, LossConfig, PlanetConfig, RSSMConfig

if TYPE_CHECKING:
    from wm_ray.models.planet.agent import PlanetAgent


def __getattr__(name: str) -> Any:
    if name == "PlanetAgent":
        from wm_ray.models.planet.agent import PlanetAgent

        return PlanetAgent
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CEMConfig", "LossConfig", "PlanetAgent", "PlanetConfig", "RSSMConfig"]
