"""Logging and error reporting of one per-scan step, for the workflow's scripts and any other driver.

Log lines say which scan and which step.  A refused input ends the step with one line naming
the scan, the file and the problem (the traceback goes to the log file only), so that a
campaign of hundreds of scans reports each broken one clearly and goes on with the others.
"""

from __future__ import annotations

import contextlib
import logging
import sys

import torch

from .errors import ScanError

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
        CPU threads torch may use (the scheduler's allotment).
    """
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
        handlers[0].stream.write("".join(__import__("traceback").format_exception(err)))
        kind = "bad input" if isinstance(err, ScanError) else type(err).__name__
        log.error("scan %s failed in step %s (%s): %s", scan, step, kind, err)
        raise SystemExit(1) from None
    finally:
        for handler in handlers:
            log.removeHandler(handler)
            handler.close()
