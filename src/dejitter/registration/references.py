"""Steps A and B for registration: the reprojections each projection is compared with.

*leave-out* references (each projection against the reprojection of the other half of the angles,
which removes the self-term of DESIGN.md) or *full* ones (one reconstruction of all angles, what
the network reads); and references that truncation cannot pull, built on a grid larger than the
detector and compared in the frame of the measured view (:func:`measured_frame_references`).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import zoom

from ..shifting import correct, displace

__all__ = ["reference_projections", "measured_frame_references", "canvas_margins", "common_region", "filled_edge_bands",
           "upsample_state", "angle_halves", "reconstruction_subsets", "default_backend", "MIN_ROWS_FOR_DY",
           "MIN_ANGLES", "MAX_RECONSTRUCTION_ANGLES"]

#: Fewer detector rows than this leave dy unobservable: it is reported as NaN, never invented.
MIN_ROWS_FOR_DY = 8
#: Fewer projections than this give no reference to register against: every method but
#: ``none`` and ``center_of_mass`` refuses the scan.  Measured on the clean 128 px particle of
#: ``bench_default.py``, binned by 2, iterative alignment on evenly spaced subsets of its 181
#: angles (px^2): 7 angles 1002 (no correction: 245), 12: 0.096, 16: 0.008, 20-46: 0.003-0.010;
#: on the real 7-view Xradia tilt series (-45..45 degrees) every candidate of ``auto`` scored the
#: same and it kept a 23 px RMS estimate where the instrument recorded +-1.3 px.
MIN_ANGLES = 12


#: Each reference volume (a leave-out half, or the one of all angles) is reconstructed from at most
#: this many angles, evenly spread; every view still gets its reference.  MLEM costs in proportion
#: to its angles, and beyond a few hundred they add nothing at steps A-C's resolution (at most
#: 256 px wide: about 400 angles sample it over 180 degrees).  Scans of up to 722 angles are
#: reconstructed from all of theirs.  A 1024 x 1024 x 3000 scan through the workflow (binned to
#: 256 px, 2 cores; ``benchmarks/results/scale.md``): all 1500 angles of each half, step A 76 s,
#: step C 1716 s, 0.0075 px^2, 2579 s in all; 361 of them, 12 s and 341 s, 0.0099 px^2, 995 s.
MAX_RECONSTRUCTION_ANGLES = 361


def angle_halves(n_angles):
    """Indices of the even and the odd angles: the two leave-out halves."""
    idx = np.arange(n_angles)
    return idx[0::2], idx[1::2]


def reconstruction_subsets(n_angles, leave_out=True, max_angles=MAX_RECONSTRUCTION_ANGLES):
    """Indices of the angles each reference volume is reconstructed from.

    The two leave-out halves (:func:`angle_halves`; all angles where ``leave_out`` is false or
    there are fewer than 4), each thinned evenly to at most ``max_angles``
    (:data:`MAX_RECONSTRUCTION_ANGLES`).  Each view is compared with the reprojection of the
    volume of the *other* half, so thinning keeps the leave-out property.
    """
    subsets = angle_halves(n_angles) if leave_out and n_angles >= 4 else (np.arange(n_angles),)
    return [idx if len(idx) <= max_angles else idx[np.linspace(0, len(idx) - 1, max_angles).round().astype(int)]
            for idx in subsets]


def reference_projections(projections, theta, *, n_iter=10, leave_out=True, center=None, backend=None,
                          warm_start=None):
    """Steps A and B: MLEM reconstruction(s) and the reprojection each projection is registered to.

    Parameters
    ----------
    projections : ndarray, shape (angle, row, column)
        Line integrals, typically binned.
    theta : ndarray
        Angles in radians.
    n_iter : int
        MLEM iterations.
    leave_out : bool
        Reference of each projection from the reconstruction of the other half of the angles
        (removes the self-term).  ``False``: one reconstruction from all angles.
    center : float, optional
        Rotation axis column; default the detector centre.
    backend : dejitter.reconstruction.backends.Backend, optional
        Default: the torch backend.
    warm_start : list of ndarray, optional
        Volumes returned by a previous call, to continue from.

    Returns
    -------
    references : ndarray, same shape as ``projections``
    volumes : list of ndarray
        The reconstruction(s): ``[even half, odd half]`` with ``leave_out``, else ``[all]``.
    """
    theta = np.asarray(theta)
    backend = backend or default_backend()
    if not leave_out or len(theta) < 4:
        x0 = warm_start[0] if warm_start else None
        (idx,) = reconstruction_subsets(len(theta), leave_out=False)
        volume = backend.mlem(projections[idx], theta[idx], n_iter, x0=x0, center=center)
        return backend.reproject(volume, theta, center=center), [volume]
    halves = angle_halves(len(theta))
    volumes, references = [], np.empty_like(projections, dtype=np.float32)
    for k, idx in enumerate(reconstruction_subsets(len(theta))):
        x0 = warm_start[k] if warm_start and len(warm_start) == 2 else None
        volumes.append(backend.mlem(projections[idx], theta[idx], n_iter, x0=x0, center=center))
    for k, idx in enumerate(halves):
        references[idx] = backend.reproject(volumes[1 - k], theta[idx], center=center)
    return references, volumes


def _canvas_margin(shifts, extent, margin=3, step=4):
    """Pixels added on each side of the detector so every corrected view fits on the grid.

    Rounded up to a multiple of ``step``, so that successive iterations mostly reuse one grid
    (and the projector cached for it).  At most half the detector: a larger shift is a wrong
    estimate (a network far off, measured in ``tests/test_selection.py``: shifts of 200 px on a
    40 px detector), whose views need not fit, and a grid three detectors wide made its
    refinement cost 27x that of an ordinary one (a grid twice as wide: 8x).
    """
    largest = float(np.nanmax(np.abs(shifts))) if np.size(shifts) and np.any(np.isfinite(shifts)) else 0.0
    return int(min(step * np.ceil((largest + margin) / step), extent // 2))


def canvas_margins(shifts, n_rows, n_cols):
    """``(rows, columns)`` added on each side of the detector for :func:`measured_frame_references`."""
    shifts = np.nan_to_num(np.asarray(shifts, dtype=np.float64))
    rows_margin = _canvas_margin(shifts[:, 1], n_rows) if n_rows >= MIN_ROWS_FOR_DY else 0
    return rows_margin, _canvas_margin(shifts[:, 0], n_cols)


def filled_edge_bands(projections, *, rtol=0.01):
    """Widest band at each edge, over the views, of rows or columns that repeat their neighbour.

    A scan shifted after the measurement (a jittered copy made for testing, or projections the
    instrument's alignment shifts already moved, with the edge pixel repeated or a constant
    filled in) carries such bands where the shift moved the detector's edge inwards: they hold
    no measurement, and no reconstruction can explain them.  Measured neighbours differ at least
    by their noise; a band whose neighbours differ by under ``rtol`` of the view's typical change
    from one line to the next is a fill (a spline shift's fill is not exact: its ringing decays
    by about 4x a pixel into the band).  Empty background without noise counts as well, and
    holds nothing to compare either.

    Parameters
    ----------
    projections : ndarray, shape (angle, row, column)
    rtol : float
        Neighbours closer than this share of the median, over the view's lines, of the largest
        change between neighbouring lines count as repeats.

    Returns
    -------
    dict
        ``top``, ``bottom``, ``left``, ``right``: widths in pixels, the largest over the views,
        each with the line after the band (a sub-pixel shift mixes fill and measurement there).
    """
    p = np.asarray(projections, dtype=np.float32)

    def bands(axis):
        if p.shape[axis] < 2:
            return [0, 0]
        # change[:, k]: largest difference between line k and line k + 1 of each view.
        change = np.abs(np.diff(p, axis=axis)).max(axis=3 - axis)
        repeats = change <= rtol * np.median(change, axis=1, keepdims=True)
        widths = [int(np.cumprod(r, axis=1).sum(axis=1).max(initial=0)) for r in (repeats, repeats[:, ::-1])]
        # A sub-pixel shift mixes fill and measurement in the first line after the band.
        return [w + 1 if w else 0 for w in widths]

    (top, bottom), (left, right) = bands(1), bands(2)
    return {"top": top, "bottom": bottom, "left": left, "right": right}


def common_region(shifts, n_rows, n_cols, *, filled=None):
    """The rows and columns of the detector that hold, in every view, content the other views saw too.

    A view displaced by ``d`` from the others holds, within ``|d|`` of its side edges, content
    that entered the view with the jitter, beyond the edge of the views displaced the other way,
    so that their reconstruction cannot know it (of a sample wider than the view): columns are
    left out by the largest departure of ``dx`` from its median, on each side.  Rows are slices,
    reconstructed independently, and rows entering with the jitter cost far less: leaving them
    out (at half the spread of ``dy``) cost the slow modes of step 6 their evidence on a sample
    taller than the view (the 1.5x wider and taller sample of ``bench_default.py``: 0.141 px^2,
    with rows whole 0.100).  Rows are left out only where a view holds no measurement at all,
    in the bands a shift of the data filled in (``filled``, :func:`filled_edge_bands`): on the
    real I13 scan with +-20 px added they dominated the comparison (leave-out residual 0.32 over
    the whole view, 0.065 without them, 0.056 on the untouched scan; self-consistency of the
    default 0.029 px^2 with these bands left out).  Each side at most a quarter of the detector.

    Parameters
    ----------
    shifts : ndarray, shape (angle, 2)
        Jitter estimate in pixels (NaN counts as 0).
    n_rows, n_cols : int
        Detector size.
    filled : dict, optional
        :func:`filled_edge_bands` of the projections; default none.

    Returns
    -------
    (slice, slice)
        Rows and columns of the region.
    """
    shifts = np.nan_to_num(np.asarray(shifts, dtype=np.float64))
    filled = filled or {}
    spread = int(np.ceil(np.abs(shifts[:, 0] - np.median(shifts[:, 0])).max())) if len(shifts) else 0
    top, bottom = (min(filled.get(side, 0), n_rows // 4) for side in ("top", "bottom"))
    left, right = (min(max(spread, filled.get(side, 0)), n_cols // 4) for side in ("left", "right"))
    return slice(top, n_rows - bottom), slice(left, n_cols - right)


def measured_frame_references(projections, theta, shifts, *, n_iter=10, center=None, backend=None,
                              warm_start=None, leave_out=True, margin=None):
    """Steps A and B that truncation cannot pull: references in the frame of each measured view.

    Every view is corrected by ``shifts`` onto a grid larger than the detector (wider and
    taller by ``margin`` pixels each side), where the parts of the grid that the view did not
    see carry no weight in MLEM (:func:`dejitter.reconstruction.mlem`, ``weights``).  Content
    that the jitter carried across a detector edge is thus neither invented (no extrapolated
    edge pixels) nor folded back into the field of view, and the reconstruction may extend beyond
    it where other views saw more.  The reprojection is then moved to where ``shifts`` puts the
    view and cropped to the detector, so registration compares it with the untouched measurement.

    Parameters
    ----------
    projections : ndarray, shape (angle, row, column)
        Measured (jittered) line integrals.
    theta : ndarray
        Angles in radians.
    shifts : ndarray, shape (angle, 2)
        Current jitter estimate in pixels of ``projections`` (NaN counts as 0).
    n_iter, center, backend, leave_out
        As in :func:`reference_projections`.
    warm_start : tuple, optional
        The ``state`` of a previous call, to continue MLEM from.
    margin : tuple of int, optional
        ``(rows, columns)`` added on each side; default from the largest shift.

    Returns
    -------
    references : ndarray, same shape as ``projections``
    state : tuple
        ``(volumes, margin)`` for ``warm_start``.
    """
    theta = np.asarray(theta)
    backend = backend or default_backend()
    shifts = np.nan_to_num(np.asarray(shifts, dtype=np.float64))
    n_angles, n_rows, n_cols = projections.shape
    if margin is None:
        margin = canvas_margins(shifts, n_rows, n_cols)
    volumes = None
    if warm_start is not None:
        volumes, old = warm_start
        grow = (margin[0] - old[0], margin[1] - old[1])
        if min(grow) < 0:  # keep the larger grid of the previous call
            margin = (max(margin[0], old[0]), max(margin[1], old[1]))
            grow = (margin[0] - old[0], margin[1] - old[1])
        if max(grow) > 0:
            volumes = [np.pad(v, ((grow[0],) * 2, (grow[1],) * 2, (grow[1],) * 2)) for v in volumes]
    mr, mc = margin
    canvas = np.zeros((n_angles, n_rows + 2 * mr, n_cols + 2 * mc), dtype=np.float32)
    seen = np.zeros_like(canvas)
    canvas[:, mr:mr + n_rows, mc:mc + n_cols] = projections
    seen[:, mr:mr + n_rows, mc:mc + n_cols] = 1.0
    canvas = correct(canvas, shifts, order=1, mode="constant")
    # Only pixels wholly inside the moved detector count: the interpolated rim is half empty.
    weights = (correct(seen, shifts, order=1, mode="constant") > 0.999).astype(np.float32)
    canvas_center = None if center is None else float(center) + mc
    subsets = reconstruction_subsets(n_angles, leave_out, max_angles=n_angles)  # unthinned: every view
    new_volumes, on_canvas = [], np.empty_like(canvas)
    for k, idx in enumerate(reconstruction_subsets(n_angles, leave_out)):
        x0 = volumes[k] if volumes is not None and len(volumes) == len(subsets) else None
        new_volumes.append(backend.mlem(canvas[idx], theta[idx], n_iter, center=canvas_center, x0=x0,
                                        weights=weights[idx]))
    for k, idx in enumerate(subsets):
        other = new_volumes[1 - k] if len(subsets) == 2 else new_volumes[0]
        on_canvas[idx] = backend.reproject(other, theta[idx], center=canvas_center)
    references = displace(on_canvas, shifts, order=1, mode="constant")[:, mr:mr + n_rows, mc:mc + n_cols]
    return references, (new_volumes, margin)


def upsample_state(state, factor, row_factor, margin):
    """The ``state`` of :func:`measured_frame_references` on projections binned by ``factor``, at full resolution.

    Lets the references at full resolution continue MLEM from the volumes a binned search already
    reconstructed, instead of starting again from a uniform volume (what dominates the first
    iteration of a refinement at a finer level).  Each coarse voxel becomes ``row_factor x factor
    x factor`` voxels, interpolated linearly between voxel centres (pixel edges kept where they
    were, so the rotation axis at the grid centre stays there).  Voxel values are attenuation per
    pixel: a coarse voxel is ``factor`` times as long, so its value is divided by ``factor``.

    Parameters
    ----------
    state : tuple
        ``(volumes, (row_margin, column_margin))`` returned for the binned projections, whose
        rows and columns were binned without remainder.
    factor, row_factor : int
        The binning of columns and rows (:func:`dejitter.binning.bin_projections`).
    margin : (int, int)
        The canvas margins at full resolution (:func:`canvas_margins` of the estimate there): the
        volumes are cropped or zero-padded to them, so the references keep the grid they need
        (a coarse margin scaled up is larger, and MLEM's cost grows with the grid).

    Returns
    -------
    tuple
        ``(volumes, margin)`` for ``warm_start`` at full resolution.
    """
    volumes, (rows_margin, cols_margin) = state
    # Rows and columns to drop (> 0) or add (< 0) on each side of the upsampled grid.
    trim = (rows_margin * row_factor - margin[0], cols_margin * factor - margin[1])
    fine = []
    for volume in volumes:
        v = zoom(volume, (row_factor, factor, factor), order=1, mode="nearest", grid_mode=True)
        v = np.pad(v, [(max(-t, 0),) * 2 for t in (trim[0], trim[1], trim[1])])
        r, c = max(trim[0], 0), max(trim[1], 0)
        v = v[r:v.shape[0] - r, c:v.shape[1] - c, c:v.shape[2] - c]
        fine.append(np.ascontiguousarray(v, dtype=np.float32) / np.float32(factor))
    return fine, tuple(int(m) for m in margin)


def default_backend():
    from ..reconstruction.backends import TorchBackend

    return TorchBackend()
