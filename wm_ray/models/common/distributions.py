"""Distributions of DreamerV3 (Hafner et al. 2023): unimix categoricals, latents, actions, flags.

All are light objects built from network outputs each step (no ``torch.distributions``
validation overhead); all math runs in float32.

- :class:`OneHotCategorical`: a categorical over the last axis whose probabilities mix in
  ``unimix`` (1%) of the uniform distribution, so no probability drops below ``unimix / K`` and
  KL terms stay bounded; samples are one-hot with straight-through gradients.
- :class:`CategoricalLatent`: ``G`` independent categoricals of ``C`` classes (the 32x32 RSSM
  latent); entropies, log-probabilities and KLs are summed over groups.
- :class:`BoundedNormal`: the continuous action distribution. DreamerV3 uses a Normal with mean
  ``tanh(m)`` and std ``(maxstd - minstd) * sigmoid(s + 2) + minstd`` (0.1 and 1.0): no tanh
  squashing of samples (which would need a Jacobian term); samples are left unbounded for the
  policy-gradient and imagination math, and clipped to [-1, 1] only where they reach an env.
- :class:`BernoulliSafe`: the continue head; log-probabilities from logits, stable everywhere.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from wm_ray.models.common.noise import Source, rand, randn


def _straight_through(hard: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """``hard`` in the forward pass, the gradient of ``probs`` in the backward pass (exactly)."""
    return hard + (probs - probs.detach())


def sample_index(probs: torch.Tensor, generator: Source = None) -> torch.Tensor:
    """Class indices ``(...)`` (int64) drawn from ``probs (..., K)`` (unnormalized is fine) by
    inverse CDF: one uniform number per row, where ``torch.multinomial`` draws K. Unlike
    ``torch.multinomial`` it never raises on NaN or inf probabilities (a diverging model): it
    returns some class, the losses of that update turn non-finite, and the update is skipped and
    counted (``counters/nonfinite_updates``) instead of the run dying inside torch."""
    detached = probs.detach()
    return inverse_cdf(detached, rand((*probs.shape[:-1], 1), detached, generator))


def inverse_cdf(probs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Class indices ``(...)`` of ``probs (..., K)`` (unnormalized is fine) at the given
    ``uniform (..., 1)`` numbers in [0, 1): the draw of :func:`sample_index` with its numbers
    given (a captured graph's samplers take theirs as inputs)."""
    cdf = probs.cumsum(-1)
    index = (cdf < uniform * cdf[..., -1:]).sum(-1)
    return index.clamp(max=probs.shape[-1] - 1)


class OneHotCategorical:
    """A unimix categorical over the last axis of ``logits (..., K)``.

    Args:
        logits: ``(..., K)`` unnormalized log-probabilities.
        unimix: weight of the uniform distribution mixed into the softmax (0 disables).
    """

    def __init__(self, logits: torch.Tensor, unimix: float = 0.01) -> None:
        if not 0.0 <= unimix < 1.0:
            raise ValueError(f"unimix must be in [0, 1), got {unimix}")
        self._raw = logits.float()
        self.unimix = unimix
        self.classes = logits.shape[-1]
        self._probs: torch.Tensor | None = None
        self._logits: torch.Tensor | None = None

    # Computed on first use and kept (plain attributes: functools.cached_property takes a
    # lock that torch.compile cannot trace).
    @property
    def probs(self) -> torch.Tensor:
        """``(..., K)`` probabilities after unimix (computed on first use)."""
        if self._probs is None:
            probs = torch.softmax(self._raw, -1)
            if self.unimix > 0.0:
                probs = (1.0 - self.unimix) * probs + self.unimix / self.classes
            self._probs = probs
        return self._probs

    @property
    def logits(self) -> torch.Tensor:
        """``(..., K)`` normalized log-probabilities (computed on first use: sampling needs
        only :attr:`probs`)."""
        if self._logits is None:
            if self.unimix > 0.0:
                self._logits = torch.log(self.probs)
            else:
                self._logits = torch.log_softmax(self._raw, -1)
        return self._logits

    def sample(self, generator: Source = None) -> torch.Tensor:
        """A one-hot sample ``(..., K)``; gradients flow to the probabilities (straight-through)."""
        index = sample_index(self.probs.detach(), generator)
        return _straight_through(F.one_hot(index, self.classes).to(self.probs), self.probs)

    def mode(self) -> torch.Tensor:
        """The one-hot argmax ``(..., K)``, with straight-through gradients."""
        index = self.probs.argmax(-1)
        return _straight_through(F.one_hot(index, self.classes).to(self.probs), self.probs)

    def log_prob(self, onehot: torch.Tensor) -> torch.Tensor:
        """``(...)``: the log-probability of one-hot (or soft) ``onehot (..., K)``."""
        return (onehot * self.logits).sum(-1)

    def entropy(self) -> torch.Tensor:
        """``(...)``: ``-sum_k p_k log p_k``."""
        return -(self.probs * self.logits).sum(-1)

    def kl(self, other: OneHotCategorical) -> torch.Tensor:
        """``(...)``: ``KL(self || other)`` over the last axis."""
        return categorical_kl(self, other)


