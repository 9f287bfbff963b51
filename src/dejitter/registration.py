"""Step C: estimate each projection's jitter, with one interface for every method.

Methods (``estimate_shifts(method=...)``):

``auto`` (the default)
    The network, refined by reprojection alignment, with the classic methods beside it; the
    candidate with the best truth-free score is kept (:mod:`dejitter.selection`).
``none``
    Zero shifts: the uncorrected baseline.
``center_of_mass``
    Centre of mass of each projection, minus its fitted rigid motion.  Nearly exact for a clean
    object wholly inside the field of view, useless when it is not.
``phase_correlation``
    One pass: MLEM (A), reprojection (B), sub-pixel cross-correlation of each raw projection
    with its reprojection.
``iterative``
    Iterative reprojection alignment (A, B and registration repeated until the shifts
    converge), coarse to fine and warm-started.
``network``
    The residual network of :mod:`dejitter.network` reads (raw, reprojection) pairs.

The self-term (DESIGN.md): a reprojection at angle m contains a sharp copy of projection m at
zero shift, because MLEM fits that very view, and pulls registration towards zero.  Two kinds
of reference, chosen by ``leave_out``:

*leave-out* (the correlation methods)
    Angles are split into two interleaved halves, each half is reconstructed on its own, and
    every projection is compared with the reprojection of the *other* half.  Correlation is
    unwhitened (``normalization=None``).  Each half-volume sits where its own views are on
    average, which :func:`_balance_halves` takes out of every update.
*full* (the network, as in the paper)
    One reconstruction of all angles.  The network was trained on exactly these inputs, so the
    self-term does not pull it (DESIGN.md's third way out), and one volume leaves no offset
    between halves.  That offset is why: under +-20 px jitter the half-volumes are not merely
    displaced but distorted differently (a constant dx acts like a wrong rotation centre), which
    no rigid balancing removes; on six held-out scans, one model's single pass was 1.1 px^2
    with leave-out references and 0.18 px^2 with full ones.  The model card records which kind a
    model was trained on, and the model reads that kind (``DejitterNet.references``).
"""

from __future__ import annotations

import logging

import numpy as np
from skimage.registration import phase_cross_correlation

from .metrics import remove_rigid_motion
from .preprocessing import bin_projections
from .references import (MIN_ROWS_FOR_DY, angle_halves, default_backend, measured_frame_references,
                         reference_projections)
from .shifting import correct, displace

__all__ = [
    "METHODS", "estimate_shifts", "reads_leave_out", "register_pairs", "align_iterative",
    "center_of_mass_shifts", "alignment_residual", "consistency_score",
    "MIN_ROWS_FOR_DY",
]

log = logging.getLogger("dejitter")

METHODS = ("auto", "none", "center_of_mass", "phase_correlation", "iterative", "network")



def _prepare(image):
    """Zero-mean image under a smooth window, so circular correlation sees no hard edges."""
    rows, cols = image.shape
    window = np.outer(np.hanning(rows + 2)[1:-1] if rows > 2 else np.ones(rows), np.hanning(cols + 2)[1:-1])
    return (image - image.mean()) * window


def register_pairs(moving, reference, *, upsample=20):
    """Sub-pixel jitter of each ``moving`` image relative to its ``reference``.

    Parameters
    ----------
    moving, reference : ndarray, shape (angle, row, column)
    upsample : int
        Sub-pixel precision ``1 / upsample`` px.

    Returns
    -------
    ndarray, shape (angle, 2)
        ``(dx, dy)`` such that ``moving = displace(reference, (dx, dy))``.
    """
    shifts = np.zeros((moving.shape[0], 2))
    for i in range(moving.shape[0]):
        found, _, _ = phase_cross_correlation(_prepare(reference[i]), _prepare(moving[i]),
                                              upsample_factor=upsample, normalization=None)
        shifts[i] = -found[1], -found[0]  # skimage returns the correction (row, column)
    return shifts


def alignment_residual(projections, references):
    """Per-angle normalised RMS difference between (corrected) projections and their references."""
    p = projections - projections.mean(axis=(1, 2), keepdims=True)
    r = references - references.mean(axis=(1, 2), keepdims=True)
    scale = np.sqrt((p ** 2).mean(axis=(1, 2)) * (r ** 2).mean(axis=(1, 2))) ** 0.5 + 1e-12
    gain = (p * r).sum(axis=(1, 2)) / ((r ** 2).sum(axis=(1, 2)) + 1e-12)
    return np.sqrt(((p - gain[:, None, None] * r) ** 2).mean(axis=(1, 2))) / scale


