"""The default (``auto``): truncation-aware references, the truth-free score, the selection."""

import numpy as np
import pytest
import torch

from dejitter.metrics import shift_error
from dejitter.preprocessing import median_prefilter
from dejitter.binning import FINE_WARM_MLEM_ITER, bin_projections
from dejitter.reconstruction import reproject
from dejitter.registration import estimate_shifts
from dejitter.registration.classic import align_iterative, alignment_residual, center_of_mass_shifts, consistency_score
from dejitter.registration.references import (canvas_margins, common_region, filled_edge_bands,
                                               measured_frame_references, upsample_state)
from dejitter.registration.network import DejitterNet
from dejitter.registration.containment import is_contained, polished_components
from dejitter.registration import interior
from dejitter.registration.focus import MIN_EDGE_SHARE, gradient_energy
from dejitter.registration.interior import highpass_sigma, judge_highpass, paired_log_change
from dejitter.registration.anchoring import anchor_slow_part
from dejitter.registration import selection, slow_modes
from dejitter.registration.slow_modes import (FASTER_MODES, MAX_ROUNDS, MIN_STEP_PX, judge_polish, polish_angles,
                                               polish_slow_modes, slow_mode_basis, without_mode_change)
from dejitter.registration.slice_mass import slab_center_of_mass_dx, slice_mass_dy, slice_mass_shifts
from dejitter.shifting import displace
from dejitter.training.ellipsoids import project_ellipsoids, random_particle
from dejitter.training.synthesis import add_salt_and_pepper, phantom, random_jitter


def _scan(seed, *, size=40, n_angles=61, amplitude=5.0, taller=1.0, wider=1.0):
    """A jittered scan of a particle; ``taller``/``wider`` > 1: the sample overflows the detector."""
    rng = np.random.default_rng(seed)
    full = int(round(size * max(taller, wider)))
    volume = phantom(full, "particle", rng)
    if max(taller, wider) > 1:  # fill the grid: a sample that really crosses the edges
        volume = np.maximum(volume, 0.3 * phantom(full, "foam", rng))
    theta = np.deg2rad(np.linspace(0, 180, n_angles))
    ideal = reproject(volume, theta, device="cpu")
    jitter = random_jitter(n_angles, amplitude, rng)
    measured = displace(ideal, jitter)
    r0, c0 = (full - size) // 2 if taller > 1 else 0, (full - size) // 2 if wider > 1 else 0
    return measured[:, r0:r0 + (size if taller > 1 else full), c0:c0 + (size if wider > 1 else full)], theta, jitter


@pytest.fixture(scope="module")
def tall_scan():
    return _scan(21, taller=1.5, wider=1.5)


def test_alignment_of_a_sample_taller_and_wider_than_the_view(tall_scan):
    projections, theta, jitter = tall_scan
    assert not is_contained(projections)[0]
    shifts, _ = align_iterative(projections, theta, levels=(2, 1), max_iter=6)
    assert shift_error(shifts, jitter, theta)["mse"] < 0.2


def test_score_prefers_the_true_jitter_to_a_wrong_one(tall_scan):
    projections, theta, jitter = tall_scan
    wrong = jitter + random_jitter(len(theta), 2.0, np.random.default_rng(0))
    assert consistency_score(projections, theta, jitter)[0] < consistency_score(projections, theta, wrong)[0]


def test_auto_does_not_keep_a_deliberately_wrong_network():
    projections, theta, jitter = _scan(22)
    torch.manual_seed(0)
    # Random weights with a large output scale: a candidate that is wrong by several pixels.
    untrained = DejitterNet(input_size=32, output_scale=200.0, references="full").eval()
    details = {}
    shifts, quality = estimate_shifts(projections, theta, "auto", model=untrained, network_passes=1,
                                      details=details)
    assert details["selected"] != "network"
    assert details["score_network"] > details[f"score_{details['selected']}"]
    assert shift_error(shifts, jitter, theta)["mse"] < 0.1
    assert quality["residual"].shape == (len(theta),)


