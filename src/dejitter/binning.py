"""Binning for steps A-C and ``auto``'s search: how far a detector is binned, and the binning itself.

Plain arithmetic and NumPy, no torch: the workflow's run-time and memory requests
(:mod:`dejitter.pipeline.sizing`) read these choices where the Snakefile imports them.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "bin_projections", "row_binning", "auto_binning", "binning_factor", "search_factor", "reference_binning",
    "MIN_BINNED_ROWS", "SEARCH_WIDTH", "FINE_MAX_ITER", "FINE_FIRST_MLEM_ITER", "FINE_WARM_MLEM_ITER",
]

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
