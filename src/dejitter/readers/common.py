"""What every reader shares: angle checks, ``frames`` specs and file lists.

Every problem is raised as :class:`dejitter.types.ScanError` naming the file and what is wrong with it.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..types import ScanError

__all__ = ["validate_theta", "read_angles", "frame_keys", "expand_files", "is_pattern", "given", "FRAME_TYPES",
           "SKIPPED", "HDF5_SUFFIXES", "TIFF_SUFFIXES", "XRADIA_SUFFIXES"]

HDF5_SUFFIXES = {".h5", ".hdf5", ".hdf", ".cxi", ".nxs"}
TIFF_SUFFIXES = {".tif", ".tiff"}
XRADIA_SUFFIXES = {".txrm", ".xrm"}

#: Frame types of a ``frames`` spec, as NeXus image keys (0 projection, 1 flat, 2 dark); -1 skipped.
FRAME_TYPES = {"proj": 0, "projection": 0, "projections": 0, "flat": 1, "flats": 1, "white": 1,
               "dark": 2, "darks": 2, "skip": -1}
SKIPPED = -1


def validate_theta(theta_deg, n_angles, path):
    """Check angles against the data: one per projection, strictly monotonic, in degrees."""
    theta = np.asarray(theta_deg, dtype=np.float64).ravel()
    if n_angles < 2:
        raise ScanError(path, f"only {n_angles} projection: tomography needs at least two angles")
    if len(theta) != n_angles:
        raise ScanError(path, f"theta has {len(theta)} angles but the data has {n_angles} projections")
    if not np.all(np.isfinite(theta)):
        raise ScanError(path, "theta contains NaN or inf")
    steps = np.diff(theta)
    if not (np.all(steps > 0) or np.all(steps < 0)):
        raise ScanError(path, "theta is not strictly monotonic (repeated or unordered angles)")
    span = abs(theta[-1] - theta[0])
    if n_angles >= 10 and span <= 2 * np.pi + 1e-3 and np.max(np.abs(theta)) <= 2 * np.pi + 1e-3:
        raise ScanError(path, f"theta spans {span:.3f} and looks like radians; files must give degrees")
    return theta


def read_angles(spec, path_for_errors=None):
    """Angles in degrees from a text file (one per line) or a ``start:stop:count`` range (inclusive)."""
    spec = str(spec).strip()
    parts = spec.split(":")
    if len(parts) == 3 and not Path(spec).exists():
        try:
            start, stop, count = float(parts[0]), float(parts[1]), int(parts[2])
        except ValueError as err:
            raise ScanError(path_for_errors or spec, f"angle range {spec!r} is not start:stop:count") from err
        return np.linspace(start, stop, count)
    try:
        return np.loadtxt(spec, dtype=np.float64, ndmin=1)
    except (OSError, ValueError) as err:
        raise ScanError(spec, f"cannot read angles: {err}") from err


def frame_keys(spec, n_frames=None, path_for_errors=None) -> np.ndarray:
    """The type of every frame of a scan, in acquisition order, from a ``frames`` spec.

    A scan's angle file (or a file's frames) often covers darks, flats and projections together.
    The spec says which is which, in one of two forms (comma separated, types ``dark``, ``flat``,
    ``proj``, ``skip``; plurals and ``projection`` are accepted):

    - runs in acquisition order, ``type:count``: ``dark:5, flat:5, proj:91, flat:5, dark:5``;
      the counts must add up to the number of frames;
    - index ranges, ``type=start:stop`` (0-based, ``stop`` excluded, as Python slices; either may
      be left out): ``proj=10:101`` or ``dark=0:5, flat=5:10, proj=10:101``; frames named by no
      range are skipped.

    Parameters
    ----------
    spec : str
    n_frames : int, optional
        Number of frames described (e.g. lines of the angle file); required for index ranges.

    Returns
    -------
    ndarray of int
        One NeXus image key per frame: 0 projection, 1 flat, 2 dark, -1 skipped.
    """
    where = path_for_errors or "frames"
    items = [item.strip() for item in re.split(r"[,;]", str(spec)) if item.strip()]

    def kind(name):
        key = FRAME_TYPES.get(name.strip().lower())
        if key is None:
            raise ScanError(where, f"frames {spec!r}: unknown frame type {name.strip()!r} "
                                   f"(use {', '.join(['dark', 'flat', 'proj', 'skip'])})")
        return key

    if not items:
        raise ScanError(where, "frames spec is empty")
    if all("=" in item for item in items):
        if n_frames is None:
            raise ScanError(where, f"frames {spec!r}: index ranges need the number of frames")
        keys = np.full(int(n_frames), SKIPPED, dtype=int)
        for item in items:
            name, _, bounds = item.partition("=")
            key = kind(name)
            try:
                start, stop = (int(b) if b.strip() else None for b in bounds.split(":"))
            except ValueError as err:
                raise ScanError(where, f"frames {spec!r}: {item!r} is not type=start:stop") from err
            if stop is not None and stop > n_frames or start is not None and start >= n_frames:
                raise ScanError(where, f"frames {spec!r}: range {bounds} lies beyond the {n_frames} frames")
            chosen = np.arange(int(n_frames))[start:stop]
            if (keys[chosen] != SKIPPED).any():
                raise ScanError(where, f"frames {spec!r}: range {item!r} overlaps another")
            keys[chosen] = key
        return keys
    if all(":" in item and "=" not in item for item in items):
        runs = []
        for item in items:
            name, _, count = item.partition(":")
            try:
                count = int(count)
            except ValueError as err:
                raise ScanError(where, f"frames {spec!r}: {item!r} is not type:count") from err
            if count < 0:
                raise ScanError(where, f"frames {spec!r}: negative count in {item!r}")
            runs.append(np.full(count, kind(name), dtype=int))
        keys = np.concatenate(runs)
        if n_frames is not None and len(keys) != n_frames:
            raise ScanError(where, f"frames {spec!r} describe {len(keys)} frames but there are {n_frames}")
        return keys
    raise ScanError(where, f"frames {spec!r}: give runs (dark:5, flat:5, proj:91, ...) or index ranges "
                           "(proj=10:101, ...), not a mix")


def is_pattern(path) -> bool:
    return glob.has_magic(str(path)) and not Path(path).exists()


def natural_key(path: Path):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def expand_files(spec, suffixes=None, path_for_errors=None) -> list[Path]:
    """The files a path names: itself, a folder's files (with ``suffixes``), or a glob pattern's matches.

    Sorted in natural order (``p_2`` before ``p_10``); an empty list when a folder holds none.
    """
    path = Path(spec)
    if is_pattern(path):
        files = sorted((Path(p) for p in glob.glob(str(path)) if Path(p).is_file()), key=natural_key)
        if not files:
            raise ScanError(path_for_errors or path, f"pattern {str(path)!r} matches no files")
        return files
    if path.is_dir():
        return sorted((p for p in path.iterdir() if p.is_file() and (suffixes is None or p.suffix.lower() in suffixes)),
                      key=natural_key)
    if not path.exists():
        raise ScanError(path, "does not exist")
    return [path]


def given(value) -> bool:
    """A table cell or keyword that says something (not None, not blank, not an empty mapping)."""
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, Mapping):
        return bool(value)
    return value is not None
