"""A safe CLI: bad values refused before anything exists, runs that never mix, presets that
say what they do, progress in every log, training faults that stop cleanly (issue 16)."""

from __future__ import annotations

import hashlib
import io
import json
import math
from pathlib import Path

import pytest

from wm_ray import metrics as M
from wm_ray.cli import main
from wm_ray.config_io import ConfigError, build_config, preset_conflicts
from wm_ray.loops.schedule import RunCounters, Schedule, TrainingDiverged, run_pacer
from wm_ray.metrics import Progress

FAKE = ["--env", "fake:vector-discrete"]


def _tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its sha256 (what must not change)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no error message"
    assert "Traceback" not in "\n".join(err)
    return err[-1]


# -- bad values -----------------------------------------------------------------------------


def test_steps_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("-5", "0", "ten"):
        with pytest.raises(SystemExit) as exit_:
            main(["train", "--steps", bad, *FAKE])
        assert exit_.value.code == 2
        assert "--steps" in _error(capsys)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("env.num_envs=0", "'env.num_envs' must be >= 1, got 0"),
        ("env.id=NoSuchEnv-v0", "unknown env id 'NoSuchEnv-v0'"),
        ("replay.batch_size=5", "replay.batch_size=5 must be divisible by resources.learners=2"),
        ("dreamer.ac.gamma=1.5", "'dreamer.ac.gamma' must be in [0, 1], got 1.5"),
        ("replay.capacity=.inf", "'replay.capacity' expects int"),
        ("env.sticky_actions=.nan", "'env.sticky_actions' must be a finite number"),
        ("replay.min_size=1e15", "'replay.min_size' expects int"),
        ("replay.min_size=1000000000000000000", "must stay below 2**48"),
        ("run.model=iris", "the iris family does not support observations of kind vector"),
    ],
)
def test_show_config_and_train_refuse_the_same_values_before_creating_anything(
    override: str, named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = ["--set", "resources.learners=2"] if "batch_size" in override else []
    env = [] if override.startswith("env.id") else FAKE
    assert main(["show-config", *env, "--set", override, *extra]) == 2
    assert named in _error(capsys)
    run_dir = tmp_path / "run"
    args = ["train", "--single-process", *env, "--run-dir", str(run_dir)]
    assert main([*args, "--set", override, *extra]) == 2
    assert named in _error(capsys)
    assert not run_dir.exists(), "a refused run left files behind"


def test_every_number_of_every_section_has_a_range_that_is_enforced() -> None:
    """Below the low end of its range, NaN and huge: refused, naming the key (every family's
    section included, so a new family's numbers are covered by its registry line)."""
    import dataclasses
    import typing

    from wm_ray.config import Config
    from wm_ray.config_checks import value_range

    checked = 0

    def walk(cls: type, prefix: str) -> None:
        nonlocal checked
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp, key = hints[f.name], prefix + f.name
            if dataclasses.is_dataclass(tp):
                walk(tp, key + ".")  # type: ignore[arg-type]
                continue
            numeric = tp in (int, float) or typing.get_args(tp)[:1] in ((int,), (float,))
            if not numeric:
                continue
            low, high = value_range(cls, f.name)
            bad = [1e300, float("nan")]
            if low is not None:
                bad.append(low - 1)
            if high is not None:
                bad.append(high + 1)
            for value in bad:
                with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
                    build_config([], [f"{key}={value!r}"])
            checked += 1

    walk(Config, "")
    assert checked > 100


# -- runs that never mix ----------------------------------------------------------------------


def test_train_into_a_run_directory_refuses_without_resume_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    (run / "checkpoints" / "step-000000000512").mkdir(parents=True)
    (run / "checkpoints" / "latest").write_text("step-000000000512")
    (run / "config.yaml").write_text("run:\n  steps: 512\n")
    (run / "metrics.jsonl").write_text('{"step": 0}\n')
    before = _tree(run)
    assert main(["train", "--single-process", *FAKE, "--run-dir", str(run)]) == 2
    message = _error(capsys)
    assert str(run) in message and "--resume" in message and "another --run-dir" in message
    assert "step-000000000512" in message
    assert _tree(run) == before


def test_a_resume_the_checkpoint_refuses_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    args = ["train", "--single-process", *FAKE, "--run-dir", str(run), "--configs", "size_debug"]
    quiet = ["logging.progress=false", "logging.tensorboard=false", "replay.chunk_len=16"]
    assert main([*args, "--steps", "64", "--set", "run.model=dreamer", *quiet]) == 0
    capsys.readouterr()
    before = _tree(run)
    assert sum(name.startswith("replay/") for name in before) >= 4  # chunk files
    # A smaller replay, which on its own would evict the oldest chunks as the run goes on, and a
    # model the checkpoint's weights do not fit: the refusal must not have evicted anything.
    smaller = ["replay.capacity=16", "dreamer.units=48"]
    bigger = ["--steps", "128", "--set", "run.model=dreamer", *smaller, *quiet]
    assert main([*args, *bigger, "--resume", "--allow-config-change"]) == 2
    message = _error(capsys)
    assert f"{run}/checkpoints/step-000000000064/agent" in message
    assert "the weights do not fit this agent" in message
    assert _tree(run) == before  # the run's config.yaml included: a plain --resume still works


def test_an_empty_directory_is_a_fine_run_directory(tmp_path: Path) -> None:
    from wm_ray.rundir.open import check_fresh_run_dir

    check_fresh_run_dir(tmp_path)  # no error
    (tmp_path / "notes.txt").write_text("mine")
    check_fresh_run_dir(tmp_path)  # files of the user's are not a run
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="is a file"):
        check_fresh_run_dir(tmp_path / "file")


