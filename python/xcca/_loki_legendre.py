"""LOKI's ``loki.utils.postproc_legendre``: Legendre projection by quadrature on Gauss-Legendre nodes.

Same names, signatures and results as LOKI (github dermen/loki, ``src/utils/postproc_legendre.py``); re-exported as
``xcca.loki.utils.postproc_legendre``. LOKI's recipe, per ring (pair): interpolate C(cos psi) with an interpolating
quintic B-spline (FITPACK ``splrep(k=5, s=0)``), evaluate it at ``len(cospsi)`` Gauss-Legendre nodes of [-1, 1] and
project, B_l = (2l + 1) / sum(w) * sum_i w_i P_l(x_i) C(x_i), even l only (odd l stay 0), optionally zeroing l = 0.

How it differs from :func:`xcca.legendre_decompose` (prefer that for science):

- the quadrature needs C on all of [-1, 1]; with Ewald curvature a pair covers only
  [-cos(theta + theta'), cos(theta - theta')] and the spline *extrapolates* into the rest (no warning);
- no exclusion of Delta = 0 / pi, no weights, no error bars, no regularisation, no PSD constraint;
- ``cospsi`` rows must be strictly increasing (FITPACK refuses anything else; LOKI fails with FITPACK's "Error on
  input data" — here a ValueError says so): pass e.g. the lags n/2 .. n of one half ring, whose cos psi increases.
"""
from __future__ import annotations

import numpy as np
from numpy.polynomial.legendre import leggauss

__all__ = ["interpolate_corr", "leg_proj_legguass", "compute_legendre_projection", "get_cpsi"]


def _increasing(x: np.ndarray, name: str) -> None:
    if x.ndim != 1 or x.size < 6:
        raise ValueError(f"{name} must be 1-d with at least 6 points (a quintic spline), got shape {x.shape}")
    if not np.all(np.diff(x) > 0):
        raise ValueError(f"{name} must be strictly increasing (LOKI's FITPACK spline requires it); reverse a "
                         "half ring, e.g. corr[..., n//2:] whose cos psi increases")


def interpolate_corr(xold, xnew, signal):
    """Interpolating quintic B-spline of ``signal(xold)`` evaluated at ``xnew`` (LOKI: splrep(k=5, s=0), splev).

    Parameters
    ----------
    xold : array_like, shape (n,)
        Strictly increasing abscissae (e.g. cos psi).
    xnew : array_like
        Where to evaluate; outside [xold[0], xold[-1]] the spline extrapolates, as in LOKI.
    signal : array_like, shape (n,)
        Values at xold.

    Returns
    -------
    ndarray, shape of xnew
    """
    from scipy.interpolate import splev, splrep

    x = np.asarray(xold, dtype=np.float64)
    y = np.asarray(signal, dtype=np.float64)
    _increasing(x, "xold")
    if y.shape != x.shape:
        raise ValueError(f"signal must have the shape of xold {x.shape}, got {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError("signal contains NaN or inf")
    return splev(np.asarray(xnew, dtype=np.float64), splrep(x, y, k=5, s=0), der=0)


def leg_proj_legguass(x, signal, weights, lmax):
    """Even-l Legendre coefficients by Gauss-Legendre quadrature (LOKI's name, spelling kept).

    coefs[l] = (2l + 1) * sum(weights * P_l(x) * signal) / sum(weights) for even l <= lmax, 0 for odd l.

    Parameters
    ----------
    x, weights : array_like, shape (n,)
        Quadrature nodes and weights (numpy.polynomial.legendre.leggauss).
    signal : array_like, shape (n,)
        The function at the nodes.
    lmax : int
        Highest degree.

    Returns
    -------
    ndarray, shape (lmax + 1,)
    """
    from scipy.special import eval_legendre

    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    f = np.asarray(signal, dtype=np.float64)
    lmax = int(lmax)
    if lmax < 0:
        raise ValueError(f"lmax must be >= 0, got {lmax}")
    if not (x.shape == w.shape == f.shape) or x.ndim != 1:
        raise ValueError(f"x, signal and weights must be 1-d of one length, got {x.shape}, {f.shape}, {w.shape}")
    l = np.arange(lmax + 1)
    P = eval_legendre(l[:, None], x[None, :])
    coefs = (2 * l + 1) * (P @ (w * f)) / np.sum(w)
    coefs[1::2] = 0.0
    return coefs


def compute_legendre_projection(corr, cospsi, lmax, remove_zero=True):
    """LOKI's Legendre projection of each row of ``corr`` over its ``cospsi`` row.

    Parameters
    ----------
    corr : array_like, shape (n_q, n)
        Correlations, one row per ring (pair).
    cospsi : array_like, shape (n_q, n)
        cos psi of each sample; every row strictly increasing.
    lmax : int
        Highest degree.
    remove_zero : bool
        Set the l = 0 coefficient to 0 (LOKI's default).

    Returns
    -------
    ndarray, shape (n_q, lmax + 1)
        Even-l coefficients (odd columns 0).
    """
    c = np.asarray(corr, dtype=np.float64)
    cp = np.asarray(cospsi, dtype=np.float64)
    if c.ndim != 2 or cp.shape[-1:] != c.shape[-1:] or cp.ndim not in (1, 2) or (cp.ndim == 2 and cp.shape != c.shape):
        raise ValueError(f"corr must be (n_q, n) and cospsi (n_q, n), got {c.shape} and {cp.shape}")
    cp = np.broadcast_to(cp, c.shape)
    xnew, ws = leggauss(cp.shape[-1])
    out = np.zeros((c.shape[0], int(lmax) + 1))
    for i in range(c.shape[0]):
        out[i] = leg_proj_legguass(xnew, interpolate_corr(cp[i], xnew, c[i]), ws, lmax)
    if remove_zero:
        out[:, 0] = 0.0
    return out


def get_cpsi(num_phi, wavlen, q1, q2):
    """cos psi of the lags of a ring of ``num_phi`` samples for momenta q1, q2 (LOKI's helper; ``xcca.cos_psi``).

    Parameters
    ----------
    num_phi : int
        Number of phi samples.
    wavlen : float
        Wavelength in Angstrom.
    q1, q2 : float
        Momenta in 1/Angstrom.

    Returns
    -------
    ndarray, shape (num_phi,)
    """
    from .correlate import cos_psi

    return cos_psi(int(num_phi), q1, wavlen, q2)
