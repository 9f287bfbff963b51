"""From detector counts to line integrals, and the prefilters of steps A-C (binning: :mod:`dejitter.binning`).

Edge cases are handled on purpose: zero or negative transmission is clipped to a floor
before ``-log``; NaN/inf and dead pixels (flat at or below dark) are replaced from their
neighbours when they are rare, and the scan is refused when they are not.
"""

from __future__ import annotations

import sys

import numpy as np
from scipy import ndimage

from .binning import bin_projections
from .types import ScanError

__all__ = [
    "normalise", "flat_field", "line_integrals", "repair", "refuse_bad_scan", "median_prefilter", "median3x3",
    "prepare_for_registration",
]

#: Transmission floor: -log(1e-4) = 9.2, far beyond any real sample, never inf.
MIN_TRANSMISSION = 1e-4


def flat_field(flats, darks):
    """Per-pixel flat (median of the flats) and dark (mean of the darks), and the dead pixels.

    Returns
    -------
    flat, dark : ndarray, shape (row, column), float32
    dead : ndarray of bool
        Pixels whose flat is at or below their dark (or not finite): no transmission there.
    """
    flat = np.median(np.asarray(flats, dtype=np.float32), axis=0)
    dark = np.mean(np.asarray(darks, dtype=np.float32), axis=0)
    dead = ~(np.isfinite(flat) & np.isfinite(dark) & (flat > dark))
    return flat, dark, dead


#: Elements per block of :func:`line_integrals`.
_LINE_INTEGRAL_BLOCK = 1 << 18


