"""Builders shared by the loops and the actors: vector envs from a config."""

from __future__ import annotations

from wm_ray.config import EnvConfig
from wm_ray.envs.registry import env_options
from wm_ray.envs.vector import EnvFactory, VectorEnv


def make_vector_env(env: EnvConfig, seed: int, num_envs: int | None = None) -> VectorEnv:
    """The vector env of an env section: ``num_envs`` (default ``env.num_envs``) envs, env ``i``
    seeded with ``seed + i`` on its first reset."""
    factory = EnvFactory(env.id, env.backend, **env_options(env))
    return VectorEnv(factory, num_envs or env.num_envs, seed=seed, mode=env.vector)
