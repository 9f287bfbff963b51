"""Campaign scale: N small generated scans (N = 5, 10, 20) through the workflow with --cores 2.

Records the wall time of each campaign and, from the rules' ``benchmark:`` files, the peak memory
(max_rss) of every job, then checks the two properties a beamtime needs: time grows linearly with
N (time per scan stays flat) and the peak memory of a job does not grow with N.
Figures are printed and written to benchmarks/results/campaign.md.

Run: .venv/bin/python benchmarks/bench_campaign.py [--sizes 5 10 20]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from campaign import make_campaign, run_snakemake  # noqa: E402 - the tests' campaign generator

RESULTS = Path(__file__).parent / "results"
KINDS = ("particle", "foam", "ellipsoids", "layered", "featureless")


def run_campaign(n_scans, workdir):
    scans = {f"scan_{i:03d}": (KINDS[i % len(KINDS)], 1000 + i) for i in range(n_scans)}
    make_campaign(workdir, scans, method="iterative", size=48, angles=61, amplitude=4.0)
    start = time.perf_counter()
    result = run_snakemake(workdir, "--cores", "2", timeout=3600)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    jobs = []
    for path in (workdir / "logs").rglob("*.benchmark.tsv"):
        row = pd.read_csv(path, sep="\t").iloc[0]
        step = "demo_scan" if path.parent.name == "demo" else path.name.removesuffix(".benchmark.tsv")
        jobs.append({"step": step, "s": float(row["s"]),
                     "max_rss_mb": float(row["max_rss"])})
    return wall, pd.DataFrame(jobs)


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 10, 20])
    args = parser.parse_args(argv)
    rows, per_step = [], {}
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            wall, jobs = run_campaign(n, Path(tmp))
        peak = jobs.groupby("step")["max_rss_mb"].max()
        per_step[n] = peak.to_dict()
        rows.append({"scans": n, "wall_s": wall, "wall_per_scan_s": wall / n, "jobs": len(jobs),
                     "peak_job_rss_mb": float(jobs["max_rss_mb"].max())})
        print(f"N={n:3d}: {wall:7.1f} s wall ({wall / n:5.2f} s per scan), {len(jobs)} jobs, "
              f"largest job peak {jobs['max_rss_mb'].max():.0f} MB")
    table = pd.DataFrame(rows)
    slope, intercept = np.polyfit(table["scans"], table["wall_s"], 1)
    fit = slope * table["scans"] + intercept
    r2 = 1 - float(((table["wall_s"] - fit) ** 2).sum() / ((table["wall_s"] - table["wall_s"].mean()) ** 2).sum())
    growth = table["peak_job_rss_mb"].iloc[-1] / table["peak_job_rss_mb"].iloc[0]
    lines = ["# Campaign scale (workflow, --cores 2)", "",
             "Small generated scans (48 px, 61 angles, method iterative), the whole workflow including QC and summary.", "",
             "| scans | wall time (s) | per scan (s) | jobs | largest peak RSS of a job (MB) |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r.scans} | {r.wall_s:.1f} | {r.wall_per_scan_s:.2f} | {r.jobs} | {r.peak_job_rss_mb:.0f} |"
              for r in table.itertuples()]
    lines += ["", f"Linear fit: {slope:.2f} s per scan + {intercept:.1f} s fixed, R^2 = {r2:.4f}. "
              f"Largest job peak memory at N={args.sizes[-1]} / at N={args.sizes[0]}: {growth:.2f}.", "",
              "Peak RSS (MB) per step, largest job of the step. Snakemake samples a job's memory periodically, "
              "so a job that ends before the first sample (a few seconds) reports almost nothing.", "",
              "| step | " + " | ".join(f"N={n}" for n in args.sizes) + " |", "| --- |" + " --- |" * len(args.sizes)]
    for step in sorted(per_step[args.sizes[0]]):
        lines.append(f"| {step} | " + " | ".join(f"{per_step[n].get(step, float('nan')):.0f}" for n in args.sizes) + " |")
    print(f"linear fit {slope:.2f} s/scan + {intercept:.1f} s, R^2 {r2:.4f}; peak memory ratio {growth:.2f}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "campaign.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "campaign.json").write_text(json.dumps({"rows": rows, "per_step_peak_mb": per_step,
                                                       "slope_s_per_scan": slope, "r2": r2}, indent=2))


if __name__ == "__main__":
    main()
