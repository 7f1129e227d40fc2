"""One behaviour of a Unity ML-Agents build as a gymnasium env (``unity:/path/to/build``).

``unity:<path>`` launches the build's executable (``<path>`` itself, or ``<path>.x86_64`` and
the other suffixes ML-Agents accepts); ``unity:editor`` waits for a running Unity Editor (press
Play). ML-Agents' Python side is the gRPC server of the connection; each env takes the lowest
free port from ``base_port + worker_id`` (5005, the Editor: exactly 5004) through a lease
(:mod:`wm_ray.envs.unity_ports`), so the envs of vector envs and env workers on one node never
collide and a rebuilt env binds again. The engine time scale is set to ``time_scale`` (20, as
``mlagents-learn``) through ML-Agents' engine configuration side channel.

Spaces: a behaviour drives exactly one agent (a behaviour with several agents is refused). A
visual (rank-3) observation becomes ``image`` (uint8, ML-Agents' [0, 1] scaled by 255, resized
to ``image_size``); with several, ``camera`` picks one by its index among them (the others are
dropped). The other observations are flattened and concatenated, in the behaviour's order, into
``vector`` float32. Continuous actions are Box(-1, 1) (ML-Agents' range); one discrete branch is
Discrete(n); several branches are flattened into Discrete(n1 * n2 * ...), decoded row-major
(the first branch varies slowest); hybrid continuous + discrete actions are refused. Action masks
are not applied. Other behaviours of the scene get ML-Agents' empty (zero) actions.

Episodes: a terminal step with ``interrupted`` (the agent's max step) is a truncation, any other
terminal step a termination. ``reset`` resets the whole academy (as ML-Agents' gym wrapper).

Seeding: ML-Agents has no per-reset seed; the seed goes to the build at launch (the Academy
seeds ``UnityEngine.Random`` with it). ``reset(seed=s)`` therefore relaunches the build with
seed ``s``, unless it was just launched with ``s`` and not used since; resets without a seed
never relaunch. The Editor never reconnects (that needs Play pressed again): it keeps the seed
of its connection and says so. It serves one env at a time (:func:`max_envs`), which a run's
configuration is checked against before anything connects. The same seed and actions repeat
the same episodes when the game's logic is deterministic given ``UnityEngine.Random`` (physics
and frame timing may not be).

Failures: an ML-Agents error (the process died, a timeout after ``timeout_wait`` seconds) is
raised from ``reset``/``step`` as :class:`UnityEnvError` naming the build, port and pid, so the
vector env rebuilds the env; closing stops the process (a failed one is killed at once) and
frees the port.
"""

from __future__ import annotations

import importlib.util
import os

import gymnasium as gym

from wm_ray.envs.base import standard_wrappers
from wm_ray.envs.unity_env import (
    BUILD_BASE_PORT,
    DEFAULT_TIME_SCALE,
    DEFAULT_TIMEOUT_WAIT,
    EDITOR,
    EDITOR_PORT,
    UnityEnv,
    UnityEnvError,
)

OPTIONS = frozenset(
    {
        "image_size",
        "action_repeat",
        "time_limit",
        "camera",
        "behavior",
        "worker_id",
        "base_port",
        "timeout_wait",
        "no_graphics",
        "time_scale",
    }
)
"""Keyword options of :func:`make` besides ``seed``."""

MIN_TIMEOUT_WAIT = 10  # ML-Agents polls the process every timeout_wait // 10 s (0: a busy loop)
BUILD_SUFFIXES = ("", ".x86_64", ".x86", ".app", ".exe")


def owns(env_id: str) -> bool:
    """Unity ids always carry the ``unity:`` prefix, so no plain id belongs here."""
    return False


def list_ids() -> list[str]:
    """``unity:editor`` when mlagents-envs is installed (builds are paths: ``unity:<path>``)."""
    return [f"unity:{EDITOR}"] if importlib.util.find_spec("mlagents_envs") else []


def max_envs(task: str) -> int | None:
    """The Editor serves one connection (one env) at a time; builds have no limit."""
    return 1 if task == EDITOR else None