def test_auto_also_aligns_from_zero_where_the_sample_fills_the_rows(tall_scan):
    projections, theta, jitter = tall_scan
    torch.manual_seed(0)
    quiet = DejitterNet(input_size=32, output_scale=0.01, references="full").eval()  # a network that sees ~0
    details = {}
    shifts, _ = estimate_shifts(projections, theta, "auto", model=quiet, network_passes=1, details=details)
    assert "sample fills the top and bottom rows" in details["iterative_from_zero"]
    assert "score_iterative" in details and details["contained_row_edge_share"] > 0.03
    assert shift_error(shifts, jitter, theta)["mse"] < 0.2


def test_auto_without_a_model_chooses_among_the_classic_candidates():
    projections, theta, jitter = _scan(23)
    details = {}
    shifts, _ = estimate_shifts(projections, theta, "auto", details=details)
    assert {"score_iterative", "score_center_of_mass"} <= set(details)
    assert "score_network" not in details and details["iterative_from_zero"] == "no network"
    assert shift_error(shifts, jitter, theta)["mse"] < 0.1


def test_auto_searches_wide_projections_binned_and_refines_at_their_resolution():
    projections, theta, jitter = _scan(23)
    details = {}
    shifts, quality = estimate_shifts(projections, theta, "auto", details=details, search_width=20)
    assert details["search_binning"] == 2 and details["fine_refinement_updates"]
    assert details["fine_refinement_warm_start"]  # 40 columns and rows binned by 2 leave no remainder
    # High-passed at the given resolution only where step 7 was kept in the search.
    assert details["fine_refinement_highpass_sigma_px"] == (highpass_sigma(40) if details.get("highpass_kept") else None)
    assert quality["residual"].shape == (len(theta),)
    # In pixels of the given projections, as accurate as the search at their own resolution.
    assert shift_error(shifts, jitter, theta)["mse"] < 0.1


def test_references_continue_from_a_binned_search_volumes():
    """The refinement after a binned search starts from the search's volumes, upsampled onto its grid."""
    projections, theta, jitter = _scan(26, size=64)
    coarse, row_factor = bin_projections(projections, 2)
    _, state = measured_frame_references(coarse, theta, jitter / 2, n_iter=20)
    margin = canvas_margins(jitter, *projections.shape[1:])
    warm = upsample_state(state, 2, row_factor, margin)
    assert warm[1] == margin != (state[1][0] * row_factor, state[1][1] * 2)  # cropped to the grid needed
    assert warm[0][0].shape == (projections.shape[1] + 2 * margin[0],) + (projections.shape[2] + 2 * margin[1],) * 2
    # The refinement's first MLEM iterations from the upsampled volumes fit the data better than
    # the same from a uniform volume, and better than ten (measured here: as well as twelve or so).
    fitted = {}
    for name, start, n_iter in (("warm", warm, FINE_WARM_MLEM_ITER), ("cold", None, FINE_WARM_MLEM_ITER),
                                ("cold_10", None, 10)):
        references, _ = measured_frame_references(projections, theta, jitter, n_iter=n_iter, warm_start=start)
        fitted[name] = np.median(alignment_residual(projections, references))
    assert fitted["warm"] < 0.6 * fitted["cold"] and fitted["warm"] < fitted["cold_10"], fitted


def test_containment_is_seen_without_the_truth(tall_scan):
    contained, evidence = is_contained(_scan(24)[0])
    assert contained and evidence["edge_share"] < 0.03 and evidence["row_edge_share"] < 0.03
    assert not is_contained(tall_scan[0])[0]
    assert is_contained(tall_scan[0])[1]["row_edge_share"] > 0.03  # the sample fills the top and bottom rows


