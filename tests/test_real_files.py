"""Files that real instruments and facility software wrote (``../shared/data/real/``, see its README).

Each reader is checked on them for shapes, angles, keys and metadata, and, where another
maintained reader of the same files exists, against it: ``txrm2tiff``'s own export (reference
applied, alignment shifts applied) for Xradia files, and the checksum HTTomo's test suite records
for the Diamond K11 file.  Skipped where ``../shared/data`` is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from dejitter.readers import _sniff_format, open_scan, read_scan
from dejitter.readers.xradia import read_txrm, read_xradia, split_folder
from dejitter.types import ScanError

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
XRADIA, XANESPY = REAL / "xradia_dxchange", REAL / "xradia_xanespy"
K11 = REAL / "nxtomo_diamond_k11" / "k11-18014.nxs"
I13 = REAL / "tiff_diamond_i13"
APS_SAMPLE, APS_REF = "fov03_xanessoc01_8353_0eV.xrm", "ref_xanessoc01_8353_0eV.xrm"
SSRL_SAMPLE = "rep01_20161456_ssrl-test-data_08324.0_eV_001of003.xrm"
SSRL_REF = "rep01_000051_ref_20161456_ssrl-test-data_08324.0_eV_001of010.xrm"

pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason=f"real data {REAL} is absent (it lives in the "
                                                          "project's sibling folder shared/data)")

# ImageInfo/Angles and Alignment/X-Shifts, Y-Shifts of txrm_test_chip_tomo.txrm (float32 in the file)
TXRM_ANGLES = [-45.018002, -30.014126, -15.014126, -0.014125, 14.985876, 29.985876, 44.985878]
TXRM_X_SHIFTS = [0.259159, -0.943685, 1.280618, -1.077111, 1.104736, -0.955929, 0.332211]
TXRM_Y_SHIFTS = [0.243996, 0.224195, -0.011881, 0.078828, -0.141718, -0.145044, -0.248375]


# --------------------------------------------------------------------------- Zeiss/Xradia


def test_txrm_tilt_series_projections_angles_pixel_size_and_alignment():
    path = XRADIA / "txrm_test_chip_tomo.txrm"
    assert _sniff_format(path) == "txrm"
    scan = read_txrm(path)
    assert scan.data.shape == (7, 256, 256) and scan.data.dtype == np.float32
    np.testing.assert_allclose(scan.theta_deg, TXRM_ANGLES, atol=1e-5)
    assert scan.pixel_size_um == pytest.approx(0.155789, abs=1e-6)
    # jitter in the project's convention: dx = -X-Shift, dy = +Y-Shift (rows are flipped on reading)
    np.testing.assert_allclose(scan.instrument_shifts, np.c_[-np.array(TXRM_X_SHIFTS), TXRM_Y_SHIFTS], atol=1e-6)
    assert scan.flats is None and scan.darks is None  # no reference in this file
    with pytest.raises(ScanError, match="has no flats and darks; mark the scan 'normalised'"):
        read_scan(path)
    assert read_scan(path, normalised=True).data.shape == (7, 256, 256)


def test_txrm_reads_as_txrm2tiff_exports_it_and_its_shifts_correct_as_the_instrument_aligns():
    """Images in XRM Data Explorer's orientation, as txrm2tiff exports them; correcting the reported
    jitter (rounded to whole pixels, as txrm2tiff applies it) reproduces txrm2tiff's shifted export."""
    import txrm2tiff

    from dejitter.shifting import correct

    scan = read_txrm(XRADIA / "txrm_test_chip_tomo.txrm")
    with txrm2tiff.open_txrm(XRADIA / "txrm_test_chip_tomo.txrm") as txrm:
        plain = txrm.get_output(load=True, shifts=False, clear_images=False)
        aligned = txrm.get_output(load=True, shifts=True, clear_images=False)
    np.testing.assert_array_equal(scan.data, plain)
    assert not np.array_equal(plain, aligned)  # the shifts move whole pixels in this file
    corrected = correct(scan.data, np.round(scan.instrument_shifts), order=1, mode="grid-wrap")
    np.testing.assert_allclose(corrected, aligned, atol=1e-3)


