"""Adapter: step C, estimate the jitter; writes shifts.csv and the registration provenance."""

import json

from dejitter.files import atomic_path
from dejitter.pipeline.steplog import logged_step
from dejitter.pipeline.alignment import register

sm = snakemake  # noqa: F821 - injected by Snakemake
with logged_step(sm.log[0], scan=sm.wildcards.scan, step="register", threads=sm.threads,
                 attempt=sm.resources.attempt):
    provenance = register(sm.input.binned, sm.output.shifts, references_path=sm.input.get("references"),
                          method=sm.params.method, model_path=sm.input.get("model"),
                          model_sha256=sm.params.model_sha256, network_passes=sm.params.network_passes,
                          refine_iterations=sm.params.refine_iterations,
                          mlem_iter=sm.params.mlem_iter, center=sm.params.center, backend=sm.params.backend,
                          device=sm.params.device, max_spread=sm.params.max_spread,
                          initial_shifts=sm.params.initial_shifts,
                          chunk_divisor=sm.resources.chunk_divisor)
    with atomic_path(sm.output.provenance) as tmp:
        tmp.write_text(json.dumps(provenance, indent=2) + "\n")
