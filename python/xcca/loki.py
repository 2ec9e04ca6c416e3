"""LOKI-compatible API: existing LOKI scripts switch to xcca by changing their import lines.

Each class and function reproduces LOKI's signature and return values (Python 3); every deliberate difference is
documented in its docstring. Masks: True = valid pixel, as in LOKI.
"""
from __future__ import annotations

import numpy as np

__all__: list[str] = []


# ===== InterpSimple (issue 3) =====

__all__ += ["InterpSimple"]


class InterpSimple:
    """LOKI's ``RingData.InterpSimple``: nearest-neighbour polar images by a precomputed flat-index gather.

    Reproduces LOKI bit for bit: angles ``phis_ring = arange(nphi) * 2 * pi / nphi``, radii
    ``arange(qRmin, qRmax)``, sample positions ``x = r cos(phi - pi) + a`` (column) and ``y = r sin(phi - pi) + b``
    (row), and LOKI's rounding ``x.astype(int) + round_half_even(x - floor(x))``; :meth:`nearest` returns an array of
    the input's dtype, shape ``(qRmax - qRmin, nphi)``. For new code use :class:`xcca.PolarGrid` (exact nearest and
    bilinear sampling, masks, frame stacks, threads).

    Parameters
    ----------
    a, b : float
        Centre: ``a`` along columns (x, fast axis), ``b`` along rows (y), in pixels.
    qRmax, qRmin : float
        Radii ``np.arange(qRmin, qRmax)`` in pixels (note LOKI's argument order: max first).
    nphi : int
        Number of angles.
    raw_img_shape : (int, int)
        ``(Y, X)`` shape of the images.

    Notes
    -----
    Deliberate differences from LOKI:

    * Where LOKI would silently wrap around the image edge (a rounded column outside ``[0, X)``, which NumPy's flat
      indexing wraps into the neighbouring row or, when negative, from the end; or a row outside ``[0, Y)``), the
      constructor raises a ``ValueError`` naming the offending radius range instead.
    * :meth:`nearest` checks that the image has shape ``raw_img_shape`` (LOKI gathers from any array large enough).
    * LOKI's rounding truncates toward zero (``astype(int)``) before adding the rounded fraction, so for coordinates in
      ``(-1, 0)`` it picks column/row 1 or 0 rather than the nearest pixel; this is reproduced as is (it is LOKI's
      result, and no wrapping is involved).
    * Python 3; ``set_polar_tree`` / ``nearest_query`` (which read LOKI's external HDF5 neighbour files) are not
      provided. As in LOKI, the ``dtype`` and ``mask`` arguments of :meth:`nearest` are accepted and ignored.
    """

    def __init__(self, a, b, qRmax, qRmin, nphi, raw_img_shape):
        for name, v in (("a", a), ("b", b), ("qRmax", qRmax), ("qRmin", qRmin)):
            if isinstance(v, (bool, np.bool_)) or not np.isscalar(v) or not np.isreal(v) or not np.isfinite(v):
                raise ValueError(f"{name} must be a finite real number, got {v!r}")
        if isinstance(nphi, (bool, np.bool_)) or not isinstance(nphi, (int, np.integer)) or nphi <= 0:
            raise ValueError(f"nphi must be a positive integer, got {nphi!r}")
        try:
            Y, X = (int(n) for n in raw_img_shape)
        except (TypeError, ValueError):
            raise ValueError(f"raw_img_shape must be a pair (Y, X), got {raw_img_shape!r}") from None
        if Y <= 0 or X <= 0:
            raise ValueError(f"raw_img_shape must be positive, got {raw_img_shape!r}")
        self.x_center = a
        self.y_center = b
        self.qRmin = qRmin
        self.qRmax = qRmax
        self.raw_shape = raw_img_shape
        self.phis_ring = np.arange(nphi) * 2 * np.pi / nphi  # LOKI's expression and operation order
        self.num_phis_ring = nphi
        self.X = X  # fast dimension
        self.Y = Y  # slow dimension
        radii = np.arange(qRmin, qRmax)
        if radii.size == 0:
            raise ValueError(f"no radii: np.arange(qRmin={qRmin}, qRmax={qRmax}) is empty")
        if radii[0] < 0:
            raise ValueError(f"radii must be >= 0, got qRmin={qRmin}")
        self.Q = np.repeat(radii.astype(np.float64)[:, None], nphi, axis=1)
        self.PHI = np.repeat(self.phis_ring[None, :], radii.size, axis=0)
        self.xring = self.Q * np.cos(self.PHI - np.pi) + self.x_center
        self.yring = self.Q * np.sin(self.PHI - np.pi) + self.y_center
        self.xring_near = self.xring.astype(int) + np.round(self.xring - np.floor(self.xring)).astype(int)
        self.yring_near = self.yring.astype(int) + np.round(self.yring - np.floor(self.yring)).astype(int)
        bad = ((self.xring_near < 0) | (self.xring_near >= X) | (self.yring_near < 0) | (self.yring_near >= Y))
        if bad.any():
            rows = np.flatnonzero(bad.any(axis=1))
            raise ValueError(
                f"InterpSimple: samples at radii {radii[rows[0]]}..{radii[rows[-1]]} fall outside the "
                f"{Y}x{X} image (LOKI would silently wrap around the edge); reduce qRmax or fix the centre, or "
                "use xcca.PolarGrid, which marks such samples invalid")
        self.indices_1d = X * self.yring_near + self.xring_near  # 'C' ordering

    def nearest(self, data_img, dtype=np.float32, mask=None):
        """Polar image ``(qRmax - qRmin, nphi)`` of ``data_img`` (same dtype as the input).

        ``dtype`` and ``mask`` are ignored, as in LOKI. Raises ValueError if the image is not ``raw_img_shape``.
        """
        data = np.asarray(data_img)
        if data.shape != (self.Y, self.X):
            raise ValueError(f"data_img must have shape {(self.Y, self.X)}, got {data.shape}")
        return np.take(data.ravel(), self.indices_1d)


# ===== DiffCorr (issue 4) =====


# ===== fit_periodic, pair_fits, is_outlier, remove_peaks (issue 5) =====


# ===== RingFit (issue 6) =====
