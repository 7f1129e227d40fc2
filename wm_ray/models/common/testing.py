"""Helpers for every family's tests and benchmarks: fake spaces and batches, scaled comparisons.

Nothing here is used in training. The fakes follow the replay format of ``wm_ray.types``; the
comparison helpers hold on any CPU or BLAS, because they compare at the scale of the quantity
(see :func:`assert_close_to_scale`).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

FLOAT32_EPS = float(torch.finfo(torch.float32).eps)


def assert_close_to_scale(
    actual: torch.Tensor,
    expected: torch.Tensor,
    rtol: float = 1e-4,
    scale: torch.Tensor | float | None = None,
    what: str = "values",
) -> None:
    """``|actual - expected| <= rtol * scale`` elementwise.

    Two float32 computations of the same sums in another order (another CPU, BLAS path, fused
    kernel or gather instead of a dense product) differ by about ``eps * sqrt(n)`` times the sum
    of the absolute terms, not times the result: a sum that nearly cancels, or a tiny element
    of a tensor whose other elements are large, has a large relative error that says nothing
    about a bug. So the bound is relative to ``scale``:

    - by default ``max |expected|``, one number for the whole tensor (gradients, logits);
    - or a tensor broadcastable to ``expected`` that bounds the absolute terms each element is
      summed from (e.g. a two-hot mean ``sum_i p_i v_i`` gets ``sum_i p_i |v_i|``).

    ``rtol`` should sit far above ``FLOAT32_EPS`` (1.2e-7) times the square root of the
    accumulation length, and far below the size of a real error.
    """
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}")
    a, e = actual.detach().double(), expected.detach().double()
    if scale is None:
        scale = float(e.abs().max()) if e.numel() else 0.0
    bound = rtol * torch.as_tensor(scale, dtype=torch.float64).clamp(min=FLOAT32_EPS)
    err = (a - e).abs()
    bad = err > bound
    if bool(bad.any()):
        worst = int(torch.argmax(err / bound))
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {e.numel()} elements differ by more than "
            f"{rtol:g} x scale; worst: {float(a.flatten()[worst]):.8g} vs "
            f"{float(e.flatten()[worst]):.8g} (error {float(err.flatten()[worst]):.3g}, "
            f"allowed {float(bound.expand_as(err).flatten()[worst]):.3g})"
        )


def image_space(size: int = 64, channels: int = 3) -> gym.spaces.Dict:
    """``{image: (size, size, channels) uint8}``."""
    return gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (size, size, channels), np.uint8)})


def vector_space(dim: int = 4) -> gym.spaces.Dict:
    """``{vector: (dim,) float32}``, unbounded."""
    return gym.spaces.Dict({"vector": gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)})


def fake_batch(
    obs_space: gym.spaces.Dict,
    act_space: gym.Space,
    batch: int,
    length: int,
    seed: int = 0,
    first_prob: float = 0.02,
    terminal_prob: float = 0.02,
) -> dict[str, np.ndarray]:
    """A random ``(B, T, ...)`` batch in the replay format of ``wm_ray.types``.

    Observations are smooth in time (a random walk), so a world model can learn them.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for key, space in obs_space.spaces.items():
        shape = (batch, length, *(space.shape or ()))
        walk = np.cumsum(rng.normal(0.0, 0.1, shape), axis=1)
        if key == "image":
            base = rng.uniform(0, 255, (batch, 1, *shape[2:]))
            out[key] = np.clip(base + 40.0 * walk, 0, 255).astype(np.uint8)
        else:
            out[key] = walk.astype(np.float32)
    out["action"] = fake_actions(act_space, (batch, length), rng)
    out["reward"] = rng.normal(0.0, 1.0, (batch, length)).astype(np.float32)
    out["is_first"] = rng.random((batch, length)) < first_prob
    out["is_terminal"] = rng.random((batch, length)) < terminal_prob
    out["is_last"] = out["is_terminal"].copy()
    return out


def fake_actions(act_space: gym.Space, lead: tuple[int, ...], rng: np.random.Generator) -> Any:
    """Random actions of ``act_space`` with leading dims ``lead``: int64 indices or float32
    values in [-1, 1]."""
    if isinstance(act_space, gym.spaces.Discrete):
        start = int(act_space.start)
        return rng.integers(start, start + int(act_space.n), lead)
    shape = (*lead, *(act_space.shape or ()))
    return rng.uniform(-1.0, 1.0, shape).astype(np.float32)


def obs_step(batch: dict[str, np.ndarray], t: int) -> dict[str, np.ndarray]:
    """Step ``t`` of every sequence of a batch as an ``(N, ...)`` env observation."""
    return {k: np.asarray(v)[:, t] for k, v in batch.items() if k != "action"}
