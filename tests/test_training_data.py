"""Synthetic training data: every condition is drawn, recorded, and takes effect.

Tiny scans (32 px, a few dozen angles) with the conditions under test forced on through
``TrainingConditions`` overrides, everything else off, so each test takes about a second.
"""

import json

import numpy as np
import pytest

from dejitter.metrics import remove_rigid_motion
from dejitter.preprocessing import MIN_TRANSMISSION, normalise
from dejitter.registration.references import MIN_ROWS_FOR_DY
from dejitter.training.data import TrainingConditions, _draw_geometry, synthetic_pairs, synthetic_scan
from dejitter.training.synthesis import PHANTOM_KINDS, background_field, detector_counts, field_of_view
from dejitter.training.train import make_dataset

DEAD = -np.log(MIN_TRANSMISSION)  # a pixel reading nothing: the transmission floor


def tiny(**overrides):
    """32 px, 24-48 angles, 3 px jitter, 1 px binning; every realism extra off unless asked for."""
    off = dict(size=32, binning=1, mlem_iter=5, amplitude=3.0, angles=(24, 48), small_jitter_probability=0.0,
               full_circle_probability=0.0, short_detector_probability=0.0, narrow_detector_probability=0.0,
               wide_probability=0.0, tall_probability=0.0, mount_probability=0.0, low_contrast_probability=0.0,
               max_line_integral=(1.0, 1.0), photons=(1e6, 1e6), flat_drift=(0.0, 0.0), background_probability=0.0,
               bad_pixel_probability=0.0, ring_probability=0.0, salt_pepper_probability=0.0, max_pairs=None)
    return TrainingConditions(**dict(off, **overrides))


def test_defaults_span_the_documented_ranges_and_are_json_for_the_card():
    c = TrainingConditions()
    assert c["size"] == 128 and c["angles"] == (90, 1500) and c["max_pairs"] == 200
    assert json.loads(json.dumps(c))["kinds"] == list(PHANTOM_KINDS)
    # Geometry draws are cheap: check the distributions themselves.
    draws = [_draw_geometry(np.random.default_rng(s), c) for s in range(3000)]
    counts = np.array([d["n_angles"] for d in draws])
    assert counts.min() >= 90 and counts.max() <= 1500
    assert 300 < np.median(counts) < 450  # log-uniform: median sqrt(90 * 1500) = 367
    starts = np.array([d["start_deg"] for d in draws])
    assert starts.min() < -170 and starts.max() > 170 and len(np.unique(starts)) > 2900  # arbitrary start
    assert 0.06 < np.mean([d["span_deg"] == 360 for d in draws]) < 0.14
    shapes = [d["detector"] for d in draws]
    assert 0.2 < shapes.count("short") / 3000 < 0.3 and 0.1 < shapes.count("narrow") / 3000 < 0.2
    for d in draws:
        assert max(d["rows"], d["columns"]) == 128 and d["rows"] >= 2 and d["columns"] % 2 == 0
        assert d["grid"] >= d["columns"] and (d["grid"] - d["columns"]) % 2 == 0  # axis on the detector centre
        assert d["grid"] <= 1.6 * d["columns"] + 1
    assert 0.4 < np.mean([d["wide"] for d in draws]) < 0.6
    assert max(d["grid"] / d["columns"] for d in draws) > 1.55


def test_angles_are_the_drawn_count_over_the_drawn_range_from_the_drawn_start():
    c = tiny(angles=(37, 37), start_angle=(-88.0, -88.0))
    _, theta, jitter, info = synthetic_scan(0, c)
    np.testing.assert_allclose(np.rad2deg(theta), -88 + np.linspace(0, 180, 37))
    assert info["n_angles"] == 37 and info["start_deg"] == -88 and info["span_deg"] == 180 and jitter.shape == (37, 2)
    _, theta, _, info = synthetic_scan(0, tiny(angles=(40, 40), full_circle_probability=1.0, start_angle_step=5.0))
    assert info["span_deg"] == 360 and info["start_deg"] % 5 == 0
    np.testing.assert_allclose(np.rad2deg(theta), info["start_deg"] + np.arange(40) * 9.0)


def test_detectors_are_short_and_wide_or_narrow_and_tall():
    li, *_, info = synthetic_scan(1, tiny(short_detector_probability=1.0, short_rows=(2, 8)))
    assert info["detector"] == "short" and 2 <= info["rows"] <= 8 and li.shape[1:] == (info["rows"], 32)
    li, *_, info = synthetic_scan(1, tiny(narrow_detector_probability=1.0, narrow_columns=(0.5, 0.6)))
    assert info["detector"] == "narrow" and li.shape[1:] == (32, info["columns"]) and 16 <= info["columns"] <= 20


