"""The Fourier (gridding, finufft) FBP: the truth, the torch FBP's grid and grey levels, TomoPy's gridrec
geometry, an off-centre axis, chunks, and the fallback to pixel-driven torch where finufft is absent."""

import sys
from pathlib import Path

import numpy as np
import pytest
from arrays import circle, corr, move
from scipy.ndimage import binary_dilation

from dejitter.reconstruction import FILTERS, direct_fbp, fbp, fbp_method, reproject
from dejitter.reconstruction.backends import TorchBackend, get_backend, gridrec_axis_offset
from dejitter.reconstruction.fourier import fourier_fbp, fourier_size

finufft = pytest.importorskip("finufft")

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tomopy_reference.npz"


def _disks(n, radius=0.4, rows=2):
    """A disk with a denser off-centre disk inside, identical in every slice."""
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    image = 1.0 * (xx ** 2 + yy ** 2 <= (radius * n) ** 2)
    image += 1.0 * ((xx - 0.375 * radius * n) ** 2 + yy ** 2 <= (0.25 * radius * n) ** 2)
    return np.repeat(image[None].astype(np.float32), rows, axis=0)


def _interior(truth, radius):
    n = truth.shape[-1]
    edges = np.abs(np.gradient(truth)[0]) + np.abs(np.gradient(truth)[1]) > 0
    return circle(n, radius) & ~binary_dilation(edges, iterations=2)


def test_auto_is_fourier_on_cpu():
    assert fbp_method("cpu") == "fourier"
    backend = get_backend("torch", device="cpu")
    assert backend.fbp_method == "fourier" and backend.name == "torch(fbp=finufft)"
    assert get_backend("torch", device="cpu").op_name("mlem") == "torch"


def test_fourier_fbp_of_analytic_phantom_is_close_to_truth():
    n = 64
    truth = _disks(n)
    theta = np.deg2rad(np.linspace(0, 180, 180, endpoint=False))
    volume = fourier_fbp(reproject(truth, theta, device="cpu"), theta)
    assert volume.shape == truth.shape and volume.dtype == np.float32
    interior = _interior(truth[0], 0.35 * n)
    assert np.abs(volume[0][interior] - truth[0][interior]).mean() < 0.03
    assert corr(volume[0], truth[0]) > 0.97


@pytest.mark.parametrize("filter_name", FILTERS)
def test_fourier_agrees_with_torch_fbp(small_volume, filter_name):
    """Same grid, same grey levels: half turn, and a full turn of unevenly spaced angles."""
    inside = (slice(None), *np.nonzero(circle(32, 14)))
    rng = np.random.default_rng(4)
    for theta in (np.deg2rad(np.linspace(0, 180, 61)), np.sort(rng.uniform(0, 2 * np.pi, 97))):
        p = reproject(small_volume, theta, device="cpu")
        ours = fourier_fbp(p, theta, filter_name=filter_name)
        torch_fbp = direct_fbp(p, theta, filter_name=filter_name, device="cpu")
        assert corr(ours[inside], torch_fbp[inside]) > 0.99
        assert ours[inside].mean() == pytest.approx(torch_fbp[inside].mean(), rel=0.02)
        assert corr(ours[inside], small_volume[inside]) >= corr(torch_fbp[inside], small_volume[inside]) - 0.005


@pytest.mark.parametrize("offset", [3.7, -6.0])
def test_fourier_fbp_off_centre_axis(offset):
    n = 64
    truth = _disks(n, radius=0.3)  # inside the detector in every view, whichever the offset
    center = (n - 1) / 2 + offset
    theta = np.deg2rad(np.linspace(0, 180, 120, endpoint=False))
    p = reproject(truth, theta, center=center, device="cpu")
    volume = fourier_fbp(p, theta, center=center)
    inside = circle(n, 0.35 * n)
    interior = _interior(truth[0], 0.35 * n)
    assert corr(volume[0][inside], truth[0][inside]) > 0.97
    assert np.abs(volume[0][interior] - truth[0][interior]).mean() < 0.03
    # The torch FBP agrees where both see the object in every view ...
    torch_fbp = direct_fbp(p, theta, center=center, device="cpu")
    assert corr(volume[0][inside], torch_fbp[0][inside]) > 0.99
    # ... and ignoring the offset does not.
    assert corr(fourier_fbp(p, theta)[0][inside], truth[0][inside]) < corr(volume[0][inside], truth[0][inside]) - 0.05


