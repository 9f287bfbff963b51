# `snakemake train`: synthesise training pairs through steps A and B, then train the network.
# Not part of the default target. The model lands in results/training/; ship it by copying
# the .pt and its .json card to resources/models/ (see resources/models/README.md).

# Fine-tuning starts from this model file (and its card); empty: training from scratch.
INIT_MODEL = config["train"].get("init_model", "")


rule training_data:
    input:
        aligned=config["train"].get("aligned_scans", []),
    output:
        dataset="results/training/pairs.h5",
    log:
        "logs/training/training_data.log",
    benchmark:
        "logs/training/training_data.benchmark.tsv"
    conda:
        "../envs/train.yaml"
    threads: 16  # capped to --cores locally, to max-threads on a cluster
    resources:
        mem_mb=16000,
        runtime=120,
    params:
        scans=config["train"]["scans"],
        input_size=config["train"]["input_size"],
        aligned_repeats=config["train"].get("aligned_repeats", 4),
    message:
        "Training data: {params.scans} synthetic scans through steps A and B"
    script:
        "../scripts/training_data.py"


rule train_network:
    input:
        dataset="results/training/pairs.h5",
        init_model=[INIT_MODEL] if INIT_MODEL else [],
    output:
        model="results/training/dejitter_resnet.pt",
        card="results/training/dejitter_resnet.json",
        metrics=report("results/training/metrics.csv", category="Training"),
    log:
        "logs/training/train_network.log",
    benchmark:
        "logs/training/train_network.benchmark.tsv"
    conda:
        "../envs/train.yaml"
    threads: 16  # capped to --cores locally, to max-threads on a cluster
    resources:
        mem_mb=16000,
        runtime=240,
        gpu=1,
    params:
        epochs=config["train"]["epochs"],
        batch_size=config["train"]["batch_size"],
        learning_rate=config["train"]["learning_rate"],
        input_size=config["train"]["input_size"],
        time_budget_s=config["train"]["time_budget_s"],
        start=f"fine-tuning {INIT_MODEL}" if INIT_MODEL else "from scratch",
    message:
        "Training the network ({params.start}, {params.epochs} epochs at most)"
    script:
        "../scripts/train_network.py"


rule train:
    input:
        rules.train_network.output.model,
