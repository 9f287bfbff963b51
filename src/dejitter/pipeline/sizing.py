"""How much memory and time each per-scan step needs, from the scan's shape: the workflow's resources.

The workflow asks these functions for every job's ``mem_mb``, ``runtime`` and ``gpu_mem_mb``
(``workflow/rules/common.smk``), so that SLURM requests follow the scan instead of one fixed
size for a 128 px demo and a 2048 px campaign alike.  The steps themselves stay within the
memory budget by processing in chunks (:mod:`dejitter.pipeline.steps`); a retry after running out of
memory divides those chunks by 2, 4, ... (``chunk_divisor``, from Snakemake's ``attempt``).
Plain arithmetic, no torch import: the Snakefile imports this module.

Estimates, not measurements: the constants were checked against the steps' peak memory
(``benchmarks/bench_memory.py``, the rules' ``benchmark:`` files of the demo) and run times on a
2-core CPU and an H100 (issue 11: a 1024 x 1024 x 721 scan, preprocess 185 s, FBP 292 s); the
run times carry a margin of :data:`RUNTIME_MARGIN` for slower machines.
"""

from __future__ import annotations

import importlib.util
import math

from ..binning import FINE_FIRST_MLEM_ITER, FINE_MAX_ITER, reference_binning, row_binning, search_factor

__all__ = [
    "PREPROCESS_BYTES", "SHIFT_BYTES", "FBP_BYTES", "SAFETY", "binned_shape",
    "memory_mb", "gpu_memory_mb", "runtime_min", "STEPS",
]

#: Estimates of the working memory per element of a chunk (bytes), temporaries included,
#: checked with benchmarks/bench_memory.py; :data:`SAFETY` covers allocator slack on top.
PREPROCESS_BYTES = 48  # raw, float32 copy, transmission, masks, line integrals, repair, prefilter
SHIFT_BYTES = 16  # input and output float32, one image of float64 spline coefficients per call
FBP_BYTES = 56  # input, padded FFT (complex, twice the width), filtered copy
SAFETY = 1.5

MB = 2**20
#: Resident memory of a step's Python process before its data: interpreter, NumPy, h5py, SciPy ...
PYTHON_MB = 200
#: ... with torch imported (CPU build).
TORCH_MB = 500
#: Host memory that CUDA's libraries add once a GPU is used (cuBLAS, cuFFT kernels and the context).
CUDA_HOST_MB = 2000
#: GPU memory of the CUDA context and torch's caching allocator before any array.
CUDA_CONTEXT_MB = 600

#: The per-scan steps whose resources are estimated here.
STEPS = ("preprocess", "mlem", "reproject", "register", "shift_back", "reconstruct", "reconstruct_uncorrected",
         "volume_tiff")

# Seconds per unit of work (CPU, GPU): on CPU measured on this project's 2-core machines (torch
# CPU build, 128-256 px slices), on GPU from the H100 timings of issue 11 (FBP of a 1024^3
# volume from 721 angles in 292 s); the projector's GPU rate is taken to be FBP's.  Units:
# preprocess and shift_back per pixel of the full-resolution projections (CPU-only steps); the
# projector of steps A-C and FBP per voxel-angle (angles x rows x columns^2).
_SECONDS = {
    "preprocess": (3e-7, 3e-7),
    "shift_back": (5e-7, 5e-7),
    "projector": (8e-9, 4e-10),
    "fbp": (1e-8, 4e-10),
    # Fourier FBP (finufft, CPU): 0.18 s per 1024-px slice of 721 angles on 2 shared cores
    # (benchmarks/results/fbp.md), rounded up.
    "fbp_fourier": (5e-10, 5e-10),
    "volume_tiff": (2e-8, 2e-8),  # per voxel: read, decompress, write
}
#: Factor on the estimated run times, for slower machines, shared nodes and larger-than-usual work.
RUNTIME_MARGIN = 3.0
#: Minutes of every job beyond its work: start-up, imports, reading and writing small files.
RUNTIME_BASE_MIN = 5
#: Passes of steps A and B (each an MLEM of ``mlem_iter`` iterations and a reprojection) that step C
#: runs of its own, by method (plus ``network_passes`` for the network): ``auto`` refines the
#: network's estimate, may rerun iterative alignment from zero and scores every candidate (about
#: 6 passes' worth on the demo scans).
_REGISTER_PASSES = {"auto": 6, "iterative": 6, "network": 1, "phase_correlation": 1, "center_of_mass": 0,
                    "none": 0}


