import numpy as np
import torch

from dejitter.projectors import ParallelBeamProjector


def test_adjoint_matches_forward_to_float_precision():
    rng = np.random.default_rng(0)
    theta = np.sort(rng.uniform(0, np.pi, 37))
    proj = ParallelBeamProjector(24, theta, center=11.3, device="cpu")
    x = torch.from_numpy(rng.random((5, 24, 24), dtype=np.float32))
    y = torch.from_numpy(rng.random((37, 5, 24), dtype=np.float32))
    lhs = float((proj.forward(x).double() * y.double()).sum())
    rhs = float((x.double() * proj.adjoint(y).double()).sum())
    assert abs(lhs - rhs) <= 1e-5 * abs(lhs)


def test_projection_of_a_centred_disk_is_the_same_at_every_angle():
    n = 48
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    disk = (xx ** 2 + yy ** 2 <= 15 ** 2).astype(np.float32)[None]
    theta = np.deg2rad([0, 30, 45, 90, 135])
    p = ParallelBeamProjector(n, theta, device="cpu").forward(torch.from_numpy(disk)).numpy()[:, 0]
    # Line integral through the centre is the chord length, 2 * radius (pixel-sampled).
    assert np.allclose(p[:, n // 2], 30, atol=1.5)
    assert np.abs(p - p[0]).max() < 1.5
    assert np.allclose(p.sum(axis=1), disk.sum(), rtol=1e-3)  # mass is conserved at every angle


def test_center_shifts_projection():
    n = 32
    point = np.zeros((1, n, n), np.float32)
    point[0, 16, 16] = 1
    theta = np.array([0.0])
    centred = ParallelBeamProjector(n, theta, device="cpu").forward(torch.from_numpy(point)).numpy()[0, 0]
    moved = ParallelBeamProjector(n, theta, center=(n - 1) / 2 + 3, device="cpu").forward(
        torch.from_numpy(point)).numpy()[0, 0]
    assert np.argmax(moved) == np.argmax(centred) + 3
