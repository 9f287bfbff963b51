# Steps A (MLEM), B (reprojection) and C (jitter estimation) on the binned projections. With
# method auto on wide scans, A and B work binned once more, at the resolution of auto's search,
# the only reader of their references (dejitter.binning.reference_binning).

# The GPU-capable steps declare gpu=1: `--resources gpu=N` bounds them locally, and the SLURM
# profile sends them to the GPU partition. Without a GPU they run on the CPU. Their memory, GPU
# memory and run time follow the scan (rules/common.smk); a step that runs out of memory is
# retried (twice) with its slices in 2, then 4 chunks.


rule mlem:
    input:
        unpack(mlem_inputs),
    output:
        volumes="results/{scan}/mlem.h5",
    log:
        "logs/{scan}/mlem.log",
    benchmark:
        "logs/{scan}/mlem.benchmark.tsv"
    retries: 2
    conda:
        "../envs/reconstruction.yaml"
    threads: 2
    resources:
        mem_mb=step_mem_mb("mlem"),
        runtime=step_runtime("mlem"),
        gpu=1,
        gpu_mem_mb=step_gpu_mem_mb("mlem"),
        chunk_divisor=chunk_divisor,
        attempt=attempt_number,
    params:
        method=config["method"],
        mlem_iter=config["mlem_iterations"],
        center=scan_center,
        initial_shifts=scan_initial_shifts,
        backend=config["backend"],
        device=device(),
    message:
        "Scan {wildcards.scan}: step A, MLEM"
    script:
        "../scripts/mlem.py"


rule reproject:
    input:
        binned="results/{scan}/binned.h5",
        volumes="results/{scan}/mlem.h5",
    output:
        references="results/{scan}/reprojection.h5",
    log:
        "logs/{scan}/reproject.log",
    benchmark:
        "logs/{scan}/reproject.benchmark.tsv"
    retries: 2
    conda:
        "../envs/reconstruction.yaml"
    threads: 2
    resources:
        mem_mb=step_mem_mb("reproject"),
        runtime=step_runtime("reproject"),
        gpu=1,
        gpu_mem_mb=step_gpu_mem_mb("reproject"),
        chunk_divisor=chunk_divisor,
        attempt=attempt_number,
    params:
        center=scan_center,
        initial_shifts=scan_initial_shifts,
        backend=config["backend"],
        device=device(),
    message:
        "Scan {wildcards.scan}: step B, reprojection"
    script:
        "../scripts/reproject.py"


rule register:
    input:
        unpack(registration_inputs),
    output:
        shifts="results/{scan}/shifts.csv",
        provenance="results/{scan}/registration.json",
    log:
        "logs/{scan}/register.log",
    benchmark:
        "logs/{scan}/register.benchmark.tsv"
    retries: 2
    conda:
        "../envs/reconstruction.yaml"
    threads: 2
    resources:
        mem_mb=step_mem_mb("register"),
        runtime=step_runtime("register"),
        gpu=1,
        gpu_mem_mb=step_gpu_mem_mb("register"),
        chunk_divisor=chunk_divisor,
        attempt=attempt_number,
    params:
        method=config["method"],
        model_sha256=config["model_sha256"] or None,
        own_passes=registration_passes(),
        network_passes=config["network_passes"],
        refine_iterations=config["refine_iterations"],
        max_spread=config["max_spread"],
        mlem_iter=config["mlem_iterations"],
        center=scan_center,
        initial_shifts=scan_initial_shifts,
        backend=config["backend"],
        device=device(),
    message:
        "Scan {wildcards.scan}: step C, jitter estimation ({params.method}{params.own_passes})"
    script:
        "../scripts/register.py"
