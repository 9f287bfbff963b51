"""Reconstruction backends behind one small interface: MLEM, reprojection, FBP.

``torch`` is the embedded default (:mod:`dejitter.reconstruction`, CPU or CUDA).  ``tomopy``,
the field's standard, is used where it is importable (conda environments); it is not on PyPI.
``auto`` picks tomopy when present, else torch.  All methods take and return NumPy arrays in
the project's axes, angles in radians.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from . import reconstruction

__all__ = ["Backend", "TorchBackend", "TomopyBackend", "get_backend", "BACKENDS"]

BACKENDS = ("auto", "torch", "tomopy")


class Backend:
    """Interface: ``mlem``, ``reproject``, ``fbp``; ``name`` and ``device`` for provenance."""

    name = "abstract"
    device = "cpu"

    def mlem(self, projections, theta, n_iter, *, center=None, x0=None):
        raise NotImplementedError

    def reproject(self, volume, theta, *, center=None):
        raise NotImplementedError

    def fbp(self, projections, theta, *, center=None, filter_name="shepp-logan"):
        raise NotImplementedError


class TorchBackend(Backend):
    """The embedded torch implementation; ``device`` ``None`` picks CUDA when available."""

    name = "torch"

    def __init__(self, device=None, chunk_slices=None):
        from .projectors import default_device

        self.device = str(device or default_device())
        self.chunk_slices = chunk_slices

    def mlem(self, projections, theta, n_iter, *, center=None, x0=None):
        return reconstruction.mlem(projections, theta, n_iter, center=center, x0=x0, device=self.device,
                                   chunk_slices=self.chunk_slices)

    def reproject(self, volume, theta, *, center=None):
        return reconstruction.reproject(volume, theta, center=center, device=self.device,
                                        chunk_slices=self.chunk_slices)

    def fbp(self, projections, theta, *, center=None, filter_name="shepp-logan"):
        return reconstruction.fbp(projections, theta, center=center, filter_name=filter_name,
                                  device=self.device, chunk_slices=self.chunk_slices)


class TomopyBackend(Backend):
    """TomoPy's MLEM, ``project`` and gridrec, adapted to the project's axes and conventions.

    TomoPy is not installable where this project is developed (it is not on PyPI), so this
    adapter is checked against the torch backend only where TomoPy is importable
    (``tests/test_reconstruction.py::test_torch_and_tomopy_backends_agree``, e.g. in the conda env).
    """

    name = "tomopy"

    _FILTERS = {"ramp": "ramlak", "shepp-logan": "shepp", "cosine": "cosine", "hamming": "hamming",
                "hann": "hann"}

    def __init__(self, device=None, chunk_slices=None):
        import tomopy

        self._tomopy = tomopy

    @staticmethod
    def _center(center, n_cols):
        # TomoPy counts from the left edge of the first pixel (its default axis is n_cols / 2);
        # this project counts pixel centres (default (n_cols - 1) / 2): half a pixel apart.
        return n_cols / 2.0 if center is None else float(center) + 0.5

    def mlem(self, projections, theta, n_iter, *, center=None, x0=None):
        p = np.clip(np.asarray(projections, dtype=np.float32), 0, None)
        kwargs = {"init_recon": np.ascontiguousarray(x0, dtype=np.float32)} if x0 is not None else {}
        return self._tomopy.recon(p, theta, center=self._center(center, p.shape[2]), algorithm="mlem",
                                  num_iter=int(n_iter), **kwargs).astype(np.float32)

    def reproject(self, volume, theta, *, center=None):
        n_cols = volume.shape[2]
        out = self._tomopy.project(np.asarray(volume, dtype=np.float32), theta,
                                   center=self._center(center, n_cols), pad=False)
        return np.asarray(out, dtype=np.float32)

    def fbp(self, projections, theta, *, center=None, filter_name="shepp-logan"):
        p = np.asarray(projections, dtype=np.float32)
        return self._tomopy.recon(p, theta, center=self._center(center, p.shape[2]), algorithm="gridrec",
                                  filter_name=self._FILTERS[filter_name]).astype(np.float32)


def tomopy_available() -> bool:
    """Whether TomoPy can be imported here."""
    return importlib.util.find_spec("tomopy") is not None


def get_backend(name="auto", *, device=None, chunk_slices=None) -> Backend:
    """The backend called ``name`` (``auto``: tomopy if importable, else torch)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "tomopy" or (name == "auto" and tomopy_available()):
        if not tomopy_available():
            raise RuntimeError("backend 'tomopy' was asked for but tomopy is not importable "
                               "(install it with conda: see environment.yml)")
        return TomopyBackend(device, chunk_slices)
    return TorchBackend(device, chunk_slices)
