"""Angular correlations of rings I(q, phi): masked FFT auto-, cross- and difference correlations, and cos psi.

Definition (for rings a, b of length n with masks ma, mb, True = valid; lag k <-> Delta = 2 pi k / n)::

    C[k] = sum_j ma_j mb_{(j+k)%n} a_j b_{(j+k)%n} / sum_j ma_j mb_{(j+k)%n}

NaN where the denominator is 0 (e.g. an all-masked ring); without a mask the denominator is n. The sums are computed
with real FFTs in the C++ core; the pair counts in the denominator are exact integers. A NaN (or inf) in a *valid*
sample spreads over every lag of the correlations involving that ring (the FFT mixes all lags); NaN in masked samples
is ignored.

Implementation: rings are transformed several at a time, one per SIMD lane (8 float32 / 4 float64 lanes with
AVX2+FMA, picked at run time; 4 / 2 otherwise; set XCCA_DISABLE_AVX2=1 to force the baseline), |F|^2 (or
conj(A) B), the inverse transform and the division by the pair counts are fused, and the pair counts of binary
masks come from run lengths in exact integer arithmetic (an FFT rounded to integers for masks with very many runs):
each pair of valid runs adds four unit impulses to the counts' second difference, integrated twice with SIMD prefix
sums over the lags 0..n/2 and mirrored (autocorrelation counts are symmetric). Counts are computed once per distinct
mask: a mask shared by all shots (or a single mask row for all rings) is done once, and a ring whose mask equals the
previous ring's reuses it. With AVX2, float32 rings go into and out of the SIMD lanes as transposed 8 x 8 blocks, the
mask applied on the way in and the scale and reciprocal counts on the way out.

Accuracy: the absolute error of C[k] is about eps * log2(n) * sqrt(sum (ma a)^2 * sum (mb b)^2) / count[k]
(eps = 1.2e-7 for float32, 2.2e-16 for float64), i.e. relative to the rings' energy, not to C[k] itself.
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from . import _checks, _core

__all__ = ["autocorrelate", "cross_correlate", "difference_correlation", "cos_psi", "resample_cos_psi"]

_log = logging.getLogger(__name__)

ArrayLike = Union[np.ndarray, Sequence, float]
_NORMALIZE = (None, "mean", "std")


def _float_array(x, name: str) -> np.ndarray:
    a = _checks.real_array(x, name)
    if a.ndim == 0:
        raise ValueError(f"{name} must have at least one axis (the angle), got a 0-D scalar")
    # float32 in any byte order stays float32 (a big-endian '>f4' is not == np.float32)
    dtype = np.float32 if (a.dtype.kind == "f" and a.dtype.itemsize == 4) else np.float64
    return np.ascontiguousarray(a, dtype=dtype)  # native byte order, C order; a copy only when needed


def _mask_rows(mask, shape: Tuple[int, ...]) -> Optional[np.ndarray]:
    """Mask (True = valid) broadcast to rings of `shape` (..., nq, n) -> C-contiguous bool (rows, n) with rows 1, nq
    or prod(shape[:-1]) (what the core accepts); None for no mask."""
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.dtype.kind == "c" or m.dtype.kind not in "biuf":
        raise TypeError(f"mask must be a boolean array (True = valid), got dtype {m.dtype}")
    if m.dtype.kind == "f":
        if not np.isin(m, (0.0, 1.0)).all():
            raise ValueError("a floating-point mask must hold only 0 and 1 (True = valid)")
    if m.dtype != bool:
        m = m != 0
    try:
        if np.broadcast_shapes(m.shape, shape) != tuple(shape):
            raise ValueError
    except ValueError:
        raise ValueError(f"mask of shape {m.shape} does not broadcast to the rings' shape {tuple(shape)}") from None
    trimmed = m.shape[next((i for i, s in enumerate(m.shape) if s != 1), len(m.shape)):]
    n = shape[-1]
    if len(trimmed) <= 1:
        return np.ascontiguousarray(np.broadcast_to(m.reshape(trimmed), (n,))).reshape(1, n)
    if len(trimmed) == 2 and len(shape) >= 2:
        return np.ascontiguousarray(np.broadcast_to(m.reshape(trimmed), shape[-2:]))
    return np.ascontiguousarray(np.broadcast_to(m, shape)).reshape(-1, n)


def _pairs(pairs, name: str, limit: int) -> np.ndarray:
    p = np.asarray(pairs)
    if p.size == 0 and p.ndim <= 2:
        p = np.zeros((0, 2), np.int64)
    if p.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer indices, got dtype {p.dtype}")
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"{name} must have shape (npairs, 2), got {p.shape}")
    p = p.astype(np.int64)
    if p.size and (p.min() < 0 or p.max() >= limit):
        raise ValueError(f"{name} holds indices outside [0, {limit}): min {p.min()}, max {p.max()}")
    return np.ascontiguousarray(p)


def _check_common(normalize, average) -> None:
    if normalize not in _NORMALIZE:
        raise ValueError(f"normalize must be None, 'mean' or 'std', got {normalize!r}")
    if not isinstance(average, (bool, np.bool_)):
        raise TypeError(f"average must be a bool, got {type(average).__name__}")


def _run(a3: np.ndarray, mask: Optional[np.ndarray], shot_pairs, q_pairs, normalize, average, raw, shape, out,
         n_threads, inputs=None) -> np.ndarray:
    """Runs the core into `out` (allocated if None) of the final `shape`; `inputs` (name -> array as the caller
    gave it) must not overlap `out`."""
    n_threads = _checks.n_threads(n_threads)
    if average and a3.shape[0] == 0:
        raise ValueError("rings has 0 shots: average=True needs at least one (the mean of nothing is undefined)")
    if out is not None:
        _checks.no_overlap(out, {**(inputs or {}), "rings (converted)": a3, "mask (converted)": mask})
    if out is None:
        res = np.empty(shape, dtype=a3.dtype)
        target = res
    else:
        if not isinstance(out, np.ndarray):
            raise TypeError("out must be a numpy.ndarray")
        if out.shape != tuple(shape) or out.dtype != a3.dtype:
            raise ValueError(f"out must have shape {tuple(shape)} and dtype {a3.dtype}, got {out.shape} {out.dtype}")
        if not out.flags.writeable:
            raise ValueError("out is read-only")
        res = out
        target = out if out.flags.c_contiguous else np.empty(shape, dtype=a3.dtype)
    _log.debug("correlate: rings %s %s, mask rows %s, out %s", a3.shape, a3.dtype,
               None if mask is None else mask.shape[0], shape)
    _core.correlate(a3, mask, shot_pairs, q_pairs, normalize, bool(average), raw, target, n_threads)
    if target is not res:
        res[...] = target
    return res


_COMMON_DOC = """
    normalize : {None, "mean", "std"}
        None: C as defined. "mean": C / (mu_a mu_b), mu = mean of each ring over its own valid samples.
        "std": each ring's masked mean is subtracted from its valid samples first, then C / (sigma_a sigma_b),
        sigma^2 = masked population variance (an autocorrelation is then 1 at lag 0). A constant ring gives NaN/inf.
    average : bool
        Return the mean over the leading (shot) axes instead of one result per shot; the extra memory is
        O(threads * rows * n) whatever the number of shots. Sums are accumulated in float64.
    out : ndarray, optional
        Destination of exactly the result's shape and dtype; it must not share memory with `rings` or `mask`
        (ValueError: the kernels would read overwritten input).
    n_threads : int, optional
        Threads to use (None: all usable cores)."""


def autocorrelate(rings: ArrayLike, mask: Optional[ArrayLike] = None, *, normalize: Optional[str] = None,
                  average: bool = False, out: Optional[np.ndarray] = None,
                  n_threads: Optional[int] = None) -> np.ndarray:
    """Masked angular autocorrelation C(q, Delta) of every ring.

    Parameters
    ----------
    rings : array_like, shape (..., nq, n) or (n,)
        Intensities I(q, phi) on n equally spaced angles. float32 stays float32 and float64 stays float64;
        integers become float64.
    mask : array_like of bool, optional
        True = valid sample (LOKI's convention); broadcastable to `rings`, e.g. (nq, n) shared by a stack of shots,
        or the full shape for per-shot masks.
    """ + _COMMON_DOC + """

    Returns
    -------
    ndarray, shape (..., nq, n), or (nq, n) with average=True
        C[..., q, k] = sum_j m_j m_{j+k} a_j a_{j+k} / sum_j m_j m_{j+k}, lag k <-> Delta = 2 pi k / n; NaN where no
        pair of valid samples exists.
    """
    _check_common(normalize, average)
    a = _float_array(rings, "rings")
    if a.ndim == 0:
        raise ValueError("rings must have at least one axis (the angle)")
    if a.shape[-1] == 0:
        raise ValueError("rings: the ring length n (last axis) must be >= 1")
    shape = a.shape
    m = _mask_rows(mask, shape)
    nq = shape[-2] if a.ndim >= 2 else 1
    a3 = a.reshape(-1, nq, shape[-1])
    oshape = (shape[-2:] if a.ndim >= 2 else shape) if average else shape
    return _run(a3, m, None, None, normalize, average, False, oshape, out, n_threads, {"rings": rings, "mask": mask})


def _all_q_pairs(nq: int) -> np.ndarray:
    i, j = np.triu_indices(nq)
    return np.stack([i, j], axis=1).astype(np.int64)


def cross_correlate(rings: ArrayLike, q_pairs: Optional[ArrayLike] = None, mask: Optional[ArrayLike] = None, *,
                    normalize: Optional[str] = None, average: bool = False, out: Optional[np.ndarray] = None,
                    n_threads: Optional[int] = None) -> np.ndarray:
    """Masked angular cross-correlation C(q, q', Delta) = <I(q, phi) I(q', phi + Delta)> for pairs of rings.

    Parameters
    ----------
    rings : array_like, shape (..., nq, n)
        Intensities; float32 stays float32, float64 stays float64, integers become float64.
    q_pairs : array_like of int, shape (npairs, 2), optional
        (q, q') ring indices; default: all q <= q' in row-major order (numpy.triu_indices(nq)).
        C(q', q, Delta) = C(q, q', -Delta), i.e. swapping a pair reverses the lags k -> (n - k) % n.
    mask : array_like of bool, optional
        True = valid sample (LOKI's convention); broadcastable to `rings`.
    """ + _COMMON_DOC + """

    Returns
    -------
    ndarray, shape (..., npairs, n), or (npairs, n) with average=True
        C[..., p, k] = sum_j ma_j mb_{j+k} a_j b_{j+k} / sum_j ma_j mb_{j+k} with a = ring q, b = ring q' of pair p.
    """
    _check_common(normalize, average)
    a = _float_array(rings, "rings")
    if a.ndim < 2:
        raise ValueError(f"rings must have shape (..., nq, n), got {a.shape}")
    if a.shape[-1] == 0:
        raise ValueError("rings: the ring length n (last axis) must be >= 1")
    shape = a.shape
    nq, n = shape[-2:]
    qp = _all_q_pairs(nq) if q_pairs is None else _pairs(q_pairs, "q_pairs", nq)
    m = _mask_rows(mask, shape)
    a3 = a.reshape(-1, nq, n)
    oshape = (len(qp), n) if average else shape[:-2] + (len(qp), n)
    if len(qp) == 0:
        return np.empty(oshape, dtype=a.dtype) if out is None else out
    return _run(a3, m, None, qp, normalize, average, False, oshape, out, n_threads, {"rings": rings, "mask": mask})


def difference_correlation(rings: ArrayLike, pairs: ArrayLike, mask: Optional[ArrayLike] = None, *,
                           q_pairs: Optional[ArrayLike] = None, normalize: Optional[str] = None,
                           average: bool = True, out: Optional[np.ndarray] = None,
                           n_threads: Optional[int] = None) -> np.ndarray:
    """Difference correlations: correlations of rings[i] - rings[j] over shot pairs (i, j), averaged over the pairs.

    Differences of paired shots cancel detector artefacts common to both shots. Each difference uses the combined
    mask m_i & m_j.

    Parameters
    ----------
    rings : array_like, shape (nshots, nq, n) or (nshots, n)
        One row set per shot; float32 stays float32, float64 stays float64, integers become float64.
    pairs : array_like of int, shape (npairs, 2)
        Shot index pairs (i, j): the difference is rings[i] - rings[j].
    mask : array_like of bool, optional
        True = valid sample (LOKI's convention); broadcastable to `rings` (per-shot masks allowed).
    q_pairs : array_like of int, shape (nqpairs, 2), optional
        If given, cross-correlations of the difference rings for these (q, q') pairs instead of autocorrelations.
    """ + _COMMON_DOC.replace("the leading (shot) axes", "the shot pairs").replace(
        "average : bool", "average : bool, default True") + """

    Returns
    -------
    ndarray
        (nq, n) — or (nqpairs, n) with q_pairs — with average=True (the default); with average=False one result per
        shot pair: (npairs, nq, n) / (npairs, nqpairs, n). For rings of shape (nshots, n) the q axis is dropped.
    """
    _check_common(normalize, average)
    a = _float_array(rings, "rings")
    if a.ndim not in (2, 3):
        raise ValueError(f"rings must have shape (nshots, nq, n) or (nshots, n), got {a.shape}")
    if a.shape[-1] == 0:
        raise ValueError("rings: the ring length n (last axis) must be >= 1")
    squeeze = a.ndim == 2
    a3 = a[:, None, :] if squeeze else a
    m = _mask_rows(None if mask is None else (np.asarray(mask)[..., None, :] if squeeze and np.ndim(mask) >= 2
                                              else mask), a3.shape)
    nshots, nq, n = a3.shape
    sp = _pairs(pairs, "pairs", nshots)
    if len(sp) == 0:
        raise ValueError("pairs is empty")
    qp = None if q_pairs is None else _pairs(q_pairs, "q_pairs", nq)
    rows = nq if qp is None else len(qp)
    oshape = (rows, n) if average else (len(sp), rows, n)
    if squeeze and qp is None:
        oshape = oshape[:-2] + (n,)
    if qp is not None and len(qp) == 0:
        return np.empty(oshape, dtype=a.dtype) if out is None else out
    return _run(np.ascontiguousarray(a3), m, sp, qp, normalize, average, False, oshape, out, n_threads,
                {"rings": rings, "mask": mask})


def cos_psi(n: int, q: ArrayLike, wavelength: float, q2: Optional[ArrayLike] = None) -> np.ndarray:
    """cos psi, the cosine of the angle between the scattering vectors q and q' at each lag Delta = 2 pi k / n.

    With Bragg angles theta = arcsin(q lambda / (4 pi)) (q = 4 pi sin(theta) / lambda, i.e. q in inverse units of
    the wavelength: q in 1/Angstrom with lambda in Angstrom, or q in 1/nm with lambda in nm),
    cos psi = cos(Delta) cos(theta1) cos(theta2) + sin(theta1) sin(theta2).

    Parameters
    ----------
    n : int
        Number of lags (the ring length).
    q, q2 : array_like
        Magnitudes of the two scattering vectors; q2 defaults to q (autocorrelation). Broadcast against each other.
    wavelength : float
        Wavelength lambda, in the inverse unit of q.

    Returns
    -------
    ndarray, shape broadcast(q, q2).shape + (n,)
    """
    n = _checks.positive_int(n, "n")
    lam = _checks.finite_real(wavelength, "wavelength", positive=True)
    q1 = _checks.real_array(q, "q").astype(np.float64)
    qb = q1 if q2 is None else _checks.real_array(q2, "q2").astype(np.float64)
    if not (np.isfinite(q1).all() and np.isfinite(qb).all()):
        raise ValueError("q and q2 must be finite")
    s1, s2 = q1 * lam / (4 * np.pi), qb * lam / (4 * np.pi)
    if np.any(np.abs(s1) > 1) or np.any(np.abs(s2) > 1):
        raise ValueError("q * wavelength / (4 pi) must be within [-1, 1] (q and wavelength in consistent units)")
    t1, t2 = np.arcsin(s1)[..., None], np.arcsin(s2)[..., None]
    delta = 2 * np.pi * np.arange(n) / n
    return np.cos(delta) * np.cos(t1) * np.cos(t2) + np.sin(t1) * np.sin(t2)


def resample_cos_psi(corr: ArrayLike, q: ArrayLike, wavelength: float, q2: Optional[ArrayLike] = None, *,
                     grid: Union[int, ArrayLike, None] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Resample correlations C(..., Delta) onto a grid of cos psi by linear interpolation.

    cos psi depends on Delta only through cos Delta, so C at Delta and at -Delta (lags k and n - k) land on the same
    cos psi; they are averaged (for autocorrelations they are equal). The lags 0 <= k <= n/2 then give cos psi
    monotonically; grid points outside a row's covered range are NaN.

    Parameters
    ----------
    corr : array_like, shape (..., n)
        Correlations, e.g. from autocorrelate or cross_correlate.
    q, q2, wavelength
        As in cos_psi; q (and q2) broadcast against corr.shape[:-1].
    grid : int or array_like, optional
        cos psi values (increasing, finite), or a number of points (an int >= 2) evenly spanning [-1, 1];
        default n // 2 + 1 points.

    Returns
    -------
    grid : ndarray, shape (m,)
    values : ndarray, float64, shape corr.shape[:-1] + (m,)
    """
    c = _checks.real_array(corr, "corr").astype(np.float64)
    if c.ndim == 0 or c.shape[-1] == 0:
        raise ValueError("corr must have a non-empty last (lag) axis")
    n = c.shape[-1]
    if grid is None or np.ndim(grid) == 0:
        npts = n // 2 + 1 if grid is None else _checks.positive_int(grid, "grid (number of points)", minimum=2)
        _checks.check_memory(8.0 * npts * max(1, c.size // n), f"grid={npts}")
        g = np.linspace(-1.0, 1.0, npts)
    else:
        g = _checks.real_array(grid, "grid").astype(np.float64)
        if g.ndim != 1 or g.size == 0 or not np.isfinite(g).all() or np.any(np.diff(g) < 0):
            raise ValueError("grid must be a non-empty 1-d increasing array of finite cos psi values")
    cp = cos_psi(n, q, wavelength, q2)
    lead = c.shape[:-1]
    try:
        cp = np.broadcast_to(cp, lead + (n,))
    except ValueError:
        raise ValueError(f"q of shape {np.shape(q)} does not broadcast to corr.shape[:-1] = {lead}") from None
    k = np.arange(n // 2 + 1)
    sym = 0.5 * (c[..., k] + c[..., (n - k) % n])
    x = cp[..., k]
    res = np.empty(lead + g.shape)
    for idx in np.ndindex(*lead):
        # cos psi decreases with k on [0, n/2]: reverse for np.interp.
        res[idx] = np.interp(g, x[idx][::-1], sym[idx][::-1], left=np.nan, right=np.nan)
    return g, res
