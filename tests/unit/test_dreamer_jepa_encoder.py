"""``dreamer.encoder: jepa``: Dreamer's world model on a JEPA run's pretrained encoder, frozen
or fine-tuned. A real JEPA checkpoint on disk (a few updates at toy size)."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from wm_ray.config_io import build_config, save_config, to_yaml
from wm_ray.factory import create_model
from wm_ray.models.common.testing import fake_batch, image_space
from wm_ray.registry import UnsupportedError
from wm_ray.rundir import checkpoint as ckpt
from wm_ray.validate import validate_run

SPACE, ACTIONS = image_space(16, 3), gym.spaces.Discrete(3)


@pytest.fixture(scope="module")
def jepa_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    config = build_config(["jepa", "jepa_debug"], ["run.device=cpu", "env.image_size=16"])
    jepa = create_model("jepa", SPACE, ACTIONS, config)
    for seed in range(3):  # trained weights, unlike a fresh encoder's
        jepa.train(fake_batch(SPACE, ACTIONS, 4, 4, seed=seed), None)
    run = tmp_path_factory.mktemp("jepa-run")
    save_config(config, run)
    ckpt.save_checkpoint(run, 10, jepa.save, {"counters": {}}, to_yaml(config))
    return run, {k: v.clone() for k, v in jepa.target.state_dict().items()}


def _dreamer(run: Path, *extra: str) -> object:
    config = build_config(
        ["debug", "size_debug"],
        ["run.device=cpu", "dreamer.encoder=jepa", f"dreamer.jepa_run={run}", *extra],
    )
    return create_model("dreamer", SPACE, ACTIONS, config)


def _encoder(agent: object) -> dict[str, torch.Tensor]:
    enc = agent.wm.encoder.jepa  # type: ignore[attr-defined]
    return {k: v.clone() for k, v in enc.state_dict().items()}


@pytest.mark.parametrize("finetune", [False, True])
def test_dreamer_trains_on_the_loaded_jepa_encoder(
    jepa_run: tuple[Path, dict], finetune: bool
) -> None:
    run, weights = jepa_run
    agent = _dreamer(run, f"dreamer.jepa_finetune={str(finetune).lower()}")
    loaded = _encoder(agent)
    assert all(torch.equal(loaded[k], weights[k]) for k in weights)  # the run's target encoder
    rssm = {k: v.clone() for k, v in agent.wm.rssm.state_dict().items()}  # type: ignore[attr-defined]
    batch = fake_batch(SPACE, ACTIONS, 4, 16)
    state = agent.init_train(4)  # type: ignore[attr-defined]
    for _ in range(2):
        state, metrics = agent.train(batch, state)  # type: ignore[attr-defined]
    assert np.isfinite(metrics["train/loss/world_model/total"])
    after = _encoder(agent)
    moved = any(not torch.equal(after[k], loaded[k]) for k in loaded)
    assert moved == finetune  # frozen unless fine-tuned
    new = agent.wm.rssm.state_dict()  # type: ignore[attr-defined]
    assert any(not torch.equal(new[k], rssm[k]) for k in rssm)  # the world model learns on it
    obs = {"image": batch["image"][:, 0], "is_first": np.ones(4, bool)}
    _, action, _ = agent.policy(agent.init_policy(4), obs)  # type: ignore[attr-defined]
    assert action.shape == (4,)


def test_bad_jepa_encoders_are_refused_naming_the_key(
    jepa_run: tuple[Path, dict], tmp_path: Path
) -> None:
    run, _ = jepa_run
    config = build_config(["debug", "size_debug"], ["dreamer.encoder=jepa"])
    with pytest.raises(ValueError, match=r"dreamer\.jepa_run='' \(encoder=jepa needs"):
        validate_run(config)
    with pytest.raises(ValueError, match=r"dreamer\.encoder='cnn' \(must be 'conv' or 'jepa'\)"):
        validate_run(build_config(["debug"], ["dreamer.encoder=cnn"]))
    with pytest.raises(ValueError, match=r"dreamer\.jepa_run=.*no config.yaml"):
        _dreamer(tmp_path)
    with pytest.raises(ValueError, match=r"trained on 16-pixel frames .* gives \(32, 32, 3\)"):
        config = build_config(["debug", "size_debug"], ["run.device=cpu", "dreamer.encoder=jepa",
                                                         f"dreamer.jepa_run={run}"])  # fmt: skip
        create_model("dreamer", image_space(32, 3), ACTIONS, config)
    with pytest.raises(ValueError, match=r"does not fit the env's frames \(16, 16, 1\)"):
        create_model("dreamer", image_space(16, 1), ACTIONS, config)
    with pytest.raises(UnsupportedError, match=r"dreamer\.encoder=jepa"):
        vector = gym.spaces.Dict({"vector": gym.spaces.Box(-1, 1, (3,), np.float32)})
        create_model("dreamer", vector, ACTIONS, config)
