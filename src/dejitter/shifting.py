"""Step D, and the one shift convention of the project.

A measured projection is the ideal one displaced by the jitter ``(dx, dy)``::

    P_measured(x, y) = P_ideal(x - dx, y - dy)

:func:`displace` applies a displacement; :func:`correct` undoes an estimated jitter,
which is displacing by ``(-dx, -dy)``.  :func:`shift_columns` and :func:`correct_band_limited`
do the same by band-limited (Fourier) interpolation, which blurs no view, for what must compare
views at different sub-pixel shifts alike (TomoPy's axis offset, the volume's sharpness).
Nothing else in the project moves images.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import ndimage

__all__ = ["displace", "correct", "shift_columns", "correct_band_limited", "cpu_threads"]

#: Below this many pixels in all, images are moved in the calling thread (a pool costs more).
_THREADED_PIXELS = 1 << 20


def cpu_threads():
    """CPU threads a step may use: ``OMP_NUM_THREADS`` where set (the scheduler's allotment, see
    :func:`dejitter.pipeline.steplog.logged_step`), else the CPUs this process may run on."""
    try:
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def displace(projections, shifts, *, order=3, mode="nearest"):
    """Displace each projection by its ``(dx, dy)``, sub-pixel.

    Parameters
    ----------
    projections : ndarray, shape (angle, row, column)
    shifts : ndarray, shape (angle, 2)
        ``dx`` (columns) and ``dy`` (rows) in pixels; NaN counts as 0 (an unobserved dy).
    order : int
        Spline order of the interpolation (1 linear, 3 cubic).
    mode : str
        What enters at the borders: ``'nearest'`` repeats the edge pixel, which suits
        line integrals of samples wider than the field of view; ``'constant'`` fills 0.

    Returns
    -------
    ndarray, same shape, float32
        The same whether the images are moved one after the other or, for large stacks, on
        :func:`cpu_threads` threads.
    """
    projections = np.asarray(projections, dtype=np.float32)
    shifts = np.nan_to_num(np.asarray(shifts, dtype=np.float64), nan=0.0)
    if shifts.shape != (projections.shape[0], 2):
        raise ValueError(f"shifts must have shape ({projections.shape[0]}, 2), got {shifts.shape}")
    out = np.empty_like(projections)

    def move(i):
        dx, dy = shifts[i]
        if dx == 0 and dy == 0:
            out[i] = projections[i]
        else:
            ndimage.shift(projections[i], (dy, dx), output=out[i], order=order, mode=mode)

    threads = min(cpu_threads(), len(shifts))
    if threads > 1 and projections.size >= _THREADED_PIXELS:
        # ndimage releases the GIL while it interpolates: one image per task, the same result.
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(move, range(len(shifts))))
    else:
        for i in range(len(shifts)):
            move(i)
    return out


def correct(projections, jitter, **kwargs):
    """Undo an estimated jitter: displace by ``(-dx, -dy)``.  Keywords as in :func:`displace`."""
    return displace(projections, -np.asarray(jitter, dtype=np.float64), **kwargs)


def shift_columns(projections, shifts):
    """Move each projection ``(angle, row, column)`` by ``shifts[angle]`` columns (towards higher
    columns), sub-pixel.

    Band-limited (Fourier) interpolation of the even extension of each row: the extension is
    continuous where it wraps, so neither edge rings, and values beyond the detector repeat the
    edge, as a sample wider than the field of view would.  One angle at a time (bounded memory).
    """
    p = np.asarray(projections, dtype=np.float32)
    n = p.shape[-1]
    phase = -2j * np.pi * np.fft.rfftfreq(2 * n)
    out = np.empty_like(p)
    for a, shift in enumerate(np.asarray(shifts, dtype=np.float64)):
        extended = np.concatenate([p[a], p[a][..., ::-1]], axis=-1)
        spectrum = np.fft.rfft(extended, axis=-1) * np.exp(phase * shift)
        out[a] = np.fft.irfft(spectrum, n=2 * n, axis=-1)[..., :n]
    return out


def correct_band_limited(projections, jitter):
    """:func:`correct` by band-limited interpolation: displace each view by ``-(dx, dy)`` without blurring it.

    Parameters
    ----------
    projections : ndarray, shape (angle, row, column)
    jitter : ndarray, shape (angle, 2)
        ``dx, dy`` in pixels; NaN counts as 0 (an unobserved dy).

    Returns
    -------
    ndarray, same shape, float32
        :func:`shift_columns` along columns, then along rows: values beyond the detector repeat
        the edge, as ``correct(..., mode='nearest')``.
    """
    jitter = np.nan_to_num(np.asarray(jitter, dtype=np.float64))
    moved = shift_columns(projections, -jitter[:, 0])
    if np.any(jitter[:, 1]):
        moved = shift_columns(moved.transpose(0, 2, 1), -jitter[:, 1]).transpose(0, 2, 1)
    return np.ascontiguousarray(moved)
