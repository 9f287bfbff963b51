"""The one accuracy metric of the project: shift error modulo the unobservable rigid motion.

A constant dy, and a dx of the form ``c + a cos(theta) + b sin(theta)``, cannot be told apart
from moving the object or the rotation axis (DESIGN.md).  Every accuracy figure in tests,
benchmarks and the campaign summary comes from :func:`shift_error`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["remove_rigid_motion", "shift_error"]


def remove_rigid_motion(shifts, theta):
    """Remove the unobservable part of per-angle shifts.

    Parameters
    ----------
    shifts : ndarray, shape (angle, 2)
        Columns ``dx, dy`` in pixels.  A column of NaN (dy of a scan too short to
        observe it) stays NaN.
    theta : ndarray
        Angles in radians.

    Returns
    -------
    ndarray, shape (angle, 2)
        ``dx`` minus its least-squares fit ``c + a cos + b sin``; ``dy`` minus its mean.
    """
    shifts = np.asarray(shifts, dtype=np.float64)
    theta = np.asarray(theta, dtype=np.float64)
    out = shifts.copy()
    design = np.stack([np.ones_like(theta), np.cos(theta), np.sin(theta)], axis=1)
    dx = shifts[:, 0]
    if np.all(np.isfinite(dx)):
        coef, *_ = np.linalg.lstsq(design, dx, rcond=None)
        out[:, 0] = dx - design @ coef
    dy = shifts[:, 1]
    if np.all(np.isfinite(dy)):
        out[:, 1] = dy - dy.mean()
    return out


def shift_error(estimated, true, theta) -> dict:
    """Error of estimated against true jitter, modulo rigid motion.

    Parameters
    ----------
    estimated, true : ndarray, shape (angle, 2)
        Jitter ``dx, dy`` in pixels of the input projections.
    theta : ndarray
        Angles in radians.

    Returns
    -------
    dict
        ``mse``: mean over angles of ``rdx**2 + rdy**2`` in px^2; ``rms``: its square root;
        ``mse_dx``, ``mse_dy`` separately.  Where dy was not observed (NaN), ``mse`` counts
        dx alone and ``mse_dy`` is NaN.
    """
    residual = remove_rigid_motion(np.asarray(estimated, float) - np.asarray(true, float), theta)
    mse_dx = float(np.mean(residual[:, 0] ** 2))
    mse_dy = float(np.mean(residual[:, 1] ** 2)) if np.all(np.isfinite(residual[:, 1])) else float("nan")
    mse = mse_dx + (0.0 if np.isnan(mse_dy) else mse_dy)
    return {"mse": mse, "rms": float(np.sqrt(mse)), "mse_dx": mse_dx, "mse_dy": mse_dy}
