"""Atomic run checkpoints: ``<run_dir>/checkpoints/step-<env steps>/``.

A checkpoint directory holds the resolved ``config.yaml``, ``agent/`` (weights, optimizer and
normalizer state, written by the agent's ``save``), ``state.json`` (the run state, below) and
``meta.json`` (format version and a SHA-256 of every other file). It
is written under a temporary name and renamed into place, and ``latest`` (a one-line file) is
replaced atomically afterwards, so a crash at any point leaves the previous checkpoint intact.
Loading verifies every checksum: a truncated or altered file is refused with a message naming it.
For a run directory on a filesystem URI these local checkpoints are uploaded by
:mod:`wm_ray.rundir.sync` (``meta.json`` last, then ``latest``) and restored from it.

The run state (``state.json``) is one format for both loops (:func:`run_state`): the run's
counters, the learner's counters, and per replay shard its state and manifest. The
single-process loop writes it with its shards (one by default) as the Ray runtime does, so a
run started by either resumes in the other. :func:`read_run_state` also reads the states of
older wm_ray versions.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

FORMAT = 1
KEEP = 3
"""How many ``step-*`` checkpoints a run keeps (older ones are deleted, remote copies too)."""


class CheckpointError(RuntimeError):
    """A missing, partial or corrupt checkpoint; the message names the file and the problem."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != "meta.json")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    with tmp.open("rb") as file:
        os.fsync(file.fileno())
    os.replace(tmp, path)


def replace_dir(tmp: Path, final: Path) -> None:
    """Move the finished directory ``tmp`` to ``final``, replacing what is there.

    A directory cannot be replaced in one rename: the old one is moved aside first, so at
    every moment either the old or the new directory is complete under a known name.
    """
    if final.exists():
        old = final.with_name(f".old-{final.name}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    save_agent: Callable[[Path], object],
    state: dict[str, Any],
    config_yaml: str,
    keep: int = KEEP,
    tag: str | None = None,
) -> Path:
    """Write checkpoint ``step-<step>`` atomically and point ``latest`` at it.

    With ``tag`` (e.g. ``"best"``) the checkpoint goes to ``checkpoints/<tag>`` instead,
    replacing the previous one of that tag, and ``latest`` and the rotation are left alone.

    Args:
        run_dir: the run directory.
        step: env steps at the checkpoint (names the directory).
        save_agent: writes the agent into the directory it is given (``agent.save``).
        state: JSON-able counters and component states.
        config_yaml: the resolved config.
        keep: how many newest checkpoints to keep (older ones are deleted).
    """
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = tag or f"step-{step:012d}"
    final = root / name
    tmp = root / f".tmp-{name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_agent(tmp / "agent")
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    (tmp / "config.yaml").write_text(config_yaml)
    files = {str(p.relative_to(tmp)): _sha256(p) for p in _files(tmp)}
    (tmp / "meta.json").write_text(json.dumps({"format": FORMAT, "step": step, "files": files}))
    replace_dir(tmp, final)
    if tag:
        return final
    _write_atomic(root / "latest", final.name + "\n")
    for old in sorted(root.glob("step-*"))[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read_files(directory: str | Path) -> dict[str, bytes]:
    """Every file under ``directory`` as ``{relative posix path: bytes}`` (e.g. an agent's files).

    This is how the Ray runtime moves an agent between a learner's node and the coordinator's
    run directory without a shared filesystem (see :func:`write_files`).
    """
    root = Path(directory)
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def write_files(directory: str | Path, files: dict[str, bytes]) -> Path:
    """Write :func:`read_files` output under ``directory``; returns it.

    Raises:
        CheckpointError: for a name that is absolute or leaves ``directory`` (``..``).
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        parts = Path(name).parts
        if not parts or Path(name).is_absolute() or ".." in parts:
            raise CheckpointError(f"refusing to write {name!r}: not a path inside {root}")
        path = root.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def tag_checkpoint(path: str | Path, tag: str) -> Path:
    """Copy the checkpoint ``path`` to ``checkpoints/<tag>`` atomically (replacing the old one).

    Raises:
        CheckpointError: when ``path`` is not a complete checkpoint.
    """
    source = Path(path)
    verify_checkpoint(source)
    root = source.parent
    final, tmp = root / tag, root / f".tmp-{tag}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    replace_dir(tmp, final)
    return final


def find_checkpoint(run_dir: str | Path, which: str = "latest") -> Path | None:
    """``latest``, a tag such as ``best``, or a checkpoint directory path."""
    if which == "latest":
        return latest_checkpoint(run_dir)
    path = Path(run_dir) / "checkpoints" / which
    if path.is_dir():
        return path
    return Path(which) if (Path(which) / "meta.json").is_file() else None


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint ``latest`` names, or None when the run has none."""
    root = Path(run_dir) / "checkpoints"
    pointer = root / "latest"
    if not pointer.is_file():
        return None
    path = root / pointer.read_text().strip()
    if not path.is_dir():
        raise CheckpointError(f"{pointer} names {path.name}, which does not exist")
    return path


def verify_checkpoint(path: str | Path) -> dict[str, Any]:
    """Check ``meta.json`` and every file's checksum; returns the meta. Raises CheckpointError."""
    path = Path(path)
    meta_path = path / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} has no meta.json (incomplete write?)") from None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"checkpoint {meta_path} is not valid JSON: {err}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("files"), dict):
        raise CheckpointError(f"checkpoint {meta_path} is not a checkpoint manifest")
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"checkpoint {path} has format {meta.get('format')!r}; this wm_ray reads {FORMAT}"
        )
    for name, digest in meta["files"].items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"checkpoint file {file} is missing")
        if _sha256(file) != digest:
            raise CheckpointError(f"checkpoint file {file} is corrupt (checksum mismatch)")
    extra = {str(p.relative_to(path)) for p in _files(path)} - set(meta["files"])
    if extra:
        raise CheckpointError(f"checkpoint {path} has files not in its manifest: {sorted(extra)}")
    return meta


