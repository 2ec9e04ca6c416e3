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

import logging
import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

__all__ = ["RingFitResult", "fit_ring", "select_ring_pixels", "fit_circle_points", "RingFitError"]

_log = logging.getLogger(__name__)


class RingFitError(ValueError):
    """The circle fit failed (too few pixels, degenerate geometry or no convergence).

    Parameters
    ----------
    message : str
        What went wrong.
    residual : float
        The last sum of squared geometric distances, kept as ``.residual`` (NaN if no fit was attempted).
    """

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
    """

    center: Tuple[float, float]
    radius: float
    residual: float
    n_points: int
    rms: float
    n_iter: int
    mean_intensity: float
    points: np.ndarray

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
    # Work only on the annulus's bounding box: the selection is O(box), not O(image).
    y0, y1 = max(0, int(math.floor(cy - r_out))), min(h, int(math.ceil(cy + r_out)) + 1)
    x0, x1 = max(0, int(math.floor(cx - r_out))), min(w, int(math.ceil(cx + r_out)) + 1)
    box = img[y0:y1, x0:x1].astype(np.float64, copy=False)
    dy2 = (np.arange(y0, y1, dtype=np.float64) - cy) ** 2
    dx2 = (np.arange(x0, x1, dtype=np.float64) - cx) ** 2
    d2 = dy2[:, None] + dx2[None, :]
    sel = (d2 <= r_out * r_out) & np.isfinite(box)
    if r_in > 0:
        sel &= d2 >= r_in * r_in
    if mask is not None:
        sel &= mask[y0:y1, x0:x1]
    rows, cols = np.nonzero(sel)
    vals = box[rows, cols]
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
    return (cols + x0).astype(np.float64), (rows + y0).astype(np.float64), vals


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

    Algebraic (Kasa) start unless ``start = (x, y, r)`` is given, then Levenberg-Marquardt on ``(x, y, r)``.

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
    x = np.ascontiguousarray(x, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("x and y must be 1-D arrays of equal length")
    if x.size < 3:
        raise RingFitError(f"need at least 3 points for a circle, got {x.size}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("points must be finite")
    # Work relative to the centroid: keeps the normal equations well conditioned for detector-sized coordinates.
    mx, my = x.mean(), y.mean()
    u, v = x - mx, y - my
    if start is None:
        a, b, r = _kasa(u, v)
    else:
        a, b, r = float(start[0]) - mx, float(start[1]) - my, float(start[2])
    n = float(x.size)

    def cost_and_parts(a, b, r):
        du, dv = u - a, v - b
        d = np.sqrt(du * du + dv * dv)
        np.maximum(d, 1e-300, out=d)
        f = d - r
        return float(f @ f), du, dv, d, f

    cost, du, dv, d, f = cost_and_parts(a, b, r)
    lam = 1e-3
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        c, s = du / d, dv / d
        # J = [-c, -s, -1]; JᵀJ and Jᵀf from dot products (no (n, 3) temporaries).
        scc, sss, scs = c @ c, s @ s, c @ s
        sc, ss = c.sum(), s.sum()
        jtj = np.array([[scc, scs, sc], [scs, sss, ss], [sc, ss, n]])
        jtf = -np.array([c @ f, s @ f, f.sum()])
        while True:
            lhs = jtj + lam * np.diag(np.diag(jtj))
            try:
                step = np.linalg.solve(lhs, -jtf)
            except np.linalg.LinAlgError:
                raise RingFitError(
                    "degenerate point set (collinear pixels?): singular normal equations", residual=cost
                ) from None
            na, nb, nr = a + step[0], b + step[1], r + step[2]
            new = cost_and_parts(na, nb, nr)
            if new[0] <= cost:
                break
            lam *= 10.0
            if lam > 1e12:
                break
        if new[0] > cost:  # no step decreases the cost: we sit at the minimum up to rounding
            converged = True
            break
        small = float(np.abs(step).max()) <= tol * (1.0 + abs(nr))
        flat = cost - new[0] <= 1e-15 * max(cost, 1e-300)
        a, b, r = na, nb, nr
        cost, du, dv, d, f = new
        lam = max(lam / 10.0, 1e-12)
        if small or flat:
            converged = True
            break
    if not converged or not np.isfinite(cost):
        raise RingFitError(
            f"circle fit did not converge in {max_iter} iterations (residual {cost:.6g})", residual=cost
        )
    if r < 0:  # the model is symmetric in the sign of r
        r = -r
    return a + mx, b + my, r, cost, it


def fit_ring(
    image,
    guess: Sequence[float],
    mask=None,
    width: float = 20,
    n_points: int = 5000,
    *,
    n_iter: int = 1,
    max_iter: int = 100,
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

    Returns
    -------
    RingFitResult
        ``.center`` (x, y), ``.radius``, ``.residual`` (sum of squared geometric distances), ``.n_points``, ...

    Raises
    ------
    ValueError
        Bad arguments, or a guess centre outside the image.
    RingFitError
        (a ValueError) too few valid pixels, degenerate geometry or no convergence; the message and ``.residual``
        carry the residual.

    Examples
    --------
    >>> res = fit_ring(img, guess=(150, 150, 52), mask=mask)   # doctest: +SKIP
    >>> res.center, res.radius                                  # doctest: +SKIP
    """
    if int(n_iter) != n_iter or n_iter < 1:
        raise ValueError(f"n_iter must be an integer >= 1, got {n_iter}")
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
    _log.debug("fit_ring: centre (%.4f, %.4f), radius %.4f, rms %.4g px, %d points",
               res.center[0], res.center[1], res.radius, res.rms, res.n_points)
    return res
