"""Sequence validity, incremental valid-start masks and the selectors."""

from __future__ import annotations

import numpy as np
import pytest

from wm_ray.config import ReplayConfig
from wm_ray.replay import EmptyReplayError, Replay, SequenceIndex, valid_starts

L = 8  # chunk length used throughout


def make_stream(sid: int, steps: int, rng: np.random.Generator, p_reset: float) -> dict:
    """Steps of one stream; ``vector`` encodes (stream id, step counter, episode id)."""
    is_first = rng.random(steps) < p_reset
    is_first[0] = True
    episode = np.cumsum(is_first)
    is_last = np.zeros(steps, bool)
    is_last[:-1] = is_first[1:]
    t = np.arange(steps)
    return {
        "image": np.broadcast_to((t % 251).astype(np.uint8)[:, None, None, None], (steps, 3, 3, 1)),
        "vector": np.stack([np.full(steps, sid), t, episode], -1).astype(np.float32),
        "action": rng.integers(0, 4, steps),
        "reward": rng.normal(size=steps).astype(np.float32),
        "is_first": is_first,
        "is_last": is_last,
        "is_terminal": is_last & (rng.random(steps) < 0.5),
    }


def chunk_of(stream: dict, k: int) -> dict:
    return {key: value[k * L : (k + 1) * L] for key, value in stream.items()}


def config(**kw: object) -> ReplayConfig:
    base = {"capacity": 10_000, "chunk_len": L, "min_size": 0, "samples_per_insert": 0.0}
    return ReplayConfig(**{**base, **kw})  # type: ignore[arg-type]


def brute_force_starts(replay: Replay, seq_len: int) -> set[tuple[str, int, int]]:
    """(stream, chunk index, offset) of every valid start, step by step from stored chunks."""
    valid = set()
    for chunk in replay.store.oldest_first():
        for offset in range(chunk.length):
            flags, key, i = [], (chunk.stream, chunk.index), offset
            while len(flags) < seq_len:
                c = replay.store.get(*key)
                if c is None:
                    break
                flags.append(bool(c.is_first[i]))
                i += 1
                if i == c.length:
                    key, i = (key[0], key[1] + 1), 0
            if len(flags) == seq_len and (replay.config.cross_episodes or not any(flags[1:])):
                valid.add((chunk.stream, chunk.index, offset))
    return valid


def fill_many_streams(replay: Replay, rng: np.random.Generator, streams: int = 12) -> None:
    """Chunks of many streams, interleaved, some arriving out of order and some never (gaps)."""
    data = [make_stream(s, 30 * L, rng, p_reset=0.08) for s in range(streams)]
    order = [(s, k) for k in range(30) for s in range(streams) if rng.random() > 0.1]
    for j in range(0, len(order) - 1, 7):
        order[j], order[j + 1] = order[j + 1], order[j]
    for s, k in order:
        replay.add_chunk(f"s{s}", k, chunk_of(data[s], k))


@pytest.mark.parametrize("cross_episodes", [True, False])
def test_sequences_never_cross_episode_boundaries_without_is_first(cross_episodes: bool) -> None:
    rng = np.random.default_rng(0)
    replay = Replay(config(capacity=2000, cross_episodes=cross_episodes), seed=1)
    fill_many_streams(replay, rng)
    assert replay.stats()["evicted_chunks"] > 0
    for _ in range(100):
        batch = replay.sample(16, 20)
        sid, t, episode = np.moveaxis(batch["vector"], -1, 0)
        assert (sid == sid[:, :1]).all(), "a sequence mixed streams"
        assert (np.diff(t, axis=1) == 1).all(), "a sequence skipped or repeated steps"
        changed = np.diff(episode, axis=1) != 0
        assert batch["is_first"][:, 1:][changed].all(), "episode change without is_first"
        if not cross_episodes:
            assert not batch["is_first"][:, 1:].any()
            assert not changed.any()
        assert (batch["image"][..., 0, 0, 0] == (t % 251)).all()


def test_sequences_span_linked_chunks_but_not_gaps() -> None:
    rng = np.random.default_rng(1)
    stream = make_stream(0, 6 * L, rng, p_reset=0.0)
    replay = Replay(config(), seed=0)
    for k in (0, 1, 2, 4, 5):  # chunk 3 never arrives
        replay.add_chunk("s0", k, chunk_of(stream, k))
    seq_len = 12
    expected = brute_force_starts(replay, seq_len)
    # A start needs 12 steps ahead in linked chunks: chunk 0 reaches into 1 and 2, chunk 1 only
    # into 2 (offsets 0..4); chunk 2 would need the missing chunk 3; chunk 4 spans into 5.
    reach = 2 * L - seq_len
    assert expected == {("s0", 0, i) for i in range(L)} | {
        ("s0", k, i) for k in (1, 4) for i in range(reach + 1)
    }
    batch = replay.sample(4000, seq_len)
    t = batch["vector"][..., 1]
    assert (np.diff(t, axis=1) == 1).all()
    assert not ((t >= 3 * L) & (t < 4 * L)).any()
    starts = {int(x) for x in t[:, 0]}
    assert {s for s in starts if s < L and s > reach}, "no sequence spanned three chunks"
    assert starts == {k * L + i for _, k, i in expected}


