"""The Brax backend: one jitted call per batched step, VectorEnv's semantics, seeding, pixels.

Everything runs Brax's inverted pendulum (the cheapest system to compile) at batch sizes 1 and 3
with action repeat 1, so the jitted programs compile once per batch size and are shared by the
tests (the time limit is data, not a compile-time constant); action repeat 2 and pixels add one
program each, at batch size 1.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
from gymnasium import spaces

from wm_ray.config import EnvConfig
from wm_ray.envs.registry import list_envs, make_env
from wm_ray.loops.setup import make_vector_env
from wm_ray.registry import UnknownNameError

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("brax") is None, reason="brax is not installed"
)
TASK = "inverted_pendulum"


def _make(num_envs: int, seed: int = 0, **options: object):  # type: ignore[no-untyped-def]
    from wm_ray.envs import brax_env

    return brax_env.make_vector(TASK, num_envs, seed, **options)  # type: ignore[arg-type]


def _small_actions(n: int, steps: int, seed: int = 0) -> np.ndarray:
    """Gentle random pushes: the pendulum stays up for these few steps."""
    return np.random.default_rng(seed).uniform(-0.2, 0.2, (steps, n, 1)).astype(np.float32)


def test_spaces_dtypes_and_a_batched_step_is_one_call_that_matches_single_envs() -> None:
    with _make(3, seed=5) as venv:
        assert venv.num_envs == 3 and venv.mode == "batched" and venv.pids == []
        assert venv.obs_space == spaces.Dict({"vector": spaces.Box(-np.inf, np.inf, (4,))})
        assert venv.act_space == spaces.Box(-1.0, 1.0, (1,), np.float32)
        first = venv.reset()
        assert first["vector"].shape == (3, 4) and first["vector"].dtype == np.float32
        assert first["reward"].dtype == np.float32 and not first["reward"].any()
        assert first["is_first"].all() and not first["is_last"].any()
        assert {first[k].dtype for k in ("is_first", "is_last", "is_terminal")} == {np.dtype(bool)}
        calls = []
        jitted = venv._step_fn
        venv._step_fn = lambda *args: calls.append(1) or jitted(*args)
        actions = _small_actions(3, 6)
        batched = [venv.step(actions[0])]
        assert len(calls) == 1  # one jitted call stepped all three envs
        assert not batched[0]["is_first"].any() and (batched[0]["reward"] == 1.0).all()
        assert not np.allclose(batched[0]["vector"], first["vector"])
        batched += [venv.step(a) for a in actions[1:]]
    for i in range(3):  # env i of a batch seeded 5 steps like a batch of one seeded 5 + i
        with _make(1, seed=5 + i) as single:
            assert np.allclose(single.reset()["vector"][0], first["vector"][i])
            for step, action in zip(batched, actions, strict=True):
                np.testing.assert_allclose(
                    single.step(action[i : i + 1])["vector"][0], step["vector"][i], atol=1e-5
                )


def test_same_seed_same_first_observations_other_seed_others() -> None:
    with _make(3, seed=11) as a, _make(3, seed=11) as b, _make(3, seed=12) as c:
        obs_a, obs_b, obs_c = a.reset()["vector"], b.reset()["vector"], c.reset()["vector"]
    assert np.array_equal(obs_a, obs_b)
    assert not np.allclose(obs_a, obs_c)
    assert len({tuple(row) for row in obs_a}) == 3  # the envs of a batch differ too


def test_auto_reset_after_is_last_ignores_the_action_and_gives_reward_0() -> None:
    with _make(3, seed=0, time_limit=3) as venv:
        venv.reset()
        for action in _small_actions(3, 3):
            step = venv.step(action)
        assert step["is_last"].all() and not step["is_terminal"].any()  # truncated by the limit
        # A NaN action would make the physics non-finite (a batch restart) if it were applied.
        after = venv.step(np.full((3, 1), np.nan, np.float32))
        assert after["is_first"].all() and not after["reward"].any() and venv.restarts == 0
        assert np.isfinite(after["vector"]).all() and not after["is_last"].any()
        assert not venv.step(np.zeros((3, 1), np.float32))["is_first"].any()


def test_time_limit_truncates_and_a_falling_pendulum_terminates() -> None:
    env = make_env(f"brax:{TASK}", seed=3, time_limit=5)
    env.reset()
    ends = [env.step(np.zeros(1, np.float32))[2:4] for _ in range(5)]
    assert ends == [(False, False)] * 4 + [(False, True)]  # time limit: truncated, not terminal
    env.reset()
    pushed = [env.step(np.ones(1, np.float32))[1:4] for _ in range(2)]
    assert pushed == [(1.0, False, False), (1.0, True, False)]  # a full push topples the pole
    env.close()
    with _make(1, seed=3) as venv:
        venv.reset()
        step = venv.step(np.full((1, 1), 5.0, np.float32))  # clipped to 1
        step = venv.step(np.ones((1, 1), np.float32))
        assert step["is_terminal"][0] and step["is_last"][0]
        assert venv._limit == 1000  # Brax's episode_length by default


def test_action_repeat_sums_rewards_inside_one_step_and_stops_at_the_end() -> None:
    with _make(1, seed=0, action_repeat=2) as venv:
        assert venv._limit == 500  # 1000 env steps
        venv.reset()
        assert venv.step(np.zeros((1, 1), np.float32))["reward"][0] == 2.0
        venv.reset()
        step = venv.step(np.ones((1, 1), np.float32))  # falls at the 2nd env step: reward 2
        assert step["is_terminal"][0] and step["reward"][0] == 2.0
        venv.reset()
        step = venv.step(np.ones((1, 1), np.float32))
        step2 = venv.step(np.ones((1, 1), np.float32))  # the episode ended: a reset, reward 0
        assert step["is_terminal"][0] and step2["is_first"][0] and step2["reward"][0] == 0


def test_a_non_finite_step_resets_the_batch_counts_a_restart_and_repeats_raise() -> None:
    with _make(3, seed=0) as venv:
        venv.reset()
        actions = np.zeros((3, 1), np.float32)
        actions[1] = np.nan  # env 1's physics becomes NaN
        step = venv.step(actions)
        assert step["is_first"].all() and not step["reward"].any() and venv.restarts == 1
        assert np.isfinite(step["vector"]).all()
        assert not venv.step(np.zeros((3, 1), np.float32))["is_first"].any()
        for restarts in (2, 3, 4):  # a failure that repeats: three more restarts, then it raises
            venv.step(actions)
            assert venv.restarts == restarts
        with pytest.raises(RuntimeError, match="failed 4 times in a row"):
            venv.step(actions)
        assert venv.restarts == 5


def test_make_vector_env_builds_the_batched_env_from_a_config() -> None:
    from wm_ray.envs.brax_vector import BraxVectorEnv

    config = EnvConfig(id=f"brax:{TASK}", num_envs=3, time_limit=50)
    with make_vector_env(config, seed=2) as venv:
        assert isinstance(venv, BraxVectorEnv) and venv.num_envs == 3 and venv._limit == 50
        with _make(3, seed=2) as direct:
            assert np.array_equal(venv.reset()["vector"], direct.reset()["vector"])
    with pytest.raises(ValueError, match=r"env.vector='subprocess' does not apply"):
        make_vector_env(EnvConfig(id=f"brax:{TASK}", vector="subprocess"), seed=0)
    with pytest.raises(ValueError, match=r"option\(s\) \['grayscale'\] do not apply"):
        make_vector_env(EnvConfig(id=f"brax:{TASK}", grayscale=True), seed=0)


def test_ids_are_listed_and_an_unknown_task_names_the_nearest() -> None:
    ids = list_envs(backend="brax")
    assert {"brax:ant", "brax:halfcheetah", f"brax:{TASK}"} <= set(ids)
    assert set(ids) <= set(list_envs())
    with pytest.raises(UnknownNameError, match=r"did you mean 'brax:inverted_pendulum'"):
        make_env("brax:inverted_pendulm")
    with pytest.raises(UnknownNameError, match=r"did you mean 'brax:inverted_pendulum'"):
        make_vector_env(EnvConfig(id="brax:inverted_pendulm"), seed=0)


def test_pixels_render_the_mujoco_model_of_each_env() -> None:
    # no skip without offscreen GL: make installs Mesa's EGL, as the dm_control pixel tests need
    with _make(1, seed=0, pixels=True, image_size=32) as venv:
        assert venv.obs_space["image"] == spaces.Box(0, 255, (32, 32, 3), np.uint8)
        first = venv.reset()["image"][0]
        assert first.dtype == np.uint8 and first.shape == (32, 32, 3) and first.max() > first.min()
        for _ in range(3):
            later = venv.step(np.ones((1, 1), np.float32))["image"][0]
        assert not np.array_equal(first, later)  # the cart moved and the pole tipped
    with pytest.raises(ValueError, match="no MuJoCo model to render"):
        from wm_ray.envs import brax_env

        brax_env.make_vector("fast", 1, 0, pixels=True)


def test_jax_is_imported_only_for_brax_envs_with_cpu_and_no_preallocation_by_default() -> None:
    code = (
        "import os, sys\n"
        "from wm_ray.envs import brax_env, registry\n"
        "registry.make_env('CartPole-v1')\n"
        "assert 'jax' not in sys.modules\n"
        "brax_env.list_ids()\n"
        "assert 'jax' in sys.modules\n"
        "print(os.environ['JAX_PLATFORMS'], os.environ['XLA_PYTHON_CLIENT_PREALLOCATE'])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.split() == ["cpu", "false"], run.stderr[-2000:]
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "true"  # a user's own setting wins
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.split() == ["cpu", "true"], run.stderr[-2000:]
