"""More input formats (NeXus NXtomo, Zeiss TXRM) and the ImageJ volume writer."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import tifffile

from dejitter.files import write_volume_tiff
from dejitter.readers import _sniff_format, read_scan, write_dxchange
from dejitter.readers.nexus import read_nxtomo
from dejitter.readers.xradia import read_txrm
from dejitter.types import ScanError

ROWS, COLS = 4, 6
OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


# --------------------------------------------------------------------------- NXtomo


def _write_nxtomo(path, *, keys, angles_deg, pixel_size_um=0.65, entry="entry0000"):
    """A small NXtomo written by nxtomo's own writer; frame i is filled with the value i + 1."""
    import pint
    from nxtomo import NXtomo

    ureg = pint.get_application_registry()
    frames = np.stack([np.full((ROWS, COLS), i + 1, dtype=np.uint16) for i in range(len(keys))])
    frames[:, 1, 2] += 100  # a feature, so the images are not constant
    nx = NXtomo()
    nx.instrument.detector.data = frames
    nx.instrument.detector.image_key_control = np.asarray(keys, dtype=int)
    nx.sample.rotation_angle = np.asarray(angles_deg, dtype=np.float64) * ureg.degree
    if pixel_size_um is not None:
        nx.instrument.detector.x_pixel_size = pixel_size_um * 1e-6 * ureg.meter
    nx.save(str(path), entry, overwrite=True)
    return frames


@pytest.fixture
def nxtomo_file(tmp_path):
    # dark, 2 flats, 4 projections (one invalid in between), final flat, one alignment frame
    keys = [2, 1, 1, 0, 0, 3, 0, 0, 1, -1]
    angles = [0, 0, 0, 0, 30, 45, 60, 90, 90, 0]
    path = tmp_path / "scan.nx"
    frames = _write_nxtomo(path, keys=keys, angles_deg=angles)
    return path, frames


def test_nxtomo_round_trip_separates_frames_by_image_key(nxtomo_file):
    path, frames = nxtomo_file
    scan = read_nxtomo(path)
    np.testing.assert_array_equal(scan.data, frames[[3, 4, 6, 7]].astype(np.float32))
    np.testing.assert_array_equal(scan.flats, frames[[1, 2, 8]].astype(np.float32))
    np.testing.assert_array_equal(scan.darks, frames[[0]].astype(np.float32))
    np.testing.assert_allclose(scan.theta_deg, [0, 30, 60, 90])
    assert scan.data.dtype == np.float32 and scan.data.shape == (4, ROWS, COLS)
    assert scan.pixel_size_um == pytest.approx(0.65)


def test_read_scan_sniffs_and_reads_nxtomo(nxtomo_file):
    path, _ = nxtomo_file
    assert _sniff_format(path) == "nxtomo"
    scan = read_scan(path)
    assert scan.data.shape == (4, ROWS, COLS)
    assert scan.flats.shape == (3, ROWS, COLS) and scan.darks.shape == (1, ROWS, COLS)
    assert not scan.normalised


def test_nxtomo_without_flats_and_darks_needs_normalised(tmp_path):
    path = tmp_path / "norm.nx"
    _write_nxtomo(path, keys=[0, 0, 0], angles_deg=[0, 90, 180], pixel_size_um=None)
    with pytest.raises(ScanError, match="has no flats and darks"):
        read_scan(path)
    scan = read_scan(path, normalised=True)
    assert scan.normalised and scan.flats is None and scan.pixel_size_um is None


def test_truncated_nxtomo_gives_scan_error(nxtomo_file, tmp_path):
    path, _ = nxtomo_file
    broken = tmp_path / "broken.nx"
    broken.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    for call in (lambda: read_scan(broken), lambda: read_scan(broken, fmt="nxtomo"), lambda: read_nxtomo(broken)):
        with pytest.raises(ScanError) as info:
            call()
        assert str(broken) in str(info.value)
        assert "truncated or corrupt" in str(info.value)


