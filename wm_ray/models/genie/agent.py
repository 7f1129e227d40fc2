"""The Genie agent (Bruce et al. 2024) behind the carry-passing protocol of ``wm_ray.core``.

Genie learns a playable world from video and never acts on it: ``policy`` is the behaviour
policy of ``genie.behaviour`` (:mod:`~wm_ray.models.common.behaviour`), which is all that env
workers build. ``train`` takes the last ``genie.frames`` steps of each replayed sequence as a
clip and runs the staged schedule of ``genie.start``: the tokenizer from ``start.tokenizer``
(until ``start.dynamics`` when ``freeze_tokenizer``), then the latent action model and the
dynamics together (:mod:`~wm_ray.models.genie.losses`). With discrete env actions it counts
which env action each latent action co-occurs with (:class:`ActionLabels`), so ``wm-ray play``
can name the latent actions. :meth:`dream_reset` / :meth:`dream_step` step the world model from
real frames with *latent* actions (:meth:`latent_actions` lists them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
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
from wm_ray.models.genie.config import RootConfig, check_config, check_root
from wm_ray.models.genie.dynamics import DYNAMICS, generate
from wm_ray.models.genie.losses import lam_dynamics_step, tokenizer_step
from wm_ray.models.genie.networks import ActionLabels, build_networks
from wm_ray.models.genie.tokenizer import TOKENIZER
from wm_ray.operators.tensors import image_tensor, unit_to_pixels


@dataclass
class GenieDream:
    """A dream in progress: the token frames so far ``(N, t, tokens)`` and the latent actions
    between them ``(N, t - 1)``."""

    tokens: Tensor
    actions: Tensor

    @property
    def batch(self) -> int:
        return int(self.tokens.shape[0])


class GenieAgent(BehaviourAgent):
    """Genie: video tokenizer, latent action model, MaskGIT dynamics; a behaviour policy acts.

    Args:
        obs_space: single-env Dict space with a square ``image`` (H, W, C) uint8 entry.
        act_space: any space the behaviour policy acts in (Discrete or bounded Box for
            ``random``).
        config: the root config (reads ``genie``, ``run.seed``, ``run.device``, ``replay``).
        acting: only the behaviour policy (env and eval workers).
    """

    family = "genie"
    label = "Genie"

    def __init__(
        self, obs_space: gym.spaces.Dict, act_space: gym.Space, config: RootConfig,
        acting: bool = False,
    ) -> None:  # fmt: skip
        super().__init__(obs_space, act_space, config, acting)
        self.cfg = cfg = config.genie
        self.setup_behaviour(
            cfg, obs_space, act_space, lambda side: check_config(cfg, side) + check_root(config)
        )
        if acting:
            self._set_networks({})
            return
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.run.seed)
            nets = build_networks(cfg, self.image_shape)
        self.tokenizer, self.lam, self.dynamics = nets
        n_actions = int(act_space.n) if isinstance(act_space, gym.spaces.Discrete) else 0
        self.action_start = int(getattr(act_space, "start", 0)) if n_actions else 0
        self.labels = ActionLabels(cfg.lam.vocab, n_actions)
        self._set_networks(
            {"tokenizer": self.tokenizer, "lam": self.lam, "dynamics": self.dynamics,
             "labels": self.labels}
        )  # fmt: skip
        self.tok_opt = Optimizer(
            self.tokenizer.parameters(), cfg.tokenizer.lr, clip=cfg.tokenizer.clip
        )
        self.lam_opt = Optimizer(self.lam.parameters(), cfg.lam.lr, clip=cfg.lam.clip)
        dyn = cfg.dynamics
        self.dyn_opt = Optimizer(
            self.dynamics.parameters(), dyn.lr, clip=dyn.clip, weight_decay=dyn.weight_decay
        )

    # ----------------------------------------------------------------------------- inputs

    def _clip(self, image: Any) -> Tensor:
        """uint8 ``(..., T, H, W, C)`` -> the last ``genie.frames`` frames on the device."""
        tensor = image_tensor(image, self.image_shape, self.device, min_lead=1, cast=True)
        return tensor[..., -self.cfg.frames :, :, :, :]

    def _frames(self, image: Any) -> Tensor:
        """uint8 ``(N, H, W, C)`` -> ``(N, 1, H, W, C)`` on the device, checked."""
        return image_tensor(image, self.image_shape, self.device, lead=1, cast=True)[:, None]

    @staticmethod
    def _to_uint8(frames: Tensor) -> np.ndarray:
        """float frames in [0, 1] -> uint8 (same layout)."""
        return unit_to_pixels(frames).cpu().numpy()

    # ----------------------------------------------------------------------------- learning
    # (acting: BehaviourAgent's policy, the behaviour policy of the section)

    def init_train(self, batch_size: int) -> None:
        """No training carry: every replayed clip is self-contained."""
        return None

    def stages(self) -> tuple[bool, bool]:
        """Whether this update trains ``(the tokenizer, the LAM and dynamics)``."""
        start, u = self.cfg.start, self.updates
        dynamics = u >= start.dynamics
        tokenizer = u >= start.tokenizer and not (start.freeze_tokenizer and dynamics)
        return tokenizer, dynamics

    def train(self, batch: dict[str, np.ndarray], state: Any) -> tuple[Any, dict[str, float]]:
        """One update of the parts the schedule trains now (see the module docstring)."""
        self.require_learner()
        clip = self._clip(batch["image"])
        train_tokenizer, train_dynamics = self.stages()
        tensors: dict[str, Tensor] = {}
        times: dict[str, float] = {}
        if train_tokenizer:
            tick = time.perf_counter()
            tensors.update(tokenizer_step(self.tokenizer, self.tok_opt, clip))
            synchronize(self.device)
            times[M.timing(TOKENIZER)] = time.perf_counter() - tick
        if train_dynamics:
            tick = time.perf_counter()
            latent, metrics = lam_dynamics_step(
                self.tokenizer, self.lam, self.dynamics, self.lam_opt, self.dyn_opt, clip,
                self.gen,
            )  # fmt: skip
            tensors.update(metrics)
            if self.labels.counts.shape[1] and "action" in batch:
                acts = np.asarray(batch["action"])[:, -self.cfg.frames : -1]
                true = device_tensor(acts.astype(np.int64), self.device) - self.action_start
                self.labels.update(latent, true.clamp(0, self.labels.counts.shape[1] - 1))
            synchronize(self.device)
            times[M.timing(DYNAMICS)] = time.perf_counter() - tick
        self.updates += 1
        return state, self.to_floats(tensors, times)

    # ----------------------------------------------------------------------------- dreams

    def latent_actions(self) -> list[tuple[str, int | None]]:
        """Per latent action: a name for menus (with the env action it most often went with
        in training, when the env's actions are discrete) and that env action (or None)."""
        names: list[tuple[str, int | None]] = []
        for i, (action, share) in enumerate(self.labels.table()):
            if action is None:
                names.append((f"latent {i}", None))
            else:
                env_action = action + self.action_start
                names.append((f"latent {i} (~env action {env_action}, {share:.0%})", env_action))
        return names

    @torch.no_grad()
    def dream_reset(self, image: np.ndarray) -> tuple[GenieDream, np.ndarray]:
        """Start ``N`` dreams from real frames ``(N, H, W, C)`` uint8; returns the session and
        the start frames as the tokenizer sees them (decoded)."""
        self.require_learner()
        self.nets.eval()
        tokens = self.tokenizer.tokenize(self._frames(image))
        empty = torch.zeros(tokens.shape[0], 0, dtype=torch.long, device=self.device)
        frame = self.tokenizer.decode(tokens)[:, -1]
        return GenieDream(tokens, empty), self._to_uint8(frame)

    @torch.no_grad()
    def dream_step(
        self, dream: GenieDream, action: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Apply latent actions ``(N,)`` in ``[0, lam.vocab)``; returns the next frames
        ``(N, H, W, C)`` uint8, rewards (Genie predicts none: zeros) and ends (never)."""
        n, vocab = dream.batch, self.cfg.lam.vocab
        latent = device_tensor(np.asarray(action), self.device).long()
        if tuple(latent.shape) != (n,) or not bool(((latent >= 0) & (latent < vocab)).all()):
            raise ValueError(
                f"latent actions must be {n} indices in [0, {vocab}), got {np.asarray(action)!r}"
            )
        acts = torch.cat([dream.actions, latent[:, None]], 1)
        out = generate(self.dynamics, dream.tokens, acts, frames=1, generator=self.gen)
        frame = self.tokenizer.decode(out[:, -self.cfg.frames :])[:, -1]
        keep = min(out.shape[1], self.cfg.frames - 1)  # the context the next step sees
        dream.tokens = out[:, out.shape[1] - keep :]
        dream.actions = acts[:, acts.shape[1] - (keep - 1) :]
        zeros = np.zeros(n, np.float32)
        return self._to_uint8(frame), zeros, np.zeros(n, bool)

    # ----------------------------------------------------------------------------- reports

    @torch.no_grad()
    def report(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``openloop``: ``(T, H, 3W, C)`` [real | tokenizer reconstruction | dream] of clip 0:
        the dream starts from the first real frame and follows the latent actions the LAM
        infers from the real clip (MaskGIT, the config's steps). It samples with a generator
        of its own, seeded from ``run.seed``: training's is left alone."""
        self.require_learner()
        self.nets.eval()
        clip = self._clip(np.asarray(batch["image"])[:1])
        tokens = self.tokenizer.tokenize(clip)
        latent = self.lam.infer(clip)
        gen = torch.Generator(self.device).manual_seed(self.config.run.seed)
        dreamed = generate(self.dynamics, tokens[:, :1], latent, clip.shape[1] - 1, generator=gen)
        recon, dream = self.tokenizer.decode(tokens)[0], self.tokenizer.decode(dreamed)[0]
        real = clip[0].float() / 255.0
        return {"openloop": self._to_uint8(torch.cat([real, recon, dream], dim=2))}

    # ----------------------------------------------------------------------------- weights

    def optimizers(self) -> dict[str, Optimizer]:
        if self.acting:
            return {}
        return {"tokenizer": self.tok_opt, "lam": self.lam_opt, "dynamics": self.dyn_opt}
