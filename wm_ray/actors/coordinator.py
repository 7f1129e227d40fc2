"""``Coordinator``: builds a run's actor graph on Ray, keeps it alive and paced, and reports.

The coordinator lives in the driver process (``wm-ray train``, or the entrypoint of a
``ray job submit``). It reserves one placement group (:mod:`wm_ray.actors.placement`), starts
the replay shards, the weight store, the learner group (rank 0 publishes version 0 before any
env step is taken), the env workers and the eval workers, all named in the run's namespace
(``{prefix}env-worker-<i>``, ``replay-shard-<i>``, ``learner-<i>``, ``eval-worker-<i>``), and then
loops:

- **Pacing (the limiter, counted in steps).** Env workers collect in rounds of
  ``replay.chunk_len * env.num_envs`` steps (one chunk per env). A round is granted only while
  the replay is still below ``replay.min_size`` or while granting it keeps the debt
  ``samples_per_insert * (inserts + granted - min_size) - sampled`` within the tolerance, so
  sampling never lags the train ratio by more than that. Learners train only what the limiters
  owe (:mod:`wm_ray.actors.learner`), so sampling never runs ahead. The tolerance defaults to
  ``B*T + samples_per_insert * round * env_workers`` (every worker may have one round in
  flight); a tolerance below ``B*T + samples_per_insert * round`` could stall both sides and is
  refused.
- **Health.** Every call the coordinator makes doubles as a health check. A dead env worker is
  started again under its name with fresh streams; the steps its shards had acknowledged are
  counted (nothing acknowledged is lost). A dead replay shard is started again on its chunk
  directory (the acknowledged steps reload) and the last checkpoint's limiter state; workers
  and learners that were waiting on it look it up again by name and repeat their call. A dead
  learner takes the whole group down: all learners restart from the last checkpoint.
- **Checkpoints and evaluation.** Every ``run.checkpoint_every`` and every ``eval.every`` env
  steps the coordinator stops granting rounds, waits for the rounds in flight (so the
  checkpoint's counters equal the shards' acknowledged steps), and writes a whole-run
  checkpoint: rank 0's agent, counters, every shard's limiter state and manifest. The agent's
  files come from the learner as bytes (``Learner.agent_files``) and go back the same way on a
  restart (``Learner.load_agent_files``), so only the coordinator's process writes the run
  directory. An evaluation then runs on the eval workers with exactly the checkpointed weights
  while training goes on; a new best mean return copies that checkpoint to ``checkpoints/best``.
- **Storage.** A run directory given as a filesystem URI (``s3://bucket/run``,
  :mod:`wm_ray.rundir.storage`) is worked on in the coordinator's local staging directory and synced
  at the start, at every checkpoint and at the end; with ``replay.persist`` every shard keeps
  its chunk files in its own node's staging directory and uploads them when the coordinator
  asks it (:meth:`~wm_ray.actors.replay_shard.ReplayShard.sync_storage`), before each
  checkpoint records the shards' states. No filesystem needs to be shared between nodes then.
- **Metrics.** The JSONL / TensorBoard / progress outputs of the single-process loop, plus
  ``counters/env_steps``, ``counters/acked_steps``, ``counters/restarts/<kind>``,
  ``weights/version``, ``weights/lag``, ``fps/env``, ``fps/train`` and ``replay/ratio``.

Ctrl-C or SIGTERM (raised as ``KeyboardInterrupt`` by the CLI) lets the rounds in flight finish,
writes a final checkpoint and shuts the actors down.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray.exceptions import RayActorError, RayTaskError

from wm_ray.actors.env_worker import remote_env_worker
from wm_ray.actors.eval_worker import remote_eval_worker
from wm_ray.actors.learner import remote_learner
from wm_ray.actors.placement import KINDS, Placement, create_placement
from wm_ray.actors.replay_shard import remote_replay_shard
from wm_ray.actors.weights import remote_weight_store
from wm_ray.config import Config
from wm_ray.config_io import ConfigError, save_config, to_yaml
from wm_ray.loops.setup import make_vector_env
from wm_ray.loops.train import Counters, run_summary
from wm_ray.media import plot_curve, write_video
from wm_ray.metrics import Mean, MetricsLogger, Progress, read_jsonl
from wm_ray.rundir import checkpoint as ckpt
from wm_ray.rundir.paths import STAGING_ENV, shard_directory
from wm_ray.rundir.storage import resolve_run_dir

logger = logging.getLogger(__name__)

UPDATES_PER_CALL = 8
"""Learner updates per ``train`` call: the learner reports (metrics, version) this often."""
MAX_RESTARTS = 20
"""Restarts of one actor kind before the run gives up (a crash loop is a bug, not bad luck)."""
DRAIN_TIMEOUT_S = 60.0
"""How long shutdown waits for rounds in flight."""


@dataclass
class RunCounters(Counters):
    """The single-process loop's counters plus the runtime's own (a resumed run continues)."""

    weights_version: int = -1
    restarts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))


def round_steps(config: Config) -> int:
    """Env steps of one collection round: one chunk per env of a worker's vector env."""
    return config.replay.chunk_len * config.env.num_envs


