"""Ring-profile fits, outlier detection and Bragg-peak removal (LOKI's fit_periodic, is_outlier, remove_peaks).

Masks: True = valid sample (LOKI's convention). Everything here is batched: a stack of rings (N, n) or one ring (n,).
"""
from __future__ import annotations

import logging
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np
import numpy.typing as npt
from numpy.polynomial import chebyshev as _cheb
from scipy.linalg import solve_triangular

from . import _checks, _core

__all__ = ["PeriodicFit", "FitWarning", "fit_periodic", "is_outlier", "remove_peaks"]

_log = logging.getLogger(__name__)

# Rings per block in the batched solve: bounds the float64 working copy (block x n) whatever N is.
_BLOCK = 2048


class FitWarning(UserWarning):
    """Some rings had too few valid samples for the requested degree (their curves are NaN, ``ok`` is False)."""


def _as_rings(rings: npt.ArrayLike, name: str = "rings") -> tuple[np.ndarray, bool]:
    """(N, n) real array (no copy when possible) and whether the input was a single ring."""
    try:
        arr = np.asarray(rings)
    except ValueError as exc:  # ragged nested sequences
        raise ValueError(f"{name} must be a rectangular array (one ring (n,) or a stack (N, n)): {exc}") from None
    if arr.dtype == object:
        raise ValueError(f"{name} must be a rectangular numeric array, got a ragged/object array")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if arr.ndim == 1:
        return arr[None, :], True
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 1-D (one ring) or 2-D (N rings), got shape {arr.shape}")
    if arr.shape[1] < 1:
        raise ValueError(f"{name} must have at least one sample per ring, got shape {arr.shape}")
    return arr, False


def _as_mask(mask: Optional[npt.ArrayLike], n_rings: int, n: int, name: str = "mask") -> np.ndarray:
    """Boolean mask (n,) shared by all rings or (N, n) per ring; True = valid. None means all valid."""
    if mask is None:
        return np.ones(n, dtype=bool)
    try:
        m = np.asarray(mask)
    except ValueError as exc:
        raise ValueError(f"{name} must be a rectangular array: {exc}") from None
    if m.dtype == object or m.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a boolean (True = valid) or numeric array, got dtype {m.dtype}")
    if m.ndim == 1:
        if m.shape[0] != n:
            raise ValueError(f"{name} has length {m.shape[0]}, but the rings have {n} samples")
    elif m.ndim == 2:
        if m.shape[1] != n or m.shape[0] not in (1, n_rings):
            raise ValueError(f"{name} has shape {m.shape}, expected ({n},) or ({n_rings}, {n})")
        if m.shape[0] == 1:
            m = m[0]
    else:
        raise ValueError(f"{name} must be 1-D or 2-D, got shape {m.shape}")
    return m != 0


def _curve_dtype(dtype: np.dtype) -> np.dtype:
    # float32 in either byte order ('>f4' != np.float32) stays float32
    return np.dtype(np.float32) if dtype.kind == "f" and dtype.itemsize == 4 else np.dtype(np.float64)


