import numpy as np
import pytest
import torch

from dejitter.reconstruction import matrix_free, projectors
from dejitter.reconstruction.system_matrix import joseph_matrix
from dejitter.reconstruction.projectors import (
    ANGLE_BLOCK,
    ParallelBeamProjector,
    choose_method,
    get_projector,
    matrix_bytes,
)

METHODS = ["matrix", "matrix-free"]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _angles(n_angles, seed=0):
    """Random angles over more than a turn, with the axis-aligned and diagonal ones among them."""
    special = np.deg2rad([0, 45, 90, 135, 180, 270, -45, 30])
    rest = np.random.default_rng(seed).uniform(-np.pi, 2 * np.pi, n_angles - len(special))
    return np.concatenate([special, rest])


def _dense_operators(projector):
    """The forward projector and the back-projector as dense matrices, from unit vectors."""
    n, n_angles = projector.n_pixels, projector.n_angles
    forward = projector.forward(torch.eye(n * n).reshape(n * n, n, n))  # (angle, pixel, bin)
    forward = forward.permute(0, 2, 1).reshape(n_angles * n, n * n)
    unit_rays = torch.eye(n_angles * n).reshape(n_angles * n, n_angles, n).permute(1, 0, 2).contiguous()
    adjoint = projector.adjoint(unit_rays).reshape(n_angles * n, n * n)  # (ray, pixel)
    return forward.numpy(), adjoint.numpy()


@pytest.mark.parametrize("method", METHODS)
def test_adjoint_matches_forward_to_float_precision(method):
    rng = np.random.default_rng(0)
    theta = np.sort(rng.uniform(0, np.pi, 37))
    proj = ParallelBeamProjector(24, theta, center=11.3, device="cpu", method=method)
    x = torch.from_numpy(rng.random((5, 24, 24), dtype=np.float32))
    y = torch.from_numpy(rng.random((37, 5, 24), dtype=np.float32))
    lhs = float((proj.forward(x).double() * y.double()).sum())
    rhs = float((x.double() * proj.adjoint(y).double()).sum())
    assert abs(lhs - rhs) <= 1e-5 * abs(lhs)


