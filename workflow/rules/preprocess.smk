# Read the raw scan, flat/dark-normalise to line integrals, and bin for steps A-C.
# The full-resolution line integrals are temporary: Snakemake deletes them once steps D, E (the
# uncorrected QC reconstruction) and QC have read them (`--notemp` keeps them).


rule preprocess:
    input:
        raw=raw_scan_input,
    output:
        projections=temp("results/{scan}/projections.h5"),
        binned="results/{scan}/binned.h5",
    log:
        "logs/{scan}/preprocess.log",
    benchmark:
        "logs/{scan}/preprocess.benchmark.tsv"
    conda:
        "../envs/preprocess.yaml"
    threads: 1
    resources:
        mem_mb=step_mem_mb("preprocess"),
        runtime=step_runtime("preprocess"),
        chunk_divisor=chunk_divisor,
        attempt=attempt_number,
    params:
        raw=lambda wc: scan_value(wc.scan, "path"),
        fmt=lambda wc: scan_value(wc.scan, "format", "auto"),
        angles=lambda wc: scan_value(wc.scan, "angles"),
        flats=lambda wc: scan_value(wc.scan, "flats"),
        darks=lambda wc: scan_value(wc.scan, "darks"),
        normalised=lambda wc: bool(scan_value(wc.scan, "normalised", False)),
        layout=scan_layout,
        frames=lambda wc: scan_value(wc.scan, "frames"),
        binning=config["binning"],
        median_size=config["median_filter"],
        max_bad_fraction=config["max_bad_fraction"],
        memory_budget_mb=config["memory_budget_mb"],
    message:
        "Scan {wildcards.scan}: read, flat/dark-normalise, bin for steps A-C"
    script:
        "../scripts/preprocess.py"
