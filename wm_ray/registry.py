"""Model families and env backends, resolved lazily by import path.

Nothing heavy is imported here: a backend's module (and with it ale_py, dm_control, mujoco or
jax) is imported only when an env of that backend is made or listed, and a model family's
module only when that model is created.
"""

from __future__ import annotations

import difflib
import importlib
from types import ModuleType
from typing import Any, NamedTuple

from wm_ray.config import Config


class ModelSpec(NamedTuple):
    name: str
    import_path: str
    config_path: str | None = None
    description: str = ""
    aliases: tuple[str, ...] = ()
    backends: tuple[str, ...] = ()
    """Env backends the family supports; empty means every backend."""


class EnvBackendSpec(NamedTuple):
    name: str
    factory_path: str
    description: str = ""
    aliases: tuple[str, ...] = ()


class UnknownNameError(ValueError):
    """An unknown model, env id or backend; the message lists the nearest valid names."""


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            "dreamer",
            "wm_ray.models.dreamer.agent:DreamerAgent",
            "wm_ray.models.dreamer.config:DreamerConfig",
            "DreamerV3: categorical RSSM world model, actor-critic learned in imagination.",
            ("dreamerv3", "rssm"),
        ),
        ModelSpec(
            "iris",
            "wm_ray.models.iris.agent:IrisAgent",
            "wm_ray.models.iris.config:IrisConfig",
            "IRIS: VQ tokenizer, causal transformer world model (KV-cached imagination), "
            "CNN+LSTM actor-critic; image observations, discrete actions.",
        ),
        ModelSpec(
            "random",
            "wm_ray.models.random_agent:RandomAgent",
            None,
            "Uniform random policy: the baseline for random-normalized scores; it does not learn.",
            ("uniform",),
        ),
    ]
}

ENV_BACKENDS: dict[str, EnvBackendSpec] = {
    spec.name: spec
    for spec in [
        EnvBackendSpec(
            "gymnasium",
            "wm_ray.envs.gymnasium_env:make",
            "Gymnasium ids (classic control, toy text, ...), vector obs; pixels=True renders.",
            ("gym",),
        ),
        EnvBackendSpec(
            "atari",
            "wm_ray.envs.atari:make",
            "Arcade Learning Environment via ale-py: 64x64 frames, frameskip 4, sticky actions.",
            ("ale",),
        ),
        EnvBackendSpec(
            "dmc",
            "wm_ray.envs.dmc:make",
            "DeepMind Control Suite, domain-task ids; proprio vector and 64x64 camera images.",
            ("dm_control",),
        ),
        EnvBackendSpec(
            "mujoco",
            "wm_ray.envs.mujoco:make",
            "Gymnasium MuJoCo tasks (HalfCheetah-v5, Humanoid-v5, ...), actions in [-1, 1].",
            ("gymnasium_mujoco",),
        ),
        EnvBackendSpec(
            "fake",
            "wm_ray.envs.fake:make",
            "Deterministic fake envs for tests and debugging (no dependencies).",
            ("dummy",),
        ),
    ]
}

# Order in which 'auto' asks backends whether they own an un-prefixed id.
_AUTO_ORDER = ("atari", "mujoco", "gymnasium")
_LISTED_BACKENDS = ("gymnasium", "atari", "dmc", "mujoco")


def _nearest(name: str, candidates: list[str], n: int = 3) -> list[str]:
    by_lower = {c.lower(): c for c in candidates}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=n, cutoff=0.6)
    return [by_lower[c] for c in close]


def _lookup(kind: str, table: dict[str, Any], name: str) -> Any:
    key = name.strip().lower()
    for spec in table.values():
        if key == spec.name or key in spec.aliases:
            return spec
    names = sorted(table)
    close = _nearest(name, names + [a for s in table.values() for a in s.aliases])
    hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
    raise UnknownNameError(f"unknown {kind} {name!r}{hint} (valid: {', '.join(names)})")


def get_model_spec(name_or_alias: str) -> ModelSpec:
    return _lookup("model", MODELS, name_or_alias)


def get_env_backend_spec(name_or_alias: str) -> EnvBackendSpec:
    return _lookup("env backend", ENV_BACKENDS, name_or_alias)


def list_models() -> list[str]:
    return sorted(MODELS)


def list_env_backends() -> list[str]:
    return list(ENV_BACKENDS)


def _import(path: str) -> Any:
    module, _, attr = path.partition(":")
    obj: Any = importlib.import_module(module)
    return getattr(obj, attr) if attr else obj


def backend_module(name_or_alias: str) -> ModuleType:
    """The module of a backend (imports it, and so its env library)."""
    spec = get_env_backend_spec(name_or_alias)
    return importlib.import_module(spec.factory_path.partition(":")[0])


def list_envs(model: str | None = None, backend: str | None = None) -> list[str]:
    """Env ids a user can pass to :func:`make_env` (of the installed backends).

    Args:
        model: only ids of the backends this model family supports.
        backend: only ids of this backend (``fake`` is listed only when asked for).
    """
    if backend is not None:
        names = [get_env_backend_spec(backend).name]
    else:
        names = list(_LISTED_BACKENDS)
    if model is not None:
        supported = get_model_spec(model).backends
        names = [n for n in names if not supported or n in supported]
    return [env_id for name in names for env_id in backend_module(name).list_ids()]


