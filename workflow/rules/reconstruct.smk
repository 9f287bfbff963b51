# Steps D (shift back, full resolution) and E (final reconstruction), and the uncorrected
# reconstruction that the QC figures compare against.


rule shift_back:
    input:
        projections="results/{scan}/projections.h5",
        shifts="results/{scan}/shifts.csv",
    output:
        corrected="results/{scan}/corrected.h5",
    params:
        order=config["shift_order"],
        mode=config["shift_mode"],
        memory_budget_mb=config["memory_budget_mb"],
    message:
        "Scan {wildcards.scan}: step D, shift the projections back"
    log:
        "logs/{scan}/shift_back.log",
    benchmark:
        "logs/{scan}/shift_back.benchmark.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    conda:
        "../envs/preprocess.yaml"
    script:
        "../scripts/shift_back.py"


rule reconstruct:
    input:
        projections="results/{scan}/corrected.h5",
        provenance="results/{scan}/registration.json",
    output:
        volume="results/{scan}/volume.h5",
    params:
        center=scan_center,
        find_center=config["find_center"],
        filter_name=config["fbp_filter"],
        backend=config["backend"],
        device=device(),
        config=lambda wc: {k: v for k, v in config.items() if k not in ("demo", "train")},
        memory_budget_mb=config["memory_budget_mb"],
    message:
        "Scan {wildcards.scan}: step E, FBP of the corrected projections"
    log:
        "logs/{scan}/reconstruct.log",
    benchmark:
        "logs/{scan}/reconstruct.benchmark.tsv"
    threads: 2
    resources:
        mem_mb=6000,
        runtime=30,
        gpu=1,
    conda:
        "../envs/reconstruction.yaml"
    script:
        "../scripts/reconstruct.py"


rule reconstruct_uncorrected:
    input:
        projections="results/{scan}/projections.h5",
    output:
        volume="results/{scan}/volume_uncorrected.h5",
    params:
        center=scan_center,
        find_center=False,
        filter_name=config["fbp_filter"],
        backend=config["backend"],
        device=device(),
        config=lambda wc: {k: v for k, v in config.items() if k not in ("demo", "train")},
        memory_budget_mb=config["memory_budget_mb"],
    message:
        "Scan {wildcards.scan}: FBP without correction (for the QC figures)"
    log:
        "logs/{scan}/reconstruct_uncorrected.log",
    benchmark:
        "logs/{scan}/reconstruct_uncorrected.benchmark.tsv"
    threads: 2
    resources:
        mem_mb=6000,
        runtime=30,
        gpu=1,
    conda:
        "../envs/reconstruction.yaml"
    script:
        "../scripts/reconstruct.py"


rule volume_tiff:
    input:
        volume="results/{scan}/volume.h5",
    output:
        tiff="results/{scan}/volume.tif",
    message:
        "Scan {wildcards.scan}: volume as an ImageJ TIFF stack"
    log:
        "logs/{scan}/volume_tiff.log",
    benchmark:
        "logs/{scan}/volume_tiff.benchmark.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../envs/qc.yaml"
    script:
        "../scripts/volume_tiff.py"
