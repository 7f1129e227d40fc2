"""Losses of ModularRSSM: exactly Dreamer's (``wm_ray.models.dreamer.losses``), whatever the parts.

The world-model loss (DreamerV3 eq. 5) reconstructs the keys the chosen decoders predict
(image SSE in ``x / 255 - 0.5`` space, symlog-vector SSE), plus the two-hot reward, the continue
BCE and the balanced KL with free bits; the actor and critic learn in imagination from every
posterior state, whose backbone memory (LSTM cell, transformer window cache) imagination carries
on. Nothing here depends on which encoder, decoder or backbone is used, so the family reuses
the functions rather than copying them.
"""

from __future__ import annotations

from wm_ray.models.dreamer.losses import (
    actor_critic_losses,
    imagine,
    kl_losses,
    world_model_loss,
)

__all__ = ["actor_critic_losses", "imagine", "kl_losses", "world_model_loss"]
