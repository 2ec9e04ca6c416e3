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
           "save_figures", "require_matplotlib", "save_figure", "q_axis_functions", "plot_ring_fit",
           "plot_mean_rings"]


def _float_2d(a, name: str, dims: str, mask=None) -> np.ndarray:
    """A float64 copy of a 2-D array argument, NaN where ``mask`` (True = valid, LOKI's convention) is False."""
    out = np.array(a, dtype=np.float64)
    if out.ndim != 2:
        raise ValueError(f"{name} must be 2-D {dims}, got shape {out.shape}")
    if mask is not None:
        out[~np.broadcast_to(np.asarray(mask, bool), out.shape)] = np.nan
    return out


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


def plot_polar(polar, radii=None, *, ax=None, mask=None, vmin=None, vmax=None, cmap="viridis", title="Polar image",
               units="counts"):
    """Polar image (nq, nphi): φ in degrees across, radius up; masked/NaN samples in grey.

    Parameters
    ----------
    polar : array_like, shape (nq, nphi)
        Polar image (rows = radius, columns = φ from 0 to 360°).
    radii : array_like, shape (nq,), optional
        Radius of each row in pixels (default 0, 1, ...).
    ax : matplotlib Axes, optional
        Axes to draw into (default: a new figure).
    mask : array_like of bool, optional
        True = valid sample (LOKI's convention); NaN samples are always shown as masked.
    vmin, vmax : float, optional
        Colour limits (default: 1st and 99.5th percentile of the valid samples).
    cmap : str
        matplotlib colormap.
    title : str
        Axes title.
    units : str
        Unit of the intensities, shown on the colour bar.

    Returns
    -------
    matplotlib.axes.Axes
    """
    _mpl()
    p = _float_2d(polar, "polar", "(nq, nphi)", mask)
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
    ax.figure.colorbar(im, ax=ax, label=f"intensity ({units})" if units else "intensity")
    ax.set_xlabel("φ (degrees)")
    ax.set_ylabel("radius (pixels)")
    ax.set_title(title)
    return ax


def q_axis_functions(radii, q):
    """Exact radius <-> q conversions for a secondary axis, from the q of each radius.

    A flat detector normal to the beam gives ``q(r) = A sin(atan(c r) / 2)`` with ``A = 4π/λ`` and ``c`` = pixel
    size / distance; both are recovered from the (radius, q) pairs and, when that model reproduces every pair to
    1e-6 relative, the two exact inverse functions are returned. Otherwise (another geometry) a piecewise-linear map
    that extrapolates linearly beyond the data (never clamps) is returned.

    Parameters
    ----------
    radii : array_like, shape (n,)
        Radii in pixels, increasing.
    q : array_like, shape (n,)
        q at each radius (1/Å), increasing.

    Returns
    -------
    (forward, inverse) : tuple of callables
        ``forward(r) -> q`` and ``inverse(q) -> r``, vectorised, mutual inverses.
    """
    r = np.asarray(radii, dtype=np.float64)
    qa = np.asarray(q, dtype=np.float64)
    if r.shape != qa.shape or r.ndim != 1 or r.size < 2 or np.any(np.diff(r) <= 0) or np.any(np.diff(qa) <= 0):
        raise ValueError("radii and q must be increasing 1-D arrays of the same length (>= 2)")
    model = _flat_detector_fit(r, qa)
    if model is not None:
        A, c = model

        def forward(x):
            return A * np.sin(np.arctan(c * np.asarray(x, dtype=np.float64)) / 2)

        def inverse(y):
            s_ = np.clip(np.asarray(y, dtype=np.float64) / A, -1.0, 1.0)
            return np.tan(2 * np.arcsin(s_)) / c

        return forward, inverse

    def lin(x, xp, fp):
        x = np.asarray(x, dtype=np.float64)
        y = np.interp(x, xp, fp)
        lo, hi = x < xp[0], x > xp[-1]
        y = np.where(lo, fp[0] + (x - xp[0]) * (fp[1] - fp[0]) / (xp[1] - xp[0]), y)
        return np.where(hi, fp[-1] + (x - xp[-1]) * (fp[-1] - fp[-2]) / (xp[-1] - xp[-2]), y)

    return (lambda x: lin(x, r, qa)), (lambda y: lin(y, qa, r))


