"""Genie (Bruce et al., ICML 2024): a generative interactive environment learned from video.
See the family README. The first two increments hold the config, the ST transformer, the VQ,
the video tokenizer, the latent action model and the MaskGIT dynamics; the training schedule,
the agent, the presets and the registry line are still to come. The config classes import
without torch. Pure torch: nothing here imports Ray.
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
