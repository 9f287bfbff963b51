# Steps A (MLEM), B (reprojection) and C (jitter estimation) on the binned projections.

# The GPU-capable steps declare gpu=1: `--resources gpu=N` bounds them locally, and the SLURM
# profile sends them to the GPU partition. Without a GPU they run on the CPU.


rule mlem:
    input:
        unpack(mlem_inputs),
    output:
        volumes="results/{scan}/mlem.h5",
    params:
        method=config["method"],
        mlem_iter=config["mlem_iterations"],
        center=scan_center,
        backend=config["backend"],
        device=device(),
    message:
        "Scan {wildcards.scan}: step A, MLEM"
    log:
        "logs/{scan}/mlem.log",
    benchmark:
        "logs/{scan}/mlem.benchmark.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=1,
    conda:
        "../envs/reconstruction.yaml"
    script:
        "../scripts/mlem.py"


rule reproject:
    input:
        binned="results/{scan}/binned.h5",
        volumes="results/{scan}/mlem.h5",
    output:
        references="results/{scan}/reprojection.h5",
    params:
        center=scan_center,
        backend=config["backend"],
        device=device(),
    message:
        "Scan {wildcards.scan}: step B, reprojection"
    log:
        "logs/{scan}/reproject.log",
    benchmark:
        "logs/{scan}/reproject.benchmark.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=20,
        gpu=1,
    conda:
        "../envs/reconstruction.yaml"
    script:
        "../scripts/reproject.py"


rule register:
    input:
        unpack(registration_inputs),
    output:
        shifts="results/{scan}/shifts.csv",
        provenance="results/{scan}/registration.json",
    params:
        method=config["method"],
        model_sha256=config["model_sha256"] or None,
        network_passes=config["network_passes"],
        refine_iterations=config["refine_iterations"],
        max_spread=config["max_spread"],
        mlem_iter=config["mlem_iterations"],
        center=scan_center,
        backend=config["backend"],
        device=device(),
    message:
        "Scan {wildcards.scan}: step C, jitter estimation ({params.method})"
    log:
        "logs/{scan}/register.log",
    benchmark:
        "logs/{scan}/register.benchmark.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=1,
    conda:
        "../envs/reconstruction.yaml"
    script:
        "../scripts/register.py"
