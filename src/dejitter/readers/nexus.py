"""NeXus NXtomo reader (ESRF/BLISS, Diamond, SOLEIL, ... tomography files), through the ``nxtomo`` package.

The file is opened and interpreted by ``nxtomo`` (the ESRF tomotools implementation of the NXtomo
application definition); this module only maps its objects onto a :class:`~dejitter.types.RawScan`:

- frames are split by ``image_key_control`` (or ``image_key`` where the extension is absent):
  0 projection, 1 flat, 2 dark; invalid frames (3) and alignment frames (-1, the extra views some
  beamlines take at the end of a scan) are skipped, so they never enter the angle list;
- ``sample/rotation_angle`` is converted to degrees with its stored units;
- the pixel size is the sample (effective) pixel size when the file records one, otherwise the
  detector ``x_pixel_size``, in micrometres.

Verified by round trips through ``nxtomo``'s own writer (``NXtomo().save``) in
``tests/test_formats.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..types import RawScan, ScanError
from .common import validate_theta

__all__ = ["read_nxtomo", "nxtomo_entries"]

# NXdetector image_key values (nxtomo.nxobject.nxdetector.ImageKey)
_PROJECTION, _FLAT, _DARK = 0, 1, 2


def nxtomo_entries(path) -> tuple[str, ...]:
    """HDF5 paths of the NXtomo entries in ``path`` (sorted); empty when there are none."""
    from nxtomo import NXtomo

    try:
        return tuple(NXtomo.get_valid_entries(str(path)))
    except (OSError, ValueError) as err:
        raise ScanError(path, f"cannot open as HDF5 (truncated or corrupt?): {err}") from err


def read_nxtomo(path, *, entry: str | None = None) -> RawScan:
    """Read an NXtomo scan: projections, flats and darks separated by image key.

    Parameters
    ----------
    path : str or Path
        NeXus/HDF5 file holding an NXentry whose definition is NXtomo.
    entry : str, optional
        HDF5 path of the entry to read; needed only when the file holds several NXtomo entries.

    Returns
    -------
    RawScan
        ``data`` (projection, row, column) float32, ``theta_deg`` in degrees, ``flats`` and
        ``darks`` (None where the file has none), ``pixel_size_um``.
    """
    from nxtomo import NXtomo

    path = Path(path)
    if entry is None:
        entries = nxtomo_entries(path)
        if not entries:
            raise ScanError(path, "holds no NXtomo entry (NXentry with definition NXtomo)")
        if len(entries) > 1:
            raise ScanError(path, f"holds {len(entries)} NXtomo entries ({', '.join(entries)}); "
                                  "split the file or read one with read_nxtomo(path, entry=...)")
        entry = entries[0]
    try:
        nx = NXtomo().load(str(path), entry, detector_data_as="as_numpy_array")
    except Exception as err:  # h5py, silx and nxtomo raise several types for broken files
        raise ScanError(path, f"cannot read NXtomo entry {entry} (truncated or corrupt?): {err}") from err

    detector = nx.instrument.detector
    frames = detector.data
    if frames is None:
        raise ScanError(path, f"{entry} has no instrument/detector/data")
    frames = np.asarray(frames)
    if frames.ndim != 3:
        raise ScanError(path, f"detector data has shape {frames.shape}, expected (frame, row, column)")
    keys = detector.image_key_control if detector.image_key_control is not None else detector.image_key
    if keys is None:
        raise ScanError(path, f"{entry} has no image_key: cannot tell projections from flats and darks")
    keys = np.array([int(getattr(k, "value", k)) for k in np.ravel(keys)], dtype=int)
    if len(keys) != len(frames):
        raise ScanError(path, f"image_key has {len(keys)} values but the detector recorded {len(frames)} frames")

    projections = keys == _PROJECTION
    if not projections.any():
        raise ScanError(path, "has no projection frames (image_key 0)")
    angles = nx.sample.rotation_angle
    if angles is None:
        raise ScanError(path, f"{entry} has no sample/rotation_angle")
    theta = np.ravel(angles.to("degree").magnitude) if hasattr(angles, "to") else np.ravel(angles)
    if len(theta) != len(frames):
        raise ScanError(path, f"rotation_angle has {len(theta)} values but the detector recorded "
                              f"{len(frames)} frames")

    data = frames[projections].astype(np.float32)
    flats = frames[keys == _FLAT].astype(np.float32) if (keys == _FLAT).any() else None
    darks = frames[keys == _DARK].astype(np.float32) if (keys == _DARK).any() else None
    return RawScan(data, validate_theta(theta[projections], data.shape[0], path), flats, darks,
                   pixel_size_um=_pixel_size_um(nx))


def _pixel_size_um(nx) -> float | None:
    for owner in (nx.sample, nx.instrument.detector):
        size = getattr(owner, "x_pixel_size", None)
        if size is not None:
            value = float(np.ravel(size.to("um").magnitude)[0])
            if np.isfinite(value) and value > 0:
                return value
    return None
