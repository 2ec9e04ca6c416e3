"""Block binning (max, sum) and square grey dilation of detector images.

Thin validating layer over the Cython kernels in :mod:`xcca._binning`. Masks follow LOKI's convention:
True = valid pixel. Masked pixels and NaN pixels never win a max and add nothing to a sum.
"""
from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import numpy as np

from . import _binning, _checks

__all__ = ["bin_max", "bin_sum", "dilate_max"]

_log = logging.getLogger(__name__)

#: dtypes the kernels handle natively (any byte order; other dtypes raise TypeError).
SUPPORTED_DTYPES: Tuple[np.dtype, ...] = tuple(
    np.dtype(t) for t in (np.uint8, np.uint16, np.int16, np.int32, np.uint32, np.int64, np.float32, np.float64)
)

Factor = Union[int, Tuple[int, int], Sequence[int]]

# Below this many pixels per band a thread costs more than it saves.
_MIN_PIXELS_PER_THREAD = 1 << 17

_pool: Optional[ThreadPoolExecutor] = None
_pool_lock = threading.Lock()


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=max(2, _usable_cores()), thread_name_prefix="xcca-binning")
        return _pool


def _resolve_threads(n_threads: Optional[int]) -> int:
    nt = _checks.n_threads(n_threads)
    return _usable_cores() if nt is None else min(nt, _usable_cores())  # capped at the usable cores


