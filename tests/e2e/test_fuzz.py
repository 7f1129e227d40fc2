"""The fuzz suite of every entry point (``benchmarks/fuzz.py``), a seeded subset: 1,000 fast
cases (arguments, ``--set`` values of every family's keys, preset files, env observations),
the run-directory cases (a file, read-only and full file systems where this machine may mount
a tmpfs) and damaged checkpoints and chunk files of real tiny runs of every registered family.
Every case must end in a one-line error or a correct run and leave what was on disk as it was;
the long mode (``python -m benchmarks.fuzz``) runs more of each with the same generator."""

from __future__ import annotations

import pytest

from benchmarks import fuzz
from wm_ray.registry import list_models

pytestmark = pytest.mark.slow

CASES = 1_000
SLOW_CASES = 2
"""Damaged checkpoints and chunk files per registered family."""


def test_no_input_ends_in_a_traceback_or_damages_the_disk() -> None:
    report = fuzz.fuzz(CASES, seed=16, slow_cases=SLOW_CASES)
    summary = report.summary()
    assert summary["tracebacks_or_damage"] == 0, summary["bad_cases"]
    kinds = summary["by_kind"]
    assert set(kinds) == {"cli", "set", "preset", "observation", "rundir", "checkpoint"}
    fast = sum(sum(kinds[k].values()) for k in ("cli", "set", "preset", "observation"))
    assert fast == CASES
    families = {o.case.split(":")[0] for o in report.outcomes if o.kind == "checkpoint"}
    assert families == set(list_models())  # a family added later is fuzzed by its registry line
    assert sum(kinds["checkpoint"].values()) == SLOW_CASES * len(families)
    # the generator makes both kinds of outcome: the suite would notice a check gone lax
    for kind in ("cli", "set", "preset", "observation"):
        assert kinds[kind].get("error", 0) > 0 and kinds[kind].get("ok", 0) > 0, kind


def test_a_generated_case_is_judged_bad_when_it_escapes_as_a_traceback() -> None:
    """The judge itself: an exception out of ``main`` or a traceback on stderr is bad."""
    assert fuzz.judge("cli", ["x"], -1, "", "KeyError: 'x'").result == "bad"
    traceback = "Traceback (most recent call last):\n  File ...\nValueError: x\n"
    assert fuzz.judge("cli", ["x"], 2, traceback, "").result == "bad"
    assert fuzz.judge("cli", ["x"], 1, "wm-ray: error: x\n", "").result == "bad"
    assert fuzz.judge("cli", ["x"], 2, "wm-ray: error: bad value\n", "").result == "error"
