"""The text of ``wm-ray --help`` (what the tool is and where its env ids come from) and of its
errors."""

from __future__ import annotations

import argparse
from typing import Any

EPILOG = """\
env ids (--set env.id=..., wm-ray list backends / list envs):
  CartPole-v1, Pendulum-v1        gymnasium (vector; pixels=true renders)
  ALE/Pong-v5, atari:pong         ALE via ale-py (64x64 frames, frameskip 4, sticky actions)
  dmc:walker-walk                 DeepMind Control Suite (proprio vector, camera images)
  HalfCheetah-v5                  gymnasium MuJoCo
  brax:ant, brax:inverted_pendulum
                                  Brax on JAX: one jitted call steps the whole vector env
  robotics:FetchReach-v4          Gymnasium Robotics (goal dict in vector, success metric)
  unity:/path/to/build.x86_64     Unity ML-Agents build (or unity:editor), one port per env
  dataset:DIR                     a `wm-ray ingest` data set played as an env (no actions)

examples:
  wm-ray train --configs debug --steps 2000
  wm-ray train --configs dreamer --set env.id=brax:ant
  wm-ray benchmark --suite atari100k --seeds 5 --configs dreamer --out bench/a100k
"""

PARSER_TEXT: dict[str, Any] = {
    "description": "World-model reinforcement learning on Ray.",
    "epilog": EPILOG,
    "formatter_class": argparse.RawDescriptionHelpFormatter,
}
"""Keyword arguments of the top-level ``argparse.ArgumentParser``."""


def error_message(err: BaseException) -> str:
    """The message of ``err``; for an error raised in a Ray actor (its text starts with
    ``ray::`` and the remote traceback), the message of the error raised there."""
    text = str(err)
    if "ray::" not in text.split("\n", 1)[0]:
        return text
    cause = getattr(err, "cause", None)  # a RayTaskError keeps the remote error
    if isinstance(cause, BaseException):
        return str(cause)
    return [line for line in text.splitlines() if line.strip()][-1].strip()


__all__ = ["EPILOG", "PARSER_TEXT", "error_message"]
