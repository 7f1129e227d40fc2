"""Each family's operator: what its agent and its networks take (``docs/operators.md``).

The agent-level methods (``images``, ``frames``, ``observation``, ``action``, ``batch``,
``start_frames``) are :class:`~wm_ray.operators.base.Operator`'s; a family adds the model level,
built on the same functions its agent calls (:mod:`wm_ray.operators.tensors`):

- ``dreamer`` / ``modular`` / ``planet``: the encoder's input dict (``image`` uint8
  ``(N, H, W, C)``, scaled inside the encoder; ``vector`` float32) and one-hot (discrete) or
  float actions ``(N, A)``;
- ``diamond``: frames float ``(N, C, H, W)`` in [-1, 1], 0-based action indices;
- ``iris``: frames float ``(N, C, H, W)`` in [0, 1] (the tokenizer's input), 0-based actions;
- ``genie``: clips uint8 ``(B, T, H, W, C)`` of the last ``genie.frames`` frames (the tokenizer
  and the latent action model's input), and *latent* actions in ``[0, genie.lam.vocab)``
  (what ``dream_step`` takes);
- ``jepa``: frames float ``(N, H, W, C)`` in [-1, 1] (the encoders' input).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from wm_ray.models.common.data import ActionSpec, obs_tensors
from wm_ray.models.common.nets import postprocess_image
from wm_ray.operators.base import Operator, OperatorError
from wm_ray.operators.images import describe, to_numpy
from wm_ray.operators.tensors import (
    action_indices,
    image_tensor,
    signed,
    signed_channels_first,
    signed_to_pixels,
    unit_channels_first,
    unit_to_pixels,
)


def _tensor(frames: Any) -> torch.Tensor:
    if isinstance(frames, torch.Tensor):
        return frames.detach()
    array = to_numpy(frames, "frames")
    if array.dtype.kind != "f":
        raise OperatorError(f"to_pixels: got {describe(frames)}; expected model-space floats")
    return torch.as_tensor(array)


class DreamerOperator(Operator):
    """dreamer, modular, planet: RSSM world models over ``image`` and / or ``vector``."""

    def model_input(self, image: Any = None, vector: Any = None) -> dict[str, torch.Tensor]:
        """The world model encoder's input: ``image`` uint8 ``(N, H, W, C)`` (the encoder
        scales it) and / or ``vector`` float32 ``(N, D)``, on the operator's device."""
        obs = self.observation(image, vector)
        del obs["is_first"]
        shapes = {key: tuple(value.shape[1:]) for key, value in obs.items()}
        return obs_tensors(obs, shapes, self.device, lead=1)

    def model_action(self, action: Any) -> torch.Tensor:
        """Env actions -> float ``(N, A)``: one-hot for discrete spaces, as is for a Box."""
        spec = ActionSpec.of(self.act_space)
        return spec.to_model(torch.as_tensor(self.action(action), device=self.device))

    def to_pixels(self, frames: Any) -> np.ndarray:
        """Decoder-space images ``(..., H, W, C)`` (``x / 255 - 0.5``) -> uint8."""
        return postprocess_image(_tensor(frames)).cpu().numpy()


class _IndexActions(Operator):
    """Discrete env actions as 0-based indices (DIAMOND, IRIS)."""

    def model_action(self, action: Any) -> torch.Tensor:
        """Env actions -> int64 ``(N,)`` 0-based indices (env action minus the space's start)."""
        actions = self.action(action)
        return action_indices(
            actions, actions.shape, self.num_actions, self.action_start, self.device
        )

    def _pixels(self, image: Any) -> torch.Tensor:
        shape = self._image_shape("image")
        return image_tensor(self.images(image), shape, self.device)


class DiamondOperator(_IndexActions):
    """DIAMOND: frames in [-1, 1] channels-first, as its denoiser and actor-critic take them."""

    steppable = True

    def model_input(self, image: Any = None, vector: Any = None) -> torch.Tensor:
        """Images -> float32 ``(N, C, H, W)`` in [-1, 1] (``x / 127.5 - 1``)."""
        return signed_channels_first(self._pixels(image))

    def to_pixels(self, frames: Any) -> np.ndarray:
        """Frames ``(..., C, H, W)`` in [-1, 1] (the denoiser's) -> uint8 ``(..., H, W, C)``."""
        return signed_to_pixels(_tensor(frames)).movedim(-3, -1).cpu().numpy()