def _flat_detector_fit(r, q):
    """(A, c) of q = A sin(atan(c r)/2) through the first and last pair, if it reproduces all pairs; else None."""
    from scipy.optimize import brentq

    if r[0] < 0 or q[0] <= 0 or r[0] == 0:
        sel = r > 0
        if sel.sum() < 2:
            return None
        r, q = r[sel], q[sel]
    ratio = q[-1] / q[0]

    def f(c):
        return np.sin(np.arctan(c * r[-1]) / 2) / np.sin(np.arctan(c * r[0]) / 2) - ratio

    lo, hi = 1e-12 / r[-1], 1e6 / r[0]
    try:
        if f(lo) * f(hi) > 0:
            return None
        c = brentq(f, lo, hi, xtol=1e-300, rtol=4 * np.finfo(float).eps, maxiter=500)
    except (ValueError, RuntimeError):
        return None
    A = q[-1] / np.sin(np.arctan(c * r[-1]) / 2)
    pred = A * np.sin(np.arctan(c * r) / 2)
    return (A, c) if np.all(np.abs(pred - q) <= 1e-6 * np.abs(q)) else None


def plot_radial_profile(radii, profile, *, ax=None, q=None, label=None, title="Radial profile", units="counts",
                        **kw):
    """Radial profile (mean ring intensity) against radius, with an exact q axis on top if ``q`` is given.

    Parameters
    ----------
    radii : array_like, shape (nq,)
        Radii in pixels.
    profile : array_like, shape (nq,)
        Mean intensity of each ring.
    ax : matplotlib Axes, optional
        Axes to draw into (default: a new figure).
    q : array_like, shape (nq,), optional
        q (1/Å) of each radius: adds a secondary q axis through :func:`q_axis_functions` (exact for a flat
        detector, so the ticks sit where the geometry puts them, also beyond the first and last ring).
    label : str, optional
        Legend label of the curve.
    title : str
        Axes title.
    units : str
        Unit of the intensities (y axis label).
    **kw
        Passed to ``Axes.plot``.

    Returns
    -------
    matplotlib.axes.Axes
    """
    _mpl()
    ax = _axes(ax)
    r = np.asarray(radii, dtype=np.float64)
    ax.plot(r, np.asarray(profile, dtype=np.float64), marker="o", ms=3, label=label, **kw)
    ax.set_xlabel("radius (pixels)")
    ax.set_ylabel(f"mean intensity ({units})" if units else "mean intensity")
    ax.set_title(title)
    if q is not None:
        qa = np.asarray(q, dtype=np.float64)
        if qa.size == r.size and r.size >= 2 and np.all(np.diff(qa) > 0) and np.all(np.diff(r) > 0):
            sec = ax.secondary_xaxis("top", functions=q_axis_functions(r, qa))
            sec.set_xlabel("q (Å$^{-1}$)")
    ax.grid(alpha=0.3)
    return ax


def plot_correlation_map(corr, radii=None, *, ax=None, skip_zero_lag=True, title="Correlation", cmap="RdBu_r",
                         units="dimensionless"):
    """Correlation map (nq, nphi) against lag Δ in degrees (0..180) and radius.

    Each ring's mean over Δ is removed so that the angular structure shows; the zero-lag column (the shot-noise
    spike) is left out unless ``skip_zero_lag=False``.

    Parameters
    ----------
    corr : array_like, shape (nq, nphi)
        Correlation of each ring at lags Δ = 2πk/nphi.
    radii : array_like, shape (nq,), optional
        Radius of each row in pixels.
    ax : matplotlib Axes, optional
        Axes to draw into (default: a new figure).
    skip_zero_lag : bool
        Leave out Δ = 0.
    title : str
        Axes title.
    cmap : str
        Diverging matplotlib colormap.
    units : str
        Unit of the correlation values, shown on the colour bar (e.g. "dimensionless" for normalised correlations,
        "counts²" for raw ones).

    Returns
    -------
    matplotlib.axes.Axes
    """
    _mpl()
    c = _float_2d(corr, "corr", "(nq, nphi)")
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
    ax.figure.colorbar(im, ax=ax, label=r"$C - \langle C \rangle_{\Delta}$" + (f" ({units})" if units else ""))
    ax.set_xlabel("Δ (degrees)")
    ax.set_ylabel("radius (pixels)")
    ax.set_title(title)
    return ax


