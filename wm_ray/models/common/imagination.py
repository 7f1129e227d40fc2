"""Learning in imagination over a steppable world model: the protocol, rollouts, the losses.

A family whose world model can be stepped (IRIS's transformer; DIAMOND's diffusion model next)
opens ``B`` imagined streams from real context and implements :class:`Steppable`: one
``step(actions)`` advances every stream by one transition and returns what the policy sees next
(a frame, or a latent), the reward of the transition and whether the new state ends the episode.
:func:`rollout` runs a recurrent actor-critic in such a dream for ``horizon`` steps, and
:func:`reinforce_loss` is the actor-critic loss of IRIS and DIAMOND (REINFORCE with a value
baseline, lambda-returns, an entropy bonus and a squared-error value loss, masked after each
trajectory's first imagined end). :func:`actor_objective` is the policy term every family uses
(Dreamer too, with dynamics backprop).

References: IRIS (Micheli, Alonso, Fleuret, ICLR 2023, sec. 2.3), DIAMOND (Alonso et al.,
NeurIPS 2024, sec. 3), DreamerV3 (Hafner et al. 2023, eqs. 7-11).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import torch
import torch.nn.functional as F

from wm_ray import metrics as M
from wm_ray.models.common.distributions import sample_index
from wm_ray.models.common.returns import lambda_returns


class Transition(NamedTuple):
    """One imagined step of ``B`` streams."""

    obs: torch.Tensor
    """``(B, ...)`` what the policy reads at the new state (e.g. frames ``(B, C, H, W)``)."""
    reward: torch.Tensor
    """``(B,)`` reward of the transition."""
    end: torch.Tensor
    """``(B,)`` 1.0 where the new state ends the episode (a sample), else 0.0."""


class Steppable(Protocol):
    """``B`` imagined streams stepped in lockstep, started from real context by the family."""

    def step(self, action: torch.Tensor) -> Transition:
        """Advance every stream by ``action (B,)``; no gradients flow through the model."""
        ...


PolicyFn = Callable[[torch.Tensor, Any], tuple[torch.Tensor, torch.Tensor, Any]]
"""A recurrent actor-critic: ``(obs (B, ...), state) -> (logits (B, A), value (B,), state)``."""


def sample_logits(
    logits: torch.Tensor, temperature: float, gen: torch.Generator | None
) -> torch.Tensor:
    """Indices ``(...)`` drawn from ``softmax(logits / temperature)``; argmax at temperature 0."""
    if temperature <= 0:
        return logits.argmax(-1)
    return sample_index(torch.softmax(logits.float() / temperature, -1), gen)


def policy_action(
    logits: torch.Tensor,
    mode: str,
    epsilon: float,
    eval_temperature: float,
    gen: torch.Generator | None,
) -> torch.Tensor:
    """Actions ``(N,)`` of a discrete policy acting in an env (IRIS's and DIAMOND's acting).

    ``explore``: a sample at temperature 1, replaced with probability ``epsilon`` by a uniform
    action; ``eval``: a sample at ``eval_temperature`` (0: the most likely action).
    """
    if mode != "explore":
        return sample_logits(logits, eval_temperature, gen)
    action = sample_logits(logits, 1.0, gen)
    if epsilon > 0:
        n, device = action.shape[0], logits.device
        rand = torch.rand(n, generator=gen, device=device) < epsilon
        uniform = torch.randint(0, logits.shape[-1], (n,), generator=gen, device=device)
        action = torch.where(rand, uniform, action)
    return action


@dataclass
class Trajectory:
    """An imagined batch: ``H`` steps from ``B`` starts."""

    logits: torch.Tensor
    """``(B, H, A)`` action logits (with gradients)."""
    actions: torch.Tensor
    """``(B, H)`` sampled actions."""
    values: torch.Tensor
    """``(B, H + 1)`` critic values of the states ``0 .. H`` (with gradients)."""
    rewards: torch.Tensor
    """``(B, H)`` rewards of the transitions ``t -> t + 1``."""
    ends: torch.Tensor
    """``(B, H)`` sampled ends of ``t + 1`` (0/1)."""
    alive: torch.Tensor
    """``(B, H)`` 1 until the step after a trajectory's first end (loss weights)."""
    obs: torch.Tensor | None = None
    """``(B, H + 1, ...)`` what the policy saw, when asked for."""


