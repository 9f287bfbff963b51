"""Per-scan figures for the campaign summary: shift statistics and the error against a known jitter."""

from __future__ import annotations

import numpy as np

from ..files import read_shifts
from ..metrics import shift_error

__all__ = ["scan_metrics"]


def scan_metrics(shifts_path, *, true_shifts_path=None):
    """Shift statistics of a scan, and the error against the true jitter when it is known.

    ``rms_shift_px`` is the RMS of the estimate as written to ``shifts.csv``; ``observable_rms_px`` that
    of its part that is not rigid motion (:func:`dejitter.metrics.shift_error` against zero).
    """
    table, shifts = read_shifts(shifts_path)
    theta = np.deg2rad(table["theta_deg"].to_numpy())
    observed = shifts[:, 1] if np.all(np.isfinite(shifts[:, 1])) else np.zeros(len(shifts))
    metrics = {
        "angles": len(table),
        "rms_shift_px": float(np.sqrt(np.mean(shifts[:, 0] ** 2 + observed ** 2))),
        # The estimate keeps a constant dx (the axis's offset from the assumed centre: 19.5 px on the real
        # tooth scan, whose jitter is 0.13 px RMS); this is the jitter itself, by the one metric.
        "observable_rms_px": shift_error(shifts, np.zeros_like(shifts), theta)["rms"],
        "max_shift_px": float(np.nanmax(np.abs(shifts))),
        "dy_observable": bool(np.all(np.isfinite(shifts[:, 1]))),
        "flagged_angles": int(table["flagged"].sum()) if "flagged" in table else 0,
        "median_residual": float(table["residual"].median()) if "residual" in table else float("nan"),
        "mse_vs_truth_px2": float("nan"),
        "mse_uncorrected_px2": float("nan"),
    }
    if true_shifts_path:
        _, truth = read_shifts(true_shifts_path)
        metrics["mse_vs_truth_px2"] = shift_error(shifts, truth, theta)["mse"]
        metrics["mse_uncorrected_px2"] = shift_error(np.zeros_like(truth), truth, theta)["mse"]
    return metrics

