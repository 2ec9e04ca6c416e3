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


# ===== ring fits, outliers and pairing (issue 5) =====


def pairwise_sq_distances(features: np.ndarray) -> np.ndarray:
    """Full (N, N) matrix of squared Euclidean distances, summed over the columns in order (float64).

    The column-ordered sum is the rounding the compiled pairing uses, so exact ties agree bit for bit.
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
    unused shot (ties -> lowest index). Returns (pairs (M, 2), distances (M,), unpaired)."""
    d2 = pairwise_sq_distances(features)
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
        dists.append(np.sqrt(d2[i, j]))
    return (np.array(pairs, dtype=np.int64).reshape(-1, 2), np.array(dists, dtype=np.float64),
            np.array(unpaired, dtype=np.int64))


def pair_greedy(features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Brute-force global greedy matching: repeatedly the closest remaining pair (ties -> lowest (i, j), i < j)."""
    d2 = pairwise_sq_distances(features)
    n = d2.shape[0]
    iu, ju = np.triu_indices(n, 1)
    w = d2[iu, ju]
    order = np.lexsort((ju, iu, w))  # by distance, then lower index, then higher index
    used = np.zeros(n, dtype=bool)
    pairs, dists = [], []
    for e in order:
        i, j = iu[e], ju[e]
        if used[i] or used[j]:
            continue
        used[i] = used[j] = True
        pairs.append((i, j))
        dists.append(np.sqrt(w[e]))
    return (np.array(pairs, dtype=np.int64).reshape(-1, 2), np.array(dists, dtype=np.float64),
            np.nonzero(~used)[0].astype(np.int64))


def fit_periodic(ring: np.ndarray, mask: np.ndarray, deg: int, overlap: float = 0.2) -> np.ndarray:
    """LOKI's periodic fit of one ring with numpy.polynomial (Chebyshev.fit on the scaled padded range):
    returns the fit at x = 0 .. n-1 times the mask (LOKI's yfit). NaN if too few valid samples."""
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
    """LOKI's modified z-score test; MAD = 0 -> no outliers."""
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
    Returns (ring * new_mask, new_mask, removed) with removed = previously valid values now masked."""
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


__all__ += ["pairwise_sq_distances", "pair_loki", "pair_greedy", "fit_periodic", "is_outlier", "remove_peaks"]
