"""Adapter: QC figures of one scan and its metrics (shift statistics, error vs truth, sharpness).

Only what the figures show is read: the central detector row before and after correction (kept
by step D in ``sinograms.h5``: the full-resolution stacks are gone by now), three slices of each
volume, and for the histograms and sharpness every k-th z slice so that at most ``volume_metrics.QC_VOXELS`` voxels
of each volume are in memory (all of them for volumes up to 160^3).  The sample does not depend
on the memory budget, so the metrics do not either.

The uncorrected volume is reconstructed binned (``qc_binning``, its attribute ``volume_binning``);
the histograms and sharpness read the corrected volume binned alike (block means), so that
before and after compare at one voxel size.  The slices figure shows each at its own size.
"""

import json

from dejitter.files import atomic_path, open_stack, read_shifts, read_stack
from dejitter.pipeline.steplog import logged_step
from dejitter.reports import qc, volume_metrics
from dejitter.reports.summary import scan_metrics

sm = snakemake  # noqa: F821 - injected by Snakemake
scan = sm.wildcards.scan
with logged_step(sm.log[0], scan=scan, step="qc", threads=sm.threads):
    table, shifts = read_shifts(sm.input.shifts)
    provenance = json.loads(open(sm.input.provenance).read())
    instrument = table[["instrument_dx", "instrument_dy"]].to_numpy() if "instrument_dx" in table else None
    qc.plot_shifts(sm.output.shifts, table["theta_deg"].to_numpy(), shifts,
                   spread=table["spread"].to_numpy() if "spread" in table else None,
                   flagged=table["flagged"].to_numpy(bool) if "flagged" in table else None,
                   instrument=instrument, title=scan,
                   note=qc.selection_note(provenance))
    sinograms, attrs, _ = read_stack(sm.input.sinograms, name="sinograms")
    before, after = sinograms[:, :, None, :]  # each (angle, 1 row, column)
    qc.plot_sinograms(sm.output.sinogram, before, after, row=int(attrs["row"]), title=scan)
    with open_stack(sm.input.volume_uncorrected, name="volume") as (volume_before, _, _), \
            open_stack(sm.input.volume, name="volume") as (volume_after, _, _):
        qc.plot_slices(sm.output.slices, volume_before, volume_after, title=scan)
        factor = int(volume_before.attrs.get("volume_binning", 1))
        step = volume_metrics.z_step(volume_before.size)
        sample_before = volume_before[::step]
        sample_after = volume_metrics.binned_z_sample(volume_after, factor, step,
                                          row_factor=volume_before.attrs.get("volume_row_binning"))
    qc.plot_histograms(sm.output.histogram, sample_before, sample_after, title=scan)
    metrics = scan_metrics(sm.input.shifts, true_shifts_path=sm.input.true_shifts[0] if sm.input.true_shifts else None)
    metrics.update(zip(("sharpness_before", "sharpness_after"), volume_metrics.sharpness_pair(sample_before, sample_after)))
    with atomic_path(sm.output.metrics) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
