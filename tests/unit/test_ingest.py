"""``wm-ray ingest`` (offline data into replay chunks) and ``replay.preload`` (into a run)."""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from wm_ray.cli import main
from wm_ray.config import ReplayConfig
from wm_ray.config_io import ConfigError
from wm_ray.ingest.core import IngestError, ingest
from wm_ray.replay import Replay, chunkfile
from wm_ray.replay.dataset import env_spec, iter_chunks, preload


def frames(file_id: int, length: int, size: int = 8) -> np.ndarray:
    """Frames whose channel 0 is the file id and channel 1 the time step."""
    out = np.zeros((length, size, size, 3), np.uint8)
    out[..., 0] = file_id
    out[..., 1] = np.arange(length)[:, None, None]
    out[..., 2] = 100
    return out


def streams(out: Path) -> dict[str, dict[str, np.ndarray]]:
    """The data set's streams, each with its chunks concatenated in index order."""
    parts: dict[str, list[tuple[int, dict[str, np.ndarray]]]] = {}
    for stream, index, data in iter_chunks(out):
        parts.setdefault(stream, []).append((index, data))
    return {
        s: {k: np.concatenate([d[k] for _, d in sorted(p, key=lambda x: x[0])]) for k in p[0][1]}
        for s, p in parts.items()
    }


def leftovers(out: Path) -> list[str]:
    """Hidden temporary files anywhere under ``out``."""
    return [str(p) for p in out.rglob(".*") if p.is_file()]


def make_npz(tmp: Path) -> Path:
    src = tmp / "src"
    src.mkdir()
    np.savez(
        src / "a.npz",
        image=frames(1, 20),
        action=np.arange(20) % 3,
        reward=np.linspace(0, 1, 20, dtype=np.float32),
        is_terminal=np.arange(20) == 19,
    )
    np.savez(src / "b.npz", frames=frames(2, 13), actions=np.full(12, 4))  # T-1 actions
    return src


def test_npz_round_trip_and_sequences_stay_in_one_file(tmp_path: Path) -> None:
    out = tmp_path / "data"
    summary = ingest([make_npz(tmp_path)], out, chunk_len=8)
    assert summary["ingested"] == 2 and summary["steps"] == 33 and not summary["skipped"]
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["labels"] is True and meta["action_count"] == 5 and meta["image_shape"] == [8, 8, 3]
    assert meta["total_steps"] == 33 and meta["total_episodes"] == 2 and meta["complete"]
    assert [s["steps"] for s in meta["sources"]] == [20, 13]
    by_file = {int(d["image"][0, 0, 0, 0]): d for d in streams(out).values()}
    a, b = by_file[1], by_file[2]
    assert np.array_equal(a["image"], frames(1, 20)) and np.array_equal(b["image"], frames(2, 13))
    assert a["action"].dtype == np.int64 and list(a["action"][:4]) == [0, 1, 2, 0]
    assert list(b["action"]) == [4] * 12 + [0]
    assert np.allclose(a["reward"], np.linspace(0, 1, 20)) and not b["reward"].any()
    for d in (a, b):
        assert d["is_first"][0] and not d["is_first"][1:].any()
        assert d["is_last"][-1] and not d["is_last"][:-1].any()
    assert a["is_terminal"][-1] and not b["is_terminal"].any()  # a video/file end is truncation
    for cross in (False, True):
        config = ReplayConfig(batch_size=64, seq_len=6, min_size=1, cross_episodes=cross)
        replay = Replay(config)
        assert preload([replay], [out]) == 33 and replay.preloaded_steps == 33
        batch = replay.sample()
        assert (batch["image"][..., 0] == batch["image"][:, :1, ..., 0]).all()  # one file each
        assert (np.diff(batch["image"][:, :, 0, 0, 1].astype(int), axis=1) == 1).all()
        assert replay.stats()["inserted_steps"] == 0  # preloaded steps are not env steps


def test_video_and_image_folders(tmp_path: Path) -> None:
    import imageio.v2 as imageio
    from PIL import Image

    src = tmp_path / "src"
    (src / "clips").mkdir(parents=True)
    video = frames(3, 12, size=16)
    with imageio.get_writer(src / "clips" / "v.mp4", fps=10, macro_block_size=1) as w:
        for frame in video:
            w.append_data(frame)
    for name, n in (("ep_a", 11), ("ep_b", 5)):
        (src / name).mkdir()
        for t in range(n):  # frame10 after frame9: natural order
            Image.fromarray(frames(7, n, size=16)[t]).save(src / name / f"frame{t}.png")
    out = tmp_path / "data"
    summary = ingest([src], out, image_size=8, chunk_len=4)
    assert summary["ingested"] == 3 and not summary["skipped"], summary
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["labels"] is False and meta["actions"] is None and meta["action_count"] is None
    assert meta["image_shape"] == [8, 8, 3] and meta["total_steps"] == 28
    data = {s["path"]: s["stream"] for s in meta["sources"]}
    loaded = streams(out)
    got = loaded[data[str(src / "clips" / "v.mp4")]]
    assert got["image"].shape == (12, 8, 8, 3)
    assert np.abs(got["image"].astype(int) - frames(3, 12)).mean() < 4  # lossy codec
    assert not got["action"].any() and not got["is_terminal"].any() and got["is_last"][-1]
    ep_a = loaded[data[str(src / "ep_a")]]
    assert list(ep_a["image"][:, 0, 0, 1]) == list(range(11))
    gray = ingest([src / "ep_b"], tmp_path / "gray", grayscale=True)
    assert json.loads(Path(gray["dataset"]).read_text())["image_shape"] == [16, 16, 1]


