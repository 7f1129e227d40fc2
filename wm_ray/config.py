"""Frozen config dataclasses, one per concern.

The defaults are the main job (``make run``): Dreamer on CartPole-v1 on a CPU, tuned to reach an
eval return above 400 within 10 minutes on 2 cores. Loading, merging and validation: ``config_io``.

Every field has a default, so ``Config()`` is a complete run. Presets in ``configs/*.yaml`` and
``--set section.key=value`` overrides change fields; an unknown key, a wrong type or a number out
of range is an error. A number's valid range is its class's ``RANGES`` entry (``(low, high)``,
inclusive, ``None`` unbounded), else the rule of ``wm_ray.config_io.value_range``: a count or
size whose default is positive is at least 1, every other number at least 0 (unless its
default is negative), all finite and below 2**48.

The sections here are the runtime's. Every model family adds one more, a field named after the
family whose class its registry line names (``wm_ray.registry.config_sections``): ``Config`` is
composed from both when this module is imported, so this module imports no family.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from wm_ray import registry
from wm_ray.types import Ranges


@dataclass(frozen=True)
class RunConfig:
    """What to train, for how long, and where results go."""

    model: str = "dreamer"
    """Model family (``wm-ray list models``)."""
    name: str = ""
    """Run name; prefixes actor names when runs share a cluster. Empty: from env and time."""
    seed: int = 0
    """Base seed; env i of worker w gets seed + 1000 * w + i, eval workers add 10**6."""
    steps: int = 20_000
    """Env steps to collect (agent steps, after action repeat)."""
    run_dir: str = ""
    """Output directory. Empty: ``runs/<name>``."""
    device: str = "auto"
    """Torch device for learners: auto, cpu, cuda, cuda:N."""
    compile: bool = False
    """``torch.compile`` the learner's whole update (Dreamer: the world-model loss with its
    observe loop, and imagination with the actor and critic losses, each one graph with its
    backward pass; fused optimizer steps) and the acting agents' per-step functions. Costs a
    compile of a few minutes at the first update (cached on disk for later runs)."""
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"
    """``torch.compile`` mode with ``compile``: on a GPU, reduce-overhead also captures the
    compiled update as CUDA graphs (a few launches per update instead of one per op)."""
    cpu_rng: bool = False
    """Draw the agent's random numbers (latent samples, actions) from a CPU generator seeded
    from ``run.seed`` and move them to the device: the same samples on a CPU and a GPU (the
    CUDA-vs-CPU tests use it). Costs a host-to-device copy per draw on a GPU."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """Learner compute precision: bf16 runs the forward passes under ``torch.autocast``
    (weights, optimizer states, gradients and distribution math stay float32). For GPUs with
    bf16 (Ampere and newer); CPUs without bf16 instructions get slower."""
    channels_last: bool = False
    """Conv encoder and decoder in channels-last memory format (faster convs on GPUs with
    tensor cores, usually with bf16)."""
    checkpoint_every: int = 0
    """Env steps between checkpoints; 0 checkpoints only at the end."""
    nonfinite_limit: int = 100
    """Learner updates in a row whose losses or gradients are NaN or inf (each one skipped by
    the optimizers, counted in ``counters/nonfinite_updates``) before the run stops with the
    last good checkpoint kept."""


@dataclass(frozen=True)
class EnvConfig:
    """Which environment, how it is wrapped and vectorized. ``None`` means the backend default."""

    RANGES: ClassVar[Ranges] = {
        "action_repeat": (1, None),
        "sticky_actions": (0, 1),
        "time_limit": (1, None),
        "image_size": (8, 1024),
        "base_port": (1, 65535),
        "timeout_wait": (10, None),
    }

    id: str = "CartPole-v1"
    """A gymnasium id (``CartPole-v1``, ``ALE/Pong-v5``) or ``backend:task`` (dmc:walker-walk)."""
    backend: str = "auto"
    """Env backend (``wm-ray list backends``); auto infers it from the id."""
    num_envs: int = 4
    """Envs per vector env (per env worker)."""
    vector: Literal["serial", "subprocess"] = "serial"
    """serial: envs step in this process; subprocess: one process per env. A natively batched
    backend (Brax) steps all envs in one call in this process and refuses subprocess."""
    pixels: bool = False
    """Add a rendered ``image`` to vector-observation envs."""
    image_size: int = 64
    """Side of square ``image`` observations."""
    grayscale: bool = False
    """ALE: grayscale frames (H, W, 1)."""
    action_repeat: int | None = None
    """Agent steps repeat the action this often (ALE frameskip 4, dm_control 2, otherwise 1;
    Brax repeats inside its jitted step)."""
    sticky_actions: float | None = None
    """ALE repeat_action_probability (0.25 by default)."""
    noop_max: int | None = None
    """ALE: up to this many no-op actions after reset (30 by default)."""
    life_loss: bool | None = None
    """ALE: a lost life ends the episode as terminal (off by default)."""
    clip_rewards: bool | None = None
    """ALE: clip rewards to [-1, 1] (off by default)."""
    time_limit: int | None = None
    """Maximum agent steps per episode (truncation); None keeps the task's own limit."""
    camera: int | None = None
    """Camera id: dm_control (0, or 2 for quadruped), gymnasium MuJoCo, Brax (MuJoCo id, -1 the
    free camera; default the model's ``track`` camera, else the free one); Unity: which visual
    observation is the ``image`` (its index among the behaviour's visual observations), needed
    when it has several."""
    full_action_space: bool | None = None
    """ALE: all 18 actions instead of the game's minimal set."""
    behavior: str | None = None
    """Unity: the behaviour to drive when the build has several (its name, ``?team=0`` optional)."""
    worker_id: int | None = None
    """Unity: offset of the first port tried from ``base_port``; each env takes the lowest free
    port from there (leased, so vector envs and env workers on a node never share one)."""
    base_port: int | None = None
    """Unity: first port of the search (5005; unity:editor uses exactly this port, 5004)."""
    timeout_wait: int | None = None
    """Unity: seconds to wait for the build to start and to answer each step (60; at least 10)."""
    no_graphics: bool | None = None
    """Unity: launch the build with -nographics -batchmode (no rendering, vector observations)."""
    time_scale: float | None = None
    """Unity: engine time scale sent through the engine configuration side channel (20)."""


