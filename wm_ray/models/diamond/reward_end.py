"""DIAMOND's reward / termination model: a CNN + LSTM over transitions ``(o_t, a_t, o_{t+1})``.

Each transition's two frames, in [-1, 1], are stacked on channels (``2C``) and encoded by a CNN
whose residual blocks are conditioned on the action through adaptive group norm (the U-Net's
:class:`~wm_ray.models.diamond.networks.ResBlock`, with an action embedding of ``cond_dim`` as
the conditioning vector); every level ends with a stride-2 conv, and the last feature map,
flattened, enters an LSTM cell; with ``batch_norm`` (the default, not in DIAMOND) its ``F``
features are first batch-normalized (per feature, no affine) and scaled by ``F^(-1/4)``. A
linear head gives the logits of the reward's sign (3 classes: -1, 0, +1) and the logit of a
Bernoulli "the episode ends at ``o_{t+1}``". The LSTM is burnt in
on real transitions (:meth:`RewardEndModel.forward` with ``is_first`` resets) and then steps
with the imagined frames (:meth:`RewardEndModel.step`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from wm_ray.models.common.actor_critic import ActorCritic, LSTMState
from wm_ray.models.diamond.config import RewardEndConfig
from wm_ray.models.diamond.networks import ResBlock

REWARD_CLASSES = 3
"""Sign classes of the reward: index ``sign(r) + 1``."""


def reward_class(reward: Tensor) -> Tensor:
    """Rewards ``(...)`` -> sign classes ``(...)`` int64: 0 for r < 0, 1 for 0, 2 for r > 0."""
    return (torch.sign(reward) + 1).long()


def class_reward(index: Tensor) -> Tensor:
    """Sign classes -> rewards -1.0, 0.0, +1.0."""
    return index.float() - 1.0


class RewardEndModel(nn.Module):
    """Args: the config, frame channels ``C``, frame side, number of discrete actions."""

    def __init__(
        self, cfg: RewardEndConfig, channels: int, image_size: int, num_actions: int
    ) -> None:
        super().__init__()
        factor = 2 ** len(cfg.channels)
        if not cfg.channels or image_size % factor:
            raise ValueError(
                f"the reward / termination model's {len(cfg.channels)} levels need a frame side "
                f"that is a multiple of {factor}, got {image_size}"
            )
        self.channels, self.units = channels, cfg.lstm
        self.action = nn.Embedding(num_actions, cfg.cond_dim)
        self.conv_in = nn.Conv2d(2 * channels, cfg.channels[0], 3, padding=1)
        self.blocks = nn.ModuleList()
        self.down = nn.ModuleList()
        ch = cfg.channels[0]
        for width in cfg.channels:
            level = nn.ModuleList()
            for _ in range(cfg.res_blocks):
                level.append(ResBlock(ch, width, cfg.cond_dim))
                ch = width
            self.blocks.append(level)
            self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        side = image_size // factor
        features = ch * side * side
        self.norm: nn.Module = (
            nn.BatchNorm1d(features, affine=False) if cfg.batch_norm else nn.Identity()
        )
        self.scale = features**-0.25 if cfg.batch_norm else 1.0
        self.lstm = nn.LSTMCell(features, cfg.lstm)
        self.head = nn.Sequential(
            nn.Linear(cfg.lstm, cfg.lstm), nn.SiLU(), nn.Linear(cfg.lstm, REWARD_CLASSES + 1)
        )

    def initial(self, batch: int, device: torch.device) -> LSTMState:
        """Zero LSTM states for ``batch`` streams."""
        zeros = torch.zeros(batch, self.units, device=device)
        return zeros, zeros.clone()

    def encode(self, obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
        """``(N, C, H, W), (N,), (N, C, H, W) -> (N, F)`` features of the transitions."""
        cond = self.action(action.long())
        h = self.conv_in(torch.cat([obs, next_obs], dim=1))
        for level, down in zip(self.blocks, self.down):
            assert isinstance(level, nn.ModuleList)
            for block in level:
                h = block(h, cond)
            h = down(torch.relu(h))
        return self.norm(h.flatten(1)) * self.scale

    def _heads(self, h: Tensor) -> tuple[Tensor, Tensor]:
        out = self.head(h)
        return out[..., :REWARD_CLASSES], out[..., REWARD_CLASSES]

    def step(
        self, obs: Tensor, action: Tensor, next_obs: Tensor, state: LSTMState
    ) -> tuple[Tensor, Tensor, LSTMState]:
        """One transition of ``B`` streams: reward logits ``(B, 3)``, end logits ``(B,)``, the
        new state."""
        h, c = self.lstm(self.encode(obs, action, next_obs), state)
        reward_logits, end_logits = self._heads(h)
        return reward_logits, end_logits, (h, c)

    def forward(
        self,
        obs: Tensor,
        actions: Tensor,
        next_obs: Tensor,
        is_first: Tensor,
        state: LSTMState,
        detach_after: int = 0,
    ) -> tuple[Tensor, Tensor, LSTMState]:
        """``N`` transitions of ``B`` streams: ``obs, next_obs (B, N, C, H, W)``, ``actions
        (B, N)``, ``is_first (B, N)`` (the state is zeroed before transition ``j`` where the
        frame ``obs[:, j]`` starts an episode). The state is detached after the first
        ``detach_after`` transitions (burn-in: no gradient flows into them from later steps).

        Returns reward logits ``(B, N, 3)``, end logits ``(B, N)`` and the final state.
        """
        b, n = actions.shape
        feats = self.encode(obs.flatten(0, 1), actions.flatten(), next_obs.flatten(0, 1))
        feats = feats.view(b, n, -1)
        hs = []
        for j in range(n):
            if j == detach_after and j > 0:
                state = (state[0].detach(), state[1].detach())
            state = ActorCritic.reset(state, is_first[:, j])
            state = self.lstm(feats[:, j], state)
            hs.append(state[0])
        reward_logits, end_logits = self._heads(torch.stack(hs, 1))
        return reward_logits, end_logits, state


__all__ = ["REWARD_CLASSES", "RewardEndModel", "class_reward", "reward_class"]
