"""Steps A-C as file-to-file functions: MLEM, reprojection and registration of the binned projections.

Their input is ``binned.h5`` of :func:`dejitter.pipeline.steps.preprocess`.  Starting estimate
(``initial_shifts='instrument'``): the steps read the binned projections already corrected by the
instrument's alignment shifts (:func:`read_binned`), so the cached references of steps A and B and
every method of step C work on the same data, and step C estimates the residual jitter, which it
adds back: ``shifts.csv`` always holds the whole jitter.

The binned scan is held whole; running out of memory (host or GPU) stops a step with
:class:`dejitter.pipeline.memory.StepOutOfMemoryError`, and the workflow's retry (``chunk_divisor``
2, 4, ...) reconstructs and reprojects it in that many chunks of slices.
"""

from __future__ import annotations

import json
import logging

import numpy as np

from ..binning import bin_projections, reference_binning
from ..files import open_stack, read_stack, write_shifts, write_stack
from ..metrics import shift_error
from ..registration import estimate_shifts, reads_leave_out
from ..registration.references import MIN_ANGLES, angle_halves, reconstruction_subsets
from ..shifting import correct
from ..types import ScanError
from . import common
from .common import binned_center
from .memory import out_of_memory_guard

__all__ = ["INITIAL_SHIFTS", "read_binned", "uses_leave_out", "reference_grid", "require_angles_for_references",
           "reconstruct_reference", "reproject_reference", "register"]

log = logging.getLogger("dejitter")

#: Starting estimates of step C: none (zero), or the instrument's own alignment shifts.
INITIAL_SHIFTS = ("none", "instrument")
#: Methods of step C that read no reconstruction, so any number of projections will do.
WITHOUT_REFERENCES = ("none", "center_of_mass")


def read_binned(path, initial_shifts="none"):
    """The binned projections of steps A-C, corrected by the starting estimate.

    Parameters
    ----------
    path : str or Path
        ``binned.h5`` of :func:`preprocess`.
    initial_shifts : {'none', 'instrument'}
        ``'instrument'``: correct the projections by the instrument's alignment shifts (sub-pixel,
        in binned pixels), so that what steps A-C estimate is the residual jitter.

    Returns
    -------
    binned : ndarray, shape (angle, row, column)
    theta : ndarray
        Angles in radians.
    scale : ndarray, shape (2,)
        Input pixels per binned pixel (columns, rows).
    initial : ndarray, shape (angle, 2), or None
        The starting estimate in input pixels (None for ``'none'``).
    instrument : ndarray, shape (angle, 2), or None
        The instrument's alignment shifts in input pixels, where the file recorded them.

    Raises
    ------
    ScanError
        ``'instrument'`` for a scan whose file records no alignment shifts: the request is
        refused rather than silently run from zero, so results never depend on it unseen.
    """
    if initial_shifts not in INITIAL_SHIFTS:
        raise ValueError(f"initial_shifts must be one of {', '.join(INITIAL_SHIFTS)}, not {initial_shifts!r}")
    binned, attrs, extras = read_stack(path)
    scale = _scale(attrs)
    instrument = extras.get("instrument_shifts")
    instrument = None if instrument is None else np.asarray(instrument, dtype=np.float64)
    initial = None
    if initial_shifts == "instrument":
        if instrument is None:
            raise ScanError(attrs.get("source", path), "initial_shifts is 'instrument', but the file records no "
                            "instrument alignment shifts (Xradia Alignment/X-Shifts, Y-Shifts); set initial_shifts "
                            "to none for this scan (scan table column initial_shifts)")
        initial = instrument
        binned = correct(binned, initial / scale)
    return binned, np.deg2rad(extras["theta_deg"]), scale, initial, instrument


def _scale(attrs):
    """Input pixels per binned pixel (columns, rows), as ``binned.h5`` records it."""
    return np.asarray(json.loads(attrs["scale"]) if isinstance(attrs["scale"], str) else attrs["scale"], dtype=float)


