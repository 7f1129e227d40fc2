"""Sequence models ("backbones") of the RSSM: what computes ``h_t`` from ``h_{t-1}`` and the input.

Every backbone implements one small interface, :class:`Backbone`::

    h_t, memory_t = backbone.step(x_t, h_{t-1}, memory_{t-1})

``x_t (N, I)`` is the RSSM's embedding of ``[z_{t-1}, a_{t-1}]``, ``h (N, D)`` the deterministic
state the heads read, and ``memory`` a tuple of ``(N, ...)`` tensors the backbone carries beside
``h`` (empty for the GRU). The RSSM keeps ``memory`` in its ``State`` (``rssm.State.memory``),
resets it with :meth:`Backbone.initial_memory` where an episode starts, and batches, detaches,
slices and repeats it like every other state field, so imagination, CEM planning and acting work
with any backbone unchanged.

- :class:`NormGRUCell` (``gru``): DreamerV3's LayerNorm GRU; no memory.
- :class:`NormLSTMCell` (``lstm``): a LayerNorm LSTM; the memory is the cell state ``c``.
- :class:`TransformerCore` (``transformer``): a causal transformer over a sliding window of the
  last ``context`` inputs. Its memory is the window's keys and values of every layer (the cache)
  and which of them are valid (not from before the episode's start), so a step costs one token,
  not the window; positions enter as ALiBi biases (Press et al. 2022) on the key's distance, so
  the cached step gives exactly the outputs of :meth:`TransformerCore.forward_window`, the
  full-window computation over a sequence.

Add a backbone by subclassing :class:`Backbone` (constructor ``(in_dim, deter, options)``) and
naming it ``module:Class`` where a family takes a backbone name (``modular.backbone``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from wm_ray.models.common.attention import AttentionBlock

Memory = tuple[torch.Tensor, ...]


class Backbone(nn.Module):
    """The interface of an RSSM sequence model (see the module docstring).

    Args:
        in_dim: size ``I`` of the input ``x_t``.
        deter: size ``D`` of the state ``h_t``.
    """

    def __init__(self, in_dim: int, deter: int, options: Any = None) -> None:
        super().__init__()
        self.in_dim, self.deter = in_dim, deter

    def initial_memory(self, n: int, ref: torch.Tensor) -> Memory:
        """The memory of ``n`` fresh streams (dtype and device of ``ref``); ``()`` for none."""
        return ()

    def step(self, x: torch.Tensor, h: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, Memory]:
        """One step: ``x (N, I)``, ``h (N, D)``, ``memory`` -> ``h_t (N, D)``, ``memory_t``."""
        raise NotImplementedError


class NormGRUCell(Backbone):
    """DreamerV3's GRU: one Linear on ``[x, h]`` (no bias), LayerNorm, update-gate bias -1.

    Args:
        in_dim: input features.
        units: state size ``D``.
    """

    def __init__(self, in_dim: int, units: int, options: Any = None) -> None:
        super().__init__(in_dim, units)
        self.linear = nn.Linear(in_dim + units, 3 * units, bias=False)
        self.norm = nn.LayerNorm(3 * units)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """``x (N, in_dim)``, ``h (N, D)`` -> ``(N, D)``."""
        reset, cand, update = self.norm(self.linear(torch.cat([x, h], -1))).chunk(3, -1)
        cand = torch.tanh(torch.sigmoid(reset) * cand)
        update = torch.sigmoid(update - 1.0)
        # update * cand + (1 - update) * h; the state stays in h's dtype (fp32 under autocast)
        return torch.lerp(h, cand.to(h.dtype), update.to(h.dtype))

    def step(self, x: torch.Tensor, h: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, Memory]:
        return self(x, h), ()


class NormLSTMCell(Backbone):
    """An LSTM cell with LayerNorm on the gate pre-activations (Ba et al. 2016) and forget-gate
    bias +1; ``h`` is the state the heads read, the cell state ``c`` is its memory.

    Args:
        in_dim: input features.
        units: state size ``D`` (of ``h`` and of ``c``).
    """

    def __init__(self, in_dim: int, units: int, options: Any = None) -> None:
        super().__init__(in_dim, units)
        self.linear = nn.Linear(in_dim + units, 4 * units, bias=False)
        self.norm = nn.LayerNorm(4 * units)
        self.cell_norm = nn.LayerNorm(units)

    def initial_memory(self, n: int, ref: torch.Tensor) -> Memory:
        return (ref.new_zeros(n, self.deter),)

    def step(self, x: torch.Tensor, h: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, Memory]:
        (c,) = memory
        gates = self.norm(self.linear(torch.cat([x, h.to(x.dtype)], -1)))
        i, f, g, o = gates.chunk(4, -1)
        c = torch.sigmoid(f + 1.0).to(c.dtype) * c + (torch.sigmoid(i) * torch.tanh(g)).to(c.dtype)
        h = torch.sigmoid(o).to(c.dtype) * torch.tanh(self.cell_norm(c))
        return h, (c,)


def alibi_slopes(heads: int) -> torch.Tensor:
    """ALiBi's per-head slopes ``2^(-8 (i + 1) / heads)``, ``i = 0 .. heads - 1``."""
    return torch.tensor([2.0 ** (-8.0 * (i + 1) / heads) for i in range(heads)])


