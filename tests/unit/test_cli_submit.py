"""`wm-ray submit` refuses what would fail or misbehave on a cluster before it contacts one.

The submission itself (against a real token-auth head) is in tests/e2e/test_job_submit.py.
"""

from __future__ import annotations

import pytest

from wm_ray.cli import main


def submit(capsys: pytest.CaptureFixture[str], *train_args: str) -> tuple[int, str]:
    code = main(["submit", "--address", "http://127.0.0.1:9", "--", *train_args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("train_args", "message"),
    [
        (["--configs", "debug"], "--run-dir (unset): a job needs an absolute path"),
        (["--run-dir", "runs/x"], "--run-dir runs/x: a job needs an absolute path"),
        (["--run-dir", "/abs/x", "--single-process"], "--single-process trains without Ray"),
        (["--configs", "nosuch", "--run-dir", "/abs/x"], "unknown preset 'nosuch'"),
        (["--run-dir", "/abs/x", "--set", "replay.nosuch=1"], "replay.nosuch"),
    ],
)
def test_submit_refuses_locally(
    capsys: pytest.CaptureFixture[str], train_args: list[str], message: str
) -> None:
    code, err = submit(capsys, *train_args)
    assert code == 2, err
    assert message in err and err.startswith("wm-ray: error: "), err


def test_submit_rejects_unknown_train_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        submit(capsys, "--run-dir", "/abs/x", "--stpes", "10")
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --stpes" in capsys.readouterr().err
