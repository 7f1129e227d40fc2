"""IrisAgent behind the agent protocol: clear errors, every stage training, exact checkpoints,
acting weights that reproduce the learner's acting, LSTM resets at episode starts."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from wm_ray.config import Config
from wm_ray.config_io import build_config
from wm_ray.factory import create_model
from wm_ray.models.iris.agent import IrisAgent
from wm_ray.registry import UnsupportedError

SIZE = 32
IMAGE = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8)})
ACTIONS = gym.spaces.Discrete(4)


def config(*extra: str) -> Config:
    return build_config(
        ["iris", "iris_debug"],
        [
            "run.device=cpu",
            "iris.start.world_model=0",
            "iris.start.actor_critic=0",
            "iris.ac.horizon=3",
            *extra,
        ],
    )


def batch(seed: int = 0, b: int = 4, t: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    is_first = np.zeros((b, t), bool)
    is_first[:, 0] = True
    is_first[1, 5] = True
    return {
        "image": rng.integers(0, 256, (b, t, SIZE, SIZE, 3), dtype=np.uint8),
        "action": rng.integers(0, 4, (b, t)),
        "reward": rng.choice([-1.0, 0.0, 1.0], (b, t)).astype(np.float32),
        "is_first": is_first,
        "is_last": np.zeros((b, t), bool),
        "is_terminal": np.zeros((b, t), bool),
    }


def test_unsupported_spaces_and_settings_fail_with_clear_errors() -> None:
    vector = gym.spaces.Dict({"vector": gym.spaces.Box(-1, 1, (4,), np.float32)})
    with pytest.raises(ValueError, match="square image observations"):
        IrisAgent(vector, ACTIONS, config())
    with pytest.raises(ValueError, match="Discrete action space"):
        IrisAgent(IMAGE, gym.spaces.Box(-1, 1, (2,), np.float32), config())
    with pytest.raises(ValueError, match=r"iris\.ac\.burn_in=9"):
        IrisAgent(IMAGE, ACTIONS, config("iris.ac.burn_in=9", "replay.seq_len=8"))
    with pytest.raises(ValueError, match=r"iris\.world_model\.embed_dim=60"):
        IrisAgent(
            IMAGE, ACTIONS, config("iris.world_model.embed_dim=60", "iris.world_model.heads=8")
        )
    for setting in ("run.precision=bf16", "run.channels_last=true", "run.cpu_rng=true"):
        key = setting.split("=")[0]
        with pytest.raises(UnsupportedError, match=f"iris family does not support {key}="):
            create_model("iris", IMAGE, ACTIONS, config(setting))
    agent = IrisAgent(IMAGE, ACTIONS, config())
    bad = batch()
    bad["action"][0, 0] = 7
    with pytest.raises(ValueError, match="indices of 4 actions"):
        agent.train(bad, None)
    with pytest.raises(ValueError, match="expected images"):
        agent.policy(agent.init_policy(2), {"image": np.zeros((2, 16, 16, 3), np.uint8),
                                            "is_first": np.ones(2, bool)})  # fmt: skip


def test_every_stage_trains_and_a_checkpoint_round_trips_exactly(tmp_path: Path) -> None:
    agent = IrisAgent(IMAGE, ACTIONS, config())
    _, metrics = agent.train(batch(0), None)
    for key in (
        "train/loss/tokenizer/total",
        "train/loss/world_model/obs",
        "train/loss/actor/total",
    ):
        assert key in metrics and np.isfinite(metrics[key]), key
    agent.save(tmp_path)
    other = IrisAgent(IMAGE, ACTIONS, config("run.seed=5"))
    other.load(tmp_path)
    assert other.updates == agent.updates == 1
    _, after_a = agent.train(batch(1), None)
    _, after_b = other.train(batch(1), None)
    assert after_a.keys() == after_b.keys()
    for key in after_a:
        if not key.startswith("time/"):
            assert after_a[key] == pytest.approx(after_b[key], rel=1e-5, abs=1e-6), key


def test_compiled_imagination_trains_as_the_eager_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """run.compile: the imagination's token step compiled (aot_eager here: the same graph
    without inductor's compile time); every metric of an update equals the eager learner's."""
    monkeypatch.setattr(IrisAgent, "compile_backend", "aot_eager")
    eager = IrisAgent(IMAGE, ACTIONS, config())
    compiled = IrisAgent(IMAGE, ACTIONS, config("run.compile=true"))
    assert compiled.step_mode == "compiled" and eager.step_mode == "eager"
    _, ours = compiled.train(batch(0, b=2), None)
    _, theirs = eager.train(batch(0, b=2), None)
    for key in theirs:
        if not key.startswith("time/"):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-4, abs=1e-5), key
    assert list(compiled._steppers) == [2] and compiled.stepper(2).mode == "compiled"
    captured = IrisAgent(
        IMAGE, ACTIONS, config("run.compile=true", "run.compile_mode=reduce-overhead")
    )
    assert captured.step_mode == "captured"  # a CPU learner runs it compiled
    assert captured.stepper(2).mode == "compiled" and not captured.stepper(2).capture


def test_acting_weights_reproduce_the_learners_acting_and_is_first_resets_memory() -> None:
    learner = IrisAgent(IMAGE, ACTIONS, config())
    learner.train(batch(0), None)
    worker = IrisAgent(IMAGE, ACTIONS, config("run.seed=9"))
    worker.load_acting_weights(learner.acting_weights())
    frames = np.random.default_rng(3).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    x = learner._frames(frames)
    torch.testing.assert_close(
        worker.tokenizer.encode_decode(x), learner.tokenizer.encode_decode(x)
    )
    first = {"image": frames, "is_first": np.ones(2, bool)}
    carry, _, _ = learner.policy(learner.init_policy(2), first)
    assert float(carry[0].abs().sum()) > 0
    # a stream that restarts acts from a zero state, whatever it remembered
    again, _, _ = learner.policy(carry, first)
    fresh, _, _ = learner.policy(learner.init_policy(2), first)
    torch.testing.assert_close(again, fresh)
    cont, _, _ = learner.policy(carry, {"image": frames, "is_first": np.zeros(2, bool)})
    assert not torch.allclose(cont[0], fresh[0])
