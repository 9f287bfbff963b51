"""Readers of raw scans, one per format, all returning a :class:`RawScan`.

Formats: HDF5 files by named dataset paths (:mod:`dejitter.io_hdf5`: Data Exchange, NSLS-II FXI, Diamond
raw NeXus, or a layout the config defines), NeXus NXtomo (:mod:`dejitter.io_nexus`), Zeiss/Xradia
``.txrm``/``.xrm`` files or folders of them (:mod:`dejitter.io_xradia`), and TIFF stacks (one multi-page
file, a folder of single images or a glob pattern; angles from a text file or a ``start:stop:count``
range, optionally listing darks, flats and projections together, see :func:`frame_keys`).  Every
problem is raised as :class:`ScanError` naming the file and what is wrong with it.
"""

from __future__ import annotations

import contextlib
import glob
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import tifffile

from .errors import ScanError

__all__ = ["RawScan", "read_scan", "open_scan", "read_angles", "validate_theta", "frame_keys", "expand_files",
           "write_dxchange", "FORMATS"]

FORMATS = ("auto", "dxchange", "tiff", "nxtomo", "txrm", "hdf5")
_HDF5_SUFFIXES = {".h5", ".hdf5", ".hdf", ".cxi", ".nxs"}
_TIFF_SUFFIXES = {".tif", ".tiff"}
_TXRM_SUFFIXES = {".txrm", ".xrm"}
_OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"

#: Frame types of a ``frames`` spec, as NeXus image keys (0 projection, 1 flat, 2 dark); -1 skipped.
FRAME_TYPES = {"proj": 0, "projection": 0, "projections": 0, "flat": 1, "flats": 1, "white": 1,
               "dark": 2, "darks": 2, "skip": -1}
SKIPPED = -1


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


def _is_pattern(path) -> bool:
    return glob.has_magic(str(path)) and not Path(path).exists()


def _natural_key(path: Path):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def expand_files(spec, suffixes=None, path_for_errors=None) -> list[Path]:
    """The files a path names: itself, a folder's files (with ``suffixes``), or a glob pattern's matches.

    Sorted in natural order (``p_2`` before ``p_10``); an empty list when a folder holds none.
    """
    path = Path(spec)
    if _is_pattern(path):
        files = sorted((Path(p) for p in glob.glob(str(path)) if Path(p).is_file()), key=_natural_key)
        if not files:
            raise ScanError(path_for_errors or path, f"pattern {str(path)!r} matches no files")
        return files
    if path.is_dir():
        return sorted((p for p in path.iterdir() if p.is_file() and (suffixes is None or p.suffix.lower() in suffixes)),
                      key=_natural_key)
    if not path.exists():
        raise ScanError(path, "does not exist")
    return [path]


def _sniff_format(path: Path) -> str:
    if _is_pattern(path):
        path = expand_files(path)[0]
    if path.is_dir():
        suffixes = {p.suffix.lower() for p in path.iterdir() if p.is_file()}
        return "txrm" if suffixes & _TXRM_SUFFIXES and not suffixes & _TIFF_SUFFIXES else "tiff"
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
    """``/exchange/data`` is Data Exchange; an NXentry with definition NXtomo is NXtomo; a built-in
    layout's paths (:func:`dejitter.io_hdf5.detect_layout`) are ``hdf5``.

    Anything else (including an HDF5 file h5py cannot open) goes to the Data Exchange reader,
    whose errors say what is wrong.  Only groups are looked into, never external links.
    """
    from .io_hdf5 import detect_layout

    try:
        with h5py.File(path, "r") as f:
            if "exchange/data" in f:
                return "dxchange"
            for node in _groups(f):
                # NXtomo is an NXentry's definition, or (Diamond) that of an NXsubentry inside it
                if any(_is_nxtomo_entry(g) for g in [node, *_groups(node)]):
                    return "nxtomo"
            if detect_layout(f) is not None:
                return "hdf5"
    except Exception:  # noqa: BLE001 - unreadable or corrupt file (h5py raises OSError, KeyError,
        pass  # RuntimeError, ...): let the reader report it
    return "dxchange"


def _groups(group):
    """The member groups of ``group`` reached by hard links (external and soft links are not followed)."""
    for name in group:
        if isinstance(group.get(name, getlink=True), h5py.HardLink):
            node = group.get(name)
            if isinstance(node, h5py.Group):
                yield node


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


def _open_hdf5(path: Path):
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise ScanError(path, f"cannot open as HDF5 (truncated or corrupt?): {err}") from err


def _layout_scan(f, path: Path, layout, frames, explicit: bool) -> RawScan:
    """The scan of an open HDF5 file, datasets left on disk; a hint where the layout was only guessed."""
    from .io_hdf5 import layout_datasets

    try:
        return layout_datasets(f, path, layout, frames=frames)
    except ScanError as err:
        if explicit or not err.problem.startswith(f"has no {layout.data} dataset"):
            raise
        raise ScanError(path, f"{err.problem}; if the file has another layout, name it in the scan table's "
                              "'layout' column") from err


