"""One rotation convention, TomoPy's: checked against TomoPy's own outputs, without TomoPy.

``../shared/data/tomopy_reference.npz`` (see ``../shared/data/README.md``) holds TomoPy 1.15.2's
``project``, ``gridrec`` and ``mlem`` of a small asymmetric volume.  Each test also checks that the
opposite sense fails, so a mirrored backend cannot pass.  The TomoPy adapter is checked with a
stand-in ``tomopy`` module that records its calls (TomoPy is not on PyPI).
"""

import importlib.machinery
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from arrays import circle, corr, move

from dejitter.reconstruction import fbp, mlem, reproject
from dejitter.reconstruction.backends import (
    AutoBackend,
    TomopyBackend,
    TorchBackend,
    get_backend,
    gridrec_axis_offset,
)
from dejitter.shifting import shift_columns

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tomopy_reference.npz"


@pytest.fixture(scope="module")
def ref():
    if not REFERENCE.exists():
        pytest.skip(f"{REFERENCE} is absent (TomoPy's outputs live in the project's sibling folder shared/data)")
    with np.load(REFERENCE) as data:
        out = {key: data[key] for key in data.files}
    # TomoPy's project/mlem count the axis from the left edge of the first pixel, we count centres.
    out["center"] = float(out["center_tomopy"]) - 0.5
    return out


def test_reprojection_is_tomopy_project(ref):
    ours = reproject(ref["volume"], ref["theta_rad"], center=ref["center"], device="cpu")
    theirs = ref["project"]
    assert ours.shape == theirs.shape
    assert corr(ours, theirs) > 0.999  # measured 0.9994
    assert ours.sum() == pytest.approx(theirs.sum(), rel=1e-3)  # same scale: line integrals in pixels
    assert np.sqrt(np.mean((ours - theirs) ** 2)) < 0.02 * theirs.max()
    # The opposite sense (the project's before issue 12) is a mirror image: r = 0.01.
    assert corr(reproject(ref["volume"], -ref["theta_rad"], center=ref["center"], device="cpu"), theirs) < 0.5


def test_fbp_agrees_with_tomopy_gridrec(ref):
    inside = circle(ref["volume"].shape[1], 20)
    ours = fbp(ref["project"], ref["theta_rad"], center=ref["center"], device="cpu")
    assert corr(ours[:, inside], ref["gridrec"][:, inside]) > 0.95  # measured 0.965
    mirrored = fbp(ref["project"], -ref["theta_rad"], center=ref["center"], device="cpu")
    assert corr(mirrored[:, inside], ref["gridrec"][:, inside]) < 0.5
    # Ours reconstructs the truth, at its scale.
    assert corr(ours[:, inside], ref["volume"][:, inside]) > 0.97
    assert ours[:, inside].mean() == pytest.approx(ref["volume"][:, inside].mean(), rel=0.02)


def test_gridrec_geometry_is_what_the_adapter_assumes(ref):
    """gridrec counts the axis in pixel centres (it was given 24.0, which it reads as 24.0, not 23.5)
    and puts it on pixel (n/2 - 1, n/2) of its output: modelling both brings r from 0.965 to 0.988."""
    n = ref["volume"].shape[1]
    inside = circle(n, 20)
    plain = fbp(ref["project"], ref["theta_rad"], center=ref["center"], device="cpu")
    as_gridrec = move(fbp(ref["project"], ref["theta_rad"], center=float(ref["center_tomopy"]), device="cpu"),
                       *gridrec_axis_offset(n))
    r_plain = corr(plain[:, inside], ref["gridrec"][:, inside])
    r_model = corr(as_gridrec[:, inside], ref["gridrec"][:, inside])
    assert gridrec_axis_offset(n) == (-0.5, 0.5)
    assert r_model > 0.985 and r_model > r_plain + 0.01


def test_mlem_is_tomopy_mlem(ref):
    measured = np.clip(ref["project"], 0, None)
    ours = mlem(measured, ref["theta_rad"], 5, center=ref["center"], device="cpu")
    assert corr(ours, ref["mlem5"]) > 0.999  # measured 0.9996
    assert ours.sum() == pytest.approx(ref["mlem5"].sum(), rel=0.01)
    assert corr(mlem(measured, -ref["theta_rad"], 5, center=ref["center"], device="cpu"), ref["mlem5"]) < 0.5


# --- the TomoPy adapter, with a stand-in module -------------------------------------------------------------


class _FakeTomopy(types.ModuleType):
    """Records every call; ``project`` and ``mlem`` answer with the torch backend, ``gridrec`` with the
    torch FBP in gridrec's geometry (axis in pixel centres, output axis at gridrec_axis_offset)."""

    def __init__(self):
        super().__init__("tomopy")
        self.__spec__ = importlib.machinery.ModuleSpec("tomopy", loader=None)
        self.calls = []

    def project(self, obj, theta, center=None, emission=True, pad=True, sinogram_order=False, ncore=None):
        self.calls.append(("project", {"obj": obj, "theta": theta, "center": center, "pad": pad}))
        return reproject(obj, theta, center=center - 0.5, device="cpu")

    def recon(self, tomo, theta, center=None, sinogram_order=False, algorithm=None, init_recon=None, **kwargs):
        self.calls.append(("recon", {"tomo": tomo, "theta": theta, "center": center, "algorithm": algorithm,
                                     "init_recon": init_recon, **kwargs}))
        if algorithm == "gridrec":
            n = tomo.shape[2]
            return move(fbp(tomo, theta, center=center, device="cpu"), *gridrec_axis_offset(n))
        return mlem(tomo, theta, kwargs["num_iter"], center=center - 0.5, x0=init_recon, device="cpu")


