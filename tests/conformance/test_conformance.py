"""The conformance suite: every registered model family, every kind it claims, from its
registry line alone (``wm_ray/conformance.py`` holds the checks)."""

from __future__ import annotations

import numpy as np
import pytest

from wm_ray import registry
from wm_ray.conformance import ConformanceError, check_family, check_refusals, combinations
from wm_ray.registry import get_model_spec, list_models

CASES = [
    pytest.param(name, obs, action, id=f"{name}-{'+'.join(obs)}-{action}")
    for name in list_models()
    for obs, action in combinations(get_model_spec(name))
]


@pytest.mark.parametrize(("family", "obs", "action"), CASES)
def test_family_conforms(family: str, obs: tuple[str, ...], action: str) -> None:
    check_family(get_model_spec(family), obs, action)


@pytest.mark.parametrize("family", list_models())
def test_family_refuses_what_it_does_not_claim(family: str) -> None:
    check_refusals(get_model_spec(family))


def _without(cls: type, name: str) -> type:
    """``cls`` with method ``name`` removed: its own, or one it inherits (a family built on
    another's agent), masked by ``None``."""
    return type(f"{cls.__name__}Without_{name}", (cls,), {name: None})


@pytest.mark.parametrize("family", list_models())
def test_a_family_without_a_required_method_fails_naming_the_family(family: str) -> None:
    spec = get_model_spec(family)
    cls = registry.agent_class(family)
    method = next(m for m in ("policy", "train", "report") if callable(getattr(cls, m, None)))
    broken = _without(cls, method)
    obs, action = combinations(spec)[0]
    pattern = rf"model family '{family}', check 'files': .* lacks \['{method}'\]"
    with pytest.raises(ConformanceError, match=pattern):
        check_family(spec, obs, action, agent_cls=broken)


def test_a_policy_that_ignores_is_first_fails_the_acting_check() -> None:
    spec = get_model_spec("dreamer")
    cls = registry.agent_class("dreamer")

    class Forgetful(cls):  # type: ignore[misc, valid-type]
        def policy(self, carry, obs, mode="explore"):  # type: ignore[no-untyped-def]
            return super().policy(carry, {**obs, "is_first": np.zeros_like(obs["is_first"])}, mode)

    with pytest.raises(ConformanceError, match=r"'dreamer', check 'acting': .*is_first"):
        check_family(spec, ("vector",), "discrete", agent_cls=Forgetful)


def test_an_update_that_changes_nothing_fails_the_update_check() -> None:
    spec = get_model_spec("dreamer")
    cls = registry.agent_class("dreamer")

    class Idle(cls):  # type: ignore[misc, valid-type]
        def train(self, batch, state):  # type: ignore[no-untyped-def]
            return state, {"train/loss/world_model/total": 1.0}

    with pytest.raises(ConformanceError, match=r"'dreamer', check 'update': .*changed none"):
        check_family(spec, ("vector",), "discrete", agent_cls=Idle)
