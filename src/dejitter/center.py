"""Finding the rotation axis on (corrected) projections, for step E."""

from __future__ import annotations

import numpy as np

from .registration import register_pairs
from .shifting import correct

__all__ = ["find_center"]


def find_center(projections, theta, *, tolerance_deg=None):
    """Detector column of the rotation axis, from views half a turn apart.

    A view at ``theta + 180 deg`` is the mirror image of the view at ``theta`` about the
    axis, so registering one against the flipped other gives twice the axis offset.  The
    median over all such pairs is returned.

    Parameters
    ----------
    projections : ndarray, shape (angle, row, column)
        Line integrals, jitter already corrected.
    theta : ndarray
        Angles in radians.
    tolerance_deg : float, optional
        How far from exactly 180 degrees a pair may be; default half the mean angular step.

    Returns
    -------
    float or None
        The axis column, or ``None`` when no pair of views half a turn apart exists.
    """
    theta_deg = np.rad2deg(np.asarray(theta, dtype=np.float64))
    if tolerance_deg is None:
        tolerance_deg = 0.5 * np.mean(np.abs(np.diff(theta_deg))) if len(theta_deg) > 1 else 0.0
    pairs = []
    for i, t in enumerate(theta_deg):
        j = int(np.argmin(np.abs(theta_deg - (t + 180.0))))
        if abs(theta_deg[j] - t - 180.0) <= tolerance_deg + 1e-9:
            pairs.append((i, j))
    if not pairs:
        return None
    first = np.stack([projections[i] for i, _ in pairs])
    mirrored = np.stack([projections[j][:, ::-1] for _, j in pairs])
    # The correlation window pulls estimates towards zero; a few rounds on the
    # re-aligned pair remove that bias.
    shifts = np.zeros((len(pairs), 2))
    for _ in range(3):
        shifts += register_pairs(correct(mirrored, shifts, order=1), first)
    offsets = shifts[:, 0]
    n_cols = projections.shape[2]
    return float((n_cols - 1 - np.median(offsets)) / 2)
