"""wm_ray: distributed actor-learner reinforcement learning with world models, on Ray.

The public API is imported lazily, so ``import wm_ray`` stays cheap and never pulls in an env
library or Ray::

    import wm_ray
    env = wm_ray.make_env("ALE/Pong-v5")
    agent = wm_ray.create_model("random", env.observation_space, env.action_space)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ModelSpec": "wm_ray.registry",
    "Capabilities": "wm_ray.registry",
    "EnvBackendSpec": "wm_ray.envs.registry",
    "create_model": "wm_ray.factory",
    "create_config": "wm_ray.factory",
    "make_env": "wm_ray.envs.registry",
    "list_models": "wm_ray.registry",
    "list_envs": "wm_ray.envs.registry",
    "list_env_backends": "wm_ray.envs.registry",
    "get_model_spec": "wm_ray.registry",
    "get_env_backend_spec": "wm_ray.envs.registry",
    "Config": "wm_ray.config",
    "build_config": "wm_ray.config_io",
    "Replay": "wm_ray.replay",
    "VectorEnv": "wm_ray.envs.vector",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'wm_ray' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
