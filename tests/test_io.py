import os

import h5py
import numpy as np
import pytest
import tifffile

from dejitter.binning import bin_projections
from dejitter.preprocessing import normalise
from dejitter.readers import read_scan, write_dxchange
from dejitter.readers.common import read_angles
from dejitter.types import ScanError


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


# --------------------------------------------------------------------------- frames: darks, flats, projections together


def test_frame_keys_runs_and_ranges():
    from dejitter.readers.common import frame_keys

    runs = frame_keys("dark:2, flat:1, proj:3, flat:1, dark:2", 9)
    np.testing.assert_array_equal(runs, [2, 2, 1, 0, 0, 0, 1, 2, 2])
    ranges = frame_keys("proj=3:6, flat=2:3; dark=7:", 9)
    np.testing.assert_array_equal(ranges, [-1, -1, 1, 0, 0, 0, -1, 2, 2])
    assert np.array_equal(frame_keys("projections:3, skip:1", 4), [0, 0, 0, -1])
    for spec, n, message in [("dark:2, proj:3", 6, "describe 5 frames but there are 6"),
                             ("proj=0:10", 9, "beyond the 9 frames"),
                             ("proj=0:5, flat=4:6", 9, "overlaps"),
                             ("proj:3, flat=4:6", 9, "not a mix"),
                             ("sample:3", 3, "unknown frame type 'sample'"),
                             ("proj:x", 3, "not type:count")]:
        with pytest.raises(ScanError, match=message):
            frame_keys(spec, n)


def _acquisition(tmp_path):
    """Counts of 2 darks, 2 flats, 6 projections, 1 flat, 1 dark, with one angle line per frame."""
    data, flats, darks, line = _counts()
    keys = [2, 2, 1, 1] + [0] * 6 + [1, 2]
    frames, f, d, p = [], iter(flats), iter(darks), iter(data)
    for k in keys:
        frames.append(next(p) if k == 0 else next(f) if k == 1 else next(d, darks[0]))
    theta = np.r_[[0.0] * 4, np.linspace(0, 180, 6), [180.0] * 2]
    np.savetxt(tmp_path / "angles.txt", theta)
    return np.stack(frames), np.array(keys), data, line


def test_tiff_stack_of_every_frame_is_split_by_frames(tmp_path):
    stack, keys, data, line = _acquisition(tmp_path)
    tifffile.imwrite(tmp_path / "all.tif", stack, photometric="minisblack")
    for spec in ("dark:2, flat:2, proj:6, flat:1, dark:1", "dark=0:2, flat=2:4, proj=4:10, flat=10:11, dark=11:12"):
        scan = read_scan(tmp_path / "all.tif", angles=str(tmp_path / "angles.txt"), frames=spec)
        np.testing.assert_array_equal(scan.data, data)
        np.testing.assert_allclose(scan.theta_deg, np.linspace(0, 180, 6))
        assert scan.flats.shape == (3, 8, 10) and scan.darks.shape == (3, 8, 10)
        assert np.allclose(normalise(scan.data, scan.flats, scan.darks), line, atol=1e-5)


def test_tiff_projections_only_take_their_angles_from_a_longer_angle_file(tmp_path):
    stack, keys, data, _ = _acquisition(tmp_path)
    folder = tmp_path / "scan"
    folder.mkdir()
    for i, image in enumerate(data):
        tifffile.imwrite(folder / f"raw_{i}.tif", image)
    # flat and dark files in the same folder are not projections when the table names them
    tifffile.imwrite(folder / "flat_1.tif", stack[2])
    tifffile.imwrite(folder / "dark_1.tif", stack[0])
    kwargs = dict(angles=str(tmp_path / "angles.txt"), flats=folder / "flat_1.tif", darks=folder / "dark_1.tif")
    scan = read_scan(folder, frames="proj=4:10", **kwargs)
    np.testing.assert_array_equal(scan.data, data)
    np.testing.assert_allclose(scan.theta_deg, np.linspace(0, 180, 6))
    assert scan.flats.shape == (1, 8, 10) and scan.darks.shape == (1, 8, 10)
    by_pattern = read_scan(folder / "raw_*.tif", frames="dark:2, flat:2, proj:6, flat:1, dark:1", **kwargs)
    np.testing.assert_array_equal(by_pattern.data, data)
    with pytest.raises(ScanError, match="theta has 12 angles but the data has 6"):
        read_scan(folder, **kwargs)
    with pytest.raises(ScanError, match="6 images, but frames 'proj=4:9' describe 12 frames of which 5"):
        read_scan(folder, frames="proj=4:9", **kwargs)
    with pytest.raises(ScanError, match="matches no files"):
        read_scan(folder / "nothing_*.tif", **kwargs)


