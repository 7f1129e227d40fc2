"""The ``wm-ray`` CLI: train, eval, play, collect, ingest, submit, bench, benchmark, list, ..."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from wm_ray.bench import add_bench_parser
from wm_ray.benchmark.command import add_benchmark_parser
from wm_ray.cli_text import PARSER_TEXT, error_message
from wm_ray.config import Config
from wm_ray.ingest.command import add_ingest_parser
from wm_ray.jobs import add_submit_parser


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--configs",
        nargs="+",
        action="extend",
        default=[],
        metavar="PRESET",
        help="presets from configs/, applied in order (e.g. --configs atari debug)",
    )
    parser.add_argument(
        "--set",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="dotted overrides applied after the presets (e.g. --set replay.capacity=200000)",
    )
    parser.add_argument("--env", default=None, metavar="ID", help="shortcut for --set env.id=ID")


def positive_int(text: str) -> int:
    """argparse type of ``--steps``-like options: an integer >= 1."""
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (>= 1), got {value}")
    return value


def _notes(args: argparse.Namespace) -> None:
    """Say which values one preset took over from another (``--configs iris atari``)."""
    from wm_ray.config_io import preset_conflicts

    for note in preset_conflicts(args.configs, args.overrides, args.env):
        print(f"wm-ray: note: {note}", file=sys.stderr)


def _build(args: argparse.Namespace, validate: bool = False) -> Config:
    """The config of ``args``; with ``validate``, checked as ``train`` checks it
    (:func:`wm_ray.validate.validate_run`: ranges, the family's rules, the env, capabilities)."""
    from wm_ray.config_io import build_config

    overrides = list(args.overrides)
    if getattr(args, "steps", None) is not None:
        overrides.append(f"run.steps={args.steps}")
    if getattr(args, "run_dir", None):
        overrides.append(f"run.run_dir={args.run_dir}")
    config = build_config(args.configs, overrides, env_id=args.env)
    if validate:
        from wm_ray.validate import validate_run

        validate_run(config)
    return config


def cmd_list(args: argparse.Namespace) -> int:
    from wm_ray import registry
    from wm_ray.config_io import list_presets
    from wm_ray.envs import registry as envs

    if args.what == "models":
        for name in registry.list_models():
            spec = registry.get_model_spec(name)
            print(f"{name:12s} {spec.description}")
    elif args.what == "backends":
        for name in envs.list_env_backends():
            backend = envs.get_env_backend_spec(name)
            aliases = f" (aliases: {', '.join(backend.aliases)})" if backend.aliases else ""
            print(f"{name:10s} {backend.description}{aliases}")
    elif args.what == "presets":
        print("\n".join(list_presets()))
    else:
        backends = [args.backend] if args.backend else None
        for name in backends or envs.LISTED_BACKENDS:
            try:
                ids = envs.list_envs(model=args.model, backend=name)
            except ImportError as err:
                print(f"# {name}: not installed ({err.name}); pip install 'wm_ray[{name}]'")
                continue
            if ids or args.backend:
                print(f"# {name} ({len(ids)})")
                print("\n".join(ids))
    return 0


def cmd_show_config(args: argparse.Namespace) -> int:
    from wm_ray.config_io import annotate_yaml, config_sources, to_yaml

    config = _build(args, validate=not args.no_check)
    _notes(args)
    if args.plain:
        print(to_yaml(config), end="")
        return 0
    sources = config_sources(args.configs, args.overrides, args.env)
    print(annotate_yaml(to_yaml(config), sources), end="")
    return 0


def _where(summary: dict[str, object], name: str) -> str:
    """``name`` in the run's local directory, plus where it is synced to for a URI run."""
    remote, local = str(summary["run_dir"]), str(summary.get("local_dir", summary["run_dir"]))
    path = Path(local) / name
    return str(path) if remote == local else f"{path} -> {remote}/{name}"


def cmd_train(args: argparse.Namespace) -> int:
    from wm_ray.config_io import ConfigError, build_config
    from wm_ray.rundir.open import load_run_config
    from wm_ray.rundir.paths import run_location

    if args.resume:
        if not args.run_dir:
            raise ConfigError("--resume needs --run-dir DIR of the run to continue")
        base = load_run_config(args.run_dir)
        overrides = [*args.overrides, f"run.run_dir={args.run_dir}"]
        if args.steps is not None:
            overrides.append(f"run.steps={args.steps}")
        config = build_config(args.configs, overrides, base=base, env_id=args.env)
    else:
        config = _build(args)
    _notes(args)
    if args.quiet:
        config = build_config([], ["logging.progress=false"], base=config)
    if args.address:
        config = build_config([], [f"resources.address={args.address}"], base=config)
    if args.single_process:
        from wm_ray.loops.train import train
    else:
        from wm_ray.actors.runtime import train
    summary = train(config, run_location(config), args.resume, args.allow_config_change)
    ret, best = summary["eval_return"], summary["best_eval_return"]
    shown = f"eval/return {ret:.1f} (final)" if ret is not None else "no evaluation"
    if best is not None:
        shown += f", best {best:.1f} at {summary['best_eval_step']:,} steps"
    print(
        f"done: {summary['env_steps']:,} env steps, {summary['updates']:,} updates in "
        f"{summary['seconds'] / 60:.1f} min; {shown}\n"
        f"  curve:      {summary['curve']}\n"
        f"  checkpoint: {summary['checkpoint']}"
        + (f" (best: {summary['best_checkpoint']})" if summary["best_checkpoint"] else "")
        + "\n"
        f"  metrics:    {_where(summary, 'metrics.jsonl')} (TensorBoard: "
        f"{Path(summary['local_dir']) / 'tb'})"
        + (f"\n  videos:     {summary['videos']}" if summary["videos"] else "")
        + (
            f"\n  synced to:  {summary['run_dir']}"
            if summary["run_dir"] != summary["local_dir"]
            else ""
        )
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from wm_ray.loops.evaluate import evaluate_run

    result = evaluate_run(args.run_dir, args.episodes, args.video, args.checkpoint)
    returns = ", ".join(f"{r:.1f}" for r in result["returns"])
    print(
        f"eval/return {result['eval/return']:.2f} over {result['eval/episodes']} episodes "
        f"({returns}) from {result['checkpoint']}"
        + (f"; video {result['video']}" if "video" in result else "")
        + (f" (uploaded to {result['video_uri']})" if "video_uri" in result else "")
    )
    return 0


def cmd_play(args: argparse.Namespace) -> int:
    from wm_ray.loops.play import play_run

    result = play_run(
        args.run_dir,
        steps=args.steps,
        actions=args.actions,
        keyboard=args.keyboard,
        which=args.checkpoint,
        warmup=args.warmup,
        out=Path(args.out) if args.out else None,
    )
    end = result["dream_end"]
    print(
        f"dreamed {result['steps']} steps from {result['checkpoint']}: predicted return "
        f"{result['dream_return']:.1f} (real env with the same actions: "
        f"{result['real_return']:.1f})"
        + (f", predicted episode end at step {end}" if end else "")
        + f"\n  video [real | dream]: {result['video']}"
        + (f" (uploaded to {result['video_uri']})" if "video_uri" in result else "")
    )
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    from wm_ray.loops.collect import collect
    from wm_ray.rundir.paths import run_location

    config = _build(args, validate=True)
    summary = collect(config, run_location(config), progress=not args.quiet)
    replay = summary["replay"]
    mean = summary["mean_return"]
    returns = f"mean return {mean:.2f}" if mean is not None else "no episode finished"
    print(
        f"collected {summary['env_steps']:,} steps ({summary['episodes']} episodes, {returns}) "
        f"at {summary['fps_env']:,.0f} steps/s into replay: "
        f"{int(replay['steps']):,} steps in {int(replay['chunks'])} chunks, "
        f"{replay['bytes'] / 2**20:.1f} MiB -> {_where(summary, 'replay')}"
    )
    print(f"summary: {_where(summary, 'summary.json')}")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    """Submit ``wm-ray train <args>`` as a Ray job and follow it (:mod:`wm_ray.jobs`)."""
    import shlex

    from wm_ray.config_io import ConfigError
    from wm_ray.jobs import submit_and_follow

    train_argv = list(args.train_args)
    if train_argv[:1] == ["--"]:
        train_argv = train_argv[1:]
    train = make_parser().parse_args(["train", *train_argv])  # bad options: usage error, exit 2
    if train.single_process:
        raise ConfigError("--single-process trains without Ray; it has no place in a Ray job")
    run_dir = train.run_dir or ""
    if not (Path(run_dir).is_absolute() or "://" in run_dir):
        raise ConfigError(
            f"--run-dir {run_dir or '(unset)'}: a job needs an absolute path on storage every "
            "node reaches (e.g. /shared/runs/NAME) or a URI (s3://bucket/runs/NAME); a relative "
            "one would land in the job's temporary working directory on the head"
        )
    if not args.no_check and not train.resume:
        _build(train, validate=True)  # bad presets, values or env ids fail before the cluster
    if train.address is None:
        train_argv = ["--address", "auto", *train_argv]
    entrypoint = shlex.join(["wm-ray", "train", *train_argv])
    return submit_and_follow(args, entrypoint, run_dir)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wm-ray", **PARSER_TEXT)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list models, envs, env backends or config presets")
    p.add_argument("what", choices=["models", "envs", "backends", "presets"])
    p.add_argument("--model", default=None, help="envs: only those this model family supports")
    p.add_argument("--backend", default=None, help="envs: only this backend")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "show-config",
        help="print the resolved config as YAML, each value set by a preset or override "
        "commented with its source",
    )
    _config_args(p)
    p.add_argument("--plain", action="store_true", help="no source comments")
    p.add_argument("--no-check", action="store_true", help="skip train's checks (no env made)")
    p.set_defaults(func=cmd_show_config)

    p = sub.add_parser("train", help="train a world-model agent on the Ray runtime")
    _config_args(p)
    p.add_argument("--steps", type=positive_int, default=None, help="env steps (run.steps)")
    p.add_argument(
        "--run-dir",
        default=None,
        help="output directory (run.run_dir): a path, or a filesystem URI (s3://bucket/run, "
        "gs://, hdfs://, abfs://, file:///abs/path) worked on in a local staging dir and synced",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    p.add_argument(
        "--allow-config-change", action="store_true", help="accept a changed config on --resume"
    )
    p.add_argument("--quiet", action="store_true", help="no live progress line")
    p.add_argument(
        "--single-process",
        action="store_true",
        help="the reference loop in this process, without Ray (for debugging)",
    )
    p.add_argument(
        "--address",
        default=None,
        help="join a running Ray cluster (auto, or host:port); default: an embedded local one",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate the latest checkpoint of a run")
    p.add_argument("--run-dir", required=True, help="the run: a directory or a filesystem URI")
    p.add_argument("--episodes", type=positive_int, default=None, help="default: eval.episodes")
    p.add_argument("--video", action="store_true", help="write a video (image tasks)")
    p.add_argument(
        "--checkpoint", default="latest", help="latest (default), best, or a checkpoint directory"
    )
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "play", help="step a run's learned world model from a real frame and write a video"
    )
    p.add_argument("--run-dir", required=True, help="the run: a directory or a filesystem URI")
    p.add_argument("--steps", type=positive_int, default=100, help="dreamed steps (default 100)")
    how = p.add_mutually_exclusive_group()
    how.add_argument(
        "--actions", default=None, help="scripted action indices, e.g. 2,2,3 (repeated)"
    )
    how.add_argument(
        "--keyboard",
        action="store_true",
        help="read one action per line from stdin (digit, w/s/a/d/f, empty repeats, q quits)",
    )
    p.add_argument(
        "--warmup", type=int, default=0, help="real env steps (agent policy) before dreaming"
    )
    p.add_argument(
        "--checkpoint", default="latest", help="latest (default), best, or a checkpoint directory"
    )
    p.add_argument("--out", default=None, help="video path (default: RUN/videos/play-*.mp4)")
    p.set_defaults(func=cmd_play)

    p = sub.add_parser("collect", help="collect experience with the configured policy into replay")
    _config_args(p)
    p.add_argument("--steps", type=positive_int, default=None, help="env steps (run.steps)")
    p.add_argument(
        "--run-dir",
        default=None,
        help="output directory (run.run_dir): a path, or a filesystem URI (s3://bucket/run, "
        "gs://, hdfs://, abfs://, file:///abs/path) worked on in a local staging dir and synced",
    )
    p.add_argument("--quiet", action="store_true", help="no live progress line")
    p.set_defaults(func=cmd_collect)

    add_submit_parser(sub).set_defaults(func=cmd_submit)
    add_ingest_parser(sub)
    add_bench_parser(sub)
    add_benchmark_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import logging
    import signal

    from wm_ray.config_io import ConfigError
    from wm_ray.envs.vector_worker import EnvFailure
    from wm_ray.loops.schedule import TrainingDiverged
    from wm_ray.registry import UnknownNameError
    from wm_ray.rundir.checkpoint import CheckpointError

    # wm_ray's own INFO lines; other libraries' (MuJoCo, OpenGL, Ray, ...) only from WARNING.
    logging.basicConfig(level=logging.WARNING, format="wm-ray: %(levelname)s: %(message)s")
    logging.getLogger("wm_ray").setLevel(logging.INFO)

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stops as gracefully as Ctrl-C
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    args = make_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, UnknownNameError, CheckpointError, ValueError) as err:
        print(f"wm-ray: error: {error_message(err)}", file=sys.stderr)
        return 2
    except (TrainingDiverged, EnvFailure) as err:
        print(f"wm-ray: error: {error_message(err)}", file=sys.stderr)
        return 3
    except OSError as err:  # a full disk, a read-only or vanished run directory, ...
        where = f": {err.filename}" if err.filename else ""
        print(f"wm-ray: error: {err.strerror or error_message(err)}{where}", file=sys.stderr)
        return 4
    except KeyboardInterrupt:
        print("wm-ray: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
