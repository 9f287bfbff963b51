"""The per-scan steps on full-resolution data as file-to-file functions: preprocessing, D and E.

Steps A-C, on the binned projections, are in :mod:`dejitter.pipeline.alignment`.  Each function
reads its inputs, calls the array functions of the library and writes its outputs atomically.  Intermediates are HDF5 files with one float32 dataset ``data`` plus ``theta_deg``
(and ``instrument_shifts`` where the raw file records the instrument's own alignment), so every
cached step of the DAG can be opened and inspected on its own.

The steps that touch full-resolution data (:func:`preprocess`, :func:`shift_back`,
:func:`reconstruct`) take a ``memory_budget_mb``: they read, process and write in chunks of
detector rows (slices are independent in parallel-beam geometry) or of angles, sized so that
the process stays within the budget, so a scan larger than memory is processed, not refused.
The result does not depend on the chunk size: chunked and whole-scan runs give identical arrays.

Running out of memory (host, or GPU in steps A-C and E) stops a step with
:class:`dejitter.pipeline.memory.StepOutOfMemoryError`, which says so and leaves no output (the writers are atomic).
The workflow then retries the step with ``chunk_divisor`` 2, 4, ... (Snakemake's ``attempt``):
chunks of half, a quarter, ... the size (:func:`dejitter.pipeline.memory.chunk_length`).
"""

from __future__ import annotations

import logging

import numpy as np

from .. import __version__
from ..binning import bin_projections, binning_factor, row_binning
from ..files import open_stack, read_shifts, stack_writer, volume_writer, write_stack
from ..preprocessing import flat_field, line_integrals, median_prefilter, refuse_bad_scan, repair
from ..readers import open_scan
from ..shifting import correct
from ..types import ScanError
from . import common
from .common import binned_center
from .memory import chunk_for_budget, chunks, out_of_memory_guard

# Working memory per element of a chunk, shared with the workflow's resource estimates.
from .sizing import FBP_BYTES, PREPROCESS_BYTES, SHIFT_BYTES

__all__ = ["preprocess", "shift_back", "crop_region", "reconstruct"]

log = logging.getLogger("dejitter")


def preprocess(raw_path, projections_out, binned_out, *, fmt="auto", angles=None, flats=None, darks=None,
               normalised=False, layout=None, frames=None, binning="auto", median_size=3, max_bad_fraction=0.01,
               memory_budget_mb=None, chunk_divisor=1):
    """Read a raw scan, normalise to line integrals, and prepare the binned copy for steps A-C.

    The same arrays as :func:`dejitter.preprocessing.normalise` followed by
    :func:`~dejitter.preprocessing.prepare_for_registration` on the whole scan, computed in
    chunks of angles (whole views) so that the process stays within ``memory_budget_mb`` (MiB;
    ``None``: the whole scan at once).  Data Exchange files are read chunk by chunk; other
    formats are read whole first (see :func:`dejitter.readers.open_scan`).  A refused scan
    leaves no output: the writers are atomic.

    ``binning`` is an integer or ``"auto"`` (:func:`dejitter.binning.auto_binning` of the
    detector width); the factor applied is recorded in ``binned_out`` (attribute ``scale``).
    The instrument's alignment shifts (:attr:`dejitter.types.RawScan.instrument_shifts`, jitter
    in input pixels), where the file records them, are stored in both outputs as the dataset
    ``instrument_shifts`` (angle, 2) beside ``theta_deg``.
    ``chunk_divisor`` (2, 4, ... on a retry after running out of memory) divides the chunks.
    """
    with out_of_memory_guard("preprocess", memory_budget_mb=memory_budget_mb, chunk_divisor=chunk_divisor):
        _preprocess(raw_path, projections_out, binned_out, fmt=fmt, angles=angles, flats=flats, darks=darks,
                    normalised=normalised, layout=layout, frames=frames, binning=binning, median_size=median_size,
                    max_bad_fraction=max_bad_fraction, memory_budget_mb=memory_budget_mb,
                    chunk_divisor=chunk_divisor)