@pytest.mark.parametrize("name", ["test_chip00.xrm", "test_chip01.xrm"])
def test_xrm_with_embedded_reference(name):
    import txrm2tiff

    image = read_xradia(XRADIA / name)
    assert image.images.shape == (1, 512, 512) and image.version == 3.0
    np.testing.assert_allclose(image.angles_deg, [-0.06], atol=1e-6)
    assert image.pixel_size_um == pytest.approx(0.077895, abs=1e-6)
    assert image.reference.shape == (512, 512) and image.reference_exposure_s == pytest.approx(40.0)
    assert image.exposures_s[0] == pytest.approx(39.884727, abs=1e-5)
    assert image.x_shifts is None
    # the flat the scan reader makes of it is the reference as txrm2tiff applies it (exposure-compensated)
    with txrm2tiff.open_txrm(XRADIA / name) as txrm:
        txrm.apply_internal_reference()
        referenced = txrm.get_output(clear_images=False)
    flat = image.reference * np.float32(image.exposures_s[0] / image.reference_exposure_s)
    np.testing.assert_allclose(100 * image.images[0] / flat, referenced[0], rtol=1e-5)


def test_folder_of_xrm_at_one_angle_is_refused_clearly(tmp_path):
    for name in ("test_chip00.xrm", "test_chip01.xrm"):
        os.symlink(XRADIA / name, tmp_path / name)
    with pytest.raises(ScanError, match="theta is not strictly monotonic"):  # both at -0.06 deg
        read_scan(tmp_path)


@pytest.mark.parametrize("sample, reference, version, angle, pixel_um, exposures", [
    (APS_SAMPLE, APS_REF, 3.0, -0.042, 0.038947, (35.0, 35.0)),      # APS 8-BM
    (SSRL_SAMPLE, SSRL_REF, 4.0, 6.974469, 0.0312, (0.5, 0.3)),      # SSRL 6-2c, file version 4
])
def test_xrm_with_a_separate_reference(sample, reference, version, angle, pixel_um, exposures):
    image, ref = read_xradia(XANESPY / sample), read_xradia(XANESPY / reference)
    for part, exposure in zip((image, ref), exposures):
        assert part.images.shape == (1, 1024, 1024) and part.version == version
        np.testing.assert_allclose(part.angles_deg, [angle], atol=1e-5)
        assert part.pixel_size_um == pytest.approx(pixel_um, abs=1e-6)
        assert part.exposures_s[0] == pytest.approx(exposure, abs=1e-6)
        assert part.reference is None
    transmission = image.images[0] / (ref.images[0] * exposures[0] / exposures[1])
    assert 0.2 < np.median(transmission) < 0.9  # a sample in the beam, less than the open beam
    # one file per angle is not a tomography scan on its own: the message says so
    with pytest.raises(ScanError, match="only 1 projection: tomography needs at least two angles"):
        read_scan(XANESPY / sample, flats=XANESPY / reference)


