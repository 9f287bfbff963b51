"""Classic registration: cross-correlation, centre of mass and iterative reprojection alignment.

Also the pieces every method of :mod:`dejitter.registration` shares: the gauge that fixes what the
data cannot determine (:func:`gauge`), the balancing of leave-out halves (:func:`balance_halves`)
and the truth-free consistency score (:func:`consistency_score`).
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import fft as sfft
from scipy.signal import fftconvolve

from ..binning import bin_projections
from ..metrics import remove_rigid_motion
from ..shifting import cpu_threads
from .references import MIN_ROWS_FOR_DY, angle_halves, measured_frame_references

__all__ = ["register_pairs", "high_pass", "alignment_residual", "consistency_score", "center_of_mass_shifts", "gauge",
           "balance_halves", "align_iterative", "level_converged", "reset_runaways", "STALL",
           "RUNAWAY_SIGMAS", "RUNAWAY_SHARE"]

log = logging.getLogger("dejitter")


#: Views registered together: their spectra (complex64) are held at once.
VIEWS_PER_BATCH = 32


def _window(rows, cols):
    """The separable Hanning window of an image (no window along one or two rows)."""
    along_rows = np.hanning(rows + 2)[1:-1] if rows > 2 else np.ones(rows)
    return along_rows, np.hanning(cols + 2)[1:-1]


def _correlation_peaks(cross_power, n_cols, upsample):
    """``(row, column)`` of the cross-correlation peak of each view, sub-pixel.

    ``cross_power`` is the half spectrum (``rfft2``) of real images, ``n_cols`` their width.  The
    integer peak of the inverse FFT, then the largest magnitude on a ``1 / upsample`` grid within
    0.75 px of it, by the matrix-multiply DFT of Guizar-Sicairos et al. (what
    ``skimage.registration.phase_cross_correlation`` does view by view), batched: the grid's offset
    from each view's integer peak is a phase ramp, folded into one pair of small DFT matrices per
    view.  The correlation of real images is real: the half spectrum counts twice but for its
    zero and Nyquist columns, and the real part is kept (skimage's full complex sum differs from
    it only by the Nyquist column's imaginary part).
    """
    n_views, rows, half_cols = cross_power.shape
    correlation = np.abs(sfft.irfft2(cross_power, s=(rows, n_cols), workers=cpu_threads()))
    flat = np.argmax(correlation.reshape(n_views, -1), axis=1)
    y, x = (v.astype(np.float64) for v in np.unravel_index(flat, (rows, n_cols)))
    y[y > rows // 2] -= rows
    x[x > n_cols // 2] -= n_cols
    half = int(np.ceil(0.75 * upsample))
    offsets = np.arange(-half, half + 1) / upsample
    ky, kx = np.fft.fftfreq(rows) * rows, np.arange(half_cols, dtype=np.float64)
    weights = np.full(half_cols, 2.0)
    weights[0] = 1.0
    if n_cols % 2 == 0:
        weights[-1] = 1.0
    rows_dft = np.exp(2j * np.pi / rows * (y[:, None, None] + offsets[None, :, None]) * ky)  # (view, offset, ky)
    cols_dft = weights[:, None] * np.exp(2j * np.pi / n_cols * kx[:, None] * (x[:, None, None] + offsets))  # (view, kx, offset)
    single = np.complex64
    values = np.abs((rows_dft.astype(single) @ (cross_power @ cols_dft.astype(single))).real).reshape(n_views, -1)
    best_row, best_col = np.unravel_index(np.argmax(values, axis=1), (len(offsets), len(offsets)))
    return y + offsets[best_row], x + offsets[best_col]


def high_pass(images, sigma):
    """``images`` (view, row, column) less their Gaussian blur of width ``sigma`` pixels, view by view.

    The blur is :func:`scipy.ndimage.gaussian_filter`'s (``mode="nearest"``, 4 sigma), applied by
    FFT on the edge-padded images: its cost does not grow with ``sigma``, which is 4 % of the width
    (82 px on a 2048 px detector, a 657-tap kernel applied directly).
    """
    images = np.asarray(images, dtype=np.float32)
    radius = int(4.0 * sigma + 0.5)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    blurred = np.pad(images, ((0, 0), (radius, radius), (radius, radius)), mode="edge")
    blurred = fftconvolve(blurred, taps[None, :, None], mode="valid", axes=1)
    blurred = fftconvolve(blurred, taps[None, None, :], mode="valid", axes=2)
    return images - blurred.astype(np.float32)


def register_pairs(moving, reference, *, upsample=20, highpass=None):
    """Sub-pixel jitter of each ``moving`` image relative to its ``reference``.

    Cross-correlation of the images, each made zero-mean and multiplied by a Hanning window (so
    that circular correlation sees no hard edges), as ``skimage.registration.phase_cross_correlation``
    with ``normalization=None`` computes it, batched over the views (:func:`_correlation_peaks`).
    dx comes from the whole images; dy from the images without their column means.  Why: where
    the sample fills the rows (taller than the view), most of an image is constant along the rows
    (a body seen through a short window), and that part, multiplied by the same window in both
    images, correlates best at dy = 0 whatever the jitter.  On a 2048 x 256 px detector binned by 8
    it held dy at 3 % of the truth (99 px^2); without the column means the estimate follows the
    truth.  Where the sample is inside the view, the column means do not move with dy and
    removing them changes nothing.  A dy so found beyond a quarter of the rows is not trusted (the
    two images then share too little to show it): the whole images' peak stands there.

    Parameters
    ----------
    moving, reference : ndarray, shape (angle, row, column)
    upsample : int
        Sub-pixel precision ``1 / upsample`` px.
    highpass : float, optional
        Register the images less their Gaussian blur of this width (pixels, :func:`high_pass`):
        against references whose error is smooth, as where the sample is wider than the view
        (:mod:`dejitter.registration.interior`).

    Returns
    -------
    ndarray, shape (angle, 2)
        ``(dx, dy)`` such that ``moving = displace(reference, (dx, dy))``.
    """
    if highpass:
        moving, reference = high_pass(moving, highpass), high_pass(reference, highpass)
    n_views, rows, cols = moving.shape
    along_rows, along_cols = _window(rows, cols)
    # Single precision throughout: the peaks found are those of double precision (measured), at half the cost.
    window = np.outer(along_rows, along_cols).astype(np.float32)
    vertical = rows >= MIN_ROWS_FOR_DY
    shifts = np.zeros((n_views, 2))
    for start in range(0, n_views, VIEWS_PER_BATCH):
        part = slice(start, min(start + VIEWS_PER_BATCH, n_views))
        images = [np.asarray(stack[part], dtype=np.float32) for stack in (reference, moving)]
        spectra = [sfft.rfft2((im - im.mean(axis=(1, 2), keepdims=True)) * window, workers=cpu_threads()) for im in images]
        y, x = _correlation_peaks(spectra[0] * np.conj(spectra[1]), cols, upsample)
        # skimage's convention: the peak is the correction of the moving image, (row, column).
        shifts[part] = np.stack([-x, -y], axis=1)
        if vertical:
            flat = [sfft.rfft2((im - im.mean(axis=1, keepdims=True)) * window, workers=cpu_threads()) for im in images]
            y_flat, _ = _correlation_peaks(flat[0] * np.conj(flat[1]), cols, upsample)
            trusted = np.abs(y_flat) <= rows / 4
            shifts[part, 1] = np.where(trusted, -y_flat, shifts[part, 1])
    return shifts


def alignment_residual(projections, references):
    """Per-angle normalised RMS difference between (corrected) projections and their references.

    A reference with (almost) nothing in it, where an estimate far off moved the view off the
    reconstruction's grid, counts as if it held 1e-3 of the projection's energy: its residual is
    then about 32, large but finite, rather than the projection's RMS over 1e-12.
    """
    p = projections - projections.mean(axis=(1, 2), keepdims=True)
    r = references - references.mean(axis=(1, 2), keepdims=True)
    p_energy = (p ** 2).mean(axis=(1, 2))
    scale = np.sqrt(p_energy * np.maximum((r ** 2).mean(axis=(1, 2)), 1e-3 * p_energy)) ** 0.5 + 1e-12
    gain = (p * r).sum(axis=(1, 2)) / ((r ** 2).sum(axis=(1, 2)) + 1e-12)
    return np.sqrt(((p - gain[:, None, None] * r) ** 2).mean(axis=(1, 2))) / scale


def consistency_score(projections, theta, shifts, *, n_iter=20, center=None, backend=None, return_state=False,
                      region=None, warm_start=None):
    """Truth-free score of a jitter estimate: lower is better.

    The median over angles of the normalised residual between each measured projection and
    the leave-out reprojection of the data corrected by ``shifts``, moved to that projection's
    frame (:func:`dejitter.registration.references.measured_frame_references`).

    Parameters
    ----------
    projections : ndarray, shape (angle, row, column)
        Measured line integrals (binned as for steps A-C).
    theta : ndarray
        Angles in radians.
    shifts : ndarray, shape (angle, 2)
        Candidate jitter in pixels of ``projections``.
    region : (slice, slice), optional
        Compare only these rows and columns (e.g.
        :func:`~dejitter.registration.references.common_region`); default the whole view.
    warm_start : tuple, optional
        The ``state`` of a previous score of the same ``shifts``, whose MLEM continues for
        ``n_iter`` more iterations.

    Returns
    -------
    score : float
    residual : ndarray, shape (angle,)
        Per-angle residual (the ``residual`` column of ``shifts.csv``).
    state : tuple
        Only with ``return_state``: the MLEM state of the references, to continue from
        (``warm_start`` of :func:`~dejitter.registration.references.measured_frame_references`).
    """
    references, state = measured_frame_references(projections, theta, shifts, n_iter=n_iter, center=center,
                                                  backend=backend, warm_start=warm_start)
    if region is not None:
        projections, references = projections[:, region[0], region[1]], references[:, region[0], region[1]]
    residual = alignment_residual(projections, references)
    if return_state:
        return float(np.median(residual)), residual, state
    return float(np.median(residual)), residual


def center_of_mass_shifts(projections, theta):
    """Jitter from each projection's centre of mass, with the rigid (orbit) motion removed."""
    p = np.clip(projections, 0, None).astype(np.float64)
    total = p.sum(axis=(1, 2)) + 1e-12
    rows, cols = np.arange(p.shape[1]), np.arange(p.shape[2])
    com = np.stack([(p.sum(axis=1) * cols).sum(axis=1) / total, (p.sum(axis=2) * rows).sum(axis=1) / total], 1)
    return remove_rigid_motion(com, theta)


def gauge(shifts, theta):
    """Remove the object's orbit (a cos + b sin) and mean dy, keep the constant dx.

    With the rotation centre fixed, the constant part of dx is the axis offset and *is*
    determined by the data; the orbit and mean dy are not, and would otherwise drift.
    """
    theta = np.asarray(theta)
    out = np.array(shifts, dtype=np.float64)
    design = np.stack([np.cos(theta), np.sin(theta)], 1)
    centred = out[:, 0] - out[:, 0].mean()
    coef, *_ = np.linalg.lstsq(design - design.mean(0), centred, rcond=None)
    out[:, 0] -= (design - design.mean(0)) @ coef
    out[:, 1] -= out[:, 1].mean()
    return out


#: An angle whose estimate departs from the median by more than this many robust standard
#: deviations (1.4826 x MAD) of all angles, and by more than RUNAWAY_SHARE of the view, has run
#: away, not followed a jitter.
RUNAWAY_SIGMAS = 6.0
RUNAWAY_SHARE = 0.25


def reset_runaways(shifts, extent, *, sigmas=RUNAWAY_SIGMAS, share=RUNAWAY_SHARE):
    """Set the angles whose ``dx`` or ``dy`` ran far from all the others back to the median.

    Reprojection alignment can lose one view: its correlation with a poor reference peaks
    elsewhere, each iteration moves it further, and nothing pulls it back (a 2048 x 256 px scan:
    one angle at dy = 115 px, the jitter +-20; alone 13 of the scan's 13.4 px^2).  Jitter that
    is uniform or Gaussian never reaches 6 robust standard deviations, and a real stage's rare
    large jumps (the I13 scan's own) stay well within a quarter of the view: both are kept.
    Restarted from the median, a lost view is registered afresh in the next iteration.

    Parameters
    ----------
    shifts : ndarray, shape (angle, 2)
        NaN (an unobservable dy) is left as it is.
    extent : (int, int)
        Columns and rows of the view, in the pixels of ``shifts``.

    Returns
    -------
    ndarray, shape (angle, 2)
    """
    out = np.array(shifts, dtype=np.float64)
    for k in range(out.shape[1]):
        values = out[:, k]
        if not np.all(np.isfinite(values)):
            continue
        median = np.median(values)
        limit = max(sigmas * 1.4826 * np.median(np.abs(values - median)), share * extent[k])
        values[np.abs(values - median) > limit] = median
    return out


def balance_halves(update, theta):
    """Undo the doubled offset between the two leave-out halves in a registration update.

    Each half-volume sits where its own views are on average (their mean dy, and the orbit
    ``a cos + b sin`` of their dx).  Views registered against the *other* half's reprojection
    therefore carry that half's offset, and the halves' estimates differ by twice the true
    difference of their means; left alone, successive passes swap it between the halves
    instead of removing it.  Half of each half's own offset, relative to all angles, is removed.
    """
    theta = np.asarray(theta)
    if len(theta) < 4:
        return update
    out = np.array(update, dtype=np.float64)
    for idx in angle_halves(len(theta)):
        t = theta[idx]
        design = np.stack([np.ones_like(t), np.cos(t), np.sin(t)], 1)
        coef, *_ = np.linalg.lstsq(design, update[idx, 0], rcond=None)
        out[idx, 0] -= 0.5 * design[:, 1:] @ coef[1:]
        out[idx, 1] -= 0.5 * (update[idx, 1].mean() - update[:, 1].mean())
    return out


#: The update of reprojection alignment stops contracting once what is left is registration noise:
#: more than this times the previous update, from the third iteration of a level on.  It tells
#: :func:`level_converged` that a level has converged although its update stays above ``tol``.
#: (Stopping the iterations there measured worse: the error against the truth still falls slowly
#: on 128 px scans, 0.0025 -> 0.0065 px^2 on a clean particle, so :func:`align_iterative` does not
#: stop early unless asked to with ``stall``.)
STALL = 0.8


def level_converged(updates, tol, stall=STALL):
    """Whether a level of alignment is done, from its RMS updates so far (px of ``projections``)."""
    if updates[-1] < tol:
        return True
    return len(updates) >= 3 and updates[-1] > stall * updates[-2]


def align_iterative(projections, theta, *, initial=None, levels=(4, 2, 1), max_iter=8, tol=0.02, stall=None,
                    mlem_iter=6, first_mlem_iter=20, upsample=20, center=None, backend=None, callback=None,
                    warm_start=None, highpass=None):
    """Iterative reprojection alignment, coarse to fine and warm-started.

    At each level of binning, repeat: correct the projections with the current estimate,
    reconstruct (continuing from the previous volumes), reproject with leave-out references,
    register, update.  Each level starts from the estimate of the coarser one.

    Parameters
    ----------
    projections : ndarray, shape (angle, row, column)
        Line integrals.
    theta : ndarray
        Angles in radians.
    initial : ndarray, shape (angle, 2), optional
        Starting estimate (e.g. the network's), in pixels of ``projections``.
    levels : sequence of int
        Binning factors, coarse to fine.
    max_iter : int
        Outer iterations per level at most.
    tol : float
        Stop a level once the RMS update falls below ``tol`` px (of ``projections``).
    stall : float, optional
        Also stop a level once its update stops contracting (:func:`level_converged`, e.g. :data:`STALL`);
        default: only ``tol`` and ``max_iter``.
    mlem_iter, first_mlem_iter : int
        MLEM iterations per outer iteration, and for the first of each level.
    upsample : int
        Registration precision ``1 / upsample`` px of the level.
    center : float, optional
        Rotation axis in pixels of ``projections``.
    backend : dejitter.reconstruction.backends.Backend, optional
    callback : callable, optional
        Called as ``callback(level, iteration, rms_update)``.
    warm_start : tuple, optional
        MLEM state of the first level's references to continue from (``state`` of
        :func:`~dejitter.registration.references.measured_frame_references`, e.g. its
        :func:`~dejitter.registration.references.upsample_state` from a coarser search); the
        first iteration then runs ``first_mlem_iter`` MLEM iterations from it.
    highpass : float, optional
        Register against the references high-passed (:func:`register_pairs`), this Gaussian
        width in pixels of ``projections`` (scaled to each level).

    Returns
    -------
    shifts : ndarray, shape (angle, 2)
        Estimated jitter in pixels of ``projections`` (dy NaN when unobservable).
    references : ndarray
        The leave-out references of the last iteration, at the finest level.
    """
    theta = np.asarray(theta)
    observe_dy = projections.shape[1] >= MIN_ROWS_FOR_DY
    shifts = np.zeros((len(theta), 2)) if initial is None else np.nan_to_num(np.array(initial, float))
    references = None
    for factor in levels:
        if projections.shape[2] // factor < 8 and factor > 1:  # rows are binned by at most their number
            continue
        binned, row_factor = bin_projections(projections, factor)
        scale = np.array([factor, row_factor], dtype=float)
        level_center = None if center is None else (center - (factor - 1) / 2) / factor
        state, updates = (warm_start, []) if factor == levels[0] else (None, [])
        for it in range(max_iter):
            references, state = measured_frame_references(
                binned, theta, shifts / scale, n_iter=first_mlem_iter if it == 0 else mlem_iter,
                warm_start=state, center=level_center, backend=backend)
            update = register_pairs(binned, references, upsample=upsample,
                                    highpass=highpass and max(highpass / factor, 0.5)) * scale
            if not observe_dy:
                update[:, 1] = 0
            shifts = gauge(reset_runaways(shifts + update, projections.shape[:0:-1]), theta)
            rms = float(np.sqrt(np.mean(np.sum(update ** 2, axis=1))))
            log.info("alignment at binning %d, iteration %d: rms update %.3f px", factor, it, rms)
            if callback:
                callback(factor, it, rms)
            updates.append(rms)
            if rms < tol * factor or (stall is not None and level_converged(updates, tol * factor, stall)):
                break
    if not observe_dy:
        shifts[:, 1] = np.nan
    return shifts, references
