"""The networks of IRIS (Micheli et al. 2023) and how the agent builds them.

- :class:`~wm_ray.models.iris.tokenizer.Tokenizer`: the VQ autoencoder, frames <-> 16 tokens.
- :class:`~wm_ray.models.iris.transformer.WorldModel`: the GPT over ``[z^1 .. z^K, a]`` blocks
  with block-causal attention, rotary positions and a KV cache; reward and termination heads.
- :class:`~wm_ray.models.common.actor_critic.ActorCritic`: the CNN + LSTM actor-critic on
  reconstructed (acting) and imagined (learning) frames.
"""

from __future__ import annotations

from typing import NamedTuple

from wm_ray.models.common.actor_critic import ActorCritic
from wm_ray.models.iris.config import IrisConfig
from wm_ray.models.iris.tokenizer import Tokenizer
from wm_ray.models.iris.transformer import WorldModel

__all__ = ["ActorCritic", "Networks", "Tokenizer", "WorldModel", "build_networks"]


class Networks(NamedTuple):
    tokenizer: Tokenizer
    world_model: WorldModel | None
    """None for an acting-only agent."""
    actor_critic: ActorCritic


def build_networks(
    cfg: IrisConfig, image_shape: tuple[int, int, int], actions: int, acting: bool = False
) -> Networks:
    """The three parts for frames ``image_shape = (H, W, C)`` and ``actions`` discrete actions.

    With ``acting`` the world model and the tokenizer's perceptual network are not built: acting
    needs only the tokenizer (the policy sees reconstructions) and the actor-critic.
    """
    size, _, channels = image_shape
    tokenizer = Tokenizer(cfg.tokenizer, image_size=size, channels=channels, perceptual=not acting)
    wm = None
    if not acting:
        wm = WorldModel(cfg.world_model, cfg.tokenizer.vocab, cfg.tokenizer.tokens, actions)
    ac = ActorCritic(channels, size, actions, cfg.ac.cnn_depth, cfg.ac.lstm)
    return Networks(tokenizer, wm, ac)
