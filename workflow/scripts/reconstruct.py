"""Adapter: step E, FBP of the (corrected or raw) projections into a volume with provenance.

The uncorrected reconstruction for QC is binned (``params.binning``); a retry after running out of
memory gets a ``chunk_divisor`` of 2, 4, ... (the rule's resources, from Snakemake's attempt).
"""

import json

from dejitter.pipeline.steplog import logged_step
from dejitter.pipeline.steps import reconstruct

sm = snakemake  # noqa: F821 - injected by Snakemake
# The configuration of this run, for the record; read here rather than passed as a parameter, because
# Snakemake reruns a job whose parameters changed: every volume of the campaign would be made again
# whenever any setting changed (another scan table, volume_tiff), even one that does not touch it.
# The settings that do are parameters of this rule or of the steps before it.
config = {key: value for key, value in sm.config.items() if key not in ("demo", "train")}
with logged_step(sm.log[0], scan=sm.wildcards.scan, step=sm.rule, threads=sm.threads,
                 attempt=sm.resources.attempt):
    provenance = {"scan": sm.wildcards.scan, "config": config, "method": "none", "model_sha256": "none"}
    if "provenance" in sm.input.keys():
        provenance.update(json.loads(open(sm.input.provenance).read()))
    reconstruct(sm.input.projections, sm.output.volume, center=sm.params.center, find_axis=sm.params.find_center,
                filter_name=sm.params.filter_name, backend=sm.params.backend, device=sm.params.device,
                provenance=provenance, memory_budget_mb=sm.params.memory_budget_mb, binning=sm.params.binning,
                crop=sm.params.crop, dtype=sm.params.dtype, chunk_divisor=sm.resources.chunk_divisor)