def test_hdf5_without_known_layout_keeps_dxchange_message(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["something"] = np.zeros(3)
    assert _sniff_format(path) == "dxchange"
    with pytest.raises(ScanError, match="not Data Exchange layout"):
        read_scan(path)
    with pytest.raises(ScanError, match="no NXtomo entry"):
        read_nxtomo(path)


# --------------------------------------------------------------------------- sniffing


def test_sniffing_picks_the_right_format(tmp_path, nxtomo_file):
    dx = tmp_path / "dx.h5"
    write_dxchange(dx, np.ones((3, ROWS, COLS), np.float32), [0, 90, 180])
    tif = tmp_path / "stack.tif"
    tifffile.imwrite(tif, np.ones((3, ROWS, COLS), np.float32), photometric="minisblack")
    ole = tmp_path / "scan.bin"
    ole.write_bytes(OLE2_MAGIC + bytes(504))
    by_suffix = tmp_path / "scan.txrm"
    by_suffix.write_bytes(b"not really an OLE file")
    assert _sniff_format(dx) == "dxchange"
    assert _sniff_format(nxtomo_file[0]) == "nxtomo"
    assert _sniff_format(tif) == "tiff"
    assert _sniff_format(tmp_path) == "tiff"
    assert _sniff_format(ole) == "txrm"
    assert _sniff_format(by_suffix) == "txrm"


def test_sniffing_finds_nxtomo_in_a_diamond_style_subentry(tmp_path):
    path = tmp_path / "diamond.nxs"
    with h5py.File(path, "w") as f:
        entry = f.create_group("entry1")
        entry.attrs["NX_class"] = "NXentry"
        sub = entry.create_group("tomo_entry")
        sub.attrs["NX_class"] = np.bytes_(b"NXsubentry")
        sub["definition"] = np.bytes_(b"NXtomo")
    assert _sniff_format(path) == "nxtomo"


def test_unknown_and_corrupt_files_keep_their_messages(tmp_path):
    junk = tmp_path / "scan.dat"
    junk.write_bytes(b"hello world, nothing here")
    with pytest.raises(ScanError, match="unrecognised file signature"):
        read_scan(junk)
    bad_h5 = tmp_path / "scan.h5"
    bad_h5.write_bytes(b"garbage garbage")
    with pytest.raises(ScanError, match="not a valid HDF5 file"):
        read_scan(bad_h5)
    with pytest.raises(ScanError, match="unknown format"):
        read_scan(bad_h5, fmt="xyz")


# --------------------------------------------------------------------------- TXRM
#
# Real Xradia files are read in tests/test_real_files.py.  Here the mapping from txrm2tiff's object
# to RawScan is tested on cases the real files do not cover (angle streams allocated beyond the
# images taken, mosaics, exposure compensation, the sign of the alignment shifts), with
# ``txrm2tiff.open_txrm`` replaced at its public boundary; the error path for a broken file goes
# through the real package.


class _FakeTxrm:
    """The attributes of txrm2tiff's Txrm object that read_txrm uses."""

    def __init__(self, images, angles, reference=None, pixel_size=0.032, mosaic=False, exposures=None,
                 reference_exposure=None, shifts=None):
        self._images, self._reference = images, reference
        self.image_info = {"Angles": list(angles), "ImagesTaken": [len(images)]}
        if pixel_size is not None:
            self.image_info["PixelSize"] = [pixel_size]
        if exposures is not None:
            self.image_info["ExpTimes"] = list(exposures)
        self.has_reference = reference is not None
        self.reference_exposure = reference_exposure
        self.is_mosaic = mosaic
        self.version = 3.0
        self._streams = {} if shifts is None else {"Alignment/X-Shifts": list(shifts[0]),
                                                   "Alignment/Y-Shifts": list(shifts[1])}
        self.closed = False

    def get_images(self, load=True):
        return self._images

    def get_reference(self, load=True):
        return self._reference

    def has_stream(self, key):
        return key in self._streams

    def read_stream(self, key):
        return self._streams[key]

    def __enter__(self):
        return self

    def __exit__(self, *args):
        self.closed = True


def _txrm_images(n=3):
    images = np.arange(n * ROWS * COLS, dtype=np.uint16).reshape(n, ROWS, COLS) + 10
    reference = np.full((ROWS, COLS), 5000, dtype=np.float32)
    reference[0] = 4000  # top row differs, so the vertical flip is visible
    return images, reference


@pytest.fixture
def fake_open_txrm(monkeypatch):
    import txrm2tiff

    opened = {}

    def install(fake):
        def open_txrm(path, load_images=True, load_reference=True, strict=False):
            opened["path"], opened["strict"], opened["fake"] = path, strict, fake
            return fake

        monkeypatch.setattr(txrm2tiff, "open_txrm", open_txrm)
        return opened

    return install


@pytest.fixture
def txrm_path(tmp_path):
    path = tmp_path / "tomo.txrm"
    path.write_bytes(OLE2_MAGIC + bytes(504))
    return path


def test_txrm_mapping_with_reference(txrm_path, fake_open_txrm):
    images, reference = _txrm_images()
    # Angles allocated for more images than were taken: only the first three count.
    opened = fake_open_txrm(_FakeTxrm(images, [-60.0, 0.0, 60.0, 0.0, 0.0], reference))
    scan = read_txrm(txrm_path)
    assert opened["strict"] and opened["fake"].closed
    np.testing.assert_array_equal(scan.data, images[:, ::-1].astype(np.float32))
    np.testing.assert_allclose(scan.theta_deg, [-60, 0, 60])
    np.testing.assert_array_equal(scan.flats, reference[None, ::-1])
    np.testing.assert_array_equal(scan.darks, np.zeros((1, ROWS, COLS), np.float32))
    assert scan.pixel_size_um == pytest.approx(0.032) and scan.instrument_shifts is None
    # through read_scan: sniffed as txrm, and the zero dark satisfies the flat/dark check
    scan = read_scan(txrm_path)
    assert scan.data.shape == (3, ROWS, COLS) and not scan.normalised


def test_txrm_reference_is_scaled_to_the_exposure_of_the_projections(txrm_path, fake_open_txrm):
    images, reference = _txrm_images()
    fake_open_txrm(_FakeTxrm(images, [0.0, 90.0, 180.0], reference, exposures=[2.0, 2.0, 2.0],
                             reference_exposure=4.0))
    np.testing.assert_allclose(read_txrm(txrm_path).flats, 0.5 * reference[None, ::-1])


def test_txrm_alignment_shifts_are_reported_as_jitter(txrm_path, fake_open_txrm):
    """Xradia's X-Shift aligns by ``np.roll(raw, x_shift)``: the jitter it corrects is dx = -x_shift;
    rows are flipped on reading, so dy = +y_shift."""
    from dejitter.shifting import correct

    images, reference = _txrm_images()
    x_shifts, y_shifts = [1.0, -2.0, 0.0, 0.0, 0.0], [0.0, 1.0, -1.0, 0.0, 0.0]  # allocated beyond 3 images
    fake_open_txrm(_FakeTxrm(images, [0.0, 90.0, 180.0], reference, shifts=(x_shifts, y_shifts)))
    scan = read_txrm(txrm_path)
    np.testing.assert_allclose(scan.instrument_shifts, [[-1, 0], [2, 1], [0, -1]])
    # The instrument's alignment of the stored image, seen in the orientation read, is the project's
    # correction of the jitter reported.
    for k in range(3):
        aligned = np.roll(images[k], (int(y_shifts[k]), int(x_shifts[k])), axis=(0, 1))[::-1].astype(np.float32)
        corrected = correct(scan.data[k:k + 1], scan.instrument_shifts[k:k + 1], order=1, mode="grid-wrap")[0]
        np.testing.assert_allclose(corrected, aligned, atol=1e-3)


def test_txrm_without_reference_needs_normalised(txrm_path, fake_open_txrm):
    images, _ = _txrm_images()
    fake_open_txrm(_FakeTxrm(images, [0.0, 90.0, 180.0], reference=None, pixel_size=None))
    scan = read_txrm(txrm_path)
    assert scan.flats is None and scan.darks is None and scan.pixel_size_um is None
    with pytest.raises(ScanError, match="has no flats and darks"):
        read_scan(txrm_path)
    assert read_scan(txrm_path, normalised=True).normalised


def test_txrm_refuses_mosaics_and_bad_angles(txrm_path, fake_open_txrm):
    images, _ = _txrm_images()
    fake_open_txrm(_FakeTxrm(images, [0.0, 90.0, 180.0], mosaic=True))
    with pytest.raises(ScanError, match="mosaic"):
        read_txrm(txrm_path)
    fake_open_txrm(_FakeTxrm(images, [0.0, 0.0, 0.0]))
    with pytest.raises(ScanError, match="not strictly monotonic"):
        read_txrm(txrm_path)


def test_broken_txrm_gives_scan_error_from_the_real_package(tmp_path):
    for content in (OLE2_MAGIC + b"truncated", b"not an OLE file at all"):
        path = tmp_path / "broken.txrm"
        path.write_bytes(content)
        with pytest.raises(ScanError) as info:
            read_scan(path)
        assert str(path) in str(info.value) and "TXRM" in str(info.value)


# --------------------------------------------------------------------------- ImageJ TIFF volumes


def test_write_volume_tiff_is_an_imagej_hyperstack_with_voxel_size(tmp_path):
    volume = np.random.default_rng(0).random((5, ROWS, COLS)).astype(np.float64)
    path = tmp_path / "out" / "volume.tif"
    write_volume_tiff(path, volume, voxel_size_um=(0.5, 0.25, 0.125))
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej
        meta = tif.imagej_metadata
        data = tif.asarray()
        page = tif.pages[0]
        x_res = page.tags["XResolution"].value
        y_res = page.tags["YResolution"].value
    assert data.dtype == np.float32 and data.shape == volume.shape
    np.testing.assert_array_equal(data, volume.astype(np.float32))
    assert meta["images"] == 5 and meta["slices"] == 5
    assert meta["unit"] == "um"
    assert meta["spacing"] == pytest.approx(0.5)
    assert x_res[1] / x_res[0] == pytest.approx(0.125)  # um per pixel
    assert y_res[1] / y_res[0] == pytest.approx(0.25)
    assert not list(path.parent.glob("*.part"))


def test_write_volume_tiff_scalar_voxel_and_no_voxel(tmp_path):
    volume = np.ones((3, ROWS, COLS), np.float32)
    write_volume_tiff(tmp_path / "iso.tif", volume, voxel_size_um=0.04)
    with tifffile.TiffFile(tmp_path / "iso.tif") as tif:
        assert tif.imagej_metadata["spacing"] == pytest.approx(0.04)
        num, den = tif.pages[0].tags["XResolution"].value
        assert den / num == pytest.approx(0.04, rel=1e-6)
    write_volume_tiff(tmp_path / "plain.tif", volume)
    with tifffile.TiffFile(tmp_path / "plain.tif") as tif:
        assert tif.is_imagej and "spacing" not in tif.imagej_metadata
    with pytest.raises(ValueError):
        write_volume_tiff(tmp_path / "bad.tif", np.ones((ROWS, COLS)))
    assert not list(tmp_path.glob("*.part")) and not (tmp_path / "bad.tif").exists()