@pytest.mark.parametrize("method", METHODS)
def test_the_native_layout_gives_the_same_projections_and_volumes(method):
    """MLEM iterates in the projector's own layout: the layouts convert back exactly, and the products
    there are the system matrix's, slice by slice (float32 rounding: the sums run in another order)."""
    rng = np.random.default_rng(1)
    theta = np.sort(rng.uniform(0, np.pi, 29))
    proj = ParallelBeamProjector(20, theta, center=9.4, device="cpu", method=method)
    x = torch.from_numpy(rng.random((3, 20, 20), dtype=np.float32))
    y = torch.from_numpy(rng.random((29, 3, 20), dtype=np.float32))
    assert torch.equal(proj.volume_from_native(proj.volume_to_native(x)), x)
    assert torch.equal(proj.projections_from_native(proj.projections_to_native(y)), y)
    matrix = joseph_matrix(20, theta, 9.4)  # rows (angle, column), columns (y, x)
    forward = np.stack([(matrix @ s.ravel()).reshape(29, 20) for s in x.numpy().astype(np.float64)], axis=1)
    adjoint = np.stack([(matrix.T @ y.numpy()[:, z].astype(np.float64).ravel()).reshape(20, 20) for z in range(3)])
    native_forward = proj.projections_from_native(proj.forward_native(proj.volume_to_native(x))).numpy()
    native_adjoint = proj.volume_from_native(proj.adjoint_native(proj.projections_to_native(y))).numpy()
    np.testing.assert_allclose(native_forward, forward, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(native_adjoint, adjoint, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n, n_angles, center", [(12, 19, None), (13, 23, 5.7), (16, 40, 8.25), (9, 60, 2.0)])
def test_matrix_free_entries_are_the_matrix_and_its_exact_transpose(n, n_angles, center):
    """Same discretisation to the bit: every entry of the matrix-free forward projector is the stored
    matrix's, and the back-projector is exactly its transpose (odd and even sizes, axis off-centre,
    angles along the axes, where rounding brings two rays' taps onto one pixel)."""
    theta = _angles(n_angles)
    free = ParallelBeamProjector(n, theta, center, device="cpu", method="matrix-free")
    forward, adjoint = _dense_operators(free)
    matrix = joseph_matrix(n, free.theta, free.center).toarray()
    assert np.array_equal(forward, matrix)
    assert np.array_equal(adjoint, forward)


def test_matrix_free_agrees_with_matrix_on_a_volume():
    rng = np.random.default_rng(1)
    n, theta = 48, _angles(64, seed=1)
    x = torch.from_numpy(rng.random((3, n, n), dtype=np.float32))
    y = torch.from_numpy(rng.random((64, 3, n), dtype=np.float32))
    matrix = ParallelBeamProjector(n, theta, 20.0, device="cpu", method="matrix")
    free = ParallelBeamProjector(n, theta, 20.0, device="cpu", method="matrix-free")
    for a, b in ((matrix.forward(x), free.forward(x)), (matrix.adjoint(y), free.adjoint(y))):
        assert torch.allclose(a, b, rtol=0, atol=2e-6 * float(a.abs().max()))  # float32 rounding, other order


def test_matrix_free_adjointness_at_a_larger_size():
    rng = np.random.default_rng(2)
    n, theta = 96, np.deg2rad(np.linspace(0, 180, 91))
    proj = ParallelBeamProjector(n, theta, device="cpu", method="matrix-free")
    x = torch.from_numpy(rng.random((2, n, n), dtype=np.float32))
    y = torch.from_numpy(rng.random((91, 2, n), dtype=np.float32))
    lhs = float((proj.forward(x).double() * y.double()).sum())
    rhs = float((x.double() * proj.adjoint(y).double()).sum())
    assert abs(lhs - rhs) <= 1e-6 * abs(lhs)


@pytest.mark.parametrize("device", DEVICES)
def test_matrix_free_chunked_equals_whole_bit_for_bit(device):
    """Chunks of slices, angles, bins and slice rows, chosen or derived from a small work bound,
    change nothing, not even the last bit (37 angles: blocks of ANGLE_BLOCK and a remainder)."""
    rng = np.random.default_rng(3)
    n, n_angles, n_slices, theta = 20, 37, 5, _angles(37, seed=3)
    assert n_angles % ANGLE_BLOCK
    x = torch.from_numpy(rng.random((n_slices, n, n), dtype=np.float32)).to(device)
    y = torch.from_numpy(rng.random((n_angles, n_slices, n), dtype=np.float32)).to(device)
    whole = ParallelBeamProjector(n, theta, 8.6, device=device, method="matrix-free", work_bytes=2**30)
    assert whole._chunks(n_slices) == (n_slices, n_angles, n, n)  # everything at once
    forward, adjoint = whole.forward(x), whole.adjoint(y)
    small = 60_000  # derived from the bound: a few slices, angles, bins and rows at a time
    _, angles, bins, rows = ParallelBeamProjector(n, theta, device=device, method="matrix-free",
                                                  work_bytes=small)._chunks(n_slices)
    assert angles < n_angles and bins < n and rows < n
    for chunks in ({"slice_chunk": 2, "angle_chunk": 5, "bin_chunk": 7, "row_chunk": 3},
                   {"slice_chunk": 3, "angle_chunk": 1, "row_chunk": 1},
                   {"angle_chunk": 16, "bin_chunk": 19, "row_chunk": 19},
                   {"work_bytes": small}):
        chunked = ParallelBeamProjector(n, theta, 8.6, device=device, method="matrix-free", **chunks)
        assert torch.equal(chunked.forward(x), forward), chunks
        assert torch.equal(chunked.adjoint(y), adjoint), chunks


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("method", METHODS)
def test_cuda_agrees_with_cpu(method):
    rng = np.random.default_rng(5)
    n, theta = 40, _angles(45, seed=5)
    x = torch.from_numpy(rng.random((3, n, n), dtype=np.float32))
    y = torch.from_numpy(rng.random((45, 3, n), dtype=np.float32))
    cpu = ParallelBeamProjector(n, theta, 18.3, device="cpu", method=method)
    gpu = ParallelBeamProjector(n, theta, 18.3, device="cuda", method=method)
    for a, b in ((cpu.forward(x), gpu.forward(x.cuda())), (cpu.adjoint(y), gpu.adjoint(y.cuda()))):
        assert torch.allclose(a, b.cpu(), rtol=0, atol=2e-6 * float(a.abs().max()))


@pytest.mark.parametrize("method", METHODS)
def test_slices_do_not_depend_on_their_neighbours(method):
    """A slice's projections (and back-projection) are the same whatever other slices come with it:
    the callers' chunks of slices (mlem's ``chunk_slices``) give whole-volume results to the bit."""
    rng = np.random.default_rng(4)
    n, theta = 24, _angles(21, seed=4)
    proj = ParallelBeamProjector(n, theta, device="cpu", method=method)
    x = torch.from_numpy(rng.random((9, n, n), dtype=np.float32))
    y = torch.from_numpy(rng.random((21, 9, n), dtype=np.float32))
    forward, adjoint = proj.forward(x), proj.adjoint(y)
    for chunk in (slice(0, 1), slice(2, 7), slice(7, 9)):
        assert torch.equal(proj.forward(x[chunk]), forward[:, chunk])
        assert torch.equal(proj.adjoint(y[:, chunk].contiguous()), adjoint[chunk])


def test_work_bound_sets_the_chunks():
    n, n_angles = 64, 50
    proj = ParallelBeamProjector(n, np.linspace(0, np.pi, n_angles), device="cpu", method="matrix-free",
                                 work_bytes=4 * 2**20)
    slices, angles, bins, rows = proj._chunks(100)
    per_slice = 4 * ((n + 3) ** 2 + n * n + ANGLE_BLOCK * (n + 2))
    assert slices * per_slice <= 2 * 2**20 < (slices + 1) * per_slice
    assert angles * bins * 2 * n * matrix_free._FORWARD_BYTES_PER_ENTRY <= 4 * 2**20 and angles < n_angles
    assert rows * n * 3 * ANGLE_BLOCK * matrix_free._ADJOINT_BYTES_PER_ENTRY <= 4 * 2**20 and rows < n


def test_automatic_choice_keeps_the_matrix_where_it_is_small(monkeypatch):
    assert matrix_bytes(128, 181) < projectors.MATRIX_MAX_BYTES < matrix_bytes(512, 361)
    assert choose_method(128, 181) == "matrix"  # the MLEM benchmark's size: the fastest there
    assert choose_method(512, 361) == "matrix-free"
    assert choose_method(2048, 1500) == "matrix-free"  # 75 GB as a matrix
    theta = np.linspace(0, np.pi, 10)
    assert get_projector(16, theta, device="cpu").method == "matrix"
    assert get_projector(16, theta, device="cpu", method="matrix-free").method == "matrix-free"
    monkeypatch.setattr(projectors, "MATRIX_MAX_BYTES", matrix_bytes(16, 9))
    assert get_projector(16, theta, device="cpu").method == "matrix-free"
    assert get_projector(16, theta[:9], device="cpu").method == "matrix"
    with pytest.raises(ValueError, match="matrix-free"):
        ParallelBeamProjector(16, theta, device="cpu", method="sparse")


def test_reconstruction_is_the_same_with_either_projector(monkeypatch, small_projections, theta_small):
    from dejitter.reconstruction import mlem, reproject

    with_matrix = mlem(small_projections, theta_small, 3, device="cpu")
    monkeypatch.setattr(projectors, "MATRIX_MAX_BYTES", 0)  # every geometry goes matrix-free
    assert get_projector(32, theta_small, device="cpu").method == "matrix-free"
    matrix_free = mlem(small_projections, theta_small, 3, device="cpu")
    assert np.allclose(matrix_free, with_matrix, rtol=1e-4, atol=1e-5 * with_matrix.max())
    whole = reproject(matrix_free, theta_small, device="cpu")
    assert np.array_equal(reproject(matrix_free, theta_small, device="cpu", chunk_slices=7), whole)


@pytest.mark.parametrize("method", METHODS)
def test_projection_of_a_centred_disk_is_the_same_at_every_angle(method):
    n = 48
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    disk = (xx ** 2 + yy ** 2 <= 15 ** 2).astype(np.float32)[None]
    theta = np.deg2rad([0, 30, 45, 90, 135])
    p = ParallelBeamProjector(n, theta, device="cpu", method=method).forward(torch.from_numpy(disk)).numpy()[:, 0]
    # Line integral through the centre is the chord length, 2 * radius (pixel-sampled).
    assert np.allclose(p[:, n // 2], 30, atol=1.5)
    assert np.abs(p - p[0]).max() < 1.5
    assert np.allclose(p.sum(axis=1), disk.sum(), rtol=1e-3)  # mass is conserved at every angle


@pytest.mark.parametrize("method", METHODS)
def test_center_shifts_projection(method):
    n = 32
    point = np.zeros((1, n, n), np.float32)
    point[0, 16, 16] = 1
    theta = np.array([0.0])
    centred = ParallelBeamProjector(n, theta, device="cpu", method=method).forward(torch.from_numpy(point))
    moved = ParallelBeamProjector(n, theta, center=(n - 1) / 2 + 3, device="cpu", method=method).forward(
        torch.from_numpy(point))
    assert np.argmax(moved.numpy()[0, 0]) == np.argmax(centred.numpy()[0, 0]) + 3


@pytest.mark.parametrize("method", METHODS)
def test_rotation_sense_is_tomopys(method):
    """A point at (row y, column x) lands on t = (x - c) cos(theta) - (y - c) sin(theta) + center."""
    n, c = 32, 15.5
    point = np.zeros((1, n, n), np.float32)
    point[0, 10, 20] = 1  # above-right of the axis
    theta = np.deg2rad([0, 90, 180, 270])
    p = ParallelBeamProjector(n, theta, device="cpu", method=method).forward(torch.from_numpy(point)).numpy()[:, 0]
    expected = (20 - c) * np.cos(theta) - (10 - c) * np.sin(theta) + c
    assert np.allclose(np.argmax(p, axis=1), expected)  # columns 20, 21, 11, 10