@dataclass(frozen=True, eq=False)
class PeriodicFit:
    """Result of :func:`fit_periodic`: degree-``deg`` Chebyshev fits of N rings of n samples.

    The model of ring r at sample position x (0 <= x < n, extended periodically in the fit) is
    ``chebval(t(x), coef[r])`` with ``t(x) = (2 x - (lo + hi)) / (hi - lo)`` and ``(lo, hi) = domain``, the padded
    range ``(-nn, n + nn - 1)``.

    Attributes
    ----------
    coef : ndarray, float64, (N, deg + 1)
        Chebyshev coefficients in the scaled coordinate t (NaN where ``ok`` is False).
    ok : ndarray of bool, (N,)
        False for rings with fewer valid samples than ``deg + 1`` (their curves are NaN).
    mask : ndarray of bool, (n,) or (N, n)
        The masks of the fitted rings; True = valid.
    domain : (float, float)
        Padded x range mapped to t in [-1, 1].
    deg, nn : int
        Degree and padding (samples on each side).
    single : bool
        The input was one ring (n,): ``curves`` is then (n,).
    """

    coef: np.ndarray
    ok: np.ndarray
    mask: np.ndarray
    domain: tuple[float, float]
    deg: int
    nn: int
    n: int
    dtype: np.dtype = np.dtype(np.float64)
    single: bool = False
    _cache: dict = field(default_factory=dict, repr=False)

    def _t(self, x: np.ndarray) -> np.ndarray:
        lo, hi = self.domain
        return np.zeros_like(x, dtype=np.float64) if hi == lo else (2.0 * x - (lo + hi)) / (hi - lo)

    def evaluate(self, x: npt.ArrayLike) -> np.ndarray:
        """The fits at positions x (any real sample coordinates, not masked): (N, len(x)) float64."""
        xx = np.asarray(x, dtype=np.float64)
        return self.coef @ _cheb.chebvander(self._t(xx.ravel()), self.deg).T

    @property
    def curves(self) -> np.ndarray:
        """LOKI's ``yfit``: the fits at x = 0 … n-1 times the mask, (N, n) or (n,) for one ring (computed once)."""
        if "curves" not in self._cache:
            c = (self.evaluate(np.arange(self.n)) * self.mask).astype(self.dtype, copy=False)
            self._cache["curves"] = c[0] if self.single else c
        return self._cache["curves"]

    @property
    def shared_mask(self) -> bool:
        """True when all rings share one mask (then :meth:`features` is low-dimensional)."""
        return self.mask.ndim == 1

    def features(self) -> np.ndarray:
        """Vectors whose Euclidean distances equal the distances between the ``curves``.

        With a shared mask these are the coefficients whitened by the masked basis, ``coef @ R.T`` with
        ``V[mask] = Q R`` (V the basis at x = 0 … n-1), since ``||V (c1 - c2)|| = ||R (c1 - c2)||``: (N, deg + 1).
        With per-ring masks the curves themselves, (N, n).
        """
        if not self.shared_mask:
            return np.atleast_2d(np.asarray(self.curves, dtype=np.float64))
        if "features" not in self._cache:
            v = _cheb.chebvander(self._t(np.arange(self.n, dtype=np.float64)), self.deg)[self.mask]
            if v.shape[0] == 0:
                r = np.zeros((self.deg + 1, self.deg + 1))
            else:
                r = np.linalg.qr(v, mode="r")
            self._cache["features"] = self.coef @ r.T
        return self._cache["features"]

    def __len__(self) -> int:
        return self.coef.shape[0]


def _check_deg_overlap(deg: int, overlap: float) -> tuple[int, float]:
    if isinstance(deg, bool) or not isinstance(deg, (int, np.integer)):
        raise TypeError(f"deg must be an integer, got {deg!r}")
    if deg < 0:
        raise ValueError(f"deg must be >= 0, got {deg}")
    try:
        ov = float(overlap)
    except (TypeError, ValueError):
        raise TypeError(f"overlap must be a number in [0, 0.5], got {overlap!r}") from None
    if not (0.0 <= ov <= 0.5):
        raise ValueError(f"overlap must be in [0, 0.5], got {overlap!r}")
    return int(deg), ov


def _padded_index(n: int, nn: int) -> np.ndarray:
    """Sample index behind each padded position x = -nn … n+nn-1 (periodic)."""
    return np.arange(-nn, n + nn) % n


def _solve_pattern(vpad: np.ndarray, valid: np.ndarray, ys: np.ndarray, deg: int) -> Optional[np.ndarray]:
    """Least-squares Chebyshev coefficients (k, deg+1) of ys (k, m) over the padded samples `valid`, via QR."""
    a = vpad[valid]
    if a.shape[0] < deg + 1:
        return None
    q, r = np.linalg.qr(a)
    return solve_triangular(r, q.T @ ys[:, valid].T).T


