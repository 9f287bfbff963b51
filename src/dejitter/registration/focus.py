"""How sharp the volume reconstructed with a jitter estimate is: a second opinion for step 7 of ``auto``.

A jitter error blurs the reconstruction, so an autofocus score (the gradient energy of the slices)
ranks estimates without the truth, and it is not an MLEM fit of truncated projections, whose
smooth error hides from the residuals what step 7 (:mod:`dejitter.registration.interior`) gains
on samples far wider than the view.  Measured (twenty-fourth session,
``benchmarks/results/wider_diagnosis.md``, step 7's input and output on 13 truncated scans): every
step 7 that lowered the error by more than 0.01 px^2 made the volume sharper (+0.2 to +1.3 %),
among them two that the residuals refused (held-out 1.5x wider and taller seeds 38 and 40), and
the one that raised the error on a truncated scan made it blurrier.  Its limits, measured there too:

- it does not see the slow modes of dx (adding an estimate's slow error back made the volume
  sharper on four truncated scans; maximising it over those modes raised an error 0.25 -> 0.43
  px^2): it judges step 7, it fits nothing;
- where the views' noise decides the registration, it is fooled: step 7 raised the error of the
  near-featureless particle tenfold and of a featureless one at 60 % salt-and-pepper sixfold, and
  both volumes got sharper.  Both overflow the view by little (``filtered_edge_share`` 0.13 and
  0.11 against 0.46-0.64 where step 7 gained), so it is only asked where the sample overflows the
  view by far (:data:`MIN_EDGE_SHARE`).

The views are moved by a band-limited shift (:func:`dejitter.shifting.correct_band_limited`): an
interpolating shift blurs each view by an amount that depends on its sub-pixel part, which a
sharpness score reads as a difference between the estimates (linear interpolation reversed 2 of
the 13 decisions).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..shifting import correct_band_limited
from .references import default_backend

__all__ = ["gradient_energy", "sharpness_change", "FOCUS_BLUR_PX", "FOCUS_RADIUS",
           "MIN_EDGE_SHARE"]

#: Gaussian blur (pixels) of each slice before its gradient is taken, so that single-pixel noise
#: weighs less than edges (0.5 and 1.0 px gave the same decisions on the 13 truncated scans).
FOCUS_BLUR_PX = 0.7
#: Radius of the disc scored, as a share of the slice's width: the corners, which not every view
#: crosses, hold mostly the reconstruction's truncation artefacts.
FOCUS_RADIUS = 0.42
#: The sharpness is asked only where the edge columns carry at least this share of the views'
#: mean (``filtered_edge_share`` of :func:`~dejitter.registration.containment.is_contained`).
MIN_EDGE_SHARE = 0.3


def gradient_energy(projections, theta, shifts, *, rows=slice(None), blur_px=FOCUS_BLUR_PX, radius=FOCUS_RADIUS,
                    center=None, backend=None):
    """Mean squared gradient of the slices reconstructed (FBP) from ``projections`` corrected by ``shifts``.

    Parameters
    ----------
    projections : ndarray, shape (angle, row, column)
        Measured line integrals (binned as for steps A-C).
    theta : ndarray
        Angles in radians.
    shifts : ndarray, shape (angle, 2)
        Jitter estimate in pixels of ``projections``.
    rows : slice
        Detector rows to reconstruct, e.g. those every view saw
        (:func:`~dejitter.registration.slow_modes.region_of`); default all.
    blur_px, radius : float
        :data:`FOCUS_BLUR_PX`, :data:`FOCUS_RADIUS`.
    center, backend
        Rotation axis and reconstruction backend (its ``fbp``), as for the consistency score.

    Returns
    -------
    float
        Higher is sharper; comparable only between estimates of the same projections.
    """
    backend = backend or default_backend()
    corrected = np.ascontiguousarray(correct_band_limited(projections, shifts)[:, rows])
    volume = np.asarray(backend.fbp(corrected, np.asarray(theta), center=center), dtype=np.float64)
    volume = ndimage.gaussian_filter(volume, (0, blur_px, blur_px))
    n = volume.shape[-1]
    y, x = np.mgrid[0:n - 1, 0:n - 1] - (n - 1) / 2
    inside = x ** 2 + y ** 2 <= (radius * n) ** 2
    d_rows, d_cols = np.diff(volume, axis=1)[:, :, :-1], np.diff(volume, axis=2)[:, :-1, :]
    return float((d_rows ** 2 + d_cols ** 2)[:, inside].mean())


def sharpness_change(projections, theta, before, after, **kwargs):
    """Relative change of :func:`gradient_energy` from estimate ``before`` to ``after``: above 0 is sharper.

    Keywords as for :func:`gradient_energy`.
    """
    old = gradient_energy(projections, theta, before, **kwargs)
    new = gradient_energy(projections, theta, after, **kwargs)
    return new / old - 1.0 if old > 0 else 0.0
