"""Step 5 of ``auto``: the slow part of an estimate anchored to what cannot drift.

Registration drifts slowly over the angles where nothing restrains it (the real tooth scan:
iterative reprojection 0.55 px^2, anchored 0.02).  Where the sample is wholly inside the view,
its centre of mass cannot drift; where it is inside from side to side but fills the top and bottom
rows, the slices' mass cannot (:mod:`dejitter.registration.slice_mass`).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

from ..metrics import remove_rigid_motion
from .classic import center_of_mass_shifts
from .containment import MAX_EDGE_SHARE, MAX_MASS_VARIATION, fills_rows
from .references import MIN_ROWS_FOR_DY
from .slice_mass import slice_mass_shifts

__all__ = ["anchor_estimate", "anchor_slow_part", "ANCHOR_SIGMA", "ANCHOR_SIGNIFICANCE"]

#: Width (angles, Gaussian sigma) of the slow part the centre of mass (or the slices' mass) anchors.
ANCHOR_SIGMA = 4.0
#: A slow departure from the centre of mass larger than this many times what its noise explains
#: is a drift of the registration, not noise of the centre of mass.
ANCHOR_SIGNIFICANCE = 3.0


def _slow(values, theta, sigma):
    order = np.argsort(theta)
    out = np.empty_like(values)
    out[order] = gaussian_filter1d(values[order], sigma, axis=0, mode="nearest")
    return out


def anchor_slow_part(shifts, anchor, theta, *, sigma=ANCHOR_SIGMA, significance=ANCHOR_SIGNIFICANCE,
                     components=(True, True)):
    """Replace the slow part of ``shifts`` by the ``anchor``'s where they differ significantly.

    Parameters
    ----------
    shifts, anchor : ndarray, shape (angle, 2)
        A registration estimate and an estimate that cannot drift (the centre of mass, the
        slices' mass profile), same pixels.
    theta : ndarray
    sigma : float
        Gaussian width, in angles, of the slow part.
    significance : float
        Anchor only where the slow part of ``anchor - shifts`` exceeds this many times what the
        fast (noise) part of the difference would leave after the same smoothing.
    components : (bool, bool)
        Which of dx, dy the anchor may set (the centre of mass's dy not where the sample fills
        the top or bottom rows).

    Returns
    -------
    anchored : ndarray, shape (angle, 2)
    applied : bool
    """
    # Modulo rigid motion: neither estimate fixes it (the anchors remove it), and the estimate's own
    # constant dx (the axis offset, with the rotation centre fixed) is kept.
    diff = remove_rigid_motion(np.nan_to_num(np.asarray(anchor, float) - np.asarray(shifts, float)), theta)
    slow = remove_rigid_motion(_slow(diff, theta, sigma), theta)
    noise = np.std(np.diff(diff[np.argsort(theta)], axis=0), axis=0) / np.sqrt(2)
    # White noise of std s keeps s / sqrt(2 sqrt(pi) sigma) after a Gaussian of width sigma.
    expected = noise / np.sqrt(2 * np.sqrt(np.pi) * sigma)
    observed = np.sqrt(np.mean((slow - slow.mean(axis=0)) ** 2, axis=0))
    columns = (observed > significance * np.maximum(expected, 1e-3)) & np.asarray(components, dtype=bool)
    if not np.any(columns):
        return np.asarray(shifts, float), False
    anchored = np.array(shifts, dtype=np.float64)
    anchored[:, columns] += slow[:, columns]
    return anchored, True


def anchor_estimate(projections, theta, shifts, evidence):
    """Anchor the slow part of ``shifts`` to what cannot drift, where the sample allows it (step 5).

    A sample inside the view from side to side that fills the top and bottom rows: the slices'
    mass (:func:`~dejitter.registration.slice_mass.slice_mass_shifts`).  A sample wholly inside the
    view (:func:`~dejitter.registration.containment.is_contained`): the centre of mass, its dy
    only where the rows are clear.  Each anchor is applied only where the drift is significant
    (:func:`anchor_slow_part`), so anchoring the centre of mass's own estimate, or an estimate
    already anchored, changes nothing.

    Returns
    -------
    shifts : ndarray, shape (angle, 2)
    anchor : str or None
        ``"slice_mass"``, ``"center_of_mass"``, or ``None`` where neither was applied.
    """
    rows_filled = fills_rows(projections, evidence)
    if rows_filled and abs(evidence["edge_share"]) < MAX_EDGE_SHARE:
        # Taller than the view: the plain centre of mass moves as rows enter and leave, the slices' mass does not.
        shifts, applied = anchor_slow_part(shifts, slice_mass_shifts(projections, theta, initial=shifts), theta)
        return shifts, "slice_mass" if applied else None
    if abs(evidence["edge_share"]) < MAX_EDGE_SHARE and evidence["mass_variation"] < MAX_MASS_VARIATION:
        rows_clear = projections.shape[1] >= MIN_ROWS_FOR_DY and not rows_filled
        shifts, applied = anchor_slow_part(shifts, center_of_mass_shifts(projections, theta), theta,
                                           components=(True, rows_clear))
        return shifts, "center_of_mass" if applied else None
    return shifts, None