# -- presets that say what they do --------------------------------------------------------------


def test_a_family_preset_alone_selects_its_family_and_says_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert build_config(["iris_debug"]).run.model == "iris"
    assert main(["show-config", "--no-check", "--configs", "iris_debug"]) == 0
    out = capsys.readouterr().out
    assert "model: iris  # iris_debug (selects the family it tunes)" in out


def test_a_family_preset_for_another_family_is_refused() -> None:
    with pytest.raises(ConfigError, match="preset 'iris_debug' tunes the iris family"):
        build_config(["dreamer", "iris_debug"])
    with pytest.raises(ConfigError, match="preset 'size_debug' tunes the dreamer family"):
        build_config(["iris", "size_debug"])
    with pytest.raises(ConfigError, match=r"--set run\.model=random"):
        build_config(["iris_debug"], ["run.model=random"])


def test_a_preset_that_replaces_another_ones_value_is_noted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert preset_conflicts(["iris", "atari"]) == [
        "replay.seq_len = 64 from 'atari' replaces 20 from 'iris'"
    ]
    assert preset_conflicts(["atari"], ["replay.seq_len=8"]) == []  # an override is deliberate
    assert main(["show-config", "--no-check", "--configs", "iris", "atari"]) == 0
    assert "note: replay.seq_len = 64 from 'atari' replaces 20 from 'iris'" in (
        capsys.readouterr().err
    )


# -- progress -----------------------------------------------------------------------------------


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_plain_progress_lines_when_stdout_is_not_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr(M.time, "perf_counter", lambda: clock[0])
    out, err = _Stream(tty=False), _Stream(tty=False)
    progress = Progress(20_000, start=10_000, every=30.0, stdout=out, stderr=err)
    for step in range(10_000, 14_001, 100):  # 100 steps per 1.5 s
        clock[0] += 1.5
        progress.tick(step, replayed=step * 32.0, ratio=32.0, updates=float(step), ret=9.5)
    progress.close()
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("started (resuming at 10,000): 10,000/20,000 env steps")
    assert len(lines) == 1 + 2  # one per 30 s of the 61.5 s
    assert "11,900/20,000 steps" in lines[1] and "13,900/20,000 steps" in lines[2]
    assert "env 67 fps" in lines[2]  # since the last line, not since step 0 of the run
    assert "train 2,133 fps" in lines[2] and "ratio 32" in lines[2] and "ret 9.5" in lines[2]
    assert "ETA" in lines[1]
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue()
    assert err.getvalue() == ""


