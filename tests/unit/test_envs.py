"""Backends of wm_ray.envs: observation/action contract, episode ends, seeding, lazy imports."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.wrappers import AtariPreprocessing

from wm_ray.config import EnvConfig
from wm_ray.envs import atari, dmc, fake, gymnasium_env, mujoco
from wm_ray.envs.base import find_wrapper
from wm_ray.envs.registry import ENV_BACKENDS, backend_module

needs_ale = pytest.mark.skipif(not atari.list_ids(), reason="ale-py is not installed")
needs_dmc = pytest.mark.skipif(
    importlib.util.find_spec("dm_control") is None, reason="dm_control is not installed"
)
needs_mujoco = pytest.mark.skipif(not mujoco.list_ids(), reason="mujoco is not installed")


def _run_until_done(env: gym.Env, action: object, limit: int = 5000) -> tuple[int, bool, bool]:
    for steps in range(1, limit + 1):
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            return steps, terminated, truncated
    raise AssertionError(f"episode did not end within {limit} steps")


def test_options_match_make_keywords_and_env_config_fields() -> None:
    config_fields = {field.name for field in dataclasses.fields(EnvConfig)}
    for name in ENV_BACKENDS:
        module = backend_module(name)
        keywords = set(inspect.signature(module.make).parameters) - {"task", "seed"}
        assert keywords == module.OPTIONS, name
        if name != "fake":
            assert config_fields >= module.OPTIONS, (name, module.OPTIONS - config_fields)


def test_owns_routes_plain_ids_to_one_backend() -> None:
    assert atari.owns("ALE/Pong-v5") and not gymnasium_env.owns("ALE/Pong-v5")
    assert mujoco.owns("HalfCheetah-v5") and not gymnasium_env.owns("HalfCheetah-v5")
    assert gymnasium_env.owns("CartPole-v1") and not mujoco.owns("CartPole-v1")
    assert not any(m.owns("walker-walk") for m in (atari, dmc, fake, gymnasium_env, mujoco))
    assert "CartPole-v1" in gymnasium_env.list_ids()
    assert "HalfCheetah-v5" not in gymnasium_env.list_ids()
    assert "fake:image-vector-discrete" in fake.list_ids()


@needs_ale
def test_atari_pong_defaults_rgb64_frameskip4_sticky025_noops30() -> None:
    env = atari.make("ALE/Pong-v5", seed=0)
    assert isinstance(env.action_space, gym.spaces.Discrete)
    obs, _ = env.reset()
    assert set(obs) == {"image"}
    assert obs["image"].shape == (64, 64, 3) and obs["image"].dtype == np.uint8
    preprocessing = find_wrapper(env, AtariPreprocessing)
    assert preprocessing is not None
    assert preprocessing.frame_skip == 4 and preprocessing.noop_max == 30
    assert env.unwrapped.spec.kwargs["frameskip"] == 1  # the skipping happens in the wrapper
    assert env.unwrapped.spec.kwargs["max_num_frames_per_episode"] == 108_000
    assert env.unwrapped.ale.getFloat("repeat_action_probability") == pytest.approx(0.25)
    env.close()


@needs_ale
def test_atari_grayscale_name_forms_and_same_seed_same_first_frame() -> None:
    env = atari.make("pong", grayscale=True, sticky_actions=0.0)
    first = env.reset(seed=3)[0]["image"]
    assert first.shape == (64, 64, 1)
    assert np.array_equal(env.reset(seed=3)[0]["image"], first)
    assert atari.canonical_id("Pong") == atari.canonical_id("ALE/Pong-v5") == "ALE/Pong-v5"
    assert atari.canonical_id("montezuma_revenge") == "ALE/MontezumaRevenge-v5"
    with pytest.raises(ValueError, match="unknown Atari game"):
        atari.canonical_id("Pongg")
    env.close()


@needs_ale
def test_atari_time_limit_is_truncation_in_agent_steps() -> None:
    env = atari.make("Pong", time_limit=7)
    env.reset(seed=0)
    assert _run_until_done(env, 0) == (7, False, True)
    env.close()


@needs_ale
def test_atari_life_loss_is_terminal_and_reset_continues_the_game() -> None:
    env = atari.make("Breakout", life_loss=True, seed=0)
    env.reset()
    ale = env.unwrapped.ale
    assert ale.lives() == 5
    rng = np.random.default_rng(0)
    for lives_left in (4, 3):
        for _ in range(3000):
            _, _, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
            if terminated or truncated:
                break
        assert terminated and not truncated
        assert ale.lives() == lives_left and not ale.game_over()
        env.reset()
        assert ale.lives() == lives_left  # a soft reset: same game, no lives restored
    env.close()


@needs_dmc
def test_dmc_walker_vector_and_fast_rendered_pixels() -> None:
    env = dmc.make("walker-walk", pixels=True, seed=0)
    obs, _ = env.reset()
    assert obs["vector"].dtype == np.float32 and obs["vector"].shape == (24,)
    assert obs["image"].shape == (64, 64, 3) and obs["image"].dtype == np.uint8
    assert obs["image"].std() > 0
    assert env.action_space == gym.spaces.Box(-1, 1, (6,), np.float32)
    again, _ = env.reset(seed=0)
    assert np.array_equal(again["vector"], obs["vector"])
    assert np.array_equal(again["image"], obs["image"])
    env.close()


@needs_dmc
def test_dmc_time_limits_truncate_without_terminating() -> None:
    env = dmc.make("walker-walk", seed=0)  # 1000 control steps / action repeat 2
    env.reset()
    assert _run_until_done(env, np.zeros(6, np.float32)) == (500, False, True)
    env = dmc.make("cup-catch", time_limit=5, action_repeat=1, seed=0)
    env.reset()
    assert _run_until_done(env, np.zeros(2, np.float32)) == (5, False, True)


@needs_dmc
def test_dmc_last_step_discount_decides_terminated_or_truncated() -> None:
    import dm_env

    env = dmc.DMCEnv("cartpole", "balance", seed=0)
    env.reset()
    observation = {"position": np.zeros(3), "velocity": np.zeros(2)}

    class Scripted:
        def __init__(self, time_step: dm_env.TimeStep) -> None:
            self.time_step = time_step

        def step(self, action: np.ndarray) -> dm_env.TimeStep:
            return self.time_step

    env._env = Scripted(dm_env.termination(1.0, observation))  # type: ignore[assignment]
    assert env.step(np.zeros(1))[1:4] == (1.0, True, False)
    env._env = Scripted(dm_env.truncation(0.5, observation))  # type: ignore[assignment]
    assert env.step(np.zeros(1))[1:4] == (0.5, False, True)
    env._env = Scripted(dm_env.transition(0.0, observation))  # type: ignore[assignment]
    assert env.step(np.zeros(1))[1:4] == (0.0, False, False)


@needs_dmc
def test_dmc_task_names_and_default_cameras() -> None:
    assert dmc.parse_task("cup-catch") == ("ball_in_cup", "catch")
    assert dmc.parse_task("cartpole-swingup_sparse") == ("cartpole", "swingup_sparse")
    assert "dmc:walker-walk" in dmc.list_ids() and "dmc:cup-catch" in dmc.list_ids()
    with pytest.raises(ValueError, match="unknown dm_control task"):
        dmc.parse_task("walker-fly")
    env = dmc.make("quadruped-walk", pixels=True, image_size=32)
    assert env.unwrapped._camera_id == 2
    assert env.reset(seed=0)[0]["image"].shape == (32, 32, 3)
    env.close()


def test_cartpole_vector_of_four_and_seeded_reset() -> None:
    env = gymnasium_env.make("CartPole-v1", seed=1)
    obs, _ = env.reset()
    assert obs["vector"].shape == (4,) and obs["vector"].dtype == np.float32
    assert np.array_equal(env.reset(seed=1)[0]["vector"], obs["vector"])
    assert isinstance(env.action_space, gym.spaces.Discrete)


def test_cartpole_pixels_adds_a_64x64_rgb_image() -> None:
    pytest.importorskip("pygame", reason="classic-control rendering needs pygame")
    env = gymnasium_env.make("CartPole-v1", pixels=True)
    obs, _ = env.reset(seed=0)
    assert obs["image"].shape == (64, 64, 3) and obs["image"].dtype == np.uint8
    assert obs["vector"].shape == (4,)
    env.close()


def test_discrete_observations_are_one_hot_and_time_limit_counts_agent_steps() -> None:
    env = gymnasium_env.make("FrozenLake-v1")
    obs, _ = env.reset(seed=0)
    assert obs["vector"].shape == (16,) and obs["vector"].sum() == 1
    env = gymnasium_env.make("CartPole-v1", action_repeat=2, time_limit=3)
    env.reset(seed=0)
    steps, _, truncated = _run_until_done(env, 0)
    assert steps <= 3 and (truncated or steps < 3)


def test_finite_box_actions_are_exposed_in_unit_range_and_rescaled() -> None:
    env = gymnasium_env.make("Pendulum-v1")
    assert env.action_space == gym.spaces.Box(-1, 1, (1,), np.float32)
    assert env.unwrapped.action_space.high[0] == 2.0
    env.reset(seed=0)
    env.step(np.array([1.0], np.float32))
    assert env.unwrapped.last_u == pytest.approx(2.0)
    env.step(np.array([5.0], np.float32))  # clipped to 1, i.e. the true bound 2
    assert env.unwrapped.last_u == pytest.approx(2.0)


@needs_mujoco
def test_halfcheetah_vector_of_17_and_unit_box_actions(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # MuJoCo appends model warnings to ./MUJOCO_LOG.TXT
    env = mujoco.make("HalfCheetah-v5", seed=0)
    obs, _ = env.reset()
    assert obs["vector"].shape == (17,) and obs["vector"].dtype == np.float32
    assert env.action_space == gym.spaces.Box(-1, 1, (6,), np.float32)
    _, _, terminated, truncated, _ = env.step(env.action_space.sample())
    assert not terminated and not truncated
    env.close()


@needs_mujoco
def test_halfcheetah_pixels_render_at_image_size_with_fast_flags(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import mujoco as mj

    monkeypatch.chdir(tmp_path)

    env = mujoco.make("HalfCheetah-v5", pixels=True, image_size=48)
    obs, _ = env.reset(seed=0)
    assert obs["image"].shape == (48, 48, 3) and obs["image"].std() > 0
    viewer = env.unwrapped.mujoco_renderer._get_viewer("rgb_array")
    assert viewer.scn.flags[mj.mjtRndFlag.mjRND_SHADOW] == 0
    env.close()


def test_fake_env_encodes_step_seed_and_ends_as_requested() -> None:
    env = fake.make("image-vector-continuous", episode_length=3, seed=11, image_size=16)
    obs, _ = env.reset()
    assert obs["image"].shape == (16, 16, 3) and obs["vector"][:3].tolist() == [0, 11, 0]
    assert _run_until_done(env, np.zeros(2, np.float32)) == (3, True, False)
    env = fake.make("vector-discrete", truncate=True, episode_length=2, pixels=True)
    assert env.reset(seed=0)[0]["image"].shape == (64, 64, 3)
    assert _run_until_done(env, 1) == (2, False, True)
    env = fake.make("vector-discrete", fail_at=2)
    env.reset(seed=0)
    env.step(0)
    with pytest.raises(RuntimeError, match="fail_at=2"):
        env.step(0)
    with pytest.raises(ValueError, match="unknown fake task"):
        fake.make("pixels-discrete")


def test_envs_package_and_cartpole_import_no_heavy_library_nor_ray() -> None:
    code = (
        "import sys\n"
        "import wm_ray.envs\n"
        "from wm_ray.envs import atari, dmc, fake, gymnasium_env, mujoco, vector\n"
        "env = gymnasium_env.make('CartPole-v1', seed=0)\n"
        "env.reset(); env.step(0)\n"
        "gymnasium_env.list_ids(); mujoco.list_ids(); mujoco.owns('HalfCheetah-v5')\n"
        "atari.owns('ALE/Pong-v5'); fake.make('image-discrete').reset(seed=0)\n"
        "heavy = ('ale_py', 'dm_control', 'mujoco', 'jax', 'ray')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout + result.stderr
