"""Training pairs for the network, made by the project's own steps A and B.

Each synthetic scan is a random phantom seen the way real scans see their samples: often larger
than the detector and off the rotation axis (structures crossing every edge), sometimes on an
absorbing mount, on detectors of any shape (wide and short ones down to two rows), at 90 to 1500
angles over 180 or 360 degrees from any start angle.  It is displaced by random sub-pixel jitter,
recorded with Poisson noise, flat-field drift, a transmission background the flats lack, rings,
dead and hot pixels and salt-and-pepper noise, normalised, prefiltered and binned exactly as the
workflow does, reconstructed by MLEM and reprojected.  The network thus learns what MLEM
reprojections of jittered data really look like.  A second source adds synthetic jitter to a
beamline's own aligned scans: the way to specialise the network for its samples.
"""

from __future__ import annotations

import numpy as np

from ..metrics import remove_rigid_motion
from ..preprocessing import normalise, prepare_for_registration
from ..reconstruction import projectors, reproject
from ..reconstruction.backends import TorchBackend
from ..registration.network import prepare_pairs
from ..registration.references import MIN_ROWS_FOR_DY, reference_projections
from ..shifting import displace
from .synthesis import (
    PHANTOM_KINDS,
    add_mount,
    add_salt_and_pepper,
    background_field,
    detector_counts,
    field_of_view,
    phantom,
    random_jitter,
)

__all__ = ["TrainingConditions", "synthetic_scan", "synthetic_pairs", "pairs_from_aligned_scan"]


class TrainingConditions(dict):
    """Ranges and probabilities of the random conditions of synthetic scans.

    A dict, so that it goes into the dataset and the model card as is.  Every probability is
    drawn independently per scan; ``(low, high)`` pairs are ranges (log-uniform where noted).
    Pixel counts are of the detector at full resolution, before the workflow's binning.
    """

    def __init__(self, **overrides):
        super().__init__(
            # Largest detector side (px).  Every detector fits in it, so steps A-C bin by
            # ``binning`` and the network input needs no further binning.
            size=128, binning=2, median_size=3, mlem_iter=20,
            # Phantom families (dejitter.training.synthesis.PHANTOM_KINDS), drawn with equal probability.
            kinds=PHANTOM_KINDS,
            # The reference each projection is compared with (see dejitter.registration): one MLEM
            # of all angles, as in the paper.  Inference uses the mode the model card records.
            references="full",
            # Jitter uniform in +-amplitude px; some scans with small jitter only (log-uniform
            # amplitude): what a second pass (or a steadier stage) looks like.
            amplitude=20.0, small_jitter_probability=0.4, small_amplitude=(0.3, 6.0),
            # Angles: count log-uniform, over 180 degrees (both ends included) or 360 (end left out),
            # from a start angle uniform in the range, rounded to start_angle_step (degrees).
            angles=(90, 1500), full_circle_probability=0.1, start_angle=(-180.0, 180.0), start_angle_step=0.0,
            # Steps A and B run on all angles; at most this many pairs (angles drawn at random) are kept.
            max_pairs=200,
            # Detector shape: wide and short (rows log-uniform, columns = size), or narrow
            # (columns uniform as a share of size, rows = size), else square.
            short_detector_probability=0.25, short_rows=(2, 64),
            narrow_detector_probability=0.15, narrow_columns=(0.5, 0.95),
            # Truncation.  Wide: the phantom grid is wide_scale times the detector width, and the
            # object is up to off_axis grid widths off the rotation axis (in y and x): structures
            # cross the left and right edges.  Tall: the object is tall_scale times the detector
            # rows and the view sits at a random height (a short detector always sees such a
            # window): structures cross the top and bottom edges.  Otherwise the object is
            # flattened, if need be, to fit the rows.
            wide_probability=0.5, wide_scale=(1.0, 1.6), off_axis=0.2,
            tall_probability=0.4, tall_scale=(1.1, 1.6),
            # An absorbing mount (a pin) entering from the bottom edge: its top at mount_height
            # (share of the rows, from the bottom), radius a share of the detector half-width
            # (> 1: wider than the view), density relative to the object's.
            mount_probability=0.2, mount_height=(0.1, 0.5), mount_radius=(0.2, 1.5), mount_density=(0.2, 1.0),
            # Contrast: the largest line integral of the scan, uniform, or log-uniform in
            # low_contrast with low_contrast_probability.
            max_line_integral=(0.3, 3.0), low_contrast_probability=0.25, low_contrast=(0.03, 0.3),
            # Recording: photons per pixel of the open beam (log-uniform), flat-field drift.
            photons=(300.0, 30000.0), flat_drift=(0.0, 0.08),
            # A transmission background below 1 that the flats lack (an absorbing support, a flat
            # that does not match): level uniform, smooth variation up to background_variation.
            background_probability=0.5, background=(0.6, 1.0), background_variation=(0.0, 0.05),
            # Dead (0 counts) and hot (saturated) pixels, share of the pixels log-uniform, in every
            # projection but not the flats; ring columns (count uniform) with a gain error of
            # +-ring_gain (uniform in magnitude).
            bad_pixel_probability=0.3, dead_pixels=(1e-4, 3e-3), hot_pixels=(1e-4, 3e-3),
            ring_probability=0.3, ring_columns=(1, 8), ring_gain=(0.01, 0.1),
            salt_pepper=(0.0, 0.6), salt_pepper_probability=0.5,
        )
        self.update(overrides)


