"""Adapter: QC figures of one scan and its metrics (shift statistics, error vs truth, sharpness).

Only what the figures show is read: one detector row of the projection stacks, three slices of
each volume, and for the histograms and sharpness every k-th z slice so that at most
QC_VOXELS voxels of each volume are in memory (all of them for volumes up to 160^3).  The
sample does not depend on the memory budget, so the metrics do not either.
"""

import json
import math

from dejitter import qc
from dejitter.files import atomic_path, open_stack, read_shifts
from dejitter.summary import scan_metrics
from dejitter.steplog import logged_step

QC_VOXELS = 2**22


def z_sample(volume):
    """Every k-th z slice of an h5py volume, at most QC_VOXELS voxels."""
    return volume[:: max(1, math.ceil(volume.size / QC_VOXELS))]


sm = snakemake  # noqa: F821 - injected by Snakemake
scan = sm.wildcards.scan
with logged_step(sm.log[0], scan=scan, step="qc", threads=sm.threads):
    table, shifts = read_shifts(sm.input.shifts)
    qc.plot_shifts(sm.output.shifts, table["theta_deg"].to_numpy(), shifts,
                   spread=table["spread"].to_numpy() if "spread" in table else None,
                   flagged=table["flagged"].to_numpy(bool) if "flagged" in table else None, title=scan)
    with open_stack(sm.input.projections) as (before, _, _), open_stack(sm.input.corrected) as (after, _, _):
        row = before.shape[1] // 2
        qc.plot_sinograms(sm.output.sinogram, before[:, row: row + 1], after[:, row: row + 1], row=row, title=scan)
    with open_stack(sm.input.volume_uncorrected, name="volume") as (volume_before, _, _), \
            open_stack(sm.input.volume, name="volume") as (volume_after, _, _):
        qc.plot_slices(sm.output.slices, volume_before, volume_after, title=scan)
        sample_before, sample_after = z_sample(volume_before), z_sample(volume_after)
    qc.plot_histograms(sm.output.histogram, sample_before, sample_after, title=scan)
    metrics = scan_metrics(sm.input.shifts, true_shifts_path=sm.input.true_shifts[0] if sm.input.true_shifts else None)
    metrics.update(sharpness_before=qc.sharpness(sample_before), sharpness_after=qc.sharpness(sample_after))
    with atomic_path(sm.output.metrics) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
