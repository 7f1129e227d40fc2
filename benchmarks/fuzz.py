"""Fuzzing every entry point of ``wm-ray``: generated bad (and good) inputs, each of which must
end in a one-line error naming the value and what is valid, or in a correct run — never a
traceback from inside torch, Ray or numpy — and must leave what was on disk as it was.

Kinds of cases (all generated from one seed):

- ``cli``: ``wm-ray`` argument vectors: subcommands, options, their values and junk;
- ``set``: ``--set key=value`` over every config key of every family (wrong types,
  out-of-range, unknown keys, unicode, huge numbers, YAML oddities), through ``show-config``,
  which runs the same checks as ``train`` (``wm_ray.validate``);
- ``preset``: preset files (YAML syntax errors, wrong nesting, unknown sections);
- ``observation``: observations and rewards from envs (NaN, inf, wrong shape, dtype, keys);
- ``rundir``: run directories (missing, a file, read-only, a full disk: small tmpfs mounts
  where this process may mount, else skipped and counted as such) for ``train`` and ``eval``;
- ``checkpoint``: checkpoints and replay chunk files of a real tiny run (truncated,
  bit-flipped, swapped between runs) under ``eval`` and ``train --resume``.

The first four are fast (in-process, ~ms each); the last two train tiny real runs
(``--single-process``, seconds each). ``tests/unit/test_fuzz.py`` runs a seeded subset in CI;
the long mode::

    python -m benchmarks.fuzz --cases 1500 --seed 0 \\
        --out benchmarks/results/cpu-2core/fuzz.json

writes the figures (cases per kind, outcomes, cases that ended in a traceback: must be 0).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FAKE = ["--env", "fake:vector-discrete"]
TINY = ["--configs", "debug", "size_debug", *FAKE, "--quiet", "--single-process"]
TINY_SET = ["replay.min_size=32", "eval.episodes=1", "eval.every=0", "logging.every=64"]
JUNK = [
    "",
    " ",
    "-",
    "--",
    "=",
    "\u00e9t\u00e9",
    "\u2603",
    "\U0001f600",
    "\x00",
    "a" * 300,
    "1e999",
    "-1",
    "0",
    "nan",
    "inf",
    "null",
    "~",
    "[1, 2",
    "{a: 1}",
    "!!python/object:os.system",
    "true",
    "3.5",
    "99999999999999999999999",
    "../../etc",
    "/dev/null",
]
VALUES = [
    *JUNK,
    "-5",
    "1",
    "2",
    "1024",
    "0.5",
    "-0.5",
    "1.5",
    "1e-300",
    "1e300",
    "2**60",
    "[]",
    "[1]",
    "{}",
    "yes",
    "False",
    "'quoted'",
    "ALE/Pong-v5",
    "CartPole-v1",
    "fake:vector-discrete",
    "dmc:nosuch-task",
    "serial",
    "fp16",
]


@dataclass
class Outcome:
    kind: str
    case: str
    result: str  # "ok" (a correct run or output), "error" (one clean line), "skipped", "bad"
    detail: str = ""


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)

    @property
    def bad(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.result == "bad"]

    def summary(self) -> dict[str, Any]:
        kinds: dict[str, Counter[str]] = {}
        for o in self.outcomes:
            kinds.setdefault(o.kind, Counter())[o.result] += 1
        return {
            "cases": len(self.outcomes),
            "tracebacks_or_damage": len(self.bad),
            "by_kind": {k: dict(v) for k, v in sorted(kinds.items())},
            "bad_cases": [o.__dict__ for o in self.bad[:50]],
        }


# -- running one CLI case -------------------------------------------------------------------------


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its sha256: what a case must not change."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def run_cli(argv: list[str]) -> tuple[int, str, str, str]:
    """``(exit code, stdout, stderr, escaped exception)`` of ``wm-ray argv`` run in-process."""
    from wm_ray.cli import main

    out, err = io.StringIO(), io.StringIO()
    escaped = ""
    in_threads: list[str] = []  # an exception that ends a thread prints a traceback: bad too
    hook = threading.excepthook
    threading.excepthook = lambda a: in_threads.append(f"{a.exc_type.__name__}: {a.exc_value}")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 2
            except BaseException as exc:  # what must never happen: an exception out of main
                code, escaped = -1, f"{type(exc).__name__}: {exc}"
    finally:
        threading.excepthook = hook
    if in_threads and not escaped:
        escaped = f"in a thread: {in_threads[0]}"
    return code, out.getvalue(), err.getvalue(), escaped


def judge(kind: str, argv: list[str], code: int, err: str, escaped: str) -> Outcome:
    """A CLI outcome: exit 0, or exit 2/3/4 with its last stderr line a one-line error."""
    shown = " ".join(argv)[:300]
    if escaped:
        return Outcome(kind, shown, "bad", escaped[:500])
    if "Traceback (most recent call last)" in err:
        return Outcome(kind, shown, "bad", err[-500:])
    if code == 0:
        return Outcome(kind, shown, "ok")
    lines = [line for line in err.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    clean = code in (2, 3, 4) and "error:" in last
    return Outcome(kind, shown, "error" if clean else "bad", last[:300] or f"exit {code}")


# -- generators -----------------------------------------------------------------------------------


def _keys() -> list[str]:
    from wm_ray.config_io import valid_keys

    return valid_keys()


def set_cases(rng: random.Random, n: int) -> Iterator[list[str]]:
    """``show-config`` with 1-3 generated ``--set`` overrides (on the fake env, so the env
    check is real but cheap; a case may set ``env.id`` itself)."""
    keys = _keys()
    for _ in range(n):
        overrides = []
        for _ in range(rng.randint(1, 3)):
            roll = rng.random()
            if roll < 0.75:
                key = rng.choice(keys)
            elif roll < 0.9:
                key = rng.choice(keys) + rng.choice(["x", ".sub", "_", "\u00e9"])
            else:
                key = rng.choice(JUNK) or "k"
            overrides.append(f"{key}={rng.choice(VALUES)}")
        yield ["show-config", "--plain", *FAKE, "--set", *overrides]


def cli_cases(rng: random.Random, n: int, scratch: Path) -> Iterator[list[str]]:
    """Argument vectors over the subcommands that do not start a run when valid (``train`` and
    ``collect`` cases always carry a value ``train`` must refuse, ``eval``/``play`` a run
    directory that is not one)."""
    from wm_ray.config_io import list_presets

    presets = [*list_presets(), "nosuch", "iris_debug", "../configs/debug"]
    missing = str(scratch / "no-such-run")
    for _ in range(n):
        command = rng.choice(["list", "show-config", "train", "collect", "eval", "play", "submit"])
        argv = [command]
        if command == "list":
            argv.append(rng.choice(["models", "envs", "backends", "presets", *JUNK[:8]]))
            if rng.random() < 0.3:
                argv += [rng.choice(["--model", "--backend"]), rng.choice(VALUES)]
        elif command in ("show-config", "train", "collect"):
            if rng.random() < 0.6:
                argv += ["--configs", *rng.sample(presets, rng.randint(1, 3))]
            if rng.random() < 0.5:
                argv += ["--env", rng.choice(VALUES)]
            if rng.random() < 0.4:
                argv += ["--set", f"{rng.choice(_keys())}={rng.choice(VALUES)}"]
            if command != "show-config":
                argv += ["--single-process"] if command == "train" else []
                # one sure refusal, so that no case starts a real run
                argv += rng.choice(
                    [
                        ["--steps", rng.choice(["-5", "0", "x", "1e3", ""])],
                        ["--set", "env.num_envs=0"],
                        ["--env", "NoSuchEnv-v0"],
                        ["--set", "replay.batch_size=0"],
                    ]
                )
                argv += ["--run-dir", str(scratch / f"run-{rng.randrange(10**9)}")]
        elif command in ("eval", "play"):
            argv += ["--run-dir", rng.choice([missing, "", str(scratch), *JUNK[:6]])]
            if rng.random() < 0.5:
                argv += [rng.choice(["--episodes", "--steps", "--checkpoint"]), rng.choice(VALUES)]
        else:
            argv += rng.choice([[], ["--no-wait"], ["--", "--configs", "debug"], ["--nosuch"]])
        if rng.random() < 0.15:
            argv.insert(rng.randrange(len(argv) + 1), rng.choice(JUNK))
        yield argv


PRESET_TEXTS = [
    "replay: [1, 2]\n",
    "replay:\n  capacity: -3\n",
    "- a\n- b\n",
    "just a string\n",
    "replay:\n  capacity: 10\n   bad_indent: 1\n",
    "replay: {capacity: 10\n",
    "nosuchsection:\n  x: 1\n",
    "run:\n  model: nosuch\n",
    "env:\n  id: 12\n",
    "dreamer:\n  rssm: 5\n",
    "\u00e9t\u00e9:\n  x: 1\n",
    "run:\n  steps: 1e999\n",
    "run: null\n",
    "iris:\n  tokenizer:\n    vocab: 0\n",
    "replay:\n  seq_len: 8\n",  # valid
    "",  # valid: empty preset
    "\t- tab\n",
    "run:\n  steps: !!float nan\n",
    "? [a]\n: 1\n",
    "logging:\n  every: 10\n  every: 20\n",
]


def preset_cases(rng: random.Random, n: int, scratch: Path) -> Iterator[list[str]]:
    """``show-config --configs <generated file>`` (files written under ``scratch``)."""
    for i in range(n):
        text = rng.choice(PRESET_TEXTS)
        if rng.random() < 0.3:  # damage it further
            cut = rng.randrange(len(text) + 1)
            text = text[:cut] + rng.choice(["", ":", "\n  - ", "{", "\u2603"]) + text[cut:]
        path = scratch / f"preset-{i}.yaml"
        path.write_text(text, encoding="utf-8")
        yield ["show-config", "--plain", *FAKE, "--configs", str(path)]


def observation_case(rng: random.Random) -> tuple[str, Any, float]:
    """A bad (or good) step result of a Dict(vector (4,) float32) env: ``(what, obs, reward)``."""
    vector = np.zeros(4, np.float32)
    what = rng.choice(["nan", "inf", "-inf", "shape", "dtype", "keys", "list", "reward", "good"])
    obs: Any = {"vector": vector}
    reward = 0.0
    if what in ("nan", "inf", "-inf"):
        vector[rng.randrange(4)] = float(what)
    elif what == "shape":
        obs = {"vector": np.zeros(rng.choice([(3,), (5,), (4, 1), ()]), np.float32)}
    elif what == "dtype":
        obs = {"vector": vector.astype(rng.choice([np.float64, np.int64, np.float16, bool]))}
    elif what == "keys":
        obs = rng.choice([{}, {"vector": vector, "image": vector}, {"image": vector}])
    elif what == "list":
        obs = rng.choice([[0.0] * 4, None, vector])
    elif what == "reward":
        reward = rng.choice([float("nan"), float("inf"), -float("inf")])
    return what, obs, reward


def observation_outcome(rng: random.Random) -> Outcome:
    """Step a real :class:`~wm_ray.envs.vector.VectorEnv` over an env returning the case."""
    import gymnasium as gym

    from wm_ray.envs.vector import VectorEnv
    from wm_ray.envs.vector_worker import EnvFailure

    what, bad_obs, bad_reward = observation_case(rng)

    class Env(gym.Env):  # type: ignore[type-arg]
        observation_space = gym.spaces.Dict(
            {"vector": gym.spaces.Box(-1, 1, (4,), dtype=np.float32)}
        )
        action_space = gym.spaces.Discrete(2)

        def reset(self, *, seed: Any = None, options: Any = None) -> Any:
            return {"vector": np.zeros(4, np.float32)}, {}

        def step(self, action: Any) -> Any:
            return bad_obs, bad_reward, False, False, {}

    venv = VectorEnv(lambda i: Env(), num_envs=1)
    try:
        venv.reset()
        for _ in range(8):
            venv.step(np.zeros(1, np.int64))
        return Outcome("observation", what, "ok" if what == "good" else "bad", "accepted")
    except EnvFailure as err:
        message = str(err)
        good = what != "good" and "\n" not in message and "env 0" in message
        return Outcome("observation", what, "error" if good else "bad", message[:300])
    except Exception as err:
        return Outcome("observation", what, "bad", f"{type(err).__name__}: {err}"[:300])
    finally:
        venv.close()


# -- run directories and checkpoints (real tiny runs) ---------------------------------------------


@contextlib.contextmanager
def small_mount(path: Path, size: str, read_only: bool = False) -> Iterator[bool]:
    """A tmpfs of ``size`` at ``path`` (a full disk, or read-only); yields False where this
    process may not mount (not root, or a container without the capability)."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = (
        os.geteuid() == 0
        and shutil.which("mount") is not None
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True
        ).returncode
        == 0
    )
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def train_argv(run_dir: Path, steps: int = 256) -> list[str]:
    return ["train", *TINY, "--steps", str(steps), "--run-dir", str(run_dir), "--set", *TINY_SET]


