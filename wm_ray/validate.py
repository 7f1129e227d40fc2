"""Everything a run is checked for before anything of it exists: :func:`validate_run`.

``wm-ray train`` (both loops, and the Python ``train`` functions), ``wm-ray show-config`` and
``wm-ray submit`` run the same checks, so a config that ``show-config`` prints is one that
``train`` accepts, and a refused run leaves nothing on disk:

- each value's type and range (already when the config is built: :mod:`wm_ray.config_io`);
- the runtime's rules beyond one value's type and range (``replay.batch_size`` divisible by
  ``resources.learners``, a ``replay.tolerance`` under which the run cannot stall, a
  ``replay.ram_budget`` with a unit, ``run.device`` and ``run.name`` forms);
- the family's own rules (its registry line's ``validator``);
- envs at once: a backend that serves a limited number (``unity:editor``: one) is not asked
  for more by the run's env workers, vector envs and evaluation (:func:`check_env_count`),
  before any env is made;
- the env: its id resolves to an installed backend and one env can be made with these
  options (its spaces are returned);
- the family's capabilities against those spaces (:func:`wm_ray.registry.check_supported`);
- ``replay.preload``'s data sets against those spaces (:func:`check_preload`).

Every failure is a :class:`~wm_ray.config_io.ConfigError` (or the registry's
``UnknownNameError`` / ``UnsupportedError``): a one-line message naming the value and what is
valid.
"""

from __future__ import annotations

import re
from typing import Any

from wm_ray.config import Config
from wm_ray.config_io import ConfigError
from wm_ray.registry import UnknownNameError, check_supported, get_model_spec, import_object
from wm_ray.replay.limiter import Pacer
from wm_ray.replay.storage import parse_bytes


def check_runtime(config: Config) -> None:
    """The cross-field rules of the runtime sections (both loops)."""
    r, replay, run = config.resources, config.replay, config.run
    try:
        parse_bytes(replay.ram_budget, "replay.ram_budget")
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", run.device):
        raise ConfigError(f"run.device={run.device!r}: use auto, cpu, cuda, cuda:N or mps")
    if run.name and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", run.name):
        raise ConfigError(
            f"run.name={run.name!r}: use up to 100 letters, digits, '_', '.' or '-' (it names "
            "the run directory and the run's actors), starting with a letter or digit"
        )
    if replay.batch_size % r.learners:
        raise ConfigError(
            f"replay.batch_size={replay.batch_size} must be divisible by resources.learners="
            f"{r.learners} (each learner trains an equal share of every batch)"
        )
    # ToleranceError for a set tolerance that could stall (the pacer of both loops)
    Pacer.of(replay, replay.chunk_len * config.env.num_envs, r.env_workers)


def envs_at_once(config: Config, single_process: bool) -> list[tuple[str, int]]:
    """The parts of a run that hold envs together: ``(what, envs)``. Ray: every env worker's
    vector env and every eval worker's (made at the start, whether or not the run evaluates);
    single process: the training vector env, and the evaluation's when it evaluates."""
    env, r, ev = config.env, config.resources, config.eval
    if single_process:
        parts = [(f"env.num_envs={env.num_envs}", env.num_envs)]
        if ev.episodes > 0:
            parts.append(
                (f"eval.num_envs={ev.num_envs} (eval.episodes={ev.episodes})", ev.num_envs)
            )
        return parts
    workers = f"resources.env_workers={r.env_workers} x env.num_envs={env.num_envs}"
    parts = [(workers, r.env_workers * env.num_envs)]
    if r.eval_workers > 0:
        evals = f"resources.eval_workers={r.eval_workers} x eval.num_envs={ev.num_envs}"
        parts.append((evals, r.eval_workers * ev.num_envs))
    return parts


def check_env_count(config: Config, single_process: bool = False) -> None:
    """A backend that serves at most N envs at once (its ``max_envs``) is not asked for more,
    before any env is made (``unity:editor``: each connection needs Play pressed)."""
    from wm_ray.envs.registry import max_envs

    env = config.env
    try:
        limit = max_envs(env.id, env.backend)
    except (ImportError, UnknownNameError):
        return  # the env check that follows names the problem
    parts = envs_at_once(config, single_process)
    wanted = sum(n for _, n in parts)
    if limit is None or wanted <= limit:
        return
    if single_process:
        fix = "env.num_envs=1 eval.episodes=0"
    else:
        fix = "env.num_envs=1 resources.env_workers=1 resources.eval_workers=0"
    runtime = "single-process" if single_process else "Ray"
    raise ConfigError(
        f"env.id={env.id!r} serves at most {limit} env(s) at a time, but this {runtime} run "
        f"would hold {wanted}: {' + '.join(what for what, _ in parts)}; use --set {fix} (no "
        "evaluation during training; evaluate afterwards with wm-ray eval)"
    )


def env_spaces_checked(config: Config) -> tuple[Any, Any]:
    """``(observation space, action space)`` of one env of ``config.env``; an env that cannot
    be made (unknown id, backend not installed, bad option) is a one-line error."""
    from wm_ray.factory import env_spaces

    env = config.env
    try:
        return env_spaces(config)
    except UnknownNameError:
        raise
    except ImportError as err:
        from wm_ray.envs.registry import resolve_env

        backend = resolve_env(env.id, env.backend)[0].name
        raise ConfigError(
            f"env.id={env.id!r} needs the {backend} backend, which is not installed "
            f"({err.name or err}); pip install 'wm_ray[{backend}]'"
        ) from None
    except (ValueError, TypeError, KeyError, RuntimeError, OSError) as err:
        shown = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"env.id={env.id!r} could not be made: {shown}") from None


def validate_run(config: Config, single_process: bool = False) -> tuple[Any, Any]:
    """Check ``config`` as ``train`` would before it creates anything (``single_process``:
    as ``wm-ray train --single-process``, else as the Ray runtime); returns the env's
    ``(observation space, action space)``."""
    spec = get_model_spec(config.run.model)
    check_runtime(config)
    if spec.validator:
        import_object(spec.validator)(config)
    check_env_count(config, single_process)
    spaces = env_spaces_checked(config)
    check_supported(spec, config, *spaces)
    check_preload(config, *spaces)
    return spaces


def check_preload(config: Config, obs_space: Any, act_space: Any) -> None:
    """``replay.preload``'s data sets exist and their steps fit the env's (image shape,
    observation keys, action form unless the data set has no action labels)."""
    from wm_ray.replay import dataset

    roots = dataset.preload_paths(config.replay.preload)
    if roots:
        problem = dataset.check_preload(roots, dataset.env_spec(obs_space, act_space))
        if problem:
            raise ConfigError(problem)


__all__ = [
    "check_env_count",
    "check_preload",
    "check_runtime",
    "env_spaces_checked",
    "validate_run",
]
