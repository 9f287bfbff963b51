"""Step 7 of ``auto``: the estimate registered again against high-passed references.

Where the sample is wider than the view, every projection is truncated, and MLEM of truncated
projections is wrong inside the field of view by a function that varies slowly across it (the
interior problem: truncated data fix the slice there only up to such a function).  The references
reprojected from it carry that smooth error, and a smooth difference between a view and its
reference moves the cross-correlation peak.  On the 1.5x wider and taller sample of
``bench_truncated_seeds.py`` (seed 25), one registration step at the true jitter moved views 40-50
by 0.39 px on average (0.074 px^2 over all views; dropping 8 or 16 edge columns from the
comparison: 0.094, 0.106, so not the edges); with both images less their Gaussian blur of 2 px,
0.026 px^2 and no bias there (``benchmarks/results/wider_diagnosis.md``).

So where step 6 ran (the sample is wider than the view), :func:`judge_highpass` registers the kept
estimate a few more times against the references, both images high-passed
(:func:`dejitter.registration.classic.high_pass`), and keeps the slow modes step 6 fitted
(registration has almost no hold on them there).  The result is judged view by view over the rows
and columns every view saw (step 6's region): it is kept where the views' residuals fall on
(geometric) average (:func:`paired_log_change`), both with the images as they are and with both
high-passed alike.  Measured (px^2, ``auto`` before and after step 7; seventeenth session, 28 scans,
``wider_diagnosis.md``): kept on the 1.5x wider samples of seeds 1 and 27 (0.093 -> 0.055, 0.082 ->
0.026), the wider and taller of seeds 3, 25 and 27 (0.080 -> 0.053, 0.129 -> 0.068, 0.100 ->
0.034) and the real I13 scan with jitter added (0.069 -> 0.056); not kept where it loses: the
near-featureless particle (0.0075 -> 0.069: plain residuals +3.9 %), featureless at 60 %
salt-and-pepper (0.71 -> 4.6), and 14 of the 16 held-out seeds where ``auto`` was already at
0.003-0.05 (two would have gained under 10 %).
The ratio of the median scores, the judge before, did not keep seed 25 (high-passed +0.06 %).

Where the sample overflows the view by far (``filtered_edge_share`` of
:func:`~dejitter.registration.containment.is_contained` from
:data:`~dejitter.registration.focus.MIN_EDGE_SHARE`), a candidate the residuals refuse is kept
where it makes the volume sharper (:func:`~dejitter.registration.focus.sharpness_change`): the
residuals there come from MLEM of truncated projections and missed the gain on held-out 1.5x wider
and taller seeds 38 and 40 (0.270 -> 0.183 and 0.367 -> 0.331 px^2; plain residuals +0.3 % and
+0.8 %), which the sharpness sees (+0.21 %, +0.46 %; twenty-fourth session).  Below that share it
is not asked: the near-featureless particle and the featureless one at 60 % salt-and-pepper
overflow the view by little and their volumes got sharper while step 7 raised the error.
"""

from __future__ import annotations

import numpy as np

from .classic import align_iterative, alignment_residual, high_pass
from .focus import MIN_EDGE_SHARE, sharpness_change
from .references import measured_frame_references
from .slow_modes import region_of, without_mode_change

__all__ = ["judge_highpass", "highpass_sigma", "highpass_change_text", "paired_log_change", "HIGHPASS_SHARE", "HIGHPASS_STEPS"]

#: Gaussian width of the high-pass, as a share of the view's width: 2.6 px at 64 binned columns.
#: Measured at 64 columns (``auto`` then 4 steps, px^2; the 1.5x wider sample of seed 1 and 27, the
#: wider and taller of seed 3 and 27, the real I13 scan with jitter added): 2 px 0.057, 0.027,
#: 0.056, 0.036, 0.058 after 3 steps; 3 px 0.061, 0.026, 0.052, 0.034, 0.056 (``auto`` without it
#: 0.093, 0.082, 0.080, 0.100, 0.069).
HIGHPASS_SHARE = 0.04
#: Registration steps: the error fell over the first two or three on those scans (seed 1: 0.053
#: after one or two, 0.062 after four, the rest still falling by under 5 % a step).
HIGHPASS_STEPS = 3


def highpass_sigma(n_cols, share=HIGHPASS_SHARE):
    """The high-pass's Gaussian width in pixels for a view ``n_cols`` wide (at least 1)."""
    return max(1.0, share * n_cols)


