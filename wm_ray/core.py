"""Protocols only: the small interfaces that every room implements or consumes.

Read this file to see the whole system: an :class:`Agent` acts and learns with explicit,
carry-passing state; replay is written through :class:`ReplayWriter` and read through
:class:`ReplayReader`; weights flow from a :class:`WeightSource`; anything persistent is
:class:`Saveable`. Where these objects run (one process, or many Ray actors) is decided in
``wm_ray.loops`` and ``wm_ray.actors``, never here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

Carry = Any
Metrics = dict[str, float]
Weights = dict[str, Any]


@runtime_checkable
class Saveable(Protocol):
    """An object whose state round-trips through a directory."""

    def save(self, directory: Path) -> None: ...

    def load(self, directory: Path) -> None: ...


@runtime_checkable
class Agent(Saveable, Protocol):
    """A world-model agent. All state that changes per step is passed in and out explicitly.

    Built as ``Agent(obs_space, act_space, config, acting=False)`` by
    ``wm_ray.factory.create_model``; ``acting=True`` builds only what acting needs (the modules
    of :meth:`acting_weights`), and ``train`` then refuses. Every registered family implements
    this protocol and passes the conformance suite (``wm_ray.conformance``).
    """

    def init_policy(self, batch_size: int) -> Carry:
        """The recurrent state of ``batch_size`` fresh acting streams."""
        ...

    def policy(
        self, carry: Carry, obs: dict[str, np.ndarray], mode: Literal["explore", "eval"] = "explore"
    ) -> tuple[Carry, np.ndarray, dict[str, np.ndarray]]:
        """One batched acting step on ``(N, ...)`` obs; returns (carry, action (N, ...), outs).

        ``obs`` carries ``is_first`` so the agent resets the state of streams that restarted.
        """
        ...

    def init_train(self, batch_size: int) -> Carry:
        """The training state (e.g. replay-context carry) for batches of ``batch_size``."""
        ...

    def train(self, batch: dict[str, np.ndarray], state: Carry) -> tuple[Carry, Metrics]:
        """One update of every part from a ``(B, T, ...)`` batch."""
        ...

    def report(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Media and diagnostics, e.g. real-vs-imagined frame strips ``(T, H, W, C)``."""
        ...

    def acting_weights(self) -> Weights:
        """The subset of weights an env worker needs to act."""
        ...

    def load_acting_weights(self, weights: Weights) -> None: ...

    def random_state(self) -> Any:
        """The state of the agent's sampling generator (saved with checkpoints)."""
        ...

    def set_random_state(self, state: Any) -> None: ...


@runtime_checkable
class ReplayWriter(Protocol):
    def add_chunk(self, stream: str, index: int, chunk: dict[str, np.ndarray]) -> int:
        """Store consecutive steps ``(L, ...)`` of one stream; returns the steps acknowledged."""
        ...


@runtime_checkable
class ReplayReader(Protocol):
    def sample(self, batch_size: int, seq_len: int) -> dict[str, np.ndarray]:
        """A ``(B, T, ...)`` batch of sequences (see ``wm_ray.replay.sequences``)."""
        ...

    def stats(self) -> dict[str, float]: ...


@runtime_checkable
class WeightSource(Protocol):
    def latest(self) -> tuple[int, Weights]:
        """The newest (version, weights); versions increase monotonically."""
        ...
