"""Stepping IRIS's world model: :class:`Dream` over tokens, :class:`FrameDream` over frames.

A :class:`Dream` advances ``B`` streams in lockstep, one token at a time, the way IRIS samples:
``observe`` puts a real frame's tokens into the context, ``act`` adds an action token (its output
gives the reward and termination of the transition and the first token of the next frame),
``generate`` samples the next frame's ``K`` tokens one after another; ``frame`` does both. With
``cached=True`` each token costs one transformer step against the KV cache (a fixed ring of the
last ``context`` blocks); ``cached=False`` recomputes the whole history under the same
sliding-window mask for every token (the reference the cache is tested and benchmarked against;
its cost grows without bound).

The cached steps run on a :class:`Stepper`, which owns the cache and runs the one-token step in
one of three modes: ``eager``; ``compiled`` (``torch.compile`` of the one-token step: one fixed
graph, since the cache's shapes never change and its write position is a tensor); ``captured``
(CUDA only: a whole imagined frame, the action token and the ``K`` frame tokens with their
sampling, recorded once as a CUDA graph and replayed per frame, with the action and the
frame's uniform numbers copied into its input buffers; on a CPU it runs compiled). All three
draw the same numbers (one ``(B, K)`` uniform draw per frame, sampled by inverse CDF) and so
sample the same tokens. A learner keeps one stepper per batch size, so a compiled step or a
captured graph is made once and reused by every later imagination.

:class:`FrameDream` is the :class:`~wm_ray.models.common.imagination.Steppable` the actor-critic
learns in (IRIS, sec. 2.3): every step acts, samples the reward and the termination, generates
the next frame's tokens and decodes them into the frame the policy sees next
(:func:`~wm_ray.models.common.imagination.rollout`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch

from wm_ray.models.common.distributions import inverse_cdf
from wm_ray.models.common.imagination import Transition
from wm_ray.models.common.noise import rand
from wm_ray.models.iris.tokenizer import Tokenizer
from wm_ray.models.iris.transformer import KVCache, Outputs, WorldModel

Mode = Literal["eager", "compiled", "captured"]
MODES: tuple[Mode, ...] = ("eager", "compiled", "captured")
Heads = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""``(B, vocab)`` next-token logits, ``(B, R)`` reward logits, ``(B,)`` end logits of the token
just fed."""


def sample_token(logits: torch.Tensor, temperature: float, uniform: torch.Tensor) -> torch.Tensor:
    """``(B,)`` tokens from ``softmax(logits / temperature)`` at ``uniform (B,)``; argmax at 0."""
    if temperature <= 0:
        return logits.argmax(-1)
    return inverse_cdf(torch.softmax(logits.float() / temperature, -1), uniform[:, None])


def _feed_one(wm: WorldModel, cache: KVCache, token: torch.Tensor) -> Heads:
    """Feed ``(B,)`` tokens at the cache's next position (the slot follows from it)."""
    out = wm(wm.embed_tokens(token[:, None], cache.next), cache=cache)
    return out.obs_logits[:, -1], out.reward_logits[:, -1], out.end_logits[:, -1]