def plot_cos_psi(curves: Dict[str, np.ndarray], cos_psi, *, ax=None, skip_zero_lag=True, normalize=True,
                 title="Angular correlation against cos ψ"):
    """Correlation curves (each (nphi,)) against cos ψ (nphi,), for lags 0..180°.

    Parameters
    ----------
    curves : dict of str to array_like
        Label -> curve of shape (nphi,), e.g. ``{"raw": ..., "difference": ...}``.
    cos_psi : array_like, shape (nphi,)
        cos ψ at each lag (:func:`xcca.cos_psi`).
    ax : matplotlib Axes, optional
        Axes to draw into (default: a new figure).
    skip_zero_lag : bool
        Leave out the zero-lag point (shot noise).
    normalize : bool
        Remove each curve's mean over Δ and scale it to unit maximum modulus, so that curves of different
        magnitude compare.
    title : str
        Axes title.

    Returns
    -------
    matplotlib.axes.Axes
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
    """A four-panel overview of an analysis result: mean polar image, radial profile, difference-correlation map,
    and raw vs difference correlation of one ring against cos ψ (or cos Δ without cos ψ).

    Parameters
    ----------
    result : xcca.AnalysisResult
        What :func:`xcca.analyze` returned (or ``AnalysisResult.read(path)``).
    ring : float, optional
        Radius in pixels of the ring shown against cos ψ (default: the pairing ring).
    figsize : (float, float)
        Figure size in inches.

    Returns
    -------
    matplotlib.figure.Figure
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
    """Write the LOKI-tutorial figures of a result into a directory.

    Parameters
    ----------
    result : xcca.AnalysisResult
        The analysis result.
    out_dir : str or Path
        Directory (created if needed): ``polar_image.png``, ``radial_profile.png``, ``correlation_map.png``,
        ``correlation_cos_psi.png`` and ``overview.png`` are written there (each atomically).
    ring : float, optional
        Radius in pixels of the ring shown against cos ψ (default: the pairing ring).
    dpi : int
        Resolution of the PNG files.

    Returns
    -------
    list of Path
        The written files.
    """
    Figure = _mpl()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []

    def save(fig, name):
        p = out / name
        save_figure(fig, p, dpi=dpi)
        paths.append(p)

    ax = plot_polar(result.mean_polar, result.radii, title="Mean polar image")
    save(ax.figure, "polar_image.png")
    ax = plot_radial_profile(result.radii, result.radial_profile, q=result.q)
    save(ax.figure, "radial_profile.png")
    fig = Figure(figsize=(11, 4), layout="constrained")
    a1, a2 = fig.subplots(1, 2)
    plot_correlation_map(result.raw_correlation, result.radii, ax=a1, title="Raw correlation (mean of shots)",
                         units="dimensionless, ÷⟨I⟩²")
    plot_correlation_map(result.difference_correlation_norm, result.radii, ax=a2,
                         title="Difference correlation (pairs)", units="dimensionless, ÷⟨I⟩²")
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


def save_figure(fig, path: Union[str, Path], *, dpi: int = 110, inputs=None) -> Path:
    """Save a figure atomically (temporary file renamed into place), never over an input file.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure.
    path : str or Path
        Output file; the format follows its suffix (.png, .pdf, .svg, ...).
    dpi : int
        Resolution for raster formats.
    inputs : path-like or sequence of them, optional
        Files the figure was made from: `path` must not be one of them.

    Returns
    -------
    Path
        `path`.
    """
    from .files import atomic_write

    path = Path(path)
    with atomic_write(path, inputs=inputs) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".").lower() or "png")
    return path


