"""Executable specification of every compiled kernel of xcca, in plain NumPy.

Each function here is the slow, obviously-right version of a compiled kernel; the tests compare the compiled kernel
against it on generated inputs. Nothing here is meant to be fast. Masks: True = valid pixel.
"""
from __future__ import annotations

import numpy as np

__all__: list[str] = []


# ===== binning and dilation (issue 2) =====
# Conventions shared with xcca.bin_max / bin_sum / dilate_max: mask True = valid; NaN counts as masked; an empty
# max (no valid pixel) is the dtype's lowest value (-inf for floats), an empty sum is 0.


def _binning_lowest(dtype: np.dtype):
    dtype = np.dtype(dtype)
    return -np.inf if dtype.kind == "f" else np.iinfo(dtype).min


def _binning_valid(image: np.ndarray, mask) -> np.ndarray:
    valid = np.ones(image.shape, bool) if mask is None else np.broadcast_to(np.asarray(mask, bool), image.shape)
    if image.dtype.kind == "f":
        valid = valid & ~np.isnan(image)
    return valid


def _binning_factor(factor):
    return (factor, factor) if np.ndim(factor) == 0 else tuple(factor)


def bin_max(image, factor, mask=None):
    """Max over each fy x fx block of a 2-D image (partial edge blocks kept); masked pixels never win."""
    image = np.asarray(image)
    fy, fx = _binning_factor(factor)
    H, W = image.shape
    valid = _binning_valid(image, mask)
    out = np.empty((-(-H // fy), -(-W // fx)), image.dtype)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            block = image[i * fy:(i + 1) * fy, j * fx:(j + 1) * fx][valid[i * fy:(i + 1) * fy, j * fx:(j + 1) * fx]]
            out[i, j] = block.max() if block.size else _binning_lowest(image.dtype)
    return out


def bin_sum(image, factor, mask=None):
    """Sum over each fy x fx block in int64 (integers) or float64, masked pixels and NaN left out.

    Float sums are formed in the order the kernel uses: down each column of the block, then across the columns.
    """
    image = np.asarray(image)
    fy, fx = _binning_factor(factor)
    H, W = image.shape
    acc = np.float64 if image.dtype.kind == "f" else np.int64
    vals = np.where(_binning_valid(image, mask), image, 0).astype(acc)
    Ho, Wo = -(-H // fy), -(-W // fx)
    vals = np.pad(vals, ((0, Ho * fy - H), (0, Wo * fx - W))).reshape(Ho, fy, Wo, fx)
    cols = vals[:, 0]
    for i in range(1, fy):
        cols = cols + vals[:, i]
    out = cols[:, :, 0]
    for j in range(1, fx):
        out = out + cols[:, :, j]
    return out


def dilate_max(image, size, mask=None):
    """Grey dilation with a size x size square: the max over the window clipped to the image.

    The window of (y, x) is rows y - (size-1)//2 .. y + size//2 and the same for columns (scipy.ndimage's
    placement); masked pixels never win; a window without valid pixels gives the dtype's lowest value.
    """
    image = np.asarray(image)
    H, W = image.shape
    a, b = (size - 1) // 2, size // 2
    valid = _binning_valid(image, mask)
    out = np.empty_like(image)
    for y in range(H):
        for x in range(W):
            ys, xs = slice(max(0, y - a), y + b + 1), slice(max(0, x - a), x + b + 1)
            win = image[ys, xs][valid[ys, xs]]
            out[y, x] = win.max() if win.size else _binning_lowest(image.dtype)
    return out


__all__ += ["bin_max", "bin_sum", "dilate_max"]


# ===== polar remap (issue 3) =====


# ===== correlations (issue 4) =====


# ===== ring fits, outliers and pairing (issue 5) =====
