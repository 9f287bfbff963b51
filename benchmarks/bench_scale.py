"""Beamline scale: whole scans from raw file to corrected volume, through the workflow, at growing detector sizes.

For each size a scan is generated with analytic projections of an ellipsoid particle
(:func:`dejitter.training.ellipsoids.project_ellipsoids`: exact at any size, no voxel volume), jitter
uniform in +-``amplitude`` px in x and y applied exactly, Poisson counts with flats and darks, written
as Data Exchange (uint16, as detectors write it).  The checkout's workflow then runs on it in a
campaign directory of its own with the default configuration (``snakemake --cores N``), and the
script records, per size:

- wall time of the whole run and of each step (the rules' ``benchmark:`` files), peak memory of each
  step (max RSS) against ``memory_budget_mb``;
- disk: the raw file, the scan's results once its temporary intermediates are gone, against the
  issue's target of raw + 1.2 x volume, and the results' peak while the scan runs (sampled every 2 s);
- accuracy: the DESIGN.md metric (modulo rigid motion) of the estimated jitter against the truth,
  px^2 of the full-resolution input;
- the baseline in the same run: one forward and one adjoint projection of 16 slices at steps A-C's
  resolution with the sparse-matrix projector (where its matrix fits) and the matrix-free one.

Prints and records ``benchmarks/results/scale.md`` (and ``.json``).  Sizes are
``COLSxROWSxANGLES[:AMPLITUDE]``; the default covers the CPU sizes of the issue.

Run: .venv/bin/python benchmarks/bench_scale.py [--sizes 256x256x181 512x512x361 ...] [--cores 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch
import yaml

from dejitter.files import write_shifts
from dejitter.binning import auto_binning
from dejitter.reconstruction.projectors import get_projector, matrix_bytes
from dejitter.training.ellipsoids import project_ellipsoids, random_particle
from dejitter.training.synthesis import random_jitter

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
DEFAULT_SIZES = ["256x256x181", "512x512x361", "512x128x361", "1024x1024x721", "2048x256x721"]
PHOTONS = 5000.0


def parse_size(text):
    """``COLSxROWSxANGLES[:AMPLITUDE]`` -> (cols, rows, angles, amplitude)."""
    shape, _, amplitude = text.partition(":")
    cols, rows, angles = (int(v) for v in shape.split("x"))
    return cols, rows, angles, float(amplitude or 20.0)


def write_scan(path, truth_path, cols, rows, angles, amplitude, seed):
    """A jittered scan as Data Exchange counts (uint16), written in chunks of angles; returns seconds taken."""
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    particle = random_particle(rows, cols, rng)
    theta_deg = np.linspace(0, 180, angles, endpoint=False)
    jitter = random_jitter(angles, amplitude, rng)
    yy, xx = np.mgrid[:rows, :cols] / max(rows, cols)
    beam = (PHOTONS * (1 + 0.1 * np.sin(2 * np.pi * (xx + 0.5 * yy)))).astype(np.float32)
    with h5py.File(path, "w") as f:
        data = f.create_dataset("exchange/data", (angles, rows, cols), dtype=np.uint16, chunks=(1, rows, cols))
        for a in range(0, angles, 32):
            part = slice(a, min(a + 32, angles))
            line_integrals = project_ellipsoids(particle, np.deg2rad(theta_deg[part]), rows, cols,
                                                shifts=jitter[part])
            counts = rng.poisson(beam * np.exp(-line_integrals)) + rng.poisson(100.0, line_integrals.shape)
            data[part] = np.clip(counts, 0, 65535).astype(np.uint16)
        f["exchange/data_white"] = (rng.poisson(beam, (10, rows, cols)) + rng.poisson(100.0, (10, rows, cols))
                                    ).astype(np.uint16)
        f["exchange/data_dark"] = rng.poisson(100.0, (10, rows, cols)).astype(np.uint16)
        f["exchange/theta"] = theta_deg
    write_shifts(truth_path, theta_deg, jitter)
    return time.perf_counter() - start


def projector_baseline(cols, angles):
    """Seconds for one forward and one adjoint projection of 16 slices at steps A-C's resolution, per method."""
    width = cols // auto_binning(cols)
    theta = np.deg2rad(np.linspace(0, 180, angles, endpoint=False))
    volume = torch.rand(16, width, width)
    out = {"binned_width": width, "matrix_mb": round(matrix_bytes(width, angles) / 2**20)}
    for method in ("matrix", "matrix-free"):
        if method == "matrix" and matrix_bytes(width, angles) > 4 * 2**30:
            out[method] = None  # does not fit this workstation's share
            continue
        start = time.perf_counter()
        projector = get_projector(width, theta, method=method, device="cpu")
        built = time.perf_counter()
        sino = projector.forward(volume)
        projector.adjoint(sino)
        out[method] = {"build_s": round(built - start, 3), "forward_adjoint_s": round(time.perf_counter() - built, 3)}
    return out


