"""Adapter: step A, MLEM (of the two interleaved halves of the angles, or of all: see uses_leave_out)."""

from dejitter.pipeline.steplog import logged_step
from dejitter.pipeline.alignment import reconstruct_reference, uses_leave_out

sm = snakemake  # noqa: F821 - injected by Snakemake
with logged_step(sm.log[0], scan=sm.wildcards.scan, step="mlem", threads=sm.threads,
                 attempt=sm.resources.attempt):
    leave_out = uses_leave_out(sm.params.method, sm.input.get("model"))
    reconstruct_reference(sm.input.binned, sm.output.volumes, leave_out=leave_out, mlem_iter=sm.params.mlem_iter,
                          center=sm.params.center, backend=sm.params.backend, device=sm.params.device,
                          initial_shifts=sm.params.initial_shifts, method=sm.params.method,
                          chunk_divisor=sm.resources.chunk_divisor)