class Stepper:
    """The world model stepped through a fixed KV cache for ``batch`` streams.

    Args:
        wm: the transformer (its mode, eval or train, is the caller's business).
        batch: streams.
        mode: ``eager``, ``compiled`` or ``captured`` (see the module docstring).
        backend: ``torch.compile``'s backend (tests use ``aot_eager``).
    """

    def __init__(
        self,
        wm: WorldModel,
        batch: int,
        mode: Mode = "eager",
        backend: str | Callable[..., Any] = "inductor",
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"stepper mode {mode!r} is not one of {MODES}")
        self.wm, self.batch = wm, batch
        self.device = next(wm.parameters()).device
        self.cache = wm.new_cache(batch, self.device)
        self.capture = mode == "captured" and self.device.type == "cuda"
        self.mode: Mode = mode if mode != "captured" or self.capture else "compiled"
        self._graphs: dict[float, tuple[torch.cuda.CUDAGraph, torch.Tensor, Heads]] = {}
        self._action = torch.zeros(batch, dtype=torch.long, device=self.device)
        self._uniform = torch.zeros(batch, wm.tokens, device=self.device)
        if self.mode == "eager":
            self._step = self._eager_step
        else:
            self._step = torch.compile(self._eager_step, dynamic=False, backend=backend)

    def _eager_step(self, token: torch.Tensor) -> Heads:
        return _feed_one(self.wm, self.cache, token)

    def reset(self) -> None:
        """Forget every stream's context."""
        self.cache.reset()

    def feed(self, tokens: torch.Tensor) -> Outputs:
        """Feed ``(B, n)`` tokens of one block at once (a real frame: run once per dream)."""
        wm = self.wm
        return wm(wm.embed_tokens(tokens, self.cache.next), cache=self.cache)

    def step(self, token: torch.Tensor) -> Heads:
        """Feed ``(B,)`` tokens, one transformer step."""
        return self._step(token)

    def _frame(
        self, heads: Heads, uniform: torch.Tensor, temperature: float
    ) -> tuple[torch.Tensor, Heads]:
        """Sample and feed a frame's ``K`` tokens after the action step that gave ``heads``;
        returns the tokens ``(B, K)`` and the heads of the last one fed."""
        tokens = []
        for k in range(self.wm.tokens):
            token = sample_token(heads[0], temperature, uniform[:, k])
            tokens.append(token)
            heads = self.step(token)
        return torch.stack(tokens, 1), heads

    def frame(
        self, action: torch.Tensor, uniform: torch.Tensor, temperature: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Feed ``(B,)`` action tokens and generate the next frame with ``uniform (B, K)``;
        returns its tokens ``(B, K)`` and the transition's reward and end logits."""
        if not self.capture:
            heads = self.step(action)
            tokens, _ = self._frame(heads, uniform, temperature)
            return tokens, heads[1], heads[2]
        if temperature not in self._graphs:
            self._graphs[temperature] = self._record(temperature)
        graph, tokens, heads = self._graphs[temperature]
        self._action.copy_(action)
        self._uniform.copy_(uniform)
        graph.replay()
        return tokens.clone(), heads[1].clone(), heads[2].clone()

    def _record(self, temperature: float) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, Heads]:
        """Capture one frame: warm up on a side stream (compiling the step), record, and put
        the cache back as it was (warm-up and recording both advance it)."""
        saved = self.cache.snapshot()

        def run() -> tuple[torch.Tensor, Heads]:
            heads = self.step(self._action)
            tokens, _ = self._frame(heads, self._uniform, temperature)
            return tokens, heads

        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                run()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            tokens, heads = run()
        self.cache.restore(saved)
        return graph, tokens, heads