def build_path(task: str) -> str:
    """The absolute path of the build ``task`` names; refuses a missing or non-executable one."""
    if not task:
        raise FileNotFoundError("unity needs unity:<path to a build's executable> or unity:editor")
    path = os.path.abspath(os.path.expanduser(task))
    found = [path + suffix for suffix in BUILD_SUFFIXES if os.path.exists(path + suffix)]
    if not found:
        raise FileNotFoundError(
            f"Unity build {task!r} not found: no {path} (nor with {', '.join(BUILD_SUFFIXES[1:])})"
            "; use unity:<path to the build's executable> or unity:editor"
        )
    if os.path.isfile(found[0]) and not os.access(found[0], os.X_OK):
        raise PermissionError(f"Unity build {found[0]} is not executable (chmod +x it)")
    return path


def make(
    task: str,
    *,
    seed: int | None = None,
    image_size: int = 64,
    action_repeat: int | None = None,
    time_limit: int | None = None,
    camera: int | None = None,
    behavior: str | None = None,
    worker_id: int | None = None,
    base_port: int | None = None,
    timeout_wait: int | None = None,
    no_graphics: bool | None = None,
    time_scale: float | None = None,
) -> gym.Env:
    """Make the env of one behaviour of a Unity build: ``/path/to/build`` or ``editor``.

    Args:
        task: The build's executable (absolute or relative path) or ``editor``.
        seed: Seed sent to the build at launch (default 0; see the module doc).
        image_size: Side of ``image``.
        action_repeat: Repeats per agent step (default 1).
        time_limit: Maximum agent steps per episode (default: the behaviour's own max step).
        camera: Index of the visual observation used as ``image`` when there are several.
        behavior: Behaviour to drive when the build has several.
        worker_id: Offset of the first port tried from ``base_port`` (default 0).
        base_port: First port (default 5005; 5004 for the Editor, which uses exactly one).
        timeout_wait: Seconds to wait for the build to start and for each step (default 60,
            at least 10).
        no_graphics: Launch with ``-nographics -batchmode`` (no rendering: vector observations).
        time_scale: Engine time scale (default 20).

    Returns:
        An env following the ``wm_ray.envs`` observation/action contract.
    """
    if importlib.util.find_spec("mlagents_envs") is None:
        raise ImportError("the unity backend needs `pip install wm_ray[unity]` (mlagents-envs)")
    file_name = None if task == EDITOR else build_path(task)
    first = (base_port or (EDITOR_PORT if file_name is None else BUILD_BASE_PORT)) + (
        worker_id or 0
    )
    wait = DEFAULT_TIMEOUT_WAIT if timeout_wait is None else timeout_wait
    scale = DEFAULT_TIME_SCALE if time_scale is None else time_scale
    checks = [
        ("worker_id", worker_id or 0, worker_id is None or worker_id >= 0, ">= 0"),
        ("port", first, 1 <= first <= 65535, "base_port + worker_id in 1..65535"),
        ("timeout_wait", wait, wait >= MIN_TIMEOUT_WAIT, f">= {MIN_TIMEOUT_WAIT} seconds"),
        ("time_scale", scale, scale > 0, "> 0"),
        ("camera", camera, camera is None or camera >= 0, ">= 0"),
    ]
    for name, value, ok, valid in checks:
        if not ok:
            raise ValueError(f"unity option {name}={value} is invalid; valid: {valid}")
    env = UnityEnv(
        file_name,
        seed=0 if seed is None else seed,
        behavior=behavior,
        camera=camera,
        first_port=first,
        timeout_wait=wait,
        no_graphics=bool(no_graphics),
        time_scale=scale,
    )
    return standard_wrappers(
        env,
        seed=seed,
        pixels=False,
        image_size=image_size,
        action_repeat=1 if action_repeat is None else action_repeat,
        time_limit=time_limit,
    )


__all__ = ["OPTIONS", "UnityEnv", "UnityEnvError", "build_path", "list_ids", "make", "owns"]