def _run_bands(kernel: Callable[[int, int], Any], n_rows: int, n_pixels: int, n_threads: int,
               min_rows: int = 1) -> None:
    """Run kernel(r0, r1) over row bands covering [0, n_rows), in parallel when it pays off."""
    n = min(n_threads, max(1, n_pixels // _MIN_PIXELS_PER_THREAD), max(1, n_rows // max(1, min_rows)))
    if n <= 1:
        kernel(0, n_rows)
        return
    edges = np.linspace(0, n_rows, n + 1).round().astype(int)
    bands = [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]
    # The calling thread takes the first band itself (the kernels release the GIL): one pool hand-off fewer, and
    # on a busy machine no band waits for a pool thread to be woken while the caller sits idle.
    pool = _executor()
    futures = [pool.submit(kernel, a, b) for a, b in bands[1:]]
    try:
        kernel(*bands[0])
    finally:
        for f in futures:
            f.result()


def _as_image(image: Any, name: str = "image") -> np.ndarray:
    """A C-contiguous native-endian 2-D or 3-D array of a supported dtype (copied only when needed)."""
    arr = np.asarray(image)
    if arr.dtype.kind in "cOSUVMmb?" or arr.dtype.newbyteorder("=") not in SUPPORTED_DTYPES:
        names = ", ".join(str(d) for d in SUPPORTED_DTYPES)
        raise TypeError(f"{name} has unsupported dtype {arr.dtype}; supported: {names}")
    if arr.ndim not in (2, 3):
        raise ValueError(f"{name} must be 2-D (H, W) or a 3-D stack (N, H, W), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("="))


def _as_mask(mask: Any, shape: Tuple[int, ...], name: str = "mask") -> Optional[np.ndarray]:
    """A C-contiguous uint8 view (1 = valid) of `mask`, broadcast over a stack; None stays None."""
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.dtype != np.bool_:
        if m.dtype.kind not in "iu":
            raise TypeError(f"{name} must be a boolean array (True = valid pixel), got dtype {m.dtype}")
        m = m != 0
    if m.shape != shape and m.shape != shape[-2:]:
        raise ValueError(f"{name} has shape {m.shape}, expected {shape[-2:]} (True = valid pixel)")
    if m.shape != shape:
        m = np.broadcast_to(m, shape)
    return np.ascontiguousarray(m).view(np.uint8)


def _as_factor(factor: Any, name: str = "factor") -> Tuple[int, int]:
    vals = (factor, factor) if np.ndim(factor) == 0 else tuple(factor)
    if len(vals) != 2:
        raise ValueError(f"{name} must be an int or a pair (fy, fx), got {factor!r}")
    out = []
    for v in vals:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an int or a pair of ints, got {factor!r}")
        if v <= 0:
            raise ValueError(f"{name} must be positive, got {factor!r}")
        out.append(int(v))
    return out[0], out[1]


def _lowest(dtype: np.dtype) -> Union[int, float]:
    return -np.inf if dtype.kind == "f" else int(np.iinfo(dtype).min)


def _check_out(out: Any, shape: Tuple[int, ...], dtype: np.dtype, inputs: Sequence[np.ndarray]) -> np.ndarray:
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != shape:
        raise ValueError(f"out has shape {out.shape}, expected {shape}")
    if out.dtype != dtype:
        raise TypeError(f"out has dtype {out.dtype}, expected {dtype}")
    if not (out.flags.c_contiguous and out.flags.writeable):
        raise ValueError("out must be C-contiguous and writeable")
    names = ["image", "mask"] if len(inputs) == 2 else ["image", "image (converted)", "mask"]
    _checks.no_overlap(out, dict(zip(names, inputs)))
    return out


def _bin(kind: str, image: Any, factor: Factor, mask: Any, out: Optional[np.ndarray],
         n_threads: Optional[int], want_valid: bool) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    img = _as_image(image)
    fy, fx = _as_factor(factor)
    nt = _resolve_threads(n_threads)
    m = _as_mask(mask, img.shape)
    if want_valid and m is None:
        # Validity without a mask only depends on NaNs.
        m = np.ascontiguousarray(~np.isnan(img) if img.dtype.kind == "f" else np.ones(img.shape, bool)).view(np.uint8)
    H, W = img.shape[-2:]
    oshape = img.shape[:-2] + (-(-H // fy), -(-W // fx))
    if kind == "max":
        odtype = img.dtype
        kernel = _binning.bin_max_rows
    else:
        odtype = np.dtype(np.float64 if img.dtype.kind == "f" else np.int64)
        kernel = _binning.bin_sum_rows
    if out is None:
        out = np.empty(oshape, odtype)
    else:
        _check_out(out, oshape, odtype, [np.asarray(image), mask])
    valid = np.empty(oshape, np.uint8) if m is not None else None
    img3, out3 = img.reshape((-1, H, W)), out.reshape((-1,) + oshape[-2:])
    m3 = m.reshape((-1, H, W)) if m is not None else None
    v3 = valid.reshape((-1,) + oshape[-2:]) if valid is not None else None
    for i in range(img3.shape[0]):
        args = (img3[i], None if m3 is None else m3[i], out3[i], None if v3 is None else v3[i], fy, fx)
        _run_bands(lambda r0, r1, args=args: kernel(*args, r0, r1), oshape[-2], H * W, nt)
    return out, (valid.view(np.bool_) if valid is not None else None)


def bin_max(image: Any, factor: Factor, mask: Any = None, *, fill: Any = None, out: Optional[np.ndarray] = None,
            n_threads: Optional[int] = None) -> np.ndarray:
    """Maximum over non-overlapping ``fy x fx`` blocks.

    Parameters
    ----------
    image : array_like, shape (H, W) or (N, H, W)
        uint8, uint16, int16, int32, uint32, int64, float32 or float64, any byte order and strides (lists of
        Python ints become int64). Never modified.
    factor : int or (int, int)
        Block size ``(fy, fx)``; may exceed the image (then there is one block).
    mask : array_like of bool, optional
        True = valid pixel (LOKI's convention), shape (H, W) or that of `image`. Masked pixels never win.
        NaN pixels are always treated as masked.
    fill : scalar, optional
        Value of blocks without any valid pixel. Default: the lowest value of the dtype (``-inf`` for floats,
        ``INT32_MIN`` for int32, 0 for unsigned), i.e. the max of an empty set.
    out : ndarray, optional
        C-contiguous output of the right shape and dtype.
    n_threads : int, optional
        Threads to use; None = all usable cores.

    Returns
    -------
    ndarray, shape (..., ceil(H / fy), ceil(W / fx)), dtype of `image`
        Edge blocks are partial, never cropped.
    """
    if fill is not None:
        arr = np.asarray(image)
        if arr.dtype.kind in "iuf":
            fill = _checks.fill_value(fill, arr.dtype, "fill")
    res, valid = _bin("max", image, factor, mask, out, n_threads, want_valid=fill is not None)
    if fill is not None:
        res[~valid] = fill
    return res


def bin_sum(image: Any, factor: Factor, mask: Any = None, *, out: Optional[np.ndarray] = None,
            n_threads: Optional[int] = None) -> np.ndarray:
    """Sum over non-overlapping ``fy x fx`` blocks, accumulated in int64 (integer input) or float64.

    Parameters
    ----------
    image : array_like, shape (H, W) or (N, H, W)
        uint8, uint16, int16, int32, uint32, int64, float32 or float64, any byte order and strides (lists of
        Python ints become int64). Never modified.
    factor : int or (int, int)
        Block size ``(fy, fx)``; may exceed the image (then there is one block).
    mask : array_like of bool, optional
        True = valid pixel (LOKI's convention); masked pixels add nothing. NaN pixels add nothing either.
    out : ndarray, optional
        C-contiguous int64 (integer input) or float64 output of the right shape.
    n_threads : int, optional
        Threads to use; None = all usable cores.

    Returns
    -------
    ndarray, shape (..., ceil(H / fy), ceil(W / fx)), int64 or float64
        Blocks without valid pixels are 0. Float sums run over rows, then columns, in order. (Only int64
        input can overflow, beyond 9.2e18.)
    """
    return _bin("sum", image, factor, mask, out, n_threads, want_valid=False)[0]


def dilate_max(image: Any, size: int, mask: Any = None, *, fill: Any = None, out: Optional[np.ndarray] = None,
               n_threads: Optional[int] = None) -> np.ndarray:
    """Grey dilation with a ``size x size`` square (van Herk / Gil-Werman, O(1) work per pixel for any size).

    Without mask and NaN, equal element for element to ``scipy.ndimage.grey_dilation(image, size=(size, size))``:
    the window of pixel (y, x) is rows ``y - (size-1)//2 .. y + size//2`` (same for columns), so for an even size
    it reaches one pixel further down/right; the image edge clips the window (scipy's 'reflect' gives the same max).

    Parameters
    ----------
    image : array_like, shape (H, W) or (N, H, W)
        uint8, uint16, int16, int32, uint32, int64, float32 or float64, any byte order and strides (lists of
        Python ints become int64). Never modified.
    size : int
        Side of the square, >= 1 (may exceed the image).
    mask : array_like of bool, optional
        True = valid pixel (LOKI's convention). Masked and NaN pixels never win.
    fill : scalar, optional
        Value where the window holds no valid pixel. Default: the lowest value of the dtype (``-inf`` for floats).
    out : ndarray, optional
        C-contiguous output, same shape and dtype as `image`, not overlapping it.
    n_threads : int, optional
        Threads to use; None = all usable cores.

    Returns
    -------
    ndarray, same shape and dtype as `image`
    """
    img = _as_image(image)
    if isinstance(size, (bool, np.bool_)) or not isinstance(size, (int, np.integer)):
        raise TypeError(f"size must be a positive int, got {size!r}")
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    k = int(size)
    nt = _resolve_threads(n_threads)
    if fill is not None:
        fill = _checks.fill_value(fill, img.dtype, "fill")
    m = _as_mask(mask, img.shape)
    if out is None:
        out = np.empty(img.shape, img.dtype)
    else:
        _check_out(out, img.shape, img.dtype, [np.asarray(image), img, mask])
    H, W = img.shape[-2:]
    img3, out3 = img.reshape((-1, H, W)), out.reshape((-1, H, W))
    m3 = m.reshape((-1, H, W)) if m is not None else None
    for i in range(img3.shape[0]):
        args = (img3[i], None if m3 is None else m3[i], out3[i], k)
        _run_bands(lambda r0, r1, args=args: _binning.dilate_max_rows(*args, r0, r1), H, H * W, nt, min_rows=k)
    if fill is not None:
        valid = np.ones(img.shape, bool) if m is None else m.view(np.bool_)
        if img.dtype.kind == "f":
            valid = valid & ~np.isnan(img)
        if not valid.all():
            reach = dilate_max(valid.view(np.uint8), k, n_threads=n_threads).view(np.bool_)
            out[~reach] = fill
    return out