def test_bad_files_are_named_and_skipped_while_good_ones_land(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    src = make_npz(tmp_path)
    (src / "corrupt.npz").write_bytes(b"PK\x03\x04 not really a zip")
    np.savez(src / "floats.npz", image=np.zeros((4, 8, 8, 3), np.float32))
    np.savez(src / "noframes.npz", action=np.zeros(4))
    (src / "junk.mp4").write_bytes(b"hello")
    (src / "mixed").mkdir()
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(src / "mixed" / "0.png")
    Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(src / "mixed" / "1.png")
    np.savez(src / "wrong_size.npz", image=frames(5, 4, size=6), action=np.zeros(4, int))
    import imageio.v2 as imageio

    with imageio.get_writer(src / "cut.mkv", fps=10, codec="ffv1", macro_block_size=1) as w:
        for frame in frames(6, 30):
            w.append_data(frame)
    whole = (src / "cut.mkv").read_bytes()
    (src / "cut.mkv").write_bytes(whole[: len(whole) // 2])
    out = tmp_path / "data"
    assert main(["ingest", str(src), "--out", str(out), "--chunk-len", "8"]) == 0
    err = caplog.text
    skipped = json.loads((out / "dataset.json").read_text())["skipped"]
    reasons = {Path(s["path"]).name: s["reason"] for s in skipped}
    bad = {"corrupt.npz", "floats.npz", "noframes.npz", "junk.mp4", "mixed", "wrong_size.npz"}
    bad.add("cut.mkv")
    assert set(reasons) == bad, reasons
    assert "unreadable" in reasons["corrupt.npz"] and "float32" in reasons["floats.npz"]
    assert "mixed sizes" in reasons["mixed"] and "--image-size" in reasons["wrong_size.npz"]
    assert "truncated video" in reasons["cut.mkv"] and "unreadable" in reasons["junk.mp4"]
    assert all(f"skipped {src / name}" in err for name in reasons)
    assert json.loads((out / "dataset.json").read_text())["total_steps"] == 33
    assert len(streams(out)) == 2 and not leftovers(out)
    # nothing good at all: exit 1 and no data set directory left behind
    empty = tmp_path / "none"
    assert main(["ingest", str(src / "corrupt.npz"), "--out", str(empty)]) == 1
    assert not empty.exists()


def test_a_failed_write_leaves_no_partial_files(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    src = make_npz(tmp_path)
    real = os.replace
    calls = {"chunks": 0}

    def failing_replace(a: Any, b: Any) -> None:
        if str(b).endswith(chunkfile.SUFFIX):
            calls["chunks"] += 1
            if calls["chunks"] == 4:  # the second file's second chunk
                raise OSError(28, "No space left on device")
        real(a, b)

    monkeypatch.setattr(chunkfile.os, "replace", failing_replace)
    out = tmp_path / "data"
    with pytest.raises(OSError, match="No space"):
        ingest([src], out, chunk_len=8)
    monkeypatch.setattr(chunkfile.os, "replace", real)
    assert not leftovers(out)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["complete"] is False and meta["total_steps"] == 20  # the first file only
    assert sum(len(d["image"]) for d in streams(out).values()) == 20


def test_rerun_into_a_non_empty_dir_is_refused_unless_append(tmp_path: Path) -> None:
    src = make_npz(tmp_path)
    out = tmp_path / "data"
    ingest([src / "a.npz"], out)
    with pytest.raises(IngestError, match="not empty"):
        ingest([src / "b.npz"], out)
    assert main(["ingest", str(src / "b.npz"), "--out", str(out)]) == 2
    # a source cut off by a kill: whole chunk files that dataset.json does not list
    (stream, _, data), *_ = iter_chunks(out)
    chunkfile.write_chunk_file(out / "replay" / "shard-0", "ingest-killed-0", 0, 99, 0, data)
    (out / "replay" / "shard-0" / ".x.chunk.1.tmp").write_bytes(b"partial")
    assert {s for s, _, _ in iter_chunks(out)} == {stream}  # preloading ignores them
    summary = ingest([src / "b.npz"], out, append=True)
    assert summary["total_steps"] == 33 and not leftovers(out)
    headers = sorted(chunkfile.list_chunk_files(out / "replay" / "shard-0")[0])
    assert {chunkfile.read_chunk_header(h).stream for h in headers} == set(streams(out))
    assert len(headers) == 2
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("x")
    with pytest.raises(IngestError, match="not a data set"):
        ingest([src], tmp_path / "other", append=True)


def test_hdf5_reads_with_h5py_and_names_the_package_without(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "e.h5"
    path.write_bytes(b"\x89HDF")
    arrays = {"obs": frames(4, 6)[..., 0], "actions": np.arange(6)}  # (T, H, W): one channel

    class File(dict):  # the part of h5py.File the reader uses
        def __init__(self, name: str, mode: str) -> None:
            super().__init__({k: _Dataset(v) for k, v in arrays.items()})

        def __enter__(self) -> File:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    monkeypatch.setitem(sys.modules, "h5py", types.SimpleNamespace(File=File))
    summary = ingest([path], tmp_path / "data")
    assert summary["ingested"] == 1
    (data,) = streams(tmp_path / "data").values()
    assert data["image"].shape == (6, 8, 8, 1) and list(data["action"]) == list(range(6))
    monkeypatch.setitem(sys.modules, "h5py", None)
    summary = ingest([path], tmp_path / "none")
    assert "pip install h5py" in summary["skipped"][0][1]


class _Dataset:
    def __init__(self, value: np.ndarray) -> None:
        self.value = value

    def __getitem__(self, key: object) -> np.ndarray:
        return self.value


def _train_config(run_dir: Path, *extra: str):  # type: ignore[no-untyped-def]
    from wm_ray.config_io import build_config

    return build_config(
        ["debug"],
        [
            "run.model=random",
            "env.id=fake:image-discrete",
            "env.image_size=8",
            "env.num_envs=2",
            "run.steps=128",
            f"run.run_dir={run_dir}",
            "replay.min_size=32",
            "replay.samples_per_insert=1",
            "replay.seq_len=4",
            "eval.every=0",
            "eval.episodes=1",
            "logging.every=64",
            "logging.progress=false",
            "logging.tensorboard=false",
            *extra,
        ],
    )


def test_a_training_run_preloads_the_data_set(tmp_path: Path) -> None:
    from wm_ray.loops.train import Trainer, train
    from wm_ray.metrics import read_jsonl

    ingest([make_npz(tmp_path)], tmp_path / "data", chunk_len=8)
    config = _train_config(tmp_path / "run", f"replay.preload={tmp_path / 'data'}")
    summary = train(config, tmp_path / "run")
    final = read_jsonl(tmp_path / "run" / "metrics.jsonl")[-1]
    assert final["replay/preloaded_steps"] == 33 and summary["env_steps"] == 128
    assert final["replay/size"] == 33 + 128
    assert not any("ingest" in p.name for p in (tmp_path / "run" / "replay").rglob("*.chunk"))
    longer = _train_config(tmp_path / "run", f"replay.preload={tmp_path / 'data'}", "run.steps=192")
    resumed = train(longer, tmp_path / "run", resume=True, allow_config_change=True)
    final = read_jsonl(tmp_path / "run" / "metrics.jsonl")[-1]  # preloaded again, not twice
    assert resumed["env_steps"] == 192 and final["replay/preloaded_steps"] == 33
    assert final["replay/size"] == 33 + 192
    trainer = Trainer(config, tmp_path / "run2")
    try:
        assert sum(s.preloaded_steps for s in trainer.replay.shards) == 33
        assert trainer.replay.inserted == 0
    finally:
        trainer.close()
    bad = _train_config(tmp_path / "run3", "env.image_size=16", f"replay.preload=[{tmp_path}/data]")
    with pytest.raises(ConfigError, match=r"image shape \(8, 8, 3\) differs from the env's"):
        train(bad, tmp_path / "run3")
    assert not (tmp_path / "run3").exists()


def test_unlabeled_data_takes_the_env_action_form(tmp_path: Path) -> None:
    from gymnasium import spaces

    src = tmp_path / "src"
    src.mkdir()
    np.save(src / "clip.npy", frames(1, 10))
    ingest([src], tmp_path / "data")
    obs = spaces.Dict({"image": spaces.Box(0, 255, (8, 8, 3), np.uint8)})
    spec = env_spec(obs, spaces.Box(-1, 1, (2,), np.float32))
    replay = Replay(ReplayConfig(min_size=1, seq_len=4, batch_size=2))
    assert preload([replay], [tmp_path / "data"], spec) == 10
    assert replay.sample()["action"].shape == (2, 4, 2)
