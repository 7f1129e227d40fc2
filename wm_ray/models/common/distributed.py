"""Data-parallel helpers over ``torch.distributed`` (no Ray): identical learners by construction.

When a default process group with more than one rank exists,
:class:`~wm_ray.models.common.Optimizer` averages its gradients over the group
(:func:`average_gradients`) before clipping and stepping, so every rank applies the same update
to the same weights. Statistics of the whole batch (the return normalizer's percentiles) are
taken over every rank's share with :func:`all_gather_cat`, so L learners compute what one
learner would on the global batch; losses and metrics come from a rank's own share (their
gradients are averaged). Without a group every function here is a no-op, so single-process
training never pays for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn


def world_size() -> int:
    """Ranks in the default process group (1 without one)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return int(torch.distributed.get_world_size())
    return 1


def modules(agent: Any) -> list[tuple[str, nn.Module]]:
    """The agent's ``nn.Module`` attributes, sorted by name (the same order on every rank)."""
    return sorted((k, v) for k, v in vars(agent).items() if isinstance(v, nn.Module))


def named_parameters(agent: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """Every parameter of the agent's modules once, in a rank-independent order."""
    seen: set[int] = set()
    for prefix, module in modules(agent):
        for name, param in module.named_parameters():
            if id(param) not in seen:
                seen.add(id(param))
                yield f"{prefix}.{name}", param


def agent_device(agent: Any) -> torch.device:
    """The device of the agent's first parameter (CPU for an agent without parameters)."""
    for _, param in named_parameters(agent):
        return param.device
    return torch.device("cpu")


def broadcast_modules(agent: Any, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers into every rank's agent."""
    if world_size() == 1:
        return
    seen: set[int] = set()
    with torch.no_grad():
        for _, module in modules(agent):
            for tensor in [*module.parameters(), *module.buffers()]:
                if id(tensor) not in seen:
                    seen.add(id(tensor))
                    torch.distributed.broadcast(tensor.data, src=src)


def broadcast_floats(values: list[float], agent: Any, src: int = 0) -> list[float]:
    """Rank ``src``'s ``values`` on every rank (on the agent's device: NCCL needs CUDA)."""
    if world_size() == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=agent_device(agent))
    torch.distributed.broadcast(tensor, src=src)
    return [float(v) for v in tensor.cpu().tolist()]


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` concatenated along dim 0 in rank order (itself without a group).

    Every rank must pass a tensor of the same shape (each learner samples ``B / L`` sequences).
    """
    size = world_size()
    if size == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(size)]
    torch.distributed.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, 0)


def average_buffers(module: nn.Module) -> None:
    """Average the floating-point buffers of ``module`` over the group (no-op alone): the
    running statistics of batch norm, which each rank updates from its own batch, so that the
    ranks stay identical in eval mode too. Integer buffers (batch counters) are equal already."""
    size = world_size()
    buffers = [b for b in module.buffers() if b.is_floating_point()]
    if size == 1 or not buffers:
        return
    flat = torch.cat([b.reshape(-1) for b in buffers])
    torch.distributed.all_reduce(flat)
    flat.div_(size)
    offset = 0
    for buffer in buffers:
        buffer.copy_(flat[offset : offset + buffer.numel()].view_as(buffer))
        offset += buffer.numel()


def average_gradients(params: list[nn.Parameter]) -> None:
    """Average the gradients of ``params`` over the group in one all-reduce (no-op alone).

    A parameter without a gradient takes part as zeros (and gets a zero gradient), so every rank
    reduces buffers of the same layout.
    """
    size = world_size()
    if size == 1 or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat.div_(size)
    offset = 0
    for param in params:
        n = param.numel()
        param.grad = flat[offset : offset + n].view_as(param).clone()
        offset += n