def judge_highpass(projections, theta, shifts, *, components, warm_start=None, steps=HIGHPASS_STEPS, n_iter=20,
                   share=HIGHPASS_SHARE, edge_share=None, center=None, backend=None):
    """Step 7 of ``auto``: register against high-passed references, and whether that beats ``shifts``.

    Parameters
    ----------
    projections : ndarray, shape (angle, row, column)
    theta : ndarray
    shifts : ndarray, shape (angle, 2)
        The estimate kept by steps 1-6.
    components : (bool, bool)
        Which of ``dx, dy`` had their slow modes polished by step 6: the change along those modes
        is removed (:func:`~dejitter.registration.slow_modes.without_mode_change`).
    warm_start : tuple, optional
        MLEM state of the references at ``shifts``, continued for the first step.
    steps : int
        Registration steps.
    n_iter : int
        MLEM iterations of the two scores' references (from a uniform volume, as every candidate's).
    share : float
        The high-pass's width (:func:`highpass_sigma`).
    edge_share : float, optional
        How far the sample overflows the view (``filtered_edge_share`` of
        :func:`~dejitter.registration.containment.is_contained`): from
        :data:`~dejitter.registration.focus.MIN_EDGE_SHARE`, a candidate the residuals refuse is
        still kept where it makes the volume sharper (:func:`~dejitter.registration.focus.sharpness_change`).

    Returns
    -------
    candidate : ndarray, shape (angle, 2)
    judged : dict
        ``details`` (for ``registration.json``: the width, the steps, the median high-passed
        scores over the region every view saw before and after, the paired changes
        (:func:`paired_log_change`) of the plain and the high-passed residuals there, whether
        the sharpness change where it was asked, whether kept and by which test), the candidate's
        whole-view ``score``, per-view ``residual``, MLEM ``state``, and ``kept``: both paired
        changes negative, or, where the sample overflows the view by far, the volume sharper.
    """
    theta, shifts = np.asarray(theta), np.asarray(shifts, dtype=np.float64)
    sigma = highpass_sigma(projections.shape[2], share)
    refined, _ = align_iterative(projections, theta, initial=shifts, levels=(1,), max_iter=steps, tol=0.0,
                                 first_mlem_iter=6 if warm_start is not None else n_iter, warm_start=warm_start,
                                 highpass=sigma, center=center, backend=backend)
    candidate = np.where(np.isnan(shifts), np.nan, without_mode_change(refined, shifts, theta, components=components))
    # Judged view by view: the mean over the views of log(after / before) of each view's residual,
    # over step 6's region, both with the images as they are and with both high-passed alike.  The
    # ratio of the medians (the sixteenth session's judge) moved by under 0.1 % where the error fell by
    # half (wider and taller seed 25: 0.129 -> 0.068 px^2) and was not kept there; paired, the
    # changes of each view add up (``benchmarks/results/wider_diagnosis.md``).  Both must fall: the
    # high-passed images alone barely see the near-featureless particle get worse (+0.03 %, error
    # 0.0075 -> 0.069), the plain ones see it (+3.9 %).
    region = region_of(projections, shifts)
    plain = projections[:, region[0], region[1]]
    highpassed = high_pass(projections, sigma)[:, region[0], region[1]]
    residuals = {"plain": [], "highpassed": []}
    for estimate in (shifts, candidate):
        references, state = measured_frame_references(projections, theta, estimate, n_iter=n_iter, center=center,
                                                      backend=backend)
        compared = references[:, region[0], region[1]]
        residuals["plain"].append(alignment_residual(plain, compared))
        residuals["highpassed"].append(alignment_residual(highpassed, high_pass(references, sigma)[:, region[0],
                                                                                                   region[1]]))
    residual = alignment_residual(projections, references)  # the candidate's, over the whole view
    change = {kind: paired_log_change(*pair) for kind, pair in residuals.items()}
    kept_by = "residuals" if change["plain"] < 0 and change["highpassed"] < 0 else None
    sharper = None
    if kept_by is None and edge_share is not None and edge_share >= MIN_EDGE_SHARE:
        # Far wider than the view, the residuals miss what step 7 gains (focus module docstring).
        sharper = sharpness_change(projections, theta, shifts, candidate, rows=region[0], center=center,
                                   backend=backend)
        kept_by = "sharpness" if sharper > 0 else None
    kept = kept_by is not None
    before, after = (float(np.median(r)) for r in residuals["highpassed"])
    details = {"highpass_sigma_px": round(sigma, 3), "highpass_steps": steps,
               "highpass_region_score_before": round(before, 6), "highpass_region_score_after": round(after, 6),
               "highpass_change_plain": round(change["plain"], 6),
               "highpass_change_highpassed": round(change["highpassed"], 6),
               "highpass_sharpness_change": None if sharper is None else round(sharper, 6),
               "highpass_kept": kept, "highpass_kept_by": kept_by}
    return candidate, {"details": details, "score": float(np.median(residual)), "residual": residual,
                       "state": state, "kept": kept}


def paired_log_change(before, after):
    """The mean over the views of ``log(after / before)``: how much a change of estimate improved each view.

    Parameters
    ----------
    before, after : ndarray, shape (angle,)
        Each view's residual (:func:`~dejitter.registration.classic.alignment_residual`) with the
        two estimates; views where either is not positive and finite are left out.

    Returns
    -------
    float
        Negative where the views fit better after, on (geometric) average; 0.0 where no view counts.
    """
    before, after = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    valid = np.isfinite(before) & np.isfinite(after) & (before > 0) & (after > 0)
    return float(np.mean(np.log(after[valid] / before[valid]))) if np.any(valid) else 0.0


def highpass_change_text(details):
    """How step 7 changed the views' residuals, in words, from its ``details`` (reason and QC note)."""
    plain, highpassed = (100 * np.expm1(details[f"highpass_change_{kind}"]) for kind in ("plain", "highpassed"))
    text = (f"the views' residuals over the region every view saw {plain:+.2f} % (plain) and "
            f"{highpassed:+.2f} % (high-passed) on average")
    if details.get("highpass_kept_by") == "sharpness":
        text += (f", kept as the sample overflows the view by far and the volume got sharper "
                 f"({100 * details['highpass_sharpness_change']:+.2f} %)")
    return text