def _preprocess(raw_path, projections_out, binned_out, *, fmt, angles, flats, darks, normalised, layout, frames,
                binning, median_size, max_bad_fraction, memory_budget_mb, chunk_divisor):
    with open_scan(raw_path, fmt=fmt, angles=angles, flats=flats, darks=darks, normalised=normalised,
                   layout=layout, frames=frames) as scan:
        n_angles, n_rows, n_cols = scan.data.shape
        binning = binning_factor(binning, n_cols)
        log.info("read %s: %d angles of %d x %d px; steps A-C at binning %d", raw_path, n_angles, n_rows, n_cols,
                 binning)
        flat, dark, dead = _flat_field(scan, memory_budget_mb, chunk_divisor)
        refuse_bad_scan(raw_path, dead_fraction=float(np.mean(dead)) if dead is not None else 0.0,
                        max_bad_fraction=max_bad_fraction)
        row_factor = row_binning(binning, n_rows)
        # Chunks of angles, whole views: every operation here is within one view, and raw files
        # store their frames one after the other (Data Exchange chunks them one per frame), so a
        # chunk is a few large reads, where a chunk of rows would be one small read per frame.
        angles = chunk_for_budget("angles", n_angles, PREPROCESS_BYTES * n_rows * n_cols, memory_budget_mb,
                                  fixed_bytes=12 * n_rows * n_cols, divisor=chunk_divisor)
        attrs = {"source": str(raw_path)}
        if scan.pixel_size_um:
            attrs["pixel_size_um"] = scan.pixel_size_um
        binned_shape = (n_angles, n_rows // row_factor, n_cols // int(binning))
        scale = np.array([binning, row_factor], dtype=np.float64)
        extra = {"theta_deg": scan.theta_deg}
        if scan.instrument_shifts is not None:
            extra["instrument_shifts"] = np.asarray(scan.instrument_shifts, dtype=np.float64)
        nonfinite, raw_low, raw_high, low, high = 0, np.inf, -np.inf, np.inf, -np.inf
        with stack_writer(projections_out, scan.data.shape, attrs=attrs, extra=extra) as out, \
                stack_writer(binned_out, binned_shape, attrs={"scale": scale.tolist(), "source": str(raw_path)},
                             extra=extra) as out_binned:
            for a in chunks(n_angles, angles):
                data = np.asarray(scan.data[a], dtype=np.float32)
                finite = np.isfinite(data)
                nonfinite += int(finite.size - finite.sum())
                raw_low = min(raw_low, float(np.min(data, where=finite, initial=np.inf)))
                raw_high = max(raw_high, float(np.max(data, where=finite, initial=-np.inf)))
                li = repair(*line_integrals(data, flat, dark, dead))
                out[a] = li
                low, high = min(low, float(li.min())), max(high, float(li.max()))
                out_binned[a] = bin_projections(median_prefilter(li, median_size), binning, row_factor)[0]
            # Whole-scan checks come last: a refused scan's temporary files are removed unseen.
            refuse_bad_scan(raw_path, nonfinite_fraction=nonfinite / scan.data.size, raw_range=(raw_low, raw_high),
                            max_bad_fraction=max_bad_fraction)
            if high - low < 1e-6:
                raise ScanError(raw_path, "all projections are constant: there is no sample to reconstruct")


def _flat_field(scan, memory_budget_mb, chunk_divisor=1):
    """:func:`dejitter.preprocessing.flat_field` in chunks of rows; ``(None, None, None)`` if normalised."""
    if scan.normalised:
        return None, None, None
    n_rows, n_cols = scan.data.shape[1:]
    per_row = 8 * (len(scan.flats) + len(scan.darks)) * n_cols
    flat = np.empty((n_rows, n_cols), dtype=np.float32)
    dark = np.empty((n_rows, n_cols), dtype=np.float32)
    dead = np.empty((n_rows, n_cols), dtype=bool)
    for r in chunks(n_rows, chunk_for_budget("flats and darks", n_rows, per_row, memory_budget_mb,
                                               divisor=chunk_divisor)):
        flat[r], dark[r], dead[r] = flat_field(scan.flats[:, r], scan.darks[:, r])
    return flat, dark, dead


def shift_back(projections_path, shifts_path, out, *, sinograms_out=None, order=3, mode="nearest",
               memory_budget_mb=None, chunk_divisor=1):
    """Step D: undo the estimated jitter, sub-pixel, at full resolution, in chunks of angles.

    ``sinograms_out``, if given, receives the central detector row before and after the
    correction, dataset ``sinograms`` of shape (2, angle, column) with attribute ``row``: all
    the QC figures read of the full-resolution stacks, so that the stacks can be deleted as soon
    as steps D and E are done (a 2048 x 2048 x 1500 scan holds 24 GiB in each).
    ``chunk_divisor`` (2, 4, ... on a retry after running out of memory) divides the chunks.
    """
    with out_of_memory_guard("step D (shift back)", memory_budget_mb=memory_budget_mb, chunk_divisor=chunk_divisor):
        _, shifts = read_shifts(shifts_path)
        with open_stack(projections_path) as (projections, attrs, extras):
            n_angles, n_rows, n_cols = projections.shape
            if len(shifts) != n_angles:
                raise ValueError(f"{shifts_path} has {len(shifts)} rows for {n_angles} projections")
            angles = chunk_for_budget("angles", n_angles, SHIFT_BYTES * n_rows * n_cols, memory_budget_mb,
                                       divisor=chunk_divisor)
            row = n_rows // 2
            sinograms = np.empty((2, n_angles, n_cols), np.float32)
            with stack_writer(out, projections.shape, attrs=attrs, extra=extras) as corrected:
                for a in chunks(n_angles, angles):
                    block = projections[a]
                    shifted = correct(block, shifts[a], order=order, mode=mode)
                    corrected[a] = shifted
                    sinograms[0, a], sinograms[1, a] = block[:, row], shifted[:, row]
                if sinograms_out is not None:  # inside the block: no sinograms without the stack
                    write_stack(sinograms_out, sinograms, name="sinograms", attrs={"row": row})


def crop_region(crop, shape):
    """The region of a volume that ``crop`` keeps, as one slice per axis.

    Parameters
    ----------
    crop : dict or None
        ``{"z": [start, stop], "y": [start, stop], "x": [start, stop]}`` in voxels (stop
        excluded, as Python slices; a stop beyond the volume is clipped); axes left out, and
        ``None``, keep the whole axis.
    shape : (int, int, int)
        The volume ``(z, y, x)``.

    Returns
    -------
    tuple of slice
    """
    crop = crop or {}
    unknown = set(crop) - {"z", "y", "x"}
    if unknown:
        raise ValueError(f"volume_crop: unknown axes {sorted(unknown)}; use z, y and x")
    region = []
    for axis, size in zip("zyx", shape):
        bounds = crop.get(axis)
        if bounds is None:
            region.append(slice(0, int(size)))
            continue
        start, stop = (int(v) for v in bounds)
        stop = min(stop, int(size))
        if not 0 <= start < stop:
            raise ValueError(f"volume_crop: {axis} = {list(bounds)} keeps nothing of the {size} voxels of that axis")
        region.append(slice(start, stop))
    return tuple(region)


def _scaled_crop(crop, factor):
    """``crop`` (in voxels of the full-resolution volume) in voxels of a volume binned by ``factor``."""
    if not crop or factor == 1:
        return crop
    return {axis: [int(bounds[0]) // factor, -(-int(bounds[1]) // factor)] for axis, bounds in crop.items()
            if bounds is not None}


def reconstruct(projections_path, out, *, center=None, find_axis=True, filter_name="shepp-logan", backend="auto",
                device=None, provenance=None, memory_budget_mb=None, binning=1, crop=None, dtype="float32",
                chunk_divisor=1):
    """Step E: FBP (gridrec with tomopy) of the corrected projections into ``volume.h5``.

    The axis is ``center`` when given, else found on the projections (views half a turn apart,
    :func:`dejitter.registration.center.find_center`), else the detector centre.  Slices are
    reconstructed and written in chunks of detector rows within ``memory_budget_mb``.

    Parameters
    ----------
    binning : int or "auto"
        Reconstruct the projections binned by this factor (rows and columns, as
        :func:`dejitter.binning.bin_projections`; ``"auto"``:
        :func:`~dejitter.binning.auto_binning` of the detector width): a volume
        ``binning^3`` times smaller, made about ``binning^3`` times faster (the uncorrected
        reconstruction for QC).  Recorded as the attribute ``volume_binning`` when > 1, with
        ``volume_row_binning``: the rows are binned by at most their number (a 2-row detector by 2).
    crop : dict, optional
        Keep only this region (:func:`crop_region`), in voxels of the full-resolution volume;
        only the detector rows of its z range are reconstructed.  Its first voxel is recorded
        as the attribute ``crop_origin_zyx``.
    dtype : {"float32", "float16"}
        How the volume is stored (:func:`dejitter.files.volume_writer`).
    chunk_divisor : int
        2, 4, ... on a retry after running out of memory: chunks of half, a quarter, ... the size.
    """
    with out_of_memory_guard("step E (FBP)", memory_budget_mb=memory_budget_mb, chunk_divisor=chunk_divisor):
        _reconstruct(projections_path, out, center=center, find_axis=find_axis, filter_name=filter_name,
                     backend=backend, device=device, provenance=provenance, memory_budget_mb=memory_budget_mb,
                     binning=binning, crop=crop, dtype=dtype, chunk_divisor=chunk_divisor)


def _reconstruct(projections_path, out, *, center, find_axis, filter_name, backend, device, provenance,
                 memory_budget_mb, binning, crop, dtype, chunk_divisor):
    dtype = np.dtype(dtype).name
    largest = float(np.finfo(dtype).max)
    with open_stack(projections_path) as (projections, attrs, extras):
        theta = np.deg2rad(extras["theta_deg"])
        n_angles, n_rows, n_cols = projections.shape
        if center is None and find_axis:
            # Imported here: the registration package brings torch, and the steps that do not
            # reconstruct (preprocess, shift_back) start about a second sooner without it.
            from ..registration.center import find_center

            center = find_center(projections, theta)
        factor = binning_factor(binning, n_cols)
        row_factor = min(factor, n_rows) if factor > 1 else 1
        n_slices, width = n_rows // row_factor, n_cols // factor
        region = crop_region(_scaled_crop(crop, factor), (n_slices, width, width))
        backend_obj = common.step_backend(backend, device)
        meta = dict(provenance or {})
        meta.update({"dejitter_version": __version__, "backend": backend_obj.name, "device": str(backend_obj.device),
                     "center": "detector centre" if center is None else float(center), "filter": filter_name,
                     "source": attrs.get("source", str(projections_path))})
        if factor > 1:
            meta.update(volume_binning=factor, volume_row_binning=row_factor)
        if crop:
            meta["crop_origin_zyx"] = [r.start for r in region]
        pixel_size = attrs.get("pixel_size_um")
        # Per slice: the projections' rows (before binning too) and their filtered copies, and the slice (twice).
        per_row = FBP_BYTES * n_angles * width + 12 * width * width + (8 * n_angles * n_cols * row_factor
                                                                         if factor > 1 else 0)
        z = region[0]
        rows = chunk_for_budget("slices", z.stop - z.start, per_row, memory_budget_mb, divisor=chunk_divisor,
                                 fixed_bytes=_fbp_fixed_bytes(backend_obj, n_angles, width))
        shape = tuple(r.stop - r.start for r in region)
        with volume_writer(out, shape, attrs=meta, voxel_size_um=pixel_size * factor if pixel_size else None,
                           dtype=dtype) as volume:
            for r in chunks(z.stop - z.start, rows):
                first = z.start + r.start
                rows_in = slice(first * row_factor, (first + r.stop - r.start) * row_factor)
                chunk = np.asarray(projections[:, rows_in], dtype=np.float32)
                if factor > 1:
                    chunk, _ = bin_projections(chunk, factor, row_factor)
                slices = backend_obj.fbp(chunk, theta, center=binned_center(center, factor), filter_name=filter_name)
                slices = slices[:, region[1], region[2]]
                if dtype != "float32" and np.nanmax(np.abs(slices), initial=0.0) > largest:
                    raise ValueError(f"volume values up to {np.nanmax(np.abs(slices)):.4g} exceed the range of "
                                     f"{dtype} ({largest:g}): store the volume as float32 (volume_dtype)")
                volume[r] = slices


def _fbp_fixed_bytes(backend_obj, n_angles, n_cols):
    """Memory of the embedded FBP whatever the number of slices: the interpolation matrix of one angle
    chunk (pixel-driven torch), or the NUFFT plans (finufft); TomoPy's is not counted."""
    from ..reconstruction import fbp_angle_chunk
    from ..reconstruction.fourier import fourier_fixed_bytes

    if backend_obj.name == "torch":
        return 64 * fbp_angle_chunk(n_angles, n_cols) * n_cols * n_cols
    if getattr(backend_obj, "fbp_method", None) == "fourier":
        import torch

        return fourier_fixed_bytes(n_angles, n_cols, torch.get_num_threads())
    return 0
