"""The catalogue of bad inputs: each refused with one clear line, beside a good scan that finishes.

Most bad scans share one campaign with the good scans, run once with ``--keep-going``: every bad
scan must fail in ``preprocess`` with the one line ``scan <id> failed in step <step> (bad input):
<file>: <problem>`` (written by :mod:`dejitter.pipeline.steplog`) and leave no file under
``results/<id>/``, while the good scans (a synthetic one, one marked ``normalised`` without flats
and darks, and one with only two detector rows) finish.  Faults of the whole campaign (scan ids,
duplicate ids, the model file) get their own small runs; the check of jitter beyond the trained
range runs the library's registration step.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from campaign import ROOT, make_campaign, run_snakemake

from dejitter.files import read_shifts, write_stack
from dejitter.readers import write_dxchange
from dejitter.reconstruction import reproject
from dejitter.registration.network import read_card
from dejitter.shifting import displace
from dejitter.training.synthesis import phantom, random_jitter, simulate_counts

pytestmark = pytest.mark.workflow

SIZE, ANGLES = 32, 31
THETA_DEG = np.linspace(0, 180, ANGLES)
SHIPPED_MODEL = ROOT / "resources" / "models" / "dejitter_resnet.pt"
RUNNING_AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

#: scan id -> (path in the scan table, the problem the one-line message must give)
CATALOGUE = {
    "truncated": ("bad/truncated.h5", "cannot open as HDF5 (truncated or corrupt?): "
                                      "Unable to synchronously open file (truncated file"),
    "corrupt": ("bad/corrupt.h5", "cannot open as HDF5 (truncated or corrupt?)"),
    "corrupt_chunk": ("bad/corrupt_chunk.h5", "cannot read /exchange/data (truncated or corrupt?): "
                                              "Can't synchronously read data (filter returned failure during read)"),
    "empty_file": ("bad/empty.h5", "is not a valid HDF5 file (bad signature: truncated or corrupt?)"),
    "not_a_scan": ("bad/notes.txt", "is not a scan file this reads (HDF5, TIFF or Xradia TXRM): "
                                    "unrecognised file signature"),
    "no_data": ("bad/no_data.h5", "has no /exchange/data dataset (not Data Exchange layout)"),
    "data_2d": ("bad/data_2d.h5", "/exchange/data has 2 dimensions, expected (angle, row, column)"),
    "no_theta": ("bad/no_theta.h5", "has no /exchange/theta (projection angles in degrees)"),
    "no_flats": ("bad/no_flats.h5", "has no flats; mark the scan 'normalised' in the scan table if the data "
                                    "are already flat/dark corrected"),
    "no_darks": ("bad/no_darks.h5", "has no darks; mark the scan 'normalised'"),
    "flats_shape": ("bad/flats_shape.h5", f"flats have image shape ({SIZE - 2}, {SIZE}), "
                                          f"projections ({SIZE}, {SIZE})"),
    "theta_length": ("bad/theta_length.h5", f"theta has {ANGLES - 1} angles but the data has {ANGLES} projections"),
    "theta_unordered": ("bad/theta_unordered.h5", "theta is not strictly monotonic (repeated or unordered angles)"),
    "theta_repeated": ("bad/theta_repeated.h5", "theta is not strictly monotonic (repeated or unordered angles)"),
    "theta_radians": ("bad/theta_radians.h5", "theta spans 3.142 and looks like radians; files must give degrees"),
    "single_angle": ("bad/single_angle.h5", "only 1 projection: tomography needs at least two angles"),
    "tiff_shapes": ("bad/tiff_shapes", f"images of mismatched shapes [({SIZE - 2}, {SIZE}), ({SIZE}, {SIZE})] "
                                       "(e.g. proj_0007.tif)"),
    "tiff_no_angles": ("bad/stack.tif", "TIFF scans need angles: give the 'angles' column"),
    "empty_folder": ("bad/empty_folder", "folder holds no .tif/.tiff images"),
    "nan_pixels": ("bad/nan_pixels.h5", "5.0 % of pixels are NaN or inf (at most 1 % are repaired)"),
    "flats_below_darks": ("bad/flats_below_darks.h5", "flats are at or below darks in 100.0 % of pixels "
                                                      "(swapped or failed flat-field images?)"),
    "constant": ("bad/constant.h5", "all projections are constant (every pixel reads 1000): "
                                    "there is no sample to reconstruct"),
    "missing_path": ("nowhere/scan.h5", "does not exist"),
    "unreadable": ("bad/unreadable.h5", "cannot be read (permission denied)"),
}

#: Scans of the same campaign that must finish.
GOOD_SCANS = ("good", "normalised", "two_rows")


def _synthetic(seed=1, size=SIZE, amplitude=2.0, vertical=True):
    """Ideal line integrals of a particle displaced by random jitter: (measured, jitter)."""
    rng = np.random.default_rng(seed)
    ideal = reproject(phantom(size, "particle", rng), np.deg2rad(THETA_DEG), device="cpu")
    ideal *= 2.0 / float(ideal.max())
    jitter = random_jitter(ANGLES, amplitude, rng, vertical=vertical)
    return displace(ideal, jitter), jitter


def _write_scans(work: Path):
    """Write every bad scan of the catalogue and the two good ones built here; returns the table rows."""
    bad = work / "bad"
    bad.mkdir()
    measured, _ = _synthetic()
    data, flats, darks = simulate_counts(measured, photons=20000.0, rng=np.random.default_rng(2))

    def dxchange(name, data=data, theta=THETA_DEG, flats=flats, darks=darks):
        write_dxchange(bad / name, data, theta, flats, darks)
        return bad / name

    raw = dxchange("complete.h5").read_bytes()
    (bad / "truncated.h5").write_bytes(raw[: len(raw) // 2])
    corrupt = bytearray(raw)
    corrupt[96:160] = b"\xff" * 64  # the root group's object header, right after the superblock
    (bad / "corrupt.h5").write_bytes(bytes(corrupt))
    with h5py.File(bad / "corrupt_chunk.h5", "w") as f:  # bit rot in one compressed chunk of the data
        f.create_dataset("exchange/data", data=data, chunks=(1, SIZE, SIZE), compression="gzip")
        f["exchange/theta"], f["exchange/data_white"], f["exchange/data_dark"] = THETA_DEG, flats, darks
        chunk = f["exchange/data"].id.get_chunk_info(ANGLES // 2)
    corrupt = bytearray((bad / "corrupt_chunk.h5").read_bytes())
    corrupt[chunk.byte_offset: chunk.byte_offset + chunk.size] = b"\xff" * chunk.size
    (bad / "corrupt_chunk.h5").write_bytes(bytes(corrupt))
    (bad / "empty.h5").write_bytes(b"")
    (bad / "notes.txt").write_text("angles 0..180, 31 projections, see logbook p. 12\n")
    with h5py.File(bad / "no_data.h5", "w") as f:
        f["entry/data"] = data
        f["exchange/theta"] = THETA_DEG
    dxchange("data_2d.h5", data=data[0])
    with h5py.File(bad / "no_theta.h5", "w") as f:
        f["exchange/data"], f["exchange/data_white"], f["exchange/data_dark"] = data, flats, darks
    dxchange("no_flats.h5", flats=None)
    dxchange("no_darks.h5", darks=None)
    dxchange("flats_shape.h5", flats=flats[:, 1:-1])
    dxchange("theta_length.h5", theta=THETA_DEG[:-1])
    dxchange("theta_unordered.h5", theta=THETA_DEG[[0, 1, 3, 2, *range(4, ANGLES)]])
    dxchange("theta_repeated.h5", theta=np.r_[THETA_DEG[:5], THETA_DEG[4], THETA_DEG[6:]])
    dxchange("theta_radians.h5", theta=np.deg2rad(THETA_DEG))
    dxchange("single_angle.h5", data=data[:1], theta=THETA_DEG[:1])
    folder = bad / "tiff_shapes"
    folder.mkdir()
    for k, image in enumerate(data):
        tifffile.imwrite(folder / f"proj_{k:04d}.tif", image[1:-1] if k == 7 else image)
    tifffile.imwrite(bad / "stack.tif", data)
    (bad / "empty_folder").mkdir()
    (bad / "empty_folder" / "README.txt").write_text("the images were never copied\n")
    holes = data.copy().ravel()
    holes[::20] = np.nan  # 5 % of the pixels, a third of them inf
    holes[::60] = np.inf
    dxchange("nan_pixels.h5", data=holes.reshape(data.shape))
    dxchange("flats_below_darks.h5", flats=darks, darks=flats)
    dxchange("constant.h5", data=np.full_like(data, 1000.0))
    if not RUNNING_AS_ROOT:
        dxchange("unreadable.h5").chmod(0)

    # Already normalised transmission without flats and darks: allowed when the table says so.
    write_dxchange(bad / "normalised.h5", np.exp(-measured).astype(np.float32), THETA_DEG)
    # Two detector rows (like the tooth): horizontal jitter only, dy must come back NaN.
    thin, _ = _synthetic(seed=3, vertical=False)
    counts = simulate_counts(thin[:, SIZE // 2 - 1: SIZE // 2 + 1], photons=20000.0, rng=np.random.default_rng(4))
    write_dxchange(bad / "two_rows.h5", *counts[:1], THETA_DEG, *counts[1:])

    rows = [{"scan": scan, "path": path} for scan, (path, _) in CATALOGUE.items()
            if scan != "unreadable" or not RUNNING_AS_ROOT]
    for row in rows:
        if row["scan"] == "tiff_shapes":
            row.update(format="tiff", angles=f"0:180:{ANGLES}")
    rows.append({"scan": "normalised", "path": "bad/normalised.h5", "normalised": "true"})
    rows.append({"scan": "two_rows", "path": "bad/two_rows.h5"})
    return rows


@pytest.fixture(scope="module")
def bad_campaign(tmp_path_factory):
    work = tmp_path_factory.mktemp("bad_inputs")
    rows = _write_scans(work)
    work = make_campaign(work, {"good": ("particle", 1)}, rows=rows, size=SIZE, angles=ANGLES, amplitude=2.0)
    # Only what a finished scan must hold (volume, and shifts on the way): the QC figures and the
    # summary are the ordinary workflow's business (tests/test_workflow.py).
    targets = [f"results/{row['scan']}/volume.h5" for row in rows] + ["results/good/volume.h5"]
    result = run_snakemake(work, "--keep-going", *targets)
    return work, result, result.stdout + result.stderr


#: Cases the workflow does not catch yet (expected failures, strict: they alert once fixed).
GAPS = {}


@pytest.mark.parametrize("scan", [pytest.param(scan, marks=pytest.mark.xfail(scan in GAPS, reason=GAPS.get(scan, ""),
                                                                             strict=True))
                                  for scan in sorted(CATALOGUE)])
def test_bad_scan_fails_with_one_clear_line_and_leaves_nothing(bad_campaign, scan):
    if scan == "unreadable" and RUNNING_AS_ROOT:
        pytest.skip("running as root: a file without read permission is still readable")
    work, result, log = bad_campaign
    assert result.returncode != 0
    path, problem = CATALOGUE[scan]
    # One message (the profile's show-failed-logs repeats it, from the step's log file, with the traceback).
    messages = {line.split(" ERROR ", 1)[-1] for line in log.splitlines() if f"scan {scan} failed in step" in line}
    assert len(messages) == 1, f"expected one error message for {scan}, got {messages}\n{log[-3000:]}"
    message = messages.pop()
    expected = f"scan {scan} failed in step preprocess (bad input): {path}: "
    assert message.startswith(expected), message
    assert problem in message[len(expected):], message
    left = [p for p in (work / "results" / scan).rglob("*") if p.is_file()]
    assert not left, f"the failed scan {scan} left {left}"


@pytest.mark.parametrize("scan", GOOD_SCANS)
def test_good_scans_beside_the_bad_ones_finish(bad_campaign, scan):
    work, _, log = bad_campaign
    out = work / "results" / scan
    assert (out / "volume.h5").is_file() and (out / "shifts.csv").is_file(), log[-3000:]
    assert f"scan {scan} failed" not in log
    table, shifts = read_shifts(out / "shifts.csv")
    assert len(table) == ANGLES and np.all(np.isfinite(shifts[:, 0]))
    with h5py.File(out / "volume.h5") as f:
        assert np.all(np.isfinite(f["volume"][()]))
    if scan == "two_rows":  # dy is unobservable on two rows: reported as NaN, never invented
        assert np.all(np.isnan(shifts[:, 1]))
    else:
        assert np.all(np.isfinite(shifts[:, 1]))


# -- faults of the scan table, found when the workflow parses it ------------------------------------------------

@pytest.mark.parametrize("scan_id", ["a/b", "../up", "a b", "a;rm -rf x", "a$HOME", "a`id`", "a|b", "a&b", "-x"])
def test_scan_ids_with_separators_spaces_or_shell_characters_are_refused(tmp_path, scan_id):
    work = make_campaign(tmp_path, {})
    (work / "bad.tsv").write_text(f"scan\tpath\n{scan_id}\tx.h5\n")
    result = run_snakemake(work, "--config", "scans=bad.tsv", "-n")
    log = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"{scan_id!r} does not match" in log and "letters, digits, '-', '_' and '.' only" in log, log[-2000:]
    assert not (work / "results").exists()


def test_duplicate_scan_ids_are_refused(tmp_path):
    work = make_campaign(tmp_path, {})
    (work / "dup.tsv").write_text("scan\tpath\na\tx.h5\nb\ty.h5\na\tz.h5\n")
    result = run_snakemake(work, "--config", "scans=dup.tsv", "-n")
    log = result.stdout + result.stderr
    assert result.returncode != 0 and "scan table dup.tsv: duplicate scan ids ['a']" in log, log[-2000:]


# -- the model file -------------------------------------------------------------------------------------------

@pytest.fixture
def model_copy(tmp_path):
    """The shipped model and card copied to tmp, or an untrained one where none is shipped yet."""
    from dejitter.registration.network import DejitterNet, save_model

    path = tmp_path / "models" / "dejitter_resnet.pt"
    if SHIPPED_MODEL.is_file() and SHIPPED_MODEL.with_suffix(".json").is_file():
        path.parent.mkdir()
        shutil.copy(SHIPPED_MODEL, path)
        shutil.copy(SHIPPED_MODEL.with_suffix(".json"), path.with_suffix(".json"))
    else:
        torch.manual_seed(0)
        save_model(DejitterNet(64), path, {"trained_amplitude_px_input": 20.0})
    return path


def test_missing_model_stops_the_campaign_before_anything_runs(tmp_path):
    missing = tmp_path / "models" / "no_such_model.pt"
    work = make_campaign(tmp_path / "work", {"tiny": ("particle", 1)}, method="network", model=str(missing),
                         size=SIZE, angles=ANGLES)
    result = run_snakemake(work, "-n")
    log = result.stdout + result.stderr
    assert result.returncode != 0
    # Steps A (the card says which references to build) and C read the model: the DAG stops at the first.
    assert "Missing input files for rule mlem" in log and str(missing) in log, log[-2000:]


def test_model_failing_its_checksum_is_refused_per_scan(tmp_path, model_copy):
    content = bytearray(model_copy.read_bytes())
    content[len(content) // 2] ^= 0x01  # one flipped bit in the weights
    model_copy.write_bytes(bytes(content))
    work = make_campaign(tmp_path / "work", {"tiny": ("particle", 1)}, method="network", model=str(model_copy),
                         size=SIZE, angles=ANGLES, mlem_iterations=3)
    result = run_snakemake(work, "results/tiny/shifts.csv")
    log = result.stdout + result.stderr
    assert result.returncode != 0
    messages = {line.split(" ERROR ", 1)[-1] for line in log.splitlines() if "scan tiny failed in step" in line}
    assert len(messages) == 1, log[-3000:]
    message = messages.pop()
    assert message.startswith(f"scan tiny failed in step register (ModelError): model file {model_copy} "
                              "fails its checksum"), message
    assert message.endswith("the file is corrupt or was replaced"), message
    # The rule's two retries (for steps that run out of memory) repeat the refusal without loading the model again.
    for attempt in (2, 3):
        assert f"attempt {attempt}: the inputs of the attempt that refused them, refused again" in log, log[-3000:]
    out = work / "results" / "tiny"
    assert not (out / "shifts.csv").exists() and not (out / "registration.json").exists()
    assert not list(out.glob(".*.part"))


# -- jitter far beyond the trained range ----------------------------------------------------------------------

class CentroidNet(torch.nn.Module):
    """A stand-in for a trained network that extrapolates: the centroid offset between the channels.

    It is exact for any shift (so any clamping would show) and odd under the flip test, like a
    trained network should be.  Used because the question is what the pipeline does with estimates
    beyond the trained range, not whether a given set of weights extrapolates.
    """

    input_size = 64

    def forward(self, pairs):
        weights = torch.relu(pairs)  # standardised images: the object is the positive part
        total = weights.sum(dim=(2, 3)) + 1e-9
        grid = torch.arange(pairs.shape[-1], dtype=pairs.dtype)
        cx = (weights.sum(dim=2) * grid).sum(dim=-1) / total
        cy = (weights.sum(dim=3) * grid).sum(dim=-1) / total
        return torch.stack([cx[:, 0] - cx[:, 1], cy[:, 0] - cy[:, 1]], dim=1)


def test_jitter_beyond_the_trained_range_is_flagged_not_clamped(tmp_path, monkeypatch):
    """Through ``pipeline.register`` with the card's trained amplitude (20 px): estimates of 45-50 px
    come back as they are, and exactly those angles are flagged in shifts.csv."""
    import dejitter.registration.network
    from dejitter.pipeline.alignment import register

    n_angles, rows, cols = ANGLES, 16, 128
    yy, xx = np.mgrid[:rows, :cols]
    blob = np.exp(-((yy - rows / 2 + 0.5) ** 2 + (xx - cols / 2 + 0.5) ** 2) / (2 * 3.0 ** 2))
    ideal = np.repeat(blob[None], n_angles, axis=0).astype(np.float32)
    rng = np.random.default_rng(5)
    jitter = np.zeros((n_angles, 2))
    jitter[:, 0] = rng.uniform(-4, 4, n_angles)
    far = np.arange(n_angles) % 3 == 0
    jitter[far, 0] = rng.choice([-1, 1], far.sum()) * rng.uniform(45, 50, far.sum())
    binned = displace(ideal, jitter)
    write_stack(tmp_path / "binned.h5", binned, attrs={"scale": [1.0, 1.0]}, extra={"theta_deg": THETA_DEG})
    write_stack(tmp_path / "references.h5", ideal, extra={"theta_deg": THETA_DEG})
    card = {"trained_amplitude_px_input": 20.0, "sha256": "stand-in"}
    monkeypatch.setattr(dejitter.registration.network, "load_model", lambda path, sha256=None, device=None: (CentroidNet(), card))

    provenance = register(tmp_path / "binned.h5", tmp_path / "shifts.csv", references_path=tmp_path / "references.h5",
                          method="network", model_path="stand-in.pt", mlem_iter=2, backend="torch", device="cpu",
                          max_spread=1.0)
    assert provenance["model_sha256"] == "stand-in"
    table = pd.read_csv(tmp_path / "shifts.csv")
    estimated = table[["dx", "dy"]].to_numpy()
    # Far beyond the trained 20 px, and following the truth (the registration's gauge steps move
    # estimates by a few px when a third of the angles are 45-50 px outliers).
    assert np.abs(estimated[far, 0]).min() > 1.5 * 20, "estimates beyond the trained range were clamped"
    assert np.corrcoef(estimated[:, 0], jitter[:, 0])[0, 1] > 0.99
    np.testing.assert_array_equal(table["flagged"].to_numpy(bool), far)


@pytest.mark.skipif(not SHIPPED_MODEL.is_file(), reason=f"no shipped model at {SHIPPED_MODEL} yet "
                                                        "(the flagging logic is tested above with a stand-in)")
def test_shipped_network_flags_jitter_far_beyond_its_training(tmp_path):
    """The workflow with the shipped model on a scan with up to 60 px of jitter (trained: 20 px)."""
    work = make_campaign(tmp_path, {"wild": ("particle", 7)}, method="network", model=str(SHIPPED_MODEL),
                         size=128, angles=ANGLES, amplitude=60.0, binning=2, mlem_iterations=10)
    result = run_snakemake(work, "results/wild/shifts.csv")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    table, shifts = read_shifts(work / "results" / "wild" / "shifts.csv")
    _, truth = read_shifts(work / "data" / "demo" / "wild_truth.csv")
    # The flag threshold is the jitter the card says the training targets cover (about 22 px).
    trained = read_card(SHIPPED_MODEL)["trained_amplitude_px_input"]
    flagged = table["flagged"].to_numpy(bool)
    # Whatever the network answers, an estimate beyond the trained range is never passed silently...
    assert flagged[np.abs(shifts).max(axis=1) > trained].all()
    # ...and most angles jittered far beyond it are flagged (by amplitude or by the flip-test spread).
    far = np.abs(truth).max(axis=1) > 2 * trained
    assert flagged[far].mean() > 0.5, f"only {flagged[far].sum()} of {far.sum()} far-out angles flagged"


def test_every_failure_is_a_documented_bad_input_line(bad_campaign):
    """Every scan that failed, failed with the documented line; none with a bare exception."""
    _, _, log = bad_campaign
    lines = [line for line in log.splitlines() if re.search(r"scan \S+ failed in step", line)]
    pattern = re.compile(r"scan (\S+) failed in step preprocess \(bad input\): (.+?): (.+)$")
    assert all(pattern.search(line) for line in lines), [line for line in lines if not pattern.search(line)]
    failed = {pattern.search(line).group(1) for line in lines}
    assert failed == set(CATALOGUE) - set(GAPS) - ({"unreadable"} if RUNNING_AS_ROOT else set())


# -- too few projections for step C --------------------------------------------------------------------------------

def test_too_few_projections_for_step_c_are_refused_by_name(tmp_path):
    """Seven views (a real Xradia tilt series has that many) give no reconstruction to register
    against: every reference method refuses them in step C (and step A), naming the raw file, and writes nothing;
    ``none`` and ``center_of_mass`` need no reconstruction and run."""
    from dejitter.pipeline import alignment
    from dejitter.types import ScanError

    theta_deg = np.linspace(-45, 45, 7)
    volume = phantom(32, "particle", np.random.default_rng(2))
    projections = reproject(volume, np.deg2rad(theta_deg), device="cpu")
    write_stack(tmp_path / "b.h5", projections, attrs={"scale": [1, 1], "source": "/data/chip.txrm"},
                extra={"theta_deg": theta_deg})
    for method in ("iterative", "phase_correlation"):
        with pytest.raises(ScanError, match=r"^/data/chip.txrm: 7 projections are too few for method "
                                            rf"'{method}'.*at least 12"):
            alignment.register(tmp_path / "b.h5", tmp_path / "shifts.csv", method=method, backend="torch",
                               device="cpu")
    assert not list(tmp_path.glob("*shifts.csv*"))
    # Step A refuses them too, before its MLEM: a refused scan leaves no references in the cache.
    with pytest.raises(ScanError, match=r"^/data/chip.txrm: 7 projections are too few for method 'auto'"):
        alignment.reconstruct_reference(tmp_path / "b.h5", tmp_path / "mlem.h5", method="auto", backend="torch",
                                        device="cpu")
    assert not list(tmp_path.glob("*mlem.h5*"))
    for method in ("none", "center_of_mass"):
        alignment.register(tmp_path / "b.h5", tmp_path / f"{method}.csv", method=method, backend="torch", device="cpu")
        assert read_shifts(tmp_path / f"{method}.csv")[1].shape == (7, 2)
