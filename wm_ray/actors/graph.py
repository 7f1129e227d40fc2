"""``ActorGraph``: a run's actors on Ray, started, named, placed and started again when they die.

The graph reserves one placement group (:mod:`wm_ray.actors.placement`) and starts the replay
shards, the weight store, the learner group (rank 0 publishes version 0 before any env step is
taken), the env workers and the eval workers, all named in the run's namespace
(``{prefix}env-worker-<i>``, ``replay-shard-<i>``, ``learner-<i>``, ``eval-worker-<i>``). The
coordinator (:mod:`wm_ray.actors.coordinator`) calls the ``*_died`` methods when a call fails:

- a dead env worker is started again under its name with fresh streams; the steps its shards
  had acknowledged from its last round are counted (nothing acknowledged is lost);
- a dead replay shard is started again on its chunk directory (the acknowledged steps reload)
  and the last checkpoint's shard state; workers and learners waiting on it look it up again
  by name and repeat their (idempotent) call;
- a dead learner takes the whole group down: all learners restart from the last checkpoint;
- a run resumed after its driver died counts the steps the shards acknowledged after the
  checkpoint it resumes from (they are on disk and reloaded).

More than :data:`MAX_RESTARTS` deaths of one kind end the run with the last error.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray.exceptions import RayActorError, RayTaskError

from wm_ray.actors.env_worker import remote_env_worker
from wm_ray.actors.eval_worker import remote_eval_worker
from wm_ray.actors.learner import remote_learner
from wm_ray.actors.placement import Placement, create_placement
from wm_ray.actors.replay_shard import remote_replay_shard
from wm_ray.actors.weights import remote_weight_store
from wm_ray.config import Config
from wm_ray.loops.schedule import RunCounters
from wm_ray.replay.dataset import env_spec
from wm_ray.rundir import checkpoint as ckpt
from wm_ray.rundir.paths import STAGING_ENV, shard_directory
from wm_ray.rundir.sync import RunStorage

logger = logging.getLogger(__name__)

MAX_RESTARTS = 20
"""Restarts of one actor kind before the run gives up (a crash loop is a bug, not bad luck)."""


class ActorGraph:
    """The actors of one run (see the module docstring).

    Args:
        config: the resolved run config.
        run_dir: the local run directory (a URI run's staging directory).
        storage: the remote of a URI run (shards then sync their own chunk files), or None.
        spaces: ``(obs_space, act_space)`` of one env.
        counters: the run's counters (restarts are counted into them).
        checkpoint: the checkpoint the run resumes from (its agent, learner and shard states),
            or None for a new run.
        prefix: the actor-name prefix.
    """

    def __init__(
        self,
        config: Config,
        run_dir: Path,
        storage: RunStorage | None,
        spaces: tuple[Any, Any],
        counters: RunCounters,
        checkpoint: Path | None,
        prefix: str = "",
    ) -> None:
        self.config, self.run_dir, self.storage = config, run_dir, storage
        self.spaces, self.counters, self.prefix = spaces, counters, prefix
        self.checkpoint = checkpoint
        self.state = ckpt.load_state(checkpoint) if checkpoint is not None else None
        res = config.resources
        self.placement: Placement = create_placement(res, name=f"{prefix}wm_ray")
        self.store: Any = None
        self.shards: list[Any] = []
        self.learners: list[Any] = []
        self.workers: list[Any] = [None] * res.env_workers
        self.streams: list[str] = [""] * res.env_workers
        self.worker_acked: list[int] = [0] * res.env_workers
        self.evaluators: list[Any] = []
        try:
            self._start()
        except BaseException:  # e.g. a checkpoint that does not fit: leave no actor behind
            self.close(timeout=5.0)
            raise

    def _start(self) -> None:
        res = self.config.resources
        self.store = remote_weight_store(self.config, self.prefix).remote()
        self.shards = [self._start_shard(i) for i in range(res.replay_shards)]
        ray.get([shard.ping.remote() for shard in self.shards])
        if self.state is not None:
            self._count_unrecorded()
        self.start_learners()
        for i in range(res.env_workers):
            self._start_worker(i)
        self.evaluators = [self._start_evaluator(i) for i in range(res.eval_workers)]
        ray.get([e.ping.remote() for e in self.evaluators])

    # -- starting actors -------------------------------------------------------------------------

    def _create(self, make: Any) -> Any:
        """Create a named actor, retrying while the dead predecessor still holds the name."""
        deadline = time.monotonic() + 30.0
        while True:
            try:
                return make()
            except ValueError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _start_shard(self, i: int) -> Any:
        args: tuple[str | None, ...] = (None,)
        if self.config.replay.persist and self.storage is not None:
            args = (None, self.storage.uri, os.environ.get(STAGING_ENV))
        elif self.config.replay.persist:
            args = (str(shard_directory(self.run_dir, i)),)
        opts = self.placement.options("replay-shard", i)
        shard = self._create(
            lambda: remote_replay_shard(self.config, i, self.prefix, **opts).remote(
                self.config, i, *args, preload_spec=env_spec(*self.spaces)
            )
        )
        if self.state is not None:
            shard.load_state_dict.remote(self.state["shards"][i])
        return shard

    def start_learners(self) -> None:
        """(Re)start the whole learner group, from the last checkpoint if there is one."""
        res = self.config.resources
        size = res.learners
        for old in self.learners:
            ray.kill(old)
        self.learners = [
            self._create(
                lambda rank=rank: remote_learner(
                    self.config, self.prefix, rank, **self.placement.options("learner", rank)
                ).remote(
                    self.config,
                    self.shards,
                    self.store if rank == 0 else None,
                    res.publish_every,
                    self.spaces,
                    True,
                    rank,
                    size,
                    self.prefix,
                )
            )
            for rank in range(size)
        ]
        if size > 1:
            address, port = ray.get(self.learners[0].group_address.remote())
            ray.get([learner.join_group.remote(address, port) for learner in self.learners])
        if self.checkpoint is not None and self.state is not None:
            agent = self.checkpoint / "agent"
            files = ray.put(ckpt.read_files(agent))
            ray.get([x.load_agent_files.remote(files, str(agent)) for x in self.learners])
            counters = self.state.get("learner", {"updates": 0, "version": -1})
            ray.get([learner.load_counters.remote(counters) for learner in self.learners])
        self.counters.weights_version = int(ray.get(self.learners[0].publish.remote()))

    def _start_worker(self, i: int) -> None:
        res = self.config.resources
        opts = self.placement.options("env-worker", i)
        worker = self._create(
            lambda: remote_env_worker(self.config, i, self.prefix, **opts).remote(
                self.config,
                i,
                self.shards,
                self.store,
                res.max_in_flight,
                self.prefix,
                res.pull_every,
            )
        )
        self.workers[i] = worker
        self.streams[i] = ray.get(worker.streams.remote())
        self.worker_acked[i] = 0

    def _start_evaluator(self, i: int) -> Any:
        opts = self.placement.options("eval-worker", i)
        return self._create(
            lambda: remote_eval_worker(self.config, i, self.prefix, **opts).remote(self.config, i)
        )

    def _count_unrecorded(self) -> None:
        """On resume: count the steps the shards acknowledged after the checkpoint.

        A driver that died after its last checkpoint leaves the chunks acknowledged since then
        on disk; the shards reload them (and their limiters count them as inserted), so the run's
        env steps count them too, as a dead env worker's last round is counted.
        """
        acked = sum(int(n) for n in self.call_shards("acknowledged"))
        extra = acked - self.counters.env_steps
        if extra > 0:
            logger.warning("%d steps acknowledged after the checkpoint are kept", extra)
            self.counters.env_steps += extra

    # -- deaths ----------------------------------------------------------------------------------

    def _restart(self, kind: str, index: int, error: BaseException) -> None:
        c = self.counters
        c.restarts[kind] += 1
        total = c.restarts[kind]
        logger.warning("%s-%d died (%s); restarting it (restart %d)", kind, index, error, total)
        if total > MAX_RESTARTS:
            raise RuntimeError(
                f"{kind} actors died {total} times (last: {kind}-{index}: {error}); giving up"
            ) from error

    def worker_died(self, i: int, error: BaseException) -> None:
        """Count what the dead worker's shards acknowledged, then start it again."""
        self._restart("env-worker", i, error)
        ray.kill(self.workers[i])
        acked = sum(self.call_shards("acknowledged_from", self.streams[i]))
        orphans = max(0, acked - self.worker_acked[i])
        self.counters.env_steps += orphans
        logger.warning("env-worker-%d: %d acknowledged steps of its last round kept", i, orphans)
        self._start_worker(i)

    def shard_died(self, i: int, error: BaseException) -> None:
        self._restart("replay-shard", i, error)
        ray.kill(self.shards[i])
        self.shards[i] = self._start_shard(i)
        if self.state is None:  # no checkpoint's counts to load: see ReplayShard.forget_samples
            self.shards[i].forget_samples.remote()
        ray.get(self.shards[i].ping.remote())

    def learners_died(self, error: BaseException) -> None:
        """Start the learner group again from the latest checkpoint (from scratch without one)."""
        self._restart("learner", 0, error)
        self.checkpoint = ckpt.latest_checkpoint(self.run_dir)
        self.state = ckpt.load_state(self.checkpoint) if self.checkpoint else None
        if self.checkpoint is None:
            logger.warning("no checkpoint yet: the restarted learners start from scratch")
        self.start_learners()

    def evaluators_died(self, error: BaseException) -> None:
        for i, evaluator in enumerate(self.evaluators):
            ray.kill(evaluator)
            self.evaluators[i] = self._start_evaluator(i)
        self._restart("eval-worker", 0, error)

    def evaluate(self, episodes: int, video: bool) -> tuple[int, list[Any]]:
        """Publish rank 0's weights and evaluate them: their version and the refs of the eval
        workers' ``evaluate`` calls, ``episodes`` split over them (the first records a video if
        asked)."""
        (version,) = self.ask_learner("publish")
        _, weights = ray.get(self.store.get.remote())
        shares = [len(part) for part in np.array_split(np.arange(episodes), len(self.evaluators))]
        return int(version), [
            evaluator.evaluate.remote(weights, share, video and j == 0)
            for j, (evaluator, share) in enumerate(zip(self.evaluators, shares, strict=True))
            if share > 0
        ]

    def checkpointed(self, path: Path, state: dict[str, Any]) -> None:
        """Restarts from now on start from checkpoint ``path`` (with run state ``state``)."""
        self.checkpoint, self.state = path, state

    def ask_learner(self, *methods: str) -> list[Any]:
        """The results of rank 0's ``methods`` (no arguments, issued together); a learner group
        that died meanwhile is started again from the last checkpoint and asked again."""
        while True:
            rank0 = self.learners[0]
            try:
                return list(ray.get([getattr(rank0, method).remote() for method in methods]))
            except RayActorError as err:
                if isinstance(err, RayTaskError):
                    raise
                self.learners_died(err)

    def call_shards(self, method: str, *args: Any) -> list[Any]:
        """Call ``method`` on every shard; a dead shard is restarted and asked again."""
        out = []
        for i in range(len(self.shards)):
            while True:
                try:
                    out.append(ray.get(getattr(self.shards[i], method).remote(*args)))
                    break
                except RayActorError as err:
                    if isinstance(err, RayTaskError):
                        raise
                    self.shard_died(i, err)
        return out

    # -- the end ---------------------------------------------------------------------------------

    def train_results(self, refs: list[Any]) -> list[Any]:
        """The learners' results, waited for while keeping the shards alive.

        A learner that waits on a dead replay shard needs it restarted (by this graph), so
        a plain ``ray.get`` here would deadlock until the group's collective timed out. A
        learner that died raises its ``RayActorError`` as soon as its ref is ready, and before
        the errors of its peers, whose collectives fail because it died ("connection closed by
        peer"); any other error is raised once every learner has answered.
        """
        while True:
            ready, pending = ray.wait(refs, num_returns=len(refs), timeout=1.0)
            errors = []
            for ref in ready:
                try:
                    ray.get(ref)
                except (RayActorError, RayTaskError) as err:
                    if not isinstance(err, RayTaskError):
                        raise  # a learner died: the caller restarts the group
                    errors.append(err)
            if not pending:
                if errors:
                    raise errors[0]
                return list(ray.get(refs))
            self.call_shards("stats")  # restarts a shard that died (see call_shards)

    def close(self, timeout: float) -> None:
        """Shut the actors down (workers drain their adds first) and release the placement."""
        for worker in self.workers:
            if worker is not None:
                try:
                    ray.get(worker.close.remote(), timeout=timeout)
                except Exception as err:
                    logger.debug("env worker close: %s", err)
        for learner in self.learners:
            try:
                ray.get(learner.close.remote(), timeout=10.0)
            except Exception as err:
                logger.debug("learner close: %s", err)
        for handle in [*self.workers, *self.learners, *self.evaluators, *self.shards, self.store]:
            if handle is not None:
                ray.kill(handle)
        self.placement.remove()


__all__ = ["MAX_RESTARTS", "ActorGraph"]
