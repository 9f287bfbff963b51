"""Step C: estimate each projection's jitter, with one interface for every method.

Methods (``estimate_shifts(method=...)``):

``auto`` (the default)
    The network, refined by reprojection alignment, with the classic methods beside it; the
    candidate with the best truth-free score is kept (:mod:`dejitter.registration.selection`).
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
    The residual network of :mod:`dejitter.registration.network` reads (raw, reprojection) pairs
    (:mod:`dejitter.registration.network_passes`).

The self-term (DESIGN.md): a reprojection at angle m contains a sharp copy of projection m at
zero shift, because MLEM fits that very view, and pulls registration towards zero.  Two kinds
of reference, chosen by ``leave_out``:

*leave-out* (the correlation methods)
    Angles are split into two interleaved halves, each half is reconstructed on its own, and
    every projection is compared with the reprojection of the *other* half.  Correlation is
    unwhitened (``normalization=None``).  Each half-volume sits where its own views are on
    average, which :func:`dejitter.registration.classic.balance_halves` takes out of every update.
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

import numpy as np

from .classic import align_iterative, balance_halves, center_of_mass_shifts, consistency_score, gauge, register_pairs
from .network_passes import network_shifts
from .references import MIN_ROWS_FOR_DY, default_backend, reference_projections
from .selection import estimate_auto

__all__ = ["METHODS", "estimate_shifts", "reads_leave_out"]

METHODS = ("auto", "none", "center_of_mass", "phase_correlation", "iterative", "network")


def reads_leave_out(method, trained_on="leave_out"):
    """Whether ``method`` registers against leave-out references (else against one full volume).

    The correlation methods always do; the network (alone or in ``auto``) reads the kind it was trained on,
    ``trained_on`` (``'full'`` or ``'leave_out'``: its card's ``references``).
    """
    return method not in ("network", "auto") or trained_on == "leave_out"


def estimate_shifts(projections, theta, method="iterative", *, mlem_iter=20, center=None, backend=None,
                    references=None, leave_out=None, model=None, network_passes=1, refine_iterations=0, candidates=None,
                    details=None, **options):
    """Estimate the jitter of each projection.

    Parameters
    ----------
    projections : ndarray, shape (angle, row, column)
        Line integrals at the resolution of steps A-C.
    theta : ndarray
        Angles in radians.
    method : {'auto', 'none', 'center_of_mass', 'phase_correlation', 'iterative', 'network'}
        ``auto``: the network refined by reprojection alignment, the classic methods beside it,
        and the candidate with the best truth-free score (:mod:`dejitter.registration.selection`).
    mlem_iter : int
        MLEM iterations for the references.
    center : float, optional
        Rotation axis column, in pixels of ``projections``.
    backend : dejitter.reconstruction.backends.Backend, optional
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
    candidates : dict of ndarray, optional
        ``auto``: further estimates ``{name: (angle, 2)}`` scored beside its own
        (:func:`dejitter.registration.selection.estimate_auto`).
    details : dict, optional
        ``auto``: filled with the candidates' scores, the choice and the reason.
    **options
        Passed to :func:`align_iterative` (``iterative``) or
        :func:`dejitter.registration.network.predict_jitter` (``network``, ``auto``).

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
    if method == "auto":
        shifts, quality = estimate_auto(projections, theta, model=model, network_passes=network_passes,
                                        mlem_iter=mlem_iter, center=center, backend=backend, references=references,
                                        candidates=candidates, details=details, **options)
    elif method == "none":
        shifts = np.zeros((len(theta), 2))
    elif method == "center_of_mass":
        shifts = center_of_mass_shifts(projections, theta)
    elif method == "iterative":
        shifts, _ = align_iterative(projections, theta, center=center, backend=backend, **options)
    elif method == "phase_correlation":
        if references is None:
            references, _ = reference_projections(projections, theta, **ref_kwargs)
        update = register_pairs(projections, references)
        shifts = gauge(balance_halves(update, theta) if leave_out else update, theta)
    else:
        if model is None:
            raise ValueError("method 'network' needs a model (see dejitter.registration.network.load_model)")
        shifts, quality = network_shifts(projections, theta, model, references=references, passes=network_passes,
                                         leave_out=leave_out, mlem_iter=mlem_iter, center=center, backend=backend,
                                         refine_iterations=refine_iterations, **options)
    shifts = np.asarray(shifts, dtype=np.float64)
    if not observe_dy:
        shifts[:, 1] = np.nan
    if "residual" not in quality:
        # Quality of every method on the same footing: how well each measured projection matches
        # the leave-out reprojection of the data corrected by the estimate (``auto`` scored it already).
        quality["residual"] = consistency_score(projections, theta, shifts, n_iter=mlem_iter, center=center,
                                                backend=backend)[1]
    return shifts, quality
