"""Beam-centre fit on a powder (Bragg) ring: LOKI's RingFit pixel selection with a fast geometric circle fit.

The selection follows LOKI's ``RingFit.fit_circle``: inside the annulus ``r - width/2 <= d <= r + width/2`` around
the guessed circle, keep the ``n_points`` brightest valid pixels (if the annulus holds no more than ``n_points``
candidates, keep the brighter half of them, as LOKI does). The circle is then fitted to those pixel centres by
geometric least squares -- minimising the sum of squared orthogonal distances ``sum_i (|p_i - c| - R)^2``, which is
what LOKI's implicit-model ``scipy.odr`` fit minimises -- starting from the algebraic (Kasa) circle and refined by
Levenberg-Marquardt on the three parameters. The refinement works on 3x3 normal equations, so one iteration costs a
few vector passes over the points, far less than a general-purpose ODR or ``least_squares`` solver.

Coordinates: ``x`` is the column (fast axis), ``y`` the row; pixel ``(row, col)`` has its centre at ``(x=col, y=row)``.
Masks: True = valid pixel (LOKI's convention).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

__all__ = ["RingFitResult", "fit_ring", "select_ring_pixels", "fit_circle_points", "ring_quality", "RingFitError",
           "RingFitWarning"]

_log = logging.getLogger(__name__)


class RingFitError(ValueError):
    """The circle fit failed (too few pixels, degenerate geometry or no convergence); ``.residual`` holds the last
    sum of squared geometric distances (NaN if no fit was attempted)."""

    def __init__(self, message: str, residual: float = float("nan")):
        super().__init__(message)
        self.residual = residual


@dataclass(frozen=True)
class RingFitResult:
    """Result of :func:`fit_ring`.

    Attributes
    ----------
    center : tuple of float
        Fitted ring centre ``(x, y)`` in pixels (x along columns, y along rows).
    radius : float
        Fitted ring radius in pixels.
    residual : float
        Sum of squared geometric distances ``sum_i (|p_i - c| - R)^2`` of the fitted pixels (LOKI's residual).
    n_points : int
        Number of pixels used in the final fit.
    rms : float
        Root-mean-square geometric distance, ``sqrt(residual / n_points)``.
    n_iter : int
        Levenberg-Marquardt iterations of the final fit.
    mean_intensity : float
        Mean intensity of the fitted pixels (LOKI's ``mean_intens``).
    points : numpy.ndarray
        ``(n_points, 2)`` float64 array of the fitted pixel coordinates ``(x, y)``.
    ring_fraction : float
        Fit quality: the fraction of the fitted circle's angular sectors (36, those with enough valid pixels) in
        which the image is significantly brighter on the circle (within ``max(1, width/8)`` px) than beside it
        (``0.6 width`` to ``width`` px off): about 1 for a real ring, near 0 when the selection only followed the
        annulus of a guess with no ring (see ``min_ring_fraction`` of :func:`fit_ring`).
    contrast : float
        Mean intensity on the circle over the mean beside it (same samples).
    """

    center: Tuple[float, float]
    radius: float
    residual: float
    n_points: int
    rms: float
    n_iter: int
    mean_intensity: float
    points: np.ndarray
    ring_fraction: float = float("nan")
    contrast: float = float("nan")

    @property
    def beta(self) -> np.ndarray:
        """``[x, y, r]`` as a float64 array (LOKI's ``beta_fit`` layout)."""
        return np.array([self.center[0], self.center[1], self.radius])


def _as_image(image) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"image must be 2-D (H, W), got shape {img.shape}")
    if img.size == 0:
        raise ValueError("image is empty")
    if not (np.issubdtype(img.dtype, np.integer) or np.issubdtype(img.dtype, np.floating) or img.dtype == bool):
        raise TypeError(f"image must have a real numeric dtype, got {img.dtype}")
    return img


def _as_guess(guess) -> Tuple[float, float, float]:
    try:
        g = np.asarray(guess, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise TypeError(f"guess must be three numbers (x, y, r), got {guess!r}") from None
    if g.size != 3:
        raise ValueError(f"guess must be three numbers (x, y, r), got {g.size}")
    if not np.all(np.isfinite(g)):
        raise ValueError(f"guess must be finite, got {tuple(g)}")
    if g[2] <= 0:
        raise ValueError(f"guess radius must be > 0, got {g[2]}")
    return float(g[0]), float(g[1]), float(g[2])


def select_ring_pixels(
    image,
    guess: Sequence[float],
    mask=None,
    width: float = 20,
    n_points: int = 5000,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LOKI's RingFit pixel selection: the brightest valid pixels in an annulus.

    Parameters
    ----------
    image : array_like, shape (H, W)
        Detector image (any real dtype).
    guess : (x, y, r)
        Guessed centre (x along columns, y along rows) and radius, in pixels.
    mask : array_like of bool, shape (H, W), optional
        True = valid pixel. Non-finite pixels are always excluded.
    width : float
        Annulus width: pixels with ``r - width/2 <= d <= r + width/2`` are candidates.
    n_points : int
        Number of pixels to keep. When the annulus holds ``n_points`` candidates or fewer, the brighter half is kept
        (LOKI's rule, so the selection still prefers the ring over its background).

    Returns
    -------
    x, y : numpy.ndarray of float64
        Coordinates of the selected pixel centres.
    values : numpy.ndarray of float64
        Their intensities.
    """
    img = _as_image(image)
    cx, cy, r = _as_guess(guess)
    if not np.isfinite(width) or width <= 0:
        raise ValueError(f"width must be > 0, got {width}")
    if int(n_points) != n_points or n_points < 3:
        raise ValueError(f"n_points must be an integer >= 3, got {n_points}")
    n_points = int(n_points)
    h, w = img.shape
    if not (-0.5 <= cx < w - 0.5 and -0.5 <= cy < h - 0.5):
        raise ValueError(f"guess centre ({cx}, {cy}) is outside the image of shape {img.shape}")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != img.shape:
            raise ValueError(f"mask must have the image's shape {img.shape}, got {mask.shape}")
        if mask.dtype != bool:
            raise TypeError(f"mask must be boolean (True = valid), got {mask.dtype}")
    r_in, r_out = r - width / 2.0, r + width / 2.0
    rows, cols = _annulus_pixels(h, w, cx, cy, r_in, r_out)
    vals = img[rows, cols].astype(np.float64, copy=False)
    keep = np.isfinite(vals)
    if mask is not None:
        keep &= mask[rows, cols]
    if not keep.all():
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
    n_cand = vals.size
    n = n_points if n_points < n_cand else n_cand // 2
    if n < 3:
        raise RingFitError(
            f"only {n_cand} valid pixels in the annulus r = {r_in:.6g}..{r_out:.6g} around ({cx:.6g}, {cy:.6g}); "
            "need at least 6 (check the guess, width and mask)"
        )
    if n < n_cand:
        top = np.argpartition(vals, n_cand - n)[n_cand - n:]
        rows, cols, vals = rows[top], cols[top], vals[top]
    return cols.astype(np.float64), rows.astype(np.float64), vals


def _annulus_pixels(h: int, w: int, cx: float, cy: float, r_in: float, r_out: float) -> Tuple[np.ndarray, np.ndarray]:
    """Row-major (rows, cols) of the pixels with ``r_in^2 <= d^2 <= r_out^2`` (``d^2 >= r_in^2`` only if r_in > 0).

    O(annulus), not O(bounding box): each row's one or two column runs are computed analytically (widened by a
    pixel against rounding of the square roots) and only those pixels are tested exactly.
    """
    y0, y1 = max(0, int(math.ceil(cy - r_out)) - 1), min(h, int(math.floor(cy + r_out)) + 2)
    if y1 <= y0:
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    ys = np.arange(y0, y1)
    dy2 = (ys - cy) ** 2
    a = np.sqrt(np.maximum(r_out * r_out - dy2, 0.0))
    lo = np.clip(np.floor(cx - a) - 1, 0, w).astype(np.intp)
    hi = np.clip(np.ceil(cx + a) + 2, 0, w).astype(np.intp)
    hi = np.maximum(hi, lo)
    if r_in > 0:
        bb = np.sqrt(np.maximum(r_in * r_in - dy2, 0.0))
        hole = dy2 < r_in * r_in
        h_lo = np.where(hole, np.ceil(cx - bb) + 1, 0).astype(np.intp)  # columns surely inside the hole
        h_hi = np.where(hole, np.floor(cx + bb), 0).astype(np.intp)
        h_lo = np.clip(h_lo, lo, hi)
        h_hi = np.clip(h_hi, h_lo, hi)
        starts = np.stack([lo, h_hi], axis=1).ravel()
        ends = np.stack([h_lo, hi], axis=1).ravel()
        seg_rows = np.repeat(ys, 2)
    else:
        starts, ends, seg_rows = lo, hi, ys
    lens = ends - starts
    total = int(lens.sum())
    rows = np.repeat(seg_rows, lens)
    offs = np.repeat(starts - (np.cumsum(lens) - lens), lens)
    cols = offs + np.arange(total)
    d2 = (cols - cx) ** 2 + (rows - cy) ** 2
    sel = d2 <= r_out * r_out
    if r_in > 0:
        sel &= d2 >= r_in * r_in
    return rows[sel], cols[sel]


def _kasa(x: np.ndarray, y: np.ndarray) -> Tuple[float, float, float]:
    """Algebraic circle (Kasa): least squares of x^2 + y^2 = 2 a x + 2 b y + c, on centred coordinates."""
    mx, my = x.mean(), y.mean()
    u, v = x - mx, y - my
    z = u * u + v * v
    # Normal equations from moments (u, v are centred so the system is well conditioned; an SVD of the (n, 3)
    # design matrix would cost more than the whole refinement).
    n = float(u.size)
    suu, svv, suv = u @ u, v @ v, u @ v
    su, sv = u.sum(), v.sum()
    m = np.array([[suu, suv, su], [suv, svv, sv], [su, sv, n]])
    rhs = np.array([u @ z, v @ z, z.sum()])
    try:
        sol = np.linalg.solve(m, rhs)
    except np.linalg.LinAlgError:
        raise RingFitError("degenerate point set (collinear or coincident pixels): no algebraic circle") from None
    a, b = sol[0] / 2.0, sol[1] / 2.0
    r2 = sol[2] + a * a + b * b
    if not np.isfinite(r2) or r2 <= 0:
        raise RingFitError("degenerate point set: no algebraic circle through the selected pixels")
    return a + mx, b + my, math.sqrt(r2)


def fit_circle_points(
    x, y, start: Optional[Sequence[float]] = None, *, max_iter: int = 100, tol: float = 1e-12
) -> Tuple[float, float, float, float, int]:
    """Geometric least-squares circle through points: minimise ``sum_i (|p_i - c| - R)^2``.

    Algebraic (Kasa) start unless ``start = (x, y, r)`` is given, then Levenberg-Marquardt on ``(x, y, r)``, in the
    C++ core (``xcca._core.circle_fit``; :func:`xcca.reference.fit_circle_points` is the NumPy specification).

    Parameters
    ----------
    x, y : array_like
        Point coordinates (at least 3 points, not all collinear).
    start : (x, y, r), optional
        Starting circle.
    max_iter : int
        Iteration limit; not converging within it raises :class:`RingFitError` with the residual.
    tol : float
        Convergence when the step is below ``tol * (1 + R)`` or the cost stops decreasing in relative terms.

    Returns
    -------
    (cx, cy, r, residual, n_iter)
        ``residual`` is the sum of squared geometric distances.
    """
    from . import _core

    x = np.ascontiguousarray(x, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("x and y must be 1-D arrays of equal length")
    if x.size < 3:
        raise RingFitError(f"need at least 3 points for a circle, got {x.size}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("points must be finite")
    if int(max_iter) != max_iter or max_iter < 1:
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter}")
    st = None if start is None else np.asarray(start, dtype=np.float64).ravel()[:3]
    cx, cy, r, cost, it, status = _core.circle_fit(x, y, st, int(max_iter), float(tol))
    if status == 2:
        raise RingFitError("degenerate point set (collinear or coincident pixels): no circle", residual=cost)
    if status != 0:
        raise RingFitError(f"circle fit did not converge in {max_iter} iterations (residual {cost:.6g})",
                           residual=cost)
    return cx, cy, r, cost, it


def fit_ring(
    image,
    guess: Sequence[float],
    mask=None,
    width: float = 20,
    n_points: int = 5000,
    *,
    n_iter: int = 1,
    max_iter: int = 100,
    min_ring_fraction: float = 0.6,
    on_poor_fit: str = "raise",
) -> RingFitResult:
    """Fit the beam centre on a powder ring: LOKI's RingFit selection + geometric least-squares circle.

    Parameters
    ----------
    image : array_like, shape (H, W)
        Detector image, any real dtype (not modified).
    guess : (x, y, r)
        Guessed centre (x along columns, y along rows) and ring radius, in pixels. The centre must lie inside the
        image.
    mask : array_like of bool, shape (H, W), optional
        True = valid pixel (LOKI's convention). Non-finite pixels are always ignored.
    width : float, default 20
        Width of the annulus ``r - width/2 <= d <= r + width/2`` searched around the guess.
    n_points : int, default 5000
        Number of brightest annulus pixels fitted; if the annulus holds no more candidates than that, the brighter
        half of them is used (LOKI's rule).
    n_iter : int, default 1
        Maximum selection/fit rounds: each round after the first re-selects the annulus around the previous fit
        (stopping early once the centre moves less than 0.001 px). Use a few rounds when the guess is off by more
        than a small fraction of ``width``: an annulus off-centre on the ring truncates it and biases the fit.
    max_iter : int, default 100
        Levenberg-Marquardt iteration limit per fit.
    min_ring_fraction : float, default 0.6
        Refuse the fit when its ``ring_fraction`` (see :class:`RingFitResult`) is below this: a guess far from any
        ring otherwise returns a confident-looking circle that only follows the searched annulus. Real rings give
        0.8-1 on LOKI's image and on simulated ones, guesses off any ring 0-0.45. 0 disables the check.
    on_poor_fit : {"raise", "warn"}
        What a fit below ``min_ring_fraction`` does: raise :class:`RingFitError`, or warn (``RingFitWarning``) and
        return it.

    Returns
    -------
    RingFitResult
        ``.center`` (x, y), ``.radius``, ``.residual`` (sum of squared geometric distances), ``.n_points``, ...

    Raises
    ------
    ValueError
        Bad arguments, or a guess centre outside the image.
    RingFitError
        (a ValueError) too few valid pixels, degenerate geometry, no convergence, or no ring where the fit ended
        (``ring_fraction < min_ring_fraction``); the message and ``.residual`` carry the residual.

    Examples
    --------
    >>> res = fit_ring(img, guess=(150, 150, 52), mask=mask)   # doctest: +SKIP
    >>> res.center, res.radius                                  # doctest: +SKIP
    """
    if int(n_iter) != n_iter or n_iter < 1:
        raise ValueError(f"n_iter must be an integer >= 1, got {n_iter}")
    if on_poor_fit not in ("raise", "warn"):
        raise ValueError(f"on_poor_fit must be 'raise' or 'warn', got {on_poor_fit!r}")
    if not (isinstance(min_ring_fraction, (int, float, np.floating, np.integer)) and 0 <= min_ring_fraction <= 1):
        raise ValueError(f"min_ring_fraction must be a number in [0, 1], got {min_ring_fraction!r}")
    g = _as_guess(guess)
    img = _as_image(image)
    res = None
    for _ in range(int(n_iter)):
        x, y, vals = select_ring_pixels(img, g, mask, width, n_points)
        start = None if res is None else g
        cx, cy, r, cost, it = fit_circle_points(x, y, start, max_iter=max_iter)
        h, w = img.shape
        res = RingFitResult(
            center=(float(cx), float(cy)),
            radius=float(r),
            residual=float(cost),
            n_points=int(x.size),
            rms=math.sqrt(cost / x.size),
            n_iter=int(it),
            mean_intensity=float(vals.mean()),
            points=np.stack([x, y], axis=1),
        )
        if not (-0.5 <= cx < w - 0.5 and -0.5 <= cy < h - 0.5):
            raise RingFitError(
                f"fitted centre ({cx:.6g}, {cy:.6g}) lies outside the image of shape {img.shape} "
                f"(residual {cost:.6g}); check the guess",
                residual=cost,
            )
        moved = math.hypot(cx - g[0], cy - g[1])
        g = (cx, cy, r)
        if start is not None and moved < 1e-3:  # the selection no longer changes the fit
            break
    frac, contrast = ring_quality(img, mask, res.center, res.radius, width)
    res = dataclasses.replace(res, ring_fraction=frac, contrast=contrast)
    _log.debug("fit_ring: centre (%.4f, %.4f), radius %.4f, rms %.4g px, %d points, ring fraction %.2f",
               res.center[0], res.center[1], res.radius, res.rms, res.n_points, frac)
    if min_ring_fraction > 0 and not frac >= min_ring_fraction:
        msg = (f"no ring at the fitted circle: centre ({res.center[0]:.6g}, {res.center[1]:.6g}), radius "
               f"{res.radius:.6g} is brighter than its surroundings in only {frac:.0%} of its sectors (contrast "
               f"{contrast:.3g}; real rings give >= 80 %, min_ring_fraction={min_ring_fraction}); the guess "
               f"{tuple(float(v) for v in guess)} is probably far from any ring (check it and width={width})")
        if on_poor_fit == "raise":
            raise RingFitError(msg, residual=res.residual)
        warnings.warn(msg, RingFitWarning, stacklevel=2)
    return res


class RingFitWarning(UserWarning):
    """:func:`fit_ring` found no ring at the fitted circle (``on_poor_fit="warn"``)."""


def ring_quality(image, mask, center, radius, width, n_sectors: int = 36) -> Tuple[float, float]:
    """``(ring_fraction, contrast)`` of a circle on an image (see :class:`RingFitResult`).

    The image is sampled (nearest pixel, valid pixels only; mask True = valid) along the circle at 360 angles, at
    radial offsets within ``max(1, width/8)`` px ("on") and from ``0.6 width`` to ``width`` px on either side
    ("off"). A sector shows the ring when its mean "on" value exceeds its mean "off" value by 3 standard errors.
    """
    img = np.asarray(image)
    h, w = img.shape
    cx, cy = center
    inner = max(1.0, width / 8.0)
    on = np.linspace(-inner, inner, 3)
    off = np.array([-width, -0.8 * width, -0.6 * width, 0.6 * width, 0.8 * width, width])
    n_ang = 10 * n_sectors
    ang = (np.arange(n_ang) + 0.5) * (2 * np.pi / n_ang)
    sec = np.arange(n_ang) * n_sectors // n_ang

    def sample(offsets):
        rr = radius + offsets[None, :]
        x = np.rint(cx + rr * np.cos(ang)[:, None]).astype(np.intp)
        y = np.rint(cy + rr * np.sin(ang)[:, None]).astype(np.intp)
        ok = (x >= 0) & (x < w) & (y >= 0) & (y < h)
        xs, ys = np.where(ok, x, 0), np.where(ok, y, 0)
        v = img[ys, xs].astype(np.float64)
        ok &= np.isfinite(v)
        if mask is not None:
            ok &= np.asarray(mask)[ys, xs]
        srow = np.broadcast_to(sec[:, None], ok.shape)[ok]
        vals = v[ok]
        n = np.bincount(srow, minlength=n_sectors)
        s1 = np.bincount(srow, vals, minlength=n_sectors)
        s2 = np.bincount(srow, vals * vals, minlength=n_sectors)
        return n, s1, s2

    n_on, s_on, _ = sample(on)
    n_off, s_off, s2_off = sample(off)
    good = (n_on >= 3) & (n_off >= 3)
    if not good.any():
        return 0.0, float("nan")
    m_on = s_on[good] / n_on[good]
    m_off = s_off[good] / n_off[good]
    sd_off = np.sqrt(np.maximum(s2_off[good] / n_off[good] - m_off**2, 0.0))
    shows = m_on > m_off + 3.0 * sd_off / np.sqrt(n_on[good])
    tot_off = s_off.sum() / max(n_off.sum(), 1)
    contrast = float(s_on.sum() / max(n_on.sum(), 1) / tot_off) if tot_off != 0 else float("nan")
    return float(shows.mean()), contrast
