import numpy as np
import pytest

from dejitter.metrics import remove_rigid_motion, shift_error
from dejitter.shifting import correct, correct_band_limited, displace


def test_displace_follows_the_jitter_sign_convention():
    image = np.zeros((1, 16, 16), np.float32)
    image[0, 5, 4] = 1
    moved = displace(image, np.array([[3.0, 2.0]]), order=1)  # P(x, y) = P_ideal(x - dx, y - dy)
    assert np.unravel_index(np.argmax(moved[0]), (16, 16)) == (7, 7)


def test_shift_and_unshift_round_trip():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :48]
    smooth = np.exp(-((xx - 24) ** 2 + (yy - 22) ** 2) / 60.0)[None].repeat(4, 0).astype(np.float32)
    jitter = rng.uniform(-5, 5, (4, 2))
    back = correct(displace(smooth, jitter), jitter)
    assert np.abs(back - smooth)[:, 8:-8, 8:-8].max() < 1e-3


def test_nan_dy_means_no_vertical_shift():
    image = np.random.default_rng(1).random((2, 8, 8)).astype(np.float32)
    out = displace(image, np.array([[0.0, np.nan], [0.0, np.nan]]))
    assert np.array_equal(out, image)


def test_metric_hand_computed():
    theta = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    true = np.zeros((8, 2))
    estimated = np.zeros((8, 2))
    estimated[0] = [1.0, 0.0]  # one angle off by 1 px in x
    # Residual dx = e0; its fit c + a cos + b sin is removed. With 8 equally spaced angles over
    # a full turn the three regressors are orthogonal: fitted = 1/8 + 2/8 cos(theta) (at theta=0: 3/8).
    expected_rdx = -(1 / 8 + 2 / 8 * np.cos(theta))
    expected_rdx[0] += 1
    result = shift_error(estimated, true, theta)
    assert result["mse"] == pytest.approx(np.mean(expected_rdx ** 2))
    assert result["rms"] == pytest.approx(np.sqrt(result["mse"]))


def test_metric_ignores_rigid_motion_and_constant_dy():
    theta = np.deg2rad(np.linspace(0, 180, 50))
    true = np.random.default_rng(2).normal(size=(50, 2))
    rigid = np.stack([3 + 2 * np.cos(theta) - 1.5 * np.sin(theta), np.full(50, 4.0)], 1)
    assert shift_error(true + rigid, true, theta)["mse"] == pytest.approx(0, abs=1e-20)
    # Every other angle off by (0.5, 0.5): residuals +-0.25 in x and y, mse 2 * 0.0625.
    alternating = shift_error(true + [[0.5, 0.5]] * (np.arange(50) % 2)[:, None], true, theta)["mse"]
    assert alternating == pytest.approx(0.125, abs=0.002)


def test_metric_with_unobserved_dy_counts_dx_only():
    theta = np.deg2rad(np.linspace(0, 180, 20))
    est = np.zeros((20, 2))
    est[:, 1] = np.nan
    true = np.zeros((20, 2))
    true[::2, 0] = 1.0
    result = shift_error(est, true, theta)
    assert np.isnan(result["mse_dy"]) and result["mse"] == pytest.approx(result["mse_dx"])
    assert np.allclose(remove_rigid_motion(est, theta)[:, 1], np.nan, equal_nan=True)


def test_threaded_displacement_equals_one_thread(monkeypatch):
    import dejitter.shifting as shifting

    rng = np.random.default_rng(5)
    images = rng.normal(size=(7, 20, 24)).astype(np.float32)
    shifts = rng.uniform(-3, 3, (7, 2))
    shifts[2] = 0  # copied, not interpolated
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    serial = displace(images, shifts)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setattr(shifting, "_THREADED_PIXELS", 0)
    np.testing.assert_array_equal(displace(images, shifts), serial)
    assert shifting.cpu_threads() == 3


def test_a_band_limited_correction_undoes_a_displacement():
    """The band-limited correction moves the views as ``correct`` does (the one sign), without blurring."""
    rows, cols = np.mgrid[0:32, 0:48]
    image = np.exp(-((rows - 15.0) ** 2 + (cols - 21.0) ** 2) / 40.0) + 0.5 * np.exp(-((cols - 30.0) ** 2) / 20.0)
    images = np.repeat(image[None].astype(np.float32), 3, axis=0)
    shifts = np.array([[2.3, -1.6], [-0.5, 0.0], [0.0, 3.25]])
    undone = correct_band_limited(displace(images, shifts), shifts)
    np.testing.assert_allclose(undone[:, 5:-5, 5:-5], images[:, 5:-5, 5:-5], atol=2e-3)
