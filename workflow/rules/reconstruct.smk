# Steps D (shift back, full resolution) and E (final reconstruction), and the uncorrected
# reconstruction that the QC figures compare against, binned by `qc_binning` (a few hundred
# pixels wide: 1/64 of the cost of a full 1024 px one).
#
# The full-resolution projections, raw and corrected, are temporary: each is deleted as soon as
# its last reader is done (the QC figure reads the central row that step D keeps in
# sinograms.h5; `--notemp` keeps them). The uncorrected reconstruction runs first (priority), so
# that the raw stack is gone before step E writes the volume: a scan's peak disk is its raw file,
# one full-resolution stack and the volume.
#
# The full-resolution steps work in chunks within `memory_budget_mb`; one that runs out of
# memory (host or GPU) is retried (twice) with chunks of half, then a quarter the size.


rule shift_back:
    input:
        projections="results/{scan}/projections.h5",
        shifts="results/{scan}/shifts.csv",
    output:
        corrected=temp("results/{scan}/corrected.h5"),
        sinograms="results/{scan}/sinograms.h5",
    log:
        "logs/{scan}/shift_back.log",
    benchmark:
        "logs/{scan}/shift_back.benchmark.tsv"
    retries: 2
    conda:
        "../envs/preprocess.yaml"
    threads: 1
    resources:
        mem_mb=step_mem_mb("shift_back"),
        runtime=step_runtime("shift_back"),
        chunk_divisor=chunk_divisor,
        attempt=attempt_number,
    params:
        order=config["shift_order"],
        mode=config["shift_mode"],
        memory_budget_mb=config["memory_budget_mb"],
    message:
        "Scan {wildcards.scan}: step D, shift the projections back"
    script:
        "../scripts/shift_back.py"


rule reconstruct:
    input:
        projections="results/{scan}/corrected.h5",
        provenance="results/{scan}/registration.json",
    output:
        volume="results/{scan}/volume.h5",
    log:
        "logs/{scan}/reconstruct.log",
    benchmark:
        "logs/{scan}/reconstruct.benchmark.tsv"
    retries: 2
    conda:
        "../envs/reconstruction.yaml"
    threads: 2
    resources:
        mem_mb=step_mem_mb("reconstruct"),
        runtime=step_runtime("reconstruct"),
        gpu=1,
        gpu_mem_mb=step_gpu_mem_mb("reconstruct"),
        chunk_divisor=chunk_divisor,
        attempt=attempt_number,
    params:
        center=scan_center,
        find_center=config["find_center"],
        filter_name=config["fbp_filter"],
        backend=config["backend"],
        device=device(),
        memory_budget_mb=config["memory_budget_mb"],
        binning=1,
        crop=config["volume_crop"],
        dtype=config["volume_dtype"],
    message:
        "Scan {wildcards.scan}: step E, FBP of the corrected projections"
    script:
        "../scripts/reconstruct.py"


rule reconstruct_uncorrected:
    input:
        projections="results/{scan}/projections.h5",
    output:
        volume="results/{scan}/volume_uncorrected.h5",
    log:
        "logs/{scan}/reconstruct_uncorrected.log",
    benchmark:
        "logs/{scan}/reconstruct_uncorrected.benchmark.tsv"
    priority: 1
    retries: 2
    conda:
        "../envs/reconstruction.yaml"
    threads: 2
    resources:
        mem_mb=step_mem_mb("reconstruct_uncorrected"),
        runtime=step_runtime("reconstruct_uncorrected"),
        gpu=1,
        gpu_mem_mb=step_gpu_mem_mb("reconstruct_uncorrected"),
        chunk_divisor=chunk_divisor,
        attempt=attempt_number,
    params:
        center=scan_center,
        find_center=False,
        filter_name=config["fbp_filter"],
        backend=config["backend"],
        device=device(),
        memory_budget_mb=config["memory_budget_mb"],
        binning=config["qc_binning"],
        crop=config["volume_crop"],
        # Read only for the QC figures and the sharpness before correction: three significant
        # digits are plenty, and half the disk keeps a scan within raw + 1.2 x its volume.
        dtype="float16",
    message:
        "Scan {wildcards.scan}: FBP without correction, binning {params.binning} (for the QC figures)"
    script:
        "../scripts/reconstruct.py"


rule volume_tiff:
    input:
        volume="results/{scan}/volume.h5",
    output:
        tiff="results/{scan}/volume.tif",
    log:
        "logs/{scan}/volume_tiff.log",
    benchmark:
        "logs/{scan}/volume_tiff.benchmark.tsv"
    conda:
        "../envs/qc.yaml"
    threads: 1
    resources:
        mem_mb=step_mem_mb("volume_tiff"),
        runtime=step_runtime("volume_tiff"),
    message:
        "Scan {wildcards.scan}: volume as an ImageJ TIFF stack"
    script:
        "../scripts/volume_tiff.py"
