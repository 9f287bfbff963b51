"""The slow modes of a jitter estimate, fitted to the consistency of the reconstruction.

Where the sample is wider than the view, reprojection alignment converges to an estimate whose
error varies slowly over the angles (``benchmarks/results/wider_diagnosis.md``): content beyond
the detector's edges is seen only by views near one angle, whose references share their error, so
registering each view to its reference (the reference held fixed) leaves a slow error almost no
restoring force.  The reconstruction as a whole does notice it: the leave-out residual of the data
corrected by the true jitter is lower than that of the converged estimate (the 1.5x wider sample
of ``bench_default.py``, MLEM 60 iterations: 0.031 against 0.039).  Modes of period 180 / k
degrees (``cos 2k theta, sin 2k theta``, k = 1..4) hold most of that error (the two slowest
0.12 of its 0.19 px^2 in dx on that scan), so :func:`polish_slow_modes` fits their
coefficients to that residual directly, each trial reconstructing again, which registration
alone cannot do.
"""

from __future__ import annotations

import logging

import numpy as np

from .classic import alignment_residual, consistency_score
from .references import common_region, filled_edge_bands, measured_frame_references

__all__ = ["slow_mode_basis", "region_of", "polish_slow_modes", "judge_polish", "polish_angles",
           "without_mode_change", "N_MODES", "SLOW_MODES", "FASTER_MODES", "POLISH_MAX_ANGLES", "MAX_ROUNDS",
           "MIN_STEP_PX", "MAX_AMPLIFICATION", "MIN_COSINE"]

log = logging.getLogger("dejitter")

#: Modes per component: periods 180 / k degrees, k = 1..N_MODES.  Measured with ``auto`` on the
#: 1.5x wider / wider and taller samples of ``bench_default.py`` (px^2, 2 cores): two modes and
#: ``trial_iter`` 10, 0.106 / 0.100 in 100 / 81 s; three and 6, 0.096 / 0.095 in 84 / 84 s;
#: four and 6, 0.093 / 0.080 in 98 / 92 s (three and 10: 0.094 / 0.090 in 118 / 130 s).
N_MODES = 4
#: The modes of step 6, ``(first k, last k)``.
SLOW_MODES = (1, N_MODES)
#: The modes of step 8, fitted in dx after step 7, which raises them while it removes the faster
#: error: on held-out 1.5x wider and taller seed 32 the error of ``auto``'s estimate in dx was
#: 0.016 px^2 in k 1-4, 0.159 in k 5-8 (0.127 before step 7) and 0.012 in k 9-12.  Polished
#: after step 7 (twenty-second session, ``benchmarks/results/wider_diagnosis.md``): wider and
#: taller 32 0.247 -> 0.108, wider 32 0.117 -> 0.058, and no scan of 11 truncated ones worse.
#: k 1-8 together did better on the synthetic scans but followed the real I13 scan's own drift
#: (self-consistency 0.031 -> 0.041 px^2; k 5-8: 0.026).
FASTER_MODES = (5, 8)
#: Step 6 fits the modes on at most this many angles, evenly spread: the modes vary slowly over
#: the angles, and each of its reconstructions (about 70 with dx and dy) costs in proportion to them.
POLISH_MAX_ANGLES = 181
#: Newton steps of step 6 at most, the RMS step (pixels) under which it stops, and the MLEM
#: iterations of each later step's fresh volumes.  Measured from the network's refined estimate
#: of held-out 1.5x wider and taller seed 32 (px^2, 2 cores, 35 s a step at 64 binned columns
#: and 181 angles on a slow day, about 15 s on a fast one): 1.79 -> 1.31, 0.98, 0.76, 0.59,
#: 0.49 after plain steps 1-5.  A stop at 0.05 px ended wider and taller seed 30 after one step
#: of 0.045 px (whole ``auto`` 0.197 px^2); at 0.02, 0.152 (wider seed 30 0.052 -> 0.036;
#: ``benchmarks/results/wider_diagnosis.md``).
MAX_ROUNDS = 5
MIN_STEP_PX = 0.02
ROUND_MLEM_ITER = 60
#: The most a later Newton step is lengthened, and the cosine of the angle between it and the
#: step before under which it is not.  Plain steps shrink by a steady share once they point the
#: same way (the cosines of the successive steps of held-out 1.5x wider and taller seed 32 from
#: step 6's input: 0.71, 0.85, 0.96, 0.96), so a step that points as the last one did is
#: lengthened by the inverse of the share the last one removed (a secant of the last two steps),
#: at most this much; one whose next fresh objective rises is taken back (see polish_slow_modes).
#: Step 6's output there 0.49 -> 0.38 px^2 (any cosine: 0.41).  Lengthening steps that turned
#: followed the real I13 scan's own drift: through the workflow at binning 3, the estimates on
#: the scan and on its jittered copy disagreed by 0.106 px^2 (cosine 0.95: 0.078; plain 0.065).
MAX_AMPLIFICATION = 3.0
MIN_COSINE = 0.95


