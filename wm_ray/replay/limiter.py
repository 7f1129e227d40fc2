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

**The pacing rule of a run** is :class:`Pacer`: the same rule over the *sum* of every replay
(one :class:`Limiter` in the single-process loop, one per replay shard on the Ray runtime). The
single-process loop, the learners and the coordinator all call it: learners train the updates it
:meth:`~Pacer.owes`, the coordinator grants collection rounds it :meth:`~Pacer.admits`, and
:func:`pacing_tolerance` is the one tolerance formula.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wm_ray.config_io import ConfigError

if TYPE_CHECKING:
    from wm_ray.config import ReplayConfig


class ToleranceError(ConfigError):
    """A set ``replay.tolerance`` under which inserting and sampling could stall each other."""


def pacing_tolerance(replay: ReplayConfig, insert_steps: int, writers: int = 1) -> float:
    """The limiter tolerance of a run, in replayed steps (the one formula of every loop).

    Unset (``replay.tolerance: null``) it is one batch plus what every writer's largest insert
    owes: ``B*T + r * insert_steps * writers``, where ``insert_steps`` is the most steps one
    writer adds before the learner gets a turn (a round of ``chunk_len * num_envs``) and
    ``writers`` how many may do so at once (env workers). A set tolerance below
    ``B*T + r * insert_steps`` could stall both sides and is refused.

    Raises:
        ToleranceError: naming the setting and the least valid value.
    """
    batch = replay.batch_size * replay.seq_len
    spi = max(replay.samples_per_insert, 0.0)
    if replay.tolerance is None:
        return batch + spi * insert_steps * writers
    least = batch + spi * insert_steps
    if spi > 0 and replay.tolerance < least:
        raise ToleranceError(
            f"replay.tolerance {replay.tolerance:g} is too small: with batch "
            f"{replay.batch_size}x{replay.seq_len}, samples_per_insert {spi:g} and inserts of "
            f"{insert_steps} steps it needs >= {least:g}; leave it unset for the default"
        )
    return float(replay.tolerance)


class Pacer:
    """The sample:insert rule over all of a run's replay, counted in steps (see module doc).

    ``inserted`` and ``sampled`` are the sums over every replay (shard). With
    ``r = samples_per_insert``, ``m = min_size`` and ``n = batch_steps`` (B*T), the debt is
    ``D = r * (inserted - m) - sampled`` once ``m`` steps are in (0 before: the prefill owes
    nothing). Learners owe ``floor(D / n)`` updates; a writer may insert ``k`` more steps while
    ``r * (inserted + k - m) - sampled <= tolerance``. ``r <= 0`` disables the ratio: nothing is
    owed and every insert is admitted.

    Args:
        samples_per_insert: r (``replay.samples_per_insert``).
        min_size: m (``replay.min_size``).
        batch_steps: n, replayed steps per update (``B * T``).
        tolerance: from :func:`pacing_tolerance`.
    """

    def __init__(
        self, samples_per_insert: float, min_size: int, batch_steps: int, tolerance: float
    ) -> None:
        if batch_steps < 1:
            raise ValueError(f"batch_steps must be >= 1 replayed steps, got {batch_steps}")
        self.samples_per_insert = float(samples_per_insert)
        self.min_size = int(min_size)
        self.batch_steps = int(batch_steps)
        self.tolerance = float(tolerance)

    @classmethod
    def of(cls, replay: ReplayConfig, insert_steps: int, writers: int = 1) -> Pacer:
        """The pacer of a ``replay`` section (tolerance from :func:`pacing_tolerance`)."""
        tolerance = pacing_tolerance(replay, insert_steps, writers)
        batch = replay.batch_size * replay.seq_len
        return cls(replay.samples_per_insert, replay.min_size, batch, tolerance)

    def debt(self, inserted: float, sampled: float) -> float:
        """Replayed steps owed to the ratio (< 0: sampling is ahead); 0 during the prefill."""
        if inserted < self.min_size or self.samples_per_insert <= 0:
            return 0.0
        return self.samples_per_insert * (inserted - self.min_size) - sampled

    def owed(self, inserted: float, sampled: float) -> int:
        """Updates the learners owe now (each replays ``batch_steps``)."""
        return max(0, int(self.debt(inserted, sampled) // self.batch_steps))

    def admits(self, inserted: float, steps: int, sampled: float) -> bool:
        """Whether ``steps`` more inserted steps keep the debt within the tolerance.

        ``inserted`` counts what is stored plus what is already on its way (granted rounds).
        """
        if inserted < self.min_size or self.samples_per_insert <= 0:
            return True
        projected = self.samples_per_insert * (inserted + steps - self.min_size) - sampled
        return projected <= self.tolerance


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
