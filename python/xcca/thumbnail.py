"""Readable RGB thumbnails of detector images (what ISPyB shows during data collection).

Masks follow LOKI's convention: True = valid pixel.
"""
from __future__ import annotations

import logging
import struct
import zlib
from typing import Any, Callable, Optional, Sequence, Tuple

import numpy as np

from . import _binning, _checks
from .binning import _as_image, _as_mask, _bin, _resolve_threads, dilate_max

__all__ = ["make_thumbnail", "thumbnail_file", "write_png"]

_log = logging.getLogger(__name__)

_MODES = ("max", "sum")
_SCALES = ("log", "asinh", "linear")


def _colormap(cmap: str) -> np.ndarray:
    """A (256, 3) uint8 lookup table."""
    ramp = np.arange(256, dtype=np.uint8)
    if cmap == "gray_r":  # dark spots on white, as crystallographers read diffraction images
        ramp = ramp[::-1]
        return np.stack([ramp] * 3, axis=1)
    if cmap == "gray":
        return np.stack([ramp] * 3, axis=1)
    try:
        import matplotlib  # optional dependency ("plot" extra)
    except ImportError:
        raise ValueError(f"cmap {cmap!r} needs matplotlib; built in: 'gray_r', 'gray'") from None
    try:
        cm = matplotlib.colormaps[cmap]
    except KeyError:
        raise ValueError(f"unknown cmap {cmap!r}") from None
    return (cm(np.linspace(0.0, 1.0, 256))[:, :3] * 255 + 0.5).astype(np.uint8)


def _resample_axis(values: np.ndarray, valid: np.ndarray, n_out: int, axis: int,
                   mode: str) -> Tuple[np.ndarray, np.ndarray]:
    """Resize one axis to n_out cells: max (or mean of valid cells for 'sum') over each cell's source range.

    make_thumbnail uses it for 'sum' (`values` float64); for 'max' (any dtype: the max is taken in it, a cell
    without a valid source gets the dtype's lowest value) it is the NumPy formulation that the one-pass compiled
    resize (:func:`xcca._binning.resample_max`) is tested against.
    """
    n_in = values.shape[axis]
    if n_in == n_out:
        return values, valid
    if n_in < n_out:  # enlarge by nearest neighbour
        idx = (np.arange(n_out) * n_in) // n_out
        return np.take(values, idx, axis=axis), np.take(valid, idx, axis=axis)
    starts = (np.arange(n_out) * n_in) // n_out  # strictly increasing, ranges cover [0, n_in)
    stops = np.append(starts[1:], n_in)
    longest = int((stops - starts).max())
    low = -np.inf if values.dtype.kind == "f" else np.iinfo(values.dtype).min  # the identity of max
    if longest > 4:  # a few wide cells: one reduceat pass beats many gathers
        if mode == "max":
            v = np.maximum.reduceat(np.where(valid, values, low), starts, axis=axis)
            ok = np.logical_or.reduceat(valid, starts, axis=axis)
            return v, ok
        s = np.add.reduceat(np.where(valid, values, 0.0), starts, axis=axis)
        c = np.add.reduceat(valid.astype(np.int64), starts, axis=axis)
        with np.errstate(invalid="ignore", divide="ignore"):
            return s / np.maximum(c, 1), c > 0
    # Every cell covers 1..4 source cells (the usual case: the binned image is at most ~2x the thumbnail): take
    # the first source cell of every range, then fold the k-th source cell in, k = 1, 2, ..., into the cells whose
    # range has one -- for a 316 -> 300 resize only 16 of the 300 cells. Same values, same summation order as
    # reduceat.
    def at(index):
        return (index,) if axis == 0 else (slice(None), index)

    src = np.where(valid, values, low if mode == "max" else 0.0)
    v = np.take(src, starts, axis=axis)
    ok = np.take(valid, starts, axis=axis)
    c = None if mode == "max" else ok.astype(np.int64)
    for k in range(1, longest):
        cells = np.flatnonzero(starts + k < stops)
        here, there = at(cells), at(starts[cells] + k)
        if mode == "max":
            v[here] = np.maximum(v[here], src[there])
        else:
            v[here] = v[here] + src[there]
            c[here] = c[here] + valid[there]
        ok[here] = ok[here] | valid[there]
    if mode == "max":
        return v, ok
    with np.errstate(invalid="ignore", divide="ignore"):
        return v / np.maximum(c, 1), c > 0


