"""The checks of config values beyond their types: each number's range, and presets that tune
a family the run does not use. :mod:`wm_ray.config_io` applies them while it builds a config;
the checks that need the env or several sections are :mod:`wm_ray.validate`'s.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wm_ray.config import Config


class ConfigError(ValueError):
    """A config problem, with a one-line message fit for the terminal."""


NUMBER_LIMIT = 2**48
"""No number in a config reaches this (nor its negative): a huge value is a typo, and a
bigger int would overflow the int64 arrays it ends up in."""


def value_range(cls: type, name: str) -> tuple[float | None, float | None]:
    """The valid ``(low, high)`` (inclusive, None: unbounded) of number field ``name`` of the
    config class ``cls``: its ``RANGES`` entry, else a count or size whose default is a
    positive int is at least 1, a number whose default is negative has no lower bound, and
    every other number is at least 0."""
    explicit = getattr(cls, "RANGES", {}).get(name)
    if explicit is not None:
        return explicit
    default = next((f.default for f in dataclasses.fields(cls) if f.name == name), None)
    if isinstance(default, bool):
        return (None, None)
    if isinstance(default, int) and default >= 1:
        return (1, None)
    if isinstance(default, (int, float)) and default < 0:
        return (None, None)
    return (0, None)


def check_range(key: str, value: Any, cls: type, name: str) -> None:
    """Refuse a number outside its field's :func:`value_range` (or not finite), naming the key,
    the value and the valid range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config key '{key}' must be a finite number, got {value}")
    low, high = value_range(cls, name)
    if abs(value) >= NUMBER_LIMIT:
        raise ConfigError(
            f"config key '{key}' is out of range: {value} (numbers must stay below 2**48)"
        )
    if (low is not None and value < low) or (high is not None and value > high):
        if high is None:
            valid = f">= {low}"
        elif low is None:
            valid = f"<= {high}"
        else:
            valid = f"in [{low}, {high}]"
        raise ConfigError(f"config key '{key}' must be {valid}, got {value}")


def family_choice(
    layers: list[tuple[str, dict[str, Any]]], base: Config | None
) -> tuple[str, dict[str, Any]] | None:
    """A preset that tunes a family's section (``iris_debug``: ``iris.*``) belongs to that
    family. When no preset, override or base config sets ``run.model``, the family the
    presets tune is selected (returned as a layer that sets it, named after the preset);
    when the model set is another family, the preset would do nothing: :class:`ConfigError`."""
    from wm_ray.registry import UnknownNameError, config_sections, get_model_spec

    families = {name for name, _ in config_sections()}
    tuned = [
        (source, sorted(families & set(updates)))
        for source, updates in layers
        if not source.startswith("--") and families & set(updates)
    ]
    if not tuned:
        return None
    model_source, model = None, base.run.model if base is not None else None
    for source, updates in layers:
        run = updates.get("run")
        if isinstance(run, Mapping) and "model" in run:
            model_source, model = source, run["model"]
    if model is None:
        chosen = sorted({family for _, names in tuned for family in names})
        if len(chosen) > 1:
            raise ConfigError(
                f"presets {', '.join(repr(s) for s, _ in tuned)} tune the families "
                f"{' and '.join(chosen)}; select one with --set run.model=NAME"
            )
        return (f"{tuned[0][0]} (selects the family it tunes)", {"run": {"model": chosen[0]}})
    try:
        name = get_model_spec(str(model)).name
    except UnknownNameError:
        return None  # build_config reports the unknown model
    for source, names in tuned:
        if name not in names:
            where = (
                "of the run being resumed"
                if model_source is None
                else model_source
                if model_source.startswith("--")
                else f"from preset {model_source!r}"
            )
            raise ConfigError(
                f"preset {source!r} tunes the {' and '.join(names)} family but run.model is "
                f"{model!r} ({where}), so it would do nothing; select {names[0]} (--configs "
                f"{names[0]}, or --set run.model={names[0]}) or drop {source!r}"
            )
    return None


__all__ = ["NUMBER_LIMIT", "ConfigError", "check_range", "family_choice", "value_range"]
