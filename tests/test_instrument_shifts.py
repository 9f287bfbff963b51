"""The instrument's own alignment shifts (Xradia ``Alignment/X-Shifts``, ``Y-Shifts``) through the pipeline.

A tiny generated scan carries synthetic instrument shifts (the true jitter plus an error) from the
reader's :class:`~dejitter.types.RawScan` through preprocessing (``instrument_shifts`` beside
``theta_deg``) to step C: reported in ``shifts.csv`` and ``registration.json``, and used as the
starting estimate with ``initial_shifts='instrument'``.  The real ``.txrm`` of ``../shared/data/real``
is checked the same way where it is present.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from dejitter.files import read_stack
from dejitter.metrics import shift_error
from dejitter.pipeline import alignment, steps
from dejitter.reconstruction import reproject
from dejitter.shifting import displace
from dejitter.training.synthesis import phantom, random_jitter
from dejitter.types import RawScan, ScanError

TXRM = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real" / "xradia_dxchange" / \
    "txrm_test_chip_tomo.txrm"


@pytest.fixture(scope="module")
def scan():
    """A jittered 32 px particle scan, as transmission, with the instrument's shifts off by about 0.3 px."""
    rng = np.random.default_rng(21)
    theta = np.deg2rad(np.linspace(0, 180, 45))
    ideal = reproject(phantom(32, "particle", rng), theta, device="cpu")
    jitter = random_jitter(len(theta), 3.0, rng)
    measured = displace(ideal, jitter)
    transmission = np.exp(-measured / measured.max()).astype(np.float32)
    instrument = jitter + rng.normal(0, 0.3, jitter.shape)
    return transmission, np.rad2deg(theta), jitter, instrument


def _preprocess(tmp_path, monkeypatch, scan, *, with_shifts=True):
    """preprocess() of the scan as a reader would return it (normalised transmission)."""
    data, theta_deg, _, instrument = scan

    @contextlib.contextmanager
    def fake_open_scan(path, **kwargs):
        yield RawScan(data, theta_deg, normalised=True, instrument_shifts=instrument if with_shifts else None)

    monkeypatch.setattr(steps, "open_scan", fake_open_scan)
    steps.preprocess(tmp_path / "raw.txrm", tmp_path / "projections.h5", tmp_path / "binned.h5", binning=2,
                     median_size=0)
    return tmp_path / "binned.h5"


def _register(tmp_path, binned, method, **kwargs):
    provenance = alignment.register(binned, tmp_path / "shifts.csv", method=method, backend="torch", device="cpu",
                                mlem_iter=6, **kwargs)
    return pd.read_csv(tmp_path / "shifts.csv"), provenance


def test_preprocess_stores_the_instrument_shifts_beside_the_angles(tmp_path, monkeypatch, scan):
    binned = _preprocess(tmp_path, monkeypatch, scan)
    for name in ("projections.h5", "binned.h5"):
        _, _, extras = read_stack(tmp_path / name)
        np.testing.assert_allclose(extras["instrument_shifts"], scan[3])  # input pixels, whatever the binning
    assert alignment.read_binned(binned)[4].shape == (45, 2)


def test_without_instrument_shifts_nothing_is_added_and_asking_for_them_names_the_scan(tmp_path, monkeypatch, scan):
    binned = _preprocess(tmp_path, monkeypatch, scan, with_shifts=False)
    with h5py.File(binned) as f:
        assert "instrument_shifts" not in f
    table, provenance = _register(tmp_path, binned, "none")
    assert "instrument_dx" not in table
    assert provenance["instrument_shifts"] is False and np.isnan(provenance["instrument_rms_px"])
    with pytest.raises(ScanError, match=r"raw\.txrm: initial_shifts is 'instrument', but the file records no "
                                        r"instrument alignment shifts") as err:
        _register(tmp_path, binned, "none", initial_shifts="instrument")
    assert "\n" not in str(err.value)


