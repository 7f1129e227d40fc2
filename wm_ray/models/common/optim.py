"""An optimizer step with DreamerV3's safeguards (Hafner et al. 2023, appendix).

One :class:`Optimizer` owns one parameter group (world model, actor or critic). ``step(loss)``
clears its gradients, backpropagates into *its own parameters only* (so the actor loss, whose
graph passes through the world model, leaves world-model gradients untouched), optionally
applies adaptive gradient clipping (AGC, Brock et al. 2021, per tensor as in DreamerV3),
clips the global gradient norm, skips updates with non-finite gradients, warms up the learning
rate linearly, and steps Adam. Under a ``torch.distributed`` group the gradients are averaged
over the ranks first (:mod:`wm_ray.models.common.distributed`). Metrics come back as detached
0-dim tensors so that callers convert them once per train step instead of syncing the device
per optimizer.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from wm_ray.models.common.distributed import average_gradients


class Optimizer:
    """Adam with global-norm clipping, optional AGC, warmup and non-finite-gradient skipping.

    Args:
        params: the parameters to train.
        lr: learning rate after warmup.
        eps: Adam epsilon.
        clip: the maximum global gradient norm (0 disables clipping).
        agc: adaptive clipping ratio: each tensor's gradient norm is clipped to
            ``agc * max(||param||, pmin)`` before global clipping (0 disables).
        pmin: the smallest parameter norm AGC uses.
        weight_decay: decoupled weight decay (AdamW); 0 gives plain Adam.
        no_decay: parameters (of ``params``) exempt from weight decay, e.g. norms and biases.
        betas: Adam moment decays.
        warmup: steps of linear learning-rate warmup (0 disables).
        anneal: steps of linear learning-rate decay, from ``lr`` to ``anneal_to * lr``, which
            it keeps from then on (0: a constant rate).
        anneal_to: the fraction of ``lr`` the decay ends at.
        anneal_after: steps at the full rate (after the warmup) before the decay begins.
        skip_nonfinite: skip the update (and count it) when the gradient norm is NaN or inf;
            this costs one device sync per step.
        fused: torch's fused AdamW and a foreach gradient norm (fewer, larger kernels; the
            result differs from the default by float rounding only).
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        lr: float,
        *,
        eps: float = 1e-8,
        clip: float = 100.0,
        agc: float = 0.0,
        pmin: float = 1e-3,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup: int = 0,
        anneal: int = 0,
        anneal_to: float = 0.1,
        anneal_after: int = 0,
        skip_nonfinite: bool = True,
        no_decay: Iterable[nn.Parameter] = (),
        fused: bool = False,
    ) -> None:
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise ValueError("Optimizer got no trainable parameters")
        if min(warmup, anneal, anneal_after) < 0 or lr <= 0 or eps <= 0 or clip < 0 or agc < 0:
            raise ValueError(
                f"need lr > 0, eps > 0, clip >= 0, agc >= 0 and warmup, anneal, anneal_after "
                f">= 0, got {lr=}, {eps=}, {clip=}, {agc=}, {warmup=}, {anneal=}, {anneal_after=}"
            )
        if not 0 < anneal_to <= 1:
            raise ValueError(f"anneal_to must be in (0, 1], got {anneal_to}")
        self.lr, self.clip, self.agc, self.pmin = lr, clip, agc, pmin
        self.warmup, self.skip_nonfinite = warmup, skip_nonfinite
        self.anneal, self.anneal_to, self.anneal_after = anneal, anneal_to, anneal_after
        exempt = {id(p) for p in no_decay}
        groups: list[dict[str, Any]] = [
            {"params": [p for p in self.params if id(p) not in exempt]},
            {"params": [p for p in self.params if id(p) in exempt], "weight_decay": 0.0},
        ]
        groups = [g for g in groups if g["params"]]
        # fused: one multi-tensor Adam kernel and a foreach norm for all parameters (a compiled
        # update's optimizers); else torch's defaults (per-parameter loops on the CPU).
        self.foreach: bool | None = True if fused else None
        self.opt = torch.optim.AdamW(
            groups,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            **({"fused": True} if fused else {}),
        )
        self.steps = 0
        self.skipped = 0

    def current_lr(self) -> float:
        """The learning rate the next step uses: warmup, the full rate for ``anneal_after``
        steps, then the optional linear decay."""
        lr = self.lr * min(1.0, (self.steps + 1) / self.warmup) if self.warmup else self.lr
        if self.anneal:
            start = self.warmup + self.anneal_after
            done = min(1.0, max(0, self.steps - start) / self.anneal)
            lr *= 1.0 - (1.0 - self.anneal_to) * done
        return lr

    def _apply_agc(self) -> None:
        for p in self.params:
            if p.grad is None:
                continue
            max_norm = self.agc * p.detach().norm().clamp(min=self.pmin)
            p.grad.mul_((max_norm / p.grad.norm().clamp(min=1e-12)).clamp(max=1.0))

    def step(self, loss: torch.Tensor) -> dict[str, torch.Tensor]:
        """Backpropagate the scalar ``loss`` into the owned parameters and update them.

        Returns:
            ``loss``, ``grad_norm`` (the global norm before clipping) and ``lr``, as 0-dim tensors.
        """
        self.backward(loss)
        return self.apply(loss)

    def backward(self, loss: torch.Tensor) -> None:
        """Clear the owned gradients and backpropagate the scalar ``loss`` into them only."""
        _check_scalar(loss)
        self.opt.zero_grad(set_to_none=True)
        loss.backward(inputs=self.params)

    def apply(self, loss: torch.Tensor) -> dict[str, torch.Tensor]:
        """Update the parameters from the gradients they hold (after :meth:`backward`, or a
        backward pass of a sum of losses that shares one graph: see ``step_together``);
        ``loss`` only goes into the returned metrics."""
        average_gradients(self.params)  # data parallel: no-op without a process group
        if self.agc > 0:
            self._apply_agc()
        max_norm = self.clip if self.clip > 0 else float("inf")
        grad_norm = nn.utils.clip_grad_norm_(self.params, max_norm, foreach=self.foreach)
        lr = self.current_lr()
        if self.skip_nonfinite and not bool(torch.isfinite(grad_norm)):
            self.skipped += 1
            self.opt.zero_grad(set_to_none=True)
        else:
            for group in self.opt.param_groups:
                group["lr"] = lr
            self.opt.step()
            self.steps += 1
        return {"loss": loss.detach(), "grad_norm": grad_norm.detach(), "lr": torch.tensor(lr)}

    def state_dict(self) -> dict[str, Any]:
        """Adam moments, step counts and the counters of this wrapper."""
        return {"optimizer": self.opt.state_dict(), "steps": self.steps, "skipped": self.skipped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` taken from an optimizer over parameters of equal shapes.

        The state is deep-copied: torch would otherwise share the moment tensors with the
        optimizer the state came from, and both would then update them in place.
        """
        self.opt.load_state_dict(copy.deepcopy(state["optimizer"]))
        self.steps, self.skipped = int(state["steps"]), int(state["skipped"])


def _check_scalar(loss: torch.Tensor) -> None:
    if loss.dim() != 0:
        raise ValueError(f"loss must be a scalar, got shape {tuple(loss.shape)}")


def step_together(
    optimizers: Sequence[Optimizer], losses: Sequence[torch.Tensor]
) -> list[dict[str, torch.Tensor]]:
    """Step several optimizers whose losses come out of one graph (a compiled update) with
    one backward pass of their sum into all their parameters.

    Exact only when no loss reaches another optimizer's parameters (the actor loss does not
    reach the critic's, the critic loss reads detached states): each parameter then gets the
    gradient of its own loss, as with one :meth:`Optimizer.step` per loss.
    """
    for loss in losses:
        _check_scalar(loss)
    for opt in optimizers:
        opt.opt.zero_grad(set_to_none=True)
    params = [p for opt in optimizers for p in opt.params]
    torch.stack(list(losses)).sum().backward(inputs=params)
    return [opt.apply(loss) for opt, loss in zip(optimizers, losses)]


@contextlib.contextmanager
def frozen_weights(module: nn.Module) -> Iterator[None]:
    """Inside, ``module``'s parameters do not require gradients (gradients still flow through
    the module to its inputs); afterwards the ones that did require them again."""
    params = [p for p in module.parameters() if p.requires_grad]
    for param in params:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param in params:
            param.requires_grad_(True)
