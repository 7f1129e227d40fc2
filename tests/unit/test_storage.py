"""Run directories on a filesystem URI (:mod:`wm_ray.rundir.sync`).

The "remote" is a real directory reached through a ``file://`` URI (pyarrow's LocalFileSystem),
so every byte really goes through pyarrow; no object store is reachable from the test machines.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_train_loop import small_config  # the same tiny random-agent run (tests/unit on path)

from wm_ray.config_io import ConfigError, build_config, load_config
from wm_ray.loops.collect import collect
from wm_ray.loops.train import train
from wm_ray.metrics import read_jsonl
from wm_ray.replay import Replay
from wm_ray.rundir import checkpoint as ckpt
from wm_ray.rundir.open import load_run_config, resolve_run_dir
from wm_ray.rundir.paths import is_uri, staging_dir
from wm_ray.rundir.sync import RunStorage


class RecordingStorage(RunStorage):
    """A RunStorage that also records the order of its uploads and downloads."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self.uploads: list[str] = []
        self.downloads: list[str] = []

    def upload_file(self, local: str | Path, rel: str) -> None:
        self.uploads.append(rel)
        super().upload_file(local, rel)

    def download_file(self, rel: str, local: str | Path) -> Path:
        self.downloads.append(rel)
        return super().download_file(rel, local)


def remote(tmp_path: Path) -> tuple[str, Path]:
    """A ``file://`` URI and the directory it names."""
    root = tmp_path / "remote" / "run"
    return root.as_uri(), root


def save(run_dir: Path, step: int, tag: str | None = None, payload: bytes | None = None) -> Path:
    """A real checkpoint with an ``agent/`` of two files (one binary, 2 MiB)."""

    def save_agent(directory: Path) -> None:
        directory.mkdir(parents=True)
        (directory / "weights.bin").write_bytes(payload or os.urandom(2 << 20))
        (directory / "agent.json").write_text(json.dumps({"step": step}))

    return ckpt.save_checkpoint(run_dir, step, save_agent, {"step": step}, "run: {}\n", tag=tag)


def test_uris_are_told_from_plain_paths() -> None:
    for uri in ("s3://bucket/runs/a", "gs://b/p", "hdfs://host:8020/p", "file:///tmp/x"):
        assert is_uri(uri), uri
    for path in ("/abs/path", "runs/x", "./s3://x", "file:/tmp/x", ""):
        assert not is_uri(path), path
    assert not is_uri(Path("/tmp/x"))
    local, storage = resolve_run_dir("runs/plain")
    assert local == Path("runs/plain") and storage is None


@pytest.mark.parametrize("uri", ["foo://bucket/run", "file://relative/path"])
def test_a_bad_uri_is_refused_naming_it_and_what_is_valid(uri: str) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_run_dir(uri)
    message = str(err.value)
    assert repr(uri) in message
    for valid in ("plain path", "file:///", "s3://", "gs://", "hdfs://", "abfs://"):
        assert valid in message, valid


