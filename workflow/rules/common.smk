# Configuration and scan-table validation, and the input functions every rule shares.

import functools
import json
import os
import sys

import pandas as pd
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# Everything the workflow ships is found from its own checkout, whatever the working directory
# and also when it is used as a module: the library (src/), the model (resources/) and the
# default settings (config/config.yaml, demo settings included). Schemas, report captions,
# scripts and conda envs are named relative to the rule files, which Snakemake resolves.
if not isinstance(workflow.current_basedir, os.PathLike):
    raise WorkflowError(
        "dejitter runs from a local checkout (it ships its library and model beside the "
        "workflow): clone it and point `snakefile:` at <checkout>/workflow/Snakefile"
    )
CHECKOUT = os.path.abspath(os.path.join(workflow.current_basedir, "..", ".."))


def fill_defaults(settings, defaults, whole=("demo.scans",), prefix=""):
    """Take every key the campaign leaves out from the shipped settings: sections key by key,
    except the keys in ``whole``, taken as one value (the set of demo scans is not merged).
    """
    for key, value in defaults.items():
        if key not in settings:
            settings[key] = value
        elif (
            isinstance(value, dict)
            and isinstance(settings[key], dict)
            and prefix + key not in whole
        ):
            fill_defaults(settings[key], value, whole, prefix=f"{prefix}{key}.")
    return settings


with open(workflow.source_path("../../config/config.yaml")) as shipped:
    fill_defaults(config, yaml.safe_load(shipped))

# The scripts import the library from this checkout in every environment a job runs in
# (the .venv, a conda env of its own, a SLURM job), since jobs inherit PYTHONPATH.
_SRC = os.path.join(CHECKOUT, "src")
os.environ.update(
    PYTHONPATH=os.pathsep.join(p for p in (_SRC, os.environ.get("PYTHONPATH")) if p)
)


validate(config, schema="../schemas/config.schema.yaml")


def _read_scan_table(path):
    if not os.path.isfile(path):
        raise WorkflowError(
            f"scan table {path} not found (relative paths are relative to the working directory, "
            f"{os.getcwd()}): write it there, or name yours with --config scans=PATH "
            "(for `snakemake train` alone, its header line 'scan<TAB>path' will do)"
        )
    try:
        table = pd.read_csv(path, sep="\t", dtype=str).dropna(how="all")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise WorkflowError(
            f"scan table {path} is not a readable TSV: {err}".splitlines()[0]
        )
    if "scan" not in table.columns or "path" not in table.columns:
        raise ValueError(f"scan table {path} needs the columns 'scan' and 'path'")
    # Rows whose scan id starts with '#' are commented out; '#' elsewhere is refused by the schema.
    table = table[~table["scan"].fillna("").str.startswith("#")]
    duplicated = sorted(set(table.loc[table["scan"].duplicated(), "scan"]))
    if duplicated:
        raise ValueError(
            f"scan table {path}: duplicate scan ids {duplicated}; every scan needs its own id"
        )
    table = table.set_index("scan", drop=False)
    if "center" in table:
        try:
            table["center"] = pd.to_numeric(table["center"])
        except ValueError as err:
            raise ValueError(
                f"scan table {path}: column 'center' must hold numbers (axis column in pixels): {err}"
            )
    if "normalised" in table:
        table["normalised"] = (
            table["normalised"].fillna("false").str.lower().isin(["true", "1", "yes"])
        )
    validate(table, schema="../schemas/scans.schema.yaml")
    return table


SCANS = _read_scan_table(config["scans"])
# Scans listed under `exclude` are skipped, e.g. a broken one, so the campaign summary can be made.
SCANS = SCANS.drop(index=[s for s in config.get("exclude", []) if s in SCANS.index])


wildcard_constraints:
    scan="|".join(map(re.escape, SCANS.index)) if len(SCANS) else "[A-Za-z0-9._-]+",


def shipped_file(path):
    """A file the workflow ships, named in the config relative to the checkout (the model): a path
    that exists as given (absolute, or relative to the working directory) wins; else the checkout's.
    """
    if os.path.isabs(path) or os.path.exists(path):
        return path
    shipped = os.path.join(CHECKOUT, path)
    return shipped if os.path.exists(shipped) else path


MODEL = shipped_file(config["model"])


def scan_value(scan, column, default=None):
    """One cell of the scan table; ``default`` where the column is absent or the cell empty."""
    if column not in SCANS.columns:
        return default
    value = SCANS.loc[scan, column]
    return default if pd.isna(value) or value == "" else value


def scan_center(wildcards):
    value = scan_value(wildcards.scan, "center")
    return None if value is None else float(value)


