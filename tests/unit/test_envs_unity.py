"""The ``unity`` env backend (Unity ML-Agents), against a FAKE Unity build.

No Unity build can exist in CI, so these tests launch ``tests/fakes/fake_unity_env.py`` instead:
a Python process that speaks ML-Agents' real communicator protocol (gRPC ``Exchange`` of
``UnityMessageProto``, the initialization handshake, PNG and float observations, actions, reset
commands, the engine side channel) and runs a tiny deterministic game (see its docstring). The
backend launches it exactly like a build's executable (through a launcher script written here,
which adds the game's flags), with the real ``mlagents_envs`` on the Python side: ports, process
handling, timeouts and crash detection are ML-Agents' own.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("mlagents_envs.environment")

from wm_ray.envs import unity
from wm_ray.envs.registry import make_env, max_envs
from wm_ray.envs.unity_env import UnityEnvError
from wm_ray.envs.unity_ports import lease_free_port, try_lease
from wm_ray.envs.vector import EnvFactory, VectorEnv

FAKE = Path(__file__).resolve().parents[1] / "fakes" / "fake_unity_env.py"
FAST = {"timeout_wait": 10, "image_size": 8}


@pytest.fixture
def build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``build(*flags)``: the path of an executable fake build running the game with ``flags``.

    Every launch appends a line (pid, argv, port, seed) to ``tmp_path / "launches.jsonl"``.
    """
    record = tmp_path / "launches.jsonl"
    monkeypatch.setenv("FAKE_UNITY_RECORD", str(record))
    names = iter(range(100))

    def write(*flags: str) -> str:
        path = tmp_path / f"build{next(names)}.x86_64"
        args = " ".join(flags)
        path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" {args} "$@"\n')
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
        return str(path)

    write.launches = lambda: [json.loads(line) for line in record.read_text().splitlines()]  # type: ignore[attr-defined]
    return write


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split(")")[-1].split()[0] == "Z")


def test_continuous_vector_and_png_observations_action_effect_and_termination(build) -> None:
    path = build("--actions continuous", "--visuals 1", "--episode-length 3")
    env = make_env(f"unity:{path[: -len('.x86_64')]}", no_graphics=True, **FAST)
    try:
        assert env.action_space == gym.spaces.Box(-1, 1, (2,), np.float32)
        assert env.observation_space["image"] == gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)
        assert env.observation_space["vector"].shape == (6,)
        obs, _ = env.reset()
        assert obs["image"].dtype == np.uint8 and obs["vector"].dtype == np.float32
        x0, t, _, episode, seed, time_scale = obs["vector"]
        assert (t, episode, seed, time_scale) == (0, 0, 0, unity.DEFAULT_TIME_SCALE)
        obs, reward, terminated, truncated, _ = env.step(np.array([0.5, -1.0], np.float32))
        assert reward == pytest.approx(0.5) and not (terminated or truncated)
        assert obs["vector"][0] == pytest.approx(x0 + 0.05, abs=1e-6)  # the action moved it
        assert obs["vector"][1:3].tolist() == [1.0, 0.5]
        # the PNG colour (10 * step, seed, 10 * episode) survives decoding, scaling, resizing
        assert np.all(obs["image"] == np.array([10, 0, 0], np.uint8))
        obs, reward, terminated, truncated, _ = env.step(np.array([3.0, 0.0], np.float32))
        assert reward == pytest.approx(1.0)  # clipped to the Box(-1, 1)
        obs, reward, terminated, truncated, _ = env.step(np.zeros(2, np.float32))
        assert terminated and not truncated and obs["vector"][1] == 3  # the terminal obs
        obs, _ = env.reset()
        assert obs["vector"][1] == 0 and obs["vector"][3] >= 1  # a new episode
        (launch,) = build.launches()
        port = env.unwrapped.port
        assert launch["argv"][-2:] == ["--mlagents-port", str(port)]
        assert "-nographics" in launch["argv"] and launch["pid"] == env.unwrapped.pid
    finally:
        env.close()
    assert not _alive(launch["pid"]) and try_lease(port) is not None  # stopped, port free