def test_salt_and_pepper_in_the_edge_columns_is_not_a_sample_wider_than_the_view():
    """Step 6 reads the edge columns after a 5 x 5 median: impulse noise survives the 3 x 3 prefilter."""
    projections = _scan(24)[0]
    noisy = median_prefilter(add_salt_and_pepper(projections, 0.4, np.random.default_rng(0)), 3)
    evidence = is_contained(noisy)[1]
    assert evidence["edge_share"] > 0.1 and evidence["filtered_edge_share"] < 0.03
    assert polished_components(noisy, evidence) is None  # no step 6
    wider = _scan(23, wider=1.5)[0]
    assert polished_components(wider, is_contained(wider)[1]) == (True, False)


def test_the_centre_of_mass_anchors_only_the_components_it_is_exact_in():
    theta = np.deg2rad(np.linspace(0, 180, 181))
    rng = np.random.default_rng(2)
    truth = random_jitter(len(theta), 10.0, rng)
    com = truth + rng.normal(0, 0.15, truth.shape)
    drifting = truth + 1.5 * np.cos(3 * theta)[:, None]  # both components drift
    anchored, applied = anchor_slow_part(drifting, com, theta, components=(True, False))
    assert applied
    np.testing.assert_array_equal(anchored[:, 1], drifting[:, 1])  # dy of a sample taller than the view: kept
    assert np.mean((anchored[:, 0] - truth[:, 0]) ** 2) < 0.2 * np.mean((drifting[:, 0] - truth[:, 0]) ** 2)


def test_slow_drift_is_anchored_to_the_centre_of_mass_and_noise_is_not():
    theta = np.deg2rad(np.linspace(0, 180, 181))
    rng = np.random.default_rng(1)
    truth = random_jitter(len(theta), 10.0, rng)
    com = truth + rng.normal(0, 0.15, truth.shape)  # exact but noisy
    drifting = truth + np.stack([1.5 * np.cos(3 * theta), np.zeros_like(theta)], 1)  # precise but drifting
    anchored, applied = anchor_slow_part(drifting, com, theta)
    assert applied
    assert shift_error(anchored, truth, theta)["mse"] < 0.2 * shift_error(drifting, truth, theta)["mse"]
    precise = truth + rng.normal(0, 0.02, truth.shape)
    kept, applied = anchor_slow_part(precise, com, theta)
    assert not applied and np.array_equal(kept, precise)


@pytest.fixture(scope="module")
def tall_particle():
    """A particle inside the view from side to side, taller than it (exact projections)."""
    rng = np.random.default_rng(5)
    rows, cols, theta = 32, 64, np.deg2rad(np.linspace(0, 180, 61, endpoint=False))
    jitter = random_jitter(len(theta), 5.0, rng)
    projections = project_ellipsoids(random_particle(rows, cols, rng), theta, rows, cols, shifts=jitter)
    return projections, theta, jitter


def test_the_slices_mass_gives_dy_of_a_sample_taller_than_the_view(tall_particle):
    projections, theta, jitter = tall_particle
    contained, evidence = is_contained(projections)
    assert evidence["edge_share"] < 0.03 and evidence["row_edge_share"] > 0.03  # laterally inside, rows filled
    truth = jitter[:, 1] - jitter[:, 1].mean()
    for start in (None, truth + 2.0 * np.cos(theta)):
        dy = slice_mass_dy(projections, initial=start)
        assert abs(dy.mean()) < 1e-9 and np.mean((dy - truth) ** 2) < 0.01
    assert np.all(np.isnan(slice_mass_dy(projections[:, :4])))  # too few rows to observe dy


def test_the_slab_every_view_saw_gives_dx_of_a_sample_taller_than_the_view(tall_particle):
    projections, theta, jitter = tall_particle
    plain = shift_error(center_of_mass_shifts(projections, theta), jitter, theta)["mse_dx"]  # rows enter and leave
    slab = np.stack([slab_center_of_mass_dx(projections, theta, jitter[:, 1]), np.zeros_like(theta)], 1)
    assert shift_error(slab, jitter, theta)["mse_dx"] < min(1e-3, 0.1 * plain)  # measured: 3.3e-5 and 0.0067
    both = slice_mass_shifts(projections, theta)  # dy found too, from zero
    assert shift_error(both, jitter, theta)["mse"] < 1e-3


