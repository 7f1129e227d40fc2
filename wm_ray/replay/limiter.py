"""Sample:insert ratio limiter with Reverb's ``SampleToInsertRatio`` semantics, counted in steps.

Let ``I`` be the inserted steps (an insert of a chunk of n steps adds n), ``S`` the sampled steps
(a batch of B sequences of T steps adds B*T), ``r = samples_per_insert``, ``m = min_size`` and
``tol = tolerance``. The target is ``S = r * (I - m)``: the first ``m`` steps (the prefill) create
no sampling debt. With the *debt* ``D = r * (I - m) - S``:

- ``can_sample(n)``: False while ``I < m``; otherwise True iff ``D - n >= -tol`` (sampling may
  run ahead of the ratio by at most ``tol`` steps);
- ``can_insert(n)``: True while ``I < m`` (inserting never blocks before sampling may begin, so
  the two sides cannot deadlock on the prefill); otherwise True iff ``D + r * n <= tol``
  (sampling may lag behind the ratio by at most ``tol`` steps);
- ``r <= 0`` disables the ratio: inserting is always allowed, sampling whenever ``I >= m``.

Both sides can be refused at once only if ``2 * tol < n_sample + r * n_insert``; :meth:`check_sizes`
rejects such settings. The limiter only decides; callers wait (or report back-pressure) and then
call :meth:`on_insert` / :meth:`on_sample` for what they actually did.
"""

from __future__ import annotations

from typing import Any


class Limiter:
    """Keeps sampled steps near ``samples_per_insert`` times inserted steps (see module doc).

    Args:
        samples_per_insert: r, replayed steps per inserted step (DreamerV3's train ratio); <= 0
            disables the ratio.
        tolerance: how far (in sampled steps) sampling may run ahead of or behind the ratio.
        min_size: inserted steps before sampling may start.
    """

    def __init__(self, samples_per_insert: float, tolerance: float, min_size: int) -> None:
        if tolerance < 0:
            raise ValueError(f"limiter tolerance must be >= 0 steps, got {tolerance}")
        if min_size < 0:
            raise ValueError(f"limiter min_size must be >= 0 steps, got {min_size}")
        self.samples_per_insert = float(samples_per_insert)
        self.tolerance = float(tolerance)
        self.min_size = int(min_size)
        self.inserts = 0
        self.samples = 0

    @property
    def enabled(self) -> bool:
        """Whether the ratio is enforced (``samples_per_insert > 0``)."""
        return self.samples_per_insert > 0

    @property
    def debt(self) -> float:
        """D = r * (inserts - min_size) - samples: sampled steps owed to the ratio (< 0: ahead)."""
        return self.samples_per_insert * (self.inserts - self.min_size) - self.samples

    def can_insert(self, n: int = 1) -> bool:
        """Whether inserting ``n`` steps keeps sampling within ``tolerance`` of the ratio."""
        if self.inserts < self.min_size or not self.enabled:
            return True
        return self.debt + self.samples_per_insert * n <= self.tolerance

    def can_sample(self, n: int = 1) -> bool:
        """Whether sampling ``n`` steps is allowed (``min_size`` reached, not too far ahead)."""
        if self.inserts < self.min_size:
            return False
        if not self.enabled:
            return True
        return self.debt - n >= -self.tolerance

    def on_insert(self, n: int = 1) -> None:
        """Record ``n`` inserted steps."""
        self.inserts += int(n)

    def on_sample(self, n: int = 1) -> None:
        """Record ``n`` sampled steps."""
        self.samples += int(n)

    def check_sizes(self, insert_size: int, sample_size: int) -> None:
        """Raise ``ValueError`` if inserts of ``insert_size`` and samples of ``sample_size`` steps
        could both be refused at once (a deadlock): needs ``2 * tol >= sample + r * insert``."""
        if not self.enabled:
            return
        need = (sample_size + self.samples_per_insert * insert_size) / 2
        if self.tolerance < need:
            raise ValueError(
                f"replay tolerance {self.tolerance:g} is too small: with samples_per_insert "
                f"{self.samples_per_insert:g}, inserts of {insert_size} steps and samples of "
                f"{sample_size} steps, inserting and sampling could both be refused forever; "
                f"use tolerance >= {need:g}"
            )

    def stats(self) -> dict[str, float]:
        """Counters and the current debt, for logging."""
        return {
            "limiter_inserts": float(self.inserts),
            "limiter_samples": float(self.samples),
            "limiter_debt": float(self.debt),
        }

    def state_dict(self) -> dict[str, Any]:
        """The counters (JSON-able); the settings come from the config."""
        return {"inserts": self.inserts, "samples": self.samples}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the counters written by :meth:`state_dict`."""
        self.inserts = int(state["inserts"])
        self.samples = int(state["samples"])
