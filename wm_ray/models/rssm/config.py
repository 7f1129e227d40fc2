"""Configuration of the recurrent state-space model (torch-free): the ``rssm`` subsection of
every RSSM family's config (``dreamer.rssm``, ...)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from wm_ray.types import Ranges


@dataclass(frozen=True)
class RSSMConfig:
    """The recurrent state-space model: a normalized GRU plus stochastic latents."""

    RANGES: ClassVar[Ranges] = {"unimix": (0, 1)}

    latent: Literal["categorical", "gaussian"] = "categorical"
    """categorical: DreamerV3's groups x classes one-hots; gaussian: Dream to Control's (v1)."""
    deter: int = 64
    """Units of the deterministic GRU state h."""
    hidden: int = 64
    """Width of the layers around the GRU (input layer, prior and posterior heads)."""
    stoch: int = 8
    """Categorical groups, or dimensions of the Gaussian latent."""
    classes: int = 8
    """Classes per categorical group (unused by the Gaussian latent)."""
    unimix: float = 0.01
    """Share of the uniform distribution mixed into every latent categorical."""
    min_std: float = 0.1
    """Gaussian latent: std = softplus(raw) + min_std."""
    initial: Literal["learned", "zeros"] = "learned"
    """Initial state: learned (h0 = tanh(w), z0 = prior mode of h0) or all zeros."""


@dataclass(frozen=True)
class CEMConfig:
    """The cross-entropy-method planner in latent space (PlaNet, Hafner et al. 2019, sec. 3):
    ``wm_ray.models.rssm.planning.cem_plan``. The defaults are the paper's."""

    RANGES: ClassVar[Ranges] = {"explore_noise": (0, None), "discount": (0, 1)}

    horizon: int = 12
    """Planning horizon H (imagined steps per candidate action sequence)."""
    candidates: int = 1000
    """Candidate action sequences J sampled per iteration, per env."""
    iterations: int = 8
    """Refits I of the action-sequence belief."""
    top_k: int = 100
    """Elite sequences K the belief is refit to (at most ``candidates``)."""
    explore_noise: float = 0.3
    """Std of the Gaussian noise added to the planned action while collecting (explore mode)."""
    discount: float = 1.0
    """Discount of the predicted rewards along a candidate (PlaNet: 1, a plain sum)."""
    value: bool = False
    """Add the critic's value of the last imagined state (families with a critic: Dreamer)."""
    min_std: float = 0.0
    """Lower bound of the belief's std between iterations (0: none, as in the paper)."""


def check_cem(cem: CEMConfig, prefix: str) -> list[str]:
    """Problems of a :class:`CEMConfig` (``prefix``: its dotted key, e.g. ``planet.cem``), each
    naming the value and what is valid; empty when it is valid."""
    bad = [
        f"{prefix}.{key}={value} (must be >= 1)"
        for key, value in {
            "horizon": cem.horizon,
            "candidates": cem.candidates,
            "iterations": cem.iterations,
            "top_k": cem.top_k,
        }.items()
        if value < 1
    ]
    if cem.top_k > cem.candidates:
        bad.append(
            f"{prefix}.top_k={cem.top_k} (must be <= {prefix}.candidates={cem.candidates}: "
            "the elites are a subset of the candidates)"
        )
    if cem.explore_noise < 0:
        bad.append(f"{prefix}.explore_noise={cem.explore_noise} (must be >= 0)")
    if not 0 < cem.discount <= 1:
        bad.append(f"{prefix}.discount={cem.discount} (must be in (0, 1])")
    if cem.min_std < 0:
        bad.append(f"{prefix}.min_std={cem.min_std} (must be >= 0)")
    return bad