def _cell_ranges(n_in: int, n_out: int) -> Tuple[np.ndarray, np.ndarray]:
    """Source range [start, stop) of each of n_out cells, as :func:`_resample_axis` resizes an axis of n_in cells:
    the ranges tile [0, n_in) when shrinking; enlarging (or keeping the size) takes the nearest cell."""
    starts = (np.arange(n_out, dtype=np.intp) * n_in) // n_out
    stops = np.append(starts[1:], n_in).astype(np.intp) if n_in > n_out else starts + 1
    return starts, stops


def _runs(flags: np.ndarray) -> np.ndarray:
    """(k, 2) start/stop of the runs of True in a 1-D bool array."""
    d = np.diff(np.concatenate(([0], flags.astype(np.int8), [0])))
    return np.stack([np.flatnonzero(d == 1), np.flatnonzero(d == -1)], axis=1)


def _thumb_index(n_det: Any, factor: int, n_binned: int, n_out: int) -> np.ndarray:
    """For every detector row (or column), the first thumbnail row its binned row lands in (and, when enlarging,
    how the binned rows map: nearest neighbour), matching :func:`_resample_axis`. `n_det`: the number of detector
    rows, or an array of the detector rows wanted."""
    binned = (np.arange(n_det) if np.ndim(n_det) == 0 else np.asarray(n_det, np.intp)) // factor
    if n_binned >= n_out:
        starts = (np.arange(n_out) * n_binned) // n_out
        return np.searchsorted(starts, binned, side="right") - 1
    idx = (np.arange(n_out) * n_binned) // n_out  # enlarging: thumbnail row j shows binned row idx[j]
    return np.searchsorted(idx, binned, side="left")


