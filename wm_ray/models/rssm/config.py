"""Configuration of the recurrent state-space model (torch-free): the ``rssm`` subsection of
every RSSM family's config (``dreamer.rssm``, ...)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from wm_ray.types import Ranges


@dataclass(frozen=True)
class RSSMConfig:
    """The recurrent state-space model: a normalized GRU plus stochastic latents."""

    RANGES: ClassVar[Ranges] = {"unimix": (0, 1)}

    latent: Literal["categorical", "gaussian"] = "categorical"
    """categorical: DreamerV3's groups x classes one-hots; gaussian: Dream to Control's (v1)."""
    deter: int = 64
    """Units of the deterministic GRU state h."""
    hidden: int = 64
    """Width of the layers around the GRU (input layer, prior and posterior heads)."""
    stoch: int = 8
    """Categorical groups, or dimensions of the Gaussian latent."""
    classes: int = 8
    """Classes per categorical group (unused by the Gaussian latent)."""
    unimix: float = 0.01
    """Share of the uniform distribution mixed into every latent categorical."""
    min_std: float = 0.1
    """Gaussian latent: std = softplus(raw) + min_std."""
    initial: Literal["learned", "zeros"] = "learned"
    """Initial state: learned (h0 = tanh(w), z0 = prior mode of h0) or all zeros."""
