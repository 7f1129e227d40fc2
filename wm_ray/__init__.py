"""wm_ray: distributed actor-learner reinforcement learning with world models, on Ray.

The public API is imported lazily, so ``import wm_ray`` stays cheap and never pulls in an env
library or Ray::

    import wm_ray
    env = wm_ray.make_env("ALE/Pong-v5")
    agent = wm_ray.create_model("random", env.observation_space, env.action_space)
    wm_ray.list_models(), wm_ray.list_envs(), wm_ray.list_backends(), wm_ray.list_presets()
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Exported name -> (module, attribute). The attribute differs from the name only for aliases
# (``list_backends`` is ``wm_ray.envs.registry.list_env_backends``, as ``wm-ray list backends``).
_EXPORTS: dict[str, tuple[str, str]] = {
    "ModelSpec": ("wm_ray.registry", "ModelSpec"),
    "Capabilities": ("wm_ray.registry", "Capabilities"),
    "EnvBackendSpec": ("wm_ray.envs.registry", "EnvBackendSpec"),
    "create_model": ("wm_ray.factory", "create_model"),
    "create_config": ("wm_ray.factory", "create_config"),
    "make_env": ("wm_ray.envs.registry", "make_env"),
    "list_models": ("wm_ray.registry", "list_models"),
    "list_envs": ("wm_ray.envs.registry", "list_envs"),
    "list_backends": ("wm_ray.envs.registry", "list_env_backends"),
    "list_env_backends": ("wm_ray.envs.registry", "list_env_backends"),
    "list_presets": ("wm_ray.config_io", "list_presets"),
    "get_model_spec": ("wm_ray.registry", "get_model_spec"),
    "get_env_backend_spec": ("wm_ray.envs.registry", "get_env_backend_spec"),
    "Config": ("wm_ray.config", "Config"),
    "build_config": ("wm_ray.config_io", "build_config"),
    "Replay": ("wm_ray.replay", "Replay"),
    "VectorEnv": ("wm_ray.envs.vector", "VectorEnv"),
    "get_operator": ("wm_ray.operators", "get_operator"),
    "Operator": ("wm_ray.operators.base", "Operator"),
    "OperatorError": ("wm_ray.operators.images", "OperatorError"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module, attribute = _EXPORTS[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'wm_ray' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
