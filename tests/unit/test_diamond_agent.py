"""DiamondAgent and its parts at toy size: the config's checks, the presets, the context window
and the dream (shapes, resets), the reward / termination model against the majority class,
the actor-critic improving its imagined return, and ``wm-ray play``'s hooks. The conformance
suite (``tests/conformance -k diamond``) checks the agent protocol itself."""

from __future__ import annotations

from collections.abc import Iterator

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import Tensor

from wm_ray import metrics as M
from wm_ray.config import Config
from wm_ray.config_io import build_config
from wm_ray.models.common.actor_critic import LSTMState
from wm_ray.models.diamond.agent import DiamondAgent
from wm_ray.models.diamond.config import DiamondConfig, RewardEndConfig, validate
from wm_ray.models.diamond.imagination import context_window
from wm_ray.models.diamond.losses import REWARD_END, reward_end_loss
from wm_ray.models.diamond.networks import build_networks
from wm_ray.models.diamond.reward_end import RewardEndModel, reward_class

SIZE = 16
IMAGE = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8)})
ACTIONS: gym.spaces.Discrete[np.int64] = gym.spaces.Discrete(3)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny networks run op by op: one intra-op thread is faster than two and does not stall
    when the other core is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def config(*extra: str) -> Config:
    return build_config(["diamond", "diamond_debug"], ["run.device=cpu", *extra])


def batch(seed: int = 0, b: int = 4, t: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    is_first = np.zeros((b, t), bool)
    is_first[:, 0] = True
    is_first[1, 5] = True
    return {
        "image": rng.integers(0, 256, (b, t, SIZE, SIZE, 3), dtype=np.uint8),
        "action": rng.integers(0, 3, (b, t)),
        "reward": rng.choice([-1.0, 0.0, 1.0], (b, t)).astype(np.float32),
        "is_first": is_first,
        "is_last": np.zeros((b, t), bool),
        "is_terminal": np.zeros((b, t), bool),
    }


def test_the_validator_names_every_bad_value_and_the_agent_refuses_bad_spaces() -> None:
    with pytest.raises(ValueError) as err:
        validate(config("diamond.ac.burn_in=9", "diamond.reward_end.burn_in=7"))
    text = str(err.value)
    assert "diamond.ac.burn_in=9" in text and "diamond.reward_end.burn_in=7" in text
    with pytest.raises(ValueError, match=r"diamond\.diffusion\.context=8"):
        validate(config("diamond.diffusion.context=8", "diamond.denoiser.cond_dim=16"))
    validate(config())
    with pytest.raises(ValueError, match="square image observations"):
        DiamondAgent(gym.spaces.Dict({"vector": gym.spaces.Box(-1, 1, (4,))}), ACTIONS, config())
    with pytest.raises(ValueError, match="Discrete action space"):
        DiamondAgent(IMAGE, gym.spaces.Box(-1, 1, (2,), np.float32), config())
    with pytest.raises(ValueError, match=r"diamond\.reward_end\.channels=\(8, 8, 8, 8, 8\)"):
        DiamondAgent(IMAGE, ACTIONS, config("diamond.reward_end.channels=[8,8,8,8,8]"))


def test_the_paper_preset_has_the_papers_settings_and_sizes() -> None:
    cfg = build_config(["diamond"], ["run.device=cpu"])
    d: DiamondConfig = cfg.diamond
    assert (cfg.replay.batch_size, cfg.replay.seq_len) == (32, 19)
    assert (d.ac.horizon, d.ac.gamma, d.ac.lam, d.ac.entropy) == (15, 0.985, 0.95, 0.001)
    assert (d.diffusion.steps, d.diffusion.sigma_max, d.diffusion.context) == (3, 5.0, 4)
    nets = build_networks(d, (64, 64, 3), 18)
    count = {k: sum(p.numel() for p in getattr(nets, k).parameters()) for k in nets._fields}
    assert 4.0e6 < count["denoiser"] < 4.8e6, count  # the paper: 4.4M


def test_the_context_window_pads_across_episode_starts() -> None:
    frames = torch.arange(1, 7, dtype=torch.float32).view(1, 6, 1, 1, 1).repeat(2, 1, 1, 2, 2)
    actions = torch.arange(1, 7).repeat(2, 1)
    is_first = torch.zeros(2, 6, dtype=torch.bool)
    is_first[1, 3] = True
    ctx, act = context_window(frames, actions, is_first, torch.tensor([4, 4]), 4)
    assert ctx.shape == (2, 4, 1, 2, 2) and act.shape == (2, 4)
    assert ctx[0, :, 0, 0, 0].tolist() == [2.0, 3.0, 4.0, 5.0]
    assert ctx[1, :, 0, 0, 0].tolist() == [0.0, 0.0, 4.0, 5.0]  # step 3 starts an episode
    assert act.tolist() == [[2, 3, 4, 5], [0, 0, 4, 5]]


def test_the_dream_steps_frames_rewards_and_ends_of_the_right_shapes() -> None:
    agent = DiamondAgent(IMAGE, ACTIONS, config())
    data = batch()
    frames = agent._frames(data["image"])
    actions = torch.as_tensor(data["action"])
    is_first = torch.as_tensor(data["is_first"])
    dream = agent.start_dream(frames, actions, is_first)
    assert torch.equal(dream.last_frame, frames[:, -1])
    before = dream.frames.clone()
    step = dream.step(torch.tensor([0, 1, 2, 1]))
    assert step.obs.shape == (4, 3, SIZE, SIZE)
    assert float(step.obs.min()) >= -1.0 and float(step.obs.max()) <= 1.0
    levels = (step.obs + 1.0) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4)  # on the uint8 levels (EDM)
    assert set(step.reward.tolist()) <= {-1.0, 0.0, 1.0} and set(step.end.tolist()) <= {0.0, 1.0}
    assert torch.equal(dream.frames[:, :-1], before[:, 1:]) and torch.equal(
        dream.last_frame, step.obs
    )
    assert dream.actions[:, -1].tolist() == [0, 1, 2, 1]
    with pytest.raises(ValueError, match=r"actions must be \(4,\)"):
        dream.step(torch.zeros(3, dtype=torch.long))
    # wm-ray play's hooks: uint8 frames from a real start, env actions, rewards and ends
    session, start = agent.dream_reset(data["image"][:2, 0])
    assert start.shape == (2, SIZE, SIZE, 3) and start.dtype == np.uint8
    frame, reward, end = agent.dream_step(session, np.array([1, 2]))
    assert frame.shape == (2, SIZE, SIZE, 3) and frame.dtype == np.uint8
    assert reward.shape == (2,) and end.shape == (2,) and end.dtype == bool
    with pytest.raises(ValueError, match="indices of 3 actions"):
        agent.dream_step(session, np.array([1, 3]))


