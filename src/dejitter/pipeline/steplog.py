"""Logging and error reporting of one per-scan step, for the workflow's scripts and any other driver.

Log lines say which scan and which step.  A refused input ends the step with one line naming
the scan, the file and the problem (the traceback goes to the log file only), so that a
campaign of hundreds of scans reports each broken one clearly and goes on with the others.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback

from ..types import ScanError
from .common import deterministic_torch

__all__ = ["logged_step"]

log = logging.getLogger("dejitter")


@contextlib.contextmanager
def logged_step(log_path, *, scan="campaign", step="step", threads=None):
    """Run a block as one step: log to ``log_path`` and stderr, exit 1 with a clear message on failure.

    Parameters
    ----------
    log_path : str or Path
    scan, step : str
        Named in every log line and in the error message.
    threads : int, optional
        CPU threads torch may use (the scheduler's allotment).  A fixed number, and torch's
        deterministic algorithms, make a rerun of the step give bit-identical outputs.
    """
    if threads:
        # For torch (and OpenMP/MKL) imported later in the step, as the library imports it lazily.
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = str(int(threads))
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, set before its first use
    torch = sys.modules.get("torch")  # only steps that use torch have imported it
    if torch is not None:
        deterministic_torch(torch)
        if threads:
            torch.set_num_threads(int(threads))
    fmt = logging.Formatter(f"%(asctime)s [{scan}] {step}: %(levelname)s %(message)s", "%H:%M:%S")
    handlers = [logging.FileHandler(log_path, mode="w"), logging.StreamHandler(sys.stderr)]
    for handler in handlers:
        handler.setFormatter(fmt)
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.info("started")
    try:
        yield log
        log.info("done")
    except Exception as err:  # noqa: BLE001 - every failure becomes one clear line
        handlers[0].stream.write("".join(traceback.format_exception(err)))
        kind = "bad input" if isinstance(err, ScanError) else type(err).__name__
        log.error("scan %s failed in step %s (%s): %s", scan, step, kind, err)
        raise SystemExit(1) from None
    finally:
        for handler in handlers:
            log.removeHandler(handler)
            handler.close()
