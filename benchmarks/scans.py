"""Held-out synthetic scans for the benchmarks: other seeds and phantom parameters than training.

Training draws scans from seeds 0.. with :class:`dejitter.training.data.TrainingConditions`; the
benchmarks use seeds from 10 000 on, a fixed dose and contrast, and conditions training did not
single out (a field of view narrower than the sample).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dejitter.preprocessing import normalise
from dejitter.readers import open_scan
from dejitter.reconstruction import reproject
from dejitter.shifting import displace
from dejitter.training.synthesis import add_salt_and_pepper, phantom, random_jitter, simulate_counts

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


def make_truncated_scan(seed, *, size=128, n_angles=181, amplitude=20.0, kind="particle", wider=1.0, taller=1.0,
                        photons=5000.0, salt_pepper=0.0, max_line_integral=2.0):
    """Like :func:`make_scan`, with the sample ``wider`` and ``taller`` times the field of view separately.

    The phantom is made on a grid ``max(wider, taller) * size`` wide, padded with a denser foam so
    that it really fills that grid (a random phantom may otherwise still fit), and the detector
    sees its middle ``size`` columns (``wider > 1``) or rows (``taller > 1``).
    """
    rng = np.random.default_rng(HELD_OUT_SEED + 1000 + seed)
    theta = np.deg2rad(np.linspace(0, 180, n_angles))
    full = int(round(size * max(wider, taller, 1.0)))
    volume = phantom(full, kind, rng)
    volume = np.maximum(volume, 0.3 * phantom(full, "foam", rng))
    ideal = reproject(volume, theta)
    ideal *= max_line_integral / max(float(ideal.max()), 1e-6)
    jitter = random_jitter(n_angles, amplitude, rng)
    measured = displace(ideal, jitter)
    r0 = (full - size) // 2 if taller > 1 else 0
    c0 = (full - size) // 2 if wider > 1 else 0
    measured = measured[:, r0:r0 + (size if taller > 1 else full), c0:c0 + (size if wider > 1 else full)]
    data, flats, darks = simulate_counts(measured, photons=photons, rng=rng)
    return add_salt_and_pepper(normalise(data, flats, darks), salt_pepper, rng), theta, jitter


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
I13 = SHARED_DATA / "real" / "tiff_diamond_i13"
TOOTH = SHARED_DATA / "tooth.h5"
#: The I13 angle file lists 5 darks, 5 flats, the 91 projections, 5 flats, 5 darks.
I13_FRAMES = "dark:5,flat:5,proj:91,flat:5,dark:5"


def read_real(path, **reader_options):
    """Line integrals and angles (radians) of a real scan, read and normalised by the project's own code."""
    with open_scan(path, **reader_options) as scan:
        data, flats, darks = (np.asarray(a, dtype=np.float32) for a in (scan.data, scan.flats, scan.darks))
        theta = np.deg2rad(scan.theta_deg)
    return normalise(data, flats, darks, path=str(path)), theta


def real_i13():
    """The Diamond I13-2 TIFF scan (91 angles, -88..92 degrees, 135 x 160 px) as measured."""
    return read_real(I13, angles=str(I13 / "angles.txt"), flats=str(I13 / "flat_00001.tiff"),
                     darks=str(I13 / "dark_00001.tiff"), frames=I13_FRAMES)


def real_tooth():
    """TomoPy's tooth scan (181 angles, 2 rows of 640 px) as measured."""
    return read_real(TOOTH)


def with_added_jitter(line_integrals, theta, seed, *, amplitude=20.0, vertical=True):
    """A real scan displaced by known uniform jitter (held-out seeds); returns the scan, angles and jitter."""
    rng = np.random.default_rng(HELD_OUT_SEED + 2000 + seed)
    jitter = random_jitter(len(theta), amplitude, rng, vertical=vertical)
    return displace(line_integrals, jitter), theta, jitter
