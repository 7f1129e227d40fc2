"""The checks every model family passes, from its registry line alone (the conformance suite).

``tests/conformance`` runs :func:`check_family` for every name of ``wm_ray.list_models()`` and
every observation / action kind its :class:`~wm_ray.registry.Capabilities` claim, at the sizes
its ``test_config`` gives; a new family gets all of them by adding its registry line. Each check
raises :class:`ConformanceError` naming the family and what it got wrong:

- ``files``: a learning family's folder has ``config.py``, ``networks.py``, ``losses.py``,
  ``agent.py`` and ``README.md``; its agent class has every method of the agent protocol;
- ``build``: ``create_model`` builds the learner and the acting-only agent;
- ``acting``: batched acting with a carry, valid actions, and ``is_first`` resets: a stream that
  restarts acts as a fresh stream would, whatever its carry held;
- ``update``: one update from a replay-like batch with finite metrics named as
  :mod:`wm_ray.metrics` says, and (learning families) at least one loss and changed acting
  weights (the learner's weights for a family that acts through a fixed behaviour policy);
- ``checkpoint``: save -> load gives identical weights, optimizer states, randomness, actions
  and next update; an acting-only agent reads its part of the checkpoint;
- ``acting weights``: the acting-only agent loaded with ``acting_weights()`` (sent as the Ray
  runtime sends them, ``wm_ray.actors.wire``) acts exactly like the learner, refuses to train;
- ``report``: media are uint8 strips ``(T, H, k * W, C)`` of image tasks;
- ``refusals``: every observation kind, action kind and ``run`` option the family does not claim
  is refused with a message naming the family and what it supports.

Nothing here runs on Ray: ``tests/e2e/test_chaos.py`` runs every family on the Ray runtime
(trains, evaluates, checkpoints, with its actors and driver killed on the way).
"""

from __future__ import annotations

import math
import pickle
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from wm_ray import registry
from wm_ray.actors import wire
from wm_ray.config import Config
from wm_ray.config_io import build_config
from wm_ray.factory import create_model
from wm_ray.registry import ModelSpec, UnsupportedError

PROTOCOL = (
    "init_policy",
    "policy",
    "init_train",
    "train",
    "report",
    "acting_weights",
    "load_acting_weights",
    "save",
    "load",
    "random_state",
    "set_random_state",
)
"""Methods every agent has (``wm_ray.core.Agent`` plus the randomness the checks control)."""
FAMILY_FILES = ("config.py", "networks.py", "losses.py", "agent.py", "README.md")
IMAGE_SIZE = 16
STREAMS = 3
PACKAGE = Path(__file__).resolve().parent


class ConformanceError(AssertionError):
    """A family breaks the protocol; the message names the family and the check."""


def _fail(spec: ModelSpec, check: str, message: str) -> ConformanceError:
    return ConformanceError(f"model family {spec.name!r}, check '{check}': {message}")