class TransformerCore(Backbone):
    """A causal transformer over the last ``context`` inputs (see the module docstring).

    Memory: per layer, the ``keys`` and ``values`` ``(N, context - 1, D)`` of the
    ``context - 1`` previous inputs (oldest first), then ``valid (N, context - 1)`` (bool). A
    step attends from the new input over those and itself, then shifts the window by one.
    ``h_{t-1}`` is not read: the window is the recurrence.

    Args:
        in_dim: input features (projected to width ``D``).
        deter: width ``D`` of the transformer and of ``h_t``.
        options: ``context`` (inputs a step sees, its own included), ``layers``, ``heads``
            (dividing ``D``) and ``mlp`` (hidden width of the MLPs in multiples of ``D``).
    """

    def __init__(self, in_dim: int, deter: int, options: Any) -> None:
        super().__init__(in_dim, deter)
        if deter % options.heads:
            raise ValueError(
                f"the transformer backbone's width {deter} (rssm.deter) must be divisible by its "
                f"heads={options.heads}"
            )
        self.context, self.layers = options.context, options.layers
        self.inp = nn.Linear(in_dim, deter)
        self.blocks: list[AttentionBlock] = nn.ModuleList(  # type: ignore[assignment]
            AttentionBlock(deter, options.heads, options.mlp) for _ in range(options.layers)
        )
        self.norm = nn.LayerNorm(deter)
        self.slopes: torch.Tensor
        self.register_buffer("slopes", alibi_slopes(options.heads), persistent=False)
        distance = torch.arange(self.context - 1, -1, -1).float()  # oldest key first
        self.step_bias: torch.Tensor  # (heads, 1, context): a step's ALiBi biases, made once
        self.register_buffer("step_bias", -self.slopes[:, None, None] * distance, persistent=False)

    def initial_memory(self, n: int, ref: torch.Tensor) -> Memory:
        past = self.context - 1
        kv = [ref.new_zeros(n, past, self.deter) for _ in range(2 * self.layers)]
        return (*kv, torch.zeros(n, past, dtype=torch.bool, device=ref.device))

    def _bias(self, distance: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """``(B, heads, Nq, Nk)`` additive attention bias: ``-slope * distance``, ``-inf`` where
        not ``visible`` (``distance`` and ``visible`` broadcast to ``(B, Nq, Nk)``)."""
        bias = -self.slopes[:, None, None] * distance[..., None, :, :].float()
        return bias.masked_fill(~visible[..., None, :, :], float("-inf"))

    def step(self, x: torch.Tensor, h: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, Memory]:
        *cache, valid = memory
        visible = torch.cat([valid, valid.new_ones(valid.shape[0], 1)], 1)[:, None]  # (N, 1, W)
        bias = self.step_bias.masked_fill(~visible[:, None], float("-inf"))  # (N, H, 1, W)
        t = self.inp(x)[:, None]  # (N, 1, D)
        new_cache = []
        for layer, block in enumerate(self.blocks):
            keys, values = cache[2 * layer], cache[2 * layer + 1]
            q, k, v = block.project(t)
            k_all = torch.cat([keys.to(k.dtype), k], 1)
            v_all = torch.cat([values.to(v.dtype), v], 1)
            new_cache += [k_all[:, 1:].to(keys.dtype), v_all[:, 1:].to(values.dtype)]
            t = block.attend(t, q, k_all, v_all, bias)
        return self.norm(t[:, 0]).to(h.dtype), (*new_cache, visible[:, 0, 1:])

    def forward_window(self, xs: torch.Tensor, is_first: torch.Tensor) -> torch.Tensor:
        """The full computation over sequences: ``xs (B, T, I)`` -> ``h (B, T, D)``, from empty
        memory, each step attending to the ``context`` latest inputs of its episode
        (``is_first (B, T)`` starts one). Equals stepping with the cache, step by step."""
        steps = xs.shape[1]
        pos = torch.arange(steps, device=xs.device)
        distance = pos[:, None] - pos[None, :]  # (T, T): query - key
        episode = torch.cumsum(is_first.long(), 1)  # (B, T)
        same = episode[:, :, None] == episode[:, None, :]
        visible = same & (distance >= 0) & (distance < self.context)
        bias = self._bias(distance.clamp(min=0), visible)
        t = self.inp(xs)
        for block in self.blocks:
            q, k, v = block.project(t)
            t = block.attend(t, q, k, v, bias)
        return self.norm(t)


BACKBONES: dict[str, type[Backbone]] = {
    "gru": NormGRUCell,
    "lstm": NormLSTMCell,
    "transformer": TransformerCore,
}
"""The built-in backbones by name."""


def build_backbone(name: str, in_dim: int, deter: int, options: Any = None) -> Backbone:
    """The backbone called ``name`` (a key of :data:`BACKBONES` or ``module:Class``).

    Raises:
        ValueError: an unknown name, or a class that is not a :class:`Backbone`.
    """
    from wm_ray.registry import import_object

    if name in BACKBONES:
        return BACKBONES[name](in_dim, deter, options)
    if ":" not in name:
        raise ValueError(
            f"unknown backbone {name!r} (valid: {', '.join(BACKBONES)}, or module:Class of a "
            "wm_ray.models.rssm.backbones.Backbone subclass)"
        )
    try:
        cls = import_object(name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"backbone {name!r} cannot be imported: {err}") from err
    if not (isinstance(cls, type) and issubclass(cls, Backbone)):
        raise ValueError(f"backbone {name!r} is {cls!r}, not a Backbone subclass")
    return cls(in_dim, deter, options)


__all__ = [
    "BACKBONES",
    "Backbone",
    "Memory",
    "NormGRUCell",
    "NormLSTMCell",
    "TransformerCore",
    "alibi_slopes",
    "build_backbone",
]
