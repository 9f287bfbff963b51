"""Xradia/Zeiss ``.txrm`` / ``.xrm`` reader, through the ``txrm2tiff`` package.

The OLE2 container and the Xradia stream layout are parsed by ``txrm2tiff`` (maintained by
Diamond Light Source for beamline B24; reads file versions 3, from XM Controller, and 5, from
XRM Data Explorer); this module only maps its ``open_txrm`` object onto a
:class:`~dejitter.io.RawScan`:

- ``data``: the raw images (``ImageData*/Image*``), flipped vertically so that rows appear as
  XRM Data Explorer shows them (``txrm2tiff``'s own default for exported images);
- ``theta_deg``: ``ImageInfo/Angles`` (degrees), one per image;
- ``pixel_size_um``: ``ImageInfo/PixelSize``, which Xradia records in micrometres at the sample;
- flat/dark: a Zeiss file carries at most one reference (flat) image, ``ReferenceData/Image``,
  and no dark, because the detector subtracts its own offset and XM Controller references by
  ``image / reference``.  Where the file carries a reference, the reader returns it as the
  single flat **and a zero dark**, so that the usual ``(data - dark) / (flat - dark)`` correction
  is exactly Zeiss's referencing and a beamline user's ``.txrm`` works with no extra column in
  the scan table.  Where the file carries no reference (the reference was recorded elsewhere
  or the images were exported already referenced), flats and darks are ``None`` and
  :func:`dejitter.io.read_scan` refuses the scan unless the scan table marks it ``normalised``.
  Mosaics (stitched tiles) are refused: they are not tomography scans.

How it was verified: ``txrm2tiff`` has no writer, and no PyPI package writes OLE2 compound files
with Xradia's storages, so no genuine test file can be produced here, and no OLE parser was
written for the project.  ``tests/test_formats.py`` therefore tests this mapping with
``txrm2tiff.open_txrm`` replaced at its public boundary by an object exposing the same
attributes (``get_images``, ``get_reference``, ``image_info``, ``is_mosaic``), plus the error path
for a file that is not a valid OLE2 file, which goes through the real ``txrm2tiff``.  The
attribute names were checked against the source of ``txrm2tiff`` 2.2.1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ScanError
from .io import RawScan, validate_theta

__all__ = ["read_txrm"]


def read_txrm(path) -> RawScan:
    """Read a Zeiss/Xradia tomography file (``.txrm``, or a single-image ``.xrm``).

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    RawScan
        ``data`` (angle, row, column) float32, ``theta_deg`` in degrees, ``flats`` (the reference
        image, shape (1, row, column)) and a zero ``darks`` when the file carries a reference,
        otherwise both None; ``pixel_size_um`` when recorded.
    """
    import txrm2tiff

    path = Path(path)
    try:
        txrm = txrm2tiff.open_txrm(path, load_images=True, load_reference=True, strict=True)
    except Exception as err:  # txrm2tiff and olefile raise IOError, KeyError, ValueError, ...
        raise ScanError(path, f"cannot read as Zeiss/Xradia TXRM (truncated or corrupt?): {err}") from err
    try:
        with txrm:
            return _to_raw_scan(txrm, path)
    except ScanError:
        raise
    except Exception as err:
        raise ScanError(path, f"cannot read Zeiss/Xradia TXRM contents: {err}") from err


def _to_raw_scan(txrm, path: Path) -> RawScan:
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
    data = np.ascontiguousarray(images[:, ::-1], dtype=np.float32)

    angles = txrm.image_info.get("Angles")
    if angles is None or len(angles) == 0:
        raise ScanError(path, "has no ImageInfo/Angles (projection angles)")
    # ImageInfo/Angles can be allocated for the planned number of images; keep those taken.
    theta = np.asarray(angles, dtype=np.float64)[: data.shape[0]]
    theta = validate_theta(theta, data.shape[0], path)

    flats = darks = None
    reference = txrm.get_reference() if txrm.has_reference else None
    if reference is not None:
        reference = np.asarray(reference, dtype=np.float32)
        if reference.shape != data.shape[1:]:
            raise ScanError(path, f"reference image has shape {reference.shape}, "
                                  f"projections {data.shape[1:]}")
        flats = np.ascontiguousarray(reference[None, ::-1])
        darks = np.zeros_like(flats)

    pixel_size = None
    sizes = txrm.image_info.get("PixelSize")
    if sizes is not None and len(sizes) and np.isfinite(sizes[0]) and float(sizes[0]) > 0:
        pixel_size = float(sizes[0])
    return RawScan(data, theta, flats, darks, pixel_size_um=pixel_size)
