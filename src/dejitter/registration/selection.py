"""Step C's default, ``method='auto'``: candidate estimates, scored without the truth.

No one method wins everywhere (issue "a default that never loses to the classic methods"): the
network is fast and robust to noise but can be wrong on data unlike its training; iterative
reprojection is precise but slow to converge from far away; the centre of mass is exact for a
clean sample wholly inside the field of view and useless otherwise.  ``auto`` therefore

1. runs the network (its passes) and refines its estimate by reprojection alignment until the
   update falls below a tolerance or stops contracting (the convergence test);
2. runs iterative reprojection alignment from zero as well when the refinement did not converge
   or moved the network's estimate by more than ``trust_px`` (the network was off), or when the
   sample fills the top and bottom rows (taller than the view: unlike the network's training,
   and a wrong dy barely moves under refinement);
3. adds the centre of mass, and any estimate given beside (``candidates``: the instrument's own
   alignment shifts, where the user starts from them);
4. scores every candidate the same way, with no truth: the mismatch between each measured view
   and the leave-out reprojection of the data corrected by the candidate, in the frame of the
   view (:func:`dejitter.registration.references.measured_frame_references`, so truncation does not pull the
   score), and keeps the lowest; where the sample is wider than the view (step 6 will run) and
   other candidates score within ``TIE_SHARE`` of the lowest, those are scored again at
   ``TIE_MLEM_ITER`` MLEM iterations and the lowest of these is kept (20 iterations do not tell
   slow errors apart there);
5. where the sample is contained in the field of view (projections empty at the edges and of
   constant mass, where the centre of mass is exact up to noise) and the kept estimate's slow
   part departs from the centre of mass's by more than the latter's noise explains, replaces
   that slow part by the centre of mass's.  Measured on the real tooth scan: iterative
   reprojection drifts slowly over the angles (0.55 px^2) while the consistency score prefers it
   even to the true jitter; anchored, 0.02 px^2.  Where the sample stays inside the view from
   side to side but fills the top and bottom rows (taller than the view: its centre of mass
   moves as rows enter and leave the view), the slow part is anchored the same way to the
   estimate from the slices' mass (:func:`dejitter.registration.slice_mass.slice_mass_shifts`:
   dy from the mass profile, dx from the centre of mass of the slab every view saw;
   :mod:`dejitter.registration.anchoring`);
6. where the sample is wider than the view (no anchor holds its slow part), fits the kept
   estimate's slow modes to the reconstruction's consistency
   (:func:`dejitter.registration.slow_modes.polish_slow_modes`: Newton steps, each after the
   first from volumes reconstructed afresh and, where it points as the last one did, lengthened
   by the inverse of the share of the error the last one removed, taken back where that
   overshoots, while they move the estimate) and keeps the result
   (``<kept>_polished``) where its score over the rows and columns every view saw
   (:func:`dejitter.registration.slow_modes.region_of`: the columns less the bands of content
   that entered with the jitter, the rows less those a shift of the data filled in) is lower.
   Over the whole view those bands dominate the score: on the real I13 scan with jitter added,
   a polish fitted and judged there followed them (self-consistency error 0.06 -> 0.22 px^2);
   fitted and judged over the common region, 0.06 -> 0.05, and against the added jitter 0.20
   -> 0.11.  Salt-and-pepper noise filling the edge columns is no sample wider than the view
   (the edge columns are read after a 5 x 5 median too:
   :func:`dejitter.registration.containment.polished_components`).
7. where step 6 ran, registers that estimate a few more times with each view and its reference
   both less their Gaussian blur (:func:`dejitter.registration.interior.judge_highpass`): MLEM
   of truncated projections is wrong inside the view by a smooth function, which pulls the
   correlation peak (1.5x wider samples: 0.08-0.13 -> 0.03-0.07 px^2).  The slow modes step 6
   fitted are kept, and the result is kept where the views' residuals over the same region fall
   on average, compared view by view, both as they are and with both images high-passed alike
   (``highpass_kept``); where the sample overflows the view by far, also where the volume gets
   sharper (:mod:`dejitter.registration.focus`), which the residuals of truncated projections
   miss (``highpass_kept_by``).
8. where step 6 ran, fits the next modes of dx, k = 5..8 (periods 36 to 22.5 degrees,
   :data:`dejitter.registration.slow_modes.FASTER_MODES`), to the same consistency over the same
   region, from step 7's estimate, and keeps the result unjudged: step 7 raises those modes
   while it removes the faster error (held-out 1.5x wider and taller seed 32: k 5-8 0.127 ->
   0.159 px^2 in dx), and the region score, which does not tell their error apart, would have
   refused the polish on 4 of 11 truncated scans that it improved; it made none worse (wider and
   taller 32 0.247 -> 0.108, wider 32 0.117 -> 0.058) and lowered the real I13 scan's
   self-consistency error 0.031 -> 0.026 (``benchmarks/results/wider_diagnosis.md``).  Its scores
   are recorded (``faster_modes_*``).

On wide projections (detectors from about 400 px at the default binning) steps 1-8 run on a copy
binned to about 128 px, and the kept estimate is then refined at the resolution given, its MLEM
continuing from the volumes the search reconstructed with it (upsampled), against high-passed
references where step 7 was kept, and less the refinement's change along the modes steps 6 and 8
polished: every candidate and score costs MLEM iterations that grow as columns^2 x rows x angles.

Every candidate's score, the choice and the reason are returned for ``registration.json``,
``summary.tsv`` and the QC figure.
"""