def slow_mode_basis(theta, modes=SLOW_MODES):
    """``cos 2k theta, sin 2k theta`` for ``k`` from ``modes[0]`` to ``modes[1]``, shape (angle, 2 x modes).

    Periods of 180 / k degrees: the orbit of rigid motion (period 360) is not among them, the
    gauge (:func:`dejitter.registration.classic.gauge`) and the metric remove it anyway.
    """
    theta = np.asarray(theta, dtype=np.float64)
    first, last = modes
    return np.stack([f(2 * k * theta) for k in range(first, last + 1) for f in (np.cos, np.sin)], axis=1)


def region_of(projections, shifts):
    """The rows and columns step 6 compares: :func:`~dejitter.registration.references.common_region`.

    Of ``shifts``, less the bands a shift of the data filled in
    (:func:`~dejitter.registration.references.filled_edge_bands` of ``projections``).
    """
    return common_region(shifts, *projections.shape[1:], filled=filled_edge_bands(projections))


def _apply(shifts, basis, coefficients, components):
    out = np.array(shifts, dtype=np.float64)
    n = basis.shape[1]
    for i, column in enumerate(np.flatnonzero(components)):
        out[:, column] += basis @ coefficients[i * n:(i + 1) * n]
    return out


def polish_slow_modes(projections, theta, shifts, *, components=(True, False), modes=SLOW_MODES, warm_start=None,
                      start_iter=10, round_iter=ROUND_MLEM_ITER, trial_iter=6, probe_px=0.3, max_step_px=1.5,
                      max_rounds=MAX_ROUNDS, min_step_px=MIN_STEP_PX, max_amplification=MAX_AMPLIFICATION,
                      min_cosine=MIN_COSINE, region=None, center=None, backend=None):
    """Add to ``shifts`` the slow modes that make the leave-out residual lowest (Newton steps).

    The objective is the mean over angles of the residual between each measured view and the
    leave-out reprojection of the data corrected by a trial estimate
    (:func:`~dejitter.registration.references.measured_frame_references`), over the rows and
    columns that every view saw (:func:`~dejitter.registration.references.common_region` of
    ``shifts``: the bands of content entering with the jitter otherwise dominate it and the
    fit follows them, measured on the real I13 scan with jitter added), every trial continuing
    MLEM for ``trial_iter`` iterations from the same volumes (those of ``shifts``), so that the
    objective is a smooth function of the coefficients.  It is probed at ``+-probe_px`` along
    each mode and modelled as a quadratic with a diagonal Hessian; along the step to the model's
    minimum (at most ``max_step_px`` long) it is tried at half and all of the step and at the
    vertex of the parabola through these, and the lowest of all (or no change) is kept.

    Volumes continued from those of an estimate remember it: trials from them prefer small
    changes, and a step falls short of the objective's true minimum (the held-out 1.5x wider and
    taller seed 32: the whole fit of the modes to the true error raised the trial objective,
    while a fresh reconstruction at the truth is 7 % more consistent).  Every step after the first
    therefore reconstructs afresh at the new estimate (``round_iter`` MLEM iterations from a
    uniform volume), and steps follow while the last one moved the estimate by at least
    ``min_step_px`` (RMS over the angles), at most ``max_rounds`` steps.  The gain of a step in the
    objective is no stopping rule: it is biased low the same way (0.2-0.6 % a step there while
    the error fell 1.79 -> 0.49 px^2 in five plain steps).

    Once those steps point the same way, each removes about the same share of the error left, so
    a step whose direction is within ``arccos(min_cosine)`` of the last one's is lengthened by the
    inverse of the share the last one removed (if the last step ``s`` was taken ``a`` times and
    this one is ``t``, the share is ``(1 - <t, s> / |s|^2) / a``), at most ``max_amplification``
    times; not where the step turned, reversed (``<t, s> <= 0``) or is the last allowed one.  The
    next step's fresh objective checks a lengthened step: where it rose above the fresh objective
    before it, the step is taken back to its plain length and no later step is lengthened.

    Parameters
    ----------
    projections : ndarray, shape (angle, row, column)
        Measured line integrals (binned as for steps A-C).
    theta : ndarray
        Angles in radians.
    shifts : ndarray, shape (angle, 2)
        The estimate to polish, in pixels of ``projections``.
    components : (bool, bool)
        Which of dx, dy get modes (dy where the sample fills the top and bottom rows: there its
        slow error is as large as dx's).
    modes : (int, int)
        The first and last ``k`` of the modes of each component (:func:`slow_mode_basis`).
    warm_start : tuple, optional
        MLEM state of references made with ``shifts`` (e.g. of their consistency score), from
        which the first step's volumes continue; default: a uniform volume.
    start_iter, round_iter, trial_iter : int
        MLEM iterations of the first step's volumes (from ``warm_start``), of every later step's
        (from a uniform volume), and of each trial from them.
    probe_px, max_step_px : float
        Probe step and largest step (norm of the coefficients), pixels of ``projections``.
    max_rounds : int
        Newton steps at most.
    min_step_px : float
        Another step only after one that moved the estimate by at least this RMS (pixels).
    max_amplification : float
        The most a step is lengthened (1: plain Newton steps).
    min_cosine : float
        A step is lengthened only where the cosine of its angle to the last step is at least this.
    region : (slice, slice), optional
        Rows and columns of the objective; default :func:`region_of` ``shifts``.
    center, backend
        As in :func:`~dejitter.registration.references.measured_frame_references`.

    Returns
    -------
    shifts : ndarray, shape (angle, 2)
        Polished, or ``shifts`` unchanged where no step lowered the objective.
    info : dict
        ``objective_before`` (of the first step), ``objective_after`` (of the last step taken),
        ``coefficients`` (px, dx modes then dy modes, summed over the steps), ``rounds``,
        ``trials`` (reconstructions), ``steps_px`` (RMS of each step as taken) and
        ``amplifications`` (of each step; 0 marks a round that took the last step back).
    """
    theta = np.asarray(theta)
    given = np.asarray(shifts, dtype=np.float64)
    shifts = np.nan_to_num(given)
    components = np.asarray(components, dtype=bool)
    basis = slow_mode_basis(theta, modes)
    total = np.zeros(basis.shape[1] * int(components.sum()))
    rounds, previous = [], None
    region = region_of(projections, shifts) if region is None else region
    for index in range(max_rounds):
        # The first step continues the volumes it is given; later ones start afresh (see above).
        first = index == 0
        _, state = measured_frame_references(projections, theta, shifts, n_iter=start_iter if first else round_iter,
                                             warm_start=warm_start if first else None, center=center,
                                             backend=backend)
        # Continued volumes favour their estimate: the first step's objective compares with no fresh one.
        fresh = np.inf if first else _trial_objective(projections, theta, shifts, state, trial_iter, center,
                                                      backend, region)
        if previous is not None and previous["amplification"] > 1 and fresh > previous["fresh_objective"]:
            # The lengthened step overshot: back to its plain length, and no more lengthening.
            shifts = previous["start"] + _apply(np.zeros_like(shifts), basis, previous["step"], components)
            total += (1 - previous["amplification"]) * previous["step"]
            max_amplification = 1.0
            previous["amplification"] = 1.0
            rounds.append({"objective_before": fresh, "objective_after": fresh, "trials": 1, "step_px": 0.0,
                           "amplification": 0.0})
            continue
        step, before, after, trials = _newton_round(projections, theta, shifts, basis, components, state,
                                                    trial_iter, probe_px, max_step_px, center, backend, region,
                                                    before=None if first else fresh)
        del state
        plain_rms = _rms(_apply(np.zeros_like(shifts), basis, step, components))
        last = index == max_rounds - 1 or plain_rms < min_step_px
        amplification = (1.0 if last or previous is None
                         else _amplification(step, previous, max_amplification, min_cosine))
        rounds.append({"objective_before": before, "objective_after": after, "trials": trials + (not first),
                       "step_px": plain_rms * amplification, "amplification": amplification})
        previous = {"start": shifts, "step": step, "amplification": amplification, "fresh_objective": fresh}
        shifts = shifts + _apply(np.zeros_like(shifts), basis, amplification * step, components)
        total += amplification * step
        if plain_rms < min_step_px:
            break
    stepped = [r for r in rounds if r["amplification"]]  # a round that took a step back evaluated no step
    info = {"objective_before": rounds[0]["objective_before"], "objective_after": stepped[-1]["objective_after"],
            "coefficients": [float(c) for c in total], "rounds": len(rounds),
            "trials": sum(r["trials"] for r in rounds), "steps_px": [round(r["step_px"], 4) for r in rounds],
            "amplifications": [round(r["amplification"], 3) for r in rounds]}
    log.info("slow modes: objective %.5g -> %.5g in %d rounds (steps %s px, lengthened %s), coefficients %s",
             info["objective_before"], info["objective_after"], info["rounds"], info["steps_px"],
             info["amplifications"], np.round(info["coefficients"], 4).tolist())
    # An unobservable dy (NaN, two-row detectors) stays unobservable: the trials count it as 0.
    return np.where(np.isnan(given), np.nan, shifts), info


