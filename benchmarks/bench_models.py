"""Two trained networks side by side on the held-out scans of ``bench_default.py``.

How a retrained model is judged before it replaces the shipped one: the network alone (2 passes,
the weights' own accuracy) and the default ``auto`` (what users get) with each model, on the real
I13 and tooth scans with added jitter and the held-out synthetic scans (clean, noisy, near-
featureless, samples wider and taller than the view), plus clean and noisy particles over more
held-out seeds.  Records ``results/models.{md,json}`` (``--out`` names another file).

    python benchmarks/bench_models.py --candidate results/training/dejitter_resnet.pt
    python benchmarks/bench_models.py --candidate ... --network-only   # a screening: the network alone
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from bench_default import BINNING, CASES, MODEL, estimate
from scans import make_scan, make_truncated_scan

from dejitter.metrics import shift_error
from dejitter.registration.network import load_model

RESULTS = Path(__file__).resolve().parent / "results"

#: More held-out seeds of two conditions (``bench_network.py``'s seeds), to see small differences.
EXTRA = [(f"dense particle, clean, seed {s}", lambda s=s: (*make_scan(s), None)) for s in (101, 102, 103)]
EXTRA += [(f"dense particle, 40 % salt-and-pepper, seed {s}", lambda s=s: (*make_scan(s, salt_pepper=0.4), None))
          for s in (201, 202)]
EXTRA += [(f"sample 1.5x wider than the view, seed {s}", lambda s=s: (*make_truncated_scan(s, wider=1.5), None))
          for s in (21, 22)]

METHODS = [("network, 2 passes", "network"), ("default (auto)", "auto")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidate", required=True, help="model file (.pt with its .json card) to compare")
    parser.add_argument("--shipped", default=str(MODEL), help="model to compare it with (default: the shipped one)")
    parser.add_argument("--only", default="", help="run the cases whose label contains this")
    parser.add_argument("--out", default="models", help="results file name (results/<out>.md and .json)")
    parser.add_argument("--network-only", action="store_true",
                        help="the network alone, not `auto`: a screening of a candidate in minutes")
    args = parser.parse_args(argv)
    methods = METHODS[:1] if args.network_only else METHODS
    torch.set_num_threads(2)
    models = {name: load_model(path) for name, path in (("shipped", args.shipped), ("candidate", args.candidate))}
    results = {"machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
               "models": {name: card["sha256"] for name, (_, card) in models.items()}, "cases": []}
    columns = [(method_label, name) for method_label, _ in methods for name in models]
    table = ["| scan | " + " | ".join(f"{m}: {n}" for m, n in columns) + " |", "| --- |" + " --- |" * len(columns)]
    for case, build in CASES + EXTRA:
        if args.only not in case:
            continue
        line_integrals, theta, jitter, _ = build()
        row = {"scan": case, "mse": {}, "kept": {}}
        for method_label, method in methods:
            for name, (model, _) in models.items():
                details = {}
                shifts, seconds = estimate(line_integrals, theta, method, {"model": model, "network_passes": 2},
                                           details, BINNING.get(case, 2))
                key = f"{method_label}: {name}"
                row["mse"][key] = shift_error(shifts, jitter, theta)["mse"]
                if method == "auto":
                    row["kept"][name] = details.get("selected")
                print(f"{case:50s} {key:30s} MSE {row['mse'][key]:9.4f} px^2  {seconds:6.1f} s", flush=True)
        results["cases"].append(row)
        table.append(f"| {case} | " + " | ".join(f"{row['mse'][f'{m}: {n}']:.3g}" for m, n in columns) + " |")
        _record(results, table, args.out)
    print(f"recorded in {RESULTS / f'{args.out}.md'}")


def _record(results, table, name):
    shipped, candidate = (results["models"][k][:16] for k in ("shipped", "candidate"))
    lines = ["# Shipped network against a candidate (held-out scans)", "",
             f"Machine: {results['machine']}, torch {torch.__version__}. Shipped model sha256 {shipped}..., candidate "
             f"{candidate}... Cases of `bench_default.py` (128 px, 181 angles, +-20 px; real scans with added jitter) "
             "and more held-out seeds; steps A-C at binning 2 (the tooth: 4) with the median prefilter. MSE modulo "
             "rigid motion (DESIGN.md), px^2 of the input projections.", ""] + table + [""]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text("\n".join(lines))
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    main()
