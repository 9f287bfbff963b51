"""Reconstruction with the embedded torch backend: MLEM (step A), reprojection (B), FBP (E).

All functions take and return NumPy arrays, projections ``(angle, row, column)`` and volumes
``(z, y, x)``, angles in radians.  Slices are independent in parallel-beam geometry, so every
function works on chunks of slices (``chunk_slices``) to bound memory on large scans.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .projectors import default_device, get_projector

__all__ = ["mlem", "reproject", "fbp", "fbp_angle_chunk", "poisson_nll", "FILTERS"]

FILTERS = ("ramp", "shepp-logan", "cosine", "hamming", "hann")
_EPS = 1e-6


def _slice_chunks(n_slices: int, chunk_slices: int | None):
    step = n_slices if not chunk_slices else max(1, int(chunk_slices))
    for start in range(0, n_slices, step):
        yield slice(start, min(start + step, n_slices))


def _as_tensor(array, device) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(array, dtype=np.float32), device=device)


def mlem(projections, theta, n_iter=20, *, center=None, x0=None, weights=None, device=None, chunk_slices=None):
    """Maximum-likelihood expectation-maximisation reconstruction (step A).

    Parameters
    ----------
    projections : ndarray, shape (angle, row, column)
        Line integrals; negative values are clipped to 0 (MLEM models counts).
    theta : ndarray
        Angles in radians.
    n_iter : int
        Number of MLEM iterations.
    center : float, optional
        Detector column of the rotation axis; default the detector centre.
    x0 : ndarray, shape (row, column, column), optional
        Starting volume (warm start).  Values are floored at a small positive number,
        because a multiplicative update can never leave zero.
    weights : ndarray, same shape as ``projections``, optional
        Weight of each measured pixel, 0 where nothing was measured (e.g. the part of a
        corrected projection that came from beyond the detector edge), so that MLEM fits only
        what was seen: ``x <- x A^T(w y / Ax) / A^T w``.  Default: 1 everywhere.
    device : str or torch.device, optional
    chunk_slices : int, optional
        Reconstruct this many slices at a time.

    Returns
    -------
    ndarray, shape (row, column, column), float32
    """
    device = torch.device(device) if device is not None else default_device()
    n_angles, n_rows, n_cols = projections.shape
    proj = get_projector(n_cols, theta, center, device)
    sensitivity = proj.adjoint(torch.ones(n_angles, 1, n_cols, device=device))
    footprint = proj.forward(torch.ones(1, n_cols, n_cols, device=device)).mean()
    volume = np.empty((n_rows, n_cols, n_cols), dtype=np.float32)
    for chunk in _slice_chunks(n_rows, chunk_slices):
        measured = _as_tensor(projections[:, chunk], device).clamp_min_(0)
        if weights is not None:
            w = _as_tensor(weights[:, chunk], device)
            sensitivity = proj.adjoint(w)  # per slice now: each slice saw other pixels
        if x0 is not None:
            x = _as_tensor(x0[chunk], device)
            x = x.clamp_min(max(float(x.mean()) * 1e-3, _EPS))
        else:
            mean = float(measured.mean()) if weights is None else float((measured * w).sum() / w.sum().clamp_min(_EPS))
            level = mean / max(float(footprint), _EPS)
            x = torch.full((measured.shape[1], n_cols, n_cols), max(level, _EPS), device=device)
        for _ in range(n_iter):
            estimate = proj.forward(x)
            # Guard 0/0: where the model predicts nothing the ratio is neutral, never NaN.
            ratio = torch.where(estimate > _EPS, measured / estimate.clamp_min(_EPS), torch.ones_like(estimate))
            update = proj.adjoint(ratio if weights is None else ratio * w)
            x = torch.where(sensitivity > _EPS, x * update / sensitivity.clamp_min(_EPS), torch.zeros_like(x))
        volume[chunk] = x.cpu().numpy()
    return volume


def reproject(volume, theta, *, center=None, device=None, chunk_slices=None):
    """Project a volume ``(z, y, x)`` at angles ``theta`` (step B); returns ``(angle, z, x)``."""
    device = torch.device(device) if device is not None else default_device()
    n_rows, n_cols = volume.shape[0], volume.shape[2]
    proj = get_projector(n_cols, theta, center, device)
    out = np.empty((len(theta), n_rows, n_cols), dtype=np.float32)
    for chunk in _slice_chunks(n_rows, chunk_slices):
        out[:, chunk] = proj.forward(_as_tensor(volume[chunk], device)).cpu().numpy()
    return out


def poisson_nll(projections, volume, theta, *, center=None, device=None) -> float:
    """Poisson negative log-likelihood ``sum(Ax - y log Ax)`` that MLEM decreases."""
    device = torch.device(device) if device is not None else default_device()
    estimate = torch.from_numpy(reproject(volume, theta, center=center, device=device)).double()
    measured = torch.from_numpy(np.clip(projections, 0, None)).double()
    return float((estimate - measured * torch.log(estimate.clamp_min(1e-12))).sum())


def _filter_response(n_cols: int, filter_name: str, device) -> torch.Tensor:
    """Frequency response of the discrete ramp filter (Kak & Slaney) times a window."""
    if filter_name not in FILTERS:
        raise ValueError(f"unknown FBP filter {filter_name!r}; choose one of {', '.join(FILTERS)}")
    size = max(64, 2 ** int(math.ceil(math.log2(2 * n_cols))))
    n = torch.cat([torch.arange(1, size // 2 + 1, 2), torch.arange(size // 2 - 1, 0, -2)]).double()
    kernel = torch.zeros(size, dtype=torch.float64)
    kernel[0] = 0.25
    kernel[1::2] = -1.0 / (math.pi * n) ** 2
    response = torch.fft.rfft(kernel).real  # the spatial-domain ramp avoids the DC offset of |f|
    freq = torch.fft.rfftfreq(size, dtype=torch.float64)  # 0 .. 0.5 cycles / pixel
    window = {
        "ramp": torch.ones_like(freq),
        "shepp-logan": torch.special.sinc(freq),
        "cosine": torch.cos(math.pi * freq),
        "hamming": 0.54 + 0.46 * torch.cos(2 * math.pi * freq),
        "hann": 0.5 + 0.5 * torch.cos(2 * math.pi * freq),
    }[filter_name]
    return (response * window).float().to(device)


def _angle_weights(theta: np.ndarray) -> np.ndarray:
    """Quadrature weights that sum to pi for a half turn (and a full turn, each ray seen twice)."""
    theta = np.asarray(theta, dtype=np.float64)
    if len(theta) < 2:
        return np.full(len(theta), math.pi)
    order = np.argsort(theta)
    gaps = np.diff(theta[order])
    spacing = np.empty(len(theta))
    spacing[1:-1] = (gaps[:-1] + gaps[1:]) / 2
    spacing[0], spacing[-1] = gaps[0], gaps[-1]
    weights = np.empty(len(theta))
    weights[order] = spacing / spacing.mean() * math.pi / len(theta)
    return weights


#: Columns (slices) per sparse matrix product in :func:`fbp`.
MATMUL_WIDTH = 16
#: Memory of the interpolation matrix of one chunk of angles in :func:`fbp` (2 entries of
#: 12 bytes per pixel and angle): the chunk shrinks as slices grow, so 2048^2 slices stay bounded.
FBP_MATRIX_BYTES = 256 * 2**20


def fbp_angle_chunk(n_angles, n_cols):
    """Angles back-projected at once by :func:`fbp`: at most 32 (the filtered projections of a chunk
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


def fbp(projections, theta, *, center=None, filter_name="shepp-logan", device=None,
        chunk_slices=None, angle_chunk=None):
    """Filtered back-projection (step E).

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
    for chunk in _slice_chunks(n_rows, chunk_slices):
        p = _as_tensor(projections[:, chunk], device)
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
