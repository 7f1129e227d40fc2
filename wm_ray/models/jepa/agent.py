"""The I-JEPA agent (Assran et al. 2023) behind the carry-passing protocol of ``wm_ray.core``.

JEPA learns representations of frames and never acts on them: ``policy`` is the behaviour
policy of ``jepa.behaviour`` (:mod:`~wm_ray.models.common.behaviour`), which is all that env
workers build. ``train`` treats the replayed ``(B, T)`` frames as a bag of images: all of them,
or ``jepa.frames`` drawn without replacement (consecutive frames of a sequence are near
duplicates, so a sample spends less compute on the same information); it draws one mask batch,
takes one I-JEPA step and moves the target encoder by the EMA
(:mod:`~wm_ray.models.jepa.losses`). The schedules (learning rate, weight decay, EMA momentum)
follow the update counter, which is saved with checkpoints. :meth:`features` gives the target
encoder's features of frames (what a probe or a downstream model reads). With
``jepa.world_model.enabled`` it also trains an action-conditioned predictor in that frozen
embedding space on the replayed transitions, and :meth:`plan` picks actions toward a goal
frame by CEM (:mod:`~wm_ray.models.jepa.world_model`).
"""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from wm_ray import metrics as M
from wm_ray.models.common import Optimizer
from wm_ray.models.common.behaviour import BehaviourAgent
from wm_ray.models.common.data import device_tensor
from wm_ray.models.common.device import synchronize
from wm_ray.models.jepa.config import RootConfig, check_config, check_root
from wm_ray.models.jepa.losses import JEPA, cosine, jepa_step, momentum, split_decay
from wm_ray.models.jepa.masks import Masks, make_collator
from wm_ray.models.jepa.networks import build_networks
from wm_ray.models.jepa.world_model import (
    WORLD_MODEL,
    LatentDynamics,
    action_inputs,
    dynamics_step,
    plan_to_goal,
    transitions,
)
from wm_ray.operators.tensors import image_tensor, signed