def line_integrals(data, flat=None, dark=None, dead=None):
    """``-log`` of the transmission, and the pixels where it is not defined.

    Parameters
    ----------
    data : ndarray, shape (angle, row, column)
        Counts; or transmission when ``flat`` is None.
    flat, dark, dead : ndarray, shape (row, column), optional
        From :func:`flat_field`.

    Returns
    -------
    line_integrals : ndarray, float32
        Zero or negative transmission is clipped to :data:`MIN_TRANSMISSION`; bad pixels read 0.
    bad : ndarray of bool
        NaN/inf data, dead pixels, undefined transmission: to be repaired (:func:`repair`).
    """
    data = np.asarray(data)
    out = np.empty(data.shape, dtype=np.float32)
    bad = np.empty(data.shape, dtype=bool)
    gain = None if flat is None else np.where(dead, 1.0, flat - dark)
    # A few images at a time: the temporaries stay in cache (2-3x faster than whole chunks).
    step = max(1, _LINE_INTEGRAL_BLOCK // max(1, data[0].size))
    for a in range(0, len(data), step):
        block = np.asarray(data[a:a + step], dtype=np.float32)
        bad_block = ~np.isfinite(block)
        if flat is None:
            transmission = block
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                transmission = (block - dark) / gain
            bad_block |= dead[None]
        bad_block |= ~np.isfinite(transmission)
        transmission = np.where(bad_block, 1.0, transmission)
        out[a:a + step] = -np.log(np.clip(transmission, MIN_TRANSMISSION, None))
        bad[a:a + step] = bad_block
    return out, bad


def repair(images, bad):
    """Replace ``bad`` pixels by the 3x3 median of their image (bad neighbours count as 0).

    Purely local within each image, so a scan repaired in chunks of angles gives the same result
    as the whole scan at once.
    """
    if not bad.any():
        return images
    zeroed = np.where(bad, 0, images)
    if zeroed.shape[1] >= 3:
        smooth = median3x3(zeroed)
    else:
        smooth = ndimage.median_filter(zeroed, size=(1, 3, 3), mode="nearest")
    return np.where(bad, smooth, images).astype(np.float32)


def refuse_bad_scan(path, *, nonfinite_fraction=0.0, dead_fraction=0.0, raw_range=None, max_bad_fraction=0.01):
    """Raise :class:`ScanError` for a scan that repair cannot save.

    Parameters
    ----------
    nonfinite_fraction, dead_fraction : float
        Shares of NaN/inf data and of dead detector pixels.
    raw_range : (float, float), optional
        Smallest and largest finite raw value: equal means constant images (closed shutter,
        dead detector), which would look like structure once divided by noisy flats.
    """
    if nonfinite_fraction > max_bad_fraction:
        raise ScanError(path, f"{100 * nonfinite_fraction:.1f} % of pixels are NaN or inf "
                              f"(at most {100 * max_bad_fraction:g} % are repaired)")
    if raw_range is not None and raw_range[0] == raw_range[1]:
        raise ScanError(path, f"all projections are constant (every pixel reads {raw_range[0]:g}): "
                              "there is no sample to reconstruct")
    if dead_fraction > max_bad_fraction:
        raise ScanError(path, f"flats are at or below darks in {100 * dead_fraction:.1f} % of pixels "
                              "(swapped or failed flat-field images?)")


def normalise(data, flats=None, darks=None, *, normalised=False, max_bad_fraction=0.01, path="scan"):
    """Flat/dark correction and ``-log`` of a whole scan: counts to line integrals.

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

    See Also
    --------
    dejitter.pipeline.steps.preprocess : the same, in chunks of angles, from file to file.
    """
    data = np.asarray(data, dtype=np.float32)
    finite = np.isfinite(data)
    raw_range = (np.min(data, where=finite, initial=np.inf), np.max(data, where=finite, initial=-np.inf))
    flat = dark = dead = None
    if not normalised:
        flat, dark, dead = flat_field(flats, darks)
    refuse_bad_scan(path, nonfinite_fraction=1 - finite.mean(), dead_fraction=0.0 if dead is None else dead.mean(),
                    raw_range=raw_range, max_bad_fraction=max_bad_fraction)
    result = repair(*line_integrals(data, flat, dark, dead))
    if float(np.ptp(result)) < 1e-6:
        raise ScanError(path, "all projections are constant: there is no sample to reconstruct")
    return result


#: Compare-exchange pairs of a 19-step sorting network that leaves the median of 9 values in
#: position 4 (Paeth; N. Devillard, "Fast median search", 1998).
_MEDIAN9_NETWORK = ((1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3), (5, 8),
                    (4, 7), (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2))
#: Elements per block of :func:`median3x3` (its temporaries are about 10 blocks of float32).
_MEDIAN_BLOCK = 1 << 16
#: Up to this many pixels, in a process that has not loaded torch, :func:`median3x3` calls scipy:
#: importing torch takes about 2.5 s on the 2-core development machine, scipy filters 4 Mpx in
#: about 1.2 s there (the preprocessing step of a small scan, and of every test campaign's scan).
_SCIPY_MEDIAN_MAX_PIXELS = 1 << 22


def median3x3(images):
    """Per-image 3 x 3 median with edges repeated: ``scipy.ndimage.median_filter(size=(1, 3, 3),
    mode="nearest")``, bit for bit, several times faster.

    scipy's rank filter is single-threaded and took 17 of the 25 s that preprocessing a
    512 x 512 x 361 scan took; here the nine neighbours go through a fixed sorting network of
    element-wise minima and maxima (torch, on the threads torch is given), in blocks of images.

    Parameters
    ----------
    images : ndarray, shape (image, row, column)
        Finite values (NaN has no defined place in a sort).

    Returns
    -------
    ndarray, float32, same shape
    """
    images = np.ascontiguousarray(images, dtype=np.float32)
    if "torch" not in sys.modules and images.size <= _SCIPY_MEDIAN_MAX_PIXELS:
        return ndimage.median_filter(images, size=(1, 3, 3), mode="nearest")
    import torch

    out = np.empty_like(images)
    n, rows, cols = images.shape
    # Blocks small enough for the temporaries to stay in cache: 7x faster than blocks of 32 MB.
    step = max(1, _MEDIAN_BLOCK // max(1, rows * cols))
    band = max(1, _MEDIAN_BLOCK // (step * cols))
    for start in range(0, n, step):
        block = torch.from_numpy(images[start:start + step])
        padded = torch.nn.functional.pad(block[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
        for r0 in range(0, rows, band):
            r1 = min(rows, r0 + band)
            p = [padded[:, r0 + i:r1 + i, j:j + cols] for i in range(3) for j in range(3)]
            for a, b in _MEDIAN9_NETWORK:
                p[a], p[b] = torch.minimum(p[a], p[b]), torch.maximum(p[a], p[b])
            out[start:start + step, r0:r1] = p[4].numpy()
    return out


def median_prefilter(projections, size=3):
    """Per-projection 2-D median filter (against salt-and-pepper noise and dead pixels).

    ``size`` 3 on at least 3 rows takes the fast exact path (:func:`median3x3`); other sizes
    use scipy's median filter (edges repeated in both cases).
    """
    if size <= 1:
        return np.asarray(projections, dtype=np.float32)
    n_rows = projections.shape[1]
    if size == 3 and n_rows >= 3:
        return median3x3(projections)
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
