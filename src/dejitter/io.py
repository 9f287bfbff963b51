"""Readers of raw scans, one per format, all returning a :class:`RawScan`.

Formats: Data Exchange HDF5 (``/exchange/data``, ``data_white``, ``data_dark``, ``theta`` in
degrees) and TIFF stacks (one multi-page file or a folder of single images, angles from a text
file or a ``start:stop:count`` range); NeXus NXtomo (:mod:`dejitter.io_nexus`) and Zeiss/Xradia
TXRM (:mod:`dejitter.io_xradia`) through their field libraries.  Every problem is raised as :class:`ScanError` naming the
file and what is wrong with it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import tifffile

from .errors import ScanError

__all__ = ["RawScan", "read_scan", "open_scan", "read_angles", "validate_theta", "write_dxchange", "FORMATS"]

FORMATS = ("auto", "dxchange", "tiff", "nxtomo", "txrm")
_HDF5_SUFFIXES = {".h5", ".hdf5", ".hdf", ".cxi", ".nxs"}
_TIFF_SUFFIXES = {".tif", ".tiff"}
_TXRM_SUFFIXES = {".txrm", ".xrm"}
_OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


@dataclass
class RawScan:
    """A scan as read from disk.

    Attributes
    ----------
    data : ndarray, shape (angle, row, column), float32
        Detector counts, or transmission when ``normalised``.
    theta_deg : ndarray
        Angles in degrees.
    flats, darks : ndarray or None, shape (n, row, column)
    normalised : bool
        The data are already flat/dark corrected transmission.
    pixel_size_um : float or None
        Detector pixel size when the file records it.
    """

    data: np.ndarray
    theta_deg: np.ndarray
    flats: np.ndarray | None = None
    darks: np.ndarray | None = None
    normalised: bool = False
    pixel_size_um: float | None = None


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


def _sniff_format(path: Path) -> str:
    if path.is_dir():
        return "tiff"
    with open(path, "rb") as f:
        magic = f.read(8)
    if magic.startswith(b"\x89HDF\r\n\x1a\n"):
        return _sniff_hdf5(path)
    if magic == _OLE2_MAGIC or path.suffix.lower() in _TXRM_SUFFIXES:
        return "txrm"
    if magic[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if path.suffix.lower() in _HDF5_SUFFIXES:
        raise ScanError(path, "is not a valid HDF5 file (bad signature: truncated or corrupt?)")
    raise ScanError(path, "is not a scan file this reads (HDF5, TIFF or Xradia TXRM): unrecognised file signature")


def _sniff_hdf5(path: Path) -> str:
    """``/exchange/data`` is Data Exchange; an NXentry with definition NXtomo is NXtomo.

    Anything else (including an HDF5 file h5py cannot open) goes to the Data Exchange reader,
    whose errors say what is wrong.
    """
    try:
        with h5py.File(path, "r") as f:
            if "exchange/data" in f:
                return "dxchange"
            for node in f.values():
                if not isinstance(node, h5py.Group):
                    continue
                # NXtomo is an NXentry's definition, or (Diamond) that of an NXsubentry inside it
                children = [c for c in node.values() if isinstance(c, h5py.Group)]
                if any(_is_nxtomo_entry(g) for g in [node, *children]):
                    return "nxtomo"
    except Exception:  # noqa: BLE001 - unreadable or corrupt file (h5py raises OSError, KeyError,
        pass  # RuntimeError, ...): let the reader report it
    return "dxchange"


def _is_nxtomo_entry(group) -> bool:
    def text(value):
        value = np.ravel(value)[0] if np.ndim(value) else value
        return value.decode() if isinstance(value, bytes) else str(value)

    if text(group.attrs.get("NX_class", "")) not in ("NXentry", "NXsubentry"):
        return False
    definition = group.attrs.get("definition")
    if definition is None and isinstance(group.get("definition"), h5py.Dataset):
        definition = group["definition"][()]
    return definition is not None and text(definition).lower() == "nxtomo"


class _CheckedDataset:
    """An h5py dataset whose read errors (a corrupt or truncated file) are raised as :class:`ScanError`.

    Chunked readers slice the dataset long after the file was opened; a damaged chunk must still
    be reported as a bad input naming the file, not as a bare h5py error.
    """

    def __init__(self, dataset, path):
        self._dataset, self._path = dataset, path

    def __getitem__(self, key):
        try:
            return self._dataset[key]
        except Exception as err:  # noqa: BLE001 - h5py raises OSError, KeyError, RuntimeError, ...
            raise ScanError(self._path, f"cannot read {self._dataset.name} (truncated or corrupt?): {err}") from err

    def __len__(self):
        return len(self._dataset)

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self[()], dtype=dtype)

    def __getattr__(self, name):
        return getattr(self._dataset, name)


def _dxchange_datasets(f, path: Path) -> RawScan:
    """The scan of an open Data Exchange file, with ``data``, ``flats``, ``darks`` as h5py datasets."""
    # A corrupt file can fail on any access, with OSError, KeyError or RuntimeError from h5py.
    try:
        if "exchange/data" not in f:
            raise ScanError(path, "has no /exchange/data dataset (not Data Exchange layout)")
        data = _CheckedDataset(f["exchange/data"], path)
        flats = _CheckedDataset(f["exchange/data_white"], path) if "exchange/data_white" in f else None
        darks = _CheckedDataset(f["exchange/data_dark"], path) if "exchange/data_dark" in f else None
        theta = f["exchange/theta"][()] if "exchange/theta" in f else None
        pixel_size = None
        for key in ("measurement/instrument/detector/pixel_size",
                    "measurement/instrument/detector/x_actual_pixel_size"):
            if key in f:
                pixel_size = float(np.ravel(f[key][()])[0])
                break
    except ScanError:
        raise
    except Exception as err:  # noqa: BLE001
        raise ScanError(path, f"cannot read datasets (truncated or corrupt?): {err}") from err
    if data.ndim != 3:
        raise ScanError(path, f"/exchange/data has {data.ndim} dimensions, expected (angle, row, column)")
    if theta is None:
        raise ScanError(path, "has no /exchange/theta (projection angles in degrees)")
    return RawScan(data, validate_theta(theta, data.shape[0], path), flats, darks, pixel_size_um=pixel_size)


def _open_hdf5(path: Path):
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise ScanError(path, f"cannot open as HDF5 (truncated or corrupt?): {err}") from err


def _read_dxchange(path: Path) -> RawScan:
    with _open_hdf5(path) as f:
        scan = _dxchange_datasets(f, path)
        scan.data = scan.data[()].astype(np.float32)  # read errors are ScanError (_CheckedDataset)
        scan.flats = scan.flats[()].astype(np.float32) if scan.flats is not None else None
        scan.darks = scan.darks[()].astype(np.float32) if scan.darks is not None else None
    return scan


def _read_tiff_images(path: Path) -> np.ndarray:
    try:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in _TIFF_SUFFIXES)
            if not files:
                raise ScanError(path, "folder holds no .tif/.tiff images")
            images = [tifffile.imread(p) for p in files]
            shapes = {im.shape for im in images}
            if len(shapes) > 1:
                first = images[0].shape
                odd = next(p.name for p, im in zip(files, images) if im.shape != first)
                raise ScanError(path, f"images of mismatched shapes {sorted(shapes)} (e.g. {odd})")
            stack = np.stack(images)
        else:
            stack = tifffile.imread(path)
    except ScanError:
        raise
    except Exception as err:  # tifffile raises several types for broken files
        raise ScanError(path, f"cannot read TIFF: {err}") from err
    if stack.ndim == 2:
        stack = stack[None]
    if stack.ndim != 3:
        raise ScanError(path, f"TIFF stack has shape {stack.shape}, expected (angle, row, column)")
    return stack.astype(np.float32)


def _read_tiff(path: Path, angles, flats, darks) -> RawScan:
    data = _read_tiff_images(path)
    if angles is None:
        raise ScanError(path, "TIFF scans need angles: give the 'angles' column (file or start:stop:count)")
    theta = validate_theta(read_angles(angles, path), data.shape[0], path)
    flat_stack = _read_tiff_images(Path(flats)) if flats else None
    dark_stack = _read_tiff_images(Path(darks)) if darks else None
    return RawScan(data, theta, flat_stack, dark_stack)


def read_scan(path, *, fmt="auto", angles=None, flats=None, darks=None, normalised=False) -> RawScan:
    """Read a raw scan.

    Parameters
    ----------
    path : str or Path
        A Data Exchange HDF5 file, a NeXus NXtomo file, a Zeiss/Xradia ``.txrm``, a multi-page
        TIFF, or a folder of TIFF images.
    fmt : {'auto', 'dxchange', 'tiff', 'nxtomo', 'txrm'}
        Format; ``'auto'`` looks at the file signature (and inside HDF5 files).
    angles : str, optional
        TIFF only: a text file of angles in degrees, or ``start:stop:count``.
    flats, darks : str, optional
        TIFF only: flat and dark images (file or folder).
    normalised : bool
        The data are already flat/dark corrected transmission; flats and darks may be absent.

    Returns
    -------
    RawScan
    """
    path = Path(path)
    return _checked(path, _read_any(path, _checked_path(path, fmt), angles, flats, darks), normalised)


def _checked_path(path, fmt) -> str:
    """Check that ``path`` can be read at all; returns the format to read it with."""
    if not path.exists():
        raise ScanError(path, "does not exist")
    if not path.is_dir() and not _readable(path):
        raise ScanError(path, "cannot be read (permission denied)")
    if fmt not in FORMATS:
        raise ScanError(path, f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return _sniff_format(path) if fmt == "auto" else fmt


def _read_any(path, kind, angles, flats, darks) -> RawScan:
    if kind == "nxtomo":
        from .io_nexus import read_nxtomo

        scan = read_nxtomo(path)
    elif kind == "txrm":
        from .io_xradia import read_txrm

        scan = read_txrm(path)
    else:
        scan = _read_dxchange(path) if kind == "dxchange" else _read_tiff(path, angles, flats, darks)
    return scan


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
    return scan


@contextlib.contextmanager
def open_scan(path, *, fmt="auto", angles=None, flats=None, darks=None, normalised=False):
    """Open a raw scan for reading in pieces; a context manager yielding a :class:`RawScan`.

    For Data Exchange files, ``data``, ``flats`` and ``darks`` are the h5py datasets themselves,
    so ``scan.data[:, r0:r1]`` reads only those detector rows from disk (of the file's dtype:
    cast to float32 after slicing) and a scan larger than memory can be processed in chunks.
    The other formats (TIFF, NXtomo, TXRM) are read whole into memory as by :func:`read_scan`,
    whose array slicing works the same way.  Checks and parameters are those of :func:`read_scan`;
    the datasets are valid only inside the ``with`` block.
    """
    path = Path(path)
    kind = _checked_path(path, fmt)
    if kind != "dxchange":
        yield _checked(path, _read_any(path, kind, angles, flats, darks), normalised)
        return
    with _open_hdf5(path) as f:
        yield _checked(path, _dxchange_datasets(f, path), normalised)


def _readable(path: Path) -> bool:
    try:
        with open(path, "rb"):
            return True
    except PermissionError:
        return False


def write_dxchange(path, data, theta_deg, flats=None, darks=None, pixel_size_um=None):
    """Write a scan in Data Exchange layout (used for demo scans and tests), atomically."""
    from .files import atomic_path

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("exchange/data", data=data, chunks=(1,) + tuple(np.shape(data)[1:]))
        f.create_dataset("exchange/theta", data=np.asarray(theta_deg, dtype=np.float64))
        if flats is not None:
            f.create_dataset("exchange/data_white", data=flats)
        if darks is not None:
            f.create_dataset("exchange/data_dark", data=darks)
        if pixel_size_um is not None:
            f.create_dataset("measurement/instrument/detector/pixel_size", data=float(pixel_size_um))
