"""Reconstruction: the projector pair, MLEM and reprojection (steps A and B), FBP (step E), backends.

:mod:`~dejitter.reconstruction.projectors` holds the one rotation convention (TomoPy's) and the
parallel-beam projector pair; :mod:`~dejitter.reconstruction.iterative` MLEM and reprojection;
:mod:`~dejitter.reconstruction.filtered_backprojection` back-projection; :mod:`~dejitter.reconstruction.backends`
puts them and TomoPy behind one interface.
"""

from .filtered_backprojection import FILTERS, fbp, fbp_angle_chunk
from .iterative import mlem, poisson_nll, reproject

__all__ = ["mlem", "reproject", "poisson_nll", "fbp", "fbp_angle_chunk", "FILTERS"]
