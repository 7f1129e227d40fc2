"""StreamWriter: vector-env steps to per-env chunks, and episode statistics."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from wm_ray.config import ReplayConfig
from wm_ray.episodes import EpisodeStats
from wm_ray.replay import Replay, StreamWriter

N = 3


def vector_steps(steps: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Steps of N envs; env i resets every 5 + i steps; ``vector`` = (env, step, episode)."""
    rng = np.random.default_rng(seed)
    out = []
    episode = np.zeros(N)
    for t in range(steps):
        is_first = np.array([t % (5 + i) == 0 for i in range(N)])
        is_last = np.array([t % (5 + i) == 4 + i for i in range(N)])
        episode += is_first
        out.append(
            {
                "image": np.full((N, 4, 4, 3), t % 256, np.uint8),
                "vector": np.stack([np.arange(N), np.full(N, t), episode], -1).astype(np.float32),
                "action": rng.integers(0, 3, N),
                "reward": np.where(is_first, 0.0, 1.0 + np.arange(N)).astype(np.float32),
                "is_first": is_first,
                "is_last": is_last,
                "is_terminal": is_last & (np.arange(N) == 0),
            }
        )
    return out


def test_stream_writer_emits_one_chunk_per_env_every_chunk_len_steps() -> None:
    calls: list[tuple[str, int, dict[str, np.ndarray]]] = []
    writer = StreamWriter(lambda s, i, c: calls.append((s, i, c)) or len(calls), N, 4, "w7")
    results = [writer.add(step) for step in vector_steps(9)]
    assert [len(r) for r in results] == [0, 0, 0, 3, 0, 0, 0, 3, 0]
    assert results[7] == [4, 5, 6]
    assert [(s, i) for s, i, _ in calls] == [(f"w7-{e}", k) for k in range(2) for e in range(N)]
    for stream, index, chunk in calls:
        env = int(stream.split("-")[1])
        assert chunk["image"].shape == (4, 4, 4, 3) and chunk["image"].dtype == np.uint8
        np.testing.assert_array_equal(chunk["vector"][:, 0], env)
        np.testing.assert_array_equal(chunk["vector"][:, 1], np.arange(4 * index, 4 * index + 4))
    assert writer.steps_added == 9 * N and writer.chunks_emitted == 6


def test_stream_writer_flush_emits_partial_chunks_and_continues_indices() -> None:
    calls: list[tuple[str, int, int]] = []
    writer = StreamWriter(lambda s, i, c: calls.append((s, i, len(c["reward"]))), N, 4)
    for step in vector_steps(6):
        writer.add(step)
    writer.flush()
    assert writer.flush() == []
    for step in vector_steps(4):
        writer.add(step)
    assert [c for c in calls if c[0] == "env-1"] == [
        ("env-1", 0, 4),
        ("env-1", 1, 2),
        ("env-1", 2, 4),
    ]


def test_episode_stats_track_returns_lengths_and_terminals() -> None:
    stats = EpisodeStats(N, [f"env-{i}" for i in range(N)])
    for step in vector_steps(20):
        stats.add(step)
    episodes = stats.pop()
    assert stats.pop() == []
    by_stream = {f"env-{i}": [e for e in episodes if e["stream"] == f"env-{i}"] for i in range(N)}
    for i in range(N):
        period = 5 + i
        assert len(by_stream[f"env-{i}"]) == 20 // period
        for episode in by_stream[f"env-{i}"]:
            assert episode["length"] == period - 1
            assert episode["return"] == pytest.approx((period - 1) * (1.0 + i))
            assert episode["terminal"] == (i == 0)


def test_stream_writer_rejects_wrong_env_axis_and_missing_keys() -> None:
    writer = StreamWriter(lambda s, i, c: None, N, 4)
    step = vector_steps(1)[0]
    with pytest.raises(ValueError, match=r"leading env axis of 3"):
        writer.add({**step, "reward": np.zeros(N + 1, np.float32)})
    with pytest.raises(ValueError, match="is_last"):
        writer.add({k: v for k, v in step.items() if k != "is_last"})


def test_stream_writer_into_replay_gives_consistent_sequences() -> None:
    cfg = ReplayConfig(chunk_len=4, min_size=0, samples_per_insert=0.0, cross_episodes=True)
    replay = Replay(cfg, seed=0)
    writer = StreamWriter(replay.add_chunk, N, cfg.chunk_len, "w0")
    acks = [ack for step in vector_steps(40) for ack in writer.add(step)]
    assert sum(acks) == len(replay) == 40 * N
    batch = replay.sample(64, 7)
    env, t, episode = np.moveaxis(batch["vector"], -1, 0)
    assert (env == env[:, :1]).all() and (np.diff(t, axis=1) == 1).all()
    assert batch["is_first"][:, 1:][np.diff(episode, axis=1) != 0].all()


def test_replay_package_imports_only_numpy_and_stdlib() -> None:
    root = Path(__file__).resolve().parents[2] / "wm_ray" / "replay"
    banned = ("ray", "torch")
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in banned, f"{path.name} imports {name}"
