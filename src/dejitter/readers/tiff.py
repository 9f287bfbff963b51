"""TIFF scans: one multi-page file, a folder of single images or a glob pattern.

Angles come from a text file or a ``start:stop:count`` range, optionally listing darks, flats and
projections together (:func:`dejitter.readers.common.frame_keys`); flats and darks from their own files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from ..types import RawScan, ScanError
from .common import TIFF_SUFFIXES, expand_files, frame_keys, is_pattern, read_angles, validate_theta

__all__ = ["read_tiff", "read_tiff_images"]


def read_tiff_images(path: Path, exclude=frozenset()) -> np.ndarray:
    try:
        if is_pattern(path) or path.is_dir():
            files = [p for p in expand_files(path, TIFF_SUFFIXES) if p.resolve() not in exclude]
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


def read_tiff(path: Path, angles, flats, darks, frames=None) -> RawScan:
    # Flat and dark images named in the table are not projections, even where they sit in the same folder.
    exclude = {p.resolve() for spec in (flats, darks) if spec for p in expand_files(spec)}
    data = read_tiff_images(path, frozenset(exclude))
    if angles is None:
        raise ScanError(path, "TIFF scans need angles: give the 'angles' column (file or start:stop:count)")
    theta = read_angles(angles, path)
    flat_stack = read_tiff_images(Path(flats)) if flats else None
    dark_stack = read_tiff_images(Path(darks)) if darks else None
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