def test_slow_drift_of_a_tall_sample_is_anchored_to_the_slices_mass(tall_particle):
    projections, theta, jitter = tall_particle
    drifting = jitter + 1.5 * np.stack([np.cos(3 * theta), np.sin(2 * theta)], 1)
    anchored, applied = anchor_slow_part(drifting, slice_mass_shifts(projections, theta, initial=drifting), theta)
    assert applied
    assert shift_error(anchored, jitter, theta)["mse"] < 0.05 * shift_error(drifting, jitter, theta)["mse"]
    # The estimate's constant dx (the rotation axis, with the centre fixed) is not the anchor's to move.
    assert abs(np.mean(anchored[:, 0] - drifting[:, 0])) < 1e-9


def test_auto_takes_references_made_at_the_resolution_of_its_search():
    """The workflow's steps A and B make auto's references where its search reads them
    (``reference_binning``); given there, auto's estimate is the one from references it bins itself."""
    projections, theta, _ = _scan(23)
    torch.manual_seed(0)
    model = DejitterNet(input_size=32, output_scale=2.0, references="full").eval()
    full = reproject(np.ones((40, 40, 40), np.float32), theta, device="cpu") + projections
    coarse = bin_projections(full, 2, 2)[0]
    runs = [estimate_shifts(projections, theta, "auto", model=model, network_passes=1, references=references,
                            search_width=20, refine_max_iter=2) for references in (full, coarse)]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])


@pytest.fixture(scope="module")
def wide_scan():
    return _scan(24, wider=1.5)


def test_slow_modes_of_an_estimate_are_fitted_to_the_reconstruction(wide_scan):
    """A slow error registration cannot see (the sample is wider than the view) is found by the polish."""
    projections, theta, jitter = wide_scan
    wrong = jitter.copy()
    wrong[:, 0] += 0.8 * slow_mode_basis(theta)[:, 0] - 0.5 * slow_mode_basis(theta)[:, 3]
    polished, info = polish_slow_modes(projections, theta, wrong)
    assert info["objective_after"] < info["objective_before"]
    before, after = (shift_error(s, jitter, theta)["mse"] for s in (wrong, polished))
    assert after < 0.3 * before
    assert np.array_equal(polished[:, 1], jitter[:, 1])  # dy not asked for: untouched
    # Steps follow while they move the estimate: the last is small or the last allowed.
    assert info["rounds"] == len(info["steps_px"]) >= 2
    assert info["steps_px"][-1] < MIN_STEP_PX or info["rounds"] == MAX_ROUNDS


def test_later_steps_of_the_polish_reconstruct_afresh(wide_scan, monkeypatch):
    """Volumes continued from an estimate's prefer it: only the first step continues the given ones."""
    projections, theta, jitter = wide_scan
    wrong = jitter.copy()
    wrong[:, 0] += 0.8 * slow_mode_basis(theta)[:, 0]
    starts = []

    def spy(projections, theta, shifts, *, n_iter=10, warm_start=None, **kwargs):
        if n_iter > 6:  # the volumes of a step, not one of its trials
            starts.append((n_iter, warm_start))
        return measured_frame_references(projections, theta, shifts, n_iter=n_iter, warm_start=warm_start, **kwargs)

    _, given = measured_frame_references(projections, theta, wrong, n_iter=5)
    monkeypatch.setattr(slow_modes, "measured_frame_references", spy)
    _, info = polish_slow_modes(projections, theta, wrong, warm_start=given, max_rounds=2, min_step_px=0.0)
    assert info["rounds"] == 2
    assert starts[0] == (10, given)
    assert starts[1] == (slow_modes.ROUND_MLEM_ITER, None)


