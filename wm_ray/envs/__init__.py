"""Environment backends, shared wrappers and the vector env.

One module per backend (``gymnasium_env``, ``atari``, ``dmc``, ``mujoco``, ``fake``), each with
``make(task, *, seed=None, **options) -> gymnasium.Env``, ``list_ids()``, ``owns(env_id)`` and
``OPTIONS``. Every env they return has a Dict observation space of ``image`` (H, W, C) uint8
and/or ``vector`` (D,) float32, and Discrete or Box(-1, 1) actions. Heavy packages (ale_py,
dm_control, mujoco) are imported only inside the backend that needs them, when it makes or
lists envs. Nothing here imports ``ray``.
"""

from __future__ import annotations

from wm_ray.envs.vector import EnvFactory, VectorEnv, action_batch_sample

BACKEND_MODULES = {
    "gymnasium": "wm_ray.envs.gymnasium_env",
    "atari": "wm_ray.envs.atari",
    "dmc": "wm_ray.envs.dmc",
    "mujoco": "wm_ray.envs.mujoco",
    "fake": "wm_ray.envs.fake",
}
"""Backend name -> module implementing the backend contract (import it with importlib)."""

__all__ = ["BACKEND_MODULES", "EnvFactory", "VectorEnv", "action_batch_sample"]
