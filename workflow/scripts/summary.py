"""Adapter: the campaign summary (one row per scan) and the campaign figure.

``disk_mb`` is what the scan's results folder holds once its temporary intermediates (the
full-resolution projections, raw and corrected) are gone: Snakemake deletes them when their last
reader (QC) has finished, before this step starts; the TIFF stack, when asked for, is made first.
"""

import json
import os

import pandas as pd

from dejitter.files import atomic_path
from dejitter.pipeline.steplog import logged_step
from dejitter.reports import qc


def disk_mb(folder):
    """Size of the files under ``folder`` in MiB (temporary ``.part`` files of a running step left out)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            if not name.endswith(".part"):
                try:
                    total += os.path.getsize(os.path.join(root, name))
                except FileNotFoundError:  # removed meanwhile
                    pass
    return round(total / 2**20, 1)


sm = snakemake  # noqa: F821 - injected by Snakemake
with logged_step(sm.log[0], scan="campaign", step="summary", threads=sm.threads):
    rows = []
    for scan, metrics_path, provenance_path in zip(sm.params.scans, sm.input.metrics, sm.input.provenance):
        row = {"scan": scan, "status": "ok"}
        row.update(json.loads(open(metrics_path).read()))
        row.update(json.loads(open(provenance_path).read()))
        total = 0.0
        for key, path in sm.params.benchmarks.items():
            name, step = key.rsplit(".", 1)
            if name == scan:
                seconds = float(pd.read_csv(path, sep="\t")["s"].iloc[0])
                row[f"time_{step}_s"] = round(seconds, 2)
                total += seconds
        row["time_total_s"] = round(total, 2)
        row["disk_mb"] = disk_mb(os.path.dirname(metrics_path))
        rows.append(row)
    summary = pd.DataFrame(rows)
    with atomic_path(sm.output.summary) as tmp:
        summary.to_csv(tmp, sep="\t", index=False, float_format="%.4g")
    qc.plot_campaign(sm.output.figure, summary)