def family_train_argv(family: str, run_dir: Path, steps: int = 256) -> list[str]:
    """A tiny single-process run of ``family`` at its registry test size on a fake env of a
    kind it supports (vector observations where it reads them: faster)."""
    from wm_ray.registry import get_model_spec

    spec = get_model_spec(family)
    caps = spec.capabilities
    obs = "vector" if "vector" in caps.observations else caps.observations[0]
    presets = ["debug", *(x for x in spec.test_config if "=" not in x)]
    overrides = [x for x in spec.test_config if "=" in x]
    argv = ["train", "--single-process", "--quiet", "--configs", *presets]
    argv += ["--env", f"fake:{obs}-{caps.actions[0]}", "--steps", str(steps)]
    argv += ["--run-dir", str(run_dir), "--set", f"run.model={family}", *TINY_SET, *overrides]
    return argv


def rundir_outcomes(scratch: Path) -> Iterator[Outcome]:
    """``train`` and ``eval`` on run directories that are missing, files, read-only or full."""
    (scratch / "a-file").write_text("not a run")
    cases: list[tuple[str, list[str], Callable[[], contextlib.AbstractContextManager[bool]]]] = [
        ("train into a file", train_argv(scratch / "a-file"), lambda: contextlib.nullcontext(True)),
        (
            "train under a file",
            train_argv(scratch / "a-file" / "run"),
            lambda: contextlib.nullcontext(True),
        ),
        (
            "eval a missing run",
            ["eval", "--run-dir", str(scratch / "missing")],
            lambda: contextlib.nullcontext(True),
        ),
        (
            "train into a read-only fs",
            train_argv(scratch / "ro" / "run"),
            lambda: small_mount(scratch / "ro", "1m", read_only=True),
        ),
        (
            "train onto a full disk",
            train_argv(scratch / "full" / "run", 512),
            lambda: small_mount(scratch / "full", "48k"),
        ),
    ]
    for name, argv, setup in cases:
        with setup() as ready:
            if not ready:
                yield Outcome("rundir", name, "skipped", "cannot mount a tmpfs here")
                continue
            before = tree_digest(scratch / "a-file") if "file" in name else {}
            code, _, err, escaped = run_cli(argv)
            outcome = judge("rundir", [name, *argv], code, err, escaped)
            if "file" in name and tree_digest(scratch / "a-file") != before:
                outcome = Outcome("rundir", name, "bad", "the file was changed")
            yield outcome


