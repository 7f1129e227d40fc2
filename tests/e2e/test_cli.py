"""The wm-ray command line, run as a user runs it (a real subprocess, real envs, real files)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from wm_ray.config_io import load_config
from wm_ray.metrics import read_jsonl
from wm_ray.replay import Replay


def wm_ray(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wm_ray.cli", *args], capture_output=True, text=True, cwd=cwd
    )


def test_config_typo_fails_with_one_line_naming_the_valid_key() -> None:
    result = wm_ray("show-config", "--set", "replay.capacty=10")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "capacity" in lines[0], result.stderr


def test_show_config_prints_the_resolved_config() -> None:
    result = wm_ray("show-config", "--configs", "atari", "--set", "replay.capacity=200000")
    assert result.returncode == 0, result.stderr
    assert "id: ALE/Pong-v5" in result.stdout and "capacity: 200000" in result.stdout
    result = wm_ray("show-config", "--env", "dmc:walker-walk")
    assert "id: dmc:walker-walk" in result.stdout


def test_list_envs_shows_all_four_backends() -> None:
    result = wm_ray("list", "envs")
    assert result.returncode == 0, result.stderr
    for env_id in ("CartPole-v1", "ALE/Pong-v5", "dmc:walker-walk", "HalfCheetah-v5"):
        assert env_id in result.stdout.split(), env_id
    assert "random" in wm_ray("list", "models").stdout
    assert "atari" in wm_ray("list", "backends").stdout


def test_collect_pong_persists_replay_that_reloads(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = wm_ray(
        "collect",
        "--configs",
        "atari",
        "debug",
        "--set",
        "env.num_envs=2",
        "--steps",
        "300",
        "--run-dir",
        str(run_dir),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env_steps"] >= 300
    config = load_config(run_dir)
    assert config.env.id == "ALE/Pong-v5" and config.env.num_envs == 2
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert records and all("step" in r and "time" in r for r in records)
    replay = Replay(config.replay, directory=run_dir / "replay" / "shard-0")
    assert len(replay) == summary["env_steps"]  # every collected step was stored and reloads
    batch = replay.sample(2, 8)
    assert batch["image"].shape == (2, 8, 64, 64, 3) and batch["image"].dtype == np.uint8


def test_unknown_env_on_the_command_line_is_one_clear_line(tmp_path: Path) -> None:
    result = wm_ray("collect", "--env", "CartPol-v1", "--steps", "10", "--run-dir", str(tmp_path))
    assert result.returncode == 2
    assert "CartPole-v1" in result.stderr and "Traceback" not in result.stderr
