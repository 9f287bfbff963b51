"""Snakemake end to end on a tiny generated campaign, with one broken scan beside the good ones."""

import json
import zipfile

import h5py
import numpy as np
import pandas as pd
import pytest
import tifffile

from campaign import make_campaign, run_snakemake

pytestmark = pytest.mark.workflow

GOOD = {"tiny_particle": ("particle", 1), "tiny_foam": ("foam", 2)}


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    work = make_campaign(tmp_path_factory.mktemp("campaign"), GOOD, broken=[("broken", "broken.h5", b"not hdf5")])
    result = run_snakemake(work, "--keep-going")
    return work, result


def test_bad_scan_fails_clearly_and_leaves_nothing(campaign):
    work, result = campaign
    assert result.returncode != 0
    log = result.stdout + result.stderr
    assert "scan broken failed in step preprocess (bad input)" in log
    assert "broken.h5: is not a valid HDF5 file" in log
    assert not any((work / "results" / "broken").glob("*")), "partial output of the failed scan was left"


@pytest.mark.parametrize("scan", GOOD)
def test_good_scans_finish_with_every_output(campaign, scan):
    work, _ = campaign
    out = work / "results" / scan
    table = pd.read_csv(out / "shifts.csv")
    assert list(table.columns[:4]) == ["index", "theta_deg", "dx", "dy"] and len(table) == 61
    assert {"residual", "flagged"} <= set(table.columns)
    with h5py.File(out / "volume.h5") as f:
        volume = f["volume"]
        assert volume.dtype == np.float32 and volume.shape == (48, 48, 48)
        for key in ("dejitter_version", "model_sha256", "config", "method", "backend", "center"):
            assert key in volume.attrs
    for name in ("shifts", "sinogram", "slices", "histogram"):
        assert (out / "qc" / f"{name}.png").stat().st_size > 1000
    for name in ("binned.h5", "volume_uncorrected.h5"):
        assert (out / name).exists()
    # The full-resolution intermediates are temporary: gone once the volume and the QC are made.
    for name in ("projections.h5", "corrected.h5"):
        assert not (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mse_vs_truth_px2"] < 0.1 * metrics["mse_uncorrected_px2"], metrics
    assert metrics["sharpness_after"] > metrics["sharpness_before"]
    assert not list(out.rglob("*.part"))


def test_other_scan_table_and_summary(campaign):
    work, _ = campaign
    good = pd.read_csv(work / "config" / "scans.tsv", sep="\t").query("scan != 'broken'")
    good.to_csv(work / "good.tsv", sep="\t", index=False)
    made = {scan: (work / "results" / scan / "volume.h5").stat().st_mtime_ns for scan in GOOD}
    result = run_snakemake(work, "--config", "scans=good.tsv", "volume_tiff=True")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Nothing to be done" not in result.stdout + result.stderr  # the summary was still missing
    # Another scan table and another output option remake nothing that was made: the volumes stay.
    assert {scan: (work / "results" / scan / "volume.h5").stat().st_mtime_ns for scan in GOOD} == made
    assert "step E" not in result.stdout + result.stderr
    summary = pd.read_csv(work / "results" / "summary.tsv", sep="\t")
    assert summary.columns[0] == "scan" and sorted(summary["scan"]) == sorted(GOOD)
    assert (summary["mse_vs_truth_px2"] < summary["mse_uncorrected_px2"]).all()
    assert "time_register_s" in summary and (work / "results" / "campaign.png").exists()
    # Disk per scan once the temporary intermediates are gone: what results/{scan} holds.
    for _, row in summary.iterrows():
        folder = work / "results" / row["scan"]
        held = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20
        assert row["disk_mb"] == pytest.approx(held, abs=0.1)
    assert (summary["binning"] == 1).all()  # as the test campaign sets it
    with tifffile.TiffFile(work / "results" / "tiny_particle" / "volume.tif") as tif:
        assert tif.is_imagej and tif.asarray().shape == (48, 48, 48)
    # Finished scans are cached: a rerun does nothing.
    again = run_snakemake(work, "--config", "scans=good.tsv", "volume_tiff=True", "-n")
    assert "Nothing to be done" in again.stdout + again.stderr


def test_report_holds_every_scans_figures(campaign):
    work, _ = campaign
    good = work / "good.tsv"
    if not good.exists():
        pd.read_csv(work / "config" / "scans.tsv", sep="\t").query("scan != 'broken'").to_csv(good, sep="\t", index=False)
    assert run_snakemake(work, "--config", "scans=good.tsv").returncode == 0
    result = run_snakemake(work, "--config", "scans=good.tsv", "--report", "report.zip")
    assert result.returncode == 0, result.stderr[-3000:]
    with zipfile.ZipFile(work / "report.zip") as report:
        # The report's index maps every result path to its labels and caption.
        html = report.read("report/report.html").decode()
        figures = [n for n in report.namelist() if n.endswith(".png")]
    assert len(figures) == 4 * len(GOOD) + 1  # per-scan figures and the campaign figure
    for scan in GOOD:
        for figure in ("shifts", "sinogram", "slices", "histogram"):
            assert f'"results/{scan}/qc/{figure}.png"' in html, (scan, figure)
    names = html
    assert '"results/summary.tsv"' in names and '"results/campaign.png"' in names


def test_invalid_scan_ids_and_duplicates_are_refused(tmp_path):
    work = make_campaign(tmp_path, GOOD)
    (work / "bad.tsv").write_text("scan\tpath\nbad id;rm\tx.h5\n")
    result = run_snakemake(work, "--config", "scans=bad.tsv", "-n")
    assert result.returncode != 0 and "does not match" in result.stdout + result.stderr
    (work / "dup.tsv").write_text("scan\tpath\na\tx.h5\na\ty.h5\n")
    result = run_snakemake(work, "--config", "scans=dup.tsv", "-n")
    assert result.returncode != 0 and "duplicate scan ids ['a']" in result.stdout + result.stderr