from __future__ import annotations

import logging

import numpy as np

from ..binning import (FINE_FIRST_MLEM_ITER, FINE_MAX_ITER, FINE_WARM_MLEM_ITER, SEARCH_WIDTH, bin_projections,
                       row_binning, search_factor)
from .classic import (STALL, align_iterative, alignment_residual, center_of_mass_shifts, consistency_score,
                      level_converged)
from .anchoring import anchor_estimate
from .containment import fills_rows, is_contained, polished_components
from .interior import highpass_change_text, highpass_sigma, judge_highpass
from .network_passes import network_shifts
from .references import MIN_ROWS_FOR_DY, canvas_margins, upsample_state
from .slow_modes import FASTER_MODES, judge_polish, without_mode_change

__all__ = ["estimate_auto"]

log = logging.getLogger("dejitter")

#: Where the sample is wider than the view (step 6 will run), candidates whose consistency scores
#: are within this share of the lowest are scored again at ``TIE_MLEM_ITER`` MLEM iterations:
#: 20 iterations do not tell slow errors apart there (held-out 1.5x wider and taller seed 30: the
#: refined network 0.24 px^2 and iterative 0.92 scored 0.06779 and 0.06774, at 60 iterations
#: 0.04298 and 0.04377, the truth 0.0419).
TIE_SHARE = 0.01
TIE_MLEM_ITER = 60
#: Binning levels of the refinement at the given resolution (coarse to fine); its iterations and
#: first MLEM iterations are :data:`dejitter.binning.FINE_MAX_ITER` and ``FINE_FIRST_MLEM_ITER``
#: (beside ``SEARCH_WIDTH``, where the workflow's run-time requests read them without torch).
FINE_LEVELS = (1,)


def _break_tie(projections, theta, candidates, names, state, *, mlem_iter, center, backend):
    """Score the tied candidates ``names`` deeper, at :data:`TIE_MLEM_ITER` MLEM iterations.

    The first of ``names`` is the chosen one, whose ``state`` (after ``mlem_iter`` iterations)
    MLEM continues; the others' volumes were not kept (memory) and start afresh.

    Returns the lowest's name and MLEM state, and the deeper scores by name.
    """
    deeper, states = {}, {}
    for name in names:
        warm, n_iter = (state, max(TIE_MLEM_ITER - mlem_iter, 1)) if name == names[0] else (None, TIE_MLEM_ITER)
        score, _, states[name] = consistency_score(projections, theta, candidates[name], n_iter=n_iter, center=center,
                                                   backend=backend, return_state=True, warm_start=warm)
        deeper[name] = round(score, 6)
    best = min(deeper, key=deeper.get)
    return best, states[best], deeper


