"""Adapter: write one synthetic demo scan (Data Exchange HDF5 + true jitter CSV)."""

from dejitter.pipeline.steplog import logged_step
from dejitter.training.synthesis import make_demo_scan

sm = snakemake  # noqa: F821 - injected by Snakemake
with logged_step(sm.log[0], scan=sm.wildcards.demo, step="demo_scan", threads=sm.threads):
    make_demo_scan(sm.output.scan, sm.output.truth, seed=sm.params.settings["seed"], kind=sm.params.settings["kind"],
                   size=sm.params.size, n_angles=sm.params.angles, amplitude=sm.params.amplitude,
                   photons=sm.params.photons)
