"""The per-scan steps as file-to-file functions: what each workflow rule calls.

Each function reads its inputs, calls the array functions of the library and writes its outputs
atomically.  Intermediates are HDF5 files with one float32 dataset ``data`` plus ``theta_deg``,
so every cached step of the DAG can be opened and inspected on its own.

The steps that touch full-resolution data (:func:`preprocess`, :func:`shift_back`,
:func:`reconstruct`) take a ``memory_budget_mb``: they read, process and write in chunks of
detector rows (slices are independent in parallel-beam geometry) or of angles, sized so that
the process stays within the budget, so a scan larger than memory is processed, not refused.
The result does not depend on the chunk size: chunked and whole-scan runs give identical arrays.
"""

from __future__ import annotations

import json
import logging
import math
import os

import numpy as np

from . import __version__
from .center import find_center
from .errors import ScanError
from .files import open_stack, read_shifts, read_stack, stack_writer, volume_writer, write_shifts, write_stack
from .io import open_scan
from .preprocessing import bin_projections, flat_field, line_integrals, median_prefilter, refuse_bad_scan, repair
from .registration import estimate_shifts, reads_leave_out
from .shifting import correct

__all__ = [
    "preprocess", "uses_leave_out", "reconstruct_reference", "reproject_reference", "register", "shift_back",
    "reconstruct",
    "chunk_length", "resident_bytes",
]

log = logging.getLogger("dejitter")

#: Estimates of the working memory per element of a chunk (bytes), temporaries included,
#: checked with benchmarks/bench_memory.py; :data:`SAFETY` covers allocator slack on top.
PREPROCESS_BYTES = 48  # raw, float32 copy, transmission, masks, line integrals, repair, prefilter
SHIFT_BYTES = 16  # input and output float32, one image of float64 spline coefficients per call
FBP_BYTES = 56  # input, padded FFT (complex, twice the width), filtered copy
SAFETY = 1.5


def _get_backend(name, device):
    # Deterministic cuBLAS needs this before its first use (torch raises otherwise).
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # Imported here so that steps without reconstruction do not load torch (about 250 MB resident).
    import torch

    from .backends import get_backend

    # Reruns must give bit-identical outputs (a step killed and rerun, a cached result recomputed).
    torch.use_deterministic_algorithms(True, warn_only=True)
    return get_backend(name, device=device)


