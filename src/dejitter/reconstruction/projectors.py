"""Parallel-beam projector ``A`` and its exact adjoint ``A^T`` (Joseph's method), in torch.

Geometry (see DESIGN.md): a volume ``(z, y, x)`` is projected slice by slice into
projections ``(angle, row, column)``, row = z.

Rotation convention: TomoPy's, the field's standard, so that a volume is the same object
whichever backend made it.  A point of a slice at array indices ``(y, x)`` lands on detector
column

    t = (x - c) cos(theta) - (y - c) sin(theta) + center,    c = (n - 1) / 2,

with ``center`` counted in pixel centres (column 0 is the centre of the first pixel; the
default is the detector centre ``(n - 1) / 2``).  At ``theta = 0`` the rays run along y (down
the columns of the slice) and detector column = x; at ``theta = pi / 2`` they run along x and
the detector reads the slice's rows in reverse order.  Checked against TomoPy's own outputs
(``tests/test_conventions.py``, ``../shared/data/tomopy_reference.npz``):
``tomopy.project(volume, theta, center=center + 0.5, pad=False)`` equals ours (r = 0.9994),
TomoPy's MLEM likewise (r = 0.9996).  TomoPy's ``project`` and ``mlem`` count the axis from the
left edge of the first pixel, hence the half pixel; its ``gridrec`` counts pixel centres (see
:class:`dejitter.reconstruction.backends.TomopyBackend`).

Discretisation (Joseph's ray-driven method): the ray of detector bin ``b`` at angle ``theta``
steps along the slice's major axis for that angle (y where ``|cos| >= |sin|``, else x), one
pixel row (or column) per step, and interpolates linearly across it; each sample is weighted
by the step length ``1 / max(|cos|, |sin|)``.  Two implementations of the same discretisation,
behind one class (:class:`ParallelBeamProjector`), chosen by :func:`choose_method`:

``"matrix"``
    The system matrix of one slice (:mod:`dejitter.reconstruction.system_matrix`), built once
    per geometry with SciPy, stored in CSR together with its transpose and applied to all
    slices at once as one sparse x dense product.  The
    fastest where it is small; its size grows as ``width^2 x angles`` (7.2 GB at 512 px and
    721 angles, 75 GB at 2048 px and 1500 angles), so it is used only below
    :data:`MATRIX_MAX_BYTES`.
``"matrix-free"``
    The same entries, computed on the fly for one chunk at a time and applied as a sparse
    product that is then discarded: the forward projector per chunk of rays (angle, bin), the
    adjoint per chunk of pixels, gathering for each pixel the bins of each angle whose rays
    interpolate it (two candidates, three along the axes).  Both compute each weight from its
    (bin, step) with the matrix's own float64 expression, so the entries are the matrix's to the
    bit, the adjoint is the exact transpose, and the projections equal the matrix's to float32
    rounding (the sums run in another order).  Memory: the volume and projections passed in and
    returned, plus temporaries bounded by :func:`work_bytes` (a constant on CPU, a fraction of the
    free memory on CUDA): a zero-padded copy of a chunk of slices (or the back-projection's
    accumulator) and the entries of one chunk; never a per-geometry matrix.  Slower than the
    stored matrix where that fits: the entries are recomputed at every call.

Either way ``<A x, y> == <x, A^T y>`` to float32 precision, which MLEM relies on.

Chunks do not change results.  Every output element (a ray of the forward projection, a voxel
of the back-projection) is one row of a sparse product, whose entries and their order depend
only on the geometry: chunks of slices, of rays and of pixel rows select rows and columns and
never regroup a sum.  The back-projection sums angles in fixed blocks of :data:`ANGLE_BLOCK`
(block sums accumulated in order), whatever the chunks.  So chunked and whole results are
bit-identical on the same device (tested on CPU, where torch uses MKL's sparse product, whose
row sums do not depend on the other rows nor on the number of columns).  On CUDA the products
are cuSPARSE's non-transposed SpMM, documented as run-to-run deterministic; that its row sums
do not depend on the chunk's shape is expected but has not been verified on a GPU here.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .system_matrix import joseph_matrix, matrix_bytes, to_torch_csr

__all__ = [
    "ParallelBeamProjector", "get_projector", "default_device", "choose_method", "matrix_bytes", "work_bytes",
    "METHODS", "MATRIX_MAX_BYTES", "CPU_WORK_BYTES", "CPU_CHUNK_BYTES", "GPU_WORK_FRACTION", "ANGLE_BLOCK",
]

METHODS = ("auto", "matrix", "matrix-free")

#: Largest stored system matrix (estimated, forward and transpose together): above it the
#: matrix-free projector is used.  128 px x 181 angles: 136 MB estimated (114 MB in fact).
MATRIX_MAX_BYTES = 256 * 2**20
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


def default_device() -> torch.device:
    """The device torch work runs on: the first CUDA GPU if there is one, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def choose_method(n_pixels: int, n_angles: int) -> str:
    """``"matrix"`` where the stored matrix fits in :data:`MATRIX_MAX_BYTES`, else ``"matrix-free"``."""
    return "matrix" if matrix_bytes(n_pixels, n_angles) <= MATRIX_MAX_BYTES else "matrix-free"


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
        Where the work runs.  Default: :func:`default_device`.
    method : {'auto', 'matrix', 'matrix-free'}
        Stored system matrix or matrix-free (module docstring); ``'auto'``: :func:`choose_method`.
    work_bytes : int, optional
        Bound on the matrix-free projector's temporaries; default :func:`work_bytes` of the device.
    slice_chunk, angle_chunk, bin_chunk, row_chunk : int, optional
        Matrix-free chunks (slices per pass; angles and bins per chunk of the forward projection;
        slice rows per chunk of the back-projection); default: the largest within ``work_bytes``.
        Results do not depend on them.
    """

    def __init__(self, n_pixels, theta, center=None, device=None, *, method="auto", work_bytes=None,
                 slice_chunk=None, angle_chunk=None, bin_chunk=None, row_chunk=None):
        self.n_pixels = int(n_pixels)
        self.theta = np.asarray(theta, dtype=np.float64).reshape(-1)
        self.center = (self.n_pixels - 1) / 2.0 if center is None else float(center)
        self.device = torch.device(device) if device is not None else default_device()
        if method not in METHODS:
            raise ValueError(f"unknown projector method {method!r}; choose one of {', '.join(METHODS)}")
        self.method = choose_method(self.n_pixels, self.n_angles) if method == "auto" else method
        self.work_bytes = work_bytes
        self.slice_chunk, self.angle_chunk = slice_chunk, angle_chunk
        self.bin_chunk, self.row_chunk = bin_chunk, row_chunk
        if self.method == "matrix":
            matrix = joseph_matrix(self.n_pixels, self.theta, self.center)
            self._forward = to_torch_csr(matrix, self.device)
            self._adjoint = to_torch_csr(matrix.T.tocsr(), self.device)
        else:
            self._prepare_matrix_free()

    @property
    def n_angles(self) -> int:
        return len(self.theta)

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        """Project a volume ``(z, y, x)`` to projections ``(angle, z, column)``."""
        if self.method == "matrix-free":
            return self._forward_matrix_free(volume)
        return self.projections_from_native(self._forward @ self.volume_to_native(volume))

    def adjoint(self, projections: torch.Tensor) -> torch.Tensor:
        """Back-project projections ``(angle, z, column)`` to a volume ``(z, y, x)``."""
        if self.method == "matrix-free":
            return self._adjoint_matrix_free(projections)
        return self.volume_from_native(self._adjoint @ self.projections_to_native(projections))

    # -- the layout each method works in -------------------------------------------------------
    # The stored matrix multiplies volumes laid out (y * x, z) into projections (angle * column, z);
    # an iterative loop that stays in that layout (``forward_native``, ``adjoint_native``) saves
    # the two transposing copies per iteration that ``forward`` and ``adjoint`` make (about a
    # tenth of an MLEM iteration at 64 px).  The matrix-free method works in the usual layout.

    def volume_to_native(self, volume: torch.Tensor) -> torch.Tensor:
        """A volume ``(z, y, x)`` in the layout of :meth:`forward_native`."""
        if self.method == "matrix-free":
            return volume
        return volume.reshape(volume.shape[0], -1).T.contiguous()

    def volume_from_native(self, native: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`volume_to_native`: a volume ``(z, y, x)``."""
        if self.method == "matrix-free":
            return native
        return native.T.reshape(-1, self.n_pixels, self.n_pixels).contiguous()

    def projections_to_native(self, projections: torch.Tensor) -> torch.Tensor:
        """Projections ``(angle, z, column)`` in the layout of :meth:`adjoint_native`."""
        if self.method == "matrix-free":
            return projections
        return projections.permute(0, 2, 1).reshape(-1, projections.shape[1]).contiguous()

    def projections_from_native(self, native: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`projections_to_native`: projections ``(angle, z, column)``."""
        if self.method == "matrix-free":
            return native
        return native.reshape(self.n_angles, self.n_pixels, -1).permute(0, 2, 1).contiguous()

    def forward_native(self, volume: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` of a volume already in the native layout, the result left in it."""
        if self.method == "matrix-free":
            return self._forward_matrix_free(volume)
        return self._forward @ volume

    def adjoint_native(self, projections: torch.Tensor) -> torch.Tensor:
        """:meth:`adjoint` of projections already in the native layout, the result left in it."""
        if self.method == "matrix-free":
            return self._adjoint_matrix_free(projections)
        return self._adjoint @ projections

    # -- matrix-free ---------------------------------------------------------------------------

    def _prepare_matrix_free(self):
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

    def _chunks(self, n_slices):
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

    def _forward_matrix_free(self, volume):
        n, n_angles, width = self.n_pixels, self.n_angles, self._width
        n_slices = volume.shape[0]
        slices, angles, bins, _ = self._chunks(n_slices)
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

    def _adjoint_matrix_free(self, projections):
        n_angles, n_slices, n = projections.shape
        assert n == self.n_pixels and n_angles == self.n_angles, "projections do not match the geometry"
        slices, _, _, rows = self._chunks(n_slices)
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


@functools.lru_cache(maxsize=8)
def _cached_projector(n_pixels, theta_key, center, device_str, method, work):
    return ParallelBeamProjector(n_pixels, np.array(theta_key), center, torch.device(device_str), method=method,
                                 work_bytes=work)


def get_projector(n_pixels, theta, center=None, device=None, *, method="auto",
                  work_bytes=None) -> ParallelBeamProjector:
    """A cached :class:`ParallelBeamProjector`; ``method='auto'`` picks the stored matrix where it is
    small (:func:`choose_method`; building it costs about a second at 128 px), else the matrix-free one."""
    device = torch.device(device) if device is not None else default_device()
    center = (int(n_pixels) - 1) / 2.0 if center is None else float(center)
    key = tuple(np.round(np.asarray(theta, dtype=np.float64), 12).tolist())
    if method == "auto":
        method = choose_method(int(n_pixels), len(key))
    return _cached_projector(int(n_pixels), key, center, str(device), method, work_bytes)
