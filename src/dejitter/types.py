"""The types every stage shares: the raw scan a reader returns, and the errors the workflow reports.

Kept in one module that imports nothing else of the package, so readers, reconstruction,
registration and the pipeline can all use them without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["RawScan", "ScanError", "ModelError"]


class ScanError(ValueError):
    """An input scan that cannot be processed.

    The message names the file and the problem; the workflow prefixes the scan id.
    """

    def __init__(self, path, problem):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ModelError(RuntimeError):
    """A model file that is missing, tampered with, or does not match its card."""


@dataclass
class RawScan:
    """A scan as read from disk.

    Attributes
    ----------
    data : ndarray, shape (angle, row, column), float32
        Detector counts, or transmission when ``normalised``.  :func:`open_scan` may give an
        on-disk dataset instead, sliced the same way.
    theta_deg : ndarray
        Angles in degrees.
    flats, darks : ndarray or None, shape (n, row, column)
    normalised : bool
        The data are already flat/dark corrected transmission.
    pixel_size_um : float or None
        Detector pixel size when the file records it.
    instrument_shifts : ndarray or None, shape (angle, 2)
        The instrument's own alignment of each projection where the file records one (Xradia
        ``Alignment/X-Shifts``, ``Y-Shifts``), as jitter ``(dx, dy)`` in pixels in the project's
        convention (``P_measured(x, y) = P_ideal(x - dx, y - dy)``), i.e. in the same terms as
        ``shifts.csv``: a starting estimate, or a comparison, for the estimated jitter.
    """

    data: np.ndarray
    theta_deg: np.ndarray
    flats: np.ndarray | None = None
    darks: np.ndarray | None = None
    normalised: bool = False
    pixel_size_um: float | None = None
    instrument_shifts: np.ndarray | None = None
