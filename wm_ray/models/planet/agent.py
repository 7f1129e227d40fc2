"""The PlaNet agent (Hafner et al. 2019) behind the carry-passing protocol of ``wm_ray.core``.

``train`` performs one world-model update (the ELBO with free nats, optionally latent
overshooting) on a replayed ``(B, T)`` batch. ``policy`` runs the encoder and one RSSM posterior
step per env step, then plans from the posterior states of all ``N`` envs with one call of the
CEM planner (:func:`wm_ray.models.rssm.planning.cem_plan`: ``N * candidates`` imagined
trajectories as one batch) and executes the plan's first action, plus Gaussian exploration noise
in ``explore`` mode. The carry is ``(State, previous action)``. All sampling draws from the
agent's own generator (seeded from ``run.seed``, saved with checkpoints).
"""

from __future__ import annotations

import time
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from wm_ray import metrics as M
from wm_ray.models.common import Optimizer, postprocess_image
from wm_ray.models.common.agent import AgentBase
from wm_ray.models.common.data import ActionSpec, batch_tensors, obs_shapes, obs_tensors
from wm_ray.models.planet.config import RootConfig, check_config
from wm_ray.models.planet.losses import world_model_loss
from wm_ray.models.planet.networks import State, WorldModel, param_counts
from wm_ray.models.rssm.planning import Plan, cem_plan, explore

Carry = tuple[State, torch.Tensor]


class PlanetAgent(AgentBase):
    """PlaNet: a Gaussian RSSM world model and CEM planning in its latent space.

    Args:
        obs_space: single-env Dict space with ``image`` (H, W, C) uint8 and/or ``vector`` (D,).
        act_space: a flat Box (actions in [-1, 1]); the planner searches continuous actions.
        config: the root config (reads ``planet``, ``run.seed``, ``run.device``).
        acting: only the encoder, the RSSM and the reward head (env and eval workers).
    """

    family = "planet"

    def __init__(
        self,
        obs_space: gym.spaces.Dict,
        act_space: gym.Space,
        config: RootConfig,
        acting: bool = False,
    ) -> None:
        super().__init__(obs_space, act_space, config, acting)
        self.cfg = cfg = config.planet
        check_config(cfg)
        self.shapes = obs_shapes(obs_space)
        self.act = ActionSpec.of(act_space)
        if self.act.discrete:
            raise TypeError(f"the planet family plans continuous actions, got {act_space}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.run.seed)
            self.wm = WorldModel(self.shapes, self.act.dim, cfg, acting=acting)
        self._set_networks({"wm": self.wm})
        if acting:
            return
        self.opt = Optimizer(
            self.wm.parameters(), cfg.opt.lr, eps=cfg.opt.eps, clip=cfg.opt.clip,
            warmup=cfg.opt.warmup,
        )  # fmt: skip

    # ----------------------------------------------------------------------------- acting

    def init_policy(self, batch_size: int) -> Carry:
        """Initial states and zero previous actions for ``batch_size`` streams."""
        with torch.no_grad():
            state = self.wm.rssm.initial(batch_size)
            state = state.map(torch.clone)
        return state, torch.zeros(batch_size, self.act.dim, device=self.device)

    def plan(self, state: State) -> Plan:
        """One CEM planning call for the ``N`` states ``(N, ...)`` (all envs at once)."""
        rssm = self.wm.rssm

        def step(s: State, action: torch.Tensor) -> State:
            return rssm.img_step(s, action, self.gen)[0]

        return cem_plan(state, step, self.wm.predict_reward, self.act.dim, self.cfg.cem, self.gen)

    @torch.no_grad()
    def policy(
        self, carry: Carry, obs: dict[str, np.ndarray], mode: Literal["explore", "eval"] = "explore"
    ) -> tuple[Carry, np.ndarray, dict[str, np.ndarray]]:
        """One acting step for ``N`` streams; resets the streams whose ``is_first`` is set.

        Returns:
            The new carry, float32 env actions ``(N, A)`` in [-1, 1], and no extra outputs.
        """
        state, prev_action = carry
        is_first = self.check_policy_inputs(obs, prev_action.shape[0], mode)
        inputs = self.wm.encoder.prepare(
            obs_tensors(obs, self.shapes, self.device, lead=1), noise=False
        )
        embed = self.wm.encoder(inputs)
        state, _ = self.wm.rssm.obs_step(state, prev_action, embed, is_first, self.gen)
        action = self.plan(state).action
        if mode == "explore":
            action = explore(action, self.cfg.cem.explore_noise, self.gen)
        return (state, action), action.cpu().numpy().astype(np.float32), {}

    # ----------------------------------------------------------------------------- learning

    def init_train(self, batch_size: int) -> None:
        """No training carry: every replayed sequence starts from the initial state."""
        return None

    def train(self, batch: dict[str, np.ndarray], state: Any) -> tuple[Any, dict[str, float]]:
        """One world-model update on a ``(B, T, ...)`` batch (``wm_ray.types``)."""
        self.require_learner()
        data = batch_tensors(batch, self.shapes, self.act, self.device)
        start = time.perf_counter()
        loss, metrics = world_model_loss(self.wm, data, self.cfg.loss, True, self.gen)
        stats = self.opt.step(loss)
        self.updates += 1
        metrics[M.grad_norm(M.WORLD_MODEL)] = stats["grad_norm"]
        times = {M.timing(M.WORLD_MODEL): time.perf_counter() - start}
        return state, self.to_floats(metrics, times)

    # ----------------------------------------------------------------------------- reports

    @torch.no_grad()
    def report(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``openloop``: uint8 ``(T, H, 3 * W, C)`` [real | prediction | error] of sequence 0
        (5-bit frames): ``report_context`` posterior steps, then the prior open loop from the
        replayed actions. ``{}`` for tasks without images."""
        if "image" not in self.shapes:
            return {}
        self.require_learner()
        data = batch_tensors(
            {k: np.asarray(v)[:1] for k, v in batch.items()}, self.shapes, self.act, self.device
        )
        rssm, steps = self.wm.rssm, data.is_first.shape[1]
        ctx = max(1, min(self.cfg.report_context, steps))
        inputs = self.wm.encoder.prepare(data.obs, noise=False)
        embed = self.wm.encoder({k: v[:, :ctx] for k, v in inputs.items()})
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
        real = inputs["image"][0]
        strip = torch.cat([real, pred, (pred - real) / 2], dim=-2)
        return {"openloop": postprocess_image(strip).cpu().numpy()}

    # ----------------------------------------------------------------------------- weights

    def acting_modules(self) -> dict[str, nn.Module]:
        """The ``encoder``, ``rssm`` and ``reward`` head (what planning needs)."""
        return {"encoder": self.wm.encoder, "rssm": self.wm.rssm, "reward": self.wm.reward}

    def optimizers(self) -> dict[str, Optimizer]:
        return {} if self.acting else {"model": self.opt}

    def param_counts(self) -> dict[str, int]:
        """Parameters per part (see :func:`networks.param_counts`)."""
        self.require_learner()
        return param_counts(self.wm)