def binned_shape(shape, binning):
    """Shape of the projections binned by ``binning`` (rows as :func:`dejitter.binning.row_binning`)."""
    n_angles, n_rows, n_cols = (int(n) for n in shape)
    binning = max(1, int(binning))
    return n_angles, max(1, n_rows // row_binning(binning, n_rows)), max(1, n_cols // binning)


def _fbp_bytes(n_angles, n_rows, n_cols, binning=1):
    """FBP (step E, or of the raw projections binned by ``binning``): fixed bytes, bytes per slice."""
    c = max(1, n_cols // binning)
    angle_chunk = max(1, min(n_angles, 32, 256 * MB // (24 * c * c)))
    fixed = 64 * angle_chunk * c * c + 2 * 4 * n_rows * n_cols  # interpolation matrix; two views (axis search)
    per_row = FBP_BYTES * n_angles * c + 12 * c * c + 8 * n_angles * n_cols * binning
    return fixed, per_row


def _projector_bytes(n_angles, n_cols):
    """The torch projector of one binned slice geometry: its stored matrix, or the matrix-free work bound."""
    matrix = 2 * n_angles * n_cols**2 * 2 * (8 + 4)
    return matrix if matrix <= 256 * MB else 128 * MB


def _registration_arrays(step, shape, binning, method):
    """Bytes of the arrays steps A-C hold (binned projections, references, volumes and their copies)."""
    n_angles, r, c = binned_shape(shape, binning)
    read = 0
    if step in ("mlem", "reproject"):
        # They read the binned scan and work at the references' resolution (auto: that of its search).
        read = 4 * n_angles * r * c
        factor, row_factor = reference_binning(method, r, c)
        r, c = r // row_factor, c // factor
    stack, volume = 4 * n_angles * r * c, 4 * r * c * c
    copies = {"mlem": (6, 6), "reproject": (3, 3), "register": (16, 8) if method in ("auto", "iterative") else (8, 4)}
    k_stack, k_volume = copies[step]
    return read + k_stack * stack + k_volume * volume + _projector_bytes(n_angles, c)


def memory_mb(step, shape, *, memory_budget_mb=4000, binning=2, qc_binning=1, method="auto", gpu=False,
              whole_read=False):
    """Host memory (MiB) a step needs for a scan, for the rule's ``mem_mb``.

    The steps on full-resolution data (``preprocess``, ``shift_back``, ``reconstruct``,
    ``reconstruct_uncorrected``) work in chunks within ``memory_budget_mb``: they need the
    smaller of the budget and what the whole scan at once would take (never less than one
    chunk of one row).  Steps A-C hold the binned scan whole, ``volume_tiff`` the volume.

    Parameters
    ----------
    step : str
        One of :data:`STEPS`.
    shape : (int, int, int) or None
        Full-resolution projections ``(angles, rows, columns)``; ``None`` (unknown yet): the
        budget, or 4000 MiB for steps A-C.
    memory_budget_mb : float
        The step's budget (config ``memory_budget_mb``, first attempt).
    binning, qc_binning : int
        Binning of steps A-C; binning of the uncorrected QC reconstruction.
    method : str
        Registration method (step C holds more copies for ``auto`` and ``iterative``).
    gpu : bool
        The step runs on a GPU: add what CUDA's libraries take in host memory.
    whole_read : bool
        ``preprocess`` of a format that is read whole (TIFF, NXtomo, Xradia), not in chunks.

    Returns
    -------
    int
        MiB, rounded up to a multiple of 100.
    """
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r}; steps: {', '.join(STEPS)}")
    budget = float(memory_budget_mb) * MB
    extra = CUDA_HOST_MB * MB if gpu else 0
    if shape is None:
        need = budget if step in ("preprocess", "shift_back", "reconstruct", "reconstruct_uncorrected") else 4000 * MB
        return _round_mb(need + extra)
    n_angles, n_rows, n_cols = (int(n) for n in shape)
    if step == "preprocess":
        base = PYTHON_MB * MB + 12 * n_rows * n_cols + (6 * n_angles * n_rows * n_cols if whole_read else 0)
        per_unit, units = SAFETY * PREPROCESS_BYTES * n_rows * n_cols, n_angles  # chunks of angles
    elif step == "shift_back":
        base, per_unit, units = PYTHON_MB * MB, SAFETY * SHIFT_BYTES * n_rows * n_cols, n_angles
    elif step in ("reconstruct", "reconstruct_uncorrected"):
        q = max(1, int(qc_binning)) if step == "reconstruct_uncorrected" else 1
        fixed, per_row = _fbp_bytes(n_angles, n_rows, n_cols, q)
        base, per_unit, units = TORCH_MB * MB + fixed, SAFETY * per_row, max(1, n_rows // q)
    elif step == "volume_tiff":  # the float32 volume read whole, and the writer's copy
        return _round_mb(PYTHON_MB * MB + SAFETY * 2 * 4 * n_rows * n_cols * n_cols)
    else:
        need = TORCH_MB * MB + SAFETY * _registration_arrays(step, shape, binning, method)
        return _round_mb(need + extra)
    whole = base + per_unit * units
    need = max(min(budget, whole), base + per_unit)  # never less than one row (or angle) at a time
    return _round_mb(need + extra)


def gpu_memory_mb(step, shape, *, memory_budget_mb=4000, binning=2, qc_binning=1, method="auto"):
    """GPU memory (MiB) a step holds at most, for the rule's ``gpu_mem_mb`` (0 for CPU-only steps).

    The CUDA context, and the step's arrays on the device: steps A-C the binned scan and its
    volumes, FBP one chunk of slices within the budget.  The matrix-free projector may use up
    to a quarter of the GPU's free memory for temporaries besides (it adapts to what is free).
    """
    if step in ("preprocess", "shift_back", "volume_tiff"):
        return 0
    if shape is None:
        return _round_mb(CUDA_CONTEXT_MB * MB + float(memory_budget_mb) * MB)
    if step in ("reconstruct", "reconstruct_uncorrected"):
        # The host budget bounds the chunk of slices, and with it what the chunk holds on the GPU.
        host = memory_mb(step, shape, memory_budget_mb=memory_budget_mb, qc_binning=qc_binning) * MB
        return _round_mb(CUDA_CONTEXT_MB * MB + max(0.0, host - TORCH_MB * MB))
    return _round_mb(CUDA_CONTEXT_MB * MB + _registration_arrays(step, shape, binning, method))


def runtime_min(step, shape, *, binning=2, qc_binning=1, method="auto", mlem_iter=20, network_passes=2,
                gpu=False, attempt=1):
    """Wall time (minutes) to request for a step, for the rule's ``runtime``; longer for each retry.

    From the work of the step (pixels for preprocess and shift-back; voxel-angles of the
    projector for steps A-C and of FBP) at the rates measured on CPU, or on a GPU where the
    step runs on one (``gpu``), times :data:`RUNTIME_MARGIN`, plus :data:`RUNTIME_BASE_MIN`.

    Parameters
    ----------
    step : str
        One of :data:`STEPS`.
    shape : (int, int, int) or None
        Full-resolution projections ``(angles, rows, columns)``; ``None`` (unknown yet): one hour.
    binning, qc_binning, method, mlem_iter, network_passes
        The settings that decide the work of steps A-C and of the QC reconstruction.
    gpu : bool
        Steps A-C and E run on a GPU.
    attempt : int
        The ``attempt``-th run asks for ``attempt`` times as long (a retry after a time-out).

    Returns
    -------
    int
        Minutes.
    """
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r}; steps: {', '.join(STEPS)}")
    attempt = max(1, int(attempt))
    if shape is None:
        return 60 * attempt
    n_angles, n_rows, n_cols = (int(n) for n in shape)
    pixels = n_angles * n_rows * n_cols
    a, r, c = binned_shape(shape, binning)
    one_projection = a * r * c * c  # voxel-angles of one forward (or adjoint) projection of the binned volume
    rate = {key: value[1 if gpu else 0] for key, value in _SECONDS.items()}
    if step == "preprocess":
        seconds = rate["preprocess"] * pixels
    elif step == "shift_back":
        seconds = rate["shift_back"] * pixels
    elif step in ("mlem", "reproject"):
        # At the resolution step C reads the references at (auto: that of its search).
        factor, row_factor = reference_binning(method, r, c)
        work = a * (r // row_factor) * (c // factor) ** 2
        seconds = rate["projector"] * work * ((2 * mlem_iter + 1) if step == "mlem" else 1)
    elif step == "volume_tiff":
        seconds = rate["volume_tiff"] * n_rows * n_cols * n_cols
    elif step == "register":
        passes = _REGISTER_PASSES.get(method, _REGISTER_PASSES["auto"])
        if method in ("auto", "network"):
            passes += network_passes
        projections = (2 * mlem_iter + 2) * passes
        factor = search_factor(c) if method == "auto" else 1
        if factor > 1:
            # auto searches binned by ``factor``, then refines at this resolution: at most FINE_MAX_ITER
            # iterations, MLEM FINE_FIRST_MLEM_ITER then 6 per iteration, and a reprojection each (an
            # upper bound: where the search's volumes are reused, the first runs FINE_WARM_MLEM_ITER).
            _, r2, c2 = binned_shape((a, r, c), factor)
            fine_mlem = FINE_FIRST_MLEM_ITER + 6 * (FINE_MAX_ITER - 1)
            projections = projections * (r2 * c2 * c2) / (r * c * c) + 2 * fine_mlem + FINE_MAX_ITER
        seconds = rate["projector"] * one_projection * projections
    else:
        q = max(1, int(qc_binning)) if step == "reconstruct_uncorrected" else 1
        # The CPU back-projects by Fourier gridding where finufft is importable (find_spec: no torch import here).
        fbp_rate = rate["fbp_fourier"] if not gpu and importlib.util.find_spec("finufft") else rate["fbp"]
        seconds = fbp_rate * n_angles * (n_rows // q) * (n_cols // q) ** 2
        seconds += rate["preprocess"] * pixels  # reading the projections; the axis search
    minutes = RUNTIME_BASE_MIN + RUNTIME_MARGIN * seconds / 60
    return int(math.ceil(minutes)) * attempt


def _round_mb(n_bytes):
    return int(math.ceil(n_bytes / MB / 100) * 100)
