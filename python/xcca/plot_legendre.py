"""Figures of a Legendre decomposition (:func:`xcca.legendre_decompose`): B_l(q, q') maps, B_l(q, q) with error
bars, the regularisation criterion curve and residuals against cos psi.

Same rules as :mod:`xcca.plot`: matplotlib imported lazily, ``matplotlib.figure.Figure`` (no pyplot), ``ax=`` to draw
into your own axes, every function returns the axes (or the figure for multi-panel maps).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

__all__ = ["plot_legendre_maps", "plot_legendre_diagonal", "plot_legendre_criterion", "plot_legendre_residuals"]


def _mpl():
    from .plot import _mpl as m  # at call time: xcca.plot re-exports this module (no import cycle)

    return m()


def _axes(ax, figsize=(6.0, 4.0)):
    from .plot import _axes as a

    return a(ax, figsize)


def _check(result):
    if not hasattr(result, "B") or not hasattr(result, "l"):
        raise TypeError("result must be a LegendreResult from xcca.legendre_decompose")


def plot_legendre_maps(result, ls: Optional[Sequence[int]] = None, *, ncols: int = 4, cmap: str = "RdBu_r",
                       figsize=None):
    """B_l(q, q') maps, one panel per l (symmetric colour scale around 0).

    Parameters
    ----------
    result : LegendreResult
        From an (nq, nq, nphi) correlation (B of shape (nl, nq, nq)).
    ls : sequence of int, optional
        Degrees to show (default all).
    ncols : int
        Panels per row.
    cmap : str
        Colour map.
    figsize : tuple, optional
        Figure size in inches.

    Returns
    -------
    matplotlib.figure.Figure
    """
    _check(result)
    Figure = _mpl()
    B = np.asarray(result.B)
    if B.ndim != 3:
        raise ValueError(f"plot_legendre_maps needs B of shape (nl, nq, nq), got {B.shape}")
    lv = list(result.l)
    show = lv if ls is None else [int(x) for x in ls]
    for x in show:
        if x not in lv:
            raise ValueError(f"l = {x} is not in the result (l = {lv})")
    nc = max(1, min(int(ncols), len(show)))
    nr = -(-len(show) // nc)
    fig = Figure(figsize=figsize or (3.0 * nc, 2.7 * nr), layout="constrained")
    q = np.asarray(result.q)
    ext = (q[0], q[-1], q[0], q[-1]) if q.size > 1 else None
    for k, x in enumerate(show):
        ax = fig.add_subplot(nr, nc, k + 1)
        m = B[lv.index(x)]
        v = np.nanmax(np.abs(m)) or 1.0
        im = ax.imshow(m, origin="lower", cmap=cmap, vmin=-v, vmax=v, extent=ext, interpolation="nearest")
        ax.set_title(f"B_{x}(q, q')")
        ax.set_xlabel("q' (1/Å)")
        ax.set_ylabel("q (1/Å)")
        fig.colorbar(im, ax=ax)
    return fig


def plot_legendre_diagonal(result, ls: Optional[Sequence[int]] = None, *, ax=None, logy: bool = False,
                           title: str = "B_l(q, q)"):
    """B_l(q, q) against q with error bars (``result.B_error``), one curve per l.

    Parameters
    ----------
    result : LegendreResult
        From an (nq, nq, nphi) correlation, or from autocorrelation pairs (q per pair).
    ls : sequence of int, optional
        Degrees to show (default all but l = 0 when there are others).
    ax : matplotlib axes, optional
        Where to draw.
    logy : bool
        Symmetric-log y axis.
    title : str
        Axes title.

    Returns
    -------
    matplotlib axes
    """
    _check(result)
    _mpl()
    B, E = np.asarray(result.B), np.asarray(result.B_error)
    if B.ndim == 3:
        d = np.diagonal(B, axis1=1, axis2=2)
        e = np.diagonal(E, axis1=1, axis2=2)
        q = np.asarray(result.q)
    elif B.ndim == 2:
        d, e, q = B, E, np.broadcast_to(result.q, B.shape[1:])
    else:
        raise ValueError("plot_legendre_diagonal needs B over several pairs")
    lv = list(result.l)
    show = ([x for x in lv if x != 0] or lv) if ls is None else [int(x) for x in ls]
    ax = _axes(ax)
    for x in show:
        if x not in lv:
            raise ValueError(f"l = {x} is not in the result (l = {lv})")
        i = lv.index(x)
        ax.errorbar(q, d[i], yerr=e[i], marker="o", ms=3, capsize=2, label=f"l = {x}")
    if logy:
        ax.set_yscale("symlog", linthresh=max(float(np.nanmin(np.abs(e[e > 0]))) if np.any(e > 0) else 1e-12,
                                               1e-300))
    ax.axhline(0, color="0.5", lw=0.5)
    ax.set_xlabel("q (1/Å)")
    ax.set_ylabel("B_l(q, q)")
    ax.set_title(title)
    ax.legend(fontsize="small", ncol=2)
    return ax


def plot_legendre_criterion(result, pair=None, *, ax=None):
    """The regularisation criterion against its parameter, with the chosen value marked.

    Parameters
    ----------
    result : LegendreResult
        With a scanned criterion (reg = "gcv", "lcurve" or "discrepancy").
    pair : int or (int, int), optional
        Which pair's curve when the criterion is per pair (scope="pair"); default the first.
    ax : matplotlib axes, optional
        Where to draw.

    Returns
    -------
    matplotlib axes
    """
    _check(result)
    _mpl()
    g = np.asarray(result.reg_grid)
    if g.size == 0:
        raise ValueError("the result has no criterion curve (a fixed reg or lstsq)")
    c = np.asarray(result.criterion)
    reg = np.asarray(result.reg)
    if c.ndim > 1:
        idx = (0,) * (c.ndim - 1) if pair is None else tuple(np.atleast_1d(pair))
        c, chosen = c[idx], float(reg[idx])
    else:
        chosen = float(reg.flat[0])
    ax = _axes(ax)
    tsvd = result.method == "tsvd"
    ax.plot(g, c, marker=".")
    ax.axvline(chosen, color="C3", ls="--", label=f"chosen {chosen:.3g}")
    if not tsvd:
        ax.set_xscale("log")
    if result.criterion_name in ("gcv", "discrepancy") and np.all(c[np.isfinite(c)] > 0):
        ax.set_yscale("log")
    ax.set_xlabel("singular values kept" if tsvd else "λ (noise units)")
    ax.set_ylabel({"gcv": "GCV", "lcurve": "L-curve curvature", "discrepancy": "‖r‖² / m"}.get(
        result.criterion_name, result.criterion_name))
    ax.set_title(f"{result.method}: {result.criterion_name}")
    ax.legend(fontsize="small")
    return ax


def plot_legendre_residuals(result, pairs=None, *, ax=None, error=None):
    """Residuals C - forward(B) against cos psi for a few pairs (used lags only).

    Parameters
    ----------
    result : LegendreResult
        The decomposition.
    pairs : sequence, optional
        Pair indices: (i, j) tuples for an (nq, nq) result, ints otherwise; default the first diagonal pairs.
    ax : matplotlib axes, optional
        Where to draw.
    error : array_like, optional
        The correlation's standard errors: residuals are then shown in units of sigma.

    Returns
    -------
    matplotlib axes
    """
    _check(result)
    _mpl()
    r = np.asarray(result.residual)
    cp = result.cos_psi()
    v = np.asarray(result.valid_lags)
    if r.ndim == 3:
        sel = [(i, i) for i in range(min(3, r.shape[0]))] if pairs is None else [tuple(p) for p in pairs]
    elif r.ndim == 2:
        sel = [(i,) for i in range(min(3, r.shape[0]))] if pairs is None else [(int(p),) for p in pairs]
    else:
        sel = [()]
    e = None if error is None else np.asarray(error, dtype=np.float64)
    ax = _axes(ax)
    for idx in sel:
        y = r[idx][v] if e is None else (r[idx] / e[idx])[v]
        ax.plot(cp[idx][v], y, ".", ms=2, label=str(idx if idx else "pair"))
    ax.axhline(0, color="0.5", lw=0.5)
    ax.set_xlabel("cos ψ")
    ax.set_ylabel("residual / σ" if e is not None else "residual")
    ax.set_title("C − Σ B_l P_l(cos ψ)")
    ax.legend(fontsize="small", markerscale=4)
    return ax
