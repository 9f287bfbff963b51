"""From detector counts to line integrals, binning for steps A-C, and prefilters.

Edge cases are handled on purpose: zero or negative transmission is clipped to a floor
before ``-log``; NaN/inf and dead pixels (flat at or below dark) are replaced from their
neighbours when they are rare, and the scan is refused when they are not.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .errors import ScanError

__all__ = ["normalise", "bin_projections", "median_prefilter"]

#: Transmission floor: -log(1e-4) = 9.2, far beyond any real sample, never inf.
MIN_TRANSMISSION = 1e-4


def _repair(images: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """Replace ``bad`` pixels by the 3x3 median of each image."""
    if not bad.any():
        return images
    filled = np.where(bad, np.nanmedian(np.where(bad, np.nan, images)), images)
    smooth = ndimage.median_filter(filled, size=(1, 3, 3), mode="nearest")
    return np.where(bad, smooth, images).astype(np.float32)


def normalise(data, flats=None, darks=None, *, normalised=False, max_bad_fraction=0.01, path="scan"):
    """Flat/dark correction and ``-log``: counts to line integrals.

    Parameters
    ----------
    data : ndarray, shape (angle, row, column)
        Counts, or transmission when ``normalised``.
    flats, darks : ndarray, shape (n, row, column), optional
        Averaged per pixel (median of flats, mean of darks).
    normalised : bool
        ``data`` is already transmission: only ``-log`` is applied.
    max_bad_fraction : float
        Largest fraction of NaN/inf or dead pixels that is repaired; beyond it the scan is refused.
    path : str
        Named in error messages.

    Returns
    -------
    ndarray, shape (angle, row, column), float32
        Line integrals ``-log(I / I0)``.
    """
    data = np.asarray(data, dtype=np.float32)
    nonfinite = ~np.isfinite(data)
    if nonfinite.mean() > max_bad_fraction:
        raise ScanError(path, f"{100 * nonfinite.mean():.1f} % of pixels are NaN or inf "
                              f"(at most {100 * max_bad_fraction:g} % are repaired)")
    if normalised:
        transmission = data
        dead = np.zeros(data.shape[1:], dtype=bool)
    else:
        flat = np.median(flats, axis=0)
        dark = np.mean(darks, axis=0)
        dead = ~(np.isfinite(flat) & np.isfinite(dark) & (flat > dark))
        if dead.mean() > max_bad_fraction:
            raise ScanError(path, f"flats are at or below darks in {100 * dead.mean():.1f} % of pixels "
                                  "(swapped or failed flat-field images?)")
        with np.errstate(divide="ignore", invalid="ignore"):
            transmission = (data - dark) / np.where(dead, 1.0, flat - dark)
    bad = nonfinite | dead[None] | ~np.isfinite(transmission)
    transmission = np.where(bad, 1.0, transmission)
    line_integrals = -np.log(np.clip(transmission, MIN_TRANSMISSION, None)).astype(np.float32)
    line_integrals = _repair(line_integrals, bad)
    if float(np.ptp(line_integrals)) < 1e-6:
        raise ScanError(path, "all projections are constant: there is no sample to reconstruct")
    return line_integrals


def bin_projections(projections, factor):
    """Average ``factor x factor`` pixel blocks (rows binned by at most the number of rows).

    Parameters
    ----------
    projections : ndarray, shape (angle, row, column)
    factor : int

    Returns
    -------
    binned : ndarray
        Remainder rows/columns are cropped.
    row_factor : int
        The factor applied to rows: ``min(factor, rows)``, so a two-row scan keeps a row.
    """
    factor = int(factor)
    if factor < 1:
        raise ValueError(f"binning factor must be >= 1, got {factor}")
    n_angles, n_rows, n_cols = projections.shape
    row_factor = min(factor, n_rows)
    if factor == 1:
        return np.asarray(projections, dtype=np.float32), 1
    rows, cols = n_rows // row_factor, n_cols // factor
    trimmed = projections[:, : rows * row_factor, : cols * factor]
    binned = trimmed.reshape(n_angles, rows, row_factor, cols, factor).mean(axis=(2, 4))
    return binned.astype(np.float32), row_factor


def median_prefilter(projections, size=3):
    """Per-projection 2-D median filter (against salt-and-pepper noise and dead pixels)."""
    if size <= 1:
        return np.asarray(projections, dtype=np.float32)
    n_rows = projections.shape[1]
    footprint = (1, min(size, n_rows), size)
    return ndimage.median_filter(np.asarray(projections, dtype=np.float32), size=footprint, mode="nearest")


def prepare_for_registration(line_integrals, *, binning=2, median_size=3):
    """The projections steps A-C work on: median prefilter at full resolution, then binning.

    The median filter removes salt-and-pepper noise and dead pixels before binning would
    smear them into their neighbours.  Used by the workflow and by training-data synthesis
    alike, so the network sees in training exactly what it sees in use.

    Returns
    -------
    binned : ndarray
    scale : ndarray, shape (2,)
        Multiply shifts found on ``binned`` by ``scale`` (dx, dy) for input pixels.
    """
    filtered = median_prefilter(line_integrals, median_size)
    binned, row_factor = bin_projections(filtered, binning)
    return binned, np.array([binning, row_factor], dtype=np.float64)
