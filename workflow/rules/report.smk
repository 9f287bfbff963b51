# QC figures per scan, the campaign summary and its figure; all of them go into the report.


rule qc:
    input:
        shifts="results/{scan}/shifts.csv",
        provenance="results/{scan}/registration.json",
        sinograms="results/{scan}/sinograms.h5",
        volume="results/{scan}/volume.h5",
        volume_uncorrected="results/{scan}/volume_uncorrected.h5",
        true_shifts=true_shifts,
    output:
        shifts=report(
            "results/{scan}/qc/shifts.png",
            caption="../report/shifts.rst",
            category="Scans",
            subcategory="{scan}",
            labels={"scan": "{scan}", "figure": "shifts"},
        ),
        sinogram=report(
            "results/{scan}/qc/sinogram.png",
            caption="../report/sinogram.rst",
            category="Scans",
            subcategory="{scan}",
            labels={"scan": "{scan}", "figure": "sinogram"},
        ),
        slices=report(
            "results/{scan}/qc/slices.png",
            caption="../report/slices.rst",
            category="Scans",
            subcategory="{scan}",
            labels={"scan": "{scan}", "figure": "slices"},
        ),
        histogram=report(
            "results/{scan}/qc/histogram.png",
            caption="../report/histogram.rst",
            category="Scans",
            subcategory="{scan}",
            labels={"scan": "{scan}", "figure": "histogram"},
        ),
        metrics="results/{scan}/metrics.json",
    log:
        "logs/{scan}/qc.log",
    benchmark:
        "logs/{scan}/qc.benchmark.tsv"
    conda:
        "../envs/qc.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    message:
        "Scan {wildcards.scan}: QC figures and metrics"
    script:
        "../scripts/qc.py"


rule summary:
    input:
        metrics=expand("results/{scan}/metrics.json", scan=SCANS.index),
        provenance=expand("results/{scan}/registration.json", scan=SCANS.index),
        benchmarks=lambda wc: list(step_benchmarks(wc).values()),
        # Made before the summary, so that its disk_mb counts them.
        tiffs=(
            expand("results/{scan}/volume.tif", scan=SCANS.index)
            if config.get("volume_tiff")
            else []
        ),
    output:
        summary=report(
            "results/summary.tsv", caption="../report/summary.rst", category="Campaign"
        ),
        figure=report(
            "results/campaign.png",
            caption="../report/campaign.rst",
            category="Campaign",
        ),
    log:
        "logs/summary.log",
    benchmark:
        "logs/summary.benchmark.tsv"
    conda:
        "../envs/qc.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        scans=list(SCANS.index),
        n_scans=len(SCANS),
        benchmarks=step_benchmarks,
    message:
        "Campaign summary of {params.n_scans} scans"
    script:
        "../scripts/summary.py"