def _log_uniform(rng, bounds):
    return float(np.exp(rng.uniform(*np.log(bounds))))


def _draw_geometry(rng, c):
    """Angles, detector shape and truncation of one scan."""
    size = int(c["size"])
    n_angles = int(round(_log_uniform(rng, c["angles"])))
    full_circle = bool(rng.random() < c["full_circle_probability"])
    step = c["start_angle_step"]
    start = float(rng.uniform(*c["start_angle"]))
    start = float(step * np.round(start / step)) if step else start
    span = 360.0 if full_circle else 180.0
    theta_deg = start + np.linspace(0.0, span, n_angles, endpoint=not full_circle)

    rows, columns, shape = size, size, "square"
    u = rng.random()
    if u < c["short_detector_probability"]:
        low, high = (min(r, size) for r in c["short_rows"])
        rows, shape = int(round(_log_uniform(rng, (low, high)))), "short"
    elif u < c["short_detector_probability"] + c["narrow_detector_probability"]:
        share = rng.uniform(*c["narrow_columns"])
        columns, shape = max(4, 2 * int(round(share * size / 2))), "narrow"  # even: binning keeps the axis

    wide = bool(rng.random() < c["wide_probability"])
    scale = rng.uniform(*c["wide_scale"]) if wide else 1.0
    grid = columns + 2 * int(round((scale - 1) * columns / 2))
    limit = c["off_axis"] * grid if wide else 0.0
    offset = tuple(int(v) for v in np.round(rng.uniform(-limit, limit, 2)))
    tall = bool(shape == "short" or rng.random() < c["tall_probability"])
    if tall:
        height = max(grid, rows * rng.uniform(*c["tall_scale"])) if shape == "short" \
            else rows * rng.uniform(*c["tall_scale"])
    else:
        height = min(grid, rows)
    stretch = height / grid
    row_center = rng.uniform(rows / 2, height - rows / 2) if height > rows else height / 2
    return {"n_angles": n_angles, "start_deg": start, "span_deg": span, "theta_deg": theta_deg,
            "detector": shape, "rows": rows, "columns": columns, "wide": wide, "grid": grid, "off_axis_px": offset,
            "tall": tall, "object_rows": float(height), "stretch": float(stretch), "row_center": float(row_center)}


