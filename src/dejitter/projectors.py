"""Parallel-beam projector with an exact adjoint, as a sparse matrix in torch.

Geometry (see DESIGN.md): a volume ``(z, y, x)`` is projected slice by slice into
projections ``(angle, row, column)``, row = z.  A point ``(x, y)`` of a slice (pixel
units, origin at the slice centre) lands on detector coordinate
``t = x cos(theta) + y sin(theta) + center``.

The system matrix of one slice is built once per geometry with Joseph's ray-driven
method (step along the ray's major axis, linear interpolation across it), stored in
CSR together with its transpose, and applied to all slices at once as one sparse x
dense product.  Because the adjoint is the transpose of the very same matrix,
``<A x, y> == <x, A^T y>`` holds to floating-point precision, which MLEM relies on.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.sparse
import torch

__all__ = ["ParallelBeamProjector", "get_projector", "default_device"]


def default_device() -> torch.device:
    """The device torch work runs on: the first CUDA GPU if there is one, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _joseph_matrix(n_pixels: int, theta: np.ndarray, center: float) -> scipy.sparse.csr_matrix:
    """System matrix of one slice, rows ``angle * n_pixels + detector bin``, columns ``y * n + x``."""
    n = n_pixels
    c_vol = (n - 1) / 2.0
    t = np.arange(n, dtype=np.float64) - center  # detector bins, relative to the axis
    steps = np.arange(n, dtype=np.float64) - c_vol  # positions along the major axis
    rows, cols, vals = [], [], []
    for a, th in enumerate(np.asarray(theta, dtype=np.float64)):
        cos, sin = np.cos(th), np.sin(th)
        tt, ss = np.meshgrid(t, steps, indexing="ij")  # (bin, step)
        if abs(cos) >= abs(sin):  # ray runs mostly along y: step over rows
            minor = (tt - ss * sin) / cos + c_vol  # fractional column
            major_index = ss + c_vol
            weight = 1.0 / abs(cos)
            flat = lambda major, minor_i: major * n + minor_i  # noqa: E731
        else:  # ray runs mostly along x: step over columns
            minor = (tt - ss * cos) / sin + c_vol  # fractional row
            major_index = ss + c_vol
            weight = 1.0 / abs(sin)
            flat = lambda major, minor_i: minor_i * n + major  # noqa: E731
        lo = np.floor(minor).astype(np.int64)
        frac = minor - lo
        bins = np.broadcast_to(np.arange(n)[:, None], minor.shape)
        for idx, w in ((lo, 1.0 - frac), (lo + 1, frac)):
            inside = (idx >= 0) & (idx < n) & (w > 0)
            rows.append(a * n + bins[inside])
            cols.append(flat(major_index[inside].astype(np.int64), idx[inside]))
            vals.append((w[inside] * weight).astype(np.float32))
    matrix = scipy.sparse.coo_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(len(theta) * n, n * n),
    )
    return matrix.tocsr()


def _to_torch_csr(matrix: scipy.sparse.csr_matrix, device: torch.device) -> torch.Tensor:
    matrix.sort_indices()
    return torch.sparse_csr_tensor(
        torch.from_numpy(matrix.indptr.astype(np.int64)),
        torch.from_numpy(matrix.indices.astype(np.int64)),
        torch.from_numpy(matrix.data.astype(np.float32)),
        size=matrix.shape,
        device=device,
        check_invariants=False,  # built by scipy, sorted and valid by construction
    )


class ParallelBeamProjector:
    """Forward projector ``A`` and its exact adjoint ``A^T`` for one geometry.

    Parameters
    ----------
    n_pixels : int
        Detector width in pixels; slices are ``n_pixels x n_pixels``.
    theta : array_like
        Projection angles in radians.
    center : float, optional
        Detector column of the rotation axis.  Default: the detector centre,
        ``(n_pixels - 1) / 2``.
    device : torch.device, optional
        Where the matrices live.  Default: :func:`default_device`.
    """

    def __init__(self, n_pixels, theta, center=None, device=None):
        self.n_pixels = int(n_pixels)
        self.theta = np.asarray(theta, dtype=np.float64)
        self.center = (self.n_pixels - 1) / 2.0 if center is None else float(center)
        self.device = torch.device(device) if device is not None else default_device()
        matrix = _joseph_matrix(self.n_pixels, self.theta, self.center)
        self._forward = _to_torch_csr(matrix, self.device)
        self._adjoint = _to_torch_csr(matrix.T.tocsr(), self.device)

    @property
    def n_angles(self) -> int:
        return len(self.theta)

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        """Project a volume ``(z, y, x)`` to projections ``(angle, z, column)``."""
        z = volume.shape[0]
        flat = volume.reshape(z, -1).T.contiguous()
        sino = self._forward @ flat  # (angle * column, z)
        return sino.reshape(self.n_angles, self.n_pixels, z).permute(0, 2, 1).contiguous()

    def adjoint(self, projections: torch.Tensor) -> torch.Tensor:
        """Back-project projections ``(angle, z, column)`` to a volume ``(z, y, x)``."""
        z = projections.shape[1]
        flat = projections.permute(0, 2, 1).reshape(-1, z).contiguous()
        vol = self._adjoint @ flat  # (y * x, z)
        return vol.T.reshape(z, self.n_pixels, self.n_pixels).contiguous()


@functools.lru_cache(maxsize=8)
def _cached_projector(n_pixels, theta_key, center, device_str):
    return ParallelBeamProjector(n_pixels, np.array(theta_key), center, torch.device(device_str))


def get_projector(n_pixels, theta, center=None, device=None) -> ParallelBeamProjector:
    """A cached :class:`ParallelBeamProjector`; building one costs about a second at 128 px."""
    device = torch.device(device) if device is not None else default_device()
    center = (int(n_pixels) - 1) / 2.0 if center is None else float(center)
    key = tuple(np.round(np.asarray(theta, dtype=np.float64), 12).tolist())
    return _cached_projector(int(n_pixels), key, center, str(device))
