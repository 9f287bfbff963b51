"""Adapter: step A, MLEM of the two interleaved halves of the angles."""

from dejitter.pipeline import reconstruct_reference
from dejitter.steplog import logged_step

sm = snakemake  # noqa: F821 - injected by Snakemake
with logged_step(sm.log[0], scan=sm.wildcards.scan, step="mlem", threads=sm.threads):
    reconstruct_reference(sm.input.binned, sm.output.volumes, mlem_iter=sm.params.mlem_iter, center=sm.params.center,
                          backend=sm.params.backend, device=sm.params.device)
