# Synthetic demo scans: 3-D phantoms, random jitter, Poisson counts, flats and darks in Data Exchange HDF5.


rule demo_scan:
    output:
        scan="data/demo/{demo}.h5",
        truth="data/demo/{demo}_truth.csv",
    log:
        "logs/demo/{demo}.log",
    benchmark:
        "logs/demo/{demo}.benchmark.tsv"
    wildcard_constraints:
        demo="|".join(config.get("demo", {}).get("scans", {})) or "NO_DEMO_SCANS",
    conda:
        "../envs/preprocess.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        settings=lambda wc: config["demo"]["scans"][wc.demo],
        size=config.get("demo", {}).get("size", 128),
        angles=config.get("demo", {}).get("angles", 181),
        amplitude=config.get("demo", {}).get("amplitude", 20.0),
        photons=config.get("demo", {}).get("photons", 5000.0),
    message:
        "Demo scan {wildcards.demo}: synthetic phantom, jitter, counts, flats and darks"
    script:
        "../scripts/demo_scan.py"
