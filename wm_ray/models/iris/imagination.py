"""Stepping IRIS's world model: :class:`Dream` over tokens, :class:`FrameDream` over frames.

A :class:`Dream` advances ``B`` streams in lockstep, one token at a time, the way IRIS samples:
``observe`` puts a real frame's tokens into the context, ``act`` adds an action token (its output
gives the reward and termination of the transition and the first token of the next frame),
``generate`` samples the next frame's ``K`` tokens one after another. With ``cached=True`` each
token costs one transformer step against the KV cache (bounded: the last ``context`` blocks);
``cached=False`` recomputes the whole history under the same sliding-window mask for every token
(the reference the cache is tested and benchmarked against; its cost grows without bound).

:class:`FrameDream` is the :class:`~wm_ray.models.common.imagination.Steppable` the actor-critic
learns in (IRIS, sec. 2.3): every step acts, samples the reward and the termination, generates
the next frame's tokens and decodes them into the frame the policy sees next
(:func:`~wm_ray.models.common.imagination.rollout`).
"""

from __future__ import annotations

import torch

from wm_ray.models.common.imagination import Transition, sample_logits
from wm_ray.models.iris.tokenizer import Tokenizer
from wm_ray.models.iris.transformer import KVCache, Outputs, WorldModel


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


class FrameDream:
    """``B`` dreams that step from frame to frame (the actor-critic's view of the world model).

    Args:
        wm: the transformer.
        tokenizer: decodes generated tokens into frames.
        start_tokens: ``(B, K)`` tokens of the real start frames.
        temperature: sampling temperature of the frame tokens.
        gen: the sampling generator (rewards, ends, tokens).
        cached: step against a KV cache (see :class:`Dream`).
    """

    def __init__(
        self,
        wm: WorldModel,
        tokenizer: Tokenizer,
        start_tokens: torch.Tensor,
        temperature: float,
        gen: torch.Generator | None,
        cached: bool = True,
    ) -> None:
        self.wm, self.tokenizer = wm, tokenizer
        self.temperature, self.gen = temperature, gen
        self.dream = Dream(wm, start_tokens.shape[0], cached=cached)
        self.dream.observe(start_tokens)
        with torch.no_grad():
            self.first_frame = tokenizer.decode(start_tokens).clamp(0.0, 1.0)

    @torch.no_grad()
    def step(self, action: torch.Tensor) -> Transition:
        reward_logits, end_logits = self.dream.act(action)
        reward = self.wm.reward_value(reward_logits, self.gen)
        end = torch.bernoulli(torch.sigmoid(end_logits.float()), generator=self.gen)
        tokens = self.dream.generate(self.temperature, self.gen)
        return Transition(self.tokenizer.decode(tokens).clamp(0.0, 1.0), reward, end)
