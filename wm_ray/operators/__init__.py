"""Operators: raw inputs -> exactly what a family's agent and networks take.

``wm_ray.get_operator(name, obs_space, act_space, config)`` (or ``get_operator(name,
agent=agent)``, or ``get_operator(name, run=run_dir)``) builds the operator of family
``name`` at those spaces; its methods turn images (numpy, torch, PIL, lists of frames; gray or
RGB; uint8 or floats in [0, 1]) and actions into the structures of the agent protocol
(``observation`` for ``policy``, ``batch`` for ``train``, ``start_frames`` for
``dream_reset``, ...) and into the tensors the family's networks take (``model_input``,
``model_action``), and refuse anything else with an :class:`OperatorError` naming the value,
what it got and what is valid. A family names its operator class in its registry line
(``ModelSpec.operator``); a family without one gets the generic :class:`Operator`. The agents
call the same conversions (:mod:`wm_ray.operators.tensors`).
See ``docs/operators.md``.
"""

from __future__ import annotations

from typing import Any

from wm_ray.operators.images import OperatorError


def get_operator(
    name: str,
    obs_space: Any = None,
    act_space: Any = None,
    config: Any = None,
    *,
    agent: Any = None,
    run: Any = None,
    resize: bool = True,
    device: Any = None,
) -> Any:
    """The operator of family ``name`` (a name or alias of ``wm_ray.list_models()``).

    Args:
        name: the family.
        obs_space: the single-env Dict observation space; with ``act_space``, taken from
            ``agent`` or else from the configured env (``config.env``) when omitted, as
            ``wm_ray.create_model`` does.
        act_space: the single-env action space.
        config: the root config; ``agent.config``, else the family's defaults
            (``wm_ray.create_config(name)``) when omitted.
        agent: an agent of the family: its spaces, config and device.
        run: a run directory (path or URI): its saved ``config.yaml`` (the spaces are then
            those of its configured env).
        resize: resize square images of another size to the model's side (the envs' area
            interpolation); False refuses them.
        device: where ``model_input`` / ``model_action`` put tensors (default: the agent's
            device, else CPU).

    Raises:
        wm_ray.registry.UnknownNameError: an unknown family.
        wm_ray.registry.UnsupportedError: spaces the family does not support.
    """
    from wm_ray import factory, registry
    from wm_ray.operators.base import Operator

    spec = registry.get_model_spec(name)
    if agent is not None:
        family = getattr(agent, "family", spec.name)
        if family != spec.name:
            raise OperatorError(f"get_operator({name!r}): agent is a {family} agent")
        obs_space = agent.obs_space if obs_space is None else obs_space
        act_space = agent.act_space if act_space is None else act_space
        config = getattr(agent, "config", None) if config is None else config
        device = getattr(agent, "device", None) if device is None else device
    if run is not None and config is None:
        from wm_ray.rundir.open import load_run_config

        config = load_run_config(run)
        if config.run.model != spec.name:
            raise OperatorError(f"get_operator({name!r}): {run} is a {config.run.model} run")
    if config is None:
        config = factory.create_config(spec.name)
    if obs_space is None or act_space is None:
        if (obs_space is None) != (act_space is None):
            raise OperatorError("get_operator: pass obs_space and act_space together")
        obs_space, act_space = factory.env_spaces(config)
    registry.check_supported(spec, config, obs_space, act_space)
    cls = registry.import_object(spec.operator) if spec.operator else Operator
    return cls(spec.name, obs_space, act_space, config, resize=resize, device=device or "cpu")


def __getattr__(name: str) -> Any:
    if name == "Operator":
        from wm_ray.operators.base import Operator

        return Operator
    raise AttributeError(f"module 'wm_ray.operators' has no attribute {name!r}")


__all__ = ["Operator", "OperatorError", "get_operator"]
