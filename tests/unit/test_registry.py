"""The public API: registry look-ups, make_env across backends, lazy imports, clear errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import wm_ray
from wm_ray.registry import UnknownNameError


def test_model_registry_and_aliases() -> None:
    assert "random" in wm_ray.list_models()
    spec = wm_ray.get_model_spec("uniform")
    assert isinstance(spec, wm_ray.ModelSpec) and spec.name == "random"
    with pytest.raises(UnknownNameError, match="did you mean 'random'"):
        wm_ray.get_model_spec("randm")


def test_env_backends_are_listed_with_specs() -> None:
    backends = wm_ray.list_env_backends()
    assert {"gymnasium", "atari", "dmc", "mujoco"} <= set(backends)
    spec = wm_ray.get_env_backend_spec("ale")
    assert isinstance(spec, wm_ray.EnvBackendSpec) and spec.name == "atari"
    assert spec.factory_path == "wm_ray.envs.atari:make"


def test_list_envs_covers_all_four_backends() -> None:
    ids = wm_ray.list_envs()
    assert "CartPole-v1" in ids
    assert "ALE/Pong-v5" in ids
    assert "dmc:walker-walk" in ids
    assert "HalfCheetah-v5" in ids


def test_make_env_cartpole_gives_a_vector_of_four() -> None:
    env = wm_ray.make_env("CartPole-v1")
    obs, _ = env.reset(seed=0)
    assert obs["vector"].shape == (4,) and obs["vector"].dtype == np.float32
    env.close()


def test_make_env_pong_gives_64x64_rgb_uint8() -> None:
    env = wm_ray.make_env("ALE/Pong-v5")
    image = env.reset(seed=0)[0]["image"]
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    env.close()
    env = wm_ray.make_env("atari:Pong", grayscale=True)
    assert env.reset(seed=0)[0]["image"].shape == (64, 64, 1)
    env.close()


def test_make_env_dmc_renders_64x64_pixels() -> None:
    env = wm_ray.make_env("dmc:walker-walk", pixels=True)
    obs, _ = env.reset(seed=0)
    assert obs["image"].shape == (64, 64, 3) and obs["image"].dtype == np.uint8
    assert obs["image"].std() > 0  # a real rendering, not a blank frame
    assert obs["vector"].dtype == np.float32
    env.close()


def test_unknown_env_id_names_the_nearest_known_id() -> None:
    with pytest.raises(UnknownNameError, match="CartPole-v1") as err:
        wm_ray.make_env("CartPol-v1")
    assert "dmc" in str(err.value)  # the backends are listed
    with pytest.raises(UnknownNameError, match="walker-walk"):
        wm_ray.make_env("dmc:walker-wlak")
    with pytest.raises(UnknownNameError, match="did you mean 'dmc'"):
        wm_ray.make_env("dmx:walker-walk")


def test_option_a_backend_does_not_use_is_refused() -> None:
    with pytest.raises(ValueError, match="sticky_actions"):
        wm_ray.make_env("CartPole-v1", sticky_actions=0.1)


def test_create_config_resolves_plain_and_dotted_overrides() -> None:
    config = wm_ray.create_config(
        "random", seed=7, env="dmc:walker-walk", **{"replay.capacity": 99}
    )
    assert config.run.seed == 7 and config.env.id == "dmc:walker-walk"
    assert config.replay.capacity == 99
    with pytest.raises(ValueError, match="capacity"):
        wm_ray.create_config("random", capacty=3)


def test_create_model_gives_an_agent_that_acts_in_the_space() -> None:
    env = wm_ray.make_env("CartPole-v1")
    agent = wm_ray.create_model("random", env.observation_space, env.action_space, seed=1)
    obs = {"vector": np.zeros((3, 4), np.float32), "is_first": np.ones(3, bool)}
    _, action, _ = agent.policy(agent.init_policy(3), obs)
    assert action.shape == (3,) and all(env.action_space.contains(int(a)) for a in action)
    env.close()
    agent = wm_ray.create_model("random", env="dmc:walker-walk", seed=2)  # spaces from the env
    assert agent.act_space.shape == (6,) and agent.config.run.seed == 2


def test_import_and_gymnasium_envs_stay_light() -> None:
    code = (
        "import sys, wm_ray, wm_ray.loops.collect, wm_ray.replay;"
        "env = wm_ray.make_env('CartPole-v1'); env.reset(seed=0);"
        "heavy = [m for m in ('ray', 'ale_py', 'dm_control', 'mujoco', 'jax', 'brax',"
        " 'mlagents_envs') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_wm_ray_help_names_an_env_id_of_every_backend(capsys: pytest.CaptureFixture[str]) -> None:
    from wm_ray import cli
    from wm_ray.envs.registry import ENV_BACKENDS

    with pytest.raises(SystemExit):
        cli.main(["--help"])
    shown = capsys.readouterr().out
    missing = [
        name
        for name, spec in ENV_BACKENDS.items()
        if name != "fake"
        and f"{name}:" not in shown
        and not any(f"{alias}:" in shown for alias in spec.aliases)
        and name not in ("gymnasium", "mujoco")  # plain ids: CartPole-v1, HalfCheetah-v5
    ]
    assert not missing, f"wm-ray --help shows no env id of backend(s) {missing}"
    assert "CartPole-v1" in shown and "HalfCheetah-v5" in shown
