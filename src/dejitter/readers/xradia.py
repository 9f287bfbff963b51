"""Zeiss/Xradia ``.txrm`` / ``.xrm`` reader, through the ``txrm2tiff`` package.

The OLE2 container and the Xradia stream layout are parsed by ``txrm2tiff`` (maintained by
Diamond Light Source for beamline B24); this module maps what it reads onto a
:class:`~dejitter.types.RawScan`.  Three ways a TXM scan is recorded are read:

- one ``.txrm`` tilt series (all projections in one file);
- a single ``.xrm`` with a reference image embedded (``ReferenceData/Image``) or with a separate
  reference file (given as ``flats``);
- a folder (or glob pattern) of ``.xrm`` files, one per angle, beside reference ``.xrm`` files, as
  several TXM beamlines record (APS 8-BM ``ref_*.xrm``, SSRL 6-2c ``*_ref_*.xrm``).  Files
  whose name holds the word ``ref``, ``reference``, ``flat``, ``flatfield``, ``bkg``, ``background`` or ``white``
  (between ``_``, ``-``, ``.`` or digits) are the references, files named ``dark`` the darks, the
  others projections; the ``flats`` / ``darks`` columns name them instead where the names do not
  say.  Projections are ordered by angle.

Mapping:

- ``data``: the raw images (``ImageData*/Image*``), flipped vertically so that rows appear as
  XRM Data Explorer shows them (``txrm2tiff``'s own default for exported images);
- ``theta_deg``: ``ImageInfo/Angles`` (degrees), one per image;
- ``pixel_size_um``: ``ImageInfo/PixelSize``, which Xradia records in micrometres at the sample;
- flat/dark: Zeiss files carry at most one reference (flat) image and no dark, because the
  detector subtracts its own offset and XM Controller references by ``image / reference``.  The
  references (embedded, or the images of separate reference files) become the flats, scaled by
  the ratio of exposure times (projections' median over the reference's), as XM Controller and
  ``txrm2tiff`` compensate exposure; the dark is zero unless dark files are given, so that the
  usual ``(data - dark) / (flat - dark)`` is exactly Zeiss's referencing.  Without any reference,
  flats and darks are ``None`` and :func:`dejitter.readers.read_scan` refuses the scan unless the
  scan table marks it ``normalised``.  Mosaics (stitched tiles) are refused.
- ``instrument_shifts``: ``Alignment/X-Shifts`` and ``Y-Shifts`` where the file records non-zero
  ones (see :func:`instrument_jitter` for the sign).

File versions: ``txrm2tiff`` opens versions 3 (XM Controller) and 5 (XRM Data Explorer).  Version 4
files (e.g. SSRL 6-2c) are opened with its version-5 class, whose stream layout they share for
images, angles and pixel size; their reference dimensions are checked against the images.

Verified on real files (``../shared/data/real/xradia_*``, ``tests/test_real_files.py``): a
version-3 ``.txrm`` (7 projections, angles, pixel size, alignment shifts), version-3 ``.xrm`` with
an embedded reference, version-3 and version-4 ``.xrm`` with separate reference files.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..types import RawScan, ScanError
from .common import XRADIA_SUFFIXES, expand_files, validate_theta
from .tiff import read_tiff_images

__all__ = ["XradiaImages", "read_xradia", "read_txrm", "instrument_jitter", "XRADIA_SUFFIXES"]

log = logging.getLogger(__name__)

_REFERENCE_NAME = re.compile(r"(?:^|[_.\-\d])(?:ref|refs|reference|flat|flats|flatfield|bkg|background|white)"
                             r"(?=[_.\-\d]|$)", re.IGNORECASE)
_DARK_NAME = re.compile(r"(?:^|[_.\-\d])(?:dark|darks)(?=[_.\-\d]|$)", re.IGNORECASE)


@dataclass
class XradiaImages:
    """What one Xradia file holds, as read (no tomography checks).

    ``images`` (n, row, column) float32 in XRM Data Explorer's orientation; ``angles_deg`` (n,);
    ``exposures_s`` (n,) or None; ``reference`` (row, column) float32 or None, with its
    ``reference_exposure_s``; ``x_shifts``, ``y_shifts`` (n,): Xradia's alignment shifts in
    pixels as stored (None where absent or all zero).
    """

    path: Path
    images: np.ndarray
    angles_deg: np.ndarray
    exposures_s: np.ndarray | None = None
    pixel_size_um: float | None = None
    reference: np.ndarray | None = None
    reference_exposure_s: float | None = None
    x_shifts: np.ndarray | None = None
    y_shifts: np.ndarray | None = None
    version: float | None = None


def instrument_jitter(x_shifts, y_shifts) -> np.ndarray:
    """Xradia's alignment shifts as jitter ``(dx, dy)`` in the project's convention, shape (n, 2).

    Xradia stores in ``Alignment/X-Shifts``/``Y-Shifts`` the shift that *aligns* each image, as
    XMReconstructor and ``txrm2tiff`` apply it to the image as stored:
    ``aligned[r, c] = raw[r - y_shift, c - x_shift]`` (``np.roll(raw, (y_shift, x_shift))``).
    The project's jitter is the displacement of the measured projection,
    ``P_measured(x, y) = P_ideal(x - dx, y - dy)``, corrected by shifting by ``(-dx, -dy)``; so
    ``dx = -x_shift``.  Rows are flipped on reading (Data Explorer's orientation), which reverses
    the vertical direction: ``dy = +y_shift``.
    """
    return np.stack([-np.asarray(x_shifts, dtype=np.float64), np.asarray(y_shifts, dtype=np.float64)], axis=1)


def _open(path: Path):
    """``txrm2tiff``'s object for the file; version 4 (not in its table) through its version-5 class."""
    import olefile
    import txrm2tiff
    from txrm2tiff import txrm_functions

    try:
        return txrm2tiff.open_txrm(path, load_images=True, load_reference=True, strict=True)
    except OSError as err:
        if "Invalid txrm file" not in str(err):
            raise
        try:
            with olefile.OleFileIO(str(path)) as ole:
                version = txrm_functions.get_file_version(ole)
        except Exception:  # noqa: BLE001 - not an OLE file at all: the original error says so
            raise err from None
        if version is None or int(version) != 4:
            raise OSError(f"{err} (file version {version}; txrm2tiff reads versions 3 and 5)") from err
        from txrm2tiff.txrm.v5 import Txrm5

        return Txrm5(path, True, True, True)


def read_xradia(path) -> XradiaImages:
    """Read one Xradia ``.txrm`` or ``.xrm`` file as it is: images, angles, exposures, reference, shifts."""
    path = Path(path)
    try:
        txrm = _open(path)
    except Exception as err:  # txrm2tiff and olefile raise IOError, KeyError, ValueError, ...
        raise ScanError(path, f"cannot read as Zeiss/Xradia TXRM (truncated or corrupt?): {err}") from err
    try:
        with txrm:
            return _contents(txrm, path)
    except ScanError:
        raise
    except Exception as err:  # noqa: BLE001
        raise ScanError(path, f"cannot read Zeiss/Xradia TXRM contents: {err}") from err


def _stream(txrm, key):
    """A numeric stream of known dtype, or None where the file has none (strict txrm2tiff raises)."""
    if not txrm.has_stream(key):
        return None
    value = txrm.read_stream(key)
    return None if value is None else np.asarray(value, dtype=np.float64)


def _contents(txrm, path: Path) -> XradiaImages:
    if txrm.is_mosaic:
        raise ScanError(path, "is a mosaic (stitched tiles), not a tomography scan")
    images = txrm.get_images()
    if images is None or np.size(images) == 0:
        raise ScanError(path, "holds no images")
    images = np.asarray(images)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3:
        raise ScanError(path, f"images have shape {images.shape}, expected (angle, row, column)")
    n = images.shape[0]
    data = np.ascontiguousarray(images[:, ::-1], dtype=np.float32)

    angles = txrm.image_info.get("Angles")
    if angles is None or len(angles) == 0:
        raise ScanError(path, "has no ImageInfo/Angles (projection angles)")
    # Per-image streams can be allocated for the planned number of images; keep those taken.
    angles = np.asarray(angles, dtype=np.float64)[:n]
    if len(angles) != n:
        raise ScanError(path, f"ImageInfo/Angles has {len(angles)} angles for {n} images")

    exposures = txrm.image_info.get("ExpTimes", txrm.image_info.get("ExpTime"))
    exposures = np.asarray(exposures, dtype=np.float64)[:n] if exposures is not None and len(exposures) else None
    if exposures is not None and len(exposures) != n:
        exposures = None

    reference = reference_exposure = None
    ref = txrm.get_reference() if txrm.has_reference else None
    if ref is not None:
        ref = np.asarray(ref, dtype=np.float32)
        if ref.shape != data.shape[1:]:
            raise ScanError(path, f"reference image has shape {ref.shape}, projections {data.shape[1:]}")
        reference = np.ascontiguousarray(ref[::-1])
        reference_exposure = _positive(txrm.reference_exposure)

    x_shifts, y_shifts = _stream(txrm, "Alignment/X-Shifts"), _stream(txrm, "Alignment/Y-Shifts")
    if x_shifts is None or y_shifts is None or len(x_shifts) < n or len(y_shifts) < n \
            or not (np.any(x_shifts[:n]) or np.any(y_shifts[:n])):
        x_shifts = y_shifts = None
    else:
        x_shifts, y_shifts = x_shifts[:n], y_shifts[:n]

    sizes = txrm.image_info.get("PixelSize")
    pixel_size = _positive(sizes[0]) if sizes is not None and len(sizes) else None
    return XradiaImages(path, data, angles, exposures, pixel_size, reference, reference_exposure, x_shifts,
                        y_shifts, version=txrm.version)


def _positive(value) -> float | None:
    try:
        value = float(np.ravel(value)[0]) if np.ndim(value) else float(value)
    except (TypeError, ValueError, IndexError):
        return None
    return value if np.isfinite(value) and value > 0 else None


def split_folder(files, flats=None, darks=None):
    """Projection, reference and dark files of a folder of ``.xrm`` (see the module docstring)."""
    named_flats = [p for p in expand_files(flats, XRADIA_SUFFIXES)] if flats else None
    named_darks = [p for p in expand_files(darks, XRADIA_SUFFIXES)] if darks else None
    named = {p.resolve() for p in (named_flats or []) + (named_darks or [])}
    projections, references, dark_files = [], [], []
    for p in files:
        if p.resolve() in named:
            continue
        if named_flats is None and _REFERENCE_NAME.search(p.stem):
            references.append(p)
        elif named_darks is None and _DARK_NAME.search(p.stem):
            dark_files.append(p)
        else:
            projections.append(p)
    return projections, (named_flats if named_flats is not None else references), \
        (named_darks if named_darks is not None else dark_files)


def read_txrm(path, *, flats=None, darks=None) -> RawScan:
    """Read a Zeiss/Xradia scan: a ``.txrm``/``.xrm`` file, or a folder or glob pattern of ``.xrm`` files.

    Parameters
    ----------
    path : str or Path
    flats, darks : str or Path, optional
        Reference (flat) and dark files (``.xrm``/``.txrm`` or TIFF; a file, a folder or a glob
        pattern), instead of the references the files embed or, for a folder, those found by name.

    Returns
    -------
    RawScan
        ``data`` (angle, row, column) float32, ``theta_deg`` in degrees (ascending for a folder),
        ``flats`` (references, exposure-compensated) and ``darks`` (zero unless dark files are
        given) or both None, ``pixel_size_um``, ``instrument_shifts`` (jitter in px, or None).
    """
    path = Path(path)
    files = expand_files(path, XRADIA_SUFFIXES)
    if not files:
        raise ScanError(path, "folder holds no Zeiss/Xradia .xrm/.txrm files")
    folder = len(files) > 1 or path.is_dir() or path != files[0]
    if folder:
        projection_files, reference_files, dark_files = split_folder(files, flats, darks)
        if not projection_files:
            raise ScanError(path, "holds no Zeiss/Xradia projection files (.xrm/.txrm), only references or darks")
        log.info("%s: %d projection files, %d reference files, %d dark files", path, len(projection_files),
                 len(reference_files), len(dark_files))
    else:
        projection_files = files
        reference_files = expand_files(flats) if flats else []
        dark_files = expand_files(darks) if darks else []
    parts = [read_xradia(p) for p in projection_files]
    shapes = {part.images.shape[1:] for part in parts}
    if len(shapes) > 1:
        odd = next(part.path.name for part in parts if part.images.shape[1:] != parts[0].images.shape[1:])
        raise ScanError(path, f"images of mismatched shapes {sorted(shapes)} (e.g. {odd})")
    data = np.concatenate([part.images for part in parts])
    theta = np.concatenate([part.angles_deg for part in parts])
    shifts = None
    if all(part.x_shifts is not None for part in parts):
        shifts = instrument_jitter(np.concatenate([part.x_shifts for part in parts]),
                                   np.concatenate([part.y_shifts for part in parts]))
    if folder:  # one file per angle: acquisition order by angle, whatever the file names
        order = np.argsort(theta, kind="stable")
        data, theta = data[order], theta[order]
        shifts = shifts[order] if shifts is not None else None
    theta = validate_theta(theta, data.shape[0], path)

    exposures = [part.exposures_s for part in parts]
    exposure = float(np.median(np.concatenate(exposures))) if all(e is not None for e in exposures) else None
    if reference_files:
        flat_stack = np.concatenate([_reference_images(p, exposure) for p in reference_files])
    else:
        flat_stack = _embedded_references(parts, exposure)
    dark_stack = np.concatenate([_reference_images(p, None) for p in dark_files]) if dark_files else None
    if flat_stack is not None and dark_stack is None:
        dark_stack = np.zeros((1, *flat_stack.shape[1:]), dtype=np.float32)
    pixel_size = next((part.pixel_size_um for part in parts if part.pixel_size_um is not None), None)
    return RawScan(data, theta, flat_stack, dark_stack, pixel_size_um=pixel_size, instrument_shifts=shifts)


def _scaled(image, exposure, reference_exposure):
    """A reference scaled to the projections' exposure time (counts grow linearly with exposure)."""
    if exposure is None or reference_exposure is None:
        return image
    return (image * np.float32(exposure / reference_exposure)).astype(np.float32)


def _reference_images(path: Path, exposure) -> np.ndarray:
    """The images of a separate reference (or dark) file, Xradia or TIFF; Xradia ones exposure-scaled."""
    if path.suffix.lower() not in XRADIA_SUFFIXES:
        return read_tiff_images(path)
    ref = read_xradia(path)
    if ref.exposures_s is None:
        return ref.images
    return np.stack([_scaled(image, exposure, t) for image, t in zip(ref.images, ref.exposures_s)])


def _embedded_references(parts, exposure) -> np.ndarray | None:
    """The distinct references the projection files embed (a folder's files often carry the same one)."""
    seen, references = set(), []
    for part in parts:
        if part.reference is None:
            continue
        digest = hash(part.reference.tobytes())
        if digest in seen:
            continue
        seen.add(digest)
        references.append(_scaled(part.reference, exposure, part.reference_exposure_s))
    return np.stack(references) if references else None