def test_folder_of_xrm_per_angle_with_reference_files(tmp_path):
    """How several TXM beamlines record: one .xrm per angle beside reference .xrm files, told apart by name."""
    folder = tmp_path / "scan"
    folder.mkdir()
    for name in (APS_SAMPLE, APS_REF, SSRL_SAMPLE, SSRL_REF):
        os.symlink(XANESPY / name, folder / name)
    projections, references, darks = split_folder(sorted(folder.iterdir()))
    assert [p.name for p in projections] == [APS_SAMPLE, SSRL_SAMPLE]
    assert {p.name for p in references} == {APS_REF, SSRL_REF} and darks == []
    assert _sniff_format(folder) == "txrm"
    scan = read_scan(folder)
    assert scan.data.shape == (2, 1024, 1024)
    np.testing.assert_allclose(scan.theta_deg, [-0.042, 6.974469], atol=1e-5)  # ordered by angle
    np.testing.assert_array_equal(scan.data[0], read_xradia(XANESPY / APS_SAMPLE).images[0])
    assert scan.flats.shape == (2, 1024, 1024) and scan.darks.shape == (1, 1024, 1024) and not scan.darks.any()
    exposure = np.median([35.0, 0.5])  # references are scaled to the projections' exposure
    np.testing.assert_allclose(scan.flats[0], read_xradia(XANESPY / APS_REF).images[0] * exposure / 35.0, rtol=1e-5)
    assert scan.pixel_size_um == pytest.approx(0.038947, abs=1e-6)
    # the same by glob pattern, with the references named (by a pattern) instead of found by name
    by_pattern = read_scan(folder / "*.xrm", flats=folder / "*ref*.xrm")
    assert by_pattern.data.shape == (2, 1024, 1024) and by_pattern.flats.shape == (2, 1024, 1024)
    with pytest.raises(ScanError, match="holds no Zeiss/Xradia projection files"):
        read_scan(folder / "*ref*.xrm")


# --------------------------------------------------------------------------- Diamond K11 raw NeXus


def test_diamond_k11_raw_nexus_by_its_own_paths():
    assert _sniff_format(K11) == "hdf5"  # not Data Exchange, not NXtomo: found by the layout's paths
    for layout in (None, "diamond_k11"):
        scan = read_scan(K11, layout=layout)
        assert scan.data.shape == (3001, 22, 26)
        assert scan.flats.shape == (100, 22, 26) and scan.darks.shape == (100, 22, 26)
        assert scan.theta_deg.shape == (3001,) and np.all(np.diff(scan.theta_deg) > 0)
        assert scan.theta_deg[0] == pytest.approx(89.995, abs=1e-3)
        assert scan.theta_deg[-1] == pytest.approx(269.995, abs=1e-3)
        assert 0.055 < np.median(np.diff(scan.theta_deg)) < 0.065
    # HTTomo's test suite records this sum of the projections' detector rows 5..6
    assert scan.data[:, 5:7].astype(np.int64).sum() == 6019533062
    assert scan.flats.mean() > 100 * scan.darks.mean()  # flats open beam (~45000), darks ~99 counts


def test_diamond_k11_is_read_by_rows_without_loading_the_frames():
    whole = read_scan(K11)
    with open_scan(K11) as scan:
        assert scan.data.shape == (3001, 22, 26) and not isinstance(scan.data, np.ndarray)
        np.testing.assert_array_equal(scan.data[:, 10:12], whole.data[:, 10:12])
        np.testing.assert_array_equal(scan.flats[:, 3], whole.flats[:, 3])
        np.testing.assert_array_equal(scan.darks[:, :, 0], whole.darks[:, :, 0])


@pytest.mark.parametrize("paths, missing", [
    ({"data": "/entry/EtherCAT/data"}, "/entry/EtherCAT/data is an external link to missing file "
                                       "k11-18014/k11-18014-EtherCAT.h5"),
    ({"angles": "/entry/imaging/gts_theta_value_set"}, "/entry/imaging/gts_theta_value_set is an external link "
                                                       "to missing file k11-18014/k11-18014-EtherCAT.h5"),
    ({"data": "/entry/instrument/imaging/sum"}, "/entry/instrument/imaging/sum is an external link to "
                                                "k11-18014/k11-18014-imaging.h5:/entry/sum/sum, which that file "
                                                "does not hold"),
])
def test_diamond_k11_missing_external_links_are_reported_not_crashed_on(paths, missing):
    layout = {"data": "/entry/imaging/data", "angles": "/entry/imaging/gts_theta_value",
              "image_key": "/entry/instrument/imaging/image_key", **paths}
    with pytest.raises(ScanError) as info:
        read_scan(K11, layout=layout)
    assert str(info.value).startswith(f"{K11}: {missing}")


# --------------------------------------------------------------------------- Diamond I13 TIFF


I13_TIFF = dict(angles=str(I13 / "angles.txt"), flats=I13 / "flat_00001.tiff", darks=I13 / "dark_00001.tiff")


