"""Atari 2600 games through ale-py (``ALE/Pong-v5``, ``Pong`` or ``pong``).

Protocol (Machado et al., 2018, as in DreamerV3): ``ALE/<Game>-v5`` made with ``frameskip=1``
and wrapped by gymnasium's :class:`~gymnasium.wrappers.AtariPreprocessing`, which repeats each
action ``action_repeat`` (4) frames, max-pools the last two, does up to ``noop_max`` (30)
random no-ops on reset and resizes to ``image_size`` (INTER_AREA). Sticky actions
(``repeat_action_probability`` 0.25) act per emulator frame inside ALE. ``image`` is RGB
(H, W, 3), or (H, W, 1) with ``grayscale``. ALE's frame limit (108,000 frames) is a
truncation; an explicit ``time_limit`` replaces it with a limit of that many agent steps per
game. ``clip_rewards`` clips to [-1, 1] with gymnasium's ``ClipReward``.

Life loss: gymnasium's ``AtariPreprocessing(terminal_on_life_loss=True)`` reports the lost life
as ``terminated`` but its next ``reset()`` restarts the whole game, so a game of five lives
would be cut to one. With ``life_loss=True`` we instead keep ``terminal_on_life_loss=False``
and wrap with :class:`LifeLossTermination`: a lost life (with lives left) ends the episode as
terminal, and the following ``reset()`` continues the same game with one no-op step (the
classic EpisodicLife behaviour). A real reset happens when the game is over, the frame limit is
hit, or ``reset`` is given a seed.
"""

from __future__ import annotations

import importlib.util
from typing import Any, cast

import gymnasium as gym
from gymnasium.wrappers import AtariPreprocessing, ClipReward, TimeLimit

from wm_ray.envs.base import DefaultSeed, DictObservation, StepResult

OPTIONS = frozenset(
    {
        "image_size",
        "grayscale",
        "action_repeat",
        "sticky_actions",
        "noop_max",
        "life_loss",
        "clip_rewards",
        "time_limit",
        "full_action_space",
    }
)
"""Keyword options of :func:`make` besides ``seed``."""

DEFAULT_FRAMESKIP = 4
DEFAULT_STICKY = 0.25
DEFAULT_NOOP_MAX = 30
DEFAULT_MAX_FRAMES = 108_000


def owns(env_id: str) -> bool:
    """Whether ``env_id`` is an ALE namespace id such as ``ALE/Pong-v5``."""
    return env_id.startswith("ALE/")


def _registered_ids() -> list[str]:
    import ale_py  # heavy, imported on demand

    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # no banner per emulator
    gym.register_envs(ale_py)
    return sorted(key for key in gym.registry if key.startswith("ALE/") and key.endswith("-v5"))


def list_ids() -> list[str]:
    """``ALE/<Game>-v5`` for every game ale-py ships; [] without ale-py."""
    if importlib.util.find_spec("ale_py") is None:
        return []
    return _registered_ids()


def canonical_id(task: str) -> str:
    """Map ``Pong``, ``pong``, ``montezuma_revenge`` or ``ALE/Pong-v5`` to ``ALE/<Game>-v5``.

    Raises:
        ValueError: naming the valid games when ``task`` is not one.
    """
    ids = _registered_ids()
    name = task.removeprefix("ALE/")
    if name.endswith("-v5"):
        name = name[: -len("-v5")]
    known = {key[len("ALE/") : -len("-v5")].lower(): key for key in ids}
    found = known.get(name.replace("_", "").lower())
    if found is None or "-" in name:
        games = sorted(key[len("ALE/") : -len("-v5")] for key in ids)
        raise ValueError(f"unknown Atari game {task!r} (only v5 ids are supported); games: {games}")
    return found


class LifeLossTermination(gym.Wrapper):
    """End the episode (terminal) on a lost life; the next reset continues the same game.

    Args:
        env: An ALE env (possibly wrapped) whose ``unwrapped.ale`` reports lives.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._lives = 0
        self._game_over = True

    def _ale_lives(self) -> int:
        return int(cast(Any, self.env.unwrapped).ale.lives())

    def step(self, action: Any) -> StepResult:
        """Step; a lost life with lives remaining becomes ``terminated``."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._game_over = terminated or truncated
        lives = self._ale_lives()
        if 0 < lives < self._lives:
            terminated = True
        self._lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        """Real reset when the game is over (or seeded); otherwise continue with a no-op."""
        if self._game_over or seed is not None:
            obs, info = self.env.reset(seed=seed, options=options)
        else:
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset(options=options)
        self._game_over = False
        self._lives = self._ale_lives()
        return obs, info


def make(
    task: str,
    *,
    seed: int | None = None,
    image_size: int = 64,
    grayscale: bool = False,
    action_repeat: int | None = None,
    sticky_actions: float | None = None,
    noop_max: int | None = None,
    life_loss: bool | None = None,
    clip_rewards: bool | None = None,
    time_limit: int | None = None,
    full_action_space: bool | None = None,
) -> gym.Env:
    """Make an Atari game with the standard preprocessing (see the module docstring).

    Args:
        task: ``ALE/Pong-v5``, ``Pong`` or ``pong``.
        seed: Seed of the first reset.
        image_size: Side of ``image``.
        grayscale: Grayscale frames (H, W, 1) instead of RGB.
        action_repeat: Frameskip (default 4).
        sticky_actions: ALE repeat_action_probability (default 0.25).
        noop_max: Maximum random no-ops after reset (default 30).
        life_loss: A lost life ends the episode as terminal (default False).
        clip_rewards: Clip rewards to [-1, 1] (default False).
        time_limit: Maximum agent steps per game (default: ALE's 108,000 frames).
        full_action_space: All 18 actions (default: the game's minimal set).

    Returns:
        An env with ``image`` observations and Discrete actions.
    """
    if importlib.util.find_spec("ale_py") is None:
        raise ImportError("the atari backend needs `pip install wm_ray[atari]`")
    env_id = canonical_id(task)
    frameskip = DEFAULT_FRAMESKIP if action_repeat is None else action_repeat
    # An explicit time_limit counts agent steps (TimeLimit below); ALE's frame cap is lifted.
    max_frames = DEFAULT_MAX_FRAMES if time_limit is None else None
    env = gym.make(
        env_id,
        frameskip=1,
        repeat_action_probability=DEFAULT_STICKY if sticky_actions is None else sticky_actions,
        full_action_space=bool(full_action_space),
        max_num_frames_per_episode=max_frames,
    )
    env = AtariPreprocessing(
        env,
        noop_max=DEFAULT_NOOP_MAX if noop_max is None else noop_max,
        frame_skip=frameskip,
        screen_size=image_size,
        terminal_on_life_loss=False,
        grayscale_obs=grayscale,
        grayscale_newaxis=True,
    )
    if time_limit is not None:
        env = TimeLimit(env, time_limit)  # inside LifeLossTermination: counts the whole game
    if clip_rewards:
        env = ClipReward(env, -1.0, 1.0)
    if life_loss:
        env = LifeLossTermination(env)
    env = DictObservation(env, image_size)
    return DefaultSeed(env, seed)