def consistency_score(projections, theta, shifts, *, n_iter=20, center=None, backend=None):
    """Truth-free score of a jitter estimate: lower is better.

    The median over angles of the normalised residual between each measured projection and
    the leave-out reprojection of the data corrected by ``shifts``, moved to that projection's
    frame (:func:`dejitter.references.measured_frame_references`).

    Parameters
    ----------
    projections : ndarray, shape (angle, row, column)
        Measured line integrals (binned as for steps A-C).
    theta : ndarray
        Angles in radians.
    shifts : ndarray, shape (angle, 2)
        Candidate jitter in pixels of ``projections``.

    Returns
    -------
    score : float
    residual : ndarray, shape (angle,)
        Per-angle residual (the ``residual`` column of ``shifts.csv``).
    """
    references, _ = measured_frame_references(projections, theta, shifts, n_iter=n_iter, center=center,
                                              backend=backend)
    residual = alignment_residual(projections, references)
    return float(np.median(residual)), residual


def center_of_mass_shifts(projections, theta):
    """Jitter from each projection's centre of mass, with the rigid (orbit) motion removed."""
    p = np.clip(projections, 0, None).astype(np.float64)
    total = p.sum(axis=(1, 2)) + 1e-12
    rows, cols = np.arange(p.shape[1]), np.arange(p.shape[2])
    com = np.stack([(p.sum(axis=1) * cols).sum(axis=1) / total, (p.sum(axis=2) * rows).sum(axis=1) / total], 1)
    return remove_rigid_motion(com, theta)


def _gauge(shifts, theta):
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


def _balance_halves(update, theta):
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


def align_iterative(projections, theta, *, initial=None, levels=(4, 2, 1), max_iter=8, tol=0.02,
                    mlem_iter=6, first_mlem_iter=20, upsample=20, center=None, backend=None, callback=None):
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
    mlem_iter, first_mlem_iter : int
        MLEM iterations per outer iteration, and for the first of each level.
    upsample : int
        Registration precision ``1 / upsample`` px of the level.
    center : float, optional
        Rotation axis in pixels of ``projections``.
    backend : dejitter.backends.Backend, optional
    callback : callable, optional
        Called as ``callback(level, iteration, rms_update)``.

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
        state = None
        for it in range(max_iter):
            references, state = measured_frame_references(
                binned, theta, shifts / scale, n_iter=first_mlem_iter if state is None else mlem_iter,
                warm_start=state, center=level_center, backend=backend)
            update = register_pairs(binned, references, upsample=upsample) * scale
            if not observe_dy:
                update[:, 1] = 0
            shifts = _gauge(shifts + update, theta)
            rms = float(np.sqrt(np.mean(np.sum(update ** 2, axis=1))))
            log.info("alignment at binning %d, iteration %d: rms update %.3f px", factor, it, rms)
            if callback:
                callback(factor, it, rms)
            if rms < tol * factor:
                break
    if not observe_dy:
        shifts[:, 1] = np.nan
    return shifts, references


def reads_leave_out(method, trained_on="leave_out"):
    """Whether ``method`` registers against leave-out references (else against one full volume).

    The correlation methods always do; the network (alone or in ``auto``) reads the kind it was trained on,
    ``trained_on`` (``'full'`` or ``'leave_out'``: its card's ``references``).
    """
    return method not in ("network", "auto") or trained_on == "leave_out"