def scan_layout(wildcards):
    """The scan's HDF5 layout: a name the config defines under `hdf5_layouts` becomes its dataset
    paths; a built-in name (dxchange, fxi, diamond_k11, nxtomo) is passed as it is."""
    name = scan_value(wildcards.scan, "layout")
    custom = config.get("hdf5_layouts") or {}
    return dict(custom[name], name=name) if name in custom else name


def scan_initial_shifts(wildcards):
    """Step C's starting estimate for the scan: its `initial_shifts` cell, else the config's."""
    return scan_value(wildcards.scan, "initial_shifts", config["initial_shifts"])


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
    demos = {
        os.path.normpath(f"data/demo/{name}.h5")
        for name in config.get("demo", {}).get("scans", {})
    }
    return [path] if os.path.exists(path) or os.path.normpath(path) in demos else []


# Methods that read the network, and those that read the cached steps A and B (mlem, reproject).
NETWORK_METHODS = ("auto", "network")
CACHED_REFERENCE_METHODS = ("auto", "network", "phase_correlation")
# Methods whose step C runs passes of steps A and B of its own (refinement, candidates, scores).
OWN_PASSES_METHODS = ("auto", "iterative")


def mlem_inputs(wildcards):
    """The network's card says which references it reads (full or leave-out), so step A reads it."""
    inputs = {"binned": f"results/{wildcards.scan}/binned.h5"}
    if config["method"] in NETWORK_METHODS:
        inputs["model"] = MODEL
    return inputs


def registration_inputs(wildcards):
    """The iterative method runs its own A/B loop; the others read the cached reprojection."""
    inputs = {"binned": f"results/{wildcards.scan}/binned.h5"}
    if config["method"] in CACHED_REFERENCE_METHODS:
        inputs["references"] = f"results/{wildcards.scan}/reprojection.h5"
    if config["method"] in NETWORK_METHODS:
        inputs["model"] = MODEL
    return inputs


def registration_passes():
    """What step C runs beyond its name, for its message (the DAG shows only the cached A and B)."""
    if config["method"] in OWN_PASSES_METHODS:
        return ", with its own passes of steps A and B"
    return ""


STEPS = ["preprocess", "mlem", "reproject", "register", "shift_back", "reconstruct"]


def step_benchmarks(wildcards):
    steps = [
        s
        for s in STEPS
        if config["method"] in CACHED_REFERENCE_METHODS
        or s not in ("mlem", "reproject")
    ]
    return {
        f"{scan}.{step}": f"logs/{scan}/{step}.benchmark.tsv"
        for scan in SCANS.index
        for step in steps
    }


# Resources that follow the scan: memory, run time and GPU memory are estimated from the shape
# of the scan's projections (dejitter.pipeline.sizing), read from the first file that has it: the
# full-resolution projections where they exist, else the raw HDF5 file. Unknown shapes (a file not
# written yet, a format without a cheap shape) take defaults; Snakemake evaluates the resources
# again when a job is about to run, with its inputs in place. A retry (Snakemake's `attempt`,
# after running out of memory or time) gets chunks of half the size and more time.
sys.path.insert(0, _SRC)
try:
    import h5py
    from dejitter.pipeline.steps import sizing
    from dejitter.readers.hdf5 import LAYOUTS
    from dejitter.binning import binning_factor
except ImportError:
    # A Snakemake environment without the library's dependencies: default resources.
    h5py = sizing = None
    LAYOUTS = {}

# Where raw HDF5 files keep their projections: the built-in layouts, then NXtomo (read whole).
# (Paths inside the file, taken from the root; written without the leading "/".)
RAW_DATASETS = [layout.data for layout in LAYOUTS.values()]
NXTOMO_DATASETS = [
    "entry/instrument/detector/data",
    "entry0000/instrument/detector/data",
]
GPU_STEPS = ("mlem", "reproject", "register", "reconstruct", "reconstruct_uncorrected")


@functools.lru_cache(maxsize=4096)
def _hdf5_shape(path, stamp, names):
    with h5py.File(path, "r") as f:
        for name in names:
            try:
                dataset = f.get(name)
            except (KeyError, OSError):  # e.g. an external link to a missing file
                continue
            if isinstance(dataset, h5py.Dataset) and dataset.ndim == 3:
                return tuple(int(n) for n in dataset.shape), name
    return None