def resident_bytes():
    """Resident memory of this process now, in bytes (0 where ``/proc`` is not available)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def chunk_length(total, bytes_per_unit, memory_budget_mb=None, *, reserved_bytes=0, multiple=1, safety=SAFETY):
    """How many rows (or angles) a step processes at once to stay within its memory budget.

    Chooses the largest ``n`` with ``n * bytes_per_unit * safety <= budget - reserved_bytes``,
    rounded down to a multiple of ``multiple`` (e.g. the binning factor, so that chunks hold
    whole bins), and at least ``multiple`` (a unit cannot be split: a budget too small for one
    unit is exceeded rather than refused).

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

    Returns
    -------
    int
        Between ``multiple`` and ``total`` (``total`` when everything fits).
    """
    total, multiple = int(total), max(1, int(multiple))
    if memory_budget_mb is None:
        return max(total, 1)
    allowance = float(memory_budget_mb) * 2**20 - float(reserved_bytes)
    n = int(max(allowance, 0) // (float(bytes_per_unit) * safety)) // multiple * multiple
    return max(multiple, min(n, total))


def _chunks(total, length):
    for start in range(0, total, length):
        yield slice(start, min(start + length, total))


def _chunk_for_budget(what, total, bytes_per_unit, memory_budget_mb, *, fixed_bytes=0, multiple=1):
    """:func:`chunk_length` with what this process holds now as reserved, logged."""
    n = chunk_length(total, bytes_per_unit, memory_budget_mb, reserved_bytes=resident_bytes() + fixed_bytes,
                     multiple=multiple)
    if n < total:
        log.info("memory budget %s MB: %s in %d chunks of %d", memory_budget_mb, what, math.ceil(total / n), n)
    return n


def _binned_center(center, scale):
    """Axis column in binned pixels, from the axis column in input pixels."""
    return None if center is None else (float(center) - (scale - 1) / 2) / scale


def preprocess(raw_path, projections_out, binned_out, *, fmt="auto", angles=None, flats=None, darks=None,
               normalised=False, binning=2, median_size=3, max_bad_fraction=0.01, memory_budget_mb=None):
    """Read a raw scan, normalise to line integrals, and prepare the binned copy for steps A-C.

    The same arrays as :func:`dejitter.preprocessing.normalise` followed by
    :func:`~dejitter.preprocessing.prepare_for_registration` on the whole scan, computed in
    chunks of detector rows (with the few neighbouring rows the 2-D filters need) so that the
    process stays within ``memory_budget_mb`` (MiB; ``None``: the whole scan at once).  Data
    Exchange files are read chunk by chunk; other formats are read whole first (see
    :func:`dejitter.io.open_scan`).  A refused scan leaves no output: the writers are atomic.
    """
    with open_scan(raw_path, fmt=fmt, angles=angles, flats=flats, darks=darks, normalised=normalised) as scan:
        n_angles, n_rows, n_cols = scan.data.shape
        log.info("read %s: %d angles of %d x %d px", raw_path, n_angles, n_rows, n_cols)
        flat, dark, dead = _flat_field(scan, memory_budget_mb)
        refuse_bad_scan(raw_path, dead_fraction=float(np.mean(dead)) if dead is not None else 0.0,
                        max_bad_fraction=max_bad_fraction)
        row_factor = min(int(binning), n_rows) if int(binning) > 1 else 1
        halo = median_size + 1  # rows the median prefilter (and the 3x3 repair) reach beyond a chunk
        per_row = PREPROCESS_BYTES * n_angles * n_cols
        rows = _chunk_for_budget("rows", n_rows, per_row, memory_budget_mb, multiple=row_factor,
                                 fixed_bytes=2 * halo * per_row + 12 * n_rows * n_cols)
        attrs = {"source": str(raw_path)}
        if scan.pixel_size_um:
            attrs["pixel_size_um"] = scan.pixel_size_um
        binned_shape = (n_angles, n_rows // row_factor, n_cols // int(binning))
        scale = np.array([binning, row_factor], dtype=np.float64)
        theta = {"theta_deg": scan.theta_deg}
        nonfinite, raw_low, raw_high, low, high = 0, np.inf, -np.inf, np.inf, -np.inf
        with stack_writer(projections_out, scan.data.shape, attrs=attrs, extra=theta) as out, \
                stack_writer(binned_out, binned_shape, attrs={"scale": scale.tolist()}, extra=theta) as out_binned:
            for core in _chunks(n_rows, rows):
                around = slice(max(0, core.start - halo), min(n_rows, core.stop + halo))
                inner = slice(core.start - around.start, core.stop - around.start)
                data = np.asarray(scan.data[:, around], dtype=np.float32)
                finite = np.isfinite(data[:, inner])
                nonfinite += int(finite.size - finite.sum())
                raw_low = min(raw_low, float(np.min(data[:, inner], where=finite, initial=np.inf)))
                raw_high = max(raw_high, float(np.max(data[:, inner], where=finite, initial=-np.inf)))
                part = [None, None, None] if dead is None else [flat[around], dark[around], dead[around]]
                li = repair(*line_integrals(data, *part))
                out[:, core] = li[:, inner]
                low, high = min(low, float(li[:, inner].min())), max(high, float(li[:, inner].max()))
                whole_bins = (core.stop - core.start) // row_factor * row_factor  # rows short of a bin are cropped
                if whole_bins:
                    filtered = median_prefilter(li, median_size)[:, inner.start: inner.start + whole_bins]
                    binned, _ = bin_projections(filtered, binning)
                    first = core.start // row_factor
                    out_binned[:, first: first + binned.shape[1]] = binned
            # Whole-scan checks come last: a refused scan's temporary files are removed unseen.
            refuse_bad_scan(raw_path, nonfinite_fraction=nonfinite / scan.data.size, raw_range=(raw_low, raw_high),
                            max_bad_fraction=max_bad_fraction)
            if high - low < 1e-6:
                raise ScanError(raw_path, "all projections are constant: there is no sample to reconstruct")


def _flat_field(scan, memory_budget_mb):
    """:func:`dejitter.preprocessing.flat_field` in chunks of rows; ``(None, None, None)`` if normalised."""
    if scan.normalised:
        return None, None, None
    n_rows, n_cols = scan.data.shape[1:]
    per_row = 8 * (len(scan.flats) + len(scan.darks)) * n_cols
    flat = np.empty((n_rows, n_cols), dtype=np.float32)
    dark = np.empty((n_rows, n_cols), dtype=np.float32)
    dead = np.empty((n_rows, n_cols), dtype=bool)
    for r in _chunks(n_rows, _chunk_for_budget("flats and darks", n_rows, per_row, memory_budget_mb)):
        flat[r], dark[r], dead[r] = flat_field(scan.flats[:, r], scan.darks[:, r])
    return flat, dark, dead


def _read_binned(path):
    binned, attrs, extras = read_stack(path)
    return binned, np.deg2rad(extras["theta_deg"]), np.asarray(json.loads(attrs["scale"])
                                                                if isinstance(attrs["scale"], str)
                                                                else attrs["scale"], dtype=float)


def uses_leave_out(method, model_path=None):
    """Whether steps A and B make leave-out references for ``method`` (else one full volume).

    The correlation methods need leave-out references; the network reads the kind it was
    trained on, which its card records (see :mod:`dejitter.registration`).
    """
    if method != "network" or model_path is None:
        return True
    from .network import read_card, reference_mode

    return reads_leave_out(method, reference_mode(read_card(model_path)))


def reconstruct_reference(binned_path, out, *, leave_out=True, mlem_iter=20, center=None, backend="auto",
                          device=None):
    """Step A: MLEM of the two interleaved halves of the angles (``leave_out``), or of all angles.

    Writes a stack of two volumes (even, odd half) or of one.
    """
    binned, theta, scale = _read_binned(binned_path)
    backend = _get_backend(backend, device)
    subsets = [np.arange(len(theta))[k::2] for k in (0, 1)] if leave_out else [np.arange(len(theta))]
    c = _binned_center(center, scale[0])
    volumes = [backend.mlem(binned[idx], theta[idx], mlem_iter, center=c) for idx in subsets]
    write_stack(out, np.stack(volumes), attrs={"backend": backend.name, "mlem_iter": mlem_iter},
                extra={"theta_deg": np.rad2deg(theta)})


def reproject_reference(binned_path, volumes_path, out, *, center=None, backend="auto", device=None):
    """Step B: reproject each half's volume at the angles of the other half, or the one volume at all."""
    binned, theta, scale = _read_binned(binned_path)
    volumes, _, _ = read_stack(volumes_path)
    backend = _get_backend(backend, device)
    c = _binned_center(center, scale[0])
    if len(volumes) == 1:
        references = backend.reproject(volumes[0], theta, center=c)
    else:
        references = np.empty_like(binned)
        for k in (0, 1):
            idx = np.arange(len(theta))[k::2]
            references[idx] = backend.reproject(volumes[1 - k], theta[idx], center=c)
    kind = "full" if len(volumes) == 1 else "leave_out"
    write_stack(out, references, attrs={"references": kind}, extra={"theta_deg": np.rad2deg(theta)})


