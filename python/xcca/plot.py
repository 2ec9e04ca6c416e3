"""Figures of a correlation analysis, as in LOKI's tutorial: polar image, radial profile, correlation map and
correlations against cos ψ.

matplotlib is imported lazily (only when a function here is called), so ``import xcca`` never needs it; without it a
clear ImportError says how to install it. Figures are built on ``matplotlib.figure.Figure`` (no pyplot global state,
no display needed); pass ``ax=`` to draw into your own axes. Every function returns the axes it drew on.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import numpy as np

__all__ = ["plot_polar", "plot_radial_profile", "plot_correlation_map", "plot_cos_psi", "plot_result",
           "save_figures", "require_matplotlib"]


def _mpl():
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - exercised by monkeypatching in the tests
        raise ImportError("xcca.plot needs matplotlib: pip install matplotlib (or pip install 'xcca[plot]')") from exc
    return Figure


def _axes(ax, figsize=(6.0, 4.0)):
    if ax is not None:
        return ax
    fig = _mpl()(figsize=figsize, layout="constrained")
    return fig.add_subplot()


def plot_polar(polar, radii=None, *, ax=None, mask=None, vmin=None, vmax=None, cmap="viridis", title="Polar image"):
    """Polar image (nq, nphi): φ in degrees across, radius down; masked/NaN samples in grey.

    ``mask``: True = valid sample (optional, NaN samples are always shown as masked).
    """
    _mpl()
    p = np.array(polar, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"polar must be 2-D (nq, nphi), got shape {p.shape}")
    if mask is not None:
        p[~np.broadcast_to(np.asarray(mask, bool), p.shape)] = np.nan
    nq, nphi = p.shape
    r = np.arange(nq) if radii is None else np.asarray(radii, dtype=np.float64)
    fin = p[np.isfinite(p)]
    if vmin is None:
        vmin = np.percentile(fin, 1) if fin.size else 0
    if vmax is None:
        vmax = np.percentile(fin, 99.5) if fin.size else 1
    ax = _axes(ax)
    import matplotlib

    cm = matplotlib.colormaps[cmap].with_extremes(bad="0.6")
    im = ax.imshow(np.ma.masked_invalid(p), aspect="auto", origin="lower", cmap=cm, vmin=vmin, vmax=vmax,
                   extent=(0, 360, r[0] - 0.5, r[-1] + 0.5), interpolation="nearest")
    ax.figure.colorbar(im, ax=ax, label="intensity")
    ax.set_xlabel("φ (degrees)")
    ax.set_ylabel("radius (pixels)")
    ax.set_title(title)
    return ax


def plot_radial_profile(radii, profile, *, ax=None, q=None, label=None, title="Radial profile", **kw):
    """Radial profile (mean ring intensity) against radius, with a q axis on top if ``q`` (per radius) is given."""
    _mpl()
    ax = _axes(ax)
    r = np.asarray(radii, dtype=np.float64)
    ax.plot(r, np.asarray(profile, dtype=np.float64), marker="o", ms=3, label=label, **kw)
    ax.set_xlabel("radius (pixels)")
    ax.set_ylabel("mean intensity")
    ax.set_title(title)
    if q is not None:
        qa = np.asarray(q, dtype=np.float64)
        if qa.size == r.size and np.all(np.diff(qa) > 0):
            sec = ax.secondary_xaxis("top", functions=(lambda x: np.interp(x, r, qa),
                                                       lambda y: np.interp(y, qa, r)))
            sec.set_xlabel("q (1/Å)")
    ax.grid(alpha=0.3)
    return ax


def plot_correlation_map(corr, radii=None, *, ax=None, skip_zero_lag=True, title="Correlation", cmap="RdBu_r"):
    """Correlation map (nq, nphi) against lag Δ in degrees (0..180) and radius; each ring's mean over Δ removed so the
    angular structure shows; the zero-lag column (noise spike) is left out unless ``skip_zero_lag=False``."""
    _mpl()
    c = np.array(corr, dtype=np.float64)
    if c.ndim != 2:
        raise ValueError(f"corr must be 2-D (nq, nphi), got shape {c.shape}")
    nq, n = c.shape
    half = n // 2 + 1
    c = c[:, :half]
    lo = 1 if skip_zero_lag and half > 2 else 0
    c = c - np.nanmean(c[:, lo:], axis=1, keepdims=True)
    if lo:
        c[:, 0] = np.nan
    r = np.arange(nq) if radii is None else np.asarray(radii, dtype=np.float64)
    lim = np.nanpercentile(np.abs(c), 99) if np.isfinite(c).any() else 1.0
    ax = _axes(ax)
    import matplotlib

    cm = matplotlib.colormaps[cmap].with_extremes(bad="0.6")
    im = ax.imshow(np.ma.masked_invalid(c), aspect="auto", origin="lower", cmap=cm, vmin=-lim, vmax=lim,
                   extent=(-180 / (n - 1) if n > 1 else 0, 360 * (half - 0.5) / n, r[0] - 0.5, r[-1] + 0.5),
                   interpolation="nearest")
    ax.figure.colorbar(im, ax=ax, label="C − ⟨C⟩_Δ")
    ax.set_xlabel("Δ (degrees)")
    ax.set_ylabel("radius (pixels)")
    ax.set_title(title)
    return ax


def plot_cos_psi(curves: Dict[str, np.ndarray], cos_psi, *, ax=None, skip_zero_lag=True, normalize=True,
                 title="Angular correlation against cos ψ"):
    """Correlation curves (each (nphi,)) against cos ψ (nphi,), for lags 0..180°.

    ``curves`` maps a label to a curve (e.g. ``{"raw": ..., "difference": ...}``). With ``normalize`` each curve has
    its mean over Δ removed and is scaled to unit maximum modulus (so curves of different magnitude compare); the
    zero-lag point (shot noise) is left out unless ``skip_zero_lag=False``.
    """
    _mpl()
    cp = np.asarray(cos_psi, dtype=np.float64)
    n = cp.size
    half = n // 2 + 1
    lo = 1 if skip_zero_lag and half > 2 else 0
    ax = _axes(ax)
    for label, c in curves.items():
        c = np.asarray(c, dtype=np.float64)
        if c.shape != cp.shape:
            raise ValueError(f"curve {label!r} has shape {c.shape}, cos_psi {cp.shape}")
        y = c[lo:half]
        if normalize:
            y = y - np.nanmean(y)
            m = np.nanmax(np.abs(y)) if np.isfinite(y).any() else 0
            if m > 0:
                y = y / m
        ax.plot(cp[lo:half], y, label=label)
    ax.set_xlabel("cos ψ")
    ax.set_ylabel("C (normalised)" if normalize else "C")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return ax


def plot_result(result, ring: Optional[float] = None, *, figsize=(12.0, 8.0)):
    """A four-panel overview of an :class:`xcca.pipeline.AnalysisResult`: mean polar image, radial profile,
    difference-correlation map, and raw vs difference correlation of one ring against cos ψ (or Δ without cos ψ).

    ``ring``: radius in pixels of the ring shown against cos ψ (default: the pairing ring).
    """
    Figure = _mpl()
    fig = Figure(figsize=figsize, layout="constrained")
    axs = fig.subplots(2, 2)
    plot_polar(result.mean_polar, result.radii, ax=axs[0, 0], title="Mean polar image")
    plot_radial_profile(result.radii, result.radial_profile, q=result.q, ax=axs[0, 1])
    plot_correlation_map(result.difference_correlation_norm, result.radii, ax=axs[1, 0],
                         title="Difference correlation")
    i = _ring_index(result, ring)
    xs = result.cos_psi[i] if result.cos_psi is not None else np.cos(result.delta)
    plot_cos_psi({"raw": result.raw_correlation[i], "difference": result.difference_correlation_norm[i]}, xs,
                 ax=axs[1, 1], title=f"r = {result.radii[i]:g} px" + ("" if result.cos_psi is not None else
                                                                      " (cos Δ: no wavelength/q)"))
    if result.cos_psi is None:
        axs[1, 1].set_xlabel("cos Δ")
    return fig


def _ring_index(result, ring: Optional[float]) -> int:
    if ring is None:
        ring = result.parameters.get("ring_for_pairing")
    if ring is None:
        return int(np.nanargmax(result.radial_profile))
    return int(np.argmin(np.abs(np.asarray(result.radii) - float(ring))))


def save_figures(result, out_dir: Union[str, Path], ring: Optional[float] = None, *, dpi: int = 110) -> Sequence[Path]:
    """Write the LOKI-tutorial figures of a result into ``out_dir``: ``polar_image.png``, ``radial_profile.png``,
    ``correlation_map.png``, ``correlation_cos_psi.png`` and ``overview.png``. Returns the paths."""
    Figure = _mpl()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []

    def save(fig, name):
        p = out / name
        fig.savefig(p, dpi=dpi)
        paths.append(p)

    ax = plot_polar(result.mean_polar, result.radii, title="Mean polar image")
    save(ax.figure, "polar_image.png")
    ax = plot_radial_profile(result.radii, result.radial_profile, q=result.q)
    save(ax.figure, "radial_profile.png")
    fig = Figure(figsize=(11, 4), layout="constrained")
    a1, a2 = fig.subplots(1, 2)
    plot_correlation_map(result.raw_correlation, result.radii, ax=a1, title="Raw correlation (mean of shots)")
    plot_correlation_map(result.difference_correlation_norm, result.radii, ax=a2,
                         title="Difference correlation (pairs)")
    save(fig, "correlation_map.png")
    i = _ring_index(result, ring)
    fig = Figure(figsize=(11, 4), layout="constrained")
    a1, a2 = fig.subplots(1, 2)
    xs = result.cos_psi[i] if result.cos_psi is not None else np.cos(result.delta)
    xl = "cos ψ" if result.cos_psi is not None else "cos Δ"
    plot_cos_psi({"raw": result.raw_correlation[i]}, xs, ax=a1, title=f"Raw, r = {result.radii[i]:g} px")
    plot_cos_psi({"difference": result.difference_correlation_norm[i]}, xs, ax=a2,
                 title=f"Difference, r = {result.radii[i]:g} px")
    a1.set_xlabel(xl)
    a2.set_xlabel(xl)
    save(fig, "correlation_cos_psi.png")
    save(plot_result(result, ring), "overview.png")
    return paths


def require_matplotlib() -> None:
    """Check that matplotlib can be imported (before a long computation whose figures need it).

    Raises
    ------
    ImportError
        matplotlib is missing; the message says how to install it.
    """
    _mpl()


# Legendre decomposition figures (issue 13) live in plot_legendre.py; re-exported here.
from .plot_legendre import *  # noqa: E402,F401,F403
from .plot_legendre import __all__ as _legendre_all  # noqa: E402

__all__ = [*__all__, *_legendre_all]
