import numpy as np
import pytest

from dejitter.reconstruction import fbp, mlem, poisson_nll, reproject
from dejitter.reconstruction.backends import TorchBackend, get_backend, tomopy_available


def _disks(n):
    """Analytic phantom: a disk with a denser off-centre disk, identical in every slice."""
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    image = 1.0 * (xx ** 2 + yy ** 2 <= (0.4 * n) ** 2) + 1.0 * ((xx - 0.15 * n) ** 2 + yy ** 2 <= (0.1 * n) ** 2)
    return np.repeat(image[None].astype(np.float32), 2, axis=0)


def test_fbp_of_analytic_phantom_is_close_to_truth():
    n = 64
    truth = _disks(n)
    theta = np.deg2rad(np.linspace(0, 180, 180, endpoint=False))
    volume = fbp(reproject(truth, theta, device="cpu"), theta, device="cpu")
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    inner = xx ** 2 + yy ** 2 <= (0.35 * n) ** 2
    edges = np.abs(np.gradient(truth[0])[0]) + np.abs(np.gradient(truth[0])[1]) > 0
    interior = inner & ~__import__("scipy").ndimage.binary_dilation(edges, iterations=2)
    assert np.abs(volume[0][interior] - truth[0][interior]).mean() < 0.03
    assert np.corrcoef(volume[0].ravel(), truth[0].ravel())[0, 1] > 0.97


@pytest.mark.parametrize("filter_name", ["ramp", "shepp-logan", "cosine", "hamming", "hann"])
def test_fbp_filters_preserve_the_mean_level(filter_name):
    truth = _disks(32)
    theta = np.deg2rad(np.linspace(0, 180, 90, endpoint=False))
    volume = fbp(reproject(truth, theta, device="cpu"), theta, filter_name=filter_name, device="cpu")
    assert volume[0, 12:20, 8:14].mean() == pytest.approx(1.0, abs=0.1)


def test_mlem_does_not_increase_poisson_likelihood(small_volume, small_projections, theta_small):
    noisy = np.random.default_rng(1).poisson(small_projections * 50) / 50
    previous, x = np.inf, None
    for _ in range(5):
        x = mlem(noisy, theta_small, 2, x0=x, device="cpu")
        nll = poisson_nll(noisy, x, theta_small, device="cpu")
        assert nll <= previous + 1e-6 * abs(previous if np.isfinite(previous) else 1)
        previous = nll


def test_mlem_guards_zero_over_zero():
    theta = np.deg2rad(np.linspace(0, 180, 20))
    projections = np.zeros((20, 3, 16), np.float32)
    projections[:, 1, 6:10] = 1.0  # one slice with signal, the others all zero
    volume = mlem(projections, theta, 10, device="cpu")
    assert np.all(np.isfinite(volume))
    assert volume[0].max() == 0 and volume[1].max() > 0


def test_fbp_and_mlem_put_a_point_where_the_convention_says(theta_small):
    """Projections of a small blob at (row 9, column 21), computed from the stated convention alone
    (t = (x - c) cos(theta) - (y - c) sin(theta) + center, TomoPy's sense), reconstruct there."""
    n, c, sigma = 32, 15.5, 1.2
    t = (21 - c) * np.cos(theta_small) - (9 - c) * np.sin(theta_small) + c
    profile = np.exp(-0.5 * ((np.arange(n)[None] - t[:, None]) / sigma) ** 2) * np.sqrt(2 * np.pi) * sigma
    projections = np.repeat(profile[:, None].astype(np.float32), 2, axis=1)
    for volume in (fbp(projections, theta_small, device="cpu"), mlem(projections, theta_small, 20, device="cpu")):
        assert np.unravel_index(np.argmax(volume[0]), volume[0].shape) == (9, 21)


def test_chunked_reconstruction_equals_whole(small_projections, theta_small):
    whole = mlem(small_projections, theta_small, 3, device="cpu")
    chunked = mlem(small_projections, theta_small, 3, device="cpu", chunk_slices=7)
    assert np.allclose(whole, chunked, rtol=1e-5, atol=1e-7)
    assert np.allclose(fbp(small_projections, theta_small, device="cpu"),
                       fbp(small_projections, theta_small, device="cpu", chunk_slices=5), atol=1e-5)


def test_auto_backend_without_tomopy_is_torch():
    if tomopy_available():
        pytest.skip("tomopy is importable here: 'auto' picks it")
    assert isinstance(get_backend("auto", device="cpu"), TorchBackend)
    with pytest.raises(RuntimeError, match="tomopy"):
        get_backend("tomopy")


@pytest.mark.skipif(not tomopy_available(), reason="tomopy is not importable (not on PyPI; use the conda env)")
def test_torch_and_tomopy_backends_agree(small_volume, theta_small):
    torch_backend, tomopy_backend = get_backend("torch", device="cpu"), get_backend("tomopy")
    p_torch = torch_backend.reproject(small_volume, theta_small)
    p_tomopy = tomopy_backend.reproject(small_volume, theta_small)
    assert np.corrcoef(p_torch.ravel(), p_tomopy.ravel())[0, 1] > 0.99  # one rotation sense (issue 12)
    assert p_tomopy.sum() == pytest.approx(p_torch.sum(), rel=0.01)
    v_torch = torch_backend.fbp(p_torch, theta_small)
    v_tomopy = tomopy_backend.fbp(p_torch, theta_small)
    inner = (slice(None), slice(8, 24), slice(8, 24))
    assert np.corrcoef(v_torch[inner].ravel(), v_tomopy[inner].ravel())[0, 1] > 0.95
    m_torch = torch_backend.mlem(p_torch, theta_small, 10)
    m_tomopy = tomopy_backend.mlem(p_torch, theta_small, 10)
    assert np.corrcoef(m_torch[inner].ravel(), m_tomopy[inner].ravel())[0, 1] > 0.95
