"""Step E with the embedded backend: filtered back-projection, one entry point (:func:`fbp`) and two methods.

``fourier`` (:mod:`dejitter.reconstruction.fourier`): gridding with finufft's NUFFT, O(n^2 log n)
per slice, on the CPU where finufft is importable.  ``direct``: pixel-driven back-projection in
torch (:func:`direct_fbp`), O(n^2 angles) per slice, which needs nothing but torch and runs on CUDA
too.  :func:`fbp_method` says which one :func:`fbp` runs, so that backends can record it.

Projections ``(angle, row, column)`` in, volume ``(z, y, x)`` out, angles in radians, TomoPy's
rotation sense (:mod:`dejitter.reconstruction.projectors`).  Slices are independent in
parallel-beam geometry, so the volume is reconstructed in chunks of slices to bound memory.
"""

from __future__ import annotations

import numpy as np
import torch

from .filters import FILTERS, angle_weights, filter_response, filter_size
from .fourier import finufft_available, fourier_fbp
from .iterative import as_tensor, slice_chunks
from .projectors import default_device

__all__ = ["fbp", "direct_fbp", "fbp_method", "fbp_angle_chunk", "FBP_METHODS", "FILTERS"]

#: The ways :func:`fbp` back-projects; ``auto`` picks with :func:`fbp_method`.
FBP_METHODS = ("auto", "fourier", "direct")


def _filter_response(n_cols: int, filter_name: str, device) -> torch.Tensor:
    """:func:`~dejitter.reconstruction.filters.filter_response` for this detector, as a torch tensor."""
    return torch.as_tensor(filter_response(filter_size(n_cols), filter_name)).float().to(device)


_angle_weights = angle_weights  # the name the torch FBP has always used


#: Columns (slices) per sparse matrix product in :func:`direct_fbp`.
MATMUL_WIDTH = 16
#: Memory of the interpolation matrix of one chunk of angles in :func:`direct_fbp` (2 entries of
#: 12 bytes per pixel and angle): the chunk shrinks as slices grow, so 2048^2 slices stay bounded.
FBP_MATRIX_BYTES = 256 * 2**20


