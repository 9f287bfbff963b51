"""Peak memory of the full-resolution steps on a scan 4x larger than the memory budget.

    python benchmarks/bench_memory.py [--budget-mb 600] [--cols 64] [--angles 181]

Writes a synthetic Data Exchange scan (spheres, Poisson-free counts as uint16, flats and darks,
known jitter) whose float32 projections are 4x the budget, then runs preprocess, shift_back
(with the known jitter as shifts.csv) and reconstruct, each in a fresh Python process, and
records the peak resident memory of that process (``ru_maxrss`` from ``wait4``), the whole
process included: interpreter, NumPy/SciPy/h5py and, for reconstruct, torch.  The same
steps with no budget run on a scan of the budget's size (the whole-scan path of the same code
needs several times the scan's size; at 4x the budget it would not fit beside other work).
Steps A-C work on the binned copy, binning^2 smaller, and are not part of this benchmark.
Results: a table on stdout and benchmarks/results/memory.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "memory.md"


def write_scan(path, n_angles, n_rows, n_cols, seed=0):
    """Spheres along a tall sample, jittered by whole pixels; returns the jitter (dx, dy)."""
    rng = np.random.default_rng(seed)
    theta = np.linspace(0.0, 180.0, n_angles)
    jitter = rng.integers(-4, 5, (n_angles, 2)).astype(np.float64)
    spheres = [(rng.uniform(-0.3, 0.3) * n_cols, rng.uniform(-0.3, 0.3) * n_cols, z, rng.uniform(0.08, 0.2) * n_cols)
               for z in rng.uniform(0, n_rows, max(4, n_rows // 16))]
    u = np.arange(n_cols) - (n_cols - 1) / 2
    v = np.arange(n_rows)[:, None]
    flat, dark = 20000.0, 100.0
    with h5py.File(path, "w") as f:
        data = f.create_dataset("exchange/data", (n_angles, n_rows, n_cols), dtype=np.uint16,
                                chunks=(1, n_rows, n_cols))
        for a, t in enumerate(np.deg2rad(theta)):
            line = np.zeros((n_rows, n_cols), dtype=np.float32)
            for x, y, z, r in spheres:
                if abs(z - n_rows / 2) > n_rows:  # pragma: no cover - all spheres are inside
                    continue
                uc = x * np.cos(t) + y * np.sin(t) + jitter[a, 0]
                lo, hi = int(max(0, z + jitter[a, 1] - r - 1)), int(min(n_rows, z + jitter[a, 1] + r + 2))
                d2 = (u[None] - uc) ** 2 + (v[lo:hi] - z - jitter[a, 1]) ** 2
                line[lo:hi] += 0.02 * np.sqrt(np.clip(r * r - d2, 0, None))
            data[a] = np.round(dark + (flat - dark) * np.exp(-line)).astype(np.uint16)
        f.create_dataset("exchange/theta", data=theta)
        f.create_dataset("exchange/data_white", data=np.full((4, n_rows, n_cols), flat, dtype=np.uint16))
        f.create_dataset("exchange/data_dark", data=np.full((2, n_rows, n_cols), dark, dtype=np.uint16))
    return theta, jitter


STEPS = {
    "imports only": "import dejitter.pipeline.steps",
    "imports with torch": "import dejitter.pipeline.steps, dejitter.reconstruction.backends",
    "preprocess": "dejitter.pipeline.steps.preprocess('{d}/raw.h5', '{d}/projections.h5', '{d}/binned.h5', "
                  "memory_budget_mb={budget})",
    "shift_back": "dejitter.pipeline.steps.shift_back('{d}/projections.h5', '{d}/shifts.csv', '{d}/corrected.h5', "
                  "order=1, memory_budget_mb={budget})",
    "reconstruct": "dejitter.pipeline.steps.reconstruct('{d}/corrected.h5', '{d}/volume.h5', backend='torch', "
                   "device='cpu', memory_budget_mb={budget})",
}


def run_step(code):
    """Run ``code`` in a fresh Python; returns (peak resident MiB, seconds)."""
    program = "import logging, dejitter.pipeline.steps; logging.basicConfig(level='INFO'); " + code
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", program], env={**os.environ, "OMP_NUM_THREADS": "1"})
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise RuntimeError(f"step failed ({status}): {code}")
    return usage.ru_maxrss / 1024, time.perf_counter() - start


def run_all(directory, budget, theta, jitter):
    from dejitter.files import write_shifts

    write_shifts(Path(directory) / "shifts.csv", theta, jitter)
    rows = []
    for step, code in STEPS.items():
        peak, seconds = run_step(code.format(d=directory, budget=budget))
        rows.append((step, peak, seconds))
        print(f"  {step:<20} {peak:8.0f} MB {seconds:7.1f} s", flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-mb", type=float, default=600.0)
    parser.add_argument("--cols", type=int, default=64)
    parser.add_argument("--angles", type=int, default=181)
    parser.add_argument("--workdir", default=None, help="folder for the scans (default: a temporary one)")
    args = parser.parse_args(argv)
    budget = args.budget_mb
    rows_4x = int(4 * budget * 2**20 / (args.angles * args.cols * 4))
    tables = {}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for label, n_rows, step_budget in (("chunked, scan 4x the budget", rows_4x, budget),
                                           ("baseline: no budget, scan 1x the budget", rows_4x // 4, None)):
            d = Path(tmp) / label.split(",")[0].split(":")[0]
            d.mkdir()
            size_mb = args.angles * n_rows * args.cols * 4 / 2**20
            print(f"{label}: {args.angles} x {n_rows} x {args.cols} float32 = {size_mb:.0f} MB", flush=True)
            theta, jitter = write_scan(d / "raw.h5", args.angles, n_rows, args.cols)
            tables[label] = (size_mb, step_budget, run_all(d, step_budget, theta, jitter))
            for name in ("raw.h5", "projections.h5", "binned.h5", "corrected.h5", "volume.h5"):
                (d / name).unlink(missing_ok=True)
    lines = [f"# Peak memory of the full-resolution steps (budget {budget:g} MB)", "",
             textwrap.fill(" ".join(__doc__.split("\n\n")[2].split()), 100), "",
             f"Machine: {os.cpu_count()} CPU cores; peak resident memory of each step's process (ru_maxrss).", ""]
    for label, (size_mb, step_budget, rows) in tables.items():
        lines += [f"## {label} (projections {size_mb:.0f} MB)", "",
                  f"| step | peak MB | budget MB | peak / {budget:g} MB | time s |", "| --- | ---: | ---: | ---: | ---: |"]
        shown = "none" if step_budget is None else f"{step_budget:g}"
        for step, peak, seconds in rows:
            lines.append(f"| {step} | {peak:.0f} | {shown} | {peak / budget:.2f} | {seconds:.1f} |")
        lines.append("")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
