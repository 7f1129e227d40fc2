"""Environment backends, shared wrappers and the vector env.

One module per backend (``gymnasium_env``, ``atari``, ``dmc``, ``mujoco``, ``brax_env``,
``robotics``, ``unity``, ``dataset``, ``fake``; listed in ``registry.ENV_BACKENDS``), each with
``make(task, *, seed=None, **options) -> gymnasium.Env``, ``list_ids()``, ``owns(env_id)`` and
``OPTIONS``; a natively batched backend (Brax) adds ``make_vector(task, num_envs, seed,
**options)``, an env with :class:`VectorEnv`'s interface that ``make_vector_env`` uses, and a
backend whose tasks limit how many envs exist at once adds ``max_envs(task)`` (Unity's Editor:
1), which a run's configuration is checked against before anything starts. Every
env they return has a Dict observation space of ``image`` (H, W, C) uint8 and/or ``vector``
(D,) float32, and Discrete or Box(-1, 1) actions. Heavy packages (ale_py, dm_control, mujoco,
jax, gymnasium_robotics, mlagents_envs) are imported only inside the backend that needs them,
when it makes or lists envs. Nothing here imports ``ray``.
"""

from __future__ import annotations

from wm_ray.envs.vector import EnvFactory, VectorEnv, action_batch_sample

__all__ = ["EnvFactory", "VectorEnv", "action_batch_sample"]
