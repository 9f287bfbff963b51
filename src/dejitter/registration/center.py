"""Finding the rotation axis on (corrected) projections, for step E."""

from __future__ import annotations

import numpy as np

from ..shifting import correct
from .classic import register_pairs

__all__ = ["find_center", "half_turn_pairs"]


def half_turn_pairs(theta, *, tolerance_deg=None, max_pairs=None):
    """Pairs ``(i, j)`` of views half a turn apart, at most ``max_pairs`` spread over the scan.

    ``tolerance_deg`` is how far from exactly 180 degrees a pair may be; default half the mean
    angular step.
    """
    theta_deg = np.rad2deg(np.asarray(theta, dtype=np.float64))
    if tolerance_deg is None:
        tolerance_deg = 0.5 * np.mean(np.abs(np.diff(theta_deg))) if len(theta_deg) > 1 else 0.0
    pairs = []
    for i, t in enumerate(theta_deg):
        j = int(np.argmin(np.abs(theta_deg - (t + 180.0))))
        if abs(theta_deg[j] - t - 180.0) <= tolerance_deg + 1e-9:
            pairs.append((i, j))
    if max_pairs and len(pairs) > max_pairs:
        pairs = [pairs[k] for k in np.linspace(0, len(pairs) - 1, max_pairs).round().astype(int)]
    return pairs


def find_center(projections, theta, *, tolerance_deg=None, max_pairs=8):
    """Detector column of the rotation axis, from views half a turn apart.

    A view at ``theta + 180 deg`` is the mirror image of the view at ``theta`` about the
    axis, so registering one against the flipped other gives twice the axis offset.  The
    median over all such pairs is returned.

    Parameters
    ----------
    projections : ndarray or h5py.Dataset, shape (angle, row, column)
        Line integrals, jitter already corrected.  Only the paired views are read, so a
        dataset on disk costs a few images, whatever the size of the scan.
    theta : ndarray
        Angles in radians.
    tolerance_deg : float, optional
        How far from exactly 180 degrees a pair may be; default half the mean angular step.
    max_pairs : int, optional
        Use at most this many pairs, spread over the scan (a fixed number, so that the axis
        does not depend on how the scan is processed).

    Returns
    -------
    float or None
        The axis column, or ``None`` when no pair of views half a turn apart exists.
    """
    pairs = half_turn_pairs(theta, tolerance_deg=tolerance_deg, max_pairs=max_pairs)
    if not pairs:
        return None
    first = np.stack([np.asarray(projections[i], dtype=np.float32) for i, _ in pairs])
    mirrored = np.stack([np.asarray(projections[j], dtype=np.float32)[:, ::-1] for _, j in pairs])
    # The correlation window pulls estimates towards zero; a few rounds on the
    # re-aligned pair remove that bias.
    shifts = np.zeros((len(pairs), 2))
    for _ in range(3):
        shifts += register_pairs(correct(mirrored, shifts, order=1), first)
    offsets = shifts[:, 0]
    n_cols = projections.shape[2]
    return float((n_cols - 1 - np.median(offsets)) / 2)
