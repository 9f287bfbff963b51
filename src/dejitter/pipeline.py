"""The per-scan steps as file-to-file functions: what each workflow rule calls.

Each function reads its inputs, calls the array functions of the library and writes its outputs
atomically.  Intermediates are HDF5 files with one float32 dataset ``data`` plus ``theta_deg``,
so every cached step of the DAG can be opened and inspected on its own.
"""

from __future__ import annotations

import json
import logging

import numpy as np

from . import __version__
from .backends import get_backend
from .center import find_center
from .files import read_shifts, read_stack, write_shifts, write_stack, write_volume
from .io import read_scan
from .metrics import shift_error
from .preprocessing import normalise, prepare_for_registration
from .registration import estimate_shifts
from .shifting import correct

__all__ = [
    "preprocess", "reconstruct_reference", "reproject_reference", "register", "shift_back", "reconstruct",
    "scan_metrics",
]

log = logging.getLogger("dejitter")


def _binned_center(center, scale):
    """Axis column in binned pixels, from the axis column in input pixels."""
    return None if center is None else (float(center) - (scale - 1) / 2) / scale


def preprocess(raw_path, projections_out, binned_out, *, fmt="auto", angles=None, flats=None, darks=None,
               normalised=False, binning=2, median_size=3, max_bad_fraction=0.01):
    """Read a raw scan, normalise to line integrals, and prepare the binned copy for steps A-C."""
    scan = read_scan(raw_path, fmt=fmt, angles=angles, flats=flats, darks=darks, normalised=normalised)
    line_integrals = normalise(scan.data, scan.flats, scan.darks, normalised=scan.normalised,
                               max_bad_fraction=max_bad_fraction, path=raw_path)
    log.info("read %s: %d angles of %d x %d px", raw_path, *line_integrals.shape)
    attrs = {"source": str(raw_path)}
    if scan.pixel_size_um:
        attrs["pixel_size_um"] = scan.pixel_size_um
    write_stack(projections_out, line_integrals, attrs=attrs, extra={"theta_deg": scan.theta_deg})
    binned, scale = prepare_for_registration(line_integrals, binning=binning, median_size=median_size)
    write_stack(binned_out, binned, attrs={"scale": scale.tolist()}, extra={"theta_deg": scan.theta_deg})


def _read_binned(path):
    binned, attrs, extras = read_stack(path)
    return binned, np.deg2rad(extras["theta_deg"]), np.asarray(json.loads(attrs["scale"])
                                                                if isinstance(attrs["scale"], str)
                                                                else attrs["scale"], dtype=float)


def reconstruct_reference(binned_path, out, *, mlem_iter=20, center=None, backend="auto", device=None):
    """Step A: MLEM of the two interleaved halves of the angles (leave-out references)."""
    binned, theta, scale = _read_binned(binned_path)
    backend = get_backend(backend, device=device)
    halves = [np.arange(len(theta))[k::2] for k in (0, 1)]
    c = _binned_center(center, scale[0])
    volumes = [backend.mlem(binned[idx], theta[idx], mlem_iter, center=c) for idx in halves]
    write_stack(out, np.stack(volumes), attrs={"backend": backend.name, "mlem_iter": mlem_iter},
                extra={"theta_deg": np.rad2deg(theta)})


def reproject_reference(binned_path, volumes_path, out, *, center=None, backend="auto", device=None):
    """Step B: reproject each half's volume at the angles of the other half."""
    binned, theta, scale = _read_binned(binned_path)
    volumes, _, _ = read_stack(volumes_path)
    backend = get_backend(backend, device=device)
    c = _binned_center(center, scale[0])
    references = np.empty_like(binned)
    for k in (0, 1):
        idx = np.arange(len(theta))[k::2]
        references[idx] = backend.reproject(volumes[1 - k], theta[idx], center=c)
    write_stack(out, references, extra={"theta_deg": np.rad2deg(theta)})


