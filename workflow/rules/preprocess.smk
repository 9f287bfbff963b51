# Read the raw scan, flat/dark-normalise to line integrals, and bin for steps A-C.

rule preprocess:
    input:
        raw=raw_scan_input,
    output:
        projections="results/{scan}/projections.h5",
        binned="results/{scan}/binned.h5",
    params:
        raw=lambda wc: scan_value(wc.scan, "path"),
        fmt=lambda wc: scan_value(wc.scan, "format", "auto"),
        angles=lambda wc: scan_value(wc.scan, "angles"),
        flats=lambda wc: scan_value(wc.scan, "flats"),
        darks=lambda wc: scan_value(wc.scan, "darks"),
        normalised=lambda wc: bool(scan_value(wc.scan, "normalised", False)),
        binning=config["binning"],
        median_size=config["median_filter"],
        max_bad_fraction=config["max_bad_fraction"],
        memory_budget_mb=config["memory_budget_mb"],
    message:
        "Scan {wildcards.scan}: read, flat/dark-normalise, bin for steps A-C"
    log:
        "logs/{scan}/preprocess.log",
    benchmark:
        "logs/{scan}/preprocess.benchmark.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    conda:
        "../envs/preprocess.yaml"
    script:
        "../scripts/preprocess.py"
