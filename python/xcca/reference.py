"""Executable specification of every compiled kernel of xcca, in plain NumPy.

Each function here is the slow, obviously-right version of a compiled kernel; the tests compare the compiled kernel
against it on generated inputs. Nothing here is meant to be fast. Masks: True = valid pixel.
"""
from __future__ import annotations

import numpy as np

__all__: list[str] = []


# ===== binning and dilation (issue 2) =====


# ===== polar remap (issue 3) =====


# ===== correlations (issue 4) =====
# Direct O(n^2) circular sums in float64: C[k] = sum_j ma_j mb_{j+k} a_j b_{j+k} / sum_j ma_j mb_{j+k}.

__all__ += ["correlate_direct", "mask_pair_counts", "autocorrelate", "cross_correlate", "difference_correlation",
            "cos_psi"]


def mask_pair_counts(ma, mb):
    """counts[k] = sum_j ma_j mb_{(j+k) % n} (True = valid), as int64, by direct summation."""
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
    """Autocorrelation of each ring (..., nq, n); mask broadcastable to rings; average: mean over leading axes."""
    a = np.asarray(rings, dtype=np.float64)
    m = None if mask is None else np.broadcast_to(np.asarray(mask, bool), a.shape)
    c = correlate_direct(a, a, m, m, normalize)
    return c.reshape(-1, *a.shape[-2:]).mean(0) if average else c


def cross_correlate(rings, q_pairs=None, mask=None, normalize=None, average=False):
    """C(q, q', k) for the (q, q') pairs (default all q <= q'), shape (..., npairs, n)."""
    a = np.asarray(rings, dtype=np.float64)
    m = np.ones(a.shape, bool) if mask is None else np.broadcast_to(np.asarray(mask, bool), a.shape)
    nq = a.shape[-2]
    qp = np.stack(np.triu_indices(nq), 1) if q_pairs is None else np.asarray(q_pairs).reshape(-1, 2)
    qa, qb = qp[:, 0], qp[:, 1]
    c = correlate_direct(a[..., qa, :], a[..., qb, :], m[..., qa, :], m[..., qb, :], normalize)
    return c.reshape(-1, len(qp), a.shape[-1]).mean(0) if average else c


def difference_correlation(rings, pairs, mask=None, q_pairs=None, normalize=None, average=True):
    """Correlations of rings[i] - rings[j] (computed in the rings' dtype) with masks m_i & m_j, over shot pairs."""
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
    """cos psi = cos(2 pi k / n) cos t1 cos t2 + sin t1 sin t2 with t = arcsin(q wavelength / (4 pi)), per element."""
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