def _scripted_polish(monkeypatch, shares, **kwargs):
    """:func:`polish_slow_modes` where each Newton step removes ``shares[i]`` of the error left.

    A share may be a pair: of the first and of the second half of the modes' coefficients.  The
    fresh objective is the squared error; no reconstruction is made.  Returns the error
    (px, angle by angle) left, and the polish's info.
    """
    theta = np.deg2rad(np.linspace(0, 180, 61))
    basis = slow_mode_basis(theta)
    truth = np.zeros((61, 2))
    start = truth.copy()
    start[:, 0] += _scripted_start()
    calls = []

    def error_of(shifts):
        return np.linalg.lstsq(basis, shifts[:, 0] - truth[:, 0], rcond=None)[0]

    def newton_round(projections, theta, shifts, basis, components, state, *args, before=None):
        share = np.repeat(np.broadcast_to(shares[len(calls)], 2), slow_modes.N_MODES)
        calls.append(share)
        return -share * error_of(shifts), before, 0.0, 1

    monkeypatch.setattr(slow_modes, "measured_frame_references", lambda *a, **k: (None, None))
    monkeypatch.setattr(slow_modes, "_newton_round", newton_round)
    monkeypatch.setattr(slow_modes, "_trial_objective", lambda p, t, shifts, *a: float(np.sum(error_of(shifts) ** 2)))
    polished, info = polish_slow_modes(np.zeros((61, 8, 8)), theta, start, **kwargs)
    return (polished - truth)[:, 0], info


def test_a_shrinking_step_of_the_polish_is_lengthened(monkeypatch):
    """Steps that each remove 40 % of the error: the second, 2.5 times as long, removes the rest."""
    left, info = _scripted_polish(monkeypatch, [0.4, 0.4, 0.4])
    assert info["amplifications"] == [1.0, 2.5, 1.0]
    assert np.abs(left).max() < 1e-9 and info["rounds"] == 3  # the third step is 0: it stops
    plain, info = _scripted_polish(monkeypatch, [0.4] * 3, max_rounds=3, max_amplification=1.0)
    assert info["amplifications"] == [1.0] * 3
    np.testing.assert_allclose(plain, 0.6 ** 3 * _scripted_start(), atol=1e-9)  # plain steps: 22 % left


def _scripted_start():
    """The error :func:`_scripted_polish` starts from, px angle by angle."""
    return slow_mode_basis(np.deg2rad(np.linspace(0, 180, 61))) @ np.linspace(1.0, -0.5, 2 * slow_modes.N_MODES)


def test_a_lengthened_step_that_raises_the_objective_is_taken_back(monkeypatch):
    """A step lengthened from a wrong model (the second removes 80 %, not 20 %) overshoots: undone."""
    left, info = _scripted_polish(monkeypatch, [0.5, 0.8, 0.5, 0.5], max_rounds=5, min_step_px=0.0)
    assert info["amplifications"] == [1.0, 3.0, 0.0, 1.0, 1.0]  # 5x predicted, at most 3x
    np.testing.assert_allclose(left, 0.5 * 0.2 * 0.5 * 0.5 * _scripted_start(), atol=1e-9)  # as plain steps


def test_a_step_that_turned_is_not_lengthened(monkeypatch):
    """The second step shrinks along the first but mostly moves other modes: no steady share to model."""
    shares = [(0.5, 0.0), (0.4, 0.5), (0.4, 0.4)]
    _, info = _scripted_polish(monkeypatch, shares, max_rounds=3, min_step_px=0.0)
    assert info["amplifications"] == [1.0, 1.0, 1.0]
    _, info = _scripted_polish(monkeypatch, shares, max_rounds=3, min_step_px=0.0, min_cosine=-1.0)
    assert info["amplifications"] == [1.0, pytest.approx(1 / 0.6, abs=1e-3), 1.0]  # what the share alone gives