@dataclass(frozen=True)
class ReplayConfig:
    """Replay storage, sampling and the sample:insert limiter (see ``wm_ray/replay``)."""

    RANGES: ClassVar[Ranges] = {"recency_fraction": (0, 1), "min_size": (0, None)}

    capacity: int = 1_000_000
    """Maximum stored steps; the oldest chunks are evicted first."""
    ram_budget: str = "8GiB"
    """Maximum bytes of stored arrays (512MiB, 8GiB, or bytes); the tighter limit binds."""
    chunk_len: int = 64
    """Steps per stored chunk (the unit of insertion, persistence and eviction)."""
    batch_size: int = 16
    """Sequences per sampled batch (B)."""
    seq_len: int = 32
    """Steps per sampled sequence (T; DreamerV3: 64)."""
    selector: Literal["uniform", "recency"] = "uniform"
    """uniform over all valid sequences, or mix in the most recent ones."""
    recency_fraction: float = 0.5
    """recency selector: share of sequences drawn from the newest ``recency_window`` steps."""
    recency_window: int = 10_000
    """recency selector: size of the recent window in steps."""
    cross_episodes: bool = True
    """A sequence may run into the next episode of the same stream (marked by is_first)."""
    samples_per_insert: float = 32.0
    """Train ratio: replayed steps per env step (DreamerV3's definition; 512 in the paper)."""
    tolerance: float | None = None
    """How far (in replayed steps) sampling may run ahead of or behind the ratio. None: one
    batch plus the samples one chunk insert owes (B*T + samples_per_insert*chunk_len), twice
    the least that rules out a deadlock."""
    min_size: int = 1_024
    """Stored steps before sampling may start."""
    persist: bool = True
    """Write chunks to ``<run_dir>/replay`` (atomic files, reloaded on resume)."""
    preload: str | tuple[str, ...] = ()
    """Data set directories (``wm-ray ingest`` output, or run directories) whose chunks are
    stored in replay before training starts, at every start: in memory only, counted as
    ``replay/preloaded_steps``, not as env steps. Their steps must fit the env's."""


