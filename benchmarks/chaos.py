"""Chaos run: SIGKILL a run's actors and then its driver on an external Ray cluster, resume, check.

    python -m benchmarks.chaos --model dreamer \\
        --out benchmarks/results/cpu-2core/chaos-dreamer.json [--long] [--cpus 4]
    python -m benchmarks.chaos --model all --out-dir benchmarks/results/cpu-2core

What it does, per model family (each at its registry ``test_config`` size, on a fake env of the
first observation and action kinds the family claims):

1. Starts a token-auth Ray head as a user's cluster would run (``deploy/local_cluster.sh start``:
   ``ray start --head`` in its own process group, its own temp dir, ports away from Ray's
   defaults and from ``tests/e2e/test_job_submit.py``'s: :data:`PORTS`).
2. Starts ``wm-ray train --address <head>`` as a subprocess (the driver), with 2 env workers,
   2 replay shards, 2 learners and 1 eval worker, a checkpoint every
   ``run.checkpoint_every`` steps and ``run.steps`` far beyond what the kills need.
3. Kill rounds. In each round, from outside (the dashboard's state API gives each live actor's
   PID; this process never joins the cluster) it sends SIGKILL to one env worker, one replay
   shard, one learner and the eval worker, in turn, each after the previous kill's restart shows
   up as ``counters/restarts/<kind>`` in ``metrics.jsonl`` and a new live actor of that name.
   Then it waits for a checkpoint that counts all of these restarts and for some steps acknowledged
   after it, and SIGKILLs the driver itself (SIGKILL, not SIGTERM: the CLI catches SIGTERM to
   checkpoint; a crash cannot). It checks that the dead driver's actors and placement group go
   away (non-detached actors die with their driver) and resumes with
   ``wm-ray train --address <head> --run-dir D --resume``, which must create its named actors
   (named with the run name on the shared cluster) again. The resumed run is the next round's
   victim; after the last round the resume runs to ``--steps <where it starts + tail>``. The
   order of the kills is fixed, their moment is not: a kill lands wherever the run is (mid-round,
   mid-update, in a checkpoint or an evaluation).
4. Checks (:func:`check`): the last resume exits 0 at its step target; the steps in the chunk
   files on disk (every shard's ``replay/shard-<i>``, read and verified with
   :mod:`wm_ray.replay.chunkfile`; plus evicted steps, none at these sizes) equal the
   coordinator's acknowledged count in the final checkpoint (``counters.env_steps``), the
   shards' inserted totals and the last ``counters/acked_steps``; no chunk is stored twice and
   every shard's manifest names exactly its files; each resumed run's first metrics line
   continues from the checkpoint it resumed from (env steps, updates, weights version, restarts
   per kind, the limiter's inserted and sampled steps never below the checkpoint's, and env steps
   within a metrics interval and two rounds of where the resume starts: the checkpoint's, plus
   the steps the killed driver had acknowledged after it, which are in replay and counted);
   within one driver's life none of these go backwards; every kill is counted as exactly one
   restart of its kind; the killed driver's 8 actors and its placement group were there and
   are gone; after the run no actor of it is left alive. ``random`` has no learner state but
   runs the same graph (its learners train nothing).

A wait that times out (:attr:`Mode.timeout`) ends the run with the driver's last output, the
run's actors and their states, and (with ``py-spy`` installed) every live process's Python
stacks, also written to ``<work dir>/diagnosis.txt``.

Modes:

- CI (default): one kill round, the resume trains ``CI.tail`` (64) steps past where it
  starts; 40-80 s per family on 2 shared cores, most of it process start-up (about 3 minutes
  for the 3 families of today, with the head's start).
  ``tests/e2e/test_chaos.py`` runs it for every family of ``wm_ray.registry.list_models()``
  on one shared head.
- ``--long``: ``LONG.rounds`` (3) kill rounds (which env worker, shard and learner rank is
  killed alternates; every resume is killed again until the last), checkpoints every 256
  steps and a 1024-step tail: 12 actor kills and 3 driver kills, about 2-3 minutes for Dreamer
  on 2 shared cores. ``--model all --long`` runs it for every family.

The JSON figures (``--out``): kills per kind, restarts counted per kind, steps acknowledged by
the coordinator vs found on disk, each resume's continuity (the checkpoint's counters next to
the resumed run's first line), each driver kill (how long the dead driver's actors took to go),
the checks and the seconds taken. ``benchmarks/results/cpu-2core/chaos-<model>.json`` hold the
long mode's figures, ``chaos-<model>-ci.json`` the CI mode's.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "deploy" / "local_cluster.sh"

PORTS = {
    "WM_RAY_PORT": "6391",
    "WM_RAY_DASHBOARD_PORT": "8291",
    "WM_RAY_AGENT_PORT": "52391",
    "WM_RAY_CLIENT_PORT": "20091",
    "WM_RAY_MIN_WORKER_PORT": "20200",
    "WM_RAY_MAX_WORKER_PORT": "20499",
}
"""Head ports: away from Ray's defaults and from tests/e2e/test_job_submit.py (6390, 8290, ...)."""

