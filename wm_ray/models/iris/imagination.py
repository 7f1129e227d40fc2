"""Stepping the world model: :class:`Dream` sessions, imagined rollouts and the actor-critic loss.

A :class:`Dream` advances ``B`` streams in lockstep, one token at a time, the way IRIS samples:
``observe`` puts a real frame's tokens into the context, ``act`` adds an action token (its output
gives the reward and termination of the transition and the first token of the next frame),
``generate`` samples the next frame's ``K`` tokens one after another. With ``cached=True`` each
token costs one transformer step against the KV cache (bounded: the last ``context`` blocks);
``cached=False`` recomputes the whole history under the same sliding-window mask for every token
(the reference the cache is tested and benchmarked against; its cost grows without bound).

:func:`imagine` rolls the actor-critic out in a dream from real start frames (IRIS, sec. 2.3):
it acts on frames decoded from the generated tokens, samples rewards and terminations, and
returns what :func:`actor_critic_loss` needs (REINFORCE with a value baseline, an entropy bonus
and lambda-returns, masked after each trajectory's first sampled termination).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from wm_ray.models.common import lambda_returns
from wm_ray.models.iris.actor_critic import ActorCritic, LSTMState
from wm_ray.models.iris.config import ActorCriticConfig
from wm_ray.models.iris.tokenizer import Tokenizer
from wm_ray.models.iris.transformer import KVCache, Outputs, WorldModel


def sample_logits(
    logits: torch.Tensor, temperature: float, gen: torch.Generator | None
) -> torch.Tensor:
    """Indices ``(...)`` drawn from ``softmax(logits / temperature)``; argmax at temperature 0."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, -1)
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=gen).view(probs.shape[:-1])