def rollout(
    world: Steppable,
    policy: PolicyFn,
    first_obs: torch.Tensor,
    state: Any,
    alive: torch.Tensor,
    horizon: int,
    gen: torch.Generator | None,
    keep_obs: bool = False,
) -> Trajectory:
    """Run ``policy`` in ``world`` for ``horizon`` steps (actions sampled at temperature 1).

    Args:
        world: the dream, positioned at the start states (whose observation is ``first_obs``).
        policy: the actor-critic; its state after burn-in on real frames is ``state``.
        alive: ``(B,)`` 0 for starts that are terminal (their trajectory is ignored).
    """
    obs = first_obs
    logits, values, actions, rewards, ends, seen = [], [], [], [], [], [first_obs]
    for _ in range(horizon):
        logit, value, state = policy(obs, state)
        action = sample_logits(logit.detach(), 1.0, gen)
        with torch.no_grad():
            step = world.step(action)
        obs = step.obs
        logits.append(logit)
        values.append(value)
        actions.append(action)
        rewards.append(step.reward)
        ends.append(step.end)
        if keep_obs:
            seen.append(obs)
    _, last_value, _ = policy(obs, state)
    values.append(last_value)
    end = torch.stack(ends, 1)
    still = torch.cumprod(1.0 - end, 1)
    alive_t = alive.float()[:, None] * torch.cat([torch.ones_like(still[:, :1]), still[:, :-1]], 1)
    return Trajectory(
        logits=torch.stack(logits, 1),
        actions=torch.stack(actions, 1),
        values=torch.stack(values, 1),
        rewards=torch.stack(rewards, 1),
        ends=end,
        alive=alive_t,
        obs=torch.stack(seen, 1) if keep_obs else None,
    )


def actor_objective(
    logp: torch.Tensor | None,
    entropy: torch.Tensor,
    advantage: torch.Tensor,
    weight: torch.Tensor,
    entropy_scale: float,
    dynamics: bool = False,
    norm: torch.Tensor | None = None,
) -> torch.Tensor:
    """The actor loss ``-sum_t w_t [objective_t + eta H_t] / norm``.

    Args:
        logp: ``log pi(a_t | s_t)`` of the taken actions (unused with ``dynamics``).
        entropy: ``H[pi(. | s_t)]``.
        advantage: the (normalized) advantage; REINFORCE stops its gradient, dynamics backprop
            (``dynamics=True``) uses it as the objective itself.
        weight: per-step loss weights (discounted continuation, or alive flags).
        entropy_scale: ``eta``.
        norm: the divisor; None takes the mean over all steps.
    """
    if dynamics:
        objective = advantage
    else:
        assert logp is not None, "REINFORCE needs the log-probabilities of the actions"
        objective = logp * advantage.detach()
    total = weight * (objective + entropy_scale * entropy)
    return -(total.mean() if norm is None else total.sum() / norm)


def reinforce_loss(
    traj: Trajectory, gamma: float, lam: float, entropy_scale: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """IRIS's and DIAMOND's loss: REINFORCE with a value baseline, entropy, value regression.

    ``L = -E[log pi(a_t) sg(R_t - v_t) + eta H(pi)] + E[(v_t - sg(R_t))^2]``, each mean taken over
    the steps where ``alive`` is 1; ``R_t`` are lambda-returns bootstrapped with the critic.
    """
    with torch.no_grad():
        returns = lambda_returns(traj.rewards, 1.0 - traj.ends, traj.values.detach(), gamma, lam)
    weight = traj.alive
    norm = weight.sum().clamp(min=1.0)
    values = traj.values[:, :-1]
    logp_all = F.log_softmax(traj.logits.float(), -1)
    logp = logp_all.gather(-1, traj.actions[..., None]).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    advantage = returns - values.detach()
    actor_loss = actor_objective(logp, entropy, advantage, weight, entropy_scale, norm=norm)
    value_loss = ((values - returns) ** 2 * weight).sum() / norm

    def mean(x: torch.Tensor) -> torch.Tensor:
        return ((x.detach() * weight).sum() / norm).detach()

    metrics = {
        M.loss(M.ACTOR): actor_loss.detach(),
        M.loss(M.ACTOR, "policy"): -mean(logp * advantage),
        M.loss(M.CRITIC): value_loss.detach(),
        M.ACTOR_ENTROPY: mean(entropy),
        M.IMAG_RETURN: mean(returns),
        M.IMAG_VALUE: mean(values),
        M.IMAG_REWARD: mean(traj.rewards),
        M.IMAG_ADVANTAGE: mean(advantage),
        M.diagnostic("imag", "end"): mean(traj.ends),
        M.IMAG_WEIGHT: weight.mean().detach(),
    }
    return actor_loss + value_loss, metrics


__all__ = [
    "PolicyFn",
    "Steppable",
    "Trajectory",
    "Transition",
    "actor_objective",
    "reinforce_loss",
    "rollout",
    "sample_logits",
]
