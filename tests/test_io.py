import os

import h5py
import numpy as np
import pytest
import tifffile

from dejitter.errors import ScanError
from dejitter.io import read_angles, read_scan, write_dxchange
from dejitter.preprocessing import bin_projections, normalise


def _counts(n_angles=6, rows=8, cols=10, seed=0):
    rng = np.random.default_rng(seed)
    flats = np.full((3, rows, cols), 1000.0, np.float32)
    darks = np.full((2, rows, cols), 100.0, np.float32)
    line = rng.uniform(0.1, 1.0, (n_angles, rows, cols)).astype(np.float32)
    data = (100 + 900 * np.exp(-line)).astype(np.float32)
    return data, flats, darks, line


def test_dxchange_round_trip_and_normalisation(tmp_path):
    data, flats, darks, line = _counts()
    write_dxchange(tmp_path / "s.h5", data, np.linspace(0, 180, 6), flats, darks, pixel_size_um=0.03)
    scan = read_scan(tmp_path / "s.h5")
    assert scan.data.shape == (6, 8, 10) and scan.pixel_size_um == pytest.approx(0.03)
    assert np.allclose(normalise(scan.data, scan.flats, scan.darks), line, atol=1e-5)


def test_tiff_folder_and_multipage_with_angle_sources(tmp_path):
    data, flats, darks, _ = _counts()
    folder = tmp_path / "proj"
    folder.mkdir()
    for i, image in enumerate(data):
        tifffile.imwrite(folder / f"p_{i:04d}.tif", image)
    tifffile.imwrite(tmp_path / "flats.tif", flats, photometric="minisblack")
    tifffile.imwrite(tmp_path / "darks.tif", darks, photometric="minisblack")
    tifffile.imwrite(tmp_path / "stack.tif", data, photometric="minisblack")
    np.savetxt(tmp_path / "angles.txt", np.linspace(0, 180, 6))
    a = read_scan(folder, angles="0:180:6", flats=tmp_path / "flats.tif", darks=tmp_path / "darks.tif")
    b = read_scan(tmp_path / "stack.tif", angles=str(tmp_path / "angles.txt"), flats=tmp_path / "flats.tif",
                  darks=tmp_path / "darks.tif")
    assert np.array_equal(a.data, b.data) and np.allclose(a.theta_deg, b.theta_deg)


def test_tooth_data_exchange_file(tooth_path):
    scan = read_scan(tooth_path)
    assert scan.data.shape == (181, 2, 640) and scan.theta_deg[-1] == pytest.approx(179.0, abs=0.01)
    line = normalise(scan.data, scan.flats, scan.darks)
    assert np.all(np.isfinite(line)) and line.max() > 0.5
    binned, row_factor = bin_projections(line, 2)
    assert binned.shape == (181, 1, 320) and row_factor == 2


@pytest.mark.parametrize("theta, message", [
    (np.linspace(0, 180, 5), "5 angles but the data has 6"),
    (np.array([0, 10, 5, 20, 30, 40.0]), "not strictly monotonic"),
    (np.linspace(0, np.pi, 12)[:6], "looks like radians"),
])
def test_bad_theta_is_refused(tmp_path, theta, message):
    data, flats, darks, _ = _counts(n_angles=6 if "radians" not in message else 12)
    if "radians" in message:
        theta = np.linspace(0, np.pi, 12)
    write_dxchange(tmp_path / "s.h5", data, theta, flats, darks)
    with pytest.raises(ScanError, match=message):
        read_scan(tmp_path / "s.h5")


def test_bad_files_are_refused_with_the_path(tmp_path):
    (tmp_path / "text.h5").write_text("not a scan")
    with pytest.raises(ScanError, match="text.h5.*not a valid HDF5"):
        read_scan(tmp_path / "text.h5")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ScanError, match="unrecognised file signature"):
        read_scan(tmp_path / "notes.txt")
    with pytest.raises(ScanError, match="does not exist"):
        read_scan(tmp_path / "missing.h5")
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f["other"] = 1
    with pytest.raises(ScanError, match="no /exchange/data"):
        read_scan(tmp_path / "empty.h5")
    data, flats, darks, _ = _counts()
    write_dxchange(tmp_path / "full.h5", data, np.linspace(0, 180, 6), flats, darks)
    raw = (tmp_path / "full.h5").read_bytes()
    (tmp_path / "truncated.h5").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ScanError, match="truncated.h5"):
        read_scan(tmp_path / "truncated.h5")


def test_missing_flats_need_normalised_flag(tmp_path):
    data, _, _, line = _counts()
    write_dxchange(tmp_path / "s.h5", data, np.linspace(0, 180, 6))
    with pytest.raises(ScanError, match="has no flats and darks.*normalised"):
        read_scan(tmp_path / "s.h5")
    transmission = np.exp(-line)
    write_dxchange(tmp_path / "t.h5", transmission, np.linspace(0, 180, 6))
    scan = read_scan(tmp_path / "t.h5", normalised=True)
    assert np.allclose(normalise(scan.data, normalised=True), line, atol=1e-5)


def test_mismatched_tiff_shapes_are_named(tmp_path):
    folder = tmp_path / "proj"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", np.zeros((4, 4), np.float32))
    tifffile.imwrite(folder / "b.tif", np.zeros((4, 5), np.float32))
    with pytest.raises(ScanError, match="mismatched shapes.*b.tif"):
        read_scan(folder, angles="0:180:2", normalised=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file regardless of permissions")
def test_unreadable_file(tmp_path):
    path = tmp_path / "s.h5"
    path.write_bytes(b"x")
    path.chmod(0)
    with pytest.raises(ScanError, match="permission"):
        read_scan(path)


def test_read_angles_range_and_errors(tmp_path):
    assert np.allclose(read_angles("0:180:3"), [0, 90, 180])
    with pytest.raises(ScanError):
        read_angles(str(tmp_path / "nope.txt"))
