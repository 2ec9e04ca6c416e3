"""Geometric (orthogonal-distance) fit of an axis-aligned ellipse: the problem of LOKI's RingFit.fit_ellipse."""
from __future__ import annotations

import numpy as np

from ..ringfit import RingFitError


def _foot(u, v, rx, ry, t):
    """Parameter t of the closest point (rx cos t, ry sin t) to each (u, v) by Newton's method from t."""
    d = rx * rx - ry * ry
    for _ in range(50):
        c, s = np.cos(t), np.sin(t)
        g = d * s * c - u * rx * s + v * ry * c  # derivative of half the squared distance, negated
        h = d * (c * c - s * s) - u * rx * c - v * ry * s
        h = np.where(np.abs(h) < 1e-300, -1e-300, h)
        step = g / h
        t = t - step
        if np.max(np.abs(step)) < 1e-13:
            break
    return t


def fit_ellipse_points(x, y, start, *, max_iter=200):
    """Minimise the sum of squared orthogonal distances of points (x, y) to the ellipse
    ``(x - xc)^2 / rx^2 + (y - yc)^2 / ry^2 = 1``, from ``start = (xc, yc, rx, ry)``; returns the fitted four."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.size < 4:
        raise RingFitError(f"need at least 4 points for an ellipse, got {x.size}")
    beta = np.asarray(start, dtype=np.float64).copy()
    t = np.arctan2((y - beta[1]) * beta[2], (x - beta[0]) * beta[3])

    def residuals(b, t0):
        u, v = x - b[0], y - b[1]
        tt = _foot(u, v, b[2], b[3], t0)
        c, s = np.cos(tt), np.sin(tt)
        px, py = u - b[2] * c, v - b[3] * s
        nx, ny = c / b[2], s / b[3]
        nrm = np.hypot(nx, ny)
        nx, ny = nx / nrm, ny / nrm
        dist = px * nx + py * ny  # signed distance along the outward normal at the foot point
        # envelope theorem: d(dist)/d(beta) = -n . dP/d(beta) at fixed foot parameter
        jac = np.stack([-nx, -ny, -nx * c, -ny * s], axis=1)
        return dist, jac, tt

    r, jac, t = residuals(beta, t)
    cost = float(r @ r)
    lam = 1e-3
    for _ in range(max_iter):
        jtj = jac.T @ jac
        g = jac.T @ r
        while True:
            try:
                step = np.linalg.solve(jtj + lam * np.diag(np.diag(jtj)), -g)
            except np.linalg.LinAlgError:
                raise RingFitError("degenerate point set: singular ellipse normal equations") from None
            nb = beta + step
            if nb[2] > 0 and nb[3] > 0:
                nr, njac, nt = residuals(nb, t)
                ncost = float(nr @ nr)
                if ncost <= cost:
                    break
            lam *= 10
            if lam > 1e12:
                return beta
        small = np.max(np.abs(step)) <= 1e-12 * (1 + np.max(np.abs(nb[2:])))
        flat = cost - ncost <= 1e-15 * max(cost, 1e-300)
        beta, r, jac, t, cost = nb, nr, njac, nt, ncost
        lam = max(lam / 10, 1e-12)
        if small or flat:
            return beta
    raise RingFitError(f"ellipse fit did not converge in {max_iter} iterations (residual {cost:.6g})",
                       residual=cost)