def register(binned_path, shifts_out, *, references_path=None, method="network", model_path=None,
             model_sha256=None, network_passes=1, refine_iterations=0, mlem_iter=20, center=None, backend="auto",
             device=None, max_spread=1.0):
    """Step C: estimate the jitter and write ``shifts.csv`` in pixels of the input projections.

    Returns
    -------
    dict
        Provenance: method, model checksum, backend, device.
    """
    binned, theta, scale = _read_binned(binned_path)
    backend_obj = _get_backend(backend, device)
    options, model, card = {}, None, {}
    if method == "network":
        from .network import load_model, trained_amplitude

        model, card = load_model(model_path, sha256=model_sha256)
        options = {"max_spread": max_spread / scale[0], "trained_amplitude": trained_amplitude(card, binned.shape[1:])}
    leave_out = reads_leave_out(method, card.get("references", "leave_out"))
    references = None
    if references_path:
        references, ref_attrs, _ = read_stack(references_path)
        kind = ref_attrs.get("references", "leave_out")
        if kind != ("leave_out" if leave_out else "full"):
            raise ValueError(f"{references_path} holds {kind} references, but method {method!r} reads "
                             f"{'leave-out' if leave_out else 'full'} ones: rerun steps A and B (mlem, reproject)")
    shifts, quality = estimate_shifts(binned, theta, method, mlem_iter=mlem_iter,
                                      center=_binned_center(center, scale[0]), backend=backend_obj,
                                      references=references, leave_out=leave_out, model=model,
                                      network_passes=network_passes, refine_iterations=refine_iterations, **options)
    shifts = shifts * scale
    quality = dict(quality)
    if "spread" in quality:
        quality["spread"] = quality["spread"] * scale[0]
    if "flagged" not in quality:
        residual = quality["residual"]
        mad = np.median(np.abs(residual - np.median(residual))) + 1e-12
        quality["flagged"] = residual > np.median(residual) + 6 * 1.4826 * mad
    write_shifts(shifts_out, np.rad2deg(theta), shifts, quality)
    flagged = int(np.sum(quality["flagged"]))
    if flagged:
        log.warning("%d of %d angles flagged as unreliable", flagged, len(theta))
    return {"method": method, "model_sha256": card.get("sha256", "none"), "backend": backend_obj.name,
            "device": str(backend_obj.device), "references": "leave_out" if leave_out else "full"}