def test_the_reward_model_state_resets_at_episode_starts() -> None:
    torch.manual_seed(0)
    model = RewardEndModel(
        RewardEndConfig(channels=(8,), res_blocks=1, cond_dim=8, lstm=16), 3, 16, 3
    ).eval()  # batch norm: running statistics, each transition on its own
    obs, nxt = torch.randn(2, 5, 3, 16, 16), torch.randn(2, 5, 3, 16, 16)
    actions = torch.randint(0, 3, (2, 5))
    first = torch.zeros(2, 5, dtype=torch.bool)
    first[0, 2] = True
    with torch.no_grad():
        full, end_full, _ = model(obs, actions, nxt, first, model.initial(2, torch.device("cpu")))
        tail, _, _ = model(
            obs[:, 2:],
            actions[:, 2:],
            nxt[:, 2:],
            first[:, 2:],
            model.initial(2, torch.device("cpu")),
        )
    assert torch.allclose(full[0, 2:], tail[0], atol=1e-6)  # stream 0 restarted at step 2
    assert not torch.allclose(full[1, 2:], tail[1], atol=1e-4)  # stream 1 remembers
    assert end_full.shape == (2, 5)


def _toy_transitions(
    rng: np.random.Generator, b: int, t: int
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Frames of noise; the reward's sign follows the action (0 -> 0, 1 -> +1, 2 -> -1), the
    episode ends after action 2 when the next frame is bright."""
    frames = torch.as_tensor(rng.uniform(-1, 1, (b, t, 3, SIZE, SIZE)), dtype=torch.float32)
    frames += torch.as_tensor(rng.choice([-0.5, 0.5], (b, t, 1, 1, 1)), dtype=torch.float32)
    actions = torch.as_tensor(rng.choice(3, (b, t), p=[0.6, 0.2, 0.2]))
    reward = torch.zeros(b, t)
    reward[:, 1:] = torch.tensor([0.0, 1.0, -1.0])[actions[:, :-1]]
    terminal = torch.zeros(b, t, dtype=torch.bool)
    terminal[:, 1:] = (actions[:, :-1] == 2) & (frames[:, 1:].mean((2, 3, 4)) > 0)
    first = torch.zeros(b, t, dtype=torch.bool)
    first[:, 0] = True
    return frames, actions, reward, first, terminal


def test_the_reward_end_model_beats_the_majority_class() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cfg = RewardEndConfig(channels=(8, 8), res_blocks=1, cond_dim=8, lstm=32, burn_in=1)
    model = RewardEndModel(cfg, 3, SIZE, 3)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss, _ = reward_end_loss(model, *_toy_transitions(rng, 8, 6), 1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    frames, actions, reward, first, terminal = _toy_transitions(rng, 32, 6)
    with torch.no_grad():
        _, metrics = reward_end_loss(model, frames, actions, reward, first, terminal, 1)
    target = reward_class(reward[:, 2:])
    majority = float((target == torch.mode(target.flatten()).values).float().mean())
    accuracy = float(metrics[M.diagnostic(REWARD_END, "reward_accuracy")])
    assert accuracy > max(0.9, majority + 0.2), (accuracy, majority)
    end_rate = float(terminal[:, 2:].float().mean())
    baseline = -(end_rate * np.log(end_rate) + (1 - end_rate) * np.log(1 - end_rate))
    assert float(metrics[M.loss(REWARD_END, "end")]) < baseline  # better than the base rate


def test_class_balance_weighs_every_reward_class_present_alike() -> None:
    """``class_balance``: the reward loss is the mean over the classes present of each class's
    mean cross-entropy (a rare class weighs as much as the majority); off, the plain mean."""
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    cfg = RewardEndConfig(channels=(8, 8), res_blocks=1, cond_dim=8, lstm=32, burn_in=1)
    model = RewardEndModel(cfg, 3, SIZE, 3)
    frames, actions, reward, first, terminal = _toy_transitions(rng, 4, 6)
    first[2, 3] = True  # an episode start: the transition into it does not count
    with torch.no_grad():
        logits, _, _ = model(
            frames[:, :-1],
            actions[:, :-1],
            frames[:, 1:],
            first[:, :-1],
            model.initial(4, torch.device("cpu")),
        )
        losses = [
            reward_end_loss(model, frames, actions, reward, first, terminal, 1, balance)[1]
            for balance in (False, True)
        ]
    ce = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), reward_class(reward[:, 1:]).flatten(), reduction="none"
    ).view(4, 5)
    counted = ~first[:, 1:]
    counted[:, :1] = False
    ce, target = ce[counted], reward_class(reward[:, 1:])[counted]
    per_class = [ce[target == c].mean() for c in target.unique()]
    assert len(per_class) == 3 and bool((target == 1).sum() > 2 * (target == 2).sum())
    plain, balanced = (float(m[M.loss(REWARD_END, "reward")]) for m in losses)
    assert plain == pytest.approx(float(ce.mean()), rel=1e-5)
    assert balanced == pytest.approx(float(torch.stack(per_class).mean()), rel=1e-5)


class _PaysForAction1(RewardEndModel):
    """A reward model of a toy world: +1 for action 1, 0 otherwise, never an end."""

    def step(
        self, obs: Tensor, action: Tensor, next_obs: Tensor, state: LSTMState
    ) -> tuple[Tensor, Tensor, LSTMState]:
        logits = torch.full((action.shape[0], 3), -20.0)
        logits[torch.arange(action.shape[0]), (action == 1).long() + 1] = 20.0
        return logits, torch.full((action.shape[0],), -20.0), state


def test_the_actor_critic_improves_its_imagined_return() -> None:
    """Only the actor-critic trains (the other parts start later), in dreams whose frames the
    untrained denoiser samples and whose rewards pay action 1: the share of action 1 (the
    imagined reward) grows from about a third (seeds 0-4: at least +0.43 over 30 updates)."""
    agent = DiamondAgent(
        IMAGE,
        ACTIONS,
        config(
            "diamond.start.denoiser=1000", "diamond.start.reward_end=1000", "diamond.ac.lr=3e-3"
        ),
    )
    agent.reward_end.__class__ = _PaysForAction1
    data = batch()
    rewards = []
    for _ in range(30):
        _, metrics = agent.train(data, None)
        rewards.append(metrics[M.IMAG_REWARD])
        assert M.loss("denoiser") not in metrics  # not started yet
    assert np.mean(rewards[-5:]) > np.mean(rewards[:5]) + 0.3, rewards


def test_the_report_strip_leaves_the_training_randomness_alone() -> None:
    agent = DiamondAgent(IMAGE, ACTIONS, config())
    state = agent.random_state()
    strip = agent.report(batch())["openloop"]
    assert strip.shape == (8, SIZE, 2 * SIZE, 3) and strip.dtype == np.uint8
    assert torch.equal(agent.random_state(), state)
    np.testing.assert_array_equal(strip[:4, :, SIZE:], strip[:4, :, :SIZE])  # K real frames


def test_dit_and_ddpm_are_selectable_for_the_world_model() -> None:
    agent = DiamondAgent(
        IMAGE,
        ACTIONS,
        config(
            "diamond.denoiser.kind=dit",
            "diamond.denoiser.width=16",
            "diamond.denoiser.depth=1",
            "diamond.denoiser.heads=2",
            "diamond.diffusion.schedule=ddpm",
            "diamond.diffusion.ddpm_sample_steps=3",
        ),
    )
    assert type(agent.denoiser).__name__ == "DiTDenoiser"
    assert type(agent.schedule).__name__ == "DDPM"
    _, metrics = agent.train(batch(), None)
    assert np.isfinite(metrics[M.loss("denoiser")]) and M.IMAG_RETURN in metrics
    assert agent.report(batch())["openloop"].shape == (8, SIZE, 2 * SIZE, 3)
