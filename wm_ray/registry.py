"""The model families: the one place in wm_ray that knows them.

A family is one folder ``wm_ray/models/<family>/`` and one :class:`ModelSpec` line in
:data:`MODELS`. The spec names, by import path, the agent class and the config class of the
family's section of the root config (``wm_ray.config`` builds the ``Config`` from them, so it
imports no family), and declares the family's :class:`Capabilities`: the observation and action
kinds it handles, the learner options of ``run.*`` it implements, whether its world model can be
stepped and whether it builds an acting-only agent. Settings outside them are refused in one
place, :func:`check_supported` (called by ``wm_ray.factory.create_model``). The conformance
suite (``tests/conformance``) runs over :func:`list_models`, so a new line gets its tests too.

Nothing heavy is imported here: a family's modules (and torch with them) are imported only when
one of its agents is created. The env backends are registered in ``wm_ray.envs.registry``.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import Any, NamedTuple

OBSERVATION_KINDS = ("image", "vector")
"""Observation keys of the step-dict convention (``wm_ray.types``)."""
ACTION_KINDS = ("discrete", "continuous")
"""Discrete action spaces, and flat Box spaces in [-1, 1]."""
RUN_OPTIONS: dict[str, Any] = {
    "compile": False,
    "precision": "fp32",
    "channels_last": False,
    "cpu_rng": False,
}
"""Learner options of the ``run`` section with their defaults (``run.compile_mode`` goes with
``run.compile``). A family that does not list an option in ``Capabilities.run_options`` refuses
any other value."""


@dataclass(frozen=True)
class Capabilities:
    """What a family supports; everything else is refused by :func:`check_supported`."""

    observations: tuple[str, ...] = OBSERVATION_KINDS
    """Observation keys the family reads; an env must give at least one of them."""
    needs: tuple[str, ...] = ()
    """Observation keys an env must give, every one (e.g. the parts a config chose read them)."""
    actions: tuple[str, ...] = ACTION_KINDS
    """Action kinds it acts with: ``discrete`` and/or ``continuous``."""
    run_options: tuple[str, ...] = ()
    """Keys of :data:`RUN_OPTIONS` it implements."""
    steppable: bool = False
    """Its agent steps its world model from real frames with given actions (``dream_reset`` /
    ``dream_step``: ``wm-ray play``, dream environments)."""
    learns: bool = True
    """False for baselines whose ``train`` does nothing (no losses to check)."""


class ModelSpec(NamedTuple):
    name: str
    agent_path: str
    """``module:Class`` of the agent (constructor ``Agent(obs_space, act_space, config,
    acting=False)``)."""
    config_path: str | None
    """``module:Class`` of the family's config section (the field ``Config.<name>``); None for a
    family without settings."""
    description: str
    capabilities: Capabilities = Capabilities()
    aliases: tuple[str, ...] = ()
    backends: tuple[str, ...] = ()
    """Env backends the family supports; empty means every backend."""
    test_config: tuple[str, ...] = ()
    """Presets and ``key=value`` overrides that make the family test-sized (the conformance
    suite, ``wm_ray.conformance``, applies them after ``run.model``)."""
    config_capabilities: str | None = None
    """``module:function`` narrowing ``capabilities`` for a config: it returns None (no
    change) or ``(Capabilities, setting)`` where ``setting`` names what narrows them (e.g.
    ``dreamer.planner=cem`` plans continuous actions only); :func:`check_supported` then checks
    against those and names the setting."""
    validator: str | None = None
    """``module:function`` checking the family's settings in the root config (raises
    ``ValueError`` naming every bad value); run by ``wm_ray.validate.validate_run`` before a
    run creates anything, and by ``show-config``."""
    operator: str | None = None
    """``module:Class`` of the family's input operator (``wm_ray.get_operator``); None: the
    generic :class:`wm_ray.operators.base.Operator` of its spaces."""


class UnknownNameError(ValueError):
    """An unknown model, env id or backend; the message lists the nearest valid names."""


class UnsupportedError(ValueError):
    """A setting or a space the family does not support; the message says what it supports."""


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            "dreamer",
            "wm_ray.models.dreamer.agent:DreamerAgent",
            "wm_ray.models.dreamer.config:DreamerConfig",
            "DreamerV3: categorical RSSM world model, actor-critic learned in imagination.",
            Capabilities(run_options=("compile", "precision", "channels_last", "cpu_rng")),
            aliases=("dreamerv3", "rssm"),
            test_config=("debug", "size_debug"),
            config_capabilities="wm_ray.models.dreamer.config:capabilities",
            validator="wm_ray.models.dreamer.config:validate",
            operator="wm_ray.operators.families:DreamerOperator",
        ),
        ModelSpec(
            "diamond",
            "wm_ray.models.diamond.agent:DiamondAgent",
            "wm_ray.models.diamond.config:DiamondConfig",
            "DIAMOND: diffusion world model of the next frame (EDM, U-Net; DDPM / DiT options), "
            "CNN+LSTM reward / termination model, CNN+LSTM actor-critic in imagination; image "
            "observations, discrete actions.",
            Capabilities(observations=("image",), actions=("discrete",), steppable=True),
            test_config=("diamond_debug",),
            validator="wm_ray.models.diamond.config:validate",
            operator="wm_ray.operators.families:DiamondOperator",
        ),
        ModelSpec(
            "genie",
            "wm_ray.models.genie.agent:GenieAgent",
            "wm_ray.models.genie.config:GenieConfig",
            "Genie: ST-transformer VQ video tokenizer, latent action model (8 codes), MaskGIT "
            "dynamics; learns a playable world from video (replay or ingested) and acts only "
            "through its behaviour policy (random or another run's).",
            Capabilities(observations=("image",), steppable=True),
            test_config=(
                "genie_debug",
                "genie.start.dynamics=0",
                "genie.start.freeze_tokenizer=false",
            ),
            validator="wm_ray.models.genie.config:validate_root",
            operator="wm_ray.operators.families:GenieOperator",
        ),
        ModelSpec(
            "iris",
            "wm_ray.models.iris.agent:IrisAgent",
            "wm_ray.models.iris.config:IrisConfig",
            "IRIS: VQ tokenizer, causal transformer world model (KV-cached imagination), "
            "CNN+LSTM actor-critic; image observations, discrete actions.",
            Capabilities(
                observations=("image",),
                actions=("discrete",),
                run_options=("compile",),
                steppable=True,
            ),
            test_config=("iris_debug", "iris.start.world_model=0", "iris.start.actor_critic=0"),
            validator="wm_ray.models.iris.config:validate",
            operator="wm_ray.operators.families:IrisOperator",
        ),
        ModelSpec(
            "jepa",
            "wm_ray.models.jepa.agent:JEPAAgent",
            "wm_ray.models.jepa.config:JEPAConfig",
            "I-JEPA: ViT context encoder, narrower ViT predictor with mask tokens, EMA target "
            "encoder, multiblock masking, loss in representation space; learns image features "
            "from replayed frames and acts only through its behaviour policy.",
            Capabilities(observations=("image",)),
            aliases=("ijepa", "i-jepa"),
            test_config=("jepa_debug",),
            validator="wm_ray.models.jepa.config:validate_root",
            operator="wm_ray.operators.families:JepaOperator",
        ),
        ModelSpec(
            "modular",
            "wm_ray.models.modular.agent:ModularAgent",
            "wm_ray.models.modular.config:ModularConfig",
            "ModularRSSM: Dreamer's learning (or CEM planning) over an RSSM world model built "
            "from parts: encoders conv/mlp/vit, decoders conv/mlp, backbones gru/lstm/transformer.",
            Capabilities(run_options=("compile", "precision", "channels_last", "cpu_rng")),
            aliases=("modular_rssm", "modularrssm"),
            test_config=("debug", "modular_debug", "modular.backbone=transformer"),
            config_capabilities="wm_ray.models.modular.config:capabilities",
            validator="wm_ray.models.modular.config:validate",
            operator="wm_ray.operators.families:DreamerOperator",
        ),
        ModelSpec(
            "planet",
            "wm_ray.models.planet.agent:PlanetAgent",
            "wm_ray.models.planet.config:PlanetConfig",
            "PlaNet: Gaussian RSSM world model, CEM planning in latent space (batched over envs "
            "and candidates); continuous actions.",
            Capabilities(actions=("continuous",)),
            test_config=("planet_debug",),
            validator="wm_ray.models.planet.config:validate",
            operator="wm_ray.operators.families:DreamerOperator",
        ),
        ModelSpec(
            "random",
            "wm_ray.models.random.agent:RandomAgent",
            None,
            "Uniform random policy: the baseline for random-normalized scores; it does not learn.",
            Capabilities(learns=False),
            aliases=("uniform",),
            test_config=("debug",),
        ),
    ]
}


def nearest(name: str, candidates: list[str], n: int = 3) -> list[str]:
    """Up to ``n`` of ``candidates`` closest to ``name`` (case-insensitive)."""
    by_lower = {c.lower(): c for c in candidates}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=n, cutoff=0.6)
    return [by_lower[c] for c in close]


def lookup(kind: str, table: dict[str, Any], name: str) -> Any:
    """The spec in ``table`` named or aliased ``name``; else :class:`UnknownNameError`."""
    key = name.strip().lower()
    for spec in table.values():
        if key == spec.name or key in spec.aliases:
            return spec
    names = sorted(table)
    close = nearest(name, names + [a for s in table.values() for a in s.aliases])
    hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
    raise UnknownNameError(f"unknown {kind} {name!r}{hint} (valid: {', '.join(names)})")


def get_model_spec(name_or_alias: str) -> ModelSpec:
    return lookup("model", MODELS, name_or_alias)


def list_models() -> list[str]:
    return sorted(MODELS)


def import_object(path: str) -> Any:
    """The object at ``module:attribute`` (or the module for a plain module path)."""
    module, _, attr = path.partition(":")
    obj: Any = importlib.import_module(module)
    return getattr(obj, attr) if attr else obj


def config_sections() -> list[tuple[str, type]]:
    """``(family, config class)`` of every family with settings, in registry order: the family
    sections of ``wm_ray.config.Config`` (the config classes import without torch)."""
    return [
        (spec.name, import_object(spec.config_path))
        for spec in MODELS.values()
        if spec.config_path is not None
    ]


def agent_class(name_or_alias: str) -> Any:
    """The agent class of a family (imports the family's modules, and torch)."""
    return import_object(get_model_spec(name_or_alias).agent_path)


def observation_kinds(obs_space: Any) -> tuple[str, ...]:
    """The kinds of :data:`OBSERVATION_KINDS` a Dict observation space holds."""
    keys = getattr(obs_space, "spaces", {})
    return tuple(kind for kind in OBSERVATION_KINDS if kind in keys)


def action_kind(act_space: Any) -> str:
    """``discrete`` or ``continuous`` (a flat Box); anything else is ``unsupported``."""
    import gymnasium as gym

    if isinstance(act_space, gym.spaces.Discrete):
        return "discrete"
    if isinstance(act_space, gym.spaces.Box) and len(act_space.shape) == 1:
        return "continuous"
    return "unsupported"


def _supported(caps: Capabilities) -> str:
    options = ", ".join(f"run.{o}" for o in caps.run_options) or "none"
    needs = f" (needs {' and '.join(caps.needs)})" if caps.needs else ""
    return (
        f"observations {'/'.join(caps.observations)}{needs}, actions {'/'.join(caps.actions)}, "
        f"learner options: {options}"
    )


def check_supported(
    spec: ModelSpec, config: Any, obs_space: Any = None, act_space: Any = None
) -> None:
    """Refuse what ``spec``'s family does not support, naming it and what the family supports.

    Args:
        spec: the family.
        config: the root config (its ``run`` section is checked against :data:`RUN_OPTIONS`).
        obs_space: the single-env Dict observation space, if known.
        act_space: the single-env action space, if known.

    Raises:
        UnsupportedError: listing every unsupported setting.
    """
    caps, setting = spec.capabilities, ""
    if spec.config_capabilities is not None:
        narrowed = import_object(spec.config_capabilities)(config)
        if narrowed is not None:
            caps, setting = narrowed[0], f" with {narrowed[1]}"
    problems = []
    for option, default in RUN_OPTIONS.items():
        value = getattr(config.run, option)
        if value != default and option not in caps.run_options:
            problems.append(f"run.{option}={value} (leave it at {default})")
    if obs_space is not None:
        kinds = observation_kinds(obs_space)
        missing = [kind for kind in caps.needs if kind not in kinds]
        if not set(kinds) & set(caps.observations) or missing:
            got = "/".join(kinds) or f"{obs_space}"
            wanted = set(caps.needs) or set(caps.observations)
            hint = " (set env.pixels=true to render images)" if "image" in wanted else ""
            need = f", without {'/'.join(missing)}" if missing else ""
            problems.append(f"observations of kind {got}{need}{hint}")
    if act_space is not None:
        kind = action_kind(act_space)
        if kind not in caps.actions:
            problems.append(f"{kind} actions ({act_space})")
    if problems:
        raise UnsupportedError(
            f"the {spec.name} family{setting} does not support {'; '.join(problems)}. It "
            f"supports{setting}: {_supported(caps)}"
        )


__all__ = [
    "ACTION_KINDS",
    "MODELS",
    "OBSERVATION_KINDS",
    "RUN_OPTIONS",
    "Capabilities",
    "ModelSpec",
    "UnknownNameError",
    "UnsupportedError",
    "agent_class",
    "check_supported",
    "config_sections",
    "get_model_spec",
    "list_models",
]