def test_a_refinement_keeps_the_polished_slow_modes():
    theta = np.deg2rad(np.linspace(0, 180, 61))
    initial = np.zeros((61, 2))
    fast = np.random.default_rng(0).normal(size=61)
    refined = initial.copy()
    refined[:, 0] = 0.7 * slow_mode_basis(theta)[:, 1] + fast
    refined[:, 1] = 0.5 * slow_mode_basis(theta)[:, 0]
    kept = without_mode_change(refined, initial, theta)
    basis = slow_mode_basis(theta)
    assert np.abs(np.linalg.lstsq(basis, kept[:, 0], rcond=None)[0]).max() < 1e-9
    assert np.allclose(kept[:, 1], refined[:, 1])  # dy not asked for: kept as refined
    # The fast part stays, less its own (chance) projection on the modes.
    np.testing.assert_allclose(kept[:, 0], fast - basis @ np.linalg.lstsq(basis, fast, rcond=None)[0], atol=1e-9)


def test_auto_polishes_the_slow_modes_of_a_sample_wider_than_the_view(wide_scan):
    projections, theta, jitter = wide_scan
    details = {}
    shifts, _ = estimate_shifts(projections, theta, "auto", details=details)  # step 6 is on by default
    assert details["selected"].endswith("_polished")
    assert f"score_{details['selected']}" in details
    assert details["slow_modes_objective_after"] <= details["slow_modes_objective_before"]
    assert details["slow_modes_region_score_after"] < details["slow_modes_region_score_before"]
    # Step 7 ran after it, kept on lower residuals over the same region or, far wider than the view, a sharper volume.
    assert details["highpass_steps"] > 0 and details["highpass_sigma_px"] >= 1
    by_residuals = details["highpass_change_plain"] < 0 and details["highpass_change_highpassed"] < 0
    sharper = details["highpass_sharpness_change"]
    assert details["highpass_kept_by"] == ("residuals" if by_residuals else "sharpness" if sharper and sharper > 0 else None)
    assert details["highpass_kept"] == (details["highpass_kept_by"] is not None)
    # The sharpness is asked only where the residuals refused and the sample overflows the view by far.
    assert (sharper is not None) == (not by_residuals and details["contained_filtered_edge_share"] >= MIN_EDGE_SHARE)
    # Step 8 after it, on the next modes of dx.
    assert details["faster_modes_k"] == [5, 8] and details["slow_modes_k"] == [1, 4]
    assert details["faster_modes_objective_after"] <= details["faster_modes_objective_before"]
    assert "dx modes k 5-8 polished" in details["selection_reason"]
    assert shift_error(shifts, jitter, theta)["mse"] < 0.1


def test_step_8_fits_the_faster_modes_alone(wide_scan):
    """An error in k 5..8 is fitted along those modes only; one in k 1..4 is left to step 6."""
    projections, theta, jitter = wide_scan
    faster, slower = slow_mode_basis(theta, FASTER_MODES), slow_mode_basis(theta)
    wrong = jitter.copy()
    wrong[:, 0] += 0.6 * faster[:, 2] - 0.4 * faster[:, 5] + 0.5 * slower[:, 0]
    candidate, judged = judge_polish(projections, theta, wrong, components=(True, False), modes=FASTER_MODES,
                                     prefix="faster_modes")
    assert judged["details"]["faster_modes_k"] == [5, 8]
    assert not any(key.startswith("slow_modes") for key in judged["details"])
    change = candidate[:, 0] - wrong[:, 0]
    np.testing.assert_allclose(faster @ np.linalg.lstsq(faster, change, rcond=None)[0], change, atol=1e-9)
    assert np.array_equal(candidate[:, 1], wrong[:, 1])

    def along_faster(shifts):
        error = shifts[:, 0] - jitter[:, 0]
        return np.linalg.norm(faster @ np.linalg.lstsq(faster, error, rcond=None)[0])

    assert along_faster(candidate) < 0.4 * along_faster(wrong)
    # A refinement's change along these modes is removed as along step 6's.
    kept = without_mode_change(wrong, jitter, theta, modes=FASTER_MODES)
    assert along_faster(kept) < 1e-9


