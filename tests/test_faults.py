"""A workflow killed (SIGKILL) in the middle of a step and rerun gives the outputs of an uninterrupted run.

Every step is deterministic (seeded synthesis, fixed thread counts, torch's deterministic
algorithms, an FBP whose rounding does not depend on the chunking), so "the same" means
bit-identical arrays and identical tables.
"""

import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from campaign import CORES, ROOT, SNAKEMAKE, make_campaign, run_snakemake

pytestmark = pytest.mark.workflow

SCANS = {"fault_particle": ("particle", 3)}
SCAN = "fault_particle"


def _start(workdir):
    command = [str(SNAKEMAKE), "--snakefile", str(ROOT / "workflow" / "Snakefile"), "--directory", str(workdir),
               "--cores", CORES]
    # A session of its own, so that killing its group kills Snakemake and every job it started.
    return subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _kill_when(process, marker, timeout=300):
    """SIGKILL the whole process group once ``marker`` exists (the step has started its work)."""
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert process.poll() is None, "the workflow ended before the step to interrupt began"
        assert time.monotonic() < deadline, f"{marker} did not appear"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _h5_arrays(path):
    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, node: arrays.update({name: node[()]}) if isinstance(node, h5py.Dataset) else None)
    return arrays


def _assert_same(first, second):
    suffix = first.suffix
    if suffix == ".h5":
        a, b = _h5_arrays(first), _h5_arrays(second)
        assert sorted(a) == sorted(b), first
        for key in a:
            assert np.array_equal(a[key], b[key]), f"{first}: {key} differs"
    elif suffix == ".png":  # the figure's pixels; the file may embed a date or version
        assert np.array_equal(imread(first), imread(second)), first
    elif first.name == "summary.tsv":  # timings differ from run to run, everything else may not
        a, b = (pd.read_csv(p, sep="\t") for p in (first, second))
        keep = [c for c in a.columns if not c.startswith("time_")]
        pd.testing.assert_frame_equal(a[keep], b[keep])
    else:
        assert first.read_bytes() == second.read_bytes(), first


def test_killed_run_reruns_to_identical_outputs(tmp_path):
    clean = make_campaign(tmp_path / "clean", SCANS, size=40, angles=61)
    result = run_snakemake(clean)
    assert result.returncode == 0, result.stderr[-3000:]

    work = make_campaign(tmp_path / "killed", SCANS, size=40, angles=61)
    _kill_when(_start(work), work / "logs" / SCAN / "register.log")
    out = work / "results" / SCAN
    # Killed inside register: its outputs and everything after it are absent, not half-written.
    for name in ("shifts.csv", "registration.json", "corrected.h5", "volume.h5"):
        assert not (out / name).exists(), name
    for path in out.rglob("*"):  # what exists is complete (it is compared below) or a temporary .part
        assert path.is_dir() or path.name.endswith(".part") or path.suffix in (".h5", ".csv", ".json", ".png")

    # The default profile sets --rerun-incomplete; a killed Snakemake leaves its lock behind.
    assert "rerun-incomplete: true" in (ROOT / "workflow" / "profiles" / "default" / "config.yaml").read_text()
    run_snakemake(work, "--unlock")
    result = run_snakemake(work)
    assert result.returncode == 0, result.stderr[-3000:]

    expected = sorted(p.relative_to(clean) for p in (clean / "results").rglob("*") if p.is_file())
    found = sorted(p.relative_to(work) for p in (work / "results").rglob("*") if p.is_file())
    assert found == expected, "extra or missing outputs (a stale .part left behind?)"
    for relative in expected:
        _assert_same(clean / relative, work / relative)


def test_a_step_sets_deterministic_torch_without_loading_the_compiler():
    """Every workflow step switches torch to deterministic algorithms; the public call would also import
    torch's compiler stack (Inductor, Dynamo: 2.5 s in each job's process here), which nothing uses."""
    code = ("import sys, torch\n"
            "from dejitter.pipeline.common import step_backend\n"
            "step_backend('torch', 'cpu')\n"
            "assert torch.are_deterministic_algorithms_enabled()\n"
            "assert torch.is_deterministic_algorithms_warn_only_enabled()\n"
            "assert 'torch._inductor' not in sys.modules and 'torch._dynamo' not in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