def plot_ring_fit(image, center, radius, *, mask=None, points=None, ax=None, title="Bragg ring fit", units="counts"):
    """A detector image with the fitted Bragg ring and centre drawn on it (the first step of the LOKI tutorial).

    Parameters
    ----------
    image : array_like, shape (H, W)
        Detector image (e.g. the mean frame).
    center : (float, float)
        Fitted beam centre (x, y) in pixels (x = column).
    radius : float
        Fitted ring radius in pixels.
    mask : array_like of bool, optional
        True = valid pixel (LOKI's convention); invalid pixels are shown in grey.
    points : array_like, shape (n, 2), optional
        The (x, y) points the circle was fitted to.
    ax : matplotlib Axes, optional
        Axes to draw into (default: a new figure).
    title : str
        Axes title.
    units : str
        Unit of the intensities (colour bar).

    Returns
    -------
    matplotlib.axes.Axes
    """
    _mpl()
    img = _float_2d(image, "image", "(H, W)", mask)
    fin = img[np.isfinite(img)]
    lo, hi = (np.percentile(fin, (1, 99.7)) if fin.size else (0, 1))
    ax = _axes(ax, figsize=(5.6, 4.8))
    import matplotlib

    cm = matplotlib.colormaps["magma"].with_extremes(bad="0.6")
    im = ax.imshow(np.ma.masked_invalid(img), origin="upper", cmap=cm, vmin=lo, vmax=hi, interpolation="nearest")
    ax.figure.colorbar(im, ax=ax, label=f"intensity ({units})" if units else "intensity")
    cx, cy = center
    t = np.linspace(0, 2 * np.pi, 721)
    ax.plot(cx + radius * np.cos(t), cy + radius * np.sin(t), color="cyan", lw=1.0,
            label=f"fit: r = {radius:.2f} px")
    ax.plot([cx], [cy], marker="+", ms=12, color="cyan", mew=1.5, ls="none",
            label=f"centre ({cx:.2f}, {cy:.2f})")
    if points is not None:
        pts = np.asarray(points, dtype=np.float64)
        ax.plot(pts[:, 0], pts[:, 1], ".", ms=1, color="lime", alpha=0.5, label="fitted points")
    ax.set_xlim(-0.5, img.shape[1] - 0.5)
    ax.set_ylim(img.shape[0] - 0.5, -0.5)
    ax.set_xlabel("x (pixels)")
    ax.set_ylabel("y (pixels)")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize="small")
    return ax


def plot_mean_rings(phi, curves: Dict[str, np.ndarray], *, fits: Optional[Dict[str, np.ndarray]] = None, ax=None,
                    title="Bragg ring", units="counts"):
    """Ring intensities against φ, optionally with their fitted periodic (Chebyshev) profiles.

    Parameters
    ----------
    phi : array_like, shape (nphi,)
        Angles in radians.
    curves : dict of str to array_like
        Label -> ring intensity (nphi,), NaN where masked (e.g. one shot's ring, the mean ring, the mean
        difference ring).
    fits : dict of str to array_like, optional
        Label -> fitted profile (nphi,) drawn as lines over the data.
    ax : matplotlib Axes, optional
        Axes to draw into (default: a new figure).
    title : str
        Axes title.
    units : str
        Unit of the intensities (y axis).

    Returns
    -------
    matplotlib.axes.Axes
    """
    _mpl()
    deg = np.degrees(np.asarray(phi, dtype=np.float64))
    ax = _axes(ax, figsize=(7.0, 3.6))
    for label, c in curves.items():
        c = np.asarray(c, dtype=np.float64)
        if c.shape != deg.shape:
            raise ValueError(f"curve {label!r} has shape {c.shape}, phi {deg.shape}")
        ax.plot(deg, c, ".", ms=2.5, label=label)
    for label, c in (fits or {}).items():
        ax.plot(deg, np.asarray(c, dtype=np.float64), "-", lw=1.4, label=label)
    ax.set_xlim(0, 360)
    ax.set_xlabel("φ (degrees)")
    ax.set_ylabel(f"intensity ({units})" if units else "intensity")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return ax


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