class JEPAAgent(BehaviourAgent):
    """I-JEPA: a ViT context encoder, a ViT predictor, an EMA target encoder; a behaviour
    policy acts.

    Args:
        obs_space: single-env Dict space with a square ``image`` (H, W, C) uint8 entry.
        act_space: any space the behaviour policy acts in (Discrete or bounded Box for
            ``random``).
        config: the root config (reads ``jepa``, ``run.seed``, ``run.device``, ``replay``).
        acting: only the behaviour policy (env and eval workers).
    """

    family = "jepa"
    label = "JEPA"

    def __init__(
        self, obs_space: gym.spaces.Dict, act_space: gym.Space, config: RootConfig,
        acting: bool = False,
    ) -> None:  # fmt: skip
        super().__init__(obs_space, act_space, config, acting)
        self.cfg = cfg = config.jepa
        self.setup_behaviour(
            cfg, obs_space, act_space, lambda side: check_config(cfg, side) + check_root(config)
        )
        if acting:
            self._set_networks({})
            return
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.run.seed)
            self.encoder, self.predictor, self.target = build_networks(cfg, self.image_shape)
        nets = {"encoder": self.encoder, "predictor": self.predictor, "target": self.target}
        wm = cfg.world_model
        self.discrete = int(act_space.n) if isinstance(act_space, gym.spaces.Discrete) else 0
        self.action_start = int(getattr(act_space, "start", 0)) if self.discrete else 0
        if wm.enabled:
            action_dim = self.discrete or int(np.prod(act_space.shape or (1,)))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.run.seed + 1)
                patches = self.encoder.side**2 if wm.features == "patches" else 1
                dim = patches * cfg.encoder.width
                self.dynamics = LatentDynamics(dim, action_dim, wm.hidden, wm.layers)
            nets["dynamics"] = self.dynamics
        self._set_networks(nets)
        if wm.enabled:
            self.dyn_opt = Optimizer(self.dynamics.parameters(), wm.lr, clip=wm.clip)
        side = self.encoder.side
        self.collator = make_collator(cfg.mask, (side, side))
        params, exempt = split_decay([self.encoder, self.predictor])
        opt = cfg.optim
        self.opt = Optimizer(
            params,
            opt.lr,
            clip=opt.clip,
            weight_decay=opt.weight_decay,
            no_decay=exempt,
            warmup=opt.warmup,
            anneal=max(cfg.steps - opt.warmup, 0),
            anneal_to=opt.lr_end_scale,
        )

    # ----------------------------------------------------------------------------- inputs

    def _images(self, image: Any) -> Tensor:
        """uint8 ``(..., H, W, C)`` -> ``(N, H, W, C)`` uint8 on the device, checked."""
        tensor = image_tensor(image, self.image_shape, self.device, cast=True)
        return tensor.reshape(-1, *self.image_shape)

    @staticmethod
    def _scale(frames: Tensor) -> Tensor:
        """uint8 -> float in [-1, 1] (the math of ``wm_ray.get_operator("jepa").model_input``)."""
        return signed(frames)

    def _draw(self, count: int) -> tuple[torch.Generator, Tensor]:
        """A CPU generator for this update, seeded from the agent's generator (so masks and
        frame samples follow ``run.seed`` and checkpoints on any device), and which ``count``
        frames of the batch to use."""
        seed = int(torch.randint(2**62, (1,), generator=self.gen, device=self.gen.device))
        cpu = torch.Generator().manual_seed(seed)
        n = self.cfg.frames or count
        return cpu, torch.randperm(count, generator=cpu)[:n].sort().values

    # ----------------------------------------------------------------------------- learning
    # (acting: BehaviourAgent's policy, the behaviour policy of the section)

    def init_train(self, batch_size: int) -> None:
        """No training carry: every frame is an independent image."""
        return None

    def schedules(self) -> tuple[float, float]:
        """``(EMA momentum, weight decay)`` of the next update."""
        cfg, u = self.cfg, self.updates
        tau = momentum(u, cfg.steps, cfg.ema_start, cfg.ema_end)
        return tau, cosine(u, cfg.steps, cfg.optim.weight_decay, cfg.optim.weight_decay_end)

    def train(self, batch: dict[str, np.ndarray], state: Any) -> tuple[Any, dict[str, float]]:
        """One I-JEPA update on the replayed frames (see the module docstring)."""
        self.require_learner()
        images = self._images(batch["image"])
        tick = time.perf_counter()
        cpu, pick = self._draw(images.shape[0])
        frames = self._scale(images[pick.to(self.device)])
        drawn = self.collator(frames.shape[0], cpu)
        masks = Masks(drawn.context.to(self.device), drawn.targets.to(self.device))
        tau, decay = self.schedules()
        tensors = jepa_step(
            self.encoder, self.predictor, self.target, self.opt, frames, masks, tau, decay,
            self.cfg.loss,
        )  # fmt: skip
        synchronize(self.device)
        times = {M.timing(JEPA): time.perf_counter() - tick}
        wm = self.cfg.world_model
        if wm.enabled and self.updates >= wm.start:
            tick = time.perf_counter()
            z = self.embed(images).reshape(*np.shape(batch["is_first"]), -1)
            acts = device_tensor(np.asarray(batch["action"]), self.device)
            acts = action_inputs(acts - self.action_start, self.discrete)
            first = device_tensor(np.asarray(batch["is_first"], bool), self.device)
            tensors.update(dynamics_step(self.dynamics, self.dyn_opt, *transitions(z, acts, first)))
            synchronize(self.device)
            times[M.timing(WORLD_MODEL)] = time.perf_counter() - tick
        tensors[M.diagnostic(JEPA, "context_patches")] = torch.tensor(masks.context.shape[1])
        tensors[M.diagnostic(JEPA, "target_patches")] = torch.tensor(masks.targets[0].shape[1])
        self.updates += 1
        return state, self.to_floats(tensors, times)

    @torch.no_grad()
    def features(self, image: Any, pooled: bool = True) -> Tensor:
        """The target encoder's features of uint8 frames ``(..., H, W, C)``: ``(N, D)`` averaged
        over patches, or ``(N, patches, D)`` with ``pooled=False``."""
        self.require_learner()
        self.target.eval()
        out = self.target(self._scale(self._images(image)))
        return out.mean(1) if pooled else out

    @torch.no_grad()
    def embed(self, images: Tensor) -> Tensor:
        """The world model's embeddings ``(N, D)`` of uint8 frames ``(N, H, W, C)`` on the
        device: the frozen target encoder's features of the patches, concatenated (or their
        mean: ``jepa.world_model.features``)."""
        self.target.eval()
        out = self.target(self._scale(images))
        return out.mean(1) if self.cfg.world_model.features == "pooled" else out.flatten(1)

    @torch.no_grad()
    def plan(self, image: Any, goal: Any) -> np.ndarray:
        """Env actions for ``N`` frames ``(N, H, W, C)`` toward ``N`` goal frames: the first
        action of a CEM plan in the embedding space (``jepa.world_model.cem``)."""
        self.require_learner()
        if not self.cfg.world_model.enabled:
            raise ValueError("plan() needs the JEPA world model: set jepa.world_model.enabled=true")
        z, target = self.embed(self._images(image)), self.embed(self._images(goal))
        if z.shape != target.shape:
            raise ValueError(f"{z.shape[0]} frames but {target.shape[0]} goal frames")
        action = plan_to_goal(
            self.dynamics, z, target, self.cfg.world_model.cem, self.discrete, self.gen
        )
        if self.discrete:
            return (action + self.action_start).cpu().numpy().astype(np.int64)
        return action.cpu().numpy().astype(np.float32)

    # ----------------------------------------------------------------------------- reports

    @torch.no_grad()
    def report(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``masks``: ``(1, H, 3W, C)`` [frame | its context | its targets] of the batch's first
        frame, the hidden patches dimmed; a mask drawn from a generator seeded from
        ``run.seed`` (training's is left alone)."""
        self.require_learner()
        frame = self._images(np.asarray(batch["image"]).reshape(-1, *self.image_shape)[:1])[0]
        masks = self.collator(1, torch.Generator().manual_seed(self.config.run.seed))
        side, patch = self.encoder.side, self.cfg.patch
        strips = [frame]
        for index in (masks.context[0], masks.targets[:, 0].reshape(-1)):
            shown = torch.zeros(side * side, dtype=torch.bool)
            shown[index] = True
            pixels = shown.reshape(side, side).repeat_interleave(patch, 0)
            pixels = pixels.repeat_interleave(patch, 1).to(self.device)[..., None]
            strips.append(torch.where(pixels, frame, frame // 4))
        return {"masks": torch.cat(strips, 1)[None].cpu().numpy()}

    # ----------------------------------------------------------------------------- weights

    def optimizers(self) -> dict[str, Optimizer]:
        if self.acting:
            return {}
        extra = {"world_model": self.dyn_opt} if self.cfg.world_model.enabled else {}
        return {"jepa": self.opt, **extra}
