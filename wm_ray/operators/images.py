"""Raw images as the uint8 pixels of the step convention (numpy only; no torch).

One image is a PIL image, a numpy array, a torch tensor or any object with ``__array__``, laid
out ``(H, W)`` (grayscale) or ``(H, W, C)`` channels-last with ``C`` of 1 (gray), 3 (RGB) or
4 (RGBA: the alpha channel is dropped). Pixels are uint8 ``0..255``, other integers in
``0..255``, or floats in ``[0, 1]`` (scaled by 255 and rounded). Gray becomes RGB by repeating
the channel and RGB becomes gray with the luma weights of PIL's ``L`` conversion (0.299, 0.587,
0.114), when the target has the other channel count. A square image of another size is resized
to the target side with the envs' own resize (:func:`wm_ray.envs.base.resize_image`, OpenCV's
area interpolation), so frames match the ones the model was trained on; a non-square image is
refused rather than cropped or stretched. Everything else raises :class:`OperatorError` naming
the value, what it got and what is valid.
"""

from __future__ import annotations

from typing import Any

import numpy as np

LUMA = np.array([0.299, 0.587, 0.114])
"""RGB -> gray weights (ITU-R 601-2, as PIL's ``convert("L")``)."""
CHANNELS = (1, 3, 4)


class OperatorError(ValueError):
    """A raw input an operator cannot turn into what the family takes; the message names the
    value, what it got and what is valid."""


def describe(value: Any) -> str:
    """``type`` plus shape and dtype where it has them, for error messages."""
    kind = type(value).__name__
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if isinstance(value, (list, tuple)):
        return f"{kind} of {len(value)}"
    if shape is None:
        return f"{kind} {value!r}"[:80]
    return f"{kind} of shape {tuple(shape)} and dtype {dtype}"


def is_pil(value: Any) -> bool:
    """A PIL image (without importing PIL when the caller never used it)."""
    module = type(value).__module__ or ""
    return module.startswith("PIL.") and hasattr(value, "mode") and hasattr(value, "convert")


