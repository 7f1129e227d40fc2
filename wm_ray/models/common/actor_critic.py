"""The CNN + LSTM actor-critic of the frame-based families (IRIS; DIAMOND next).

A shared trunk on frames (real, reconstructed or imagined) and two linear heads: four 3x3 conv
+ 2x2 max-pool + ReLU stages (``d, d, 2d, 2d`` channels) shrink a 64 x 64 frame to 4 x 4, an
LSTM cell carries memory across steps, and linear heads give the action logits and the value.
The trunk is shared by the actor and the critic, as in IRIS (Micheli et al. 2023) and DIAMOND
(Alonso et al. 2024).
"""

from __future__ import annotations

import torch
from torch import nn

LSTMState = tuple[torch.Tensor, torch.Tensor]


class ActorCritic(nn.Module):
    """Args: image channels and side, number of discrete actions, the channels ``d`` of the
    first conv stage and the LSTM's units."""

    def __init__(
        self, channels: int, image_size: int, actions: int, cnn_depth: int, lstm: int
    ) -> None:
        super().__init__()
        if image_size % 16:
            raise ValueError(
                f"the actor-critic needs frames whose side is a multiple of 16, got {image_size}"
            )
        d = cnn_depth
        layers: list[nn.Module] = []
        in_ch = channels
        for out_ch in (d, d, 2 * d, 2 * d):
            layers += [nn.Conv2d(in_ch, out_ch, 3, 1, 1), nn.MaxPool2d(2), nn.ReLU()]
            in_ch = out_ch
        self.cnn = nn.Sequential(*layers, nn.Flatten())
        self.lstm = nn.LSTMCell(in_ch * (image_size // 16) ** 2, lstm)
        self.actor = nn.Linear(lstm, actions)
        self.critic = nn.Linear(lstm, 1)
        self.units = lstm

    def initial(self, batch: int, device: torch.device) -> LSTMState:
        """Zero LSTM states for ``batch`` streams."""
        zeros = torch.zeros(batch, self.units, device=device)
        return zeros, zeros.clone()

    @staticmethod
    def reset(state: LSTMState, is_first: torch.Tensor) -> LSTMState:
        """Zero the states of the streams whose ``is_first`` ``(B,)`` is set."""
        keep = (~is_first.bool()).float()[:, None]
        return state[0] * keep, state[1] * keep

    def forward(
        self, frames: torch.Tensor, state: LSTMState
    ) -> tuple[torch.Tensor, torch.Tensor, LSTMState]:
        """``(B, C, H, W)`` frames in [0, 1] -> logits ``(B, A)``, values ``(B,)``, new state."""
        h, c = self.lstm(self.cnn(frames), state)
        return self.actor(h), self.critic(h).squeeze(-1), (h, c)
