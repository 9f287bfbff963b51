"""From detector counts to line integrals, binning for steps A-C, and prefilters.

Edge cases are handled on purpose: zero or negative transmission is clipped to a floor
before ``-log``; NaN/inf and dead pixels (flat at or below dark) are replaced from their
neighbours when they are rare, and the scan is refused when they are not.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .types import ScanError

__all__ = [
    "normalise", "flat_field", "line_integrals", "repair", "refuse_bad_scan", "bin_projections",
    "median_prefilter", "median3x3", "prepare_for_registration", "auto_binning", "binning_factor",
    "search_factor", "reference_binning", "row_binning", "MIN_BINNED_ROWS", "SEARCH_WIDTH", "FINE_MAX_ITER",
    "FINE_FIRST_MLEM_ITER", "FINE_WARM_MLEM_ITER",
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


#: Steps A-C and the search keep at least this many detector rows where the detector has them: a
#: wide, short detector (2048 x 256 px) binned by its columns' factor 8 kept 32 rows for steps A-C
#: and 16 for the search, where +-20 px of dy is +-1.25 px, and dy was lost (99 px^2).  Rows are
#: independent slices in parallel beam, so they may be binned less than the columns.
MIN_BINNED_ROWS = 64


def row_binning(factor, n_rows):
    """The binning of a detector's ``n_rows`` rows where its columns are binned by ``factor``.

    ``factor`` where that leaves at least :data:`MIN_BINNED_ROWS` rows; less, down to 1, where it
    would not; on detectors with fewer rows than that, ``min(factor, n_rows)`` (a two-row scan
    keeps a row).  Used for steps A-C and ``auto``'s search (pass it to :func:`bin_projections`).

    Examples
    --------
    >>> row_binning(2, 128), row_binning(8, 256), row_binning(2, 64), row_binning(4, 2)
    (2, 4, 1, 2)
    """
    factor, n_rows = int(factor), int(n_rows)
    if n_rows < MIN_BINNED_ROWS:
        return max(1, min(factor, n_rows))
    return max(1, min(factor, n_rows // MIN_BINNED_ROWS))


def bin_projections(projections, factor, row_factor=None):
    """Average ``row_factor x factor`` pixel blocks.

    Parameters
    ----------
    projections : ndarray, shape (angle, row, column)
    factor : int
        Binning of the columns.
    row_factor : int, optional
        Binning of the rows; default ``min(factor, rows)`` (square blocks; a two-row scan keeps a
        row).  Steps A-C and ``auto``'s search pass :func:`row_binning` of the whole detector, so
        that a chunk of rows is binned as the detector is.

    Returns
    -------
    binned : ndarray
        Remainder rows/columns are cropped.
    row_factor : int
        The factor applied to rows.
    """
    factor = int(factor)
    if factor < 1:
        raise ValueError(f"binning factor must be >= 1, got {factor}")
    n_angles, n_rows, n_cols = projections.shape
    row_factor = max(1, min(factor, n_rows)) if row_factor is None else int(row_factor)
    if factor == 1 and row_factor == 1:
        return np.asarray(projections, dtype=np.float32), 1
    rows, cols = n_rows // row_factor, n_cols // factor
    trimmed = projections[:, : rows * row_factor, : cols * factor]
    binned = trimmed.reshape(n_angles, rows, row_factor, cols, factor).mean(axis=(2, 4))
    return binned.astype(np.float32), row_factor


def auto_binning(n_cols, *, target=256, min_width=64):
    """The binning factor for steps A-C that suits a detector ``n_cols`` pixels wide.

    Steps A-C cost roughly (binned width)^3 and the network reads 64 px inputs, so a few
    hundred binned pixels are enough at any detector size; the shifts are scaled back to
    input pixels (and can be refined at full resolution by the iterative methods).  The
    factor is the smallest integer that brings the width to at most ``target`` pixels, and at
    least 2 where the binned width then keeps ``min_width`` pixels: binning averages noise,
    and a 128 px detector binned by 2 gives the network every binned pixel.

    Parameters
    ----------
    n_cols : int
        Detector width in pixels (columns of the projections).
    target : int
        Largest binned width (pixels).
    min_width : int
        Narrowest binned width for which binning by 2 is still chosen.

    Returns
    -------
    int
        The factor, >= 1: 1 for detectors narrower than ``2 * min_width``, 2 from there up to
        ``2 * target`` px, then ``ceil(n_cols / target)`` (1024 px: 4, 2048 px: 8).

    Examples
    --------
    >>> [auto_binning(n) for n in (48, 128, 512, 1024, 2048, 2560)]
    [1, 2, 2, 4, 8, 10]
    """
    n_cols, target = int(n_cols), int(target)
    if n_cols < 1 or target < 1:
        raise ValueError(f"auto_binning needs positive sizes, got n_cols={n_cols}, target={target}")
    factor = -(-n_cols // target)
    if factor < 2 and n_cols // 2 >= min_width:
        factor = 2
    return max(1, factor)


#: ``auto`` (:func:`dejitter.registration.selection.estimate_auto`) searches (network passes,
#: candidates, scores) on projections binned to about this many columns, then refines the kept
#: estimate at the resolution it was given.  Every candidate and score costs MLEM iterations,
#: which grow as columns^2 x rows x angles: searching at 256 px (a 512 px detector) took 536 s of a
#: 650 s workflow on 2 cores; at 128 px it costs an eighth.
SEARCH_WIDTH = 128
#: Iterations of that refinement at most (it stops once converged), and MLEM iterations of its
#: first references.
FINE_MAX_ITER = 6
FINE_FIRST_MLEM_ITER = 20
#: MLEM iterations of its first references where they continue from the search's volumes
#: (upsampled), instead of ``FINE_FIRST_MLEM_ITER`` from a uniform volume.  Six from the search's
#: volumes fit the data about as well as twelve from scratch (the fine detail still needs its
#: iterations; the later iterations of the refinement continue MLEM); on a 512 x 512 x 361 tuning
#: scan the refinement took 87 s instead of 138 s, 0.0051 px^2 instead of 0.0057.
FINE_WARM_MLEM_ITER = 6


def search_factor(n_cols, search_width=SEARCH_WIDTH):
    """Binning of the projections that ``auto`` searches on: 1 up to 1.5 x ``search_width`` columns.

    Examples
    --------
    >>> search_factor(64), search_factor(192), search_factor(256), search_factor(512)
    (1, 1, 2, 4)
    """
    if not search_width or n_cols <= 1.5 * search_width:
        return 1
    return max(1, int(round(n_cols / search_width)))


def reference_binning(method, n_rows, n_cols):
    """Binning ``(columns, rows)`` of steps A and B's references against the projections of steps A-C.

    ``auto`` reads the references of steps A and B only at the resolution of its search
    (:func:`search_factor`, rows as :func:`row_binning`), so they are made there rather than made
    at steps A-C's and binned afterwards: on a 256 x 256 px binned scan, MLEM of 128 slices of
    128 x 128 px, an eighth of the work.  Every other method reads them at the resolution of its
    projections: ``(1, 1)``.

    Examples
    --------
    >>> reference_binning("auto", 256, 256), reference_binning("auto", 64, 128)
    ((2, 2), (1, 1))
    >>> reference_binning("network", 256, 256)
    (1, 1)
    """
    factor = search_factor(n_cols) if method == "auto" else 1
    return (1, 1) if factor == 1 else (factor, row_binning(factor, n_rows))


def binning_factor(binning, n_cols, *, target=256):
    """The integer factor of a ``binning`` setting: an integer as it is, ``"auto"`` by :func:`auto_binning`.

    Parameters
    ----------
    binning : int or "auto"
    n_cols : int
        Detector width in pixels.
    target : int
        Largest binned width for ``"auto"``.

    Returns
    -------
    int
    """
    if isinstance(binning, str):
        text = binning.strip().lower()
        if text == "auto":
            return auto_binning(n_cols, target=target)
        binning = int(text) if text.isdigit() else binning
    if isinstance(binning, bool) or not isinstance(binning, (int, np.integer)) or binning < 1:
        raise ValueError(f"binning must be a positive integer or 'auto', got {binning!r}")
    return int(binning)


#: Compare-exchange pairs of a 19-step sorting network that leaves the median of 9 values in
#: position 4 (Paeth; N. Devillard, "Fast median search", 1998).
_MEDIAN9_NETWORK = ((1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3), (5, 8),
                    (4, 7), (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2))
#: Elements per block of :func:`median3x3` (its temporaries are about 10 blocks of float32).
_MEDIAN_BLOCK = 1 << 16


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
    import torch

    images = np.ascontiguousarray(images, dtype=np.float32)
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
