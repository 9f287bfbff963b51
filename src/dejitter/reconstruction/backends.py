"""Reconstruction backends behind one small interface: MLEM, reprojection, FBP.

``torch`` is the embedded default (:mod:`dejitter.reconstruction`, CPU or CUDA).  ``tomopy``,
the field's standard, is used where it is importable (conda environments); it is not on PyPI.
Both follow one rotation convention, TomoPy's (:mod:`dejitter.reconstruction.projectors`), so a volume is the
same object whichever backend made it.  ``auto`` picks, per operation, the backend that is faster
and agrees: torch for MLEM and reprojection (the same geometry as TomoPy's ``mlem`` and
``project``, r > 0.999, and TomoPy's MLEM measured 85x slower); for FBP the torch backend's own
Fourier method where it runs (CPU with finufft, :mod:`dejitter.reconstruction.fourier`: as fast
as gridrec and on the project's grey scale, where gridrec reads a unit block as about 1.38),
else TomoPy's gridrec where TomoPy is importable (an FFT method, O(n^2 log n) per slice, where the
pixel-driven torch FBP is O(n^2 angles): 1.5 s per 640-pixel slice of 181 angles on a 2-core CPU),
else the pixel-driven torch FBP.
Its ``name`` records the choice, e.g. ``auto(mlem=torch,reproject=torch,fbp=tomopy)``, and the torch
backend's says how it back-projected (``torch`` or ``torch(fbp=finufft)``); when one
backend does everything, ``auto`` is that backend.  All methods take and return NumPy arrays in
the project's axes, angles in radians.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from ..shifting import shift_columns
from .filtered_backprojection import fbp
from .filtered_backprojection import fbp_method as fbp_method_for
from .iterative import mlem, reproject

__all__ = ["Backend", "TorchBackend", "TomopyBackend", "AutoBackend", "get_backend", "BACKENDS",
           "tomopy_available"]

BACKENDS = ("auto", "torch", "tomopy")


class Backend:
    """Interface: ``mlem``, ``reproject``, ``fbp``; ``name`` and ``device`` for provenance."""

    name = "abstract"
    device = "cpu"

    def mlem(self, projections, theta, n_iter, *, center=None, x0=None, weights=None):
        """``weights``: per measured pixel, 0 where nothing was measured (see :func:`dejitter.reconstruction.mlem`)."""
        raise NotImplementedError

    def reproject(self, volume, theta, *, center=None):
        raise NotImplementedError

    def fbp(self, projections, theta, *, center=None, filter_name="shepp-logan"):
        raise NotImplementedError

    def op_name(self, op):
        """What runs operation ``op`` (``mlem``, ``reproject``, ``fbp``), for provenance."""
        return self.name


class TorchBackend(Backend):
    """The embedded implementation; ``device`` ``None`` picks CUDA when available.

    MLEM and reprojection run in torch on ``device``.  FBP runs by the method ``fbp_method``
    resolves to (:func:`~dejitter.reconstruction.fbp_method`): on the CPU, where finufft is
    importable, NUFFT gridding (``fourier``, O(n^2 log n) per slice), else pixel-driven torch
    (``direct``, also on CUDA).  ``name`` records it: ``torch`` when everything ran in torch,
    ``torch(fbp=finufft)`` otherwise.
    """

    def __init__(self, device=None, chunk_slices=None, fbp_method="auto"):
        from .projectors import default_device

        self.device = str(device or default_device())
        self.chunk_slices = chunk_slices
        self.fbp_method = fbp_method_for(self.device, fbp_method)
        self.name = "torch" if self.fbp_method == "direct" else "torch(fbp=finufft)"

    def op_name(self, op):
        return "finufft" if op == "fbp" and self.fbp_method == "fourier" else "torch"

    def mlem(self, projections, theta, n_iter, *, center=None, x0=None, weights=None):
        return mlem(projections, theta, n_iter, center=center, x0=x0, weights=weights,
                                   device=self.device, chunk_slices=self.chunk_slices)

    def reproject(self, volume, theta, *, center=None):
        return reproject(volume, theta, center=center, device=self.device,
                                        chunk_slices=self.chunk_slices)

    def fbp(self, projections, theta, *, center=None, filter_name="shepp-logan"):
        return fbp(projections, theta, center=center, filter_name=filter_name, device=self.device,
                   chunk_slices=self.chunk_slices, method=self.fbp_method)


class TomopyBackend(Backend):
    """TomoPy's MLEM, ``project`` and gridrec, adapted to the project's axes and conventions.

    Theta is passed unchanged: TomoPy's rotation sense is the project's.  The rotation axis is
    given to TomoPy in each function's own convention, measured on TomoPy 1.15.2's outputs
    (``../shared/data/tomopy_reference.npz``, ``tests/test_conventions.py``): ``project`` and
    ``mlem`` count it from the left edge of the first pixel (project centre + 0.5), ``gridrec``
    from the centre of the first pixel (project centre).  gridrec also puts the axis on a pixel of
    its output, (n/2 - 1, n/2) for an even width n, not at ((n - 1)/2, (n - 1)/2); the adapter
    moves the projections by the opposite amount first, so its volumes lie on the project's grid.
    gridrec's grey levels are its own: on the 48-pixel reference a unit block reads 1.38 (torch FBP:
    1.00) over a negative background; the geometry agrees, the scale is not corrected.

    TomoPy is not installable where this project is developed (it is not on PyPI): the argument
    mapping is tested with a stand-in module, the geometry against TomoPy's stored outputs, and
    the adapter against the torch backend wherever TomoPy is importable
    (``tests/test_reconstruction.py::test_torch_and_tomopy_backends_agree``, e.g. in the conda env).
    """

    name = "tomopy"

    _FILTERS = {"ramp": "ramlak", "shepp-logan": "shepp", "cosine": "cosine", "hamming": "hamming",
                "hann": "hann"}

    def __init__(self, device=None, chunk_slices=None):
        import tomopy

        self._tomopy = tomopy

    @staticmethod
    def _edge_center(center, n_cols):
        # ``project`` and ``mlem`` count from the left edge of the first pixel (their default
        # axis is n_cols / 2); this project counts pixel centres: half a pixel apart.
        return n_cols / 2.0 if center is None else float(center) + 0.5

    def mlem(self, projections, theta, n_iter, *, center=None, x0=None, weights=None):
        if weights is not None:
            raise ValueError("TomoPy's MLEM takes no per-pixel weights (truncation-aware references): "
                             "use backend 'torch' or 'auto'")
        p = np.clip(np.asarray(projections, dtype=np.float32), 0, None)
        kwargs = {"init_recon": np.ascontiguousarray(x0, dtype=np.float32)} if x0 is not None else {}
        return self._tomopy.recon(p, theta, center=self._edge_center(center, p.shape[2]), algorithm="mlem",
                                  num_iter=int(n_iter), **kwargs).astype(np.float32)

    def reproject(self, volume, theta, *, center=None):
        n_cols = volume.shape[2]
        out = self._tomopy.project(np.asarray(volume, dtype=np.float32), theta,
                                   center=self._edge_center(center, n_cols), pad=False)
        return np.asarray(out, dtype=np.float32)

    def fbp(self, projections, theta, *, center=None, filter_name="shepp-logan"):
        p = np.asarray(projections, dtype=np.float32)
        n_cols = p.shape[2]
        center = (n_cols - 1) / 2.0 if center is None else float(center)
        angles = np.asarray(theta, dtype=np.float64)
        dy, dx = gridrec_axis_offset(n_cols)
        # Moving the object by (-dy, -dx) moves its projection at theta by -dx cos + dy sin.
        p = shift_columns(p, -dx * np.cos(angles) + dy * np.sin(angles))
        return self._tomopy.recon(p, theta, center=center, algorithm="gridrec",
                                  filter_name=self._FILTERS[filter_name]).astype(np.float32)


def gridrec_axis_offset(n_cols):
    """Where TomoPy's gridrec puts the rotation axis in its ``n_cols x n_cols`` slices, as
    ``(dy, dx)`` from the project's ``((n_cols - 1) / 2, (n_cols - 1) / 2)``.

    From gridrec's source (the slice is cut from a ``pdim x pdim`` grid, ``pdim`` the power of two
    >= n_cols, at least 16, around its origin, and written with x reversed into rows): (-0.5, 0.5)
    for an even width, (-1, 1) for an odd one.  The even case is measured on TomoPy's output.
    """
    pdim = 16
    while pdim < n_cols:
        pdim *= 2
    col0 = pdim // 2 - (pdim - n_cols) // 2
    dx = col0 - (n_cols - 1) / 2.0
    return -dx, dx


class AutoBackend(Backend):
    """One backend per operation; ``name`` records which, e.g. ``auto(mlem=torch,reproject=torch,fbp=tomopy)``.

    ``device`` is the torch device of the torch backend among them (the network runs there).
    """

    def __init__(self, *, mlem, reproject, fbp):
        self._ops = {"mlem": mlem, "reproject": reproject, "fbp": fbp}
        self.name = "auto(" + ",".join(f"{op}={b.op_name(op)}" for op, b in self._ops.items()) + ")"
        torch_backends = [b for b in self._ops.values() if isinstance(b, TorchBackend)]
        self.device = torch_backends[0].device if torch_backends else "cpu"

    def mlem(self, projections, theta, n_iter, *, center=None, x0=None, weights=None):
        return self._ops["mlem"].mlem(projections, theta, n_iter, center=center, x0=x0, weights=weights)

    def reproject(self, volume, theta, *, center=None):
        return self._ops["reproject"].reproject(volume, theta, center=center)

    def fbp(self, projections, theta, *, center=None, filter_name="shepp-logan"):
        return self._ops["fbp"].fbp(projections, theta, center=center, filter_name=filter_name)


def tomopy_available() -> bool:
    """Whether TomoPy can be imported here."""
    return importlib.util.find_spec("tomopy") is not None


def get_backend(name="auto", *, device=None, chunk_slices=None) -> Backend:
    """The backend called ``name``.

    ``auto``: the torch backend, unless its FBP would be the slow pixel-driven one (a GPU, or no
    finufft) and TomoPy is importable: then an :class:`AutoBackend` with TomoPy's gridrec for FBP.
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "tomopy" and not tomopy_available():
        raise RuntimeError("backend 'tomopy' was asked for but tomopy is not importable "
                           "(install it with conda: see environment.yml)")
    if name == "tomopy":
        return TomopyBackend(device, chunk_slices)
    torch_backend = TorchBackend(device, chunk_slices)
    if name == "torch" or torch_backend.fbp_method == "fourier" or not tomopy_available():
        return torch_backend
    return AutoBackend(mlem=torch_backend, reproject=torch_backend, fbp=TomopyBackend(device, chunk_slices))