def _empty_lines(valid_det: Optional[np.ndarray], img: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the detector without any valid pixel (bool per row, per column).

    `valid_det` is the mask (True = valid), or None for the default rule ``img >= 0`` (NaN invalid): then no
    full-frame mask is made. One compiled scan (:func:`xcca._binning.empty_lines`, spec
    :func:`xcca.reference.empty_lines`): each row stops at its first valid pixel and only the columns not yet seen
    valid are read on the next rows -- about the gap lines' pixels, not a pass over the frame.
    """
    H, W = img.shape
    er = np.empty(H, np.uint8)
    ec = np.empty(W, np.uint8)
    m = None if valid_det is None else np.ascontiguousarray(valid_det, dtype=np.bool_).view(np.uint8)
    _binning.empty_lines(img, m, er, ec)
    return er.view(np.bool_), ec.view(np.bool_)


def _gap_lines(empty_rows: np.ndarray, empty_cols: np.ndarray, factor: int, binned_shape, out_shape):
    """Thumbnail rows and columns that show the detector's gap lines.

    A gap line is a run of detector rows (columns) without any valid pixel across the whole frame -- the module
    gaps of Pilatus and Eiger detectors (`empty_rows`, `empty_cols`: see :func:`_empty_lines`). Binning by max
    would let a gap narrower than a thumbnail pixel vanish (the valid neighbours win), so each run is drawn on the
    thumbnail row (column) holding its middle: every gap stays visible at any size. Rows (columns) entirely inside
    a gap are masked anyway.
    """
    lines = []
    for axis, empty in ((0, empty_rows), (1, empty_cols)):
        n_det = empty.shape[0]
        if empty.all() or not empty.any():
            lines.append(np.zeros(0, np.intp))
            continue
        runs = _runs(empty)
        mids = (runs[:, 0] + runs[:, 1] - 1) // 2
        # Only the runs' middle rows are looked up (not all n_det rows).
        index = _thumb_index(mids, factor, binned_shape[axis], out_shape[axis])
        lines.append(np.unique(np.clip(index, 0, out_shape[axis] - 1)))
    return lines


def _percentiles(values: np.ndarray, q: Tuple[float, ...]) -> np.ndarray:
    """``np.percentile(values, q)`` (method 'linear', Hyndman & Fan type 7), bit for bit, from one sort.

    One full sort of the thumbnail's values is ~3x cheaper than the selection np.percentile does for three
    percentiles. Type 7 is h = (n - 1) q / 100, j = floor(h), g = h - j, and the value x[j] + g (x[j+1] - x[j]);
    np.percentile evaluates that lerp from the nearer end (x[j+1] - (1 - g)(x[j+1] - x[j]) when g >= 1/2) and uses
    the last value for h >= n - 1, so this does the same IEEE operations (checked bitwise in
    tests/test_thumbnail_limits.py, infinities included). `values` (1-D float64) is sorted in place; NaN values
    (sorted last) fall back to np.percentile itself.
    """
    values.sort()
    n = values.shape[0]
    if n == 0 or np.isnan(values[-1]):
        return np.percentile(values, q)
    out = np.empty(len(q), np.float64)
    with np.errstate(invalid="ignore"):  # inf - inf is NaN, as in np.percentile
        for i, qi in enumerate(q):
            h = np.float64(n - 1) * (np.float64(qi) / np.float64(100))
            if h >= n - 1:  # the last value, reached as a zero-width lerp from it
                lo = hi = values[-1]
                g = h + 1.0
            else:
                j = int(np.floor(h))
                lo, hi = values[j], values[j + 1]
                g = h - j
            d = hi - lo
            out[i] = hi - d * (1.0 - g) if g >= 0.5 else lo + d * g
    return out


def _scaled(v: np.ndarray, valid: np.ndarray, scale: str, percentiles: Tuple[float, float],
            overwrite: bool = False) -> np.ndarray:
    """Map values to [0, 1] with robust limits from percentiles of the valid cells. `overwrite`: `v` (float64,
    C-contiguous) may be reused as the result (one thumbnail-sized array less to allocate and fault in)."""
    good = v[valid]
    if good.size == 0:
        return np.zeros(v.shape, np.float64)
    lo, med, hi = _percentiles(good, (percentiles[0], 50.0, percentiles[1]))
    # In place on one buffer: the same IEEE operations as clip(v - lo) / unit etc., without temporaries.
    x = np.subtract(v, lo, out=v if overwrite and v.dtype == np.float64 and v.flags.c_contiguous else None)
    np.clip(x, 0.0, None, out=x)
    span = float(hi - lo)
    if not np.isfinite(span) or span <= 0:
        return (x > 0).astype(np.float64)  # flat image: anything above the floor is full scale
    if scale == "linear":
        x /= span
    elif scale == "log":
        # log1p in units of the typical background so that faint rings stay visible next to 1e5-count spots
        unit = max(float(med - lo), span * 1e-4, 1e-300)
        x /= unit
        np.log1p(x, out=x)
        x /= np.log1p(span / unit)
    else:  # asinh: linear near the floor, logarithmic far above it
        unit = max(float(med - lo), span * 1e-4, 1e-300)
        x /= unit
        np.arcsinh(x, out=x)
        x /= np.arcsinh(span / unit)
    return np.clip(x, 0.0, 1.0, out=x)


def make_thumbnail(image: Any, size: int = 300, mode: str = "max", dilate: Optional[int] = None,
                   scale: str = "log", mask: Any = None, *, percentiles: Sequence[float] = (1.0, 99.9),
                   cmap: str = "gray_r", masked_color: Sequence[int] = (40, 110, 200),
                   show_gaps: bool = True, n_threads: Optional[int] = None) -> np.ndarray:
    """RGB thumbnail of a detector image whose longest side is `size` pixels.

    The image is optionally dilated (so isolated Bragg spots survive), binned by the largest integer factor that
    keeps at least `size` cells along the longest side (max or sum of each block), resized to exactly `size`
    (max, or mean for 'sum', over the cells each thumbnail pixel covers; nearest neighbour when enlarging),
    scaled between robust limits and coloured.

    Parameters
    ----------
    image : array_like, shape (H, W) or (N, H, W)
        A detector frame (uint8, uint16, int16, int32, uint32, int64, float32 or float64; any byte order), or a stack of them
        (each frame gets its own thumbnail and colour limits). Never modified.
    size : int
        Longest side of the thumbnail in pixels (the other side keeps the aspect ratio, at least 1).
    mode : {'max', 'sum'}
        Block maximum (keeps sharp spots) or block sum (keeps integrated intensity).
    dilate : int, optional
        If given, grey-dilate the image with a `dilate` x `dilate` square first.
    scale : {'log', 'asinh', 'linear'}
        Intensity scale between the limits.
    mask : array_like of bool, optional
        True = valid pixel (LOKI's convention). Default ``image >= 0`` (Pilatus marks gaps -1 and bad
        pixels -2); NaN pixels are always invalid. Thumbnail pixels with no valid pixel get `masked_color`.
    percentiles : (float, float)
        Percentiles of the valid thumbnail values that map to the ends of the colour scale.
    cmap : str
        'gray_r' (default: dark spots on white), 'gray', or a matplotlib colormap name (needs matplotlib).
    masked_color : (int, int, int)
        RGB of thumbnail pixels without any valid detector pixel.
    show_gaps : bool
        Draw every gap line of the detector (a run of rows or columns without a valid pixel across the whole frame,
        e.g. the 11 horizontal and 4 vertical module gaps of a Pilatus 6M) in `masked_color` on the thumbnail row
        or column holding its middle, so that gaps narrower than a thumbnail pixel stay visible (max-binning would
        otherwise fill them from their valid neighbours). The gaps are those of the mask before dilation.
    n_threads : int, optional
        Threads for binning and dilation; None = all usable cores.

    Returns
    -------
    ndarray, shape (h, w, 3) (or (N, h, w, 3) for a stack), uint8
    """
    img = _as_image(image)
    _resolve_threads(n_threads)  # the n_threads rule, checked before any work
    if img.ndim == 3:
        masks = [None] * len(img) if mask is None else list(np.broadcast_to(np.asarray(mask), img.shape))
        return np.stack([make_thumbnail(frame, size, mode, dilate, scale, m, percentiles=percentiles, cmap=cmap,
                                        masked_color=masked_color, show_gaps=show_gaps, n_threads=n_threads)
                         for frame, m in zip(img, masks)])
    _check_size(size)
    _check_memory(size, img.shape)
    p, color, lut = _check_style(mode, scale, percentiles, masked_color, cmap)

    default_rule = mask is None
    if default_rule and dilate is None and mode == "max":
        # The default rule "valid = pixel >= 0" folded into the binning: a block's max over its valid pixels is
        # its plain max whenever that is >= 0, and the block has no valid pixel otherwise (NaN never wins the
        # plain max either). So the unmasked kernel runs (no full-frame mask pass) and validity comes from the
        # binned values -- the same thumbnail as the masked binning.
        m = m_det = None
    else:
        m = (img >= 0) if default_rule else _as_mask(mask, img.shape).view(np.bool_)  # >= 0: False for NaN too
        m_det = m
    if dilate is not None:
        if isinstance(dilate, (bool, np.bool_)) or not isinstance(dilate, (int, np.integer)) or dilate <= 0:
            raise ValueError(f"dilate must be None or a positive int, got {dilate!r}")
        img_det = img
        img = dilate_max(img, int(dilate), m, n_threads=n_threads)
        # A dilated pixel is valid when its window held a valid pixel.
        m = dilate_max(m.view(np.uint8), int(dilate), n_threads=n_threads).view(np.bool_)
    else:
        img_det = img

    H, W = img.shape
    longest = max(H, W)
    factor = max(1, longest // size)
    if m is None:
        binned = _bin(mode, img, factor, None, None, n_threads, want_valid=False)[0]
        valid = binned >= 0  # False for NaN
    else:
        binned, valid = _bin(mode, img, factor, m, None, n_threads, want_valid=True)
    if show_gaps:
        def gaps():
            return _empty_lines(m_det, img_det)
    else:
        gaps = None
    return _finish(binned, valid, factor, (H, W), size, mode, scale, p, lut, color, gaps)


def _check_size(size: Any) -> None:
    if isinstance(size, (bool, np.bool_)) or not isinstance(size, (int, np.integer)):
        raise TypeError(f"size must be a positive int, got {size!r}")
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")


def _check_memory(size: int, shape: Tuple[int, ...]) -> None:
    """Up front: the thumbnail's float64 working arrays (~40 bytes per output pixel) must fit in memory."""
    longest_in = max(shape)
    _checks.check_memory(40.0 * size * max(1.0, size * min(shape) / longest_in),
                         f"size={size} (a {size}-pixel thumbnail)")


def _check_style(mode: Any, scale: Any, percentiles: Any, masked_color: Any,
                 cmap: Any) -> Tuple[Tuple[float, float], np.ndarray, np.ndarray]:
    """Checks make_thumbnail's options; returns the percentiles, the masked colour and the colormap's LUT."""
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if scale not in _SCALES:
        raise ValueError(f"scale must be one of {_SCALES}, got {scale!r}")
    p = tuple(float(q) for q in percentiles)
    if len(p) != 2 or not (0.0 <= p[0] <= p[1] <= 100.0):
        raise ValueError(f"percentiles must be two values 0 <= lo <= hi <= 100, got {percentiles!r}")
    color = np.asarray(masked_color)
    if color.shape != (3,) or not np.all((0 <= color) & (color <= 255)):
        raise ValueError(f"masked_color must be 3 values in 0..255, got {masked_color!r}")
    return p, color, _colormap(cmap)


def _finish(binned: np.ndarray, valid: np.ndarray, factor: int, shape: Tuple[int, int], size: int, mode: str,
            scale: str, p: Tuple[float, float], lut: np.ndarray, color: np.ndarray, gaps) -> np.ndarray:
    """make_thumbnail after the binning: resize to the thumbnail, gap lines (``gaps()`` -> the detector's empty
    rows and columns, or None for show_gaps=False), scaling and colouring. `shape` is the detector's (H, W)."""
    H, W = shape
    longest = max(H, W)
    out_h = max(1, round(H * size / longest))
    out_w = max(1, round(W * size / longest))
    if mode == "max":
        # One compiled pass over the binned image (spec: reference.resample_max), the same cells as the two axis
        # passes of _resample_axis; a max commutes with the (monotone) conversion to float64, so the resize runs
        # in the binned dtype and only the thumbnail-sized result is converted.
        ry0, ry1 = _cell_ranges(binned.shape[0], out_h)
        rx0, rx1 = _cell_ranges(binned.shape[1], out_w)
        vm = np.empty((out_h, out_w), binned.dtype)
        ok = np.empty((out_h, out_w), np.uint8)
        _binning.resample_max(binned, np.ascontiguousarray(valid).view(np.uint8), ry0, ry1, rx0, rx1, vm, ok)
        v, valid = vm.astype(np.float64), ok.view(np.bool_)
    else:
        v = binned.astype(np.float64)
        v, valid = _resample_axis(v, valid, out_h, 0, mode)
        v, valid = _resample_axis(v, valid, out_w, 1, mode)
    if gaps is not None:
        empty_rows, empty_cols = gaps()
        rows, cols = _gap_lines(empty_rows, empty_cols, factor, binned.shape, (out_h, out_w))
        if rows.size or cols.size:
            valid = valid.copy()
            valid[rows, :] = False
            valid[:, cols] = False

    t = _scaled(v, valid, scale, p, overwrite=True)  # v is this function's own float64 copy
    # One compiled pass: rint(255 t) indexes the LUT, masked cells get masked_color (spec: reference.lut_rgb; the
    # NumPy steps below took 0.5-0.8 ms on a 300 px thumbnail, this pass ~0.1 ms).
    rgb = np.empty(t.shape + (3,), np.uint8)
    if _binning.lut_rgb(np.ascontiguousarray(t), np.ascontiguousarray(valid).view(np.uint8),
                        np.ascontiguousarray(lut, np.uint8), np.ascontiguousarray(color, np.uint8), rgb):
        _log.debug("thumbnail %dx%d of a %dx%d image (bin %d, %s, %s)", out_h, out_w, H, W, factor, mode, scale)
        return rgb
    # A valid index out of the LUT (NaN): the NumPy path, with its error. Masked cells index a 257th LUT row
    # holding masked_color: one gather, no second pass over the RGB image.
    t *= 255
    idx = np.rint(t, out=t).astype(np.intp)
    idx[~valid] = 256
    # The LUT's rows padded to 4 bytes: a gather of one uint32 per pixel, then the three channels copied out
    # (median 0.33 vs 0.54 ms for np.take of 3-byte rows, itself ~4x faster than lut[idx]).
    lut4 = np.zeros((257, 4), np.uint8)
    lut4[:256, :3] = lut
    lut4[256, :3] = color
    packed = np.take(lut4.view(np.uint32).reshape(257), idx).view(np.uint8).reshape(idx.shape + (4,))
    rgb = np.empty(idx.shape + (3,), np.uint8)
    for c in range(3):
        rgb[..., c] = packed[..., c]
    _log.debug("thumbnail %dx%d of a %dx%d image (bin %d, %s, %s)", out_h, out_w, H, W, factor, mode, scale)
    return rgb


def thumbnail_file(path: Any, size: int = 300, mode: str = "max", dilate: Optional[int] = None, scale: str = "log",
                   mask: Any = None, *, dataset: Optional[str] = None, frame: Optional[int] = None,
                   percentiles: Sequence[float] = (1.0, 99.9), cmap: str = "gray_r",
                   masked_color: Sequence[int] = (40, 110, 200), show_gaps: bool = True,
                   n_threads: Optional[int] = None) -> Tuple[np.ndarray, Callable[[], None]]:
    """RGB thumbnail of a detector image file: ``make_thumbnail(read_image(path, dataset, frame), ...)``, faster.

    The result is exactly that of :func:`make_thumbnail` on the image :func:`xcca.io.read_image` returns, for every
    option. For the common case -- an int32 byte-offset CBF (Pilatus), ``mode='max'``, no `mask` (the default rule
    "valid = pixel >= 0"), no `dilate` -- the frame is never stored: the compiled decoder folds each decoded row
    into the block maxima and the empty-row/column flags the thumbnail needs (xcca._core.cbf_byte_offset_bin_max,
    spec :func:`xcca.reference.cbf_bin_max`), which saves writing and re-reading the 25 MB frame of a Pilatus 6M.
    Every other file or option is read with :func:`xcca.io.read_image_deferred` and thumbnailed by
    :func:`make_thumbnail`.

    Like :func:`xcca.io.read_image_deferred`, the CBF Content-MD5 check may still be running when this returns
    (with `n_threads` other than 1): call the returned `verify` -- or pass it to :func:`write_png` -- before the
    thumbnail leaves the program.

    Parameters
    ----------
    path : str or path-like
        A detector image, as for :func:`xcca.io.read_image` (HDF5 as ``"file.h5::/entry/data"``).
    size, mode, dilate, scale : optional
        As for :func:`make_thumbnail`.
    mask : array_like of bool, optional
        True = valid pixel (LOKI's convention), shape (H, W) of the image; default ``image >= 0``.
    dataset, frame : optional
        As for :func:`xcca.io.read_image` (an HDF5 dataset; a frame of a stack).
    percentiles, cmap, masked_color, show_gaps : optional
        As for :func:`make_thumbnail`.
    n_threads : int, optional
        Threads for binning and dilation; None = all usable cores. With 1 the Content-MD5 is checked on this
        thread before returning (`verify` then does nothing).

    Returns
    -------
    rgb : ndarray, shape (h, w, 3) (or (N, h, w, 3) for a stack), uint8
        The thumbnail, as :func:`make_thumbnail` returns it.
    verify : callable
        ``verify()`` waits for a pending Content-MD5 check and raises OSError naming the file if it failed.

    Raises
    ------
    FileNotFoundError, OSError
        As :func:`xcca.io.read_image` (a missing, unreadable, truncated or corrupt file; the message names it).
    TypeError, ValueError
        A bad option (named), as :func:`make_thumbnail` raises them; a bad `dataset` or `frame` as
        :func:`xcca.io.read_image`.
    """
    from . import io

    threads = _resolve_threads(n_threads)  # the n_threads rule, checked before any work
    _check_size(size)
    p, color, lut = _check_style(mode, scale, percentiles, masked_color, cmap)
    options = dict(percentiles=percentiles, cmap=cmap, masked_color=masked_color, show_gaps=show_gaps,
                   n_threads=n_threads)
    # Where read_image would decode a byte-offset CBF itself, read it here (with the MD5 check deferred unless on one
    # thread: it starts while the file is still being read) and bin it while decoding when the options allow.
    file = io._compiled_cbf_file(path, dataset, frame)
    checks: Optional[list] = None if threads == 1 else []
    fr = io._cbf_frame(file, checks) if file is not None else None
    fused = fr is not None and fr.dtype == "<i4" and mode == "max" and mask is None and dilate is None
    if not fused:
        if fr is not None:  # what read_image returns for this file, from the bytes already read
            data, verify = io._cbf_pixels(file, fr, n_threads), (lambda: _wait(checks))
        elif threads == 1:
            data, verify = io.read_image(path, dataset=dataset, frame=frame), _no_check
        else:
            data, verify = io.read_image_deferred(path, dataset=dataset, frame=frame)
        try:
            return make_thumbnail(data, size, mode, dilate, scale, mask, **options), verify
        except Exception:
            verify()  # a corrupt file is reported as such, not by what its garbage did to the thumbnail
            raise
    H, W = fr.h, fr.w
    _check_memory(size, (H, W))
    factor = max(1, max(H, W) // size)
    binned, empty_rows, empty_cols = io._cbf_bin_max(file, fr, factor, n_threads)
    del fr  # the file's bytes stay referenced only by a pending MD5 check
    # As make_thumbnail without a mask: the block max is the max over the valid pixels whenever it is >= 0.
    gaps = (lambda: (empty_rows, empty_cols)) if show_gaps else None
    try:
        rgb = _finish(binned, binned >= 0, factor, (H, W), size, mode, scale, p, lut, color, gaps)
    except Exception:
        _wait(checks)
        raise
    return rgb, (_no_check if not checks else lambda: _wait(checks))


def _no_check() -> None:
    return None


def _wait(checks: Optional[list]) -> None:
    for fut in checks or ():
        fut.result()


def write_png(rgb: np.ndarray, path: Any, *, inputs: Any = None, verify: Any = None,
              n_threads: Optional[int] = None) -> None:
    """Write an RGB uint8 thumbnail as a PNG file, atomically, never over an input.

    Encoded here (8-bit RGB, no interlace, filter type None on every row, one zlib stream at level 1): Pillow's
    encoder tries its five PNG filters on every row, which took longer than the compression itself on a 300 px
    thumbnail (write_png: 6.3 ms of CPU with Pillow, 3.6 ms here, on the shared 2-core test machine); the file is
    ~2 % larger (~1/4 of uncompressed) and decodes to the same pixels with any PNG reader. An image of 64 KiB or more
    is deflated as two halves, the first on a second thread when there is a second core (see :func:`_deflate`): the
    same bytes either way. The file is written to a temporary name and renamed into place, so an existing `path` is
    only replaced by a complete PNG.

    Parameters
    ----------
    rgb : ndarray, shape (h, w, 3), uint8
        The thumbnail (as returned by :func:`make_thumbnail`).
    path : str or path-like
        The PNG file to write.
    inputs : path-like or sequence of them, optional
        The image files the thumbnail was made from: `path` must not be one of them (same name, symlink or hard
        link); checked before anything is written.
    verify : callable, optional
        Called after the PNG is written to its temporary name and before it is renamed into place (e.g. the
        `verify` of :func:`xcca.io.read_image_deferred`, whose MD5 check then overlaps the encoding); if it raises,
        the temporary file is removed, `path` is untouched and the exception propagates.
    n_threads : int, optional
        1: both halves are deflated on the calling thread (for callers that keep the other cores busy with other
        images: `xcca thumbnail -j 2`); None = the first half on a second thread when there is a second core. The
        bytes are the same either way.

    Raises
    ------
    ValueError
        `rgb` is not an (h, w, 3) uint8 array, or `path` is one of `inputs` (:class:`xcca.files.OutputIsInputError`).
    OSError
        The file cannot be written, or `verify` raised it (e.g. the input failed its Content-MD5).
    """
    from .files import atomic_write

    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.size == 0:
        raise ValueError(f"rgb must be a (h, w, 3) uint8 array, got {rgb.dtype} {rgb.shape}")
    split = _resolve_threads(n_threads) > 1  # the n_threads rule, checked before any work
    data = _png_bytes(rgb, split)  # before the file exists: an encoding error leaves nothing behind
    with atomic_write(path, inputs=inputs) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
        if verify is not None:
            verify()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))


