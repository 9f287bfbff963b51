"""What the projections say of the sample against the field of view, without the truth.

Whether it stays inside the view (where the centre of mass is exact), fills the top and bottom
rows (taller than the view), or fills the edge columns (wider than the view): the evidence that
:func:`dejitter.registration.selection.estimate_auto` decides its anchor (step 5) and its
slow-mode polish (step 6) on.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import median_filter

from .references import MIN_ROWS_FOR_DY

__all__ = ["is_contained", "fills_rows", "polished_components", "MAX_EDGE_SHARE", "MAX_MASS_VARIATION"]

#: Projections whose two outermost columns on each side average below this share of the
#: projection's mean, and whose mass varies by less than MAX_MASS_VARIATION over the angles,
#: hold the whole sample: the centre of mass is then exact up to noise.
MAX_EDGE_SHARE = 0.03
MAX_MASS_VARIATION = 0.01


def is_contained(projections):
    """Whether the sample stays wholly inside the field of view at every angle (truth-free).

    Parameters
    ----------
    projections : ndarray, shape (angle, row, column)
        Line integrals.

    Returns
    -------
    contained : bool
    evidence : dict
        ``edge_share`` (edge columns against the mean), ``row_edge_share`` (the top and bottom
        rows against the mean: a sample taller than the view fills them, and its centre of mass
        says nothing of dy), ``mass_variation`` (coefficient of variation of each projection's
        total over the angles) and ``filtered_edge_share`` (``edge_share`` after a 5 x 5 median
        in each view: what step 6 reads, as impulse noise fills the edge columns' mean with no
        sample there).
    """
    p = np.asarray(projections, dtype=np.float64)
    mean = float(p.mean())
    edges = np.concatenate([p[:, :, :2], p[:, :, -2:]], axis=2).mean()
    row_edges = np.concatenate([p[:, :2], p[:, -2:]], axis=1).mean()
    mass = p.sum(axis=(1, 2))
    # The two outer columns after a 5 x 5 median, of strips wide enough that their inner edge does not reach them.
    filtered = np.concatenate([median_filter(p[:, :, :6], size=(1, 5, 5))[:, :, :2],
                               median_filter(p[:, :, -6:], size=(1, 5, 5))[:, :, -2:]], axis=2).mean()
    evidence = {"edge_share": float(edges / mean) if mean > 0 else float("inf"),
                "filtered_edge_share": float(filtered / mean) if mean > 0 else float("inf"),
                "row_edge_share": float(row_edges / mean) if mean > 0 else float("inf"),
                "mass_variation": float(mass.std() / mass.mean()) if mass.mean() > 0 else float("inf")}
    # Noise and interpolation leave empty edges slightly negative as often as positive.
    contained = abs(evidence["edge_share"]) < MAX_EDGE_SHARE and evidence["mass_variation"] < MAX_MASS_VARIATION
    return bool(contained), evidence


def fills_rows(projections, evidence):
    """Whether the sample fills the top and bottom rows (taller than the view), from :func:`is_contained`'s evidence."""
    return projections.shape[1] >= MIN_ROWS_FOR_DY and abs(evidence["row_edge_share"]) >= MAX_EDGE_SHARE


def polished_components(projections, evidence):
    """Which of ``(dx, dy)`` get their slow modes polished (step 6), or ``None``.

    A sample wider than the view (its edge columns filled), where no anchor can hold the slow
    part: dx, and dy too where the sample also fills the top and bottom rows.  The edge columns
    are read after a 5 x 5 median: salt-and-pepper noise survives the prefilter's 3 x 3 median
    and fills their mean with no sample there (dense particle at 40 %: edge share 0.15, after the
    median 0.011; the 1.5x wider sample 0.51 and 0.53), where step 6 took 2-4x the time of
    ``iterative`` and moved its objective by under 0.02 %.
    """
    if abs(evidence["edge_share"]) < MAX_EDGE_SHARE or abs(evidence["filtered_edge_share"]) < MAX_EDGE_SHARE:
        return None
    return True, fills_rows(projections, evidence)
