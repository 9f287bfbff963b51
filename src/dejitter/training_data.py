"""Training pairs for the network, made by the project's own steps A and B.

Each synthetic scan is a random phantom, projected, displaced by random sub-pixel jitter,
recorded with Poisson noise, flat-field drift and salt-and-pepper noise, normalised, prefiltered
and binned exactly as the workflow does, reconstructed by MLEM and reprojected with leave-out
references.  The network thus learns what MLEM reprojections of jittered data really look like.
A second source adds synthetic jitter to a user's own aligned scans.
"""

from __future__ import annotations

import numpy as np

from .backends import TorchBackend
from .metrics import remove_rigid_motion
from .network import prepare_pairs
from .preprocessing import normalise, prepare_for_registration
from .reconstruction import reproject
from .registration import reference_projections
from .shifting import displace
from .synthesis import PHANTOM_KINDS, add_salt_and_pepper, phantom, random_jitter, simulate_counts

__all__ = ["TrainingConditions", "synthetic_pairs", "pairs_from_aligned_scan"]

#: Angle counts used in training; few distinct values keep the projector cache warm.
ANGLE_COUNTS = (91, 121, 181)


class TrainingConditions(dict):
    """Ranges of the random conditions (a dict, so it goes into the model card as is)."""

    def __init__(self, **overrides):
        super().__init__(
            size=128, binning=2, median_size=3, mlem_iter=20, amplitude=20.0,
            # The reference each projection is compared with (see dejitter.registration): one MLEM
            # of all angles, as in the paper.  Inference uses the mode the model card records.
            references="full",
            # Some scans with small jitter only: what a second pass (or a steadier stage) looks like.
            small_jitter_probability=0.4, small_amplitude=(0.3, 6.0),
            photons=(300.0, 30000.0), salt_pepper=(0.0, 0.6), salt_pepper_probability=0.5,
            flat_drift=(0.0, 0.08), max_line_integral=(0.3, 3.0), row_crop_probability=0.2,
        )
        self.update(overrides)


def _pairs_for_scan(line_integrals, theta, jitter, conditions, input_size):
    binned, scale = prepare_for_registration(line_integrals, binning=conditions["binning"],
                                             median_size=conditions["median_size"])
    references, _ = reference_projections(binned, theta, n_iter=conditions["mlem_iter"], backend=TorchBackend("cpu"),
                                          leave_out=conditions.get("references", "leave_out") == "leave_out")
    pairs, net_scale = prepare_pairs(binned, references, input_size)
    # The reference sits where the views are on average (a constant dy, a dx of c + a cos + b sin):
    # relative to it, only the jitter modulo that rigid motion can be seen in a pair.  Training on
    # the raw jitter would add the scan's rigid part, unpredictable from any one pair, as label noise.
    observable = remove_rigid_motion(jitter, theta)
    return pairs, (observable / (scale * net_scale)).astype(np.float32)


def synthetic_pairs(seed, conditions=None, input_size=64):
    """Pairs and targets of one random synthetic scan.

    Returns
    -------
    pairs : ndarray, shape (angle, 2, input_size, input_size), float32
    targets : ndarray, shape (angle, 2), float32
        Jitter modulo rigid motion (what a pair can show), in network-input pixels.
    info : dict
        The drawn conditions (phantom kind, dose, noise) for the record.
    """
    c = TrainingConditions() if conditions is None else conditions
    rng = np.random.default_rng(seed)
    kind = PHANTOM_KINDS[rng.integers(len(PHANTOM_KINDS))]
    n_angles = int(rng.choice(ANGLE_COUNTS))
    theta = np.deg2rad(np.linspace(0, 180, n_angles))
    volume = phantom(c["size"], kind, rng)
    if rng.random() < c["row_crop_probability"]:  # short scans: few detector rows
        rows = int(rng.integers(16, c["size"] // 2))  # >= 8 rows after binning: dy observable
        start = int(rng.integers(0, c["size"] - rows))
        volume = volume[start:start + rows]
    ideal = reproject(volume, theta, device="cpu")
    ideal *= rng.uniform(*c["max_line_integral"]) / max(float(ideal.max()), 1e-6)
    amplitude = c["amplitude"]
    if rng.random() < c.get("small_jitter_probability", 0.0):
        amplitude = float(np.exp(rng.uniform(*np.log(c["small_amplitude"]))))
    jitter = random_jitter(n_angles, amplitude, rng)
    photons = float(np.exp(rng.uniform(*np.log(c["photons"]))))
    drift = rng.uniform(*c["flat_drift"])
    data, flats, darks = simulate_counts(displace(ideal, jitter), photons=photons, flat_drift=drift, rng=rng)
    measured = normalise(data, flats, darks)
    salt = rng.uniform(*c["salt_pepper"]) if rng.random() < c["salt_pepper_probability"] else 0.0
    measured = add_salt_and_pepper(measured, salt, rng)
    pairs, targets = _pairs_for_scan(measured, theta, jitter, c, input_size)
    info = {"kind": kind, "n_angles": n_angles, "rows": volume.shape[0], "amplitude": amplitude, "photons": photons,
            "salt_pepper": salt, "flat_drift": drift}
    return pairs, targets, info


def pairs_from_aligned_scan(line_integrals, theta, seed, conditions=None, input_size=64):
    """Pairs from a user's aligned scan (line integrals) with synthetic jitter added.

    This is how a beamline retrains the network for its own samples: aligned data of
    typical samples, jittered at random, taken through steps A and B.
    """
    c = TrainingConditions() if conditions is None else conditions
    rng = np.random.default_rng(seed)
    # Jitter scaled to the scan's width, so that it spans the same share of the network input.
    amplitude = c["amplitude"] * line_integrals.shape[2] / c["size"]
    jitter = random_jitter(len(theta), amplitude, rng)
    measured = displace(line_integrals, jitter)
    return _pairs_for_scan(measured, np.asarray(theta), jitter, c, input_size)