class IrisOperator(_IndexActions):
    """IRIS: frames in [0, 1] channels-first, as its tokenizer takes them."""

    steppable = True

    def model_input(self, image: Any = None, vector: Any = None) -> torch.Tensor:
        """Images -> float32 ``(N, C, H, W)`` in [0, 1] (``x / 255``)."""
        return unit_channels_first(self._pixels(image))

    def to_pixels(self, frames: Any) -> np.ndarray:
        """Frames ``(..., C, H, W)`` in [0, 1] (the tokenizer's) -> uint8 ``(..., H, W, C)``."""
        return unit_to_pixels(_tensor(frames)).movedim(-3, -1).cpu().numpy()


class GenieOperator(Operator):
    """Genie: clips of ``genie.frames`` uint8 frames; latent actions for its dreams."""

    steppable = True

    @property
    def clip_length(self) -> int:
        return int(self.config.genie.frames)

    @property
    def vocab(self) -> int:
        return int(self.config.genie.lam.vocab)

    def clip(self, frames: Any) -> np.ndarray:
        """Sequences of frames -> uint8 ``(B, T, H, W, C)``, the last ``genie.frames`` of each
        (what ``train`` keeps of a replayed sequence)."""
        return self.frames(frames)[:, -self.clip_length :]

    def latent_action(self, action: Any) -> np.ndarray:
        """One or ``N`` latent actions -> int64 ``(N,)`` in ``[0, genie.lam.vocab)``, what
        ``dream_step`` takes (``agent.latent_actions()`` names them)."""
        array = to_numpy(action, "latent action")
        if array.dtype.kind == "f" and np.isfinite(array).all() and (array % 1 == 0).all():
            array = array.astype(np.int64)
        array = np.atleast_1d(array)
        if (
            array.dtype.kind not in "iu"
            or array.ndim != 1
            or not (array.size and array.min() >= 0 and array.max() < self.vocab)
        ):
            raise OperatorError(
                f"latent action: got {describe(action)}; expected integers in [0, {self.vocab}) "
                "(genie.lam.vocab), one per dream"
            )
        return array.astype(np.int64)

    def model_input(self, image: Any = None, vector: Any = None) -> torch.Tensor:
        """Sequences of frames -> uint8 ``(B, T, H, W, C)`` on the device, the last
        ``genie.frames`` of each: the tokenizer's and the latent action model's input."""
        shape = self._image_shape("image")
        clip = image_tensor(self.frames(image), shape, self.device, min_lead=1, cast=True)
        return clip[..., -self.clip_length :, :, :, :]

    def model_action(self, action: Any) -> torch.Tensor:
        """Latent actions -> int64 ``(N,)`` on the device (the dynamics' action input)."""
        return torch.as_tensor(self.latent_action(action), device=self.device)

    def to_pixels(self, frames: Any) -> np.ndarray:
        """Decoded frames ``(..., H, W, C)`` in [0, 1] (the tokenizer's) -> uint8."""
        return unit_to_pixels(_tensor(frames)).cpu().numpy()


class JepaOperator(Operator):
    """JEPA: frames in [-1, 1] channels-last, as its encoders take them."""

    def model_input(self, image: Any = None, vector: Any = None) -> torch.Tensor:
        """Images -> float32 ``(N, H, W, C)`` in [-1, 1] (``x / 127.5 - 1``): the context and
        target encoders' input (``agent.features`` takes the uint8 ``images`` instead)."""
        shape = self._image_shape("image")
        return signed(image_tensor(self.images(image), shape, self.device, cast=True))

    def to_pixels(self, frames: Any) -> np.ndarray:
        """Frames ``(..., H, W, C)`` in [-1, 1] -> uint8."""
        return signed_to_pixels(_tensor(frames)).cpu().numpy()


__all__ = [
    "DiamondOperator",
    "DreamerOperator",
    "GenieOperator",
    "IrisOperator",
    "JepaOperator",
]
