"""Replayed numpy batches and env observations as model tensors (every family's input side).

Batches follow ``wm_ray.types``: ``(B, T, ...)`` arrays, ``action[:, t]`` chosen at step t
(int64 index for Discrete spaces, float32 in [-1, 1] for Box spaces). The RSSM step into t reads
the *previous* action ``action[:, t - 1]``, zero at ``t = 0`` and wherever ``is_first`` is set.
"""

from __future__ import annotations

from typing import NamedTuple

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F


class SeqBatch(NamedTuple):
    """A replayed batch as tensors on the model's device.

    Attributes:
        obs: ``image (B, T, H, W, C)`` uint8 and/or ``vector (B, T, D)`` float32.
        action: ``(B, T, A)`` the action taken at step t (one-hot for discrete spaces).
        prev_action: ``(B, T, A)`` the action taken before step t (zeros where is_first).
        reward: ``(B, T)`` the reward that arrived with step t.
        is_first: ``(B, T)`` bool, set at t = 0 too (every sequence starts from the initial state).
        is_terminal: ``(B, T)`` bool.
    """

    obs: dict[str, torch.Tensor]
    action: torch.Tensor
    prev_action: torch.Tensor
    reward: torch.Tensor
    is_first: torch.Tensor
    is_terminal: torch.Tensor


def obs_shapes(obs_space: gym.spaces.Dict) -> dict[str, tuple[int, ...]]:
    """Shapes of the ``image`` (H, W, C) and/or ``vector`` (D,) entries of a Dict obs space."""
    if not isinstance(obs_space, gym.spaces.Dict):
        raise TypeError(f"a world model needs a Dict observation space, got {obs_space}")
    unknown = sorted(set(obs_space.spaces) - {"image", "vector"})
    if unknown or not obs_space.spaces:
        raise ValueError(
            f"world models read the observation keys 'image' and 'vector'; got {sorted(obs_space)}"
        )
    shapes = {key: tuple(space.shape or ()) for key, space in obs_space.spaces.items()}
    image, vector = shapes.get("image"), shapes.get("vector")
    if image is not None and (len(image) != 3 or image[0] != image[1]):
        raise ValueError(f"'image' must be square (H, W, C), got shape {image}")
    if vector is not None and len(vector) != 1:
        raise ValueError(f"'vector' must be flat (D,), got shape {vector}")
    return shapes


class ActionSpec(NamedTuple):
    """How env actions map to model actions.

    Attributes:
        discrete: Discrete space (one-hot model actions) or Box.
        dim: number of discrete actions or Box dims ``A``.
        start: first index of a Discrete space (env action = start + one-hot index).
    """

    discrete: bool
    dim: int
    start: int

    @classmethod
    def of(cls, space: gym.Space) -> ActionSpec:
        """The spec of a Discrete or flat Box action space."""
        if isinstance(space, gym.spaces.Discrete):
            return cls(True, int(space.n), int(space.start))
        if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
            return cls(False, int(space.shape[0]), 0)
        raise TypeError(f"world models act in Discrete or flat Box action spaces, got {space}")

    def to_model(self, action: torch.Tensor) -> torch.Tensor:
        """Env actions (index ``(...)`` or ``(..., A)``) -> float model actions ``(..., A)``."""
        if self.discrete:
            return F.one_hot(action.long() - self.start, self.dim).float()
        return action.float()


def device_tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """``array`` as a tensor on ``device``; a read-only array (one that arrived zero-copy from
    Ray's object store) is copied first, so the tensor owns memory it may write."""
    if not array.flags.writeable:
        array = array.copy()
    return torch.as_tensor(array).to(device, non_blocking=True)


def obs_tensors(
    obs: dict[str, np.ndarray],
    shapes: dict[str, tuple[int, ...]],
    device: torch.device,
    lead: int,
) -> dict[str, torch.Tensor]:
    """The ``image`` (uint8, kept uint8) and ``vector`` (float32) arrays as device tensors.

    Args:
        obs: arrays with ``lead`` leading dims (1 for ``(N, ...)``, 2 for ``(B, T, ...)``).
        shapes: the expected per-step shapes from the observation space.
        device: target device.
        lead: number of leading dims.
    """
    out = {}
    for key, shape in shapes.items():
        if key not in obs:
            raise ValueError(f"observation key {key!r} is missing (got keys {sorted(obs)})")
        array = np.asarray(obs[key])
        if array.ndim != lead + len(shape) or tuple(array.shape[lead:]) != shape:
            raise ValueError(
                f"observation {key!r} has shape {array.shape}; expected {lead} leading dims "
                f"then {shape}"
            )
        dtype = np.uint8 if key == "image" else np.float32
        out[key] = device_tensor(array.astype(dtype, copy=False), device)
    return out


def batch_tensors(
    batch: dict[str, np.ndarray],
    shapes: dict[str, tuple[int, ...]],
    spec: ActionSpec,
    device: torch.device,
) -> SeqBatch:
    """A replayed ``(B, T, ...)`` batch as a :class:`SeqBatch` on ``device``."""
    missing = [k for k in ("action", "reward", "is_first", "is_terminal") if k not in batch]
    if missing:
        raise ValueError(f"batch is missing {missing} (got keys {sorted(batch)})")
    is_first_np = np.asarray(batch["is_first"], bool).copy()
    if is_first_np.ndim != 2:
        raise ValueError(f"batch 'is_first' must be (B, T), got shape {is_first_np.shape}")
    is_first_np[:, 0] = True
    lead = is_first_np.shape
    action_np = np.asarray(batch["action"])
    expected = lead if spec.discrete else (*lead, spec.dim)
    if action_np.shape != expected:
        raise ValueError(f"batch 'action' has shape {action_np.shape}, expected {expected}")
    if spec.discrete and action_np.size:
        low, high = int(action_np.min()) - spec.start, int(action_np.max()) - spec.start
        if low < 0 or high >= spec.dim:
            raise ValueError(
                f"discrete actions must lie in [{spec.start}, {spec.start + spec.dim}), got "
                f"[{low + spec.start}, {high + spec.start}]"
            )

    def tensor(key: str, dtype: type) -> torch.Tensor:
        array: np.ndarray = np.asarray(batch[key]).astype(dtype, copy=False)
        if array.shape[:2] != lead:
            raise ValueError(f"batch {key!r} has shape {array.shape}, expected leading {lead}")
        return device_tensor(array, device)

    is_first = torch.as_tensor(is_first_np).to(device, non_blocking=True)
    action = spec.to_model(tensor("action", np.int64 if spec.discrete else np.float32))
    prev = torch.cat([torch.zeros_like(action[:, :1]), action[:, :-1]], 1)
    prev = prev * (~is_first).unsqueeze(-1).float()
    return SeqBatch(
        obs=obs_tensors(batch, shapes, device, lead=2),
        action=action,
        prev_action=prev,
        reward=tensor("reward", np.float32),
        is_first=is_first,
        is_terminal=tensor("is_terminal", np.bool_),
    )
