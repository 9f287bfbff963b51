"""Reconstruction: the projector pair, MLEM and reprojection (steps A and B), FBP (step E), backends.

:mod:`~dejitter.reconstruction.projectors` holds the one rotation convention (TomoPy's) and the
parallel-beam projector pair; :mod:`~dejitter.reconstruction.iterative` MLEM and reprojection;
:mod:`~dejitter.reconstruction.filtered_backprojection` back-projection (its one entry point, ``fbp``, picks
:mod:`~dejitter.reconstruction.fourier`'s NUFFT gridding on the CPU, else pixel-driven torch; both filter with
:mod:`~dejitter.reconstruction.filters`); :mod:`~dejitter.reconstruction.backends`
puts them and TomoPy behind one interface.
"""

from .filtered_backprojection import FBP_METHODS, FILTERS, direct_fbp, fbp, fbp_angle_chunk, fbp_method
from .fourier import finufft_available, fourier_fbp
from .iterative import mlem, poisson_nll, reproject

__all__ = ["mlem", "reproject", "poisson_nll", "fbp", "direct_fbp", "fourier_fbp", "fbp_method", "finufft_available",
           "fbp_angle_chunk", "FBP_METHODS", "FILTERS"]
