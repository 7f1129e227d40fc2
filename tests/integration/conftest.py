"""Integration tests: one real local Ray cluster for the whole test session.

Select them with ``pytest -m integration`` (or skip them with ``-m "not integration"``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """A local Ray cluster (2 CPUs, no dashboard) shared by every integration test."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        namespace="wm_ray_test",
    )
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture
def actors() -> Iterator[Callable[[Any], Any]]:
    """Track created actors and kill them at the end of the test (named actors must not leak)."""
    created: list[Any] = []

    def track(handle: Any) -> Any:
        created.append(handle)
        return handle

    yield track
    for handle in created:
        ray.kill(handle)
