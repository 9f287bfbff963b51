"""Speed and accuracy of step E's two embedded FBP methods, side by side in one run.

    python benchmarks/bench_fbp.py [--direct-slices N] [--threads T]

For each geometry (128^3 with 181 angles; 512 px x 16 slices x 361 angles; 1024 px x 4 slices x
721 angles, all over a half turn) the projections of an analytic phantom (modified Shepp-Logan
ellipses, a little different in each slice) are computed exactly (line integrals of ellipses, no
projector involved), then reconstructed by the pixel-driven torch FBP (``direct``) and by the
Fourier (gridding, finufft) FBP (``fourier``).  Reported: time per slice of each, their ratio,
and accuracy against the phantom inside the disc the detector sees in every view (correlation,
RMS error, mean level relative to the truth's), plus the correlation between the two methods.
The machine is shared: its load average is printed before and after each timing, and a result
taken at a load above 1.5 is marked.  Results: stdout and benchmarks/results/fbp.md (+ .json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from dejitter.reconstruction import direct_fbp, fourier_fbp

RESULTS = Path(__file__).resolve().parent / "results" / "fbp"
GEOMETRIES = [(128, 128, 181), (512, 16, 361), (1024, 4, 721)]  # (columns, slices, angles)
BUSY = 1.5

#: Modified Shepp-Logan (Toft): density, semi-axes a, b, centre x0, y0 (fractions of the half width), angle (deg).
ELLIPSES = [(1.0, 0.69, 0.92, 0.0, 0.0, 0), (-0.8, 0.6624, 0.874, 0.0, -0.0184, 0), (-0.2, 0.11, 0.31, 0.22, 0.0, -18),
            (-0.2, 0.16, 0.41, -0.22, 0.0, 18), (0.1, 0.21, 0.25, 0.0, 0.35, 0), (0.1, 0.046, 0.046, 0.0, 0.1, 0),
            (0.1, 0.046, 0.046, 0.0, -0.1, 0), (0.1, 0.046, 0.023, -0.08, -0.605, 0),
            (0.1, 0.023, 0.023, 0.0, -0.606, 0), (0.1, 0.023, 0.046, 0.06, -0.605, 0)]


def _ellipses(n, z, n_slices):
    """The phantom's ellipses in slice z, in pixels from the slice centre: sizes swell by up to 10 %
    and the small ones drift, so that slices differ."""
    half = 0.45 * n  # inside the disc every view sees
    f = z / max(n_slices - 1, 1)
    out = []
    for k, (rho, a, b, x0, y0, phi) in enumerate(ELLIPSES):
        grow = 1.0 + (0.1 * np.sin(np.pi * f + k) if k >= 2 else 0.0)
        out.append((rho, a * half * grow, b * half * grow, (x0 + 0.05 * f * (k >= 4)) * half, y0 * half,
                    np.deg2rad(phi + 20 * f)))
    return out


def phantom_slice(n, z, n_slices):
    """The truth: the ellipses sampled at pixel centres (x = column, y = row)."""
    c = (n - 1) / 2
    yy, xx = np.mgrid[:n, :n] - c
    image = np.zeros((n, n))
    for rho, a, b, x0, y0, phi in _ellipses(n, z, n_slices):
        u = (xx - x0) * np.cos(phi) + (yy - y0) * np.sin(phi)
        v = -(xx - x0) * np.sin(phi) + (yy - y0) * np.cos(phi)
        image += rho * ((u / a) ** 2 + (v / b) ** 2 <= 1)
    return image


def phantom_projections(n, n_slices, theta):
    """Exact line integrals ``(angle, row, column)`` in TomoPy's sense: detector column
    ``t = (x - c) cos(theta) - (y - c) sin(theta) + c``."""
    c = (n - 1) / 2
    s = np.arange(n) - c
    out = np.zeros((len(theta), n_slices, n), dtype=np.float64)
    cos, sin = np.cos(theta)[:, None], -np.sin(theta)[:, None]  # the ray normal (x, y) components
    for z in range(n_slices):
        for rho, a, b, x0, y0, phi in _ellipses(n, z, n_slices):
            # Width of the ellipse along the normal, and where its centre projects.
            a_n2 = (a * (cos * np.cos(phi) + sin * np.sin(phi))) ** 2 + (b * (-cos * np.sin(phi) + sin * np.cos(phi))) ** 2
            s0 = x0 * cos + y0 * sin
            d2 = a_n2 - (s[None] - s0) ** 2
            out[:, z] += np.where(d2 > 0, 2 * rho * a * b * np.sqrt(np.clip(d2, 0, None)) / a_n2, 0.0)
    return out.astype(np.float32)


def accuracy(volume, truth):
    n = truth.shape[-1]
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    inside = xx ** 2 + yy ** 2 <= (0.47 * n) ** 2
    v, t = volume[:, inside].ravel(), truth[:, inside].ravel()
    return {"r": float(np.corrcoef(v, t)[0, 1]), "rmse": float(np.sqrt(np.mean((v - t) ** 2))),
            "mean_ratio": float(v.mean() / t.mean())}


def timed(fn):
    load = os.getloadavg()[0]
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    return out, seconds, max(load, os.getloadavg()[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--direct-slices", type=int, default=None,
                        help="time the (slow) direct FBP on at most this many slices of each geometry")
    parser.add_argument("--threads", type=int, default=None, help="torch threads and NUFFT workers (default all)")
    args = parser.parse_args()
    threads = args.threads or os.cpu_count()
    torch.set_num_threads(threads)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU threads, {threads} used, torch {torch.__version__}; "
          f"load average {os.getloadavg()}")
    rows = []
    for n, n_slices, n_angles in GEOMETRIES:
        theta = np.deg2rad(np.linspace(0, 180, n_angles, endpoint=False))
        projections = phantom_projections(n, n_slices, theta)
        truth = np.stack([phantom_slice(n, z, n_slices) for z in range(n_slices)])
        k = min(n_slices, args.direct_slices or n_slices)
        fourier_fbp(projections[:, :1], theta)  # first call: finufft's library and FFTW planning
        fourier, t_fourier, load_f = timed(lambda: fourier_fbp(projections, theta))
        direct, t_direct, load_d = timed(lambda: direct_fbp(projections[:, :k], theta, device="cpu"))
        row = {"n_cols": n, "n_slices": n_slices, "n_angles": n_angles, "direct_slices_timed": k,
               "direct_s_per_slice": t_direct / k, "fourier_s_per_slice": t_fourier / n_slices,
               "fourier_s_total": t_fourier, "speedup": (t_direct / k) / (t_fourier / n_slices),
               "direct": accuracy(direct, truth[:k]), "fourier": accuracy(fourier, truth),
               "r_fourier_direct": float(np.corrcoef(fourier[:k].ravel(), direct.ravel())[0, 1]),
               "load_average": max(load_f, load_d)}
        row["busy"] = row["load_average"] > BUSY
        rows.append(row)
        print(f"{n} px x {n_slices} slices x {n_angles} angles: direct {row['direct_s_per_slice']:.3f} s/slice, "
              f"fourier {row['fourier_s_per_slice']:.4f} s/slice ({t_fourier:.2f} s in all), x{row['speedup']:.0f}; "
              f"r vs truth {row['direct']['r']:.4f} / {row['fourier']['r']:.4f}, mean level "
              f"{row['direct']['mean_ratio']:.4f} / {row['fourier']['mean_ratio']:.4f}, "
              f"r(fourier, direct) {row['r_fourier_direct']:.4f}; load {row['load_average']:.2f}")
    write(rows, threads)


def write(rows, threads):
    busy = any(r["busy"] for r in rows)
    lines = [
        "# FBP: pixel-driven torch (direct) against Fourier gridding (finufft)", "",
        "Written by `benchmarks/bench_fbp.py` (one run). Machine: "
        f"{platform.machine()}, {os.cpu_count()} CPU threads ({threads} used), torch {torch.__version__}. "
        "Projections: exact line integrals of a modified Shepp-Logan phantom (a little different in every slice), "
        "half a turn of evenly spaced angles, Shepp-Logan filter. Accuracy: against the phantom sampled at pixel "
        "centres, inside the disc every view sees (radius 0.47 n); mean level = mean of the reconstruction / mean "
        "of the truth there.", "",
    ]
    if busy:
        lines += [f"**The machine was shared with other jobs during this run (load average above {BUSY}, column "
                  "`load`): times are upper bounds, the ratios are more reliable than the absolute times.**", ""]
    lines += ["| geometry | direct (s/slice) | fourier (s/slice) | speed-up | r truth direct / fourier | "
              "RMSE direct / fourier | mean level direct / fourier | r(fourier, direct) | load |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        note = f" (direct on {r['direct_slices_timed']} slices)" if r["direct_slices_timed"] < r["n_slices"] else ""
        lines.append(f"| {r['n_cols']} px x {r['n_slices']} slices x {r['n_angles']} angles{note} | "
                     f"{r['direct_s_per_slice']:.3f} | {r['fourier_s_per_slice']:.4f} | x{r['speedup']:.0f} | "
                     f"{r['direct']['r']:.4f} / {r['fourier']['r']:.4f} | {r['direct']['rmse']:.4f} / "
                     f"{r['fourier']['rmse']:.4f} | {r['direct']['mean_ratio']:.4f} / {r['fourier']['mean_ratio']:.4f} "
                     f"| {r['r_fourier_direct']:.4f} | {r['load_average']:.2f} |")
    first = rows[0]
    lines += ["", f"Whole {first['n_cols']}^3 volume, {first['n_angles']} angles, Fourier FBP: "
              f"**{first['fourier_s_total']:.2f} s** (TomoPy's gridrec, for scale: 0.15 s on this machine as quoted "
              "in issue 11; TomoPy is not installed here, so not measured in this run)."]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.with_suffix(".md").write_text("\n".join(lines) + "\n")
    RESULTS.with_suffix(".json").write_text(json.dumps({"threads": threads, "rows": rows}, indent=1) + "\n")
    print(f"wrote {RESULTS.with_suffix('.md')}")


if __name__ == "__main__":
    main()