def estimate_shifts(projections, theta, method="iterative", *, mlem_iter=20, center=None, backend=None,
                    references=None, leave_out=None, model=None, network_passes=1, refine_iterations=0, details=None,
                    **options):
    """Estimate the jitter of each projection.

    Parameters
    ----------
    projections : ndarray, shape (angle, row, column)
        Line integrals at the resolution of steps A-C.
    theta : ndarray
        Angles in radians.
    method : {'auto', 'none', 'center_of_mass', 'phase_correlation', 'iterative', 'network'}
        ``auto``: the network refined by reprojection alignment, the classic methods beside it,
        and the candidate with the best truth-free score (:mod:`dejitter.selection`).
    mlem_iter : int
        MLEM iterations for the references.
    center : float, optional
        Rotation axis column, in pixels of ``projections``.
    backend : dejitter.backends.Backend, optional
    references : ndarray, optional
        References of ``projections`` (steps A and B) when already computed, of the kind
        ``leave_out`` says.
    leave_out : bool, optional
        Leave-out references (True) or one reconstruction of all angles (False).  Default: the
        kind the network was trained on (``model.references``), leave-out for the other methods.
    model : torch.nn.Module, optional
        Required for ``method='network'``.
    network_passes : int
        ``network``: passes of steps A, B and the network; each later pass reconstructs the
        projections corrected by the estimate so far and reads the residual jitter against the
        sharper references (1: the published single pass).
    refine_iterations : int
        ``network``: refine its estimate with this many outer iterations of reprojection
        alignment at full resolution (0: none).
    details : dict, optional
        ``auto``: filled with the candidates' scores, the choice and the reason.
    **options
        Passed to :func:`align_iterative` (``iterative``) or
        :func:`dejitter.network.predict_jitter` (``network``, ``auto``).

    Returns
    -------
    shifts : ndarray, shape (angle, 2)
        Jitter ``(dx, dy)`` in pixels of ``projections``; dy NaN when unobservable.
    quality : dict of ndarray
        Per-angle quality columns for ``shifts.csv`` (at least ``residual``).
    """
    if method not in METHODS:
        raise ValueError(f"unknown registration method {method!r}; choose one of {', '.join(METHODS)}")
    theta = np.asarray(theta)
    backend = backend or default_backend()
    observe_dy = projections.shape[1] >= MIN_ROWS_FOR_DY
    quality = {}
    if leave_out is None:
        leave_out = reads_leave_out(method, getattr(model, "references", "leave_out"))
    ref_kwargs = dict(n_iter=mlem_iter, center=center, backend=backend, leave_out=leave_out)
    balance = _balance_halves if leave_out else (lambda update, theta: update)
    if method == "auto":
        from .selection import estimate_auto

        shifts, quality = estimate_auto(projections, theta, model=model, network_passes=network_passes,
                                        mlem_iter=mlem_iter, center=center, backend=backend, references=references,
                                        details=details, **options)
    elif method == "none":
        shifts = np.zeros((len(theta), 2))
    elif method == "center_of_mass":
        shifts = center_of_mass_shifts(projections, theta)
    elif method == "iterative":
        shifts, _ = align_iterative(projections, theta, center=center, backend=backend, **options)
    else:
        if references is None:
            references, _ = reference_projections(projections, theta, **ref_kwargs)
        if method == "phase_correlation":
            shifts = _gauge(balance(register_pairs(projections, references), theta), theta)
        else:
            from .network import predict_jitter

            if model is None:
                raise ValueError("method 'network' needs a model (see dejitter.network.load_model)")
            shifts, quality = predict_jitter(model, projections, references, device=backend.device, **options)
            shifts = _gauge(balance(shifts, theta), theta)
            flagged = quality["flagged"]
            for _ in range(network_passes - 1):
                # Another pass: reconstruct the corrected data (a sharp volume) and move each
                # reference to where the estimate puts its projection.  The network then reads
                # the projections untouched, as in training (interpolating the noisy projections
                # instead raised the error at 60 % salt-and-pepper from 1.0 to 1.7 px^2), and
                # finds the residual.
                corrected = correct(projections, shifts, order=1)
                references, _ = reference_projections(corrected, theta, **ref_kwargs)
                residual, quality = predict_jitter(model, projections, displace(references, shifts),
                                                   device=backend.device, **options)
                shifts = _gauge(shifts + balance(residual, theta), theta)
                # This pass re-estimates against sharper references: its spread, not the first
                # pass's, is the confidence of the final estimate.
                flagged = quality["flagged"]
            # Beyond the trained range, whatever pass got there: flagged, never clamped.
            if options.get("trained_amplitude") is not None:
                flagged = flagged | (np.abs(shifts).max(axis=1) > options["trained_amplitude"])
            quality["flagged"] = flagged
            if refine_iterations:
                shifts, _ = align_iterative(projections, theta, initial=shifts, levels=(1,),
                                            max_iter=refine_iterations, center=center, backend=backend)
    shifts = np.asarray(shifts, dtype=np.float64)
    if not observe_dy:
        shifts[:, 1] = np.nan
    if "residual" not in quality:
        # Quality of every method on the same footing: how well each measured projection matches
        # the leave-out reprojection of the data corrected by the estimate (``auto`` scored it already).
        quality["residual"] = consistency_score(projections, theta, shifts, n_iter=mlem_iter, center=center,
                                                backend=backend)[1]
    return shifts, quality
