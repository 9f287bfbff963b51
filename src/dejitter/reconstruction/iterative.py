"""Steps A and B with the embedded torch backend: MLEM and reprojection.

All functions take and return NumPy arrays, projections ``(angle, row, column)`` and volumes
``(z, y, x)``, angles in radians.  Slices are independent in parallel-beam geometry, so every
function works on chunks of slices (``chunk_slices``) to bound memory on large scans.
"""

from __future__ import annotations

import numpy as np
import torch

from .projectors import default_device, get_projector

__all__ = ["mlem", "reproject", "poisson_nll", "slice_chunks", "as_tensor"]

_EPS = 1e-6


def slice_chunks(n_slices: int, chunk_slices: int | None):
    step = n_slices if not chunk_slices else max(1, int(chunk_slices))
    for start in range(0, n_slices, step):
        yield slice(start, min(start + step, n_slices))


def as_tensor(array, device) -> torch.Tensor:
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
    # The iterations run in the projector's own layout (see ParallelBeamProjector.forward_native).
    sensitivity = proj.volume_to_native(sensitivity)
    for chunk in slice_chunks(n_rows, chunk_slices):
        measured = as_tensor(projections[:, chunk], device).clamp_min_(0)
        if weights is not None:
            w = as_tensor(weights[:, chunk], device)
            sensitivity = proj.volume_to_native(proj.adjoint(w))  # per slice now: each slice saw other pixels
        if x0 is not None:
            x = as_tensor(x0[chunk], device)
            x = x.clamp_min(max(float(x.mean()) * 1e-3, _EPS))
        else:
            mean = float(measured.mean()) if weights is None else float((measured * w).sum() / w.sum().clamp_min(_EPS))
            level = mean / max(float(footprint), _EPS)
            x = torch.full((measured.shape[1], n_cols, n_cols), max(level, _EPS), device=device)
        x, measured = proj.volume_to_native(x), proj.projections_to_native(measured)
        w = proj.projections_to_native(w) if weights is not None else None
        unseen, floored = ~(sensitivity > _EPS), sensitivity.clamp_min(_EPS)  # pixels no ray measured stay 0
        for _ in range(n_iter):
            estimate = proj.forward_native(x)
            # Guard 0/0: where the model predicts nothing the ratio is neutral, never NaN.
            ratio = (measured / estimate.clamp_min(_EPS)).masked_fill_(~(estimate > _EPS), 1.0)
            update = proj.adjoint_native(ratio if w is None else ratio.mul_(w))
            x = (x * update / floored).masked_fill_(unseen, 0.0)
        volume[chunk] = proj.volume_from_native(x).cpu().numpy()
    return volume


def reproject(volume, theta, *, center=None, device=None, chunk_slices=None):
    """Project a volume ``(z, y, x)`` at angles ``theta`` (step B); returns ``(angle, z, x)``."""
    device = torch.device(device) if device is not None else default_device()
    n_rows, n_cols = volume.shape[0], volume.shape[2]
    proj = get_projector(n_cols, theta, center, device)
    out = np.empty((len(theta), n_rows, n_cols), dtype=np.float32)
    for chunk in slice_chunks(n_rows, chunk_slices):
        out[:, chunk] = proj.forward(as_tensor(volume[chunk], device)).cpu().numpy()
    return out


def poisson_nll(projections, volume, theta, *, center=None, device=None) -> float:
    """Poisson negative log-likelihood ``sum(Ax - y log Ax)`` that MLEM decreases."""
    device = torch.device(device) if device is not None else default_device()
    estimate = torch.from_numpy(reproject(volume, theta, center=center, device=device)).double()
    measured = torch.from_numpy(np.clip(projections, 0, None)).double()
    return float((estimate - measured * torch.log(estimate.clamp_min(1e-12))).sum())
