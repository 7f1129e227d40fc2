"""The DIAMOND agent (Alonso et al. 2024) behind the carry-passing protocol of ``wm_ray.core``.

``train`` updates the parts whose start (``diamond.start``, in updates) has come, on one
replayed ``(B, T)`` batch: the denoiser on ``denoiser_train.targets`` next frames per sequence,
the reward / termination model on all ``T - 1`` transitions (after its burn-in), and the
actor-critic in imagination: its LSTM burnt in on the ``ac.burn_in`` real frames before each
sequence's last frame, the reward / termination model's on the real transitions before it,
then ``ac.horizon`` steps of :class:`~wm_ray.models.diamond.imagination.DiffusionDream` from the
last ``K`` real frames. ``policy`` acts on real frames with an LSTM state carried per env.
:meth:`dream_reset` / :meth:`dream_step` step the world model from real frames with given
actions (``wm-ray play``). Images stay uint8 in replay; the agent maps them to [-1, 1].
"""

from __future__ import annotations

import time
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from wm_ray import metrics as M
from wm_ray.models.common import Optimizer
from wm_ray.models.common.actor_critic import ActorCritic, LSTMState
from wm_ray.models.common.agent import AgentBase
from wm_ray.models.common.data import device_tensor
from wm_ray.models.common.device import synchronize
from wm_ray.models.common.distributed import average_buffers
from wm_ray.models.common.imagination import policy_action, reinforce_loss, rollout
from wm_ray.models.diamond.config import RootConfig, check_diamond
from wm_ray.models.diamond.diffusion import make_schedule
from wm_ray.models.diamond.imagination import DiffusionDream, context_window
from wm_ray.models.diamond.losses import DENOISER, REWARD_END, denoiser_loss, reward_end_loss
from wm_ray.models.diamond.networks import build_networks
from wm_ray.models.diamond.reward_end import RewardEndModel
from wm_ray.operators.tensors import (
    action_indices,
    image_tensor,
    signed_channels_first,
    signed_to_pixels,
)


def _adamw(module: nn.Module, part: Any) -> Optimizer:
    """The optimizer of one part from its section (``lr``, ``clip``, ``weight_decay``,
    ``warmup``): the three parts are trained alike, each at its own settings."""
    return Optimizer(
        module.parameters(),
        part.lr,
        clip=part.clip,
        weight_decay=part.weight_decay,
        warmup=part.warmup,
    )