def runtime_tolerance(config: Config) -> float:
    """The limiter tolerance of the Ray runtime (see the module doc); validates a set one."""
    replay = config.replay
    batch = replay.batch_size * replay.seq_len
    spi = max(replay.samples_per_insert, 0.0)
    rnd = round_steps(config)
    if replay.tolerance is None:
        return batch + spi * rnd * config.resources.env_workers
    least = batch + spi * rnd
    if spi > 0 and replay.tolerance < least:
        raise ConfigError(
            f"replay.tolerance {replay.tolerance:g} is too small for the Ray runtime: with "
            f"batch {replay.batch_size}x{replay.seq_len}, samples_per_insert {spi:g} and rounds of "
            f"{rnd} steps (chunk_len x num_envs) it needs >= {least:g}; leave it unset for the "
            "default"
        )
    return float(replay.tolerance)


class Coordinator:
    """One distributed run: start with the constructor, :meth:`run`, then :meth:`close`.

    Args:
        config: the resolved run config.
        run_dir: the run directory: a path (with ``replay.persist`` every replay shard's node
            must reach it, the chunk files live there) or a filesystem URI (worked on in a
            local staging directory and synced; replay shards sync their chunk files
            themselves, into the staging root given by ``$WM_RAY_STAGING`` of this process, or
            their node's default).
        resume: continue from the latest checkpoint in ``run_dir``.
        prefix: actor-name prefix (empty for an embedded cluster; the run name plus a dot when
            several runs share a cluster).
    """

    def __init__(
        self, config: Config, run_dir: str | Path, resume: bool = False, prefix: str = ""
    ) -> None:
        self.config, self.prefix = config, prefix
        self.location = str(run_dir)
        self.run_dir, self.storage = resolve_run_dir(run_dir)
        res, replay = config.resources, config.replay
        self.round = round_steps(config)
        self.tolerance = runtime_tolerance(config)
        self.batch_steps = replay.batch_size * replay.seq_len
        if self.storage is not None:
            self.storage.prepare(self.run_dir, resume=resume)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, self.run_dir)
        if self.storage is not None:
            self.storage.mirror(self.run_dir)
        self.counters = RunCounters()
        self.state: dict[str, Any] | None = None
        self.checkpoint: Path | None = None
        if resume:
            self.checkpoint = ckpt.latest_checkpoint(self.run_dir)
            if self.checkpoint is None:
                raise ConfigError(f"--resume: {self.location} has no checkpoint to resume from")
            self.state = ckpt.load_state(self.checkpoint)
            if "shards" not in self.state:
                raise ConfigError(
                    f"{self.checkpoint} was written by the single-process loop; resume it with "
                    "`wm-ray train --single-process --resume`"
                )
            saved = dict(self.state["counters"])
            restarts = {**dict.fromkeys(KINDS, 0), **saved.pop("restarts", {})}
            self.counters = RunCounters(**saved, restarts=restarts)
        probe = make_vector_env(config.env, seed=config.run.seed, num_envs=1)
        self.spaces = (probe.obs_space, probe.act_space)
        self.is_image = "image" in probe.obs_space.spaces
        probe.close()
        self.placement: Placement = create_placement(res, name=f"{prefix}wm_ray")
        self.store = remote_weight_store(config, prefix).remote()
        self.shards: list[Any] = [self._start_shard(i) for i in range(res.replay_shards)]
        ray.get([shard.ping.remote() for shard in self.shards])
        self.learners: list[Any] = []
        self._start_learners()
        self.workers: list[Any] = [None] * res.env_workers
        self.streams: list[str] = [""] * res.env_workers
        self.worker_acked: list[int] = [0] * res.env_workers
        for i in range(res.env_workers):
            self._start_worker(i)
        self.evaluators = [self._start_evaluator(i) for i in range(res.eval_workers)]
        ray.get([e.ping.remote() for e in self.evaluators])
        self.logger = MetricsLogger(self.run_dir, config.logging.jsonl, config.logging.tensorboard)
        self.collects: dict[Any, tuple[int, int]] = {}
        self.train_refs: list[Any] | None = None
        self.train_issued_at = 0.0
        self.learner_idle_at = -1.0
        self.evaluation: tuple[list[Any], int, Path] | None = None
        self.stats: list[dict[str, float]] = [{} for _ in self.shards]
        self.means = Mean()
        self.returns: list[float] = []
        self.lengths: list[int] = []
        self.lags: list[float] = []
        self.env_restarts = 0

    # -- starting and restarting actors ------------------------------------------------------

    def _restart(self, kind: str, index: int, error: BaseException) -> None:
        c = self.counters
        c.restarts[kind] += 1
        total = c.restarts[kind]
        logger.warning("%s-%d died (%s); restarting it (restart %d)", kind, index, error, total)
        if total > MAX_RESTARTS:
            raise RuntimeError(
                f"{kind} actors died {total} times (last: {kind}-{index}: {error}); giving up"
            ) from error

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
                self.config, i, *args
            )
        )
        if self.state is not None and i < len(self.state.get("shards", [])):
            shard.load_state_dict.remote(self.state["shards"][i])
        return shard

    def _start_learners(self) -> None:
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
            files = ray.put(ckpt.read_files(self.checkpoint / "agent"))
            ray.get([learner.load_agent_files.remote(files) for learner in self.learners])
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

    def _worker_died(self, i: int, error: BaseException) -> None:
        """Count what the dead worker's shards acknowledged, then start it again."""
        self._restart("env-worker", i, error)
        ray.kill(self.workers[i])
        acked = sum(self._call_shards("acknowledged_from", self.streams[i]))
        orphans = max(0, acked - self.worker_acked[i])
        self.counters.env_steps += orphans
        logger.warning("env-worker-%d: %d acknowledged steps of its last round kept", i, orphans)
        self._start_worker(i)

    def _shard_died(self, i: int, error: BaseException) -> None:
        self._restart("replay-shard", i, error)
        ray.kill(self.shards[i])
        self.shards[i] = self._start_shard(i)
        ray.get(self.shards[i].ping.remote())

    def _learners_died(self, error: BaseException) -> None:
        self._restart("learner", 0, error)
        self.checkpoint = ckpt.latest_checkpoint(self.run_dir)
        self.state = ckpt.load_state(self.checkpoint) if self.checkpoint else None
        if self.checkpoint is None:
            logger.warning("no checkpoint yet: the restarted learners start from scratch")
        self._start_learners()
        self.train_refs = None

    def _call_shards(self, method: str, *args: Any) -> list[Any]:
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
                    self._shard_died(i, err)
        return out

    # -- pacing ------------------------------------------------------------------------------

    def _inserted(self) -> float:
        return sum(s.get("limiter_inserts", 0.0) for s in self.stats)

    def _sampled(self) -> float:
        known = self.counters.updates * self.batch_steps
        return max(sum(s.get("limiter_samples", 0.0) for s in self.stats), float(known))

    def _may_grant(self, steps: int) -> bool:
        replay = self.config.replay
        granted = sum(n for _, n in self.collects.values())
        projected = self._inserted() + granted
        if projected < replay.min_size or replay.samples_per_insert <= 0:
            return True
        debt = replay.samples_per_insert * (projected + steps - replay.min_size) - self._sampled()
        return debt <= self.tolerance

    def _grant(self) -> None:
        busy = {i for i, _ in self.collects.values()}
        for i, worker in enumerate(self.workers):
            granted = sum(n for _, n in self.collects.values())
            remaining = self.config.run.steps - self.counters.env_steps - granted
            if remaining <= 0:
                return
            if i in busy:
                continue
            steps = min(self.round, remaining)
            if not self._may_grant(steps):
                return
            self.collects[worker.collect.remote(steps)] = (i, steps)

    def _train(self) -> None:
        if self.train_refs is not None or self._inserted() <= self.learner_idle_at:
            return
        self.train_issued_at = self._inserted()
        self.train_refs = [learner.train.remote(UPDATES_PER_CALL) for learner in self.learners]

    # -- results -----------------------------------------------------------------------------

    def _on_collect(self, ref: Any) -> int:
        i, _ = self.collects.pop(ref)
        try:
            result = ray.get(ref)
        except RayActorError as err:  # the worker died, or its call failed: start it again
            self._worker_died(i, err)
            return 0
        c = self.counters
        latest = int(ray.get(self.store.latest_version.remote()))
        c.env_steps += result["acked_steps"]
        self.worker_acked[i] += result["acked_steps"]
        self.env_restarts = max(self.env_restarts, int(result["restarts"]))
        for episode in result["episodes"]:
            c.episodes += 1
            self.returns.append(float(episode["return"]))
            self.lengths.append(int(episode["length"]))
            self.lags.append(float(latest - episode["weights_version"]))
        return int(result["acked_steps"])

    def _on_train(self) -> None:
        refs, self.train_refs = self.train_refs or [], None
        try:
            results = ray.get(refs)
        except RayActorError as err:
            self._learners_died(err)
            return
        head = results[0]
        self.counters.updates += int(head["updates"])
        self.counters.weights_version = max(self.counters.weights_version, int(head["version"]))
        if head["metrics"]:
            self.means.add(head["metrics"])
        self.learner_idle_at = self.train_issued_at if head["updates"] == 0 else -1.0

    def _refresh_stats(self) -> None:
        self.stats = self._call_shards("stats")

    # -- checkpoints and evaluation ----------------------------------------------------------

    def save(self, tag: str | None = None) -> Path:
        """Write a whole-run checkpoint (rank 0's agent, counters, shard states) and sync it.

        With a storage URI and ``replay.persist`` the shards upload their new chunk files
        first, so the remote holds every chunk the checkpoint's shard states count.
        """
        if self.train_refs is not None:
            self._on_train()  # the learner's agent is saved between updates
        if self.storage is not None and self.config.replay.persist:
            self._call_shards("sync_storage")
        learner = self.learners[0]
        learner_counters = ray.get(learner.counters.remote())
        state = {
            "counters": dataclasses.asdict(self.counters),
            "learner": learner_counters,
            "shards": self._call_shards("state_dict"),
            "shard_manifests": self._call_shards("manifest"),
            "streams": list(self.streams),
        }
        path = ckpt.save_checkpoint(
            self.run_dir,
            self.counters.env_steps,
            lambda directory: ckpt.write_files(directory, ray.get(learner.agent_files.remote())),
            state,
            to_yaml(self.config),
            tag=tag,
        )
        self.checkpoint, self.state = path, state
        self.sync()
        return path

    def sync(self) -> None:
        """Upload what changed in the run directory to its storage (no-op for a local path):
        the mirrored files, then the checkpoints (``meta.json`` last, then ``latest``)."""
        if self.storage is not None:
            self.storage.sync_run(self.run_dir)

    def _start_eval(self, path: Path, video: bool = False) -> None:
        """Evaluate the weights just checkpointed at ``path`` on the eval workers."""
        version = int(ray.get(self.learners[0].publish.remote()))
        self.counters.weights_version = max(self.counters.weights_version, version)
        _, weights = ray.get(self.store.get.remote())
        episodes = self.config.eval.episodes
        shares = [len(part) for part in np.array_split(np.arange(episodes), len(self.evaluators))]
        refs = [
            evaluator.evaluate.remote(weights, share, video and j == 0)
            for j, (evaluator, share) in enumerate(zip(self.evaluators, shares, strict=True))
            if share > 0
        ]
        self.evaluation = (refs, self.counters.env_steps, path)

    def _finish_eval(self) -> dict[str, Any]:
        assert self.evaluation is not None
        refs, step, path = self.evaluation
        self.evaluation = None
        try:
            parts = ray.get(refs)
        except RayActorError as err:
            for i, evaluator in enumerate(self.evaluators):
                ray.kill(evaluator)
                self.evaluators[i] = self._start_evaluator(i)
            self._restart("eval-worker", 0, err)
            return {}
        returns = [r for part in parts for r in part["returns"]]
        lengths = [part["eval/length"] * part["eval/episodes"] for part in parts]
        c = self.counters
        result: dict[str, Any] = {
            "eval/return": float(np.mean(returns)),
            "eval/length": float(sum(lengths) / len(returns)),
            "eval/episodes": len(returns),
            "returns": returns,
        }
        c.evals += 1
        c.last_eval_return, c.last_eval_step = result["eval/return"], step
        if c.best_eval_return is None or result["eval/return"] > c.best_eval_return:
            c.best_eval_return, c.best_eval_step = result["eval/return"], step
            try:
                ckpt.tag_checkpoint(path, "best")
            except (ckpt.CheckpointError, OSError) as err:
                logger.warning("could not keep %s as the best checkpoint: %s", path, err)
        result["eval/best_return"] = c.best_eval_return
        frames = next((part["frames"] for part in parts if "frames" in part), None)
        if frames is not None:
            write_video(frames, self.run_dir / "videos" / f"eval-{step:09d}.mp4")
        return result

    # -- the loop ----------------------------------------------------------------------------

    def _wait(self, timeout: float) -> list[Any]:
        refs = list(self.collects) + (self.train_refs or [])
        if self.evaluation is not None:
            refs += self.evaluation[0]
        if not refs:
            time.sleep(min(timeout, 0.05))
            return []
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        return ready

    def run(self) -> dict[str, Any]:
        """Train to ``run.steps`` env steps; returns the same summary as the reference loop."""
        cfg, c = self.config, self.counters
        bar = Progress(cfg.run.steps, enabled=cfg.logging.progress)
        start = time.perf_counter()
        offset = c.seconds
        window = (time.perf_counter(), c.env_steps, c.updates)
        next_log = c.env_steps + cfg.logging.every
        evaluating = bool(cfg.eval.every and self.evaluators and cfg.eval.episodes)
        next_eval = c.env_steps + cfg.eval.every if evaluating else None
        next_ckpt = c.env_steps + cfg.run.checkpoint_every if cfg.run.checkpoint_every else None
        try:
            while True:
                self._refresh_stats()
                eval_due = next_eval is not None and c.env_steps >= next_eval
                ckpt_due = next_ckpt is not None and c.env_steps >= next_ckpt
                quiesce = (eval_due and self.evaluation is None) or ckpt_due
                collecting = c.env_steps < cfg.run.steps
                if quiesce and not self.collects:
                    c.seconds = offset + time.perf_counter() - start
                    path = self.save()
                    if ckpt_due:
                        next_ckpt = c.env_steps + cfg.run.checkpoint_every
                    if eval_due and next_eval is not None:
                        self._start_eval(path, video=cfg.eval.video and self.is_image)
                        next_eval = c.env_steps + cfg.eval.every
                    continue
                if not quiesce and collecting:
                    self._grant()
                self._train()
                if not collecting and not self.collects and self.train_refs is None:
                    break  # every step is in and the learners owe nothing more
                record: dict[str, Any] = {}
                for ref in self._wait(timeout=1.0):
                    if ref in self.collects:
                        self._on_collect(ref)
                    elif self.train_refs is not None and ref in self.train_refs:
                        self._on_train()
                    elif self.evaluation is not None and ref in self.evaluation[0]:
                        result = self._finish_eval()  # waits for the other eval workers
                        record.update({k: v for k, v in result.items() if "/" in k})
                if c.env_steps >= next_log or record:
                    now = time.perf_counter()
                    c.seconds = offset + now - start
                    record.update(self._log_record(now - window[0], window[1], window[2]))
                    self.logger.write(record)
                    window = (now, c.env_steps, c.updates)
                    next_log = c.env_steps + cfg.logging.every
                    bar.update(
                        c.env_steps,
                        ret=record.get("episode/return", float("nan")),
                        eval=c.last_eval_return or float("nan"),
                    )
        except KeyboardInterrupt:
            logger.warning("interrupted: finishing the rounds in flight and checkpointing")
            self._drain()
            c.seconds = offset + time.perf_counter() - start
            self.save()
            raise
        finally:
            bar.close()
        if self.evaluation is not None:
            self._finish_eval()
        return self._finish(offset + time.perf_counter() - start)

    def _drain(self) -> None:
        """Wait (bounded) for the rounds and the learner call in flight."""
        refs = list(self.collects) + (self.train_refs or [])
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=DRAIN_TIMEOUT_S)
        for ref in ready:
            if ref in self.collects:
                self._on_collect(ref)
        if self.train_refs is not None and all(r in ready for r in self.train_refs):
            self._on_train()
        self.train_refs = None

    def _log_record(self, seconds: float, steps_before: int, updates_before: int) -> dict[str, Any]:
        c = self.counters
        self._refresh_stats()
        inserted, sampled = self._inserted(), self._sampled()
        replay = self.config.replay
        seconds = max(seconds, 1e-9)
        record: dict[str, Any] = {
            "step": c.env_steps,
            "time": c.seconds,
            "fps/env": (c.env_steps - steps_before) / seconds,
            "fps/train": (c.updates - updates_before) * self.batch_steps / seconds,
            "replay/size": sum(s.get("steps", 0.0) for s in self.stats),
            "replay/ratio": sampled / max(inserted, 1.0),
            "replay/debt": replay.samples_per_insert * (inserted - replay.min_size) - sampled
            if inserted >= replay.min_size
            else 0.0,
            "replay/tolerance": self.tolerance,
            "counters/env_steps": c.env_steps,
            "counters/acked_steps": inserted,
            "counters/updates": c.updates,
            "counters/episodes": c.episodes,
            "counters/env_restarts": self.env_restarts,
            **{f"counters/restarts/{kind}": n for kind, n in c.restarts.items()},
            "weights/version": c.weights_version,
        }
        if self.lags:
            record["weights/lag"] = float(np.mean(self.lags))
            self.lags = []
        if self.returns:
            record["episode/return"] = float(np.mean(self.returns))
            record["episode/length"] = float(np.mean(self.lengths))
            self.returns, self.lengths = [], []
        record.update(self.means.pop())
        return record

    def _finish(self, seconds: float) -> dict[str, Any]:
        c = self.counters
        c.seconds = seconds
        self._refresh_stats()
        result: dict[str, Any] = {}
        path = self.save()
        fresh = self.evaluators and self.config.eval.episodes and c.last_eval_step != c.env_steps
        if fresh:
            self._start_eval(path, video=self.is_image)
            result = self._finish_eval()
            path = self.save()  # with the final evaluation in its counters
        final = {
            "step": c.env_steps,
            "time": seconds,
            **{k: v for k, v in result.items() if "/" in k},
            **self._log_record(1.0, c.env_steps, c.updates),
        }
        for key in ("fps/env", "fps/train"):
            final.pop(key, None)
        self.logger.write(final)
        curve = plot_curve(
            read_jsonl(self.run_dir / "metrics.jsonl") if self.config.logging.jsonl else [final],
            self.run_dir / "curve.png",
            title=f"{self.config.run.model} on {self.config.env.id} (Ray runtime)",
        )
        self.sync()
        return {
            **run_summary(self.run_dir, c, seconds, result, path, curve, self.location),
            "acked_steps": int(self._inserted()),
            "restarts": dict(c.restarts),
        }

    def close(self) -> None:
        """Shut the run's actors down and release the placement group."""
        for worker in self.workers:
            if worker is not None:
                try:
                    ray.get(worker.close.remote(), timeout=DRAIN_TIMEOUT_S)
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
        self.logger.close()
