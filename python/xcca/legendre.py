"""Kam's Legendre expansion of angular correlations, C(q, q', psi) = sum_l B_l(q, q') P_l(cos psi), solved with
Ewald curvature, data-driven regularisation and propagated error bars.

The forward model
-----------------
On the correlator's lag grid Delta_k = 2 pi k / n, a pair of rings (q, q') sees the scattering vectors at the angle

    cos psi_k = a cos(Delta_k) + b,   a = cos(theta) cos(theta'),  b = sin(theta) sin(theta')

(``xcca.cos_psi``; theta = arcsin(q lambda / 4 pi) is the Bragg angle, q in 1/Angstrom, lambda in Angstrom). With
curvature (b > 0) a pair covers only [-cos(theta + theta'), cos(theta - theta')], on which the P_l are not
orthogonal. Because cos psi is a polynomial of degree 1 in u = cos(Delta), P_l(a u + b) is a polynomial of degree l
in u, i.e. a finite sum of Chebyshev polynomials T_m(u) = cos(m Delta), m <= l:

    C_pair(Delta) = sum_m c_m cos(m Delta),   c = T_pair B_pair,

with T_pair the (l_max + 1) x n_l Chebyshev coefficients of P_l(a u + b) (exact: interpolation at l_max + 1
Chebyshev nodes). Everything that makes the problem ill conditioned (curvature) sits in the small matrix T_pair;
the Delta sampling, the excluded lags and the weights sit in the well-conditioned cosine basis M[k, m] = cos(m Delta_k).

The solver
----------
Lags k and n - k have the same cos psi; the data are first folded onto k = 0 .. n // 2 (weighted mean; if a pair's
correlation is symmetric in Delta to rounding, e.g. an autocorrelation, the two halves are one measurement, not two).
Per pair, the weighted normal matrix of the cosine basis G = M^T W M = L L^T (Cholesky, one batched call; a single
one when all pairs share their weights) turns the least-squares problem over the n/2 lags into a tiny one,

    || W^(1/2) (M T B - y) ||^2 = || K B - d ||^2 + r0,   K = L^T T,  d = L^-1 M^T W y,

solved by one batched SVD K = U S V^T over all pairs. Every regularisation is a filter f_i on the SVD, so the
residual norm, solution norm, effective number of parameters and the criteria are closed forms in (s, U^T d) and
scanning 50 values costs no more than one solve.

- The problem is whitened first: noise variance 1 per folded lag (from ``error``, or sigma estimated from each pair's
  least-squares residual). ``reg`` for Tikhonov is then a dimensionless lambda in noise units:
  min ||K B - d||^2 + lambda^2 ||B / tau||^2, f = s^2 / (s^2 + lambda^2) on the scaled problem.
- ``penalty="scaled"`` (default) is the prior scale of a positive semi-definite B_l: |B_l(q, q')| <=
  sqrt(B_l(q, q) B_l(q', q')), so pair (q, q') is penalised relative to tau_l(q, q')^2 = kappa_l B_l(q, q)
  B_l(q', q'), with B_l(q, q) the least-squares autocorrelation coefficients (floored at their standard error) and
  kappa_l estimated without bias from the least-squares solution (precision-weighted mean of B^2 - var), separately
  for the autocorrelation pairs and the cross pairs. All of it comes from the data. It needs every ring's
  autocorrelation pair and the ring index ((nq, nq, nphi) input or ``pairs``); otherwise, and with
  ``penalty="pooled"``, one tau_l for all pairs (the same estimator over all pairs). lambda ~ 1 is then the
  empirical-Bayes (Wiener) value. ``penalty="identity"`` is the textbook ||B||^2. Why per pair: with random PSD
  B_l, B_l(q, q) is on average sqrt(2l + 1) times the size of a cross term, and a pair of strong rings can carry a
  large cross term; the pooled scale over-shrinks it. In the round-trip test (nq = 8, seed 0) one such pair
  (theta 5 / 30 deg, condition 2.9e3) made GCV with the pooled scale 2.0x the best fixed lambda (the oracle); with
  the PSD scale GCV is within 1.43x of the oracle in all 90 cases scanned (nq = 8-20, random PSD B_l, l <= 20).
- ``scope="global"`` (default) chooses one lambda for all pairs from the criterion of the whole block-diagonal
  problem (robust: thousands of pairs average the criterion's noise); ``scope="pair"`` chooses per pair.
- Truncated SVD keeps the singular values s_i > reg * s_max (relative, like pypadf's ``pinv(cond=0.5)``, which is
  ``method="tsvd", reg=0.5``); the criteria scan the number kept.
- Criteria: "gcv" (generalised cross-validation, refined by a parabola between grid values; with ``gcv_gamma`` < 1
  Lukas's robust GCV, M. A. Lukas, Inverse Problems 22 (2006) 1883: R(lambda) = (gamma + (1 - gamma) tr(A^2) / m)
  GCV(lambda)). Default gamma: 1 (classical GCV) with the PSD-structured scale, 0.3 with a pooled scale: with few
  pairs (nq = 8: 36 pairs) and the pooled scale, the classical GCV curve is flat to 0.1 % and its noise put the
  minimum at lambda = 0.07 in one of ten test cases, 20x the oracle error in B; the robust factor penalises the
  variance of under-regularised solutions. With the PSD-structured scale classical GCV was the best of gamma = 0.3,
  0.5, 0.7, 1 (worst case 1.43x the oracle over 90 cases, against 1.8x for 0.3), "lcurve" (corner of
  maximum curvature of (log ||r||, log ||B||)), "discrepancy" (the largest lambda with ||r||^2 <= number of lags,
  solved by bisection).

Error bars
----------
With ``error`` (standard errors of the correlation, e.g. the run correlator's jackknife) the fit is weighted by
1 / error^2 and cov(B) = V diag(f^2 / s^2) V^T is propagated, treating the lags as independent (correlations between
neighbouring lags of a real correlator make this an underestimate; use ``blocks`` for an estimate that includes
them). Without ``error`` the lags are weighted equally and sigma^2 is estimated from the least-squares residual of
each pair (which also absorbs the truncation at l_max). With ``blocks`` (K block or half-set correlations) each block
is decomposed with the *same* linear operator (the regularisation chosen on the full data), giving the jackknife
standard error and, per l, the Fourier-shell-like correlation between blocks — the standard half-set consistency
check. Regularisation bias is not in ``B_error``.

Positive semi-definiteness
--------------------------
B_l(q, q') = sum_m I_lm(q) I_lm(q')* is, as a matrix over the rings, positive semi-definite of rank <= 2 l + 1.
``method="psd"`` fits B_l = Y_l Y_l^T with Y_l of nq x min(2l + 1, nq) columns (Burer-Monteiro; L-BFGS on the same
Tikhonov objective, started from the Tikhonov solution with its negative eigenvalues dropped). The other methods
report ``psd_distance`` per l: || B_l - P(B_l) ||_F / || B_l ||_F, P the projection onto PSD matrices of rank
<= 2 l + 1.

Excluded lags
-------------
The default excludes the lags within max(2, ceil(n / 720)) samples (>= 0.5 degree) of Delta = 0 (the shot-noise spike
and the correlations the polar remap's interpolation puts between neighbouring samples) and of Delta = pi (the
remap's centro-symmetric partner samples). ``exclude=0`` keeps every lag; an int k excludes +-k samples around 0 and
pi; a sequence of (lo, hi) ranges in radians excludes those Delta (and their mirrors -Delta).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np

from . import _checks
from .correlate import cos_psi

__all__ = ["legendre_synthesize", "legendre_decompose", "LegendreResult", "legendre_exclude_mask", "legendre_from_analysis",
           "write_legendre"]

_log = logging.getLogger(__name__)

ArrayLike = Union[np.ndarray, Sequence, float]
_METHODS = ("tikhonov", "tsvd", "lstsq", "psd")
_CRITERIA = ("gcv", "lcurve", "discrepancy")


# ----------------------------------------------------------------------------------------------------------------
# geometry of the pairs


def _l_values(l_max: int, even: bool) -> np.ndarray:
    return np.arange(0, l_max + 1, 2 if even else 1)


def _check_lmax(l_max, name="l_max") -> int:
    if isinstance(l_max, bool) or not isinstance(l_max, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(l_max).__name__}")
    if l_max < 0:
        raise ValueError(f"{name} must be >= 0, got {l_max}")
    return int(l_max)


def _pair_ab(q1: np.ndarray, q2: np.ndarray, wavelength: float) -> Tuple[np.ndarray, np.ndarray]:
    """cos psi = a cos(Delta) + b per pair, from xcca.cos_psi (which validates q and the wavelength)."""
    cp = cos_psi(4, q1, wavelength, q2)  # Delta = 0, pi/2, pi, 3pi/2 -> a + b, b, b - a, b
    b = cp[..., 1]
    a = 0.5 * (cp[..., 0] - cp[..., 2])
    return a, b


def _legendre_all(x: np.ndarray, l_max: int) -> np.ndarray:
    """P_0..P_lmax at x, stacked on a new last axis (three-term recurrence)."""
    out = np.empty(x.shape + (l_max + 1,))
    out[..., 0] = 1.0
    if l_max >= 1:
        out[..., 1] = x
    for l in range(1, l_max):
        out[..., l + 1] = ((2 * l + 1) * x * out[..., l] - l * out[..., l - 1]) / (l + 1)
    return out


def _cheb_transform(a: np.ndarray, b: np.ndarray, l_max: int, lvals: np.ndarray) -> np.ndarray:
    """T[p, m, i] = Chebyshev coefficient m of P_{l_i}(a_p u + b_p) in u (exact for l <= l_max)."""
    J = l_max + 1
    j = np.arange(J)
    nodes = np.cos(np.pi * (j + 0.5) / J)
    x = a[:, None] * nodes[None, :] + b[:, None]
    P = _legendre_all(np.clip(x, -1.0, 1.0), l_max)[..., lvals]  # (p, J, nl)
    D = (2.0 / J) * np.cos(np.pi * np.outer(np.arange(J), j + 0.5) / J)
    D[0] *= 0.5
    return np.einsum("mj,pjl->pml", D, P, optimize=True)


def _cos_basis(n: int, nu: int, lags: Optional[np.ndarray] = None) -> np.ndarray:
    k = np.arange(n) if lags is None else lags
    return np.cos(2 * np.pi * np.outer(k, np.arange(nu)) / n)


# ----------------------------------------------------------------------------------------------------------------
# input layout: (nq, nq, n) matrix, (npairs, n) with a ring index, (npairs, n) with q per pair, or one (n,) pair


@dataclass
class _Layout:
    kind: str                      # "matrix" | "pairs" | "list" | "single"
    shape: Tuple[int, ...]         # corr.shape
    q1: np.ndarray                 # q of each solved pair
    q2: np.ndarray
    rows: Tuple[np.ndarray, ...]   # index into corr's leading axes for each solved pair
    nq: int = 0
    ring_pairs: Optional[np.ndarray] = None  # (npairs, 2) ring indices, when known


def _q_arg(q, name: str) -> np.ndarray:
    """q or q2 as float64, refusing complex / non-numeric values and negative momenta (|q| in 1/Angstrom)."""
    a = _checks.real_array(q, name).astype(np.float64)
    if np.any(a < 0):
        raise ValueError(f"{name} must be >= 0 (1/Angstrom), got min {float(np.nanmin(a))}")
    return a


def _layout(shape: Tuple[int, ...], q, q2, pairs) -> _Layout:
    qa = _q_arg(q, "q")
    if q2 is not None:
        q2 = _q_arg(q2, "q2")
    if len(shape) == 3:
        nq = shape[0]
        if shape[1] != nq:
            raise ValueError(f"corr of shape {shape}: a 3-D correlation must be (nq, nq, nphi)")
        if pairs is not None:
            raise ValueError("pairs is only for corr of shape (npairs, nphi)")
        if qa.shape != (nq,):
            raise ValueError(f"q must have shape ({nq},) for corr of shape {shape}, got {qa.shape}")
        if q2 is not None and not np.array_equal(np.asarray(q2, dtype=np.float64), qa):
            raise ValueError("q2 must be omitted (or equal to q) for an (nq, nq, nphi) correlation")
        i, j = np.triu_indices(nq)
        return _Layout("matrix", shape, qa[i], qa[j], (i, j), nq, np.stack([i, j], 1))
    if len(shape) == 2:
        npairs = shape[0]
        if pairs is not None:
            pr = np.asarray(pairs)
            if pr.dtype.kind not in "iu" or pr.shape != (npairs, 2):
                raise ValueError(f"pairs must be integer ring indices of shape ({npairs}, 2), got "
                                 f"{pr.dtype} {pr.shape}")
            if qa.ndim != 1:
                raise ValueError(f"with pairs, q must be the 1-d array of ring momenta, got shape {qa.shape}")
            if q2 is not None:
                raise ValueError("q2 must be omitted when pairs gives the ring indices")
            if pr.size and (pr.min() < 0 or pr.max() >= qa.size):
                raise ValueError(f"pairs index rings outside 0..{qa.size - 1}")
            return _Layout("pairs", shape, qa[pr[:, 0]], qa[pr[:, 1]], (np.arange(npairs),), qa.size,
                           pr.astype(np.int64))
        qb = qa if q2 is None else np.asarray(q2, dtype=np.float64)
        try:
            q1b, q2b = np.broadcast_to(qa, (npairs,)), np.broadcast_to(qb, (npairs,))
        except ValueError:
            raise ValueError(f"q (shape {qa.shape}) and q2 (shape {qb.shape}) must be scalars or have one value "
                             f"per pair ({npairs},) for corr of shape {shape}") from None
        return _Layout("list", shape, q1b.astype(np.float64), q2b.astype(np.float64), (np.arange(npairs),))
    if len(shape) == 1:
        if qa.ndim != 0 or (q2 is not None and np.ndim(q2) != 0):
            raise ValueError("for one correlation of shape (nphi,), q (and q2) must be scalars")
        if pairs is not None:
            raise ValueError("pairs is only for corr of shape (npairs, nphi)")
        qb = qa if q2 is None else np.asarray(q2, dtype=np.float64)
        return _Layout("single", shape, qa.reshape(1), qb.reshape(1), (np.zeros(1, dtype=np.int64),))
    raise ValueError(f"corr must have shape (nphi,), (npairs, nphi) or (nq, nq, nphi), got {shape}")


def _gather(arr: np.ndarray, lay: _Layout) -> np.ndarray:
    """Rows of the solved pairs, (npairs, nphi)."""
    if lay.kind == "single":
        return arr.reshape(1, -1)
    if lay.kind == "matrix":  # the pairs q <= q' row by row: contiguous copies, not a fancy-index gather
        return np.concatenate([arr[i, i:] for i in range(lay.nq)], axis=0)
    return arr[lay.rows]


def _scatter_B(Bp: np.ndarray, lay: _Layout) -> np.ndarray:
    """(npairs, nl) -> (nl, nq, nq) symmetric / (nl, npairs) / (nl,)."""
    if lay.kind == "matrix":
        nl = Bp.shape[1]
        out = np.empty((nl, lay.nq, lay.nq))
        i, j = lay.rows
        out[:, i, j] = Bp.T
        out[:, j, i] = Bp.T
        return out
    if lay.kind == "single":
        return Bp[0].copy()
    return np.ascontiguousarray(Bp.T)


def _scatter_pairs(v: np.ndarray, lay: _Layout) -> np.ndarray:
    """(npairs, ...) -> (nq, nq, ...) symmetric / (npairs, ...) / (...)."""
    if lay.kind == "matrix":
        out = np.empty((lay.nq, lay.nq) + v.shape[1:], dtype=v.dtype)
        i, j = lay.rows
        out[i, j] = v
        out[j, i] = v
        return out
    if lay.kind == "single":
        return v[0].copy()
    return v.copy()


# ----------------------------------------------------------------------------------------------------------------
# forward model


def legendre_synthesize(B: ArrayLike, l: ArrayLike, q: ArrayLike, wavelength: float, nphi: int,
                        q2: Optional[ArrayLike] = None, *, pairs: Optional[ArrayLike] = None) -> np.ndarray:
    """Forward model C(q, q', Delta_k) = sum_l B_l(q, q') P_l(cos psi_k) on the correlator's lag grid.

    cos psi_k is exact with Ewald curvature (``xcca.cos_psi``): Delta_k = 2 pi k / nphi, k = 0 .. nphi - 1.

    Parameters
    ----------
    B : array_like
        Coefficients, shape (nl, nq, nq) (all ring pairs; must be symmetric in the two ring axes), (nl, npairs)
        (with ``pairs`` or q, q2 per pair) or (nl,) (one pair, scalar q, q2).
    l : array_like of int, shape (nl,)
        The degrees of the rows of B (any order, no duplicates).
    q : array_like
        Ring momenta in 1/Angstrom: (nq,) for B (nl, nq, nq) or with ``pairs``; one per pair (or a scalar) otherwise.
    wavelength : float
        Wavelength in Angstrom.
    nphi : int
        Number of lags (the ring length).
    q2 : array_like, optional
        Second ring's momentum per pair (default q: autocorrelations); only for B of shape (nl, npairs) or (nl,).
    pairs : array_like of int, shape (npairs, 2), optional
        Ring indices into q of each pair (the run correlator's q-pair index).

    Returns
    -------
    ndarray, float64
        (nq, nq, nphi), (npairs, nphi) or (nphi,): C(q', q, Delta) = C(q, q', -Delta) holds by construction.
    """
    Ba = _checks.real_array(B, "B").astype(np.float64)
    la = np.asarray(l)
    if la.ndim != 1 or la.dtype.kind not in "iu" or la.size == 0:
        raise ValueError(f"l must be a non-empty 1-d integer array, got {la.dtype} of shape {la.shape}")
    if la.min() < 0 or np.unique(la).size != la.size:
        raise ValueError("l must hold distinct non-negative degrees")
    nphi = _checks.positive_int(nphi, "nphi")
    if Ba.ndim < 1 or Ba.shape[0] != la.size:
        raise ValueError(f"B must have len(l) = {la.size} rows (B[i] is the coefficient of P_l[i]), got {Ba.shape}")
    if not np.all(np.isfinite(Ba)):
        raise ValueError("B contains NaN or inf")
    shape = Ba.shape[1:] + (nphi,)
    _checks.check_memory(8.0 * nphi * max(1, int(np.prod(shape[:-1]))) * 3, f"nphi={nphi}")
    if Ba.ndim == 3 and not np.allclose(Ba, np.swapaxes(Ba, 1, 2), rtol=1e-12, atol=0):
        raise ValueError("B of shape (nl, nq, nq) must be symmetric in its two ring axes")
    lay = _layout(shape, q, q2, pairs)
    l_max = int(la.max())
    a, b = _pair_ab(lay.q1, lay.q2, wavelength)
    T = _cheb_transform(a, b, l_max, la)  # (p, nu, nl)
    Bp = Ba.reshape(la.size, -1).T if lay.kind != "matrix" else Ba[:, lay.rows[0], lay.rows[1]].T
    coef = np.einsum("pml,pl->pm", T, Bp)
    out = coef @ _cos_basis(nphi, l_max + 1).T
    return _scatter_pairs(out, lay)


# ----------------------------------------------------------------------------------------------------------------
# result


@dataclass
class LegendreResult:
    """Result of :func:`legendre_decompose`.

    Attributes
    ----------
    B : ndarray
        B_l(q, q'): (nl, nq, nq) (symmetric) for an (nq, nq, nphi) correlation, (nl, npairs) for (npairs, nphi), (nl,)
        for one pair. Units: those of the correlation.
    l : ndarray of int, shape (nl,)
        Degrees of the rows of B.
    B_error : ndarray, same shape as B
        Standard errors (see ``error_source``); regularisation bias is not included.
    error_source : str
        "error" (propagated from the correlation's error bars), "blocks" (jackknife over the blocks) or "residual"
        (sigma estimated from each pair's least-squares residual).
    B_cov : ndarray, shape (npairs, nl, nl)
        Covariance of each solved pair's coefficients (same source as B_error).
    method, criterion_name : str
        Solver and regularisation rule ("gcv", "lcurve", "discrepancy", "fixed" or "none").
    reg : ndarray, shape pair_shape
        Chosen regularisation per pair: lambda in noise units (tikhonov, psd) or the number of singular values kept
        (tsvd); 0 for lstsq.
    reg_grid : ndarray
        The scanned values (lambda, or 1..nl for tsvd); empty for a fixed value or lstsq.
    criterion : ndarray, shape (ngrid,) (scope="global") or pair_shape + (ngrid,)
        The criterion curve on reg_grid (GCV function, L-curve curvature, or residual^2 / number of lags).
    residual : ndarray, same shape as the correlation
        C - forward(B) at every lag (excluded lags included).
    condition : ndarray, shape pair_shape
        Condition number s_max / s_min of each pair's weighted design matrix.
    dof : ndarray, shape pair_shape
        Effective number of fitted parameters, sum of the filter factors.
    chi2 : ndarray, shape pair_shape
        Weighted residual^2 / (number of independent lags - dof): about 1 when ``error`` describes the noise.
    valid_lags : ndarray of bool, shape (nphi,)
        Lags used (True = used; the ``exclude`` setting).
    psd_distance : ndarray, shape (nl,), or None
        || B_l - P(B_l) ||_F / || B_l ||_F, P the projection onto PSD matrices of rank <= 2l + 1 (when the ring
        index of the pairs is known and every pair q <= q' is present); 0 for method="psd" up to convergence.
    B_blocks : ndarray, shape (K,) + B.shape, or None
        Each block decomposed with the full data's regularisation.
    consistency : ndarray, shape (nl,), or None
        Per l, sum B1 B2 / sqrt(sum B1^2 sum B2^2) over the solved pairs, averaged over pairs of blocks (the
        half-set, Fourier-shell-like correlation; 1 = identical halves).
    B_error_blocks : ndarray or None
        Jackknife standard error over the blocks.
    psd_info : dict
        Optimiser report of method="psd" (iterations, success, objective before/after).
    q, q2 : ndarray, or None for q2
        Momentum transfer (1/Å) of the first and second ring of each pair (q2 None: q2 = q).
    wavelength : float
        Wavelength (Å) used for cos ψ.
    pairs : ndarray of int, (npairs, 2), or None
        Ring indices (q, q') of the pairs, when known.
    """

    B: np.ndarray
    l: np.ndarray
    B_error: np.ndarray
    error_source: str
    B_cov: np.ndarray
    method: str
    criterion_name: str
    reg: np.ndarray
    reg_grid: np.ndarray
    criterion: np.ndarray
    residual: np.ndarray
    condition: np.ndarray
    dof: np.ndarray
    chi2: np.ndarray
    valid_lags: np.ndarray
    q: np.ndarray
    q2: Optional[np.ndarray]
    wavelength: float
    pairs: Optional[np.ndarray] = None
    psd_distance: Optional[np.ndarray] = None
    B_blocks: Optional[np.ndarray] = None
    consistency: Optional[np.ndarray] = None
    B_error_blocks: Optional[np.ndarray] = None
    psd_info: dict = field(default_factory=dict)

    def cos_psi(self) -> np.ndarray:
        """cos psi of every lag of every pair, shaped like ``residual``.

        Returns
        -------
        ndarray
        """
        n = self.valid_lags.size
        if self.residual.ndim == 3:
            return cos_psi(n, self.q[:, None], self.wavelength, self.q[None, :])
        if self.pairs is not None:
            return cos_psi(n, self.q[self.pairs[:, 0]], self.wavelength, self.q[self.pairs[:, 1]])
        return cos_psi(n, self.q, self.wavelength, self.q2)

    def to_dict(self) -> dict:
        """The arrays of the result by name (for storing in a result file), None entries dropped.

        Returns
        -------
        dict of str to ndarray or scalar
        """
        keys = ("B", "l", "B_error", "reg", "condition", "dof", "chi2", "valid_lags", "q", "psd_distance",
                "consistency", "B_error_blocks", "criterion", "reg_grid")
        d = {k: getattr(self, k) for k in keys if getattr(self, k) is not None}
        d.update(method=self.method, criterion_name=self.criterion_name, error_source=self.error_source,
                 wavelength=self.wavelength)
        return d


# ----------------------------------------------------------------------------------------------------------------
# decomposition


def legendre_exclude_mask(nphi: int, exclude: Any = None) -> np.ndarray:
    """Lags used by :func:`legendre_decompose` for an ``exclude`` setting (True = used).

    Parameters
    ----------
    nphi : int
        Number of lags.
    exclude : None, int or sequence of (lo, hi)
        None: the default, +-max(2, ceil(nphi / 720)) samples around Delta = 0 and pi; an int k: +-k samples (0 keeps
        every lag); ranges: Delta in [lo, hi] radians excluded, together with the mirrored -Delta.

    Returns
    -------
    ndarray of bool, shape (nphi,)
    """
    nphi = int(nphi)
    if nphi < 1:
        raise ValueError(f"nphi must be >= 1, got {nphi}")
    k = np.arange(nphi)
    dist0 = np.minimum(k, nphi - k)  # samples from Delta = 0 (either side)
    if exclude is None:
        exclude = max(2, math.ceil(nphi / 720))
    if isinstance(exclude, (bool, np.bool_)):
        raise TypeError("exclude must be None, an int number of samples or a sequence of (lo, hi) ranges in "
                        "radians, not a bool")
    if isinstance(exclude, (int, np.integer)):
        e = int(exclude)
        if e < 0:
            raise ValueError(f"exclude must be >= 0 samples, got {e}")
        if e == 0:
            return np.ones(nphi, dtype=bool)
        distpi = np.abs(k - nphi / 2.0)
        return ~((dist0 <= e) | (distpi <= e))
    r = np.asarray(exclude, dtype=np.float64)
    if r.ndim == 1 and r.size == 2:
        r = r[None]
    if r.ndim != 2 or r.shape[1] != 2 or not np.all(np.isfinite(r)) or np.any(r[:, 1] < r[:, 0]):
        raise ValueError("exclude ranges must be finite (lo, hi) pairs in radians with lo <= hi")
    ang = 2 * np.pi * k / nphi
    ok = np.ones(nphi, dtype=bool)
    for lo, hi in r:  # the range and its mirror -Delta, modulo 2 pi
        width = hi - lo + 1e-12
        ok &= ~((np.mod(ang - lo, 2 * np.pi) <= width) | (np.mod(-ang - lo, 2 * np.pi) <= width))
    return ok


def _filters(s: np.ndarray, method: str, grid: np.ndarray) -> np.ndarray:
    """Filter factors (p, ngrid, nl) for each grid value (s whitened; tsvd: grid = number kept)."""
    if method == "tsvd":
        k = grid.astype(np.int64)
        f = (np.arange(s.shape[1])[None, None, :] < k[None, :, None]).astype(np.float64)
        return f * (s[:, None, :] > 0)
    s2 = s[:, None, :] ** 2
    lam2 = grid[None, :, None] ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(s2 > 0, s2 / (s2 + lam2), 0.0)


def _curves(f, s, beta, rls2):
    rho2 = rls2[:, None] + np.sum(((1 - f) * beta[:, None, :]) ** 2, axis=-1)
    sinv = np.where(s > 0, 1.0 / np.where(s > 0, s, 1.0), 0.0)
    eta2 = np.sum((f * (beta * sinv)[:, None, :]) ** 2, axis=-1)
    return rho2, eta2, np.sum(f, axis=-1)


def _lcurve_pick(rho2, eta2, tt):
    x = 0.5 * np.log(np.maximum(rho2, 1e-300))
    y = 0.5 * np.log(np.maximum(eta2, 1e-300))
    dx, dy = np.gradient(x, tt, axis=-1), np.gradient(y, tt, axis=-1)
    ddx, ddy = np.gradient(dx, tt, axis=-1), np.gradient(dy, tt, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = (dx * ddy - ddx * dy) / np.maximum((dx ** 2 + dy ** 2) ** 1.5, 1e-300)
    kappa = np.nan_to_num(kappa, nan=-np.inf)
    if kappa.shape[-1] > 2:
        kappa[..., 0] = kappa[..., -1] = -np.inf
    return kappa


def _parabolic(crit, grid, i):
    """Refine a grid minimum of a positive criterion by a parabola in (log lambda, log crit)."""
    t = np.log(grid)
    if i <= 0 or i >= grid.size - 1 or not np.all(np.isfinite(crit[i - 1:i + 2])):
        return grid[i]
    y0, y1, y2 = np.log(np.maximum(crit[i - 1:i + 2], 1e-300))
    h = t[1] - t[0]
    den = y0 - 2 * y1 + y2
    off = 0.5 * h * (y0 - y2) / den if den > 0 else 0.0
    return float(np.exp(t[i] + np.clip(off, -h, h)))


def _choose(method, reg, s, beta, rls2, m, nreg, scope, gamma=0.3):
    """Pick the regularisation (whitened units: noise variance 1 per folded lag).

    Returns (reg value per pair, grid, criterion curve (p or 1, ngrid), name)."""
    p, nl = s.shape
    if method == "lstsq":
        return np.zeros(p), np.empty(0), np.empty((p, 0)), "none"
    if not isinstance(reg, str):
        try:
            v = float(reg)
        except (TypeError, ValueError):
            raise TypeError(f"reg must be 'gcv', 'lcurve', 'discrepancy' or a float, got {reg!r}") from None
        if not (np.isfinite(v) and v >= 0):
            raise ValueError(f"reg must be a finite value >= 0, got {reg!r}")
        if method == "tsvd":
            k = np.sum(s > v * s[:, :1], axis=1).astype(np.float64)
            return np.maximum(k, 1), np.empty(0), np.empty((p, 0)), "fixed"
        return np.full(p, v), np.empty(0), np.empty((p, 0)), "fixed"
    if reg not in _CRITERIA:
        raise ValueError(f"reg must be one of {_CRITERIA} or a float, got {reg!r}")
    if method == "tsvd":
        grid = np.arange(1, nl + 1, dtype=np.float64)
    else:
        pos = s[s > 0]
        hi = float(pos.max()) * 10 if pos.size else 1.0
        lo = max(float(pos.min()) * 0.1, hi * 1e-12) if pos.size else 1e-12
        grid = np.logspace(np.log10(lo), np.log10(hi), int(nreg))
    f = _filters(s, method, grid)
    rho2, eta2, tr = _curves(f, s, beta, rls2)
    tr2 = np.sum(f * f, axis=-1)  # tr(A^2) of the influence matrix, for robust GCV
    if scope == "global":  # one value for all pairs: the criteria of the block-diagonal problem
        rho2, eta2, tr, m_ = rho2.sum(0)[None], eta2.sum(0)[None], tr.sum(0)[None], np.array([m.sum()])
        tr2 = tr2.sum(0)[None]
    else:
        m_ = m
    q = rho2.shape[0]
    if reg == "gcv":
        den = m_[:, None] - tr
        with np.errstate(divide="ignore", invalid="ignore"):
            crit = np.where(den > 0, rho2 / np.maximum(den, 1e-300) ** 2, np.inf)
            # robust GCV (Lukas 2006): R = (gamma + (1 - gamma) tr(A^2) / m) V; gamma = 1 is classical GCV.
            # With few pairs V is flat and its noise can put the minimum at a far too small lambda; the factor
            # penalises the variance of an under-regularised solution.
            crit = crit * (gamma + (1.0 - gamma) * tr2 / m_[:, None])
        i = np.argmin(crit, axis=1)
        if method == "tsvd":
            val = grid[i]
        else:
            val = np.array([_parabolic(crit[r], grid, i[r]) for r in range(q)])
    elif reg == "lcurve":
        crit = _lcurve_pick(rho2, eta2, np.log(grid))
        val = grid[np.argmax(crit, axis=1)]
    else:  # discrepancy: the most regularised value whose residual^2 stays within m (noise variance 1)
        crit = rho2 / m_[:, None]
        ok = crit <= 1.0
        if method == "tsvd":
            val = grid[np.where(ok.any(1), np.argmax(ok, axis=1), nl - 1)]
        else:
            last = grid.size - 1 - np.argmax(ok[:, ::-1], axis=1)
            val = np.where(ok.any(1), grid[last], grid[0])
            for r in range(q):  # bisection in log(lambda) to the crossing (rho^2 increases with lambda)
                if not ok[r].any() or last[r] == grid.size - 1:
                    continue
                lo, hi = np.log(grid[last[r]]), np.log(grid[last[r] + 1])
                rows = slice(None) if scope == "global" else slice(r, r + 1)
                for _ in range(40):
                    mid = 0.5 * (lo + hi)
                    ff = _filters(s[rows], method, np.array([np.exp(mid)]))
                    r2 = _curves(ff, s[rows], beta[rows], rls2[rows])[0].sum()
                    if r2 <= m_[r]:
                        lo = mid
                    else:
                        hi = mid
                val[r] = np.exp(lo)
    if scope == "global":
        val = np.full(p, val[0])
    return val.astype(np.float64), grid, crit, reg


def _psd_distance(Bp: np.ndarray, lvals: np.ndarray, lay: _Layout) -> Optional[np.ndarray]:
    if lay.ring_pairs is None:
        return None
    nq = lay.nq
    rp = np.sort(lay.ring_pairs, axis=1)
    key = rp[:, 0] * nq + rp[:, 1]
    need = np.triu_indices(nq)
    if np.unique(key).size < need[0].size or not np.isin(need[0] * nq + need[1], key).all():
        return None
    M = np.zeros((lvals.size, nq, nq))
    M[:, rp[:, 0], rp[:, 1]] = Bp.T
    M[:, rp[:, 1], rp[:, 0]] = Bp.T
    w = np.linalg.eigvalsh(M)  # ascending; the projection keeps the largest 2l+1 non-negative eigenvalues
    rank = np.minimum(2 * lvals + 1, nq)
    keep = (np.arange(nq)[None, :] >= (nq - rank)[:, None]) & (w > 0)
    tot = np.sum(w * w, axis=1)
    out = np.where(tot > 0, np.sqrt(np.sum(np.where(keep, 0.0, w * w), axis=1) / np.where(tot > 0, tot, 1)), 0.0)
    return out


def _psd_fit(Bp, H, g, lvals, lay, maxiter):
    """min sum_p 1/2 B_p^T H_p B_p - g_p^T B_p with B_l = Y_l Y_l^T, rank(Y_l) <= min(2l+1, nq) (L-BFGS)."""
    from scipy.optimize import minimize

    nq = lay.nq
    rp = lay.ring_pairs
    i, j = rp[:, 0], rp[:, 1]
    ranks = [min(2 * int(lv) + 1, nq) for lv in lvals]
    Y0 = []
    for li, r in enumerate(ranks):
        M = np.zeros((nq, nq))
        M[i, j] = Bp[:, li]
        M[j, i] = Bp[:, li]
        w, V = np.linalg.eigh(M)
        w, V = w[::-1][:r], V[:, ::-1][:, :r]
        Y0.append(V * np.sqrt(np.clip(w, 0, None) + 1e-12 * max(abs(w).max(), 1e-300)))
    flat = i * nq + j
    sizes = [nq * r for r in ranks]
    offs = np.concatenate([[0], np.cumsum(sizes)])
    scale = max(np.abs(g).max(), 1e-300)  # the objective is scaled for the optimiser's tolerances

    def unpack(z):
        return [z[offs[k]:offs[k + 1]].reshape(nq, ranks[k]) for k in range(len(ranks))]

    def fun(z):
        Ys = unpack(z)
        Bc = np.stack([np.einsum("pr,pr->p", Y[i], Y[j]) for Y in Ys], axis=1)  # (p, nl)
        HB = np.einsum("pab,pb->pa", H, Bc)
        val = np.sum(0.5 * np.einsum("pa,pa->p", Bc, HB) - np.einsum("pa,pa->p", g, Bc)) / scale
        G = (HB - g) / scale  # dF/dB (p, nl)
        grads = []
        for k, Y in enumerate(Ys):
            S = np.bincount(flat, weights=G[:, k], minlength=nq * nq).reshape(nq, nq)
            grads.append(((S + S.T) @ Y).ravel())
        return val, np.concatenate(grads)

    z0 = np.concatenate([Y.ravel() for Y in Y0])
    f0 = fun(z0)[0]
    res = minimize(fun, z0, jac=True, method="L-BFGS-B", options={"maxiter": int(maxiter), "ftol": 1e-13,
                                                                 "gtol": 1e-10})
    Ys = unpack(res.x)
    Bn = np.stack([np.einsum("pr,pr->p", Y[i], Y[j]) for Y in Ys], axis=1)
    info = {"success": bool(res.success), "iterations": int(res.nit), "message": str(res.message),
            "objective_start": float(f0 * scale), "objective": float(res.fun * scale)}
    return Bn, info


def _from_correlator(obj):
    """Adapter for a run-correlator result (``xcca.RunCorrelation``, or any object with ``.correlation`` and
    optional ``.error``, ``.q_pairs``/``.pairs``, ``.q``, ``.replicates`` + ``.block_shots``).

    ``replicates`` are leave-one-block-out estimates C_{-b}; the block estimates are recovered as
    C_b = (N C - (N - n_b) C_{-b}) / n_b (exact for shot-weighted means; the pooled estimator's ratio of sums makes
    it approximate with masks), so the decomposition's jackknife reproduces the correlator's. A result without
    replicates (``RunCorrelator.result()``'s default, ``replicates`` None) gives no blocks.
    Returns (corr, error, pairs, q, blocks, block_weights)."""
    corr = np.asarray(getattr(obj, "correlation"), dtype=np.float64)
    err = getattr(obj, "error", None)
    if err is not None and not np.all(np.isfinite(np.asarray(err))):
        err = None  # e.g. fewer than two non-empty blocks: no jackknife error
    pr = getattr(obj, "q_pairs", None)
    if pr is None:
        pr = getattr(obj, "pairs", None)
    q = getattr(obj, "q", None)
    rep = getattr(obj, "replicates", None)
    nb = getattr(obj, "block_shots", None)
    blocks = weights = None
    if rep is not None and nb is not None:
        rep = np.asarray(rep, dtype=np.float64)
        nb = np.asarray(nb, dtype=np.float64)
        if rep.ndim == corr.ndim + 1 and rep.shape[0] >= 2 and np.all(nb > 0) and nb.size == rep.shape[0]:
            N = nb.sum()
            blocks = (N * corr[None] - (N - nb)[(slice(None),) + (None,) * corr.ndim] * rep) \
                / nb[(slice(None),) + (None,) * corr.ndim]
            weights = nb
    return corr, err, pr, q, blocks, weights


def _fold_fast(y, error, shape, lay, valid, jj, partner, self_partner):
    """_fold for finite data: the used lags are the same for every pair (few passes, few temporaries)."""
    vk = valid[jj].astype(np.float64)
    vp = (valid[partner] & ~self_partner).astype(np.float64)
    cnt = vk + vp
    yk, yp = y[:, jj], y[:, partner]
    scale = np.max(np.abs(y), axis=1)
    dif = yk - yp
    np.abs(dif, out=dif)
    dif *= (vk * vp)[None, :]
    sym = dif.max(axis=1) <= 1e-12 * scale
    del dif
    groups = None
    if error is None:
        yk *= vk
        yp *= vp
        yk += yp
        num = yk
        with np.errstate(invalid="ignore", divide="ignore"):
            yf = num * np.where(cnt > 0, 1.0 / np.where(cnt > 0, cnt, 1.0), 0.0)
        om_sym = np.where(cnt > 0, 1.0, 0.0)
        om = np.where(sym[:, None], om_sym, cnt)
        groups = [(np.nonzero(g)[0], om[np.argmax(g)]) for g in (sym, ~sym) if g.any()]
        return y, om, yf, groups
    e = _checks.real_array(error, "error")  # no full-size float64 copy: only the solved pairs are gathered
    if e.shape != shape:
        raise ValueError(f"error must have the shape of corr {shape}, got {e.shape}")
    ep = _gather(e, lay)
    if ep.dtype != np.float64 or np.may_share_memory(ep, e):  # ep is modified in place below: never the input
        ep = ep.astype(np.float64)
    if not np.all(ep > 0):  # NaN fails too; look closer only then (excluded lags may hold anything)
        ev = ep[:, valid]
        if np.any(np.isnan(ev)) or np.any(ev <= 0):
            raise ValueError("error must be > 0 (inf to leave a sample out) at every used lag, without NaN")
        ep[:, ~valid] = np.inf
    np.square(ep, out=ep)
    np.divide(1.0, ep, out=ep)  # weights; inf error -> 0
    wk, wp = ep[:, jj], ep[:, partner]
    del ep
    wk *= vk
    wp *= vp
    wsum = wk + wp
    cnt_s = (wk[sym] > 0).astype(np.float64) + (wp[sym] > 0)
    wk *= yk
    wp *= yp
    wk += wp
    with np.errstate(invalid="ignore", divide="ignore"):
        yf = np.where(wsum > 0, wk / np.where(wsum > 0, wsum, 1.0), 0.0)
    if sym.any():  # a symmetric pair's two halves are one measurement: the mean weight of the used ones
        wsum[sym] = np.where(cnt_s > 0, wsum[sym] / np.maximum(cnt_s, 1.0), 0.0)
    return y, wsum, yf, None


_FOLD_CHUNK = 1 << 16  # samples of a pair-chunk of the fold (512 kB of float64): its temporaries stay in cache


class _NonFinite(Exception):
    """A chunk of the fold met NaN/inf: the caller falls back to the general (full-array) fold."""


def _pair_chunks(arr: np.ndarray, lay: _Layout, rows_per: int):
    """(first pair index, rows (k, nphi)) of the solved pairs in order, k = rows_per except for the last chunk.

    The chunks are the same for every layout of the same pairs (so the results are bit-identical across layouts):
    for an (nq, nq, nphi) matrix the pairs (i, j >= i) are row segments of arr[i, i:], copied chunk by chunk (never
    the whole gathered array); for (npairs, nphi) they are views."""
    if lay.kind == "single":
        yield 0, arr.reshape(1, -1)
        return
    if lay.kind != "matrix":  # "pairs" / "list": row p is pair p
        for s0 in range(0, arr.shape[0], rows_per):
            yield s0, arr[s0:s0 + rows_per]
        return
    nq = lay.nq
    starts = np.concatenate([[0], np.cumsum(np.arange(nq, 0, -1))])  # first pair index of ring i's row
    P = int(starts[-1])
    i = 0
    for p0 in range(0, P, rows_per):
        p1 = min(p0 + rows_per, P)
        parts = []
        while i < nq and starts[i] < p1:
            lo, hi = max(p0, starts[i]), min(p1, starts[i + 1])
            parts.append(arr[i, i + lo - starts[i]:i + hi - starts[i]])
            if starts[i + 1] <= p1:
                i += 1
            else:
                break
        yield p0, parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)


@dataclass
class _Folded:
    """The folded data reduced to what the solver needs, per pair: rhs = M^T W y (p, nu), yWy = y^T W y (p,), m the
    number of distinct lags used (p,), sym (p,) whether the pair was folded as symmetric, G = M^T W M (p, nu, nu)."""
    rhs: np.ndarray
    yWy: np.ndarray
    m: np.ndarray
    sym: np.ndarray
    G: np.ndarray


def _normal_from_moments(W: np.ndarray, nu: int) -> np.ndarray:
    """G = M^T diag(om) M of the cosine basis M[k, a] = cos(a Delta_k) from the cosine moments of the weights,
    W[p, c] = sum_k om[p, k] cos(c Delta_k), c < 2 nu - 1: cos a cos b = (cos (a - b) + cos (a + b)) / 2."""
    a = np.arange(nu)
    return 0.5 * (W[:, np.abs(a[:, None] - a[None, :])] + W[:, a[:, None] + a[None, :]])


def _fold_reduce(c, error, lay, valid, h, Mf, P, sym_force=None, need_G=True) -> _Folded:
    """Fold lags k and n - k onto k = 0 .. h and reduce onto the cosine basis, chunk by chunk over the pairs (finite
    data; raises _NonFinite otherwise). Chunks of ~_FOLD_CHUNK samples keep the element-wise temporaries in cache
    (those of a one-shot fold, ~1 GB at 5050 pairs x 3600 lags, cost as much again in first-touch page faults as the
    arithmetic; on this machine fresh memory costs ~0.3 s per 100 MB); each chunk is reduced at once by two small
    BLAS products (one BLAS thread: see legendre_decompose), so nothing of size (p, nphi) is allocated. sym_force (p,) imposes the symmetric/non-symmetric folding of an earlier pass (blocks)."""
    n = c.shape[-1]
    jj = np.arange(h + 1)
    partner = (n - jj) % n
    self_partner = jj == partner
    vk = valid[jj].astype(np.float64)
    vp = (valid[partner] & ~self_partner).astype(np.float64)
    vboth = vk * vp
    cnt = vk + vp
    inv_cnt = np.where(cnt > 0, 1.0 / np.where(cnt > 0, cnt, 1.0), 0.0)
    om_sym = (cnt > 0).astype(np.float64)
    nu = Mf.shape[1]
    rhs = np.empty((P, nu))
    Mw = _cos_basis(n, 2 * nu - 1, jj) if need_G else None  # cosine moments of the weights, for G
    Wm = np.empty((P, 2 * nu - 1)) if need_G else None
    yWy = np.empty(P)
    m = np.empty(P)
    sym_all = np.empty(P, dtype=bool)
    if error is not None:
        e = _checks.real_array(error, "error")  # no full-size float64 copy: chunks are converted as they come
        if e.shape != c.shape:
            raise ValueError(f"error must have the shape of corr {c.shape}, got {e.shape}")
    rows_per = max(1, _FOLD_CHUNK // n)
    e_chunks = _pair_chunks(e, lay, rows_per) if error is not None else None
    for p0, blk in _pair_chunks(c, lay, rows_per):
        k = blk.shape[0]
        sl = slice(p0, p0 + k)
        if not np.isfinite(blk).all():
            raise _NonFinite
        yk, yp = blk[:, jj], blk[:, partner]
        if sym_force is None:
            scale = np.max(np.abs(blk), axis=1)
            dif = np.abs(yk - yp)
            dif *= vboth
            sym = dif.max(axis=1) <= 1e-12 * scale
        else:
            sym = sym_force[sl]
        sym_all[sl] = sym
        if error is None:
            yk *= vk
            yp *= vp
            yk += yp
            yk *= inv_cnt
            yf = yk
            om = np.where(sym[:, None], om_sym, cnt)
        else:
            ec = np.asarray(next(e_chunks)[1], dtype=np.float64)  # the same rows of error
            ek, ep = ec[:, jj], ec[:, partner]
            if not (np.all(ek > 0) and np.all(ep > 0)):  # NaN fails too; excluded lags may hold anything
                bad = ((~(ek > 0)) & (vk > 0)) | ((~(ep > 0)) & (vp > 0))
                if bad.any():
                    raise ValueError("error must be > 0 (inf to leave a sample out) at every used lag, without NaN")
                ek[~(ek > 0)] = np.inf
                ep[~(ep > 0)] = np.inf
            np.square(ek, out=ek)
            np.divide(vk, ek, out=ek)  # weights; inf error or an unused lag -> 0
            np.square(ep, out=ep)
            np.divide(vp, ep, out=ep)
            wsum = ek + ep
            cnt_s = (ek > 0).astype(np.float64) + (ep > 0)
            ek *= yk
            ep *= yp
            ek += ep
            with np.errstate(invalid="ignore", divide="ignore"):
                yf = np.where(wsum > 0, ek / np.where(wsum > 0, wsum, 1.0), 0.0)
                # a symmetric pair's two halves are one measurement: the mean weight of the used ones
                om = np.where(sym[:, None], np.where(cnt_s > 0, wsum / np.maximum(cnt_s, 1.0), 0.0), wsum)
        omy = om * yf
        yWy[sl] = np.einsum("pk,pk->p", omy, yf)
        m[sl] = np.count_nonzero(om > 0, axis=1)
        rhs[sl] = omy @ Mf
        if need_G:
            Wm[sl] = om @ Mw
    G = _normal_from_moments(Wm, nu) if need_G else None
    return _Folded(rhs, yWy, m, sym_all, G)


def _fold_reduce_general(c, error, lay, valid, nan_policy, h, Mf, need_G=True, om_main=None):
    """_fold_reduce through the full-array fold (NaN/inf in the data). Returns (_Folded, om)."""
    _, om, yf, groups = _fold(c, error, lay, valid, nan_policy, h)
    if om_main is not None:
        om = om_main
    P, nu = om.shape[0], Mf.shape[1]
    omy = om * yf
    G = None
    if need_G:
        G = np.empty((P, nu, nu))
        if groups is not None:
            for rows_g, om_g in groups:
                G[rows_g] = (Mf.T * om_g) @ Mf
        else:
            iu = np.triu_indices(nu)
            Gu = om @ (Mf[:, iu[0]] * Mf[:, iu[1]])
            G[:, iu[0], iu[1]] = Gu
            G[:, iu[1], iu[0]] = Gu
    fo = _Folded(omy @ Mf, np.sum(omy * yf, axis=1), np.sum(om > 0, axis=1).astype(np.float64),
                 np.zeros(P, dtype=bool), G)
    return fo, om


def _fold(c, error, lay, valid, nan_policy, h):
    """Gather the solved pairs and fold lags k and n - k onto k = 0 .. h.

    Returns (y (p, n) the gathered data with unused samples zeroed, om (p, h+1) inverse variances of the folded
    data (0 = unused), yf (p, h+1) the folded data, groups: [(rows, om row)] when the weights take only a few
    patterns (no error bars, no NaN), else None)."""
    n = c.shape[-1]
    jj = np.arange(h + 1)
    partner = (n - jj) % n
    self_partner = jj == partner
    y = _gather(c, lay)
    fin_all = bool(np.isfinite(y).all())
    if not fin_all and nan_policy == "raise":
        bad = int(np.sum(~np.isfinite(y[:, valid])))
        if bad:
            raise ValueError(f"corr has {bad} NaN/inf samples at used lags (pass nan_policy='omit' to leave them "
                             "out, or exclude those lags / pairs)")
    if fin_all:
        return _fold_fast(y, error, c.shape, lay, valid, jj, partner, self_partner)
    if nan_policy == "raise":
        v = np.broadcast_to(valid, y.shape)
        y = np.where(valid, y, 0.0) if not valid.all() or not fin_all else y
    else:
        v = np.broadcast_to(valid, y.shape) & np.isfinite(y)
        y = np.where(v, y, 0.0)
    if error is not None:
        e = _checks.real_array(error, "error").astype(np.float64)
        if e.shape != c.shape:
            raise ValueError(f"error must have the shape of corr {c.shape}, got {e.shape}")
        ep = _gather(e, lay)
        ev = ep[v] if v.ndim == 2 and not (v is np.broadcast_to(valid, y.shape)) else ep[:, valid]
        if np.any(np.isnan(ev)) or np.any(ev <= 0):
            raise ValueError("error must be > 0 (inf to leave a sample out) at every used lag, without NaN")
        with np.errstate(divide="ignore"):
            w = np.where(v, 1.0 / np.where(v, ep, 1.0) ** 2, 0.0)
        del ep
        v = v & (w > 0)
    else:
        w = None
    yk, yp = y[:, jj], y[:, partner]
    scale = np.max(np.abs(y), axis=1)
    vk, vp = v[:, jj], v[:, partner]
    both = vk & vp
    sym = np.all((np.abs(yk - yp) <= 1e-12 * scale[:, None]) | ~both, axis=1)
    vp_eff = vp & ~self_partner
    cnt = vk.astype(np.float64) + vp_eff
    if w is None:
        wsum = cnt
        num = yk * vk + yp * vp_eff
    else:
        wk, wp = w[:, jj], np.where(self_partner, 0.0, w[:, partner])
        wsum = wk + wp
        num = wk * yk + wp * yp
    with np.errstate(invalid="ignore", divide="ignore"):
        yf = np.where(wsum > 0, num / np.where(wsum > 0, wsum, 1.0), 0.0)
        om = np.where(sym[:, None], np.where(cnt > 0, wsum / np.maximum(cnt, 1.0), 0.0), wsum)
    groups = None
    if w is None and (fin_all or nan_policy == "raise"):
        groups = [(np.nonzero(g)[0], om[np.argmax(g)]) for g in (sym, ~sym) if g.any()]
    return y, om, yf, groups


def _prior_scale(B_ls: np.ndarray, var_ls: np.ndarray, lay: _Layout, mode: str = "psd") -> Tuple[np.ndarray, bool]:
    """Prior variance tau^2 (p, nl) of each pair's B_l for penalty="scaled", estimated without bias from the
    least-squares solution (precision-weighted mean of B^2 - var).

    "pooled": one tau_l^2 for all pairs. "psd": when every ring's autocorrelation pair is solved, the structure of a
    positive semi-definite B_l is used: |B_l(q, q')| <= sqrt(B_l(q, q) B_l(q', q')), so the scale of a pair is
    tau^2 = kappa_l B_l(q, q) B_l(q', q') with B_l(q, q) the (floored) least-squares autocorrelation coefficients and
    kappa_l estimated per class (autocorrelation pairs, cross pairs) from the data.
    Returns (tau^2, whether the PSD structure was used)."""
    P, nl = B_ls.shape

    def pooled(b2, v, rows=slice(None)):
        wgt = 1.0 / np.maximum(v[rows], 1e-300)
        t = np.sum(wgt * (b2[rows] - v[rows]), axis=0) / np.sum(wgt, axis=0)
        return np.maximum(t, 1e-6 * max(t.max(), 0) if t.max() > 0 else 1.0)

    if mode == "pooled" or lay.ring_pairs is None:
        return np.broadcast_to(pooled(B_ls ** 2, var_ls), (P, nl)).copy(), False
    rp = lay.ring_pairs
    isdiag = rp[:, 0] == rp[:, 1]
    di = np.full(lay.nq, -1)
    di[rp[isdiag, 0]] = np.nonzero(isdiag)[0]
    if np.any(di[rp] < 0) or isdiag.all() or not isdiag.any():
        return np.broadcast_to(pooled(B_ls ** 2, var_ls), (P, nl)).copy(), False
    dd = np.maximum(B_ls[di], np.sqrt(var_ls[di]))  # (nq, nl): B_l(q, q), at least its noise level
    g = dd[rp[:, 0]] * dd[rp[:, 1]]  # (p, nl)
    u, vu = B_ls ** 2 / g, var_ls / g
    out = np.empty((P, nl))
    for rows in (isdiag, ~isdiag):
        out[rows] = pooled(u, vu, rows)[None, :] * g[rows]
    return out, True


def legendre_decompose(corr: Any, q: Optional[ArrayLike], wavelength: float, *, q2: Optional[ArrayLike] = None,
                       l_max: int, even: bool = True, error: Optional[ArrayLike] = None,
                       exclude: Any = None, method: str = "tikhonov", reg: Union[str, float, None] = None,
                       pairs: Optional[ArrayLike] = None, blocks: Optional[ArrayLike] = None,
                       block_weights: Optional[ArrayLike] = None, nan_policy: str = "raise", n_reg: int = 50,
                       scope: str = "global", penalty: str = "scaled", psd_maxiter: int = 500,
                       gcv_gamma: Optional[float] = None) -> LegendreResult:
    """Legendre coefficients B_l(q, q') of angular correlations, with Ewald curvature, regularisation chosen from
    the data and propagated error bars.

    Solves C(q, q', Delta_k) = sum_l B_l(q, q') P_l(cos psi_k) for every pair of rings at once (see the module
    docstring for the model, the solver and the conventions).

    Parameters
    ----------
    corr : array_like or run-correlator result
        Correlations on the lag grid Delta_k = 2 pi k / nphi: (nq, nq, nphi) (all ring pairs; the pairs q <= q' are
        solved, the lower triangle is the mirror C(q', q, Delta) = C(q, q', -Delta) and is not read), (npairs, nphi)
        or (nphi,). A run-correlator result (``xcca.RunCorrelation``: ``.correlation``, ``.error``, ``.q_pairs``,
        ``.q``, ``.replicates``, ``.block_shots``) is accepted in place of corr/error/pairs/q/blocks: its blocks are
        decomposed too (half-set consistency per l, jackknife B_error_blocks) when it carries the replicates
        (``RunCorrelator.result(replicates=True)``; without them only ``.error`` is propagated).
    q : array_like or None
        Ring momenta in 1/Angstrom: (nq,) for an (nq, nq, nphi) correlation or with ``pairs``, else one per pair (or a
        scalar); None only with a run-correlator result that carries q.
    wavelength : float
        Wavelength in Angstrom.
    q2 : array_like, optional
        Second ring's momentum per pair for (npairs, nphi) without ``pairs`` (default q).
    l_max : int
        Highest degree; at most nphi // 2 and fewer than the number of distinct lags kept.
    even : bool
        Only even l (a centro-symmetric average, Friedel's law); default True.
    error : array_like, optional
        Standard errors of corr, same shape (> 0 where used; inf = excluded sample). Default: equal weights and
        sigma from the residual.
    exclude : None, int or sequence of (lo, hi)
        Lags to leave out (see :func:`legendre_exclude_mask`); default +-max(2, ceil(nphi / 720)) samples around
        Delta = 0 and pi.
    method : {"tikhonov", "tsvd", "lstsq", "psd"}
        Regularised least squares (Tikhonov or truncated SVD), plain least squares, or Tikhonov with B_l positive
        semi-definite of rank <= 2l + 1 (needs the ring index: an (nq, nq, nphi) correlation or ``pairs``).
    reg : {"gcv", "lcurve", "discrepancy"} or float, optional
        Rule choosing lambda (noise units, see the module docstring) over ``n_reg`` log-spaced values spanning the
        whitened singular values (tsvd: over the number of singular values kept), or a fixed value (tsvd: the
        relative cut s_i > reg * s_max). Default "gcv" (see ``gcv_gamma``); must be None for "lstsq".
    pairs : array_like of int, shape (npairs, 2), optional
        Ring indices into q of each row of an (npairs, nphi) correlation.
    blocks : array_like, shape (K,) + corr.shape, optional
        Block (e.g. half-set) correlations: decomposed with the same regularisation, for the jackknife error and the
        per-l consistency.
    block_weights : array_like, shape (K,), optional
        Block sizes (e.g. shot counts) for the jackknife; default equal.
    nan_policy : {"raise", "omit"}
        NaN/inf in corr: a ValueError, or leave those samples out.
    n_reg : int
        Number of regularisation values scanned (default 50).
    scope : {"global", "pair"}
        One regularisation for all pairs (default) or one per pair.
    penalty : {"scaled", "pooled", "identity"}
        Tikhonov penalty ||B_l / tau_l||^2 with tau_l estimated from the data: per pair from the PSD structure,
        tau_l(q, q')^2 = kappa_l B_l(q, q) B_l(q', q') (default "scaled"; one tau_l for all pairs when the ring index
        or an autocorrelation pair is missing), one tau_l for all pairs ("pooled"), or ||B||^2 ("identity"). See
        the module docstring.
    psd_maxiter : int
        Iteration limit of the method="psd" optimiser.
    gcv_gamma : float, optional
        Robustness parameter of reg="gcv" in (0, 1]: the criterion minimised is Lukas's robust GCV
        (gamma + (1 - gamma) tr(A^2) / m) * GCV; 1 gives classical GCV. Default: 1 with the PSD-structured prior
        scale, 0.3 with a pooled one (see the module docstring).

    Returns
    -------
    LegendreResult

    Notes
    -----
    BLAS is held to one thread during the call (threadpoolctl): the products are many and small or memory bound,
    extra OpenBLAS threads only spin (2.7 s instead of 1.2 s for a fresh process's first 5050-pair call on 2 cores),
    and the result does not depend on the process's BLAS thread count.
    """
    from .stages import blas_single_thread

    with blas_single_thread():
        return _decompose(corr, q, wavelength, q2, l_max, even, error, exclude, method, reg, pairs, blocks,
                          block_weights, nan_policy, n_reg, scope, penalty, psd_maxiter, gcv_gamma)


def _decompose(corr, q, wavelength, q2, l_max, even, error, exclude, method, reg, pairs, blocks, block_weights,
               nan_policy, n_reg, scope, penalty, psd_maxiter, gcv_gamma) -> LegendreResult:
    if hasattr(corr, "correlation"):
        corr, e2, p2, q_c, b2, w2 = _from_correlator(corr)
        error = e2 if error is None else error
        pairs = p2 if pairs is None else pairs
        q = q_c if q is None else q
        if blocks is None and b2 is not None:
            blocks, block_weights = b2, w2
    if q is None:
        raise ValueError("q (ring momenta in 1/Angstrom) is required (the run correlator was not given q)")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if penalty not in ("scaled", "pooled", "identity"):
        raise ValueError(f"penalty must be 'scaled', 'pooled' or 'identity', got {penalty!r}")
    if scope not in ("global", "pair"):
        raise ValueError(f"scope must be 'global' or 'pair', got {scope!r}")
    if nan_policy not in ("raise", "omit"):
        raise ValueError(f"nan_policy must be 'raise' or 'omit', got {nan_policy!r}")
    if gcv_gamma is not None and (isinstance(gcv_gamma, bool) or not isinstance(
            gcv_gamma, (int, float, np.floating, np.integer)) or not (0 < float(gcv_gamma) <= 1)):
        raise ValueError(f"gcv_gamma must be a number in (0, 1], got {gcv_gamma!r}")
    if method == "lstsq":
        if reg is not None:
            raise ValueError("reg must be None for method='lstsq' (it is not regularised)")
    elif reg is None:
        reg = "gcv"
    l_max = _check_lmax(l_max)
    n_reg = _checks.positive_int(n_reg, "n_reg", minimum=3)
    c = np.asarray(corr)
    if c.dtype.kind not in "biuf":
        raise TypeError(f"corr must be a real numeric array, got dtype {c.dtype}")
    c = np.asarray(c, dtype=np.float64)
    if c.ndim == 0 or c.shape[-1] == 0:
        raise ValueError(f"corr must have a non-empty lag axis, got shape {c.shape}")
    n = c.shape[-1]
    lay = _layout(c.shape, q, q2, pairs)
    if method == "psd" and lay.ring_pairs is None:
        raise ValueError("method='psd' needs the ring index of each pair: pass corr as (nq, nq, nphi) or give pairs")
    if l_max > n // 2:
        raise ValueError(f"l_max={l_max} cannot be resolved with nphi={n} lags (at most nphi // 2 = {n // 2})")
    lvals = _l_values(l_max, bool(even))
    nl, nu = lvals.size, l_max + 1
    valid = legendre_exclude_mask(n, exclude)
    h = n // 2
    jj = np.arange(h + 1)
    partner = (n - jj) % n
    n_distinct = int(np.sum(valid[jj] | valid[partner]))
    if n_distinct == 0:
        raise ValueError(f"exclude={exclude!r} leaves no lag of nphi={n}")
    if n_distinct < nu:
        raise ValueError(f"l_max={l_max} needs at least {nu} distinct lags (0..pi); exclude={exclude!r} leaves "
                         f"{n_distinct} of nphi={n}")

    a, b = _pair_ab(lay.q1, lay.q2, wavelength)
    _stamps = [("start", time.perf_counter(), time.process_time())]
    Mf = _cos_basis(n, nu, jj)  # (h+1, nu)
    if lay.kind == "matrix":
        P = lay.nq * (lay.nq + 1) // 2
    else:
        P = lay.q1.size
    om_general = None
    try:
        fo = _fold_reduce(c, error, lay, valid, h, Mf, P)
    except _NonFinite:
        y = _gather(c, lay)
        if nan_policy == "raise":
            bad = int(np.sum(~np.isfinite(y[:, valid])))
            if bad:
                raise ValueError(f"corr has {bad} NaN/inf samples at used lags (pass nan_policy='omit' to leave "
                                 "them out, or exclude those lags / pairs)") from None
        del y
        fo, om_general = _fold_reduce_general(c, error, lay, valid, nan_policy, h, Mf)
    _stamps.append(("fold", time.perf_counter(), time.process_time()))
    m = fo.m
    if np.any(m < nu):
        raise ValueError(f"{int(np.sum(m < nu))} pair(s) keep fewer than l_max + 1 = {nu} distinct lags after "
                         "exclusion and NaN removal")
    if np.any(m <= nl):
        raise ValueError(f"pairs with only {int(m.min())} distinct lags cannot fit {nl} coefficients with a "
                         "residual; lower l_max")

    # reduced problem per pair
    rhs, Gs = fo.rhs, fo.G
    try:
        L = np.linalg.cholesky(Gs)
    except np.linalg.LinAlgError:
        raise ValueError(f"l_max={l_max} is not resolved by the lags kept (nphi={n}, exclude={exclude!r}): "
                         "lower l_max or exclude fewer lags") from None
    gd = np.abs(np.diagonal(L, axis1=1, axis2=2))
    if np.any(gd.min(axis=1) < 1e-7 * gd.max(axis=1)):
        raise ValueError(f"l_max={l_max} is not resolved by the lags kept (nphi={n}, exclude={exclude!r}): "
                         "lower l_max or exclude fewer lags")
    d = np.linalg.solve(L, rhs[:, :, None])[:, :, 0]
    _stamps.append(("normal", time.perf_counter(), time.process_time()))
    T = _cheb_transform(a, b, l_max, lvals)  # (p, nu, nl)
    K = np.einsum("pba,pbl->pal", L, T)  # L^T T
    r0 = np.maximum(fo.yWy - np.sum(d * d, axis=1), 0.0)
    colscale = np.ones((P, nl))
    scaled = method in ("tikhonov", "psd") and penalty in ("scaled", "pooled")
    structured = False
    if scaled:
        # Penalty ||B_l / tau_l||^2 with tau_l^2 the typical size of B_l over the pairs, estimated without bias
        # from the least-squares solution (mean of B^2 - var, precision weighted). The least-squares pieces come
        # from the small normal matrices, so only one SVD (of the scaled problem) is needed.
        Gk = np.einsum("pal,pam->plm", K, K)
        ev = np.linalg.eigvalsh(Gk)
        with np.errstate(divide="ignore", invalid="ignore"):
            condition = np.where(ev[:, 0] > 0, np.sqrt(ev[:, -1] / np.where(ev[:, 0] > 0, ev[:, 0], 1)), np.inf)
        try:
            Ginv = np.linalg.inv(Gk)
        except np.linalg.LinAlgError:
            Ginv = np.linalg.pinv(Gk)
        Ktd = np.einsum("pal,pa->pl", K, d)
        B_ls = np.einsum("plm,pm->pl", Ginv, Ktd)
        rls2 = r0 + np.maximum(np.sum(d * d, axis=1) - np.einsum("pl,pl->p", Ktd, B_ls), 0.0)
        sigma2 = np.ones(P) if error is not None else rls2 / np.maximum(m - nl, 1)
        var_ls = sigma2[:, None] * np.maximum(np.diagonal(Ginv, axis1=1, axis2=2), 0.0)
        wgt = 1.0 / np.maximum(var_ls, 1e-300)
        tau2, structured = _prior_scale(B_ls, var_ls, lay, "psd" if penalty == "scaled" else "pooled")
        colscale = np.sqrt(tau2)
        K = K * colscale[:, None, :]
    U, s, Vt = np.linalg.svd(K, full_matrices=False)
    beta = np.einsum("pal,pa->pl", U, d)
    _stamps.append(("svd", time.perf_counter(), time.process_time()))
    if not scaled:
        rls2 = r0 + np.maximum(np.sum(d * d, axis=1) - np.sum(beta * beta, axis=1), 0.0)
        with np.errstate(divide="ignore"):
            condition = np.where(s[:, -1] > 0, s[:, 0] / s[:, -1], np.inf)
        # whiten: noise variance 1 per folded lag (known from error, else from the least-squares residual)
        sigma2 = np.ones(P) if error is not None else rls2 / np.maximum(m - nl, 1)
    sig = np.sqrt(np.where(sigma2 > 0, sigma2, 1.0))
    sw = s / sig[:, None]
    if gcv_gamma is None:  # classical GCV with the PSD-structured prior scale, robust GCV with a pooled one
        gcv_gamma = 1.0 if structured else 0.3
    regv, grid, crit, cname = _choose(method, reg, sw, beta / sig[:, None], rls2 / sig ** 2, m, n_reg, scope,
                                      float(gcv_gamma))
    if method == "tsvd":
        f = (np.arange(nl)[None, :] < regv[:, None]).astype(np.float64) * (s > 0)
    elif method == "lstsq":
        f = (s > s[:, :1] * nl * np.finfo(float).eps).astype(np.float64)
    else:
        f = np.where(sw > 0, sw * sw / (sw * sw + regv[:, None] ** 2), 0.0)
    _stamps.append(("choose", time.perf_counter(), time.process_time()))
    sinv = np.where(s > 0, 1.0 / np.where(s > 0, s, 1.0), 0.0)
    Bp = np.einsum("pli,pi->pl", np.swapaxes(Vt, 1, 2), f * beta * sinv) * colscale
    dof = f.sum(axis=1)
    rho2 = rls2 + np.sum(((1 - f) * beta) ** 2, axis=1)

    psd_info = {}
    if method == "psd":
        # Tikhonov objective in the reduced variables: 1/2 B^T (K^T K + lam^2) B - (K^T d)^T B
        lam2 = (regv * sig) ** 2  # lambda back in data units
        K0 = K / colscale[:, None, :]
        H = np.einsum("pal,pam->plm", K0, K0) + lam2[:, None, None] * (np.eye(nl)[None] / colscale[:, None, :] ** 2)
        g = np.einsum("pal,pa->pl", K0, d)
        Bp, psd_info = _psd_fit(Bp, H, g, lvals, lay, psd_maxiter)
        Kb = np.einsum("pal,pl->pa", K0, Bp)
        rho2 = r0 + np.sum((d - Kb) ** 2, axis=1)

    Vf = np.swapaxes(Vt, 1, 2) * (f * sinv)[:, None, :] * colscale[:, :, None]
    cov = sigma2[:, None, None] * np.einsum("pli,pmi->plm", Vf, Vf)
    chi2 = rho2 / sigma2 / np.maximum(m - dof, 1e-300)  # whitened (noise variance 1 per folded lag)

    _stamps.append(("solve", time.perf_counter(), time.process_time()))
    # residual on the full lag grid (excluded lags included)
    coef = np.einsum("pml,pl->pm", T, Bp)
    cbT = np.ascontiguousarray(_cos_basis(n, nu).T)  # (nu, n)
    if lay.kind == "matrix":
        # ring by ring, the model of the pairs (i, j >= i) is written straight into residual[i, i:] (no (npairs,
        # nphi) model temporary: its first touch cost more than the product); the model is even in Delta, so the
        # mirror (j, i) uses the same rows
        residual = np.empty_like(c)
        o = 0
        for i in range(lay.nq):
            seg = residual[i, i:]
            np.matmul(coef[o:o + lay.nq - i], cbT, out=seg)
            np.subtract(c[i + 1:, i], seg[1:], out=residual[i + 1:, i])
            np.subtract(c[i, i:], seg, out=seg)
            o += lay.nq - i
    else:
        residual = c - (coef @ cbT).reshape(c.shape)

    _stamps.append(("residual", time.perf_counter(), time.process_time()))
    err_p = np.sqrt(np.maximum(np.diagonal(cov, axis1=1, axis2=2), 0.0))
    error_source = "error" if error is not None else "residual"

    B_blocks = consistency = B_err_blocks = None
    if blocks is not None:
        bl = np.asarray(blocks, dtype=np.float64)
        if bl.ndim != c.ndim + 1 or bl.shape[1:] != c.shape or bl.shape[0] < 2:
            raise ValueError(f"blocks must have shape (K >= 2,) + corr.shape = (K,) + {c.shape}, got {bl.shape}")
        K_ = bl.shape[0]
        bw = np.ones(K_) if block_weights is None else np.asarray(block_weights, dtype=np.float64)
        if bw.shape != (K_,) or not np.all(np.isfinite(bw)) or np.any(bw <= 0):
            raise ValueError(f"block_weights must be {K_} positive finite values")
        Bb = np.empty((K_, P, nl))
        for k in range(K_):
            if not np.all(np.isfinite(_gather(bl[k], lay)[:, valid])) and nan_policy == "raise":
                raise ValueError(f"blocks[{k}] has NaN/inf at used lags")
            try:  # the same weights and folding as the full data
                if om_general is not None:
                    raise _NonFinite
                rhs_b = _fold_reduce(bl[k], error, lay, valid, h, Mf, P, sym_force=fo.sym, need_G=False).rhs
            except _NonFinite:
                if om_general is None:
                    om_general = _fold(c, error, lay, valid, nan_policy, h)[1]
                rhs_b = _fold_reduce_general(bl[k], error, lay, valid, nan_policy, h, Mf, False, om_general)[0].rhs
            db = np.linalg.solve(L, rhs_b[:, :, None])[:, :, 0]
            bb = np.einsum("pal,pa->pl", U, db)
            Bb[k] = np.einsum("pli,pi->pl", np.swapaxes(Vt, 1, 2), f * bb * sinv) * colscale
        W = bw.sum()
        loo = (np.tensordot(bw, Bb, axes=1)[None] - bw[:, None, None] * Bb) / (W - bw)[:, None, None]
        jvar = (K_ - 1) / K_ * np.sum((loo - loo.mean(0)) ** 2, axis=0)
        B_err_blocks = _scatter_B(np.sqrt(jvar), lay)
        cons = []
        for i1 in range(K_):
            for i2 in range(i1 + 1, K_):
                num = np.sum(Bb[i1] * Bb[i2], axis=0)
                den = np.sqrt(np.sum(Bb[i1] ** 2, axis=0) * np.sum(Bb[i2] ** 2, axis=0))
                cons.append(np.where(den > 0, num / np.where(den > 0, den, 1), np.nan))
        consistency = np.mean(cons, axis=0)
        B_blocks = np.stack([_scatter_B(Bb[k], lay) for k in range(K_)])
        if error is None:
            err_p = np.sqrt(jvar)
            error_source = "blocks"

    _stamps.append(("blocks", time.perf_counter(), time.process_time()))
    res = LegendreResult(
        B=_scatter_B(Bp, lay), l=lvals, B_error=_scatter_B(err_p, lay), error_source=error_source, B_cov=cov,
        method=method, criterion_name=cname, reg=_scatter_pairs(regv, lay), reg_grid=grid,
        criterion=crit[0].copy() if (crit.shape[0] == 1 and scope == "global") else _scatter_pairs(crit, lay), residual=residual, condition=_scatter_pairs(condition, lay),
        dof=_scatter_pairs(dof, lay), chi2=_scatter_pairs(chi2, lay), valid_lags=valid,
        q=np.asarray(q, dtype=np.float64), q2=None if q2 is None else np.asarray(q2, dtype=np.float64),
        wavelength=float(wavelength), pairs=None if lay.kind != "pairs" else lay.ring_pairs,
        psd_distance=_psd_distance(Bp, lvals, lay), B_blocks=B_blocks, consistency=consistency,
        B_error_blocks=B_err_blocks, psd_info=psd_info)
    _stamps.append(("result", time.perf_counter(), time.process_time()))
    _log.debug("legendre_decompose: %d pairs, l_max=%d, method=%s, reg=%s; seconds wall (CPU): %s", P, l_max, method, cname,
               ", ".join(f"{b[0]} {b[1] - a[1]:.3f} ({b[2] - a[2]:.3f} CPU)" for a, b in zip(_stamps, _stamps[1:])))
    return res


# ----------------------------------------------------------------------------------------------------------------
# the run pipeline's result


def legendre_from_analysis(result: Any, l_max: int, *, which: str = "difference", **kw) -> LegendreResult:
    """Decompose the per-ring autocorrelations of an :class:`xcca.AnalysisResult` into B_l(q, q).

    Parameters
    ----------
    result : AnalysisResult
        From :func:`xcca.analyze` with ``wavelength`` and ``q`` (cos psi needs both).
    l_max : int
        Highest degree (even l).
    which : {"difference", "raw"}
        ``difference_correlation_norm`` (pair differences: the fluctuation signal without the mean) or
        ``raw_correlation``.
    **kw
        Passed to :func:`legendre_decompose` (method, reg, exclude, ...).

    Returns
    -------
    LegendreResult
        B of shape (nl, nq): B_l(q, q) per ring.
    """
    params = getattr(result, "parameters", {}) or {}
    lam = params.get("wavelength")
    q = getattr(result, "q", None)
    if lam is None or q is None:
        raise ValueError("a Legendre decomposition needs the rings' q and the wavelength (give wavelength= and q= "
                         "to analyze, or --wavelength and --q to xcca correlate)")
    if which not in ("difference", "raw"):
        raise ValueError(f"which must be 'difference' or 'raw', got {which!r}")
    corr = result.difference_correlation_norm if which == "difference" else result.raw_correlation
    corr = np.asarray(corr, dtype=np.float64)
    keep = np.all(np.isfinite(corr), axis=1)
    if not keep.any():
        raise ValueError("every ring's correlation has NaN (all rings masked?)")
    if not keep.all():
        _log.warning("legendre: %d ring(s) with NaN correlations left out", int(np.sum(~keep)))
        kw.setdefault("nan_policy", "omit")
    return legendre_decompose(corr, np.asarray(q, dtype=np.float64), float(lam), l_max=l_max, **kw)


def write_legendre(path: Any, res: LegendreResult, group: Optional[str] = None) -> None:
    """Add a Legendre decomposition to an HDF5 result file (replacing an old one): group ``/entry/legendre``
    (NXcollection) in a NeXus result of ``xcca.analyze``, else ``/legendre``.

    Datasets: ``B``, ``B_error`` (units of the correlation), ``l``, ``q`` (1/Angstrom), ``reg``, ``condition``,
    ``chi2``, ``dof``, ``valid_lags``, and when present ``psd_distance``, ``consistency``, ``criterion`` and
    ``reg_grid``; attributes ``method``, ``criterion``, ``error_source``, ``wavelength`` (Angstrom).

    Parameters
    ----------
    path : str or path-like
        An existing HDF5 file (e.g. the result of ``xcca correlate``), opened for appending.
    res : LegendreResult
        The decomposition.
    group : str, optional
        Group path (default: ``entry/legendre`` when the file has ``/entry``, else ``legendre``).

    Returns
    -------
    None
    """
    import h5py

    with h5py.File(path, "a") as f:
        if group is None:
            group = "entry/legendre" if "entry" in f else "legendre"
        if group in f:
            del f[group]
        g = f.create_group(group)
        g.attrs["NX_class"] = "NXcollection"
        for k, v in res.to_dict().items():
            if isinstance(v, np.ndarray):
                ds = g.create_dataset(k, data=v)
                if k == "q":
                    ds.attrs["units"] = "1/angstrom"
        g.attrs["method"] = res.method
        g.attrs["criterion"] = res.criterion_name
        g.attrs["error_source"] = res.error_source
        g.attrs["wavelength"] = res.wavelength
        g.attrs["units"] = "B, B_error: units of the correlation; q: 1/Angstrom; wavelength: Angstrom"