def other_checkpoints(path: str | Path) -> list[str]:
    """Names of the other checkpoints beside ``path`` that have a manifest (tags such as
    ``best`` first, then steps newest first): what a refused checkpoint's message offers."""
    path = Path(path)
    root = path.parent
    if not root.is_dir():
        return []
    names = [
        p.name
        for p in root.iterdir()
        if p.is_dir() and p.resolve() != path.resolve() and (p / "meta.json").is_file()
    ]
    tags = sorted(n for n in names if not n.startswith("step-"))
    steps = sorted((n for n in names if n.startswith("step-")), reverse=True)
    return tags + steps


def refused(err: CheckpointError, path: str | Path, how: str) -> CheckpointError:
    """``err`` with the checkpoints that are there instead and ``how`` to use one (e.g.
    ``--checkpoint NAME``)."""
    others = other_checkpoints(path)
    if not others:
        return CheckpointError(f"{err}; the run has no other checkpoint")
    shown = ", ".join(others[:4]) + (" ..." if len(others) > 4 else "")
    return CheckpointError(f"{err}; other checkpoints: {shown} ({how})")


def load_state(path: str | Path) -> dict[str, Any]:
    """The verified run state of a checkpoint (:func:`read_run_state` of its ``state.json``)."""
    verify_checkpoint(path)
    return read_run_state(json.loads((Path(path) / "state.json").read_text()))


STATE_FORMAT = 2
"""Version of the run state in ``state.json``."""


def run_state(
    counters: dict[str, Any],
    learner: dict[str, Any],
    shards: list[dict[str, Any]],
    manifests: list[dict[str, Any]],
    streams: Sequence[str] = (),
) -> dict[str, Any]:
    """The run state a checkpoint records (JSON-able).

    Args:
        counters: the run's counters (``wm_ray.loops.schedule.RunCounters``).
        learner: the learner's ``updates``, published weights ``version`` and ``sampled_floor``.
        shards: every replay shard's ``Replay.state_dict()``, in shard order.
        manifests: every shard's ``Replay.manifest()``.
        streams: the env workers' stream prefixes (the Ray runtime's; informational).
    """
    return {
        "format": STATE_FORMAT,
        "counters": counters,
        "learner": learner,
        "shards": list(shards),
        "shard_manifests": list(manifests),
        "streams": list(streams),
    }


def read_run_state(state: dict[str, Any]) -> dict[str, Any]:
    """A ``state.json`` in the current format, whichever wm_ray version wrote it.

    Raises:
        CheckpointError: for a state this version cannot read.
    """
    version = state.get("format")
    if version == STATE_FORMAT:
        return state
    if version is not None or "counters" not in state:
        raise CheckpointError(
            f"checkpoint state has format {version!r}; this wm_ray reads {STATE_FORMAT} and "
            "the formats before it"
        )
    if "shards" in state:  # the Ray runtime's state before format 2
        return {**state, "format": STATE_FORMAT, "streams": state.get("streams", [])}
    if "replay" in state:  # the single-process loop's state before format 2: one replay
        counters = dict(state["counters"])
        learner = {"updates": int(counters.get("updates", 0)), "version": -1, "sampled_floor": 0}
        return run_state(counters, learner, [state["replay"]], [state["replay_manifest"]])
    raise CheckpointError("checkpoint state has neither replay shards nor a replay")
