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
    """Max over each fy x fx block of a 2-D image (partial edge blocks kept); masked pixels never win.

    Parameters
    ----------
    image : array_like, 2-D
        The image (any real dtype).
    factor : int or (int, int)
        Block size (fy, fx).
    mask : array_like of bool, optional
        True = valid pixel (LOKI's convention); NaN pixels are invalid too.
    """
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
    

    Parameters
    ----------
    image : array_like, 2-D
        The image.
    factor : int or (int, int)
        Block size (fy, fx).
    mask : array_like of bool, optional
        True = valid pixel (LOKI's convention).
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
    

    Parameters
    ----------
    image : array_like, 2-D
        The image.
    size : int
        Side of the square window.
    mask : array_like of bool, optional
        True = valid pixel (LOKI's convention).
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


def empty_lines(image, mask=None):
    """Rows and columns of a 2-D image without any valid pixel (the gap lines of a detector frame).

    Parameters
    ----------
    image : array_like, 2-D
        The image.
    mask : array_like of bool, optional
        True = valid pixel; it alone decides. Without it a pixel is valid when ``image >= 0`` (NaN invalid).

    Returns
    -------
    (ndarray of bool, ndarray of bool)
        Per row and per column: True when it has no valid pixel.
    """
    image = np.asarray(image)
    valid = np.asarray(mask, bool) if mask is not None else image >= 0
    return ~valid.any(axis=1), ~valid.any(axis=0)


def resample_max(values, valid, y0, y1, x0, x1):
    """Max over rectangles of cells: out[j, i] = max of the valid cells in rows [y0[j], y1[j]) x [x0[i], x1[i]).

    Parameters
    ----------
    values : array_like, 2-D
        The cells (a max-binned image).
    valid : array_like of bool, 2-D
        True = valid cell; NaN cells count as invalid.
    y0, y1, x0, x1 : sequences of int
        Row and column ranges of every output row and column (non-empty, inside `values`).

    Returns
    -------
    (ndarray, ndarray of bool)
        The maxima in the dtype of `values` (its lowest value where a rectangle has no valid cell) and whether it
        has one.
    """
    values = np.asarray(values)
    ok = _binning_valid(values, valid)
    out = np.empty((len(y0), len(x0)), values.dtype)
    has = np.empty(out.shape, bool)
    for j in range(len(y0)):
        for i in range(len(x0)):
            cell = values[y0[j]:y1[j], x0[i]:x1[i]][ok[y0[j]:y1[j], x0[i]:x1[i]]]
            has[j, i] = cell.size > 0
            out[j, i] = cell.max() if cell.size else _binning_lowest(values.dtype)
    return out, has


def lut_rgb(t, valid, lut, color):
    """The thumbnail's colouring: ``lut[rint(255 t)]`` where valid, `color` elsewhere.

    Parameters
    ----------
    t : array_like of float64, 2-D
        Scaled values (in [0, 1] where valid).
    valid : array_like of bool, 2-D
        True = coloured from the LUT.
    lut : array_like of uint8, (n, 3)
        The colormap.
    color : array_like of uint8, (3,)
        The colour of the invalid cells.

    Returns
    -------
    ndarray of uint8, (h, w, 3)
    """
    t = np.asarray(t, np.float64)
    valid = np.asarray(valid, bool)
    out = np.empty(t.shape + (3,), np.uint8)
    out[...] = np.asarray(color, np.uint8)
    out[valid] = np.asarray(lut, np.uint8)[np.rint(t[valid] * 255).astype(np.intp)]
    return out


__all__ += ["bin_max", "bin_sum", "dilate_max", "empty_lines", "resample_max", "lut_rgb"]


# ===== CBF byte-offset decode folded into the thumbnail's binning (issue 15) =====
# xcca._core.cbf_byte_offset_bin_max decodes an int32 byte-offset frame row by row into bin_max and empty_lines
# without storing it; its spec is the plain decode followed by those two.


def cbf_byte_offset_int32(data, n_values):
    """Decode CBF byte-offset data into `n_values` int32 pixels (fabio's dec_cbf32 rules; xcca/cbf.hpp).

    Each value is the previous one (0 before the first) plus a delta: one signed byte, or the byte 0x80 and a
    little-endian int16, or (int16 = -32768) an int32; sums wrap modulo 2^32. A 32-bit escape is never the 64-bit
    marker for int32.

    Parameters
    ----------
    data : bytes
        The binary section.
    n_values : int
        Pixels of the image.

    Returns
    -------
    (str, ndarray of int32, int)
        Status ('ok', 'truncated_escape': the data end inside an escape, 'too_few_values': the data end before
        `n_values` values, 'trailing_bytes': bytes are left after the last value), the values decoded (all
        `n_values` when 'ok' or 'trailing_bytes') and the bytes used.
    """
    data = bytes(data)
    n = len(data)
    out = []
    last, i, status = 0, 0, "ok"
    while len(out) < n_values:
        if i >= n:
            status = "too_few_values"
            break
        if data[i] != 0x80:
            d, step = int.from_bytes(data[i:i + 1], "little", signed=True), 1
        elif n - i < 3:
            status = "truncated_escape"
            break
        elif int.from_bytes(data[i + 1:i + 3], "little", signed=True) != -32768:
            d, step = int.from_bytes(data[i + 1:i + 3], "little", signed=True), 3
        elif n - i < 7:
            status = "truncated_escape"
            break
        else:
            d, step = int.from_bytes(data[i + 3:i + 7], "little", signed=True), 7
        last = (last + d + 2**31) % 2**32 - 2**31
        out.append(last)
        i += step
    if status == "ok" and i < n:
        status = "trailing_bytes"
    return status, np.array(out, np.int32), i


def cbf_bin_max(data, height, width, factor, expected_md5=None):
    """An int32 byte-offset CBF frame decoded, then block-maxed and scanned for empty lines.

    Parameters
    ----------
    data : bytes
        The binary section.
    height, width : int
        The frame's size (pixels = height x width).
    factor : int
        Block size (factor x factor; partial edge blocks kept).
    expected_md5 : bytes, optional
        The raw 16-byte MD5 the data must have ('md5_mismatch' wins over any other status).

    Returns
    -------
    (str, int, int, ndarray or None, ndarray or None, ndarray or None)
        Status (as :func:`cbf_byte_offset_int32`, or 'md5_mismatch'), values decoded, bytes used, and when the
        status is 'ok': ``bin_max(frame, factor)`` (int32), then the rows and the columns without a pixel >= 0
        (:func:`empty_lines`).
    """
    import hashlib

    status, values, used = cbf_byte_offset_int32(data, height * width)
    if expected_md5 is not None and hashlib.md5(bytes(data)).digest() != bytes(expected_md5):
        status = "md5_mismatch"
    if status != "ok":
        return status, len(values), used, None, None, None
    frame = values.reshape(height, width)
    rows, cols = empty_lines(frame)
    return status, len(values), used, bin_max(frame, factor), rows, cols


# ===== polar remap (issue 3) =====

__all__ += ["polar_angles", "polar_remap", "radial_profile", "fill_masked"]


def polar_angles(nphi: int, phi0: float = 0.0) -> np.ndarray:
    """phi_j = phi0 + 2 pi j / nphi, j = 0 .. nphi-1 (endpoint excluded), float64.

    Parameters
    ----------
    nphi : int
        Number of angles.
    phi0 : float
        First angle in radians.
    """
    return phi0 + (2.0 * np.pi * np.arange(nphi, dtype=np.float64)) / nphi


def polar_remap(image, center, radii, nphi, phi0=0.0, mask=None, method="bilinear", mask_mode="strict",
                fill=np.nan):
    """Polar remap of one 2-D image, written out sample by sample (vectorised) in float64.

    Sample (i, j) is at column x = cx + r_i cos(phi_j), row y = cy + r_i sin(phi_j). nearest: pixel
    (floor(y) + [frac(y) >= 0.5], floor(x) + [frac(x) >= 0.5]), inside when -0.5 <= x < W - 0.5 (same for y).
    bilinear: pixels (r0, c0), (r0, c1), (r1, c0), (r1, c1) with c0 = floor(x), c1 = c0 + [frac(x) > 0] (a zero
    weight column aliases c0, so a pixel is "used" only with a positive weight), weights (1 - fy, fy) x (1 - fx, fx).
    mask: True = valid pixel. strict: valid iff every used pixel is inside and valid; renormalize: the valid used
    pixels with renormalised weights, valid iff their weight sum >= 0.5 (the strict value where all are valid).
    Returns (values float64 (nr, nphi) with ``fill`` at invalid samples, valid bool (nr, nphi)).
    

    Parameters
    ----------
    image : array_like, (H, W)
        The image.
    center : (float, float)
        Centre (x, y) in pixels, x along columns.
    radii : array_like, (nr,)
        Ring radii in pixels.
    nphi : int
        Angles per ring.
    phi0 : float
        First angle in radians.
    mask : array_like of bool, optional
        True = valid pixel (LOKI's convention).
    method : {'nearest', 'bilinear'}
        Interpolation rule (above).
    mask_mode : {'strict', 'renormalize'}
        How masked pixels enter a bilinear sample (above).
    fill : float
        Value of invalid samples.
    """
    img = np.asarray(image).astype(np.float64)
    H, W = img.shape
    valid_px = np.ones((H, W), bool) if mask is None else np.asarray(mask, bool)
    radii = np.asarray(radii, np.float64)
    cx, cy = float(center[0]), float(center[1])
    phi = polar_angles(nphi, phi0)
    x = cx + radii[:, None] * np.cos(phi)[None, :]
    y = cy + radii[:, None] * np.sin(phi)[None, :]
    return sample_at(img, x, y, mask=mask, method=method, mask_mode=mask_mode, fill=fill)


def sample_at(image, x, y, mask=None, method="bilinear", mask_mode="strict", fill=np.nan, dtype=np.float64):
    """The sampling rules of :func:`polar_remap` at arbitrary coordinates x (column), y (row) of equal shape.

    dtype: the arithmetic (np.float64; np.float32 for single-precision grids, with x, y, the pixel values and every
    operation in float32)."""
    dtype = np.dtype(dtype).type
    img = np.asarray(image).astype(dtype)
    x, y = np.asarray(x).astype(dtype), np.asarray(y).astype(dtype)
    H, W = img.shape
    valid_px = np.ones((H, W), bool) if mask is None else np.asarray(mask, bool)
    out = np.full(x.shape, fill, dtype)

    def take(rows, cols, ok):
        v = np.zeros(rows.shape, dtype)
        v[ok] = img[rows[ok], cols[ok]]
        return v

    if method == "nearest":
        inside = (x >= -0.5) & (x < W - 0.5) & (y >= -0.5) & (y < H - 0.5)
        xs, ys = np.where(inside, x, 0.0), np.where(inside, y, 0.0)
        ix = (np.floor(xs) + (xs - np.floor(xs) >= 0.5)).astype(np.intp)
        iy = (np.floor(ys) + (ys - np.floor(ys) >= 0.5)).astype(np.intp)
        ok = inside.copy()
        ok[inside] = valid_px[iy[inside], ix[inside]]
        out[ok] = take(iy, ix, ok)[ok]
        return out, ok
    if method != "bilinear":
        raise ValueError(method)
    near = (x > -1.0) & (x < W) & (y > -1.0) & (y < H)
    xs, ys = np.where(near, x, 0.0), np.where(near, y, 0.0)
    fx0, fy0 = np.floor(xs), np.floor(ys)
    fx, fy = xs - fx0, ys - fy0
    c0, r0 = fx0.astype(np.intp), fy0.astype(np.intp)
    c1, r1 = c0 + (fx > 0), r0 + (fy > 0)

    def ok_px(rr, cc):
        ok = near & (rr >= 0) & (rr < H) & (cc >= 0) & (cc < W)
        ok[ok] = valid_px[rr[ok], cc[ok]]
        return ok

    k00, k01, k10, k11 = ok_px(r0, c0), ok_px(r0, c1), ok_px(r1, c0), ok_px(r1, c1)
    p00, p01, p10, p11 = take(r0, c0, k00), take(r0, c1, k01), take(r1, c0, k10), take(r1, c1, k11)
    wx0, wx1, wy0, wy1 = 1.0 - fx, fx, 1.0 - fy, fy
    full = k00 & k01 & k10 & k11
    out[full] = (wy0 * (wx0 * p00 + wx1 * p01) + wy1 * (wx0 * p10 + wx1 * p11))[full]
    valid = full
    if mask_mode == "renormalize":
        w00, w01 = np.where(k00, wy0 * wx0, 0.0), np.where(k01, wy0 * wx1, 0.0)
        w10, w11 = np.where(k10, wy1 * wx0, 0.0), np.where(k11, wy1 * wx1, 0.0)
        s = ((w00 + w01) + w10) + w11
        part = near & ~full & (s >= 0.5)
        acc = np.zeros(x.shape, dtype)
        for w, p, k in ((w00, p00, k00), (w01, p01, k01), (w10, p10, k10), (w11, p11, k11)):
            acc = acc + np.where(k, w * p, 0.0)
        out[part] = (acc / np.where(part, s, 1.0))[part]
        valid = full | part
    elif mask_mode != "strict":
        raise ValueError(mask_mode)
    return out, valid


def radial_profile(polar, polar_mask):
    """Mean of the valid samples (polar_mask True) of each ring, along the last axis; NaN for a ring with none.

    Parameters
    ----------
    polar : array_like, (..., nr, nphi)
        Polar image(s).
    polar_mask : array_like of bool
        True = valid sample (LOKI's convention), broadcastable to `polar`.
    """
    polar = np.asarray(polar, np.float64)
    m = np.broadcast_to(np.asarray(polar_mask, bool), polar.shape)
    count = m.sum(-1)
    total = np.where(m, polar, 0.0).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def fill_masked(polar, polar_mask, value="radial_mean"):
    """Copy of polar with the invalid samples replaced by value (a number, or the ring's radial mean).

    Parameters
    ----------
    polar : array_like, (..., nr, nphi)
        Polar image(s).
    polar_mask : array_like of bool
        True = valid sample (LOKI's convention).
    value : float or 'radial_mean'
        Fill value, or each ring's mean over its valid samples.
    """
    polar = np.array(polar, dtype=np.float64)
    m = np.broadcast_to(np.asarray(polar_mask, bool), polar.shape)
    if isinstance(value, str):
        fillv = np.broadcast_to(radial_profile(polar, m)[..., None], polar.shape)
    else:
        fillv = np.broadcast_to(float(value), polar.shape)
    polar[~m] = fillv[~m]
    return polar


# ===== correlations (issue 4) =====
# Direct O(n^2) circular sums in float64: C[k] = sum_j ma_j mb_{j+k} a_j b_{j+k} / sum_j ma_j mb_{j+k}.

__all__ += ["correlate_direct", "mask_pair_counts", "autocorrelate", "cross_correlate", "difference_correlation",
            "cos_psi"]


def mask_pair_counts(ma, mb):
    """counts[k] = sum_j ma_j mb_{(j+k) % n} (True = valid), as int64, by direct summation.

    Parameters
    ----------
    ma, mb : array_like of bool, (..., n)
        Masks of the two rings; True = valid.
    """
    ma = np.asarray(ma, dtype=bool)
    mb = np.asarray(mb, dtype=bool)
    n = ma.shape[-1]
    return np.stack([(ma & np.roll(mb, -k, axis=-1)).sum(-1) for k in range(n)], axis=-1).astype(np.int64)


def _masked_norm(a, m, normalize):
    """Rings a (float64) with invalid samples set to 0 (by selection: NaN there is ignored) and normalised."""
    a = np.where(m, a, 0.0)
    if normalize is None:
        return a
    cnt = m.sum(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = a.sum(-1, keepdims=True) / cnt
        if normalize == "mean":
            return a / mu
        d = np.where(m, a - mu, 0.0)
        sd = np.sqrt((d * d).sum(-1, keepdims=True) / cnt)
        return d / sd


def correlate_direct(a, b, ma=None, mb=None, normalize=None):
    """C[..., k] for rings a, b (..., n) with masks ma, mb (True = valid; None = all valid), by direct sums.

    normalize: None; "mean" (each ring divided by its masked mean); "std" (masked mean subtracted from the valid
    samples, then divided by the masked population standard deviation).
    

    Parameters
    ----------
    a, b : array_like, (..., n)
        The two rings.
    ma, mb : array_like of bool, optional
        True = valid (LOKI's convention); None = all valid.
    normalize : {None, 'mean', 'std'}
        As in :func:`xcca.autocorrelate`.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    ma = np.ones(a.shape, bool) if ma is None else np.broadcast_to(np.asarray(ma, bool), a.shape)
    mb = np.ones(b.shape, bool) if mb is None else np.broadcast_to(np.asarray(mb, bool), b.shape)
    x, y = _masked_norm(a, ma, normalize), _masked_norm(b, mb, normalize)
    n = a.shape[-1]
    num = np.stack([(x * np.roll(y, -k, axis=-1)).sum(-1) for k in range(n)], axis=-1)
    den = mask_pair_counts(ma, mb).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def autocorrelate(rings, mask=None, normalize=None, average=False):
    """Autocorrelation of each ring (..., nq, n); mask broadcastable to rings; average: mean over leading axes.

    Parameters
    ----------
    rings : array_like, (..., nq, n)
        Rings.
    mask : array_like of bool, optional
        True = valid sample (LOKI's convention), broadcastable to `rings`.
    normalize : {None, 'mean', 'std'}
        As in :func:`xcca.autocorrelate`.
    average : bool
        Mean over the leading (shot) axes.
    """
    a = np.asarray(rings, dtype=np.float64)
    m = None if mask is None else np.broadcast_to(np.asarray(mask, bool), a.shape)
    c = correlate_direct(a, a, m, m, normalize)
    return c.reshape(-1, *a.shape[-2:]).mean(0) if average else c


def cross_correlate(rings, q_pairs=None, mask=None, normalize=None, average=False):
    """C(q, q', k) for the (q, q') pairs (default all q <= q'), shape (..., npairs, n).

    Parameters
    ----------
    rings : array_like, (..., nq, n)
        Rings.
    q_pairs : array_like of int, (npairs, 2), optional
        (q, q') ring index pairs; default all q <= q'.
    mask : array_like of bool, optional
        True = valid sample (LOKI's convention).
    normalize : {None, 'mean', 'std'}
        As in :func:`xcca.cross_correlate`.
    average : bool
        Mean over the leading (shot) axes.
    """
    a = np.asarray(rings, dtype=np.float64)
    m = np.ones(a.shape, bool) if mask is None else np.broadcast_to(np.asarray(mask, bool), a.shape)
    nq = a.shape[-2]
    qp = np.stack(np.triu_indices(nq), 1) if q_pairs is None else np.asarray(q_pairs).reshape(-1, 2)
    qa, qb = qp[:, 0], qp[:, 1]
    c = correlate_direct(a[..., qa, :], a[..., qb, :], m[..., qa, :], m[..., qb, :], normalize)
    return c.reshape(-1, len(qp), a.shape[-1]).mean(0) if average else c


def difference_correlation(rings, pairs, mask=None, q_pairs=None, normalize=None, average=True):
    """Correlations of rings[i] - rings[j] (computed in the rings' dtype) with masks m_i & m_j, over shot pairs.

    Parameters
    ----------
    rings : array_like, (nshots, nq, n) or (nshots, n)
        Rings per shot.
    pairs : array_like of int, (npairs, 2)
        Shot pairs (i, j): rings[i] - rings[j].
    mask : array_like of bool, optional
        True = valid sample (LOKI's convention).
    q_pairs : array_like of int, optional
        Cross-correlate these (q, q') pairs of the differences.
    normalize : {None, 'mean', 'std'}
        As in :func:`xcca.difference_correlation`.
    average : bool
        Mean over the shot pairs.
    """
    r = np.asarray(rings)
    dt = np.float32 if r.dtype == np.float32 else np.float64
    r = r.astype(dt)
    squeeze = r.ndim == 2
    if squeeze:
        r = r[:, None, :]
        if mask is not None and np.ndim(mask) >= 2:
            mask = np.asarray(mask)[..., None, :]
    m = np.ones(r.shape, bool) if mask is None else np.broadcast_to(np.asarray(mask, bool), r.shape)
    p = np.asarray(pairs).reshape(-1, 2)
    d = (r[p[:, 0]] - r[p[:, 1]]).astype(np.float64)
    dm = m[p[:, 0]] & m[p[:, 1]]
    if q_pairs is None:
        c = correlate_direct(d, d, dm, dm, normalize)
        if squeeze:
            c = c[:, 0]
    else:
        c = cross_correlate(d, q_pairs, dm, normalize)
    return c.mean(0) if average else c


def cos_psi(n, q, wavelength, q2=None):
    """cos psi = cos(2 pi k / n) cos t1 cos t2 + sin t1 sin t2 with t = arcsin(q wavelength / (4 pi)), per element.

    Parameters
    ----------
    n : int
        Ring length (lags).
    q : array_like
        Momentum transfer of the first ring (inverse unit of the wavelength).
    wavelength : float
        Wavelength.
    q2 : array_like, optional
        Momentum transfer of the second ring (default `q`).
    """
    q1 = np.asarray(q, dtype=np.float64)
    qb = q1 if q2 is None else np.asarray(q2, dtype=np.float64)
    out = np.empty(np.broadcast(q1, qb).shape + (n,))
    for idx in np.ndindex(*out.shape[:-1]):
        t1 = np.arcsin(np.broadcast_to(q1, out.shape[:-1])[idx] * wavelength / (4 * np.pi))
        t2 = np.arcsin(np.broadcast_to(qb, out.shape[:-1])[idx] * wavelength / (4 * np.pi))
        for k in range(n):
            out[idx + (k,)] = np.cos(2 * np.pi * k / n) * np.cos(t1) * np.cos(t2) + np.sin(t1) * np.sin(t2)
    return out


# ===== ring fits, outliers and pairing (issue 5) =====


def pairing_scale(features: np.ndarray) -> tuple[np.ndarray, int]:
    """The pairing's internal scaling: features = xs * 2**e with max |xs| in [0.5, 1), |xs| < 2**-400 set to 0.

    A power of two scales exactly, so distances are unchanged (up to that scale) while d² can neither overflow nor
    underflow; flushing the (relatively) tiny values makes distance 0 mean identical rows.

    Parameters
    ----------
    features : array_like, (N, D) or (N,)
        One feature vector per shot (finite).
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    mx = float(np.max(np.abs(x))) if x.size else 0.0
    e = int(np.frexp(mx)[1]) if mx > 0 else 0
    xs = np.ldexp(x, -e)
    xs[np.abs(xs) < 2.0**-400] = 0.0
    return xs, e


def pairwise_sq_distances(features: np.ndarray) -> np.ndarray:
    """Full (N, N) matrix of squared Euclidean distances, summed over the columns in order (float64).

    The column-ordered sum is the rounding the compiled pairing uses, so exact ties agree bit for bit.
    

    Parameters
    ----------
    features : array_like, (N, D) or (N,)
        One feature vector per shot.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    d2 = np.zeros((x.shape[0], x.shape[0]))
    for k in range(x.shape[1]):
        d2 += (x[:, k, None] - x[None, :, k]) ** 2
    return d2


def pair_loki(features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LOKI's pair_fits on the full distance matrix: shots in index order, each unused shot takes its nearest
    unused shot (ties -> lowest index). Returns (pairs (M, 2), distances (M,), unpaired).

    Parameters
    ----------
    features : array_like, (N, D) or (N,)
        One feature vector per shot.
    """
    xs, e = pairing_scale(features)
    d2 = pairwise_sq_distances(xs)
    n = d2.shape[0]
    used = np.zeros(n, dtype=bool)
    pairs, dists, unpaired = [], [], []
    for i in range(n):
        if used[i]:
            continue
        used[i] = True
        row = np.where(used, np.inf, d2[i])
        if not np.isfinite(row).any():
            unpaired.append(i)
            continue
        j = int(np.argmin(row))  # argmin returns the first (lowest) index among ties
        used[j] = True
        pairs.append((i, j))
        dists.append(np.ldexp(np.sqrt(d2[i, j]), e))
    return (np.array(pairs, dtype=np.int64).reshape(-1, 2), np.array(dists, dtype=np.float64),
            np.array(unpaired, dtype=np.int64))


def pair_greedy(features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Brute-force global greedy matching: repeatedly the closest remaining pair (ties -> lowest (i, j), i < j).

    Parameters
    ----------
    features : array_like, (N, D) or (N,)
        One feature vector per shot.
    """
    xs, e = pairing_scale(features)
    d2 = pairwise_sq_distances(xs)
    n = d2.shape[0]
    iu, ju = np.triu_indices(n, 1)
    w = d2[iu, ju]
    order = np.lexsort((ju, iu, w))  # by distance, then lower index, then higher index
    used = np.zeros(n, dtype=bool)
    pairs, dists = [], []
    for t in order:
        i, j = iu[t], ju[t]
        if used[i] or used[j]:
            continue
        used[i] = used[j] = True
        pairs.append((i, j))
        dists.append(np.ldexp(np.sqrt(w[t]), e))
    return (np.array(pairs, dtype=np.int64).reshape(-1, 2), np.array(dists, dtype=np.float64),
            np.nonzero(~used)[0].astype(np.int64))


def fit_periodic(ring: np.ndarray, mask: np.ndarray, deg: int, overlap: float = 0.2) -> np.ndarray:
    """LOKI's periodic fit of one ring with numpy.polynomial (Chebyshev.fit on the scaled padded range):
    returns the fit at x = 0 .. n-1 times the mask (LOKI's yfit). NaN if too few valid samples.

    Parameters
    ----------
    ring : array_like, (n,)
        One ring.
    mask : array_like of bool, (n,)
        True = valid sample (LOKI's convention).
    deg : int
        Polynomial degree.
    overlap : float
        Periodic padding as a fraction of n on each side.
    """
    ring = np.asarray(ring, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    n = ring.shape[0]
    nn = int(overlap * n)
    x = np.arange(-nn, n + nn)
    y = (ring * mask)[x % n]
    keep = y != 0
    if keep.sum() < deg + 1:
        return np.full(n, np.nan)
    dom = [-nn, n + nn - 1] if n + 2 * nn > 1 else [-1, 1]
    p = np.polynomial.Chebyshev.fit(x[keep], y[keep], deg, domain=dom)
    return p(np.arange(n)) * mask


def is_outlier(points: np.ndarray, thresh: float = 3.5) -> np.ndarray:
    """LOKI's modified z-score test; MAD = 0 -> no outliers.

    Parameters
    ----------
    points : array_like, (n,) or (n, d)
        Samples (rows are points for 2-D input).
    thresh : float
        Modified z-score threshold.
    """
    p = np.asarray(points, dtype=np.float64)
    if p.ndim == 1:
        p = p[:, None]
    diff = np.sqrt(np.sum((p - np.median(p, axis=0)) ** 2, axis=-1))
    mad = np.median(diff)
    if mad == 0:
        return np.zeros(p.shape[0], dtype=bool)
    return 0.6745 * diff / mad > thresh


def remove_peaks(ring: np.ndarray, mask: np.ndarray, baseline=None, peak_thresh: float = 3.0, thick=None):
    """One ring: outliers of (ring - baseline) over the valid samples, widened by +-thick with periodic wrap.
    Returns (ring * new_mask, new_mask, removed) with removed = previously valid values now masked.

    Parameters
    ----------
    ring : array_like, (n,)
        One ring.
    mask : array_like of bool, (n,)
        True = valid sample (LOKI's convention).
    baseline : array_like, (n,), optional
        Subtracted before the outlier test (e.g. the periodic fit).
    peak_thresh : float
        Modified z-score threshold.
    thick : int, optional
        Widen every peak by this many samples on each side (periodic).
    """
    ring = np.asarray(ring)
    mask = np.asarray(mask, dtype=bool)
    n = ring.shape[0]
    vals = ring.astype(np.float64)
    if baseline is not None:
        vals = vals - np.asarray(baseline, dtype=np.float64)
    valid = np.nonzero(mask)[0]
    new_mask = mask.copy()
    if valid.size:
        for o in valid[is_outlier(vals[valid], peak_thresh)]:
            for s in range(-(thick or 0), (thick or 0) + 1):
                new_mask[(o + s) % n] = False
    removed = np.where(mask & ~new_mask, ring, 0)
    return ring * new_mask, new_mask, removed


__all__ += ["pairing_scale", "pairwise_sq_distances", "pair_loki", "pair_greedy", "fit_periodic", "is_outlier", "remove_peaks"]


# ===== streaming pipeline: per-ring outliers (issue 6) =====


def ring_outliers(values, valid, thresh: float):
    """Specification of ``_core.ring_outliers``: for each ring (last axis), over the samples that are valid (True)
    and finite, median m and MAD = median(|x - m|) in float64; outliers are 0.6745·|x - m| / MAD > thresh (none
    when MAD = 0 or no sample is valid). Returns ``(valid & ~outlier, outliers per ring)``.

    Parameters
    ----------
    values : array_like, (..., n)
        Rings.
    valid : array_like of bool, (..., n)
        True = valid sample (LOKI's convention).
    thresh : float
        Modified z-score threshold.
    """
    x = np.asarray(values, dtype=np.float64)
    v = np.asarray(valid, dtype=bool)
    out = np.zeros(x.shape, dtype=bool)
    for idx in np.ndindex(x.shape[:-1]):
        ok = v[idx] & np.isfinite(x[idx])
        if not ok.any():
            continue
        med = np.median(x[idx][ok])
        mad = np.median(np.abs(x[idx][ok] - med))
        if mad > 0:
            out[idx] = ok & (0.6745 * np.abs(x[idx] - med) / mad > thresh)
    return v & ~out, out.sum(axis=-1).astype(np.int64)


__all__ += ["ring_outliers"]


# ===== the analysis pipeline's kernel set in NumPy/SciPy (issue 14: moved here from xcca.pipeline) =====


class PipelineKernels:
    """The kernel set of :func:`xcca.analyze` in NumPy/SciPy (``backend="numpy"``): the benchmark baseline and a
    test oracle of :class:`xcca.kernels.XccaKernels`, method for method (see :mod:`xcca.kernels`).

    Invalid polar samples hold NaN (``fill``). Masks: True = valid.

    Parameters
    ----------
    geom : xcca.kernels.KernelGeometry
        Centre, radii, nphi and shape of the run.
    n_threads : int, optional
        Ignored (NumPy decides).
    """

    name = "numpy"
    fill = np.nan  # value of the invalid polar samples

    def __init__(self, geom, n_threads: int | None = None):
        self.geom = geom
        h, w = geom.shape
        xs = geom.center[0] + geom.radii[:, None] * np.cos(geom.phi)[None, :]
        ys = geom.center[1] + geom.radii[:, None] * np.sin(geom.phi)[None, :]
        x0, y0 = np.floor(xs), np.floor(ys)
        self.fx, self.fy = xs - x0, ys - y0
        inside = (x0 >= 0) & (y0 >= 0) & (x0 + 1 <= w - 1) & (y0 + 1 <= h - 1)
        x0c = np.clip(x0, 0, w - 2).astype(np.int64)
        y0c = np.clip(y0, 0, h - 2).astype(np.int64)
        self.inside = inside
        self.idx = y0c * w + x0c  # flat index of the top-left neighbour

    def remap(self, frames: np.ndarray, mask: np.ndarray | None, out: np.ndarray | None = None):
        """Bilinear polar remap of (c, H, W) frames where all four neighbours are inside and valid (``mask`` True =
        valid pixel): ``(polar float32 with NaN at invalid samples, polar mask (nq, nphi))``.

        Parameters
        ----------
        frames : ndarray, (c, H, W)
            A chunk of frames.
        mask : ndarray of bool, (H, W), optional
            True = valid pixel (LOKI's convention); None = all valid.
        out : ndarray, optional
            Destination of the polar images (c, nq, nphi).
        """
        h, w = self.geom.shape
        i = self.idx
        fx, fy = self.fx, self.fy
        flat = frames.reshape(len(frames), -1).astype(np.float64)
        polar = ((1 - fy) * ((1 - fx) * flat[:, i] + fx * flat[:, i + 1])
                 + fy * ((1 - fx) * flat[:, i + w] + fx * flat[:, i + w + 1]))
        pmask = self.inside.copy()
        if mask is not None:
            m = mask.ravel()
            pmask &= m[i] & m[i + 1] & m[i + w] & m[i + w + 1]
        if out is None:
            out = np.empty(polar.shape, np.float32)
        out[...] = polar
        out[:, ~pmask] = np.nan
        return out, pmask

    @staticmethod
    def outliers(polar: np.ndarray, valid: np.ndarray, thresh: float) -> tuple[np.ndarray, np.ndarray]:
        """Per-ring outlier removal, one frame at a time (bounds the float64 temporaries).

        Parameters
        ----------
        polar : ndarray, (c, nq, nphi)
            Polar images.
        valid : ndarray of bool
            Valid samples, True = valid (LOKI's convention).
        thresh : float
            Modified z-score threshold.
        """
        from .stages import outlier_mask

        new = np.empty(polar.shape, dtype=bool)
        nout = np.zeros(len(polar), dtype=np.int64)
        for k in range(len(polar)):
            out = outlier_mask(polar[k], valid[k], thresh)
            new[k] = valid[k] & ~out
            nout[k] = int(out.sum())
        return new, nout

    @staticmethod
    def autocorr(rings: np.ndarray, mask: np.ndarray, normalize: str | None, average: bool = False,
                 zeroed: bool = False) -> np.ndarray:
        """Masked circular autocorrelation C[k] = Σ m_j m_{j+k} a_j a_{j+k} / Σ m_j m_{j+k} (NaN if empty);
        ``average`` gives the mean over the leading (shot) axis.

        Parameters
        ----------
        rings : ndarray, (..., nq, nphi)
            Rings.
        mask : ndarray of bool
            Valid samples, True = valid (LOKI's convention).
        normalize : {None, 'mean', 'std'}
            As in :func:`xcca.autocorrelate`.
        average : bool
            Mean over the shots.
        zeroed : bool
            The invalid samples of `rings` are already zero (skips a copy).
        """
        m = np.broadcast_to(mask, rings.shape).astype(np.float64)
        a = np.where(m > 0, rings, 0.0).astype(np.float64)
        n = rings.shape[-1]
        fa = np.fft.rfft(a, axis=-1)
        fm = np.fft.rfft(m, axis=-1)
        num = np.fft.irfft(fa * fa.conj(), n, axis=-1)
        den = np.rint(np.fft.irfft(fm * fm.conj(), n, axis=-1))
        with np.errstate(invalid="ignore", divide="ignore"):
            c = np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)
            if normalize == "mean":
                cnt = m.sum(axis=-1)
                mean = np.where(cnt > 0, a.sum(axis=-1) / np.maximum(cnt, 1), np.nan)
                c = c / (mean * mean)[..., None]
        return c.mean(axis=0) if average else c

    def diffcorr(self, polar: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Mean over the pairs (2i, 2i+1) of the masked autocorrelation of ``polar[2i] - polar[2i+1]`` with the mask
        ``valid[2i] & valid[2i+1]`` (``valid`` (c, nq, nphi) or shared (nq, nphi)).

        Parameters
        ----------
        polar : ndarray, (2m, nq, nphi)
            Polar images of m pairs, pair i = frames (2i, 2i+1).
        valid : ndarray of bool
            Valid samples, True = valid (LOKI's convention).
        """
        va = valid[0::2] if valid.ndim == polar.ndim else valid
        vb = valid[1::2] if valid.ndim == polar.ndim else valid
        m = va & vb
        with np.errstate(invalid="ignore"):
            d = np.where(m, polar[0::2] - polar[1::2], 0)  # in the polar images' float type
        return self.autocorr(d, m, None, average=True, zeroed=True)

    def fit_profiles(self, rings: np.ndarray, masks: np.ndarray, deg: int, overlap: float):
        """LOKI's periodic polynomial fit, evaluated on x = 0..n-1 (unmasked); Chebyshev basis + lstsq.

        Parameters
        ----------
        rings : ndarray, (c, n)
            The pairing ring of each shot (outliers zeroed).
        masks : ndarray of bool, (n,) or (c, n)
            Valid samples, True = valid (LOKI's convention).
        deg : int
            Polynomial degree.
        overlap : float
            Periodic padding as a fraction of the ring length.
        """
        n = rings.shape[-1]
        nn = int(overlap * n)
        x = np.arange(-nn, n + nn)
        t = (2 * x - (n - 1)) / (n - 1 + 2 * nn) if n + 2 * nn > 1 else np.zeros_like(x, dtype=float)
        basis = np.polynomial.chebyshev.chebvander(t, deg)
        eval_basis = basis[nn:nn + n]
        curves = np.full(rings.shape, np.nan)
        ok = np.zeros(len(rings), dtype=bool)
        masks = np.broadcast_to(masks, rings.shape)
        for s in range(len(rings)):
            y = np.concatenate([rings[s, n - nn:], rings[s], rings[s, :nn]]) if nn else rings[s]
            m = np.concatenate([masks[s, n - nn:], masks[s], masks[s, :nn]]) if nn else masks[s]
            use = m & (y != 0) & np.isfinite(y)
            if use.sum() <= deg:
                continue
            coef, *_ = np.linalg.lstsq(basis[use], y[use].astype(np.float64), rcond=None)
            curves[s] = eval_basis @ coef
            ok[s] = True
        return curves, ok

    @staticmethod
    def pair(features: np.ndarray):
        """LOKI's pairing (full distance matrix): xcca.reference's specification of it.

        Parameters
        ----------
        features : ndarray, (N, D)
            One feature vector per shot.
        """
        return pair_loki(features)



__all__ += ["PipelineKernels"]


# ===== circle fit (xcca._core.circle_fit): the NumPy specification =====

def fit_circle_points(x, y, start=None, *, max_iter=100, tol=1e-12):
    """Geometric least-squares circle (Kasa start or ``start``, then Levenberg-Marquardt on (cx, cy, r)):
    ``(cx, cy, r, residual, n_iter)``; the specification of ``xcca._core.circle_fit`` (same steps, plain NumPy).

    Parameters
    ----------
    x, y : array_like, (n,)
        Point coordinates in pixels.
    start : (cx, cy, r), optional
        Starting circle (default: the Kasa algebraic fit).
    max_iter : int
        Maximum Levenberg-Marquardt iterations.
    tol : float
        Relative step tolerance that ends the iteration.
    """
    from .ringfit import RingFitError, _kasa

    x = np.ascontiguousarray(x, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64)
    if x.size < 3:
        raise RingFitError(f"need at least 3 points for a circle, got {x.size}")
    mx, my = x.mean(), y.mean()
    u, v = x - mx, y - my
    if start is None:
        a, b, r = _kasa(u, v)
    else:
        a, b, r = float(start[0]) - mx, float(start[1]) - my, float(start[2])
    n = float(x.size)

    def parts(a, b, r):
        du, dv = u - a, v - b
        d = np.maximum(np.sqrt(du * du + dv * dv), 1e-300)
        f = d - r
        return float(f @ f), du, dv, d, f

    cost, du, dv, d, f = parts(a, b, r)
    lam, converged, it = 1e-3, False, 0
    for it in range(1, max_iter + 1):
        c, s = du / d, dv / d
        jtj = np.array([[c @ c, c @ s, c.sum()], [c @ s, s @ s, s.sum()], [c.sum(), s.sum(), n]])
        g = np.array([c @ f, s @ f, f.sum()])
        while True:
            try:
                step = np.linalg.solve(jtj + lam * np.diag(np.diag(jtj)), g)
            except np.linalg.LinAlgError:
                raise RingFitError("degenerate point set: singular normal equations", residual=cost) from None
            new = parts(a + step[0], b + step[1], r + step[2])
            if new[0] <= cost:
                break
            lam *= 10.0
            if lam > 1e12:
                break
        if new[0] > cost:
            converged = True
            break
        small = float(np.abs(step).max()) <= tol * (1.0 + abs(r + step[2]))
        flat = cost - new[0] <= 1e-15 * max(cost, 1e-300)
        a, b, r = a + step[0], b + step[1], r + step[2]
        cost, du, dv, d, f = new
        lam = max(lam / 10.0, 1e-12)
        if small or flat:
            converged = True
            break
    if not converged or not np.isfinite(cost):
        raise RingFitError(f"circle fit did not converge in {max_iter} iterations (residual {cost:.6g})",
                           residual=cost)
    return a + mx, b + my, abs(r), cost, it


__all__ += ["fit_circle_points"]


# ===== run correlator (issue 12) =====
# Direct O(n^2) sums over shots, lags and samples for xcca.RunCorrelator (mask True = valid).

__all__ += ["run_correlation", "run_jackknife"]


def _run_sums(rings, mask, q_pairs):
    """Per-shot lag sums num[s, p, k] = sum_j m a(q, j) m a(q', j + k) and counts cnt[s, p, k] (int64)."""
    a = np.asarray(rings, dtype=np.float64)
    m = np.ones(a.shape, bool) if mask is None else np.broadcast_to(np.asarray(mask, bool), a.shape)
    qp = np.asarray(q_pairs).reshape(-1, 2)
    x = np.where(m, a, 0.0)
    S, _, n = a.shape
    num = np.zeros((S, len(qp), n))
    cnt = np.zeros((S, len(qp), n), np.int64)
    for p, (q, q2) in enumerate(qp):
        for k in range(n):
            num[:, p, k] = (x[:, q] * np.roll(x[:, q2], -k, axis=-1)).sum(-1)
            cnt[:, p, k] = (m[:, q] & np.roll(m[:, q2], -k, axis=-1)).sum(-1)
    return num, cnt


def run_correlation(rings, mask=None, q_pairs=None, estimator="pooled"):
    """C(q, q', k) over a run of shots (S, nq, n) by direct sums; returns (correlation, counts).

    pooled: sum_s num_s / sum_s cnt_s. per_shot: mean over the shots with cnt_s > 0 of num_s / cnt_s. NaN where no
    shot has a valid pair. counts = sum_s cnt_s. q_pairs default: numpy.triu_indices(nq).
    

    Parameters
    ----------
    rings : array_like, (S, nq, n)
        Rings of every shot.
    mask : array_like of bool, optional
        Valid samples, True = valid (LOKI's convention). Broadcast to `rings`.
    q_pairs : array_like of int, (P, 2), optional
        (q, q') ring pairs; default numpy.triu_indices(nq).
    estimator : {'pooled', 'per_shot'}
        Ratio of sums, or mean of per-shot ratios.
    """
    a = np.asarray(rings, dtype=np.float64)
    qp = np.stack(np.triu_indices(a.shape[1]), 1) if q_pairs is None else q_pairs
    num, cnt = _run_sums(a, mask, qp)
    with np.errstate(invalid="ignore", divide="ignore"):
        if estimator == "pooled":
            c = num.sum(0) / cnt.sum(0)
        else:
            r = np.where(cnt > 0, num / np.where(cnt > 0, cnt, 1), 0.0)
            c = r.sum(0) / (cnt > 0).sum(0)
    return np.where(cnt.sum(0) > 0 if estimator == "pooled" else (cnt > 0).any(0), c, np.nan), cnt.sum(0)


def run_jackknife(rings, mask=None, q_pairs=None, estimator="pooled", blocks=2):
    """Brute-force jackknife: shot s in block s % blocks; returns (replicates (B, P, n), standard error (P, n)).

    Parameters
    ----------
    rings : array_like, (S, nq, n)
        Rings of every shot.
    mask : array_like of bool, optional
        Valid samples, True = valid (LOKI's convention). Broadcast to `rings`.
    q_pairs : array_like of int, (P, 2), optional
        (q, q') ring pairs; default numpy.triu_indices(nq).
    estimator : {'pooled', 'per_shot'}
        Ratio of sums, or mean of per-shot ratios.
    blocks : int
        Number of disjoint shot blocks (shot s in block s % blocks).
    """
    a = np.asarray(rings, dtype=np.float64)
    m = None if mask is None else np.broadcast_to(np.asarray(mask, bool), a.shape)
    blk = np.arange(a.shape[0]) % blocks
    reps = np.stack([run_correlation(a[blk != b], None if m is None else m[blk != b], q_pairs, estimator)[0]
                     for b in range(blocks)])
    mean = reps.mean(0)
    return reps, np.sqrt((blocks - 1) / blocks * ((reps - mean) ** 2).sum(0))
# ===== tilted-detector rings (issue 11) =====


def _conic_terms(c, den, g, dtype=np.float64):
    """(r, iv) of ConicGrid's one division per sample: with polarisation terms g, pol = 0.5 ((1 + c²) − g (1 − c²)),
    iv = 1 / (den · pol) and r = pol · iv (= 1 / den); without, r = iv = 1 / den (see conic.hpp). Every operation in
    ``dtype`` (c and den already are)."""
    one, half = dtype(1), dtype(0.5)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if g is None:
            r = one / den
            return r, r
        c2 = c * c
        pol = half * ((one + c2) - np.asarray(g).astype(dtype)[None, :] * (one - c2))
        iv = one / (den * pol)
        return pol * iv, iv


def conic_coordinates(s, c, a, b, cx, cy, ly, lx, g=None, dtype=np.float64):
    """Sample coordinates of xcca::conic::ConicGrid (see cpp/include/xcca/conic.hpp), in the same operation order.

    s, c: (nq,) sin and cos of 2 theta per ring; a: (nphi, 3) per-angle directions A_j; b: (3,); g: (nphi,)
    polarisation terms of a grid with the polarisation correction (None without: the projection factor 1 / den is
    then its own division, otherwise pol · (1 / (den · pol)), the one division per sample the kernel shares with
    the correction). Returns x (column), y (row) and den (cosine of the incidence angle; <= 0: the ray misses the
    detector plane), each (nq, nphi).

    dtype: np.float64 (ConicGrid), or np.float32 for a single-precision grid (``precision="float32"``): every
    table is rounded once to float32 (s, c, a, b, g, cx, cy, ly, lx) and every operation runs in float32.
    """
    dtype = np.dtype(dtype).type
    s = np.asarray(s).astype(dtype)[:, None]
    c = np.asarray(c).astype(dtype)[:, None]
    a = np.asarray(a).astype(dtype)
    b = np.asarray(b).astype(dtype)
    cx, cy, ly, lx = (dtype(v) for v in (cx, cy, ly, lx))
    den = s * a[None, :, 2] + c * b[2]
    r, _ = _conic_terms(c, den, g, dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        y = cy + ly * ((s * a[None, :, 0] + c * b[0]) * r)
        x = cx + lx * ((s * a[None, :, 1] + c * b[1]) * r)
    return x, y, den


def conic_correction(c, den, g=None, solid_angle=True, dtype=np.float64):
    """Per-sample multiplier 1 / (solid angle x polarisation) of ConicGrid, same operations (see conic.hpp): with
    iv, r of the coordinates' one division, (r · r) · iv = 1 / (den³ pol) with both corrections, den · iv = 1 / pol
    with polarisation only, (r · r) · r = 1 / den³ with solid angle only, 1 without corrections. dtype as in
    :func:`conic_coordinates` (den must come from it with the same dtype)."""
    dtype = np.dtype(dtype).type
    c = np.asarray(c).astype(dtype)[:, None]
    den = np.asarray(den)
    if g is None and not solid_angle:
        return np.ones_like(den)
    r, iv = _conic_terms(c, den, g, dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        if solid_angle:
            return (r * r) * iv
        return den * iv


def conic_flat_dark(image, flat=None, dark=None):
    """Pixel values of ConicGrid's flat/dark remap (xcca::conic::ConicGrid::remap_flat_dark), and the valid pixels.

    Each pixel a sample reads has the value ``(float64(I) - dark) * (1 / flat)`` (pyFAI's ``(raw - dark) / flat``
    with the reciprocal of the flat taken first, in float64); a missing dark is 0 and a missing flat 1 (both exact
    no-ops). Pixels with ``flat <= 0`` or a non-finite flat or dark are invalid (they join the pixel mask; their
    value is never read). The remap is then :func:`sample_at` on these values at :func:`conic_coordinates`, times
    :func:`conic_correction`. image: (H, W) or (N, H, W). Returns (values float64, valid (H, W) bool).
    """
    img = np.asarray(image).astype(np.float64)
    shape = img.shape[-2:]
    f = np.ones(shape) if flat is None else np.asarray(flat).astype(np.float64)
    d = np.zeros(shape) if dark is None else np.asarray(dark).astype(np.float64)
    valid = np.isfinite(f) & (f > 0) & np.isfinite(d)
    with np.errstate(divide="ignore", invalid="ignore"):
        rflat = np.where(valid, 1.0 / np.where(valid, f, 1.0), 1.0)
    d = np.where(valid, d, 0.0)
    return (img - d) * rflat, valid
