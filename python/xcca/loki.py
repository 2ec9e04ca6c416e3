"""LOKI-compatible API: existing LOKI scripts switch to xcca by changing their import lines.

Each class and function reproduces LOKI's signature and return values (Python 3); every deliberate difference is
documented in its docstring. Masks: True = valid pixel, as in LOKI.
"""
from __future__ import annotations

import numpy as np

__all__: list[str] = []


# ===== InterpSimple (issue 3) =====


# ===== DiffCorr (issue 4) =====


# ===== fit_periodic, pair_fits, is_outlier, remove_peaks (issue 5) =====


# ===== RingFit (issue 6) =====
from .ringfit import RingFitError as _RingFitError  # noqa: E402
from .ringfit import fit_circle_points as _fit_circle_points  # noqa: E402


class RingFit:
    """LOKI's ``RingData.RingFit``: fit a circle to a powder ring to find the beam centre.

    ``RingFit(img).fit_circle(beta_i, num_fitting_pts=5000, ring_width=20, num_high_pix=20)`` returns LOKI's
    ``(beta_fit, residual, mean_intens)``: ``beta_fit = [x_center, y_center, radius]`` (x along columns),
    ``residual = sum((R_i - r)**2)`` over the fitted pixels and the mean intensity of those pixels.

    The pixel selection is LOKI's, step for step: pixels outside ``beta_i[2] ± ring_width/2`` are zeroed; then
    LOKI's ``_remove_highest`` zeroes the ``num_high_pix`` entries that come *first* in an ascending argsort (despite
    its name these are the lowest values, so it only matters for images with negative pixels; reproduced as is so
    that results match LOKI); then the ``num_fitting_pts`` largest pixels (NumPy's default argsort, reversed, as LOKI)
    are fitted. The implicit-model ``scipy.odr`` fit of LOKI minimises the sum of squared orthogonal distances to the
    circle; here the same geometric least-squares problem is solved by :func:`xcca.ringfit.fit_circle_points`
    (Levenberg-Marquardt from ``beta_i``), which agrees with ODR to its convergence tolerance and does not depend on
    the deprecated ``scipy.odr``.

    Deliberate differences from LOKI:

    - When the annulus holds no more than ``num_fitting_pts`` positive pixels LOKI keeps ``num_pts / 2`` of them,
      which is a float in Python 3 and crashes the slice; here it is ``num_pts // 2``.
    - Fewer than 3 usable pixels, or a fit that does not converge, raise :class:`xcca.ringfit.RingFitError`
      (a ValueError carrying the residual) instead of returning ODR's unconverged parameters.
    - ``fit_circle`` always returns the triple (the ``return_mean`` flag of older LOKI versions is accepted and
      ignored); ``fit_circle_fast`` is the same method. Ellipse fits and ``fit_circle_slow`` are not provided.
    - There is no mask argument (as in LOKI): zero the invalid pixels of ``img`` first, or use :func:`xcca.fit_ring`,
      which takes a mask (True = valid pixel).
    """

    def __init__(self, img):
        img = np.array(img, copy=True)
        if img.ndim != 2 or img.size == 0:
            raise ValueError(f"img must be a non-empty 2-D array, got shape {img.shape}")
        if not (np.issubdtype(img.dtype, np.integer) or np.issubdtype(img.dtype, np.floating)):
            raise TypeError(f"img must have a real numeric dtype, got {img.dtype}")
        self.img = img
        self.y, self.x = np.indices(img.shape)
        self.x1D = self.x.ravel()
        self.y1D = self.y.ravel()

    def _prepare_fitting_framework(self, beta_i, num_high_pix, num_fitting_pts):
        self.img1D = np.copy(self.img.ravel())
        radius_value = np.sqrt((self.x1D - beta_i[0]) ** 2 + (self.y1D - beta_i[1]) ** 2)
        self.img1D[radius_value > beta_i[2] + self.ring_width / 2] = 0
        self.img1D[radius_value < beta_i[2] - self.ring_width / 2] = 0
        # LOKI's _remove_highest: the first num_high_pix of an ascending argsort (see the class docstring).
        self.img1D[np.argsort(self.img1D)[: int(num_high_pix)]] = 0
        num_pts = int(np.count_nonzero(self.img1D > 0))
        if num_fitting_pts >= num_pts:
            num_fitting_pts = num_pts // 2  # LOKI: num_pts / 2, a float slice index in Python 3
        if num_fitting_pts < 3:
            raise _RingFitError(
                f"only {num_pts} positive pixels in the ring r = {beta_i[2]} ± {self.ring_width / 2} around "
                f"({beta_i[0]}, {beta_i[1]}); cannot fit a circle"
            )
        self.fit_indices = np.argsort(self.img1D)[::-1][: int(num_fitting_pts)]
        self.pts = np.vstack([self.x1D[self.fit_indices], self.y1D[self.fit_indices]])

    def fit_circle(self, beta_i, num_fitting_pts=5000, ring_width=20, num_high_pix=20, return_mean=False):
        """Fit a circle to the ring near ``beta_i = (x_center, y_center, radius)``.

        Returns
        -------
        beta_fit : numpy.ndarray, shape (3,)
            ``[x_center, y_center, radius]``.
        residual : float
            ``sum((R_i - radius)**2)`` over the fitted pixels.
        mean_intens : scalar
            Mean intensity of the fitted pixels.
        """
        beta_i = np.asarray(beta_i, dtype=np.float64).ravel()
        if beta_i.size != 3 or not np.all(np.isfinite(beta_i)):
            raise ValueError(f"beta_i must be three finite numbers (x_center, y_center, radius), got {beta_i}")
        if not ring_width > 0:
            raise ValueError(f"ring_width must be > 0, got {ring_width}")
        self.ring_width = ring_width
        self._prepare_fitting_framework(beta_i, num_high_pix, num_fitting_pts)
        x, y = self.pts[0].astype(np.float64), self.pts[1].astype(np.float64)
        a, b, r, _, _ = _fit_circle_points(x, y, start=beta_i)
        self.beta_fit = np.array([a, b, r])
        ri = np.sqrt((x - a) ** 2 + (y - b) ** 2)
        self.residual = np.sum((ri - r) ** 2)
        mean_intens = self.img1D[self.fit_indices].mean()
        return self.beta_fit, self.residual, mean_intens

    fit_circle_fast = fit_circle


__all__ += ["RingFit"]