# --------------------------------------------------------------------------- HDF5 layouts


def _write_fxi(path, data, flats, darks, theta):
    with h5py.File(path, "w") as f:
        f["img_tomo"], f["img_bkg"], f["img_dark"], f["angle"] = data, flats, darks, theta
        f["X_eng"] = 9.0


def test_fxi_layout_is_detected_and_read(tmp_path):
    from dejitter.readers import _sniff_format, open_scan

    data, flats, darks, line = _counts()
    _write_fxi(tmp_path / "fly_scan_id_1.h5", data.astype(np.uint16), flats, darks, np.linspace(0, 180, 6))
    assert _sniff_format(tmp_path / "fly_scan_id_1.h5") == "hdf5"
    for layout in (None, "fxi"):
        scan = read_scan(tmp_path / "fly_scan_id_1.h5", layout=layout)
        assert scan.data.shape == (6, 8, 10) and scan.flats.shape == (3, 8, 10) and scan.darks.shape == (2, 8, 10)
        np.testing.assert_allclose(scan.theta_deg, np.linspace(0, 180, 6))
    with open_scan(tmp_path / "fly_scan_id_1.h5") as scan:  # left on disk, read by rows
        np.testing.assert_array_equal(scan.data[:, 2:4], data.astype(np.uint16)[:, 2:4])
    write_dxchange(tmp_path / "dx.h5", data, np.linspace(0, 180, 6), flats, darks)
    with pytest.raises(ScanError, match="has no /img_tomo dataset \\(not NSLS-II FXI layout\\)"):
        read_scan(tmp_path / "dx.h5", layout="fxi")


def _write_keyed(path, theta_units=None):
    """All frames in one dataset with NeXus image keys: dark, 2 flats, 6 projections, flat, invalid."""
    data, flats, darks, line = _counts()
    keys = np.array([2, 1, 1, 0, 0, 0, 0, 0, 0, 1, 3])
    frames = np.concatenate([darks[:1], flats[:2], data, flats[2:], data[:1]])
    theta = np.r_[0, 0, 0, np.linspace(0, 180, 6), 180, 180]
    with h5py.File(path, "w") as f:
        f["entry/det/frames"] = frames
        f["entry/det/keys"] = keys
        angles = f.create_dataset("entry/motor/theta", data=np.deg2rad(theta) if theta_units == "rad" else theta)
        if theta_units:
            angles.attrs["units"] = theta_units
        size = f.create_dataset("entry/det/pixel", data=650.0)
        size.attrs["units"] = "nm"
    return data, flats, darks, line


LAYOUT = {"data": "/entry/det/frames", "image_key": "/entry/det/keys", "angles": "/entry/motor/theta",
          "pixel_size": "/entry/det/pixel", "name": "beamline_x"}


