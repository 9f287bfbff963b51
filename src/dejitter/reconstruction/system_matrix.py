"""The stored system matrix of one slice for Joseph's method: the ``"matrix"`` projector of
:mod:`dejitter.reconstruction.projectors`, built once per geometry with SciPy.

Its entries are the reference the matrix-free projector reproduces to the bit (the same float64
expressions); its size grows as ``width^2 x angles`` (:func:`matrix_bytes`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import torch

__all__ = ["joseph_matrix", "to_torch_csr", "matrix_bytes"]

#: Bytes per non-zero of the stored matrix, in CSR and its transpose: float32 value and an int64
#: index, the larger of the two index sizes :func:`to_torch_csr` uses, so the bound holds for both.
_MATRIX_BYTES_PER_NNZ = 2 * (8 + 4)


def matrix_bytes(n_pixels: int, n_angles: int) -> int:
    """Memory of the stored system matrix, from an upper bound of its non-zeros (two per bin and
    step of every angle; the true count is about 85 % of it, rays that leave the slice having fewer)."""
    return 2 * int(n_angles) * int(n_pixels) ** 2 * _MATRIX_BYTES_PER_NNZ


def joseph_matrix(n_pixels: int, theta: np.ndarray, center: float) -> scipy.sparse.csr_matrix:
    """System matrix of one slice, rows ``angle * n_pixels + detector bin``, columns ``y * n + x``."""
    n = n_pixels
    c_vol = (n - 1) / 2.0
    t = np.arange(n, dtype=np.float64) - center  # detector bins, relative to the axis
    steps = np.arange(n, dtype=np.float64) - c_vol  # positions along the major axis
    rows, cols, vals = [], [], []
    for a, th in enumerate(np.asarray(theta, dtype=np.float64)):
        # TomoPy's rotation sense: t = x cos(theta) - y sin(theta); ``sin`` below is the
        # coefficient of y, and the rest of the construction holds for either sign.
        cos, sin = np.cos(th), -np.sin(th)
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


def to_torch_csr(matrix: scipy.sparse.csr_matrix, device: torch.device) -> torch.Tensor:
    """``matrix`` as a torch CSR tensor of float32 values on ``device`` (its indices sorted in place).

    The indices are 32-bit where every index fits, else 64-bit.  torch's CSR tensors take either
    on every device; the 32-bit ones have run on the CPU only (no GPU was lent to this project).
    """
    matrix.sort_indices()
    # 32-bit indices where they fit: the same products, about a fifth faster at 64 px on CPU
    # (less index traffic per entry); 64-bit beyond.
    index = np.int32 if max(matrix.nnz, *matrix.shape) < 2**31 else np.int64
    return torch.sparse_csr_tensor(
        torch.from_numpy(matrix.indptr.astype(index)),
        torch.from_numpy(matrix.indices.astype(index)),
        torch.from_numpy(matrix.data.astype(np.float32)),
        size=matrix.shape,
        device=device,
        check_invariants=False,  # built by scipy, sorted and valid by construction
    )