def test_step_7_is_judged_view_by_view():
    """Every view counts alike, however large its residual: a geometric mean of each view's change."""
    before = np.array([0.01, 0.02, 0.04, 5.0])  # one view far worse fitted than the others
    after = before * np.array([0.98, 0.98, 0.98, 1.05])
    assert np.mean(after) > np.mean(before)  # ruled by the one view
    assert paired_log_change(before, after) == pytest.approx(np.mean(np.log([0.98, 0.98, 0.98, 1.05])))
    assert paired_log_change(before, after) < 0
    assert paired_log_change(before, before) == 0.0
    assert paired_log_change(before, np.where(before > 1, np.nan, before * 1.01)) == pytest.approx(np.log(1.01))
    assert paired_log_change([0.0, np.nan], [1.0, 1.0]) == 0.0  # no view counts


def test_the_polish_fits_on_a_subset_of_the_angles_and_applies_to_all(wide_scan):
    """Many angles: the modes are fitted on evenly spread ones, the result is judged on all."""
    projections, theta, jitter = wide_scan
    assert np.array_equal(polish_angles(theta, 31), np.arange(0, 61, 2))
    wrong = jitter.copy()
    wrong[:, 0] += 0.8 * slow_mode_basis(theta)[:, 0] - 0.5 * slow_mode_basis(theta)[:, 3]
    candidate, judged = judge_polish(projections, theta, wrong, components=(True, False), max_angles=31)
    assert judged["details"]["slow_modes_angles"] == 31 and candidate.shape == wrong.shape
    change = candidate[:, 0] - wrong[:, 0]
    basis = slow_mode_basis(theta)
    np.testing.assert_allclose(basis @ np.linalg.lstsq(basis, change, rcond=None)[0], change, atol=1e-9)  # modes only
    assert judged["kept"]
    assert shift_error(candidate, jitter, theta)["mse"] < 0.5 * shift_error(wrong, jitter, theta)["mse"]


def test_the_common_region_drops_the_bands_the_jitter_carried_in():
    shifts = np.zeros((5, 2))
    shifts[:, 0] = [0.0, 3.2, -1.0, 0.5, 0.0]
    shifts[:, 1] = [0.0, 0.0, 3.0, -0.4, np.nan]
    assert common_region(shifts, 30, 40) == (slice(0, 30), slice(4, 36))  # rows whole: slices are independent
    filled = {"top": 3, "bottom": 0, "left": 6, "right": 1}  # bands a shift of the data filled in
    assert common_region(shifts, 30, 40, filled=filled) == (slice(3, 30), slice(6, 36))
    shifts[1, 0] = 40.0  # at most a quarter of the detector
    assert common_region(shifts, 30, 40)[1] == slice(10, 30)


def test_filled_edge_bands_find_what_a_shift_of_the_data_filled_in():
    measured = np.random.default_rng(3).normal(1.0, 0.05, (4, 30, 40)).astype(np.float32)
    assert filled_edge_bands(measured) == {"top": 0, "bottom": 0, "left": 0, "right": 0}  # noise never repeats
    shifts = np.array([[3.4, 0.0], [-2.0, 5.6], [0.0, -4.2], [0.0, 0.0]])
    # The edge pixel repeated (and the line after it, half fill): ceil(|shift|) on each side, the largest over the views.
    assert filled_edge_bands(displace(measured, shifts, order=1)) == {"top": 6, "bottom": 5, "left": 4, "right": 3}
    shifts[1, 0] = -2.5
    zero_filled = filled_edge_bands(displace(measured, shifts, order=1, mode="constant"))
    assert zero_filled == {"top": 6, "bottom": 5, "left": 4, "right": 3}


