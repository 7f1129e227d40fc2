"""``wm-ray bench``: the benchmark suite of a source checkout (what ``make bench`` runs)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def _package_parent() -> Path:
    """The directory holding the wm_ray package: the checkout itself for an editable install."""
    return Path(__file__).resolve().parents[1]


def _bench_root() -> Path | None:
    """The source checkout to benchmark: the current directory, else the package's parent."""
    for root in (Path.cwd(), _package_parent()):
        if (root / "benchmarks" / "suite.py").is_file():
            return root
    return None


def cmd_bench(args: argparse.Namespace) -> int:
    """Run ``python -m benchmarks.suite`` (what ``make bench`` runs) in the checkout; its exit
    code (0 when every step succeeded)."""
    import subprocess

    root = _bench_root()
    if root is None:
        print(
            f"wm-ray: error: wm-ray bench needs a source checkout: benchmarks/ not found in "
            f"{Path.cwd()} or {_package_parent()}; clone the repository and run it there",
            file=sys.stderr,
        )
        return 2
    suite_argv: list[str] = []
    if args.only:
        suite_argv += ["--only", *args.only]
    if args.skip:
        suite_argv += ["--skip", *args.skip]
    if args.peer_budget_minutes is not None:
        suite_argv += ["--peer-budget-minutes", str(args.peer_budget_minutes)]
    if args.keep_going:
        suite_argv.append("--keep-going")
    if args.dry_run:
        suite_argv.append("--dry-run")
    sys.stdout.flush()
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.suite", *suite_argv], cwd=root)
    try:
        code = proc.wait()
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (see main): the suite stops its step too
        proc.terminate()
        proc.wait()
        raise
    return code if code >= 0 else 128 - code  # killed by signal N: 128 + N, as a shell reports


def add_bench_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``bench`` subcommand's parser."""
    p: argparse.ArgumentParser = sub.add_parser(
        "bench",
        help="run the benchmark suite (as make bench) and regenerate the expected-speed table",
        description="Run `python -m benchmarks.suite` in the source checkout (the current "
        "directory, else the one wm_ray is installed from): every benchmark in benchmarks/, "
        "then the README's expected-speed table. Step names: see --dry-run.",
    )
    p.add_argument(
        "--only",
        nargs="+",
        action="extend",
        default=[],
        metavar="NAME",
        help="run only these steps (summary still runs last unless --skip summary)",
    )
    p.add_argument(
        "--skip", nargs="+", action="extend", default=[], metavar="NAME", help="leave out steps"
    )
    p.add_argument(
        "--peer-budget-minutes",
        type=float,
        default=None,
        metavar="MIN",
        help="wall-clock budget of each CartPole learning run in the peer step (default 15)",
    )
    p.add_argument("--keep-going", action="store_true", help="run every step even after a failure")
    p.add_argument("--dry-run", action="store_true", help="print the commands without running them")
    p.set_defaults(func=cmd_bench)
    return p