def test_chunk_arriving_later_links_to_predecessors() -> None:
    stream = make_stream(0, 4 * L, np.random.default_rng(2), p_reset=0.0)
    replay = Replay(config(), seed=0)
    for k in (0, 1, 3):
        replay.add_chunk("s0", k, chunk_of(stream, k))
    before = replay.sequence_index(2 * L + 1).total
    replay.add_chunk("s0", 2, chunk_of(stream, 2))
    assert before == 0
    assert (
        replay.sequence_index(2 * L + 1).total
        == len(brute_force_starts(replay, 2 * L + 1))
        == 2 * L
    )


def test_new_stream_never_links_to_another_stream() -> None:
    rng = np.random.default_rng(3)
    replay = Replay(config(), seed=0)
    replay.add_chunk("worker0-0", 0, chunk_of(make_stream(0, L, rng, 0.0), 0))
    replay.add_chunk("worker1-0", 1, chunk_of(make_stream(1, 2 * L, rng, 0.0), 1))
    assert not replay.can_sample(L + 1)
    assert replay.can_sample(L)


@pytest.mark.parametrize("cross_episodes", [True, False])
def test_incremental_valid_starts_match_full_recompute(cross_episodes: bool) -> None:
    rng = np.random.default_rng(4)
    replay = Replay(config(capacity=40 * L, cross_episodes=cross_episodes), seed=0)
    lengths = (1, 5, L, L + 1, 3 * L + 2)
    for seq_len in lengths:
        replay.sequence_index(seq_len)
    data = [make_stream(s, 40 * L, rng, p_reset=0.1) for s in range(3)]
    order = [(s, k) for k in range(40) for s in range(3)]
    rng.shuffle(order[: len(order) // 2])
    for step, (s, k) in enumerate(order):
        replay.add_chunk(f"s{s}", k, chunk_of(data[s], k))
        if step % 5:
            continue
        for seq_len in lengths:
            index = replay.sequence_index(seq_len)
            fresh = SequenceIndex(seq_len, cross_episodes, replay.store.head)
            fresh.build(replay.store.oldest_first())
            assert index.total == fresh.total == len(brute_force_starts(replay, seq_len))
            for chunk in replay.store.oldest_first():
                np.testing.assert_array_equal(index.offsets(chunk.pos), fresh.offsets(chunk.pos))
                np.testing.assert_array_equal(
                    index.offsets(chunk.pos), valid_starts(chunk, seq_len, cross_episodes)
                )


def test_uniform_selector_is_uniform_over_valid_starts() -> None:
    rng = np.random.default_rng(5)
    replay = Replay(config(cross_episodes=False), seed=0)
    stream = make_stream(0, 6 * L, rng, p_reset=0.1)
    for k in range(6):
        replay.add_chunk("s0", k, chunk_of(stream, k))
    valid = brute_force_starts(replay, 5)
    draws = 40_000
    t0 = replay.sample(draws, 5)["vector"][:, 0, 1].astype(int)
    counts = np.bincount(t0, minlength=6 * L)
    expected = np.zeros(6 * L)
    expected[[k * L + i for _, k, i in valid]] = draws / len(valid)
    assert (counts[expected == 0] == 0).all()
    sigma = np.sqrt(draws / len(valid))
    assert np.abs(counts - expected)[expected > 0].max() < 5 * sigma


def test_recency_selector_prefers_recent_data() -> None:
    rng = np.random.default_rng(6)
    stream = make_stream(0, 250 * L, rng, p_reset=0.0)
    means, recent_share = {}, {}
    for selector in ("uniform", "recency"):
        cfg = config(selector=selector, recency_fraction=0.75, recency_window=200)
        replay = Replay(cfg, seed=0)
        for k in range(250):
            replay.add_chunk("s0", k, chunk_of(stream, k))
        t0 = replay.sample(4000, 10)["vector"][:, 0, 1]
        means[selector] = t0.mean()
        recent_share[selector] = (t0 >= 250 * L - 200).mean()
    assert recent_share["uniform"] < 0.15
    # 75% from the window plus the window's share of the uniform quarter.
    assert 0.72 < recent_share["recency"] < 0.85
    assert means["recency"] > means["uniform"] + 300


def test_sample_keeps_dtypes_and_shapes() -> None:
    replay = Replay(config(), seed=0)
    stream = make_stream(0, 4 * L, np.random.default_rng(7), p_reset=0.0)
    for k in range(4):
        replay.add_chunk("s0", k, chunk_of(stream, k))
    batch = replay.sample(3, 10)
    for key, value in stream.items():
        assert batch[key].dtype == value.dtype, key
        assert batch[key].shape == (3, 10, *value.shape[1:]), key


def test_sample_without_valid_sequences_raises_clear_error() -> None:
    replay = Replay(config(), seed=0)
    assert not replay.can_sample(4)
    with pytest.raises(EmptyReplayError, match="no valid sequence of 4 steps"):
        replay.sample(2, 4)
    replay.add_chunk("s0", 0, chunk_of(make_stream(0, L, np.random.default_rng(8), 0.0), 0))
    assert replay.can_sample(L) and not replay.can_sample(L + 1)
