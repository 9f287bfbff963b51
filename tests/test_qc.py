"""QC figures write readable, non-blank PNGs atomically; the sharpness score behaves."""

import time

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread
from scipy.ndimage import gaussian_filter

from dejitter.reports import qc, volume_metrics

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    """A complete PNG, not blank, and no temporary file left beside it."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) > 100
    assert image[..., :3].var() > 1e-3
    assert not list(path.parent.glob("*.part"))


def blocks(shape, rng):
    """A piecewise-constant volume (a few phases), the kind whose edges jitter blurs."""
    coarse = rng.integers(0, 3, size=tuple(max(1, s // 4) for s in shape)).astype(np.float32)
    volume = np.kron(coarse, np.ones((4,) * len(shape), np.float32))
    return volume[tuple(slice(0, s) for s in shape)] + 0.02 * rng.standard_normal(shape).astype(np.float32)


@pytest.fixture
def rng():
    return np.random.default_rng(7)


@pytest.fixture
def shifts_case(rng):
    theta = np.linspace(0, 180, 37)
    shifts = rng.uniform(-5, 5, size=(37, 2))
    spread = rng.uniform(0, 0.5, size=37)
    flagged = np.zeros(37, bool)
    flagged[[3, 20]] = True
    return theta, shifts, spread, flagged


def test_plot_shifts_with_spread_and_flags(tmp_path, shifts_case):
    theta, shifts, spread, flagged = shifts_case
    out = tmp_path / "qc" / "shifts.png"  # the folder does not exist yet
    qc.plot_shifts(out, theta, shifts, spread=spread, flagged=flagged, title="scan-1")
    assert_png(out)


def test_plot_shifts_unobservable_dy(tmp_path, shifts_case):
    theta, shifts, _, flagged = shifts_case
    shifts[:, 1] = np.nan
    out = tmp_path / "shifts.png"
    qc.plot_shifts(out, theta, shifts, flagged=flagged)
    assert_png(out)


def test_plot_shifts_flags_change_the_figure(tmp_path, shifts_case):
    theta, shifts, _, flagged = shifts_case
    plain, marked = tmp_path / "plain.png", tmp_path / "marked.png"
    qc.plot_shifts(plain, theta, shifts)
    qc.plot_shifts(marked, theta, shifts, flagged=flagged)
    image = imread(marked)[..., :3]
    # Red crosses: strongly red pixels appear only where angles are flagged.
    red = (image[..., 0] > 0.8) & (image[..., 1] < 0.3) & (image[..., 2] < 0.3)
    red_plain = imread(plain)[..., :3]
    red_plain = (red_plain[..., 0] > 0.8) & (red_plain[..., 1] < 0.3) & (red_plain[..., 2] < 0.3)
    assert red.sum() > red_plain.sum() + 20


def test_plot_sinograms(tmp_path, rng):
    before = rng.random((24, 10, 32)).astype(np.float32)
    after = gaussian_filter(before, 1.0)
    out = tmp_path / "sinogram.png"
    qc.plot_sinograms(out, before, after, title="scan-1")
    assert_png(out)
    qc.plot_sinograms(out, before, after, row=2)  # overwrites in place
    assert_png(out)


def test_plot_slices_of_different_sizes(tmp_path, rng):
    after = blocks((24, 32, 32), rng)
    before = after[::2, ::2, ::2]  # e.g. an uncorrected volume at half resolution
    out = tmp_path / "slices.png"
    qc.plot_slices(out, before, after, title="scan-1")
    assert_png(out)


def test_plot_histograms(tmp_path, rng):
    after = blocks((16, 16, 16), rng)
    before = gaussian_filter(after, 1.5)
    out = tmp_path / "histogram.png"
    qc.plot_histograms(out, before, after, bins=64, title="scan-1")
    assert_png(out)


def test_sharpness_is_scale_invariant(rng):
    volume = blocks((16, 20, 24), rng)
    assert volume_metrics.sharpness(10 * volume) == pytest.approx(volume_metrics.sharpness(volume), rel=1e-3)
    assert volume_metrics.sharpness(volume + 100) == pytest.approx(volume_metrics.sharpness(volume), rel=1e-3)


def test_sharpness_drops_with_blur(rng):
    volume = blocks((24, 24, 24), rng)
    blurred = gaussian_filter(volume, 1.5)
    assert volume_metrics.sharpness(volume) > volume_metrics.sharpness(blurred) + 0.5  # nats


def test_sharpness_edge_cases():
    assert volume_metrics.sharpness(np.ones((4, 4, 4))) == 0.0
    assert volume_metrics.sharpness(np.full(5, np.nan)) == 0.0
    volume = np.zeros((8, 8, 8))
    volume[2:6, 2:6, 2:6] = 1.0
    volume[0, 0, 0] = np.nan
    assert np.isfinite(volume_metrics.sharpness(volume)) and volume_metrics.sharpness(volume) > 0


def test_sharpness_is_cheap(rng):
    volume = rng.random((128, 128, 128), dtype=np.float32)
    start = time.perf_counter()
    volume_metrics.sharpness(volume)
    # 128^3 is an eighth of the 256^3 budget of a second or two; generous for a busy machine.
    assert time.perf_counter() - start < 1.0


def campaign(n, rng, *, failed=()):
    summary = pd.DataFrame({
        "scan": [f"beamtime_2024_scan{i:03d}" for i in range(n)],
        "rms_shift_px": rng.uniform(3, 6, n),
        "observable_rms_px": rng.uniform(0.5, 1.0, n),
        "flagged_angles": rng.integers(0, 2, n),
        "sharpness_before": rng.uniform(1.0, 1.2, n),
        "sharpness_after": rng.uniform(1.5, 2.0, n),
        "mse_vs_truth_px2": np.full(n, np.nan),
        "status": "ok",
    })
    for i in failed:
        summary.loc[i, "status"] = "failed"
        summary.loc[i, ["rms_shift_px", "observable_rms_px", "sharpness_before", "sharpness_after"]] = np.nan
    return summary


def test_plot_campaign_one_scan(tmp_path, rng):
    out = tmp_path / "campaign.png"
    qc.plot_campaign(out, campaign(1, rng))
    assert_png(out)


def test_plot_campaign_many_scans_with_failure_and_outliers(tmp_path, rng):
    summary = campaign(100, rng, failed=[10, 11])
    summary.loc[40, "observable_rms_px"] = 30.0  # an outlier
    summary.loc[50, "sharpness_after"] = 0.5  # correction made it worse
    summary.loc[:5, "mse_vs_truth_px2"] = 0.9  # truth known for a few (simulated) scans
    out = tmp_path / "campaign.png"
    qc.plot_campaign(out, summary)
    assert_png(out)


def test_plot_campaign_minimal_columns(tmp_path, rng):
    summary = campaign(12, rng, failed=[3]).drop(columns=["mse_vs_truth_px2", "observable_rms_px"])
    out = tmp_path / "campaign.png"
    qc.plot_campaign(out, summary)
    assert_png(out)


def test_the_selection_note_says_why_a_polished_estimate_was_kept():
    provenance = {"selected": "iterative_polished", "score_iterative": 0.1667, "score_iterative_polished": 0.1672,
                  "slow_modes_region_score_before": 0.0759, "slow_modes_region_score_after": 0.0649}
    note = qc.selection_note(provenance)
    assert note.startswith("kept: iterative polished;")
    assert "region every view saw 0.0759 -> 0.0649" in note
    assert "high-passed" not in note  # step 7 not kept
    provenance.update(highpass_kept=True, highpass_change_plain=np.log(0.9976), highpass_change_highpassed=np.log(0.9917))
    assert qc.selection_note(provenance).endswith("high-passed references, residuals over that region -0.24 % (plain), "
                                                  "-0.83 % (high-passed)")
    provenance.update(highpass_kept_by="sharpness", highpass_sharpness_change=0.0021)
    assert qc.selection_note(provenance).endswith("(high-passed), kept as the volume got sharper (+0.21 %)")
    provenance.update(highpass_kept_by="residuals", highpass_sharpness_change=None)
    provenance.update(tie_score_iterative=0.0438, tie_score_network_refined=0.043)
    assert "the closest scored again at 60 MLEM iterations: network refined 0.043, iterative 0.0438;" \
        in qc.selection_note(provenance)
    assert "dx modes" not in qc.selection_note(provenance)  # step 8 did not run
    provenance.update(faster_modes_k=[5, 8], faster_modes_region_score_before=0.0651,
                      faster_modes_region_score_after=0.0655)
    assert qc.selection_note(provenance).endswith("; dx modes k 5-8 polished after that, score over that region "
                                                  "0.0651 -> 0.0655")
    assert qc.selection_note({"method": "iterative"}) is None


def test_the_corrected_volume_is_sampled_on_the_uncorrected_volumes_grid(rng):
    """Block means of the corrected volume on the grid of the uncorrected one (``qc_binning``); a
    2-row detector (the tooth) binned by 3 has its rows binned by 2, into one slice, not none."""
    volume = rng.random((6, 9, 9)).astype(np.float32)
    sample = volume_metrics.binned_z_sample(volume, 3, 1)
    np.testing.assert_allclose(sample, volume.reshape(2, 3, 3, 3, 3, 3).mean(axis=(1, 3, 5)), rtol=1e-6)
    np.testing.assert_array_equal(volume_metrics.binned_z_sample(volume, 3, 2), sample[::2])
    np.testing.assert_array_equal(volume_metrics.binned_z_sample(volume, 1, 2), volume[::2])
    two_rows = rng.random((2, 640, 640)).astype(np.float32)
    for row_factor in (None, 2):
        sample = volume_metrics.binned_z_sample(two_rows, 3, 1, row_factor=row_factor)
        assert sample.shape == (1, 213, 213)
        np.testing.assert_allclose(sample[0], two_rows[:, :639, :639].reshape(2, 213, 3, 213, 3).mean(axis=(0, 2, 4)),
                                   rtol=1e-5)
    assert volume_metrics.z_step(volume_metrics.QC_VOXELS) == 1 and volume_metrics.z_step(volume_metrics.QC_VOXELS + 1) == 2


def test_the_summary_tells_the_jitter_from_the_axis_offset(tmp_path, rng):
    """A constant dx is the rotation axis's offset from the assumed centre, kept in ``shifts.csv``:
    ``rms_shift_px`` counts it, ``observable_rms_px`` (the one metric against zero) does not."""
    from dejitter.files import write_shifts
    from dejitter.reports.summary import scan_metrics

    theta_deg = np.linspace(0, 180, 181)
    jitter = rng.normal(0, 0.13, (181, 2))
    write_shifts(tmp_path / "shifts.csv", theta_deg, jitter + [-19.5, 0.0])
    metrics = scan_metrics(tmp_path / "shifts.csv")
    assert metrics["rms_shift_px"] == pytest.approx(19.5, abs=0.05)
    assert metrics["observable_rms_px"] == pytest.approx(0.13 * np.sqrt(2), rel=0.15)


def test_sharpness_pair_scores_both_volumes_over_one_range(rng):
    """A small dense grain that jitter smears over ten times its voxels, beside a blurred matrix edge
    (as on the real I13 scan): each over its own range the smeared volume scores sharper; over one
    range, as the QC compares them, the sharp one does."""
    n = 48
    z, y, x = np.mgrid[:n, :n, :n]
    matrix = np.where((y - 24) ** 2 + (x - 24) ** 2 < 18 ** 2, 0.01, 0.0).astype(np.float32)

    def grain(radius):
        return (z - 24) ** 2 + (y - 20) ** 2 + (x - 26) ** 2 < radius ** 2

    sharp = matrix.copy()
    sharp[grain(3)] = 0.07
    smeared = gaussian_filter(matrix, 1.5)
    smeared[grain(6)] += 0.14 * grain(3).sum() / grain(6).sum()
    for volume in (sharp, smeared):
        volume += rng.normal(0, 0.0008, volume.shape).astype(np.float32)
    assert volume_metrics.sharpness(smeared) > volume_metrics.sharpness(sharp)
    before, after = volume_metrics.sharpness_pair(smeared, sharp)
    assert after > before + 0.2
    assert volume_metrics.sharpness_pair(sharp, sharp) == pytest.approx((volume_metrics.sharpness(sharp),) * 2, abs=1e-4)  # its own range
