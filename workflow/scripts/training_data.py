"""Adapter: synthesise the training pairs (phantoms taken through steps A and B)."""

from dejitter.pipeline.steplog import logged_step
from dejitter.training.data import TrainingConditions
from dejitter.training.train import make_dataset, write_dataset

# The worker processes are spawned and re-import this file as __mp_main__: only the parent runs the step.
if __name__ == "__main__":
    sm = snakemake  # noqa: F821 - injected by Snakemake
    with logged_step(sm.log[0], scan="training", step="training_data", threads=1):
        dataset = make_dataset(range(sm.params.scans), conditions=TrainingConditions(),
                               input_size=sm.params.input_size, processes=sm.threads, aligned_scans=sm.input.aligned,
                               aligned_repeats=sm.params.aligned_repeats)
        write_dataset(sm.output.dataset, dataset)
