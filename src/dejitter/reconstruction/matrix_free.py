"""The matrix-free Joseph projector: the stored matrix's entries computed chunk by chunk.

The ``"matrix-free"`` method of :class:`dejitter.reconstruction.projectors.ParallelBeamProjector`
(its module docstring says the geometry, the discretisation and why chunks do not change
results): the forward projector builds the entries of one chunk of rays (angle, bin), the
adjoint those of one chunk of pixels, gathering for each pixel the bins of each angle whose rays
interpolate it, and applies them as a sparse product that is then discarded.  Temporaries stay
within :func:`work_bytes`.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["MatrixFreeJoseph", "work_bytes", "CPU_WORK_BYTES", "CPU_CHUNK_BYTES", "GPU_WORK_FRACTION",
           "ANGLE_BLOCK"]

#: Bound on the matrix-free projector's temporaries on CPU: at most half for the layout copies of
#: a chunk of slices (the padded volume, the back-projection's accumulator), the rest for the sparse
#: entries of one chunk of rays or pixels and the float64 arithmetic that makes them.
CPU_WORK_BYTES = 512 * 2**20
#: On CPU the entries of one chunk take at most this much: chunks near the caches' size run fastest
#: (at 512 px, chunks of 64 to 128 MiB ran about 1.3 times faster than chunks of 256 MiB).
CPU_CHUNK_BYTES = 64 * 2**20
#: On CUDA, the bound is this fraction of the free GPU memory (``torch.cuda.mem_get_info``).
GPU_WORK_FRACTION = 0.25
#: Angles back-projected together: their contributions to a voxel are summed in one sparse row,
#: and the blocks' sums accumulated in order, so results do not depend on any chunk size.
ANGLE_BLOCK = 16
# Peak bytes per sparse entry of a chunk (float64 coordinates, weights, indices, the CSR arrays and
# the sparse product's own copies): peak resident memory measured on CPU at 512 and 1024 px, with margin.
_FORWARD_BYTES_PER_ENTRY = 80
_ADJOINT_BYTES_PER_ENTRY = 128
# int32 CSR indices (half the memory of int64): a chunk holds fewer entries than this.
_MAX_CHUNK_ENTRIES = 2**31 - 1


def work_bytes(device) -> int:
    """Default bound on the matrix-free projector's temporaries: :data:`CPU_WORK_BYTES` on CPU,
    :data:`GPU_WORK_FRACTION` of the free memory of a CUDA device (asked at every call)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(GPU_WORK_FRACTION * free)
    return CPU_WORK_BYTES


def _regular_csr(cols: torch.Tensor, vals: torch.Tensor, n_cols: int) -> torch.Tensor:
    """A CSR matrix with the same number of entries in every row: ``cols``, ``vals`` are ``(rows, per_row)``."""
    rows, per_row = cols.shape
    if rows * per_row >= 2**31:  # a chunk forced beyond int32 row pointers
        cols = cols.long()
    crow = torch.arange(rows + 1, dtype=cols.dtype, device=cols.device) * per_row
    return torch.sparse_csr_tensor(crow, cols.reshape(-1), vals.reshape(-1), size=(rows, n_cols),
                                   check_invariants=False)  # valid by construction


