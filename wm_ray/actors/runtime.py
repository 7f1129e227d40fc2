"""Running a training job on the Ray runtime: connect or start Ray, coordinate, shut down.

``wm-ray train`` (and ``make run``) call :func:`train`. Without an address it starts an
embedded local Ray cluster (``ray.init(address="local")``) that lives as long as the command;
with ``resources.address`` (``--address auto``) or ``RAY_ADDRESS`` in the environment (set by
``ray job submit``) it joins that cluster, and the run's actors are then named with the run name
as a prefix so that several runs can share the cluster.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import ray

from wm_ray.actors.coordinator import Coordinator
from wm_ray.actors.placement import local_cpus
from wm_ray.config import Config
from wm_ray.rundir.open import (
    check_fresh_run_dir,
    resolve_resume,
    resolve_run_dir,
    starting_run,
)
from wm_ray.rundir.paths import run_name
from wm_ray.validate import validate_run

logger = logging.getLogger(__name__)


def cluster_address(config: Config) -> str | None:
    """The cluster to join: ``resources.address``, else ``RAY_ADDRESS``, else None (embedded)."""
    return config.resources.address or os.environ.get("RAY_ADDRESS") or None


def init_ray(config: Config) -> bool:
    """Connect to the configured cluster or start an embedded one; returns whether it started
    a connection this call (and so must shut it down)."""
    if ray.is_initialized():
        return False
    namespace = config.resources.namespace
    address = cluster_address(config)
    if not sys.stdout.isatty() or not sys.stderr.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # no ANSI colours in log files
    if address:
        ray.init(address=address, namespace=namespace, logging_level=logging.WARNING)
        logger.info("joined the Ray cluster at %s (namespace %s)", address, namespace)
        return True
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    quiet_ray()
    cpus = local_cpus(config.resources, os.cpu_count() or 1)
    ray.init(
        address="local",
        num_cpus=cpus,
        include_dashboard=False,
        namespace=namespace,
        logging_level=logging.WARNING,
    )
    logger.info("started an embedded local Ray cluster with %d CPUs", cpus)
    return True


def quiet_ray() -> None:
    """Silence what Ray says on every embedded start: the notice that token authentication is
    on (it stays on; only the message goes) and its INFO start-up lines."""
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
        logging.ERROR
    )


def train(
    config: Config,
    run_dir: str | Path,
    resume: bool = False,
    allow_config_change: bool = False,
    prefix: str | None = None,
) -> dict[str, Any]:
    """Train on the Ray runtime; returns the same summary as the single-process loop.

    Args:
        run_dir: the run directory: a path, or a filesystem URI (:mod:`wm_ray.rundir.sync`).
        prefix: actor-name prefix; None picks ``""`` for an embedded cluster and
            ``"<run name>."`` on a shared one.
    """
    local, storage = resolve_run_dir(run_dir)
    spaces: tuple[Any, Any] | None = validate_run(config)  # before Ray or anything on disk
    if storage is not None and not resume:
        storage.check_new_run()
    elif storage is None and not resume:
        check_fresh_run_dir(local)
    if resume:
        if storage is not None:
            storage.restore(local)  # the coordinator finds it up to date
        checked = config.env
        config = resolve_resume(config, local, allow_config_change)
        if config.env != checked:
            spaces = None  # the coordinator reads them from the run's env
    if prefix is None:
        prefix = f"{run_name(config)}." if cluster_address(config) else ""
    previous = signal.getsignal(signal.SIGTERM)
    started = init_ray(config)
    if threading.current_thread() is threading.main_thread():
        # ray.init installs a handler that exits at once; stop gracefully instead (the
        # coordinator finishes the rounds in flight and writes a final checkpoint).
        signal.signal(signal.SIGTERM, _terminate)
    try:
        with starting_run(local, resume or storage is not None):
            coordinator = Coordinator(config, run_dir, resume=resume, prefix=prefix, spaces=spaces)
        try:
            return coordinator.run()
        finally:
            coordinator.close()
    finally:
        if started:
            ray.shutdown()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # handled like Ctrl-C