_CACHE: "OrderedDict[tuple, object]" = OrderedDict()
_CACHE_SIZE = 8
_CACHE_LOCK = threading.Lock()
_MISSING = object()


def _cached(key: tuple, make):
    """Small LRU cache of the mask-pattern factorisations: LOKI scripts fit one ring per call with one mask."""
    with _CACHE_LOCK:
        hit = _CACHE.get(key, _MISSING)
        if hit is not _MISSING:
            _CACHE.move_to_end(key)
            return hit
    hit = make()  # outside the lock: two threads may both build it, the results are equal
    with _CACHE_LOCK:
        _CACHE[key] = hit
        if len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return hit


def _basis(n: int, nn: int, deg: int) -> tuple[np.ndarray, np.ndarray]:
    """Chebyshev basis over the padded positions x = -nn … n+nn-1 scaled to [-1, 1], and their source samples."""
    def make():
        lo, hi = float(-nn), float(n + nn - 1)
        x = np.arange(-nn, n + nn, dtype=np.float64)
        t = np.zeros_like(x) if hi == lo else (2.0 * x - (lo + hi)) / (hi - lo)
        vpad = _cheb.chebvander(t, deg)
        vpad.flags.writeable = False
        src = _padded_index(n, nn)
        src.flags.writeable = False
        return vpad, src

    return _cached(("basis", n, nn, deg), make)


def _shared_pattern(n: int, nn: int, deg: int, m: np.ndarray):
    """(fold, gram, pad_of) of one mask (n,): the folded least-squares projection (n, deg+1), the Gram matrix of
    the valid padded rows and their positions; None when fewer than deg + 1 padded samples are valid."""
    def make():
        vpad, src = _basis(n, nn, deg)
        valid_ref = m[src]
        if valid_ref.sum() < deg + 1:
            return None
        q, r = np.linalg.qr(vpad[valid_ref])
        proj = solve_triangular(r, q.T)  # (deg+1, n_valid_padded)
        fold = np.zeros((n, deg + 1))
        np.add.at(fold, src[valid_ref], proj.T)
        gram = r.T @ r  # V_ref^T V_ref of the shared pattern
        pad_of = np.nonzero(valid_ref)[0]  # padded rows of the pattern (a sample appears once or twice)
        for a in (fold, gram, pad_of):
            a.flags.writeable = False
        return fold, gram, pad_of

    return _cached(("pattern", n, nn, deg, np.packbits(m).tobytes()), make)


