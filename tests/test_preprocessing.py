import numpy as np
import pytest

from dejitter.preprocessing import MIN_TRANSMISSION, bin_projections, median_prefilter, normalise
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


def test_median_prefilter_removes_salt_and_pepper():
    rng = np.random.default_rng(0)
    clean = np.ones((2, 32, 32), np.float32)
    noisy = clean.copy()
    noisy[rng.random(noisy.shape) < 0.1] = 10
    assert np.abs(median_prefilter(noisy, 3) - clean).mean() < 0.05 * np.abs(noisy - clean).mean()
