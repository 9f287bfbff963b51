"""Real measured scans with known jitter added, corrected by the default workflow (``method: auto``).

The Diamond I13 TIFF scan is read as the beamline wrote it (a folder of TIFF images, one flat, one
dark, an angle file of every frame); the jittered copy keeps that layout, with the jitter applied to
the transmission so that the flat stays where the beam is.  A real scan carries a jitter of its own:
the I13 criterion is therefore self-consistency, the estimate on the jittered copy against the
added jitter plus the estimate on the untouched scan (the latter is read straight from
``../shared/data``).  TomoPy's tooth (two detector rows) gets jitter in x only.

Skipped where ``../shared/data`` is absent.
"""

import shutil

import h5py
import numpy as np
import pytest
import tifffile
from campaign import make_campaign, run_snakemake
from conftest import SHARED_DATA

from dejitter.files import read_shifts, write_shifts
from dejitter.metrics import shift_error
from dejitter.readers import write_dxchange
from dejitter.shifting import displace
from dejitter.training.synthesis import random_jitter

I13 = SHARED_DATA / "real" / "tiff_diamond_i13"
FRAMES = "dark:5, flat:5, proj:91, flat:5, dark:5"

pytestmark = pytest.mark.workflow
needs_i13 = pytest.mark.skipif(not I13.exists(), reason=f"real data {I13} is absent (the project's sibling shared/data)")


def _jittered_transmission(counts, flat, dark, jitter):
    """Counts of the same sample displaced by ``jitter``: the transmission moves, flat and dark stay."""
    transmission = (counts - dark) / np.maximum(flat - dark, 1e-3)
    return displace(transmission, jitter, order=1) * (flat - dark) + dark


def _i13_jittered_folder(folder, jitter):
    folder.mkdir()
    names = sorted(I13.glob("raw_*.tiff"))
    counts = np.stack([tifffile.imread(name) for name in names]).astype(np.float32)
    flat = tifffile.imread(I13 / "flat_00001.tiff").astype(np.float32)
    dark = tifffile.imread(I13 / "dark_00001.tiff").astype(np.float32)
    moved = _jittered_transmission(counts, flat, dark, jitter)
    for name, image in zip(names, moved):
        tifffile.imwrite(folder / name.name, np.clip(np.rint(image), 0, 65535).astype(np.uint16))
    for name in ("flat_00001.tiff", "dark_00001.tiff", "angles.txt"):
        shutil.copy(I13 / name, folder / name)


def _i13_row(scan, folder, truth=""):
    return {"scan": scan, "path": folder, "angles": folder / "angles.txt", "flats": folder / "flat_00001.tiff",
            "darks": folder / "dark_00001.tiff", "frames": FRAMES, "true_shifts": truth}


@needs_i13
def test_real_i13_scan_with_added_jitter_is_corrected_by_the_default(tmp_path):
    theta_deg = np.loadtxt(I13 / "angles.txt")[10:101]
    jitter = random_jitter(len(theta_deg), 20.0, np.random.default_rng(7))
    _i13_jittered_folder(tmp_path / "i13_jittered", jitter)
    write_shifts(tmp_path / "i13_truth.csv", theta_deg, jitter)
    # Binning 3 rather than the 2 that `binning: auto` picks for 160 px: steps A-C, step 6 above all, cost
    # a third as much (about 90 s instead of 270 s of this test on one core). Self-consistency measured through
    # this test: 0.074 px^2 with step 8 (twenty-third session; 0.078 without it, 0.065 before step 6 lengthened
    # its steps, 0.106 where it lengthened them at any angle); in the library at binning 2 0.025
    # (benchmarks/results/default.md).
    make_campaign(tmp_path, {}, method="auto", binning=3, mlem_iterations=20,
                  rows=[_i13_row("i13", I13), _i13_row("i13_jittered", tmp_path / "i13_jittered",
                                                       tmp_path / "i13_truth.csv")])
    result = run_snakemake(tmp_path, "results/i13/shifts.csv", "results/i13_jittered/shifts.csv",
                           "results/i13_jittered/registration.json", timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    _, own = read_shifts(tmp_path / "results" / "i13" / "shifts.csv")
    _, found = read_shifts(tmp_path / "results" / "i13_jittered" / "shifts.csv")
    theta = np.deg2rad(theta_deg)
    assert shift_error(found, jitter + own, theta)["mse"] <= 0.1  # self-consistency
    assert shift_error(found, jitter, theta)["mse"] <= 0.5  # counts the scan's own jitter as error
    provenance = (tmp_path / "results" / "i13_jittered" / "registration.json").read_text()
    assert '"selected"' in provenance and '"score_center_of_mass"' in provenance


def test_real_tooth_scan_with_added_dx_is_corrected_by_the_default(tooth_path, tmp_path):
    """Two rows: dx only, dy reported as NaN, and the volume reconstructed (every slice finite)."""
    with h5py.File(tooth_path) as f:
        data, flats, darks, theta_deg = (f[f"/exchange/{k}"][()] for k in ("data", "data_white", "data_dark", "theta"))
    jitter = random_jitter(len(theta_deg), 20.0, np.random.default_rng(8), vertical=False)
    flat, dark = np.median(flats, axis=0).astype(np.float32), darks.mean(axis=0).astype(np.float32)
    moved = _jittered_transmission(data.astype(np.float32), flat, dark, jitter)
    write_dxchange(tmp_path / "tooth.h5", moved, theta_deg, flats, darks)
    write_shifts(tmp_path / "tooth_truth.csv", theta_deg, jitter)
    # 640 px wide: binning 4 keeps steps A-C small; the sample lies inside the field of view.
    make_campaign(tmp_path, {}, method="auto", binning=4, mlem_iterations=20,
                  rows=[{"scan": "tooth", "path": tmp_path / "tooth.h5", "true_shifts": tmp_path / "tooth_truth.csv"}])
    result = run_snakemake(tmp_path, "results/tooth/volume.h5", timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    table, found = read_shifts(tmp_path / "results" / "tooth" / "shifts.csv")
    assert len(table) == 181 and np.all(np.isnan(found[:, 1]))  # two rows: dy is not observable
    assert shift_error(found, jitter, np.deg2rad(theta_deg))["mse"] <= 0.1
    with h5py.File(tmp_path / "results" / "tooth" / "volume.h5") as f:
        assert f["volume"].shape == (2, 640, 640) and np.all(np.isfinite(f["volume"][()]))