@pytest.mark.parametrize("path", [I13, I13 / "raw_*.tiff"])
@pytest.mark.parametrize("frames", ["dark:5, flat:5, proj:91, flat:5, dark:5", "proj=10:101"])
def test_diamond_i13_tiff_with_an_angle_file_of_every_frame(path, frames):
    scan = read_scan(path, frames=frames, **I13_TIFF)
    assert scan.data.shape == (91, 135, 160)
    assert scan.flats.shape == (1, 135, 160) and scan.darks.shape == (1, 135, 160)
    angles = np.loadtxt(I13 / "angles.txt")
    assert len(angles) == 111
    np.testing.assert_array_equal(scan.theta_deg, angles[10:101])
    assert scan.theta_deg[0] == pytest.approx(-88.2) and scan.theta_deg[-1] == pytest.approx(91.8, abs=1e-3)
    np.testing.assert_allclose(np.diff(scan.theta_deg), 2.0, atol=1e-3)
    assert scan.darks.mean() < 0.01 * scan.flats.mean()


def test_diamond_i13_without_frames_says_what_is_wrong():
    with pytest.raises(ScanError, match="theta has 111 angles but the data has 91 projections"):
        read_scan(I13, **I13_TIFF)


# --------------------------------------------------------------------------- through the preprocessing step


@pytest.mark.parametrize("name, path, kwargs", [
    ("k11", K11, {}),
    ("i13", I13, dict(frames="dark:5, flat:5, proj:91, flat:5, dark:5", **I13_TIFF)),
    ("txrm", XRADIA / "txrm_test_chip_tomo.txrm", dict(normalised=True)),
])
def test_real_scans_preprocess(tmp_path, name, path, kwargs):
    from dejitter.files import read_stack
    from dejitter.pipeline.steps import preprocess

    preprocess(path, tmp_path / "projections.h5", tmp_path / "binned.h5", binning=2, memory_budget_mb=100,
               **kwargs)
    projections, attrs, extras = read_stack(tmp_path / "projections.h5")
    assert np.all(np.isfinite(projections)) and projections.std() > 0
    assert len(extras["theta_deg"]) == projections.shape[0]


# --------------------------------------------------------------------------- through the workflow's scan table


@pytest.mark.workflow
def test_scan_table_columns_layout_and_frames_reach_the_reader(tmp_path):
    """The scan table's `layout` (built-in, or named in the config's `hdf5_layouts`) and `frames` columns."""
    from campaign import make_campaign, run_snakemake

    k11_paths = {"data": "/entry/imaging/data", "angles": "/entry/imaging/gts_theta_value",
                 "image_key": "/entry/instrument/imaging/image_key"}
    rows = [{"scan": "k11", "path": K11, "layout": "diamond_k11"},
            {"scan": "k11_custom", "path": K11, "layout": "k11_gda"},
            {"scan": "k11_broken", "path": K11, "layout": "k11_ethercat"},
            {"scan": "i13", "path": I13 / "raw_*.tiff", "frames": "dark:5, flat:5, proj:91, flat:5, dark:5",
             **I13_TIFF}]
    make_campaign(tmp_path, {}, rows=rows,
                  hdf5_layouts={"k11_gda": k11_paths, "k11_ethercat": {**k11_paths, "data": "/entry/EtherCAT/data"}})
    targets = [f"results/{scan}/binned.h5" for scan in ("k11", "k11_custom", "k11_broken", "i13")]
    result = run_snakemake(tmp_path, *targets, "--keep-going")
    for scan in ("k11", "k11_custom", "i13"):
        assert (tmp_path / "results" / scan / "binned.h5").exists(), result.stdout + result.stderr
    assert not (tmp_path / "results" / "k11_broken" / "binned.h5").exists()
    assert ("scan k11_broken failed in step preprocess (bad input): "
            f"{K11}: /entry/EtherCAT/data is an external link to missing file k11-18014/k11-18014-EtherCAT.h5"
            ) in result.stdout + result.stderr