def synthetic_scan(seed, conditions=None):
    """One random synthetic scan, normalised to line integrals as the workflow's step 1 leaves it.

    Parameters
    ----------
    seed : int or numpy.random.Generator
    conditions : TrainingConditions, optional

    Returns
    -------
    line_integrals : ndarray, shape (angle, row, column), float32
        Before the median prefilter and binning (dead and hot pixels still in).
    theta : ndarray
        Angles in radians.
    jitter : ndarray, shape (angle, 2)
        The true (dx, dy) in detector pixels.
    info : dict
        Everything drawn (JSON-ready; ``theta_deg`` aside) for the record.
    """
    c = TrainingConditions() if conditions is None else conditions
    rng = np.random.default_rng(seed)
    kinds = tuple(c.get("kinds", PHANTOM_KINDS))
    kind = kinds[rng.integers(len(kinds))]
    geo = _draw_geometry(rng, c)
    theta = np.deg2rad(geo.pop("theta_deg"))
    rows, columns = geo["rows"], geo["columns"]

    amplitude = float(c["amplitude"])
    if rng.random() < c.get("small_jitter_probability", 0.0):
        amplitude = _log_uniform(rng, c["small_amplitude"])
    jitter = random_jitter(len(theta), amplitude, rng)
    margin = int(np.ceil(np.abs(jitter).max())) + 4  # what the jitter brings into the view, and spline support

    volume = field_of_view(phantom(geo["grid"], kind, rng), rows=rows, columns=columns, margin=margin,
                           stretch=geo["stretch"], row_center=geo["row_center"], offset=geo["off_axis_px"])
    mount = None
    if rng.random() < c["mount_probability"]:
        # Radius within the slice grid (a disc cut by the grid's square would change with angle).
        mount = {"top_row": int(round(rows * (1 - rng.uniform(*c["mount_height"])))),
                 "radius_px": min(float(rng.uniform(*c["mount_radius"]) * columns / 2), (volume.shape[2] - 1) / 2),
                 "density": float(rng.uniform(*c["mount_density"]))}
        add_mount(volume, top=margin + mount["top_row"], radius=mount["radius_px"], density=mount["density"], rng=rng)
    ideal = reproject(volume, theta, device="cpu")
    del volume
    c0 = (ideal.shape[2] - columns) // 2
    low_contrast = bool(rng.random() < c["low_contrast_probability"])
    contrast = _log_uniform(rng, c["low_contrast"]) if low_contrast else float(rng.uniform(*c["max_line_integral"]))
    # Scaled so that the view's largest line integral is the drawn contrast (the whole object's,
    # where the view holds next to nothing of it: a window through empty space).
    peak = max(float(ideal[:, margin:margin + rows, c0:c0 + columns].max()), 0.01 * float(ideal.max()), 1e-6)
    ideal *= contrast / peak
    # Jitter moves the object, margin and all, under the detector: what enters the view is real.
    measured_ideal = np.empty((len(theta), rows, columns), dtype=np.float32)
    for a0 in range(0, len(theta), 64):
        a1 = min(a0 + 64, len(theta))
        measured_ideal[a0:a1] = displace(ideal[a0:a1], jitter[a0:a1])[:, margin:margin + rows, c0:c0 + columns]
    del ideal

    photons = _log_uniform(rng, c["photons"])
    drift = float(rng.uniform(*c["flat_drift"]))
    background = level = variation = None
    if rng.random() < c["background_probability"]:
        level, variation = float(rng.uniform(*c["background"])), float(rng.uniform(*c["background_variation"]))
        background = background_field(rows, columns, level=level, variation=variation, rng=rng)
    gain = ring_columns = None
    if rng.random() < c["ring_probability"]:
        count = int(rng.integers(c["ring_columns"][0], c["ring_columns"][1] + 1))
        ring_columns = sorted(int(i) for i in rng.choice(columns, min(count, columns), replace=False))
        gain = np.ones(columns, dtype=np.float32)
        error = rng.choice([-1, 1], len(ring_columns)) * rng.uniform(*c["ring_gain"], len(ring_columns))
        gain[ring_columns] = 1 + error
    dead = hot = None
    if rng.random() < c["bad_pixel_probability"]:
        dead = rng.random((rows, columns)) < _log_uniform(rng, c["dead_pixels"])
        hot = ~dead & (rng.random((rows, columns)) < _log_uniform(rng, c["hot_pixels"]))
    data, flats, darks = detector_counts(measured_ideal, photons=photons, flat_drift=drift, background=background,
                                         column_gain=gain, dead=dead, hot=hot, rng=rng)
    del measured_ideal
    line_integrals = normalise(data, flats, darks)
    salt = float(rng.uniform(*c["salt_pepper"])) if rng.random() < c["salt_pepper_probability"] else 0.0
    line_integrals = add_salt_and_pepper(line_integrals, salt, rng)
    info = dict(geo, kind=kind, amplitude=amplitude, margin=margin, mount=mount, low_contrast=low_contrast,
                max_line_integral=contrast, photons=photons, flat_drift=drift, background=level,
                background_variation=variation, ring_columns=ring_columns,
                dead_pixels=0 if dead is None else int(dead.sum()), hot_pixels=0 if hot is None else int(hot.sum()),
                salt_pepper=salt)
    info["off_axis_px"] = list(info["off_axis_px"])
    return line_integrals, theta, jitter, info


