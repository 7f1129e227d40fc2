"""The sample:insert limiter (Reverb SampleToInsertRatio semantics, counted in steps)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from wm_ray.config import ReplayConfig
from wm_ray.replay import Limiter, Replay


@pytest.mark.parametrize(("actor_speed", "learner_speed"), [(1.0, 0.05), (0.05, 1.0), (0.5, 0.5)])
def test_limiter_ratio_holds_within_tolerance_over_insert_sample_loop(
    actor_speed: float, learner_speed: float
) -> None:
    spi, tol, min_size, chunk, batch = 8.0, 3000.0, 500, 64, 16 * 32
    limiter = Limiter(spi, tol, min_size)
    limiter.check_sizes(chunk, batch)
    rng = np.random.default_rng(0)
    for _ in range(20_000):
        if rng.random() < actor_speed and limiter.can_insert(chunk):
            limiter.on_insert(chunk)
        if rng.random() < learner_speed and limiter.can_sample(batch):
            limiter.on_sample(batch)
        if limiter.inserts >= min_size:
            # Past the prefill the debt stays within tolerance, up to one insert or sample.
            assert -tol - batch <= limiter.debt <= tol + spi * chunk
    assert limiter.inserts > 10 * min_size
    ratio = limiter.samples / (limiter.inserts - min_size)
    assert abs(ratio - spi) * (limiter.inserts - min_size) <= tol + spi * chunk


def test_limiter_refuses_sampling_below_min_size_but_never_inserting() -> None:
    limiter = Limiter(samples_per_insert=1000.0, tolerance=0.0, min_size=100)
    for _ in range(2):  # 0 and 64 steps are below min_size: inserting is always allowed
        assert limiter.can_insert(64) and not limiter.can_sample(1)
        limiter.on_insert(64)
    assert limiter.inserts == 128
    assert limiter.can_sample(1) and not limiter.can_insert(1)


def test_limiter_blocks_inserts_when_sampling_lags_and_samples_when_ahead() -> None:
    limiter = Limiter(samples_per_insert=2.0, tolerance=100.0, min_size=0)
    limiter.on_insert(50)
    assert limiter.debt == 100 and limiter.can_insert(0) and not limiter.can_insert(1)
    limiter.on_sample(150)
    assert limiter.debt == -50 and limiter.can_sample(50) and not limiter.can_sample(51)


def test_limiter_with_ratio_disabled_only_waits_for_min_size() -> None:
    limiter = Limiter(samples_per_insert=0.0, tolerance=0.0, min_size=10)
    assert not limiter.can_sample(1)
    limiter.on_insert(10)
    limiter.on_sample(10**9)
    assert limiter.can_sample(10**9) and limiter.can_insert(10**9)


def test_limiter_state_round_trip() -> None:
    limiter = Limiter(4.0, 50.0, 10)
    limiter.on_insert(123)
    limiter.on_sample(456)
    restored = Limiter(4.0, 50.0, 10)
    restored.load_state_dict(json.loads(json.dumps(limiter.state_dict())))
    assert restored.state_dict() == limiter.state_dict()
    assert restored.debt == limiter.debt and restored.can_insert(3) == limiter.can_insert(3)


def test_tolerance_that_could_deadlock_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"tolerance 100 is too small.*tolerance >= 1536"):
        Limiter(32.0, 100.0, 0).check_sizes(64, 1024)
    with pytest.raises(ValueError, match="too small"):
        Replay(ReplayConfig(tolerance=100.0))


def test_replay_records_inserts_and_samples_in_its_limiter() -> None:
    cfg = ReplayConfig(min_size=16, samples_per_insert=1.0, tolerance=1000.0)
    replay = Replay(cfg)
    length = 8
    chunk = {
        "vector": np.zeros((length, 2), np.float32),
        "reward": np.zeros(length, np.float32),
        "is_first": np.zeros(length, bool),
        "is_last": np.zeros(length, bool),
        "is_terminal": np.zeros(length, bool),
    }
    for k in range(3):
        replay.add_chunk("s", k, chunk)
    assert replay.limiter.inserts == 24
    replay.sample(2, 5)
    assert replay.limiter.samples == 10
