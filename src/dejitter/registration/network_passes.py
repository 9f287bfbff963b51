"""Step C with the network: one or more passes of steps A, B and the network, then optional refinement.

The first pass is the published method: the network reads each raw projection with its
reprojection.  Each later pass reconstructs the projections corrected by the estimate so far,
moves every reference to where that estimate puts its projection, and lets the network read the
small residual jitter against the untouched projection.
"""

from __future__ import annotations

import numpy as np

from ..shifting import correct, displace
from .classic import align_iterative, balance_halves, gauge
from .network import predict_jitter
from .references import reference_projections

__all__ = ["network_shifts"]


def network_shifts(projections, theta, model, *, references=None, passes=1, leave_out=False, mlem_iter=20,
                   center=None, backend, refine_iterations=0, **options):
    """Jitter of each projection from the network, in ``passes`` passes.

    Parameters
    ----------
    projections : ndarray, shape (angle, row, column)
        Line integrals at the resolution of steps A-C.
    theta : ndarray
        Angles in radians.
    model : torch.nn.Module
        The network (:func:`dejitter.registration.network.load_model`).
    references : ndarray, optional
        The first pass's references (steps A and B), of the kind ``leave_out`` says; computed when absent.
    passes : int
        Passes of steps A, B and the network (1: the published single pass).
    leave_out : bool
        Leave-out references (the halves' offset is then balanced out of every update) or full ones.
    mlem_iter : int
        MLEM iterations of the references.
    center : float, optional
        Rotation axis column, in pixels of ``projections``.
    backend : dejitter.reconstruction.backends.Backend
    refine_iterations : int
        Refine the estimate with this many outer iterations of reprojection alignment (0: none).
    **options
        Passed to :func:`dejitter.registration.network.predict_jitter`; ``trained_amplitude``
        flags estimates beyond the trained range.

    Returns
    -------
    shifts : ndarray, shape (angle, 2)
    quality : dict of ndarray
        ``spread`` and ``flagged`` of the last pass.
    """
    ref_kwargs = dict(n_iter=mlem_iter, center=center, backend=backend, leave_out=leave_out)
    balance = balance_halves if leave_out else (lambda update, theta: update)
    if references is None:
        references, _ = reference_projections(projections, theta, **ref_kwargs)
    shifts, quality = predict_jitter(model, projections, references, device=backend.device, **options)
    shifts = gauge(balance(shifts, theta), theta)
    for _ in range(passes - 1):
        # The network reads the projections untouched, as in training (interpolating the noisy
        # projections instead raised the error at 60 % salt-and-pepper from 1.0 to 1.7 px^2).
        corrected = correct(projections, shifts, order=1)
        references, _ = reference_projections(corrected, theta, **ref_kwargs)
        residual, quality = predict_jitter(model, projections, displace(references, shifts),
                                           device=backend.device, **options)
        shifts = gauge(shifts + balance(residual, theta), theta)
        # This pass re-estimates against sharper references: its spread, not the first pass's,
        # is the confidence of the final estimate.
    flagged = quality["flagged"]
    # Beyond the trained range, whatever pass got there: flagged, never clamped.
    if options.get("trained_amplitude") is not None:
        flagged = flagged | (np.abs(shifts).max(axis=1) > options["trained_amplitude"])
    quality["flagged"] = flagged
    if refine_iterations:
        shifts, _ = align_iterative(projections, theta, initial=shifts, levels=(1,), max_iter=refine_iterations,
                                    center=center, backend=backend)
    return shifts, quality