def test_shifts_csv_and_provenance_report_the_instrument_shifts(tmp_path, monkeypatch, scan):
    _, theta_deg, _, instrument = scan
    table, provenance = _register(tmp_path, _preprocess(tmp_path, monkeypatch, scan), "none")
    assert list(table.columns[:4]) == ["index", "theta_deg", "dx", "dy"]
    np.testing.assert_allclose(table[["instrument_dx", "instrument_dy"]], instrument, atol=1e-5)
    assert np.all(table["dx"] == 0)  # the default starts from zero: the instrument's shifts are only reported
    expected = shift_error(np.zeros_like(instrument), instrument, np.deg2rad(theta_deg))["rms"]
    assert provenance["instrument_shifts"] is True and provenance["initial_shifts"] == "none"
    assert provenance["instrument_rms_px"] == pytest.approx(expected, abs=1e-4)


def test_starting_from_the_instrument_shifts(tmp_path, monkeypatch, scan):
    """With nothing to add (method none) the estimate is the instrument's; iterative alignment from them
    removes their error."""
    _, theta_deg, jitter, instrument = scan
    theta = np.deg2rad(theta_deg)
    binned = _preprocess(tmp_path, monkeypatch, scan)
    table, provenance = _register(tmp_path, binned, "none", initial_shifts="instrument")
    np.testing.assert_allclose(table[["dx", "dy"]], instrument, atol=1e-5)
    assert provenance["initial_shifts"] == "instrument" and provenance["instrument_rms_px"] == 0

    table, provenance = _register(tmp_path, binned, "iterative", initial_shifts="instrument")
    estimate = table[["dx", "dy"]].to_numpy()
    assert shift_error(instrument, jitter, theta)["mse"] > 0.1
    assert shift_error(estimate, jitter, theta)["mse"] < 0.05
    assert provenance["instrument_rms_px"] == pytest.approx(shift_error(estimate, instrument, theta)["rms"],
                                                            abs=1e-3)


def test_auto_scores_the_instrument_shifts_as_a_candidate(scan):
    from dejitter.binning import bin_projections
    from dejitter.registration import estimate_shifts
    from dejitter.registration.classic import consistency_score

    data, theta_deg, jitter, instrument = scan
    theta = np.deg2rad(theta_deg)
    projections, _ = bin_projections(-np.log(data), 2)  # as steps A-C see it: 16 px, shifts halved
    details = {}
    shifts, _ = estimate_shifts(projections, theta, "auto", mlem_iter=6, candidates={"instrument": instrument / 2},
                                details=details)
    expected, _ = consistency_score(projections, theta, instrument / 2, n_iter=6)
    assert details["score_instrument"] == pytest.approx(expected, rel=1e-4)
    assert details["score_instrument"] > details["score_iterative"]  # 0.3 px off: the refined estimate wins
    assert shift_error(shifts * 2, jitter, theta)["mse"] < 0.1


def test_references_of_another_starting_estimate_are_refused(tmp_path, monkeypatch, scan):
    binned = _preprocess(tmp_path, monkeypatch, scan)
    alignment.reconstruct_reference(binned, tmp_path / "mlem.h5", mlem_iter=2, backend="torch", device="cpu")
    with pytest.raises(ValueError, match="made with initial_shifts 'none'.*rerun step A"):
        alignment.reproject_reference(binned, tmp_path / "mlem.h5", tmp_path / "reprojection.h5", backend="torch",
                                  device="cpu", initial_shifts="instrument")
    alignment.reproject_reference(binned, tmp_path / "mlem.h5", tmp_path / "reprojection.h5", backend="torch",
                              device="cpu")
    with pytest.raises(ValueError, match="made with initial_shifts 'none'.*rerun steps A and B"):
        _register(tmp_path, binned, "phase_correlation", references_path=tmp_path / "reprojection.h5",
                  initial_shifts="instrument")


