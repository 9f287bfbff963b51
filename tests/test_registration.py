import numpy as np
import pytest

from dejitter.metrics import shift_error
from dejitter.reconstruction import reproject
from dejitter.registration import estimate_shifts
from dejitter.registration.center import find_center
from dejitter.registration.classic import register_pairs, reset_runaways
from dejitter.shifting import displace
from dejitter.training.synthesis import phantom, random_jitter


@pytest.fixture(scope="module")
def jittered():
    rng = np.random.default_rng(5)
    volume = phantom(48, "particle", rng)
    volume = volume * (volume.shape[0] > 0)
    theta = np.deg2rad(np.linspace(0, 180, 91))
    ideal = reproject(volume, theta, device="cpu")
    jitter = random_jitter(len(theta), 5.0, rng)
    return displace(ideal, jitter), theta, jitter


def test_register_pairs_returns_the_jitter_of_the_moving_image():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:40, :40]
    blobs = sum(np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 8.0) for cx, cy in rng.uniform(10, 30, (6, 2)))
    reference = np.repeat(blobs[None].astype(np.float32), 3, 0)
    jitter = np.array([[2.3, -1.2], [-3.5, 0.4], [0.0, 2.75]])
    found = register_pairs(displace(reference, jitter), reference, upsample=20)
    assert np.abs(found - jitter).max() < 0.3


def test_register_pairs_is_the_same_in_batches_and_view_by_view(jittered):
    """Views are registered in batches (their spectra held together): a view's answer is its own."""
    projections, theta, jitter = jittered
    references = displace(projections, -jitter)
    together = register_pairs(projections, references)  # 91 views: three batches of 32 and less
    alone = np.concatenate([register_pairs(projections[i:i + 1], references[i:i + 1]) for i in range(0, 91, 10)])
    np.testing.assert_array_equal(together[::10], alone)


def test_register_pairs_finds_the_peak_skimage_finds(jittered):
    """The batched correlation is skimage's ``phase_cross_correlation`` (``normalization=None``) on the
    same windowed images, within one step of its 1/20 px grid (the Nyquist column is taken as real)."""
    registration = pytest.importorskip("skimage.registration")
    projections, theta, jitter = jittered
    references = displace(projections, -0.5 * jitter)
    rows, cols = projections.shape[1:]
    window = np.outer(np.hanning(rows + 2)[1:-1], np.hanning(cols + 2)[1:-1])
    ours = register_pairs(projections, references)
    for i in range(0, len(theta), 7):
        prepared = [(image - image.mean()) * window for image in (references[i], projections[i])]
        found, _, _ = registration.phase_cross_correlation(*prepared, upsample_factor=20, normalization=None)
        assert abs(ours[i, 0] + found[1]) <= 0.05 + 1e-9  # dx from the whole images
    flat = register_pairs(projections - projections.mean(axis=1, keepdims=True), references -
                          references.mean(axis=1, keepdims=True))
    np.testing.assert_allclose(flat[:, 1], ours[:, 1], atol=1e-9)  # dy: from the images without column means


def test_register_pairs_finds_dy_through_a_short_view_of_a_tall_body():
    # A body constant along the rows fills a 32-row view; only small inclusions move visibly with
    # dy.  Correlating the windowed images whole held dy near 0 (the body correlates best
    # unshifted under the same window); without the column means dy is found.
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:96, :160]
    body = 2.0 * np.clip(1 - ((xx - 80) / 70.0) ** 2, 0, None)
    blobs = sum(0.3 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 6.0) for cx, cy in
                zip(rng.uniform(20, 140, 30), rng.uniform(20, 76, 30)))
    tall = (body + blobs).astype(np.float32)
    jitter = np.array([[0.5, 3.0], [-1.0, -2.5], [1.5, 2.0], [0.0, -3.5]])
    moving = displace(np.repeat(tall[None], len(jitter), 0), jitter)[:, 32:64]
    reference = np.repeat(tall[None, 32:64], len(jitter), 0)
    found = register_pairs(moving, reference, upsample=20)
    assert np.abs(found - jitter).max() < 0.4  # 3.5 px off in dy before


