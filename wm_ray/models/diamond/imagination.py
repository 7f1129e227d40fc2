"""Stepping DIAMOND's world model: :class:`DiffusionDream`, a common ``Steppable``.

The world model is the denoiser ``F`` under its schedule (the next frame is sampled from the
last ``K`` frames and actions: EDM's 3 Euler steps in the paper) plus the reward / termination
model, whose LSTM state advances with every imagined transition. A dream starts from real
context: the last ``K`` frames and the ``K - 1`` actions between them (:func:`context_window`
cuts them out of a replayed batch, padding across episode starts as training does), and the
reward / termination model's state after its burn-in on the real transitions before the start.
Each :meth:`DiffusionDream.step` takes the policy's actions ``a_t``, samples ``o_{t+1}``, runs
the reward / termination model on ``(o_t, a_t, o_{t+1})``, samples the reward's sign class and
the end, and slides the context by one frame.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from wm_ray.models.common.actor_critic import LSTMState
from wm_ray.models.common.imagination import Transition, sample_logits
from wm_ray.models.common.noise import Source
from wm_ray.models.diamond.diffusion import Condition, Schedule, stack_context
from wm_ray.models.diamond.reward_end import RewardEndModel, class_reward


def context_window(
    frames: Tensor, actions: Tensor, is_first: Tensor, end: Tensor, k: int
) -> tuple[Tensor, Tensor]:
    """The ``k`` frames ending at index ``end`` and the ``k`` actions taken after them.

    Args:
        frames: ``(B, T, C, H, W)`` in [-1, 1]; actions ``(B, T)``; is_first ``(B, T)`` bool.
        end: ``(B,)`` the index of each row's last context frame (``k - 1 <= end < T``).

    Returns ``(B, k, C, H, W)`` frames ``end - k + 1 .. end`` and ``(B, k)`` actions of the
    same steps; the frames (and actions) before the latest episode start inside the window
    are zeroed (DIAMOND pads a context that reaches back across a reset).
    """
    offsets = torch.arange(k, device=frames.device) - (k - 1)
    idx = end[:, None] + offsets  # (B, k)
    rows = torch.arange(frames.shape[0], device=frames.device)[:, None]
    ctx, act, first = frames[rows, idx], actions[rows, idx], is_first[rows, idx]
    later = first.flip(1).long().cumsum(1).flip(1) - first.long()  # starts after each step
    keep = later == 0
    ctx = ctx * keep[:, :, None, None, None].to(ctx.dtype)
    return ctx, act * keep.to(act.dtype)


class DiffusionDream:
    """``B`` imagined streams (no gradients): the :class:`~wm_ray.models.common.imagination.
    Steppable` the actor-critic learns in, and the session of ``wm-ray play``.

    Args:
        denoiser: the raw network ``F``.
        schedule: EDM or DDPM (:func:`~wm_ray.models.diamond.diffusion.make_schedule`).
        reward_end: the reward / termination model.
        frames: ``(B, K, C, H, W)`` real context in [-1, 1], oldest first.
        actions: ``(B, K - 1)`` the actions between the context frames.
        state: the reward / termination model's LSTM state after its burn-in.
        gen: where the sampling draws its numbers.
    """

    def __init__(
        self,
        denoiser: nn.Module,
        schedule: Schedule,
        reward_end: RewardEndModel,
        frames: Tensor,
        actions: Tensor,
        state: LSTMState,
        gen: Source,
    ) -> None:
        b, k = frames.shape[:2]
        if actions.shape != (b, k - 1):
            raise ValueError(
                f"a dream of {b} streams with {k} context frames needs ({b}, {k - 1}) actions, "
                f"got {tuple(actions.shape)}"
            )
        self.denoiser, self.schedule, self.reward_end = denoiser, schedule, reward_end
        self.frames, self.actions, self.state, self.gen = frames, actions.long(), state, gen
        self.batch = b

    @property
    def last_frame(self) -> Tensor:
        """``(B, C, H, W)`` the frame the policy sees now."""
        return self.frames[:, -1]

    @torch.no_grad()
    def step(self, action: Tensor) -> Transition:
        """Advance every stream by ``action (B,)``: the next frame ``(B, C, H, W)`` (in [-1, 1],
        on the uint8 levels under EDM's ``quantize``), the sampled reward (-1, 0 or +1) and
        the sampled end (0 / 1)."""
        action = action.long()
        if action.shape != (self.batch,):
            raise ValueError(f"actions must be ({self.batch},), got {tuple(action.shape)}")
        acts = torch.cat([self.actions, action[:, None]], 1)
        cond = Condition(stack_context(self.frames), acts)
        last = self.frames[:, -1]
        nxt = self.schedule.sample(self.denoiser, tuple(last.shape), cond, self.gen)
        reward_logits, end_logits, self.state = self.reward_end.step(last, action, nxt, self.state)
        gen = self.gen if isinstance(self.gen, torch.Generator) else None
        reward = class_reward(sample_logits(reward_logits, 1.0, gen))
        end = torch.bernoulli(torch.sigmoid(end_logits.float()), generator=gen)
        self.frames = torch.cat([self.frames[:, 1:], nxt[:, None]], 1)
        self.actions = acts[:, 1:]
        return Transition(nxt, reward, end)


__all__ = ["DiffusionDream", "context_window"]