def test_qc_figure_overlays_the_instrument_shifts(tmp_path, scan):
    from dejitter.reports.qc import plot_shifts

    _, theta_deg, jitter, instrument = scan
    plot_shifts(tmp_path / "shifts.png", theta_deg, jitter, instrument=instrument, title="scan")
    assert (tmp_path / "shifts.png").stat().st_size > 1000


def test_schemas_accept_initial_shifts_in_the_config_and_the_scan_table():
    import yaml
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    root = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((root / "config" / "config.yaml").read_text())
    assert config["initial_shifts"] == "none"
    validate(dict(config, initial_shifts="instrument"), str(root / "workflow" / "schemas" / "config.schema.yaml"))
    with pytest.raises(WorkflowError):
        validate(dict(config, initial_shifts="xradia"), str(root / "workflow" / "schemas" / "config.schema.yaml"))
    schema = str(root / "workflow" / "schemas" / "scans.schema.yaml")
    validate(pd.DataFrame({"scan": ["a", "b"], "path": ["a.txrm", "b.h5"], "initial_shifts": ["instrument", None]}),
             schema)
    with pytest.raises(WorkflowError):
        validate(pd.DataFrame({"scan": ["a"], "path": ["a.txrm"], "initial_shifts": ["yes"]}), schema)


@pytest.mark.skipif(not TXRM.exists(), reason=f"real data {TXRM} is absent (it lives in the project's sibling "
                                              "folder shared/data)")
def test_real_txrm_alignment_reaches_binned_h5_and_shifts_csv(tmp_path):
    from dejitter.readers.xradia import read_txrm

    instrument = read_txrm(TXRM).instrument_shifts
    steps.preprocess(TXRM, tmp_path / "projections.h5", tmp_path / "binned.h5", normalised=True, binning=2)
    _, attrs, extras = read_stack(tmp_path / "binned.h5")
    np.testing.assert_allclose(extras["instrument_shifts"], instrument)
    assert np.abs(instrument).max() == pytest.approx(1.28, abs=0.01)
    table, provenance = _register(tmp_path, tmp_path / "binned.h5", "none", initial_shifts="instrument")
    np.testing.assert_allclose(table[["instrument_dx", "instrument_dy"]], instrument, atol=1e-5)
    np.testing.assert_allclose(table[["dx", "dy"]], instrument, atol=1e-5)
    assert provenance["instrument_shifts"] is True and provenance["instrument_rms_px"] == 0


@pytest.mark.workflow
@pytest.mark.skipif(not TXRM.exists(), reason=f"real data {TXRM} is absent")
def test_scan_table_initial_shifts_through_the_workflow(tmp_path):
    """The scan table's `initial_shifts` column reaches step C; the summary reports the instrument's shifts."""
    from campaign import make_campaign, run_snakemake

    rows = [{"scan": "chip", "path": TXRM, "normalised": "true", "initial_shifts": "instrument"},
            {"scan": "chip_zero", "path": TXRM, "normalised": "true"}]
    make_campaign(tmp_path, {}, rows=rows, method="none", binning=2, find_center=False)
    result = run_snakemake(tmp_path, "results/summary.tsv")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    summary = pd.read_csv(tmp_path / "results" / "summary.tsv", sep="\t").set_index("scan")
    assert summary.loc["chip", "initial_shifts"] == "instrument" and summary.loc["chip", "instrument_rms_px"] == 0
    assert summary.loc["chip_zero", "initial_shifts"] == "none" and summary["instrument_shifts"].all()
    assert summary.loc["chip_zero", "instrument_rms_px"] > 0.5
    table = pd.read_csv(tmp_path / "results" / "chip" / "shifts.csv")
    with h5py.File(tmp_path / "results" / "chip" / "volume.h5") as f:  # the provenance reaches the volume
        assert f["volume"].attrs["initial_shifts"] == "instrument" and f["volume"].attrs["instrument_rms_px"] == 0
    np.testing.assert_allclose(table[["dx", "dy"]], table[["instrument_dx", "instrument_dy"]], atol=1e-5)
