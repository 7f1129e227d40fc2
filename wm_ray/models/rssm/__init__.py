"""The recurrent state-space model shared by the RSSM families (Dreamer, PlaNet, ModularRSSM):
the RSSM with categorical or Gaussian latents and its states (``rssm``), its sequence models
(``backbones``: GRU, LSTM, transformer), and the CEM planner in its latent space (``planning``).

``RSSMConfig`` and ``CEMConfig`` import without torch; the modules ``rssm``, ``latents``,
``backbones`` and ``planning`` need torch.
Pure torch: nothing here imports Ray.
"""

from __future__ import annotations

from wm_ray.models.rssm.config import CEMConfig, RSSMConfig, check_cem

__all__ = ["CEMConfig", "RSSMConfig", "check_cem"]