def test_discrete_branch_and_interrupted_end_is_truncation(build) -> None:
    env = make_env(f"unity:{build('--actions discrete', '--visuals 0', '--interrupted')}", **FAST)
    try:
        assert env.action_space == gym.spaces.Discrete(3)
        assert set(env.observation_space.spaces) == {"vector"}
        env.reset(seed=0)
        rewards = [env.step(a)[1] for a in (2, 0, 1, 2)]
        assert rewards == [1.0, -1.0, 0.0, 1.0]
        _, _, terminated, truncated, info = env.step(1)  # step 5 of 5: the max step
        assert truncated and not terminated and info["interrupted"]
    finally:
        env.close()


def test_several_discrete_branches_flatten_row_major(build) -> None:
    env = make_env(f"unity:{build('--actions multidiscrete', '--visuals 0')}", **FAST)
    try:
        assert env.action_space == gym.spaces.Discrete(6)  # branches (3, 2)
        env.reset()
        # flat a -> (a // 2, a % 2) -> reward (b0 - 1) * (1 + b1)
        assert [env.step(a)[1] for a in (5, 1, 2, 4)] == [2.0, -2.0, 0.0, 1.0]
    finally:
        env.close()


def test_seed_is_sent_at_launch_and_a_reset_seed_relaunches(build) -> None:
    env = make_env(f"unity:{build('--visuals 0')}", seed=3, **FAST)
    try:
        first, _ = env.reset()  # the launch seed: no relaunch
        pid = env.unwrapped.pid
        assert first["vector"][4] == 3
        env.step(np.ones(2, np.float32))
        second, _ = env.reset()  # no seed: the next episode of the same process
        assert env.unwrapped.pid == pid and second["vector"][3] == 1
        assert second["vector"][0] != first["vector"][0]
        again, _ = env.reset(seed=3)  # relaunched with 3: the first episode repeats
        assert env.unwrapped.pid != pid and np.array_equal(again["vector"], first["vector"])
        other, _ = env.reset(seed=4)
        assert other["vector"][4] == 4 and other["vector"][0] != first["vector"][0]
        assert [launch["seed"] for launch in build.launches()] == [3, 3, 4]
    finally:
        env.close()


def test_two_vector_envs_in_one_process_get_distinct_ports_and_seeds(build) -> None:
    factory = EnvFactory(f"unity:{build('--visuals 0')}", backend="unity", **FAST)
    with VectorEnv(factory, 2, seed=0) as first, VectorEnv(factory, 2, seed=10) as second:
        ports = [slot.env.unwrapped.port for v in (first, second) for slot in v._slots]
        assert len(set(ports)) == 4, ports
        for venv, seed in ((first, 0), (second, 10)):
            step = venv.reset()
            assert step["is_first"].all()
            assert step["vector"][:, 4].tolist() == [seed, seed + 1]  # env i: seed + i
            step = venv.step(np.array([[1.0, 0.0], [-1.0, 0.0]], np.float32))
            assert step["reward"].tolist() == [1.0, -1.0]
        live = {
            slot.env.unwrapped.pid: slot.env.unwrapped.port
            for v in (first, second)
            for slot in v._slots
        }
        launched = {launch["pid"]: launch["port"] for launch in build.launches()}
        assert all(launched[pid] == port for pid, port in live.items())


def test_killed_build_is_rebuilt_counted_and_starts_a_new_episode(build) -> None:
    factory = EnvFactory(f"unity:{build('--visuals 1', '--episode-length 50')}", **FAST)
    with VectorEnv(factory, 2, seed=0) as venv:
        venv.reset()
        venv.step(np.zeros((2, 2), np.float32))
        env = venv._slots[0].env.unwrapped
        pid, port = env.pid, env.port
        os.kill(pid, signal.SIGKILL)  # mid-episode
        step = venv.step(np.zeros((2, 2), np.float32))
        assert step["is_first"].tolist() == [True, False] and venv.restarts == 1
        rebuilt = venv._slots[0].env.unwrapped
        assert rebuilt.pid != pid and _alive(rebuilt.pid) and rebuilt.port == port  # freed
        step = venv.step(np.ones((2, 2), np.float32))
        assert not step["is_first"].any() and step["reward"].tolist() == [1.0, 1.0]


