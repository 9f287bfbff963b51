"""Quality-control figures of one scan and of a whole campaign.

The volume statistics they show (sampling, sharpness) are :mod:`dejitter.reports.volume_metrics`'s.

Every plotting function takes arrays (or a table) and an output path, draws on a fresh
:class:`matplotlib.figure.Figure` (no pyplot, so no global figure state survives a call and
nothing needs a display) and writes a PNG atomically with :func:`dejitter.files.atomic_path`.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from dejitter.files import atomic_path

__all__ = ["plot_shifts", "selection_note", "plot_sinograms", "plot_slices", "plot_histograms", "plot_campaign"]

_DPI = 110


def _save(fig, path):
    # The temporary name ends in ".part", so matplotlib cannot guess the format from it.
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI)


def _grey_limits(*arrays, low=1.0, high=99.0):
    """Common display limits: percentiles of the finite values of all arrays together."""
    # Subsample large arrays: percentiles of a few million values are as good as of all of them.
    values = [np.asarray(a, dtype=np.float32).ravel()[:: max(1, np.size(a) // 2_000_000)] for a in arrays]
    values = np.concatenate(values)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    vmin, vmax = np.percentile(values, [low, high])
    if vmax <= vmin:  # a constant image would otherwise make imshow divide by zero
        vmin, vmax = vmin - 0.5, vmax + 0.5
    return float(vmin), float(vmax)


def selection_note(provenance):
    """One line saying which estimate step C kept and every candidate's score (``method: auto``).

    Parameters
    ----------
    provenance : dict
        The contents of ``registration.json``.

    Returns
    -------
    str or None
        ``None`` where the method did not select among candidates.
    """
    if "selected" not in provenance:
        return None
    def listed(prefix):
        scores = {key[len(prefix):]: value for key, value in provenance.items() if key.startswith(prefix)}
        return ", ".join(f"{name.replace('_', ' ')} {value:.4g}" for name, value in sorted(scores.items(), key=lambda kv: kv[1]))

    note = f"kept: {provenance['selected'].replace('_', ' ')}; consistency scores (lower is better): {listed('score_')}"
    if any(key.startswith("tie_score_") for key in provenance):
        # dejitter.registration.selection.TIE_MLEM_ITER, not imported: the QC environment has no torch.
        note += f"; the closest scored again at 60 MLEM iterations: {listed('tie_score_')}"
    if provenance.get("anchored_to_center_of_mass"):
        note += "; slow drift anchored to the centre of mass"
    if provenance.get("anchored_to_slice_mass"):
        note += "; slow drift anchored to the slices' mass"
    if provenance["selected"].endswith("_polished"):
        # Kept on its score over the region every view saw, which the whole-view scores above do not show.
        before, after = provenance["slow_modes_region_score_before"], provenance["slow_modes_region_score_after"]
        note += f"; slow modes polished, score over the region every view saw {before:.4g} -> {after:.4g}"
    if provenance.get("highpass_kept"):
        # Worded here, not by dejitter.registration.interior: the QC environment has no torch.
        plain, highpassed = (100 * np.expm1(provenance[f"highpass_change_{kind}"]) for kind in ("plain", "highpassed"))
        note += (f"; registered again against high-passed references, residuals over that region "
                 f"{plain:+.2f} % (plain), {highpassed:+.2f} % (high-passed)")
        if provenance.get("highpass_kept_by") == "sharpness":
            note += f", kept as the volume got sharper ({100 * provenance['highpass_sharpness_change']:+.2f} %)"
    if provenance.get("faster_modes_region_score_after") is not None:
        # Step 8: kept without a judge, its region scores shown all the same.
        (first, last), before, after = (provenance[f"faster_modes_{key}"]
                                        for key in ("k", "region_score_before", "region_score_after"))
        note += f"; dx modes k {first}-{last} polished after that, score over that region {before:.4g} -> {after:.4g}"
    return note


def plot_shifts(path, theta_deg, shifts, *, spread=None, flagged=None, instrument=None, title=None, note=None):
    """Plot the estimated jitter (dx, dy) against angle.

    Parameters
    ----------
    path : str or Path
        Output PNG.
    theta_deg : (n,) array
        Projection angles in degrees.
    shifts : (n, 2) array
        Estimated jitter (dx, dy) in pixels. A dy column that is all NaN (vertical jitter not
        observable for this scan) is reported as such instead of plotted.
    spread : (n,) array, optional
        Per-angle confidence of the estimate (px), drawn as a band of +/- spread.
    flagged : (n,) bool array, optional
        Angles whose estimate is unreliable, marked with red crosses.
    instrument : (n, 2) array, optional
        The instrument's own alignment shifts (jitter sign, px), drawn beside the estimate.
    title : str, optional
        Figure title (e.g. the scan id).
    note : str, optional
        A line under the plots, e.g. :func:`selection_note`.
    """
    theta = np.asarray(theta_deg, dtype=float)
    shifts = np.asarray(shifts, dtype=float).reshape(len(theta), 2)
    flagged = np.zeros(len(theta), bool) if flagged is None else np.asarray(flagged, bool)
    fig = Figure(figsize=(8, 5.5), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    for ax, column, name in zip(axes, shifts.T, ("dx", "dy")):
        ax.set_ylabel(f"{name} (px)")
        ax.grid(alpha=0.3)
        if not np.any(np.isfinite(column)):
            ax.text(0.5, 0.5, f"{name} not observable for this scan (not estimated)", transform=ax.transAxes,
                    ha="center", va="center", color="0.4")
            ax.set_yticks([])
            continue
        ax.plot(theta, column, ".-", color="C0", lw=0.8, ms=3, label=f"estimated {name}")
        if instrument is not None:
            ax.plot(theta, np.asarray(instrument, dtype=float)[:, 0 if name == "dx" else 1], "--", color="C1",
                    lw=0.9, label=f"instrument {name}")
        if spread is not None:
            s = np.asarray(spread, dtype=float)
            ax.fill_between(theta, column - s, column + s, color="C0", alpha=0.25, lw=0, label="± spread")
        if flagged.any():
            ax.plot(theta[flagged], column[flagged], "x", color="red", ms=8, mew=2,
                    label=f"flagged ({flagged.sum()} of {len(theta)})")
        ax.axhline(0, color="0.5", lw=0.6)
        ax.legend(loc="upper right", fontsize="small", framealpha=0.8)
    axes[-1].set_xlabel("rotation angle (deg)")
    fig.suptitle(f"{title}: estimated jitter" if title else "estimated jitter")
    if note:
        fig.supxlabel(note, fontsize="small", wrap=True)
    _save(fig, path)


def plot_sinograms(path, before, after, *, row=None, title=None):
    """Show the sinogram of one detector row before and after correction, on one grey scale.

    Parameters
    ----------
    path : str or Path
        Output PNG.
    before, after : (angle, row, column) arrays
        Raw and corrected projection stacks.
    row : int, optional
        Detector row to show; default the central row (of each stack, so stacks of
        different heights are compared at the same relative height).
    title : str, optional
        Figure title.
    """
    sinograms = []
    for stack in (before, after):
        r = stack.shape[1] // 2 if row is None else min(row, stack.shape[1] - 1)
        sinograms.append(np.asarray(stack[:, r, :], dtype=np.float32))
    vmin, vmax = _grey_limits(*sinograms)
    fig = Figure(figsize=(10, 5), layout="constrained")
    axes = fig.subplots(1, 2, sharey=False)
    for ax, sino, name in zip(axes, sinograms, ("before correction", "after correction")):
        image = ax.imshow(sino, cmap="gray", vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
        ax.set_title(name)
        ax.set_xlabel("detector column (px)")
        ax.set_ylabel("projection index")
    fig.colorbar(image, ax=axes, shrink=0.8, label="projection value")
    shown = before.shape[1] // 2 if row is None else row
    fig.suptitle(f"{title + ': ' if title else ''}sinogram of detector row {shown}")
    _save(fig, path)


def _central_slices(volume):
    z, y, x = (n // 2 for n in volume.shape)
    return volume[z, :, :], volume[:, y, :], volume[:, :, x]


def plot_slices(path, before, after, *, title=None):
    """Central xy, xz and yz slices of the uncorrected (top) and corrected (bottom) volumes.

    Volumes of different sizes are shown each at its own size, with axes in voxels of
    that volume, but all on one grey scale computed from both.

    Parameters
    ----------
    path : str or Path
        Output PNG.
    before, after : (z, y, x) arrays
        Uncorrected and corrected reconstructions; h5py datasets too, of which only the
        three slices are read.
    title : str, optional
        Figure title.
    """
    rows = [tuple(np.asarray(s) for s in _central_slices(v)) for v in (before, after)]
    vmin, vmax = _grey_limits(*(s for slices in rows for s in slices))
    fig = Figure(figsize=(11, 7.5), layout="constrained")
    axes = fig.subplots(2, 3)
    labels = (("xy (central z)", "x", "y"), ("xz (central y)", "x", "z"), ("yz (central x)", "y", "z"))
    for r, (slices, name) in enumerate(zip(rows, ("uncorrected", "corrected"))):
        for c, (image, (plane, xlabel, ylabel)) in enumerate(zip(slices, labels)):
            ax = axes[r, c]
            shown = ax.imshow(image, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
            ax.set_title(f"{name}: {plane}", fontsize="medium")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
    fig.colorbar(shown, ax=axes, shrink=0.6, label="voxel value")
    fig.suptitle(f"{title}: central slices" if title else "central slices")
    _save(fig, path)


def plot_histograms(path, before, after, *, bins=256, title=None):
    """Intensity histograms of the uncorrected and corrected volumes, log counts.

    Both use the same bin edges (0.1..99.9 percentile of both volumes together), so
    peak heights compare directly: sharper, better separated peaks mean less blur.

    Parameters
    ----------
    path : str or Path
        Output PNG.
    before, after : arrays
        Uncorrected and corrected reconstructions.
    bins : int
        Number of bins.
    title : str, optional
        Figure title.
    """
    lo, hi = _grey_limits(before, after, low=0.1, high=99.9)
    edges = np.linspace(lo, hi, bins + 1)
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    for volume, name, color in ((before, "uncorrected", "C1"), (after, "corrected", "C0")):
        values = np.asarray(volume, dtype=np.float32).ravel()
        counts, _ = np.histogram(values[np.isfinite(values)], bins=edges)
        # Normalise to a fraction of voxels so volumes of different sizes compare.
        fraction = counts / max(counts.sum(), 1)
        ax.stairs(np.where(fraction > 0, fraction, np.nan), edges, label=name, color=color, lw=1.3)
    ax.set_yscale("log")
    ax.set_xlabel("voxel value")
    ax.set_ylabel("fraction of voxels (log)")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"{title}: intensity histograms" if title else "intensity histograms")
    _save(fig, path)


def _outliers(values, *, side="high", min_scale=0.0):
    """Robust outliers on one side: beyond 3.5 scaled MADs from the median (needs 4 finite values).

    ``min_scale`` floors the MAD, so that when most scans share one value (say 0 flagged
    angles) a single scan that differs slightly is not called an outlier.
    """
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    if finite.sum() < 4:
        return np.zeros(len(values), bool)
    median = np.median(values[finite])
    scale = max(1.4826 * np.median(np.abs(values[finite] - median)), min_scale)
    deviation = (values - median) if side == "high" else (median - values)
    with np.errstate(invalid="ignore"):
        return finite & (deviation > 3.5 * scale) if scale > 0 else finite & (deviation > 0)


def plot_campaign(path, summary):
    """One figure per campaign: a panel per metric, one bar per scan, bad scans highlighted.

    Panels: RMS estimated jitter, flagged angles, sharpness gain (after minus before; below 0
    means the correction made the volume blurrier), and the error against the true jitter
    when any scan has one. Failed scans are drawn as grey hatched slots with an "x";
    robust outliers (and a sharpness gain below 0) are red.

    Parameters
    ----------
    path : str or Path
        Output PNG.
    summary : pandas.DataFrame
        One row per scan with columns ``scan``, ``observable_rms_px`` (else ``rms_shift_px``), ``flagged_angles``,
        ``sharpness_before``, ``sharpness_after`` and optionally ``mse_vs_truth_px2`` and
        ``status`` ("ok" or "failed"). Missing metric columns are treated as NaN.
    """
    n = len(summary)
    scans = summary["scan"].astype(str).to_numpy()

    def column(name):
        return summary[name].to_numpy(float) if name in summary else np.full(n, np.nan)

    failed = np.zeros(n, bool)
    if "status" in summary:
        failed = summary["status"].astype(str).str.strip().str.lower().eq("failed").to_numpy()
    gain = column("sharpness_after") - column("sharpness_before")
    # (label, values, which side is bad, smallest spread that counts, reference line)
    # The jitter modulo rigid motion where the summary has it: a constant dx is the axis offset, not jitter.
    rms = ("RMS jitter, modulo rigid motion (px)", column("observable_rms_px")) if "observable_rms_px" in summary \
        else ("RMS estimated jitter (px)", column("rms_shift_px"))
    panels = [(*rms, "high", 0.5, None),
              ("flagged angles", column("flagged_angles"), "high", 1.0, None),
              ("sharpness gain\n(after − before)", gain, "low", 0.05, 0.0)]
    truth = column("mse_vs_truth_px2")
    if np.isfinite(truth).any():
        panels.append(("MSE vs true jitter (px²)", truth, "high", 0.1, None))

    x = np.arange(n)
    fig = Figure(figsize=(min(max(7.0, 0.12 * n + 3), 20), 2.0 * len(panels) + 1.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(panels), 1, sharex=True))
    for ax, (label, values, side, min_scale, reference) in zip(axes, panels):
        values = np.where(failed, np.nan, values)
        bad = _outliers(values, side=side, min_scale=min_scale)
        if reference is not None:
            with np.errstate(invalid="ignore"):
                bad |= values < reference  # a correction that blurs the volume is always worth a look
        colors = np.where(bad, "tab:red", "tab:blue")
        ax.bar(x, np.nan_to_num(values), color=colors, width=0.8)
        if failed.any():
            top = np.nanmax(values) if np.isfinite(values).any() else 1.0
            top = top if top > 0 else 1.0  # a slot of visible height even if every value is <= 0
            ax.bar(x[failed], np.full(failed.sum(), top), color="0.85", hatch="//", edgecolor="0.5", width=0.8)
            ax.plot(x[failed], np.full(failed.sum(), top / 2), "x", color="k", ms=7, mew=2)
        if reference is not None:
            ax.axhline(reference, color="0.3", lw=0.8, ls="--")
        ax.set_ylabel(label, fontsize="small")
        ax.grid(axis="y", alpha=0.3)
    axes[-1].set_xlim(-0.6, n - 0.4)
    # Tick labels stay readable up to ~60 scans; beyond that, scan numbers along x are enough.
    if n <= 60:
        axes[-1].set_xticks(x)
        axes[-1].set_xticklabels(scans, rotation=0 if n <= 8 else 90, fontsize="small" if n <= 30 else "x-small")
    else:
        axes[-1].set_xlabel("scan number (order of the summary table)")
    handles = [Patch(color="tab:blue", label="ok"), Patch(color="tab:red", label="outlier / sharpness lost"),
               Patch(facecolor="0.85", hatch="//", edgecolor="0.5", label="failed")]
    fig.legend(handles=handles, loc="outside upper right", ncols=3, fontsize="small", frameon=False)
    fig.suptitle(f"campaign: {n} scan{'s' if n != 1 else ''}, {int(failed.sum())} failed",
                 fontsize="medium", x=0.02, ha="left")
    _save(fig, path)
