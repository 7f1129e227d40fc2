"""The single-process training loop: the reference semantics of every distributed run.

Per vector step: the driver acts (one batched policy call) and the steps go to replay; then the
agent trains while the limiter owes samples, i.e. until replayed steps (B*T per update) catch
up with ``replay.samples_per_insert`` times the env steps inserted after ``replay.min_size``.
Evaluation, logging and checkpoints happen on env-step schedules; ``resume`` continues from
the latest checkpoint with every counter intact. A run directory given as a URI
(``s3://bucket/run``, :mod:`wm_ray.rundir.storage`) is worked on in a local staging directory and
synced to the remote at the start, at every checkpoint and at the end.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wm_ray.config import Config
from wm_ray.config_io import ConfigError, diff, load_config, save_config, to_yaml
from wm_ray.factory import create_model
from wm_ray.loops.driver import Driver
from wm_ray.loops.evaluate import evaluate
from wm_ray.loops.setup import make_vector_env
from wm_ray.media import plot_curve, write_video
from wm_ray.metrics import Mean, MetricsLogger, Progress, read_jsonl
from wm_ray.replay import Replay, StreamWriter
from wm_ray.rundir import checkpoint as ckpt
from wm_ray.rundir.storage import RunStorage, resolve_run_dir

logger = logging.getLogger(__name__)
EVAL_SEED_OFFSET = 10**6
RESUMABLE_KEYS = {"run.steps", "run.run_dir", "logging.progress", "resources.address"}


@dataclass
class Counters:
    """Everything a resumed run continues from."""

    env_steps: int = 0
    updates: int = 0
    episodes: int = 0
    evals: int = 0
    seconds: float = 0.0
    env_restarts: int = 0
    last_eval_return: float | None = None
    last_eval_step: int = -1
    best_eval_return: float | None = None
    best_eval_step: int = -1


def resolve_resume(requested: Config, run_dir: Path, allow_change: bool) -> Config:
    """The config to resume with: the saved one, unless the request changes it and that's allowed.

    ``run.steps`` (to train longer) and output-only keys may always change.
    """
    saved = load_config(run_dir)
    changed = {k: v for k, v in diff(saved, requested).items() if k not in RESUMABLE_KEYS}
    if changed and not allow_change:
        shown = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(changed.items()))
        raise ConfigError(
            f"--resume with a changed config ({shown}); pass --allow-config-change to accept it"
        )
    return requested


class Trainer:
    """Owns the pieces of one single-process run; ``run()`` trains to ``config.run.steps``.

    Args:
        config: the resolved run config.
        run_dir: the local run directory (a URI run's staging directory).
        resume: continue from the latest checkpoint in ``run_dir``.
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
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir)
        if storage is not None:
            storage.mirror(run_dir)
        seed = config.run.seed
        self.replay = Replay(
            config.replay, run_dir / "replay" if config.replay.persist else None, seed=seed
        )
        self.venv = make_vector_env(config.env, seed=seed)
        self.eval_venv = make_vector_env(
            config.env, seed=seed + EVAL_SEED_OFFSET, num_envs=config.eval.num_envs
        )
        self.agent = create_model(
            config.run.model, self.venv.obs_space, self.venv.act_space, config
        )
        self.writer = StreamWriter(
            self.replay.add_chunk,
            self.venv.num_envs,
            config.replay.chunk_len,
            f"w0-{uuid.uuid4().hex[:8]}",
        )
        self.driver = Driver(self.venv, self.agent, sinks=(self.writer.add,))
        self.counters = Counters()
        if resume:
            self._restore()
        self.logger = MetricsLogger(run_dir, config.logging.jsonl, config.logging.tensorboard)
        self.train_state = self.agent.init_train(config.replay.batch_size)
        self.means = Mean()
        self.returns: list[float] = []
        self.lengths: list[int] = []

    def _restore(self) -> None:
        path = ckpt.latest_checkpoint(self.run_dir)
        if path is None:
            raise ConfigError(f"--resume: {self.location} has no checkpoint to resume from")
        state = ckpt.load_state(path)
        if "replay" not in state:
            raise ConfigError(
                f"{path} was written by the Ray runtime; resume it without --single-process"
            )
        self.agent.load(path / "agent")
        self.replay.load_state_dict(state["replay"])
        self.counters = Counters(**state["counters"])
        logger.info("resumed from %s at %d env steps", path, self.counters.env_steps)

    def save(self, tag: str | None = None) -> Path:
        """Write a checkpoint of the whole run (agent, counters, replay state, config)."""
        self.writer.flush()
        state = {
            "counters": dataclasses.asdict(self.counters),
            "replay": self.replay.state_dict(),
            "replay_manifest": self.replay.manifest(),
        }
        path = ckpt.save_checkpoint(
            self.run_dir,
            self.counters.env_steps,
            self.agent.save,
            state,
            to_yaml(self.config),
            tag=tag,
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
        if self.replay.directory is not None:
            self.storage.sync_chunks(self.replay.directory, "replay")
        self.storage.sync_run(self.run_dir)

    def _train_owed(self) -> None:
        n = self.config.replay.batch_size * self.config.replay.seq_len
        limiter = self.replay.limiter
        while (
            limiter.inserts >= limiter.min_size and limiter.debt >= n and self.replay.can_sample()
        ):
            batch = self.replay.sample()
            self.train_state, metrics = self.agent.train(batch, self.train_state)
            self.means.add(metrics)
            self.counters.updates += 1

    def _evaluate(self, video: bool) -> dict[str, Any]:
        """Eval episodes; a new best mean return is also saved as ``checkpoints/best``."""
        result = evaluate(self.agent, self.eval_venv, self.config.eval.episodes, video=video)
        c = self.counters
        c.evals += 1
        c.last_eval_return = result["eval/return"]
        c.last_eval_step = c.env_steps
        if c.best_eval_return is None or result["eval/return"] > c.best_eval_return:
            c.best_eval_return, c.best_eval_step = result["eval/return"], c.env_steps
            self.save(tag="best")
        result["eval/best_return"] = c.best_eval_return
        if "frames" in result:
            path = self.run_dir / "videos" / f"eval-{self.counters.env_steps:09d}.mp4"
            write_video(result["frames"], path)
        return result

    def run(self) -> dict[str, Any]:
        cfg, c = self.config, self.counters
        bar = Progress(cfg.run.steps, enabled=cfg.logging.progress)
        start, window_start = time.perf_counter(), time.perf_counter()
        offset = c.seconds
        window_steps, window_updates = c.env_steps, c.updates
        next_log = c.env_steps + cfg.logging.every
        next_eval = c.env_steps + cfg.eval.every if cfg.eval.every else None
        next_ckpt = c.env_steps + cfg.run.checkpoint_every if cfg.run.checkpoint_every else None
        is_image = "image" in self.venv.obs_space.spaces
        try:
            while c.env_steps < cfg.run.steps:
                self.driver.step()
                c.env_steps += self.venv.num_envs
                for episode in self.driver.episodes.pop():
                    self.returns.append(episode["return"])
                    self.lengths.append(episode["length"])
                    c.episodes += 1
                self._train_owed()
                record: dict[str, Any] = {}
                if next_eval is not None and c.env_steps >= next_eval:
                    result = self._evaluate(video=cfg.eval.video and is_image)
                    record.update({k: v for k, v in result.items() if k.startswith("eval/")})
                    next_eval += cfg.eval.every
                if c.env_steps >= next_log or record:
                    now = time.perf_counter()
                    c.seconds = offset + now - start
                    record.update(
                        self._log_record(now - window_start, window_steps, window_updates)
                    )
                    self.logger.write(record)
                    window_start, window_steps, window_updates = now, c.env_steps, c.updates
                    next_log = c.env_steps + cfg.logging.every
                    bar.update(
                        c.env_steps,
                        ret=record.get("episode/return", float("nan")),
                        eval=c.last_eval_return or float("nan"),
                    )
                if next_ckpt is not None and c.env_steps >= next_ckpt:
                    c.seconds = offset + time.perf_counter() - start
                    self.save()
                    next_ckpt += cfg.run.checkpoint_every
        except KeyboardInterrupt:
            logger.warning("interrupted: writing a final checkpoint")
            c.seconds = offset + time.perf_counter() - start
            self.save()
            raise
        finally:
            bar.close()
        return self._finish(offset + time.perf_counter() - start, is_image)

    def _log_record(self, seconds: float, steps_before: int, updates_before: int) -> dict[str, Any]:
        c, cfg = self.counters, self.config
        stats = self.replay.stats()
        record: dict[str, Any] = {
            "step": c.env_steps,
            "time": c.seconds,
            "fps/env": (c.env_steps - steps_before) / max(seconds, 1e-9),
            "fps/train": (c.updates - updates_before)
            * cfg.replay.batch_size
            * cfg.replay.seq_len
            / max(seconds, 1e-9),
            "replay/size": len(self.replay),
            "replay/ratio": stats["sampled_steps"] / max(stats["inserted_steps"], 1),
            "counters/updates": c.updates,
            "counters/episodes": c.episodes,
            "counters/env_restarts": self.venv.restarts,
        }
        if self.returns:
            record["episode/return"] = float(np.mean(self.returns))
            record["episode/length"] = float(np.mean(self.lengths))
            self.returns, self.lengths = [], []
        record.update(self.means.pop())
        return record

    def _finish(self, seconds: float, is_image: bool) -> dict[str, Any]:
        c = self.counters
        c.seconds = seconds
        fresh = self.config.eval.episodes and c.last_eval_step != c.env_steps
        result = self._evaluate(video=is_image) if fresh else {}
        final = {
            "step": c.env_steps,
            "time": seconds,
            **{k: v for k, v in result.items() if k.startswith("eval/")},
        }
        self.logger.write(final)
        path = self.save()
        curve = plot_curve(
            read_jsonl(self.run_dir / "metrics.jsonl") if self.config.logging.jsonl else [final],
            self.run_dir / "curve.png",
            title=f"{self.config.run.model} on {self.config.env.id}",
        )
        videos = self.run_dir / "videos"
        if is_image and self.replay.can_sample():
            media = self.agent.report(self.replay.sample(batch_size=1))
            if "openloop" in media:  # (T, H, 3W, C) strips; panels: see the family README
                write_video(media["openloop"], videos / "openloop.mp4", fps=10)
        self.sync()
        return run_summary(self.run_dir, c, seconds, result, path, curve, self.location)

    def close(self) -> None:
        self.venv.close()
        self.eval_venv.close()
        self.logger.close()


def run_summary(
    run_dir: Path,
    c: Counters,
    seconds: float,
    result: dict[str, Any],
    checkpoint: Path,
    curve: Path,
    location: str | None = None,
) -> dict[str, Any]:
    """What ``train`` returns (and the CLI prints): counters, evaluations, where outputs are.

    ``run_dir`` is ``location`` (the run directory as given: a path or a URI) and
    ``local_dir`` the local directory the files below are in (a URI run's staging directory).
    """
    videos = run_dir / "videos"
    best = c.best_eval_return is not None
    return {
        "run_dir": location or str(run_dir),
        "local_dir": str(run_dir),
        "env_steps": c.env_steps,
        "updates": c.updates,
        "episodes": c.episodes,
        "seconds": seconds,
        "eval_return": result.get("eval/return", c.last_eval_return),
        "best_eval_return": c.best_eval_return,
        "best_eval_step": c.best_eval_step,
        "best_checkpoint": str(run_dir / "checkpoints" / "best") if best else None,
        "eval_returns": result.get("returns"),
        "checkpoint": str(checkpoint),
        "curve": str(curve),
        "videos": str(videos) if videos.is_dir() else None,
    }


def train(
    config: Config,
    run_dir: str | Path,
    resume: bool = False,
    allow_config_change: bool = False,
) -> dict[str, Any]:
    """Train ``config.run.model`` to ``config.run.steps`` env steps; returns a summary.

    ``run_dir`` is a path or a filesystem URI (:func:`wm_ray.rundir.storage.resolve_run_dir`).
    """
    local, storage = resolve_run_dir(run_dir)
    if storage is not None:
        replay = "replay" if config.replay.persist else None
        storage.prepare(local, resume=resume, replay=replay)
    if resume:
        config = resolve_resume(config, local, allow_config_change)
    trainer = Trainer(config, local, resume=resume, storage=storage)
    try:
        return trainer.run()
    finally:
        trainer.close()
