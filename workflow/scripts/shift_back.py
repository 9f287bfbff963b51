"""Adapter: step D, shift every projection back by its estimated jitter (and keep the central
row before and after for the QC figure)."""

from dejitter.pipeline.steplog import logged_step
from dejitter.pipeline.steps import shift_back

sm = snakemake  # noqa: F821 - injected by Snakemake
with logged_step(sm.log[0], scan=sm.wildcards.scan, step="shift_back", threads=sm.threads,
                 attempt=sm.resources.attempt):
    shift_back(sm.input.projections, sm.input.shifts, sm.output.corrected, sinograms_out=sm.output.sinograms,
               order=sm.params.order, mode=sm.params.mode,
               memory_budget_mb=sm.params.memory_budget_mb, chunk_divisor=sm.resources.chunk_divisor)
