"""Where the models' samplers draw their random numbers.

Every sampler takes a *source*:

- ``None``: torch's global generator, on the device of the tensor being sampled;
- a ``torch.Generator``: the agent's own (seeded from ``run.seed``, saved with checkpoints). A
  generator on another device than the tensor (``run.cpu_rng=true``: a CPU generator for a CUDA
  learner) draws on its own device and the numbers are moved, so a CUDA update samples exactly
  what a CPU update with the same seed samples (the CUDA-vs-CPU test depends on it);
- a :class:`Tape`: numbers drawn before, taken in order. A compiled (or CUDA-graph captured)
  update cannot call the generator inside its graph, so it draws the whole update's numbers
  first, eagerly, with the shapes and in the order the eager update would draw them, and the
  graph takes them from the tape: the compiled update samples what the eager one samples, and
  every replay of a captured graph gets fresh numbers through its inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, TypeAlias

import torch

Kind = Literal["rand", "randn"]
Plan = Sequence[tuple[Kind, tuple[int, ...]]]


class Tape:
    """Random numbers drawn in advance, handed out in order by :func:`rand` and :func:`randn`.

    Args:
        draws: the tensors, in the order the samplers will ask for them.
        kinds: ``"rand"`` (uniform in [0, 1)) or ``"randn"`` (standard normal) for each draw.
    """

    def __init__(self, draws: Sequence[torch.Tensor], kinds: Sequence[Kind]) -> None:
        if len(draws) != len(kinds):
            raise ValueError(f"{len(draws)} draws but {len(kinds)} kinds")
        self.draws, self.kinds = list(draws), list(kinds)
        self.taken = 0

    @classmethod
    def draw(
        cls,
        plan: Plan,
        generator: torch.Generator | None,
        device: torch.device | str,
        dtype: torch.dtype = torch.float32,
    ) -> Tape:
        """Draw every ``(kind, shape)`` of ``plan`` from ``generator`` in order, as the eager
        samplers would (one call per draw, so the numbers are the same), on ``device``."""
        draws = [_draw(kind, shape, generator, torch.device(device), dtype) for kind, shape in plan]
        return cls(draws, [kind for kind, _ in plan])

    def take(self, kind: Kind, shape: tuple[int, ...]) -> torch.Tensor:
        """The next draw; it must be of ``kind`` and ``shape`` (else the plan is wrong)."""
        if self.taken >= len(self.draws):
            raise RuntimeError(f"the random tape of {len(self.draws)} draws is used up")
        i, self.taken = self.taken, self.taken + 1
        draw = self.draws[i]
        if self.kinds[i] != kind or tuple(draw.shape) != tuple(shape):
            raise RuntimeError(
                f"random draw {i} of the tape is {self.kinds[i]} {tuple(draw.shape)}, "
                f"the sampler asked for {kind} {tuple(shape)}"
            )
        return draw

    @property
    def used_up(self) -> bool:
        """Whether every draw was taken."""
        return self.taken == len(self.draws)


Source: TypeAlias = torch.Generator | Tape | None
"""Where a sampler's random numbers come from (see the module docstring)."""


def _draw(
    kind: Kind,
    shape: tuple[int, ...],
    generator: torch.Generator | None,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    where = device if generator is None else generator.device
    fn = torch.rand if kind == "rand" else torch.randn
    out = fn(shape, generator=generator, device=where, dtype=dtype)
    return out if out.device == device else out.to(device)


def rand(
    shape: tuple[int, ...], like: torch.Tensor, source: Source, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Uniform numbers in [0, 1) of ``shape`` on ``like``'s device (``dtype`` or ``like``'s)."""
    dtype = like.dtype if dtype is None else dtype
    if isinstance(source, Tape):
        return source.take("rand", shape).to(like.device, dtype)
    return _draw("rand", shape, source, like.device, dtype)


def randn(
    shape: tuple[int, ...], like: torch.Tensor, source: Source, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Standard normal numbers of ``shape`` on ``like``'s device (``dtype`` or ``like``'s)."""
    dtype = like.dtype if dtype is None else dtype
    if isinstance(source, Tape):
        return source.take("randn", shape).to(like.device, dtype)
    return _draw("randn", shape, source, like.device, dtype)