@pytest.fixture
def fake_tomopy(monkeypatch):
    fake = _FakeTomopy()
    monkeypatch.setitem(sys.modules, "tomopy", fake)
    return fake


def test_tomopy_adapter_maps_center_and_passes_theta_unchanged(fake_tomopy, small_volume, theta_small):
    backend = get_backend("tomopy")
    assert isinstance(backend, TomopyBackend) and backend._tomopy is fake_tomopy
    n = small_volume.shape[2]
    center = (n - 1) / 2 + 1.25

    backend.reproject(small_volume, theta_small, center=center)
    backend.mlem(np.full((len(theta_small), 2, n), -1.0, np.float32), theta_small, 3, center=center)
    backend.fbp(np.zeros((len(theta_small), 2, n), np.float32), theta_small, center=center, filter_name="ramp")
    backend.reproject(small_volume, theta_small)
    (_, project), (_, mlem_call), (_, gridrec), (_, default) = fake_tomopy.calls
    for call in (project, mlem_call, gridrec):
        assert np.array_equal(call["theta"], theta_small)  # no negation: the conventions agree
    assert project["center"] == center + 0.5 and project["pad"] is False
    assert default["center"] == n / 2  # our default (n - 1) / 2, counted from the pixel edge
    assert mlem_call["center"] == center + 0.5 and mlem_call["algorithm"] == "mlem" and mlem_call["num_iter"] == 3
    assert mlem_call["tomo"].min() == 0  # MLEM models counts: negatives clipped
    assert gridrec["center"] == center and gridrec["algorithm"] == "gridrec" and gridrec["filter_name"] == "ramlak"


def test_tomopy_adapter_reference_call_matches_the_reference_file(fake_tomopy, ref):
    """The reference file was made with center=24.0: the adapter sends that for our 23.5."""
    get_backend("tomopy").reproject(ref["volume"], ref["theta_rad"], center=ref["center"])
    assert fake_tomopy.calls[0][1]["center"] == float(ref["center_tomopy"])


def test_tomopy_adapter_puts_gridrec_volumes_on_our_grid(fake_tomopy, small_projections, theta_small):
    adapted = get_backend("tomopy").fbp(small_projections, theta_small)
    ours = fbp(small_projections, theta_small, device="cpu")
    uncorrected = fake_tomopy.recon(small_projections, theta_small, center=(small_projections.shape[2] - 1) / 2,
                                    algorithm="gridrec")
    inside = (slice(None), *np.nonzero(circle(ours.shape[1], 0.4 * ours.shape[1])))
    assert corr(adapted[inside], ours[inside]) > 0.995
    assert corr(adapted[inside], ours[inside]) > corr(uncorrected[inside], ours[inside]) + 0.02


def test_shift_columns_is_a_subpixel_shift():
    x = np.arange(64, dtype=np.float64)
    rows = np.exp(-0.5 * ((x - 30) / 3) ** 2).astype(np.float32)[None, None].repeat(3, 0)
    shifted = shift_columns(rows, [0.0, 0.5, -1.5])
    for out, s in zip(shifted, [0.0, 0.5, -1.5]):
        assert np.allclose(out[0], np.exp(-0.5 * ((x - 30 - s) / 3) ** 2), atol=1e-4)


def test_auto_prefers_its_own_fourier_fbp_to_gridrec(fake_tomopy):
    backend = get_backend("auto", device="cpu")
    if backend.name != "torch(fbp=finufft)":
        pytest.skip("finufft is not importable here")
    assert isinstance(backend, TorchBackend)


def test_auto_picks_per_operation_and_says_so(fake_tomopy, monkeypatch, small_volume, small_projections,
                                              theta_small):
    # Where the torch FBP would be the pixel-driven one (a GPU, or no finufft), gridrec is faster.
    monkeypatch.setattr("dejitter.reconstruction.filtered_backprojection.finufft_available", lambda: False)
    backend = get_backend("auto", device="cpu")
    assert isinstance(backend, AutoBackend)
    assert backend.name == "auto(mlem=torch,reproject=torch,fbp=tomopy)" and backend.device == "cpu"
    backend.mlem(small_projections, theta_small, 2)
    backend.reproject(small_volume, theta_small)
    assert fake_tomopy.calls == []  # MLEM and reprojection ran on torch
    backend.fbp(small_projections, theta_small)
    assert [(name, call["algorithm"]) for name, call in fake_tomopy.calls] == [("recon", "gridrec")]


def test_auto_without_tomopy_is_torch(monkeypatch):
    monkeypatch.setattr("dejitter.reconstruction.backends.tomopy_available", lambda: False)
    backend = get_backend("auto", device="cpu")
    assert isinstance(backend, TorchBackend)
    assert backend.name == ("torch(fbp=finufft)" if backend.fbp_method == "fourier" else "torch")