def uses_leave_out(method, model_path=None):
    """Whether steps A and B make leave-out references for ``method`` (else one full volume).

    The correlation methods need leave-out references; the network (alone or as the first
    candidate of ``auto``) reads the kind it was trained on, which its card records (see
    :mod:`dejitter.registration`).
    """
    if method not in ("network", "auto") or model_path is None:
        return True
    from ..registration.network import read_card, reference_mode

    return reads_leave_out(method, reference_mode(read_card(model_path)))


def reference_grid(binned, center, grid):
    """The projections and axis of steps A and B, on the grid ``(columns, rows)`` binning ``grid``.

    Parameters
    ----------
    binned : ndarray, shape (angle, row, column)
        Steps A-C's projections (:func:`read_binned`).
    center : float or None
        Axis column in pixels of ``binned``.
    grid : (int, int)
        :func:`dejitter.binning.reference_binning` of the method that reads the references.

    Returns
    -------
    projections : ndarray
    center : float or None
        In pixels of ``projections``.
    """
    factor, row_factor = (int(g) for g in grid)
    if (factor, row_factor) == (1, 1):
        return binned, center
    return bin_projections(binned, factor, row_factor)[0], binned_center(center, factor)


def _slices_per_chunk(n_rows, chunk_divisor):
    """Slices steps A-C reconstruct at once: all of them, or a ``chunk_divisor``-th on a retry."""
    return None if chunk_divisor <= 1 else max(1, -(-int(n_rows) // int(chunk_divisor)))


def require_angles_for_references(binned_path, n_angles, method):
    """Refuse a scan with too few projections for registering each view against the others.

    Called by step A (before its MLEM, so that a refused scan leaves no cached references) and
    by step C (for ``iterative``, which has no step A of its own); ``method`` ``None`` is step A
    called outside the workflow.  Methods in ``WITHOUT_REFERENCES`` run on any number of views.

    Raises
    ------
    ScanError
        Naming the scan's raw file, the number of projections and the methods that still run.
    """
    if method in WITHOUT_REFERENCES or n_angles >= MIN_ANGLES:
        return
    with open_stack(binned_path) as (_, attrs, _):
        source = attrs.get("source", binned_path)
    user = f"method {method!r}" if method else "a reference reconstruction"
    raise ScanError(source, f"{n_angles} projections are too few for {user}: it registers each view against a "
                            f"reconstruction from the others, which needs at least {MIN_ANGLES} (use method "
                            f"'none', with initial_shifts 'instrument' where the file records alignment shifts, "
                            f"or 'center_of_mass' for a sample inside the view)")


def reconstruct_reference(binned_path, out, *, leave_out=True, mlem_iter=20, center=None, backend="auto",
                          device=None, initial_shifts="none", method=None, chunk_divisor=1):
    """Step A: MLEM of the two interleaved halves of the angles (``leave_out``), or of all angles.

    Writes a stack of two volumes (even, odd half) or of one, of the projections corrected by
    the starting estimate ``initial_shifts`` (:func:`read_binned`), at the resolution that step C's
    ``method`` reads its references at (:func:`dejitter.binning.reference_binning`: ``auto``
    at that of its search; ``None``: of the projections), recorded as ``reference_binning``.
    ``chunk_divisor`` > 1 (a retry after running out of memory) reconstructs the slices in that
    many chunks; MLEM then starts each chunk from its own mean level, so the volumes differ
    slightly from a whole run.
    """
    with out_of_memory_guard("step A (MLEM)", chunk_divisor=chunk_divisor):
        _reconstruct_reference(binned_path, out, leave_out=leave_out, mlem_iter=mlem_iter, center=center,
                               backend=backend, device=device, initial_shifts=initial_shifts, method=method,
                               chunk_divisor=chunk_divisor)


def _reconstruct_reference(binned_path, out, *, leave_out, mlem_iter, center, backend, device, initial_shifts,
                           method, chunk_divisor):
    binned, theta, scale, _, _ = read_binned(binned_path, initial_shifts)
    require_angles_for_references(binned_path, len(theta), method)
    grid = reference_binning(method, *binned.shape[1:])
    projections, c = reference_grid(binned, binned_center(center, scale[0]), grid)
    del binned
    backend = common.step_backend(backend, device, _slices_per_chunk(projections.shape[1], chunk_divisor))
    subsets = reconstruction_subsets(len(theta), leave_out)
    volumes = [backend.mlem(projections[idx], theta[idx], mlem_iter, center=c) for idx in subsets]
    write_stack(out, np.stack(volumes), attrs={"backend": backend.name, "mlem_iter": mlem_iter,
                                               "initial_shifts": initial_shifts, "reference_binning": list(grid)},
                extra={"theta_deg": np.rad2deg(theta)})


def reproject_reference(binned_path, volumes_path, out, *, center=None, backend="auto", device=None,
                        initial_shifts="none", chunk_divisor=1):
    """Step B: reproject each half's volume at the angles of the other half, or the one volume at all.

    ``initial_shifts`` must be the starting estimate step A reconstructed with (recorded in
    ``out``, which step C checks against its own).

    ``chunk_divisor`` > 1 (a retry after running out of memory) reprojects the slices in that
    many chunks (the same result).
    """
    with out_of_memory_guard("step B (reprojection)", chunk_divisor=chunk_divisor):
        _reproject_reference(binned_path, volumes_path, out, center=center, backend=backend, device=device,
                             initial_shifts=initial_shifts, chunk_divisor=chunk_divisor)


def _reproject_reference(binned_path, volumes_path, out, *, center, backend, device, initial_shifts, chunk_divisor):
    # Only the angles and the binning of the projections: the references take the volumes' grid.
    with open_stack(binned_path) as (_, attrs, extras):
        theta, scale = np.deg2rad(extras["theta_deg"]), _scale(attrs)
    volumes, volume_attrs, _ = read_stack(volumes_path)
    _check_initial(volumes_path, volume_attrs, initial_shifts, "rerun step A (mlem)")
    grid = _grid(volume_attrs)
    c = binned_center(binned_center(center, scale[0]), grid[0])
    n_rows, n_cols = volumes.shape[1], volumes.shape[-1]
    backend = common.step_backend(backend, device, _slices_per_chunk(n_rows, chunk_divisor))
    if len(volumes) == 1:
        references = backend.reproject(volumes[0], theta, center=c)
    else:
        references = np.empty((len(theta), n_rows, n_cols), dtype=np.float32)
        for k, idx in enumerate(angle_halves(len(theta))):
            references[idx] = backend.reproject(volumes[1 - k], theta[idx], center=c)
    kind = "full" if len(volumes) == 1 else "leave_out"
    write_stack(out, references, attrs={"references": kind, "initial_shifts": initial_shifts,
                                        "reference_binning": list(grid)},
                extra={"theta_deg": np.rad2deg(theta)})


def _grid(attrs):
    """The ``reference_binning`` a stack of step A or B records (``(1, 1)`` in files written before it)."""
    grid = attrs.get("reference_binning", (1, 1))
    return tuple(int(g) for g in (json.loads(grid) if isinstance(grid, str) else grid))


def _check_initial(path, attrs, initial_shifts, remedy):
    """Refuse references made from projections corrected by another starting estimate."""
    made_with = attrs.get("initial_shifts", "none")
    if made_with != initial_shifts:
        raise ValueError(f"{path} was made with initial_shifts {made_with!r}, this step uses {initial_shifts!r}: "
                         f"{remedy}")


def register(binned_path, shifts_out, *, references_path=None, method="network", model_path=None,
             model_sha256=None, network_passes=1, refine_iterations=0, mlem_iter=20, center=None, backend="auto",
             device=None, max_spread=1.0, initial_shifts="none", chunk_divisor=1):
    """Step C: estimate the jitter and write ``shifts.csv`` in pixels of the input projections.

    ``initial_shifts='instrument'`` starts from the instrument's alignment shifts: the method
    estimates the residual jitter of the projections corrected by them (:func:`read_binned`),
    which is added back; ``auto`` also scores the instrument's shifts themselves as the candidate
    ``instrument``.  Where the file records alignment shifts, ``shifts.csv`` gets the columns
    ``instrument_dx``, ``instrument_dy`` (input pixels), and the provenance says how far the
    estimate is from them (``instrument_rms_px``, :func:`dejitter.metrics.shift_error`: modulo
    the unobservable rigid motion).

    ``chunk_divisor`` > 1 (a retry after running out of memory): the MLEM and reprojections of
    step C's own passes work in that many chunks of slices (see :func:`reconstruct_reference`).

    Returns
    -------
    dict
        Provenance: method, model checksum, backend, device, binning of steps A-C, starting
        estimate, whether the file recorded instrument shifts and the RMS distance of the
        estimate from them (NaN without them); for ``auto`` also every candidate's score, the one
        selected and why (:func:`dejitter.registration.selection.estimate_auto`).
    """
    with out_of_memory_guard("step C (registration)", chunk_divisor=chunk_divisor):
        return _register(binned_path, shifts_out, references_path=references_path, method=method,
                         model_path=model_path, model_sha256=model_sha256, network_passes=network_passes,
                         refine_iterations=refine_iterations, mlem_iter=mlem_iter, center=center, backend=backend,
                         device=device, max_spread=max_spread, initial_shifts=initial_shifts,
                         chunk_divisor=chunk_divisor)


def _register(binned_path, shifts_out, *, references_path, method, model_path, model_sha256, network_passes,
              refine_iterations, mlem_iter, center, backend, device, max_spread, initial_shifts, chunk_divisor):
    binned, theta, scale, initial, instrument = read_binned(binned_path, initial_shifts)
    require_angles_for_references(binned_path, len(theta), method)
    backend_obj = common.step_backend(backend, device, _slices_per_chunk(binned.shape[1], chunk_divisor))
    options, model, card = {}, None, {}
    if method in ("network", "auto"):
        from ..registration.network import load_model, trained_amplitude

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
        _check_initial(references_path, ref_attrs, initial_shifts, "rerun steps A and B (mlem, reproject)")
        grid = reference_binning(method, *binned.shape[1:])
        if _grid(ref_attrs) != grid:
            raise ValueError(f"{references_path} holds references binned {_grid(ref_attrs)} against the "
                             f"projections of steps A-C, method {method!r} reads them binned {grid}: "
                             f"rerun steps A and B (mlem, reproject)")
    if method == "auto" and initial is not None:
        # The projections are already corrected by the instrument's shifts: zero residual is that candidate.
        options["candidates"] = {"instrument": np.zeros((len(theta), 2))}
    details = {}
    shifts, quality = estimate_shifts(binned, theta, method, mlem_iter=mlem_iter,
                                      center=binned_center(center, scale[0]), backend=backend_obj,
                                      references=references, leave_out=leave_out, model=model,
                                      network_passes=network_passes, refine_iterations=refine_iterations,
                                      details=details, **options)
    shifts = shifts * scale
    if initial is not None:
        # The residual plus the start; a dy too short to observe is the instrument's alone.
        shifts = initial + np.nan_to_num(shifts, nan=0.0)
    quality = dict(quality)
    if "spread" in quality:
        quality["spread"] = quality["spread"] * scale[0]
    if "flagged" not in quality:
        residual = quality["residual"]
        mad = np.median(np.abs(residual - np.median(residual))) + 1e-12
        quality["flagged"] = residual > np.median(residual) + 6 * 1.4826 * mad
    if instrument is not None:
        quality["instrument_dx"], quality["instrument_dy"] = instrument[:, 0], instrument[:, 1]
    write_shifts(shifts_out, np.rad2deg(theta), shifts, quality)
    flagged = int(np.sum(quality["flagged"]))
    if flagged:
        log.warning("%d of %d angles flagged as unreliable", flagged, len(theta))
    provenance = {"method": method, "model_sha256": card.get("sha256", "none"), "backend": backend_obj.name,
                  "device": str(backend_obj.device), "references": "leave_out" if leave_out else "full",
                  "binning": int(scale[0]), "initial_shifts": initial_shifts,
                  "instrument_shifts": instrument is not None,
                  # NaN, not None, without them: as metrics.json, and storable as a volume.h5 attribute.
                  "instrument_rms_px": float("nan") if instrument is None else
                  round(shift_error(shifts, instrument, theta)["rms"], 4)}
    if method == "auto":
        # auto runs its own passes of steps A and B (refinement, the classic candidates, the scores).
        provenance["own_passes_of_steps_a_b"] = True
    provenance.update(details)
    return provenance
