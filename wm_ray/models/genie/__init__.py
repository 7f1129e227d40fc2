"""Genie (Bruce et al., ICML 2024): a generative interactive environment learned from video.
See the family README. This first increment holds the config, the ST transformer, the VQ and
the video tokenizer; the latent action model, the MaskGIT dynamics, the agent and the registry
line are still to come. The config classes import without torch. Pure torch: nothing here
imports Ray.
"""

from __future__ import annotations

from wm_ray.models.genie.config import (
    DynamicsConfig,
    GenieConfig,
    LatentActionConfig,
    STConfig,
    TokenizerConfig,
    check_config,
    validate,
)

__all__ = [
    "DynamicsConfig",
    "GenieConfig",
    "LatentActionConfig",
    "STConfig",
    "TokenizerConfig",
    "check_config",
    "validate",
]
