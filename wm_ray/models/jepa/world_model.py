"""The JEPA world model: an action-conditioned predictor in the frozen JEPA embedding space,
and planning toward a goal frame (beyond the seeds; in the spirit of DINO-WM, Zhou et al.
2024, and V-JEPA 2-AC, Assran et al. 2025: a frozen self-supervised encoder, a dynamics model
on its features, model-predictive control toward a goal's embedding).

- **Embedding**: ``z`` = the target encoder's features of every patch of a frame, concatenated
  (``features: patches``, as DINO-WM; ``pooled``: their mean), under ``no_grad``: the encoder
  is frozen for the world model (the JEPA loss alone trains it). Measured on the toy goal task
  (``benchmarks/jepa_goal.py``): squared distances between pooled embeddings do not follow the
  distance between positions (correlation -0.06), those between patch embeddings do (0.84).
- **Dynamics**: ``z_{t+1} = z_t + f([z_t, a_t])``, ``f`` an MLP whose last layer starts at 0
  (the identity is the first guess); ``a_t`` one-hot for Discrete actions, the value for Box
  ones. Trained by mean squared error on the replayed transitions that stay inside an episode
  (``is_first`` at ``t + 1`` cuts).
- **Planning**: the CEM of PlaNet (:func:`~wm_ray.models.rssm.planning.cem_plan`) over action
  sequences in ``[-1, 1]^A``, a candidate scored by minus the sum over its imagined steps of
  the mean squared distance to the goal's embedding. For Discrete actions the candidates are
  scores per action and the action is their argmax (one-hot into the dynamics).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wm_ray import metrics as M
from wm_ray.models.common.optim import Optimizer
from wm_ray.models.rssm.config import CEMConfig
from wm_ray.models.rssm.planning import cem_plan

WORLD_MODEL = "world_model"


class LatentDynamics(nn.Module):
    """``z' = z + f([z, a])`` with ``f`` an MLP of ``layers`` hidden layers of ``hidden``."""

    def __init__(self, dim: int, action_dim: int, hidden: int = 256, layers: int = 2) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        width = dim + action_dim
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.LayerNorm(hidden), nn.SiLU()]
            width = hidden
        last = nn.Linear(width, dim)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*blocks, last)
        self.dim, self.action_dim = dim, action_dim

    def forward(self, z: Tensor, action: Tensor) -> Tensor:
        return z + self.net(torch.cat([z, action.to(z.dtype)], -1))


def action_inputs(actions: Tensor, discrete: int) -> Tensor:
    """Model inputs of actions: one-hot ``(..., n)`` of 0-based indices when ``discrete = n``
    (> 0), else the values as float ``(..., A)``."""
    if discrete:
        return F.one_hot(actions.long(), discrete).float()
    return actions.float()


def transitions(z: Tensor, actions: Tensor, is_first: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(z_t, a_t, z_{t+1})`` of every step of ``(B, T)`` sequences whose successor is in the
    same episode (no ``is_first`` at ``t + 1``), flattened."""
    keep = ~is_first[:, 1:].bool()
    return z[:, :-1][keep], actions[:, :-1][keep], z[:, 1:][keep]


def dynamics_step(
    model: LatentDynamics, opt: Optimizer, z: Tensor, actions: Tensor, z_next: Tensor
) -> dict[str, Tensor]:
    """One update on transitions; metrics ``train/loss/world_model/total`` and the error
    relative to the features' variance (``train/world_model/relative_error``: 1 is no better
    than the mean, the identity scores ``|z' - z|^2 / var``)."""
    model.train()
    loss = (model(z, actions) - z_next).pow(2).mean()
    stats = opt.step(loss)
    scale = z_next.var(0).mean().clamp_min(1e-8)
    return {
        M.loss(WORLD_MODEL): loss.detach(),
        M.diagnostic(WORLD_MODEL, "relative_error"): loss.detach() / scale,
        M.grad_norm(WORLD_MODEL): stats["grad_norm"],
    }


@dataclass
class GoalState:
    """A batch of imagined embeddings and the goals they are scored against (``map`` for the
    planner's batching)."""

    z: Tensor
    goal: Tensor

    def map(self, fn: Callable[[Tensor], Tensor]) -> GoalState:
        return GoalState(fn(self.z), fn(self.goal))


@torch.no_grad()
def plan_to_goal(
    model: LatentDynamics,
    z: Tensor,
    goal: Tensor,
    cfg: CEMConfig,
    discrete: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The first action of the CEM plan from embeddings ``z (N, D)`` toward ``goal (N, D)``:
    ``(N,)`` 0-based indices when ``discrete = n``, else ``(N, A)`` in [-1, 1]."""
    model.eval()
    dim = discrete or model.action_dim

    def step(state: GoalState, action: Tensor) -> GoalState:
        inputs = action_inputs(action.argmax(-1), discrete) if discrete else action
        return GoalState(model(state.z, inputs), state.goal)

    def reward(state: GoalState) -> Tensor:
        return -(state.z - state.goal).pow(2).mean(-1)

    plan = cem_plan(GoalState(z, goal), step, reward, dim, cfg, generator)
    return plan.action.argmax(-1) if discrete else plan.action


__all__ = [
    "WORLD_MODEL",
    "GoalState",
    "LatentDynamics",
    "action_inputs",
    "dynamics_step",
    "plan_to_goal",
    "transitions",
]
