"""Build a :class:`~wm_ray.config.Config` from presets and overrides, and write it out.

Order of application: dataclass defaults, then each preset in ``configs/`` in the order given
(``--configs dreamer atari debug``), then ``--set section.key=value`` overrides. Every key is
checked: an unknown key is an error naming the closest valid key, a value of the wrong type is
an error naming the expected type. Nothing is dropped silently.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from wm_ray.config import Config
from wm_ray.config_checks import ConfigError, check_range, family_choice


def config_dirs() -> list[Path]:
    """Where presets are looked up: ``$WM_RAY_CONFIGS``, ``./configs``, the repo's ``configs``."""
    dirs = [Path(p) for p in os.environ.get("WM_RAY_CONFIGS", "").split(os.pathsep) if p]
    dirs += [Path.cwd() / "configs", Path(__file__).resolve().parent.parent / "configs"]
    seen: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in seen:
            seen.append(d.resolve())
    return seen


def list_presets() -> list[str]:
    """Preset names, e.g. ``atari`` or ``resources/local``."""
    names = {
        str(path.relative_to(root).with_suffix(""))
        for root in config_dirs()
        for path in root.rglob("*.yaml")
    }
    return sorted(names)


def load_preset(name: str) -> dict[str, Any]:
    """The nested mapping of preset ``name``: a name in ``configs/`` (resource presets also by
    their short name: ``single_gpu`` is ``resources/single_gpu``) or a path to a YAML file."""
    path = Path(name)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        found = [
            d / f"{stem}.yaml"
            for stem in (name, f"resources/{name}")
            for d in config_dirs()
            if (d / f"{stem}.yaml").is_file()
        ]
        if not found:
            close = difflib.get_close_matches(name, list_presets(), n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
            raise ConfigError(
                f"unknown preset {name!r}{hint} (presets: {', '.join(list_presets()) or 'none'})"
            )
        path = found[0]
    return read_yaml(path, "preset")


def read_yaml(path: Path, what: str, text: str | None = None) -> dict[str, Any]:
    """The mapping in YAML file ``path`` (or ``text`` read from it); a file that cannot be read,
    is not YAML or is not a mapping is a one-line :class:`ConfigError` naming it and where."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8") if text is None else text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{what} {str(path)!r} is not valid YAML{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{what} {str(path)!r} cannot be read: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ConfigError(
            f"{what} {str(path)!r} must be a mapping of sections (section: {{key: value}}), "
            f"got {type(data).__name__}"
        )
    return data


def valid_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """All dotted keys of a sections included (``replay``, ``replay.capacity``)."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        keys.append(key)
        if dataclasses.is_dataclass(hints[f.name]):
            keys += valid_keys(hints[f.name], key + ".")
    return keys


def _unknown(key: str, cls: type) -> ConfigError:
    candidates = valid_keys(cls)
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    if not close:  # compare the last part only, e.g. 'capacty' -> 'replay.capacity'
        leaf = {k.rsplit(".", 1)[-1]: k for k in candidates}
        close = [leaf[m] for m in difflib.get_close_matches(key.rsplit(".", 1)[-1], leaf, n=1)]
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"unknown config key '{key}'{hint}")


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return " or ".join(
            "None" if a is type(None) else _type_name(a) for a in typing.get_args(tp)
        )
    return getattr(tp, "__name__", str(tp))


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp`` (allowing int -> float, str -> number)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if isinstance(tp, types.UnionType) or origin is typing.Union:
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(key, value, arg)
            except ConfigError:
                pass
    elif origin is typing.Literal:
        if value in args:
            return value
    elif origin in (tuple, list):
        if isinstance(value, (list, tuple)):
            inner = args[0] if args else Any
            items = [coerce(f"{key}[{i}]", v, inner) for i, v in enumerate(value)]
            return tuple(items) if origin is tuple else items
    elif tp is Any:
        return value
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                pass
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    elif dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
        return value
    shown = f"{type(value).__name__} {value!r}" if value is not None else "None"
    raise ConfigError(f"config key '{key}' expects {_type_name(tp)}, got {shown}")


def _apply(obj: Any, updates: Mapping[str, Any], prefix: str, root: type) -> Any:
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    changes: dict[str, Any] = {}
    for name, value in updates.items():
        key = prefix + str(name)
        if not isinstance(name, str) or name not in names:
            raise _unknown(key, root)
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, Mapping):
                raise ConfigError(
                    f"config key '{key}' is a section; give a mapping or set '{key}.<field>'"
                )
            changes[name] = _apply(changes.get(name, getattr(obj, name)), value, key + ".", root)
        else:
            changes[name] = coerce(key, value, tp)
            if isinstance(changes[name], (list, tuple)):
                for item in changes[name]:
                    check_range(key, item, type(obj), name)
            else:
                check_range(key, changes[name], type(obj), name)
    return dataclasses.replace(obj, **changes)


def apply(config: Config, updates: Mapping[str, Any]) -> Config:
    """``config`` with a nested mapping of updates applied (validated)."""
    return _apply(config, updates, "", Config)