def _rms(moved):
    return float(np.sqrt(np.mean(np.sum(moved ** 2, axis=1))))


def _amplification(step, previous, max_amplification, min_cosine):
    """How much to lengthen ``step``: the inverse of the share of the error the last step removed.

    If each plain step is a share ``r`` of the error left and the last one ``s`` was taken ``a``
    times, this one is ``t = (1 - a r) s``: ``r = (1 - <t, s> / |s|^2) / a``.  That model holds
    only where ``t`` points as ``s`` did (cosine at least ``min_cosine``).
    """
    last = previous["step"]
    lengths = float(np.linalg.norm(last) * np.linalg.norm(step))
    if lengths == 0 or float(step @ last) / lengths < min_cosine:  # no step, or the steps turned
        return 1.0
    along = float(step @ last) / float(last @ last)
    share = (1.0 - along) / previous["amplification"]
    if along <= 0 or share <= 0:  # the step reversed (an overshoot), or did not shrink: no model
        return 1.0
    return float(np.clip(1.0 / share, 1.0, max_amplification))


def _trial_objective(projections, theta, shifts, state, trial_iter, center, backend, region):
    """The objective of :func:`polish_slow_modes` at ``shifts``, MLEM continuing from ``state``."""
    references, _ = measured_frame_references(projections, theta, shifts, n_iter=trial_iter, warm_start=state,
                                              center=center, backend=backend)
    return float(alignment_residual(projections[:, region[0], region[1]],
                                    references[:, region[0], region[1]]).mean())