def disk_mb(folder):
    """Space the files under ``folder`` take on disk (allocated blocks), MiB."""
    total = 0
    for parent, _, names in os.walk(folder):
        for name in names:
            with contextlib.suppress(OSError):  # a file deleted while we walk
                total += os.stat(os.path.join(parent, name)).st_blocks * 512
    return total / 2**20


def run_workflow(campaign, cores, every_s=2.0):
    """Run the workflow on ``campaign``; returns (wall seconds, peak disk of its results in MiB, sampled)."""
    command = [str(SNAKEMAKE), "--snakefile", str(ROOT / "workflow" / "Snakefile"), "--directory", str(campaign),
               "--cores", str(cores)]
    peak, done = [0.0], threading.Event()

    def sample():
        while not done.wait(every_s):
            peak[0] = max(peak[0], disk_mb(campaign / "results"))

    sampler = threading.Thread(target=sample, daemon=True)
    start = time.perf_counter()
    sampler.start()
    result = subprocess.run(command, capture_output=True, text=True, cwd=campaign)
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-4000:])
    return wall, peak[0]


def measure(size_text, cores, workdir, reuse_raw=False):
    cols, rows, angles, amplitude = parse_size(size_text)
    campaign = workdir / size_text.replace(":", "_")
    raw, truth = campaign / "scan.h5", campaign / "truth.csv"
    reused = reuse_raw and raw.exists() and truth.exists()
    if reused:  # the same scan as this script generates (same seed): keep it, and nothing else of the run
        for path in campaign.iterdir():
            if path not in (raw, truth):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    elif campaign.exists():  # its cached results would be timed as if they were computed
        raise SystemExit(f"{campaign} exists from an earlier run: remove it, give another --workdir, or --reuse-raw")
    (campaign / "config").mkdir(parents=True)
    generate_s = None if reused else write_scan(raw, truth, cols, rows, angles, amplitude, seed=20_000 + cols + rows)
    config = {"scans": "config/scans.tsv", "model": str(ROOT / "resources" / "models" / "dejitter_resnet.pt")}
    (campaign / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    (campaign / "config" / "scans.tsv").write_text(f"scan\tpath\ttrue_shifts\nscale\t{raw}\t{truth}\n")
    wall, peak_disk = run_workflow(campaign, cores)
    steps = {}
    for path in sorted((campaign / "logs" / "scale").glob("*.benchmark.tsv")):
        row = pd.read_csv(path, sep="\t").iloc[0]
        steps[path.name.removesuffix(".benchmark.tsv")] = {"s": round(float(row["s"]), 1),
                                                           "max_rss_mb": round(float(row["max_rss"]))}
    summary = pd.read_csv(campaign / "results" / "summary.tsv", sep="\t").iloc[0]
    volume_mb = cols * cols * rows * 4 / 2**20
    record = {
        "size": size_text, "cols": cols, "rows": rows, "angles": angles, "amplitude_px": amplitude,
        "generate_s": None if generate_s is None else round(generate_s, 1), "wall_s": round(wall, 1), "steps": steps,
        "raw_mb": round(raw.stat().st_size / 2**20, 1), "results_mb": float(summary["disk_mb"]),
        "peak_results_mb": round(peak_disk),
        "volume_mb": round(volume_mb, 1), "binning": int(summary.get("binning", 0)),
        "mse_px2": float(summary["mse_vs_truth_px2"]), "mse_uncorrected_px2": float(summary["mse_uncorrected_px2"]),
        "selected": str(summary.get("selected", "")), "projector": projector_baseline(cols, angles),
    }
    record["disk_target_mb"] = round(record["raw_mb"] + 1.2 * volume_mb, 1)
    return record


def report(records, cores):
    load = os.getloadavg()[0]
    lines = ["# Beamline scale: raw file to corrected volume through the workflow", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, `--cores {cores}`, torch {torch.__version__}, "
             f"no GPU; load average at the end {load:.1f}. Default configuration (method auto, binning auto, "
             "memory_budget_mb 4000). Scans: analytic ellipsoid particle, jitter uniform in +-amplitude px in x and "
             "y, Poisson counts (5000 photons), Data Exchange uint16. MSE: DESIGN.md metric, px^2 of the input.", "",
             "| detector x rows x angles | jitter | binning | wall (s) | MSE (px^2) | uncorrected | kept | "
             "raw (MB) | results (MB) | target raw + 1.2 vol (MB) | results at peak (MB) | largest step RSS (MB) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in records:
        peak = max(s["max_rss_mb"] for s in r["steps"].values())
        lines.append(f"| {r['cols']} x {r['rows']} x {r['angles']} | +-{r['amplitude_px']:g} | {r['binning']} | "
                     f"{r['wall_s']:.0f} | {r['mse_px2']:.3g} | {r['mse_uncorrected_px2']:.3g} | {r['selected']} | "
                     f"{r['raw_mb']:.0f} | {r['results_mb']:.0f} | {r['disk_target_mb']:.0f} | "
                     f"{r.get('peak_results_mb', 'not sampled')} | {peak} |")
    step_names = sorted({name for r in records for name in r["steps"]})
    lines += ["", "Time (s) / peak RSS (MB) of each step:", "",
              "| step | " + " | ".join(r["size"] for r in records) + " |", "| --- |" + " --- |" * len(records)]
    for name in step_names:
        cells = [f"{r['steps'][name]['s']:.0f} / {r['steps'][name]['max_rss_mb']}" if name in r["steps"] else ""
                 for r in records]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Baseline in the same run: one forward + one adjoint projection of 16 slices at steps A-C's "
              "resolution (seconds; matrix: the sparse-matrix projector, its build included separately):", "",
              "| size | binned width | matrix MB | matrix build | matrix fwd+adj | matrix-free fwd+adj | ratio |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in records:
        p = r["projector"]
        m, f = p.get("matrix"), p["matrix-free"]
        ratio = f"{m['forward_adjoint_s'] / f['forward_adjoint_s']:.2f}" if m else ""
        lines.append(f"| {r['size']} | {p['binned_width']} | {p['matrix_mb']} | {m['build_s'] if m else 'n/a'} | "
                     f"{m['forward_adjoint_s'] if m else 'n/a'} | {f['forward_adjoint_s']} | {ratio} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=DEFAULT_SIZES)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the campaigns here (default: a temp dir)")
    parser.add_argument("--reuse-raw", action="store_true",
                        help="in --workdir, reuse a scan generated by an earlier run of the same size (results rerun)")
    args = parser.parse_args(argv)
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        for size in args.sizes:
            record = measure(size, args.cores, workdir, reuse_raw=args.reuse_raw)
            records.append(record)
            print(json.dumps(record), flush=True)
            RESULTS.mkdir(exist_ok=True)
            (RESULTS / "scale.json").write_text(json.dumps(records, indent=2))
            (RESULTS / "scale.md").write_text(report(records, args.cores))
    print(report(records, args.cores))


if __name__ == "__main__":
    main()