def parse_override(text: str) -> dict[str, Any]:
    """``'replay.capacity=200000'`` -> ``{'replay': {'capacity': 200000}}`` (YAML value)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    nested: dict[str, Any] = {}
    node = nested
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def _layers(
    presets: Iterable[str],
    overrides: Iterable[str],
    env_id: str | None,
    base: Config | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """``(source, nested updates)`` in the order they apply: presets (by name), ``--set k=v``
    overrides, the ``--env`` shortcut; first, when a preset tunes a family that nothing
    selects, the selection of that family (:func:`wm_ray.config_checks.family_choice`)."""
    layers = [(name, load_preset(name)) for name in presets]
    layers += [(f"--set {text}", parse_override(text)) for text in overrides]
    if env_id:
        layers.append((f"--env {env_id}", {"env": {"id": env_id}}))
    choice = family_choice(layers, base)
    return [choice, *layers] if choice else layers


def preset_conflicts(
    presets: Iterable[str], overrides: Iterable[str] = (), env_id: str | None = None
) -> list[str]:
    """One line per key that two presets set to different values (the later one wins):
    ``replay.seq_len = 64 from 'atari' replaces 20 from 'iris'``. Overrides are deliberate
    and not listed."""
    seen: dict[str, tuple[str, Any]] = {}
    notes = []
    for source, updates in _layers(presets, overrides, env_id):
        if source.startswith("--") or source.endswith("(selects the family it tunes)"):
            continue
        for key, value in _leaves(updates):
            if key in seen and seen[key][1] != value:
                earlier, old = seen[key]
                notes.append(f"{key} = {value!r} from {source!r} replaces {old!r} from {earlier!r}")
            seen[key] = (source, value)
    return notes


def build_config(
    presets: Iterable[str] = (),
    overrides: Iterable[str] = (),
    base: Config | None = None,
    env_id: str | None = None,
) -> Config:
    """Defaults (or ``base``) + presets in order + ``--set`` overrides (+ ``--env`` shortcut)."""
    config = base or Config()
    for source, updates in _layers(presets, overrides, env_id, base):
        try:
            config = apply(config, updates)
        except ConfigError as err:
            if source.startswith("--"):
                raise
            raise ConfigError(f"in preset {source!r}: {err}") from None
    return config


def _leaves(updates: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in updates.items():
        if isinstance(value, Mapping):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def config_sources(
    presets: Iterable[str] = (), overrides: Iterable[str] = (), env_id: str | None = None
) -> dict[str, list[str]]:
    """Which preset or override set each key: ``{dotted key: [sources, last one wins]}``.

    A key two presets set lists both, so a preset-order surprise is visible (``--configs iris
    atari``: ``replay.seq_len`` is ``atari``'s 64, over ``iris``'s 20).
    """
    out: dict[str, list[str]] = {}
    for source, updates in _layers(presets, overrides, env_id):
        for key, _ in _leaves(updates):
            out.setdefault(key, []).append(source)
    return out


def annotate_yaml(text: str, sources: Mapping[str, list[str]]) -> str:
    """``to_yaml`` output with a ``# <source>`` comment on every line a preset or override set
    (``# iris_debug, over iris`` when several did; the last one named set the value)."""
    out: list[str] = []
    stack: list[str] = []
    for line in text.splitlines():
        stripped = line.lstrip(" ")
        indent = (len(line) - len(stripped)) // 2
        key, sep, _ = stripped.partition(":")
        if sep and not stripped.startswith("- ") and key.isidentifier():
            del stack[indent:]
            stack.append(key)
            who = sources.get(".".join(stack))
            if who:
                shown = who[-1] + (
                    f", over {', '.join(reversed(who[:-1]))}" if len(who) > 1 else ""
                )
                line = f"{line}  # {shown}"
        out.append(line)
    return "\n".join(out) + "\n"


def to_dict(config: Any) -> dict[str, Any]:
    """A plain nested dict (tuples become lists), fit for YAML or JSON."""
    return _plain(dataclasses.asdict(config))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def to_yaml(config: Config) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def from_dict(data: Mapping[str, Any]) -> Config:
    """A config from a (saved) nested mapping, validated like a preset."""
    return apply(Config(), data)


def save_config(config: Config, run_dir: str | Path) -> Path:
    """Write the resolved config to ``<run_dir>/config.yaml`` atomically."""
    path = Path(run_dir) / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(to_yaml(config))
    os.replace(tmp, path)
    return path


def load_config(run_dir: str | Path) -> Config:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"no config.yaml in run directory {str(run_dir)!r}")
    return from_dict(read_yaml(path, "run config"))


def diff(a: Config, b: Config) -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose values differ between two configs: ``{key: (a_value, b_value)}``."""
    out: dict[str, tuple[Any, Any]] = {}

    def walk(x: Mapping[str, Any], y: Mapping[str, Any], prefix: str) -> None:
        for k in x:
            if isinstance(x[k], dict):
                walk(x[k], y[k], f"{prefix}{k}.")
            elif x[k] != y[k]:
                out[prefix + k] = (x[k], y[k])

    walk(to_dict(a), to_dict(b), "")
    return out