@dataclass(frozen=True)
class ResourcesConfig:
    """Actor counts and placement of the Ray runtime (``configs/resources/*.yaml``)."""

    RANGES: ClassVar[Ranges] = {
        "eval_workers": (0, None),
        "pull_every": (0, None),
        "learners": (1, 1024),
    }

    env_workers: int = 1
    """K, env-worker actors (each runs ``env.num_envs`` envs)."""
    replay_shards: int = 1
    """S, replay-shard actors; a stream goes to shard crc32(stream) % S."""
    learners: int = 1
    """L, learner actors in one torch.distributed group; ``replay.batch_size`` % L == 0."""
    eval_workers: int = 1
    """Eval-worker actors (0: no evaluation during the run)."""
    gpus_per_learner: float = 0.0
    cpus_per_learner: float = 2.0
    """Also the learner's torch thread count (at least 1)."""
    cpus_per_env_worker: float = 1.0
    cpus_per_eval_worker: float = 0.0
    """0: evaluation borrows CPU time (it runs every ``eval.every`` steps for seconds)."""
    cpus_per_shard: float = 0.0
    """Replay shards mostly wait on disk and the network; 0 places them anywhere."""
    strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    """Placement-group strategy for the learner and env-worker bundles."""
    placement_timeout: float = 120.0
    """Seconds to wait for the placement group before failing with what the cluster lacks."""
    publish_every: int = 4
    """Learner updates between weight publishes (U). Workers pull the newest version once per
    round, so publishing more often than rounds end only costs the learner time."""
    pull_every: int = 16
    """Vector steps between an env worker's checks for newer weights (0: once per round)."""
    max_in_flight: int = 8
    """Unacknowledged chunk adds per env worker before it waits (backpressure)."""
    address: str | None = None
    """Ray address: None starts an embedded local cluster; ``auto`` joins a running one."""
    namespace: str = "wm_ray"
    omp_wait: Literal["spin", "passive"] = "spin"
    """How the actors' OpenMP threads (the learner's torch threads) wait between parallel
    regions. ``spin``: OpenMP's default (spin briefly, then sleep), fastest when the run has
    its cores to itself (the ``make run`` learner's update 1.6x faster than ``passive`` on 2
    cores). ``passive``: sleep at once (``OMP_WAIT_POLICY=PASSIVE``), for machines shared with
    other busy processes, where spinning threads wait on each other (the update 2.2x slower
    than ``passive`` next to one busy process; ``benchmarks/omp_wait_bench.py``). An
    ``OMP_WAIT_POLICY`` in the environment wins."""
    task_events: bool = False
    """Record Ray task events of the run's actor calls (``ray list tasks``, the dashboard's
    timeline). Off by default: the GCS keeps ~3 KiB per call, which grows by ~60 MiB an hour
    on the default run (benchmarks/soak.py)."""


@dataclass(frozen=True)
class EvalConfig:
    RANGES: ClassVar[Ranges] = {"every": (0, None), "episodes": (0, None)}

    every: int = 2_500
    """Env steps between evaluations; 0 disables periodic evaluation."""
    episodes: int = 10
    num_envs: int = 4
    video: bool = False
    """Write eval videos for image tasks."""


@dataclass(frozen=True)
class LoggingConfig:
    RANGES: ClassVar[Ranges] = {"progress_every": (1, None)}

    every: int = 1_000
    """Env steps between metric log lines."""
    jsonl: bool = True
    tensorboard: bool = True
    seconds: float = 60.0
    """A metrics line also after this many seconds without one (0: by steps only)."""
    progress: bool = True
    """Progress output: a live line on a terminal, plain lines when stdout is not one."""
    progress_every: float = 30.0
    """Seconds between the plain progress lines (stdout not a terminal: logs, CI, jobs)."""


@dataclass(frozen=True)
class RuntimeSections:
    """The sections every run has, whatever its model family."""

    run: RunConfig = field(default_factory=RunConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def section(self, name: str) -> Any:
        """The section called ``name`` (e.g. a family's: ``config.section("dreamer")``)."""
        if name not in {f.name for f in dataclasses.fields(self)}:
            raise KeyError(f"config has no section {name!r}")
        return getattr(self, name)


def _compose() -> type:
    """``Config``: the runtime sections plus one field per family with settings."""
    sections = [(name, cls, field(default_factory=cls)) for name, cls in registry.config_sections()]
    cls = dataclasses.make_dataclass(
        "Config",
        sections,
        bases=(RuntimeSections,),
        frozen=True,
        namespace={"__module__": __name__, "__doc__": "The whole resolved configuration of a run."},
    )
    cls.__qualname__ = "Config"
    return cls


if TYPE_CHECKING:

    class Config(RuntimeSections):
        """The whole resolved configuration of a run (the runtime sections and one section per
        model family: ``config.dreamer``, ``config.iris``, ...)."""

        def __getattr__(self, name: str) -> Any: ...

else:
    Config = _compose()