def fbp_angle_chunk(n_angles, n_cols):
    """Angles back-projected at once by :func:`direct_fbp`: at most 32 (the filtered projections of a chunk
    are copied for the product), and no more than fit in :data:`FBP_MATRIX_BYTES`."""
    return max(1, min(int(n_angles), 32, FBP_MATRIX_BYTES // (24 * int(n_cols) ** 2)))


def _fixed_width_matmul(sparse, dense):
    """``sparse @ dense``, ``MATMUL_WIDTH`` columns at a time (the last block padded with zeros).

    MKL picks its kernel, and with it the rounding, by the number of columns of the dense
    operand, while each column of a product of a given width does not depend on the others.
    A fixed width makes every slice independent of how many are reconstructed together, so
    chunked and whole-volume reconstructions are bit-identical.
    """
    n = dense.shape[1]
    padded = torch.nn.functional.pad(dense, (0, -n % MATMUL_WIDTH))
    blocks = [sparse @ padded[:, s: s + MATMUL_WIDTH] for s in range(0, padded.shape[1], MATMUL_WIDTH)]
    return torch.cat(blocks, dim=1)[:, :n]


def fbp_method(device=None, method="auto") -> str:
    """The method :func:`fbp` runs for ``method`` on ``device``: ``fourier`` for ``auto`` on the CPU
    where finufft is importable, else ``direct``."""
    if method not in FBP_METHODS:
        raise ValueError(f"unknown FBP method {method!r}; choose one of {', '.join(FBP_METHODS)}")
    if method != "auto":
        if method == "fourier" and not finufft_available():
            raise RuntimeError("FBP method 'fourier' was asked for but finufft is not importable "
                               "(pip install finufft)")
        return method
    device = torch.device(device) if device is not None else default_device()
    return "fourier" if device.type == "cpu" and finufft_available() else "direct"


def fbp(projections, theta, *, center=None, filter_name="shepp-logan", device=None, chunk_slices=None,
        method="auto"):
    """Filtered back-projection (step E).

    Parameters
    ----------
    projections : ndarray, shape (angle, row, column)
        Line integrals.
    theta : ndarray
        Angles in radians.
    center : float, optional
        Detector column of the rotation axis (pixel centres); default the detector centre.
    filter_name : {'ramp', 'shepp-logan', 'cosine', 'hamming', 'hann'}
    device, chunk_slices : optional
        As in :func:`mlem`.
    method : {'auto', 'fourier', 'direct'}
        ``fourier``: :func:`~dejitter.reconstruction.fourier.fourier_fbp` (CPU, finufft, whatever
        ``device``); ``direct``: :func:`direct_fbp` (torch, on ``device``); ``auto``:
        :func:`fbp_method`.  Both give the same grid and grey levels (correlation > 0.99).

    Returns
    -------
    ndarray, shape (row, column, column), float32
    """
    if fbp_method(device, method) == "fourier":
        if filter_name not in FILTERS:
            raise ValueError(f"unknown FBP filter {filter_name!r}; choose one of {', '.join(FILTERS)}")
        return fourier_fbp(projections, theta, center=center, filter_name=filter_name, chunk_slices=chunk_slices)
    return direct_fbp(projections, theta, center=center, filter_name=filter_name, device=device,
                      chunk_slices=chunk_slices)


def direct_fbp(projections, theta, *, center=None, filter_name="shepp-logan", device=None,
               chunk_slices=None, angle_chunk=None):
    """Filtered back-projection (step E), pixel-driven, in torch: needs nothing else, runs on CUDA.

    Parameters
    ----------
    projections : ndarray, shape (angle, row, column)
        Line integrals.
    theta : ndarray
        Angles in radians.
    center : float, optional
        Detector column of the rotation axis; default the detector centre.
    filter_name : {'ramp', 'shepp-logan', 'cosine', 'hamming', 'hann'}
    device, chunk_slices : optional
        As in :func:`mlem`.
    angle_chunk : int, optional
        Angles back-projected at once; default :func:`fbp_angle_chunk` (bounded memory).

    Returns
    -------
    ndarray, shape (row, column, column), float32
    """
    device = torch.device(device) if device is not None else default_device()
    n_angles, n_rows, n_cols = projections.shape
    center = (n_cols - 1) / 2.0 if center is None else float(center)
    angle_chunk = angle_chunk or fbp_angle_chunk(n_angles, n_cols)
    response = _filter_response(n_cols, filter_name, device)
    size = 2 * (response.shape[0] - 1)
    weights = torch.as_tensor(_angle_weights(theta), dtype=torch.float32, device=device)
    c_vol = (n_cols - 1) / 2.0
    coords = torch.arange(n_cols, dtype=torch.float32, device=device) - c_vol
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    xx, yy = xx.reshape(1, -1), yy.reshape(1, -1)
    cos = torch.as_tensor(np.cos(theta), dtype=torch.float32, device=device)
    # TomoPy's rotation sense, as the projector: t = x cos(theta) - y sin(theta) + center.
    sin = torch.as_tensor(-np.sin(theta), dtype=torch.float32, device=device)
    n_pix = n_cols * n_cols
    width = n_cols + 2  # one zero column each side: rays leaving the detector read 0
    volume = np.empty((n_rows, n_cols, n_cols), dtype=np.float32)
    for chunk in slice_chunks(n_rows, chunk_slices):
        p = as_tensor(projections[:, chunk], device)
        spectrum = torch.fft.rfft(p, n=size, dim=-1) * response
        filtered = torch.fft.irfft(spectrum, n=size, dim=-1)[..., :n_cols]
        filtered = torch.nn.functional.pad(filtered, (1, 1))  # (angle, z, width)
        acc = torch.zeros(n_pix, filtered.shape[1], device=device)
        for start in range(0, n_angles, angle_chunk):
            a = slice(start, min(start + angle_chunk, n_angles))
            k = a.stop - a.start
            # Pixel-driven linear interpolation, as a sparse (pixel x angle*bin) matrix with
            # exactly 2k entries per row, applied to all slices of the chunk at once.
            t = (xx * cos[a, None] + yy * sin[a, None] + center + 1).clamp(0, width - 1.001)
            lo = t.floor().long()
            frac = t - lo
            offsets = (torch.arange(k, device=device) * width)[:, None]
            cols = torch.stack([lo + offsets, lo + 1 + offsets], dim=-1)  # (k, pix, 2)
            vals = torch.stack([1 - frac, frac], dim=-1) * weights[a, None, None]
            cols = cols.permute(1, 0, 2).reshape(-1)
            vals = vals.permute(1, 0, 2).reshape(-1)
            crow = torch.arange(0, n_pix + 1, device=device, dtype=torch.int64) * (2 * k)
            interp = torch.sparse_csr_tensor(crow, cols, vals, size=(n_pix, k * width), check_invariants=False)
            acc += _fixed_width_matmul(interp, filtered[a].permute(0, 2, 1).reshape(k * width, -1))
        volume[chunk] = acc.T.reshape(-1, n_cols, n_cols).cpu().numpy()
    return volume