def _newton_round(projections, theta, shifts, basis, components, state, trial_iter, probe_px, max_step_px, center,
                  backend, region, before=None):
    """One step of :func:`polish_slow_modes` from ``shifts``: ``(coefficients, before, after, trials)``.

    ``before``: the objective at ``shifts`` where the caller has it already.
    """
    trials = []

    def objective(coefficients):
        trials.append(_trial_objective(projections, theta, _apply(shifts, basis, coefficients, components), state,
                                       trial_iter, center, backend, region))
        return trials[-1]

    n = basis.shape[1] * int(components.sum())
    zero = np.zeros(n)
    before = objective(zero) if before is None else before
    gradient, curvature = np.zeros(n), np.zeros(n)
    for i in range(n):
        probe = zero.copy()
        probe[i] = probe_px
        up = objective(probe)
        probe[i] = -probe_px
        down = objective(probe)
        gradient[i] = (up - down) / (2 * probe_px)
        curvature[i] = (up - 2 * before + down) / probe_px ** 2
    # A mode along which the objective is not convex gives no step (the quadratic has no minimum there).
    step = np.where(curvature > 0, -gradient / np.where(curvature > 0, curvature, 1.0), 0.0)
    norm = float(np.linalg.norm(step))
    if norm > max_step_px:
        step *= max_step_px / norm
    # Along the model's step, the parabola through 0, half and all of it: the diagonal model
    # misjudges the length of the step (2x on a 40 px test scan) more than its direction.
    tried = {0.0: before, 0.5: objective(0.5 * step), 1.0: objective(step)}
    bend = tried[1.0] - 2 * tried[0.5] + tried[0.0]
    if bend > 0:
        vertex = float(np.clip(0.5 - (tried[1.0] - tried[0.0]) / (4 * bend), 0.0, 2.0))
        if min(abs(vertex - t) for t in tried) > 0.1:
            tried[vertex] = objective(vertex * step)
    fraction = min(tried, key=tried.get)
    return fraction * step, before, tried[fraction], len(trials)


