"""Analytic phantoms: the projection of an ellipsoid phantom is the projector's, and its jitter the project's sign."""

import numpy as np

from dejitter.reconstruction import reproject
from dejitter.registration.classic import register_pairs
from dejitter.shifting import displace
from dejitter.training.ellipsoids import project_ellipsoids, random_particle

ROWS, COLS = 24, 40


def _voxelised(particle):
    zz, yy, xx = np.mgrid[:ROWS, :COLS, :COLS].astype(float)
    points = np.stack([zz - (ROWS - 1) / 2, yy - (COLS - 1) / 2, xx - (COLS - 1) / 2], -1)
    volume = np.zeros((ROWS, COLS, COLS), dtype=np.float32)
    for c, r, rotation, density in zip(particle.centers, particle.radii, particle.rotations, particle.densities):
        inside = ((((points - c) @ rotation) / r) ** 2).sum(-1) <= 1
        volume += density * inside
    return volume


def test_analytic_projections_are_those_of_the_voxelised_phantom():
    particle = random_particle(ROWS, COLS, np.random.default_rng(5), n_features=4)
    theta = np.deg2rad(np.linspace(0, 180, 19))
    analytic = project_ellipsoids(particle, theta, ROWS, COLS)
    voxel = reproject(_voxelised(particle), theta, device="cpu")
    assert np.corrcoef(analytic.ravel(), voxel.ravel())[0, 1] > 0.998
    np.testing.assert_allclose(register_pairs(analytic, voxel), 0, atol=0.11)  # same geometry, same sense


def test_jitter_is_applied_exactly_in_the_design_sign():
    particle = random_particle(ROWS, COLS, np.random.default_rng(6), n_features=4)
    theta = np.deg2rad(np.linspace(0, 180, 7))
    jitter = np.tile([2.5, -1.5], (len(theta), 1))
    ideal = project_ellipsoids(particle, theta, ROWS, COLS)
    measured = project_ellipsoids(particle, theta, ROWS, COLS, shifts=jitter)
    # P_measured(x, y) = P_ideal(x - dx, y - dy): what displace does by interpolation
    expected, opposite = displace(ideal, jitter), displace(ideal, -jitter)
    assert np.corrcoef(measured.ravel(), expected.ravel())[0, 1] > 0.998
    assert np.abs(measured - expected).mean() < 0.01 * measured.max() < np.abs(measured - opposite).mean()
