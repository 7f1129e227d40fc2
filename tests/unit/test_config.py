"""Config composition, overrides and errors (no Ray, no env libraries)."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from wm_ray import config as config_mod
from wm_ray.config import Config
from wm_ray.config_io import (
    ConfigError,
    build_config,
    diff,
    list_presets,
    load_config,
    parse_override,
    save_config,
    valid_keys,
)


def test_defaults_are_a_complete_frozen_config() -> None:
    config = Config()
    assert config.env.id == "CartPole-v1"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.run.seed = 3  # type: ignore[misc]


def test_presets_compose_in_order_then_overrides_win() -> None:
    config = build_config(["atari", "debug"], ["replay.capacity=12345", "run.seed=7"])
    assert config.env.id == "ALE/Pong-v5"  # from atari
    assert config.replay.batch_size == 4  # debug came after atari
    assert config.replay.capacity == 12345  # override after presets
    assert config.run.seed == 7
    later = build_config(["debug", "atari"])
    assert later.replay.seq_len == 64  # atari's seq_len wins when it comes last


def test_unknown_key_names_the_closest_valid_key() -> None:
    with pytest.raises(ConfigError) as err:
        build_config([], ["replay.capacty=10"])
    message = str(err.value)
    assert "replay.capacty" in message and "'replay.capacity'" in message
    assert "\n" not in message
    with pytest.raises(ConfigError, match="'replay"):
        build_config([], ["replai.capacity=10"])


def test_wrong_type_names_the_expected_type() -> None:
    with pytest.raises(ConfigError, match=r"replay\.capacity' expects int, got str 'abc'"):
        build_config([], ["replay.capacity=abc"])
    with pytest.raises(ConfigError, match="expects bool"):
        build_config([], ["env.pixels=3"])
    with pytest.raises(ConfigError, match="one of 'serial', 'subprocess'"):
        build_config([], ["env.vector=threads"])
    with pytest.raises(ConfigError, match="is a section"):
        build_config([], ["replay=3"])


def test_numbers_and_optionals_are_coerced_where_unambiguous() -> None:
    config = build_config(
        [], ["replay.samples_per_insert=1e-4", "env.time_limit=null", "env.action_repeat=2"]
    )
    assert config.replay.samples_per_insert == pytest.approx(1e-4)
    assert config.env.time_limit is None and config.env.action_repeat == 2
    assert parse_override("run.name=a=b") == {"run": {"name": "a=b"}}


def test_unknown_preset_suggests_the_nearest() -> None:
    with pytest.raises(ConfigError, match="did you mean 'atari'"):
        build_config(["atary"])


def test_every_shipped_preset_loads() -> None:
    presets = list_presets()
    assert {"atari", "atari100k", "debug", "resources/local"} <= set(presets)
    for name in presets:
        build_config([name])


def test_resolved_config_round_trips_through_the_run_dir(tmp_path: Path) -> None:
    config = build_config(["atari"], ["replay.ram_budget=1GiB", "env.num_envs=2"])
    save_config(config, tmp_path)
    assert load_config(tmp_path) == config
    assert diff(config, Config())["env.id"] == ("ALE/Pong-v5", "CartPole-v1")


def test_no_config_class_is_over_150_lines() -> None:
    import inspect

    for name, cls in vars(config_mod).items():
        if dataclasses.is_dataclass(cls) and isinstance(cls, type):
            assert len(inspect.getsource(cls).splitlines()) <= 150, name


def test_every_field_is_typed_and_reachable_by_a_dotted_key() -> None:
    keys = set(valid_keys())
    for section in dataclasses.fields(Config):
        cls = typing.get_type_hints(Config)[section.name]
        for f in dataclasses.fields(cls):
            assert f"{section.name}.{f.name}" in keys


def test_show_config_names_the_preset_that_set_each_value(capsys) -> None:  # type: ignore[no-untyped-def]
    from wm_ray.cli import main

    assert main(["show-config", "--configs", "iris", "atari", "--set", "iris.ac.horizon=7"]) == 0
    out = capsys.readouterr().out
    lines = {line.split(":")[0].strip(): line for line in out.splitlines()}
    assert lines["seq_len"].endswith("# atari, over iris"), lines["seq_len"]
    assert lines["batch_size"].endswith("# iris")
    # other families' sections have a 'horizon' too: read the one of the iris section
    section = out[out.index("\niris:") + 1 :].split("\n")
    iris = section[: next(i for i, line in enumerate(section[1:], 1) if not line[:1].isspace())]
    horizon = [line for line in iris if line.strip().startswith("horizon:")]
    assert len(horizon) == 1 and horizon[0].endswith("# --set iris.ac.horizon=7"), horizon
    assert "#" not in lines["capacity"], "a default value has no source"


def test_the_learner_benchmark_times_iris_at_its_own_sequence_length() -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from benchmarks.learner_bench import iris_config

    paper = iris_config("paper", "cpu")
    assert (paper.replay.batch_size, paper.replay.seq_len) == (64, 20)
    assert iris_config("debug", "cpu").replay.seq_len == 8


def test_actor_threads_spin_unless_passive_waiting_is_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``resources.omp_wait``: OpenMP's default waiting (no variable) unless ``passive``; an
    ``OMP_WAIT_POLICY`` of the environment wins (the test session sets one: tests/conftest.py)."""
    from wm_ray.actors.naming import actor_options

    def env(overrides: list[str]) -> dict[str, str]:
        options = actor_options(build_config([], overrides), "learner", 0, "", num_cpus=2)
        return dict(options["runtime_env"]["env_vars"])

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert env([]) == {}
    assert env(["resources.omp_wait=passive"]) == {"OMP_WAIT_POLICY": "PASSIVE"}
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert env(["resources.omp_wait=passive"]) == {"OMP_WAIT_POLICY": "ACTIVE"}
    with pytest.raises(ValueError, match="omp_wait"):
        build_config([], ["resources.omp_wait=busy"])


def test_actors_record_no_ray_task_events_unless_asked() -> None:
    """Task events grow the GCS by ~60 MiB an hour on the default run (benchmarks/soak.py):
    off by default, on with ``resources.task_events=true``."""
    from wm_ray.actors.naming import actor_options

    default = actor_options(build_config([], []), "learner", 0, "", num_cpus=1)
    assert default["enable_task_events"] is False and default["num_cpus"] == 1
    on = actor_options(build_config([], ["resources.task_events=true"]), "learner", 0, "")
    assert on["enable_task_events"] is True