def _flip(path: Path, rng: random.Random) -> None:
    data = bytearray(path.read_bytes())
    if data:
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))


def _truncate(path: Path, rng: random.Random) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: rng.randrange(max(len(data), 1))])


def checkpoint_outcomes(
    scratch: Path, rng: random.Random, n: int, family: str = "dreamer"
) -> Iterator[Outcome]:
    """Damage checkpoints and chunk files of two real tiny runs of ``family``, then ``eval``
    and ``resume``.

    A case passes with a one-line error, or a correct run (a resume that quarantines a corrupt
    chunk file and goes on); the damaged run's other files must be as they were.
    """
    runs = []
    for name in ("a", "b"):
        run = scratch / f"source-{family}-{name}"
        code, _, err, escaped = run_cli(
            [
                *family_train_argv(family, run, 256),
                "run.checkpoint_every=128",
                f"run.seed={len(runs)}",
                # a few updates make every file a checkpoint has; more only cost time
                "replay.samples_per_insert=2",
            ]
        )
        if code != 0:
            yield judge("checkpoint", ["(making a source run)"], code, err, escaped)
            return
        runs.append(run)
    damages = ["truncate", "flip", "swap"]
    targets = ["agent file", "state.json", "meta.json", "chunk file", "whole checkpoint"]
    for i in range(n):
        damage, target = rng.choice(damages), rng.choice(targets)
        command = rng.choice(["eval", "resume"])
        run = scratch / f"case-{family}-{i}"
        shutil.copytree(runs[0], run, symlinks=True)
        latest = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
        other = runs[1] / "checkpoints" / (runs[1] / "checkpoints" / "latest").read_text().strip()
        if target == "chunk file":
            files = sorted((run / "replay").rglob("*.chunk"))
            victim = rng.choice(files)
            donor = rng.choice(sorted((runs[1] / "replay").rglob("*.chunk")))
        elif target == "whole checkpoint":
            victim, donor = latest, other
        else:
            pick = {"agent file": "agent", "state.json": "state.json", "meta.json": "meta.json"}
            found = sorted(p for p in latest.rglob("*") if p.is_file())
            chosen = [p for p in found if pick[target] in str(p.relative_to(latest))]
            victim = rng.choice(chosen or found)
            donor = other / victim.relative_to(latest)
        label = f"{family}: {command} after {damage} of {target} ({victim.relative_to(run)})"
        if damage == "swap":
            if victim.is_dir():
                shutil.rmtree(victim)
                shutil.copytree(donor, victim)
            elif donor.exists():
                shutil.copyfile(donor, victim)
        elif victim.is_dir():
            _flip(rng.choice(sorted(p for p in victim.rglob("*") if p.is_file())), rng)
        else:
            (_truncate if damage == "truncate" else _flip)(victim, rng)
        # the checkpoints written so far (a successful resume moves ``latest`` and ``best``)
        keep = {k: v for k, v in tree_digest(run).items() if k.startswith("checkpoints/step-")}
        if command == "eval":
            argv = ["eval", "--run-dir", str(run), "--episodes", "1"]
        else:
            argv = ["train", "--single-process", "--quiet", "--run-dir", str(run), "--resume"]
            argv += ["--steps", "384"]  # the run's own config: a change would be refused
        code, _, err, escaped = run_cli(argv)
        outcome = judge("checkpoint", [label], code, err, escaped)
        after = tree_digest(run)
        changed = [k for k, v in keep.items() if after.get(k, v) != v]
        if changed:  # a resume may add checkpoints, never change the existing ones
            outcome = Outcome("checkpoint", label, "bad", f"changed on disk: {changed[:3]}")
        yield outcome
        shutil.rmtree(run, ignore_errors=True)


