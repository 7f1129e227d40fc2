"""Builders shared by the loops and the actors: vector envs from a config."""

from __future__ import annotations

from wm_ray.config import EnvConfig
from wm_ray.envs.registry import env_options, is_natively_batched, make_batched_env
from wm_ray.envs.vector import EnvFactory, VectorEnv, VectorEnvLike


def make_vector_env(env: EnvConfig, seed: int, num_envs: int | None = None) -> VectorEnvLike:
    """The vector env of an env section: ``num_envs`` (default ``env.num_envs``) envs, env ``i``
    seeded with ``seed + i`` on its first reset.

    A backend that batches natively (its module defines ``make_vector``, e.g. Brax) builds the
    whole batch itself; ``env.vector`` does not apply to it, and ``subprocess`` is refused.
    """
    n = num_envs or env.num_envs
    if is_natively_batched(env.id, env.backend):
        if env.vector != "serial":
            raise ValueError(
                f"env.vector={env.vector!r} does not apply to {env.id}: its backend steps all "
                f"{n} envs in one batched call in this process; leave env.vector=serial"
            )
        return make_batched_env(env.id, n, seed, env.backend, **env_options(env))
    factory = EnvFactory(env.id, env.backend, **env_options(env))
    return VectorEnv(factory, n, seed=seed, mode=env.vector)