def fit_periodic(
    rings: npt.ArrayLike,
    mask: Optional[npt.ArrayLike] = None,
    deg: int = 15,
    overlap: float = 0.2,
    *,
    n_threads: Optional[int] = None,
) -> PeriodicFit:
    """Fit LOKI's periodic polynomial model to each ring, stably.

    Each masked ring is padded periodically by ``nn = int(overlap * n)`` samples on both sides (x = -nn … n+nn-1);
    samples whose value is 0 or whose mask is False are excluded (as in LOKI); a least-squares polynomial of degree
    `deg` in x is fitted. Unlike LOKI (power basis in raw pixel coordinates), the polynomial is expressed in the
    Chebyshev basis of x scaled to [-1, 1] and solved by QR, so degree 15 over thousands of samples is well
    conditioned. Rings sharing one exclusion pattern (the common case: one mask, no zero-valued valid samples) share
    one QR.

    Parameters
    ----------
    rings : array_like, (N, n) or (n,)
        Ring profiles I(phi). Not modified.
    mask : array_like of bool, (n,) or (N, n), optional
        True = valid sample (LOKI's convention). None = all valid.
    deg : int
        Polynomial degree, >= 0 and below the padded ring length n + 2 nn (else ValueError up front).
    overlap : float
        Padding fraction in [0, 0.5].
    n_threads : int, optional
        Threads of the compiled projection for rings sharing one mask (None: all usable cores).

    Returns
    -------
    PeriodicFit
        ``.curves`` is LOKI's ``yfit`` (fit at x = 0 … n-1 times the mask), float32 for float32 input, else
        float64; ``.coef``, ``.ok``, ``.evaluate(x)`` and ``.features()`` (for :func:`xcca.pair_shots`).
        Rings with fewer than ``deg + 1`` valid samples get NaN coefficients and curves, ``ok = False`` and one
        :class:`FitWarning` for the batch.
    """
    arr, single = _as_rings(rings)
    deg, ov = _check_deg_overlap(deg, overlap)
    n_threads = _checks.n_threads(n_threads)
    n_rings, n = arr.shape
    m = _as_mask(mask, n_rings, n)
    nn = int(ov * n)
    if deg + 1 > n + 2 * nn:
        # Refused up front: no ring could be fitted (and a huge deg would build a huge basis first).
        raise ValueError(f"deg={deg} needs at least deg + 1 = {deg + 1} samples per ring, but the rings have "
                         f"n = {n} samples ({n + 2 * nn} with the periodic padding)")
    lo, hi = float(-nn), float(n + nn - 1)
    vpad, src = _basis(n, nn, deg)
    coef = np.full((n_rings, deg + 1), np.nan)

    # Fast path for a shared mask: fold the padded projection back onto the n samples, so one GEMM fits a block.
    fold = None
    if m.ndim == 1:
        shared = _shared_pattern(n, nn, deg, m)
        if shared is not None:
            fold, gram, pad_of = shared
    valid_u8 = m.astype(np.uint8) if m.ndim == 1 else None
    for b in range(0, n_rings, _BLOCK):
        raw = arr[b : b + _BLOCK]
        mb = m if m.ndim == 1 else m[b : b + _BLOCK]
        if fold is not None:
            # C++ kernel (reads the input dtype directly, multithreaded): coef of every ring, and flags for rings
            # whose valid samples contain zeros (their own exclusion pattern: LOKI drops y == 0) or non-finite values.
            cb, flags = _core.fold_project(raw, fold, valid_u8, n_threads)
            regular = flags == 0
            coef[b : b + _BLOCK][regular] = cb[regular]
            if (flags == 2).any():
                bad = b + int(np.nonzero(flags == 2)[0][0])
                raise ValueError(f"rings: ring {bad} has a non-finite value (NaN or inf) at a valid (mask True) sample")
            # Rings with zeros at valid samples (LOKI drops y == 0): their Gram matrix is the shared one minus the
            # dropped rows', G = G_ref - Vd^T Vd, and their right-hand side is the shared one's (the dropped y are
            # 0), so c = c0 + G^-1 Vd^T (Vd c0) from the shared projection c0 -- no factorisation of the whole
            # pattern and no grouping of patterns (np.unique over rows cost ~30 ms per ring).
            for i in np.nonzero(flags == 1)[0]:
                drop_samples = np.nonzero(raw[i] == 0)[0]
                drop_samples = drop_samples[m[drop_samples]]
                vd = vpad[pad_of[np.isin(src[pad_of], drop_samples)]]
                c0 = cb[i]
                if pad_of.size - vd.shape[0] < deg + 1:
                    continue  # too few samples left for the degree: NaN, as in the QR path
                try:
                    cf = np.linalg.cholesky(gram - vd.T @ vd)
                except np.linalg.LinAlgError:  # too few samples left for the degree: NaN, as the QR path
                    continue
                corr = solve_triangular(cf, vd.T @ (vd @ c0), lower=True)
                coef[b + i] = c0 + solve_triangular(cf.T, corr, lower=False)
            irregular = np.zeros(0, dtype=np.intp)
            blk = None
        else:
            blk = np.asarray(raw, dtype=np.float64)
            if not np.isfinite(blk).all() and not np.isfinite(np.where(mb, blk, 0.0)).all():
                bad = b + int(np.nonzero(~np.isfinite(np.where(mb, blk, 0.0)).all(axis=1))[0][0])
                raise ValueError(f"rings: ring {bad} has a non-finite value (NaN or inf) at a valid (mask True) sample")
            irregular = np.arange(blk.shape[0])
        if irregular.size:
            rows_blk = blk if fold is not None else blk[irregular]  # the fold path kept only the irregular rows
            ypad = (rows_blk * mb if m.ndim == 1 else rows_blk * mb[irregular])[:, src]
            valid = ypad != 0
            # Group identical exclusion patterns so that each distinct pattern is factorised once.
            # (on bit-packed rows viewed as one opaque item each: far cheaper than np.unique(valid, axis=0))
            packed = np.ascontiguousarray(np.packbits(valid, axis=1))
            keys = packed.view(np.dtype((np.void, packed.shape[1]))).ravel()
            _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
            inverse = inverse.ravel()
            for g, f in enumerate(first):
                rows = np.nonzero(inverse == g)[0]
                c = _solve_pattern(vpad, valid[f], ypad[rows], deg)
                if c is not None:
                    coef[b + irregular[rows]] = c
    ok = np.isfinite(coef).all(axis=1)
    if not ok.all():
        bad = np.nonzero(~ok)[0]
        msg = (f"fit_periodic: {bad.size} ring(s) have fewer than deg + 1 = {deg + 1} valid samples; their curves "
               f"are NaN (first: ring {bad[0]})")
        _log.warning(msg)
        warnings.warn(msg, FitWarning, stacklevel=2)
    return PeriodicFit(coef=coef, ok=ok, mask=m.copy(), domain=(lo, hi), deg=deg, nn=nn, n=n,
                       dtype=_curve_dtype(arr.dtype), single=single)


