"""Readers of raw scans, one per format, all returning a :class:`dejitter.types.RawScan`.

Formats: HDF5 files by named dataset paths (:mod:`dejitter.readers.hdf5`: Data Exchange, NSLS-II FXI, Diamond
raw NeXus, or a layout the config defines), NeXus NXtomo (:mod:`dejitter.readers.nexus`), Zeiss/Xradia
``.txrm``/``.xrm`` files or folders of them (:mod:`dejitter.readers.xradia`), and TIFF stacks (one multi-page
file, a folder of single images or a glob pattern; angles from a text file or a ``start:stop:count``
range, optionally listing darks, flats and projections together, see :func:`dejitter.readers.common.frame_keys`).  Every
problem is raised as :class:`ScanError` naming the file and what is wrong with it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from ..types import RawScan, ScanError
from .common import HDF5_SUFFIXES, TIFF_SUFFIXES, XRADIA_SUFFIXES, expand_files, given, is_pattern
from .hdf5 import (
    LAYOUTS,
    detect_layout,
    layout_scan,
    materialise,
    open_hdf5,
    resolve_layout,
    sniff_hdf5,
    write_dxchange,
)
from .tiff import read_tiff

__all__ = ["read_scan", "open_scan", "write_dxchange", "FORMATS"]

FORMATS = ("auto", "dxchange", "tiff", "nxtomo", "txrm", "hdf5")
_OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def _sniff_format(path: Path) -> str:
    if is_pattern(path):
        path = expand_files(path)[0]
    if path.is_dir():
        suffixes = {p.suffix.lower() for p in path.iterdir() if p.is_file()}
        return "txrm" if suffixes & XRADIA_SUFFIXES and not suffixes & TIFF_SUFFIXES else "tiff"
    with open(path, "rb") as f:
        magic = f.read(8)
    if magic.startswith(b"\x89HDF\r\n\x1a\n"):
        return sniff_hdf5(path)
    if magic == _OLE2_MAGIC or path.suffix.lower() in XRADIA_SUFFIXES:
        return "txrm"
    if magic[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if path.suffix.lower() in HDF5_SUFFIXES:
        raise ScanError(path, "is not a valid HDF5 file (bad signature: truncated or corrupt?)")
    raise ScanError(path, "is not a scan file this reads (HDF5, TIFF or Xradia TXRM): unrecognised file signature")


def _resolve(path: Path, fmt, layout, frames):
    """Check that ``path`` can be read at all; returns (format, HDF5 layout or None, whether the layout was named)."""
    if not path.exists() and not is_pattern(path):
        raise ScanError(path, "does not exist")
    if is_pattern(path):
        expand_files(path)  # refuses a pattern matching nothing
    elif not path.is_dir() and not _readable(path):
        raise ScanError(path, "cannot be read (permission denied)")
    if fmt not in FORMATS:
        raise ScanError(path, f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    kind = _sniff_format(path) if fmt == "auto" else fmt
    if given(layout):
        if kind in ("tiff", "txrm"):
            raise ScanError(path, f"the 'layout' column applies to HDF5 files, and this is a {kind} scan")
        resolved = resolve_layout(layout, path)
        if resolved == "nxtomo":
            kind, resolved = "nxtomo", None
        else:
            kind = "hdf5"
        explicit = True
    else:
        resolved, explicit = None, False
    if is_pattern(path) and kind not in ("tiff", "txrm"):
        raise ScanError(path, "glob patterns name TIFF or Xradia .xrm files; give an HDF5 file by its own path")
    if given(frames) and kind in ("nxtomo", "txrm"):
        raise ScanError(path, f"the 'frames' column applies to TIFF scans and HDF5 layouts without image keys, "
                              f"not to {kind} files")
    if kind == "dxchange":
        resolved = LAYOUTS["dxchange"]
    elif kind == "hdf5" and resolved is None:
        with open_hdf5(path) as f:
            resolved = detect_layout(f)
        if resolved is None:
            raise ScanError(path, "matches no built-in HDF5 layout "
                                  f"({', '.join(LAYOUTS)}): name its layout in the scan table's 'layout' column")
    return kind, resolved, explicit


def _read_other(path, kind, angles, flats, darks, frames) -> RawScan:
    if kind == "nxtomo":
        from .nexus import read_nxtomo  # imports nxtomo: only when needed

        return read_nxtomo(path)
    if kind == "txrm":
        from .xradia import read_txrm  # imports txrm2tiff: only when needed

        return read_txrm(path, flats=flats, darks=darks)
    return read_tiff(path, angles, flats, darks, frames)


def read_scan(path, *, fmt="auto", angles=None, flats=None, darks=None, normalised=False, layout=None,
              frames=None) -> RawScan:
    """Read a raw scan.

    Parameters
    ----------
    path : str or Path
        An HDF5 file (Data Exchange, NXtomo, or a named ``layout``), a Zeiss/Xradia ``.txrm`` or
        ``.xrm``, a folder of ``.xrm`` (one per angle, with reference files), a multi-page TIFF,
        a folder of TIFF images, or a glob pattern of TIFF or ``.xrm`` files.
    fmt : {'auto', 'dxchange', 'tiff', 'nxtomo', 'txrm', 'hdf5'}
        Format; ``'auto'`` looks at the file signature (and inside HDF5 files).
    angles : str, optional
        TIFF only: a text file of angles in degrees, or ``start:stop:count``.
    flats, darks : str, optional
        TIFF: flat and dark images (file, folder or glob pattern).  Xradia: reference (and dark)
        ``.xrm`` or TIFF files, instead of the reference the files carry or name.
    normalised : bool
        The data are already flat/dark corrected transmission; flats and darks may be absent.
    layout : str or mapping, optional
        HDF5 only: a layout name (:data:`dejitter.readers.hdf5.LAYOUTS`, or ``'nxtomo'``) or a mapping of
        dataset paths (a config ``hdf5_layouts`` entry).
    frames : str, optional
        TIFF, and HDF5 layouts without image keys: which frames (lines of the angle file) are
        darks, flats and projections (:func:`dejitter.readers.common.frame_keys`).

    Returns
    -------
    RawScan
    """
    path = Path(path)
    kind, layout, explicit = _resolve(path, fmt, layout, frames)
    if layout is not None:
        with open_hdf5(path) as f:
            scan = materialise(layout_scan(f, path, layout, frames, explicit))
    else:
        scan = _read_other(path, kind, angles, flats, darks, frames)
    return _checked(path, scan, normalised)


def _checked(path, scan: RawScan, normalised) -> RawScan:
    """Flats and darks present unless the scan is normalised, and of the projections' image shape."""
    scan.normalised = bool(normalised)
    if not scan.normalised and (scan.flats is None or scan.darks is None):
        missing = " and ".join(n for n, v in (("flats", scan.flats), ("darks", scan.darks)) if v is None)
        raise ScanError(path, f"has no {missing}; mark the scan 'normalised' in the scan table if the data "
                              "are already flat/dark corrected")
    for name, images in (("flats", scan.flats), ("darks", scan.darks)):
        if images is not None and images.shape[1:] != scan.data.shape[1:]:
            raise ScanError(path, f"{name} have image shape {images.shape[1:]}, projections {scan.data.shape[1:]}")
    if scan.instrument_shifts is not None and np.shape(scan.instrument_shifts) != (scan.data.shape[0], 2):
        raise ScanError(path, f"instrument shifts have shape {np.shape(scan.instrument_shifts)}, "
                              f"expected ({scan.data.shape[0]}, 2)")
    return scan


