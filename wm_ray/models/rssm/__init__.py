"""The recurrent state-space model shared by the RSSM families (Dreamer, PlaNet; ModularRSSM
next): the GRU sequence model with categorical or Gaussian latents, its states, and the CEM
planner in its latent space (``planning``).

``RSSMConfig`` and ``CEMConfig`` import without torch; the modules ``rssm``, ``latents`` and
``planning`` need torch.
Pure torch: nothing here imports Ray.
"""

from __future__ import annotations

from wm_ray.models.rssm.config import CEMConfig, RSSMConfig, check_cem

__all__ = ["CEMConfig", "RSSMConfig", "check_cem"]
