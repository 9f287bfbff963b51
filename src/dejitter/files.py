"""The project's own files: intermediates, shifts tables and volumes, all written atomically.

Every writer builds its file under a temporary name in the destination folder and renames it
into place only when complete, so an interrupted run never leaves a file that a later run
could mistake for a finished one.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

__all__ = [
    "atomic_path", "write_stack", "stack_writer", "read_stack", "open_stack", "write_shifts", "read_shifts",
    "write_volume", "volume_writer", "read_volume", "sha256sum", "write_volume_tiff",
]


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    On any error the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_parts(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _remove_stale_parts(path):
    """Remove temporary files of earlier, killed writes of ``path``.

    A process killed by SIGKILL cannot clean up, so its ``.<name>.<random>.part`` stays.  Such
    files are never mistaken for outputs, but they hold disk space (a full-size volume each).
    One writer per destination at a time is assumed, as in a Snakemake DAG.
    """
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.part"):
        with contextlib.suppress(OSError):
            stale.unlink()


def _write_attrs(obj, attrs):
    """Write ``attrs`` onto an HDF5 object: containers as JSON, ``None`` (not applicable) left out.

    HDF5 has no null; an absent attribute reads back as ``None`` through ``attrs.get``, which is
    what the readers of these files expect (e.g. ``pixel_size_um``).  Provenance from
    ``registration.json`` holds such values (``highpass_kept_by`` where step 7 was refused).
    """
    for key, value in (attrs or {}).items():
        if value is None:
            continue
        obj.attrs[key] = json.dumps(value) if isinstance(value, (dict, list, tuple)) else value


def write_stack(path, array, *, name="data", attrs=None, compression=None, chunks=None, extra=None,
                dtype=np.float32):
    """Write one float32 array (plus optional small ``extra`` datasets) to HDF5, atomically.

    ``dtype`` stores it as another floating-point type (``float16`` for volumes).
    """
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        dset = f.create_dataset(name, data=np.asarray(array, dtype=_float_dtype(dtype)),
                                compression=compression, chunks=chunks)
        _write_attrs(dset, attrs)
        for key, value in (extra or {}).items():
            f.create_dataset(key, data=np.asarray(value))


#: Floating-point types a stack or volume may be stored as.
FLOAT_DTYPES = ("float32", "float16")


def _float_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype.name not in FLOAT_DTYPES:
        raise ValueError(f"stacks and volumes are stored as {' or '.join(FLOAT_DTYPES)}, not {dtype.name}")
    return dtype


@contextlib.contextmanager
def stack_writer(path, shape, *, name="data", attrs=None, compression=None, chunks=None, extra=None,
                 dtype=np.float32):
    """Create a float32 dataset of ``shape`` in a new HDF5 file and yield it, to be filled in pieces.

    The file is the same as :func:`write_stack` writes once every element has been assigned
    (``dset[a:b] = block``), so a large array never has to be in memory at once.  It is built
    under a temporary name and renamed to ``path`` only when the block succeeds.  ``dtype``
    stores it as another floating-point type (``float16``; blocks are converted on assignment).

    Yields
    ------
    h5py.Dataset
        Attributes may still be added (``dset.attrs``) inside the block.
    """
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        dset = f.create_dataset(name, shape=tuple(int(n) for n in shape), dtype=_float_dtype(dtype),
                                compression=compression, chunks=chunks)
        _write_attrs(dset, attrs)
        for key, value in (extra or {}).items():
            f.create_dataset(key, data=np.asarray(value))
        yield dset


@contextlib.contextmanager
def open_stack(path, name="data"):
    """Open a file of :func:`write_stack` without reading the array; yields ``(dataset, attrs, extras)``.

    Slicing the dataset (``dset[:, r0:r1]``, ``dset[a0:a1]``) reads only that part from disk.
    The small ``extras`` (e.g. ``theta_deg``, ``instrument_shifts``) are read whole.
    """
    with h5py.File(path, "r") as f:
        dset = f[name]
        yield dset, dict(dset.attrs), {k: f[k][()] for k in f if k != name}


def read_stack(path, name="data"):
    """Read an array written by :func:`write_stack`; returns ``(array, attrs, extras)``."""
    with h5py.File(path, "r") as f:
        dset = f[name]
        attrs = dict(dset.attrs)
        extras = {k: f[k][()] for k in f if k != name}
        return dset[()], attrs, extras


def write_shifts(path, theta_deg, shifts, extra_columns=None):
    """Write ``shifts.csv``: ``index, theta_deg, dx, dy`` plus per-angle quality columns."""
    shifts = np.asarray(shifts, dtype=np.float64)
    table = pd.DataFrame({
        "index": np.arange(len(theta_deg)),
        "theta_deg": np.asarray(theta_deg, dtype=np.float64),
        "dx": shifts[:, 0],
        "dy": shifts[:, 1],
    })
    for key, value in (extra_columns or {}).items():
        table[key] = np.asarray(value)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.5f")
    return table


def read_shifts(path):
    """Read a shifts table; returns ``(table, shifts (angle, 2))``."""
    table = pd.read_csv(path)
    missing = {"index", "theta_deg", "dx", "dy"} - set(table.columns)
    if missing:
        raise ValueError(f"{path}: shifts table lacks columns {sorted(missing)}")
    return table, table[["dx", "dy"]].to_numpy(dtype=np.float64)


#: Volumes are written uncompressed: gzip saved 7 % of a 1024^3 float32 reconstruction (noise
#: does not compress) and took 12 times as long to write (8 s per 64 slices on this CPU: 127 s of
#: the 179 s reconstruction step), and decompressing it to read one xz slice for the QC took 23 s.
VOLUME_COMPRESSION = None


def write_volume(path, volume, *, attrs=None, voxel_size_um=None, dtype="float32"):
    """Write ``volume.h5``: dataset ``/volume`` float32 (or ``dtype``), chunked by z slice, with provenance."""
    volume = np.asarray(volume, dtype=np.float32)
    chunks = (1,) + volume.shape[1:] if volume.ndim == 3 else None
    attrs = dict(attrs or {})
    if voxel_size_um:
        attrs["voxel_size_um"] = float(voxel_size_um)
    write_stack(path, volume, name="volume", attrs=attrs, compression=VOLUME_COMPRESSION, chunks=chunks, dtype=dtype)


def volume_writer(path, shape, *, attrs=None, voxel_size_um=None, dtype="float32"):
    """:func:`write_volume` in pieces: yields the ``/volume`` dataset to fill slice by slice (z).

    ``dtype``: ``float32`` (default) or ``float16``, half the disk space, about three significant
    digits (values up to 65504), enough to view and segment a reconstruction.
    """
    attrs = dict(attrs or {})
    if voxel_size_um:
        attrs["voxel_size_um"] = float(voxel_size_um)
    chunks = (1,) + tuple(shape[1:]) if len(shape) == 3 else None
    return stack_writer(path, shape, name="volume", attrs=attrs, compression=VOLUME_COMPRESSION, chunks=chunks,
                        dtype=dtype)


def read_volume(path):
    """Read ``/volume`` and its attributes from ``volume.h5``."""
    volume, attrs, _ = read_stack(path, name="volume")
    return volume, attrs


def write_volume_tiff(path, volume, *, voxel_size_um=None):
    """Write a volume as a float32 ImageJ hyperstack TIFF (opens calibrated in Fiji), atomically.

    Parameters
    ----------
    path : str or Path
        Destination, e.g. ``volume.tif``.
    volume : ndarray, shape (z, y, x)
        One TIFF page per z slice.
    voxel_size_um : float or (z, y, x) sequence of floats, optional
        Voxel size in micrometres, stored as the TIFF resolution (x, y), ImageJ ``spacing`` (z)
        and ``unit: um``.
    """
    import tifffile

    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim != 3:
        raise ValueError(f"{path}: volume has shape {volume.shape}, expected (z, y, x)")
    metadata = {"axes": "ZYX"}
    kwargs = {}
    if voxel_size_um is not None:
        sizes = np.broadcast_to(np.asarray(voxel_size_um, dtype=np.float64), (3,))
        if not np.all(np.isfinite(sizes) & (sizes > 0)):
            raise ValueError(f"{path}: voxel_size_um must be positive, got {voxel_size_um!r}")
        vz, vy, vx = (float(v) for v in sizes)
        metadata.update(spacing=vz, unit="um")
        kwargs["resolution"] = (1.0 / vx, 1.0 / vy)
    # The temporary name ends in .part, so the format is given explicitly, not guessed from it.
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, volume, imagej=True, ome=False, metadata=metadata, **kwargs)


def sha256sum(path) -> str:
    """Hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