def test_truncated_objects_cross_every_edge_of_the_view():
    # A layered cylinder spans the whole height; 1.6x the detector width and off the axis.
    c = tiny(kinds=("layered",), wide_probability=1.0, wide_scale=(1.6, 1.6), off_axis=0.2, tall_probability=1.0,
             angles=(60, 60))
    for seed in range(3):
        li, _, _, info = synthetic_scan(seed, c)
        assert info["wide"] and info["tall"] and info["grid"] == 52 and info["object_rows"] > info["rows"]
        edges = {"top": li[:, 0], "bottom": li[:, -1], "left": li[:, :, 0], "right": li[:, :, -1]}
        for name, edge in edges.items():
            # Structures cross the edge in a good share of the views (the object rotates off-axis).
            assert np.mean(edge.max(axis=1) > 0.1) > 0.2, (seed, name)
    # Not tall: the phantom's grid is flattened to the view's height (wide objects become flat ones).
    li, _, _, info = synthetic_scan(0, tiny(kinds=("layered",), wide_probability=1.0, wide_scale=(1.6, 1.6)))
    assert not info["tall"] and info["object_rows"] == 32 and info["stretch"] == pytest.approx(32 / 52)


def test_field_of_view_keeps_the_axis_centred_and_moves_stretches_and_windows_the_object():
    volume = np.zeros((24, 24, 24), np.float32)
    volume[10:14, 10:14, 10:14] = 1  # a cube at the centre, on the rotation axis
    view = field_of_view(volume, rows=8, columns=16, margin=3)
    assert view.shape == (14, 24, 24)  # 8 + 2 * 3 rows; the grid wider than 16 + 2 * 3 columns
    zs, ys, xs = np.nonzero(view > 0.5)
    assert (ys.min() + ys.max()) / 2 == 11.5 and (xs.min() + xs.max()) / 2 == 11.5
    assert (zs.min() + zs.max()) / 2 == pytest.approx(6.5)  # the middle of the rows
    moved = field_of_view(volume, rows=8, columns=16, margin=3, offset=(0, 5))
    assert np.nonzero(moved > 0.5)[2].min() == xs.min() + 5
    tall = field_of_view(volume, rows=24, columns=24, stretch=2.0)
    assert np.ptp(np.nonzero(tall.sum(axis=(1, 2)) > 0)[0]) >= 7  # 4 voxels high become 8
    top = field_of_view(volume, rows=4, columns=24, row_center=2.0)  # a window above the object
    assert top.max() == 0
    with pytest.raises(ValueError, match="even"):
        field_of_view(volume, rows=8, columns=15)


def test_background_gain_dead_and_hot_pixels_are_in_the_projections_not_the_flats():
    rng = np.random.default_rng(0)
    background = background_field(6, 8, level=0.7, variation=0.05, rng=rng)
    assert background.max() <= 0.7 + 1e-6 and background.min() >= 0.7 * 0.95 - 1e-6
    gain = np.ones(8, np.float32)
    gain[3] = 1.1
    dead = np.zeros((6, 8), bool)
    hot = np.zeros((6, 8), bool)
    dead[1, 1], hot[4, 6] = True, True
    data, flats, darks = detector_counts(np.zeros((5, 6, 8), np.float32), photons=1e7, background=background,
                                         column_gain=gain, dead=dead, hot=hot, saturation=3e7, rng=rng)
    li = normalise(data, flats, darks)
    expected = -np.log(background * gain)
    good = ~(dead | hot)
    np.testing.assert_allclose(li[:, good], np.broadcast_to(expected[good], (5, good.sum())), atol=0.01)
    assert np.all(li[:, 1, 1] == pytest.approx(DEAD)) and np.all(li[:, 4, 6] < -0.5)


def test_scan_conditions_take_effect_before_the_prefilter():
    c = tiny(background_probability=1.0, background=(0.7, 0.7), background_variation=(0.0, 0.0),
             bad_pixel_probability=1.0, dead_pixels=(0.01, 0.01), hot_pixels=(0.01, 0.01),
             ring_probability=1.0, ring_columns=(2, 2), ring_gain=(0.15, 0.15),
             low_contrast_probability=1.0, low_contrast=(0.05, 0.05), kinds=("featureless",), photons=(3e4, 3e4))
    li, _, _, info = synthetic_scan(3, c)
    assert info["background"] == 0.7 and info["low_contrast"] and info["max_line_integral"] == pytest.approx(0.05)
    dead = np.all(li > DEAD - 0.01, axis=0)
    hot = np.all(li < -0.5, axis=0)  # saturated: more counts than the flat
    assert dead.sum() == info["dead_pixels"] > 0 and hot.sum() == info["hot_pixels"] > 0
    fine = ~(dead | hot)
    fine[:, info["ring_columns"]] = False
    # The background (line integral -log 0.7 = 0.36) is all the views show where the faint object is not.
    assert np.percentile(li[:, fine], 5) == pytest.approx(-np.log(0.7), abs=0.03)
    assert np.percentile(li[:, fine], 99) < -np.log(0.7) + 0.08  # low contrast: 0.05 at most, and noise
    # Ring columns: a constant offset of -log(1 +- 0.15) in every view, against their neighbours.
    profile = np.nanmedian(np.where((dead | hot)[None], np.nan, li), axis=(0, 1))
    others = np.delete(profile, info["ring_columns"])
    assert np.ptp(others) < 0.06
    for column in info["ring_columns"]:
        assert abs(profile[column] - np.median(others)) > 0.1, column
    # The mount enters from the bottom edge in every view.
    li, _, _, info = synthetic_scan(4, tiny(mount_probability=1.0, mount_radius=(0.6, 0.6), kinds=("ellipsoids",)))
    assert info["mount"]["top_row"] < 32 and np.all(li[:, -1, 14:18] > 0.1)