def _targets(jitter, theta, scale, n_rows):
    """What a pair can show: the jitter modulo rigid motion, in pixels of the pairs (``scale``)."""
    # The reference sits where the views are on average (a constant dy, a dx of c + a cos + b sin):
    # relative to it, only the jitter modulo that rigid motion can be seen in a pair.  Training on
    # the raw jitter would add the scan's rigid part, unpredictable from any one pair, as label noise.
    observable = remove_rigid_motion(jitter, theta) / scale
    if n_rows < MIN_ROWS_FOR_DY:
        # Too few rows to see dy: the workflow reports it as NaN and ignores the network's dy;
        # a target of 0 teaches the network that, where the true dy would be label noise.
        observable[:, 1] = 0.0
    return observable.astype(np.float32)


def _kept(n_angles, max_pairs, rng):
    if not max_pairs or n_angles <= max_pairs:
        return np.arange(n_angles)
    return np.sort(rng.choice(n_angles, int(max_pairs), replace=False))


def _pairs_for_scan(line_integrals, theta, jitter, conditions, input_size, rng):
    binned, scale = prepare_for_registration(line_integrals, binning=conditions["binning"],
                                             median_size=conditions["median_size"])
    references, _ = reference_projections(binned, theta, n_iter=conditions["mlem_iter"], backend=TorchBackend("cpu"),
                                          leave_out=conditions.get("references", "leave_out") == "leave_out")
    keep = _kept(len(theta), conditions.get("max_pairs"), rng)
    pairs, net_scale = prepare_pairs(binned[keep], references[keep], input_size)
    targets = _targets(jitter, theta, scale * net_scale, binned.shape[1])
    return pairs, targets[keep]


def synthetic_pairs(seed, conditions=None, input_size=64):
    """Pairs and targets of one random synthetic scan (:func:`synthetic_scan`).

    Steps A and B see every angle; at most ``max_pairs`` of them, drawn at random, are returned.

    Returns
    -------
    pairs : ndarray, shape (pair, 2, input_size, input_size), float32
    targets : ndarray, shape (pair, 2), float32
        Jitter modulo rigid motion (what a pair can show), in network-input pixels; dy is 0
        where the binned scan has fewer than ``MIN_ROWS_FOR_DY`` rows (unobservable).
    info : dict
        The drawn conditions for the record, with ``pairs`` kept.
    """
    c = TrainingConditions() if conditions is None else conditions
    rng = np.random.default_rng(seed)
    line_integrals, theta, jitter, info = synthetic_scan(rng, c)
    pairs, targets = _pairs_for_scan(line_integrals, theta, jitter, c, input_size, rng)
    info["pairs"] = len(targets)
    _free_projectors()
    return pairs, targets, info


def _free_projectors():
    # Random geometries (grid widths, angle counts, start angles) almost never meet the projector
    # cache again; its stored matrices (up to 8, ~100 MB each) would only fill a worker's memory.
    clear = getattr(getattr(projectors, "_cached_projector", None), "cache_clear", None)
    if clear is not None:
        clear()


def pairs_from_aligned_scan(line_integrals, theta, seed, conditions=None, input_size=64):
    """Pairs from a user's aligned scan (line integrals) with synthetic jitter added.

    This is how a beamline specialises the network for its own samples, detector and stage:
    aligned data of typical samples, jittered at random, taken through steps A and B.  At most
    ``max_pairs`` pairs are kept per copy.
    """
    c = TrainingConditions() if conditions is None else conditions
    rng = np.random.default_rng(seed)
    # Jitter scaled to the scan's width, so that it spans the same share of the network input.
    amplitude = c["amplitude"] * line_integrals.shape[2] / c["size"]
    jitter = random_jitter(len(theta), amplitude, rng)
    measured = displace(line_integrals, jitter)
    return _pairs_for_scan(measured, np.asarray(theta), jitter, c, input_size, rng)
