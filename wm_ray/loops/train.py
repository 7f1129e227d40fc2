"""The single-process training loop: the reference semantics of every distributed run.

Per vector step: the driver acts (one batched policy call) and the steps go to replay in chunks;
then the agent trains the updates the pacing rule owes (:class:`~wm_ray.replay.limiter.Pacer`:
replayed steps, B*T per update, catch up with ``replay.samples_per_insert`` times the env steps
inserted after ``replay.min_size``). Logging, checkpoints and evaluation follow the run schedule
both loops share (:mod:`wm_ray.loops.schedule`). The replay is kept in
``resources.replay_shards`` shards (``<run_dir>/replay/shard-<i>``, one by default) exactly as
the Ray runtime keeps it, and checkpoints record the same run state, so ``--resume`` continues a
run of either loop with every counter intact. A run directory given as a URI (``s3://bucket/run``,
:mod:`wm_ray.rundir.sync`) is worked on in a local staging directory and synced to the remote
at the start, at every checkpoint and at the end.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

from wm_ray import metrics as M
from wm_ray.config import Config
from wm_ray.config_io import ConfigError, save_config, to_yaml
from wm_ray.envs.vector import VectorEnvLike
from wm_ray.factory import create_model
from wm_ray.loops.driver import Driver
from wm_ray.loops.evaluate import evaluate
from wm_ray.loops.schedule import (
    EVAL_SEED_OFFSET,
    RunCounters,
    Schedule,
    TrainingDiverged,
    diverged,
    run_pacer,
    run_summary,
)
from wm_ray.loops.setup import make_vector_env
from wm_ray.media import plot_curve, write_video
from wm_ray.metrics import MetricsLogger, read_jsonl
from wm_ray.replay import StreamWriter
from wm_ray.replay.dataset import env_spec, preload, preload_paths
from wm_ray.replay.sharding import SPLIT_SEED_OFFSET, ShardedReplay
from wm_ray.rundir import checkpoint as ckpt
from wm_ray.rundir.open import resolve_resume, resolve_run_dir, resume_checkpoint, starting_run
from wm_ray.rundir.paths import migrate_flat_replay, shard_directory, shard_relpath
from wm_ray.rundir.sync import RunStorage
from wm_ray.validate import validate_run

logger = logging.getLogger(__name__)


class Trainer:
    """Owns the pieces of one single-process run; ``run()`` trains to ``config.run.steps``.

    Args:
        config: the resolved run config.
        run_dir: the local run directory (a URI run's staging directory).
        resume: continue from the latest checkpoint in ``run_dir`` (written by either loop).
        storage: the remote of a URI run (prepared by :func:`train`): the run is synced to it
            at the start, at every checkpoint and at the end.
    """

    def __init__(
        self,
        config: Config,
        run_dir: Path,
        resume: bool = False,
        storage: RunStorage | None = None,
    ) -> None:
        self.config = config
        self.run_dir = run_dir
        self.storage = storage
        self.location = storage.uri if storage is not None else str(run_dir)
        shards = config.resources.replay_shards
        resumed = resume_checkpoint(run_dir, self.location, shards) if resume else None
        run_dir.mkdir(parents=True, exist_ok=True)
        seed = config.run.seed
        self.venv = make_vector_env(config.env, seed=seed)
        self.eval_venv: VectorEnvLike | None = None  # made at the first evaluation
        self.agent = create_model(
            config.run.model, self.venv.obs_space, self.venv.act_space, config
        )
        replay = config.replay
        self.pacer = run_pacer(config)
        if resume:
            migrate_flat_replay(run_dir)
        dirs = [shard_directory(run_dir, i) if replay.persist else None for i in range(shards)]
        self.replay = ShardedReplay(replay, dirs, seed, self.pacer.tolerance, SPLIT_SEED_OFFSET)
        self.preload = preload_paths(replay.preload)
        if self.preload:  # every start: the data sets' chunks are kept in memory only
            spec = env_spec(self.venv.obs_space, self.venv.act_space)
            preload(self.replay.shards, self.preload, spec)
        self.writer = StreamWriter(
            self.replay.add_chunk,
            self.venv.num_envs,
            replay.chunk_len,
            f"w0-{uuid.uuid4().hex[:8]}",
        )
        self.driver = Driver(self.venv, self.agent, sinks=(self.writer.add,))
        self.counters = RunCounters()
        if resumed is not None:
            self._restore(*resumed)
        # Written once the checkpoint loaded: a refused resume leaves the run's config as it was.
        save_config(config, run_dir)
        if storage is not None:
            storage.mirror(run_dir)
        self.logger = MetricsLogger(run_dir, config.logging.jsonl, config.logging.tensorboard)
        self.train_state = self.agent.init_train(replay.batch_size)
        self.schedule = Schedule(config, self.counters, self.pacer)
        self.is_image = "image" in self.venv.obs_space.spaces

    def _restore(self, path: Path, state: dict[str, Any]) -> None:
        self.agent.load(path / "agent")
        try:
            self.replay.load_state_dicts(state["shards"])
        except ValueError as err:
            raise ConfigError(f"--resume from {path}: {err}") from None
        self.counters = RunCounters.from_state(state["counters"])
        logger.info("resumed from %s at %d env steps", path, self.counters.env_steps)

    def save(self, tag: str | None = None) -> Path:
        """Write a checkpoint of the whole run (agent, counters, replay shards, config)."""
        self.writer.flush()
        c = self.counters
        learner = {
            "updates": c.updates,
            "version": c.weights_version,
            "sampled_floor": float(self.replay.sampled),
        }
        state = ckpt.run_state(
            c.state(),
            learner,
            self.replay.state_dicts(),
            self.replay.manifests(),
            [self.writer.prefix],
        )
        path = ckpt.save_checkpoint(
            self.run_dir, c.env_steps, self.agent.save, state, to_yaml(self.config), tag=tag
        )
        self.sync()
        return path

    def sync(self) -> None:
        """Upload what changed to the remote of a URI run (no-op for a local run dir).

        Replay chunk files go first (a checkpoint's replay state counts them), then the
        mirrored files, then the checkpoints (``meta.json`` last, then ``latest``).
        """
        if self.storage is None:
            return
        for i, shard in enumerate(self.replay.shards):
            if shard.directory is not None:
                self.storage.sync_chunks(shard.directory, shard_relpath(i))
        self.storage.sync_run(self.run_dir)

    def _train_owed(self) -> None:
        replay = self.replay
        while self.pacer.owed(replay.inserted, replay.sampled) > 0 and replay.can_sample():
            self.train_state, metrics = self.agent.train(replay.sample(), self.train_state)
            self.schedule.trained(metrics)

    def _evaluate(self, path: Path, video: bool) -> dict[str, Any]:
        """Evaluate the weights of checkpoint ``path``; a new best tags it ``best``."""
        if self.eval_venv is None:
            self.eval_venv = make_vector_env(
                self.config.env,
                seed=self.config.run.seed + EVAL_SEED_OFFSET,
                num_envs=self.config.eval.num_envs,
            )
        result = evaluate(self.agent, self.eval_venv, self.config.eval.episodes, video=video)
        if self.schedule.evaluated(result, self.counters.env_steps):
            ckpt.tag_checkpoint(path, "best")
            self.sync()
        if "frames" in result:
            target = self.run_dir / "videos" / f"eval-{self.counters.env_steps:09d}.mp4"
            write_video(result["frames"], target)
        return result

    def _line(self, extra: dict[str, Any]) -> dict[str, Any]:
        self.counters.env_restarts = self.venv.restarts
        replay = self.replay
        extra = {M.REPLAY_PRELOADED: sum(s.preloaded_steps for s in replay.shards), **extra}
        return self.schedule.line(replay.inserted, replay.sampled, len(replay), extra)

    def run(self) -> dict[str, Any]:
        cfg, c, schedule = self.config, self.counters, self.schedule
        try:
            while c.env_steps < cfg.run.steps:
                self.driver.step()
                c.env_steps += self.venv.num_envs
                for episode in self.driver.episodes.pop():
                    schedule.episode(
                        episode["return"], episode["length"], metrics=episode.get("metrics")
                    )
                self._train_owed()
                schedule.tick(self.replay.inserted, self.replay.sampled)
                extra: dict[str, Any] = {}
                evaluate = schedule.eval_due()
                if evaluate or schedule.checkpoint_due():
                    schedule.elapsed()
                    path = self.save()
                    schedule.checkpointed(evaluate)
                    if evaluate:
                        video = cfg.eval.video and self.is_image
                        extra = schedule.eval_record(self._evaluate(path, video))
                if schedule.log_due() or extra:
                    self.logger.write(self._line(extra))
        except TrainingDiverged as err:
            raise diverged(err, self.run_dir, self.location) from None
        except KeyboardInterrupt:
            logger.warning("interrupted: writing a final checkpoint")
            schedule.elapsed()
            self.save()
            raise
        finally:
            schedule.close()
        return self._finish()

    def _finish(self) -> dict[str, Any]:
        c, schedule = self.counters, self.schedule
        schedule.elapsed()
        path = self.save()
        result: dict[str, Any] = {}
        if schedule.fresh_eval_needed():
            result = self._evaluate(path, video=self.is_image)
            path = self.save()  # with the final evaluation in its counters
        final = self._line(schedule.eval_record(result) if result else {})
        for key in (M.FPS_ENV, M.FPS_TRAIN):
            final.pop(key, None)
        self.logger.write(final)
        curve = plot_curve(
            read_jsonl(self.run_dir / "metrics.jsonl") if self.config.logging.jsonl else [final],
            self.run_dir / "curve.png",
            title=f"{self.config.run.model} on {self.config.env.id}",
        )
        if self.is_image and self.replay.can_sample():
            media = self.agent.report(self.replay.sample(batch_size=1))
            if "openloop" in media:  # (T, H, 3W, C) strips; panels: see the family README
                write_video(media["openloop"], self.run_dir / "videos" / "openloop.mp4", fps=10)
        self.sync()
        return run_summary(self.run_dir, c, c.seconds, result, path, curve, self.location)

    def close(self) -> None:
        self.venv.close()
        if self.eval_venv is not None:
            self.eval_venv.close()
        self.logger.close()


def train(
    config: Config,
    run_dir: str | Path,
    resume: bool = False,
    allow_config_change: bool = False,
) -> dict[str, Any]:
    """Train ``config.run.model`` to ``config.run.steps`` env steps; returns a summary.

    ``run_dir`` is a path or a filesystem URI (:func:`wm_ray.rundir.open.resolve_run_dir`).
    """
    local, storage = resolve_run_dir(run_dir)
    validate_run(config, single_process=True)  # before anything exists on disk
    if storage is None:
        with starting_run(local, resume):
            if resume:
                config = resolve_resume(config, local, allow_config_change)
            trainer = Trainer(config, local, resume=resume, storage=storage)
    else:
        storage.prepare(local, resume=resume)
        if config.replay.persist:
            for i in range(config.resources.replay_shards):
                storage.download_chunks(shard_relpath(i), shard_directory(local, i))
        if resume:
            config = resolve_resume(config, local, allow_config_change)
        trainer = Trainer(config, local, resume=resume, storage=storage)
    try:
        return trainer.run()
    finally:
        trainer.close()
