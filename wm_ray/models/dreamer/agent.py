"""The DreamerV3 agent (Hafner et al. 2023) behind the carry-passing protocol of ``wm_ray.core``.

``train`` performs one world-model update on a replayed ``(B, T)`` batch, then one actor and one
critic update in imagination from all ``B * T`` posterior states; ``policy`` runs one encoder,
one RSSM posterior step and the actor per env step. The recurrent acting state is the explicit
carry ``(State, previous model action)``. All sampling draws from the agent's own generator
(seeded from ``config.run.seed`` and saved with checkpoints).
"""

from __future__ import annotations

import copy
import time
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from wm_ray import metrics as M
from wm_ray.models.common import (
    Optimizer,
    ReturnNormalizer,
    postprocess_image,
    use_channels_last,
)
from wm_ray.models.common import preprocess_image as to_model_space
from wm_ray.models.common.agent import AgentBase
from wm_ray.models.common.data import ActionSpec, batch_tensors, obs_shapes, obs_tensors
from wm_ray.models.common.device import synchronize
from wm_ray.models.common.optim import frozen_weights
from wm_ray.models.dreamer.compiled import (
    CompiledUpdate,
    actor_critic_part,
    imagination_tape,
    world_model_part,
    world_model_tape,
)
from wm_ray.models.dreamer.config import RootConfig, check_config
from wm_ray.models.dreamer.networks import (
    Actor,
    Critic,
    State,
    WorldModel,
    build_acting_networks,
    build_networks,
    param_counts,
)
from wm_ray.models.rssm.planning import Plan, cem_plan, explore
from wm_ray.registry import UnsupportedError

Carry = tuple[State, torch.Tensor]


