"""The recurrent state-space model shared by the RSSM families (Dreamer; PlaNet and
ModularRSSM next): the GRU sequence model with categorical or Gaussian latents, and its states.

``RSSMConfig`` imports without torch; the modules ``rssm`` and ``latents`` need torch.
Pure torch: nothing here imports Ray.
"""

from __future__ import annotations

from wm_ray.models.rssm.config import RSSMConfig

__all__ = ["RSSMConfig"]
