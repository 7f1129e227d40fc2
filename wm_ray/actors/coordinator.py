"""``Coordinator``: runs a run's actor graph on Ray, keeps it paced, checkpoints and reports.

The coordinator lives in the driver process (``wm-ray train``, or the entrypoint of a
``ray job submit``). It builds the run's :class:`~wm_ray.actors.graph.ActorGraph` and loops:

- **Pacing (the pacing rule of** :class:`~wm_ray.replay.limiter.Pacer`, **summed over the
  shards).** Env workers collect in rounds of ``replay.chunk_len * env.num_envs`` steps (one
  chunk per env). A round is granted only while the pacer admits it (the replay is still below
  ``replay.min_size``, or the debt after it stays within the tolerance), and learners train
  only what the pacer owes (:mod:`wm_ray.actors.learner`), so the ratio never drifts by more
  than the tolerance either way. The tolerance is
  :func:`~wm_ray.replay.limiter.pacing_tolerance` with ``env_workers`` writers (every worker
  may have one round in flight).
- **Health.** Every call the coordinator makes doubles as a health check; dead actors are
  started again by the graph (see :mod:`wm_ray.actors.graph`).
- **Checkpoints and evaluation** follow the run schedule of both loops
  (:mod:`wm_ray.loops.schedule`): at every ``run.checkpoint_every`` and ``eval.every`` env steps
  the coordinator stops granting rounds, waits for the rounds in flight (so the checkpoint's
  counters equal the shards' acknowledged steps), and writes a whole-run checkpoint in the run
  state format of both loops: rank 0's agent, counters, every shard's state and manifest. The
  agent's files come from the learner as bytes (``Learner.agent_files``), so only the
  coordinator's process writes the run directory. The eval workers then evaluate exactly the
  checkpointed weights while training goes on; a new best mean return tags that checkpoint
  ``checkpoints/best``.
- **Storage.** A run directory given as a filesystem URI (:mod:`wm_ray.rundir.sync`) is
  worked on in the coordinator's local staging directory and synced at the start, at every
  checkpoint and at the end; with ``replay.persist`` every shard keeps its chunk files in its
  own node's staging directory and uploads them when asked (``ReplayShard.sync_storage``),
  before each checkpoint records the shards' states. No filesystem needs to be shared then.
- **Metrics.** The run schedule's lines plus ``counters/env_steps``, ``counters/acked_steps``,
  ``counters/restarts/<kind>``, ``weights/version``, ``weights/lag``, ``replay/preloaded_steps``.

Ctrl-C or SIGTERM (raised as ``KeyboardInterrupt`` by the CLI) lets the rounds in flight finish,
writes a final checkpoint and shuts the actors down.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayActorError

from wm_ray import metrics as M
from wm_ray.actors.graph import ActorGraph
from wm_ray.config import Config
from wm_ray.config_io import save_config, to_yaml
from wm_ray.factory import env_spaces
from wm_ray.loops.evaluate import merge_evaluations
from wm_ray.loops.schedule import (
    RunCounters,
    Schedule,
    TrainingDiverged,
    diverged,
    round_steps,
    run_pacer,
    run_summary,
)
from wm_ray.media import plot_curve, write_video
from wm_ray.metrics import MetricsLogger, read_jsonl
from wm_ray.registry import check_supported, get_model_spec
from wm_ray.rundir import checkpoint as ckpt
from wm_ray.rundir.open import resolve_run_dir, resume_checkpoint
from wm_ray.rundir.paths import migrate_flat_replay

logger = logging.getLogger(__name__)

UPDATES_PER_CALL = 8
"""Learner updates per ``train`` call: the learner reports (metrics, version) this often."""
DRAIN_TIMEOUT_S = 60.0
"""How long shutdown waits for rounds in flight."""


class Coordinator:
    """One distributed run: start with the constructor, :meth:`run`, then :meth:`close`.

    Args:
        config: the resolved run config.
        run_dir: the run directory: a path (with ``replay.persist`` every replay shard's node
            must reach it, the chunk files live there) or a filesystem URI (worked on in a
            local staging directory and synced; replay shards sync their chunk files
            themselves, into the staging root given by ``$WM_RAY_STAGING`` of this process, or
            their node's default).
        resume: continue from the latest checkpoint in ``run_dir`` (written by either loop).
        prefix: actor-name prefix (empty for an embedded cluster; the run name plus a dot when
            several runs share a cluster).
        spaces: the env's ``(obs, action)`` spaces, if read already; None makes one env.
    """

    def __init__(
        self,
        config: Config,
        run_dir: str | Path,
        resume: bool = False,
        prefix: str = "",
        spaces: tuple[Any, Any] | None = None,
    ) -> None:
        self.config, self.prefix, self.location = config, prefix, str(run_dir)
        self.run_dir, self.storage = resolve_run_dir(run_dir)
        self.round = round_steps(config)
        self.pacer = run_pacer(config, config.resources.env_workers)
        self.batch_steps = config.replay.batch_size * config.replay.seq_len
        self.spaces = spaces if spaces is not None else env_spaces(config)
        check_supported(get_model_spec(config.run.model), config, *self.spaces)
        self.is_image = "image" in self.spaces[0].spaces
        if self.storage is not None:
            self.storage.prepare(self.run_dir, resume=resume)
        self.counters = RunCounters()
        checkpoint = self._resume_from() if resume else None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.graph = ActorGraph(
            config, self.run_dir, self.storage, self.spaces, self.counters, checkpoint, prefix
        )
        try:  # the run's outputs, once the checkpoint loaded (a refused resume keeps config.yaml)
            save_config(config, self.run_dir)
            if self.storage is not None:
                self.storage.mirror(self.run_dir)
            logs = config.logging
            self.logger = MetricsLogger(self.run_dir, logs.jsonl, logs.tensorboard)
        except BaseException:  # a full disk, say: no actor of the failed start is left running
            self.graph.close(DRAIN_TIMEOUT_S)
            raise
        self.schedule = Schedule(config, self.counters, self.pacer, bool(self.graph.evaluators))
        self.collects: dict[Any, tuple[int, int]] = {}
        self.train_refs: list[Any] | None = None
        self.train_issued_at = 0.0
        self.learner_idle_at = -1.0
        self.learner_sampled = 0.0  # the learners' sampled floor (see sampled)
        self.sampled_offset = 0.0  # what restarted shards' limiters forgot (see _refresh_stats)
        self.shard_restarts = self.counters.restarts["replay-shard"]
        self.evaluation: tuple[list[Any], int, Path] | None = None
        self.stats: list[dict[str, float]] = [{} for _ in self.graph.shards]

    def _resume_from(self) -> Path:
        """The checkpoint to resume from; its counters become the run's."""
        shards = self.config.resources.replay_shards
        path, state = resume_checkpoint(self.run_dir, self.location, shards)
        if self.config.replay.persist and self.storage is None:
            migrate_flat_replay(self.run_dir)
        self.counters = RunCounters.from_state(state["counters"])
        return path

    # -- pacing ------------------------------------------------------------------------------

    def _inserted(self) -> float:
        return sum(s.get("limiter_inserts", 0.0) for s in self.stats)

    def reported_samples(self) -> float:
        """Steps the learners have reported sampling (with their prefetched batch)."""
        return max(self.counters.updates * self.batch_steps, self.learner_sampled)

    def sampled(self) -> float:
        """Steps sampled so far: the shards' count plus what restarted shards forgot, never below
        what the learners know they sampled (less would stall the run: they would owe nothing)."""
        counted = sum(s.get("limiter_samples", 0.0) for s in self.stats) + self.sampled_offset
        return max(counted, self.reported_samples())

    def _grant(self) -> None:
        busy = {i for i, _ in self.collects.values()}
        for i, worker in enumerate(self.graph.workers):
            granted = sum(n for _, n in self.collects.values())
            remaining = self.config.run.steps - self.counters.env_steps - granted
            if remaining <= 0:
                return
            if i in busy:
                continue
            steps = min(self.round, remaining)
            if not self.pacer.admits(self._inserted() + granted, steps, self.sampled()):
                return
            self.collects[worker.collect.remote(steps)] = (i, steps)

    def _train(self) -> None:
        if self.train_refs is not None or self._inserted() <= self.learner_idle_at:
            return
        self.train_issued_at = self._inserted()
        self.train_refs = [x.train.remote(UPDATES_PER_CALL) for x in self.graph.learners]

    # -- results -----------------------------------------------------------------------------

    def _on_collect(self, ref: Any) -> int:
        i, _ = self.collects.pop(ref)
        try:
            result = ray.get(ref)
        except RayActorError as err:  # the worker died, or its call failed: start it again
            self.graph.worker_died(i, err)
            return 0
        c = self.counters
        latest = int(ray.get(self.graph.store.latest_version.remote()))
        c.env_steps += result["acked_steps"]
        self.graph.worker_acked[i] += result["acked_steps"]
        c.env_restarts = max(c.env_restarts, int(result["restarts"]))
        for episode in result["episodes"]:
            lag = float(latest - episode["weights_version"])
            self.schedule.episode(episode["return"], episode["length"], lag, episode.get("metrics"))
        return int(result["acked_steps"])

    def _on_train(self) -> None:
        refs, self.train_refs = self.train_refs or [], None
        try:
            results = self.graph.train_results(refs)
        except RayActorError as err:
            self.graph.learners_died(err)
            return
        head = results[0]
        self.learner_sampled = max(self.learner_sampled, float(head.get("sampled", 0.0)))
        self.schedule.trained(head["metrics"], int(head["updates"]))
        self.counters.weights_version = max(self.counters.weights_version, int(head["version"]))
        self.learner_idle_at = self.train_issued_at if head["updates"] == 0 else -1.0

    def _refresh_stats(self) -> None:
        """The shards' figures. A restarted shard's limiter forgot the samples drawn since the
        checkpoint it loaded: the learners' call in flight is waited for, then the learners, idle,
        know every sample, and what the shards' sum lacks of it is kept as an offset."""
        stats = self.graph.call_shards("stats")
        if self.counters.restarts["replay-shard"] != self.shard_restarts:
            if self.train_refs is not None:
                self._on_train()
            self.shard_restarts = self.counters.restarts["replay-shard"]
            stats = self.graph.call_shards("stats")
            forgot = self.reported_samples() - sum(s.get("limiter_samples", 0.0) for s in stats)
            self.sampled_offset = max(0.0, forgot)
        self.stats = stats

    # -- checkpoints and evaluation ----------------------------------------------------------

    def save(self, tag: str | None = None) -> Path:
        """Write a whole-run checkpoint (rank 0's agent, counters, shard states) and sync it.

        With a storage URI and ``replay.persist`` the shards upload their new chunk files
        first, so the remote holds every chunk the checkpoint's shard states count.
        """
        if self.train_refs is not None:
            self._on_train()  # the learner's agent is saved between updates
        graph = self.graph
        if self.storage is not None and self.config.replay.persist:
            graph.call_shards("sync_storage")
        learner, files = graph.ask_learner("counters", "agent_files")  # a dead group restarts
        state = ckpt.run_state(
            self.counters.state(),
            learner,
            graph.call_shards("state_dict"),
            graph.call_shards("manifest"),
            graph.streams,
        )
        path = ckpt.save_checkpoint(
            self.run_dir,
            self.counters.env_steps,
            lambda directory: ckpt.write_files(directory, files),
            state,
            to_yaml(self.config),
            tag=tag,
        )
        graph.checkpointed(path, state)
        if self.storage is not None:  # upload what changed in the run
            self.storage.sync_run(self.run_dir)
        return path

    def _start_eval(self, path: Path, video: bool = False) -> None:
        """Evaluate the weights just checkpointed at ``path`` on the eval workers."""
        version, refs = self.graph.evaluate(self.config.eval.episodes, video)
        self.counters.weights_version = max(self.counters.weights_version, version)
        self.evaluation = (refs, self.counters.env_steps, path)

    def _finish_eval(self) -> dict[str, Any]:
        """The result of the evaluation in flight (waits for all of its eval workers)."""
        assert self.evaluation is not None
        refs, step, path = self.evaluation
        self.evaluation = None
        try:
            parts = ray.get(refs)
        except RayActorError as err:
            self.graph.evaluators_died(err)
            return {}
        result = merge_evaluations(parts)
        if self.schedule.evaluated(result, step):
            try:
                ckpt.tag_checkpoint(path, "best")
            except (ckpt.CheckpointError, OSError) as err:
                logger.warning("could not keep %s as the best checkpoint: %s", path, err)
        frames = next((part["frames"] for part in parts if "frames" in part), None)
        if frames is not None:
            write_video(frames, self.run_dir / "videos" / f"eval-{step:09d}.mp4")
        return result

    # -- the loop ----------------------------------------------------------------------------

    def _wait(self, timeout: float) -> list[Any]:
        evaluation = self.evaluation[0] if self.evaluation is not None else []
        refs = [*self.collects, *(self.train_refs or []), *evaluation]
        if not refs:
            time.sleep(min(timeout, 0.05))
            return []
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        return ready

    def run(self) -> dict[str, Any]:
        """Train to ``run.steps`` env steps; returns the same summary as the reference loop."""
        cfg, c, schedule = self.config, self.counters, self.schedule
        try:
            while True:
                self._refresh_stats()
                eval_due = schedule.eval_due() and self.evaluation is None
                quiesce = eval_due or schedule.checkpoint_due()
                collecting = c.env_steps < cfg.run.steps
                if quiesce and not self.collects:
                    schedule.elapsed()
                    path = self.save()
                    schedule.checkpointed(eval_due)
                    if eval_due:
                        self._start_eval(path, video=cfg.eval.video and self.is_image)
                    continue
                if not quiesce and collecting:
                    self._grant()
                self._train()
                if not collecting and not self.collects and self.train_refs is None:
                    break  # every step is in and the learners owe nothing more
                extra: dict[str, Any] = {}
                for ref in self._wait(timeout=1.0):
                    if ref in self.collects:
                        self._on_collect(ref)
                    elif self.train_refs is not None and ref in self.train_refs:
                        self._on_train()
                    elif self.evaluation is not None and ref in self.evaluation[0]:
                        result = self._finish_eval()
                        extra.update(schedule.eval_record(result) if result else {})
                schedule.tick(self._inserted(), self.sampled())
                if schedule.log_due() or extra:
                    self.logger.write(self._line(extra))
        except TrainingDiverged as err:
            raise diverged(err, self.run_dir, self.location) from None
        except KeyboardInterrupt:
            logger.warning("interrupted: finishing the rounds in flight and checkpointing")
            self._drain()
            schedule.elapsed()
            self.save()
            raise
        finally:
            schedule.close()
        if self.evaluation is not None:
            self._finish_eval()
        return self._finish()

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

    def _line(self, extra: dict[str, Any]) -> dict[str, Any]:
        self._refresh_stats()
        c, inserted = self.counters, self._inserted()
        runtime = {
            M.ENV_STEPS: c.env_steps,
            M.ACKED_STEPS: inserted,
            **{M.restarts(kind): n for kind, n in c.restarts.items()},
            M.WEIGHTS_VERSION: c.weights_version,
            M.REPLAY_PRELOADED: sum(s.get("preloaded_steps", 0.0) for s in self.stats),
            **extra,
        }
        stored = sum(s.get("steps", 0.0) for s in self.stats)
        return self.schedule.line(inserted, self.sampled(), stored, runtime)

    def _finish(self) -> dict[str, Any]:
        c, schedule = self.counters, self.schedule
        schedule.elapsed()
        result: dict[str, Any] = {}
        path = self.save()
        if self.graph.evaluators and schedule.fresh_eval_needed():
            self._start_eval(path, video=self.is_image)
            result = self._finish_eval()
            path = self.save()  # with the final evaluation in its counters
        final = self._line(schedule.eval_record(result) if result else {})
        for key in (M.FPS_ENV, M.FPS_TRAIN):
            final.pop(key, None)
        self.logger.write(final)
        curve = plot_curve(
            read_jsonl(self.run_dir / "metrics.jsonl") if self.config.logging.jsonl else [final],
            self.run_dir / "curve.png",
            title=f"{self.config.run.model} on {self.config.env.id} (Ray runtime)",
        )
        if self.storage is not None:
            self.storage.sync_run(self.run_dir)
        return {
            **run_summary(self.run_dir, c, c.seconds, result, path, curve, self.location),
            "acked_steps": int(self._inserted()),
            "restarts": dict(c.restarts),
        }

    def close(self) -> None:
        """Shut the run's actors down and release the placement group."""
        self.graph.close(DRAIN_TIMEOUT_S)
        self.logger.close()
