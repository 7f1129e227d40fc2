"""The whole Ray runtime (coordinator, env workers, shards, learners, eval) on a local cluster.

Small runs of the real Dreamer agent (debug size) on a fake vector env: what is checked is the
runtime's bookkeeping - every acknowledged step counted, the train ratio kept within the
limiter's tolerance, learners identical, actors restarted after ``ray.kill`` with nothing
acknowledged lost - not the returns.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import ray

from wm_ray.actors.coordinator import Coordinator
from wm_ray.cli_text import error_message
from wm_ray.config import Config
from wm_ray.config_io import ConfigError, build_config
from wm_ray.loops.schedule import run_pacer
from wm_ray.loops.train import train
from wm_ray.rundir import checkpoint as ckpt

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_cluster")]

BATCH, SEQ, MIN_SIZE, SPI, CHUNK, NUM_ENVS = 4, 8, 64, 4, 16, 2


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its sha256."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def make_config(run_dir: Path, *extra: str) -> Config:
    return build_config(
        ["size_debug"],
        [
            "run.model=dreamer",
            "run.device=cpu",
            f"run.run_dir={run_dir}",
            "env.id=fake:vector-discrete",
            f"env.num_envs={NUM_ENVS}",
            f"replay.chunk_len={CHUNK}",
            f"replay.batch_size={BATCH}",
            f"replay.seq_len={SEQ}",
            f"replay.min_size={MIN_SIZE}",
            f"replay.samples_per_insert={SPI}",
            "eval.every=192",
            "eval.episodes=2",
            "eval.num_envs=2",
            "logging.every=64",
            "logging.progress=false",
            "logging.tensorboard=false",
            "resources.namespace=wm_ray_test",
            "resources.cpus_per_env_worker=0.25",
            "resources.cpus_per_learner=0.25",
            *extra,
        ],
    )


def records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def owed_updates(inserted: float) -> int:
    return max(0, math.floor(SPI * (inserted - MIN_SIZE) / (BATCH * SEQ)))


def prefix() -> str:
    return f"t{uuid.uuid4().hex[:6]}."


def check_bookkeeping(config: Config, summary: dict[str, Any], run_dir: Path) -> None:
    """No acknowledged step lost or double counted; the ratio stayed within the tolerance."""
    assert summary["env_steps"] == config.run.steps
    assert summary["acked_steps"] == summary["env_steps"], "steps lost or counted twice"
    log = records(run_dir)
    tolerance = run_pacer(config, config.resources.env_workers).tolerance
    sampled = 0.0
    for record in log:
        if "replay/debt" in record:
            assert -BATCH * SEQ <= record["replay/debt"] <= tolerance, record
            # The run's count of sampled steps never goes back (a restarted shard's limiter
            # forgets the samples since its checkpoint; the coordinator must not).
            now = record["replay/ratio"] * record["counters/acked_steps"]
            assert now >= sampled * (1 - 1e-9), (record, sampled)
            sampled = now
    final = log[-1]
    assert final["counters/env_steps"] == final["counters/acked_steps"] == config.run.steps
    for key in ("weights/version", "counters/restarts/env-worker", "replay/ratio"):
        assert key in final, key
    losses = [v for r in log for k, v in r.items() if k.startswith("train/loss/")]
    assert losses and all(math.isfinite(v) for v in losses)


def run(config: Config, run_dir: Path, name: str) -> tuple[dict[str, Any], Coordinator]:
    coordinator = Coordinator(config, run_dir, prefix=name)
    try:
        summary = coordinator.run()
    except BaseException:
        coordinator.close()
        raise
    return summary, coordinator


def test_two_workers_two_shards_one_learner_train_without_losing_a_step(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        "run.steps=640",
        "resources.env_workers=2",
        "resources.replay_shards=2",
    )
    summary, coordinator = run(config, tmp_path, prefix())
    try:
        stats = ray.get([shard.stats.remote() for shard in coordinator.graph.shards])
        sampled = sum(s["limiter_samples"] for s in stats)
        # (Which shard a stream lands on is crc32 of a random name: with 4 streams both shards
        # get data only with probability 7/8, so that is tested with 16 streams in
        # test_actors.py, not here.)
        assert sum(s["inserted_steps"] for s in stats) == summary["acked_steps"]
        # The learners trained exactly what the limiter owed, as in the single-process loop.
        assert summary["updates"] == owed_updates(summary["acked_steps"])
        assert sampled == summary["updates"] * BATCH * SEQ
    finally:
        coordinator.close()
    check_bookkeeping(config, summary, tmp_path)
    assert summary["eval_return"] is not None and summary["best_checkpoint"]
    ckpt.verify_checkpoint(summary["best_checkpoint"])
    state = ckpt.load_state(summary["checkpoint"])
    assert len(state["shards"]) == 2 and state["counters"]["env_steps"] == 640


def test_two_learners_in_a_gloo_group_stay_identical(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        "run.steps=384",
        "resources.learners=2",
        "resources.eval_workers=0",
    )
    summary, coordinator = run(config, tmp_path, prefix())
    try:
        digests = ray.get([learner.digest.remote() for learner in coordinator.graph.learners])
        updates = ray.get([learner.ping.remote() for learner in coordinator.graph.learners])
    finally:
        coordinator.close()
    assert summary["updates"] == owed_updates(384) > 0
    assert updates == [summary["updates"]] * 2
    assert digests[0] == digests[1], "the learners' weights diverged"
    check_bookkeeping(config, summary, tmp_path)


def test_a_tolerance_that_could_stall_the_runtime_is_refused(tmp_path: Path) -> None:
    config = make_config(tmp_path, "replay.tolerance=40")
    with pytest.raises(ConfigError, match=r"replay.tolerance 40 is too small: .* needs >= 160"):
        Coordinator(config, tmp_path)


def test_a_resume_the_checkpoint_does_not_fit_is_refused_and_changes_nothing(
    tmp_path: Path,
) -> None:
    train(make_config(tmp_path, "run.steps=64"), tmp_path)  # no update: only a checkpoint
    saved = tree(tmp_path)
    assert sum("/shard-0/" in name and name.endswith(".chunk") for name in saved) >= 2
    config = make_config(tmp_path, "run.steps=256", "resources.replay_shards=2")
    with pytest.raises(ConfigError, match=r"checkpoint has 1 replay shards, this run 2"):
        Coordinator(config, tmp_path, resume=True, prefix=prefix())
    # Refused by the learners, once every actor has started: the error names the checkpoint
    # (not the learner's temporary copy), and no actor of the run is left behind.
    name, agent = prefix(), str(ckpt.latest_checkpoint(tmp_path) / "agent")  # type: ignore[operator]
    # A smaller replay as well: the shards' reload evicts, but deletes no file of a refused start.
    smaller = f"replay.capacity={CHUNK}"
    config = make_config(tmp_path, "run.steps=256", "dreamer.units=48", smaller)
    with pytest.raises(ValueError, match=rf"checkpoint '{agent}': the weights do not fit"):
        Coordinator(config, tmp_path, resume=True, prefix=name)
    assert tree(tmp_path) == saved  # config.yaml, checkpoints and every chunk file
    alive = [a for a in ray.util.list_named_actors(all_namespaces=True) if name in a["name"]]
    assert not alive, alive


def test_a_start_that_fails_after_the_actors_started_leaves_none_running(tmp_path: Path) -> None:
    # config.yaml cannot be written (a directory of that name; on a user's machine, a full disk):
    # the failure comes after every actor of the run started, and closes them all.
    (tmp_path / "config.yaml").mkdir()
    name = prefix()
    with pytest.raises(IsADirectoryError):
        Coordinator(make_config(tmp_path, "run.steps=64"), tmp_path, prefix=name)
    alive = [a for a in ray.util.list_named_actors(all_namespaces=True) if name in a["name"]]
    assert not alive, alive


def test_an_error_raised_in_an_actor_is_shown_as_its_own_message() -> None:
    @ray.remote
    def fails() -> None:
        raise ValueError("checkpoint 'run/agent': the weights do not fit")

    with pytest.raises(ValueError) as caught:
        ray.get(fails.remote())
    assert "ray::" in str(caught.value).splitlines()[0]  # Ray's text: the remote traceback
    assert error_message(caught.value) == "checkpoint 'run/agent': the weights do not fit"
    assert error_message(ValueError("two\nlines")) == "two\nlines"  # a local error: as it is


SHARD_WAIT = 96
"""Env steps :func:`kill_mid_run` waits beyond a shard kill's ``after_steps`` for the moment
with unreported samples (the coordinator may not see one on a loaded machine)."""


def kill_mid_run(
    config: Config, run_dir: Path, kills: list[tuple[str, int]]
) -> tuple[dict[str, Any], Coordinator, dict[str, Any]]:
    """Run in a thread; ``ray.kill`` each named actor of ``kills`` (``(victim, after_steps)``,
    in order) once ``after_steps`` steps are in and a learner call is in flight; a replay shard
    preferably once the coordinator has counted samples of that call that the learners have not
    reported yet (the hardest moment for the run's bookkeeping; if it has not come within
    ``SHARD_WAIT`` more steps, the shard is killed anyway). The victim ``"replay-shard"`` is the
    shard that served the most samples so far (streams land on shards by a hash of random
    names: a shard may hold nothing).

    Meanwhile the coordinator's count of sampled steps is watched: it must never go back (a
    restarted shard's limiter forgets samples; the run must not, or pacing would owe them again).
    Returns the summary, the coordinator (to close) and what was seen at the last kill: the
    coordinator's ``updates`` and the latest checkpoint's learner ``ckpt_updates``.
    """
    name = prefix()
    coordinator = Coordinator(config, run_dir, prefix=name)
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["summary"] = coordinator.run()
        except BaseException as err:  # reported below
            out["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    seen: dict[str, Any] = {}
    counts = [0.0]

    def ready(steps: float, shard: bool) -> bool:
        served = sum(s.get("limiter_samples", 0.0) for s in coordinator.stats)
        now = coordinator.counters.env_steps
        hard = served > coordinator.reported_samples() or now >= steps + SHARD_WAIT
        return now >= steps and coordinator.train_refs is not None and (hard or not shard)

    def watch(steps: float, shard: bool, seconds: float) -> None:
        """Until ``steps`` env steps are in and the moment is :func:`ready`, or the run ends."""
        deadline = time.monotonic() + seconds
        while thread.is_alive() and not ready(steps, shard):
            assert time.monotonic() < deadline, "the run made no progress"
            counts.append(coordinator.sampled())
            time.sleep(0.01)

    try:
        for victim, after_steps in kills:
            watch(after_steps, victim.startswith("replay-shard"), 120)
            assert thread.is_alive(), f"the run ended before {victim} was killed: {out}"
            latest = ckpt.latest_checkpoint(run_dir)
            seen = {
                "updates": coordinator.counters.updates,
                "ckpt_updates": ckpt.load_state(latest)["learner"]["updates"] if latest else None,
            }
            if victim == "replay-shard":
                served = [s.get("limiter_samples", 0.0) for s in coordinator.stats]
                victim = f"replay-shard-{served.index(max(served))}"
            ray.kill(ray.get_actor(f"{name}{victim}", namespace="wm_ray_test"))
        watch(math.inf, False, 240)
        if "error" in out:
            raise AssertionError(f"run failed after killing {kills}: {out.get('error')}")
        drops = [(a, b) for a, b in itertools.pairwise(counts) if b < a]
        assert not drops, f"the run's sampled steps went back: {drops}"
    except BaseException:
        coordinator.close()
        raise
    return out["summary"], coordinator, seen


def test_a_killed_worker_and_shard_are_restarted_and_no_acknowledged_step_is_lost(
    tmp_path: Path,
) -> None:
    config = make_config(
        tmp_path,
        "run.steps=512",
        "resources.env_workers=2",
        "resources.replay_shards=2",
        "resources.eval_workers=0",
    )
    kills = [("env-worker-0", 160), ("replay-shard", 288)]
    summary, coordinator, _ = kill_mid_run(config, tmp_path, kills)
    try:
        assert summary["restarts"]["env-worker"] == summary["restarts"]["replay-shard"] == 1
        acked = sum(ray.get([shard.acknowledged.remote() for shard in coordinator.graph.shards]))
    finally:
        coordinator.close()
    # A restarted shard reloads every acknowledged chunk from disk; a killed worker's
    # acknowledged chunks are counted; so the shards hold exactly the counted steps.
    assert acked == summary["acked_steps"] == summary["env_steps"] == 512
    check_bookkeeping(config, summary, tmp_path)


def test_a_killed_learner_is_restored_from_the_last_checkpoint(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        "run.steps=512",
        "run.checkpoint_every=128",
        "resources.eval_workers=0",
    )
    summary, coordinator, seen = kill_mid_run(config, tmp_path, [("learner-0", 288)])
    try:
        assert summary["restarts"]["learner"] == 1
        learner_updates = ray.get(coordinator.graph.learners[0].ping.remote())
    finally:
        coordinator.close()
    # The new learner continued from a checkpoint's update count, not from zero: beyond the
    # updates it made after the restart it carries at least the checkpoint's seen at the kill.
    assert seen["ckpt_updates"] is not None and seen["ckpt_updates"] > 0
    after_restart = summary["updates"] - seen["updates"]
    assert learner_updates - after_restart >= seen["ckpt_updates"]
    assert summary["env_steps"] == summary["acked_steps"] == 512


def test_a_run_the_cluster_cannot_hold_fails_naming_what_is_missing(tmp_path: Path) -> None:
    config = make_config(tmp_path, "resources.gpus_per_learner=1", "resources.placement_timeout=2")
    with pytest.raises(ConfigError, match=r"needs CPU [\d.]+, GPU 1 .* the cluster has .* GPU 0"):
        Coordinator(config, tmp_path, prefix=prefix())
