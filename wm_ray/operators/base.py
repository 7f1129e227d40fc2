"""The operator of a family: raw inputs -> exactly what the family's agent and model take.

:class:`Operator` is built from the family's single-env spaces and root config
(:func:`wm_ray.operators.get_operator`). Its methods return the structures of the agent
protocol (``wm_ray.core``, ``wm_ray.types``), as numpy:

- :meth:`images`: uint8 ``(N, H, W, C)``: ``dream_reset``'s start frames, JEPA's ``features``;
- :meth:`observation`: the ``(N, ...)`` obs dict ``policy`` takes (with ``is_first``);
- :meth:`action`: env actions ``(N,)`` int64 or ``(N, A)`` float32 (``dream_step``, batches);
- :meth:`batch`: the ``(B, T, ...)`` replay batch ``train`` and ``report`` take;

and :meth:`model_input` / :meth:`model_action` give the tensors the family's networks take
(per family, :mod:`wm_ray.operators.families`). Raw images follow :mod:`wm_ray.operators.images`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from wm_ray.operators.images import (
    OperatorError,
    describe,
    pixel_stack,
    sequences,
    to_numpy,
    vectors,
)


class Operator:
    """Raw inputs for one family, at its spaces (see the module docstring).

    Args:
        family: the registry name.
        obs_space: the single-env Dict observation space (``image`` and/or ``vector``).
        act_space: the single-env action space (Discrete or flat Box in [-1, 1]).
        config: the root config (the families read their section: e.g. Genie's clip length).
        resize: resize square images of another size to the model's (else refuse them).
        device: where :meth:`model_input` / :meth:`model_action` put tensors.
    """

    steppable: ClassVar[bool] = False
    """The agent has ``dream_reset`` / ``dream_step`` (:meth:`start_frames` serves them)."""

    def __init__(
        self,
        family: str,
        obs_space: gym.spaces.Dict,
        act_space: gym.Space,
        config: Any,
        resize: bool = True,
        device: Any = "cpu",
    ) -> None:
        self.family, self.config, self.resize = family, config, bool(resize)
        self.obs_space, self.act_space = obs_space, act_space
        spaces = getattr(obs_space, "spaces", {})
        image, vector = spaces.get("image"), spaces.get("vector")
        self.image_shape: tuple[int, int, int] | None = None
        if image is not None:
            self.image_shape = tuple(int(s) for s in image.shape)  # type: ignore[assignment]
        self.vector_size = int(vector.shape[0]) if vector is not None else None
        self.discrete = isinstance(act_space, gym.spaces.Discrete)
        if isinstance(act_space, gym.spaces.Discrete):
            self.num_actions, self.action_start = int(act_space.n), int(act_space.start)
        else:
            self.num_actions, self.action_start = int(np.prod(act_space.shape or ())), 0
        import torch

        self.device = torch.device(device)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(family={self.family!r}, image={self.image_shape}, "
            f"vector={self.vector_size}, actions={self.act_space})"
        )

    # ----------------------------------------------------------------------------- images

    def _image_shape(self, what: str) -> tuple[int, int, int]:
        if self.image_shape is None:
            raise OperatorError(
                f"{what}: the {self.family} operator has no image observation (its obs space "
                f"is {self.obs_space}); pass vector=..."
            )
        return self.image_shape

    def images(self, images: Any) -> np.ndarray:
        """One image or a list / ``(N, ...)`` stack of them as uint8 ``(N, H, W, C)``."""
        return pixel_stack(images, self._image_shape("images"), self.resize, "images")

    def frames(self, frames: Any) -> np.ndarray:
        """Sequences of frames as uint8 ``(B, T, H, W, C)``: a list of frames (one sequence,
        ``B = 1``), a list of sequences or a ``(B, T, ...)`` stack."""
        return sequences(frames, self._image_shape("frames"), self.resize, "frames")

    def start_frames(self, images: Any) -> np.ndarray:
        """The uint8 ``(N, H, W, C)`` start frames of ``agent.dream_reset``."""
        if not self.steppable:
            raise OperatorError(
                f"the {self.family} family does not step its world model from frames "
                "(no dream_reset); steppable families: diamond, genie, iris"
            )
        return self.images(images)

    # ----------------------------------------------------------------------------- observations

    def observation(
        self, image: Any = None, vector: Any = None, is_first: Any = True
    ) -> dict[str, np.ndarray]:
        """The ``(N, ...)`` observation dict of ``agent.policy``: ``image`` uint8
        ``(N, H, W, C)`` and / or ``vector`` float32 ``(N, D)`` (those of the obs space, each
        required), and ``is_first`` ``(N,)`` bool (one value for every stream, or N)."""
        obs: dict[str, np.ndarray] = {}
        if self.image_shape is not None:
            if image is None:
                raise OperatorError(f"observation: the {self.family} operator needs image=...")
            obs["image"] = self.images(image)
        elif image is not None:
            raise OperatorError(f"observation: the obs space {self.obs_space} has no image")
        if self.vector_size is not None:
            if vector is None:
                raise OperatorError(f"observation: the {self.family} operator needs vector=...")
            obs["vector"] = vectors(vector, self.vector_size)
        elif vector is not None:
            raise OperatorError(f"observation: the obs space {self.obs_space} has no vector")
        sizes = {len(v) for v in obs.values()}
        if len(sizes) != 1:
            raise OperatorError(f"observation: image and vector give different counts {sizes}")
        obs["is_first"] = self._flags(is_first, (sizes.pop(),), "is_first")
        return obs

    @staticmethod
    def _flags(value: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
        array = to_numpy(value, what)
        if array.dtype.kind not in "bi" or (array.size and not np.isin(array, (0, 1)).all()):
            raise OperatorError(f"{what}: got {describe(value)}; expected booleans")
        try:
            return np.broadcast_to(array.astype(bool), shape).copy()
        except ValueError:
            raise OperatorError(
                f"{what}: got shape {array.shape}, expected {shape} or one value"
            ) from None

    # ----------------------------------------------------------------------------- actions

    def valid_actions(self) -> str:
        if self.discrete:
            return (
                f"integers in [{self.action_start}, {self.action_start + self.num_actions}) "
                f"({self.act_space}), one per env"
            )
        return f"{self.num_actions} floats in [-1, 1] per action ({self.act_space})"

    def action(self, action: Any, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """Env actions: one or ``N`` (a list or array), or ``shape`` (e.g. ``(B, T)``) when
        given, as int64 indices or float32 ``(..., A)`` in [-1, 1]."""
        try:
            array = to_numpy(action, "action")
        except OperatorError:
            raise OperatorError(
                f"action: got {describe(action)}; expected {self.valid_actions()}"
            ) from None
        if self.discrete:
            if array.dtype.kind == "f" and np.isfinite(array).all() and (array % 1 == 0).all():
                array = array.astype(np.int64)  # 2.0 is action 2; 2.5 is refused
            low, high = self.action_start, self.action_start + self.num_actions
            ok = array.dtype.kind in "iu" and not (
                array.size and (array.min() < low or array.max() >= high)
            )
            out, want = np.atleast_1d(array) if shape is None else array, shape
        else:
            ok = array.dtype.kind in "iuf" and array.shape[-1:] == (self.num_actions,)
            ok = ok and not (array.size and np.abs(array).max() > 1.0)
            out = np.atleast_2d(array) if shape is None else array
            want = None if shape is None else (*shape, self.num_actions)
        if ok:
            ok = out.ndim == (1 if self.discrete else 2) if want is None else out.shape == want
        if not ok:
            where = f" of shape {want}" if want is not None else ""
            values = f" {str(array.tolist())[:60]}" if isinstance(action, (list, tuple)) else ""
            raise OperatorError(
                f"action: got {describe(action)}{values}; expected{where} {self.valid_actions()}"
            )
        return out.astype(np.int64 if self.discrete else np.float32)

    # ----------------------------------------------------------------------------- batches

    def batch(
        self,
        frames: Any = None,
        action: Any = None,
        reward: Any = 0.0,
        is_first: Any = None,
        is_last: Any = False,
        is_terminal: Any = False,
        vector: Any = None,
    ) -> dict[str, np.ndarray]:
        """The ``(B, T, ...)`` replay batch of ``agent.train`` / ``report`` (``wm_ray.types``).

        Args:
            frames: sequences of images (see :meth:`frames`), when the obs space has images.
            action: ``(B, T)`` env actions (``(B, T, A)`` continuous); the action chosen at
                each step. Default: the first action (``0`` for a Box) everywhere.
            reward: ``(B, T)`` floats or one value.
            is_first: ``(B, T)`` bools or one value; default: each sequence starts an episode.
            is_last / is_terminal: ``(B, T)`` bools or one value.
            vector: ``(B, T, D)`` floats, when the obs space has a vector.
        """
        out: dict[str, np.ndarray] = {}
        if self.image_shape is not None:
            if frames is None:
                raise OperatorError(f"batch: the {self.family} operator needs frames=...")
            out["image"] = self.frames(frames)
        if self.vector_size is not None:
            if vector is None:
                raise OperatorError(f"batch: the {self.family} operator needs vector=...")
            array = to_numpy(vector, "vector").astype(np.float32)
            if array.ndim == 2:
                array = array[None]
            if array.ndim != 3 or array.shape[-1] != self.vector_size:
                raise OperatorError(
                    f"batch vector: got {describe(vector)}; expected (B, T, {self.vector_size})"
                )
            out["vector"] = array
        lead = next(iter(out.values())).shape[:2]
        if action is None:
            action = (
                np.full(lead, self.action_start)
                if self.discrete
                else np.zeros((*lead, self.num_actions), np.float32)
            )
        out["action"] = self.action(action, lead)
        reward_array = to_numpy(reward, "reward").astype(np.float32)
        try:
            out["reward"] = np.broadcast_to(reward_array, lead).copy()
        except ValueError:
            raise OperatorError(
                f"reward: got shape {reward_array.shape}, expected {lead}"
            ) from None
        if is_first is None:
            is_first = np.zeros(lead, bool)
            is_first[:, 0] = True
        for key, value in (("is_first", is_first), ("is_last", is_last),
                           ("is_terminal", is_terminal)):  # fmt: skip
            out[key] = self._flags(value, lead, key)
        return out

    # ----------------------------------------------------------------------------- model level

    def model_input(self, image: Any = None, vector: Any = None) -> Any:
        """The tensors the family's networks take (per family; see ``docs/operators.md``)."""
        raise OperatorError(f"the {self.family} family has no networks to feed")

    def model_action(self, action: Any) -> Any:
        """Env actions as the tensor the family's networks take (per family)."""
        raise OperatorError(f"the {self.family} family has no networks to feed")

    def to_pixels(self, frames: Any) -> np.ndarray:
        """Frames in the family's model space (what its networks output, laid out as
        :meth:`model_input`'s images) -> uint8 ``(..., H, W, C)``, as the agent shows them."""
        raise OperatorError(f"the {self.family} family has no networks that output frames")


__all__ = ["Operator", "OperatorError"]