def test_targets_are_the_observable_jitter_in_network_pixels():
    c = tiny(binning=2)
    pairs, targets, info = synthetic_pairs(5, c, input_size=32)
    li, theta, jitter, again = synthetic_scan(5, c)
    assert again == {k: v for k, v in info.items() if k != "pairs"}  # the same scan, drawn from the seed
    # 32 px binned 2 fit in 32 px of network input: a network pixel is 2 detector pixels.
    np.testing.assert_allclose(targets, remove_rigid_motion(jitter, theta) / 2, atol=1e-5)
    assert pairs.shape == (info["n_angles"], 2, 32, 32) and info["pairs"] == info["n_angles"]
    assert np.abs(targets).max() > 0.5
    # Too few rows for dy: the workflow ignores it, and the target says 0.
    c = tiny(binning=2, short_detector_probability=1.0, short_rows=(4, 6))
    _, targets, info = synthetic_pairs(6, c, input_size=32)
    assert info["rows"] // 2 < MIN_ROWS_FOR_DY
    assert np.all(targets[:, 1] == 0) and np.abs(targets[:, 0]).max() > 0.3


def test_pairs_per_scan_are_capped_after_steps_a_and_b_saw_every_angle():
    c = tiny(angles=(60, 60))
    all_pairs, all_targets, _ = synthetic_pairs(7, c, input_size=32)
    pairs, targets, info = synthetic_pairs(7, tiny(angles=(60, 60), max_pairs=25), input_size=32)
    assert pairs.shape == (25, 2, 32, 32) and info["pairs"] == 25 and info["n_angles"] == 60
    kept = [int(np.flatnonzero(np.all(all_targets == t, axis=1))[0]) for t in targets]
    assert kept == sorted(set(kept))
    np.testing.assert_array_equal(pairs, all_pairs[kept])  # the same references: all 60 angles each time


def test_a_seed_gives_the_same_pairs_and_another_seed_others():
    c = tiny(background_probability=0.5, bad_pixel_probability=0.5, ring_probability=0.5, wide_probability=0.5,
             tall_probability=0.5, salt_pepper_probability=0.5, photons=(300.0, 30000.0), max_pairs=20)
    first = synthetic_pairs(11, c, input_size=32)
    second = synthetic_pairs(11, c, input_size=32)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert first[2] == second[2]
    assert not np.array_equal(first[1], synthetic_pairs(12, c, input_size=32)[1])


def test_conditions_and_draws_land_in_the_dataset_the_card_is_made_from():
    c = tiny(mount_probability=1.0, background_probability=1.0, ring_probability=1.0, bad_pixel_probability=1.0,
             max_pairs=10)
    dataset = make_dataset([0, 1], conditions=c, input_size=32, processes=1, progress=False)
    assert dataset["conditions"] == dict(c)
    card = json.loads(json.dumps({"training_data": {"conditions": dataset["conditions"]}}))  # as the card holds it
    for key in ("angles", "start_angle", "full_circle_probability", "max_pairs", "short_detector_probability",
                "wide_scale", "tall_scale", "mount_probability", "background", "dead_pixels", "hot_pixels",
                "ring_gain", "low_contrast", "kinds"):
        assert key in card["training_data"]["conditions"], key
    info = json.loads(json.dumps(dataset["info"]))
    assert [i["seed"] for i in info] == [0, 1] and all(i["pairs"] == 10 for i in info)
    for i in info:
        assert i["mount"]["density"] > 0 and i["background"] < 1 and i["ring_columns"]
        assert {"n_angles", "start_deg", "span_deg", "rows", "columns", "grid", "wide", "tall", "photons"} <= set(i)
    assert dataset["pairs"].shape == (20, 2, 32, 32)
