"""``wm-ray play``: step a trained world model from a real start frame and film the dream.

The agent must offer ``dream_reset(images)`` and ``dream_step(dream, actions)`` (IRIS does).
Actions come from a script (``--actions 2,2,3``, repeated to fill ``--steps``), from the
keyboard (one line per step on stdin), or from the agent's own policy acting on the dreamed
frames. The real env is stepped with the same actions alongside, so the video shows
``[real | dream]`` and how far the dream drifts.

An agent whose dream takes *latent* actions (Genie) also offers ``latent_actions()``: one
``(name, env action or None)`` per latent action. The indices then select latent actions, the
real env is stepped with the env action each one names (it stays on its frame where none is
known), and without a script or keyboard the latent actions are drawn uniformly.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import numpy as np

KEYS = {
    "w": "UP",
    "s": "DOWN",
    "a": "LEFT",
    "d": "RIGHT",
    "f": "FIRE",
    " ": "FIRE",
    ".": "NOOP",
}
"""Keyboard letters -> ALE action meanings (digits select an action index directly)."""


def parse_actions(text: str, num_actions: int) -> list[int]:
    """``'2,2,3'`` -> ``[2, 2, 3]``; every entry must be an action index of the env."""
    try:
        actions = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise ValueError(
            f"--actions {text!r} must be comma-separated action indices (0..{num_actions - 1})"
        ) from None
    bad = [a for a in actions if not 0 <= a < num_actions]
    if not actions or bad:
        raise ValueError(
            f"--actions {text!r}: {bad or 'no actions'}; valid indices are 0..{num_actions - 1}"
        )
    return actions


def keyboard_actions(
    meanings: list[str], stream: TextIO = sys.stdin, echo: TextIO = sys.stderr
) -> Iterator[int]:
    """Actions read one line per step: a digit, a key of :data:`KEYS`, empty = repeat, q = stop."""
    names = {name: i for i, name in enumerate(meanings)}
    keys = {k: names[v] for k, v in KEYS.items() if v in names}
    help_line = ", ".join(f"{k!r}={meanings[i]}" for k, i in keys.items())
    echo.write(
        f"actions: 0..{len(meanings) - 1} ({', '.join(meanings)}); {help_line}; "
        "empty line repeats, q quits\n"
    )
    last = names.get("NOOP", 0)
    for line in stream:
        text = line.rstrip("\n").lower()
        if text.strip() == "q":
            return
        if text.strip().isdigit() and int(text) < len(meanings):
            last = int(text)
        elif text[:1] in keys:
            last = keys[text[:1]]
        elif text:
            echo.write(f"unknown action {text!r}; repeating {meanings[last]}\n")
        yield last


def _meanings(venv: Any, num_actions: int) -> list[str]:
    try:
        env = venv._slots[0].env  # serial vector env: the first env's ALE action names
        return list(env.unwrapped.get_action_meanings())
    except (AttributeError, IndexError):
        return [str(i) for i in range(num_actions)]


def play_run(
    run_dir: str | Path,
    steps: int = 100,
    actions: str | None = None,
    keyboard: bool = False,
    which: str = "latest",
    warmup: int = 0,
    out: Path | None = None,
    stdin: TextIO = sys.stdin,
) -> dict[str, Any]:
    """Dream ``steps`` steps of the run's world model from a real frame; write the video.

    Args:
        run_dir: a run with a checkpoint: a path, or a filesystem URI (the checkpoint is
            restored into the run's staging directory, and the default video is uploaded to
            the run's ``videos/``).
        steps: dreamed steps (fewer when the keyboard stream ends).
        actions: scripted action indices ``'2,2,3'``; None with ``keyboard=False`` lets the
            agent's policy act on the dreamed frames.
        warmup: real env steps (agent policy) before the dream starts, for a livelier start.
        out: video path; default ``<run_dir>/videos/play-<checkpoint>.mp4``.

    Returns:
        ``video`` (and ``video_uri`` for a URI run), ``steps``, ``dream_return`` (sum of
        predicted rewards), ``real_return``, ``dream_end`` (first predicted termination step or
        None), ``checkpoint``, ``actions``, ``action_names`` (the names of the indices).
    """
    from wm_ray.factory import create_model
    from wm_ray.loops.setup import make_vector_env
    from wm_ray.media import write_video
    from wm_ray.registry import get_model_spec, list_models
    from wm_ray.rundir.open import open_checkpoint

    if steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    (local, storage), config, path = open_checkpoint(run_dir, which, "play")
    venv = make_vector_env(config.env, seed=config.run.seed + 3 * 10**6, num_envs=1)
    try:
        spec = get_model_spec(config.run.model)
        if not spec.capabilities.steppable:
            can = [n for n in list_models() if get_model_spec(n).capabilities.steppable]
            raise ValueError(
                f"model {spec.name!r} cannot be played: its world model is not steppable "
                f"(models that can: {', '.join(can)})"
            )
        agent: Any = create_model(config.run.model, venv.obs_space, venv.act_space, config)
        agent.load(path / "agent")
        latent = (
            agent.latent_actions() if callable(getattr(agent, "latent_actions", None)) else None
        )
        if latent is not None:
            num_actions, meanings = len(latent), [name for name, _ in latent]
        else:
            num_actions = int(venv.act_space.n)  # type: ignore[attr-defined]
            meanings = _meanings(venv, num_actions)
        source: Iterator[int] | None = None
        if actions is not None:
            script = parse_actions(actions, num_actions)
            source = (script[i % len(script)] for i in range(steps))
        elif keyboard:
            source = keyboard_actions(meanings, stdin)
        elif latent is not None:
            rng = np.random.default_rng(config.run.seed)
            source = (int(rng.integers(num_actions)) for _ in range(steps))
        obs = venv.reset()
        carry = agent.init_policy(1)
        for _ in range(warmup):
            carry, act, _ = agent.policy(carry, obs, mode="eval")
            obs = venv.step(act)
        dream, frame = agent.dream_reset(obs["image"])
        real = obs["image"]
        video = [np.concatenate([real[0], frame[0]], axis=1)]
        dream_obs = {"image": frame, "is_first": np.ones(1, bool)}
        carry = agent.init_policy(1)
        taken: list[int] = []
        dream_return = real_return = 0.0
        dream_end: int | None = None
        real_done = False
        next_action: Callable[[], int | None]
        if source is None:

            def next_action() -> int | None:
                nonlocal carry
                carry, act, _ = agent.policy(carry, dream_obs, mode="eval")
                return int(act[0])

        else:
            iterator = source

            def next_action() -> int | None:
                return next(iterator, None)

        for step in range(steps):
            action = next_action()
            if action is None:
                break
            taken.append(action)
            frame, reward, end = agent.dream_step(dream, np.array([action]))
            dream_return += float(reward[0])
            if dream_end is None and bool(end[0]):
                dream_end = step + 1
            dream_obs = {"image": frame, "is_first": np.zeros(1, bool)}
            env_action = latent[action][1] if latent is not None else action
            if not real_done and env_action is not None:
                obs = venv.step(np.array([env_action]))
                real_return += float(obs["reward"][0])
                real_done = bool(obs["is_last"][0])
                real = obs["image"]
            video.append(np.concatenate([real[0], frame[0]], axis=1))
    finally:
        venv.close()
    target = write_video(np.stack(video), out or local / "videos" / f"play-{path.name}.mp4", fps=15)
    uploaded: dict[str, str] = {}
    if storage is not None and out is None:
        storage.upload_file(target, f"videos/{target.name}")
        uploaded["video_uri"] = storage.display(f"videos/{target.name}")
    return {
        "video": str(target),
        **uploaded,
        "steps": len(taken),
        "dream_return": dream_return,
        "real_return": real_return,
        "dream_end": dream_end,
        "checkpoint": str(path),
        "actions": taken,
        "action_names": meanings,
    }
