"""The run schedule both loops share, the run state both write, and the pacing rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wm_ray import metrics as M
from wm_ray.config_io import build_config
from wm_ray.loops.schedule import KINDS, RunCounters, Schedule, run_pacer
from wm_ray.replay import Pacer, ToleranceError
from wm_ray.rundir import checkpoint as ckpt
from wm_ray.rundir.paths import migrate_flat_replay, shard_directory


def _schedule(*overrides: str, counters: RunCounters | None = None) -> Schedule:
    config = build_config(
        [], ["eval.every=1000", "run.checkpoint_every=1500", "logging.every=400", *overrides]
    )
    return Schedule(config, counters or RunCounters(), run_pacer(config))


def _advance(schedule: Schedule, to: int) -> list[tuple[int, bool, bool]]:
    """Step the counters to ``to`` in steps of 256 (a round); what fell due, where."""
    due = []
    while schedule.counters.env_steps < to:
        schedule.counters.env_steps += 256
        evaluate, checkpoint = schedule.eval_due(), schedule.checkpoint_due()
        if evaluate or checkpoint:
            due.append((schedule.counters.env_steps, evaluate, checkpoint))
            schedule.checkpointed(evaluate)
    return due


def test_checkpoints_and_evaluations_fall_on_multiples_of_their_periods() -> None:
    due = _advance(_schedule(), 4000)
    # rounds of 256 steps: the first round at or past each multiple of 1000 / 1500
    assert due == [
        (1024, True, False),
        (1536, False, True),
        (2048, True, False),
        (3072, True, True),
        (4096, True, False),
    ]


def test_a_resumed_schedule_continues_the_grid_and_the_time() -> None:
    counters = RunCounters(env_steps=2048, seconds=100.0, updates=7)
    schedule = _schedule(counters=counters)
    assert (schedule.next_eval, schedule.next_ckpt, schedule.next_log) == (3000, 3000, 2448)
    assert schedule.elapsed() >= 100.0
    assert schedule.progress.origin[1] == 2048  # fps and ETA count the steps since the resume


def test_evaluations_track_the_best_and_the_end_needs_its_own() -> None:
    schedule = _schedule()
    c = schedule.counters
    c.env_steps = 1000
    assert schedule.evaluated({M.EVAL_RETURN: 10.0}, 1000)
    c.env_steps = 2000
    assert not schedule.evaluated({M.EVAL_RETURN: 5.0}, 2000)
    assert (c.best_eval_return, c.best_eval_step, c.last_eval_return, c.evals) == (10.0, 1000, 5, 2)
    assert schedule.eval_record({M.EVAL_RETURN: 5.0, "returns": [5.0]}) == {
        M.EVAL_RETURN: 5.0,
        M.EVAL_BEST_RETURN: 10.0,
    }
    assert not schedule.fresh_eval_needed()
    c.env_steps = 2100
    assert schedule.fresh_eval_needed()
    assert _schedule("eval.episodes=0").next_eval is None


def test_a_line_holds_the_runtime_metrics_and_the_means_since_the_last_line() -> None:
    schedule = _schedule()
    schedule.counters.env_steps = 2048
    schedule.episode(10.0, 10, lag=1.0)
    schedule.episode(20.0, 20, lag=3.0)
    schedule.trained({"train/loss/world_model/total": 2.0}, updates=3)
    schedule.trained({"train/loss/world_model/total": 4.0}, updates=1)
    line = schedule.line(inserted=2048, sampled=512, stored=2000, extra={"x/y": 1})
    assert line[M.STEP] == 2048 and line[M.UPDATES] == 4 and line[M.EPISODES] == 2
    assert line[M.EPISODE_RETURN] == 15.0 and line[M.WEIGHTS_LAG] == 2.0
    assert line["train/loss/world_model/total"] == 3.0 and line["x/y"] == 1
    assert line[M.REPLAY_RATIO] == 0.25 and line[M.REPLAY_SIZE] == 2000
    assert line[M.REPLAY_DEBT] == schedule.pacer.debt(2048, 512) > 0
    again = schedule.line(inserted=2048, sampled=512, stored=2000)
    assert M.EPISODE_RETURN not in again and "train/loss/world_model/total" not in again


def test_counters_of_older_run_states_get_the_new_fields() -> None:
    old = {"env_steps": 500, "updates": 3, "episodes": 2, "evals": 1, "seconds": 9.0}
    counters = RunCounters.from_state(old)
    assert counters.env_steps == 500 and counters.weights_version == -1
    assert counters.restarts == dict.fromkeys(KINDS, 0)
    assert RunCounters.from_state(counters.state()) == counters


def test_old_single_process_states_read_as_one_shard(tmp_path: Path) -> None:
    counters = RunCounters(env_steps=300, updates=12).state()
    old = {"counters": counters, "replay": {"version": 1}, "replay_manifest": {"steps": 300}}
    state = ckpt.read_run_state(old)
    assert state["format"] == ckpt.STATE_FORMAT
    assert state["shards"] == [{"version": 1}] and state["shard_manifests"] == [{"steps": 300}]
    assert state["learner"] == {"updates": 12, "version": -1, "sampled_floor": 0}
    runtime = {"counters": counters, "learner": {}, "shards": [{}], "shard_manifests": [{}]}
    assert ckpt.read_run_state(runtime)["format"] == ckpt.STATE_FORMAT
    with pytest.raises(ckpt.CheckpointError, match="format 99"):
        ckpt.read_run_state({"format": 99, "counters": counters})
    # the old flat chunk directory moves into shard 0 (file names unchanged)
    flat = tmp_path / "replay"
    flat.mkdir()
    (flat / "0000_w0-a-0_000000.chunk").write_bytes(b"x")
    assert migrate_flat_replay(tmp_path) == 1
    assert (shard_directory(tmp_path, 0) / "0000_w0-a-0_000000.chunk").read_bytes() == b"x"
    assert migrate_flat_replay(tmp_path) == 0


def test_the_pacer_owes_updates_and_admits_inserts_within_its_tolerance() -> None:
    pacer = Pacer(samples_per_insert=2.0, min_size=100, batch_steps=50, tolerance=120.0)
    assert pacer.debt(99, 0) == 0.0 and pacer.owed(99, 0) == 0
    assert pacer.admits(99, 1000, 0), "the prefill is never held back"
    assert pacer.debt(200, 0) == 200.0 and pacer.owed(200, 0) == 4
    assert pacer.owed(200, 150) == 1 and pacer.owed(200, 250) == 0
    assert pacer.admits(200, 10, 100) and not pacer.admits(200, 11, 100)
    off = Pacer(samples_per_insert=0.0, min_size=0, batch_steps=50, tolerance=0.0)
    assert off.owed(10**6, 0) == 0 and off.admits(10**6, 10**6, 0)


def test_one_tolerance_formula_for_both_loops() -> None:
    config = build_config([], ["replay.chunk_len=16", "env.num_envs=2", "resources.env_workers=3"])
    b, t, r = config.replay.batch_size, config.replay.seq_len, config.replay.samples_per_insert
    assert run_pacer(config).tolerance == b * t + r * 16 * 2
    assert run_pacer(config, writers=3).tolerance == b * t + r * 16 * 2 * 3
    small = build_config([], ["replay.tolerance=40"])
    with pytest.raises(ToleranceError, match=r"replay.tolerance 40 is too small: .* needs >="):
        run_pacer(small)


def test_a_run_state_round_trips_through_json() -> None:
    state = ckpt.run_state(RunCounters().state(), {"updates": 0}, [{}], [{}], ["w0-x"])
    assert ckpt.read_run_state(json.loads(json.dumps(state))) == state
