"""Analytic phantoms: ellipsoids whose projections are exact at any detector size.

Voxel phantoms (:mod:`dejitter.training.synthesis`) cost a volume and a numerical projection, which
is out of reach at beamline sizes (1024-2048 px, 700-3000 angles) on a workstation.  The line
integral through an ellipsoid is a closed form, so a phantom of overlapping ellipsoids is projected
exactly, jitter included, in the time it takes to fill the detector: the test scans of
``benchmarks/bench_scale.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .synthesis import random_rotation

__all__ = ["Ellipsoids", "random_particle", "project_ellipsoids"]


@dataclass
class Ellipsoids:
    """A phantom made of overlapping ellipsoids whose attenuations add (negative ones carve pores).

    Coordinates are voxels of a volume ``(z, y, x)`` of ``n_rows`` slices of ``n_cols x n_cols``,
    relative to its centre; projections are analytic (:func:`project_ellipsoids`), so a phantom of
    any detector size needs no voxel volume: the way to make beamline-sized test scans.

    Attributes
    ----------
    centers : ndarray, shape (n, 3)
        ``(z, y, x)`` of each centre, voxels from the volume's centre.
    radii : ndarray, shape (n, 3)
        Semi-axes along the ellipsoid's own axes, voxels.
    rotations : ndarray, shape (n, 3, 3)
        Columns: the ellipsoid's axes in ``(z, y, x)``.
    densities : ndarray, shape (n,)
        Attenuation per voxel, added where ellipsoids overlap.
    """

    centers: np.ndarray
    radii: np.ndarray
    rotations: np.ndarray
    densities: np.ndarray


def random_particle(n_rows, n_cols, rng=None, *, extent=0.7, n_features=40):
    """A dense particle with pores and inclusions, ``extent`` times the detector, as :class:`Ellipsoids`.

    ``extent`` > 1 makes a sample wider (and, with ``n_rows`` < ``n_cols``, taller) than the view.
    The densities are scaled so that the thickest part absorbs about 1.5 (line integral), as in a
    real nano-tomography particle, whatever the size.
    """
    rng = np.random.default_rng(rng)
    half = np.array([n_rows, n_cols, n_cols], dtype=float) / 2
    body = extent * half * rng.uniform(0.75, 0.95, size=3)
    body[0] = max(body[0], extent * n_cols / 2 * 0.6) if n_rows < n_cols else body[0]  # a short view of a tall sample
    centers, radii, rotations, densities = [np.zeros(3)], [body], [random_rotation(rng)], [1.0]
    for _ in range(n_features):
        r = rng.uniform(0.03, 0.15) * body.min() * rng.uniform(0.7, 1.3, size=3)
        centers.append(rng.uniform(-0.55, 0.55, size=3) * body)
        radii.append(r)
        rotations.append(random_rotation(rng))
        densities.append(rng.choice([-1.0, -0.6, 0.8, 1.5]))
    thickness = 2 * body.max()
    scale = 1.5 / thickness
    return Ellipsoids(np.array(centers), np.array(radii), np.array(rotations), np.array(densities) * scale)


def project_ellipsoids(ellipsoids, theta, n_rows, n_cols, *, shifts=None, center=None, angle_chunk=16):
    """Exact line integrals of an :class:`Ellipsoids` phantom, optionally displaced by a known jitter.

    The geometry is the projector's (TomoPy's rotation sense): a point at ``(y, x)`` of a slice
    projects to column ``t = (x - c) cos(theta) - (y - c) sin(theta) + center``.  Each ellipsoid's
    chord length along the ray is a closed form (a quadratic in the detector coordinates), so the
    cost is that of filling the detector once per ellipsoid, over its footprint only.  A jitter is
    applied exactly, by evaluating the ideal projection at ``(column - dx, row - dy)``
    (DESIGN.md: ``P_measured(x, y) = P_ideal(x - dx, y - dy)``), without interpolation.

    Parameters
    ----------
    ellipsoids : Ellipsoids
    theta : ndarray
        Angles in radians.
    n_rows, n_cols : int
        Detector shape.
    shifts : ndarray, shape (angle, 2), optional
        Jitter ``(dx, dy)`` in pixels.
    center : float, optional
        Rotation axis column; default the detector centre.

    Returns
    -------
    ndarray, shape (angle, row, column), float32
    """
    theta = np.asarray(theta, dtype=np.float64)
    shifts = np.zeros((len(theta), 2)) if shifts is None else np.asarray(shifts, dtype=np.float64)
    center = (n_cols - 1) / 2 if center is None else float(center)
    out = np.zeros((len(theta), n_rows, n_cols), dtype=np.float32)
    # Inverse shape matrices: q = A (X - c) maps the ellipsoid onto the unit sphere.
    inverse = np.einsum("ni,nji->nij", 1 / ellipsoids.radii, ellipsoids.rotations)  # diag(1/r) R^T
    col_grid = torch.arange(n_cols, dtype=torch.float64)
    row_grid = torch.arange(n_rows, dtype=torch.float64)
    z0 = (n_rows - 1) / 2
    reach = ellipsoids.radii.max(axis=1)
    for k, (angle, (dx, dy)) in enumerate(zip(theta, shifts)):
        cos, sin = np.cos(angle), np.sin(angle)
        # (z, y, x) directions: detector column u, ray d, detector row e_z.
        u = np.array([0.0, -sin, cos])
        d = np.array([0.0, cos, sin])
        e_z = np.array([1.0, 0.0, 0.0])
        t = col_grid - center - dx  # ideal coordinates of the measured pixels
        z = row_grid - z0 - dy
        image = torch.zeros(n_rows, n_cols, dtype=torch.float64)
        for a, c, r_max, rho in zip(inverse, ellipsoids.centers, reach, ellipsoids.densities):
            t_c, z_c = float(c @ u), float(c[0])
            cols = slice(max(0, int(np.floor(t_c - r_max + center + dx))), min(n_cols, int(np.ceil(t_c + r_max + center + dx)) + 1))
            rows = slice(max(0, int(np.floor(z_c - r_max + z0 + dy))), min(n_rows, int(np.ceil(z_c + r_max + z0 + dy)) + 1))
            if cols.start >= cols.stop or rows.start >= rows.stop:
                continue
            au, az, ac, w = a @ u, a @ e_z, a @ c, a @ d
            ww = float(w @ w)
            tt, zz = t[cols][None, :], z[rows][:, None]
            # q(s) = tt*au + zz*az - ac + s*w; chord = 2 sqrt((q0.w)^2 - |w|^2 (|q0|^2 - 1)) / |w|^2
            qw = tt * float(au @ w) + zz * float(az @ w) - float(ac @ w)
            qq = (tt ** 2 * float(au @ au) + zz ** 2 * float(az @ az) + float(ac @ ac) + 2 * tt * zz * float(au @ az)
                  - 2 * tt * float(au @ ac) - 2 * zz * float(az @ ac))
            disc = (qw ** 2 - ww * (qq - 1)).clamp_min(0)
            image[rows, cols] += rho * 2 * disc.sqrt() / ww
        out[k] = image.numpy()
    return out
