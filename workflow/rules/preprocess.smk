# Read the raw scan, flat/dark-normalise to line integrals, and bin for steps A-C.

import os


def raw_scan_input(wildcards):
    """The raw scan as input where it exists or the workflow makes it (demo scans).  Any other
    missing path is left to the step, which refuses that one scan with a clear message, instead of
    Snakemake stopping the whole campaign before it starts."""
    path = scan_value(wildcards.scan, "path")
    demos = {os.path.normpath(f"data/demo/{name}.h5") for name in config.get("demo", {}).get("scans", {})}
    return [path] if os.path.exists(path) or os.path.normpath(path) in demos else []


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
