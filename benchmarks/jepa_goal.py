"""The JEPA world model reaches goals: a point moved by actions toward a goal frame.

    python benchmarks/jepa_goal.py [--updates 450] [--episodes 32] [--steps 12] [--seed 0]

A toy image env (:class:`PointEnv`): a bright Gaussian blob (std 2.5 pixels) on a dark 16x16
frame, moved by a continuous action in [-1, 1]^2 (up to ``speed`` pixels per axis per step,
stopped at the walls). Training data: sequences of uniformly random actions from random
starts. The JEPA agent (``jepa jepa_debug`` with ``jepa.world_model.enabled=true``) trains
the encoder and, from ``world_model.start`` (a third of the updates), the latent dynamics on
them. Evaluation: from random starts, each
episode gets a goal frame (the point at another random place); the agent plans every step
(:meth:`JEPAAgent.plan`), and the baseline takes uniformly random actions in the same
episodes. Reported: the mean final distance to the goal in pixels of each, and the start's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result
from wm_ray.config_io import build_config
from wm_ray.factory import create_model

SIDE = 16


class PointEnv:
    """``N`` points on ``SIDE x SIDE`` frames; ``step`` moves each by ``speed * action``."""

    def __init__(self, n: int, rng: np.random.Generator, speed: float = 2.0) -> None:
        self.rng, self.speed = rng, speed
        self.pos = rng.uniform(1, SIDE - 2, (n, 2))

    @staticmethod
    def render(pos: np.ndarray) -> np.ndarray:
        """uint8 frames ``(N, SIDE, SIDE, 1)`` with a blob centred at each position."""
        yy, xx = np.mgrid[0:SIDE, 0:SIDE]
        d2 = (yy[None] - pos[:, 0, None, None]) ** 2 + (xx[None] - pos[:, 1, None, None]) ** 2
        return (255.0 * np.exp(-d2 / (2 * 2.5**2))).astype(np.uint8)[..., None]

    def frames(self) -> np.ndarray:
        return self.render(self.pos)

    def step(self, action: np.ndarray) -> np.ndarray:
        self.pos = np.clip(self.pos + self.speed * np.clip(action, -1, 1), 1, SIDE - 2)
        return self.frames()


def random_batch(b: int, t: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A replay-like batch of ``b`` sequences of ``t`` random-action steps (one episode each)."""
    env = PointEnv(b, rng)
    images, actions = [], []
    for _ in range(t):
        images.append(env.frames())
        actions.append(rng.uniform(-1, 1, (b, 2)).astype(np.float32))
        env.step(actions[-1])
    first = np.zeros((b, t), bool)
    first[:, 0] = True
    return {
        "image": np.stack(images, 1), "action": np.stack(actions, 1),
        "reward": np.zeros((b, t), np.float32), "is_first": first,
        "is_last": np.zeros((b, t), bool), "is_terminal": np.zeros((b, t), bool),
    }  # fmt: skip


def make_agent(seed: int, *overrides: str) -> Any:
    config = build_config(
        ["jepa", "jepa_debug"],
        ["run.device=cpu", f"run.seed={seed}", "jepa.world_model.enabled=true",
         "replay.batch_size=16", "replay.seq_len=8", "jepa.frames=32", *overrides],
    )  # fmt: skip
    obs = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (SIDE, SIDE, 1), np.uint8)})
    return create_model("jepa", obs, gym.spaces.Box(-1, 1, (2,), np.float32), config)


def train(agent: Any, updates: int, seed: int) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    b, t = agent.config.replay.batch_size, agent.config.replay.seq_len
    return [agent.train(random_batch(b, t, rng), None)[1] for _ in range(updates)]


def reach(agent: Any, episodes: int, steps: int, seed: int) -> dict[str, float]:
    """Mean final distance to the goal (pixels) with planning and with random actions, from the
    same starts and goals."""
    rng = np.random.default_rng(seed + 1000)
    starts = rng.uniform(1, SIDE - 2, (episodes, 2))
    goals = rng.uniform(1, SIDE - 2, (episodes, 2))
    goal_frames = PointEnv.render(goals)
    out = {"start": float(np.linalg.norm(starts - goals, axis=1).mean())}
    for mode in ("plan", "random"):
        env = PointEnv(episodes, rng)
        env.pos = starts.copy()
        for _ in range(steps):
            if mode == "plan":
                action = agent.plan(env.frames(), goal_frames)
            else:
                action = rng.uniform(-1, 1, (episodes, 2))
            env.step(action)
        out[mode] = float(np.linalg.norm(env.pos - goals, axis=1).mean())
    return out


def run(updates: int, episodes: int, steps: int, seed: int) -> dict[str, Any]:
    torch.manual_seed(seed)
    agent = make_agent(seed, f"jepa.world_model.start={updates // 3}")
    metrics = train(agent, updates, seed)
    rel = [
        m["train/world_model/relative_error"]
        for m in metrics
        if "train/world_model/relative_error" in m
    ]
    return {"updates": updates, "episodes": episodes, "steps": steps, "seed": seed,
            "world_model_relative_error": {"first": rel[0], "last": rel[-1]},
            "distance": reach(agent, episodes, steps, seed)}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--updates", type=int, default=450)
    p.add_argument("--episodes", type=int, default=32)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    result = run(args.updates, args.episodes, args.steps, args.seed)
    d = result["distance"]
    print(f"final distance to the goal: plan {d['plan']:.2f} px, random {d['random']:.2f} px "
          f"(start {d['start']:.2f} px)")  # fmt: skip
    data = {"setup": {k: v for k, v in vars(args).items() if k != "out"}, "result": result}
    print(f"wrote {write_result('jepa_goal', data, args.out)}")


if __name__ == "__main__":
    main()
