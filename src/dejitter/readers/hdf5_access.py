"""Safe access to the datasets of an HDF5 scan: links checked before they are followed, read errors
reported as bad input, frames of a dataset selected without reading the others.

Raw facility files often link to other files (detector data, encoder readings) that were not copied
with them; h5py then raises a bare ``KeyError``.  :func:`open_dataset` names the path and the missing
file instead; :class:`CheckedDataset` turns a damaged chunk read long after opening into a
:class:`~dejitter.types.ScanError`; :class:`FrameSelection` reads the projections of a file that
interleaves flats and darks in runs of consecutive frames.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from ..types import ScanError

__all__ = ["has_link", "missing_link_problem", "open_dataset", "CheckedDataset", "FrameSelection"]


def has_link(f, hdf5_path) -> bool:
    parent, _, name = hdf5_path.rstrip("/").rpartition("/")
    try:
        group = f[parent or "/"]
        return isinstance(group, h5py.Group) and group.get(name, getlink=True) is not None
    except Exception:  # noqa: BLE001 - a dangling link on the way, or a corrupt file
        return False


def missing_link_problem(f, hdf5_path, file_path) -> str | None:
    """Why ``hdf5_path`` cannot be opened, when the reason is a link; None when it is not.

    Walks the path one link at a time, following only the links on it, and names the first
    external link whose file is missing (or whose target is absent from the file it names).
    """
    node, here = f, ""
    for part in [p for p in hdf5_path.split("/") if p]:
        here += "/" + part
        if not isinstance(node, h5py.Group):
            return f"{here[: -len(part) - 1]} is a dataset, not a group: there is no {hdf5_path}"
        link = node.get(part, getlink=True)
        if link is None:
            return None
        try:
            node = node[part]
        except Exception as err:  # noqa: BLE001 - h5py raises KeyError for every unresolvable link
            what = hdf5_path if here == hdf5_path else f"{hdf5_path} (through {here})"
            if isinstance(link, h5py.ExternalLink):
                target = _external_target(link.filename, file_path)
                if target is None:
                    return f"{what} is an external link to missing file {link.filename}"
                return (f"{what} is an external link to {link.filename}:{link.path}, which that file does not "
                        f"hold ({err})")
            if isinstance(link, h5py.SoftLink):
                return f"{what} is a soft link to {link.path}, which does not exist"
            return None
    return None


def _external_target(filename, file_path) -> Path | None:
    """The file an external link names, looked up as HDF5 does (absolute, beside the scan file, working dir)."""
    name = Path(filename)
    candidates = [name] if name.is_absolute() else [Path(file_path).parent / name, name]
    return next((c for c in candidates if c.is_file()), None)


def open_dataset(f, hdf5_path, file_path, *, required, what):
    """The dataset at ``hdf5_path``, or None where it is absent and not ``required``.

    A path that exists as a link but cannot be opened (a missing external file) is always an
    error: silently dropping, say, the flats would only move the problem.
    """
    if not has_link(f, hdf5_path):
        problem = missing_link_problem(f, hdf5_path, file_path)
        if problem:
            raise ScanError(file_path, problem)
        if required:
            raise ScanError(file_path, what)
        return None
    try:
        node = f[hdf5_path]
    except Exception as err:  # noqa: BLE001
        problem = missing_link_problem(f, hdf5_path, file_path)
        raise ScanError(file_path, problem or f"cannot open {hdf5_path}: {err}") from err
    if not isinstance(node, h5py.Dataset):
        raise ScanError(file_path, f"{hdf5_path} is a group, not a dataset")
    return node


class CheckedDataset:
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


class FrameSelection:
    """Some frames of a 3-D dataset, read lazily: ``sel[:, r0:r1]`` reads those rows of those frames.

    Frames are read in runs of consecutive indices, so selecting the projections of a file that
    interleaves flats and darks costs one read per run, not one per frame.
    """

    def __init__(self, dataset, indices):
        self._dataset = dataset
        self._indices = np.asarray(indices, dtype=np.intp)
        self.shape = (len(self._indices), *dataset.shape[1:])
        self.dtype = dataset.dtype
        self.ndim = len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self):
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self[()], dtype=dtype)

    def __getitem__(self, key):
        if key is Ellipsis or key == ():
            key = (slice(None),)
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            raise IndexError("FrameSelection takes no Ellipsis; index (frames, rows, columns)")
        chosen = self._indices[key[0]]
        rest = tuple(key[1:])
        single = np.ndim(chosen) == 0
        chosen = np.atleast_1d(chosen)
        if len(chosen) == 0:
            return self._dataset[(slice(0, 0), *rest)]
        order = np.argsort(chosen, kind="stable")
        ordered = chosen[order]
        breaks = np.flatnonzero(np.diff(ordered) != 1) + 1
        blocks = [self._dataset[(slice(int(run[0]), int(run[-1]) + 1), *rest)]
                  for run in np.split(ordered, breaks)]
        out = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
        if not np.array_equal(order, np.arange(len(order))):
            out = out[np.argsort(order, kind="stable")]
        return out[0] if single else out
