"""Actor names and options, and re-resolving a named actor after the coordinator restarted it.

Every actor of a run is named ``f"{prefix}{kind}-{index}"`` in the run's namespace (for example
``replay-shard-0`` for the embedded default, ``myrun.replay-shard-0`` on a shared cluster). A
restarted actor gets the same name, so a holder of a stale handle finds the new one by name.

**How threads wait** (``resources.omp_wait``). By default the actors' OpenMP threads wait as
OpenMP does by default (spin briefly, then sleep): the learner's torch threads then pick up the
next parallel region at once, and the ``make run`` learner updates ~1.5x faster than with
``OMP_WAIT_POLICY=PASSIVE`` (``omp_wait=passive``), which the actors ran with before. Passive
waiting is the better choice where the run shares its cores with other busy processes (the
test suite's two workers, a second run): spinning threads then wait on each other, and one busy
process on a 2-core machine made a 300-step run take 11.2 minutes instead of 66 seconds.
``OMP_WAIT_POLICY`` set in the environment wins (docs/runtime.md, "Placement").
"""

from __future__ import annotations

import os
import time
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from wm_ray.config import Config

RESOLVE_TIMEOUT_S = 300.0
"""How long a caller waits for a dead actor's replacement to appear before giving up."""


def actor_name(prefix: str, kind: str, index: int | None = None) -> str:
    """``f"{prefix}{kind}-{index}"`` (or ``f"{prefix}{kind}"`` without an index)."""
    return f"{prefix}{kind}" if index is None else f"{prefix}{kind}-{index}"


def thread_env(config: Config) -> dict[str, str]:
    """Environment variables of every actor process for ``resources.omp_wait`` (see the module
    docstring); ``OMP_WAIT_POLICY`` from this process's environment wins."""
    if "OMP_WAIT_POLICY" in os.environ:
        return {"OMP_WAIT_POLICY": os.environ["OMP_WAIT_POLICY"]}
    return {"OMP_WAIT_POLICY": "PASSIVE"} if config.resources.omp_wait == "passive" else {}


def actor_options(
    config: Config, kind: str, index: int | None, prefix: str, **resources: Any
) -> dict[str, Any]:
    """The Ray options of one actor: its name, the run's namespace, the thread environment
    (:func:`thread_env`), task events per ``resources.task_events`` and ``resources``
    (``num_cpus``, ``num_gpus``)."""
    return {
        "name": actor_name(prefix, kind, index),
        "namespace": config.resources.namespace,
        "runtime_env": {"env_vars": thread_env(config)},
        "enable_task_events": config.resources.task_events,
        **resources,
    }


def resolve(name: str, namespace: str, timeout_s: float = RESOLVE_TIMEOUT_S) -> Any:
    """The live actor named ``name``: waits until one exists and answers ``ping``.

    Raises:
        TimeoutError: when no live actor of that name appears within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            handle = ray.get_actor(name, namespace=namespace)
            ray.get(handle.ping.remote(), timeout=10.0)
            return handle
        except (ValueError, RayActorError, GetTimeoutError):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"actor {name!r} in namespace {namespace!r} is dead and no replacement "
                    f"appeared within {timeout_s:.0f} s"
                ) from None
            time.sleep(0.2)