def to_numpy(value: Any, what: str) -> np.ndarray:
    """A PIL image, torch tensor, numpy array or ``__array__`` object (or nested lists of
    numbers) as a numpy array; anything else raises :class:`OperatorError`."""
    if is_pil(value):
        if value.mode not in ("L", "RGB", "RGBA"):
            value = value.convert("RGBA" if "A" in value.mode else "RGB")
        return np.asarray(value)
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        tensor = value.detach().cpu()
        if str(tensor.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            tensor = tensor.float()
        return np.asarray(tensor.numpy())
    if isinstance(value, (np.ndarray, np.generic, list, tuple, int, float)) or hasattr(
        value, "__array__"
    ):
        try:
            array = np.asarray(value)
        except (TypeError, ValueError) as err:
            raise OperatorError(
                f"{what}: cannot read {describe(value)} as an array ({err})"
            ) from err
        if array.dtype.kind in "biuf":
            return array
    raise OperatorError(
        f"{what}: got {describe(value)}; expected a numpy array, a torch tensor, a PIL image or "
        "an object with __array__, of numbers"
    )


def to_uint8(array: np.ndarray, what: str) -> np.ndarray:
    """uint8 as is, integers in 0..255 cast, floats in [0, 1] scaled by 255 and rounded."""
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind == "b":
        raise OperatorError(
            f"{what}: got a bool array; pixels are uint8 0..255 or floats in [0, 1]"
        )
    low, high = (array.min(), array.max()) if array.size else (0, 0)
    if array.dtype.kind in "iu":
        if low < 0 or high > 255:
            raise OperatorError(
                f"{what}: integer pixels must lie in 0..255, got {low}..{high} ({array.dtype})"
            )
        return array.astype(np.uint8)
    if not np.isfinite(array).all() or low < 0.0 or high > 1.0:
        raise OperatorError(
            f"{what}: float pixels must lie in [0, 1], got {low:.4g}..{high:.4g} "
            f"({array.dtype}); pass 0..255 pixels as uint8"
        )
    return np.round(array * 255.0).astype(np.uint8)


def is_single_image(value: Any) -> bool:
    """Whether ``value`` is one image (PIL, ``(H, W)`` or ``(H, W, C)`` with C in 1/3/4)
    rather than a list or stack of them."""
    if is_pil(value):
        return True
    if isinstance(value, (list, tuple)):
        return False
    ndim = len(getattr(value, "shape", np.shape(value)))
    shape = tuple(getattr(value, "shape", np.shape(value)))
    return ndim == 2 or (ndim == 3 and shape[-1] in CHANNELS)


def pixels(
    value: Any, shape: tuple[int, int, int], resize: bool = True, what: str = "image"
) -> np.ndarray:
    """One image as uint8 ``shape`` ``(H, W, C)`` (see the module docstring)."""
    array = to_uint8(to_numpy(value, what), what)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[-1] not in CHANNELS:
        hint = ""
        if array.ndim == 3 and array.shape[0] in CHANNELS:
            hint = "; for a channels-first (C, H, W) tensor pass x.permute(1, 2, 0)"
        elif array.ndim == 3:
            hint = "; for N gray frames pass (N, H, W, 1) or a list of (H, W) frames"
        raise OperatorError(
            f"{what}: got {describe(value)}; an image is (H, W) or (H, W, C) channels-last with "
            f"C in {CHANNELS}{hint}"
        )
    if array.shape[-1] == 4:
        array = array[..., :3]
    height, width, channels = shape
    if array.shape[-1] != channels:
        if channels == 3 and array.shape[-1] == 1:
            array = np.repeat(array, 3, axis=-1)
        elif channels == 1 and array.shape[-1] == 3:
            array = np.round(array @ LUMA).clip(0, 255).astype(np.uint8)[..., None]
        else:
            raise OperatorError(
                f"{what}: got {array.shape[-1]} channels, the model takes {channels}"
            )
    if array.shape[:2] != (height, width):
        got = array.shape[:2]
        if not resize or height != width or got[0] != got[1]:
            why = (
                "resize=False" if not resize else "a non-square image would be cropped or stretched"
            )
            raise OperatorError(
                f"{what}: got {got[0]}x{got[1]} pixels, the model takes {height}x{width} "
                f"({why}); crop or resize it first"
            )
        from wm_ray.envs.base import resize_image

        array = resize_image(np.ascontiguousarray(array), height)
    return np.ascontiguousarray(array, dtype=np.uint8)


def pixel_stack(
    values: Any, shape: tuple[int, int, int], resize: bool = True, what: str = "images"
) -> np.ndarray:
    """A list (or ``(N, ...)`` stack) of images as uint8 ``(N, H, W, C)``; one image gives
    ``N = 1``."""
    if is_single_image(values):
        return pixels(values, shape, resize, what)[None]
    if not isinstance(values, (list, tuple)):
        array = to_numpy(values, what)
        if array.ndim == 3:  # not an image (is_single_image): say why
            pixels(array, shape, resize, what)
        if array.ndim != 4:
            raise OperatorError(
                f"{what}: got {describe(values)}; expected one image, a list of images or an "
                "(N, H, W, C) stack"
            )
        values = list(array)
    if not len(values):
        raise OperatorError(f"{what}: got an empty {type(values).__name__}; expected images")
    return np.stack([pixels(v, shape, resize, f"{what}[{i}]") for i, v in enumerate(values)])


def sequences(
    values: Any, shape: tuple[int, int, int], resize: bool = True, what: str = "images"
) -> np.ndarray:
    """Sequences of frames as uint8 ``(B, T, H, W, C)``: a list of sequences, a ``(B, T, ...)``
    stack, or one sequence (a list of frames or ``(T, ...)``; ``B = 1``)."""
    if isinstance(values, (list, tuple)) and values and not is_single_image(values[0]):
        stacks = [pixel_stack(v, shape, resize, f"{what}[{i}]") for i, v in enumerate(values)]
        lengths = {len(s) for s in stacks}
        if len(lengths) != 1:
            raise OperatorError(f"{what}: sequences of different lengths {sorted(lengths)}")
        return np.stack(stacks)
    if not isinstance(values, (list, tuple)) and not is_single_image(values):
        array = to_numpy(values, what)
        if array.ndim == 5:
            return np.stack(
                [pixel_stack(v, shape, resize, f"{what}[{i}]") for i, v in enumerate(array)]
            )
    return pixel_stack(values, shape, resize, what)[None]


def vectors(value: Any, size: int, what: str = "vector") -> np.ndarray:
    """One ``(D,)`` vector or ``(N, D)`` of them as float32 ``(N, D)``."""
    array = to_numpy(value, what)
    if array.dtype.kind == "b" or array.shape[-1:] != (size,) or array.ndim not in (1, 2):
        raise OperatorError(
            f"{what}: got {describe(value)}; expected {size} numbers, (N, {size}) for N envs"
        )
    return np.atleast_2d(array.astype(np.float32))


__all__ = [
    "OperatorError",
    "describe",
    "is_single_image",
    "pixel_stack",
    "pixels",
    "sequences",
    "to_numpy",
    "to_uint8",
    "vectors",
]
