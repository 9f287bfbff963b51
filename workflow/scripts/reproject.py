"""Adapter: step B, reprojections (leave-out or of one volume, as step A made them)."""

from dejitter.pipeline.steplog import logged_step
from dejitter.pipeline.alignment import reproject_reference

sm = snakemake  # noqa: F821 - injected by Snakemake
with logged_step(sm.log[0], scan=sm.wildcards.scan, step="reproject", threads=sm.threads,
                 attempt=sm.resources.attempt):
    reproject_reference(sm.input.binned, sm.input.volumes, sm.output.references, center=sm.params.center,
                        backend=sm.params.backend, device=sm.params.device, initial_shifts=sm.params.initial_shifts,
                        chunk_divisor=sm.resources.chunk_divisor)
