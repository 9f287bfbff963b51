"""Adapter: train the network on the synthesised pairs and write the model with its card."""

from pathlib import Path

from dejitter.pipeline.steplog import logged_step
from dejitter.training.train import main

sm = snakemake  # noqa: F821 - injected by Snakemake
with logged_step(sm.log[0], scan="training", step="train_network", threads=sm.threads):
    main(["--dataset", sm.input.dataset, "--out", sm.output.model, "--workdir", str(Path(sm.output.metrics).parent),
          "--epochs", str(sm.params.epochs), "--batch-size", str(sm.params.batch_size),
          "--lr", str(sm.params.learning_rate), "--input-size", str(sm.params.input_size),
          "--time-budget", str(sm.params.time_budget_s), "--threads", str(sm.threads),
          *(["--init-model", sm.input.init_model[0]] if sm.input.init_model else [])])