KINDS = ("env-worker", "replay-shard", "learner", "eval-worker")
"""Actor kinds killed in each round, in this order (``counters/restarts/<kind>``)."""
CLASSES = {
    "env-worker": "EnvWorker",
    "replay-shard": "ReplayShard",
    "learner": "Learner",
    "eval-worker": "EvalWorker",
}
COUNTS = {"env-worker": 2, "replay-shard": 2, "learner": 2, "eval-worker": 1}
"""Actors per kind in the chaos run (``resources.*``)."""


@dataclass(frozen=True)
class Mode:
    """How long and how hard a chaos run is."""

    name: str
    rounds: int
    """Kill rounds: each kills every kind of :data:`KINDS` once, then the driver."""
    checkpoint_every: int
    eval_every: int
    tail: int
    """Env steps the last resume trains past the checkpoint it resumed from."""
    after_checkpoint: int
    """Env steps acknowledged after the checkpoint before the driver is killed (at least)."""
    timeout: float
    """Seconds any one wait may take (a restart, a checkpoint, the last resume)."""


CI = Mode("ci", rounds=1, checkpoint_every=64, eval_every=64, tail=64, after_checkpoint=32,
          timeout=150.0)  # fmt: skip
LONG = Mode("long", rounds=3, checkpoint_every=256, eval_every=192, tail=1024,
            after_checkpoint=64, timeout=150.0)  # fmt: skip

RUN_STEPS = 10**7
"""``run.steps`` of the first run: never reached, the last resume sets its own target."""

SETTINGS = (
    "run.device=cpu",
    "env.num_envs=2",
    "env.image_size=16",
    "replay.chunk_len=16",
    "replay.min_size=64",
    "replay.samples_per_insert=2",
    "replay.capacity=1000000",
    "eval.episodes=1",
    "eval.num_envs=1",
    "logging.every=32",
    "logging.tensorboard=false",
    "resources.env_workers=2",
    "resources.replay_shards=2",
    "resources.learners=2",
    "resources.eval_workers=1",
    "resources.cpus_per_learner=0.5",
    "resources.cpus_per_env_worker=0.5",
)
"""Runtime settings of a chaos run on top of the family's test size (2 + 2 + 2 + 1 actors)."""


class ChaosError(RuntimeError):
    """The chaos run could not go on (a wait timed out, a process failed)."""


# -- the cluster -------------------------------------------------------------------------------


