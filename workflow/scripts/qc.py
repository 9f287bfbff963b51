"""Adapter: QC figures of one scan and its metrics (shift statistics, error vs truth, sharpness)."""

import json

from dejitter import qc
from dejitter.files import atomic_path, read_shifts, read_stack, read_volume
from dejitter.pipeline import scan_metrics
from dejitter.steplog import logged_step

sm = snakemake  # noqa: F821 - injected by Snakemake
scan = sm.wildcards.scan
with logged_step(sm.log[0], scan=scan, step="qc", threads=sm.threads):
    table, shifts = read_shifts(sm.input.shifts)
    qc.plot_shifts(sm.output.shifts, table["theta_deg"].to_numpy(), shifts,
                   spread=table["spread"].to_numpy() if "spread" in table else None,
                   flagged=table["flagged"].to_numpy(bool) if "flagged" in table else None, title=scan)
    before, after = read_stack(sm.input.projections)[0], read_stack(sm.input.corrected)[0]
    qc.plot_sinograms(sm.output.sinogram, before, after, title=scan)
    volume_before, volume_after = read_volume(sm.input.volume_uncorrected)[0], read_volume(sm.input.volume)[0]
    qc.plot_slices(sm.output.slices, volume_before, volume_after, title=scan)
    qc.plot_histograms(sm.output.histogram, volume_before, volume_after, title=scan)
    metrics = scan_metrics(sm.input.shifts, true_shifts_path=sm.input.true_shifts[0] if sm.input.true_shifts else None)
    metrics.update(sharpness_before=qc.sharpness(volume_before), sharpness_after=qc.sharpness(volume_after))
    with atomic_path(sm.output.metrics) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