def test_a_live_line_on_a_terminal_from_the_first_step(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(M.time, "perf_counter", lambda: clock[0])
    out, err = _Stream(tty=True), _Stream(tty=True)
    progress = Progress(1_000, every=30.0, live_every=2.0, stdout=out, stderr=err)
    clock[0] = 2.5
    progress.tick(4)  # the first vector step, long before any log step
    assert err.getvalue().startswith("\r4/1,000 steps")
    assert out.getvalue() == ""


def test_the_live_lines_fps_are_steady_when_steps_come_in_bursts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the Ray runtime's env steps arrive in bursts (256 steps, then the env workers wait for
    # the learner): a 2-second rate flickers between 0 and the burst's, a 20-second one not
    clock = [0.0]
    monkeypatch.setattr(M.time, "perf_counter", lambda: clock[0])
    out, err = _Stream(tty=True), _Stream(tty=True)
    progress = Progress(100_000, live_every=2.0, live_window=20.0, stdout=out, stderr=err)
    step = 0
    for tick in range(1, 61):  # 120 s: a 256-step burst every 8 s = 32 steps/s on average
        clock[0] = 2.0 * tick
        if tick % 4 == 0:
            step += 256
        progress.tick(step)
    lines = err.getvalue().split("\r")[1:]
    rates = [float(line.split("env ")[1].split(" fps")[0].replace(",", "")) for line in lines]
    assert len(rates) == 60
    assert all(25 <= rate <= 40 for rate in rates[20:])  # after the first window: ~32 each
    assert min(rates[20:]) > 0


def test_metrics_lines_also_come_by_time(monkeypatch: pytest.MonkeyPatch) -> None:
    from wm_ray.loops import schedule as S

    clock = [0.0]
    monkeypatch.setattr(S.time, "perf_counter", lambda: clock[0])
    config = build_config(["debug"], ["logging.every=100000", "logging.seconds=60"])
    schedule = Schedule(config, RunCounters(), run_pacer(config))
    schedule.counters.env_steps = 64
    assert not schedule.log_due()
    clock[0] = 61.0
    assert schedule.log_due()
    schedule.line(64, 0, 64)
    assert not schedule.log_due()


# -- training faults ------------------------------------------------------------------------------


def test_non_finite_updates_are_counted_left_out_and_stop_the_run() -> None:
    config = build_config(["debug"], ["run.nonfinite_limit=3"])
    schedule = Schedule(config, RunCounters(), run_pacer(config))
    good = {M.loss(M.WORLD_MODEL): 1.0, M.grad_norm(M.WORLD_MODEL): 2.0}
    bad = {M.loss(M.WORLD_MODEL): math.nan, M.grad_norm(M.WORLD_MODEL): math.inf}
    schedule.trained(good)
    schedule.trained(bad)
    schedule.trained(bad)
    schedule.trained(good)  # a good one resets the run of bad ones
    schedule.trained(bad)
    schedule.trained(bad)
    line = schedule.line(100, 10, 100)
    assert line[M.NONFINITE_UPDATES] == 4
    assert line[M.loss(M.WORLD_MODEL)] == 1.0  # the NaNs are not in the means
    with pytest.raises(TrainingDiverged, match="3 learner updates in a row"):
        schedule.trained(bad)


def test_a_diverging_run_stops_with_a_clear_message_and_its_last_good_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    lr = "dreamer.opt.model_lr=1e12 dreamer.opt.actor_lr=1e12 dreamer.opt.critic_lr=1e12"
    args = ["train", "--single-process", "--quiet", "--configs", "debug", "size_debug", *FAKE]
    args += ["--run-dir", str(run), "--steps", "4096", "--set", *lr.split()]
    args += ["run.nonfinite_limit=8", "run.checkpoint_every=64", "replay.min_size=32"]
    args += ["logging.every=32"]
    assert main(args) == 3
    message = _error(capsys)
    assert "8 learner updates in a row had non-finite losses or gradients" in message
    latest = (run / "checkpoints" / "latest").read_text().strip()
    assert f"the last good checkpoint is {latest}" in message
    assert "--resume" in message
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines, "the metrics up to the stop are kept"


# -- env faults -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ("nan", "'vector' with 1 NaN or inf values"),
        ("inf", "'vector' with 1 NaN or inf values"),
        ("shape", "'vector' of shape (3,)"),
        ("dtype", "dtype float64"),
        ("reward", "reward nan"),
    ],
)
def test_an_env_that_returns_bad_observations_fails_with_one_line(bad: str, named: str) -> None:
    import gymnasium as gym
    import numpy as np

    from wm_ray.envs.vector import VectorEnv
    from wm_ray.envs.vector_worker import EnvFailure

    class BadEnv(gym.Env):  # type: ignore[type-arg]
        observation_space = gym.spaces.Dict(
            {"vector": gym.spaces.Box(-1, 1, (4,), dtype=np.float32)}
        )
        action_space = gym.spaces.Discrete(2)

        def reset(self, *, seed=None, options=None):  # type: ignore[no-untyped-def]
            return {"vector": np.zeros(4, np.float32)}, {}

        def step(self, action):  # type: ignore[no-untyped-def]
            vector = np.zeros(4, np.float32)
            reward = math.nan if bad == "reward" else 0.0
            if bad in ("nan", "inf"):
                vector[2] = float(bad)
            elif bad == "shape":
                vector = vector[:3]
            elif bad == "dtype":
                vector = vector.astype(np.float64)
            return {"vector": vector}, reward, False, False, {}

    venv = VectorEnv(lambda i: BadEnv(), num_envs=1)
    try:
        venv.reset()
        with pytest.raises(EnvFailure) as err:
            for _ in range(10):
                venv.step(np.zeros(1, np.int64))
        assert named in str(err.value) and "\n" not in str(err.value)
    finally:
        venv.close()


def test_tensorboard_events_read_back_and_a_full_disk_raises_in_the_caller(
    tmp_path: Path,
) -> None:
    """The TensorBoard sink writes events TensorBoard's own loader reads back (finite scalars
    only), and a failed write raises ``OSError`` where the loop can catch it, instead of a
    traceback from a writer thread (what ``SummaryWriter`` does on a full disk)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sink = M.TensorBoardSink(tmp_path / "tb")
    sink.write({"step": 7, "train/loss/x": 1.5, "note": "text", "bad": math.nan})
    sink.write({"step": 9, "train/loss/x": 0.5})
    sink.close()
    board = EventAccumulator(str(tmp_path / "tb"))
    board.Reload()
    assert board.Tags()["scalars"] == ["train/loss/x"]
    assert [(e.step, e.value) for e in board.Scalars("train/loss/x")] == [(7, 1.5), (9, 0.5)]

    sink = M.TensorBoardSink(tmp_path / "tb2")
    sink._file.close()
    # /dev/full: a real device whose every write fails with ENOSPC, like a full disk
    with open("/dev/full", "wb", buffering=0) as full:
        sink._records._writer = full
        with pytest.raises(OSError, match="No space left"):
            sink.write({"step": 1, "train/loss/x": 1.0})
