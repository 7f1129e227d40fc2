"""Where the models' samplers draw their random numbers.

Every sampler takes a *source*:

- ``None``: torch's global generator, on the device of the tensor being sampled;
- a ``torch.Generator``: the agent's own (seeded from ``run.seed``, saved with checkpoints). A
  generator on another device than the tensor (``run.cpu_rng=true``: a CPU generator for a CUDA
  learner) draws on its own device and the numbers are moved, so a CUDA update samples exactly
  what a CPU update with the same seed samples (the CUDA-vs-CPU test depends on it);
- a :class:`Tape`: numbers drawn before, taken in order. A compiled (or CUDA-graph captured)
  update cannot call the generator inside its graph, so the learner's update draws all its
  numbers first, with the shapes and in the order its samplers take them, and the samplers
  take them from the tape (eager and compiled updates alike, so both sample the same), and
  every replay of a captured graph gets fresh numbers through its two input tensors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, TypeAlias

import torch

Kind = Literal["rand", "randn"]
Plan = Sequence[tuple[Kind, tuple[int, ...]]]


class Tape:
    """Random numbers drawn in advance, handed out in order by :func:`rand` and :func:`randn`.

    All the uniform numbers of a plan are one flat tensor and all the normal ones another, so
    drawing costs two generator calls, and a captured graph takes two input tensors however
    many samples it makes; each draw is a view of the next piece of its kind's tensor.

    Args:
        uniform: ``(n,)`` numbers in [0, 1), at least the plan's uniform draws.
        normal: ``(m,)`` standard normal numbers, at least the plan's normal draws.
        plan: the ``(kind, shape)`` of each draw, in the order the samplers will ask.
    """

    def __init__(self, uniform: torch.Tensor, normal: torch.Tensor, plan: Plan) -> None:
        self.flat = {"rand": uniform, "randn": normal}
        self.plan = tuple((kind, tuple(shape)) for kind, shape in plan)
        self.taken = 0
        self.offsets = {"rand": 0, "randn": 0}

    @staticmethod
    def sizes(plan: Plan) -> dict[Kind, int]:
        """How many numbers of each kind ``plan`` draws."""
        sizes: dict[Kind, int] = {"rand": 0, "randn": 0}
        for kind, shape in plan:
            sizes[kind] += math.prod(shape)
        return sizes

    @classmethod
    def draw(
        cls,
        plan: Plan,
        generator: torch.Generator | None,
        device: torch.device | str,
        dtype: torch.dtype = torch.float32,
    ) -> Tape:
        """Draw what ``plan`` needs from ``generator`` (the uniform numbers, then the normal
        ones, one call each) on ``device``."""
        sizes, where = cls.sizes(plan), torch.device(device)
        uniform = _draw("rand", (sizes["rand"],), generator, where, dtype)
        normal = _draw("randn", (sizes["randn"],), generator, where, dtype)
        return cls(uniform, normal, plan)

    def take(self, kind: Kind, shape: tuple[int, ...]) -> torch.Tensor:
        """The next draw; it must be of ``kind`` and ``shape`` (else the plan is wrong)."""
        if self.taken >= len(self.plan):
            raise RuntimeError(f"the random tape of {len(self.plan)} draws is used up")
        i, self.taken = self.taken, self.taken + 1
        planned = self.plan[i]
        if planned != (kind, tuple(shape)):
            raise RuntimeError(
                f"random draw {i} of the tape is {planned[0]} {planned[1]}, "
                f"the sampler asked for {kind} {tuple(shape)}"
            )
        start = self.offsets[kind]
        self.offsets[kind] = start + math.prod(shape)
        return self.flat[kind][start : self.offsets[kind]].view(shape)

    @property
    def used_up(self) -> bool:
        """Whether every draw was taken."""
        return self.taken == len(self.plan)


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


def sample(
    kind: Kind,
    shape: tuple[int, ...],
    like: torch.Tensor,
    source: Source,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Numbers of ``kind`` (``rand``: uniform in [0, 1); ``randn``: standard normal) and
    ``shape`` from ``source``, on ``like``'s device (``dtype`` or ``like``'s)."""
    dtype = like.dtype if dtype is None else dtype
    if isinstance(source, Tape):
        return source.take(kind, shape).to(like.device, dtype)
    return _draw(kind, shape, source, like.device, dtype)


def rand(
    shape: tuple[int, ...], like: torch.Tensor, source: Source, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Uniform numbers in [0, 1) (:func:`sample`)."""
    return sample("rand", shape, like, source, dtype)


def randn(
    shape: tuple[int, ...], like: torch.Tensor, source: Source, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Standard normal numbers (:func:`sample`)."""
    return sample("randn", shape, like, source, dtype)