def polish_angles(theta, max_angles=POLISH_MAX_ANGLES):
    """Indices of at most ``max_angles`` angles evenly spread over ``theta``, in acquisition order."""
    theta = np.asarray(theta)
    if len(theta) <= max_angles:
        return np.arange(len(theta))
    order = np.argsort(theta, kind="stable")
    return np.sort(order[np.round(np.linspace(0, len(theta) - 1, max_angles)).astype(int)])


def judge_polish(projections, theta, shifts, *, components, modes=SLOW_MODES, warm_start=None, n_iter=20,
                 max_angles=POLISH_MAX_ANGLES, prefix="slow_modes", center=None, backend=None):
    """Steps 6 and 8 of ``auto``: :func:`polish_slow_modes`, and whether its result beats ``shifts``.

    The modes are fitted on at most ``max_angles`` angles (:func:`polish_angles`; the MLEM
    volumes of ``warm_start`` serve the subset as well) and applied to all of them; the result is
    judged on all angles by the consistency score over the rows and columns every view saw
    (:func:`region_of`, as the polish fitted them): over the whole view the bands of content
    entering with the jitter dominate both scores.  The keys of ``details`` start with ``prefix``.

    Returns
    -------
    candidate : ndarray or None
        The polished estimate (``None`` where the polish changed nothing).
    judged : dict
        ``details`` (the polish's modes, objective and the region scores, for
        ``registration.json``), and with a candidate its whole-view ``score``, per-view
        ``residual``, MLEM ``state`` and whether it is ``kept`` (its region score is lower).
    """
    theta, shifts = np.asarray(theta), np.asarray(shifts, dtype=np.float64)
    region = region_of(projections, shifts)
    subset = polish_angles(theta, max_angles)
    candidate, info = polish_slow_modes(projections[subset], theta[subset], shifts[subset], components=components,
                                        modes=modes, warm_start=warm_start, region=region, center=center,
                                        backend=backend)
    if len(subset) < len(theta):
        candidate = np.where(np.isnan(shifts), np.nan, _apply(np.nan_to_num(shifts), slow_mode_basis(theta, modes),
                                                              np.asarray(info["coefficients"]), components))
    details = {"k": list(modes), "angles": len(subset), "objective_before": round(info["objective_before"], 6),
               "objective_after": round(info["objective_after"], 6), "steps_px": info["steps_px"],
               "amplifications": info["amplifications"],
               # [first row, end row, first column, end column] of the binned projections compared.
               "region": [region[0].start, region[0].stop, region[1].start, region[1].stop]}
    details = {f"{prefix}_{key}": value for key, value in details.items()}
    if not any(info["coefficients"]):
        return None, {"details": details}
    before, _ = consistency_score(projections, theta, shifts, n_iter=n_iter, center=center, backend=backend,
                                  region=region)
    # One reconstruction of the candidate for both of its scores (whole view, and the region).
    references, state = measured_frame_references(projections, theta, candidate, n_iter=n_iter, center=center,
                                                  backend=backend)
    residual = alignment_residual(projections, references)
    after = float(np.median(alignment_residual(projections[:, region[0], region[1]],
                                               references[:, region[0], region[1]])))
    details.update({f"{prefix}_region_score_before": round(before, 6), f"{prefix}_region_score_after": round(after, 6)})
    return candidate, {"details": details, "score": float(np.median(residual)), "residual": residual,
                       "state": state, "kept": after < before}


def without_mode_change(refined, initial, theta, *, components=(True, False), modes=SLOW_MODES):
    """``refined`` less its change from ``initial`` along the slow modes ``modes`` (first, last k).

    A refinement by reprojection alignment after :func:`polish_slow_modes` would bring back the
    slow error the polish removed: its update along the polished modes is removed, the rest kept.
    """
    basis = slow_mode_basis(theta, modes)
    out = np.array(refined, dtype=np.float64)
    change = np.nan_to_num(out - np.asarray(initial, dtype=np.float64))
    for column in np.flatnonzero(np.asarray(components, dtype=bool)):
        coefficients, *_ = np.linalg.lstsq(basis, change[:, column], rcond=None)
        out[:, column] -= basis @ coefficients
    return out
