"""The ``dataset:`` env backend: a ``wm-ray ingest`` data set played as an env, so a family
that learns from video trains on a data set alone. Real files on disk, a real training run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wm_ray.config_io import build_config
from wm_ray.envs.registry import make_env
from wm_ray.ingest.core import ingest
from wm_ray.metrics import read_jsonl


def _frames(source: int, length: int) -> np.ndarray:
    """(length, 8, 8, 3) frames whose pixel (0, 0) holds (source, step)."""
    out = np.zeros((length, 8, 8, 3), np.uint8)
    out[:, 0, 0, 0] = source
    out[:, 0, 0, 1] = np.arange(length)
    return out


def _data(tmp: Path) -> Path:
    src = tmp / "src"
    src.mkdir()
    np.savez(src / "a.npz", image=_frames(1, 6), reward=np.arange(6, dtype=np.float32),
             is_terminal=np.arange(6) == 5)  # fmt: skip
    np.savez(src / "b.npz", image=_frames(2, 5))  # a video: ends by truncation
    np.savez(src / "c.npz", image=_frames(3, 1))  # one frame: nothing to step to
    ingest([src], tmp / "data", chunk_len=4)
    return tmp / "data"


def _episode(env: object) -> tuple[list[tuple[int, int]], list[float], bool]:
    obs, _ = env.reset()  # type: ignore[attr-defined]
    seen = [(int(obs["image"][0, 0, 0]), int(obs["image"][0, 0, 1]))]
    rewards = []
    while True:
        obs, reward, terminated, truncated, _ = env.step(0)  # type: ignore[attr-defined]
        seen.append((int(obs["image"][0, 0, 0]), int(obs["image"][0, 0, 1])))
        rewards.append(reward)
        if terminated or truncated:
            return seen, rewards, terminated


def test_the_env_replays_every_episode_with_its_ends_and_rewards(tmp_path: Path) -> None:
    env = make_env(f"dataset:{_data(tmp_path)}", seed=3)
    assert env.observation_space["image"].shape == (8, 8, 3) and env.action_space.n == 1
    episodes = {}
    for _ in range(4):  # two epochs over the two playable episodes
        seen, rewards, terminated = _episode(env)
        source = seen[0][0]
        assert [s for s, _ in seen] == [source] * len(seen)
        assert [t for _, t in seen] == list(range(len(seen)))  # every frame, in order
        episodes.setdefault(source, []).append((len(seen), rewards, terminated))
    assert sorted(episodes) == [1, 2] and all(len(v) == 2 for v in episodes.values())
    assert episodes[1][0] == (6, [1.0, 2.0, 3.0, 4.0, 5.0], True)  # the data's termination
    assert episodes[2][0] == (5, [0.0] * 4, False)  # a video's end is a truncation


def test_the_seed_draws_the_order_of_the_episodes(tmp_path: Path) -> None:
    data = _data(tmp_path)
    orders = {seed: _episode(make_env(f"dataset:{data}", seed=seed))[0][0][0] for seed in range(12)}
    assert set(orders.values()) == {1, 2}  # different seeds start from different episodes
    again = _episode(make_env(f"dataset:{data}", seed=5))[0][0][0]
    assert again == orders[5]


def test_bad_data_sets_are_refused_naming_them(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such directory"):
        make_env(f"dataset:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no chunk files"):
        make_env(f"dataset:{tmp_path / 'empty'}")
    with pytest.raises(ValueError, match=r"env.image_size=16 differs from .*\(8, 8, 3\)"):
        make_env(f"dataset:{_data(tmp_path)}", image_size=16)


def test_genie_trains_on_a_data_set_alone(tmp_path: Path) -> None:
    from wm_ray.loops.train import train

    data = _data(tmp_path)
    config = build_config(
        ["genie", "genie_debug", "debug"],
        [
            f"env.id=dataset:{data}", "env.num_envs=2", "run.device=cpu", "run.steps=96",
            "replay.seq_len=4", "replay.min_size=16", "replay.samples_per_insert=4",
            "genie.start.dynamics=4", "eval.every=0", "logging.tensorboard=false",
            "logging.every=32",
        ],
    )  # fmt: skip
    summary = train(config, tmp_path / "run")
    assert summary["env_steps"] == 96 and summary["updates"] > 4
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert any("train/loss/dynamics/total" in r for r in records)