class Dream:
    """``batch`` streams stepped through the world model in lockstep (no gradients).

    Args:
        wm: the transformer.
        batch: streams.
        cached: extend a KV cache (True) or recompute the context for every token (False).
    """

    def __init__(self, wm: WorldModel, batch: int, cached: bool = True) -> None:
        self.wm, self.batch, self.cached = wm, batch, cached
        device = next(wm.parameters()).device
        self.cache: KVCache | None = wm.new_cache(batch, device) if cached else None
        self.history = torch.zeros(batch, 0, dtype=torch.long, device=device)
        self.slot = 0
        """Slot of the next token (0 .. K-1 frame tokens, K the action)."""
        self.last: Outputs | None = None
        self.tokens_fed = 0

    @torch.no_grad()
    def _feed(self, tokens: torch.Tensor) -> Outputs:
        n = tokens.shape[1]
        wm = self.wm
        if self.cache is not None:
            out = wm(wm.embed_tokens(tokens, self.slot), cache=self.cache)
        else:  # the whole history again, under the same sliding window
            self.history = torch.cat([self.history, tokens], 1)
            mask = wm.window_mask(self.history.shape[1], tokens.device)
            out = wm(wm.embed_tokens(self.history, 0), mask=mask, last=n)
        self.slot = (self.slot + n) % wm.block
        self.tokens_fed += n
        self.last = out
        return out

    def observe(self, tokens: torch.Tensor) -> None:
        """Put a frame's ``(B, K)`` tokens into the context (the next token is its action)."""
        if self.slot != 0:
            raise RuntimeError("observe() needs the context to be at a frame boundary")
        self._feed(tokens)

    def act(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add ``(B,)`` actions; returns the reward and termination logits of the transition."""
        if self.slot != self.wm.tokens:
            raise RuntimeError("act() needs a whole frame in the context first")
        out = self._feed(actions.long()[:, None])
        return out.reward_logits[:, -1], out.end_logits[:, -1]

    def generate(self, temperature: float, gen: torch.Generator | None) -> torch.Tensor:
        """Sample the next frame's ``(B, K)`` tokens, feeding each; needs an action just fed."""
        if self.slot != 0 or self.last is None:
            raise RuntimeError("generate() needs an action token just fed (call act())")
        tokens = []
        for _ in range(self.wm.tokens):
            token = sample_logits(self.last.obs_logits[:, -1], temperature, gen)
            tokens.append(token)
            self._feed(token[:, None])
        return torch.stack(tokens, 1)


@dataclass
class Trajectory:
    """An imagined batch: ``H`` steps from ``B`` start frames."""

    logits: torch.Tensor
    """``(B, H, A)`` action logits (with gradients)."""
    actions: torch.Tensor
    """``(B, H)`` sampled actions."""
    values: torch.Tensor
    """``(B, H + 1)`` critic values of the frames ``0 .. H`` (with gradients)."""
    rewards: torch.Tensor
    """``(B, H)`` rewards of the transitions ``t -> t + 1``."""
    ends: torch.Tensor
    """``(B, H)`` sampled terminations of ``t + 1`` (0/1)."""
    alive: torch.Tensor
    """``(B, H)`` 1 until the step after a trajectory's first termination (loss weights)."""
    frames: torch.Tensor | None = None
    """``(B, H + 1, C, H, W)`` decoded frames when asked for."""


def imagine(
    wm: WorldModel,
    tokenizer: Tokenizer,
    ac: ActorCritic,
    start_tokens: torch.Tensor,
    state: LSTMState,
    alive: torch.Tensor,
    cfg: ActorCriticConfig,
    gen: torch.Generator | None,
    cached: bool = True,
    keep_frames: bool = False,
) -> Trajectory:
    """Roll the actor-critic out for ``cfg.horizon`` steps in the world model.

    Args:
        start_tokens: ``(B, K)`` tokens of the real start frames.
        state: the actor-critic's LSTM state after burn-in.
        alive: ``(B,)`` 0 for start frames that are terminal (their trajectory is ignored).
    """
    dream = Dream(wm, start_tokens.shape[0], cached=cached)
    dream.observe(start_tokens)
    with torch.no_grad():
        frame = tokenizer.decode(start_tokens).clamp(0.0, 1.0)
    logits, values, actions, rewards, ends, frames = [], [], [], [], [], [frame]
    for _ in range(cfg.horizon):
        logit, value, state = ac(frame, state)
        action = sample_logits(logit.detach(), 1.0, gen)
        reward_logits, end_logits = dream.act(action)
        with torch.no_grad():
            rewards.append(wm.reward_value(reward_logits, gen))
            probs = torch.sigmoid(end_logits.float())
            ends.append(torch.bernoulli(probs, generator=gen))
            frame = tokenizer.decode(dream.generate(cfg.temperature, gen)).clamp(0.0, 1.0)
        logits.append(logit)
        values.append(value)
        actions.append(action)
        if keep_frames:
            frames.append(frame)
    _, last_value, _ = ac(frame, state)
    values.append(last_value)
    end = torch.stack(ends, 1)
    still = torch.cumprod(1.0 - end, 1)
    alive_t = alive.float()[:, None] * torch.cat([torch.ones_like(still[:, :1]), still[:, :-1]], 1)
    return Trajectory(
        logits=torch.stack(logits, 1),
        actions=torch.stack(actions, 1),
        values=torch.stack(values, 1),
        rewards=torch.stack(rewards, 1),
        ends=end,
        alive=alive_t,
        frames=torch.stack(frames, 1) if keep_frames else None,
    )


def actor_critic_loss(
    traj: Trajectory, cfg: ActorCriticConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """IRIS's loss: REINFORCE with baseline, entropy bonus, value regression to lambda-returns.

    ``L = -E[log pi(a_t) sg(R_t - v_t)] - eta E[H(pi)] + E[(v_t - sg(R_t))^2]``, each mean taken
    over the steps where ``alive`` is 1.
    """
    with torch.no_grad():
        returns = lambda_returns(
            traj.rewards, 1.0 - traj.ends, traj.values.detach(), cfg.gamma, cfg.lam
        )
    weight = traj.alive
    norm = weight.sum().clamp(min=1.0)
    values = traj.values[:, :-1]
    logp_all = F.log_softmax(traj.logits.float(), -1)
    logp = logp_all.gather(-1, traj.actions[..., None]).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    advantage = returns - values.detach()
    policy_loss = -(logp * advantage * weight).sum() / norm
    entropy_mean = (entropy * weight).sum() / norm
    value_loss = ((values - returns) ** 2 * weight).sum() / norm
    loss = policy_loss - cfg.entropy * entropy_mean + value_loss
    metrics = {
        "ac/policy_loss": policy_loss.detach(),
        "ac/value_loss": value_loss.detach(),
        "ac/entropy": entropy_mean.detach(),
        "ac/return": ((returns * weight).sum() / norm).detach(),
        "ac/value": ((values.detach() * weight).sum() / norm).detach(),
        "ac/imagined_reward": ((traj.rewards * weight).sum() / norm).detach(),
        "ac/imagined_end": ((traj.ends * weight).sum() / norm).detach(),
        "ac/alive": weight.mean().detach(),
    }
    return loss, metrics