def test_a_high_pass_removes_the_pull_of_a_smooth_error_in_the_reference():
    """A reference wrong by a smooth bump (as MLEM of truncated projections is) pulls the peak."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:48, :64]
    texture = sum(0.3 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 3.0) for cx, cy in
                  zip(rng.uniform(4, 60, 40), rng.uniform(4, 44, 40))).astype(np.float32)
    jitter = np.array([[0.4, -0.3], [-1.2, 0.8], [2.3, 1.1], [-0.6, -1.7]])
    moving = displace(np.repeat(texture[None], len(jitter), 0), jitter)
    smooth = (1.5 * np.exp(-((xx - 16) ** 2 + (yy - 30) ** 2) / 300.0)).astype(np.float32)
    reference = np.repeat((texture + smooth)[None], len(jitter), 0)
    assert np.abs(register_pairs(moving, reference) - jitter).max() > 0.1
    assert np.abs(register_pairs(moving, reference, highpass=2.56) - jitter).max() < 0.03


def test_a_runaway_angle_is_restarted_and_jitter_is_kept():
    rng = np.random.default_rng(4)
    shifts = rng.uniform(-20, 20, (361, 2))
    view = (2048, 256)
    assert np.array_equal(reset_runaways(shifts, view), shifts)  # uniform jitter never reaches 6 robust sigmas
    quiet = rng.normal(0, 0.5, (361, 2))
    quiet[5] = 30.0  # a real stage's rare large jump: far in sigmas, but within a quarter of the view
    assert np.array_equal(reset_runaways(quiet, view), quiet)
    lost = shifts.copy()
    lost[100, 1] = 115.0  # one view of the 2048 x 256 px scan ran off so
    lost[7, 0] = np.nan  # an unobservable component is left alone
    fixed = reset_runaways(lost, view)
    assert fixed[100, 1] == pytest.approx(np.median(lost[:, 1]))
    assert np.isnan(fixed[7, 0]) and np.array_equal(np.delete(fixed, 100, 0)[:, 1], np.delete(shifts, 100, 0)[:, 1])


def test_iterative_alignment_reaches_sub_tenth_pixel(jittered):
    projections, theta, jitter = jittered
    before = shift_error(np.zeros_like(jitter), jitter, theta)["mse"]
    shifts, quality = estimate_shifts(projections, theta, "iterative", levels=(2, 1), max_iter=6)
    after = shift_error(shifts, jitter, theta)["mse"]
    assert before > 10 and after < 0.05
    assert quality["residual"].shape == (len(theta),)


def test_baselines_run_through_the_same_interface(jittered):
    projections, theta, jitter = jittered
    com, _ = estimate_shifts(projections, theta, "center_of_mass")
    assert shift_error(com, jitter, theta)["mse"] < 1.0  # clean object inside the field: nearly exact
    none, _ = estimate_shifts(projections, theta, "none")
    assert np.all(none == 0)
    with pytest.raises(ValueError, match="unknown registration method"):
        estimate_shifts(projections, theta, "magic")


def test_few_rows_report_dy_as_unobservable_and_still_find_dx(jittered):
    projections, theta, jitter = jittered
    dx_only = jitter * [1, 0]
    ideal = reproject(phantom(48, "particle", np.random.default_rng(5)), theta, device="cpu")
    two_rows = displace(ideal, dx_only)[:, 20:22]
    shifts, _ = estimate_shifts(two_rows, theta, "iterative", levels=(1,), max_iter=8)
    assert np.all(np.isnan(shifts[:, 1]))
    assert shift_error(shifts, dx_only, theta)["mse"] < 0.1


@pytest.mark.parametrize("center", [23.5, 26.0, 21.25])
def test_find_center(center):
    theta = np.deg2rad(np.linspace(0, 180, 61))
    projections = reproject(phantom(48, "ellipsoids", 2) * 1.0, theta, center=center, device="cpu")
    assert find_center(projections, theta) == pytest.approx(center, abs=0.15)
    assert find_center(projections[:30], theta[:30]) is None  # no views half a turn apart


def test_reference_volumes_are_reconstructed_from_at_most_a_few_hundred_angles_each():
    """Long scans (3000 angles) thin the angles of each leave-out half's MLEM; up to 722 angles use them all."""
    from dejitter.registration.references import MAX_RECONSTRUCTION_ANGLES, angle_halves, reconstruction_subsets

    for n in (12, 181, 721, 722):
        assert [list(s) for s in reconstruction_subsets(n)] == [list(s) for s in angle_halves(n)]
    even, odd = reconstruction_subsets(3000)
    assert len(even) == len(odd) == MAX_RECONSTRUCTION_ANGLES
    assert set(even) <= set(range(0, 3000, 2)) and set(odd) <= set(range(1, 3000, 2))  # still leave-out halves
    assert even[0] == 0 and even[-1] == 2998 and np.ptp(np.diff(even)) <= 2  # evenly spread over the whole range
    (everything,) = reconstruction_subsets(3000, leave_out=False)
    assert len(everything) == MAX_RECONSTRUCTION_ANGLES and everything[-1] == 2999