# Scanline data from this size on is deflated as two halves (a 300 px RGB thumbnail is ~260 kB).
_SPLIT_MIN_BYTES = 1 << 16


def _deflate_raw(data: memoryview, last: bool) -> bytes:
    c = zlib.compressobj(1, zlib.DEFLATED, -15)  # raw deflate, level 1
    return c.compress(data) + c.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def _deflate(data: memoryview, split: bool = True) -> bytes:
    """The zlib stream (level 1) of `data`; from _SPLIT_MIN_BYTES on, made of two independently deflated halves.

    zlib spends ~15 ns per byte here, the largest single step of a thumbnail after the decode. A deflate stream may
    continue after a sync-flushed (byte-aligned, non-final) block with blocks that refer only to later data, so the
    halves are compressed separately (the first on a pool thread when a second core is usable; zlib releases the
    GIL) and joined under one header and one Adler-32 of the whole: the calling thread does half the work, and the
    bytes depend only on `data` (file ~0.3 % larger than one stream).
    """
    n = len(data)
    if n < _SPLIT_MIN_BYTES:
        return zlib.compress(data, 1)
    cut = n // 2
    from .binning import _executor, _usable_cores

    if split and _usable_cores() > 1:
        first = _executor().submit(_deflate_raw, data[:cut], False)
        second = _deflate_raw(data[cut:], True)
        head = first.result()
    else:
        head, second = _deflate_raw(data[:cut], False), _deflate_raw(data[cut:], True)
    # 0x78 0x01: deflate, 32 KiB window, "fastest" level (what zlib.compress(level=1) writes)
    return b"\x78\x01" + head + second + struct.pack(">I", zlib.adler32(data))


def _png_bytes(rgb: np.ndarray, split: bool = True) -> bytes:
    """The PNG file (PNG specification, ISO/IEC 15948) of an (h, w, 3) uint8 image: IHDR, one IDAT, IEND.
    `split`: deflate the first half on a second thread when there is a second core (same bytes either way)."""
    h, w = rgb.shape[:2]
    if h >= 2 ** 31 or w >= 2 ** 31:
        raise ValueError(f"rgb of shape {rgb.shape} is too large for a PNG")
    scan = np.empty((h, 1 + 3 * w), np.uint8)
    scan[:, 0] = 0  # filter type None
    scan[:, 1:] = rgb.reshape(h, 3 * w)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit truecolour, deflate, adaptive filtering, no interlace
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", _deflate(memoryview(scan).cast("B"), split)) + _png_chunk(b"IEND", b""))
