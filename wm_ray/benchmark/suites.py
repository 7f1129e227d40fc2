"""Benchmark suites: their tasks and protocols (built-in, or a YAML file of tasks).

A suite is a list of tasks (env ids) and a protocol: presets and ``--set`` overrides applied on
top of the user's ``--configs`` / ``--set`` (steps, eval episodes, action repeat, sticky
actions, ...), how scores are normalised, and the target of the optimality gap.

Built-in suites:

- ``atari100k``: the 26 games of Atari 100k (Kaiser et al. 2020) with ``configs/atari100k.yaml``
  (100k agent steps = 400k frames, no sticky actions, 30 no-op starts, 100 eval episodes);
  scores human-normalised with the table of :data:`ATARI_TABLE`.
- ``dmc_vision``: the 20 DeepMind Control tasks of DreamerV3's visual control benchmark with
  ``configs/dmc_vision.yaml`` (64x64 images, action repeat 2), 500k agent steps = 1M env
  frames, 10 eval episodes; raw returns (optimality gap to 1000, the suite's maximum return).
- ``dmc_proprio``: the 18 tasks of DreamerV3's proprioceptive benchmark (the visual list
  without quadruped) with ``configs/dmc_proprio.yaml``, 250k agent steps = 500k env frames.

A YAML suite is a list of env ids, or a mapping with ``tasks`` (ids, or ``{id, name}``) and
optionally ``configs`` (presets), ``set`` (overrides: a list of ``key=value`` or a mapping),
``normalise`` (``atari`` for human-normalised Atari scores, else raw) and ``target`` (the
optimality gap's threshold in the reported units; none: no gap).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from wm_ray.config_io import ConfigError

ATARI100K_GAMES = (
    "Alien",
    "Amidar",
    "Assault",
    "Asterix",
    "BankHeist",
    "BattleZone",
    "Boxing",
    "Breakout",
    "ChopperCommand",
    "CrazyClimber",
    "DemonAttack",
    "Freeway",
    "Frostbite",
    "Gopher",
    "Hero",
    "Jamesbond",
    "Kangaroo",
    "Krull",
    "KungFuMaster",
    "MsPacman",
    "Pong",
    "PrivateEye",
    "Qbert",
    "RoadRunner",
    "Seaquest",
    "UpNDown",
)
DMC_PROPRIO_TASKS = (
    "acrobot-swingup",
    "cup-catch",
    "cartpole-balance",
    "cartpole-balance_sparse",
    "cartpole-swingup",
    "cartpole-swingup_sparse",
    "cheetah-run",
    "finger-spin",
    "finger-turn_easy",
    "finger-turn_hard",
    "hopper-hop",
    "hopper-stand",
    "pendulum-swingup",
    "reacher-easy",
    "reacher-hard",
    "walker-run",
    "walker-stand",
    "walker-walk",
)
DMC_VISION_TASKS = (*DMC_PROPRIO_TASKS, "quadruped-run", "quadruped-walk")
BUILTIN = ("atari100k", "dmc_vision", "dmc_proprio")


@dataclass(frozen=True)
class Task:
    """One task of a suite: the env id and the name its runs and table rows go by."""

    id: str
    name: str


@dataclass(frozen=True)
class Suite:
    """A suite's tasks and protocol.

    Args:
        name: ``atari100k``, ``dmc_vision``, ``dmc_proprio`` or the YAML file's stem.
        tasks: the tasks, in table order.
        configs: presets applied after the user's ``--configs``.
        overrides: ``key=value`` overrides applied after the user's ``--set``.
        normalise: ``atari`` (human-normalised) or ``raw``.
        target: the optimality gap's threshold (in normalised units for ``atari``); None: none.
        published: the name of the published comparison rows that share this protocol, or "".
    """

    name: str
    tasks: tuple[Task, ...]
    configs: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()
    normalise: str = "raw"
    target: float | None = None
    published: str = ""
    source: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """What ``benchmark.json`` records (read back by :func:`suite_from_dict`)."""
        return {
            "name": self.name,
            "tasks": [{"id": t.id, "name": t.name} for t in self.tasks],
            "configs": list(self.configs),
            "overrides": list(self.overrides),
            "normalise": self.normalise,
            "target": self.target,
            "published": self.published,
        }


def suite_from_dict(data: dict[str, Any]) -> Suite:
    tasks = tuple(Task(str(t["id"]), str(t["name"])) for t in data["tasks"])
    target = data.get("target")
    return Suite(
        name=str(data["name"]),
        tasks=tasks,
        configs=tuple(data.get("configs", ())),
        overrides=tuple(data.get("overrides", ())),
        normalise=str(data.get("normalise", "raw")),
        target=None if target is None else float(target),
        published=str(data.get("published", "")),
    )


def task_dirname(name: str) -> str:
    """A task name as a directory name: anything but letters, digits, ``._-`` becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "task"