def test_staging_dir_is_named_after_the_uri(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WM_RAY_STAGING", str(tmp_path / "stage"))
    a = staging_dir("s3://bucket/runs/walker")
    assert a.parent == tmp_path / "stage" and a.name.startswith("walker-")
    assert len(a.name) == len("walker-") + 8
    assert staging_dir("s3://bucket/runs/walker/") == a
    assert staging_dir("s3://other/runs/walker") != a
    monkeypatch.delenv("WM_RAY_STAGING")
    assert staging_dir("s3://bucket/runs/walker").parent == Path.home() / ".cache/wm_ray/staging"


def test_files_round_trip_through_the_storage(tmp_path: Path) -> None:
    uri, root = remote(tmp_path)
    storage = RunStorage(uri)
    data = os.urandom((8 << 20) + 12345)  # more than one 8 MiB block
    (tmp_path / "big.bin").write_bytes(data)
    storage.upload_file(tmp_path / "big.bin", "a/b/big.bin")
    assert (root / "a/b/big.bin").read_bytes() == data
    assert storage.exists("a/b/big.bin") and storage.exists("a") and not storage.exists("nope")
    assert storage.list_files("a") == {"b/big.bin": len(data)}
    assert storage.list_dirs() == ["a"]
    back = storage.download_file("a/b/big.bin", tmp_path / "down" / "big.bin")
    assert back.read_bytes() == data
    storage.upload_file(tmp_path / "big.bin", "x.bin")
    storage.delete_file("x.bin")
    storage.delete_dir("a")
    assert storage.list_files() == {}
    assert not list(root.rglob("*.upload")), "a temporary upload name was left behind"
    with pytest.raises(FileNotFoundError):
        storage.read_bytes("a/b/big.bin")


def test_tree_upload_resends_only_what_changed(tmp_path: Path) -> None:
    uri, root = remote(tmp_path)
    storage = RunStorage(uri)
    tree = tmp_path / "tb"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("a")
    (tree / "sub" / "b.txt").write_text("b")
    (tree / ".hidden.tmp").write_text("in progress")
    (tree / "c.tmp").write_text("in progress")
    assert storage.upload_tree(tree, "tb") == ["tb/a.txt", "tb/sub/b.txt"]
    assert storage.upload_tree(tree, "tb") == []
    with (tree / "a.txt").open("a") as file:
        file.write("more")
    (tree / "new.txt").write_text("new")
    assert storage.upload_tree(tree, "tb") == ["tb/a.txt", "tb/new.txt"]
    assert (root / "tb/a.txt").read_text() == "amore"
    assert sorted(storage.list_files("tb")) == ["a.txt", "new.txt", "sub/b.txt"]
    (tree / "a.txt").unlink()
    storage.upload_tree(tree, "tb")
    assert (root / "tb/a.txt").is_file(), "the mirror never deletes remote files"


def test_a_checkpoint_is_uploaded_with_meta_json_last_then_the_pointer(tmp_path: Path) -> None:
    uri, root = remote(tmp_path)
    storage = RecordingStorage(uri)
    local = tmp_path / "stage"
    save(local, 100)
    storage.sync_checkpoints(local)
    step = "checkpoints/step-000000000100"
    assert storage.uploads[-2:] == [f"{step}/meta.json", "checkpoints/latest"]
    assert set(storage.uploads[:-2]) == {
        f"{step}/{name}"
        for name in ("agent/weights.bin", "agent/agent.json", "state.json", "config.yaml")
    }
    ckpt.verify_checkpoint(root / step)
    assert (root / "checkpoints/latest").read_text().strip() == "step-000000000100"
    storage.uploads.clear()
    storage.sync_checkpoints(local)
    assert storage.uploads == [], "an unchanged checkpoint is not sent again"


def test_an_interrupted_upload_is_never_chosen_and_refused_when_named(tmp_path: Path) -> None:
    uri, root = remote(tmp_path)
    local = tmp_path / "stage"
    save(local, 100)
    RunStorage(uri).sync_checkpoints(local)
    # The upload of step 200 stops before meta.json (and so before the pointer).
    second = save(local, 200)
    storage = RunStorage(uri)
    for path in sorted(second.rglob("*")):
        if path.is_file() and path.name != "meta.json":
            storage.upload_file(path, f"checkpoints/{second.name}/{path.relative_to(second)}")
    assert RunStorage(uri).remote_checkpoints() == (["step-000000000100"], ["step-000000000200"])

    restored = RunStorage(uri).restore(tmp_path / "fresh")
    assert restored is not None and restored.name == "step-000000000100"
    ckpt.verify_checkpoint(restored)

    (root / "checkpoints/latest").write_text("step-000000000200\n")  # a pointer gone wrong
    for which in ("latest", "step-000000000200"):
        with pytest.raises(ckpt.CheckpointError) as err:
            RunStorage(uri).restore(tmp_path / f"other-{which}", which)
        assert f"{uri}/checkpoints/step-000000000200 has no meta.json" in str(err.value)
        assert not (tmp_path / f"other-{which}/checkpoints/step-000000000200").exists()

    # The next sync completes the checkpoint (stale files replaced, meta.json last).
    RunStorage(uri).sync_checkpoints(local)
    ckpt.verify_checkpoint(root / "checkpoints/step-000000000200")
    assert (root / "checkpoints/latest").read_text().strip() == "step-000000000200"


def test_rotation_deletes_remote_checkpoints_too(tmp_path: Path) -> None:
    uri, root = remote(tmp_path)
    storage = RunStorage(uri)
    local = tmp_path / "stage"
    (root / "checkpoints/step-000000000050").mkdir(parents=True)  # an old interrupted upload
    (root / "checkpoints/step-000000000050/state.json").write_text("{}")
    for step in range(100, 600, 100):
        save(local, step, payload=b"w" * 100)
        storage.sync_checkpoints(local)
    names = [f"step-{s:012d}" for s in (300, 400, 500)]
    assert sorted(p.name for p in (local / "checkpoints").glob("step-*")) == names
    assert sorted(p.name for p in (root / "checkpoints").glob("step-*")) == names
    assert RunStorage(uri).remote_checkpoints() == (names, [])


def test_the_best_tag_is_uploaded_again_when_it_changes(tmp_path: Path) -> None:
    uri, root = remote(tmp_path)
    storage = RunStorage(uri)
    local = tmp_path / "stage"
    save(local, 100, tag="best", payload=b"first")
    storage.sync_checkpoints(local)
    (root / "checkpoints/best/stale.bin").write_bytes(b"left by an interrupted upload")
    assert storage.sync_checkpoints(local) == [], "unchanged: nothing sent"
    save(local, 300, tag="best", payload=b"second")
    assert storage.sync_checkpoints(local) == ["best"]
    meta = ckpt.verify_checkpoint(root / "checkpoints/best")  # stale.bin is gone too
    assert meta["step"] == 300
    assert (root / "checkpoints/best/agent/weights.bin").read_bytes() == b"second"


def test_a_corrupt_remote_checkpoint_is_refused_naming_the_remote_file(tmp_path: Path) -> None:
    uri, root = remote(tmp_path)
    local = tmp_path / "stage"
    save(local, 100)
    RunStorage(uri).sync_checkpoints(local)
    weights = root / "checkpoints/step-000000000100/agent/weights.bin"
    data = bytearray(weights.read_bytes())
    data[1000] ^= 0xFF
    weights.write_bytes(bytes(data))
    fresh = tmp_path / "fresh"
    with pytest.raises(ckpt.CheckpointError) as err:
        RunStorage(uri).restore(fresh)
    assert str(err.value) == (
        f"checkpoint file {uri}/checkpoints/step-000000000100/agent/weights.bin is corrupt "
        "(checksum mismatch)"
    )
    assert ckpt.find_checkpoint(fresh) is None, "nothing corrupt was installed locally"


def test_restore_downloads_only_when_the_staging_dir_is_behind(tmp_path: Path) -> None:
    uri, _ = remote(tmp_path)
    local = tmp_path / "stage"
    save(local, 100)
    save(local, 100, tag="best")
    (local / "config.yaml").write_text("run: {}\n")
    (local / "metrics.jsonl").write_text('{"step": 100}\n')
    writer = RunStorage(uri)
    writer.sync_run(local)

    fresh = tmp_path / "fresh"
    reader = RecordingStorage(uri)
    path = reader.restore(fresh, metrics=True)
    assert path == fresh / "checkpoints/step-000000000100"
    assert (fresh / "checkpoints/best/meta.json").is_file()
    assert read_jsonl(fresh / "metrics.jsonl") == [{"step": 100}]
    assert "checkpoints/best/meta.json" in reader.downloads
    again = RecordingStorage(uri)
    assert again.restore(fresh, metrics=True) == path
    assert again.downloads == [], "an up-to-date staging dir downloads nothing"

    # A newer checkpoint from elsewhere: this staging dir is behind and is brought up to date;
    # without metrics=True (eval, play) its own metrics.jsonl is left alone.
    save(local, 200)
    writer.sync_run(local)
    (fresh / "metrics.jsonl").write_text('{"step": 100}\n{"step": 150}\n')
    behind = RecordingStorage(uri)
    assert behind.restore(fresh) == fresh / "checkpoints/step-000000000200"
    assert "checkpoints/step-000000000200/meta.json" in behind.downloads
    assert "metrics.jsonl" not in behind.downloads and len(read_jsonl(fresh / "metrics.jsonl")) == 2

    # A staging dir ahead of the remote (a best not uploaded yet) keeps its own checkpoint.
    save(fresh, 300, tag="best", payload=b"newer")
    ahead = RecordingStorage(uri)
    assert ahead.restore(fresh, "best") == fresh / "checkpoints/best"
    assert ahead.downloads == []
    assert ckpt.verify_checkpoint(fresh / "checkpoints/best")["step"] == 300


def test_replay_chunks_sync_evict_and_reload_from_the_remote(tmp_path: Path) -> None:
    uri, root = remote(tmp_path)
    storage = RunStorage(uri)
    config = build_config(["debug"], ["replay.capacity=96", "replay.chunk_len=16"]).replay
    replay = Replay(config, tmp_path / "stage" / "replay")
    directory = tmp_path / "stage" / "replay"

    def chunk(n: int) -> dict[str, Any]:
        return {
            "vector": np.full((16, 3), n, np.float32),
            "action": np.zeros((16, 1), np.float32),
            "reward": np.zeros(16, np.float32),
            "is_first": np.zeros(16, bool),
            "is_last": np.zeros(16, bool),
            "is_terminal": np.zeros(16, bool),
        }

    for i in range(4):
        replay.add_chunk("w0-a-0", i, chunk(i))
    assert storage.sync_chunks(directory, "replay") == (4, 0)
    assert storage.sync_chunks(directory, "replay") == (0, 0)
    for i in range(4, 8):  # capacity 96 = 6 chunks: the two oldest are evicted
        replay.add_chunk("w0-a-0", i, chunk(i))
    # A shard restarted on its node does not fetch what it evicted since the last sync.
    assert RunStorage(uri).download_chunks("replay", directory) == 0
    assert storage.sync_chunks(directory, "replay") == (4, 2)
    assert len(list((root / "replay").glob("*.chunk"))) == 6

    fresh = tmp_path / "fresh" / "replay"
    assert RunStorage(uri).download_chunks("replay", fresh) == 6
    reloaded = Replay(config, fresh)
    assert len(reloaded) == len(replay) == 96
    assert {c.index for c in reloaded.store.oldest_first()} == set(range(2, 8))


def test_a_single_process_run_on_a_uri_resumes_on_a_new_machine(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    uri, root = remote(tmp_path)
    monkeypatch.setenv("WM_RAY_STAGING", str(tmp_path / "machine-a"))
    first = train(small_config(uri, 400), uri)
    assert first["run_dir"] == uri and first["local_dir"] == str(staging_dir(uri))
    assert load_config(root).run.run_dir == uri, "the saved config keeps the URI"
    assert load_run_config(uri).run.steps == 400
    assert (root / "checkpoints/latest").read_text().strip() == "step-000000000400"
    assert (root / "curve.png").is_file() and (root / "checkpoints/best/meta.json").is_file()
    lines = len(read_jsonl(root / "metrics.jsonl"))
    state = ckpt.load_state(root / "checkpoints/step-000000000400")
    shutil.rmtree(tmp_path / "machine-a")

    monkeypatch.setenv("WM_RAY_STAGING", str(tmp_path / "machine-b"))
    local = staging_dir(uri)
    local.mkdir(parents=True)
    second = train(small_config(uri, 600), uri, resume=True)
    assert second["env_steps"] == 600 and second["local_dir"] == str(local)
    assert second["updates"] > first["updates"] and second["episodes"] > first["episodes"]
    ckpt.verify_checkpoint(root / "checkpoints/step-000000000600")
    records = read_jsonl(root / "metrics.jsonl")
    assert len(records) > lines and records[-1]["step"] == 600
    # Every replay step acknowledged before the first run ended reloaded on the new machine.
    resumed = ckpt.load_state(local / "checkpoints/step-000000000600")
    manifest, before = resumed["shard_manifests"][0], state["shard_manifests"][0]
    assert manifest["steps"] >= before["steps"]
    assert len(list((root / "replay/shard-0").glob("*.chunk"))) == manifest["chunks"]

    with pytest.raises(ConfigError, match=r"already holds a run .* --resume"):
        train(small_config(uri, 600), uri)


def test_collect_into_a_uri_uploads_and_continues_the_remote_replay(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    uri, root = remote(tmp_path)
    monkeypatch.setenv("WM_RAY_STAGING", str(tmp_path / "machine-a"))
    first = collect(small_config(uri, 128), uri, progress=False)
    assert first["run_dir"] == uri
    assert json.loads((root / "summary.json").read_text())["env_steps"] == 128
    assert load_config(root).run.run_dir == uri and (root / "metrics.jsonl").is_file()
    assert len(Replay(load_config(root).replay, root / "replay/shard-0")) == 128
    monkeypatch.setenv("WM_RAY_STAGING", str(tmp_path / "machine-b"))
    second = collect(small_config(uri, 64), uri, progress=False)
    assert second["replay"]["steps"] == 128 + 64, "the remote's replay was continued"
    assert len(list((root / "replay/shard-0").glob("*.chunk"))) == second["replay"]["chunks"]


def test_a_plain_run_dir_stays_local(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WM_RAY_STAGING", str(tmp_path / "staging"))
    summary = train(small_config(tmp_path / "run", 200), tmp_path / "run")
    assert summary["run_dir"] == summary["local_dir"] == str(tmp_path / "run")
    assert ckpt.latest_checkpoint(tmp_path / "run") is not None
    assert not (tmp_path / "staging").exists()
