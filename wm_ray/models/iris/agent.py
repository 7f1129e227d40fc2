"""The IRIS agent (Micheli et al. 2023) behind the carry-passing protocol of ``wm_ray.core``.

``train`` updates the parts whose start (``iris.start``, in updates) has come, in the paper's
order, on one replayed ``(B, T)`` batch: the tokenizer on ``batch_frames`` of its frames, the
world model on all ``B`` sequences (tokenized by the updated tokenizer), and the actor-critic in
imagination: burn-in on the first ``burn_in`` reconstructed frames of every sequence, then
``horizon`` imagined steps from its last frame. ``policy`` acts on the tokenizer's reconstruction
of each frame (as IRIS does, so acting and imagination see the same kind of input) with an LSTM
state carried per env. :meth:`dream_reset` / :meth:`dream_step` step the world model from real
frames with given actions (``wm-ray play``).
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
from wm_ray.models.common.imagination import policy_action, reinforce_loss, rollout
from wm_ray.models.iris.config import RootConfig, check_config
from wm_ray.models.iris.imagination import Dream, FrameDream, Mode, Stepper
from wm_ray.models.iris.losses import TOKENIZER, tokenizer_loss, world_model_loss
from wm_ray.models.iris.networks import Tokenizer, build_networks
from wm_ray.operators.tensors import action_indices, image_tensor, unit_to_pixels


class IrisAgent(AgentBase):
    """IRIS: discrete autoencoder, causal transformer world model, actor-critic in imagination.

    Args:
        obs_space: single-env Dict space with an ``image`` (H, W, C) uint8 entry (H = W, a
            multiple of 16; C = 1 or 3).
        act_space: a Discrete space.
        config: the root config (reads ``iris``, ``run.seed``, ``run.device``,
            ``replay.seq_len``).
        acting: only the tokenizer and the actor-critic (env and eval workers).
    """

    family = "iris"
    compile_backend = "inductor"
    """``torch.compile`` backend of the imagination's step with ``run.compile`` (tests set
    ``aot_eager``: the same graph, run op by op, without inductor's compile time)."""

    def __init__(
        self,
        obs_space: gym.spaces.Dict,
        act_space: gym.Space,
        config: RootConfig,
        acting: bool = False,
    ) -> None:
        super().__init__(obs_space, act_space, config, acting)
        self.cfg = cfg = config.iris
        check_config(cfg, config.replay.seq_len)
        image = obs_space.spaces.get("image") if isinstance(obs_space, gym.spaces.Dict) else None
        shape = tuple(image.shape or ()) if image is not None else ()
        if len(shape) != 3 or shape[0] != shape[1]:
            raise ValueError(
                f"IRIS needs square image observations (H, W, C); got {obs_space} "
                "(set env.pixels=true for vector tasks, or use --set run.model=dreamer)"
            )
        if not isinstance(act_space, gym.spaces.Discrete):
            raise ValueError(f"IRIS needs a Discrete action space, got {act_space}; use dreamer")
        self.image_shape = (int(shape[0]), int(shape[1]), int(shape[2]))
        self.num_actions, self.action_start = int(act_space.n), int(act_space.start)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.run.seed)
            nets = build_networks(cfg, self.image_shape, self.num_actions, acting=acting)
        self.tokenizer, self.ac = nets.tokenizer, nets.actor_critic
        if acting:
            self._set_networks({"tokenizer": self.tokenizer, "ac": self.ac})
            return
        assert nets.world_model is not None
        self.wm = nets.world_model
        self._set_networks({"tokenizer": self.tokenizer, "wm": self.wm, "ac": self.ac})
        self.tok_opt = Optimizer(
            self.tokenizer.parameters(), cfg.tokenizer.lr, clip=cfg.tokenizer.clip
        )
        wmc = cfg.world_model
        self.wm_opt = Optimizer(
            self.wm.parameters(),
            wmc.lr,
            clip=wmc.clip,
            weight_decay=wmc.weight_decay,
            no_decay=self.wm.no_decay(),
        )
        self.ac_opt = Optimizer(self.ac.parameters(), cfg.ac.lr, clip=cfg.ac.clip)
        run = config.run
        self.step_mode: Mode = "eager"
        if run.compile:
            self.step_mode = "captured" if run.compile_mode == "reduce-overhead" else "compiled"
        self._steppers: dict[int, Stepper] = {}

    def stepper(self, batch: int) -> Stepper:
        """The imagination's :class:`Stepper` for ``batch`` streams, made once (``run.compile``:
        the one-token step compiled; ``run.compile_mode=reduce-overhead`` on a GPU: each
        imagined frame one CUDA-graph replay)."""
        if batch not in self._steppers:
            self._steppers[batch] = Stepper(
                self.wm, batch, self.step_mode, backend=self.compile_backend
            )
        return self._steppers[batch]

    # ----------------------------------------------------------------------------- acting

    def _frames(self, image: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 ``(..., H, W, C)`` -> float ``(..., C, H, W)`` in [0, 1] on the device."""
        return Tokenizer.preprocess(image_tensor(image, self.image_shape, self.device))

    def _actions(self, action: Any, shape: tuple[int, ...], what: str = "actions") -> torch.Tensor:
        """Env actions -> 0-based model actions of ``shape`` on the device, checked."""
        return action_indices(action, shape, self.num_actions, self.action_start, self.device, what)

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
        """One acting step for ``N`` streams on the reconstructions of their frames.

        explore: sample (temperature 1), with probability ``ac.epsilon`` a uniform action;
        eval: sample at ``ac.eval_temperature`` (0: the most likely action).
        """
        is_first = self.check_policy_inputs(obs, carry[0].shape[0], mode, ("image",))
        frames = self.tokenizer.encode_decode(self._frames(obs["image"]))
        logits, _, state = self.ac(frames, ActorCritic.reset(carry, is_first))
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
        start, cfg = self.cfg.start, self.cfg
        frames = self._frames(batch["image"])  # (B, T, C, H, W)
        b, t = frames.shape[:2]
        actions = self._actions(batch["action"], (b, t), "batch['action'] (B, T)")
        flag = {
            key: device_tensor(np.asarray(batch[key], bool), self.device)
            for key in ("is_first", "is_terminal")
        }
        reward = device_tensor(np.asarray(batch["reward"], np.float32), self.device)
        tensors: dict[str, torch.Tensor] = {}
        times: dict[str, float] = {}
        tick = time.perf_counter()
        if self.updates >= start.tokenizer:
            flat = frames.flatten(0, 1)
            count = cfg.tokenizer.batch_frames
            if 0 < count < flat.shape[0]:
                pick = torch.randperm(flat.shape[0], generator=self.gen, device=self.device)
                flat = flat[pick[:count]]
            self.tokenizer.train()
            loss, metrics = tokenizer_loss(self.tokenizer, flat)
            stats = self.tok_opt.step(loss)
            tensors.update(metrics)
            tensors[M.grad_norm(TOKENIZER)] = stats["grad_norm"]
            synchronize(self.device)
            times[M.timing(TOKENIZER)] = time.perf_counter() - tick
        train_wm = self.updates >= start.world_model
        train_ac = self.updates >= start.actor_critic
        if train_wm or train_ac:
            self.tokenizer.eval()
            tokens = self.tokenizer.tokenize(frames)  # (B, T, K)
        if train_wm:
            tick = time.perf_counter()
            self.wm.train()
            loss, metrics = world_model_loss(
                self.wm, tokens, actions, flag["is_first"], reward, flag["is_terminal"]
            )
            stats = self.wm_opt.step(loss)
            tensors.update(metrics)
            tensors[M.grad_norm(M.WORLD_MODEL)] = stats["grad_norm"]
            synchronize(self.device)
            times[M.timing(M.WORLD_MODEL)] = time.perf_counter() - tick
        if train_ac:
            tick = time.perf_counter()
            loss, metrics = self._train_actor_critic(tokens, flag["is_first"], flag["is_terminal"])
            tensors.update(metrics)
            synchronize(self.device)
            times[M.timing(M.ACTOR_CRITIC)] = time.perf_counter() - tick
        self.updates += 1
        return state, self.to_floats(tensors, times)

    def _train_actor_critic(
        self, tokens: torch.Tensor, is_first: torch.Tensor, is_terminal: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ac_cfg = self.cfg.ac
        burn = ac_cfg.burn_in
        b = tokens.shape[0]
        self.wm.eval()
        self.tokenizer.eval()
        self.ac.train()
        state = self.ac.initial(b, self.device)
        with torch.no_grad():
            if burn > 0:
                first = tokens.shape[1] - 1 - burn
                recon = self.tokenizer.decode(tokens[:, first:-1]).clamp(0.0, 1.0)
                for i in range(burn):
                    state = ActorCritic.reset(state, is_first[:, first + i])
                    _, _, state = self.ac(recon[:, i], state)
            state = ActorCritic.reset(state, is_first[:, -1])
        dream = FrameDream(
            self.wm,
            self.tokenizer,
            tokens[:, -1],
            ac_cfg.temperature,
            self.gen,
            stepper=self.stepper(b),
        )
        traj = rollout(
            dream, self.ac, dream.first_frame, state, ~is_terminal[:, -1], ac_cfg.horizon, self.gen
        )
        loss, metrics = reinforce_loss(traj, ac_cfg.gamma, ac_cfg.lam, ac_cfg.entropy)
        stats = self.ac_opt.step(loss)
        metrics[M.grad_norm(M.ACTOR_CRITIC)] = stats["grad_norm"]
        return loss, metrics

    # ----------------------------------------------------------------------------- dreams

    @torch.no_grad()
    def dream_reset(self, image: np.ndarray, cached: bool = True) -> tuple[Dream, np.ndarray]:
        """Start ``N`` dreams from real frames ``(N, H, W, C)`` uint8.

        Returns the session and the start frames as the tokenizer reconstructs them.
        """
        self.require_learner()
        self.nets.eval()
        tokens = self.tokenizer.tokenize(self._frames(image))
        n = tokens.shape[0]
        dream = Dream(self.wm, n, cached=cached, stepper=self.stepper(n) if cached else None)
        dream.observe(tokens)
        return dream, self._to_uint8(self.tokenizer.decode(tokens))

    @torch.no_grad()
    def dream_step(
        self, dream: Dream, action: np.ndarray, temperature: float | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Apply env actions ``(N,)``; returns frames ``(N, H, W, C)`` uint8, rewards, ends."""
        action_t = self._actions(action, (dream.batch,))
        temp = self.cfg.ac.temperature if temperature is None else temperature
        tokens, reward_logits, end_logits = dream.frame(action_t, temp, self.gen)
        reward = self.wm.reward_value(reward_logits, self.gen)
        end = torch.sigmoid(end_logits.float()) > 0.5
        frames = self.tokenizer.decode(tokens)
        return self._to_uint8(frames), reward.cpu().numpy(), end.cpu().numpy()

    @staticmethod
    def _to_uint8(frames: torch.Tensor) -> np.ndarray:
        """float ``(..., C, H, W)`` in [0, 1] -> uint8 ``(..., H, W, C)``."""
        return unit_to_pixels(frames).movedim(-3, -1).cpu().numpy()

    # ----------------------------------------------------------------------------- reports

    @torch.no_grad()
    def report(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``openloop``: ``(T, H, 3W, C)`` [real | reconstruction | dream] of sequence 0.

        The dream is fed the first ``min(5, T - 1)`` real frames and then predicts the rest
        from the replayed actions (most likely tokens, stopping its context at episode starts
        is not attempted: the strip shows whatever the sequence holds).
        """
        self.require_learner()
        image = np.asarray(batch["image"])[:1]
        steps = image.shape[1]
        context = max(1, min(5, steps - 1, self.cfg.world_model.context))
        self.nets.eval()
        frames = self._frames(image)[0]  # (T, C, H, W)
        tokens = self.tokenizer.tokenize(frames)
        recon = self.tokenizer.decode(tokens).clamp(0.0, 1.0)
        actions = device_tensor(np.asarray(batch["action"])[0], self.device).long()
        actions = actions - self.action_start
        dream = Dream(self.wm, 1)
        pred = [recon[i] for i in range(context)]
        for i in range(steps - 1):
            if i < context:
                dream.observe(tokens[i : i + 1])
            dream.act(actions[i : i + 1])
            if i + 1 >= context:
                pred.append(self.tokenizer.decode(dream.generate(0.0, None))[0].clamp(0, 1))
        strip = torch.cat([frames, recon, torch.stack(pred)], dim=-1)
        return {"openloop": self._to_uint8(strip)}

    # ----------------------------------------------------------------------------- weights

    def acting_modules(self) -> dict[str, nn.Module]:
        """The ``tokenizer`` and the actor-critic ``ac`` (the policy acts on reconstructions)."""
        return {"tokenizer": self.tokenizer, "ac": self.ac}

    def optimizers(self) -> dict[str, Optimizer]:
        if self.acting:
            return {}
        return {"tokenizer": self.tok_opt, "wm": self.wm_opt, "ac": self.ac_opt}
