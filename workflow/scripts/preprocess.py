"""Adapter: raw scan -> line integrals (full resolution) and binned projections for steps A-C."""

from dejitter.pipeline.steplog import logged_step
from dejitter.pipeline.steps import preprocess

sm = snakemake  # noqa: F821 - injected by Snakemake
with logged_step(sm.log[0], scan=sm.wildcards.scan, step="preprocess", threads=sm.threads,
                 attempt=sm.resources.attempt):
    preprocess(sm.params.raw, sm.output.projections, sm.output.binned, fmt=sm.params.fmt, angles=sm.params.angles,
               flats=sm.params.flats, darks=sm.params.darks, normalised=sm.params.normalised,
               layout=sm.params.layout, frames=sm.params.frames,
               binning=sm.params.binning, median_size=sm.params.median_size,
               max_bad_fraction=sm.params.max_bad_fraction, memory_budget_mb=sm.params.memory_budget_mb,
               chunk_divisor=sm.resources.chunk_divisor)
