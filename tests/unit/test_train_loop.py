"""The single-process loop: train ratio, checkpoints, resume, corrupt-checkpoint refusal.

Uses the random agent (whose ``train`` performs no update) on a fake env, so these tests check
the loop's bookkeeping in seconds; learning is tested with the Dreamer family.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wm_ray.config_io import ConfigError, build_config, load_config
from wm_ray.loops.train import train
from wm_ray.metrics import read_jsonl
from wm_ray.rundir import checkpoint as ckpt
from wm_ray.rundir.open import resume_checkpoint


def small_config(run_dir: Path, steps: int, *extra: str):  # type: ignore[no-untyped-def]
    return build_config(
        ["debug"],
        [
            "run.model=random",
            "env.id=fake:vector-discrete",
            "env.num_envs=2",
            f"run.steps={steps}",
            f"run.run_dir={run_dir}",
            "run.checkpoint_every=200",
            "replay.min_size=100",
            "replay.samples_per_insert=8",
            "eval.every=300",
            "eval.episodes=2",
            "logging.every=100",
            "logging.progress=false",
            "logging.tensorboard=false",
            *extra,
        ],
    )


def test_updates_follow_the_train_ratio(tmp_path: Path) -> None:
    config = small_config(tmp_path, 1000)
    summary = train(config, tmp_path)
    b, t = config.replay.batch_size, config.replay.seq_len
    spi, min_size = config.replay.samples_per_insert, config.replay.min_size
    owed = spi * (summary["env_steps"] - min_size)
    # Steps reach replay a chunk per env at a time, so the ratio applies to inserted steps,
    # which trail env steps by less than chunk_len * num_envs; and replayed steps (B*T per
    # update) trail the owed samples by less than one batch.
    in_writer = config.replay.chunk_len * config.env.num_envs
    replayed = summary["updates"] * b * t
    assert owed - spi * in_writer - b * t < replayed <= owed


def test_run_writes_metrics_curve_checkpoint_and_config(tmp_path: Path) -> None:
    summary = train(small_config(tmp_path, 600), tmp_path)
    records = read_jsonl(tmp_path / "metrics.jsonl")
    steps = [r["step"] for r in records]
    assert steps == sorted(steps) and steps[-1] == 600
    assert any("eval/return" in r for r in records)
    assert all("time" in r for r in records)
    assert Path(summary["curve"]).stat().st_size > 0
    assert ckpt.latest_checkpoint(tmp_path) == Path(summary["checkpoint"])
    assert load_config(tmp_path).run.steps == 600


def test_resume_continues_counters_exactly(tmp_path: Path) -> None:
    first = train(small_config(tmp_path, 600), tmp_path)
    state = ckpt.load_state(ckpt.latest_checkpoint(tmp_path))  # type: ignore[arg-type]
    assert state["counters"]["env_steps"] == 600
    assert state["counters"]["updates"] == first["updates"]
    second = train(small_config(tmp_path, 1000), tmp_path, resume=True)
    assert second["env_steps"] == 1000
    assert second["episodes"] > first["episodes"] and second["updates"] > first["updates"]
    steps = [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")]
    assert steps == sorted(steps)  # the log continues where it stopped


def test_resume_refuses_a_changed_config_unless_asked(tmp_path: Path) -> None:
    train(small_config(tmp_path, 400), tmp_path)
    changed = small_config(tmp_path, 600, "replay.capacity=5000")
    with pytest.raises(ConfigError, match=r"replay\.capacity"):
        train(changed, tmp_path, resume=True)
    summary = train(changed, tmp_path, resume=True, allow_config_change=True)
    assert summary["env_steps"] == 600


def test_corrupt_checkpoint_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    train(small_config(tmp_path, 400), tmp_path)
    path = ckpt.latest_checkpoint(tmp_path)
    assert path is not None
    state = path / "state.json"
    data = json.loads(state.read_text())
    data["counters"]["env_steps"] = 10**9
    state.write_text(json.dumps(data))
    with pytest.raises(ckpt.CheckpointError, match=r"state\.json is corrupt"):
        train(small_config(tmp_path, 800), tmp_path, resume=True)
    (path / "meta.json").unlink()
    with pytest.raises(ckpt.CheckpointError, match=r"no meta\.json"):
        ckpt.load_state(path)


def test_resume_refuses_another_number_of_replay_shards(tmp_path: Path) -> None:
    train(small_config(tmp_path, 400), tmp_path)
    message = r"checkpoint has 1 replay shards, this run 2 \(resources.replay_shards\)"
    with pytest.raises(ConfigError, match=message):  # the check the Ray runtime makes
        resume_checkpoint(tmp_path, str(tmp_path), shards=2)
    changed = small_config(tmp_path, 600, "resources.replay_shards=2")
    with pytest.raises(ConfigError, match=message):
        train(changed, tmp_path, resume=True, allow_config_change=True)
    assert train(small_config(tmp_path, 600), tmp_path, resume=True)["env_steps"] == 600


def test_resume_without_a_checkpoint_is_an_error(tmp_path: Path) -> None:
    config = small_config(tmp_path, 400)
    (tmp_path / "config.yaml").parent.mkdir(exist_ok=True)
    from wm_ray.config_io import save_config

    save_config(config, tmp_path)
    with pytest.raises(ConfigError, match="no checkpoint"):
        train(config, tmp_path, resume=True)


def test_image_tasks_end_with_an_eval_video(tmp_path: Path) -> None:
    config = small_config(tmp_path, 200, "env.id=fake:image-discrete", "eval.every=0")
    summary = train(config, tmp_path)
    videos = sorted(Path(summary["videos"]).glob("eval-*.mp4"))
    assert videos and videos[0].stat().st_size > 1000


def test_best_evaluation_is_kept_as_its_own_checkpoint(tmp_path: Path) -> None:
    summary = train(small_config(tmp_path, 1000), tmp_path)
    evals = [r["eval/return"] for r in read_jsonl(tmp_path / "metrics.jsonl") if "eval/return" in r]
    assert summary["best_eval_return"] == max(evals)
    best = ckpt.find_checkpoint(tmp_path, "best")
    assert best is not None and best.name == "best"
    meta = ckpt.verify_checkpoint(best)
    assert meta["step"] == summary["best_eval_step"]
    assert ckpt.latest_checkpoint(tmp_path) != best  # latest and the rotation are separate
