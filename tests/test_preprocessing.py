import subprocess
import sys

import numpy as np
import pytest

import dejitter.preprocessing as preprocessing
from dejitter.binning import bin_projections
from dejitter.preprocessing import MIN_TRANSMISSION, median3x3, median_prefilter, normalise
from dejitter.types import ScanError


def _flat_dark(shape=(4, 6)):
    return np.full((2,) + shape, 1100.0, np.float32), np.full((2,) + shape, 100.0, np.float32)


def test_zero_and_negative_transmission_are_clipped_not_inf():
    flats, darks = _flat_dark()
    data = np.full((3, 4, 6), 600.0, np.float32)
    data[0, 0, 0] = 100.0  # zero transmission
    data[1, 0, 0] = 50.0  # negative transmission
    line = normalise(data, flats, darks)
    assert np.all(np.isfinite(line))
    assert line[0, 0, 0] == pytest.approx(-np.log(MIN_TRANSMISSION), rel=1e-5)


def test_rare_nan_and_dead_pixels_are_repaired():
    flats, darks = _flat_dark((20, 20))
    flats[:, 3, 4] = 100.0  # a dead pixel: flat equals dark
    data = np.full((5, 20, 20), 600.0, np.float32)
    data[:, 10:, :] = 350.0  # a smooth sample edge, far from the bad pixels
    data[2, 7, 7] = np.nan
    line = normalise(data, flats, darks)
    assert np.all(np.isfinite(line))
    assert line[2, 7, 7] == pytest.approx(-np.log(0.5), abs=1e-5)
    assert line[0, 3, 4] == pytest.approx(-np.log(0.5), abs=1e-5)


def test_many_bad_pixels_are_refused():
    flats, darks = _flat_dark()
    data = np.full((3, 4, 6), np.nan, np.float32)
    with pytest.raises(ScanError, match="NaN or inf"):
        normalise(data, flats, darks, path="x.h5")
    with pytest.raises(ScanError, match="flats are at or below darks"):
        normalise(np.arange(72, dtype=np.float32).reshape(3, 4, 6), darks, flats)
    with pytest.raises(ScanError, match="constant"):
        normalise(np.full((3, 4, 6), 600.0, np.float32), flats, darks)


def test_binning_keeps_rows_of_short_scans():
    p = np.arange(2 * 2 * 8, dtype=np.float32).reshape(2, 2, 8)
    binned, row_factor = bin_projections(p, 4)
    assert binned.shape == (2, 1, 2) and row_factor == 2
    assert binned[0, 0, 0] == pytest.approx(p[0, :, :4].mean())


@pytest.mark.parametrize("shape", [(3, 3, 3), (2, 5, 8), (4, 40, 37), (1, 3, 200)])
def test_fast_median_is_scipys_median_bit_for_bit(shape, monkeypatch):
    from scipy import ndimage

    monkeypatch.setattr(preprocessing, "_MEDIAN_BLOCK", 64)  # several blocks and bands even on tiny images
    rng = np.random.default_rng(1)
    images = rng.normal(size=shape).astype(np.float32)
    images[images > 0.8] = 0.8  # ties
    expected = ndimage.median_filter(images, size=(1, 3, 3), mode="nearest")
    np.testing.assert_array_equal(median3x3(images), expected)
    np.testing.assert_array_equal(median_prefilter(images, 3), expected)


def test_median_prefilter_removes_salt_and_pepper():
    rng = np.random.default_rng(0)
    clean = np.ones((2, 32, 32), np.float32)
    noisy = clean.copy()
    noisy[rng.random(noisy.shape) < 0.1] = 10
    assert np.abs(median_prefilter(noisy, 3) - clean).mean() < 0.05 * np.abs(noisy - clean).mean()


def test_a_small_scan_is_filtered_without_loading_torch():
    """The preprocessing step of a small scan does not pay torch's import (2.5 s here) for its median."""
    code = ("import sys, numpy as np; from dejitter.preprocessing import median_prefilter; "
            "out = median_prefilter(np.random.default_rng(0).normal(size=(5, 16, 16)).astype(np.float32)); "
            "assert out.dtype == np.float32 and out.shape == (5, 16, 16); print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
