"""IRIS's world model: a GPT-style transformer over blocks ``[z_t^1 .. z_t^K, a_t]``.

Every env step is one *block* of ``K + 1`` tokens: the ``K`` frame tokens of the tokenizer in
row-major grid order, then the action. Attention is causal over this flat order, so the output
at ``z_{t+1}^{k-1}`` (or at ``a_t`` for ``k = 1``) predicts ``z_{t+1}^k`` from ``z_{<=t}``,
``a_{<=t}`` and ``z_{t+1}^{<k}`` only (the paper's factorization), and the reward and termination
of the transition ``t -> t+1`` are read at the action token ``a_t``. Keys of another episode (a
replayed sequence may run into the next episode of its stream) are masked out, and so are keys
more than ``context`` blocks back: sliding-window attention, so each layer looks back at most
``context`` blocks (the receptive field of a deep stack is wider, in training and imagination
alike).

Positions. IRIS learns absolute position embeddings and, when its imagination outgrows the
context, starts over from the current frame alone. Here a learned *slot* embedding (which of the
``K + 1`` places in a block a token holds) gives the spatial identity, and rotary embeddings in
attention give relative time. Attention then depends on distances only, so the KV cache is a
ring that overwrites the block leaving the window, recomputes nothing, and gives exactly the
outputs of the full windowed computation.

:class:`KVCache` holds the keys and values of every layer for a batch of streams that advance in
lockstep, in fixed-shape tensors; :meth:`WorldModel.forward` runs full sequences (training, and
the full-recomputation baseline) or extends a cache (imagination).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from wm_ray.models.common import TwoHot
from wm_ray.models.common.distributions import sample_index
from wm_ray.models.iris.config import WorldModelConfig


def rotary(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rotate pairs of channels of ``x`` ``(B, H, N, D)`` by angles ``position * freq``.

    ``positions`` is ``(N,)`` or ``(B, N)`` absolute token positions; the dot product of a
    rotated query and key then depends only on their distance.
    """
    half = x.shape[-1] // 2
    freq = 10_000.0 ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angles = positions.float()[..., None] * freq  # (N, half) or (B, N, half)
    if angles.dim() == 3:
        angles = angles[:, None]
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class KVCache:
    """Keys and values of every layer for ``batch`` streams: a ring of ``capacity`` tokens.

    The token at absolute position ``p`` lives in slot ``p % capacity``; writing it overwrites
    position ``p - capacity``, whose block is exactly ``context`` blocks back, the first one the
    sliding window no longer sees. Every shape is fixed and the write position is a tensor
    (``next``), so a step through the cache is one static tensor program: compiled once, and
    captured as a CUDA graph that replays without Python in between.

    Args:
        layers, batch, heads, head_dim: the transformer's shape.
        capacity: tokens held (``context * block``).
        block: tokens per block (``K + 1``).
        context: blocks a query may look back, its own included.
    """

    def __init__(
        self,
        layers: int,
        batch: int,
        heads: int,
        head_dim: int,
        capacity: int,
        block: int,
        context: int,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        shape = (batch, heads, capacity, head_dim)
        # One tensor per layer (not slices of one): a compiled step then writes its token into
        # each in place instead of copying a whole ``(layers, ...)`` tensor around the write.
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)]
        self.positions = torch.full((capacity,), -1, dtype=torch.long, device=device)
        """Absolute position held by each slot (-1: empty)."""
        self.next = torch.zeros((), dtype=torch.long, device=device)
        """Absolute position of the next token."""
        self.capacity, self.block, self.context, self.batch = capacity, block, context, batch

    def reset(self) -> None:
        """Empty the cache in place (a captured graph keeps pointing at the same tensors)."""
        self.positions.fill_(-1)
        self.next.zero_()

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor of the cache (keys and values of each layer, positions, next)."""
        return [*self.keys, *self.values, self.positions, self.next]

    def snapshot(self) -> list[torch.Tensor]:
        """Copies of :meth:`tensors`, for :meth:`restore`."""
        return [t.clone() for t in self.tensors()]

    def restore(self, snapshot: list[torch.Tensor]) -> None:
        """Put a :meth:`snapshot` back, in place."""
        for held, saved in zip(self.tensors(), snapshot, strict=True):
            held.copy_(saved)

    @property
    def size(self) -> int:
        """Tokens held (synchronizes with the device: for tests and reports)."""
        return int((self.positions >= 0).sum())

    def write(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Claim the slots of the next ``n`` tokens (which must lie in one block).

        Returns their absolute positions ``(n,)``, their slots ``(n,)`` and the attention mask
        ``(n, capacity)`` (True = may attend): keys held at positions up to the query's own and
        in the query's last ``context`` blocks.
        """
        if n > self.block:
            raise ValueError(f"cannot add {n} tokens at once to a KV cache of {self.block}-blocks")
        positions = self.next + torch.arange(n, device=self.next.device)
        slots = positions % self.capacity
        self.positions.index_copy_(0, slots, positions)
        held = self.positions[None, :]
        query = positions[:, None]
        mask = (held >= 0) & (held <= query)
        mask &= torch.div(held, self.block, rounding_mode="floor") > (
            torch.div(query, self.block, rounding_mode="floor") - self.context
        )
        return positions, slots, mask


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop, self.resid_drop = dropout, nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor | None,
        cache: KVCache | None,
        layer: int,
        slots: torch.Tensor | None = None,
    ) -> torch.Tensor:
        batch, n, dim = x.shape
        q, k, v = self.qkv(x).view(batch, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = rotary(q, positions), rotary(k, positions)
        if cache is not None:
            assert slots is not None
            cache.keys[layer][:, :, slots] = k
            cache.values[layer][:, :, slots] = v
            k, v = cache.keys[layer], cache.values[layer]
        drop = self.attn_drop if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        return self.resid_drop(self.proj(out.transpose(1, 2).reshape(batch, n, dim)))


class Block(nn.Module):
    """Pre-norm transformer block: attention, then a 4x GELU MLP, both residual."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dropout)
        self.mlp = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(dropout)
        )

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor | None,
        cache: KVCache | None,
        layer: int,
        slots: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), positions, mask, cache, layer, slots)
        return x + self.mlp(self.norm2(x))


def _head(dim: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, out))


@dataclass
class Outputs:
    """Head outputs at every input position ``(B, N, ...)``; which positions carry meaning
    depends on their slot (see :class:`WorldModel`)."""

    hidden: torch.Tensor
    obs_logits: torch.Tensor
    """``(B, N, vocab)``: logits of the *next* frame token."""
    reward_logits: torch.Tensor
    """``(B, N, 3)`` sign classes or ``(B, N, bins)`` two-hot logits (read at action tokens)."""
    end_logits: torch.Tensor
    """``(B, N)`` termination logits (read at action tokens)."""


class WorldModel(nn.Module):
    """The transformer and its three heads.

    Args:
        cfg: ``iris.world_model``.
        vocab: frame-token vocabulary (the tokenizer's codebook size).
        tokens: frame tokens per block ``K``.
        actions: number of discrete actions.
    """

    def __init__(self, cfg: WorldModelConfig, vocab: int, tokens: int, actions: int) -> None:
        super().__init__()
        self.cfg, self.vocab, self.tokens, self.actions = cfg, vocab, tokens, actions
        self.block = tokens + 1
        dim = cfg.embed_dim
        self.obs_embed = nn.Embedding(vocab, dim)
        self.act_embed = nn.Embedding(actions, dim)
        self.slot_embed = nn.Embedding(self.block, dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(dim, cfg.heads, cfg.dropout) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(dim)
        self.obs_head = _head(dim, vocab)
        self.reward_head = _head(dim, 3 if cfg.reward == "sign" else cfg.bins)
        self.end_head = _head(dim, 1)
        self.twohot = TwoHot(cfg.bins) if cfg.reward == "twohot" else None
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def no_decay(self) -> list[nn.Parameter]:
        """Parameters exempt from weight decay: biases, norms and embeddings."""
        decay = {id(m.weight) for m in self.modules() if isinstance(m, nn.Linear)}
        return [p for p in self.parameters() if id(p) not in decay]

    # ------------------------------------------------------------------------------ inputs

    def interleave(self, obs_tokens: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Embedded blocks ``(B, T * (K + 1), dim)``: ``(B, T, K)`` tokens, ``(B, T)`` actions."""
        obs = self.obs_embed(obs_tokens)
        act = self.act_embed(actions)[:, :, None]
        x = torch.cat([obs, act], dim=2)
        x = x + self.slot_embed.weight
        return x.flatten(1, 2)

    def embed_tokens(self, tokens: torch.Tensor, first_slot: int | torch.Tensor) -> torch.Tensor:
        """Embeddings of ``(B, n)`` consecutive tokens whose first holds slot ``first_slot``
        (an int, or a 0-dim tensor holding the slot or the absolute position)."""
        slots = (torch.arange(tokens.shape[1], device=tokens.device) + first_slot) % self.block
        is_action = slots == self.tokens
        obs = self.obs_embed(tokens.clamp(max=self.vocab - 1))
        act = self.act_embed(tokens.clamp(max=self.actions - 1))
        return torch.where(is_action[:, None], act, obs) + self.slot_embed(slots)

    def window_mask(self, n: int, device: torch.device) -> torch.Tensor:
        """``(n, n)`` bool mask (True = may attend) of tokens at positions ``0 .. n-1``: causal,
        and at most ``context`` blocks back (the block of the query included)."""
        pos = torch.arange(n, device=device)
        step = pos // self.block
        causal = pos[None, :] <= pos[:, None]
        return causal & ((step[:, None] - step[None, :]) < self.cfg.context)

    def training_mask(self, is_first: torch.Tensor) -> torch.Tensor:
        """``(B, 1, N, N)`` bool mask (True = may attend) for ``(B, T)`` episode starts:
        :meth:`window_mask`, and never across an episode start inside the sequence."""
        steps = is_first.shape[1]
        window = self.window_mask(steps * self.block, is_first.device)
        episode = torch.cumsum(is_first.long(), dim=1).repeat_interleave(self.block, dim=1)
        same = episode[:, :, None] == episode[:, None, :]
        return window[None] & same[:, None]

    # ------------------------------------------------------------------------------ forward

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        positions: torch.Tensor | None = None,
        last: int | None = None,
    ) -> Outputs:
        """Run embedded tokens ``x`` ``(B, n, dim)`` through the transformer and the heads.

        Without ``cache``: a whole sequence starting at position 0 (``positions`` may say
        otherwise), attending as ``mask`` allows (plain causal when None). With ``cache``: the
        ``n`` tokens (within one block) extend the cache and attend to what its window holds.
        ``last``: compute the heads at the last ``last`` positions only.
        """
        n = x.shape[1]
        slots = None
        if cache is not None:
            positions, slots, mask = cache.write(n)
        elif positions is None:
            positions = torch.arange(n, device=x.device)
            if mask is None:
                mask = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
        h = self.drop(x)
        for i, block in enumerate(self.blocks):
            h = block(h, positions, mask, cache, i, slots)
        if cache is not None:
            cache.next += n
        h = self.norm(h if last is None else h[:, -last:])
        return Outputs(
            hidden=h,
            obs_logits=self.obs_head(h),
            reward_logits=self.reward_head(h),
            end_logits=self.end_head(h).squeeze(-1),
        )

    def new_cache(self, batch: int, device: torch.device) -> KVCache:
        cfg = self.cfg
        return KVCache(
            cfg.layers,
            batch,
            cfg.heads,
            cfg.embed_dim // cfg.heads,
            cfg.context * self.block,
            self.block,
            cfg.context,
            device,
        )

    def reward_value(self, logits: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        """A reward per row of ``logits``: a sampled sign class (-1, 0, 1) or the two-hot mean."""
        if self.twohot is None:
            probs = logits.float().softmax(-1)
            return sample_index(probs, gen).float() - 1.0
        return self.twohot.decode(logits)

    def reward_loss(self, logits: torch.Tensor, reward: torch.Tensor) -> torch.Tensor:
        """Per-position loss of reward predictions: sign cross-entropy or two-hot."""
        if self.twohot is None:
            target = (torch.sign(reward) + 1).long()
            return F.cross_entropy(logits.flatten(0, -2), target.flatten(), reduction="none").view(
                reward.shape
            )
        return -self.twohot(logits).log_prob(reward)