@contextlib.contextmanager
def open_scan(path, *, fmt="auto", angles=None, flats=None, darks=None, normalised=False, layout=None,
              frames=None):
    """Open a raw scan for reading in pieces; a context manager yielding a :class:`RawScan`.

    For HDF5 files read by layout (Data Exchange, FXI, Diamond raw, custom), ``data``, ``flats``
    and ``darks`` stay on disk, so ``scan.data[:, r0:r1]`` reads only those detector rows (of the
    file's dtype: cast to float32 after slicing) and a scan larger than memory can be processed in
    chunks; frames picked by image key are read in runs of consecutive frames.  The other formats
    (TIFF, NXtomo, Xradia) are read whole into memory as by :func:`read_scan`, whose array slicing
    works the same way.  Checks and parameters are those of :func:`read_scan`; the datasets are
    valid only inside the ``with`` block.
    """
    path = Path(path)
    kind, layout, explicit = _resolve(path, fmt, layout, frames)
    if layout is None:
        yield _checked(path, _read_other(path, kind, angles, flats, darks, frames), normalised)
        return
    with open_hdf5(path) as f:
        yield _checked(path, layout_scan(f, path, layout, frames, explicit), normalised)


def _readable(path: Path) -> bool:
    try:
        with open(path, "rb"):
            return True
    except PermissionError:
        return False