def test_a_score_over_a_region_compares_only_that_region(wide_scan):
    projections, theta, jitter = wide_scan
    rows, columns = common_region(jitter, *projections.shape[1:])
    assert columns.start > 0
    references, _ = measured_frame_references(projections, theta, jitter, n_iter=5)
    expected = alignment_residual(projections[:, rows, columns], references[:, rows, columns])
    score, per_view = consistency_score(projections, theta, jitter, n_iter=5, region=(rows, columns))
    np.testing.assert_allclose(per_view, expected, rtol=1e-6)
    assert score == pytest.approx(np.median(expected))
    assert score != pytest.approx(consistency_score(projections, theta, jitter, n_iter=5)[0])


def test_the_polish_keeps_an_unobservable_dy_unobservable(wide_scan):
    projections, theta, jitter = wide_scan
    unobserved = jitter.copy()
    unobserved[:, 1] = np.nan
    polished, _ = polish_slow_modes(projections[:, :2], theta, unobserved, max_rounds=1)
    assert np.all(np.isnan(polished[:, 1])) and np.all(np.isfinite(polished[:, 0]))


def test_a_tie_is_broken_by_deeper_scores(wide_scan):
    """Tied candidates are scored at TIE_MLEM_ITER iterations; the chosen one's MLEM continues, the same as afresh."""
    projections, theta, jitter = wide_scan
    wrong = jitter.copy()
    wrong[:, 0] += 0.6 * slow_mode_basis(theta)[:, 2]
    candidates = {"wrong": wrong, "truth": jitter}
    _, _, state = consistency_score(projections, theta, wrong, n_iter=20, return_state=True)
    best, best_state, deeper = selection._break_tie(projections, theta, candidates, ["wrong", "truth"], state,
                                                    mlem_iter=20, center=None, backend=None)
    assert best == "truth" and set(deeper) == {"wrong", "truth"}
    references, _ = measured_frame_references(projections, theta, wrong, n_iter=selection.TIE_MLEM_ITER)
    assert deeper["wrong"] == pytest.approx(np.median(alignment_residual(projections, references)), rel=1e-4)
    assert best_state[1] == measured_frame_references(projections, theta, jitter, n_iter=1)[1][1]  # its margins


def test_the_true_jitter_gives_the_sharpest_volume(wide_scan):
    projections, theta, jitter = wide_scan
    rng = np.random.default_rng(3)
    sharpest = gradient_energy(projections, theta, jitter)
    for error_px in (0.3, 1.0):
        blurred = gradient_energy(projections, theta, jitter + rng.normal(scale=error_px, size=jitter.shape))
        assert blurred < sharpest


def test_step_7_refused_by_the_residuals_is_kept_only_where_the_volume_gets_sharper(wide_scan, monkeypatch):
    """Far wider than the view, the sharpness decides what the residuals refused: the truth over a wrong estimate."""
    projections, theta, jitter = wide_scan
    wrong = jitter + random_jitter(len(theta), 1.5, np.random.default_rng(5))
    monkeypatch.setattr(interior, "paired_log_change", lambda before, after: 0.01)  # the residuals refuse
    for start, registered, kept in ((wrong, jitter, True), (jitter, wrong, False)):
        monkeypatch.setattr(interior, "align_iterative", lambda *args, _out=registered, **kwargs: (_out.copy(), None))
        nothing = (False, False)  # no slow modes to keep: the candidate is what the registration gave
        _, judged = judge_highpass(projections, theta, start, components=nothing, edge_share=MIN_EDGE_SHARE)
        details = judged["details"]
        assert (details["highpass_sharpness_change"] > 0) == kept
        assert judged["kept"] == kept and details["highpass_kept_by"] == ("sharpness" if kept else None)
        _, judged = judge_highpass(projections, theta, start, components=nothing, edge_share=0.5 * MIN_EDGE_SHARE)
        assert judged["details"]["highpass_sharpness_change"] is None and not judged["kept"]