def test_fourier_size_pads_for_the_axis():
    assert fourier_size(128) == 256 and fourier_size(128, 63.5 + 3) == 256
    assert fourier_size(128, 63.5 + 40) == 512  # the rays of a far-off axis would wrap around


def test_fourier_fbp_puts_a_point_where_the_convention_says(theta_small):
    n, c, sigma = 32, 15.5, 1.2
    for center in (c, c + 2.5):
        t = (21 - c) * np.cos(theta_small) - (9 - c) * np.sin(theta_small) + center
        profile = np.exp(-0.5 * ((np.arange(n)[None] - t[:, None]) / sigma) ** 2) * np.sqrt(2 * np.pi) * sigma
        projections = np.repeat(profile[:, None].astype(np.float32), 2, axis=1)
        volume = fourier_fbp(projections, theta_small, center=center)
        assert np.unravel_index(np.argmax(volume[0]), volume[0].shape) == (9, 21)
        assert corr(fourier_fbp(projections, -theta_small, center=center), volume) < 0.5


def test_fourier_fbp_chunks_and_threads_are_bit_identical(small_projections, theta_small):
    whole = fourier_fbp(small_projections, theta_small, workers=1)
    for chunk_slices, workers in ((1, 2), (5, 2), (7, 1), (None, 2)):
        assert np.array_equal(whole, fourier_fbp(small_projections, theta_small, chunk_slices=chunk_slices,
                                                 workers=workers))
    # one slice at a time, as the pipeline's smallest chunks call it
    assert np.array_equal(whole[11:12], fourier_fbp(small_projections[:, 11:12], theta_small))


def test_fourier_fbp_has_tomopy_gridrec_geometry():
    """TomoPy 1.15.2's gridrec of a known volume (``tomopy_reference.npz``), in gridrec's own geometry."""
    if not REFERENCE.exists():
        pytest.skip(f"{REFERENCE} is absent")
    with np.load(REFERENCE) as data:
        ref = {key: data[key] for key in data.files}
    n = ref["volume"].shape[1]
    inside = circle(n, 20)
    ours = fourier_fbp(ref["project"], ref["theta_rad"], center=float(ref["center_tomopy"]) - 0.5)
    assert corr(ours[:, inside], ref["volume"][:, inside]) > 0.97
    assert ours[:, inside].mean() == pytest.approx(ref["volume"][:, inside].mean(), rel=0.02)
    as_gridrec = move(fourier_fbp(ref["project"], ref["theta_rad"], center=float(ref["center_tomopy"])),
                       *gridrec_axis_offset(n))
    assert corr(as_gridrec[:, inside], ref["gridrec"][:, inside]) > 0.99
    mirrored = fourier_fbp(ref["project"], -ref["theta_rad"], center=float(ref["center_tomopy"]))
    assert corr(mirrored[:, inside], ref["gridrec"][:, inside]) < 0.5


def test_without_finufft_fbp_is_pixel_driven_torch(monkeypatch, small_projections, theta_small):
    monkeypatch.setitem(sys.modules, "finufft", None)  # import finufft now fails, find_spec finds nothing
    assert fbp_method("cpu") == "direct"
    backend = get_backend("torch", device="cpu")
    assert isinstance(backend, TorchBackend) and backend.name == "torch" and backend.fbp_method == "direct"
    p = small_projections[:, :3]
    assert np.array_equal(backend.fbp(p, theta_small), direct_fbp(p, theta_small, device="cpu"))
    assert np.array_equal(fbp(p, theta_small, device="cpu"), direct_fbp(p, theta_small, device="cpu"))
    with pytest.raises(RuntimeError, match="finufft"):
        fbp(p, theta_small, device="cpu", method="fourier")


def test_methods_by_name(small_projections, theta_small):
    p = small_projections[:, :2]
    assert np.array_equal(fbp(p, theta_small, device="cpu", method="direct"), direct_fbp(p, theta_small, device="cpu"))
    assert np.array_equal(fbp(p, theta_small, device="cpu"), fourier_fbp(p, theta_small))
    with pytest.raises(ValueError, match="FBP method"):
        fbp(p, theta_small, method="gridrec")
    with pytest.raises(ValueError, match="filter"):
        fbp(p, theta_small, device="cpu", filter_name="butterworth")
