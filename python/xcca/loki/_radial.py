"""LOKI's ``RingData.RadialProfile`` and ``RingData.InterpCorr`` (Python 3 ports of LOKI's algorithms).

Masks: True = valid pixel (LOKI's convention).
"""
from __future__ import annotations

import logging

import numpy as np

__all__ = ["RadialProfile", "InterpCorr"]

_log = logging.getLogger(__name__)


def _check_center(center):
    try:
        cx, cy = (float(c) for c in center)
    except (TypeError, ValueError):
        raise ValueError(f"center must be a pair (x_center, y_center), got {center!r}") from None
    if not (np.isfinite(cx) and np.isfinite(cy)):
        raise ValueError(f"center must be finite, got {center!r}")
    return cx, cy


class RadialProfile:
    """LOKI's ``RingData.RadialProfile``: mean intensity per integer radius around a centre.

    Parameters
    ----------
    center : (float, float)
        ``(x_center, y_center)``: x along columns (fast axis), y along rows, in pixels.
    img_shape : (int, int)
        ``(Y, X)`` shape of the images (LOKI's default ``(2399, 2399)``).
    mask : array_like of bool, shape img_shape, optional
        True = valid pixel (LOKI's convention).
    minlength : int
        Minimum length of the profile (LOKI's default 1800).

    Notes
    -----
    As in LOKI, the radius of a pixel is ``int(sqrt((x - x_center)**2 + (y - y_center)**2))`` (truncated); bins
    without pixels give 0 (``np.nan_to_num`` of 0/0) and bins with only masked pixels a huge number
    (``nan_to_num(inf)``), exactly as LOKI. When the outermost radii hold only masked pixels LOKI fails (its count
    and sum arrays differ in length); here those bins give the huge number too. :meth:`update_center` recomputes radii and counts but, as in LOKI, not
    the sort order used by ``calculate2(how="fast_max")``. ``calculate_using_fetch`` (LOKI's RingFetch with its
    external index files) is not provided: use :class:`xcca.PolarGrid` rings and average them.
    """

    def __init__(self, center, img_shape=(2399, 2399), mask=None, minlength=1800):
        self.x_center, self.y_center = _check_center(center)
        try:
            shape = tuple(int(n) for n in img_shape)
        except (TypeError, ValueError):
            raise ValueError(f"img_shape must be a pair (Y, X), got {img_shape!r}") from None
        if len(shape) != 2 or min(shape) <= 0:
            raise ValueError(f"img_shape must be a pair of positive sizes, got {img_shape!r}")
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != shape:
                raise ValueError(f"mask must have shape img_shape = {shape}, got {mask.shape}")
            mask = mask.astype(bool)
        self.minlength = int(minlength)
        self.mask = mask
        self.img_shape = shape
        self.Y, self.X = np.indices(shape)
        self._set_R()
        self._set_normalization()
        self._sorted = None  # LOKI sorts the radii here; only calculate2(how="fast_max") needs it: done then
        self.wavelen = self.pixsize = self.detdist = self.factor = None

    def _set_R_sorted_idx(self):
        r1 = self.R.ravel()
        sort_idx = np.argsort(r1)
        rsort = r1[sort_idx]
        edges = np.nonzero(rsort[1:] - rsort[:-1] == 1)[0] + 1
        self._sorted = (r1, sort_idx, np.concatenate([[0], edges, [r1.size]]))

    def _get_sorted(self, i):
        if self._sorted is None:
            self._set_R_sorted_idx()
        return self._sorted[i]

    # LOKI's attributes of the sorted radii (of the centre given at construction, as LOKI).
    R1 = property(lambda self: self._get_sorted(0), doc="Radii of the constructor's centre, flattened.")
    sort_idx = property(lambda self: self._get_sorted(1), doc="``argsort(R1)``.")
    Rsort_bin_edge = property(lambda self: self._get_sorted(2), doc="Bin edges of the sorted radii.")

    def _set_R(self):
        self.R = np.sqrt((self.Y - self.y_center) ** 2 + (self.X - self.x_center) ** 2).astype(int)
        self.Rbins = np.arange(self.R.max() + 1)

    def _set_normalization(self):
        r = self.R.ravel() if self.mask is None else self.R[self.mask].ravel()
        # as long as the intensity sums (LOKI fails with a broadcast error when the outermost radii are masked)
        self.num_pixels_per_radial_bin = np.bincount(r, minlength=max(self.minlength, int(self.R.max()) + 1))

    def _img(self, img):
        a = np.asarray(img)
        if a.shape != self.img_shape:
            raise ValueError(f"img must have shape {self.img_shape}, got {a.shape}")
        return a

    def calculate(self, img):
        """Mean of ``img`` over the valid pixels per integer radius: LOKI's radial profile.

        Parameters
        ----------
        img : array_like, shape img_shape
            The image; pixels where the constructor's ``mask`` is False are excluded (True = valid pixel).

        Returns
        -------
        numpy.ndarray, shape (max(minlength, R.max() + 1),)
            Mean per radius; empty bins 0 and all-masked bins a huge number (``nan_to_num``), as in LOKI.

        Raises
        ------
        ValueError
            If ``img`` does not have shape ``img_shape`` (LOKI fails or broadcasts).
        """
        a = self._img(img)
        w = a.ravel() if self.mask is None else (self.mask * a).ravel()
        s = np.bincount(self.R.ravel(), weights=w, minlength=self.minlength)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.nan_to_num(s / self.num_pixels_per_radial_bin)

    def calculate2(self, img, how="mean", bins=None):
        """LOKI's ``calculate2``: mean or maximum intensity per radius.

        Parameters
        ----------
        img : array_like, shape img_shape
            The image.
        how : {"mean", "max", "fast_max"}, default "mean"
            "mean": as :meth:`calculate` (mask applied, True = valid); "max": ``scipy.stats.binned_statistic``
            maximum over ``bins``; "fast_max": maximum per integer radius from the radii sorted at construction
            (as in LOKI, not updated by :meth:`update_center`). The two maxima ignore the mask, as in LOKI.
        bins : int or array_like, optional
            Bins of "max" (default: the integer radii ``0 … R.max()``).

        Returns
        -------
        numpy.ndarray
            The profile, NaN (empty bins) replaced by 0 (``nan_to_num``).

        Raises
        ------
        ValueError
            For an unknown ``how`` or an image not of shape ``img_shape``.
        """
        a = self._img(img)
        if how == "mean":
            return self.calculate(a)
        if how == "max":
            from scipy.stats import binned_statistic

            res = binned_statistic(self.R.ravel(), values=a.ravel(), bins=self.Rbins if bins is None else bins,
                                   statistic="max")
            return np.nan_to_num(res.statistic)
        if how == "fast_max":
            _ = self.sort_idx  # built from the constructor's centre (LOKI does not update it either)
            flat = a.ravel()[self.sort_idx]
            e = self.Rsort_bin_edge
            return np.nan_to_num(np.maximum.reduceat(flat, e[:-1])[np.diff(e) > 0].astype(np.float64))
        raise ValueError(f"how must be 'mean', 'max' or 'fast_max', got {how!r}")

    def update_center(self, new_center):
        """Move the centre (recomputes radii and pixel counts, as LOKI).

        Parameters
        ----------
        new_center : (float, float)
            New ``(x_center, y_center)`` in pixels, x along columns.

        Returns
        -------
        None
        """
        self.x_center, self.y_center = _check_center(new_center)
        self._set_R()
        self._set_normalization()

    def set_params(self, wavelen, detdist, pixsize, factor):
        """Store LOKI's experiment parameters (stored as attributes only; no computation uses them).

        Parameters
        ----------
        wavelen : float
            Wavelength in Å.
        detdist : float
            Sample-detector distance in metres.
        pixsize : float
            Pixel size in metres.
        factor : float
            LOKI's photon conversion factor (stored as given).

        Returns
        -------
        None
        """
        self.wavelen, self.detdist, self.pixsize, self.factor = wavelen, detdist, pixsize, factor


