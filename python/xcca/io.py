"""Reading detector images: CBF/EDF/TIFF/... through fabio, HDF5 (incl. compressed Eiger data) through h5py.

HDF5 data is addressed as ``"file.h5::/entry/data"`` or ``read_image("file.h5", dataset="/entry/data")``.
"""
from __future__ import annotations

import errno
import logging
import os
import re
from typing import Optional, Tuple, Union

import numpy as np

__all__ = ["read_image", "split_hdf5_path"]

_log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

_HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs", ".nx5", ".cxi", ".he5")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_CBF_BINARY_START = b"\x0c\x1a\x04\xd5"


def split_hdf5_path(path: PathLike) -> Tuple[str, Optional[str]]:
    """Split an HDF5 address ``"file.h5::/entry/data"`` into file and dataset.

    Parameters
    ----------
    path : str or path-like
        A file name, optionally followed by ``::`` and an HDF5 dataset path.

    Returns
    -------
    (str, str or None)
        ``("file.h5", "/entry/data")``; without ``::``, ``(path, None)``.
    """
    s = os.fspath(path)
    if "::" in s:
        file, dset = s.split("::", 1)
        return file, dset
    return s, None


def _is_hdf5(path: str) -> bool:
    if path.lower().endswith(_HDF5_SUFFIXES):
        return True
    try:
        with open(path, "rb") as f:
            return f.read(8) == _HDF5_MAGIC
    except OSError:
        return False


def _check_cbf(path: str) -> None:
    """Reject a truncated uncompressed CBF before fabio sees it (fabio may hang or return garbage on those)."""
    with open(path, "rb") as f:
        raw = f.read()
    if not raw.startswith(b"###CBF"):
        return  # compressed (.cbf.gz, ...) or not a CBF after all: fabio decides
    start = raw.find(_CBF_BINARY_START)
    match = re.search(rb"X-Binary-Size:\s*(\d+)", raw[: start if start >= 0 else len(raw)])
    if start < 0 or match is None:
        raise OSError(f"{path}: truncated or corrupt CBF (no binary section)")
    need = int(match.group(1))
    have = len(raw) - start - len(_CBF_BINARY_START)
    if have < need:
        raise OSError(f"{path}: truncated CBF ({have} of {need} bytes of binary data)")


def _read_hdf5(file: str, dataset: str, frame: Optional[int]) -> np.ndarray:
    import h5py
    import hdf5plugin  # noqa: F401  (registers the Eiger/bitshuffle/LZ4 filters)

    try:
        f = h5py.File(file, "r")
    except OSError as e:
        raise OSError(f"{file}: not a readable HDF5 file ({e})") from None
    with f:
        if dataset not in f:
            raise ValueError(f"{file}: no dataset {dataset!r} in this HDF5 file")
        ds = f[dataset]
        if not isinstance(ds, h5py.Dataset):
            raise ValueError(f"{file}: {dataset!r} is a group, not a dataset")
        if ds.ndim not in (2, 3):
            raise ValueError(f"{file}::{dataset} has shape {ds.shape}; expected an image (H, W) or a stack (N, H, W)")
        try:
            if frame is None:
                return ds[()]
            if ds.ndim == 2:
                _check_frame(frame, 1, f"{file}::{dataset}")
                return ds[()]
            _check_frame(frame, ds.shape[0], f"{file}::{dataset}")
            return ds[frame]
        except (OSError, RuntimeError) as e:  # e.g. a missing compression filter or a damaged chunk
            raise OSError(f"{file}::{dataset}: cannot read data ({e})") from None


def _check_frame(frame: int, n: int, where: str) -> None:
    if isinstance(frame, (bool, np.bool_)) or not isinstance(frame, (int, np.integer)):
        raise TypeError(f"frame must be an int, got {frame!r}")
    if not -n <= frame < n:
        raise IndexError(f"frame {frame} out of range for {where} with {n} frame(s)")


def _read_fabio(path: str, frame: Optional[int]) -> np.ndarray:
    import fabio

    if path.lower().endswith(".cbf"):
        _check_cbf(path)
    try:
        img = fabio.open(path)
    except Exception as e:  # fabio raises many types for unreadable files
        raise OSError(f"{path}: not a readable detector image ({type(e).__name__}: {e})") from None
    try:
        n = int(getattr(img, "nframes", 1) or 1)
        if frame is None and n > 1:
            data = np.stack([np.asarray(img.getframe(i).data) for i in range(n)])
        elif frame is None or n == 1:
            if frame is not None:
                _check_frame(frame, 1, path)
            data = img.data
        else:
            _check_frame(frame, n, path)
            data = img.getframe(frame % n).data
    except (IndexError, TypeError):
        raise
    except Exception as e:
        raise OSError(f"{path}: corrupt detector image ({type(e).__name__}: {e})") from None
    finally:
        close = getattr(img, "close", None)
        if close is not None:
            close()
    if data is None or np.asarray(data).ndim not in (2, 3) or np.asarray(data).size == 0:
        raise OSError(f"{path}: no image data")
    return np.asarray(data)


def read_image(path: PathLike, dataset: Optional[str] = None, frame: Optional[int] = None) -> np.ndarray:
    """Read one detector image (or a stack) from a file.

    Parameters
    ----------
    path : str or path-like
        A detector image readable by fabio (CBF, EDF, TIFF, ...) or an HDF5 file. HDF5 data may be addressed as
        ``"file.h5::/entry/data"``.
    dataset : str, optional
        The HDF5 dataset (instead of the ``::`` form). Required for HDF5 files.
    frame : int, optional
        Index of the frame in a stack (HDF5 dataset (N, H, W) or a multi-frame file); negative counts from the end.
        None returns the whole file: (H, W) for one frame, (N, H, W) for a stack. 0 is also accepted for a
        single frame.

    Returns
    -------
    ndarray
        The stored dtype (e.g. int32 for Pilatus CBF, uint32/uint16 for Eiger), possibly big-endian.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    OSError
        The file is unreadable, corrupt or truncated.
    ValueError
        An HDF5 file without a dataset, a missing dataset, or data that is not an image.
    """
    file, dset = split_hdf5_path(path)
    if dataset is not None:
        if dset is not None and dset != dataset:
            raise ValueError(f"{path}: dataset given twice ({dset!r} in the path and dataset={dataset!r})")
        dset = dataset
    if not os.path.exists(file):
        raise FileNotFoundError(errno.ENOENT, "no such file", file)
    if os.path.isdir(file):
        raise IsADirectoryError(errno.EISDIR, "is a directory, not an image file", file)
    if dset is not None or _is_hdf5(file):
        if dset is None:
            raise ValueError(f"{file}: an HDF5 file needs a dataset: use 'FILE::/entry/data' or dataset=")
        data = _read_hdf5(file, dset, frame)
    else:
        data = _read_fabio(file, frame)
    _log.debug("read %s: shape %s, dtype %s", path, data.shape, data.dtype)
    return data
