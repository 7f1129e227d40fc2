"""``wm-ray train`` / ``wm-ray eval`` on ``unity:editor``, against a FAKE Unity Editor.

No Unity Editor can exist in CI. The fake Editor here runs ``tests/fakes/fake_unity_env.py`` (a
process that speaks ML-Agents' real protocol; see ``tests/unit/test_envs_unity.py``) on the
Editor's port in a loop: each run of it is one press of Play, which serves one connection and
ends when the Python side closes it (as the real Editor stops playing). The record file has one
line per connection, so the tests count how many times a user would have had to press Play.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("mlagents_envs.environment")

from wm_ray.envs.unity_ports import lease_free_port

pytestmark = pytest.mark.slow

FAKE = Path(__file__).resolve().parents[1] / "fakes" / "fake_unity_env.py"
WM_RAY = [sys.executable, "-m", "wm_ray.cli"]


class FakeEditor:
    """Presses Play again whenever its last session ended (see the module doc)."""

    def __init__(self, port: int, record: Path) -> None:
        self.port, self.record = port, record
        self._stop = threading.Event()
        self._player: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._play, daemon=True)
        self._thread.start()

    def _play(self) -> None:
        env = {**os.environ, "FAKE_UNITY_RECORD": str(self.record)}
        while not self._stop.is_set():
            argv = [sys.executable, str(FAKE), "--mlagents-port", str(self.port)]
            self._player = subprocess.Popen([*argv, "--episode-length", "20"], env=env)
            self._player.wait()

    def connections(self) -> list[dict[str, object]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def close(self) -> None:
        self._stop.set()
        if self._player is not None:
            self._player.kill()
        self._thread.join(timeout=30)
        if self._player is not None:
            self._player.kill()


@pytest.fixture
def editor(tmp_path: Path) -> Iterator[FakeEditor]:
    lease = lease_free_port(6700, 500)
    port = lease.port
    lease.release()
    fake = FakeEditor(port, tmp_path / "connections.jsonl")
    try:
        yield fake
    finally:
        fake.close()


def train(editor: FakeEditor, run_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``wm-ray train`` on the fake Editor: ``args`` are overrides and ``--single-process``."""
    flags = [a for a in args if a.startswith("--")]
    overrides = [
        "run.model=random",
        "env.id=unity:editor",
        f"env.base_port={editor.port}",
        "env.timeout_wait=20",
        "env.image_size=16",
        *(a for a in args if not a.startswith("--")),
    ]
    cmd = [
        *WM_RAY,
        "train",
        *flags,
        "--configs",
        "debug",
        "--steps",
        "96",
        "--run-dir",
        str(run_dir),
    ]
    return subprocess.run([*cmd, "--set", *overrides], capture_output=True, text=True, timeout=300)


def test_a_run_that_would_need_two_editor_connections_is_refused_before_any(
    editor: FakeEditor, tmp_path: Path
) -> None:
    done = train(editor, tmp_path / "run", "env.num_envs=1")  # Ray, with its eval worker
    assert done.returncode != 0
    assert "serves at most 1 env(s) at a time" in done.stderr, done.stderr
    assert "resources.eval_workers=1 x eval.num_envs=" in done.stderr, done.stderr
    assert "--set env.num_envs=1 resources.env_workers=1 resources.eval_workers=0" in done.stderr
    done = train(editor, tmp_path / "run", "--single-process")  # 4 envs and evaluation's
    assert done.returncode != 0
    assert "env.num_envs=4 + eval.num_envs=" in done.stderr, done.stderr
    assert "--set env.num_envs=1 eval.episodes=0" in done.stderr, done.stderr
    assert not editor.connections() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("runtime", ["single-process", "ray"])
def test_an_editor_run_connects_twice_and_a_seed_never_reconnects(
    editor: FakeEditor, tmp_path: Path, runtime: str
) -> None:
    """Play twice: once for validation's spaces check, once for the run's one env; a run seed
    other than the Editor's connection seed (0) is told, not honoured by reconnecting."""
    if runtime == "ray":
        args = ["env.num_envs=1", "resources.env_workers=1", "resources.eval_workers=0"]
    else:
        args = ["--single-process", "env.num_envs=1", "eval.episodes=0"]
    done = train(editor, tmp_path / "run", *args, "run.seed=3")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "done: " in done.stdout and "no evaluation" in done.stdout, done.stdout
    assert len(editor.connections()) == 2, done.stderr[-3000:]
    assert done.stderr.count("for the Unity Editor on port") == 2, done.stderr[-3000:]
    assert "keeps the seed it connected with (0): reset(seed=3) does not reconnect" in done.stderr

    # Evaluating afterwards with the Editor's one env (the run's eval.num_envs is 2). A run
    # that had eval.episodes=0 needs --episodes, refused before connecting.
    evaluate = [*WM_RAY, "eval", "--run-dir", str(tmp_path / "run")]
    if runtime == "single-process":
        done = subprocess.run(evaluate, capture_output=True, text=True, timeout=300)
        assert done.returncode != 0, done.stdout
        assert "eval.episodes=0" in done.stderr and "--episodes N" in done.stderr, done.stderr
        assert len(editor.connections()) == 2
        evaluate += ["--episodes", "2"]
    done = subprocess.run(evaluate, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "over 2 episodes" in done.stdout and len(editor.connections()) == 3