def register(binned_path, shifts_out, *, references_path=None, method="network", model_path=None,
             model_sha256=None, refine_iterations=0, mlem_iter=20, center=None, backend="auto", device=None,
             max_spread=1.0):
    """Step C: estimate the jitter and write ``shifts.csv`` in pixels of the input projections.

    Returns
    -------
    dict
        Provenance: method, model checksum, backend.
    """
    binned, theta, scale = _read_binned(binned_path)
    backend_obj = get_backend(backend, device=device)
    references = read_stack(references_path)[0] if references_path else None
    options, model, card = {}, None, {}
    if method == "network":
        from .network import load_model

        model, card = load_model(model_path, sha256=model_sha256)
        amplitude = card.get("trained_amplitude_px_input")
        options = {"max_spread": max_spread / scale[0],
                   "trained_amplitude": None if amplitude is None else amplitude / scale[0]}
    shifts, quality = estimate_shifts(binned, theta, method, mlem_iter=mlem_iter,
                                      center=_binned_center(center, scale[0]), backend=backend_obj,
                                      references=references, model=model, refine_iterations=refine_iterations,
                                      **options)
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
    return {"method": method, "model_sha256": card.get("sha256", "none"), "backend": backend_obj.name}


def shift_back(projections_path, shifts_path, out, *, order=3, mode="nearest"):
    """Step D: undo the estimated jitter, sub-pixel, at full resolution."""
    projections, attrs, extras = read_stack(projections_path)
    _, shifts = read_shifts(shifts_path)
    if len(shifts) != len(projections):
        raise ValueError(f"{shifts_path} has {len(shifts)} rows for {len(projections)} projections")
    write_stack(out, correct(projections, shifts, order=order, mode=mode), attrs=attrs, extra=extras)


def reconstruct(projections_path, out, *, center=None, find_axis=True, filter_name="shepp-logan", backend="auto",
                device=None, provenance=None):
    """Step E: FBP (gridrec with tomopy) of the corrected projections into ``volume.h5``.

    The axis is ``center`` when given, else found on the projections (views half a turn apart),
    else the detector centre.
    """
    projections, attrs, extras = read_stack(projections_path)
    theta = np.deg2rad(extras["theta_deg"])
    if center is None and find_axis:
        center = find_center(projections, theta)
    backend_obj = get_backend(backend, device=device)
    volume = backend_obj.fbp(projections, theta, center=center, filter_name=filter_name)
    meta = dict(provenance or {})
    meta.update({"dejitter_version": __version__, "backend": backend_obj.name, "device": str(backend_obj.device),
                 "center": "detector centre" if center is None else float(center), "filter": filter_name,
                 "source": attrs.get("source", str(projections_path))})
    write_volume(out, volume, attrs=meta, voxel_size_um=attrs.get("pixel_size_um"))


def scan_metrics(shifts_path, *, true_shifts_path=None):
    """Shift statistics of a scan, and the error against the true jitter when it is known."""
    table, shifts = read_shifts(shifts_path)
    theta = np.deg2rad(table["theta_deg"].to_numpy())
    observed = shifts[:, 1] if np.all(np.isfinite(shifts[:, 1])) else np.zeros(len(shifts))
    metrics = {
        "angles": len(table),
        "rms_shift_px": float(np.sqrt(np.mean(shifts[:, 0] ** 2 + observed ** 2))),
        "max_shift_px": float(np.nanmax(np.abs(shifts))),
        "dy_observable": bool(np.all(np.isfinite(shifts[:, 1]))),
        "flagged_angles": int(table["flagged"].sum()) if "flagged" in table else 0,
        "median_residual": float(table["residual"].median()) if "residual" in table else float("nan"),
        "mse_vs_truth_px2": float("nan"),
        "mse_uncorrected_px2": float("nan"),
    }
    if true_shifts_path:
        _, truth = read_shifts(true_shifts_path)
        metrics["mse_vs_truth_px2"] = shift_error(shifts, truth, theta)["mse"]
        metrics["mse_uncorrected_px2"] = shift_error(np.zeros_like(truth), truth, theta)["mse"]
    return metrics

