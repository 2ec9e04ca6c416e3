"""LOKI-compatible API: existing LOKI scripts switch to xcca by changing their import lines.

Each class and function reproduces LOKI's signature and return values (Python 3); every deliberate difference is
documented in its docstring. Masks: True = valid pixel, as in LOKI.
"""
from __future__ import annotations

import numpy as np

__all__: list[str] = []


# ===== InterpSimple (issue 3) =====


# ===== DiffCorr (issue 4) =====


# ===== fit_periodic, pair_fits, is_outlier, remove_peaks (issue 5) =====


def fit_periodic(data, mask, deg, overlap=0.2):
    """LOKI's ``fit_periodic``: polynomial of degree `deg` fitted to a periodically padded masked ring.

    Parameters
    ----------
    data : array_like (n,)
        Ring profile I(phi) over the full interval. Not modified.
    mask : array_like (n,)
        True (or 1) = valid sample, as in LOKI.
    deg : int
        Polynomial degree.
    overlap : float
        Padding fraction of n on both sides, in [0, 0.5].

    Returns
    -------
    ofit : ndarray (deg+1,)
        ``numpy.polynomial.chebyshev.chebfit(x, fit(x), deg)`` over the padded raw coordinates x, as LOKI.
    fit : ndarray (deg+1,)
        Power-basis coefficients in raw x, highest degree first (``numpy.polyval`` order), as LOKI.
    yfit : ndarray (n,) float64
        The fit at x = 0 … n-1 times the mask.

    Notes
    -----
    Deliberate differences: the fit is solved stably (scaled Chebyshev basis + QR, :func:`xcca.fit_periodic`) and
    `yfit` is evaluated from that stable form, so it agrees with LOKI where LOKI's power-basis ``polyfit`` is well
    conditioned and is correct where it is not; `fit` (raw power basis) is a conversion of the stable fit and
    inherits the power basis' ill-conditioning. ``overlap = 0`` works (LOKI fails there). A ring with too few valid
    samples returns NaN arrays and a warning instead of numpy's RankWarning garbage.
    """
    from .rings import fit_periodic as _fit

    d = np.asarray(data)
    if d.ndim != 1:
        raise ValueError(f"data must be one ring (n,), got shape {d.shape}")
    res = _fit(d, mask, deg=deg, overlap=overlap)
    n, nn, deg = res.n, res.nn, res.deg
    yfit = np.asarray(res.curves, dtype=np.float64)
    x = np.arange(-nn, n + nn, dtype=np.float64)
    if not res.ok[0]:
        return np.full(deg + 1, np.nan), np.full(deg + 1, np.nan), yfit
    lo, hi = res.domain
    cheb = np.polynomial.Chebyshev(res.coef[0], domain=[lo, hi] if hi > lo else [lo - 1, lo + 1])
    power = cheb.convert(kind=np.polynomial.Polynomial).coef
    fit = np.zeros(deg + 1)
    fit[deg + 1 - power.size :] = power[::-1]
    ofit = np.polynomial.chebyshev.chebfit(x, res.evaluate(x)[0], deg=deg)
    return ofit, fit, yfit


def pair_fits(fits):
    """LOKI's ``pair_fits``: pair shots in index order, each unused shot with its nearest unused shot.

    Parameters
    ----------
    fits : array_like (N, D)
        One vector per shot (LOKI's tutorial passes the ``yfit`` curves or the ``ofit`` coefficients).

    Returns
    -------
    pairs : list of [i, j]
        i the visiting shot, j its nearest unused shot.
    dists : list of float
        Euclidean distance of each pair.

    Notes
    -----
    Same pairs as LOKI but computed by :func:`xcca.pair_shots` (method "loki") without the N×N matrix. Deliberate
    differences: ties go to the lowest index (LOKI's unstable argsort picks any); when all shots coincide LOKI can
    pair a shot with itself and skip it, xcca pairs it; the odd shot left over is logged (LOKI drops it silently;
    use :func:`xcca.pair_shots` to get it as ``.unpaired``); no printing.
    """
    import logging

    from .pairing import pair_shots

    res = pair_shots(fits, "loki")
    if res.unpaired.size:
        logging.getLogger(__name__).info("pair_fits: shot(s) %s left unpaired", res.unpaired.tolist())
    return res.pairs.tolist(), res.distances.tolist()


def is_outlier(points, thresh=3.5):
    """LOKI's ``is_outlier``: modified z-score ``0.6745 * |x - median| / MAD > thresh`` (2-D points: Euclidean
    distance to the per-column median). Returns a boolean array (k,).

    Deliberate difference: MAD = 0 gives no outliers (LOKI divides by zero and flags every point off the median).
    """
    from .rings import is_outlier as _is_outlier

    return _is_outlier(points, thresh)


def remove_peaks(Ring, Mask, thick=None, peak_thresh=3.0, coef=None):
    """LOKI's ``remove_peaks`` for one ring.

    Parameters
    ----------
    Ring : array_like (n,)
        Angular profile. Not modified.
    Mask : array_like (n,)
        True (or 1) = kept sample, 0 = masked, as in LOKI.
    thick : int, optional
        Detected peak position ± thick is masked.
    peak_thresh : float
        Modified z-score threshold.
    coef : array_like, optional
        Chebyshev coefficients in raw sample coordinates (``chebval(x, coef)``, e.g. LOKI's ``ofit``), subtracted
        before detection.

    Returns
    -------
    (ring * mask, mask, removed) : the cleaned ring, the updated mask (Mask's dtype) and the removed values (the
    raw ring values inside the masked windows, 0 elsewhere), as in LOKI.

    Notes
    -----
    Deliberate differences: the ±thick window wraps around the ring (LOKI clips it at 0 and n-1, leaving peak
    tails at the seam); MAD = 0 gives no outliers.
    """
    from .rings import is_outlier as _is_outlier

    ring = np.array(Ring, copy=True)
    mask = np.array(Mask, copy=True)
    if ring.ndim != 1 or mask.shape != ring.shape:
        raise ValueError(f"Ring and Mask must be 1-D of the same length, got {ring.shape} and {mask.shape}")
    nphi = ring.shape[0]
    xvals = np.nonzero(mask)[0]
    points = ring[xvals].astype(np.float64)
    if coef is not None:
        points = points - np.polynomial.chebyshev.chebval(xvals, coef)
    removed = np.zeros_like(ring)
    where = xvals[_is_outlier(points, peak_thresh)] if xvals.size else xvals
    if where.size:
        if thick is not None:
            win = np.arange(-int(thick), int(thick) + 1)
            where = np.unique((where[:, None] + win[None, :]) % nphi)
        mask[where] = 0
        removed[where] = ring[where]
    return ring * mask, mask, removed


__all__ += ["fit_periodic", "pair_fits", "is_outlier", "remove_peaks"]


# ===== RingFit (issue 6) =====