def builtin_suite(name: str) -> Suite:
    """The built-in suite ``name`` (one of :data:`BUILTIN`)."""
    if name == "atari100k":
        tasks = tuple(Task(f"ALE/{g}-v5", g) for g in ATARI100K_GAMES)
        return Suite(name, tasks, ("atari100k",), (), "atari", 1.0, "atari100k")
    if name == "dmc_vision":
        tasks = tuple(Task(f"dmc:{t}", t) for t in DMC_VISION_TASKS)
        protocol = ("run.steps=500000", "eval.episodes=10")
        return Suite(name, tasks, ("dmc_vision",), protocol, "raw", 1000.0)
    if name == "dmc_proprio":
        tasks = tuple(Task(f"dmc:{t}", t) for t in DMC_PROPRIO_TASKS)
        protocol = ("run.steps=250000", "eval.episodes=10")
        return Suite(name, tasks, ("dmc_proprio",), protocol, "raw", 1000.0)
    raise ConfigError(f"unknown suite {name!r}: one of {', '.join(BUILTIN)}, or a YAML file")


def _override(key: str, value: Any) -> str:
    return f"{key}={value if isinstance(value, str) else json.dumps(value)}"


def _flat(values: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key, value in values.items():
        if isinstance(value, dict):
            out += _flat(value, f"{prefix}{key}.")
        else:
            out.append((prefix + key, value))
    return out


PROTOCOL_KEYS = ("env.", "run.steps", "eval.episodes")
"""What a suite's presets fix as its protocol (their other values, e.g. ``replay.capacity``,
are defaults the user's ``--set`` may change)."""


def protocol_overrides(suite: Suite) -> list[str]:
    """The suite's protocol as overrides applied after the user's ``--set``: its presets'
    :data:`PROTOCOL_KEYS` values, then its own overrides (so the protocol wins over
    ``--configs`` and ``--set``)."""
    from wm_ray.config_io import load_preset

    values = [
        _override(k, v)
        for name in suite.configs
        for k, v in _flat(load_preset(name))
        if k.startswith(PROTOCOL_KEYS) and k != "env.id"  # each task sets its own
    ]
    return [*values, *suite.overrides]


def _yaml_suite(path: Path) -> Suite:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"suite {path}: not valid YAML: {err}") from None
    if isinstance(data, list):
        data = {"tasks": data}
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), list) or not data["tasks"]:
        raise ConfigError(f"suite {path}: expected a list of env ids or a mapping with 'tasks'")
    unknown = set(data) - {"tasks", "configs", "set", "normalise", "target", "name"}
    if unknown:
        raise ConfigError(f"suite {path}: unknown keys {sorted(unknown)}")
    tasks = []
    for entry in data["tasks"]:
        if isinstance(entry, dict) and "id" in entry:
            tasks.append(Task(str(entry["id"]), str(entry.get("name", entry["id"]))))
        elif isinstance(entry, str):
            tasks.append(Task(entry, entry))
        else:
            raise ConfigError(f"suite {path}: a task is an env id or {{id, name}}, got {entry!r}")
    dirs = [task_dirname(t.name) for t in tasks]
    if len(set(dirs)) != len(dirs):
        raise ConfigError(f"suite {path}: two tasks share a name ({dirs}); give them names")
    sets = data.get("set") or []
    if isinstance(sets, dict):
        sets = [_override(k, v) for k, v in sets.items()]
    normalise = str(data.get("normalise", "raw"))
    if normalise not in ("raw", "atari"):
        raise ConfigError(f"suite {path}: normalise is 'raw' or 'atari', got {normalise!r}")
    if normalise == "atari":
        table = atari_table()["games"]
        missing = [t.name for t in tasks if t.name not in table]
        if missing:
            raise ConfigError(
                f"suite {path}: no human/random scores for {missing}; name Atari tasks by "
                f"game ({', '.join(sorted(table)[:4])}, ...)"
            )
    target = data.get("target", 1.0 if normalise == "atari" else None)
    return Suite(
        name=str(data.get("name", path.stem)),
        tasks=tuple(tasks),
        configs=tuple(str(c) for c in data.get("configs") or ()),
        overrides=tuple(str(s) for s in sets),
        normalise=normalise,
        target=None if target is None else float(target),
    )


def load_suite(value: str) -> Suite:
    """A built-in suite by name, or a YAML file of tasks by path."""
    if value in BUILTIN:
        return builtin_suite(value)
    path = Path(value)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"suite file {value} does not exist")
        return _yaml_suite(path)
    return builtin_suite(value)


def _data(name: str) -> dict[str, Any]:
    text = resources.files("wm_ray.benchmark").joinpath("data", name).read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def atari_table() -> dict[str, Any]:
    """``{"source", "games": {game: {"human", "random"}}}``: the human / random Atari scores."""
    return _data("atari_human_random.json")


def published() -> dict[str, Any]:
    """Published scores to compare with (``data/published.json``, from PUBLISHED_RESULTS.md)."""
    return _data("published.json")


ATARI_TABLE = "wm_ray/benchmark/data/atari_human_random.json"

__all__ = [
    "ATARI100K_GAMES",
    "BUILTIN",
    "DMC_PROPRIO_TASKS",
    "DMC_VISION_TASKS",
    "PROTOCOL_KEYS",
    "Suite",
    "Task",
    "atari_table",
    "builtin_suite",
    "load_suite",
    "protocol_overrides",
    "published",
    "suite_from_dict",
    "task_dirname",
]