def estimate_auto(projections, theta, *, model=None, network_passes=2, trust_px=1.0, refine_max_iter=8,
                  mlem_iter=20, center=None, backend=None, references=None, candidates=None, details=None,
                  search_width=SEARCH_WIDTH, slow_modes=True, **network_options):
    """The default estimate: network, refinement, classic candidates, truth-free selection.

    Projections wider than 1.5 x ``search_width`` columns are searched binned
    (:func:`dejitter.binning.search_factor`): the candidates and their scores at about
    ``search_width`` columns, then the kept estimate is refined by reprojection alignment at
    the given resolution (at most :data:`~dejitter.binning.FINE_MAX_ITER` iterations,
    until its update stops contracting; its first references continue MLEM from the volumes of
    the kept estimate's score, upsampled, where the binning leaves no remainder) and, where the
    centre of mass anchored it, anchored again at that resolution.

    Parameters
    ----------
    projections : ndarray, shape (angle, row, column)
        Line integrals at the resolution of steps A-C.
    theta : ndarray
        Angles in radians.
    model : torch.nn.Module, optional
        The network; without one the network candidates are skipped.
    network_passes : int
        Passes of the network (see :func:`dejitter.registration.estimate_shifts`).
    trust_px : float
        Also run iterative alignment from zero when the refinement moved the network's estimate
        by more than this RMS (pixels of ``projections``) or did not converge.
    refine_max_iter : int
        Iterations of refinement at most, per level.
    mlem_iter : int
        MLEM iterations of the references and of the score.
    center, backend, references
        As in :func:`dejitter.registration.estimate_shifts`; ``references`` are the network's
        (steps A and B of the workflow, of the kind its card records), at the resolution given or
        at that of the search (:func:`dejitter.binning.reference_binning`, as the workflow
        makes them).
    candidates : dict of ndarray, optional
        Further estimates ``{name: (angle, 2)}`` in pixels of ``projections``, scored like the
        others (e.g. ``{"instrument": zeros}`` for projections already corrected by the
        instrument's alignment shifts: the refinements above then start from those shifts).
    details : dict, optional
        Filled with the candidates' scores, the choice and the reason (and ``search_binning``,
        ``fine_refinement_updates``, ``fine_refinement_warm_start`` where the search ran binned).
    search_width : int, optional
        Columns of the search (``None``: search at the given resolution).
    slow_modes : bool
        Steps 6-8 (on by default; 40-250 s more per wider scan at 64 binned columns and 181 angles
        on 2 cores for step 6, up to :data:`~dejitter.registration.slow_modes.MAX_ROUNDS` Newton
        steps of 15-35 s depending on the machine's day, and 13-27 s for step 8; both fitted on at
        most :data:`~dejitter.registration.slow_modes.POLISH_MAX_ANGLES` angles).
    **network_options
        Passed to :func:`dejitter.registration.network.predict_jitter`.

    Returns
    -------
    shifts : ndarray, shape (angle, 2)
    quality : dict of ndarray
        ``residual`` (of the chosen estimate), and ``spread``/``flagged`` from the network.
    """
    theta = np.asarray(theta)
    details = {} if details is None else details
    factor = search_factor(projections.shape[2], search_width)
    options = dict(model=model, network_passes=network_passes, trust_px=trust_px, refine_max_iter=refine_max_iter,
                   mlem_iter=mlem_iter, backend=backend, slow_modes=slow_modes, **network_options)
    if factor == 1:
        return _search(projections, theta, center=center, references=references, candidates=candidates,
                       details=details, **options)[:2]
    coarse, row_factor = bin_projections(projections, factor, row_binning(factor, projections.shape[1]))
    scale = np.array([factor, row_factor], dtype=np.float64)
    coarse_center = None if center is None else (center - (factor - 1) / 2) / factor
    coarse_references = references
    if references is not None and references.shape != coarse.shape:
        # Made at the given resolution (steps A and B make them at the search's: reference_binning).
        coarse_references = bin_projections(references, factor, row_factor)[0]
    coarse_candidates = {name: np.asarray(shifts, float) / scale for name, shifts in (candidates or {}).items()}
    shifts, quality, coarse_state = _search(coarse, theta, center=coarse_center, references=coarse_references,
                                            candidates=coarse_candidates, details=details, **options)
    # Continue MLEM from the search's volumes where the binned grid maps onto the given one exactly.
    exact = projections.shape[1] % row_factor == 0 and projections.shape[2] % factor == 0
    warm = None
    if exact:
        warm = upsample_state(coarse_state, factor, row_factor, canvas_margins(shifts * scale, *projections.shape[1:]))
    del coarse_state
    updates = []
    searched = shifts * scale
    # Where step 7 was kept, the plain registration would bring back the pull of the references'
    # smooth error that it removed: the refinement compares high-passed images too.
    highpass = highpass_sigma(projections.shape[2]) if details.get("highpass_kept") else None
    shifts, final_references = align_iterative(
        projections, theta, initial=searched, levels=FINE_LEVELS, max_iter=FINE_MAX_ITER, stall=STALL,
        first_mlem_iter=FINE_WARM_MLEM_ITER if exact else FINE_FIRST_MLEM_ITER, warm_start=warm, center=center,
        highpass=highpass, backend=backend, callback=lambda level, it, rms: updates.append(round(rms, 4)))
    evidence = {key: details[f"contained_{key}"]
                for key in ("edge_share", "filtered_edge_share", "row_edge_share", "mass_variation")}
    # Registration would bring back the slow error the search's polishes removed (steps 6 and 8).
    if details["selected"].endswith("_polished"):
        shifts = without_mode_change(shifts, searched, theta, components=polished_components(coarse, evidence))
    if details.get("faster_modes_region_score_after") is not None:
        shifts = without_mode_change(shifts, searched, theta, modes=FASTER_MODES)
    # The refinement may bring back slow drift the search's anchor removed, or drift from a kept centre of
    # mass (2048 x 2048 x 181: the centre of mass 0.002 px^2 at this resolution, refined 0.071, anchored
    # 0.010): the anchor is tested afresh here, on the search's evidence of containment.
    shifts, anchor = anchor_estimate(projections, theta, shifts, evidence)
    if anchor:
        details[f"anchored_to_{anchor}"] = True
    if projections.shape[1] < MIN_ROWS_FOR_DY:
        shifts[:, 1] = np.nan
    quality["residual"] = alignment_residual(projections, final_references)
    details.update({"search_binning": factor, "fine_refinement_updates": updates, "fine_refinement_warm_start": exact,
                    "fine_refinement_highpass_sigma_px": highpass and round(highpass, 3)})
    log.info("auto: searched at binning %d, refined at the given resolution: rms updates %s", factor, updates)
    return shifts, quality