# -- the suite ------------------------------------------------------------------------------------


def fuzz(
    cases: int,
    seed: int = 0,
    slow_cases: int = 6,
    progress: Callable[[str], None] | None = None,
    families: list[str] | None = None,
) -> Report:
    """Run ``cases`` fast cases (split over cli / set / preset / observation), the run-directory
    cases and ``slow_cases`` checkpoint cases for each of ``families`` (default: every
    registered family); returns the report."""
    from wm_ray.registry import list_models

    rng = random.Random(seed)
    report = Report()
    with tempfile.TemporaryDirectory(prefix="wm-ray-fuzz-") as tmp:
        scratch = Path(tmp)
        share = max(cases // 4, 1)
        for argv in cli_cases(rng, share, scratch):
            code, _, err, escaped = run_cli(argv)
            report.add(judge("cli", argv, code, err, escaped))
        leftovers = [p.name for p in scratch.iterdir() if p.name.startswith("run-")]
        if leftovers:
            report.add(Outcome("cli", "refused runs", "bad", f"left run dirs: {leftovers[:3]}"))
        for argv in set_cases(rng, share):
            code, _, err, escaped = run_cli(argv)
            report.add(judge("set", argv, code, err, escaped))
        for argv in preset_cases(rng, share, scratch):
            code, _, err, escaped = run_cli(argv)
            report.add(judge("preset", argv, code, err, escaped))
        for _ in range(cases - 3 * share):
            report.add(observation_outcome(rng))
        if progress:
            progress(f"fast cases done: {len(report.outcomes)}")
        for outcome in rundir_outcomes(scratch):
            report.add(outcome)
        for family in families or list_models():
            for outcome in checkpoint_outcomes(scratch, rng, slow_cases, family):
                report.add(outcome)
                if progress:
                    progress(f"{outcome.result}: {outcome.case}")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=1500, help="fast cases")
    parser.add_argument(
        "--slow-cases", type=int, default=24, help="checkpoint/chunk cases per family"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="JSON results (default: print)")
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    start = time.perf_counter()
    report = fuzz(args.cases, args.seed, args.slow_cases, progress=print)
    result = {
        "benchmark": "fuzz",
        "seed": args.seed,
        "seconds": round(time.perf_counter() - start, 1),
        **report.summary(),
    }
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