def categorical_kl(p: OneHotCategorical, q: OneHotCategorical) -> torch.Tensor:
    """``KL(p || q)`` of two categoricals over their last axis; shape ``(...)``, always >= 0."""
    return (p.probs * (p.logits - q.logits)).sum(-1)


class CategoricalLatent:
    """``G`` independent unimix categoricals of ``C`` classes, e.g. the 32x32 RSSM latent.

    Args:
        logits: ``(..., G, C)``; use :meth:`from_flat` for ``(..., G * C)`` network outputs.
        unimix: uniform mixing weight per group.
    """

    def __init__(self, logits: torch.Tensor, unimix: float = 0.01) -> None:
        if logits.dim() < 2:
            raise ValueError(f"latent logits need shape (..., G, C), got {tuple(logits.shape)}")
        self.dist = OneHotCategorical(logits, unimix)
        self.groups, self.classes = logits.shape[-2], logits.shape[-1]

    @classmethod
    def from_flat(
        cls, logits: torch.Tensor, classes: int, unimix: float = 0.01
    ) -> CategoricalLatent:
        """Build from ``(..., G * C)`` logits."""
        if logits.shape[-1] % classes:
            raise ValueError(f"last axis {logits.shape[-1]} is not a multiple of {classes=}")
        return cls(logits.unflatten(-1, (logits.shape[-1] // classes, classes)), unimix)

    @property
    def probs(self) -> torch.Tensor:
        """``(..., G, C)`` probabilities (after unimix)."""
        return self.dist.probs

    def sample(self, generator: Source = None) -> torch.Tensor:
        """A straight-through one-hot sample ``(..., G, C)``; flatten it with ``.flatten(-2)``."""
        return self.dist.sample(generator)

    def mode(self) -> torch.Tensor:
        """The straight-through one-hot argmax of every group, ``(..., G, C)``."""
        return self.dist.mode()

    def log_prob(self, onehot: torch.Tensor) -> torch.Tensor:
        """``(...)``: summed over groups."""
        return self.dist.log_prob(onehot).sum(-1)

    def entropy(self) -> torch.Tensor:
        """``(...)``: summed over groups."""
        return self.dist.entropy().sum(-1)

    def kl(self, other: CategoricalLatent) -> torch.Tensor:
        """``(...)``: ``KL(self || other)`` summed over groups (DreamerV3 dyn/rep losses)."""
        return categorical_kl(self.dist, other.dist).sum(-1)


class BoundedNormal:
    """DreamerV3's continuous action distribution: independent Normals over the last axis.

    Args:
        mean: ``(..., A)`` raw mean outputs; the distribution mean is ``tanh(mean)``.
        std: ``(..., A)`` raw std outputs, mapped into ``[minstd, maxstd]`` by a shifted sigmoid.
        minstd: lower std bound (0.1).
        maxstd: upper std bound (1.0).
    """

    def __init__(
        self, mean: torch.Tensor, std: torch.Tensor, minstd: float = 0.1, maxstd: float = 1.0
    ) -> None:
        if not 0.0 < minstd <= maxstd:
            raise ValueError(f"need 0 < minstd <= maxstd, got {minstd=}, {maxstd=}")
        self.loc = torch.tanh(mean.float())
        self.scale = (maxstd - minstd) * torch.sigmoid(std.float() + 2.0) + minstd

    def mean(self) -> torch.Tensor:
        """``(..., A)`` in (-1, 1)."""
        return self.loc

    def mode(self) -> torch.Tensor:
        """``(..., A)``: the mean (the eval-mode action)."""
        return self.loc

    def sample(self, generator: Source = None, clip: bool = False) -> torch.Tensor:
        """A reparameterized sample ``(..., A)``; ``clip=True`` clips it into [-1, 1] for an env."""
        noise = randn(tuple(self.loc.shape), self.loc, generator)
        action = self.loc + self.scale * noise
        return action.clamp(-1.0, 1.0) if clip else action

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        """``(...)``: the Normal log-density of ``action (..., A)``, summed over action dims."""
        z = (action - self.loc) / self.scale
        return (-0.5 * z.square() - self.scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)

    def entropy(self) -> torch.Tensor:
        """``(...)``: summed over action dims."""
        return (0.5 + 0.5 * math.log(2 * math.pi) + self.scale.log()).sum(-1)


class BernoulliSafe:
    """A Bernoulli from logits ``(...)``, e.g. the continue head (1 = the episode continues)."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits.float()

    def mean(self) -> torch.Tensor:
        """``(...)``: the probability of 1."""
        return torch.sigmoid(self.logits)

    def mode(self) -> torch.Tensor:
        """``(...)``: 1.0 where the probability exceeds 0.5, else 0.0."""
        return (self.logits > 0).float()

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(...)`` float samples in {0, 1}."""
        return torch.bernoulli(self.mean().detach(), generator=generator)

    def log_prob(self, target: torch.Tensor) -> torch.Tensor:
        """``(...)``: ``log p(target)`` for targets in [0, 1], stable for any logit."""
        return -F.binary_cross_entropy_with_logits(
            self.logits, target.to(self.logits), reduction="none"
        )

    def entropy(self) -> torch.Tensor:
        """``(...)``."""
        p = self.mean()
        return F.binary_cross_entropy_with_logits(self.logits, p, reduction="none")
