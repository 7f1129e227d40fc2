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
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wm_ray.models.common import Optimizer, persist
from wm_ray.models.common.device import resolve_device, synchronize
from wm_ray.models.iris.actor_critic import ActorCritic, LSTMState
from wm_ray.models.iris.config import RootConfig, check_config
from wm_ray.models.iris.imagination import Dream, actor_critic_loss, imagine, sample_logits
from wm_ray.models.iris.tokenizer import Tokenizer
from wm_ray.models.iris.transformer import WorldModel

IGNORE = -100


def world_model_loss(
    wm: WorldModel,
    tokens: torch.Tensor,
    actions: torch.Tensor,
    is_first: torch.Tensor,
    reward: torch.Tensor,
    is_terminal: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Next-token cross-entropy plus reward and termination losses on replayed sequences.

    Args:
        tokens: ``(B, T, K)`` frame tokens; actions ``(B, T)`` model actions (0-based);
            is_first, reward, is_terminal ``(B, T)`` as stored (``wm_ray.types``).

    The transition ``t -> t+1`` is learned only where step ``t + 1`` continues the episode of
    step ``t`` (not ``is_first``); the first token of an episode's first frame has no target.
    """
    batch, steps, k = tokens.shape
    block = k + 1
    out = wm(wm.interleave(tokens, actions), mask=wm.training_mask(is_first))
    ids = torch.cat([tokens, torch.full_like(tokens[:, :, :1], IGNORE)], 2)
    ids[:, :, 0] = ids[:, :, 0].masked_fill(is_first, IGNORE)
    flat = ids.flatten(1)
    targets = torch.cat([flat[:, 1:], torch.full_like(flat[:, :1], IGNORE)], 1)
    logits = out.obs_logits.flatten(0, 1).float()
    obs_loss = F.cross_entropy(logits, targets.flatten(), ignore_index=IGNORE)
    with torch.no_grad():
        valid_tok = targets.flatten() != IGNORE
        correct = (logits.argmax(-1) == targets.flatten()) & valid_tok
        accuracy = correct.sum() / valid_tok.sum().clamp(min=1)
    at_action = slice(None), slice(None, -1), k
    reward_logits = out.reward_logits.view(batch, steps, block, -1)[at_action]
    end_logits = out.end_logits.view(batch, steps, block)[at_action]
    valid = (~is_first[:, 1:]).float()
    norm = valid.sum().clamp(min=1.0)
    reward_loss = (wm.reward_loss(reward_logits.float(), reward[:, 1:]) * valid).sum() / norm
    end_target = is_terminal[:, 1:].float()
    end_bce = F.binary_cross_entropy_with_logits(end_logits.float(), end_target, reduction="none")
    end_loss = (end_bce * valid).sum() / norm
    loss = obs_loss + reward_loss + end_loss
    metrics = {
        "wm/obs_loss": obs_loss.detach(),
        "wm/obs_accuracy": accuracy,
        "wm/reward_loss": reward_loss.detach(),
        "wm/end_loss": end_loss.detach(),
    }
    return loss, metrics


class IrisAgent:
    """IRIS: discrete autoencoder, causal transformer world model, actor-critic in imagination.

    Args:
        obs_space: single-env Dict space with an ``image`` (H, W, C) uint8 entry (H = W, a
            multiple of 16; C = 1 or 3).
        act_space: a Discrete space.
        config: the root config (reads ``iris``, ``run.seed``, ``run.device``,
            ``replay.seq_len``).
    """

    def __init__(self, obs_space: gym.spaces.Dict, act_space: gym.Space, config: RootConfig):
        self.config = config
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
        self.image_shape = tuple(int(s) for s in shape)
        size, channels = self.image_shape[0], self.image_shape[2]
        self.num_actions, self.action_start = int(act_space.n), int(act_space.start)
        unsupported = {
            "run.compile": (config.run.compile, False),
            "run.precision": (config.run.precision, "fp32"),
            "run.channels_last": (config.run.channels_last, False),
        }
        for key, (value, default) in unsupported.items():
            if value != default:
                raise ValueError(
                    f"{key}={value} is not implemented for IRIS (only for dreamer); "
                    f"leave it at {default}"
                )
        self.device = resolve_device(config.run.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.run.seed)
            self.tokenizer = Tokenizer(cfg.tokenizer, image_size=size, channels=channels)
            self.wm = WorldModel(
                cfg.world_model, cfg.tokenizer.vocab, cfg.tokenizer.tokens, self.num_actions
            )
            self.ac = ActorCritic(cfg.ac, channels, size, self.num_actions)
        self.nets = nn.ModuleDict({"tokenizer": self.tokenizer, "wm": self.wm, "ac": self.ac}).to(
            self.device
        )
        self.gen = torch.Generator(self.device).manual_seed(config.run.seed)
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
        self.updates = 0

    # ----------------------------------------------------------------------------- acting

    def _frames(self, image: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 ``(..., H, W, C)`` -> float ``(..., C, H, W)`` in [0, 1] on the device."""
        tensor = torch.as_tensor(np.asarray(image)).to(self.device)
        if tuple(tensor.shape[-3:]) != self.image_shape:
            raise ValueError(
                f"expected images (..., {self.image_shape}), got {tuple(tensor.shape)}"
            )
        return Tokenizer.preprocess(tensor)

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
        if mode not in ("explore", "eval"):
            raise ValueError(f"policy mode must be 'explore' or 'eval', got {mode!r}")
        if "is_first" not in obs or "image" not in obs:
            raise ValueError(f"obs needs 'image' and 'is_first' (got {sorted(obs)})")
        is_first = torch.as_tensor(np.asarray(obs["is_first"], bool)).to(self.device)
        if is_first.shape != (carry[0].shape[0],):
            raise ValueError(
                f"obs['is_first'] has shape {tuple(is_first.shape)} but the carry holds "
                f"{carry[0].shape[0]} streams (init_policy(N) with the env count)"
            )
        frames = self.tokenizer.encode_decode(self._frames(obs["image"]))
        logits, _, state = self.ac(frames, ActorCritic.reset(carry, is_first))
        if mode == "explore":
            action = sample_logits(logits, 1.0, self.gen)
            eps = self.cfg.ac.epsilon
            if eps > 0:
                n = action.shape[0]
                rand = torch.rand(n, generator=self.gen, device=self.device) < eps
                uniform = torch.randint(
                    0, self.num_actions, (n,), generator=self.gen, device=self.device
                )
                action = torch.where(rand, uniform, action)
        else:
            action = sample_logits(logits, self.cfg.ac.eval_temperature, self.gen)
        env_action = (action + self.action_start).cpu().numpy().astype(np.int64)
        return state, env_action, {}

    # ----------------------------------------------------------------------------- learning

    def init_train(self, batch_size: int) -> None:
        """No training carry: every replayed sequence is self-contained."""
        return None

    def train(self, batch: dict[str, np.ndarray], state: Any) -> tuple[Any, dict[str, float]]:
        """One update of every part whose start has come (see the module docstring)."""
        start, cfg = self.cfg.start, self.cfg
        frames = self._frames(batch["image"])  # (B, T, C, H, W)
        b, t = frames.shape[:2]
        actions = torch.as_tensor(np.asarray(batch["action"])).to(self.device).long()
        actions = actions - self.action_start
        if actions.shape != (b, t) or actions.min() < 0 or actions.max() >= self.num_actions:
            raise ValueError(
                f"batch['action'] must be (B, T) = {(b, t)} indices of {self.num_actions} "
                f"actions, got shape {tuple(actions.shape)}"
            )
        flag = {
            key: torch.as_tensor(np.asarray(batch[key], bool)).to(self.device)
            for key in ("is_first", "is_terminal")
        }
        reward = torch.as_tensor(np.asarray(batch["reward"], np.float32)).to(self.device)
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
            loss, metrics = self.tokenizer.loss(flat)
            stats = self.tok_opt.step(loss)
            tensors.update(metrics, **{"tokenizer/loss": loss.detach()})
            tensors["grad_norm/tokenizer"] = stats["grad_norm"]
            synchronize(self.device)
            times["time/tokenizer"] = time.perf_counter() - tick
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
            tensors.update(metrics, **{"wm/loss": loss.detach()})
            tensors["grad_norm/wm"] = stats["grad_norm"]
            synchronize(self.device)
            times["time/world_model"] = time.perf_counter() - tick
        if train_ac:
            tick = time.perf_counter()
            loss, metrics = self._train_actor_critic(tokens, flag["is_first"], flag["is_terminal"])
            tensors.update(metrics)
            synchronize(self.device)
            times["time/actor_critic"] = time.perf_counter() - tick
        self.updates += 1
        out: dict[str, float] = {}
        if tensors:
            values = torch.stack([v.float().to(self.device) for v in tensors.values()]).tolist()
            out = {f"train/{k}": float(v) for k, v in zip(tensors, values)}
        out.update(times)
        return state, out

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
        traj = imagine(
            self.wm,
            self.tokenizer,
            self.ac,
            tokens[:, -1],
            state,
            ~is_terminal[:, -1],
            ac_cfg,
            self.gen,
        )
        loss, metrics = actor_critic_loss(traj, ac_cfg)
        stats = self.ac_opt.step(loss)
        metrics["ac/loss"] = loss.detach()
        metrics["grad_norm/ac"] = stats["grad_norm"]
        return loss, metrics

    # ----------------------------------------------------------------------------- dreams

    @torch.no_grad()
    def dream_reset(self, image: np.ndarray, cached: bool = True) -> tuple[Dream, np.ndarray]:
        """Start ``N`` dreams from real frames ``(N, H, W, C)`` uint8.

        Returns the session and the start frames as the tokenizer reconstructs them.
        """
        self.nets.eval()
        tokens = self.tokenizer.tokenize(self._frames(image))
        dream = Dream(self.wm, tokens.shape[0], cached=cached)
        dream.observe(tokens)
        return dream, self._to_uint8(self.tokenizer.decode(tokens))

    @torch.no_grad()
    def dream_step(
        self, dream: Dream, action: np.ndarray, temperature: float | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Apply env actions ``(N,)``; returns frames ``(N, H, W, C)`` uint8, rewards, ends."""
        action_t = torch.as_tensor(np.asarray(action), device=self.device).long()
        action_t = action_t - self.action_start
        if action_t.shape != (dream.batch,) or action_t.min() < 0:
            raise ValueError(f"actions must be ({dream.batch},) env actions, got {action}")
        if action_t.max() >= self.num_actions:
            raise ValueError(f"action {action} out of range (the env has {self.num_actions})")
        reward_logits, end_logits = dream.act(action_t)
        reward = self.wm.reward_value(reward_logits, self.gen)
        end = torch.sigmoid(end_logits.float()) > 0.5
        temp = self.cfg.ac.temperature if temperature is None else temperature
        frames = self.tokenizer.decode(dream.generate(temp, self.gen))
        return self._to_uint8(frames), reward.cpu().numpy(), end.cpu().numpy()

    @staticmethod
    def _to_uint8(frames: torch.Tensor) -> np.ndarray:
        """float ``(..., C, H, W)`` in [0, 1] -> uint8 ``(..., H, W, C)``."""
        pixels = (frames.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
        return pixels.movedim(-3, -1).cpu().numpy()

    # ----------------------------------------------------------------------------- reports

    @torch.no_grad()
    def report(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``openloop``: ``(T, H, 3W, C)`` [real | reconstruction | dream] of sequence 0.

        The dream is fed the first ``min(5, T - 1)`` real frames and then predicts the rest
        from the replayed actions (most likely tokens, stopping its context at episode starts
        is not attempted: the strip shows whatever the sequence holds).
        """
        image = np.asarray(batch["image"])[:1]
        steps = image.shape[1]
        context = max(1, min(5, steps - 1, self.cfg.world_model.context))
        self.nets.eval()
        frames = self._frames(image)[0]  # (T, C, H, W)
        tokens = self.tokenizer.tokenize(frames)
        recon = self.tokenizer.decode(tokens).clamp(0.0, 1.0)
        actions = torch.as_tensor(np.asarray(batch["action"])[0]).to(self.device).long()
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

    def _acting_modules(self) -> dict[str, nn.Module]:
        return {"tokenizer": self.tokenizer, "ac": self.ac}

    def acting_weights(self) -> dict[str, Any]:
        """CPU copies of the ``tokenizer`` and ``ac`` state dicts (what acting needs)."""
        return persist.cpu_state_dicts(self._acting_modules())

    def load_acting_weights(self, weights: dict[str, Any]) -> None:
        persist.load_state_dicts(self._acting_modules(), weights)

    def param_counts(self) -> dict[str, int]:
        counts = {name: sum(p.numel() for p in m.parameters()) for name, m in self.nets.items()}
        counts["total"] = sum(counts.values())
        return counts

    def _optimizers(self) -> dict[str, Optimizer]:
        return {"tokenizer": self.tok_opt, "wm": self.wm_opt, "ac": self.ac_opt}

    def save(self, directory: Path) -> None:
        """Write weights, optimizer states, the generator and the update counter."""
        counters = {"updates": self.updates}
        persist.save(Path(directory), self.nets, self._optimizers(), self.gen, counters, "iris")

    def load(self, directory: Path) -> None:
        """Restore everything :meth:`save` wrote, exactly."""
        counters = persist.load(Path(directory), self.nets, self._optimizers(), self.gen, "iris")
        self.updates = int(counters["updates"])