def _search(projections, theta, *, model, network_passes, trust_px, refine_max_iter, mlem_iter, center, backend,
            references, candidates, details, slow_modes, **network_options):
    """:func:`estimate_auto` at the resolution it is given (its steps 1-8).

    Returns the estimate, its quality and the MLEM state of its score's references (the volumes
    reconstructed with it, from which a refinement at a finer level continues).
    """
    given = candidates
    candidates, quality, scores, residuals = {}, {}, {}, {}
    converged = None
    contained, evidence = is_contained(projections)
    # A sample that fills the top and bottom rows (taller than the view) is unlike the network's
    # training, and a wrong dy moves slowly under refinement (whose damped updates the convergence
    # test may take for convergence): iterative alignment from zero runs beside it.
    rows_filled = fills_rows(projections, evidence)
    if model is not None:
        leave_out = getattr(model, "references", "leave_out") == "leave_out"
        network, quality = network_shifts(projections, theta, model, references=references, passes=network_passes,
                                          leave_out=leave_out, mlem_iter=mlem_iter, center=center, backend=backend,
                                          **network_options)
        candidates["network"] = network
        history = []
        refined, _ = align_iterative(projections, theta, initial=network, levels=(2, 1), max_iter=refine_max_iter,
                                     center=center, backend=backend,
                                     callback=lambda level, it, rms: history.append((level, rms)))
        candidates["network_refined"] = refined
        final = [rms for level, rms in history if level == 1]
        converged = bool(final) and history[-1][0] == 1 and level_converged(final, 0.02) and final[-1] < 0.1
        moved = float(np.sqrt(np.mean(np.sum(np.nan_to_num(refined - network) ** 2, axis=1))))
        details["refinement_moved_px"] = round(moved, 4)
        details["refinement_converged"] = converged
    why = [reason for reason, applies in (
        ("no network", model is None), ("refinement did not converge", model is not None and not converged),
        ("refinement moved the network's estimate by more than trust_px",
         model is not None and details["refinement_moved_px"] > trust_px),
        ("sample fills the top and bottom rows", rows_filled)) if applies]
    details["iterative_from_zero"] = "; ".join(why) if why else False
    if why:
        candidates["iterative"], _ = align_iterative(projections, theta, center=center, backend=backend)
    com = center_of_mass_shifts(projections, theta)
    candidates["center_of_mass"] = com
    for name, shifts in (given or {}).items():
        candidates[name] = np.array(shifts, dtype=np.float64)
    if projections.shape[1] < MIN_ROWS_FOR_DY:
        for shifts in candidates.values():
            shifts[:, 1] = np.nan
    chosen = state = None
    for name, shifts in candidates.items():
        scores[name], residuals[name], candidate_state = consistency_score(
            projections, theta, shifts, n_iter=mlem_iter, center=center, backend=backend, return_state=True)
        # Only the lowest-scoring candidate's volumes are kept (the first of equal scores, as min() picks).
        if chosen is None or scores[name] < scores[chosen]:
            chosen, state = name, candidate_state
        del candidate_state
    reason = f"lowest consistency score ({scores[chosen]:.4g})"
    polished = slow_modes and polished_components(projections, evidence)
    tied = [name for name in scores if name != chosen and scores[name] <= scores[chosen] * (1 + TIE_SHARE)]
    if polished and tied:
        chosen, state, deeper = _break_tie(projections, theta, candidates, [chosen] + tied, state,
                                           mlem_iter=mlem_iter, center=center, backend=backend)
        details.update({f"tie_score_{name}": score for name, score in deeper.items()})
        reason = (f"consistency scores within {TIE_SHARE:.0%} of each other, "
                  f"{', '.join(f'{name} {score:.4g}' for name, score in deeper.items())} at {TIE_MLEM_ITER} "
                  f"MLEM iterations: the lowest")
    shifts = np.array(candidates[chosen], dtype=np.float64)
    shifts, anchor = anchor_estimate(projections, theta, shifts, evidence)
    if anchor == "slice_mass":
        reason += "; sample inside the view from side to side but taller than it, and the slow drift departs " \
                  "from the slices' mass: slow part anchored to it"
    elif anchor == "center_of_mass":
        reason += "; sample inside the field of view and its slow drift departs from the centre of mass: " \
                  "slow part anchored to the centre of mass"
    if anchor:
        _, residuals[chosen], state = consistency_score(projections, theta, shifts, n_iter=mlem_iter,
                                                        center=center, backend=backend, return_state=True)
    if polished:
        candidate, judged = judge_polish(projections, theta, shifts, components=polished, warm_start=state,
                                         n_iter=mlem_iter, center=center, backend=backend)
        details.update(judged["details"])
        if candidate is not None:
            name = f"{chosen}_polished"
            scores[name], residuals[name] = judged["score"], judged["residual"]
            if judged["kept"]:
                before, after = details["slow_modes_region_score_before"], details["slow_modes_region_score_after"]
                reason += (f"; sample wider than the view: slow modes ({'dx, dy' if polished[1] else 'dx'}) "
                           f"polished against the reconstruction's consistency, score over the region every "
                           f"view saw {before:.4g} -> {after:.4g}")
                chosen, shifts, state = name, candidate, judged["state"]
        del judged  # the polished volumes, where not kept
        candidate, judged = judge_highpass(projections, theta, shifts, components=polished, warm_start=state,
                                           n_iter=mlem_iter, edge_share=evidence["filtered_edge_share"],
                                           center=center, backend=backend)
        details.update(judged["details"])
        if judged["kept"]:
            reason += (f"; registered again against high-passed references (their smooth error from the "
                       f"truncation left out), {highpass_change_text(details)}")
            shifts, state, residuals[chosen] = candidate, judged["state"], judged["residual"]
        del judged
        # Step 8, kept unjudged: the region score would have refused it on 4 of 11 truncated scans, all of
        # which it improved (and it made none worse; benchmarks/results/wider_diagnosis.md).
        candidate, judged = judge_polish(projections, theta, shifts, components=(True, False), modes=FASTER_MODES,
                                         warm_start=state, n_iter=mlem_iter, prefix="faster_modes", center=center,
                                         backend=backend)
        details.update(judged["details"])
        if candidate is not None:
            first, last = FASTER_MODES
            reason += (f"; dx modes k {first}-{last} polished after that, score over the region every view saw "
                       f"{details['faster_modes_region_score_before']:.4g} -> "
                       f"{details['faster_modes_region_score_after']:.4g} (kept either way)")
            shifts, state, residuals[chosen] = candidate, judged["state"], judged["residual"]
        del judged
    log.info("auto: candidates %s; chose %s (%s)", {k: round(v, 4) for k, v in scores.items()}, chosen, reason)
    details.update({"selected": chosen, "selection_reason": reason,
                    "anchored_to_center_of_mass": anchor == "center_of_mass", "anchored_to_slice_mass": anchor == "slice_mass",
                    "contained": contained, **{f"contained_{k}": round(v, 5) for k, v in evidence.items()},
                    **{f"score_{k}": round(v, 6) for k, v in scores.items()}})
    quality["residual"] = residuals[chosen]
    if chosen != "network":
        # The network's flags speak of its own estimate; the chosen one is flagged by its residual.
        quality.pop("flagged", None)
    return shifts, quality, state
