"""I-JEPA (Assran et al., CVPR 2023): self-supervised image representations learned by
predicting, in representation space, the target encoder's features of masked blocks from a
context block. See the family README. The config classes import without torch. Pure torch:
nothing here imports Ray.
"""

from __future__ import annotations

from wm_ray.models.jepa.config import (
    JEPAConfig,
    MaskConfig,
    OptimConfig,
    ViTConfig,
    check_config,
    validate_root,
)

__all__ = [
    "JEPAConfig",
    "MaskConfig",
    "OptimConfig",
    "ViTConfig",
    "check_config",
    "validate_root",
]
