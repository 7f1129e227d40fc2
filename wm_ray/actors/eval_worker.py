"""``EvalWorker``: evaluation episodes with published weights, off the training path.

The coordinator asks an eval worker to evaluate a weight version (an ObjectRef of acting
weights, straight from the object store); the worker loads them into its own agent copy and
runs :func:`wm_ray.loops.evaluate.evaluate` on its own vector env (seeds offset by
``EVAL_SEED_OFFSET`` from the training envs, as in the single-process loop).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ray
import torch

from wm_ray.actors.naming import actor_options
from wm_ray.actors.wire import unpack
from wm_ray.config import Config
from wm_ray.factory import create_model
from wm_ray.loops.evaluate import evaluate
from wm_ray.loops.schedule import EVAL_SEED_OFFSET
from wm_ray.loops.setup import make_vector_env


class EvalWorker:
    """Eval worker ``index``: an eval vector env and an acting-only copy of the agent.

    Args:
        config: the run config (env, eval settings, model).
        index: the worker index; its envs are seeded ``run.seed + EVAL_SEED_OFFSET + 1000 * i``.
    """

    def __init__(self, config: Config, index: int = 0) -> None:
        torch.set_num_threads(1)
        self.index = int(index)
        acting = dataclasses.replace(config, run=dataclasses.replace(config.run, device="cpu"))
        self.venv = make_vector_env(
            config.env,
            seed=config.run.seed + EVAL_SEED_OFFSET + 1000 * self.index,
            num_envs=config.eval.num_envs,
        )
        self.agent = create_model(
            config.run.model, self.venv.obs_space, self.venv.act_space, acting, acting=True
        )

    def evaluate(self, weights: Any, episodes: int, video: bool = False) -> dict[str, Any]:
        """Load ``weights`` (acting weights or an ObjectRef of them) and run ``episodes``."""
        if isinstance(weights, ray.ObjectRef):
            weights = ray.get(weights)
        self.agent.load_acting_weights(unpack(weights))
        return evaluate(self.agent, self.venv, episodes, video=video)

    def ping(self) -> int:
        """Health check: returns the worker index."""
        return self.index

    def close(self) -> None:
        self.venv.close()


def remote_eval_worker(config: Config, index: int, prefix: str = "", **options: Any) -> Any:
    """The Ray actor class of :class:`EvalWorker` (name ``f"{prefix}eval-worker-{index}"``)."""
    defaults = actor_options(
        config, "eval-worker", index, prefix, num_cpus=config.resources.cpus_per_eval_worker
    )
    return ray.remote(EvalWorker).options(**{**defaults, **options})
