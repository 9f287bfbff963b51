"""Logging and error reporting of one per-scan step, for the workflow's scripts and any other driver.

Log lines say which scan and which step.  A refused input ends the step with one line naming
the scan, the file and the problem (the traceback goes to the log file only), so that a
campaign of hundreds of scans reports each broken one clearly and goes on with the others.

Snakemake retries a failed step (the workflow's rules, for steps that run out of memory; the SLURM
profile, for any), and it cannot tell a refused input from a crash.  A refusal is remembered beside
the log (``<log>.refused``), and a retry of the same run repeats it at once instead of reading the
scan again: on a cluster each retry is another job (in the GPU queue for steps A-C), which then
takes seconds instead of the whole step.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from pathlib import Path

from ..types import ModelError, ScanError
from .common import deterministic_torch

__all__ = ["logged_step"]

log = logging.getLogger("dejitter")

#: Failures another attempt on the same inputs would repeat: bad scans, and model files that fail their checks.
REFUSALS = (ScanError, ModelError)


@contextlib.contextmanager
def logged_step(log_path, *, scan="campaign", step="step", threads=None, attempt=1):
    """Run a block as one step: log to ``log_path`` and stderr, exit 1 with a clear message on failure.

    Parameters
    ----------
    log_path : str or Path
    scan, step : str
        Named in every log line and in the error message.
    threads : int, optional
        CPU threads torch may use (the scheduler's allotment).  A fixed number, and torch's
        deterministic algorithms, make a rerun of the step give bit-identical outputs.
    attempt : int
        Snakemake's attempt (1, then 2, ... at each retry).  The first attempt forgets any earlier
        refusal; a later one whose step refused the input in an earlier attempt refuses it again
        without running the block.
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
    refusal = Path(f"{log_path}.refused")
    try:
        if attempt > 1 and refusal.is_file():
            log.info("attempt %d: the inputs of the attempt that refused them, refused again without running", attempt)
            log.error(refusal.read_text())
            raise SystemExit(1)
        refusal.unlink(missing_ok=True)
        yield log
        log.info("done")
    except Exception as err:  # noqa: BLE001 - every failure becomes one clear line
        handlers[0].stream.write("".join(traceback.format_exception(err)))
        kind = "bad input" if isinstance(err, ScanError) else type(err).__name__
        message = f"scan {scan} failed in step {step} ({kind}): {err}"
        log.error(message)
        if isinstance(err, REFUSALS):
            refusal.write_text(message)
        raise SystemExit(1) from None
    finally:
        for handler in handlers:
            log.removeHandler(handler)
            handler.close()
