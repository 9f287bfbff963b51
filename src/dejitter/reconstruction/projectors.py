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

from .matrix_free import ANGLE_BLOCK, MatrixFreeJoseph, work_bytes
from .system_matrix import joseph_matrix, matrix_bytes, to_torch_csr

__all__ = [
    "ParallelBeamProjector", "get_projector", "default_device", "choose_method", "matrix_bytes", "work_bytes",
    "METHODS", "MATRIX_MAX_BYTES", "ANGLE_BLOCK",
]

METHODS = ("auto", "matrix", "matrix-free")

#: Largest stored system matrix (estimated, forward and transpose together): above it the
#: matrix-free projector is used.  128 px x 181 angles: 136 MB estimated (114 MB in fact).
MATRIX_MAX_BYTES = 256 * 2**20


def default_device() -> torch.device:
    """The device torch work runs on: the first CUDA GPU if there is one, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def choose_method(n_pixels: int, n_angles: int) -> str:
    """``"matrix"`` where the stored matrix fits in :data:`MATRIX_MAX_BYTES`, else ``"matrix-free"``."""
    return "matrix" if matrix_bytes(n_pixels, n_angles) <= MATRIX_MAX_BYTES else "matrix-free"


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
        if self.method == "matrix":
            matrix = joseph_matrix(self.n_pixels, self.theta, self.center)
            self._forward = to_torch_csr(matrix, self.device)
            self._adjoint = to_torch_csr(matrix.T.tocsr(), self.device)
        else:
            self._free = MatrixFreeJoseph(self.n_pixels, self.theta, self.center, self.device, work_bytes=work_bytes,
                                          slice_chunk=slice_chunk, angle_chunk=angle_chunk, bin_chunk=bin_chunk,
                                          row_chunk=row_chunk)

    @property
    def n_angles(self) -> int:
        return len(self.theta)

    def _chunks(self, n_slices):
        """The matrix-free chunks (slices, angles, bins, slice rows): :meth:`MatrixFreeJoseph.chunks`."""
        return self._free.chunks(n_slices)

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        """Project a volume ``(z, y, x)`` to projections ``(angle, z, column)``."""
        return self.projections_from_native(self.forward_native(self.volume_to_native(volume)))

    def adjoint(self, projections: torch.Tensor) -> torch.Tensor:
        """Back-project projections ``(angle, z, column)`` to a volume ``(z, y, x)``."""
        return self.volume_from_native(self.adjoint_native(self.projections_to_native(projections)))

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
            return self._free.forward(volume)
        return self._forward @ volume

    def adjoint_native(self, projections: torch.Tensor) -> torch.Tensor:
        """:meth:`adjoint` of projections already in the native layout, the result left in it."""
        if self.method == "matrix-free":
            return self._free.adjoint(projections)
        return self._adjoint @ projections


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
