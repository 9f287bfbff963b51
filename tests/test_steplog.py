"""One step's logging and failure line (:mod:`dejitter.pipeline.steplog`), and its retries."""

from __future__ import annotations

import pytest

from dejitter.pipeline.steplog import logged_step
from dejitter.types import ScanError


def _run(log_path, attempt, error=None):
    """Run a step whose block raises ``error``; returns whether the block ran."""
    ran = []
    with pytest.raises(SystemExit) as exit_info:
        with logged_step(log_path, scan="s1", step="register", attempt=attempt):
            ran.append(True)
            raise error
    assert exit_info.value.code == 1
    return bool(ran)


def test_a_refused_input_is_refused_again_by_a_retry_without_running(tmp_path):
    log_path = tmp_path / "register.log"
    refusal = ScanError("/data/s1.h5", "7 projections are too few")
    assert _run(log_path, 1, refusal)
    line = "scan s1 failed in step register (bad input): /data/s1.h5: 7 projections are too few"
    assert line in log_path.read_text()
    # Snakemake's retry (the rule retries for steps that run out of memory): the same line, the block not run.
    log_path.unlink()  # Snakemake removes a job's log before each attempt
    assert not _run(log_path, 2, AssertionError("the block must not run"))
    text = log_path.read_text()
    assert line in text and "attempt 2: the inputs of the attempt that refused them" in text
    # A new run (attempt 1) reads the input again: the user may have mended it.
    assert _run(log_path, 1, RuntimeError("another failure"))
    assert "(RuntimeError): another failure" in log_path.read_text()


def test_a_crash_is_retried_in_full(tmp_path):
    """Only refusals are remembered: a retry after any other failure (memory, a node lost) runs the step."""
    log_path = tmp_path / "mlem.log"
    assert _run(log_path, 1, RuntimeError("CUDA error: an illegal memory access"))
    assert _run(log_path, 2, RuntimeError("again"))
    with logged_step(log_path, scan="s1", step="mlem", attempt=3):
        pass
    assert log_path.read_text().rstrip().endswith("done")
    assert not list(tmp_path.glob("*.refused"))
