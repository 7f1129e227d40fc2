"""Saving and loading an agent's state: module weights, optimizers, generator and counters.

Files in a checkpoint directory, named after the model family (``dreamer``, ``iris``):

- ``<family>.safetensors`` (or ``<family>_weights.pt`` without safetensors): every module
  tensor, flat names such as ``wm.rssm.core.linear.weight``;
- ``<family>_optim.pt``: optimizer states and the sampling generator's state, read back with
  ``torch.load(weights_only=True)``;
- ``<family>.json``: counters.

Loading copies into the existing modules and optimizers, so a round trip is exact.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wm_ray.models.common.optim import Optimizer

HAVE_SAFETENSORS = importlib.util.find_spec("safetensors") is not None
"""safetensors is a dependency of wm_ray; ``torch.save`` is the fallback without it."""


def _files(family: str) -> tuple[str, str, str, str]:
    """(weights, weights without safetensors, optimizer state, counters) file names."""
    return f"{family}.safetensors", f"{family}_weights.pt", f"{family}_optim.pt", f"{family}.json"


def cpu_state_dicts(modules: Mapping[str, nn.Module]) -> dict[str, dict[str, torch.Tensor]]:
    """``{name: state_dict}`` with every tensor copied to the CPU (safe to ship or keep)."""
    return {
        name: {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
        for name, module in modules.items()
    }


def load_state_dicts(modules: Mapping[str, nn.Module], weights: Mapping[str, Any]) -> None:
    """Load ``{name: state_dict}`` into ``modules``; a missing or mismatched part is an error."""
    missing = sorted(set(modules) - set(weights))
    if missing:
        raise ValueError(f"weights lack the parts {missing} (got {sorted(weights)})")
    for name, module in modules.items():
        _load_module(module, weights[name], name)


def _load_module(module: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:4])
        raise ValueError(
            f"{what}: the weights do not fit this agent (different observation/action spaces "
            f"or model size?): {detail}"
        ) from None


def save(
    directory: Path,
    nets: nn.Module,
    optimizers: Mapping[str, Optimizer],
    gen: torch.Generator,
    counters: Mapping[str, int],
    family: str,
) -> None:
    """Write the three files of the module docstring into ``directory`` (created if needed)."""
    WEIGHTS, WEIGHTS_TORCH, OPTIM, COUNTERS = _files(family)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in nets.state_dict().items()}
    if HAVE_SAFETENSORS:
        from safetensors.torch import save_file

        save_file(tensors, str(directory / WEIGHTS))
    else:  # pragma: no cover
        torch.save(tensors, directory / WEIGHTS_TORCH)
    state = {name: opt.state_dict() for name, opt in optimizers.items()}
    torch.save({"optimizers": state, "generator": gen.get_state()}, directory / OPTIM)
    (directory / COUNTERS).write_text(json.dumps(dict(counters), indent=1))


def load(
    directory: Path,
    nets: nn.Module,
    optimizers: Mapping[str, Optimizer],
    gen: torch.Generator,
    family: str,
    subset: bool = False,
) -> dict[str, int]:
    """Restore what :func:`save` wrote; returns the counters.

    With ``subset`` the checkpoint may hold more tensors than ``nets`` (an acting-only agent
    reading a learner's checkpoint): only those of ``nets`` are read, and every one of them
    must be there.
    """
    WEIGHTS, WEIGHTS_TORCH, OPTIM, COUNTERS = _files(family)
    if (directory / WEIGHTS).is_file() and HAVE_SAFETENSORS:
        from safetensors.torch import load_file

        tensors = load_file(str(directory / WEIGHTS))
    elif (directory / WEIGHTS_TORCH).is_file():
        tensors = torch.load(directory / WEIGHTS_TORCH, map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"no {family} weights ({WEIGHTS}) in {str(directory)!r}")
    for name in (OPTIM, COUNTERS):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{family} checkpoint {str(directory)!r} lacks {name}")
    if subset:
        tensors = {k: v for k, v in tensors.items() if k in nets.state_dict()}
    _load_module(nets, tensors, f"checkpoint {str(directory)!r}")
    extra = torch.load(directory / OPTIM, map_location="cpu", weights_only=True)
    for name, opt in optimizers.items():
        opt.load_state_dict(extra["optimizers"][name])
    state = extra["generator"].cpu()
    if state.numel() == gen.get_state().numel():
        gen.set_state(state)
    else:  # saved by a generator of another device kind (a GPU run resumed on a CPU)
        warnings.warn(
            f"checkpoint {str(directory)!r}: its sampling generator was of another device kind; "
            "this run draws from its own generator, seeded from run.seed",
            stacklevel=2,
        )
    return dict(json.loads((directory / COUNTERS).read_text()))