def test_hung_build_times_out_after_timeout_wait_and_is_rebuilt(build) -> None:
    factory = EnvFactory(f"unity:{build('--visuals 0', '--hang-at 2')}", **FAST)
    with VectorEnv(factory, 1, seed=0) as venv:
        venv.reset()
        venv.step(np.zeros((1, 2), np.float32))
        hung = venv._slots[0].env.unwrapped.pid
        start = time.monotonic()
        step = venv.step(np.zeros((1, 2), np.float32))  # the player stops answering
        waited = time.monotonic() - start
        assert step["is_first"].tolist() == [True] and venv.restarts == 1
        assert FAST["timeout_wait"] <= waited < FAST["timeout_wait"] + 5, waited
        assert not _alive(hung) and venv._slots[0].env.unwrapped.pid != hung  # killed


def test_refusals_name_the_problem_and_free_the_port(build, tmp_path: Path) -> None:
    missing = tmp_path / "NoSuchBuild"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        make_env(f"unity:{missing}")
    with pytest.raises(ValueError, match="timeout_wait=5"):
        make_env(f"unity:{build()}", timeout_wait=5)
    cases = [
        (("--actions hybrid",), {}, "hybrid actions"),
        (("--agents 2",), {}, "several agents"),
        (("--visuals 2",), {}, "camera=<index>"),
        (("--visuals 2",), {"camera": 2}, "camera=2"),
        (("--behaviors 2",), {}, "behavior=<name>"),
    ]
    for flags, options, message in cases:
        with pytest.raises(UnityEnvError, match=message):
            make_env(f"unity:{build(*flags)}", **FAST, **options)
    pids = [launch["pid"] for launch in build.launches()]
    assert len(pids) == len(cases) and not any(_alive(pid) for pid in pids)
    assert try_lease(launch_port := build.launches()[0]["port"]) is not None, launch_port


def test_camera_and_behavior_pick_one_of_several(build) -> None:
    env = make_env(
        f"unity:{build('--visuals 2', '--behaviors 2')}", camera=1, behavior="Other", **FAST
    )
    try:
        assert env.observation_space["image"].shape == (8, 8, 1)  # the float "depth" one
        env.reset()
        assert env.unwrapped.behavior_name == "Other?team=0"
        obs = env.step(np.zeros(2, np.float32))[0]
        assert np.all(obs["image"] == round(255 * 1 / 5))
    finally:
        env.close()


def test_editor_mode_serves_a_running_player_on_its_port(build) -> None:
    lease = lease_free_port(6500, 500)
    port = lease.port
    lease.release()
    player = subprocess.Popen([sys.executable, str(FAKE), "--mlagents-port", str(port)])
    try:
        env = make_env("unity:editor", base_port=port, **FAST)
        assert env.unwrapped.port == port and env.unwrapped.pid is None
        assert env.reset()[0]["image"].shape == (8, 8, 3)
        env.close()
        assert player.wait(timeout=10) == 0  # told to quit, as the Editor stops playing
    finally:
        player.kill()
    assert "unity:editor" in unity.list_ids()
    # the runs' configurations are checked against it (tests/e2e/test_unity_editor.py)
    assert max_envs("unity:editor") == 1 and max_envs(f"unity:{build()}") is None
    assert max_envs("CartPole-v1") is None


def test_port_leases_are_exclusive_across_processes_and_skip_bound_ports() -> None:
    lease = lease_free_port(7300, 500)
    probe = (
        "import sys; from wm_ray.envs.unity_ports import try_lease;"
        f"print(try_lease({lease.port}) is None)"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    taken = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    assert taken.stdout.strip() == "True", taken.stderr
    inner = lease_free_port(lease.port, 10)  # this process cannot take it twice either
    assert inner.port > lease.port
    inner.release()
    lease.release()
    free = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    assert free.stdout.strip() == "False", free.stderr
    with socket.socket() as other_program:
        other_program.bind(("", 0))
        other_program.listen()
        bound = other_program.getsockname()[1]
        assert try_lease(bound) is None
