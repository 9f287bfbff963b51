"""Held-out synthetic scans for the benchmarks: other seeds and phantom parameters than training.

Training draws scans from seeds 0.. with :class:`dejitter.training_data.TrainingConditions`; the
benchmarks use seeds from 10 000 on, a fixed dose and contrast, and conditions training did not
single out (a field of view narrower than the sample).
"""

from __future__ import annotations

import numpy as np

from dejitter.preprocessing import normalise
from dejitter.reconstruction import reproject
from dejitter.shifting import displace
from dejitter.synthesis import add_salt_and_pepper, phantom, random_jitter, simulate_counts

HELD_OUT_SEED = 10_000


def make_scan(seed, *, size=128, n_angles=181, amplitude=20.0, kind="particle", photons=5000.0,
              salt_pepper=0.0, truncate=False, max_line_integral=2.0):
    """Line integrals of a jittered synthetic scan, its angles (radians) and the true jitter.

    ``truncate``: the sample is 1.5x wider and taller than the field of view (a 128 px detector
    looks at the middle of a 192 px object), as nano-tomography samples often are.
    """
    rng = np.random.default_rng(HELD_OUT_SEED + seed)
    theta = np.deg2rad(np.linspace(0, 180, n_angles))
    full = int(size * 1.5) if truncate else size
    volume = phantom(full, kind, rng)
    ideal = reproject(volume, theta)
    ideal *= max_line_integral / max(float(ideal.max()), 1e-6)
    jitter = random_jitter(n_angles, amplitude, rng)
    measured = displace(ideal, jitter)
    if truncate:
        lo = (full - size) // 2
        measured = measured[:, lo:lo + size, lo:lo + size]
    data, flats, darks = simulate_counts(measured, photons=photons, rng=rng)
    line_integrals = normalise(data, flats, darks)
    return add_salt_and_pepper(line_integrals, salt_pepper, rng), theta, jitter
