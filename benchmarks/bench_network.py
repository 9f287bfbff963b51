"""Benchmark of the network (step C) against the classic methods on held-out scans.

Prints and records in benchmarks/results/network.md:
- single pass and refined accuracy on clean data (targets: <= 0.25 px^2 and <= 0.05 px^2);
- a salt-and-pepper noise sweep 0..60 % (the paper's figure 4e): network against phase correlation and
  iterative reprojection, all with the pipeline's median prefilter, and the classic methods also without it;
- inference time for 181 pairs on this CPU (target <= 2 s), and on a GPU when one is present;
- steps A-D with the network at 128^3 (target <= 10 s).

Run: .venv/bin/python benchmarks/bench_network.py [--seeds N]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from scans import make_scan  # noqa: E402

from dejitter.metrics import shift_error  # noqa: E402
from dejitter.preprocessing import prepare_for_registration  # noqa: E402
from dejitter.registration import estimate_shifts  # noqa: E402
from dejitter.registration.network import load_model, predict_jitter  # noqa: E402
from dejitter.shifting import correct  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "resources" / "models" / "dejitter_resnet.pt"
RESULTS = Path(__file__).parent / "results"


def estimate(line_integrals, theta, method, *, median_size=3, binning=2, **options):
    start = time.perf_counter()
    binned, scale = prepare_for_registration(line_integrals, binning=binning, median_size=median_size)
    shifts, quality = estimate_shifts(binned, theta, method, **options)
    shifts = shifts * scale
    correct(line_integrals, shifts)  # step D, timed with the rest
    return shifts, time.perf_counter() - start


def time_inference(model, device, n_pairs=181, repeats=3):
    rng = np.random.default_rng(0)
    raw, ref = rng.random((2, n_pairs, 64, 64), dtype=np.float32)
    predict_jitter(model, raw, ref, device=device)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        predict_jitter(model, raw, ref, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main(argv=None):
    parser = argparse.ArgumentParser()
    # Six scans per condition: with two, one unlucky scan moved the mean by a factor of three.
    parser.add_argument("--seeds", type=int, default=6, help="held-out scans per condition")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    model, card = load_model(MODEL)
    lines = ["# Network benchmark (held-out synthetic scans)", "",
             f"Machine: {platform.machine()}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}. "
             f"Model sha256 {card['sha256'][:16]}... Scans: 128 px, 181 angles over 180 degrees, jitter uniform in "
             f"-20..+20 px in x and y, particle phantoms from held-out seeds, {args.seeds} scans per condition "
             "(mean MSE). Steps A-C at binning 2 (64 px network input), median prefilter 3 unless said otherwise. "
             f"The network reads {model.references} references (its card), the correlation methods leave-out ones. "
             "MSE modulo rigid motion (DESIGN.md), px^2 of the input projections.", ""]
    results = {"model_sha256": card["sha256"], "clean": [], "noise": [], "timing": {}}

    # Accuracy on clean data: single pass, two passes, refinement; the same-run baselines.
    variants = [("no correction", "none", {}), ("phase correlation", "phase_correlation", {}),
                ("network, single pass", "network", {"model": model}),
                ("network, 2 passes", "network", {"model": model, "network_passes": 2}),
                ("network + 3 refinement iterations", "network", {"model": model, "refine_iterations": 3}),
                ("iterative reprojection", "iterative", {})]
    lines += ["## Clean data", "", "| method | MSE (px^2) | A-D time (s) |", "| --- | --- | --- |"]
    scans = [make_scan(seed) for seed in range(args.seeds)]
    for label, method, options in variants:
        mses, times = [], []
        for line_integrals, theta, jitter in scans:
            shifts, seconds = estimate(line_integrals, theta, method, **options)
            mses.append(shift_error(shifts, jitter, theta)["mse"])
            times.append(seconds)
        results["clean"].append({"method": label, "mse_px2": float(np.mean(mses)), "seconds": float(np.mean(times))})
        print(f"clean  {label:36s} MSE {np.mean(mses):8.3f} px^2   A-D {np.mean(times):5.1f} s")
        lines.append(f"| {label} | {np.mean(mses):.3f} | {np.mean(times):.1f} |")

    # Salt-and-pepper sweep (paper figure 4e).
    sweep = (0.0, 0.1, 0.2, 0.4, 0.6)
    noise_variants = [("network, single pass", "network", 3, {"model": model}),
                      ("network, 2 passes", "network", 3, {"model": model, "network_passes": 2}),
                      ("network + 3 refinement iterations", "network", 3, {"model": model, "refine_iterations": 3}),
                      ("phase correlation", "phase_correlation", 3, {}),
                      ("iterative reprojection", "iterative", 3, {}),
                      ("phase correlation, no prefilter", "phase_correlation", 0, {}),
                      ("iterative reprojection, no prefilter", "iterative", 0, {})]
    lines += ["", "## Salt-and-pepper noise sweep", "",
              "| method | " + " | ".join(f"{int(100 * f)} %" for f in sweep) + " |",
              "| --- |" + " --- |" * len(sweep)]
    table = {label: [] for label, *_ in noise_variants}
    for fraction in sweep:
        noisy = [make_scan(100 + seed, salt_pepper=fraction) for seed in range(args.seeds)]
        for label, method, median_size, options in noise_variants:
            mses = [shift_error(estimate(li, th, method, median_size=median_size, **options)[0], jit, th)["mse"]
                    for li, th, jit in noisy]
            table[label].append(float(np.mean(mses)))
            print(f"s&p {int(100 * fraction):2d} %  {label:36s} MSE {np.mean(mses):9.3f} px^2")
    for label, values in table.items():
        lines.append(f"| {label} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
        results["noise"].append({"method": label, "salt_pepper": list(sweep), "mse_px2": values})

    # Speed: inference alone, and steps A-D with the network.
    cpu = time_inference(model, torch.device("cpu"))
    results["timing"]["inference_181_pairs_cpu_s"] = cpu
    lines += ["", "## Speed", "", f"- inference, 181 pairs (with the flipped-pair check, i.e. 362 network "
              f"evaluations), CPU ({torch.get_num_threads()} threads): **{cpu:.2f} s** (target <= 2 s)"]
    print(f"inference 181 pairs, CPU: {cpu:.2f} s")
    if torch.cuda.is_available():
        gpu = time_inference(model, torch.device("cuda"))
        results["timing"]["inference_181_pairs_gpu_s"] = gpu
        lines.append(f"- the same on {torch.cuda.get_device_name()}: **{gpu:.3f} s** (CPU/GPU ratio {cpu / gpu:.0f}x)")
    else:
        lines.append("- no GPU was available for this run")
    a_to_d = [r for r in results["clean"] if r["method"] == "network, single pass"][0]["seconds"]
    lines.append(f"- steps A-D with the network at 128^3 (single pass, incl. prefilter and full-resolution shift): "
                 f"**{a_to_d:.1f} s** (target <= 10 s)")
    lines.append("")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "network.md").write_text("\n".join(lines))
    (RESULTS / "network.json").write_text(json.dumps(results, indent=2))
    print(f"recorded in {RESULTS / 'network.md'}")


if __name__ == "__main__":
    main()