def resolve_env(env_id: str, backend: str = "auto") -> tuple[EnvBackendSpec, str]:
    """(backend spec, task) for an env id; raises :class:`UnknownNameError` with suggestions."""
    if backend != "auto":
        spec = get_env_backend_spec(backend)
        prefix, sep, rest = env_id.partition(":")
        if sep and prefix.lower() in (spec.name, *spec.aliases):
            env_id = rest
        return spec, env_id
    prefix, sep, rest = env_id.partition(":")
    if sep:
        return get_env_backend_spec(prefix), rest
    for name in _AUTO_ORDER:
        try:
            if backend_module(name).owns(env_id):
                return ENV_BACKENDS[name], env_id
        except ImportError:
            continue
    known: list[str] = []
    for name in _LISTED_BACKENDS:
        try:
            known += backend_module(name).list_ids()
        except ImportError:
            continue
    close = _nearest(env_id, known)
    hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
    raise UnknownNameError(
        f"unknown env id {env_id!r}; {hint}Use a gymnasium id or 'backend:task' with a backend of "
        f"{', '.join(ENV_BACKENDS)} (see 'wm-ray list envs')."
    )


def make_env(env_id: str, backend: str = "auto", **kwargs: Any) -> Any:
    """A ``gymnasium.Env`` with Dict observations (``image`` uint8 and/or ``vector`` float32).

    Args:
        env_id: ``CartPole-v1``, ``ALE/Pong-v5``, ``HalfCheetah-v5``, ``dmc:walker-walk``, ...
        backend: a name of :func:`list_env_backends` or ``auto`` (inferred from the id).
        **kwargs: backend options (``pixels``, ``image_size``, ``seed``, ...); ``None`` values
            mean the backend default. An option the backend does not use is an error.
    """
    spec, task = resolve_env(env_id, backend)
    module = backend_module(spec.name)
    options = {k: v for k, v in kwargs.items() if v is not None}
    unused = sorted(set(options) - set(module.OPTIONS) - {"seed"})
    if unused:
        raise ValueError(
            f"option(s) {unused} do not apply to env backend {spec.name!r} ({env_id}); "
            f"it takes: {', '.join(sorted(module.OPTIONS | {'seed'}))}"
        )
    try:
        return module.make(task, **options)
    except (KeyError, LookupError, ValueError) as err:
        ids = module.list_ids()
        wanted = f"{spec.name}:{task}"
        if env_id in ids or wanted in ids or task in ids:
            raise
        close = _nearest(wanted, ids) or _nearest(task, ids)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise UnknownNameError(f"unknown {spec.name} task {task!r}{hint} ({err})") from None


def _resolve_override(key: str, family: str) -> str:
    if "." in key:
        return key
    if key == "env":
        return "env.id"
    from wm_ray.config_io import valid_keys

    keys = valid_keys(Config)
    for candidate in (f"{family}.{key}", f"run.{key}"):
        if candidate in keys:
            return candidate
    matches = [k for k in keys if k.rsplit(".", 1)[-1] == key]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ValueError(f"override {key!r} is ambiguous; use one of {matches}")
    return key  # build_config reports it as unknown, with the closest key


def create_config(model: str = "random", presets: tuple[str, ...] = (), **overrides: Any) -> Config:
    """The resolved config for ``model``: defaults, presets, then overrides.

    Overrides are dotted keys (``**{"replay.capacity": 10_000}``) or plain field names that
    are unique (``seed=7``, ``steps=1000``; ``env="dmc:walker-walk"`` sets ``env.id``).
    """
    from wm_ray import config_io

    spec = get_model_spec(model)
    base = config_io.apply(Config(), {"run": {"model": spec.name}})
    config = config_io.build_config(presets, base=base)
    return config_io.apply(config, create_config_updates(spec.name, overrides))


def create_model(
    model: str,
    obs_space: Any = None,
    act_space: Any = None,
    config: Config | None = None,
    **overrides: Any,
) -> Any:
    """An agent of family ``model`` (the agent protocol of ``wm_ray.core``).

    Args:
        model: a name or alias of :func:`list_models`.
        obs_space: the single-env ``gymnasium.spaces.Dict`` observation space; with
            ``act_space``, taken from the configured env (``config.env``) when omitted.
        act_space: the single-env action space.
        config: a full :class:`Config`; built with :func:`create_config` when omitted.
        **overrides: applied to the config as in :func:`create_config`, e.g.
            ``create_model("random", env="dmc:walker-walk", seed=3)``.
    """
    spec = get_model_spec(model)
    if config is None:
        config = create_config(spec.name, **overrides)
    elif overrides:
        from wm_ray import config_io

        config = config_io.apply(config, create_config_updates(spec.name, overrides))
    if not isinstance(config, Config):
        raise TypeError(f"config must be a wm_ray Config, got {type(config).__name__}")
    if obs_space is None or act_space is None:
        from wm_ray.loops.setup import env_options

        env = make_env(config.env.id, config.env.backend, **env_options(config.env))
        obs_space = obs_space or env.observation_space
        act_space = act_space or env.action_space
        env.close()
    cls = _import(spec.import_path)
    return cls(obs_space, act_space, config)


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


__all__ = [
    "EnvBackendSpec",
    "ModelSpec",
    "UnknownNameError",
    "create_config",
    "create_model",
    "get_env_backend_spec",
    "get_model_spec",
    "list_env_backends",
    "list_envs",
    "list_models",
    "make_env",
]
