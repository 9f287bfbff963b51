"""What the step modules share: the reconstruction backend a step runs on, and the axis in binned pixels."""

from __future__ import annotations

import os

__all__ = ["step_backend", "binned_center"]


def step_backend(name, device, chunk_slices=None):
    """The reconstruction backend ``name`` for a step, set up for bit-identical reruns."""
    # Deterministic cuBLAS needs this before its first use (torch raises otherwise).
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # Imported here so that steps without reconstruction do not load torch (about 250 MB resident).
    import torch

    from ..reconstruction.backends import get_backend

    # Reruns must give bit-identical outputs (a step killed and rerun, a cached result recomputed).
    torch.use_deterministic_algorithms(True, warn_only=True)
    return get_backend(name, device=device, chunk_slices=chunk_slices)


def binned_center(center, scale):
    """Axis column in binned pixels, from the axis column in input pixels."""
    return None if center is None else (float(center) - (scale - 1) / 2) / scale