def clean_env() -> dict[str, str]:
    """This process's environment without RAY_* settings (a ``ray.init`` may have set some)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}


@dataclass
class Cluster:
    """A Ray head started by ``deploy/local_cluster.sh`` (see :func:`start_cluster`)."""

    cluster_dir: Path
    script_env: dict[str, str]
    client_env: dict[str, str]
    """What a client needs: a clean environment plus ``local_cluster.sh env``'s exports."""
    token: str
    address: str
    dashboard: str

    def api(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET ``path`` of the dashboard's HTTP API with the cluster's token; the JSON body."""
        url = self.dashboard + path + ("?" + urllib.parse.urlencode(params) if params else "")
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read().decode())

    def state(self, what: str) -> list[dict[str, Any]]:
        """Every entry of the state API's ``/api/v0/<what>`` (actors, placement_groups)."""
        body = self.api(f"/api/v0/{what}", {"limit": 10000, "timeout": 20})
        if not body.get("result", False):
            raise ChaosError(f"state API /api/v0/{what} failed: {body.get('msg')}")
        return list(body["data"]["result"]["result"])

    def actors(self, prefix: str) -> list[dict[str, Any]]:
        """The actors named ``<prefix>...`` (any state), as the state API lists them."""
        return [a for a in self.state("actors") if str(a.get("name") or "").startswith(prefix)]

    def alive(self, prefix: str) -> dict[str, int]:
        """``{name: pid}`` of the live actors named ``<prefix>...``."""
        return {a["name"]: int(a["pid"]) for a in self.actors(prefix) if a["state"] == "ALIVE"}

    def placement_groups(self, name: str) -> list[dict[str, Any]]:
        """The placement groups called ``name`` that are not removed."""
        return [
            g
            for g in self.state("placement_groups")
            if g.get("name") == name and g.get("state") != "REMOVED"
        ]

    def stop(self) -> None:
        stopped = _script("stop", self.script_env, timeout=90)
        shutil.rmtree(self.cluster_dir, ignore_errors=True)
        if stopped.returncode != 0:
            raise ChaosError(f"local_cluster.sh stop failed:\n{stopped.stderr}")


def _ray_bin() -> str | None:
    venv_ray = Path(sys.executable).parent / "ray"
    if venv_ray.is_file() and os.access(venv_ray, os.X_OK):
        return str(venv_ray)
    return shutil.which("ray")


def _script(command: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=timeout
    )


def start_cluster(cpus: int = 4, ports: dict[str, str] | None = None) -> Cluster:
    """Start a token-auth Ray head with ``cpus`` logical CPUs on :data:`PORTS`.

    Raises:
        ChaosError: without the ``ray`` CLI or Linux, or when the head does not start.
    """
    ray_bin = _ray_bin()
    if ray_bin is None:
        raise ChaosError("the `ray` CLI is not installed")
    if not sys.platform.startswith("linux") or shutil.which("setsid") is None:
        raise ChaosError("deploy/local_cluster.sh needs Linux (/proc, setsid)")
    ports = {**PORTS, **(ports or {})}
    # Short path: Ray puts unix sockets under the temp dir (108-byte limit).
    cluster_dir = Path(tempfile.mkdtemp(prefix="wmrc-", dir="/tmp"))
    script_env = {
        **clean_env(),
        **ports,
        "RAY_BIN": ray_bin,
        "WM_RAY_CPUS": str(cpus),
        "WM_RAY_CLUSTER_DIR": str(cluster_dir),
        "WM_RAY_STOP_GRACE": "2",
    }
    started = _script("start", script_env, timeout=180)
    if started.returncode != 0:
        shutil.rmtree(cluster_dir, ignore_errors=True)
        raise ChaosError(f"local_cluster.sh start failed:\n{started.stdout}\n{started.stderr}")
    exports = dict(
        shlex.split(line)[1].split("=", 1)
        for line in started.stdout.splitlines()
        if line.startswith("export ")
    )
    client_env = {**clean_env(), **exports, "RAY_USAGE_STATS_ENABLED": "0"}
    return Cluster(
        cluster_dir=cluster_dir,
        script_env=script_env,
        client_env=client_env,
        token=Path(exports["RAY_AUTH_TOKEN_PATH"]).read_text().strip(),
        address=exports["RAY_ADDRESS"],
        dashboard=exports["RAY_API_SERVER_ADDRESS"],
    )


# -- the run -----------------------------------------------------------------------------------


def family_settings(model: str) -> tuple[list[str], list[str]]:
    """``(presets, overrides)``: the family's registry ``test_config`` (its test size), its
    fake env (the first observation and action kinds it claims) and :data:`SETTINGS`."""
    from wm_ray.registry import get_model_spec

    spec = get_model_spec(model)
    caps = spec.capabilities
    presets = [item for item in spec.test_config if "=" not in item]
    overrides = [item for item in spec.test_config if "=" in item]
    env = f"fake:{caps.observations[0]}-{caps.actions[0]}"
    return presets, [f"run.model={spec.name}", f"env.id={env}", *overrides, *SETTINGS]


def read_lines(path: Path) -> list[dict[str, Any]]:
    """The complete JSON lines of ``metrics.jsonl`` (a line being written is skipped)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def read_checkpoint(run_dir: Path) -> tuple[str, dict[str, Any]] | None:
    """``(name, verified run state)`` of the run's latest checkpoint, or None."""
    from wm_ray.rundir import checkpoint as ckpt

    try:
        path = ckpt.latest_checkpoint(run_dir)
        return (path.name, ckpt.load_state(path)) if path is not None else None
    except (ckpt.CheckpointError, OSError, ValueError):
        return None  # being rotated right now: ask again


def limiter_totals(state: dict[str, Any]) -> tuple[int, int]:
    """``(inserted, sampled)`` steps of a run state's shard limiters, summed over the shards."""
    shards = state["shards"]
    return (
        sum(int(s["limiter"]["inserts"]) for s in shards),
        sum(int(s["limiter"]["samples"]) for s in shards),
    )


def disk_replay(run_dir: Path, shards: int) -> dict[str, Any]:
    """What the chunk files on disk hold: per shard the steps, files, names and (stream, index)
    keys, read and checksum-verified with :mod:`wm_ray.replay.chunkfile`."""
    from wm_ray.replay import chunkfile
    from wm_ray.rundir.paths import shard_directory

    out: dict[str, Any] = {"shards": [], "steps": 0, "files": 0, "duplicates": [], "temp": 0}
    seen: dict[tuple[str, int], str] = {}
    for i in range(shards):
        directory = shard_directory(run_dir, i)
        finished, temps = chunkfile.list_chunk_files(directory)
        quarantined = sorted(p.name for p in (directory / "corrupt").glob("*"))
        steps = 0
        for path in finished:
            header, _ = chunkfile.load_chunk_file(path)  # raises CorruptChunkError
            steps += header.length
            key = (header.stream, header.index)
            if key in seen:
                out["duplicates"].append(f"{key} in {seen[key]} and shard-{i}/{path.name}")
            seen[key] = f"shard-{i}/{path.name}"
        out["shards"].append(
            {
                "steps": steps,
                "files": len(finished),
                "names": [p.name for p in finished],
                "temp_files": len(temps),
                "quarantined": quarantined,
            }
        )
        out["steps"] += steps
        out["files"] += len(finished)
        out["temp"] += len(temps)
    return out


@dataclass
class Driver:
    """One ``wm-ray train`` subprocess (its output goes to ``log``)."""

    proc: subprocess.Popen[bytes]
    log: Path
    args: list[str]
    started: float = field(default_factory=time.monotonic)

    def output(self, tail: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-tail:] if self.log.is_file() else ""


class ChaosRun:
    """One chaos run of one family (see the module docstring); :meth:`run` returns the figures.

    Args:
        cluster: the head to run on.
        model: the family.
        work_dir: where the run directory and the drivers' logs go.
        mode: :data:`CI` or :data:`LONG`.
        log: where progress messages go.
    """

    def __init__(
        self,
        cluster: Cluster,
        model: str,
        work_dir: Path,
        mode: Mode = CI,
        log: Callable[[str], None] = print,
    ) -> None:
        self.cluster, self.model, self.mode, self.log = cluster, model, mode, log
        self.work_dir = Path(work_dir)
        self.run_dir = self.work_dir / "run"
        self.name = f"chaos-{model}-{uuid.uuid4().hex[:6]}"
        self.prefix = f"{self.name}."  # the actor names' prefix on a shared cluster
        self.metrics = self.run_dir / "metrics.jsonl"
        self.kills: list[dict[str, Any]] = []
        self.driver_kills: list[dict[str, Any]] = []
        self.resumes: list[dict[str, Any]] = []
        self.drivers = 0
        self.t0 = time.monotonic()

    def say(self, message: str) -> None:
        self.log(f"[{self.model} {time.monotonic() - self.t0:6.1f}s] {message}")

    # -- processes -------------------------------------------------------------------------

    def _train(self, *args: str) -> Driver:
        self.drivers += 1
        log = self.work_dir / f"driver-{self.drivers}.log"
        argv = [
            sys.executable, "-m", "wm_ray.cli", "train", "--address", self.cluster.address,
            "--quiet", "--run-dir", str(self.run_dir), *args,
        ]  # fmt: skip
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv, env=self.cluster.client_env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT
            )
        self.say(f"driver {self.drivers} (pid {proc.pid}): wm-ray train {args[0]}")
        return Driver(proc, log, argv)

    def first_args(self) -> list[str]:
        presets, overrides = family_settings(self.model)
        m = self.mode
        return [
            "--configs", *presets, "--steps", str(RUN_STEPS), "--set", *overrides,
            f"run.name={self.name}", f"run.checkpoint_every={m.checkpoint_every}",
            f"eval.every={m.eval_every}",
        ]  # fmt: skip

    def _wait(
        self, what: str, driver: Driver | None, ready: Callable[[], Any], timeout: float = 0.0
    ) -> Any:
        """Poll ``ready()`` until it returns something truthy (returned); fail when the driver
        exits meanwhile or after ``timeout`` (default: the mode's)."""
        deadline = time.monotonic() + (timeout or self.mode.timeout)
        while True:
            value = ready()
            if value:
                return value
            if driver is not None and driver.proc.poll() is not None:
                raise ChaosError(
                    f"[{self.model}] the driver exited ({driver.proc.returncode}) while waiting "
                    f"for {what}:\n{driver.output()}"
                )
            if time.monotonic() > deadline:
                tail = driver.output() if driver is not None else ""
                raise ChaosError(
                    f"[{self.model}] timed out waiting for {what}\n{tail}\n{self._diagnose(driver)}"
                )
            time.sleep(0.25)

    def _diagnose(self, driver: Driver | None) -> str:
        """The run's actors and their states, and the driver's Python stacks (py-spy, when it
        is installed), for the message of a wait that timed out."""
        try:
            actors = sorted(
                (a["name"].removeprefix(self.prefix), a["state"], a.get("pid"))
                for a in self.cluster.actors(self.prefix)
            )
        except (OSError, ValueError, ChaosError) as err:
            actors = [("?", str(err), None)]
        report = "actors: " + ", ".join(f"{n} {s} {p}" for n, s, p in actors)
        spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which(
            "py-spy"
        )
        stacks = ""
        if driver is not None and spy is not None and driver.proc.poll() is None:
            pids = {"driver": driver.proc.pid}
            pids.update({n: p for n, s, p in actors if s == "ALIVE" and p})
            for name, pid in pids.items():
                dump = subprocess.run(
                    [spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=60
                )
                stacks += f"\n{name} (pid {pid}) stacks (py-spy):\n{dump.stdout or dump.stderr}"
        (self.work_dir / "diagnosis.txt").write_text(report + stacks)
        return report + stacks[:3000]

    def _training(self, own: int) -> bool:
        """Whether metrics line ``own`` or a later one counts 64 acknowledged steps."""
        return any(
            line.get("counters/acked_steps", 0) >= 64 for line in read_lines(self.metrics)[own:]
        )

    def _last(self) -> dict[str, Any]:
        lines = read_lines(self.metrics)
        return lines[-1] if lines else {}

    # -- kills -----------------------------------------------------------------------------

    def kill_actor(self, driver: Driver, kind: str, index: int, counted: dict[str, int]) -> None:
        """SIGKILL the live actor ``<prefix><kind>-<index>`` and wait until its restart is
        counted (``counters/restarts/<kind>`` reaches ``counted[kind] + 1``) and a new actor of
        that name is alive."""
        name = f"{self.prefix}{kind}-{index}"
        pid = self._wait(
            f"{name} to be alive", driver, lambda: self.cluster.alive(self.prefix).get(name)
        )
        _check_actor_process(pid, CLASSES[kind])
        step = int(self._last().get("step", 0))
        t = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        want = counted[kind] + 1
        self.say(f"SIGKILL {name} (pid {pid}) at step {step}")
        line = self._wait(
            f"counters/restarts/{kind} >= {want}",
            driver,
            lambda: next(
                (r for r in reversed(read_lines(self.metrics))
                 if r.get(f"counters/restarts/{kind}", 0) >= want),
                None,
            ),
        )  # fmt: skip
        counted_s = time.monotonic() - t
        new_pid = self._wait(
            f"a new {name}",
            driver,
            lambda: (p := self.cluster.alive(self.prefix).get(name)) is not None and p != pid and p,
        )
        counted[kind] = want
        self.say(f"restart {want} of {kind} counted at step {line['step']} (new pid {new_pid})")
        self.kills.append(
            {
                "round": len(self.driver_kills),
                "kind": kind,
                "actor": name.removeprefix(self.prefix),
                "pid": pid,
                "at_step": step,
                "counted_at_step": int(line["step"]),
                "seconds_to_count": round(counted_s, 2),
                "new_pid": new_pid,
            }
        )

    def kill_driver(self, driver: Driver, counted: dict[str, int]) -> dict[str, Any]:
        """SIGKILL the driver once a checkpoint counts every restart so far and some steps were
        acknowledged after it; then wait for its actors and placement group to go.

        Returns the checkpoint the resume will start from, with its run state.
        """

        def counted_checkpoint() -> tuple[str, dict[str, Any]] | None:
            found = read_checkpoint(self.run_dir)
            if found is None:
                return None
            restarts = found[1]["counters"]["restarts"]
            return found if all(restarts.get(k, 0) >= n for k, n in counted.items()) else None

        name, state = self._wait("a checkpoint counting every restart", driver, counted_checkpoint)
        step = int(state["counters"]["env_steps"])
        after = step + self.mode.after_checkpoint
        self._wait(
            f"{after} acknowledged steps",
            driver,
            lambda: self._last().get("counters/acked_steps", 0) >= after,
        )
        before = self.cluster.alive(self.prefix)  # what must go away with the driver
        groups = len(self.cluster.placement_groups(f"{self.prefix}wm_ray"))
        driver.proc.send_signal(signal.SIGKILL)
        driver.proc.wait(timeout=30)
        t = time.monotonic()
        at = self._last()
        found = read_checkpoint(self.run_dir)  # the driver is gone: this is what resumes
        assert found is not None
        name, state = found
        self.say(
            f"SIGKILL driver (pid {driver.proc.pid}) at step {at.get('step')}; "
            f"latest checkpoint {name}"
        )

        def gone() -> bool:
            return not self.cluster.alive(self.prefix) and not self.cluster.placement_groups(
                f"{self.prefix}wm_ray"
            )

        try:
            self._wait("the dead driver's actors to go", None, gone, timeout=90.0)
            lingering: dict[str, int] = {}
        except ChaosError:
            lingering = self.cluster.alive(self.prefix)
        disk = disk_replay(self.run_dir, COUNTS["replay-shard"])["steps"]  # the shards are gone
        self.say(f"the dead driver's actors: {sorted(lingering) or 'gone'}; {disk} steps on disk")
        record = {
            "round": len(self.driver_kills),
            "pid": driver.proc.pid,
            "at_step": at.get("step"),
            "acked_at_kill": at.get("counters/acked_steps"),
            "checkpoint": name,
            "checkpoint_step": int(state["counters"]["env_steps"]),
            "on_disk_at_kill": disk,
            "actors_gone_s": None if lingering else round(time.monotonic() - t, 2),
            "actors_before_kill": len(before),
            "placement_groups_before_kill": groups,
            "lingering_actors": sorted(lingering),
            "driver_seconds": round(time.monotonic() - driver.started, 1),
        }
        self.driver_kills.append(record)
        if lingering:
            raise ChaosError(
                f"[{self.model}] the killed driver's actors are still alive after 90 s: "
                f"{sorted(lingering)}"
            )
        lines = len(read_lines(self.metrics))
        return {"checkpoint": name, "state": state, "lines_before": lines, "on_disk": disk}

    # -- the whole run ---------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Start, kill, resume, finish; returns the figures (:func:`check` adds the checks)."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        m = self.mode
        counted = dict.fromkeys(KINDS, 0)
        driver = self._train(*self.first_args())
        final: Driver | None = None
        own = 0  # the first metrics line of the driver running now
        try:
            for r in range(m.rounds):
                # A metrics line of this driver: its graph is up and steps come in.
                self._wait("the run to train", driver, functools.partial(self._training, own))
                for kind in KINDS:
                    # Which of the two: env worker and learner 0, shard 1, swapped each round.
                    index = (r + (kind == "replay-shard")) % COUNTS[kind]
                    self.kill_actor(driver, kind, index, counted)
                resume = self.kill_driver(driver, counted)
                own = resume["lines_before"]
                last = r == m.rounds - 1
                start = max(int(resume["state"]["counters"]["env_steps"]), resume["on_disk"])
                target = start + m.tail  # past what the resume starts from
                args = ["--resume", *(["--steps", str(target)] if last else [])]
                t = time.monotonic()
                driver = self._train(*args)
                resume.update(round=r, target=target if last else RUN_STEPS, started=t)
                self.resumes.append(resume)
            final = driver
            try:
                final.proc.wait(timeout=m.timeout + 60.0 * m.rounds)
            except subprocess.TimeoutExpired:
                raise ChaosError(f"[{self.model}] the last resume did not finish") from None
            self.say(f"the last resume exited with {final.proc.returncode}")
        finally:
            if driver.proc.poll() is None:
                driver.proc.kill()
                driver.proc.wait()
        assert final is not None
        return self.figures(final)

    def figures(self, final: Driver) -> dict[str, Any]:
        """Everything the run did and found (the checks come from :func:`check`)."""
        seconds = time.monotonic() - self.t0
        resume_s = time.monotonic() - self.resumes[-1]["started"]
        lines = read_lines(self.metrics)
        found = read_checkpoint(self.run_dir)
        state = found[1] if found is not None else None
        disk = disk_replay(self.run_dir, COUNTS["replay-shard"])
        alive_after = self.cluster.alive(self.prefix)
        segments = [0, *(r["lines_before"] for r in self.resumes), len(lines)]
        continuity = [
            continuity_record(r["checkpoint"], r["state"], lines[r["lines_before"] :], r["on_disk"])
            | {"round": r["round"]}
            for r in self.resumes
        ]
        kills = {kind: sum(k["kind"] == kind for k in self.kills) for kind in KINDS}
        counters = state["counters"] if state else {}
        inserted = [int(m["inserted_steps"]) for m in state["shard_manifests"]] if state else []
        evicted = [int(s["counters"]["evicted_steps"]) for s in state["shards"]] if state else []
        return {
            "model": self.model,
            "mode": self.mode.name,
            "rounds": self.mode.rounds,
            "run_name": self.name,
            "settings": dataclasses.asdict(self.mode),
            "command": shlex.join(["wm-ray", *self.first_cmd()]),
            "exit_code": final.proc.returncode,
            "output_tail": final.output(1500),
            "kills": {**kills, "driver": len(self.driver_kills)},
            "restarts_counted": dict(counters.get("restarts", {})),
            "kill_log": self.kills,
            "driver_kills": self.driver_kills,
            "steps": {
                "target": self.resumes[-1]["target"],
                "final_env_steps": counters.get("env_steps"),
                "acked_coordinator": counters.get("env_steps"),
                "acked_metrics_last_line": lines[-1].get("counters/acked_steps") if lines else None,
                "shards_inserted": inserted,
                "shards_evicted": evicted,
                "on_disk": disk["steps"],
                "on_disk_per_shard": [s["steps"] for s in disk["shards"]],
                "chunk_files": disk["files"],
                "duplicate_chunks": disk["duplicates"],
                "temp_files_left": disk["temp"],
                "quarantined": [q for s in disk["shards"] for q in s["quarantined"]],
                "manifest_matches_disk": state is not None
                and [m["files"] for m in state["shard_manifests"]]
                == [s["names"] for s in disk["shards"]],
            },
            "updates": counters.get("updates"),
            "training": training_record(self.model, lines, found[0] if found else None),
            "weights_version": counters.get("weights_version"),
            "learner": state["learner"] if state else None,
            "continuity": continuity,
            "monotonic_within_drivers": monotonic_problems(lines, segments),
            "alive_after": sorted(alive_after),
            "seconds": {
                "total": round(seconds, 1),
                "last_resume": round(resume_s, 1),
                "per_restart": {
                    kind: [k["seconds_to_count"] for k in self.kills if k["kind"] == kind]
                    for kind in KINDS
                },
            },
        }

    def first_cmd(self) -> list[str]:
        return ["train", "--address", "<head>", "--quiet", "--run-dir", "<dir>", *self.first_args()]


def _check_actor_process(pid: int, class_name: str) -> None:
    """Refuse to signal a PID that is not a Ray worker of ``class_name`` on this machine."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError as err:
        raise ChaosError(f"actor pid {pid} is not a process on this machine: {err}") from None
    if not cmdline.startswith("ray::") or class_name not in cmdline:
        raise ChaosError(f"pid {pid} is not a ray::{class_name} worker: {cmdline[:120]!r}")


FIRST_LINE_SLACK = 32 + 2 * 2 * 2 * 16
"""Env steps a resumed run's first line may lie past its start: ``logging.every`` plus two
rounds of both env workers (2 envs x ``chunk_len`` 16 each)."""
STEP_KEYS = (
    "step",
    "counters/updates",
    "weights/version",
    *(f"counters/restarts/{k}" for k in KINDS),
)


def continuity_record(
    name: str, state: dict[str, Any], lines: list[dict[str, Any]], on_disk: int
) -> dict[str, Any]:
    """The checkpoint a resume started from next to the resumed run's first metrics line
    (``on_disk``: steps in the chunk files when the resume started)."""
    c = state["counters"]
    inserted, sampled = limiter_totals(state)
    first = lines[0] if lines else {}
    acked = float(first.get("counters/acked_steps", 0.0))
    first_sampled = float(first.get("replay/ratio", 0.0)) * max(acked, 1.0)
    ckpt: dict[str, Any] = {
        "checkpoint": name,
        "env_steps": c["env_steps"],
        "updates": c["updates"],
        "weights_version": c["weights_version"],
        "restarts": dict(c["restarts"]),
        "limiter_inserted": inserted,
        "limiter_sampled": sampled,
        "learner": state["learner"],
    }
    seen: dict[str, Any] = {
        "env_steps": first.get("step"),
        "updates": first.get("counters/updates"),
        "weights_version": first.get("weights/version"),
        "restarts": {k: first.get(f"counters/restarts/{k}") for k in KINDS},
        "limiter_inserted": acked,
        "limiter_sampled": round(first_sampled, 3),
        "seconds": first.get("time"),
    }
    problems = []
    if not first:
        problems.append("the resumed run wrote no metrics line")
    else:
        for key in ("env_steps", "updates", "weights_version", "limiter_inserted"):
            if seen[key] is None or seen[key] < ckpt[key]:
                problems.append(f"{key} {seen[key]} < the checkpoint's {ckpt[key]}")
        if first_sampled + 1e-6 * max(sampled, 1) < sampled:
            problems.append(f"limiter sampled {first_sampled:.1f} < the checkpoint's {sampled}")
        for kind in KINDS:
            if (seen["restarts"][kind] or 0) < ckpt["restarts"].get(kind, 0):
                problems.append(f"restarts/{kind} {seen['restarts'][kind]} < the checkpoint's")
        if seen["seconds"] is not None and seen["seconds"] < c.get("seconds", 0.0):
            problems.append(f"time {seen['seconds']} < the checkpoint's {c.get('seconds')}")
        # Not made up: the first line comes within a metrics interval and the rounds in flight
        # of the checkpoint, plus what the killed driver had acknowledged after it.
        bound = max(c["env_steps"], on_disk) + FIRST_LINE_SLACK
        if seen["env_steps"] is not None and seen["env_steps"] > bound:
            problems.append(f"env_steps {seen['env_steps']} > {bound}, far past the checkpoint")
    return {"checkpoint": ckpt, "first_line": seen, "problems": problems}


def training_record(
    model: str, lines: list[dict[str, Any]], checkpoint: str | None
) -> dict[str, Any]:
    """What the run learned and evaluated, from its metrics lines: updates, the
    ``train/loss/`` metrics (all finite), evaluations, and the last checkpoint (verified when it
    was read); ``problems`` lists what a family that learns lacks."""
    from wm_ray.registry import get_model_spec

    learns = get_model_spec(model).capabilities.learns
    losses = {k for line in lines for k in line if k.startswith("train/loss/")}
    non_finite = sorted(
        k for line in lines for k, v in line.items()
        if k.startswith("train/loss/") and not math.isfinite(v)
    )  # fmt: skip
    updates = max((int(line.get("counters/updates", 0)) for line in lines), default=0)
    evals = [line["eval/return"] for line in lines if "eval/return" in line]
    problems = []
    if learns and updates <= 0:
        problems.append("no update")
    if learns and not losses:
        problems.append("no train/loss/ metric logged")
    if non_finite:
        problems.append(f"non-finite losses {non_finite}")
    if not evals:
        problems.append("no evaluation")
    if checkpoint is None:
        problems.append("no readable final checkpoint")
    return {
        "learns": learns,
        "updates": updates,
        "loss_metrics": sorted(losses),
        "evaluations": len(evals),
        "last_eval_return": evals[-1] if evals else None,
        "checkpoint": checkpoint,
        "problems": problems,
    }


def monotonic_problems(lines: list[dict[str, Any]], segments: list[int]) -> list[str]:
    """Counters that went backwards within one driver's metrics lines."""
    problems = []
    for d, (start, end) in enumerate(itertools.pairwise(segments)):
        prev: dict[str, Any] = {}
        for n, line in enumerate(lines[start:end], start):
            for key in STEP_KEYS:
                value = line.get(key)
                if value is not None and key in prev and value < prev[key]:
                    problems.append(f"driver {d + 1}, line {n}: {key} {prev[key]} -> {value}")
                if value is not None:
                    prev[key] = value
    return problems


def check(figures: dict[str, Any]) -> dict[str, Any]:
    """The chaos run's checks: ``{"checks": {name: bool}, "problems": [...]}``."""
    s = figures["steps"]
    kills, restarts = figures["kills"], figures["restarts_counted"]
    acked = s["acked_coordinator"]
    checks = {
        "resume_exit_0": figures["exit_code"] == 0,
        "final_steps_reached": acked is not None and acked >= s["target"],
        "disk_equals_acked": acked is not None and s["on_disk"] + sum(s["shards_evicted"]) == acked,
        "shards_equal_acked": sum(s["shards_inserted"]) == acked,
        "metrics_equal_acked": s["acked_metrics_last_line"] == acked,
        "no_duplicate_chunks": not s["duplicate_chunks"],
        "manifest_matches_disk": s["manifest_matches_disk"],
        "continuity": all(not c["problems"] for c in figures["continuity"]),
        "monotonic_within_drivers": not figures["monotonic_within_drivers"],
        "every_kill_counted_once": all(restarts.get(k) == kills[k] for k in KINDS),
        "every_kind_restarted": all(restarts.get(k, 0) >= 1 for k in KINDS),
        "driver_actors_gone": all(
            not d["lingering_actors"]
            and d["actors_before_kill"] == sum(COUNTS.values()) + 1  # and the weight store
            and d["placement_groups_before_kill"] == 1
            for d in figures["driver_kills"]
        ),
        "no_actor_left": not figures["alive_after"],
        "trained_and_evaluated": not figures["training"]["problems"],
    }
    problems = [name for name, ok in checks.items() if not ok]
    problems += [f"continuity: {p}" for c in figures["continuity"] for p in c["problems"]]
    problems += [f"monotonic: {p}" for p in figures["monotonic_within_drivers"]]
    problems += [f"training: {p}" for p in figures["training"]["problems"]]
    if not checks["disk_equals_acked"]:
        problems.append(
            f"on disk {s['on_disk']} (+{sum(s['shards_evicted'])} evicted) != acknowledged {acked}"
        )
    if not checks["every_kill_counted_once"]:
        problems.append(f"kills {kills} vs restarts counted {restarts}")
    return {"checks": checks, "problems": problems}


def run_chaos(
    cluster: Cluster,
    model: str,
    work_dir: Path,
    mode: Mode = CI,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """One family's chaos run with its checks: the figures plus ``checks`` and ``problems``."""
    figures = ChaosRun(cluster, model, work_dir, mode, log).run()
    return {**figures, **check(figures)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="SIGKILL a run's actors and driver on an external Ray head, resume, check."
    )
    parser.add_argument("--model", nargs="+", default=["dreamer"], help="families, or all")
    parser.add_argument("--long", action="store_true", help="3 kill rounds, longer run")
    parser.add_argument("--out", type=Path, default=None, help="JSON figures (one model)")
    parser.add_argument(
        "--out-dir", type=Path, default=None, help="JSON figures as <dir>/chaos-<model>.json"
    )
    parser.add_argument("--cpus", type=int, default=4, help="logical CPUs of the head")
    parser.add_argument("--keep", action="store_true", help="keep the run directories")
    args = parser.parse_args(argv)
    from benchmarks.common import machine_info
    from wm_ray.registry import list_models

    models = list_models() if args.model == ["all"] else args.model
    if args.out is not None and len(models) != 1:
        parser.error("--out takes one --model; use --out-dir for several")
    mode = LONG if args.long else CI
    work = Path(tempfile.mkdtemp(prefix="wm_ray-chaos-"))
    cluster = start_cluster(args.cpus)
    failed = 0
    try:
        for model in models:
            t = time.monotonic()
            try:
                result = run_chaos(cluster, model, work / model, mode)
            except ChaosError as err:
                result = {"model": model, "mode": mode.name, "error": str(err)[-4000:]}
                result["checks"], result["problems"] = {}, [str(err)[:400]]
            result["wall_s"] = round(time.monotonic() - t, 1)
            failed += bool(result["problems"])
            status = "ok" if not result["problems"] else "FAILED: " + "; ".join(result["problems"])
            print(f"[{model}] {status} ({result['wall_s']} s)")
            out = args.out or (args.out_dir / f"chaos-{model}.json" if args.out_dir else None)
            if out is not None:
                result = {"benchmark": "chaos", **result, "ray": metadata.version("ray")}
                result["machine"] = machine_info()
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(result, indent=2) + "\n")
                print(f"[{model}] figures: {out}")
    finally:
        cluster.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"run directories kept under {work}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
