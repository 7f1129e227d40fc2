"""The Gymnasium Robotics backend and the generic per-step metric channel (``metric/<name>``)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from wm_ray.config_io import build_config
from wm_ray.envs import gymnasium_env, robotics
from wm_ray.envs.base import metric_names
from wm_ray.envs.fake import FakeFactory
from wm_ray.envs.registry import list_envs, make_env, resolve_env
from wm_ray.envs.vector import EnvFactory, VectorEnv
from wm_ray.loops.collect import collect
from wm_ray.loops.driver import Driver
from wm_ray.loops.evaluate import evaluate, merge_evaluations
from wm_ray.loops.schedule import RunCounters, Schedule, run_pacer
from wm_ray.metrics import read_jsonl

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gymnasium_robotics") is None, reason="needs gymnasium-robotics"
)
FETCH = "robotics:FetchReach-v4"


class ReachAgent:
    """Moves the gripper toward the goal (``gain`` 0: stands still); records what it was given."""

    def __init__(self, layout: dict[str, slice], gain: float) -> None:
        self.goal, self.gain = layout["desired_goal"], gain
        self.seen_keys: set[str] = set()

    def init_policy(self, batch_size: int) -> None:
        return None

    def policy(self, carry: Any, obs: dict[str, np.ndarray], mode: str = "explore") -> Any:
        self.seen_keys |= set(obs)
        vector = obs["vector"]
        move = np.clip(self.gain * (vector[:, self.goal] - vector[:, 0:3]), -1.0, 1.0)
        action = np.concatenate([move, np.zeros((len(vector), 1), np.float32)], axis=1)
        return carry, action.astype(np.float32), {}


def _layout() -> dict[str, slice]:
    env = make_env(FETCH)
    try:
        return robotics.vector_layout(env)
    finally:
        env.close()


def test_fetch_spaces_and_vector_layout_match_the_raw_env() -> None:
    env = make_env(FETCH, seed=5)
    raw = gym.make("FetchReach-v4")
    assert env.observation_space["vector"].shape == (16,)
    assert env.observation_space["vector"].dtype == np.float32
    assert env.action_space == gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    layout = robotics.vector_layout(env)
    assert list(layout) == ["observation", "desired_goal", "achieved_goal"]
    assert layout["desired_goal"] == slice(10, 13) and layout["achieved_goal"] == slice(13, 16)
    obs, _ = env.reset()
    expected, _ = raw.reset(seed=5)
    for _ in range(2):
        for key, part in layout.items():
            np.testing.assert_allclose(obs["vector"][part], expected[key], rtol=1e-6, atol=1e-7)
        action = np.array([0.5, -0.3, 0.2, 0.0], np.float32)
        obs, *_ = env.step(action)
        expected, *_ = raw.step(action)
    assert metric_names(env) == ("success",)
    env.close()
    raw.close()


def test_fetch_ends_by_truncation_at_50_steps_never_termination() -> None:
    env = make_env(FETCH, seed=0)
    env.reset()
    for step in range(1, 51):
        _, _, terminated, truncated, info = env.step(np.zeros(4, np.float32))
        assert not terminated and truncated == (step == 50)
        assert info["wm_ray.metrics"] == {"success": float(info["is_success"])}
    env.close()
    short = make_env(FETCH, seed=0, time_limit=3)
    short.reset()
    ends = [short.step(np.zeros(4, np.float32))[2:4] for _ in range(3)]
    assert ends == [(False, False), (False, False), (False, True)]
    short.close()


def test_same_seed_same_first_observation() -> None:
    first = [make_env(FETCH, seed=s).reset()[0]["vector"] for s in (7, 7, 8)]
    np.testing.assert_array_equal(first[0], first[1])
    assert not np.array_equal(first[0][10:13], first[2][10:13]), "another seed, another goal"


def test_pixels_add_a_small_rendered_image() -> None:
    env = make_env(FETCH, seed=0, pixels=True, image_size=16)
    obs, _ = env.reset()
    assert obs["image"].shape == (16, 16, 3) and obs["image"].dtype == np.uint8
    assert obs["image"].std() > 0 and obs["vector"].shape == (16,)
    env.close()


@pytest.mark.parametrize(
    ("env_id", "use"),
    [
        ("FetchReach-v1", "FetchReach-v4"),
        ("robotics:HandReach-v0", "HandReach-v3"),
        ("robotics:HandManipulateBlock-v0", "HandManipulateBlock-v1"),
        ("FetchPush-v2", "FetchPush-v4"),
        ("HalfCheetah-v3", "HalfCheetah-v5"),
        ("Ant-v2", "Ant-v5"),
        ("robotics:Ant-v3", "mujoco:Ant-v5"),
    ],
)
def test_legacy_ids_are_refused_naming_the_id_to_use(env_id: str, use: str) -> None:
    with pytest.raises(ValueError, match=f"{env_id.split(':')[-1]!r}.*{use}"):
        make_env(env_id)


def test_ids_route_to_the_robotics_backend_and_list_only_runnable_ones() -> None:
    ids = robotics.list_ids()
    assert {FETCH, "robotics:HandReach-v3", "robotics:PointMaze_UMaze-v3"} <= set(ids)
    assert "robotics:FetchReach-v1" not in ids and "robotics:HalfCheetah-v3" not in ids
    assert set(ids) <= set(list_envs())
    assert resolve_env("FetchPickAndPlace-v4")[0].name == "robotics"
    assert resolve_env("CartPole-v1")[0].name == "gymnasium"
    assert (
        not gymnasium_env.owns("FetchReach-v4") and "FetchReach-v4" not in gymnasium_env.list_ids()
    )


def test_cartpole_does_not_import_gymnasium_robotics() -> None:
    code = (
        "import sys, wm_ray; env = wm_ray.make_env('CartPole-v1'); env.reset(seed=0);"
        "print([m for m in ('gymnasium_robotics', 'mujoco') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout + result.stderr


@pytest.mark.parametrize("mode", ["serial", "subprocess"])
def test_success_metric_reaches_the_driver_but_not_the_policy_or_sinks(mode: Any) -> None:
    layout = _layout()
    stored: list[dict[str, np.ndarray]] = []
    with VectorEnv(EnvFactory(FETCH), 2, seed=0, mode=mode) as venv:
        assert venv.metric_names == ("success",)
        first = venv.reset()
        assert first["metric/success"].shape == (2,) and first["metric/success"].dtype == np.float32
        results = {}
        for gain in (10.0, 0.0):
            agent = ReachAgent(layout, gain)
            driver = Driver(venv, agent, sinks=(stored.append,))  # type: ignore[arg-type]
            driver.run(episodes=2)
            episodes = driver.episodes.pop()
            assert len(episodes) >= 2 and all(ep["length"] == 50 for ep in episodes)
            results[gain] = [ep["metrics"]["success"] for ep in episodes]
            assert not any(key.startswith("metric/") for key in agent.seen_keys)
    assert results[10.0] == [1.0] * len(results[10.0]), results
    assert np.mean(results[0.0]) <= 0.25, results
    assert stored and not any(key.startswith("metric/") for step in stored for key in step)


def test_env_without_metrics_has_no_metric_keys_anywhere() -> None:
    with VectorEnv(FakeFactory("fake:vector-discrete", episode_length=3), 2, seed=0) as venv:
        assert venv.metric_names == ()
        assert not any(key.startswith("metric/") for key in venv.reset())

        class Zero:
            def init_policy(self, n: int) -> None:
                return None

            def policy(self, carry: Any, obs: Any, mode: str = "explore") -> Any:
                return carry, np.zeros(len(obs["vector"]), np.int64), {}

        driver = Driver(venv, Zero())  # type: ignore[arg-type]
        driver.run(episodes=2)
        assert all(
            set(ep) == {"stream", "return", "length", "terminal"} for ep in driver.episodes.pop()
        )
        result = evaluate(Zero(), venv, episodes=2)  # type: ignore[arg-type]
    assert set(result) == {"eval/return", "eval/length", "eval/episodes", "returns"}


def test_eval_success_and_merged_eval_workers() -> None:
    with VectorEnv(EnvFactory(FETCH), 2, seed=3) as venv:
        good = evaluate(ReachAgent(_layout(), 10.0), venv, episodes=2)  # type: ignore[arg-type]
        still = evaluate(ReachAgent(_layout(), 0.0), venv, episodes=2)  # type: ignore[arg-type]
    assert good["eval/success"] == 1.0 and good["episode_metrics"] == {"success": [1.0, 1.0]}
    merged = merge_evaluations([good, still])
    assert merged["eval/episodes"] == 4
    assert merged["eval/success"] == pytest.approx(
        np.mean([1.0, 1.0, *still["episode_metrics"]["success"]])
    )


def test_schedule_logs_episode_success_means_per_line() -> None:
    config = build_config([], ["logging.every=100", "logging.progress=false"])
    schedule = Schedule(config, RunCounters(), run_pacer(config))
    schedule.episode(-10.0, 50, metrics={"success": 1.0})
    schedule.episode(-50.0, 50, metrics={"success": 0.0})
    assert schedule.line(0, 0, 0)["episode/success"] == 0.5
    schedule.episode(-50.0, 50)
    assert "episode/success" not in schedule.line(0, 0, 0)


def test_collect_logs_episode_success_and_replay_has_no_metric(tmp_path: Path) -> None:
    config = build_config(
        ["debug"],
        [
            "run.model=random",
            f"env.id={FETCH}",
            "env.num_envs=2",
            "run.steps=120",
            "logging.every=60",
            "logging.progress=false",
            "logging.tensorboard=false",
            "replay.chunk_len=8",
        ],
    )
    summary = collect(config, tmp_path, progress=False)
    lines = read_jsonl(tmp_path / "metrics.jsonl")
    logged = [line["episode/success"] for line in lines if "episode/success" in line]
    assert logged and 0.0 <= logged[-1] <= 1.0 and "episode/return" in lines[-1]
    assert summary["episodes"] == 2 and 0.0 <= summary["mean_success"] <= 1.0
    assert not any(key.startswith("metric") for key in summary["sample_shapes"])
    assert (
        json.loads((tmp_path / "summary.json").read_text())["mean_success"]
        == summary["mean_success"]
    )