def _materialise(scan: RawScan) -> RawScan:
    """Read on-disk datasets into float32 arrays (read errors are ScanError: see io_hdf5.CheckedDataset)."""
    scan.data = np.asarray(scan.data[()], dtype=np.float32)
    scan.flats = np.asarray(scan.flats[()], dtype=np.float32) if scan.flats is not None else None
    scan.darks = np.asarray(scan.darks[()], dtype=np.float32) if scan.darks is not None else None
    return scan


def _read_tiff_images(path: Path, exclude=frozenset()) -> np.ndarray:
    try:
        if _is_pattern(path) or path.is_dir():
            files = [p for p in expand_files(path, _TIFF_SUFFIXES) if p.resolve() not in exclude]
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


def _read_tiff(path: Path, angles, flats, darks, frames=None) -> RawScan:
    # Flat and dark images named in the table are not projections, even where they sit in the same folder.
    exclude = {p.resolve() for spec in (flats, darks) if spec for p in expand_files(spec)}
    data = _read_tiff_images(path, frozenset(exclude))
    if angles is None:
        raise ScanError(path, "TIFF scans need angles: give the 'angles' column (file or start:stop:count)")
    theta = read_angles(angles, path)
    flat_stack = _read_tiff_images(Path(flats)) if flats else None
    dark_stack = _read_tiff_images(Path(darks)) if darks else None
    if frames:
        keys = frame_keys(frames, len(theta), path)
        n_projections = int(np.sum(keys == 0))
        if len(data) == len(keys):  # the images are every frame: split them too
            if flat_stack is None and (keys == 1).any():
                flat_stack = data[keys == 1]
            if dark_stack is None and (keys == 2).any():
                dark_stack = data[keys == 2]
            data = data[keys == 0]
        elif len(data) != n_projections:
            raise ScanError(path, f"{len(data)} images, but frames {frames!r} describe {len(keys)} frames of "
                                  f"which {n_projections} projections: give every frame, or the projections only")
        theta = theta[keys == 0]
    theta = validate_theta(theta, data.shape[0], path)
    return RawScan(data, theta, flat_stack, dark_stack)


def _resolve(path: Path, fmt, layout, frames):
    """Check that ``path`` can be read at all; returns (format, HDF5 layout or None, whether the layout was named)."""
    if not path.exists() and not _is_pattern(path):
        raise ScanError(path, "does not exist")
    if _is_pattern(path):
        expand_files(path)  # refuses a pattern matching nothing
    elif not path.is_dir() and not _readable(path):
        raise ScanError(path, "cannot be read (permission denied)")
    if fmt not in FORMATS:
        raise ScanError(path, f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    kind = _sniff_format(path) if fmt == "auto" else fmt
    if _given(layout):
        from .io_hdf5 import resolve_layout

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
    if _is_pattern(path) and kind not in ("tiff", "txrm"):
        raise ScanError(path, "glob patterns name TIFF or Xradia .xrm files; give an HDF5 file by its own path")
    if _given(frames) and kind in ("nxtomo", "txrm"):
        raise ScanError(path, f"the 'frames' column applies to TIFF scans and HDF5 layouts without image keys, "
                              f"not to {kind} files")
    if kind == "dxchange":
        from .io_hdf5 import LAYOUTS

        resolved = LAYOUTS["dxchange"]
    elif kind == "hdf5" and resolved is None:
        from .io_hdf5 import LAYOUTS, detect_layout

        with _open_hdf5(path) as f:
            resolved = detect_layout(f)
        if resolved is None:
            raise ScanError(path, "matches no built-in HDF5 layout "
                                  f"({', '.join(LAYOUTS)}): name its layout in the scan table's 'layout' column")
    return kind, resolved, explicit


def _given(value) -> bool:
    """A table cell or keyword that says something (not None, not blank, not an empty mapping)."""
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, Mapping):
        return bool(value)
    return value is not None


def _read_other(path, kind, angles, flats, darks, frames) -> RawScan:
    if kind == "nxtomo":
        from .io_nexus import read_nxtomo

        return read_nxtomo(path)
    if kind == "txrm":
        from .io_xradia import read_txrm

        return read_txrm(path, flats=flats, darks=darks)
    return _read_tiff(path, angles, flats, darks, frames)


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
        HDF5 only: a layout name (:data:`dejitter.io_hdf5.LAYOUTS`, or ``'nxtomo'``) or a mapping of
        dataset paths (a config ``hdf5_layouts`` entry).
    frames : str, optional
        TIFF, and HDF5 layouts without image keys: which frames (lines of the angle file) are
        darks, flats and projections (:func:`frame_keys`).

    Returns
    -------
    RawScan
    """
    path = Path(path)
    kind, layout, explicit = _resolve(path, fmt, layout, frames)
    if layout is not None:
        with _open_hdf5(path) as f:
            scan = _materialise(_layout_scan(f, path, layout, frames, explicit))
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
    with _open_hdf5(path) as f:
        yield _checked(path, _layout_scan(f, path, layout, frames, explicit), normalised)


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