def shift_back(projections_path, shifts_path, out, *, order=3, mode="nearest", memory_budget_mb=None):
    """Step D: undo the estimated jitter, sub-pixel, at full resolution, in chunks of angles."""
    _, shifts = read_shifts(shifts_path)
    with open_stack(projections_path) as (projections, attrs, extras):
        n_angles, n_rows, n_cols = projections.shape
        if len(shifts) != n_angles:
            raise ValueError(f"{shifts_path} has {len(shifts)} rows for {n_angles} projections")
        angles = _chunk_for_budget("angles", n_angles, SHIFT_BYTES * n_rows * n_cols, memory_budget_mb)
        with stack_writer(out, projections.shape, attrs=attrs, extra=extras) as corrected:
            for a in _chunks(n_angles, angles):
                corrected[a] = correct(projections[a], shifts[a], order=order, mode=mode)


def reconstruct(projections_path, out, *, center=None, find_axis=True, filter_name="shepp-logan", backend="auto",
                device=None, provenance=None, memory_budget_mb=None):
    """Step E: FBP (gridrec with tomopy) of the corrected projections into ``volume.h5``.

    The axis is ``center`` when given, else found on the projections (views half a turn apart,
    :func:`dejitter.center.find_center`), else the detector centre.  Slices are
    reconstructed and written in chunks of detector rows within ``memory_budget_mb``.
    """
    with open_stack(projections_path) as (projections, attrs, extras):
        theta = np.deg2rad(extras["theta_deg"])
        n_angles, n_rows, n_cols = projections.shape
        if center is None and find_axis:
            center = find_center(projections, theta)
        backend_obj = _get_backend(backend, device)
        meta = dict(provenance or {})
        meta.update({"dejitter_version": __version__, "backend": backend_obj.name, "device": str(backend_obj.device),
                     "center": "detector centre" if center is None else float(center), "filter": filter_name,
                     "source": attrs.get("source", str(projections_path))})
        # Per slice: the projections' rows and their filtered copies, and the slice itself (twice).
        per_row = FBP_BYTES * n_angles * n_cols + 12 * n_cols * n_cols
        rows = _chunk_for_budget("slices", n_rows, per_row, memory_budget_mb,
                                 fixed_bytes=_fbp_fixed_bytes(backend_obj.name, n_angles, n_cols))
        with volume_writer(out, (n_rows, n_cols, n_cols), attrs=meta,
                           voxel_size_um=attrs.get("pixel_size_um")) as volume:
            for r in _chunks(n_rows, rows):
                volume[r] = backend_obj.fbp(np.asarray(projections[:, r], dtype=np.float32), theta, center=center,
                                            filter_name=filter_name)


def _fbp_fixed_bytes(backend_name, n_angles, n_cols):
    """Memory of the torch FBP whatever the number of slices: the interpolation matrix of one angle chunk."""
    from .reconstruction import fbp_angle_chunk

    return 0 if backend_name != "torch" else 64 * fbp_angle_chunk(n_angles, n_cols) * n_cols * n_cols
