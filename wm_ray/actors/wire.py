"""Acting weights on the wire: torch tensors travel as numpy arrays.

A learner publishes ``pack(agent.acting_weights())``; the weight store keeps it and env and eval
workers ``unpack`` it before ``agent.load_acting_weights``. Packed, every tensor is a
:class:`WireTensor` (its torch dtype's name and a numpy array of the same bytes), so:

- the weight store unpickles and re-puts numpy arrays only, and never imports torch (~200 MB of
  resident memory and ~2 s of CPU per store process, like a replay shard);
- Ray ships the arrays as out-of-band buffers: a worker's ``ray.get`` maps them from the object
  store without a copy, and ``unpack`` wraps them without another one.

Dtypes numpy lacks (``bfloat16``, the ``float8`` types) travel as unsigned integers of the same
width and are viewed back. Anything that is not a tensor (numbers, strings, numpy arrays) travels
unchanged, and ``unpack`` leaves values that were never packed unchanged, so a weight source that
hands out plain tensors still works.

This module imports torch only inside :func:`pack` and :func:`unpack`: unpickling a
:class:`WireTensor` must not pull torch into the weight store's process.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np


class WireTensor(NamedTuple):
    """One tensor on the wire: ``dtype`` is the torch dtype's name (``"float32"``,
    ``"bfloat16"``), ``data`` an array of the tensor's shape holding its bytes."""

    dtype: str
    data: np.ndarray


def pack(tree: Any) -> Any:
    """``tree`` (nested dicts, lists and tuples) with every torch tensor made a
    :class:`WireTensor` on the CPU."""
    import torch

    def one(value: Any) -> Any:
        t = value.detach().cpu()
        name = str(t.dtype).removeprefix("torch.")
        try:
            return WireTensor(name, t.numpy())
        except TypeError:  # no numpy dtype (bfloat16, float8): the same bytes, unsigned
            return WireTensor(name, t.view(_torch_uint(t.element_size())).numpy())

    return _map(tree, torch.Tensor, one)


def unpack(tree: Any) -> Any:
    """The inverse of :func:`pack`: every :class:`WireTensor` a CPU tensor again.

    The tensors share memory with the arrays; arrays fetched from Ray's object store are
    read-only, so the tensors are for reading (``load_state_dict`` copies them)."""
    import torch

    def one(value: WireTensor) -> Any:
        with warnings.catch_warnings():  # a read-only array: the tensor is only read
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            t = torch.from_numpy(value.data)
        dtype = getattr(torch, value.dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"packed weights name an unknown torch dtype {value.dtype!r}")
        return t if t.dtype == dtype else t.view(dtype)

    return _map(tree, WireTensor, one)


def _map(tree: Any, leaf: type, fn: Callable[[Any], Any]) -> Any:
    """``tree`` with ``fn`` applied to every instance of ``leaf`` inside dicts, lists and
    (non-named) tuples; everything else unchanged."""
    if isinstance(tree, leaf):
        return fn(tree)
    if isinstance(tree, dict):
        return {k: _map(v, leaf, fn) for k, v in tree.items()}
    if isinstance(tree, list | tuple) and not _is_namedtuple(tree):
        return type(tree)(_map(v, leaf, fn) for v in tree)
    return tree


def _is_namedtuple(value: Any) -> bool:
    return isinstance(value, tuple) and hasattr(value, "_fields")


def _torch_uint(size: int) -> Any:
    import torch

    return {1: torch.uint8, 2: torch.uint16, 4: torch.uint32, 8: torch.uint64}[size]
