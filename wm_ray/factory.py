"""Building a run's objects from the registries: configs, agents, acting-only agents.

``create_model`` is the one way the loops, the actors, the CLI and the benchmarks build an agent:
it checks the family's capabilities (:func:`wm_ray.registry.check_supported`) before anything is
allocated, so an unsupported space or learner option fails at once with what the family does
support, wherever the agent is built.
"""

from __future__ import annotations

from typing import Any

from wm_ray import config_io
from wm_ray.config import Config
from wm_ray.envs.registry import make_configured_env
from wm_ray.registry import agent_class, check_supported, get_model_spec


def _resolve_override(key: str, family: str) -> str:
    if "." in key:
        return key
    if key == "env":
        return "env.id"
    keys = config_io.valid_keys(Config)
    for candidate in (f"{family}.{key}", f"run.{key}"):
        if candidate in keys:
            return candidate
    matches = [k for k in keys if k.rsplit(".", 1)[-1] == key]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ValueError(f"override {key!r} is ambiguous; use one of {matches}")
    return key  # build_config reports it as unknown, with the closest key


def create_config_updates(family: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Nested updates from ``create_config``-style keyword overrides."""
    updates: dict[str, Any] = {}
    for key, value in overrides.items():
        node = updates
        *parents, leaf = _resolve_override(key, family).split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return updates


def create_config(model: str = "random", presets: tuple[str, ...] = (), **overrides: Any) -> Config:
    """The resolved config for ``model``: defaults, presets, then overrides.

    Overrides are dotted keys (``**{"replay.capacity": 10_000}``) or plain field names that
    are unique (``seed=7``, ``steps=1000``; ``env="dmc:walker-walk"`` sets ``env.id``).
    """
    spec = get_model_spec(model)
    base = config_io.apply(Config(), {"run": {"model": spec.name}})
    config = config_io.build_config(presets, base=base)
    return config_io.apply(config, create_config_updates(spec.name, overrides))


def env_spaces(config: Config) -> tuple[Any, Any]:
    """``(observation space, action space)`` of one env of ``config.env``."""
    env = make_configured_env(config.env)
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def create_model(
    model: str,
    obs_space: Any = None,
    act_space: Any = None,
    config: Config | None = None,
    *,
    acting: bool = False,
    **overrides: Any,
) -> Any:
    """An agent of family ``model`` (the agent protocol of ``wm_ray.core``).

    Args:
        model: a name or alias of ``wm_ray.list_models()``.
        obs_space: the single-env ``gymnasium.spaces.Dict`` observation space; with
            ``act_space``, taken from the configured env (``config.env``) when omitted.
        act_space: the single-env action space.
        config: a full :class:`Config`; built with :func:`create_config` when omitted.
        acting: build only what acting needs (env and eval workers): no optimizers and no
            training-only networks; ``train`` then refuses.
        **overrides: applied to the config as in :func:`create_config`, e.g.
            ``create_model("random", env="dmc:walker-walk", seed=3)``.

    Raises:
        wm_ray.registry.UnsupportedError: a space or ``run`` option the family does not
            support (the message says what it supports).
    """
    spec = get_model_spec(model)
    if config is None:
        config = create_config(spec.name, **overrides)
    elif overrides:
        config = config_io.apply(config, create_config_updates(spec.name, overrides))
    if not isinstance(config, Config):
        raise TypeError(f"config must be a wm_ray Config, got {type(config).__name__}")
    if obs_space is None or act_space is None:
        env_obs, env_act = env_spaces(config)
        obs_space = obs_space or env_obs
        act_space = act_space or env_act
    check_supported(spec, config, obs_space, act_space)
    return agent_class(spec.name)(obs_space, act_space, config, acting=acting)


__all__ = ["create_config", "create_config_updates", "create_model", "env_spaces"]
