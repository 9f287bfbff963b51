# Configuration and scan-table validation, and the input functions every rule shares.

import os

import pandas as pd
from snakemake.utils import validate

# The scripts import the library from this checkout in every environment a job runs in
# (the .venv, a conda env of its own, a SLURM job), since jobs inherit PYTHONPATH.
_SRC = os.path.normpath(os.path.join(workflow.basedir, "..", "src"))
os.environ.update(PYTHONPATH=os.pathsep.join(p for p in (_SRC, os.environ.get("PYTHONPATH")) if p))


validate(config, schema="../schemas/config.schema.yaml")


def _read_scan_table(path):
    table = pd.read_csv(path, sep="\t", dtype=str).dropna(how="all")
    if "scan" not in table.columns or "path" not in table.columns:
        raise ValueError(f"scan table {path} needs the columns 'scan' and 'path'")
    # Rows whose scan id starts with '#' are commented out; '#' elsewhere is refused by the schema.
    table = table[~table["scan"].fillna("").str.startswith("#")]
    duplicated = sorted(set(table.loc[table["scan"].duplicated(), "scan"]))
    if duplicated:
        raise ValueError(f"scan table {path}: duplicate scan ids {duplicated}; every scan needs its own id")
    table = table.set_index("scan", drop=False)
    if "center" in table:
        try:
            table["center"] = pd.to_numeric(table["center"])
        except ValueError as err:
            raise ValueError(f"scan table {path}: column 'center' must hold numbers (axis column in pixels): {err}")
    if "normalised" in table:
        table["normalised"] = table["normalised"].fillna("false").str.lower().isin(["true", "1", "yes"])
    validate(table, schema="../schemas/scans.schema.yaml")
    return table


SCANS = _read_scan_table(config["scans"])
# Scans listed under `exclude` are skipped, e.g. a broken one, so the campaign summary can be made.
SCANS = SCANS.drop(index=[s for s in config.get("exclude", []) if s in SCANS.index])


wildcard_constraints:
    scan="|".join(map(re.escape, SCANS.index)) if len(SCANS) else "[A-Za-z0-9._-]+",


def scan_value(scan, column, default=None):
    """One cell of the scan table; ``default`` where the column is absent or the cell empty."""
    if column not in SCANS.columns:
        return default
    value = SCANS.loc[scan, column]
    return default if pd.isna(value) or value == "" else value


def scan_center(wildcards):
    value = scan_value(wildcards.scan, "center")
    return None if value is None else float(value)


def device():
    return None if config["device"] == "auto" else config["device"]


def true_shifts(wildcards):
    path = scan_value(wildcards.scan, "true_shifts")
    return [path] if path else []


def raw_scan_input(wildcards):
    """The raw scan as input where it exists or the workflow makes it (demo scans).  Any other
    missing path is left to the step, which refuses that one scan with a clear message, instead of
    Snakemake stopping the whole campaign before it starts."""
    path = scan_value(wildcards.scan, "path")
    demos = {os.path.normpath(f"data/demo/{name}.h5") for name in config.get("demo", {}).get("scans", {})}
    return [path] if os.path.exists(path) or os.path.normpath(path) in demos else []


def mlem_inputs(wildcards):
    """The network's card says which references it reads (full or leave-out), so step A reads it."""
    inputs = {"binned": f"results/{wildcards.scan}/binned.h5"}
    if config["method"] == "network":
        inputs["model"] = config["model"]
    return inputs


def registration_inputs(wildcards):
    """The iterative method runs its own A/B loop; the others read the cached reprojection."""
    inputs = {"binned": f"results/{wildcards.scan}/binned.h5"}
    if config["method"] in ("network", "phase_correlation"):
        inputs["references"] = f"results/{wildcards.scan}/reprojection.h5"
    if config["method"] == "network":
        inputs["model"] = config["model"]
    return inputs


STEPS = ["preprocess", "mlem", "reproject", "register", "shift_back", "reconstruct"]


def step_benchmarks(wildcards):
    steps = [s for s in STEPS if config["method"] in ("network", "phase_correlation") or s not in ("mlem", "reproject")]
    return {f"{scan}.{step}": f"logs/{scan}/{step}.benchmark.tsv" for scan in SCANS.index for step in steps}