def hdf5_shape(path, names):
    """(shape, dataset) of the first 3-D dataset of ``names`` in an HDF5 file; None if there is none
    (not HDF5, unreadable, absent: the step itself reports what is wrong with the file).
    """
    if h5py is None or not path:
        return None
    try:
        stat = os.stat(path)
        if not os.path.isfile(path):
            return None
        return _hdf5_shape(path, (stat.st_mtime_ns, stat.st_size), tuple(names))
    except Exception:  # noqa: BLE001 - any unreadable file: default resources
        return None


def scan_shape(scan):
    """(angles, rows, columns) of the scan's projections, and whether preprocess reads it whole;
    (None, False) when unknown."""
    for name in ("projections.h5", "corrected.h5"):
        found = hdf5_shape(f"results/{scan}/{name}", ["data"])
        if found:
            return found[0], False
    layout = scan_value(scan, "layout")
    custom = (config.get("hdf5_layouts") or {}).get(layout, {})
    names = [custom["data"]] if "data" in custom else []
    found = hdf5_shape(scan_value(scan, "path"), names + RAW_DATASETS + NXTOMO_DATASETS)
    if found:
        return found[0], found[1] in NXTOMO_DATASETS
    return None, False


@functools.lru_cache(maxsize=4096)
def _recorded_binning(path, stamp):
    with h5py.File(path, "r") as f:
        scale = f["data"].attrs["scale"]
    return int(json.loads(scale)[0] if isinstance(scale, str) else scale[0])


def scan_binning(scan, shape):
    """Binning of steps A-C: as preprocess recorded it in binned.h5, else as it will choose it."""
    path = f"results/{scan}/binned.h5"
    try:
        stat = os.stat(path)
        return _recorded_binning(path, (stat.st_mtime_ns, stat.st_size))
    except Exception:  # noqa: BLE001 - not written yet, or unreadable: estimated below
        pass
    try:
        return binning_factor(config["binning"], shape[2]) if shape else 2
    except ValueError:
        return 2


def _sizes(wildcards):
    shape, whole_read = scan_shape(wildcards.scan)
    options = dict(
        binning=scan_binning(wildcards.scan, shape),
        qc_binning=scan_qc_binning(shape),
        method=config["method"],
    )
    return shape, whole_read, options


def scan_qc_binning(shape):
    """Binning of the uncorrected reconstruction for QC (config `qc_binning`)."""
    setting = config["qc_binning"]
    if setting != "auto":
        return int(setting)
    return binning_factor("auto", shape[2]) if shape and sizing else 2


def uses_gpu(step):
    return step in GPU_STEPS and config["device"] != "cpu"


def step_mem_mb(step):
    """The rule's mem_mb: host memory of ``step`` for this scan (dejitter.pipeline.sizing.memory_mb).
    Steps A-C, which hold the binned scan whole, ask for more at each retry; the others keep
    their request and use half the chunk size."""

    def mem_mb(wildcards, attempt):
        if sizing is None:
            return 6000
        shape, whole_read, options = _sizes(wildcards)
        need = sizing.memory_mb(
            step,
            shape,
            memory_budget_mb=config["memory_budget_mb"],
            gpu=uses_gpu(step),
            whole_read=whole_read,
            **options,
        )
        return need * attempt if step in ("mlem", "reproject", "register") else need

    return mem_mb


def step_runtime(step):
    """The rule's runtime (minutes) for this scan (dejitter.pipeline.sizing.runtime_min), longer at each retry."""

    def runtime(wildcards, attempt):
        if sizing is None:
            return 60 * attempt
        shape, _, options = _sizes(wildcards)
        return sizing.runtime_min(
            step,
            shape,
            mlem_iter=config["mlem_iterations"],
            network_passes=config["network_passes"],
            gpu=uses_gpu(step),
            attempt=attempt,
            **options,
        )

    return runtime


def step_gpu_mem_mb(step):
    """The rule's gpu_mem_mb: GPU memory of ``step`` for this scan (dejitter.pipeline.sizing.gpu_memory_mb),
    for sites that share GPUs (`--resources gpu_mem_mb=N` locally) or pick GPUs by memory.
    """

    def gpu_mem_mb(wildcards, attempt):
        if sizing is None:
            return 8000
        shape, _, options = _sizes(wildcards)
        return sizing.gpu_memory_mb(
            step, shape, memory_budget_mb=config["memory_budget_mb"], **options
        )

    return gpu_mem_mb


def chunk_divisor(wildcards, attempt):
    """The rule's chunk_divisor: 1, then 2, 4, ... at each retry; the step divides its chunks by it."""
    return 2 ** (attempt - 1)


def attempt_number(wildcards, attempt):
    """Snakemake's attempt, for the step's script: a retry repeats a refused input at once (pipeline.steplog)."""
    return attempt
