"""Frame sources: how the frames of a run come in (the first step of the pipeline's data flow).

sources (this module) -> :mod:`xcca.stages` (pure chunk stages, partial results that add) -> drivers
(:mod:`xcca.pipeline` local, :mod:`xcca.distributed` Dask) -> :mod:`xcca.result` (the result file).

:func:`open_source` opens a run — an HDF5 stack (N, H, W), an open ``h5py.Dataset``, an in-memory array or a list of
image files — as a :class:`FrameSource`, which reads frames by range or by index and reports a frame it cannot read
(or whose shape or dtype is wrong) as a per-frame error instead of failing the run. :func:`load_mask` reads the
pixel mask of a run (True = valid pixel, LOKI's convention).
"""
from __future__ import annotations

import os
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import io as _io
from .io import _is_hdf5

__all__ = ["FrameSource", "open_source", "load_mask", "source_location", "mask_digest"]


class FrameSource:
    """Random-access reader of a run's frames, one frame or a range at a time.

    Use :func:`open_source` to build one. ``len(src)`` is the number of frames; ``src.shape`` the (H, W) expected of
    every frame; ``src.read(start, stop)`` returns ``(frames, errors)`` where ``errors[i]`` is None or a message for a
    frame that could not be read (its slot in ``frames`` is then zero); ``src.read_indices(idx)`` is the same for
    arbitrary indices. A FrameSource is a context manager that closes what it opened.
    """

    def __init__(self, n: int, shape: Tuple[int, int], dtype, describe: str):
        self.n = int(n)
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)
        self.describe = describe

    def __len__(self) -> int:
        return self.n

    def _read_one(self, i: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _read_range(self, start: int, stop: int, out: Optional[np.ndarray] = None) -> np.ndarray:
        return np.stack([self._read_one(i) for i in range(start, stop)])

    def _buffer(self, m: int, out: Optional[np.ndarray]) -> Optional[np.ndarray]:
        """``out[:m]`` if ``out`` can hold m frames of this source, else None."""
        if out is None or out.dtype != self.dtype or out.shape[1:] != self.shape or len(out) < m \
                or not out.flags.c_contiguous or not out.flags.writeable:
            return None
        return out[:m]

    def read(self, start: int, stop: int, out: Optional[np.ndarray] = None
             ) -> Tuple[np.ndarray, List[Optional[str]]]:
        """Frames ``start:stop`` as an array (stop - start, H, W) and the per-frame read errors.

        ``out``: a reusable C-contiguous buffer (>= stop - start, H, W) of the source's dtype; the frames are then
        read into it where the source allows (the result is a view of it), saving an allocation per chunk.
        """
        try:
            frames = self._read_range(start, stop, out)
            if frames.shape[1:] != self.shape:
                raise ValueError("shape")
            return frames, [None] * (stop - start)
        except Exception:  # a bad frame in the block: fall back to frame by frame to isolate it
            return self.read_indices(range(start, stop), out)

    def read_indices(self, indices, out: Optional[np.ndarray] = None) -> Tuple[np.ndarray, List[Optional[str]]]:
        """Frames at ``indices`` (any order) and the per-frame read errors (``out``: as in :meth:`read`)."""
        indices = list(indices)
        buf = self._buffer(len(indices), out)
        if buf is None:
            out = np.zeros((len(indices), *self.shape), dtype=self.dtype)
        else:
            out = buf
        errors: List[Optional[str]] = []
        for k, i in enumerate(indices):
            try:
                fr = np.asarray(self._read_one(int(i)))
            except Exception as exc:  # noqa: BLE001 - any reader failure makes the frame corrupt, not the run
                errors.append(f"unreadable: {type(exc).__name__}: {exc}")
                continue
            if fr.shape != self.shape:
                errors.append(f"wrong shape {fr.shape}, expected {self.shape}")
                continue
            if fr.dtype.kind not in "biuf":
                errors.append(f"unsupported dtype {fr.dtype}")
                continue
            out[k] = fr
            errors.append(None)
        if buf is not None:
            for k, e in enumerate(errors):
                if e is not None:
                    out[k] = 0  # a reused buffer holds an older frame there
        return out, errors

    def close(self) -> None:
        pass

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _ArraySource(FrameSource):
    def __init__(self, arr, describe: str = "array", closer: Optional[Callable[[], None]] = None):
        if len(arr.shape) == 2 and isinstance(arr, np.ndarray):  # one image
            arr = arr[None]
        if len(arr.shape) != 3:
            raise ValueError(f"a frame stack must be 3-D (N, H, W) (or one 2-D image), got shape {arr.shape}")
        if np.dtype(arr.dtype).kind not in "biuf":
            raise TypeError(f"frames must have a real numeric dtype, got {arr.dtype}")
        super().__init__(arr.shape[0], arr.shape[1:], arr.dtype if np.dtype(arr.dtype).kind != "b" else np.uint8,
                         describe)
        self._arr = arr
        self._closer = closer

    def _read_one(self, i: int) -> np.ndarray:
        return np.asarray(self._arr[i])

    def _read_range(self, start: int, stop: int, out: Optional[np.ndarray] = None) -> np.ndarray:
        buf = self._buffer(stop - start, out)
        if buf is not None and hasattr(self._arr, "read_direct") and self._arr.dtype == buf.dtype:
            # h5py: straight into the reused buffer (no allocation, no page faults of a fresh 10s-of-MB array)
            self._arr.read_direct(buf, np.s_[start:stop])
            return buf
        return np.asarray(self._arr[start:stop])

    def read_indices(self, indices, out: Optional[np.ndarray] = None) -> Tuple[np.ndarray, List[Optional[str]]]:
        indices = list(indices)
        buf = self._buffer(len(indices), out)
        if buf is None or not hasattr(self._arr, "read_direct") or self._arr.dtype != buf.dtype:
            return super().read_indices(indices, out)
        errors: List[Optional[str]] = []
        for k, i in enumerate(indices):  # h5py: each frame straight into its slot of the reused buffer
            try:
                self._arr.read_direct(buf[k], np.s_[int(i)])
                errors.append(None)
            except Exception as exc:  # noqa: BLE001 - any reader failure makes the frame corrupt, not the run
                buf[k] = 0
                errors.append(f"unreadable: {type(exc).__name__}: {exc}")
        return buf, errors

    def close(self) -> None:
        if self._closer is not None:
            self._closer()
            self._closer = None


def _read_image_file(path: str) -> np.ndarray:
    """One image file through :func:`xcca.io.read_image` (all detector formats, HDF5) or a .npy file."""
    if str(path).endswith(".npy"):
        return np.load(path, allow_pickle=False)
    return np.asarray(_io.read_image(path))


class _FileListSource(FrameSource):
    def __init__(self, paths: Sequence[Union[str, os.PathLike]]):
        self._paths = [os.fspath(p) for p in paths]
        if not self._paths:
            raise ValueError("the list of image files is empty")
        first_err = None
        for p in self._paths:  # the first readable file defines the frame shape
            try:
                fr = _read_image_file(p)
                break
            except Exception as exc:  # noqa: BLE001
                if first_err is None:  # the first failure, not the last one
                    first_err = (p, exc)
        else:
            fp, fe = first_err
            why = str(fe) if fp in str(fe) else f"{fp}: {fe}"
            if len(self._paths) == 1:
                raise OSError(f"the image file could not be read: {why}")
            raise OSError(f"none of the {len(self._paths)} image files could be read (first error: {why})")
        if fr.ndim != 2:
            raise ValueError(f"image files must hold 2-D frames, {p} has shape {fr.shape}")
        super().__init__(len(self._paths), fr.shape, np.result_type(fr.dtype, np.float32)
                         if fr.dtype.kind == "f" else fr.dtype, f"{len(self._paths)} files")

    def _read_one(self, i: int) -> np.ndarray:
        return _read_image_file(self._paths[i])

    def read(self, start: int, stop: int, out: Optional[np.ndarray] = None):
        return self.read_indices(range(start, stop), out)


def _split_h5_path(source: str, dataset: Optional[str]) -> Tuple[str, Optional[str]]:
    """``"file.h5::/data"`` and/or ``dataset=`` -> (file, dataset), via :func:`xcca.io.split_hdf5_path`."""
    path, ds = _io.split_hdf5_path(source)
    if ds is None:
        return path, dataset
    if dataset is not None and dataset != ds:
        raise ValueError(f"dataset given twice: {ds!r} in the path and {dataset!r}")
    return path, ds


def _list_datasets(f) -> List[str]:
    import h5py

    names: List[str] = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and len(names) < 20:
            names.append("/" + name)

    f.visititems(visit)
    return names


def open_source(source, dataset: Optional[str] = None) -> FrameSource:
    """Open a run for streaming.

    Parameters
    ----------
    source : str, Path, h5py.Dataset, numpy.ndarray or sequence of paths
        An HDF5 file (with ``dataset=`` or ``"file.h5::/path/to/data"``) holding an (N, H, W) stack; an open
        ``h5py.Dataset``; an (N, H, W) array (or anything with ``shape``, ``dtype`` and slicing); or a list of image
        files (one frame each, any format :func:`xcca.io.read_image` reads).
    dataset : str, optional
        HDF5 path of the stack inside the file.

    Raises
    ------
    OSError
        The file does not exist or cannot be opened.
    ValueError
        The dataset is missing or not a stack of 2-D frames.
    """
    if isinstance(source, (str, os.PathLike)):
        path, ds = _split_h5_path(os.fspath(source), dataset)
        if not os.path.exists(path):
            raise OSError(f"file not found: {path}")
        if not _is_hdf5(path):
            if ds is not None:
                raise ValueError(f"{path} is not an HDF5 file, but a dataset ({ds}) was given")
            return _FileListSource([path])
        import h5py
        import hdf5plugin  # noqa: F401 - registers the compression filters of detector data

        f = h5py.File(path, "r")
        try:
            if ds is None:
                raise ValueError(f"{path} is an HDF5 file: give the dataset of the frame stack "
                                 f"(datasets there: {', '.join(_list_datasets(f)) or 'none'})")
            if ds not in f:
                raise ValueError(f"dataset {ds!r} not found in {path} "
                                 f"(datasets there: {', '.join(_list_datasets(f)) or 'none'})")
            obj = f[ds]
            if not isinstance(obj, h5py.Dataset):
                raise ValueError(f"{ds!r} in {path} is a group, not a dataset "
                                 f"(datasets there: {', '.join(_list_datasets(f)) or 'none'})")
            return _ArraySource(obj, describe=f"{path}::{ds}", closer=f.close)
        except BaseException:
            f.close()
            raise
    if isinstance(source, (list, tuple)) and all(isinstance(p, (str, os.PathLike)) for p in source):
        return _FileListSource(source)
    if hasattr(source, "shape") and hasattr(source, "dtype"):
        name = getattr(source, "name", None)
        return _ArraySource(source if not isinstance(source, list) else np.asarray(source),
                            describe=f"dataset {name}" if isinstance(name, str) else "array")
    arr = np.asarray(source)
    return _ArraySource(arr)



def load_mask(mask, shape) -> Optional[np.ndarray]:
    """The pixel mask of a run as a C-contiguous bool array (True = valid pixel, LOKI's convention).

    Parameters
    ----------
    mask : None, array_like of bool (H, W), or str / PathLike
        A boolean array, or a file: ``.npy``, ``file.h5::/path/to/mask`` (HDF5) or any image format
        :func:`xcca.io.read_image` reads. A non-boolean mask file counts nonzero as valid; a non-boolean array is
        refused (its meaning would be a guess).
    shape : (int, int)
        The frames' (H, W); the mask must have it.

    Returns
    -------
    numpy.ndarray of bool or None
        None when ``mask`` is None.

    Raises
    ------
    OSError
        The mask file does not exist.
    ValueError
        Wrong shape, no valid pixel, or an HDF5 file without (or with a missing) dataset.
    TypeError
        A non-boolean array.
    """
    if mask is None:
        return None
    if isinstance(mask, (str, os.PathLike)):
        p = os.fspath(mask)
        path, _, ds = p.partition("::")
        if not os.path.exists(path):
            raise OSError(f"mask file not found: {path}")
        if path.endswith(".npy"):
            arr = np.load(path, allow_pickle=False)
        elif _is_hdf5(path):
            import h5py

            with h5py.File(path, "r") as f:
                if not ds:
                    raise ValueError(f"mask file {path} is HDF5: give the dataset as {path}::/path/to/mask")
                if ds not in f:
                    raise ValueError(f"mask dataset {ds!r} not found in {path}")
                arr = f[ds][()]
        else:
            arr = _read_image_file(path)
        if arr.dtype != bool:
            arr = arr != 0  # an integer mask file: nonzero = valid
    else:
        arr = np.asarray(mask)
        if arr.dtype != bool:
            raise TypeError(f"mask must be boolean (True = valid pixel), got {arr.dtype}")
    if arr.shape != tuple(shape):
        raise ValueError(f"mask has shape {arr.shape}, the frames {tuple(shape)}")
    if not arr.any():
        raise ValueError("the mask leaves no valid pixel; masks are True = valid (is it inverted?)")
    return np.ascontiguousarray(arr)


def source_location(source, dataset: Optional[str] = None):
    """Where a run lives on disk: ``(absolute path or list of absolute paths, dataset)``, or None for an in-memory
    array. ``source`` and ``dataset`` as for :func:`open_source`; ``open_source(*location)`` reopens the run from
    any process that sees the same files (what a cluster worker does)."""
    if isinstance(source, (str, os.PathLike)):
        path, sep, ds = os.fspath(source).partition("::")
        return (os.path.abspath(path) + (sep + ds if sep else ""), dataset)
    if isinstance(source, (list, tuple)) and source and all(isinstance(p, (str, os.PathLike)) for p in source):
        return ([os.path.abspath(os.fspath(p)) for p in source], None)
    fname = getattr(getattr(source, "file", None), "filename", None)
    name = getattr(source, "name", None)
    if isinstance(fname, str) and isinstance(name, str):  # an open h5py.Dataset
        return (os.path.abspath(fname), name)
    return None


def mask_digest(mask: Optional[np.ndarray]) -> Optional[str]:
    """SHA-256 of a pixel mask (True = valid pixel): its shape and bits, so a result records exactly which mask was
    used even when it was passed as an array. None for no mask."""
    if mask is None:
        return None
    import hashlib

    m = np.ascontiguousarray(mask, dtype=bool)
    h = hashlib.sha256(f"xcca-mask {m.shape[0]}x{m.shape[1]}:".encode())
    h.update(np.packbits(m, axis=None).tobytes())
    return h.hexdigest()

