"""Model-predictive control by the cross-entropy method in a latent space (PlaNet: Hafner et al.,
"Learning Latent Dynamics for Planning from Pixels", ICML 2019, sec. 3 and algorithm 2).

From the current latent state of each of ``N`` envs, a diagonal Gaussian belief over action
sequences ``a_{1:H}`` (mean 0, std 1) is refit ``I`` times: sample ``J`` candidate sequences
(clipped to the action box [-1, 1]), imagine them with the model's prior, score each by its
predicted return, and refit the belief to the top ``K``. The plan is the final mean; the agent
executes its first action (and plans again at the next step, from the new posterior).

The score of a candidate, with ``s_1 .. s_H`` the imagined states after each action::

    R = sum_k w_k r(s_k) [+ w_{H+1} v(s_H)],   w_1 = 1,   w_{k+1} = w_k * gamma * c(s_k)

(``gamma = discount``, ``c`` the predicted continue probability where the model has one, else 1;
``v`` a critic, optional). PlaNet sums the rewards (``gamma = 1``, no critic).

All ``N`` envs and all ``J`` candidates are one batch of ``N * J`` states: one call plans for
a whole vector env, and the only Python loops are over the ``H`` steps and ``I`` iterations.
The model enters through three functions, so any latent world model can plan with it (see
:func:`cem_plan`). Pure torch: nothing here imports Ray.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol, TypeVar, cast

import torch

from wm_ray.models.common.noise import Source, randn
from wm_ray.models.rssm.config import CEMConfig


class Batched(Protocol):
    """A batch of latent states (e.g. ``rssm.State``): ``map`` applies a function to every
    tensor of it, each with the batch as its first dim."""

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batched: ...


S = TypeVar("S", bound=Batched)


class Plan(NamedTuple):
    """The result of :func:`cem_plan` for ``N`` envs.

    Attributes:
        action: ``(N, A)`` the first action of the plan (the belief's mean), in [-1, 1].
        mean: ``(N, H, A)`` the final belief's mean.
        std: ``(N, H, A)`` the final belief's std.
        score: ``(N,)`` the mean predicted return of the last iteration's elites.
    """

    action: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    score: torch.Tensor


def imagine_returns(
    start: S,
    actions: torch.Tensor,
    step: Callable[[S, torch.Tensor], S],
    reward: Callable[[S], torch.Tensor],
    discount: float = 1.0,
    cont: Callable[[S], torch.Tensor] | None = None,
    value: Callable[[S], torch.Tensor] | None = None,
) -> torch.Tensor:
    """The predicted returns ``(M,)`` of ``M`` action sequences (module docstring's ``R``).

    Args:
        start: ``M`` states to start from.
        actions: ``(M, H, A)`` model actions.
        step: one prior step ``(state (M, ...), action (M, A)) -> state``.
        reward: ``state -> (M,)`` predicted reward.
        discount: ``gamma``.
        cont: ``state -> (M,)`` predicted continue probability; None: always 1.
        value: ``state -> (M,)`` value of the last state; None: no bootstrap.
    """
    state = start
    total = actions.new_zeros(actions.shape[0])
    weight = actions.new_ones(actions.shape[0])
    for k in range(actions.shape[1]):
        state = step(state, actions[:, k])
        total = total + weight * reward(state)
        weight = weight * discount
        if cont is not None:
            weight = weight * cont(state)
    if value is not None:
        total = total + weight * value(state)
    return total


def cem_plan(
    start: S,
    step: Callable[[S, torch.Tensor], S],
    reward: Callable[[S], torch.Tensor],
    action_dim: int,
    cfg: CEMConfig,
    gen: Source = None,
    cont: Callable[[S], torch.Tensor] | None = None,
    value: Callable[[S], torch.Tensor] | None = None,
) -> Plan:
    """Plan for ``N`` envs at once by the cross-entropy method (see the module docstring).

    Args:
        start: the ``N`` current latent states (batch first).
        step: one imagined step ``(state (M, ...), action (M, A)) -> state``, ``M = N * J``
            (e.g. the RSSM's prior step; it may sample from ``gen``).
        reward: ``state -> (M,)`` predicted reward of the step into the state.
        action_dim: ``A``; actions live in [-1, 1].
        cfg: horizon ``H``, candidates ``J``, iterations ``I``, elites ``K``, discount.
        gen: random source of the candidate sequences.
        cont: optional continue probability ``state -> (M,)`` (weights later rewards).
        value: optional value ``state -> (M,)`` added at the horizon (used if ``cfg.value``).

    Returns:
        A :class:`Plan`: the action to execute now is ``plan.action`` ``(N, A)``.
    """
    n = _batch_size(start)
    horizon, cands, top = cfg.horizon, cfg.candidates, cfg.top_k
    ref = _first_tensor(start)
    mean = ref.new_zeros(n, 1, horizon, action_dim, dtype=torch.float32)
    std = torch.ones_like(mean)
    # every env's state repeated for its J candidates: (N * J, ...), env-major
    starts = cast(S, start.map(lambda x: x.repeat_interleave(cands, 0)))
    bootstrap = value if cfg.value else None
    score = ref.new_zeros(n, dtype=torch.float32)
    for _ in range(cfg.iterations):
        noise = randn((n, cands, horizon, action_dim), mean, gen)
        candidates = (mean + std * noise).clamp(-1.0, 1.0)
        returns = imagine_returns(
            starts,
            candidates.reshape(n * cands, horizon, action_dim),
            step,
            reward,
            cfg.discount,
            cont,
            bootstrap,
        ).reshape(n, cands)
        best, index = returns.topk(top, dim=1)
        elites = candidates.gather(1, index[:, :, None, None].expand(n, top, horizon, action_dim))
        mean = elites.mean(1, keepdim=True)
        std = elites.std(1, unbiased=False, keepdim=True).clamp(min=cfg.min_std)
        score = best.mean(1)
    return Plan(mean[:, 0, 0], mean[:, 0], std[:, 0], score)


def explore(action: torch.Tensor, noise: float, gen: Source = None) -> torch.Tensor:
    """``action (..., A)`` plus Gaussian noise of std ``noise``, clipped to [-1, 1] (PlaNet's
    exploration while collecting)."""
    if noise <= 0:
        return action
    return (action + noise * randn(tuple(action.shape), action, gen)).clamp(-1.0, 1.0)


def _first_tensor(state: Batched) -> torch.Tensor:
    found: list[torch.Tensor] = []

    def grab(x: torch.Tensor) -> torch.Tensor:
        if not found:
            found.append(x)
        return x

    state.map(grab)
    if not found:
        raise ValueError("the start state holds no tensors")
    return found[0]


def _batch_size(state: Batched) -> int:
    return int(_first_tensor(state).shape[0])


__all__ = ["Batched", "Plan", "cem_plan", "explore", "imagine_returns"]
