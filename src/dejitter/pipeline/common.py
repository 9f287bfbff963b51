"""What the step modules share: the reconstruction backend a step runs on, and the axis in binned pixels."""

from __future__ import annotations

import os
import sys

__all__ = ["step_backend", "binned_center", "deterministic_torch"]


def deterministic_torch(torch, *, warn_only=True):
    """Switch ``torch`` to its deterministic algorithms, so that a rerun gives bit-identical outputs.

    ``warn_only``: an operation without a deterministic kernel warns (in the step's log) rather
    than failing the step.
    """
    # torch.use_deterministic_algorithms also imports torch._inductor to set its flag there: that
    # import alone takes 2.5 s on this project's CPU machines, about half of a small scan's step,
    # in every process. Nothing here compiles with Inductor, so set the runtime flag directly
    # unless Inductor is already loaded (then it gets its flag too, through the public call).
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None or "torch._inductor" in sys.modules:
        torch.use_deterministic_algorithms(True, warn_only=warn_only)
    else:
        setter(True, warn_only=warn_only)


def step_backend(name, device, chunk_slices=None):
    """The reconstruction backend ``name`` for a step, set up for bit-identical reruns."""
    # Deterministic cuBLAS needs this before its first use (torch raises otherwise).
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # Imported here so that steps without reconstruction do not load torch (about 250 MB resident).
    import torch

    from ..reconstruction.backends import get_backend

    # Reruns must give bit-identical outputs (a step killed and rerun, a cached result recomputed).
    deterministic_torch(torch)
    return get_backend(name, device=device, chunk_slices=chunk_slices)


def binned_center(center, scale):
    """Axis column in binned pixels, from the axis column in input pixels."""
    return None if center is None else (float(center) - (scale - 1) / 2) / scale