class Dream:
    """``batch`` streams stepped through the world model in lockstep (no gradients).

    Args:
        wm: the transformer.
        batch: streams.
        cached: extend a KV cache (True) or recompute the context for every token (False).
        stepper: the cached steps' :class:`Stepper` (reset here); a new eager one if None.
    """

    def __init__(
        self, wm: WorldModel, batch: int, cached: bool = True, stepper: Stepper | None = None
    ) -> None:
        self.wm, self.batch, self.cached = wm, batch, cached
        device = next(wm.parameters()).device
        self.stepper: Stepper | None = None
        if cached:
            if stepper is not None and stepper.batch != batch:
                raise ValueError(f"a stepper for {stepper.batch} streams cannot run {batch}")
            self.stepper = stepper or Stepper(wm, batch)
            self.stepper.reset()
        self.history = torch.zeros(batch, 0, dtype=torch.long, device=device)
        self.slot = 0
        """Slot of the next token (0 .. K-1 frame tokens, K the action)."""
        self.last: Heads | None = None
        self.tokens_fed = 0

    def _advance(self, n: int) -> None:
        self.slot = (self.slot + n) % self.wm.block
        self.tokens_fed += n

    @torch.no_grad()
    def _feed(self, tokens: torch.Tensor) -> Heads:
        n = tokens.shape[1]
        if self.stepper is not None:
            if n == 1:
                heads = self.stepper.step(tokens[:, 0])
            else:
                out = self.stepper.feed(tokens)
                heads = (out.obs_logits[:, -1], out.reward_logits[:, -1], out.end_logits[:, -1])
        else:  # the whole history again, under the same sliding window
            wm = self.wm
            self.history = torch.cat([self.history, tokens], 1)
            mask = wm.window_mask(self.history.shape[1], tokens.device)
            out = wm(wm.embed_tokens(self.history, 0), mask=mask, last=1)
            heads = (out.obs_logits[:, -1], out.reward_logits[:, -1], out.end_logits[:, -1])
        self._advance(n)
        self.last = heads
        return heads

    def observe(self, tokens: torch.Tensor) -> None:
        """Put a frame's ``(B, K)`` tokens into the context (the next token is its action)."""
        if self.slot != 0:
            raise RuntimeError("observe() needs the context to be at a frame boundary")
        self._feed(tokens)

    def _check_act(self) -> None:
        if self.slot != self.wm.tokens:
            raise RuntimeError("act() needs a whole frame in the context first")

    def act(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add ``(B,)`` actions; returns the reward and termination logits of the transition."""
        self._check_act()
        _, reward_logits, end_logits = self._feed(actions.long()[:, None])
        return reward_logits, end_logits

    def generate(self, temperature: float, gen: torch.Generator | None) -> torch.Tensor:
        """Sample the next frame's ``(B, K)`` tokens, feeding each; needs an action just fed."""
        if self.slot != 0 or self.last is None:
            raise RuntimeError("generate() needs an action token just fed (call act())")
        uniform = self._uniform(gen)
        tokens = []
        for k in range(self.wm.tokens):
            token = sample_token(self.last[0], temperature, uniform[:, k])
            tokens.append(token)
            self._feed(token[:, None])
        return torch.stack(tokens, 1)

    def _uniform(self, gen: torch.Generator | None) -> torch.Tensor:
        """A frame's numbers: one ``(B, K)`` draw, whatever the mode (so all sample alike)."""
        return rand((self.batch, self.wm.tokens), self.history.float(), gen)

    @torch.no_grad()
    def frame(
        self, actions: torch.Tensor, temperature: float, gen: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`act` then :meth:`generate` (one CUDA-graph replay on a capturing stepper):
        the next frame's tokens ``(B, K)`` and the transition's reward and end logits."""
        self._check_act()
        if self.stepper is None or not self.stepper.capture:
            reward_logits, end_logits = self.act(actions)
            return self.generate(temperature, gen), reward_logits, end_logits
        tokens, reward_logits, end_logits = self.stepper.frame(
            actions.long(), self._uniform(gen), temperature
        )
        self._advance(self.wm.block)
        self.last = None
        return tokens, reward_logits, end_logits


class FrameDream:
    """``B`` dreams that step from frame to frame (the actor-critic's view of the world model).

    Args:
        wm: the transformer.
        tokenizer: decodes generated tokens into frames.
        start_tokens: ``(B, K)`` tokens of the real start frames.
        temperature: sampling temperature of the frame tokens.
        gen: the sampling generator (rewards, ends, tokens).
        cached: step against a KV cache (see :class:`Dream`).
        stepper: the cached steps' :class:`Stepper` (the learner's, reused across updates).
    """

    def __init__(
        self,
        wm: WorldModel,
        tokenizer: Tokenizer,
        start_tokens: torch.Tensor,
        temperature: float,
        gen: torch.Generator | None,
        cached: bool = True,
        stepper: Stepper | None = None,
    ) -> None:
        self.wm, self.tokenizer = wm, tokenizer
        self.temperature, self.gen = temperature, gen
        self.dream = Dream(wm, start_tokens.shape[0], cached=cached, stepper=stepper)
        self.dream.observe(start_tokens)
        with torch.no_grad():
            self.first_frame = tokenizer.decode(start_tokens).clamp(0.0, 1.0)

    @torch.no_grad()
    def step(self, action: torch.Tensor) -> Transition:
        tokens, reward_logits, end_logits = self.dream.frame(action, self.temperature, self.gen)
        reward = self.wm.reward_value(reward_logits, self.gen)
        end = torch.bernoulli(torch.sigmoid(end_logits.float()), generator=self.gen)
        return Transition(self.tokenizer.decode(tokens).clamp(0.0, 1.0), reward, end)