class DreamerAgent(AgentBase):
    """DreamerV3 with categorical (or Gaussian, v1) latents. See the package README.

    Args:
        obs_space: single-env Dict space with ``image`` (H, W, C) uint8 and/or ``vector`` (D,).
        act_space: Discrete or flat Box (actions in [-1, 1]).
        config: the root config (reads ``dreamer``, ``run.seed``, ``run.device``).
        acting: only the encoder, the RSSM and the actor (env and eval workers).
    """

    family = "dreamer"

    def __init__(
        self,
        obs_space: gym.spaces.Dict,
        act_space: gym.Space,
        config: RootConfig,
        acting: bool = False,
    ) -> None:
        super().__init__(obs_space, act_space, config, acting)
        self.cfg = cfg = getattr(config, self.family)
        check_config(cfg, self.family)
        self.shapes = obs_shapes(obs_space)
        self.act = ActionSpec.of(act_space)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.run.seed)
            if acting:
                self.wm, self.actor, critic = self.build_acting_networks()
            else:
                self.wm, self.actor, self.critic = self.build_networks()
        if config.run.compile and acting:  # acting: one RSSM step per call, compiled per step
            self.wm.rssm.compile_steps(config.run.compile_mode)
        if config.run.channels_last:
            use_channels_last(self.wm)
        grad = cfg.ac.actor_grad
        self.dynamics = grad == "dynamics" or (grad == "auto" and not self.act.discrete)
        self.bf16 = config.run.precision == "bf16"
        if cfg.planner == "cem" and self.act.discrete:
            raise UnsupportedError(
                f"{self.family}.planner=cem plans continuous actions, got {act_space}; use "
                f"{self.family}.planner=actor for discrete actions"
            )
        if acting:
            nets: dict[str, nn.Module] = {"wm": self.wm, "actor": self.actor}
            if critic is not None:
                self.critic = nets["critic"] = critic
            self._set_networks(nets)
            return
        self.slow_critic = copy.deepcopy(self.critic).requires_grad_(False)
        ac = cfg.ac
        self.retnorm = ReturnNormalizer(
            ac.retnorm_decay, ac.retnorm_limit, ac.retnorm_low, ac.retnorm_high
        )
        self._set_networks(
            {
                "wm": self.wm,
                "actor": self.actor,
                "critic": self.critic,
                "slow_critic": self.slow_critic,
                "retnorm": self.retnorm,
            }
        )
        opt = cfg.opt
        fused = config.run.compile
        self.model_opt = Optimizer(
            self.wm.parameters(),
            opt.model_lr,
            eps=opt.model_eps,
            clip=opt.model_clip,
            warmup=opt.warmup,
            anneal=opt.anneal,
            anneal_to=opt.anneal_to,
            anneal_after=opt.anneal_after,
            fused=fused,
        )
        self.actor_opt = Optimizer(
            self.actor.parameters(),
            opt.actor_lr,
            eps=opt.actor_eps,
            clip=opt.actor_clip,
            warmup=opt.warmup,
            anneal=opt.anneal,
            anneal_to=opt.anneal_to,
            anneal_after=opt.anneal_after,
            fused=fused,
        )
        self.critic_opt = Optimizer(
            self.critic.parameters(),
            opt.critic_lr,
            eps=opt.critic_eps,
            clip=opt.critic_clip,
            warmup=opt.warmup,
            anneal=opt.anneal,
            anneal_to=opt.anneal_to,
            anneal_after=opt.anneal_after,
            fused=fused,
        )
        self.compiled: CompiledUpdate | None = None
        if config.run.compile:
            self.compiled = CompiledUpdate(self, config.run.compile_mode)

    def build_networks(self) -> tuple[WorldModel, Actor, Critic]:
        """The learner's world model, actor and critic (a family built on Dreamer's learning
        swaps its parts here)."""
        return build_networks(self.shapes, self.act.dim, self.act.discrete, self.cfg)

    def build_acting_networks(self) -> tuple[WorldModel, Actor, Critic | None]:
        """What acting needs (see :func:`networks.build_acting_networks`)."""
        return build_acting_networks(self.shapes, self.act.dim, self.act.discrete, self.cfg)

    def _autocast(self) -> torch.autocast:
        """bf16 autocast of the learner's forward passes where ``run.precision=bf16``."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    # ----------------------------------------------------------------------------- acting

    def init_policy(self, batch_size: int) -> Carry:
        """Initial states and zero previous actions for ``batch_size`` streams."""
        with torch.no_grad():
            state = self.wm.rssm.initial(batch_size)
            state = state.map(torch.clone)
        return state, torch.zeros(batch_size, self.act.dim, device=self.device)

    @torch.no_grad()
    def policy(
        self, carry: Carry, obs: dict[str, np.ndarray], mode: Literal["explore", "eval"] = "explore"
    ) -> tuple[Carry, np.ndarray, dict[str, np.ndarray]]:
        """One acting step for ``N`` streams; resets the streams whose ``is_first`` is set.

        Returns:
            The new carry, env actions (int64 ``(N,)`` or float32 ``(N, A)`` in [-1, 1]) and
            no extra outputs.
        """
        state, prev_action = carry
        is_first = self.check_policy_inputs(obs, prev_action.shape[0], mode)
        embed = self.wm.encoder(obs_tensors(obs, self.shapes, self.device, lead=1))
        state, _ = self.wm.rssm.obs_step(state, prev_action, embed, is_first, self.gen)
        if self.cfg.planner == "cem":
            action = self.plan(state).action
            if mode == "explore":
                action = explore(action, self.cfg.cem.explore_noise, self.gen)
            return (state, action), action.cpu().numpy().astype(np.float32), {}
        dist = self.actor(self.wm.rssm.features(state))
        action = dist.sample(self.gen) if mode == "explore" else dist.mode()
        if self.act.discrete:
            env_action = (action.argmax(-1) + self.act.start).cpu().numpy().astype(np.int64)
        else:
            action = action.clamp(-1.0, 1.0)
            env_action = action.cpu().numpy().astype(np.float32)
        return (state, action), env_action, {}

    def plan(self, state: State) -> Plan:
        """``planner: cem``: one CEM call for the ``N`` states ``(N, ...)`` on the predicted
        rewards, weighted by the predicted continue probabilities and ``cem.discount``, plus
        the critic's value at the horizon with ``cem.value``."""
        wm, rssm, cem = self.wm, self.wm.rssm, self.cfg.cem

        def step(s: State, action: torch.Tensor) -> State:
            return rssm.img_step(s, action, self.gen)[0]

        def reward(s: State) -> torch.Tensor:
            return wm.reward_dist(rssm.features(s)).mean()

        def cont(s: State) -> torch.Tensor:
            return torch.sigmoid(wm.cont_logits(rssm.features(s)))

        def value(s: State) -> torch.Tensor:
            return self.critic(rssm.features(s)).mean()

        return cem_plan(state, step, reward, self.act.dim, cem, self.gen, cont, value)

    # ----------------------------------------------------------------------------- learning

    def init_train(self, batch_size: int) -> None:
        """No training carry: every replayed sequence starts from the initial state."""
        return None

    def train(self, batch: dict[str, np.ndarray], state: Any) -> tuple[Any, dict[str, float]]:
        """One world-model update, then one actor and one critic update in imagination.

        Args:
            batch: ``(B, T, ...)`` arrays: observation keys, ``action``, ``reward``,
                ``is_first``, ``is_terminal`` (``wm_ray.types``).
            state: from :meth:`init_train` (unused).
        """
        self.require_learner()
        data = batch_tensors(batch, self.shapes, self.act, self.device)
        compiled = self.compiled
        start_time = time.perf_counter()
        if compiled is not None:
            wm_loss, wm_metrics, start = compiled.world_model(data)
        else:
            tape = world_model_tape(self, *data.is_first.shape)
            wm_loss, wm_metrics, start = world_model_part(self, data, tape)
        model_stats = self.model_opt.step(wm_loss)
        synchronize(self.device)
        mid_time = time.perf_counter()
        start_cont = (~data.is_terminal).flatten().float()
        # Imagination reads the world model but trains only the actor and the critic: with the
        # world model's weights out of autograd, no backward pass computes their gradients
        # (a compiled graph's backward would compute every input's) and less is saved.
        with frozen_weights(self.wm):
            if compiled is not None:
                actor_loss, critic_loss, ac_metrics = compiled.actor_critic(start, start_cont)
                actor_stats, critic_stats = compiled.step_actor_critic(actor_loss, critic_loss)
            else:
                tape = imagination_tape(self, start.deter.shape[0])
                actor_loss, critic_loss, ac_metrics = actor_critic_part(
                    self, start, start_cont, tape
                )
                actor_stats = self.actor_opt.step(actor_loss)
                critic_stats = self.critic_opt.step(critic_loss)
        self._update_slow_critic()
        synchronize(self.device)
        end_time = time.perf_counter()
        self.updates += 1
        tensors = {
            M.loss(M.WORLD_MODEL): wm_loss.detach(),
            **wm_metrics,
            M.loss(M.ACTOR): actor_loss.detach(),
            M.loss(M.CRITIC): critic_loss.detach(),
            **ac_metrics,
            M.grad_norm(M.WORLD_MODEL): model_stats["grad_norm"],
            M.grad_norm(M.ACTOR): actor_stats["grad_norm"],
            M.grad_norm(M.CRITIC): critic_stats["grad_norm"],
        }
        times = {
            M.timing(M.WORLD_MODEL): mid_time - start_time,
            M.timing(M.ACTOR_CRITIC): end_time - mid_time,
        }
        return state, self.to_floats(tensors, times)

    @torch.no_grad()
    def _update_slow_critic(self) -> None:
        fraction = self.cfg.ac.slow_critic_fraction
        slow: list[torch.Tensor] = list(self.slow_critic.parameters())
        fast: list[torch.Tensor] = list(self.critic.parameters())
        torch._foreach_lerp_(slow, fast, fraction)  # one multi-tensor kernel

    # ----------------------------------------------------------------------------- reports

    @torch.no_grad()
    def report(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``openloop``: uint8 ``(T, H, 3 * W, C)`` [real | prediction | error] of sequence 0.

        The first ``report_context`` steps are posterior reconstructions; after them the prior
        predicts open loop from the replayed actions. Error is ``(pred - real) / 2`` shown
        around mid-gray. Returns ``{}`` for tasks without images.
        """
        if "image" not in self.shapes:
            return {}
        self.require_learner()
        data = batch_tensors(
            {k: np.asarray(v)[:1] for k, v in batch.items()}, self.shapes, self.act, self.device
        )
        rssm, steps = self.wm.rssm, data.is_first.shape[1]
        ctx = max(1, min(self.cfg.report_context, steps))
        embed = self.wm.encoder({k: v[:, :ctx] for k, v in data.obs.items()})
        posts, _, _ = rssm.observe(
            embed, data.prev_action[:, :ctx], data.is_first[:, :ctx], gen=self.gen
        )
        feats = [rssm.feat(posts)]
        state = posts.map(lambda x: x[:, -1])._replace(choice=None)
        for t in range(ctx, steps):
            state, action = rssm.reset(state, data.prev_action[:, t], data.is_first[:, t])
            state, _ = rssm.img_step(state, action, self.gen)
            feats.append(rssm.feat(state)[:, None])
        pred = self.wm.decoder(torch.cat(feats, 1))["image"][0].clamp(-0.5, 0.5)
        real = to_model_space(data.obs["image"][0])
        strip = torch.cat([real, pred, (pred - real) / 2], dim=-2)
        return {"openloop": postprocess_image(strip).cpu().numpy()}

    # ----------------------------------------------------------------------------- weights

    def acting_modules(self) -> dict[str, nn.Module]:
        """The ``encoder``, ``rssm`` and ``actor``; planning (``planner: cem``) also the
        ``reward`` and ``cont`` heads, and the ``critic`` with ``cem.value``."""
        modules = {"encoder": self.wm.encoder, "rssm": self.wm.rssm, "actor": self.actor}
        if self.cfg.planner == "cem":
            modules.update(reward=self.wm.reward, cont=self.wm.cont)
            if self.cfg.cem.value:
                modules["critic"] = self.critic
        return modules

    def optimizers(self) -> dict[str, Optimizer]:
        if self.acting:
            return {}
        return {"model": self.model_opt, "actor": self.actor_opt, "critic": self.critic_opt}

    def param_counts(self) -> dict[str, int]:
        """Parameters per part and ``total`` (see :func:`networks.param_counts`)."""
        self.require_learner()
        return param_counts(self.wm, self.actor, self.critic)
