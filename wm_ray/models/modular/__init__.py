"""ModularRSSM: Dreamer's learning over an RSSM world model built from interchangeable parts:
encoders ``conv`` / ``mlp`` / ``vit``, decoders ``conv`` / ``mlp``, sequence models ``gru`` /
``lstm`` / ``transformer`` (see README.md). The config imports without torch; ``agent`` and
``networks`` need torch. Pure torch: nothing here imports Ray.
"""

from __future__ import annotations

from wm_ray.models.modular.config import ModularConfig, TransformerConfig, ViTConfig

__all__ = ["ModularConfig", "TransformerConfig", "ViTConfig"]