def spaces(obs_kinds: tuple[str, ...], action: str) -> tuple[gym.spaces.Dict, gym.Space]:
    """Small spaces of the given kinds: 16x16x3 images, 5-dim vectors, 3 discrete actions or a
    2-dim Box in [-1, 1]."""
    obs: dict[str, gym.Space] = {}
    if "image" in obs_kinds:
        obs["image"] = gym.spaces.Box(0, 255, (IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    if "vector" in obs_kinds:
        obs["vector"] = gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)
    act: gym.Space
    if action == "discrete":
        act = gym.spaces.Discrete(3)
    elif action == "continuous":
        act = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    else:
        act = gym.spaces.MultiBinary(3)
    return gym.spaces.Dict(obs), act


def combinations(spec: ModelSpec) -> list[tuple[tuple[str, ...], str]]:
    """``(observation kinds, action kind)`` to check: each claimed kind, and all claimed
    observation kinds together."""
    caps = spec.capabilities
    obs: list[tuple[str, ...]] = [(kind,) for kind in caps.observations]
    if len(caps.observations) > 1:
        obs.append(tuple(caps.observations))
    return [(kinds, action) for kinds in obs for action in caps.actions]


def family_config(spec: ModelSpec, *extra: str) -> Config:
    """The family at test size: its ``test_config`` presets and ``key=value`` overrides."""
    presets = [item for item in spec.test_config if "=" not in item]
    overrides = [item for item in spec.test_config if "=" in item]
    return build_config(presets, [f"run.model={spec.name}", "run.device=cpu", *overrides, *extra])


def fake_obs(obs_space: gym.spaces.Dict, n: int, rng: np.random.Generator) -> dict[str, Any]:
    """One random ``(n, ...)`` observation of ``obs_space`` (without ``is_first``)."""
    out: dict[str, Any] = {}
    for key, space in obs_space.spaces.items():
        shape = (n, *(space.shape or ()))
        if key == "image":
            out[key] = rng.integers(0, 256, shape, dtype=np.uint8)
        else:
            out[key] = rng.normal(0.0, 1.0, shape).astype(np.float32)
    return out


def _leaves(tree: Any) -> Iterator[Any]:
    """The arrays and tensors of a carry (tuples, lists, dicts, NamedTuples of them)."""
    if tree is None:
        return
    if isinstance(tree, dict):
        for value in tree.values():
            yield from _leaves(value)
    elif isinstance(tree, (tuple, list)):
        for value in tree:
            yield from _leaves(value)
    else:
        yield tree


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _act(agent: Any, carry: Any, obs: dict[str, Any], first: Any, state: Any) -> tuple[Any, Any]:
    """``policy`` in eval mode from the random state ``state`` (None: as it is)."""
    if state is not None:
        agent.set_random_state(state)
    new, action, _ = agent.policy(carry, {**obs, "is_first": np.asarray(first, bool)}, "eval")
    return new, np.asarray(action)


def same(a: Any, b: Any) -> bool:
    """Deep equality of nested dicts / lists / tuples of tensors, arrays and plain values."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return (
            isinstance(b, (list, tuple))
            and len(a) == len(b)
            and all(same(x, y) for x, y in zip(a, b, strict=True))
        )
    if hasattr(a, "shape") or hasattr(b, "shape"):
        x, y = _numpy(a), _numpy(b)
        return x.shape == y.shape and x.dtype == y.dtype and np.array_equal(x, y)
    return bool(a == b)


def _learned(agent: Any) -> dict[str, Any]:
    """What an update must change: the acting weights, or, for a family that acts through a
    fixed behaviour policy (no acting weights, e.g. Genie), every network of the learner."""
    weights = agent.acting_weights()
    if weights or not hasattr(agent, "nets"):
        return dict(weights)
    return {k: v.detach().clone() for k, v in agent.nets.state_dict().items()}


def check_files(spec: ModelSpec, agent_cls: Any = None) -> None:
    """The family folder's files (learning families) and the agent's methods."""
    cls = agent_cls if agent_cls is not None else registry.agent_class(spec.name)
    missing = [name for name in PROTOCOL if not callable(getattr(cls, name, None))]
    if missing:
        raise _fail(spec, "files", f"the agent class {cls.__name__} lacks {missing}")
    if not spec.capabilities.learns:
        return
    folder = PACKAGE / Path(*spec.agent_path.partition(":")[0].split(".")[1:-1])
    absent = [name for name in FAMILY_FILES if not (folder / name).is_file()]
    if absent:
        raise _fail(spec, "files", f"{folder} lacks {absent} (every family folder has them)")


def check_family(
    spec: ModelSpec, obs_kinds: tuple[str, ...], action: str, agent_cls: Any = None
) -> None:
    """Every check of the module docstring for one combination of kinds the family claims."""
    check_files(spec, agent_cls)
    obs_space, act_space = spaces(obs_kinds, action)
    config = family_config(spec)
    learner = _build(spec, obs_space, act_space, config, False, agent_cls)
    actor = _build(spec, obs_space, act_space, config, True, agent_cls)
    _check_acting(spec, learner, obs_space, act_space)
    batch = _batch(obs_space, act_space, config)
    before = _learned(learner)
    _check_update(spec, learner, batch, before)
    _check_checkpoint(spec, learner, obs_space, act_space, config, batch, agent_cls)
    _check_acting_weights(spec, learner, actor, obs_space)
    _check_report(spec, learner, batch, obs_space)


def _build(
    spec: ModelSpec, obs: Any, act: Any, config: Config, acting: bool, agent_cls: Any
) -> Any:
    what = "acting-only agent" if acting else "learner"
    try:
        if agent_cls is not None:
            registry.check_supported(spec, config, obs, act)
            return agent_cls(obs, act, config, acting=acting)
        return create_model(spec.name, obs, act, config, acting=acting)
    except Exception as err:
        raise _fail(spec, "build", f"the {what} for {obs} / {act} failed: {err!r}") from err


def _check_acting(spec: ModelSpec, agent: Any, obs_space: Any, act_space: Any) -> None:
    rng = np.random.default_rng(0)
    carry = agent.init_policy(STREAMS)
    for t in range(3):
        carry, action = _act(agent, carry, fake_obs(obs_space, STREAMS, rng), [t == 0] * 3, None)
        if len(action) != STREAMS or not all(act_space.contains(a) for a in action):
            raise _fail(spec, "acting", f"actions {action!r} are not {STREAMS} of {act_space}")
    other = agent.init_policy(STREAMS)
    other, _ = _act(agent, other, fake_obs(obs_space, STREAMS, rng), [True] * 3, None)
    obs, first = fake_obs(obs_space, STREAMS, rng), [True, False, True]
    state = agent.random_state()
    new_a, act_a = _act(agent, carry, obs, first, state)
    new_b, act_b = _act(agent, other, obs, first, state)
    if not np.array_equal(act_a[[0, 2]], act_b[[0, 2]]):
        raise _fail(spec, "acting", "a stream with is_first set acted on what its carry held")
    for a, b in zip(_leaves(new_a), _leaves(new_b), strict=True):
        a, b = _numpy(a), _numpy(b)
        if a.shape[:1] == (STREAMS,) and not np.array_equal(a[[0, 2]], b[[0, 2]]):
            raise _fail(spec, "acting", "is_first did not reset the carry of its stream")


def _batch(obs_space: Any, act_space: Any, config: Config) -> dict[str, np.ndarray]:
    from wm_ray.models.common.testing import fake_batch

    return fake_batch(obs_space, act_space, config.replay.batch_size, config.replay.seq_len)


def _check_update(spec: ModelSpec, agent: Any, batch: dict[str, Any], before: Any) -> None:
    state = agent.init_train(batch["reward"].shape[0])
    _, metrics = agent.train(batch, state)
    bad = [k for k, v in metrics.items() if not (isinstance(v, float) and math.isfinite(v))]
    if bad:
        raise _fail(spec, "update", f"metrics that are not finite floats: {bad}")
    names = [k for k in metrics if not k.startswith(("train/", "time/"))]
    if names:
        raise _fail(spec, "update", f"metric names outside train/ and time/: {names}")
    if not spec.capabilities.learns:
        return
    if not any(k.startswith("train/loss/") for k in metrics):
        raise _fail(spec, "update", f"no train/loss/<part>/<term> among {sorted(metrics)}")
    if same(before, _learned(agent)):
        what = "acting weights" if agent.acting_weights() else "learner's weights"
        raise _fail(spec, "update", f"one update changed none of the {what}")


def _check_checkpoint(
    spec: ModelSpec,
    agent: Any,
    obs_space: Any,
    act_space: Any,
    config: Config,
    batch: dict[str, Any],
    agent_cls: Any,
) -> None:
    with tempfile.TemporaryDirectory(prefix="wm_ray-conformance-") as tmp:
        agent.save(Path(tmp) / "agent")
        fresh = _build(spec, obs_space, act_space, config, False, agent_cls)
        fresh.load(Path(tmp) / "agent")
        acting = _build(spec, obs_space, act_space, config, True, agent_cls)
        acting.load(Path(tmp) / "agent")
    if not same(agent.acting_weights(), fresh.acting_weights()):
        raise _fail(spec, "checkpoint", "acting weights differ after save -> load")
    for name, module in getattr(agent, "nets", {}).items():
        other = fresh.nets[name].state_dict()
        for key, value in module.state_dict().items():
            if not np.array_equal(_numpy(value), _numpy(other[key])):
                raise _fail(spec, "checkpoint", f"{name}.{key} differs after save -> load")
    if hasattr(agent, "optimizers"):
        for name, opt in agent.optimizers().items():
            if not same(opt.state_dict(), fresh.optimizers()[name].state_dict()):
                raise _fail(spec, "checkpoint", f"optimizer {name!r} differs after save -> load")
    rng = np.random.default_rng(1)
    obs = fake_obs(obs_space, STREAMS, rng)
    state = agent.random_state()
    outs = [_act(a, a.init_policy(STREAMS), obs, [True] * 3, state)[1] for a in (agent, fresh)]
    outs.append(_act(acting, acting.init_policy(STREAMS), obs, [True] * 3, state)[1])
    if not (np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])):
        raise _fail(spec, "checkpoint", f"a loaded agent acts differently: {outs}")
    agent.set_random_state(state)
    fresh.set_random_state(state)
    metrics = [a.train(batch, a.init_train(batch["reward"].shape[0]))[1] for a in (agent, fresh)]
    for key, value in metrics[0].items():
        if key.startswith("train/") and not math.isclose(
            value, metrics[1][key], rel_tol=1e-6, abs_tol=1e-9
        ):
            raise _fail(spec, "checkpoint", f"the next update differs after loading: {key}")


def _check_acting_weights(spec: ModelSpec, learner: Any, actor: Any, obs_space: Any) -> None:
    wired = pickle.loads(pickle.dumps(wire.pack(learner.acting_weights())))  # as Ray sends them
    actor.load_acting_weights(wire.unpack(wired))
    if not same(learner.acting_weights(), actor.acting_weights()):
        raise _fail(spec, "acting weights", "the acting agent's weights differ after loading")
    rng = np.random.default_rng(2)
    state = learner.random_state()
    carries = [learner.init_policy(STREAMS), actor.init_policy(STREAMS)]
    for t in range(3):
        obs = fake_obs(obs_space, STREAMS, rng)
        outs = []
        for i, agent in enumerate((learner, actor)):
            carries[i], action = _act(agent, carries[i], obs, [t == 0] * 3, state)
            outs.append(action)
        state = learner.random_state()
        if not np.array_equal(outs[0], outs[1]):
            raise _fail(spec, "acting weights", f"learner and acting agent act differently: {outs}")
    if spec.capabilities.learns:
        batch = {"reward": np.zeros((1, 2), np.float32)}
        try:
            actor.train(batch, actor.init_train(1))
        except RuntimeError:
            return
        raise _fail(spec, "acting weights", "the acting-only agent trained instead of refusing")


def _check_report(spec: ModelSpec, agent: Any, batch: dict[str, Any], obs_space: Any) -> None:
    media = agent.report(batch)
    if not isinstance(media, dict):
        raise _fail(spec, "report", f"report() returned {type(media).__name__}, not a dict")
    if "image" not in obs_space.spaces:
        return
    height, width, channels = obs_space["image"].shape
    for name, value in media.items():
        array = np.asarray(value)
        ok = (
            array.dtype == np.uint8
            and array.ndim == 4
            and array.shape[1] == height
            and array.shape[2] % width == 0
            and array.shape[3] == channels
        )
        if not ok:
            raise _fail(
                spec,
                "report",
                f"media {name!r} is {array.dtype} {array.shape}, not uint8 (T, {height}, "
                f"k * {width}, {channels})",
            )


def check_refusals(spec: ModelSpec) -> None:
    """Every unclaimed observation kind, action kind and ``run`` option is refused clearly."""
    caps = spec.capabilities
    config = family_config(spec)
    obs_kind = caps.observations[0]
    cases: list[tuple[str, Any, Any, Config]] = []
    for kind in registry.OBSERVATION_KINDS:
        if kind not in caps.observations:
            obs, act = spaces((kind,), caps.actions[0])
            cases.append((f"{kind} observations", obs, act, config))
    for kind in (*registry.ACTION_KINDS, "multibinary"):
        if kind not in caps.actions:
            obs, act = spaces((obs_kind,), kind)
            cases.append((f"{kind} actions", obs, act, config))
    values = {"compile": "true", "precision": "bf16", "channels_last": "true", "cpu_rng": "true"}
    for option in registry.RUN_OPTIONS:
        if option not in caps.run_options:
            obs, act = spaces((obs_kind,), caps.actions[0])
            cfg = family_config(spec, f"run.{option}={values[option]}")
            cases.append((f"run.{option}", obs, act, cfg))
    for what, obs, act, cfg in cases:
        try:
            create_model(spec.name, obs, act, cfg)
        except UnsupportedError as err:
            text = str(err)
            if spec.name not in text or "supports" not in text:
                raise _fail(spec, "refusals", f"{what}: unclear refusal {text!r}") from None
            continue
        except Exception as err:
            raise _fail(spec, "refusals", f"{what}: {err!r} instead of a clear refusal") from err
        raise _fail(spec, "refusals", f"{what} was accepted, but the family does not claim it")


__all__ = [
    "ConformanceError",
    "check_family",
    "check_files",
    "check_refusals",
    "combinations",
    "family_config",
    "same",
    "spaces",
]