class InterpCorr:
    """LOKI's ``RingData.InterpCorr``: correlations resampled from Δφ onto an even cos ψ grid.

    Parameters
    ----------
    corr : array_like, (num_shot, num_q, num_phi) or (num_shot, num_phi)
        Correlations over Δφ = 2π j / num_phi.
    wavlen : array_like, (num_shot,)
        Wavelength of each shot in Å.
    q_values : array_like, (num_q, 2)
        ``(q1, q2)`` of each correlation in Å⁻¹ (one pair for 2-D ``corr``, as LOKI indexes ``corr[ishot, iq]``).
    num_psi : int
        Number of cos ψ values on [-1, 1] after interpolation.

    Notes
    -----
    Same algorithm as LOKI: per shot and q pair, ``scipy.interpolate.interp1d(cpsi, corr, bounds_error=False,
    fill_value=inf)`` evaluated on ``linspace(-1, 1, num_psi)``; the cos ψ of each (wavelength, q1, q2) is computed
    once instead of per shot and nothing is printed. See :func:`xcca.resample_cos_psi` for the exact xcca
    resampling.
    """

    def __init__(self, corr, wavlen, q_values, num_psi):
        self.corr = np.asarray(corr)
        if self.corr.ndim not in (2, 3):
            raise ValueError(f"corr must be (num_shot, num_q, num_phi) or (num_shot, num_phi), got {self.corr.shape}")
        self.num_phi = self.corr.shape[-1]
        self.wavlen = np.atleast_1d(np.asarray(wavlen, dtype=np.float64))
        if self.wavlen.shape != (self.corr.shape[0],):
            raise ValueError(f"wavlen must have one value per shot ({self.corr.shape[0]}), got {self.wavlen.shape}")
        self.q_values = np.asarray(q_values, dtype=np.float64).reshape(-1, 2)
        if isinstance(num_psi, (bool, np.bool_)) or not isinstance(num_psi, (int, np.integer)) or num_psi < 1:
            raise ValueError(f"num_psi must be a positive integer, got {num_psi!r}")
        self.num_psi = int(num_psi)

        if self.corr.ndim == 3 and self.q_values.shape[0] != self.corr.shape[1]:
            raise ValueError(f"q_values must have one (q1, q2) per ring ({self.corr.shape[1]}), got "
                             f"{self.q_values.shape[0]}")

    def interpolate(self):
        """``(interp_corr, new_cpsi)``: the correlations on ``new_cpsi = linspace(-1, 1, num_psi)``; cos ψ outside
        a pair's range gives ``inf`` (as LOKI)."""
        from scipy.interpolate import interp1d

        new_cpsi = np.linspace(-1, 1, num=self.num_psi, endpoint=True)
        shape = (self.corr.shape[0],) + ((self.corr.shape[1],) if self.corr.ndim == 3 else ()) + (self.num_psi,)
        out = np.zeros(shape)
        cache = {}
        for ishot, w in enumerate(self.wavlen):
            for iq, (q1, q2) in enumerate(self.q_values):
                key = (w, q1, q2)
                if key not in cache:
                    cache[key] = InterpCorr.get_cpsi(self.num_phi, w, q1, q2)
                row = self.corr[ishot, iq] if self.corr.ndim == 3 else self.corr[ishot]
                f = interp1d(cache[key], row, bounds_error=False, fill_value=np.inf)
                if self.corr.ndim == 3:
                    out[ishot, iq] = f(new_cpsi)
                else:  # LOKI indexes corr[ishot, iq] here, which fails for 2-D corr: one pair, as documented
                    out[ishot] = f(new_cpsi)
                    break
        return out, new_cpsi

    @staticmethod
    def get_cpsi(num_phi, wavlen, q1, q2):
        """cos ψ of Δφ = 2π j / num_phi for rings q1, q2, LOKI's formula.

        Parameters
        ----------
        num_phi : int
            Number of Δφ samples ``2 pi j / num_phi``, j = 0 … num_phi - 1.
        wavlen : float
            Wavelength in Å.
        q1, q2 : float
            The two rings' q in Å⁻¹.

        Returns
        -------
        numpy.ndarray, shape (num_phi,)
            ``cos Δφ cos θ1 cos θ2 + sin θ1 sin θ2`` with ``θi = arcsin(qi wavlen / 4 pi)``.
        """
        phis = np.arange(num_phi) * 2 * np.pi / num_phi
        th1 = np.arcsin(q1 * wavlen / 4.0 / np.pi)
        th2 = np.arcsin(q2 * wavlen / 4.0 / np.pi)
        return np.cos(phis) * np.cos(th1) * np.cos(th2) + np.sin(th1) * np.sin(th2)
