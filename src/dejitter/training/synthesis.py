"""Synthetic scans: 3-D phantoms, jitter, noise, and Data Exchange files for the demo campaign.

Phantom families cover what the network must handle: dense particles with pores and thin
cracks, nearly featureless particles, foams, layered objects and random ellipsoids, with random
sizes (wider than the field of view included), contrasts and positions.  For training data,
:func:`field_of_view` cuts a detector's view (with a margin for the jitter) out of a phantom
larger than the detector, :func:`add_mount` adds an absorbing sample mount, and
:func:`detector_counts` records counts with what real detectors add: a transmission background
the flats do not show, columns with a gain error (rings), dead and hot pixels.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..reconstruction import reproject
from ..shifting import displace

__all__ = [
    "PHANTOM_KINDS", "phantom", "random_jitter", "simulate_counts", "add_salt_and_pepper",
    "make_demo_scan", "field_of_view", "add_mount", "background_field", "detector_counts",
    "random_rotation",
]

PHANTOM_KINDS = ("particle", "featureless", "foam", "layered", "ellipsoids")


def _grid(size):
    c = (size - 1) / 2
    z, y, x = np.ogrid[:size, :size, :size]
    return (z - c) / (size / 2), (y - c) / (size / 2), (x - c) / (size / 2)


def _ellipsoid(volume, center, radii, value, rotation=None, mode="add"):
    """Paint an ellipsoid (coordinates in units of the half-width) into ``volume`` in place."""
    size = volume.shape[0]
    half = size / 2
    lo = np.clip(np.floor((np.array(center) - max(radii)) * half + half).astype(int) - 1, 0, size)
    hi = np.clip(np.ceil((np.array(center) + max(radii)) * half + half).astype(int) + 2, 0, size)
    if np.any(hi <= lo):
        return
    zz, yy, xx = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    coords = [(g - (size - 1) / 2) / half - c for g, c in zip((zz, yy, xx), center)]
    if rotation is not None:
        coords = [sum(rotation[i, j] * coords[j] for j in range(3)) for i in range(3)]
    inside = sum((c / r) ** 2 for c, r in zip(coords, radii)) <= 1
    region = volume[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    if mode == "add":
        region[inside] += value
    else:
        region[inside] = value


def random_rotation(rng):
    """A uniformly random 3-D rotation matrix."""
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return q


def phantom(size, kind="particle", rng=None):
    """A random 3-D phantom ``(z, y, x)`` of one family, attenuation in arbitrary units.

    Parameters
    ----------
    size : int
        Edge length in voxels.
    kind : {'particle', 'featureless', 'foam', 'layered', 'ellipsoids'}
    rng : numpy.random.Generator, optional

    Returns
    -------
    ndarray, shape (size, size, size), float32, non-negative
    """
    rng = np.random.default_rng(rng)
    vol = np.zeros((size, size, size), dtype=np.float32)
    extent = rng.uniform(0.45, 1.15)  # > 1: wider than the field of view (truncated)
    offset = rng.uniform(-0.15, 0.15, size=3) * (1.2 - min(extent, 1.0))
    if kind == "particle":
        radii = extent * rng.uniform(0.6, 0.9, size=3)
        _ellipsoid(vol, offset, radii, 1.0, random_rotation(rng))
        for _ in range(rng.integers(10, 40)):  # pores and denser inclusions
            r = rng.uniform(0.02, 0.12) * extent
            _ellipsoid(vol, offset + rng.uniform(-0.6, 0.6, 3) * radii, (r, r, r),
                       rng.choice([0.0, 0.3, 1.8]), mode="set")
        for _ in range(rng.integers(1, 4)):  # thin cracks: flat, empty ellipsoids
            _ellipsoid(vol, offset + rng.uniform(-0.3, 0.3, 3) * radii,
                       (0.03, 0.5 * extent, 0.4 * extent), 0.0, random_rotation(rng), mode="set")
        vol *= vol > 0
    elif kind == "featureless":
        radii = extent * rng.uniform(0.5, 0.9, size=3)
        _ellipsoid(vol, offset, radii, 1.0, random_rotation(rng))
        _ellipsoid(vol, offset, radii * 0.7, rng.uniform(0.0, 0.1), random_rotation(rng))
    elif kind == "foam":
        radii = extent * rng.uniform(0.7, 0.95, size=3)
        _ellipsoid(vol, offset, radii, 1.0, random_rotation(rng))
        for _ in range(rng.integers(40, 120)):
            r = rng.uniform(0.03, 0.15) * extent
            _ellipsoid(vol, offset + rng.uniform(-1, 1, 3) * radii, (r, r, r), 0.0, mode="set")
    elif kind == "layered":
        radius = extent * rng.uniform(0.5, 0.9)
        z, y, x = _grid(size)
        cylinder = ((x - offset[2]) ** 2 + (y - offset[1]) ** 2) <= radius ** 2
        edges = np.sort(rng.uniform(-1, 1, rng.integers(3, 9)))
        layer = np.searchsorted(edges, z[:, 0, 0])
        values = rng.uniform(0.2, 1.5, len(edges) + 1)
        vol[:] = cylinder * values[layer][:, None, None]
    elif kind == "ellipsoids":
        for _ in range(rng.integers(5, 25)):
            _ellipsoid(vol, rng.uniform(-0.6, 0.6, 3) * extent, rng.uniform(0.05, 0.4, 3) * extent,
                       rng.uniform(0.2, 1.0), random_rotation(rng))
    else:
        raise ValueError(f"unknown phantom kind {kind!r}; choose one of {PHANTOM_KINDS}")
    return np.clip(vol, 0, None)


def random_jitter(n_angles, amplitude=20.0, rng=None, *, vertical=True):
    """Uniform random jitter in ``[-amplitude, amplitude]`` px, shape ``(angle, 2)`` (dx, dy)."""
    rng = np.random.default_rng(rng)
    jitter = rng.uniform(-amplitude, amplitude, size=(n_angles, 2))
    if not vertical:
        jitter[:, 1] = 0
    return jitter


def add_salt_and_pepper(projections, fraction, rng=None):
    """Set ``fraction`` of the pixels to the image minimum (pepper) or maximum (salt), half each."""
    rng = np.random.default_rng(rng)
    out = np.array(projections, dtype=np.float32, copy=True)
    if fraction <= 0:
        return out
    hit = rng.random(out.shape) < fraction
    salt = rng.random(out.shape) < 0.5
    low = out.min(axis=(1, 2), keepdims=True)
    high = out.max(axis=(1, 2), keepdims=True)
    return np.where(hit, np.where(salt, high, low), out).astype(np.float32)


def _open_beam(n_angles, n_rows, n_cols, photons, flat_drift, rng):
    """The open beam of :func:`simulate_counts`: ``(beam, drift, across)``.

    ``beam`` is the counts per pixel in the flats (a smooth profile of +-20 %); in projection ``a``
    it is ``beam * (1 + drift[a] * across)``, a tilt across the columns that the flats lack.
    """
    yy, xx = np.mgrid[:n_rows, :n_cols] / max(n_rows, n_cols)
    profile = 1 + 0.2 * np.sin(2 * np.pi * (xx * rng.uniform(0.5, 2) + yy * rng.uniform(0.5, 2)))
    drift = flat_drift * np.sin(np.linspace(0, rng.uniform(1, 4) * np.pi, n_angles))
    return photons * profile, drift, xx - 0.5


def simulate_counts(line_integrals, *, photons=5000.0, n_flats=10, flat_drift=0.0, dark_level=100.0, rng=None):
    """Detector counts for given line integrals: Poisson noise, flats, darks, flat-field drift.

    Parameters
    ----------
    line_integrals : ndarray, shape (angle, row, column)
    photons : float
        Mean counts per pixel of the open beam.
    n_flats : int
    flat_drift : float
        Relative drift of the beam profile between flats and projections (e.g. 0.05).
    dark_level : float
    rng : numpy.random.Generator, optional

    Returns
    -------
    data, flats, darks : ndarray, float32
    """
    rng = np.random.default_rng(rng)
    n_angles, n_rows, n_cols = line_integrals.shape
    beam, drift, across = _open_beam(n_angles, n_rows, n_cols, photons, flat_drift, rng)
    data = rng.poisson(beam * (1 + drift[:, None, None] * across[None]) * np.exp(-line_integrals)) + rng.poisson(dark_level, line_integrals.shape)
    flats = rng.poisson(beam, (n_flats, n_rows, n_cols)) + rng.poisson(dark_level, (n_flats, n_rows, n_cols))
    darks = rng.poisson(dark_level, (n_flats, n_rows, n_cols))
    return data.astype(np.float32), flats.astype(np.float32), darks.astype(np.float32)


def field_of_view(volume, *, rows, columns, margin=0, stretch=1.0, row_center=None, offset=(0, 0)):
    """The part of a phantom a detector of ``rows x columns`` pixels sees, with a margin around it.

    The rotation axis stays at the centre of the detector's columns (the workflow assumes it
    there); the object may be larger than the view, taller, off the axis, and the view may sit
    at any height of it, so that structures cross every edge of the detector.

    Parameters
    ----------
    volume : ndarray, shape (n, n, n)
        A phantom (:func:`phantom`), its axis the centre of its ``(y, x)`` grid.
    rows, columns : int
        Detector size.  ``n - columns`` must be even (the axis stays on a pixel centre).
    margin : int
        Pixels of the object kept beyond every edge of the view: what jitter can bring into it.
    stretch : float
        Vertical scale of the object (> 1: taller; < 1: flatter), linear interpolation along z.
    row_center : float, optional
        Height of the view's centre in the stretched phantom, in voxels from its top; default
        the middle.  Outside the phantom is empty.
    offset : (int, int)
        Displacement of the object off the rotation axis, voxels ``(y, x)``.

    Returns
    -------
    ndarray, shape (rows + 2 margin, m, m), float32
        ``m = max(n, columns + 2 margin)``: a slice grid wide enough for the margin, same axis.
    """
    n = volume.shape[2]
    if (n - columns) % 2:
        raise ValueError(f"phantom width {n} and detector width {columns} must differ by an even number")
    width = max(n, columns + 2 * int(margin))
    height = n * stretch
    row_center = height / 2 if row_center is None else float(row_center)
    top = row_center - rows / 2 - margin  # output row 0 in stretched voxels
    lateral = (width - n) // 2
    out = ndimage.affine_transform(
        np.asarray(volume, dtype=np.float32), matrix=[1.0 / stretch, 1.0, 1.0],
        offset=[(top + 0.5) / stretch - 0.5, -lateral - int(offset[0]), -lateral - int(offset[1])],
        output_shape=(rows + 2 * int(margin), width, width), order=1, mode="constant", cval=0.0)
    return np.clip(out, 0, None).astype(np.float32)


def add_mount(volume, *, top, radius, density, rng=None):
    """Paint a sample mount in place: a vertical cylinder (a pin) from row ``top`` to the bottom.

    ``radius`` in voxels (it may exceed the view: a mount wider than the detector), centred on
    the rotation axis within a few voxels; the mount replaces the object where they meet, as
    a sample sitting on it would.
    """
    rng = np.random.default_rng(rng)
    n = volume.shape[2]
    c = (n - 1) / 2 + rng.uniform(-2, 2, size=2)
    y, x = np.ogrid[:n, :n]
    disc = (y - c[0]) ** 2 + (x - c[1]) ** 2 <= radius ** 2
    start = int(np.clip(top, 0, volume.shape[0]))
    volume[start:, disc] = density
    return volume


def background_field(n_rows, n_cols, *, level, variation=0.0, rng=None):
    """A smooth transmission field below 1: ``level`` times a gentle variation of up to ``variation``.

    What an absorbing support, a window or a flat taken at another beam position leaves in
    every projection but not in the flats.  Its maximum is ``level``.
    """
    rng = np.random.default_rng(rng)
    yy, xx = np.mgrid[:n_rows, :n_cols] / max(n_rows, n_cols)
    phase = rng.uniform(0, 2 * np.pi, 2)
    pattern = np.sin(2 * np.pi * rng.uniform(0.2, 1.0) * xx + phase[0]) * np.cos(
        2 * np.pi * rng.uniform(0.2, 1.0) * yy + phase[1])
    return (level * (1 - variation * (0.5 + 0.5 * pattern))).astype(np.float32)


def detector_counts(line_integrals, *, photons=5000.0, n_flats=10, flat_drift=0.0, dark_level=100.0,
                    background=None, column_gain=None, dead=None, hot=None, saturation=65535.0, rng=None,
                    chunk=64):
    """Counts as :func:`simulate_counts` records them, plus what real detectors add.

    Parameters
    ----------
    line_integrals : ndarray, shape (angle, row, column)
    photons, n_flats, flat_drift, dark_level : as in :func:`simulate_counts`
    background : ndarray, shape (row, column), optional
        Transmission in every projection that the flats lack (:func:`background_field`).
    column_gain : ndarray, shape (column,), optional
        Gain of each column in the projections but not in the flats: columns off 1 make rings.
    dead, hot : ndarray of bool, shape (row, column), optional
        Pixels reading 0, and reading ``saturation``, in every projection (the flats look fine,
        so flat-field correction does not flag them).
    chunk : int
        Angles computed at once (float32), to bound memory on scans of many angles.

    Returns
    -------
    data, flats, darks : ndarray, float32
    """
    rng = np.random.default_rng(rng)
    n_angles, n_rows, n_cols = line_integrals.shape
    beam, drift, across = _open_beam(n_angles, n_rows, n_cols, photons, flat_drift, rng)
    beam, across, drift = beam.astype(np.float32), across.astype(np.float32), 1 + drift
    seen = beam.copy()
    if background is not None:
        seen *= np.asarray(background, dtype=np.float32)
    if column_gain is not None:
        seen *= np.asarray(column_gain, dtype=np.float32)[None, :]
    data = np.empty((n_angles, n_rows, n_cols), dtype=np.float32)
    for a0 in range(0, n_angles, chunk):
        a1 = min(a0 + chunk, n_angles)
        tilt = 1 + (drift[a0:a1, None, None] - 1) * across[None]
        mean = seen * tilt * np.exp(-np.asarray(line_integrals[a0:a1], dtype=np.float32))
        data[a0:a1] = rng.poisson(mean) + rng.poisson(dark_level, mean.shape)
    if dead is not None:
        data[:, dead] = 0.0
    if hot is not None:
        data[:, hot] = saturation
    flats = rng.poisson(beam, (n_flats, n_rows, n_cols)) + rng.poisson(dark_level, (n_flats, n_rows, n_cols))
    darks = rng.poisson(dark_level, (n_flats, n_rows, n_cols))
    return data, flats.astype(np.float32), darks.astype(np.float32)


def make_demo_scan(path, truth_path, *, seed, size=128, n_angles=181, amplitude=20.0,
                   kind="particle", photons=5000.0, max_line_integral=2.0):
    """Write one synthetic scan as Data Exchange HDF5 and its true jitter as CSV.

    The phantom is projected at ``size`` pixels over 0..180 degrees, displaced by uniform
    jitter in ``[-amplitude, amplitude]`` px in x and y, and recorded as Poisson counts with
    flats and darks.
    """
    from ..files import write_shifts
    from ..readers import write_dxchange

    rng = np.random.default_rng(seed)
    theta_deg = np.linspace(0, 180, n_angles)
    theta = np.deg2rad(theta_deg)
    volume = phantom(size, kind, rng)
    ideal = reproject(volume, theta, device="cpu")
    ideal *= max_line_integral / max(float(ideal.max()), 1e-6)
    jitter = random_jitter(n_angles, amplitude, rng)
    measured = displace(ideal, jitter)
    data, flats, darks = simulate_counts(measured, photons=photons, rng=rng)
    write_dxchange(path, data, theta_deg, flats, darks)
    write_shifts(truth_path, theta_deg, jitter)
