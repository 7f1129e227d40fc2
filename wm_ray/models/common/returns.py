"""Lambda-returns and return normalization of DreamerV3 (Hafner et al. 2023, sec. 3).

Index convention of :func:`lambda_returns`. An imagined trajectory visits states
``s_0 .. s_H``; ``value[:, t] = v(s_t)`` for ``t = 0..H``. ``reward[:, t]`` and ``cont[:, t]``
belong to the *transition* ``s_t -> s_{t+1}``: the reward received on arriving in ``s_{t+1}``
and whether ``s_{t+1}`` continues the episode (0 if it is terminal). DreamerV3 predicts reward
and continue from the state they arrive with, so with its ``(B, H + 1)`` head outputs over
``s_0 .. s_H`` pass ``reward = rew[:, 1:]`` and ``cont = con[:, 1:]``. Then, backwards::

    R_H = v_H
    R_t = r_t + gamma * c_t * ((1 - lam) * v_{t+1} + lam * R_{t+1})      t = H-1 .. 0

``cont`` may be a probability (the continue head's mean) or a 0/1 flag. Real-data returns use
``is_terminal`` only for ``cont``: a truncated episode still bootstraps.
"""

from __future__ import annotations

import torch
from torch import nn

from wm_ray.models.common.distributed import all_gather_cat


def lambda_returns(
    reward: torch.Tensor, cont: torch.Tensor, value: torch.Tensor, gamma: float, lam: float
) -> torch.Tensor:
    """TD(lambda) returns ``(B, H)`` of ``s_0 .. s_{H-1}`` (see the module docstring).

    Args:
        reward: ``(B, H)`` rewards of the transitions ``s_t -> s_{t+1}``.
        cont: ``(B, H)`` continue flags or probabilities of ``s_{t+1}``.
        value: ``(B, H + 1)`` values of ``s_0 .. s_H``; ``v_H`` bootstraps the tail.
        gamma: discount in [0, 1] (DreamerV3: 0.997 = 1 - 1/333).
        lam: lambda in [0, 1] (DreamerV3: 0.95); 1 gives discounted sums, 0 one-step TD targets.

    Returns:
        ``(B, H)`` returns ``R_0 .. R_{H-1}``, differentiable in all inputs.
    """
    if reward.dim() != 2 or cont.shape != reward.shape:
        raise ValueError(f"reward and cont must both be (B, H), got {reward.shape}, {cont.shape}")
    batch, horizon = reward.shape
    if value.shape != (batch, horizon + 1):
        raise ValueError(f"value must be (B, H + 1) = {(batch, horizon + 1)}, got {value.shape}")
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
        raise ValueError(f"gamma and lam must lie in [0, 1], got {gamma=}, {lam=}")
    discount = gamma * cont
    bootstrap = reward + discount * (1.0 - lam) * value[:, 1:]
    ret = value[:, -1]
    returns = []
    for t in reversed(range(horizon)):
        ret = bootstrap[:, t] + discount[:, t] * lam * ret
        returns.append(ret)
    return torch.stack(returns[::-1], 1)


class ReturnNormalizer(nn.Module):
    """Percentile return scale (DreamerV3): ``scale = max(limit, EMA(P95) - EMA(P5))``.

    The actor divides advantages by ``scale``: large returns are scaled down to a range of about
    1, while small returns (sparse rewards) are never scaled up, so noise is not amplified. The
    5th and 95th percentiles of each batch are tracked by EMAs starting at 0 (no debiasing, as in
    DreamerV3). State lives in buffers, so ``state_dict`` / ``load_state_dict`` round-trip it.

    Args:
        decay: EMA decay per update (0.99).
        limit: the smallest scale (1.0).
        low_pct: lower percentile in [0, 100] (5).
        high_pct: upper percentile in [0, 100] (95).
    """

    low: torch.Tensor
    high: torch.Tensor

    def __init__(
        self, decay: float = 0.99, limit: float = 1.0, low_pct: float = 5.0, high_pct: float = 95.0
    ) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0 or limit <= 0.0 or not 0.0 <= low_pct < high_pct <= 100.0:
            raise ValueError(
                f"need 0 <= decay < 1, limit > 0, 0 <= low_pct < high_pct <= 100, got "
                f"{decay=}, {limit=}, {low_pct=}, {high_pct=}"
            )
        self.decay, self.limit = decay, limit
        self.quantiles = (low_pct / 100.0, high_pct / 100.0)
        self.register_buffer("low", torch.zeros(()))
        self.register_buffer("high", torch.zeros(()))

    @torch.no_grad()
    def update(self, returns: torch.Tensor) -> None:
        """Fold the percentiles of ``returns`` (any shape, e.g. ``(B, H)``) into the EMAs.

        Under a ``torch.distributed`` group the percentiles are those of every rank's returns
        together (the global batch), so every rank keeps the same scale as one learner would.
        """
        x = all_gather_cat(returns.detach().float().flatten())
        q = torch.quantile(x, torch.tensor(self.quantiles, device=x.device))
        # A non-finite batch (a diverging update, skipped by the optimizers) leaves the EMAs
        # as they were instead of poisoning every later update; no device sync.
        finite = torch.isfinite(q).all()
        low = self.low * self.decay + (1.0 - self.decay) * q[0]
        high = self.high * self.decay + (1.0 - self.decay) * q[1]
        self.low.copy_(torch.where(finite, low, self.low))
        self.high.copy_(torch.where(finite, high, self.high))

    @property
    def offset(self) -> torch.Tensor:
        """``()``: the EMA of the low percentile (cancels out of advantages)."""
        return self.low

    @property
    def scale(self) -> torch.Tensor:
        """``()``: ``max(limit, high - low)``."""
        return torch.clamp(self.high - self.low, min=self.limit)

    def forward(
        self, returns: torch.Tensor, update: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Optionally update with ``returns``, then return ``(offset, scale)`` as 0-dim tensors."""
        if update:
            self.update(returns)
        return self.offset.clone(), self.scale
