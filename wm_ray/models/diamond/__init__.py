"""DIAMOND (Alonso et al., NeurIPS 2024): a diffusion world model of the next frame. See the
family README.

The diffusion core: the denoiser networks (``networks``: DIAMOND's U-Net and a DiT) and the two
noise schedules behind one interface (``diffusion``: EDM as in the paper, DDPM); the reward /
termination model (``reward_end``), the dream (``imagination``), the losses and the agent
(``agent.DiamondAgent``). The config classes import without torch. Pure torch: nothing here
imports Ray.
"""

from __future__ import annotations

from wm_ray.models.diamond.config import (
    DenoiserConfig,
    DiamondConfig,
    DiffusionConfig,
    DiffusionCoreConfig,
    check_config,
)

__all__ = [
    "DenoiserConfig",
    "DiamondConfig",
    "DiffusionConfig",
    "DiffusionCoreConfig",
    "check_config",
]