class MatrixFreeJoseph:
    """The entries of :func:`~dejitter.reconstruction.system_matrix.joseph_matrix`, to the bit,
    computed for one chunk at a time (parameters as in
    :class:`~dejitter.reconstruction.projectors.ParallelBeamProjector`; ``theta`` an array,
    ``center`` a float, ``device`` a torch.device)."""

    def __init__(self, n_pixels, theta, center, device, *, work_bytes=None, slice_chunk=None, angle_chunk=None,
                 bin_chunk=None, row_chunk=None):
        self.n_pixels, self.theta, self.center, self.device = n_pixels, theta, center, device
        self.work_bytes = work_bytes
        self.slice_chunk, self.angle_chunk = slice_chunk, angle_chunk
        self.bin_chunk, self.row_chunk = bin_chunk, row_chunk
        n, dev, f64 = self.n_pixels, self.device, torch.float64
        cos, sin = np.cos(self.theta), -np.sin(self.theta)  # as in joseph_matrix, to the last bit
        along_y = np.abs(cos) >= np.abs(sin)  # step over rows (y), interpolate along x; else the reverse
        # Index across the ray at step s (centred): minor = (t - s q) / p + c, as in joseph_matrix.
        p = np.where(along_y, cos, sin)
        q = np.where(along_y, sin, cos)
        # The volume is read zero-padded (one pixel before, two after, in y and x), so that taps
        # off the slice land on zeros instead of being masked out.
        self._width = width = n + 3
        self._index_dtype = torch.int32 if width * width < 2**31 else torch.int64
        self._along_y = torch.as_tensor(along_y, device=dev)
        self._along_y_host = along_y
        self._along_axis = np.abs(p) > 1.0 - 1e-9  # the back-projection takes 3 candidate bins there
        self._p = torch.as_tensor(p, dtype=f64, device=dev)
        self._q = torch.as_tensor(q, dtype=f64, device=dev)
        self._step_weight = torch.as_tensor(1.0 / np.abs(p), dtype=f64, device=dev)  # ray length per step
        self._bins = torch.arange(n, dtype=f64, device=dev) - self.center  # t, as in joseph_matrix
        self._steps = torch.arange(n, dtype=f64, device=dev) - (n - 1) / 2.0  # s, as in joseph_matrix
        # Padded flat index of a tap = minor index * minor_stride + (step + 1) * major_stride + minor_stride.
        self._minor_stride = torch.as_tensor(np.where(along_y, 1, width), dtype=self._index_dtype, device=dev)
        self._major_stride = torch.as_tensor(np.where(along_y, width, 1), dtype=self._index_dtype, device=dev)

    @property
    def n_angles(self) -> int:
        return len(self.theta)

    def chunks(self, n_slices):
        """Chunk sizes (slices, angles, bins, slice rows) within the work bound."""
        n, n_angles = self.n_pixels, self.n_angles
        budget = self.work_bytes if self.work_bytes is not None else work_bytes(self.device)
        # Layout copies per slice: padded volume, back-projection accumulator, one block of projections.
        per_slice = 4 * (self._width ** 2 + n * n + ANGLE_BLOCK * (n + 2))
        slices = self.slice_chunk or max(1, min(n_slices, budget // 2 // per_slice))
        slices = min(int(slices), max(1, n_slices))
        left = max(budget - slices * per_slice, budget // 2)
        if self.device.type == "cpu":
            left = min(left, CPU_CHUNK_BYTES)
        # Forward: a ray (angle, bin) has 2 n entries, and a result row of ``slices`` values.
        rays = left // (2 * n * _FORWARD_BYTES_PER_ENTRY + 4 * slices)
        rays = max(1, min(rays, _MAX_CHUNK_ENTRIES // (2 * n)))
        angles = self.angle_chunk or max(1, min(n_angles, rays // n))
        bins = self.bin_chunk or (n if rays >= n else rays)
        # Back-projection: a pixel has (at most) 3 entries per angle of the block.
        per_row = n * (3 * ANGLE_BLOCK * _ADJOINT_BYTES_PER_ENTRY + 4 * slices)
        rows = self.row_chunk or max(1, min(n, left // per_row, _MAX_CHUNK_ENTRIES // (3 * ANGLE_BLOCK * n)))
        return int(slices), int(angles), int(min(bins, n)), int(rows)

    def _ray_entries(self, a0, a1, b0, b1):
        """Sparse rows of the rays of angles ``a0:a1``, bins ``b0:b1``: ``(rays, 2 n)`` padded flat
        indices and float32 weights, ordered by step then tap, as in :func:`~dejitter.reconstruction.system_matrix.joseph_matrix`."""
        n, c_vol = self.n_pixels, (self.n_pixels - 1) / 2.0
        p, q = self._p[a0:a1, None, None], self._q[a0:a1, None, None]
        sq = self._steps[None, None, :] * q  # (angle, 1, step)
        minor = (self._bins[None, b0:b1, None] - sq) / p + c_vol  # (angle, bin, step), the matrix's expression
        # Off-slice taps land on the zero padding (and only there, with their weights).
        minor.clamp_(-1.0, float(n))
        lo = torch.floor(minor)
        frac = minor.sub_(lo)
        shape = frac.shape + (2,)
        weight = self._step_weight[a0:a1, None, None]
        vals = torch.empty(shape, dtype=torch.float32, device=self.device)
        vals[..., 0] = (1.0 - frac).mul_(weight)
        vals[..., 1] = frac.mul_(weight)
        del frac
        minor_stride = self._minor_stride[a0:a1, None, None]
        first = (torch.arange(1, n + 1, dtype=self._index_dtype, device=self.device)[None, None, :]
                 * self._major_stride[a0:a1, None, None] + minor_stride)
        cols = torch.empty(shape, dtype=self._index_dtype, device=self.device)
        cols[..., 0] = lo.to(self._index_dtype).mul_(minor_stride).add_(first)
        cols[..., 1] = cols[..., 0] + minor_stride
        rays = shape[0] * shape[1]
        return cols.view(rays, 2 * n), vals.view(rays, 2 * n)

    def _pixel_entries(self, a0, a1, y0, y1):
        """Sparse rows of the back-projection of angles ``a0:a1`` onto slice rows ``y0:y1``:
        ``(pixels, c (a1 - a0))`` indices into the block of projections ``(angle - a0, bin + 1)``
        (``n + 2`` bins per angle: a zero each side) and float32 weights, ordered by candidate bin
        (below), then angle.

        A ray taps a pixel where its fractional index across the ray lies within one of the pixel's
        index, an interval of ``2 |p|`` bins around the bin ``beta`` of the ray through the pixel's
        centre.  With ``|p| < 1`` the candidates ``floor(beta)`` and ``floor(beta) + 1`` hold every
        such bin (``c = 2``); blocks with an angle along an axis (``|p| = 1``, where rounding can
        even bring two rays' taps onto one pixel) take ``round(beta) - 1 .. round(beta) + 1``
        (``c = 3``).  Each candidate's weight is computed from (bin, step) with
        :meth:`_ray_entries`'s expression, so the entries are its own to the bit.
        """
        n, c_vol, f64, dev = self.n_pixels, (self.n_pixels - 1) / 2.0, torch.float64, self.device
        k = a1 - a0
        # Computed as (candidate, angle, y, x), pixels innermost (long vectorised loops), then
        # transposed to rows of pixels.
        y = torch.arange(y0, y1, dtype=f64, device=dev)[:, None] - c_vol  # (y, 1), centred
        x = torch.arange(n, dtype=f64, device=dev) - c_vol  # (x,)
        p, q, center = self._p[a0:a1, None, None], self._q[a0:a1, None, None], self.center
        # Along y the pixel's step is y and its index across the ray x; along x the reverse.
        along_y = self._along_y_host[a0:a1]
        if along_y.all() or not along_y.any():  # the usual block: one case, broadcast views
            step, across = (y, x) if along_y[0] else (x, y)
            sq = step * q  # s q: the very product of _ray_entries, (angle, y, 1) or (angle, 1, x)
            nearest = (across * p).add(sq).add_(center)
        else:
            along_y = self._along_y[a0:a1, None, None]
            sq = torch.where(along_y, y * q, x * q)
            across = torch.where(along_y, x, y)
            nearest = torch.where(along_y, x * p, y * p).add_(sq).add_(center)
        across = across + c_vol  # integer index across the ray
        # First candidate, kept within the detector (where it is not, no ray of a real bin reaches
        # the pixel, and it sees only zero-weight or padding entries).
        if self._along_axis[a0:a1].any():
            c, nearest = 3, nearest.round_().clamp_(0.0, n - 1.0).sub_(1.0)  # (angle, y, x)
        else:
            c, nearest = 2, nearest.floor_().clamp_(-1.0, n - 1.0)
        bins = nearest + torch.arange(c, dtype=f64, device=dev)[:, None, None, None]
        minor = bins.sub_(center).sub_(sq).div_(p).add_(c_vol)  # (candidate, angle, y, x), as in _ray_entries
        del sq
        lo = torch.floor(minor)
        frac = minor.sub_(lo)
        first_tap = lo == across
        second_tap = lo.add_(1.0) == across
        del lo
        weight = torch.where(first_tap, 1.0 - frac, frac.mul_(second_tap)).mul_(self._step_weight[a0:a1, None, None])
        del frac, first_tap, second_tap
        # Index in the block of projections: angle * (n + 2) + bin + 1 (one zero bin each side).
        offsets = (torch.arange(k, dtype=self._index_dtype, device=dev) * (n + 2))[None, :, None, None] + torch.arange(
            1, c + 1, dtype=self._index_dtype, device=dev)[:, None, None, None]
        cols = torch.empty((c, k, y1 - y0, n), dtype=self._index_dtype, device=dev)
        torch.add(nearest.to(self._index_dtype), offsets, out=cols)
        # Rows of pixels (a blocked transpose), entries ordered by candidate then angle.
        pixels = (y1 - y0) * n
        vals = weight.to(torch.float32).view(c * k, pixels).T.contiguous()
        del weight
        return cols.view(c * k, pixels).T.contiguous(), vals

    def forward(self, volume):
        """Project a volume ``(z, y, x)`` to projections ``(angle, z, column)``."""
        n, n_angles, width = self.n_pixels, self.n_angles, self._width
        n_slices = volume.shape[0]
        slices, angles, bins, _ = self.chunks(n_slices)
        out = torch.empty((n_angles, n_slices, n), dtype=torch.float32, device=self.device)
        for z0 in range(0, n_slices, slices):
            z1 = min(z0 + slices, n_slices)
            padded = torch.zeros((width * width, z1 - z0), dtype=torch.float32, device=self.device)
            padded.view(width, width, -1)[1:n + 1, 1:n + 1] = volume[z0:z1].permute(1, 2, 0)
            for a0 in range(0, n_angles, angles):
                a1 = min(a0 + angles, n_angles)
                for b0 in range(0, n, bins):
                    b1 = min(b0 + bins, n)
                    operator = _regular_csr(*self._ray_entries(a0, a1, b0, b1), width * width)
                    out[a0:a1, z0:z1, b0:b1] = (operator @ padded).view(a1 - a0, b1 - b0, -1).permute(0, 2, 1)
        return out

    def adjoint(self, projections):
        """Back-project projections ``(angle, z, column)`` to a volume ``(z, y, x)``."""
        n_angles, n_slices, n = projections.shape
        assert n == self.n_pixels and n_angles == self.n_angles, "projections do not match the geometry"
        slices, _, _, rows = self.chunks(n_slices)
        out = torch.empty((n_slices, n, n), dtype=torch.float32, device=self.device)
        for z0 in range(0, n_slices, slices):
            z1 = min(z0 + slices, n_slices)
            acc = torch.zeros((n * n, z1 - z0), dtype=torch.float32, device=self.device)
            for a0 in range(0, n_angles, ANGLE_BLOCK):
                a1 = min(a0 + ANGLE_BLOCK, n_angles)
                block = torch.zeros((a1 - a0, n + 2, z1 - z0), dtype=torch.float32, device=self.device)
                block[:, 1:n + 1] = projections[a0:a1, z0:z1].permute(0, 2, 1)
                block = block.view((a1 - a0) * (n + 2), -1)
                for y0 in range(0, n, rows):
                    y1 = min(y0 + rows, n)
                    operator = _regular_csr(*self._pixel_entries(a0, a1, y0, y1), block.shape[0])
                    acc[y0 * n:y1 * n].addmm_(operator, block)
            out[z0:z1] = acc.T.reshape(-1, n, n)
        return out