def _modified_z(points: np.ndarray) -> np.ndarray:
    """0.6745 |x - median| / MAD per row of a (N, k) or (N, k, d) array with NaN for absent points."""
    if points.ndim == 2:
        med = np.nanmedian(points, axis=1, keepdims=True)
        diff = np.abs(points - med)
    else:
        med = np.nanmedian(points, axis=1, keepdims=True)
        diff = np.sqrt(np.sum((points - med) ** 2, axis=-1))
    mad = np.nanmedian(diff, axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = 0.6745 * diff / mad
    # MAD = 0: no spread to measure outliers against, so nothing is an outlier (LOKI divides by zero instead).
    return np.where(mad > 0, z, 0.0)


def is_outlier(points: npt.ArrayLike, thresh: float = 3.5) -> np.ndarray:
    """LOKI's modified z-score outlier test.

    ``0.6745 * |x - median| / MAD > thresh``; for 2-D points (k, d) the Euclidean distance to the per-column median
    replaces ``|x - median|`` and MAD is the median of those distances. MAD = 0 gives no outliers (no warning).

    Parameters
    ----------
    points : array_like, (k,) or (k, d)
        Observations (rows). Not modified. For a ``numpy.ma.MaskedArray`` the masked observations (rows with any
        masked entry) are left out of the median and the MAD and are never outliers (``xcca.loki.is_outlier``
        reproduces LOKI's different result on masked arrays).
    thresh : float
        Modified z-score threshold (finite, > 0; NaN or inf raise ValueError).

    Returns
    -------
    ndarray of bool, (k,)
    """
    thresh = _checks.finite_real(thresh, "thresh", positive=True)
    p = np.asarray(points)
    if p.dtype == object or p.dtype.kind not in "biuf":
        raise TypeError(f"points must be a real numeric array, got dtype {p.dtype}")
    if p.ndim not in (1, 2):
        raise ValueError(f"points must be 1-D (k,) or 2-D (k, d), got shape {p.shape}")
    if p.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    p = p.astype(np.float64)
    if isinstance(points, np.ma.MaskedArray) and np.ma.getmask(points).any():
        # Masked observations are absent: excluded from median and MAD, never outliers (NaN rows below).
        m = np.ma.getmaskarray(points)
        p[m.any(axis=1) if m.ndim == 2 else m] = np.nan
    z = _modified_z(p[None, :] if p.ndim == 1 else p[None, :, :])[0]
    return z > thresh


def remove_peaks(
    rings: npt.ArrayLike,
    mask: Optional[npt.ArrayLike] = None,
    *,
    baseline: Union[None, npt.ArrayLike, PeriodicFit] = None,
    peak_thresh: float = 3.0,
    thick: Optional[int] = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mask Bragg peaks: outliers of (ring - baseline) over the valid samples, widened by ±thick.

    Per ring, the valid samples of ``ring - baseline`` are tested with :func:`is_outlier` (``peak_thresh``); each
    outlier and its ``thick`` neighbours on either side are masked. The window wraps around the ring (the ring is
    periodic); LOKI clips it at the ends instead.

    Parameters
    ----------
    rings : array_like, (N, n) or (n,)
        Ring profiles. Not modified.
    mask : array_like of bool, (n,) or (N, n), optional
        True = valid sample. None = all valid.
    baseline : array_like (n,) or (N, n), or PeriodicFit, optional
        Smooth background subtracted before the test (a PeriodicFit is evaluated at x = 0 … n-1).
    peak_thresh : float
        Modified z-score threshold.
    thick : int, optional
        Half-width of the masked window around each outlier (None or 0: the outlier only).

    Returns
    -------
    cleaned : ndarray (same shape as rings; float32 for float32 input, else float64)
        ``rings * new_mask``.
    new_mask : ndarray of bool (same shape as rings)
        The mask with the peaks removed (True = valid).
    removed : ndarray (same shape and dtype as cleaned)
        The values that were valid before and are masked now; 0 elsewhere.
    """
    arr, single = _as_rings(rings)
    peak_thresh = _checks.finite_real(peak_thresh, "peak_thresh", positive=True)
    n_rings, n = arr.shape
    m = np.broadcast_to(_as_mask(mask, n_rings, n), arr.shape)
    if thick is not None:
        if isinstance(thick, bool) or not isinstance(thick, (int, np.integer)) or thick < 0:
            raise ValueError(f"thick must be a non-negative integer or None, got {thick!r}")
    x = arr.astype(np.float64)
    if baseline is not None:
        if isinstance(baseline, PeriodicFit):
            if baseline.n != n or len(baseline) not in (1, n_rings):
                raise ValueError("baseline fit does not match the rings' shape")
            base = baseline.evaluate(np.arange(n))
        else:
            base = _checks.real_array(baseline, "baseline").astype(np.float64)
            if base.shape not in ((n,), (n_rings, n), (1, n)):
                raise ValueError(f"baseline has shape {base.shape}, expected ({n},) or ({n_rings}, {n})")
        x = x - base
    pts = np.where(m, x, np.nan)
    out = np.zeros(arr.shape, dtype=bool)
    has = m.any(axis=1)
    if has.any():
        z = _modified_z(pts[has])
        out[has] = (z > peak_thresh) & m[has]
    region = out.copy()
    for s in range(1, min(thick or 0, n) + 1):  # periodic dilation of the outliers by ±thick
        region |= np.roll(out, s, axis=1) | np.roll(out, -s, axis=1)
    new_mask = m & ~region
    dt = _curve_dtype(arr.dtype)
    cleaned = (arr * new_mask).astype(dt, copy=False)
    removed = np.where(m & region, arr, 0).astype(dt, copy=False)
    if single:
        return cleaned[0], new_mask[0], removed[0]
    return cleaned, new_mask, removed
