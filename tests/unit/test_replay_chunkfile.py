"""On-disk chunk files: durability, exact reload, and corruption detection with quarantine."""

from __future__ import annotations

import json
import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from wm_ray.config import ReplayConfig
from wm_ray.replay import CorruptChunkError, Replay, load_chunk_file, read_chunk_header


def make_chunk(start: int, length: int = 8, sid: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(start + 1000 * sid)
    t = np.arange(start, start + length)
    return {
        "image": rng.integers(0, 256, (length, 6, 6, 3), dtype=np.uint8),
        "vector": np.stack([np.full(length, sid), t], -1).astype(np.float32),
        "action": rng.uniform(-1, 1, (length, 2)).astype(np.float32),
        "reward": rng.normal(size=length).astype(np.float32),
        "is_first": (t % 19) == 0,
        "is_last": (t % 19) == 18,
        "is_terminal": np.zeros(length, bool),
    }


def config(**kw: object) -> ReplayConfig:
    base = {"chunk_len": 8, "min_size": 16, "samples_per_insert": 2.0, "seq_len": 6}
    base["batch_size"] = 3
    return ReplayConfig(**{**base, **kw})  # type: ignore[arg-type]


def fill(replay: Replay, chunks: int = 12, streams: int = 2) -> None:
    for k in range(chunks):
        for s in range(streams):
            replay.add_chunk(f"w/{s} é", k, make_chunk(8 * k, sid=s))


def files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.chunk"))


def test_chunk_file_is_complete_when_add_returns(tmp_path: Path) -> None:
    replay = Replay(config(), tmp_path)
    chunk = make_chunk(0)
    replay.add_chunk("env/0: ü" + "x" * 300, 7, chunk)
    (path,) = files(tmp_path)
    assert len(path.name) < 150 and not list(tmp_path.glob(".*"))
    header, data = load_chunk_file(path)
    assert (header.stream, header.index, header.seq, header.length) == (
        "env/0: ü" + "x" * 300,
        7,
        0,
        8,
    )
    for key, value in chunk.items():
        assert data[key].dtype == value.dtype
        np.testing.assert_array_equal(data[key], value)


def test_save_reload_is_exact(tmp_path: Path) -> None:
    first = Replay(config(capacity=150), tmp_path, seed=3)
    fill(first)
    for _ in range(5):
        first.sample()
    state = json.loads(json.dumps(first.state_dict()))
    second = Replay(config(capacity=150), tmp_path, seed=99)
    second.load_state_dict(state)
    assert second.corrupt == []
    assert second.stats() == first.stats()
    assert second.limiter.state_dict() == first.limiter.state_dict()
    assert second.manifest() == first.manifest()
    old, new = list(first.store.oldest_first()), list(second.store.oldest_first())
    assert [(c.stream, c.index, c.seq, c.start_step) for c in old] == [
        (c.stream, c.index, c.seq, c.start_step) for c in new
    ]
    for a, b in zip(old, new):
        for key in a.data:
            assert a.data[key].dtype == b.data[key].dtype
            np.testing.assert_array_equal(a.data[key], b.data[key])
    for seq_len in (6, 11):
        for _ in range(3):
            x, y = first.sample(seq_len=seq_len), second.sample(seq_len=seq_len)
            for key in x:
                np.testing.assert_array_equal(x[key], y[key])


def test_reload_reapplies_capacity_and_deletes_evicted_files(tmp_path: Path) -> None:
    fill(Replay(config(capacity=1000), tmp_path))
    assert len(files(tmp_path)) == 24
    smaller = Replay(config(capacity=80), tmp_path)
    assert len(smaller) == 80 and smaller.stats()["evicted_chunks"] == 14
    assert [c.seq for c in smaller.store.oldest_first()] == list(range(14, 24))
    assert smaller.stats()["inserted_total"] == 24 * 8
    # The evicted files stay until the run goes on: a start refused later loses no data ...
    assert len(files(tmp_path)) == 24
    assert len(Replay(config(capacity=1000), tmp_path)) == 24 * 8
    # ... and go at the first insert (or checkpoint: state_dict, manifest).
    smaller.add_chunk("later", 0, make_chunk(0, sid=5))
    assert len(files(tmp_path)) == 10
    assert len(files(tmp_path)) == 10
    again = Replay(config(capacity=40), tmp_path)
    assert len(again) == 40 and len(files(tmp_path)) == 10
    again.state_dict()
    assert len(files(tmp_path)) == 5
    # A data set preloaded at the start (replay.preload) evicts the run's oldest chunk the same way.
    preloading = Replay(config(capacity=40), tmp_path)
    assert preloading.preload_chunk("data set", 0, make_chunk(0, sid=7)) == 8
    assert len(files(tmp_path)) == 5
    preloading.manifest()
    assert len(files(tmp_path)) == 4


def test_reload_without_state_continues_counters_without_limiter_debt(tmp_path: Path) -> None:
    fill(Replay(config(capacity=1000), tmp_path), chunks=4)
    replay = Replay(config(capacity=1000), tmp_path)
    replay.add_chunk("later", 0, make_chunk(0, sid=5))
    assert replay.store.at(replay.store.tail - 1).seq == 8
    assert replay.limiter.inserts == 72 and replay.limiter.debt == 2.0 * 8


def test_truncated_chunk_file_is_reported_and_quarantined(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fill(Replay(config(capacity=1000), tmp_path), chunks=3)
    victim = files(tmp_path)[2]
    victim.write_bytes(victim.read_bytes()[:-100])
    with pytest.raises(CorruptChunkError, match=rf"{victim.name}.*truncated"):
        load_chunk_file(victim)
    with caplog.at_level(logging.WARNING):
        replay = Replay(config(capacity=1000), tmp_path)
    ((moved, reason),) = replay.corrupt
    assert moved == tmp_path / "corrupt" / victim.name and moved.exists()
    assert "truncated" in reason and not victim.exists()
    assert victim.name in caplog.text and "truncated" in caplog.text
    assert len(replay) == 5 * 8 and replay.stats()["corrupt_chunks"] == 1


@pytest.mark.parametrize("where", ["payload", "header"])
def test_bit_flip_is_detected(tmp_path: Path, where: str) -> None:
    fill(Replay(config(capacity=1000), tmp_path), chunks=2, streams=1)
    victim = files(tmp_path)[0]
    raw = bytearray(victim.read_bytes())
    header = read_chunk_header(victim)
    at = header.payload_start + 700 if where == "payload" else 40
    raw[at] ^= 0x10
    victim.write_bytes(bytes(raw))
    expected = "checksum mismatch in key 'image'" if where == "payload" else "header checksum"
    with pytest.raises(CorruptChunkError, match=expected) as info:
        load_chunk_file(victim)
    assert str(victim) in str(info.value)
    replay = Replay(config(capacity=1000), tmp_path)
    assert [p.name for p, _ in replay.corrupt] == [victim.name]
    assert expected in replay.corrupt[0][1]
    assert [c.index for c in replay.store.oldest_first()] == [1]


def test_bad_magic_extra_bytes_and_interrupted_write_are_quarantined(tmp_path: Path) -> None:
    fill(Replay(config(capacity=1000), tmp_path), chunks=3, streams=1)
    a, b, _ = files(tmp_path)
    a.write_bytes(b"NOTCHUNK" + a.read_bytes()[8:])
    b.write_bytes(b.read_bytes() + b"junk")
    temp = tmp_path / f".{b.name}.123.tmp"
    temp.write_bytes(b"WMRCHUNK partial")
    replay = Replay(config(capacity=1000), tmp_path)
    reasons = {p.name: r for p, r in replay.corrupt}
    assert "bad magic" in reasons[a.name]
    assert "extra data" in reasons[b.name]
    assert "interrupted" in reasons[temp.name]
    assert len(list((tmp_path / "corrupt").iterdir())) == 3
    assert len(replay) == 8


def test_inconsistent_header_is_reported(tmp_path: Path) -> None:
    fill(Replay(config(capacity=1000), tmp_path), chunks=1, streams=1)
    (victim,) = files(tmp_path)
    raw = victim.read_bytes()
    text = raw[20 : read_chunk_header(victim).payload_start]
    bad = text.replace(b'"length":8', b'"length":9')
    prefix = struct.pack("<8sHHII", b"WMRCHUNK", 1, 0, len(bad), zlib.crc32(bad))
    victim.write_bytes(prefix + bad + raw[20 + len(text) :])
    with pytest.raises(CorruptChunkError, match="do not fit length 9"):
        load_chunk_file(victim)


def test_quarantine_counts_survive_a_state_round_trip(tmp_path: Path) -> None:
    fill(Replay(config(capacity=1000), tmp_path), chunks=2, streams=1)
    victim = files(tmp_path)[0]
    victim.write_bytes(victim.read_bytes()[:10])
    first = Replay(config(capacity=1000), tmp_path)
    assert first.stats()["corrupt_chunks"] == 1
    second = Replay(config(capacity=1000), tmp_path)
    assert second.corrupt == []
    second.load_state_dict(first.state_dict())
    assert second.stats()["corrupt_chunks"] == 1
    assert sorted(p.name for p in (tmp_path / "corrupt").iterdir()) == [victim.name]
