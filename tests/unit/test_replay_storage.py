"""Capacity, RAM budget, eviction order, duplicates and input validation of ``Replay``."""

from __future__ import annotations

import numpy as np
import pytest

from wm_ray.config import ReplayConfig
from wm_ray.replay import Replay, parse_bytes


def make_chunk(start: int, length: int = 8, sid: int = 0, side: int = 4) -> dict[str, np.ndarray]:
    t = np.arange(start, start + length)
    return {
        "image": np.full((length, side, side, 3), sid, np.uint8),
        "vector": np.stack([np.full(length, sid), t], -1).astype(np.float32),
        "action": np.zeros(length, np.int64),
        "reward": np.ones(length, np.float32),
        "is_first": t == 0,
        "is_last": np.zeros(length, bool),
        "is_terminal": np.zeros(length, bool),
    }


def config(**kw: object) -> ReplayConfig:
    base = {"chunk_len": 8, "min_size": 0, "samples_per_insert": 0.0, "seq_len": 4}
    return ReplayConfig(**{**base, **kw})  # type: ignore[arg-type]


def stored_keys(replay: Replay) -> list[tuple[str, int]]:
    return [(c.stream, c.index) for c in replay.store.oldest_first()]


def test_capacity_in_steps_is_never_exceeded_and_oldest_evicted_first() -> None:
    replay = Replay(config(capacity=100), seed=0)
    inserted = []
    for k in range(30):
        for s in range(3):
            length = 8 if (k + s) % 4 else 5
            replay.add_chunk(f"s{s}", k, make_chunk(8 * k, length, s))
            inserted.append((f"s{s}", k, length))
            assert len(replay) <= 100
            # What is stored is exactly the newest suffix of the insertion order.
            keys = stored_keys(replay)
            assert keys == [(s_, k_) for s_, k_, _ in inserted[-len(keys) :]]
            newest_that_fit, steps = 0, 0
            for _, _, n in reversed(inserted):
                if steps + n > 100:
                    break
                steps += n
                newest_that_fit += 1
            assert len(keys) == newest_that_fit
    stats = replay.stats()
    assert (
        stats["steps"] == len(replay) == sum(n for *_, n in inserted[-len(stored_keys(replay)) :])
    )
    assert stats["evicted_chunks"] == len(inserted) - stats["chunks"]
    assert stats["inserted_total"] == sum(n for *_, n in inserted)


def test_ram_budget_holds() -> None:
    one_chunk = sum(v.nbytes for v in make_chunk(0).values())
    replay = Replay(config(capacity=10**6, ram_budget="20KiB"), seed=0)
    for k in range(50):
        replay.add_chunk("s0", k, make_chunk(8 * k))
        stored = sum(v.nbytes for c in replay.store.oldest_first() for v in c.data.values())
        assert replay.stats()["bytes"] == stored <= 20 * 1024
    assert replay.stats()["chunks"] == (20 * 1024) // one_chunk


def test_duplicate_add_is_idempotent(tmp_path) -> None:
    replay = Replay(config(capacity=1000), tmp_path, seed=0)
    assert replay.add_chunk("s0", 0, make_chunk(0)) == 8
    assert replay.add_chunk("s0", 0, make_chunk(0)) == 8
    assert replay.add_chunk("s0", 1, make_chunk(8)) == 8
    stats = replay.stats()
    assert (stats["steps"], stats["chunks"], stats["duplicate_chunks"]) == (16, 2, 1)
    assert stats["inserted_total"] == replay.limiter.inserts == 16
    assert len(list(tmp_path.glob("*.chunk"))) == 2


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1000000", 1_000_000),
        (4096, 4096),
        ("512MiB", 512 * 2**20),
        ("8GiB", 8 * 2**30),
        ("1.5GB", 1_500_000_000),
        ("64 kib", 64 * 1024),
        ("100B", 100),
    ],
)
def test_ram_budget_parses_units(text: str | int, value: int) -> None:
    assert parse_bytes(text) == value


@pytest.mark.parametrize("text", ["", "lots", "8 GiBs", "-1GB", "0", "1.5XB", "GiB"])
def test_bad_ram_budget_is_a_clear_error(text: str) -> None:
    with pytest.raises(ValueError, match=r"invalid ram_budget .*'512MiB'.*'8GiB'") as info:
        Replay(config(ram_budget=text))
    assert repr(text) in str(info.value)


def test_bad_chunks_are_rejected_naming_the_problem() -> None:
    replay = Replay(config(capacity=1000), seed=0)
    chunk = make_chunk(0)
    del chunk["is_first"]
    with pytest.raises(ValueError, match="is_first"):
        replay.add_chunk("s0", 0, chunk)
    chunk = make_chunk(0)
    chunk["reward"] = chunk["reward"][:5]
    with pytest.raises(ValueError, match="same leading time axis"):
        replay.add_chunk("s0", 0, chunk)
    with pytest.raises(ValueError, match="chunk index"):
        replay.add_chunk("s0", -1, make_chunk(0))
    replay.add_chunk("s0", 0, make_chunk(0))
    chunk = make_chunk(8)
    chunk["image"] = chunk["image"].astype(np.float32)
    with pytest.raises(ValueError, match=r"key 'image' has dtype float32"):
        replay.add_chunk("s0", 1, chunk)
    assert replay.stats()["chunks"] == 1


def test_stored_chunks_are_private_copies() -> None:
    replay = Replay(config(capacity=1000), seed=0)
    chunk = make_chunk(0)
    replay.add_chunk("s0", 0, chunk)
    chunk["image"][:] = 99
    assert (replay.sample(2, 4)["image"] == 0).all()


def test_stats_and_manifest_report_counts(tmp_path) -> None:
    replay = Replay(config(capacity=24), tmp_path, seed=0)
    for k in range(4):
        replay.add_chunk("s0", k, make_chunk(8 * k))
    replay.sample(2, 4)
    stats = replay.stats()
    assert stats["sampled_sequences"] == 2 and stats["sampled_steps"] == 8
    assert stats["evicted_chunks"] == 1 and stats["valid_sequences"] == 24 - 3
    manifest = replay.manifest()
    assert manifest["chunks"] == 3 and manifest["steps"] == 24
    assert manifest["files"] == sorted(p.name for p in tmp_path.glob("*.chunk"))


def test_redelivered_chunk_after_eviction_is_acknowledged_not_stored() -> None:
    replay = Replay(config(capacity=16), seed=0)
    for k in range(3):
        replay.add_chunk("s0", k, make_chunk(8 * k))
    assert stored_keys(replay) == [("s0", 1), ("s0", 2)]
    assert replay.add_chunk("s0", 0, make_chunk(0)) == 8
    assert stored_keys(replay) == [("s0", 1), ("s0", 2)]
    stats = replay.stats()
    assert stats["stale_chunks"] == 1 and stats["inserted_total"] == 24


def test_flags_are_stored_as_bool() -> None:
    replay = Replay(config(capacity=100), seed=0)
    chunk = make_chunk(0)
    chunk["is_last"] = chunk["is_last"].astype(np.int8)
    replay.add_chunk("s0", 0, chunk)
    assert replay.sample(1, 4)["is_last"].dtype == bool
