"""The jitter from the mass of the slices, for a sample inside the view from side to side.

Summed along a detector row, a projection gives the mass of one slice of the sample; where the
sample stays within the columns of the view at every angle, that mass does not depend on the
angle (the zeroth moment condition of the Radon transform, slice by slice).  The row sums of all
views are then one curve, the sample's mass profile, each displaced by its view's dy.  Rows that
enter and leave the view with the jitter (a sample taller than the view) only shorten the
stretch of the curve two views share.  Once dy is known, the rows every view saw are the same
slab of the sample in every view, and the centre of mass of that slab moves with dx and the
slab's orbit (``c + a cos + b sin``) only: the centre of mass, made exact for a sample taller
than the view.

Why it is needed: reprojection alignment compares each view with a reprojection that is mostly
made of its neighbouring angles, so an error that changes slowly over the angles is nearly
consistent and has almost no restoring force; and the plain centre of mass of a sample taller
than the view moves as its rows enter and leave.  On a 2048 x 256 px detector (a particle taller
than the view, steps A-C at 256 x 64 px) the workflow's reprojection estimate was at 0.030 px^2
in dx and 0.022 in dy; from the mass, 0.0012 and 0.017.
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import CubicSpline

from ..metrics import remove_rigid_motion
from .references import MIN_ROWS_FOR_DY

__all__ = ["slice_mass_dy", "slab_center_of_mass_dx", "slice_mass_shifts"]

#: A row of the profile counts only where at least this share of the (corrected) views saw it.
MIN_VIEW_SHARE = 0.5
#: Gauss-Newton steps per view and round; a step below STEP_TOL px ends them.
NEWTON_STEPS = 8
STEP_TOL = 1e-4


def _mean_profile(profiles, dy):
    """The mean of the profiles moved by ``-dy`` (onto the sample's frame), as a spline, or None."""
    rows = np.arange(profiles.shape[1], dtype=np.float64)
    moved = np.stack([np.interp(rows + s, rows, p, left=np.nan, right=np.nan) for p, s in zip(profiles, dy)])
    seen = np.isfinite(moved)
    keep = seen.sum(axis=0) >= MIN_VIEW_SHARE * len(profiles)
    if keep.sum() < 4:
        return None
    mean = np.nanmean(moved[:, keep], axis=0)
    return CubicSpline(rows[keep], mean, extrapolate=False)


def _misfit(profiles, spline, dy):
    """Mean squared difference of each profile with the mean profile displaced by its ``dy`` (inf: too little overlap)."""
    rows = np.arange(profiles.shape[1], dtype=np.float64)
    model = spline(rows[None, :] - dy[:, None])
    use = np.isfinite(model)
    squared = np.where(use, (profiles - np.nan_to_num(model)) ** 2, 0.0)
    count = use.sum(axis=1)
    return np.where(count >= profiles.shape[1] // 2, squared.sum(axis=1) / np.maximum(count, 1), np.inf)


def _gauss_newton(profiles, spline, dy):
    """Least-squares dy of each profile against the mean profile, from ``dy``."""
    rows = np.arange(profiles.shape[1], dtype=np.float64)
    slope = spline.derivative()
    dy = dy.copy()
    for _ in range(NEWTON_STEPS):
        at = rows[None, :] - dy[:, None]
        model, gradient = spline(at), slope(at)
        use = np.isfinite(model) & np.isfinite(gradient)
        residual = np.where(use, profiles - np.nan_to_num(model), 0.0)
        gradient = np.where(use, gradient, 0.0)
        # profile(y) ~ mean(y - dy - step) ~ mean(y - dy) - step * mean'(y - dy)
        curvature = (gradient ** 2).sum(axis=1)
        step = np.where(curvature > 0, -(residual * gradient).sum(axis=1) / np.maximum(curvature, 1e-300), 0.0)
        dy += step
        if np.max(np.abs(step)) < STEP_TOL:
            break
    return dy


def slice_mass_dy(projections, *, initial=None, n_rounds=3):
    """dy of every view from the mass profile of the sample (its row sums).

    Each round builds the mean profile of the views corrected by the current estimate (over
    the rows at least half of them saw) and fits each view's dy to it by least squares.
    Without ``initial`` the first round starts each view at the best whole-pixel dy within a
    quarter of the rows.  Valid only where the sample stays inside the view from side to side
    (:func:`dejitter.registration.containment.is_contained`'s ``edge_share``); the rows may be
    filled.

    Parameters
    ----------
    projections : ndarray, shape (angle, row, column)
        Line integrals.
    initial : ndarray, shape (angle,), optional
        Starting dy in pixels of ``projections`` (NaN counts as 0).
    n_rounds : int
        Rounds of mean profile and fit.

    Returns
    -------
    ndarray, shape (angle,)
        dy in pixels of ``projections``, zero mean (NaN where the rows are too few to observe it).
    """
    return _profile_dy(np.asarray(projections).sum(axis=2, dtype=np.float64), initial, n_rounds)


def _profile_dy(profiles, initial, n_rounds):
    """:func:`slice_mass_dy` from the row sums ``profiles``, shape (angle, row)."""
    n_angles, n_rows = profiles.shape
    if n_rows < MIN_ROWS_FOR_DY:
        return np.full(n_angles, np.nan)
    if initial is None:
        dy = np.zeros(n_angles)
        spline = _mean_profile(profiles, dy)
        if spline is None:
            return dy
        candidates = np.arange(-(n_rows // 4), n_rows // 4 + 1, dtype=np.float64)
        misfits = np.stack([_misfit(profiles, spline, np.full(n_angles, c)) for c in candidates])
        dy = candidates[np.argmin(misfits, axis=0)]
    else:
        dy = np.nan_to_num(np.asarray(initial, dtype=np.float64))
    for _ in range(n_rounds):
        spline = _mean_profile(profiles, dy)
        if spline is None:
            break
        dy = _gauss_newton(profiles, spline, dy)
        dy -= dy.mean()
    return dy


def slab_center_of_mass_dx(projections, theta, dy):
    """dx of every view from the centre of mass of the slab of the sample that every view saw.

    Parameters
    ----------
    projections : ndarray, shape (angle, row, column)
        Line integrals of a sample inside the view from side to side.
    theta : ndarray
        Angles in radians.
    dy : ndarray, shape (angle,)
        Each view's dy (e.g. :func:`slice_mass_dy`), pixels of ``projections``.

    Returns
    -------
    ndarray, shape (angle,)
        dx modulo the orbit (``c + a cos + b sin`` removed), pixels of ``projections``.
    """
    projections = np.asarray(projections)
    return _slab_dx(projections.sum(axis=2, dtype=np.float64), _first_moments(projections), theta, dy)


def _first_moments(projections):
    """Each row's first moment along the columns, shape (angle, row), without a full-size temporary."""
    return (projections @ np.arange(projections.shape[2], dtype=projections.dtype)).astype(np.float64)


def _slab_dx(mass, moment, theta, dy):
    """:func:`slab_center_of_mass_dx` from the row sums ``mass`` and first moments ``moment``."""
    n_rows = mass.shape[1]
    dy = np.nan_to_num(np.asarray(dy, dtype=np.float64))
    rows = np.arange(n_rows, dtype=np.float64)
    # Rows of the sample's frame (row y of the sample at y + dy in the view) that every view saw whole.
    slab = np.arange(np.ceil(dy.max()), np.floor(n_rows - 1 + dy.min()) + 1)
    if len(slab) < 2:
        slab = rows
    total = np.array([np.interp(slab + s, rows, m).sum() for m, s in zip(mass, dy)])
    first = np.array([np.interp(slab + s, rows, m).sum() for m, s in zip(moment, dy)])
    com = first / np.where(np.abs(total) > 0, total, 1.0)
    return remove_rigid_motion(np.stack([com, np.zeros_like(com)], 1), theta)[:, 0]


def slice_mass_shifts(projections, theta, *, initial=None):
    """``(dx, dy)`` of every view from the mass alone: :func:`slice_mass_dy`, then :func:`slab_center_of_mass_dx`.

    Parameters
    ----------
    projections : ndarray, shape (angle, row, column)
        Line integrals of a sample inside the view from side to side (the rows may be filled).
    theta : ndarray
        Angles in radians.
    initial : ndarray, shape (angle, 2), optional
        An estimate to start dy from (e.g. reprojection alignment's), pixels of ``projections``.

    Returns
    -------
    ndarray, shape (angle, 2)
        Modulo rigid motion; dy NaN (and dx from all rows) where the rows are too few to observe dy.
    """
    projections = np.asarray(projections)
    mass = projections.sum(axis=2, dtype=np.float64)  # one pass serves both: dy's profiles, dx's slab mass
    start = None if initial is None else np.asarray(initial, dtype=np.float64)[:, 1]
    dy = _profile_dy(mass, start, n_rounds=3)
    dx = _slab_dx(mass, _first_moments(projections), theta, np.nan_to_num(dy))
    return np.stack([dx, dy], 1)
