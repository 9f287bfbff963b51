"""Memory budgets of the steps: chunk sizes that fit, and running out of memory said plainly.

The steps that touch full-resolution data read, process and write in chunks sized by
:func:`chunk_length` from ``memory_budget_mb``; a retry after running out of memory divides the
chunks by ``chunk_divisor`` 2, 4, ... (Snakemake's ``attempt``).  :func:`out_of_memory_guard`
turns torch's and NumPy's out-of-memory errors into a :class:`StepOutOfMemoryError` that says
what ran out and what to do.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys

# Working memory per element of a chunk, shared with the workflow's resource estimates.
from .sizing import SAFETY

__all__ = ["StepOutOfMemoryError", "out_of_memory_guard", "resident_bytes", "chunk_length", "chunks",
           "chunk_for_budget"]

log = logging.getLogger("dejitter")


class StepOutOfMemoryError(MemoryError):
    """A step ran out of host or GPU memory; retried with smaller chunks, it may fit.

    Raised by :func:`out_of_memory_guard` in place of torch's ``OutOfMemoryError``, its
    ``RuntimeError`` "out of memory" and NumPy's ``MemoryError``, with a message that says
    what ran out and what to do; the original error is its ``__cause__``.
    """


def _out_of_memory_kind(err):
    """``"GPU"`` or ``"host"`` when ``err`` reports memory exhausted, else None."""
    torch = sys.modules.get("torch")  # only steps that use torch have imported it
    cuda_oom = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
    text = str(err).lower()
    if cuda_oom is not None and isinstance(err, cuda_oom):
        return "GPU"
    if isinstance(err, RuntimeError) and "out of memory" in text:
        return "GPU" if any(word in text for word in ("cuda", "hip", "gpu", "device")) else "host"
    if isinstance(err, MemoryError) or (isinstance(err, RuntimeError) and "can't allocate memory" in text):
        return "host"
    return None


@contextlib.contextmanager
def out_of_memory_guard(step, *, memory_budget_mb=None, chunk_divisor=1):
    """Turn running out of memory inside the block into a :class:`StepOutOfMemoryError` that says so.

    Use it outside the block's atomic writers, so that the temporary file is gone when the
    error arrives: a step that runs out of memory leaves no output.

    Parameters
    ----------
    step : str
        Named in the message.
    memory_budget_mb : float, optional
        The budget the chunks were sized for, named in the message.
    chunk_divisor : int
        The attempt's divisor of the chunk size (1, 2, 4, ...), named in the message.

    Raises
    ------
    StepOutOfMemoryError
        For ``torch.cuda.OutOfMemoryError``, a ``RuntimeError`` whose message says "out of
        memory" (CUDA, HIP, torch's CPU allocator) and ``MemoryError``; any other error passes.
    """
    try:
        yield
    except StepOutOfMemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - only memory errors are translated, the rest re-raised
        kind = _out_of_memory_kind(err)
        if kind is None:
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        budget = "no memory budget" if memory_budget_mb is None else f"a memory budget of {memory_budget_mb:g} MB"
        chunks = "whole" if chunk_divisor <= 1 else f"1/{chunk_divisor} of the chunk size the budget allows"
        raise StepOutOfMemoryError(
            f"{step} ran out of {kind} memory ({first}) with chunks sized for {budget} ({chunks}): retry "
            f"with smaller chunks; the workflow retries the step with half the chunk size (rule retries, "
            f"--retries), or lower memory_budget_mb") from err


def resident_bytes():
    """Resident memory of this process now, in bytes (0 where ``/proc`` is not available)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def chunk_length(total, bytes_per_unit, memory_budget_mb=None, *, reserved_bytes=0, multiple=1, safety=SAFETY,
                 divisor=1):
    """How many rows (or angles) a step processes at once to stay within its memory budget.

    Chooses the largest ``n`` with ``n * bytes_per_unit * safety * divisor <= budget - reserved_bytes``,
    rounded down to a multiple of ``multiple`` (e.g. the binning factor, so that chunks hold
    whole bins), and at least ``multiple`` (a unit cannot be split: a budget too small for one
    unit is exceeded rather than refused).  ``divisor`` 2, 4, ... (a retry after running out
    of memory) gives chunks of half, a quarter, ... the size.

    Parameters
    ----------
    total : int
        Rows (or angles) of the scan.
    bytes_per_unit : float
        Working memory per row (or angle), temporaries included.
    memory_budget_mb : float, optional
        The budget of the whole process in MiB; ``None``: no limit, everything at once.
    reserved_bytes : float
        Memory already used, or needed whatever the chunk size (the interpreter and its
        libraries, images kept whole, halos).
    multiple : int
    safety : float
        Factor on ``bytes_per_unit`` for allocator slack and estimates that run short.
    divisor : int
        Divide the chunk by this (1 on the first attempt); without a budget, ``total`` is cut
        into ``divisor`` chunks.

    Returns
    -------
    int
        Between ``multiple`` and ``total`` (``total`` when everything fits).
    """
    total, multiple, divisor = int(total), max(1, int(multiple)), max(1, int(divisor))
    if memory_budget_mb is None:
        n = -(-max(total, 1) // divisor)  # the whole in `divisor` chunks
        return max(total, 1) if divisor == 1 else max(multiple, min(-(-n // multiple) * multiple, total))
    allowance = float(memory_budget_mb) * 2**20 - float(reserved_bytes)
    n = int(max(allowance, 0) // (float(bytes_per_unit) * safety * divisor)) // multiple * multiple
    return max(multiple, min(n, total))


def chunks(total, length):
    """Consecutive slices of at most ``length`` covering ``range(total)``."""
    for start in range(0, total, length):
        yield slice(start, min(start + length, total))


def chunk_for_budget(what, total, bytes_per_unit, memory_budget_mb, *, fixed_bytes=0, multiple=1, divisor=1):
    """:func:`chunk_length` with what this process holds now as reserved, logged."""
    n = chunk_length(total, bytes_per_unit, memory_budget_mb, reserved_bytes=resident_bytes() + fixed_bytes,
                     multiple=multiple, divisor=divisor)
    if n < total:
        log.info("memory budget %s MB: %s in %d chunks of %d", memory_budget_mb, what, math.ceil(total / n), n)
    return n
