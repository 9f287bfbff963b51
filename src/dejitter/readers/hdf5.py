"""HDF5 scans read by named dataset paths: a small table of layouts, one per way facilities write them.

A layout names where a file keeps its frames, angles and (optionally) flats, darks, image keys and
pixel size.  The scan table's ``layout`` column picks one per scan: a built-in name below, or a
name the config defines under ``hdf5_layouts`` (the workflow passes that mapping here).

=============== ============================================================================
``dxchange``    Data Exchange: ``/exchange/data``, ``data_white``, ``data_dark``, ``theta``
``fxi``         NSLS-II FXI (18-ID): ``/img_tomo``, ``/img_bkg``, ``/img_dark``, ``/angle``
``diamond_k11`` Diamond K11 (DIAD) raw NeXus as GDA writes it: ``/entry/imaging/data`` holding
                every frame, ``/entry/instrument/imaging/image_key``,
                ``/entry/imaging/gts_theta_value``
``nxtomo``      the NXtomo application definition, read by :mod:`dejitter.readers.nexus`
=============== ============================================================================

Frames are told apart by an ``image_key`` dataset (NeXus values: 0 projection, 1 flat, 2 dark;
other values, such as invalid or alignment frames, are skipped) or, where the file has none, by a
``frames`` spec (:func:`dejitter.readers.common.frame_keys`); otherwise flats and darks are datasets of their
own.  Datasets stay on disk: ``scan.data[:, r0:r1]`` reads those rows of the selected frames
only, in runs of consecutive frames, so a scan larger than memory is processed in chunks.

Raw facility files often link to other files (detector data, encoder readings) that were not
copied with them.  Only the paths a layout names are opened; a path that is, or passes through, an
external link to a missing file is refused with a message naming the path and the missing file
(h5py itself raises a bare ``KeyError``), and other external links in the file are never followed
(:mod:`dejitter.readers.hdf5_access`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ..files import atomic_path
from ..types import RawScan, ScanError
from .common import frame_keys, validate_theta
from .hdf5_access import CheckedDataset, FrameSelection, has_link, open_dataset

__all__ = ["Hdf5Layout", "LAYOUTS", "resolve_layout", "detect_layout", "layout_datasets", "FrameSelection",
           "open_hdf5", "layout_scan", "materialise", "sniff_hdf5", "write_dxchange"]

# NXdetector image_key values
PROJECTION, FLAT, DARK = 0, 1, 2


@dataclass(frozen=True)
class Hdf5Layout:
    """Where an HDF5 scan keeps its datasets (absolute paths inside the file).

    Attributes
    ----------
    name : str
    data : str
        Frames, (frame, row, column).  With ``image_key`` (or a ``frames`` spec) they include
        flats and darks; otherwise they are the projections.
    angles : str
        Rotation angles, one per frame of ``data`` (or one per projection).
    flats, darks : str, optional
        Datasets of their own; with ``image_key`` they default to the keyed frames of ``data``.
    image_key : str, optional
        Per-frame type of ``data`` (0 projection, 1 flat, 2 dark; other values skipped).
    pixel_size : tuple of str
        Candidate paths of the pixel size (micrometres unless the dataset's ``units`` says otherwise).
    angles_unit : {'deg', 'rad'} or None
        None: the angle dataset's ``units`` attribute where present, else degrees.
    title : str
        How messages name the layout.
    """

    name: str
    data: str
    angles: str
    flats: str | None = None
    darks: str | None = None
    image_key: str | None = None
    pixel_size: tuple[str, ...] = field(default_factory=tuple)
    angles_unit: str | None = None
    title: str = ""

    @property
    def label(self) -> str:
        return self.title or f"the {self.name!r}"


#: Built-in layouts.  ``nxtomo`` is not listed: it is read by the NXtomo reader.
LAYOUTS: dict[str, Hdf5Layout] = {
    "dxchange": Hdf5Layout(
        "dxchange", data="/exchange/data", angles="/exchange/theta", flats="/exchange/data_white",
        darks="/exchange/data_dark", title="Data Exchange",
        pixel_size=("/measurement/instrument/detector/pixel_size",
                    "/measurement/instrument/detector/x_actual_pixel_size")),
    "fxi": Hdf5Layout("fxi", data="/img_tomo", angles="/angle", flats="/img_bkg", darks="/img_dark",
                      title="NSLS-II FXI"),
    "diamond_k11": Hdf5Layout("diamond_k11", data="/entry/imaging/data", angles="/entry/imaging/gts_theta_value",
                              image_key="/entry/instrument/imaging/image_key", title="Diamond K11 raw NeXus"),
}
_LAYOUT_KEYS = {"data", "angles", "flats", "darks", "image_key", "pixel_size", "angles_unit", "title"}
_UNIT_TO_UM = {"m": 1e6, "cm": 1e4, "mm": 1e3, "um": 1.0, "µm": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0,
               "micrometre": 1.0, "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3}


def resolve_layout(layout, path_for_errors=None) -> Hdf5Layout | str:
    """A :class:`Hdf5Layout` from a built-in name, a mapping of paths (a config entry), or a layout.

    Returns the string ``'nxtomo'`` for the NXtomo application definition.
    """
    where = path_for_errors or "layout"
    if isinstance(layout, Hdf5Layout):
        return layout
    if isinstance(layout, Mapping):
        unknown = set(layout) - _LAYOUT_KEYS - {"name"}
        if unknown:
            raise ScanError(where, f"layout has unknown keys {sorted(unknown)}; known: {sorted(_LAYOUT_KEYS)}")
        missing = [k for k in ("data", "angles") if not layout.get(k)]
        if missing:
            raise ScanError(where, f"layout needs the dataset paths {' and '.join(missing)}")
        pixel = layout.get("pixel_size") or ()
        unit = layout.get("angles_unit")
        if unit not in (None, "deg", "rad"):
            raise ScanError(where, f"layout angles_unit {unit!r} is not 'deg' or 'rad'")
        return Hdf5Layout(str(layout.get("name", "custom")), data=_absolute(layout["data"]),
                          angles=_absolute(layout["angles"]),
                          flats=_absolute(layout["flats"]) if layout.get("flats") else None,
                          darks=_absolute(layout["darks"]) if layout.get("darks") else None,
                          image_key=_absolute(layout["image_key"]) if layout.get("image_key") else None,
                          pixel_size=tuple(_absolute(p) for p in ([pixel] if isinstance(pixel, str) else pixel)),
                          angles_unit=unit, title=str(layout.get("title", "")))
    name = str(layout).strip()
    if name.lower() == "nxtomo":
        return "nxtomo"
    if name in LAYOUTS:
        return LAYOUTS[name]
    raise ScanError(where, f"unknown HDF5 layout {name!r}: built-in layouts are {', '.join([*LAYOUTS, 'nxtomo'])}; "
                           "others can be defined under 'hdf5_layouts' in the config")


def _absolute(hdf5_path) -> str:
    hdf5_path = str(hdf5_path).strip()
    return hdf5_path if hdf5_path.startswith("/") else "/" + hdf5_path


def detect_layout(f) -> Hdf5Layout | None:
    """The first built-in layout (other than Data Exchange) whose data and angle paths the open file has.

    Only links are looked at (nothing is opened), so dangling external links cost nothing here.
    """
    for name, layout in LAYOUTS.items():
        if name != "dxchange" and all(has_link(f, p) for p in (layout.data, layout.angles)):
            return layout
    return None


def layout_datasets(f, path: Path, layout: Hdf5Layout, *, frames=None) -> RawScan:
    """The scan of an open HDF5 file in ``layout``, with ``data``, ``flats``, ``darks`` left on disk."""
    try:
        return _layout_datasets(f, path, layout, frames)
    except ScanError:
        raise
    except Exception as err:  # noqa: BLE001 - a corrupt file fails on any access, with any h5py error
        raise ScanError(path, f"cannot read datasets (truncated or corrupt?): {err}") from err


def _layout_datasets(f, path, layout, frames):
    data = open_dataset(f, layout.data, path, required=True,
                         what=f"has no {layout.data} dataset (not {layout.label} layout)")
    if data.ndim != 3:
        raise ScanError(path, f"{layout.data} has {data.ndim} dimensions, expected (angle, row, column)")
    n_frames = data.shape[0]
    keys = None
    if layout.image_key:
        key_ds = open_dataset(f, layout.image_key, path, required=True,
                               what=f"has no {layout.image_key} (image keys of the {layout.label} layout)")
        keys = np.ravel(key_ds[()]).astype(int)
        if frames:
            raise ScanError(path, f"has image keys at {layout.image_key}: leave the 'frames' column empty")
    elif frames:
        keys = frame_keys(frames, n_frames, path)
    if keys is not None and len(keys) != n_frames:
        raise ScanError(path, f"{layout.image_key or 'frames'} gives {len(keys)} frame types but {layout.data} "
                              f"holds {n_frames} frames")

    theta_ds = open_dataset(f, layout.angles, path, required=True,
                             what=f"has no {layout.angles} (projection angles in degrees)")
    theta = _in_degrees(np.ravel(theta_ds[()]).astype(np.float64), theta_ds, layout)

    checked = CheckedDataset(data, path)
    flats = _frames_dataset(f, layout.flats, path)
    darks = _frames_dataset(f, layout.darks, path)
    if keys is None:
        projections = checked
    else:
        projections = FrameSelection(checked, np.flatnonzero(keys == PROJECTION))
        if not len(projections):
            raise ScanError(path, f"has no projection frames (image key {PROJECTION})")
        if flats is None and (keys == FLAT).any():
            flats = FrameSelection(checked, np.flatnonzero(keys == FLAT))
        if darks is None and (keys == DARK).any():
            darks = FrameSelection(checked, np.flatnonzero(keys == DARK))
        if len(theta) == n_frames:
            theta = theta[keys == PROJECTION]
        elif len(theta) != len(projections):
            raise ScanError(path, f"{layout.angles} has {len(theta)} angles, but {layout.data} holds {n_frames} "
                                  f"frames of which {len(projections)} projections")
    pixel_size = _pixel_size_um(f, layout.pixel_size)
    return RawScan(projections, validate_theta(theta, projections.shape[0], path), flats, darks,
                   pixel_size_um=pixel_size)


def _frames_dataset(f, hdf5_path, path):
    if not hdf5_path:
        return None
    ds = open_dataset(f, hdf5_path, path, required=False, what="")
    if ds is None:
        return None
    if ds.ndim == 2:  # a single image
        return CheckedDataset(ds, path)[()][None]
    if ds.ndim != 3:
        raise ScanError(path, f"{hdf5_path} has {ds.ndim} dimensions, expected (image, row, column)")
    return CheckedDataset(ds, path)


def _text(value) -> str:
    value = np.ravel(value)[0] if np.ndim(value) else value
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _in_degrees(theta, dataset, layout):
    unit = layout.angles_unit
    if unit is None and "units" in dataset.attrs:
        text = _text(dataset.attrs["units"]).strip().lower()
        unit = "rad" if text.startswith("rad") else "deg" if text.startswith("deg") else None
    return np.rad2deg(theta) if unit == "rad" else theta


def _pixel_size_um(f, candidates):
    for hdf5_path in candidates:
        if not has_link(f, hdf5_path):
            continue
        try:
            ds = f[hdf5_path]
            value = float(np.ravel(ds[()])[0])
        except Exception:  # noqa: BLE001 - an optional, unreadable entry: no pixel size
            continue
        unit = _text(ds.attrs["units"]) if "units" in ds.attrs else "um"
        factor = _UNIT_TO_UM.get(re.sub(r"\s+", "", unit).lower())
        if factor is not None and np.isfinite(value) and value > 0:
            return value * factor
    return None


def sniff_hdf5(path: Path) -> str:
    """``/exchange/data`` is Data Exchange; an NXentry with definition NXtomo is NXtomo; a built-in
    layout's paths (:func:`detect_layout`) are ``hdf5``.

    Anything else (including an HDF5 file h5py cannot open) goes to the Data Exchange reader,
    whose errors say what is wrong.  Only groups are looked into, never external links.
    """
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


def open_hdf5(path: Path):
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise ScanError(path, f"cannot open as HDF5 (truncated or corrupt?): {err}") from err


def layout_scan(f, path: Path, layout, frames, explicit: bool) -> RawScan:
    """The scan of an open HDF5 file, datasets left on disk; a hint where the layout was only guessed."""
    try:
        return layout_datasets(f, path, layout, frames=frames)
    except ScanError as err:
        if explicit or not err.problem.startswith(f"has no {layout.data} dataset"):
            raise
        raise ScanError(path, f"{err.problem}; if the file has another layout, name it in the scan table's "
                              "'layout' column") from err


def materialise(scan: RawScan) -> RawScan:
    """Read on-disk datasets into float32 arrays (read errors are ScanError: see CheckedDataset)."""
    scan.data = np.asarray(scan.data[()], dtype=np.float32)
    scan.flats = np.asarray(scan.flats[()], dtype=np.float32) if scan.flats is not None else None
    scan.darks = np.asarray(scan.darks[()], dtype=np.float32) if scan.darks is not None else None
    return scan


def write_dxchange(path, data, theta_deg, flats=None, darks=None, pixel_size_um=None):
    """Write a scan in Data Exchange layout (used for demo scans and tests), atomically."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("exchange/data", data=data, chunks=(1,) + tuple(np.shape(data)[1:]))
        f.create_dataset("exchange/theta", data=np.asarray(theta_deg, dtype=np.float64))
        if flats is not None:
            f.create_dataset("exchange/data_white", data=flats)
        if darks is not None:
            f.create_dataset("exchange/data_dark", data=darks)
        if pixel_size_um is not None:
            f.create_dataset("measurement/instrument/detector/pixel_size", data=float(pixel_size_um))