@pytest.mark.parametrize("units", [None, "rad"])
def test_custom_layout_with_image_keys(tmp_path, units):
    from dejitter.readers import open_scan

    data, flats, darks, line = _write_keyed(tmp_path / "raw.nxs", units)
    scan = read_scan(tmp_path / "raw.nxs", layout=LAYOUT)
    np.testing.assert_array_equal(scan.data, data)
    np.testing.assert_array_equal(scan.flats, flats)
    np.testing.assert_array_equal(scan.darks, darks[:1])
    np.testing.assert_allclose(scan.theta_deg, np.linspace(0, 180, 6))
    assert scan.pixel_size_um == pytest.approx(0.65)
    with open_scan(tmp_path / "raw.nxs", layout=LAYOUT) as lazy:
        assert lazy.data.shape == (6, 8, 10) and lazy.flats.shape == (3, 8, 10)
        np.testing.assert_array_equal(lazy.data[:, 3:5], data[:, 3:5])
        np.testing.assert_array_equal(lazy.flats[:, 1], flats[:, 1])
        np.testing.assert_array_equal(lazy.data[::-2, :, 4], data[::-2, :, 4])
        np.testing.assert_array_equal(np.asarray(lazy.data), data)


def test_layout_without_image_keys_takes_a_frames_spec(tmp_path):
    data, flats, darks, line = _counts()
    with h5py.File(tmp_path / "raw.h5", "w") as f:
        f["frames"] = np.concatenate([darks, flats, data])
        f["theta"] = np.r_[[0.0] * 5, np.linspace(0, 180, 6)]
    scan = read_scan(tmp_path / "raw.h5", layout={"data": "frames", "angles": "theta"},
                     frames="dark:2, flat:3, proj:6")
    np.testing.assert_array_equal(scan.data, data)
    assert scan.flats.shape == (3, 8, 10) and scan.darks.shape == (2, 8, 10)
    with pytest.raises(ScanError, match="unknown HDF5 layout 'nope'.*hdf5_layouts"):
        read_scan(tmp_path / "raw.h5", layout="nope")
    with pytest.raises(ScanError, match="layout needs the dataset paths angles"):
        read_scan(tmp_path / "raw.h5", layout={"data": "frames"})


def test_external_link_to_a_missing_file_is_named_and_other_links_are_not_followed(tmp_path):
    data, flats, darks, _ = _write_keyed(tmp_path / "raw.nxs")
    with h5py.File(tmp_path / "raw.nxs", "a") as f:
        f["entry/det/detector"] = h5py.ExternalLink("raw/detector_1.h5", "/entry/data/data")
        f["entry/monitor"] = h5py.ExternalLink("raw/panda.h5", "/entry")  # unrelated, never opened
        f["entry/linked_keys"] = h5py.SoftLink("/entry/det/keys")
    scan = read_scan(tmp_path / "raw.nxs", layout={**LAYOUT, "image_key": "/entry/linked_keys"})
    np.testing.assert_array_equal(scan.data, data)
    with pytest.raises(ScanError) as info:
        read_scan(tmp_path / "raw.nxs", layout={**LAYOUT, "data": "/entry/det/detector"})
    assert str(info.value) == (f"{tmp_path / 'raw.nxs'}: /entry/det/detector is an external link to missing file "
                               "raw/detector_1.h5")
    with pytest.raises(ScanError, match="/entry/monitor/x/y \\(through /entry/monitor\\) is an external link to "
                                        "missing file raw/panda.h5"):
        read_scan(tmp_path / "raw.nxs", layout={**LAYOUT, "flats": "/entry/monitor/x/y"})


def test_image_keys_or_angles_of_another_length_are_refused(tmp_path):
    _write_keyed(tmp_path / "raw.nxs")
    with h5py.File(tmp_path / "raw.nxs", "a") as f:
        f["entry/short_theta"] = np.linspace(0, 180, 5)
        f["entry/short_keys"] = np.zeros(4, dtype=int)
    with pytest.raises(ScanError, match="/entry/short_theta has 5 angles, but /entry/det/frames holds 11 frames "
                                        "of which 6 projections"):
        read_scan(tmp_path / "raw.nxs", layout={**LAYOUT, "angles": "/entry/short_theta"})
    with pytest.raises(ScanError, match="/entry/short_keys gives 4 frame types but /entry/det/frames holds 11"):
        read_scan(tmp_path / "raw.nxs", layout={**LAYOUT, "image_key": "/entry/short_keys"})
