"""VectorEnv: reset-as-input semantics, seeding, crash recovery, in both modes, on fake envs."""

from __future__ import annotations

import os
import pickle
import signal
from typing import Literal

import gymnasium as gym
import numpy as np
import pytest

from wm_ray.envs import EnvFactory, VectorEnv, action_batch_sample, gymnasium_env
from wm_ray.envs.fake import FakeFactory
from wm_ray.envs.vector_worker import derive_seed

Mode = Literal["serial", "subprocess"]
MODES: list[Mode] = ["serial", "subprocess"]
N = 3


def _check_step(step: dict[str, np.ndarray], n: int = N) -> None:
    assert step["reward"].dtype == np.float32 and step["reward"].shape == (n,)
    for key in ("is_first", "is_last", "is_terminal"):
        assert step[key].dtype == bool and step[key].shape == (n,)
    assert not np.any(step["is_terminal"] & ~step["is_last"])


@pytest.mark.parametrize("mode", MODES)
def test_reset_is_first_then_episode_ends_and_the_next_action_is_ignored(mode: Mode) -> None:
    factory = FakeFactory("image-vector-discrete", episode_length=2, image_size=8)
    with VectorEnv(factory, N, seed=0, mode=mode) as venv:
        step = venv.reset()
        _check_step(step)
        assert step["is_first"].all() and not step["is_last"].any()
        assert (step["reward"] == 0).all()
        assert step["image"].shape == (N, 8, 8, 3) and step["image"].dtype == np.uint8
        assert step["vector"].shape == (N, 6) and step["vector"].dtype == np.float32
        step = venv.step(np.array([1, 2, 3]))
        assert not step["is_first"].any()
        assert np.allclose(step["reward"], [1.1, 1.2, 1.3])  # action i went to env i
        assert np.allclose(step["vector"][:, 4], [1, 2, 3])
        step = venv.step(np.array([0, 0, 0]))
        assert step["is_last"].all() and step["is_terminal"].all()
        step = venv.step(np.array([3, 3, 3]))  # ignored: the envs reset instead
        assert step["is_first"].all() and (step["reward"] == 0).all()
        assert (step["vector"][:, 0] == 0).all() and (step["vector"][:, 4] == 0).all()
        assert (step["vector"][:, 2] == 1).all()  # second episode
        assert venv.restarts == 0


@pytest.mark.parametrize("mode", MODES)
def test_truncation_is_last_without_is_terminal(mode: Mode) -> None:
    factory = FakeFactory("vector-continuous", episode_length=2, truncate=True)
    with VectorEnv(factory, 2, mode=mode) as venv:
        assert venv.act_space == gym.spaces.Box(-1, 1, (2,), np.float32)
        venv.reset()
        venv.step(np.zeros((2, 2), np.float32))
        step = venv.step(np.zeros((2, 2), np.float32))
        _check_step(step, 2)
        assert step["is_last"].all() and not step["is_terminal"].any()


@pytest.mark.parametrize("mode", MODES)
def test_per_env_seeds_differ_and_are_reproducible(mode: Mode) -> None:
    factory = FakeFactory("vector-discrete")
    with VectorEnv(factory, N, seed=7, mode=mode) as venv:
        first = venv.reset()["vector"]
    assert first[:, 1].tolist() == [7, 8, 9]  # env i is seeded with seed + i
    assert len(set(first[:, 3].tolist())) == N  # different random streams
    with VectorEnv(factory, N, seed=7, mode="serial") as venv:
        assert np.array_equal(venv.reset()["vector"], first)
    with VectorEnv(factory, N, seed=8, mode="serial") as venv:
        assert not np.array_equal(venv.reset()["vector"][:, 3], first[:, 3])


def test_later_resets_do_not_reseed() -> None:
    with VectorEnv(FakeFactory("vector-discrete", episode_length=1), 1, seed=5) as venv:
        noises = [venv.reset()["vector"][0, 3]]
        for _ in range(2):
            venv.step(np.zeros(1, np.int64))
            noises.append(venv.step(np.zeros(1, np.int64))["vector"][0, 3])
    assert len(set(noises)) == 3


@pytest.mark.parametrize("mode", MODES)
def test_raising_env_is_rebuilt_counted_and_the_run_continues(mode: Mode) -> None:
    factory = FakeFactory("vector-discrete", episode_length=100, fail_at=3)
    with VectorEnv(factory, 2, seed=1, mode=mode) as venv:
        venv.reset()
        venv.step(np.zeros(2, np.int64))
        venv.step(np.zeros(2, np.int64))
        step = venv.step(np.zeros(2, np.int64))  # third step raises in both envs
        assert step["is_first"].all() and not step["is_last"].any()
        assert venv.restarts == 2
        # Rebuilt envs are reseeded with fresh seeds (float32 as the fake env encodes them).
        fresh = np.array([derive_seed(1, i, 1) for i in range(2)], np.float32)
        assert np.array_equal(step["vector"][:, 1], fresh) and fresh[0] != 1
        step = venv.step(np.zeros(2, np.int64))
        assert not step["is_first"].any() and (step["vector"][:, 0] == 1).all()


def test_killed_subprocess_is_restarted_and_counted() -> None:
    factory = FakeFactory("vector-discrete", episode_length=100)
    with VectorEnv(factory, 2, seed=0, mode="subprocess") as venv:
        venv.reset()
        venv.step(np.zeros(2, np.int64))
        pid = venv.pids[1]
        os.kill(pid, signal.SIGKILL)
        step = venv.step(np.zeros(2, np.int64))
        assert step["is_first"].tolist() == [False, True]
        assert step["vector"][:, 0].tolist() == [2, 0]
        assert venv.restarts == 1 and venv.pids[1] != pid
        step = venv.step(np.zeros(2, np.int64))
        assert step["vector"][:, 0].tolist() == [3, 1]


def test_broken_make_fn_in_a_subprocess_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="unknown fake task"):
        VectorEnv(FakeFactory("nonsense"), 1, mode="subprocess")


def test_wrong_action_batch_is_refused() -> None:
    with VectorEnv(FakeFactory("vector-discrete"), 2) as venv:
        venv.reset()
        with pytest.raises(ValueError, match="leading axis 2"):
            venv.step(np.zeros(3, np.int64))


def test_action_batch_sample_shapes_and_dtypes() -> None:
    rng = np.random.default_rng(0)
    discrete = action_batch_sample(gym.spaces.Discrete(4), 5, rng)
    assert discrete.shape == (5,) and discrete.dtype == np.int64 and discrete.max() < 4
    box = action_batch_sample(gym.spaces.Box(-1, 1, (2, 3), np.float32), 5, rng)
    assert box.shape == (5, 2, 3) and box.dtype == np.float32 and np.abs(box).max() <= 1


def test_vector_env_over_a_real_backend() -> None:
    with VectorEnv(lambda i: gymnasium_env.make("CartPole-v1"), 2, seed=3) as venv:
        step = venv.reset()
        assert step["vector"].shape == (2, 4)
        rng = np.random.default_rng(0)
        for _ in range(30):
            step = venv.step(action_batch_sample(venv.act_space, 2, rng))
            _check_step(step, 2)


def test_env_factory_is_picklable_and_uses_the_registry() -> None:
    factory = pickle.loads(pickle.dumps(EnvFactory("fake:vector-discrete", episode_length=4)))
    assert factory.options == {"episode_length": 4}
    env = factory(0)
    assert env.reset(seed=0)[0]["vector"].shape == (6,)