class DiamondAgent(AgentBase):
    """DIAMOND: diffusion world model, reward / termination model, actor-critic in imagination.

    Args:
        obs_space: single-env Dict space with an ``image`` (H, W, C) uint8 entry (H = W, a
            multiple of 16 and of the networks' downsampling).
        act_space: a Discrete space.
        config: the root config (reads ``diamond``, ``run.seed``, ``run.device``,
            ``replay.seq_len``).
        acting: only the actor-critic (env and eval workers).
    """

    family = "diamond"

    def __init__(
        self,
        obs_space: gym.spaces.Dict,
        act_space: gym.Space,
        config: RootConfig,
        acting: bool = False,
    ) -> None:
        super().__init__(obs_space, act_space, config, acting)
        self.cfg = cfg = config.diamond
        image = obs_space.spaces.get("image") if isinstance(obs_space, gym.spaces.Dict) else None
        shape = tuple(image.shape or ()) if image is not None else ()
        if len(shape) != 3 or shape[0] != shape[1]:
            raise ValueError(
                f"DIAMOND needs square image observations (H, W, C); got {obs_space} "
                "(set env.pixels=true for vector tasks, or use --set run.model=dreamer)"
            )
        if not isinstance(act_space, gym.spaces.Discrete):
            raise ValueError(f"DIAMOND needs a Discrete action space, got {act_space}")
        self.image_shape = (int(shape[0]), int(shape[1]), int(shape[2]))
        self.num_actions, self.action_start = int(act_space.n), int(act_space.start)
        bad = check_diamond(cfg, self.image_shape[0], self.num_actions, config.replay.seq_len)
        if bad:
            raise ValueError("invalid diamond config: " + "; ".join(bad))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.run.seed)
            nets = build_networks(cfg, self.image_shape, self.num_actions, acting=acting)
        self.ac = nets.actor_critic
        if acting:
            self._set_networks({"ac": self.ac})
            return
        assert nets.denoiser is not None and nets.reward_end is not None
        self.denoiser: nn.Module = nets.denoiser
        self.reward_end: RewardEndModel = nets.reward_end
        self._set_networks(
            {"denoiser": self.denoiser, "reward_end": self.reward_end, "ac": self.ac}
        )
        self.schedule = make_schedule(cfg.diffusion).to(self.device)
        self.den_opt = _adamw(self.denoiser, cfg.denoiser_train)
        self.re_opt = _adamw(self.reward_end, cfg.reward_end)
        self.ac_opt = _adamw(self.ac, cfg.ac)

    # ----------------------------------------------------------------------------- inputs

    def _frames(self, image: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 ``(..., H, W, C)`` -> float ``(..., C, H, W)`` in [-1, 1] on the device (the
        math of ``wm_ray.get_operator("diamond").model_input``)."""
        return signed_channels_first(image_tensor(image, self.image_shape, self.device))

    @staticmethod
    def _to_uint8(frames: torch.Tensor) -> np.ndarray:
        """float ``(..., C, H, W)`` in [-1, 1] -> uint8 ``(..., H, W, C)``."""
        return signed_to_pixels(frames).movedim(-3, -1).cpu().numpy()

    def _actions(self, action: Any, shape: tuple[int, ...]) -> torch.Tensor:
        """Env actions -> 0-based model actions of ``shape`` on the device, checked."""
        return action_indices(action, shape, self.num_actions, self.action_start, self.device)

    # ----------------------------------------------------------------------------- acting

    def init_policy(self, batch_size: int) -> LSTMState:
        """Zero LSTM states for ``batch_size`` streams."""
        return self.ac.initial(batch_size, self.device)

    @torch.no_grad()
    def policy(
        self,
        carry: LSTMState,
        obs: dict[str, np.ndarray],
        mode: Literal["explore", "eval"] = "explore",
    ) -> tuple[LSTMState, np.ndarray, dict[str, np.ndarray]]:
        """One acting step for ``N`` streams on their real frames.

        explore: sample (temperature 1), with probability ``ac.epsilon`` a uniform action;
        eval: sample at ``ac.eval_temperature`` (0: the most likely action).
        """
        is_first = self.check_policy_inputs(obs, carry[0].shape[0], mode, ("image",))
        logits, _, state = self.ac(self._frames(obs["image"]), ActorCritic.reset(carry, is_first))
        ac = self.cfg.ac
        action = policy_action(logits, mode, ac.epsilon, ac.eval_temperature, self.gen)
        env_action = (action + self.action_start).cpu().numpy().astype(np.int64)
        return state, env_action, {}

    # ----------------------------------------------------------------------------- learning

    def init_train(self, batch_size: int) -> None:
        """No training carry: every replayed sequence is self-contained."""
        return None

    def train(self, batch: dict[str, np.ndarray], state: Any) -> tuple[Any, dict[str, float]]:
        """One update of every part whose start has come (see the module docstring)."""
        self.require_learner()
        cfg, start = self.cfg, self.cfg.start
        frames = self._frames(batch["image"])  # (B, T, C, H, W)
        b, t = frames.shape[:2]
        actions = self._actions(batch["action"], (b, t))
        flag = {
            key: device_tensor(np.asarray(batch[key], bool), self.device)
            for key in ("is_first", "is_terminal")
        }
        is_first = flag["is_first"].clone()
        is_first[:, 0] = True  # every replayed sequence starts from nothing
        reward = device_tensor(np.asarray(batch["reward"], np.float32), self.device)
        tensors: dict[str, torch.Tensor] = {}
        times: dict[str, float] = {}
        if self.updates >= start.denoiser:
            tick = time.perf_counter()
            self.denoiser.train()
            loss, metrics = denoiser_loss(
                self.schedule,
                self.denoiser,
                frames,
                actions,
                is_first,
                cfg.diffusion.context,
                cfg.denoiser_train.targets,
                self.gen,
                self.gen,
            )
            stats = self.den_opt.step(loss)
            tensors.update(metrics)
            tensors[M.grad_norm(DENOISER)] = stats["grad_norm"]
            synchronize(self.device)
            times[M.timing(DENOISER)] = time.perf_counter() - tick
        if self.updates >= start.reward_end:
            tick = time.perf_counter()
            self.reward_end.train()
            loss, metrics = reward_end_loss(
                self.reward_end,
                frames,
                actions,
                reward,
                is_first,
                flag["is_terminal"],
                cfg.reward_end.burn_in,
                cfg.reward_end.class_balance,
            )
            stats = self.re_opt.step(loss)
            average_buffers(self.reward_end)  # batch norm's running statistics, over the group
            tensors.update(metrics)
            tensors[M.grad_norm(REWARD_END)] = stats["grad_norm"]
            synchronize(self.device)
            times[M.timing(REWARD_END)] = time.perf_counter() - tick
        if self.updates >= start.actor_critic:
            tick = time.perf_counter()
            tensors.update(self._train_actor_critic(frames, actions, is_first, flag["is_terminal"]))
            synchronize(self.device)
            times[M.timing(M.ACTOR_CRITIC)] = time.perf_counter() - tick
        self.updates += 1
        return state, self.to_floats(tensors, times)

    @torch.no_grad()
    def start_dream(
        self, frames: torch.Tensor, actions: torch.Tensor, is_first: torch.Tensor
    ) -> DiffusionDream:
        """A dream from the last frame of each replayed sequence: the last ``K`` frames as
        context and the reward / termination model burnt in on the real transitions before
        (``reward_end.burn_in`` of them, at most ``T - 1``)."""
        b, t = frames.shape[:2]
        k = self.cfg.diffusion.context
        end = torch.full((b,), t - 1, device=self.device)
        ctx, act = context_window(frames, actions, is_first, end, k)
        state = self.reward_end.initial(b, self.device)
        burn = min(self.cfg.reward_end.burn_in, t - 1)
        if burn > 0:
            lo = t - 1 - burn
            _, _, state = self.reward_end(
                frames[:, lo:-1], actions[:, lo:-1], frames[:, lo + 1 :], is_first[:, lo:-1], state
            )
        state = ActorCritic.reset(state, is_first[:, -1])
        return DiffusionDream(
            self.denoiser, self.schedule, self.reward_end, ctx, act[:, :-1], state, self.gen
        )

    def _train_actor_critic(
        self,
        frames: torch.Tensor,
        actions: torch.Tensor,
        is_first: torch.Tensor,
        is_terminal: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        ac_cfg = self.cfg.ac
        burn = ac_cfg.burn_in
        b, t = frames.shape[:2]
        self.denoiser.eval()
        self.reward_end.eval()
        self.ac.train()
        state = self.ac.initial(b, self.device)
        with torch.no_grad():
            for i in range(t - 1 - burn, t - 1):
                state = ActorCritic.reset(state, is_first[:, i])
                _, _, state = self.ac(frames[:, i], state)
            state = ActorCritic.reset(state, is_first[:, -1])
        dream = self.start_dream(frames, actions, is_first)
        traj = rollout(
            dream, self.ac, dream.last_frame, state, ~is_terminal[:, -1], ac_cfg.horizon, self.gen
        )
        loss, metrics = reinforce_loss(traj, ac_cfg.gamma, ac_cfg.lam, ac_cfg.entropy)
        stats = self.ac_opt.step(loss)
        metrics[M.grad_norm(M.ACTOR_CRITIC)] = stats["grad_norm"]
        return metrics

    # ----------------------------------------------------------------------------- dreams

    @torch.no_grad()
    def dream_reset(self, image: np.ndarray) -> tuple[DiffusionDream, np.ndarray]:
        """Start ``N`` dreams from real frames ``(N, H, W, C)`` uint8, each the first frame of
        an episode (the context before it is padded, as in training). Returns the session and
        the start frames."""
        self.require_learner()
        self.nets.eval()
        frames = self._frames(image)[:, None]  # (N, 1, C, H, W)
        n, k = frames.shape[0], self.cfg.diffusion.context
        pad = frames.new_zeros((n, k - 1, *frames.shape[2:]))
        ctx = torch.cat([pad, frames], 1)
        actions = torch.zeros(n, k - 1, dtype=torch.long, device=self.device)
        state = self.reward_end.initial(n, self.device)
        dream = DiffusionDream(
            self.denoiser, self.schedule, self.reward_end, ctx, actions, state, self.gen
        )
        return dream, np.asarray(image, np.uint8)

    @torch.no_grad()
    def dream_step(
        self, dream: DiffusionDream, action: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Apply env actions ``(N,)``; returns frames ``(N, H, W, C)`` uint8, rewards, ends."""
        step = dream.step(self._actions(action, (dream.batch,)))
        return self._to_uint8(step.obs), step.reward.cpu().numpy(), step.end.bool().cpu().numpy()

    # ----------------------------------------------------------------------------- reports

    @torch.no_grad()
    def report(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``openloop``: ``(T, H, 2W, C)`` [real | dream] of sequence 0: the dream is given the
        first ``K`` real frames and predicts the rest from the replayed actions (episode starts
        inside the sequence are not respected: the strip shows whatever it holds). It samples
        with a generator of its own, seeded from ``run.seed``: training's is left alone."""
        self.require_learner()
        self.nets.eval()
        frames = self._frames(np.asarray(batch["image"])[:1])  # (1, T, C, H, W)
        t, k = frames.shape[1], self.cfg.diffusion.context
        actions = self._actions(np.asarray(batch["action"])[:1], (1, t))
        first = torch.zeros(1, t, dtype=torch.bool, device=self.device)
        first[:, 0] = True
        shown = min(k, t)
        pred = [frames[0, i] for i in range(shown)]
        if t > k:
            dream = self.start_dream(frames[:, :k], actions[:, :k], first[:, :k])
            # its own numbers: a report leaves the training's generator where it was
            dream.gen = torch.Generator(self.device).manual_seed(self.config.run.seed)
            for i in range(k - 1, t - 1):
                pred.append(dream.step(actions[:, i]).obs[0])
        strip = torch.cat([frames[0], torch.stack(pred)], dim=-1)
        return {"openloop": self._to_uint8(strip)}

    # ----------------------------------------------------------------------------- weights

    def acting_modules(self) -> dict[str, nn.Module]:
        """The actor-critic ``ac`` (the policy acts on real frames)."""
        return {"ac": self.ac}

    def optimizers(self) -> dict[str, Optimizer]:
        if self.acting:
            return {}
        return {"denoiser": self.den_opt, "reward_end": self.re_opt, "ac": self.ac_opt}
