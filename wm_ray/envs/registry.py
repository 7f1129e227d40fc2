"""The env backends: ids -> backend modules, imported lazily; ``make_env`` and ``list_envs``.

A backend is one module of ``wm_ray/envs`` (the contract: ``make``, ``list_ids``, ``owns``,
``OPTIONS``; see the package docstring) and one :class:`EnvBackendSpec` line in
:data:`ENV_BACKENDS`. A backend's module (and with it ale_py, dm_control, mujoco or jax) is
imported only when an env of that backend is made or listed.
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType
from typing import Any, NamedTuple

from wm_ray.config import EnvConfig
from wm_ray.envs.base import RetiredIdError
from wm_ray.envs.vector import VectorEnvLike
from wm_ray.registry import UnknownNameError, get_model_spec, lookup, nearest


class EnvBackendSpec(NamedTuple):
    name: str
    factory_path: str
    description: str = ""
    aliases: tuple[str, ...] = ()


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
            "brax",
            "wm_ray.envs.brax_env:make",
            "Brax (JAX physics): brax:ant, brax:inverted_pendulum, ...; N envs batched in one "
            "jitted call, vector obs; pixels=True renders the MuJoCo model.",
        ),
        EnvBackendSpec(
            "robotics",
            "wm_ray.envs.robotics:make",
            "Gymnasium Robotics (FetchReach-v4, HandReach-v3, PointMaze_UMaze-v3, ...): goal "
            "dict flattened into vector, success metric, actions in [-1, 1].",
            ("gymnasium_robotics",),
        ),
        EnvBackendSpec(
            "unity",
            "wm_ray.envs.unity:make",
            "Unity ML-Agents: unity:<path to a build's executable> or unity:editor; one behaviour, "
            "one agent per env, visual obs -> image, vector obs -> vector.",
            ("mlagents",),
        ),
        EnvBackendSpec(
            "dataset",
            "wm_ray.envs.dataset:make",
            "Offline data as an env: dataset:<dir of wm-ray ingest> plays its episodes (no "
            "actions), so video-only families train on a data set alone.",
            ("offline",),
        ),
        EnvBackendSpec(
            "fake",
            "wm_ray.envs.fake:make",
            "Deterministic fake envs for tests and debugging (no dependencies).",
            ("dummy",),
        ),
    ]
}

AUTO_ORDER = ("atari", "mujoco", "robotics", "gymnasium")
"""Order in which ``auto`` asks backends whether they own an un-prefixed id (robotics before
gymnasium: once gymnasium_robotics is imported its ids are in gymnasium's registry)."""
LISTED_BACKENDS = ("gymnasium", "atari", "dmc", "mujoco", "brax", "robotics", "unity")
"""Backends whose ids ``list_envs`` shows by default (``fake`` only when asked for)."""
_VECTOR_FIELDS = ("id", "backend", "num_envs", "vector")


def get_env_backend_spec(name_or_alias: str) -> EnvBackendSpec:
    return lookup("env backend", ENV_BACKENDS, name_or_alias)


def list_env_backends() -> list[str]:
    return list(ENV_BACKENDS)


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
        names = list(LISTED_BACKENDS)
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
    for name in AUTO_ORDER:
        try:
            if backend_module(name).owns(env_id):
                return ENV_BACKENDS[name], env_id
        except ImportError:
            continue
    known: list[str] = []
    for name in LISTED_BACKENDS:
        try:
            known += backend_module(name).list_ids()
        except ImportError:
            continue
    close = nearest(env_id, known)
    hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
    raise UnknownNameError(
        f"unknown env id {env_id!r}; {hint}use a gymnasium id or 'backend:task' with a backend of "
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
    return _call_backend(spec, module, env_id, task, module.make, {}, kwargs)


def is_natively_batched(env_id: str, backend: str = "auto") -> bool:
    """Whether the env's backend steps a whole batch itself (defines ``make_vector``)."""
    spec, _ = resolve_env(env_id, backend)
    return hasattr(backend_module(spec.name), "make_vector")


def max_envs(env_id: str, backend: str = "auto") -> int | None:
    """How many envs of ``env_id`` can exist at once (None: no limit), from the backend's
    optional ``max_envs(task)`` (``unity:editor``: 1, the Editor serves one connection)."""
    spec, task = resolve_env(env_id, backend)
    limit = getattr(backend_module(spec.name), "max_envs", None)
    return None if limit is None else limit(task)


def make_batched_env(
    env_id: str, num_envs: int, seed: int, backend: str = "auto", **kwargs: Any
) -> VectorEnvLike:
    """A natively batched backend's vector env: ``make_vector(task, num_envs, seed, **options)``.

    It has :class:`~wm_ray.envs.vector.VectorEnv`'s interface (see ``VectorEnvLike``); options,
    unknown tasks and ``None`` values are handled as in :func:`make_env`.
    """
    spec, task = resolve_env(env_id, backend)
    module = backend_module(spec.name)
    if not hasattr(module, "make_vector"):
        raise ValueError(f"env backend {spec.name!r} has no natively batched envs (make_vector)")
    fixed = {"num_envs": num_envs, "seed": seed}
    return _call_backend(spec, module, env_id, task, module.make_vector, fixed, kwargs)


def _call_backend(
    spec: EnvBackendSpec,
    module: ModuleType,
    env_id: str,
    task: str,
    factory: Any,
    fixed: dict[str, Any],
    kwargs: dict[str, Any],
) -> Any:
    """``factory(task, **fixed, **options)``: refuses unused options, hints unknown tasks."""
    options = {k: v for k, v in kwargs.items() if v is not None}
    unused = sorted(set(options) - set(module.OPTIONS) - {"seed"})
    if unused:
        raise ValueError(
            f"option(s) {unused} do not apply to env backend {spec.name!r} ({env_id}); "
            f"it takes: {', '.join(sorted(module.OPTIONS | {'seed'}))}"
        )
    try:
        return factory(task, **fixed, **options)
    except RetiredIdError:
        raise
    except (KeyError, LookupError, ValueError) as err:
        ids = module.list_ids()
        wanted = f"{spec.name}:{task}"
        if env_id in ids or wanted in ids or task in ids:
            raise
        close = nearest(wanted, ids) or nearest(task, ids)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise UnknownNameError(f"unknown {spec.name} task {task!r}{hint} ({err})") from None


def env_options(env: EnvConfig) -> dict[str, Any]:
    """Backend options of an env config: every field but the vectorization ones.

    Fields left at ``None`` mean "backend default" and are not passed; ``pixels`` and
    ``image_size`` are passed only when they differ from the defaults, so a backend that has
    no use for an option only sees it when the user set it (and then refuses it clearly).
    """
    defaults = EnvConfig()
    options = {}
    for f in dataclasses.fields(env):
        value = getattr(env, f.name)
        if f.name in _VECTOR_FIELDS or value is None or value == getattr(defaults, f.name):
            continue
        options[f.name] = value
    return options


def make_configured_env(env: EnvConfig, **kwargs: Any) -> Any:
    """One env of an env config section (e.g. to read its spaces)."""
    return make_env(env.id, env.backend, **env_options(env), **kwargs)


__all__ = [
    "ENV_BACKENDS",
    "EnvBackendSpec",
    "backend_module",
    "env_options",
    "get_env_backend_spec",
    "is_natively_batched",
    "list_env_backends",
    "list_envs",
    "make_batched_env",
    "make_configured_env",
    "make_env",
    "max_envs",
    "resolve_env",
]
