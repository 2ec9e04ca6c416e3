"""LOKI-compatible API: existing LOKI scripts switch to xcca by changing one import prefix.

``from loki.RingData import X`` becomes ``from xcca.loki.RingData import X`` and ``from loki.utils.postproc_helper
import Y`` becomes ``from xcca.loki.utils.postproc_helper import Y`` (every name is also importable from
``xcca.loki`` itself). ``xcca.loki`` is a package only so that these two LOKI import paths exist.

Provided, with LOKI's signatures and results (Python 3); every deliberate difference is documented in the
docstring concerned. Masks: True = valid pixel, as in LOKI.

* ``RingData``: :class:`InterpSimple`, :class:`DiffCorr` (also ``generate_mode`` and its generators,
  ``correct_polarization``, ``correct_solid_angle``), :class:`RingFit` (``fit_circle``, ``fit_circle_fast``,
  ``fit_ellipse``, ``fit_circle_slow``), :class:`RadialProfile`, :class:`InterpCorr`.
* ``RingFetch``'s radius <-> q conversions and solid-angle factor as functions (:func:`r2q`, :func:`q2r`,
  :func:`r2theta`, :func:`solid_angle_per_radii`), computed through :class:`xcca.Geometry`; ``DiffCorr``'s
  polarisation factor through :func:`xcca.geometry_pipeline.polarization_at` (pyFAI's factor, the same values).
* ``utils.postproc_helper``: all of its functions (:mod:`xcca.loki.utils.postproc_helper` lists the one left out,
  ``fit_lorentz_offset_fixed_mu``, which cannot run in LOKI).
* ``utils.postproc_legendre``: LOKI's Legendre projection, re-exported from ``xcca._loki_legendre``.

Not provided: ``RingData.RingFetch`` / ``PolarTree`` (they read LOKI's external HDF5 neighbour-index files; use
:class:`xcca.PolarGrid`), ``RingData.WeighAverage`` (LOKI's iterative re-weighting with a hand-tuned learning
rate), ``utils.process_sacla`` / ``lcls_postproc_helper`` / ``make_db`` / ``make_tag_pairs`` / ``cor_tag_pairs``
(facility file formats and pandas databases of 2016; use :func:`xcca.analyze` and :mod:`xcca.io`).
"""
from __future__ import annotations

import logging

import numpy as np

__all__: list[str] = []

_log_loki = logging.getLogger(__name__)


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
        self.Q = np.broadcast_to(radii.astype(np.float64)[:, None], (radii.size, nphi))
        self.PHI = np.broadcast_to(self.phis_ring[None, :], (radii.size, nphi))
        # cos/sin once per angle, broadcast over radii: the same float64 values as LOKI's per-element evaluation
        self.xring = self.Q * np.cos(self.phis_ring - np.pi)[None, :] + self.x_center
        self.yring = self.Q * np.sin(self.phis_ring - np.pi)[None, :] + self.y_center
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
        """Polar image ``(qRmax - qRmin, nphi)`` of ``data_img`` by nearest-pixel gather (LOKI's rounding).

        Parameters
        ----------
        data_img : array_like, shape raw_img_shape
            The detector image ``(Y, X)``.
        dtype : numpy dtype, optional
            Accepted and ignored, as in LOKI: the result keeps the dtype of ``data_img``.
        mask : array_like of bool, optional
            Accepted and ignored, as in LOKI (True = valid pixel would be the convention). Zero or fill invalid
            pixels first, or use :class:`xcca.PolarGrid`, which takes a mask.

        Returns
        -------
        numpy.ndarray, shape (qRmax - qRmin, nphi)
            Row i is radius ``qRmin + i``, column j angle ``2 pi j / nphi``; same dtype as ``data_img``.

        Raises
        ------
        ValueError
            If ``data_img`` does not have shape ``raw_img_shape`` (LOKI gathers from any large enough array).
        """
        data = np.asarray(data_img)
        if data.shape != (self.Y, self.X):
            raise ValueError(f"data_img must have shape {(self.Y, self.X)}, got {data.shape}")
        return np.take(data.ravel(), self.indices_1d)


# ===== DiffCorr (issue 4) =====


def _threads_for(x):
    """One thread for small correlations (a tutorial's few rings: starting threads costs more than it saves)."""
    return 1 if x.size < (1 << 18) else None


__all__ += ["DiffCorr"]


class DiffCorr:
    """LOKI's ``loki.RingData.DiffCorr``: raw circular auto- and cross-correlations of (difference) shots.

    Parameters
    ----------
    shots : array_like, shape (num_shot, num_q, num_phi) or (num_shot, num_phi)
        Polar intensities, phi evenly spaced over 2 pi. No mask: fill detector gaps yourself, as in LOKI (or use
        xcca.autocorrelate / xcca.difference_correlation, which take a mask, True = valid).
    q_values : array_like, optional
        q of each ring (stored as ``q_values``; its size must equal num_q when given, as LOKI asserts).
    k : float, optional
        Beam wave number (stored as ``k``).
    delta_shot : int, optional
        With pre_dif=False, the shot spacing d of the differences shots[:-d] - shots[d:] (default 1).
    pre_dif : bool
        True: `shots` already are differences and are correlated as given.
    generate_mode : bool, default False
        True: correlations are produced one shot at a time by :meth:`autocorr_generator` /
        :meth:`crosscorr_generator` (needs ``pre_dif=True``, as in LOKI).

    Notes
    -----
    Results equal LOKI's ``irfft(rfft(x) * conj(rfft(y)), n)`` (raw sums, not divided by n):
    ``autocorr()[s, q, k] = sum_j x[s, q, j] x[s, q, (j+k) % n]`` and
    ``crosscorr(qindex)[s, q, k] = sum_j x[s, qindex, (j+k) % n] x[s, q, j]``.
    Differences from LOKI: the caller's array is never modified (a copy is kept in ``shotsAB``); integer input is
    converted to float64 before differencing (LOKI's unsigned differences would wrap around); float32 stays
    float32 (as numpy >= 2's FFT does), everything else is float64; bad input raises ValueError/TypeError instead
    of AssertionError.

    ``generate_mode=True`` (LOKI: the correlations as generators, one shot at a time, for runs that do not fit in
    memory) makes :meth:`autocorr` / :meth:`crosscorr` refuse and :meth:`autocorr_generator` /
    :meth:`crosscorr_generator` yield per shot; as in LOKI it needs ``pre_dif=True``.
    """

    def __init__(self, shots, q_values=None, k=None, delta_shot=None, pre_dif=True, generate_mode=False):
        if generate_mode and not pre_dif:
            raise ValueError("generate_mode=True needs pre_dif=True (as in LOKI)")
        self.generate_mode = bool(generate_mode)
        s = np.asarray(shots)
        if s.dtype.kind == "c" or s.dtype.kind not in "biuf":
            raise TypeError(f"shots must be a real numeric array, got dtype {s.dtype}")
        if s.ndim not in (2, 3):
            raise ValueError(f"shots must have shape (num_shot, num_q, num_phi) or (num_shot, num_phi), got {s.shape}")
        if s.shape[-1] == 0:
            raise ValueError("shots: num_phi must be >= 1")
        s = s.astype(np.float32 if s.dtype == np.float32 else np.float64, copy=False)
        if pre_dif:
            self.shotsAB = np.array(s, copy=True)
        else:
            d = 1 if delta_shot is None else int(delta_shot)
            if not 1 <= d < s.shape[0]:
                raise ValueError(f"delta_shot must be in [1, num_shot) = [1, {s.shape[0]}), got {delta_shot}")
            self.shotsAB = s[:-d] - s[d:]
        self.num_phi = self.shotsAB.shape[-1]
        self.phi_values = np.linspace(0.0, 2.0 * np.pi, self.num_phi)
        self.num_q = self.shotsAB.shape[-2]
        if q_values is not None:
            q_values = np.asarray(q_values)
            if self.shotsAB.ndim == 3 and q_values.size != self.num_q:
                raise ValueError(f"q_values has {q_values.size} entries, shots have num_q = {self.num_q}")
        self.q_values = q_values
        self.k = k

    def _raw(self, q_pairs):
        from .. import _core

        x = np.ascontiguousarray(self.shotsAB)
        x3 = x.reshape(x.shape[0], -1, x.shape[-1]) if x.ndim == 3 else x.reshape(x.shape[0], 1, x.shape[-1])
        rows = x3.shape[1] if q_pairs is None else len(q_pairs)
        out = np.empty((x3.shape[0], rows, x3.shape[2]), dtype=x.dtype)
        _core.correlate(x3, None, None, q_pairs, None, False, True, out, _threads_for(x3))
        return out

    def _no_generate(self, name):
        if self.generate_mode:
            raise ValueError(f"{name}: this DiffCorr has generate_mode=True; use {name}_generator (as in LOKI)")

    def _shot(self, i, q_pairs):
        """Raw correlation rows of shot i (LOKI's per-shot FFT), shape (num_q or len(q_pairs), num_phi)."""
        from .. import _core

        x = np.ascontiguousarray(self.shotsAB[i]).reshape(1, -1, self.num_phi)
        rows = x.shape[1] if q_pairs is None else len(q_pairs)
        out = np.empty((1, rows, self.num_phi), dtype=x.dtype)
        _core.correlate(x, None, None, q_pairs, None, False, True, out, 1)
        return out[0]

    def autocorr(self):
        """Difference autocorrelations, shape of ``shotsAB``: sum_j x_j x_{(j+k) % n} per shot and ring."""
        self._no_generate("autocorr")
        return self._raw(None).reshape(self.shotsAB.shape)

    def autocorr_generator(self):
        """Yield :meth:`autocorr` shot by shot (``generate_mode=True`` only, as in LOKI)."""
        if not self.generate_mode:
            raise ValueError("autocorr_generator needs generate_mode=True (as in LOKI); use autocorr")
        for i in range(self.shotsAB.shape[0]):
            yield self._shot(i, None).reshape(self.shotsAB.shape[1:])

    def crosscorr_generator(self, qindex):
        """Yield :meth:`crosscorr` shot by shot (``generate_mode=True`` only, as in LOKI).

        Parameters
        ----------
        qindex : int
            Index of the ring correlated with every ring (negative indices count from the end).

        Yields
        ------
        numpy.ndarray, shape (num_q, num_phi)
            ``[q, k] = sum_j x[s, qindex, (j+k) % n] x[s, q, j]`` for shot s (raw sums, as in LOKI).

        Raises
        ------
        ValueError
            Without ``generate_mode=True``, for 2-D shots, or for ``qindex`` out of range.
        """
        if not self.generate_mode:
            raise ValueError("crosscorr_generator needs generate_mode=True (as in LOKI); use crosscorr")
        pairs = self._cross_pairs(qindex)
        for i in range(self.shotsAB.shape[0]):
            yield self._shot(i, pairs)

    def correct_polarization(self, yaxis_polarization):
        """Divide every shot by LOKI's polarisation factor, in place on ``shotsAB``.

        Parameters
        ----------
        yaxis_polarization : float
            Fraction ``f`` of the beam polarised along y (0: fully x-polarised, 1: fully y-polarised).

        Returns
        -------
        None
            ``shotsAB`` (xcca's own copy, never the caller's array) is divided in place.

        For ring q (``theta = arcsin(q / (2 k))``, ``s = sin(2 theta)``) and ``phi_values = linspace(0, 2 pi,
        num_phi)`` (LOKI's grid, endpoint included):
        ``P = (1 - f) (1 - (s cos phi)^2) + f (1 - (s sin phi)^2)`` with ``f = yaxis_polarization``, the fraction of
        the beam polarised along y (Hura et al., J. Chem. Phys. 113, 9140 (2000)). Needs ``q_values`` (Å⁻¹) and
        ``k`` (Å⁻¹) at construction; k = 0 (simulated data) raises ValueError, as in LOKI. For detector geometry
        with tilts, correct the images with ``xcca.Geometry`` instead. Sets ``polarization_correted = True``
        (LOKI's spelling). The factor is computed by :func:`xcca.geometry_pipeline.polarization_at` (pyFAI's
        polarisation factor with ``factor = 1 - 2f``, the same values); ``yaxis_polarization`` outside [0, 1] raises
        ValueError.
        """
        if self.k is None or self.q_values is None:
            raise ValueError("correct_polarization needs q_values and k (given to DiffCorr)")
        if self.k == 0.0:
            raise ValueError("Rings.k is 0.0, which indicates simulated data -- no polarization correction possible.")
        f = float(yaxis_polarization)
        if not (0.0 <= f <= 1.0):
            raise ValueError(f"yaxis_polarization must lie in [0, 1] (the fraction polarised along y), got {f}")
        q = np.asarray(self.q_values, dtype=np.float64).reshape(-1)
        with np.errstate(invalid="raise"):
            try:
                np.arcsin(q / (2.0 * self.k))
            except FloatingPointError:
                raise ValueError(f"q_values beyond 2 k = {2 * self.k}: no scattering angle") from None
        # LOKI's (1 - f)(1 - (s cos phi)^2) + f (1 - (s sin phi)^2) is pyFAI's polarisation factor with
        # factor = 1 - 2f at 2theta of the ring and chi = phi: computed by xcca's geometry code
        from ..geometry_pipeline import polarization_at

        tth = 2.0 * np.arcsin(q / (2.0 * self.k))  # LOKI's 2 theta
        correctn = polarization_at(tth[:, None], self.phi_values[None, :], 1.0 - 2.0 * f)
        if self.shotsAB.ndim != 3:  # LOKI's pi[:, :] /= ... fails on 2-D shots too
            raise ValueError("correct_polarization needs shots of shape (num_shot, num_q, num_phi)")
        self.shotsAB /= correctn.astype(self.shotsAB.dtype, copy=False)
        self.polarization_correted = True

    def correct_solid_angle(self):
        """LOKI's ``correct_solid_angle``: a no-op in LOKI (its body is ``return``), reproduced as such.

        On polar rings of constant radius around the beam of an untilted detector the solid angle per sample is
        constant along each ring (cos³ 2θ of that ring), so it scales each ring's correlation by a constant and
        leaves ring-normalised correlations unchanged. For tilted detectors or absolute intensities apply the
        solid-angle correction per pixel before remapping (``xcca.Geometry``).
        """
        _log_loki.debug("DiffCorr.correct_solid_angle: no-op, as in LOKI")
        return None

    def crosscorr(self, qindex):
        """Correlate ring `qindex` with every ring (itself included), for every shot.

        Parameters
        ----------
        qindex : int
            Index of the ring correlated with every ring (negative indices count from the end).

        Returns
        -------
        numpy.ndarray, shape (num_shot, num_q, num_phi)
            ``[s, q, k] = sum_j x[s, qindex, (j+k) % n] x[s, q, j]`` (raw sums, not divided by n, as LOKI's FFT).

        Raises
        ------
        ValueError
            With ``generate_mode=True`` (use :meth:`crosscorr_generator`), for 2-D shots (LOKI fails there too),
            or for ``qindex`` out of range (LOKI would index out of bounds).
        """
        self._no_generate("crosscorr")
        return self._raw(self._cross_pairs(qindex))

    def _cross_pairs(self, qindex):
        if self.shotsAB.ndim != 3:
            raise ValueError("crosscorr needs shots of shape (num_shot, num_q, num_phi)")
        qi = int(qindex)
        if not -self.num_q <= qi < self.num_q:
            raise ValueError(f"qindex {qindex} out of range for num_q = {self.num_q}")
        qi %= self.num_q
        return np.stack([np.arange(self.num_q), np.full(self.num_q, qi)], axis=1).astype(np.int64)


# ===== fit_periodic, pair_fits, is_outlier, remove_peaks (issue 5) =====


def fit_periodic(data, mask, deg, overlap=0.2):
    """LOKI's ``fit_periodic``: polynomial of degree `deg` fitted to a periodically padded masked ring.

    Parameters
    ----------
    data : array_like (n,)
        Ring profile I(phi) over the full interval. Not modified.
    mask : array_like (n,)
        True (or 1) = valid sample, as in LOKI.
    deg : int
        Polynomial degree.
    overlap : float
        Padding fraction of n on both sides, in [0, 0.5].

    Returns
    -------
    ofit : ndarray (deg+1,)
        The fit's coefficients in the Chebyshev basis of the raw coordinate x, ``chebval(x, ofit)``: what LOKI's
        ``chebfit(x, fit(x), deg)`` over the padded x computes (here by exact conversion; they agree to ~1e-9).
    fit : ndarray (deg+1,)
        Power-basis coefficients in raw x, highest degree first (``numpy.polyval`` order), as LOKI.
    yfit : ndarray (n,) float64
        The fit at x = 0 … n-1 times the mask.

    Notes
    -----
    Deliberate differences: the fit is solved stably (scaled Chebyshev basis + QR, :func:`xcca.fit_periodic`) and
    `yfit` is evaluated from that stable form, so it agrees with LOKI where LOKI's power-basis ``polyfit`` is well
    conditioned and is correct where it is not; `fit` (raw power basis) is a conversion of the stable fit and
    inherits the power basis' ill-conditioning. ``overlap = 0`` works (LOKI fails there). A ring with too few valid
    samples returns NaN arrays and a warning instead of numpy's RankWarning garbage.
    """
    from ..rings import fit_periodic as _fit

    d = np.asarray(data)
    if d.ndim != 1:
        raise ValueError(f"data must be one ring (n,), got shape {d.shape}")
    res = _fit(d, mask, deg=deg, overlap=overlap)
    n, nn, deg = res.n, res.nn, res.deg
    yfit = np.asarray(res.curves, dtype=np.float64)
    if not res.ok[0]:
        return np.full(deg + 1, np.nan), np.full(deg + 1, np.nan), yfit
    lo, hi = res.domain
    if not hi > lo:
        lo, hi = lo - 1, lo + 1
    power = _cheb_to_raw_power(np.asarray(res.coef[0], dtype=np.float64), lo, hi)
    fit = power[::-1].copy()
    # LOKI's ofit = chebfit(x, fit(x), deg) is the fit itself in the Chebyshev basis of raw x: converted exactly
    # (LOKI's least-squares refit of an exact polynomial agrees with the conversion to ~1e-9 of max |ofit|, the
    # conditioning of that raw-x basis; the conversion costs no lstsq over the padded samples).
    ofit = _basis_matrices(deg)[1] @ power
    return ofit, fit, yfit


_BASES: dict = {}


def _basis_matrices(deg):
    """(Chebyshev -> power, power -> Chebyshev, binomial) matrices of degree `deg`, cached (column k = basis k)."""
    if deg not in _BASES:
        from math import comb

        from numpy.polynomial import chebyshev as C

        n, eye = deg + 1, np.eye(deg + 1)
        pad = lambda v: np.concatenate([v, np.zeros(n - v.size)])  # noqa: E731
        to_power = np.stack([pad(C.cheb2poly(eye[k])) for k in range(n)], axis=1)
        to_cheb = np.stack([pad(C.poly2cheb(eye[k])) for k in range(n)], axis=1)
        binom = np.array([[comb(k, i) for k in range(n)] for i in range(n)], dtype=np.float64)
        _BASES[deg] = (to_power, to_cheb, binom)
    return _BASES[deg]


def _cheb_to_raw_power(coef, lo, hi):
    """Power-basis coefficients (lowest first) in raw x of the Chebyshev series `coef` on the domain [lo, hi].

    The series is sum c_k T_k(u) with u = a x + b (a = 2 / (hi - lo), b = -(lo + hi) / (hi - lo)); its power form in
    u, then (a x + b)^k expanded binomially: two small matrix products (numpy's ``Chebyshev.convert`` composes
    polynomial objects and took ~1.7 ms of a ~2.6 ms ``fit_periodic`` call; the results agree to the conditioning of
    the raw-x power basis, ~1e-9 of the curve).
    """
    to_power, _, binom = _basis_matrices(coef.size - 1)
    a, b = 2.0 / (hi - lo), -(lo + hi) / (hi - lo)
    i = np.arange(coef.size)
    expo = i[None, :] - i[:, None]  # row i (power of x), column k (power of u): binom(k, i) a^i b^(k - i)
    sub = np.where(expo >= 0, binom * a ** i[:, None] * b ** np.maximum(expo, 0), 0.0)
    return sub @ (to_power @ coef)


def pair_fits(fits):
    """LOKI's ``pair_fits``: pair shots in index order, each unused shot with its nearest unused shot.

    Parameters
    ----------
    fits : array_like (N, D)
        One vector per shot (LOKI's tutorial passes the ``yfit`` curves or the ``ofit`` coefficients).

    Returns
    -------
    pairs : list of [i, j]
        i the visiting shot, j its nearest unused shot.
    dists : list of float
        Euclidean distance of each pair.

    Notes
    -----
    Same pairs as LOKI but computed by :func:`xcca.pair_shots` (method "loki") without the N×N matrix. Deliberate
    differences: ties go to the lowest index (LOKI's unstable argsort picks any); when all shots coincide LOKI can
    pair a shot with itself and skip it, xcca pairs it; the odd shot left over is logged (LOKI drops it silently;
    use :func:`xcca.pair_shots` to get it as ``.unpaired``); no printing.
    """
    import logging

    from ..pairing import pair_shots

    res = pair_shots(fits, "loki")
    if res.unpaired.size:
        logging.getLogger(__name__).info("pair_fits: shot(s) %s left unpaired", res.unpaired.tolist())
    return res.pairs.tolist(), res.distances.tolist()


def is_outlier(points, thresh=3.5):
    """LOKI's ``is_outlier``: modified z-score ``0.6745 * |x - median| / MAD > thresh``.

    Parameters
    ----------
    points : array_like or numpy.ma.MaskedArray, (k,) or (k, d)
        Observations (rows); 2-D points use the Euclidean distance to the per-column median. Not modified. A masked
        array is treated as LOKI treats it (the tutorial passes masked rings), see Notes.
    thresh : float
        Modified z-score threshold (finite).

    Returns
    -------
    numpy.ndarray of bool, (k,)
        True for outliers. Masked samples are never outliers.

    Notes
    -----
    On a ``numpy.ma.MaskedArray`` LOKI's NumPy calls give a specific result, reproduced here exactly for the
    tutorial's case (see ``tests/test_loki_outlier.py``): ``np.median`` ignores the mask, so the median is taken over
    the *underlying data of all samples*, masked ones included; the masked samples' deviations are 0 (``np.sum``
    fills them with 0), so the MAD is the median over all k samples with 0 for the masked ones; and masked samples
    are never flagged (their entries of LOKI's masked result are masked and read as False). For
    ``np.ma.masked_equal([0, 0, 0, 10, 11, 12, 10, 11, 13, 50.], 0)`` only the last sample is an outlier.
    Exactly: ``np.median`` of a masked array partitions the data but not the mask, so its "median" is the mean of
    the middle order statistics of all the data over those middle *positions* whose original mask entry is False;
    when none is, LOKI's median and then its whole result are masked, which a script reads as no outliers. The
    same rule gives the MAD.

    Deliberate difference: MAD = 0 gives no outliers (LOKI divides by zero and flags every point off the median).
    For masks respected properly (masked samples excluded from median and MAD) use :func:`xcca.is_outlier`.
    """
    from ..rings import is_outlier as _is_outlier

    if isinstance(thresh, (bool, np.bool_)) or not np.isscalar(thresh) or not np.isreal(thresh) \
            or not np.isfinite(thresh):
        raise ValueError(f"thresh must be a finite real number, got {thresh!r}")
    if not isinstance(points, np.ma.MaskedArray) or not np.ma.getmask(points).any():
        return _is_outlier(np.asarray(points), thresh)
    data = np.asarray(points.data)
    if data.dtype == object or data.dtype.kind not in "biuf":
        raise TypeError(f"points must be a real numeric array, got dtype {data.dtype}")
    if data.ndim not in (1, 2):
        raise ValueError(f"points must be 1-D (k,) or 2-D (k, d), got shape {data.shape}")
    m = np.ma.getmaskarray(points)
    x = data.astype(np.float64).reshape(data.shape[0], -1)
    m = m.reshape(x.shape)
    med, med_ok = _numpy_median_of_masked(x, m)
    m = m | ~med_ok[None, :]  # a column whose median is masked is masked in every row of LOKI's difference
    dev = np.sqrt(np.where(m, 0.0, (x - med) ** 2).sum(axis=1))
    row_masked = m.all(axis=1)
    mad, mad_ok = _numpy_median_of_masked(dev[:, None], row_masked[:, None])
    if not mad_ok[0] or not mad[0] > 0:  # LOKI's result is then entirely masked (or MAD = 0, see above)
        return np.zeros(x.shape[0], dtype=bool)
    return (0.6745 * dev / mad[0] > thresh) & ~row_masked


def _numpy_median_of_masked(x, m):
    """What ``np.median(MaskedArray, axis=0)`` returns, per column of x (k, d) with mask m: the middle order
    statistics of the data, all samples included (np.partition ignores the mask), averaged over those middle
    positions whose *original* mask entry is False (the mask is not partitioned); no such position -> masked."""
    k = x.shape[0]
    mid = [k // 2 - 1, k // 2] if k % 2 == 0 else [k // 2]
    part = np.partition(x, mid, axis=0)[mid]
    keep = ~m[mid]
    cnt = keep.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(keep, part, 0.0).sum(axis=0) / cnt, cnt > 0


def remove_peaks(Ring, Mask, thick=None, peak_thresh=3.0, coef=None):
    """LOKI's ``remove_peaks`` for one ring.

    Parameters
    ----------
    Ring : array_like (n,)
        Angular profile. Not modified.
    Mask : array_like (n,)
        True (or 1) = kept sample, 0 = masked, as in LOKI.
    thick : int, optional
        Detected peak position ± thick is masked.
    peak_thresh : float
        Modified z-score threshold.
    coef : array_like, optional
        Chebyshev coefficients in raw sample coordinates (``chebval(x, coef)``, e.g. LOKI's ``ofit``), subtracted
        before detection.

    Returns
    -------
    (ring * mask, mask, removed) : the cleaned ring, the updated mask (Mask's dtype) and the removed values (the
    raw ring values inside the masked windows, 0 elsewhere), as in LOKI.

    Notes
    -----
    Deliberate differences: the ±thick window wraps around the ring (LOKI clips it at 0 and n-1, leaving peak
    tails at the seam); MAD = 0 gives no outliers.
    """
    from ..rings import is_outlier as _is_outlier

    ring = np.array(Ring, copy=True)
    mask = np.array(Mask, copy=True)
    if ring.ndim != 1 or mask.shape != ring.shape:
        raise ValueError(f"Ring and Mask must be 1-D of the same length, got {ring.shape} and {mask.shape}")
    nphi = ring.shape[0]
    xvals = np.nonzero(mask)[0]
    points = ring[xvals].astype(np.float64)
    if coef is not None:
        points = points - np.polynomial.chebyshev.chebval(xvals, coef)
    removed = np.zeros_like(ring)
    where = xvals[_is_outlier(points, peak_thresh)] if xvals.size else xvals
    if where.size:
        if thick is not None:
            win = np.arange(-int(thick), int(thick) + 1)
            where = np.unique((where[:, None] + win[None, :]) % nphi)
        mask[where] = 0
        removed[where] = ring[where]
    return ring * mask, mask, removed


__all__ += ["fit_periodic", "pair_fits", "is_outlier", "remove_peaks"]


# ===== RingFit (issue 6) =====
from ..ringfit import RingFitError as _RingFitError  # noqa: E402
from ..ringfit import fit_circle_points as _fit_circle_points  # noqa: E402


class RingFit:
    """LOKI's ``RingData.RingFit``: fit a circle to a powder ring to find the beam centre.

    ``RingFit(img).fit_circle(beta_i, num_fitting_pts=5000, ring_width=20, num_high_pix=20)`` returns LOKI's
    ``(beta_fit, residual, mean_intens)``: ``beta_fit = [x_center, y_center, radius]`` (x along columns),
    ``residual = sum((R_i - r)**2)`` over the fitted pixels and the mean intensity of those pixels.

    The pixel selection is LOKI's, step for step: pixels outside ``beta_i[2] ± ring_width/2`` are zeroed, with
    ``ring_width/2`` evaluated as in LOKI's Python 2 (an integer width is floor-divided: ``ring_width=15`` keeps
    ``r ± 7``, ``ring_width=15.0`` keeps ``r ± 7.5``); then
    LOKI's ``_remove_highest`` zeroes the ``num_high_pix`` entries that come *first* in an ascending argsort (despite
    its name these are the lowest values, so it only matters for images with negative pixels; reproduced as is so
    that results match LOKI); then the ``num_fitting_pts`` largest pixels (NumPy's default argsort, reversed, as LOKI)
    are fitted. Equal pixel values are ordered as a *stable* argsort orders them (the n-th largest value's ties
    go to the highest flat indices): NumPy's default argsort, which LOKI uses, leaves that order unspecified (it
    differs between NumPy versions and CPUs), which matters for integer-valued images. The implicit-model ``scipy.odr`` fit of LOKI minimises the sum of squared orthogonal distances to the
    circle; here the same geometric least-squares problem is solved by :func:`xcca.ringfit.fit_circle_points`
    (Levenberg-Marquardt from ``beta_i``), which agrees with ODR to its convergence tolerance and does not depend on
    the deprecated ``scipy.odr``.

    Deliberate differences from LOKI:

    - When the annulus holds no more than ``num_fitting_pts`` positive pixels LOKI keeps ``num_pts / 2`` of them,
      which is a float in Python 3 and crashes the slice; here it is ``num_pts // 2``.
    - Fewer than 3 usable pixels, or a fit that does not converge, raise :class:`xcca.ringfit.RingFitError`
      (a ValueError carrying the residual) instead of returning ODR's unconverged parameters.
    - ``fit_circle`` always returns the triple (the ``return_mean`` flag of older LOKI versions is accepted and
      ignored); ``fit_circle_fast`` is the same method.
    - :meth:`fit_ellipse` solves LOKI's implicit ODR problem (orthogonal distances to an axis-aligned ellipse) by
      a geometric Levenberg-Marquardt fit with exact foot points; :meth:`fit_circle_slow` is LOKI's grid search
      over centres by radial-profile maxima, same grid and rounding (Python 2 ``round``: halves away from zero).
    - There is no mask argument (as in LOKI): zero the invalid pixels of ``img`` first, or use :func:`xcca.fit_ring`,
      which takes a mask (True = valid pixel).

    Parameters
    ----------
    img : array_like, 2-D
        The detector image (integer or float). A copy is kept in ``img``; the caller's array is never modified.
    """

    def __init__(self, img):
        img = np.array(img, copy=True)
        if img.ndim != 2 or img.size == 0:
            raise ValueError(f"img must be a non-empty 2-D array, got shape {img.shape}")
        if not (np.issubdtype(img.dtype, np.integer) or np.issubdtype(img.dtype, np.floating)):
            raise TypeError(f"img must have a real numeric dtype, got {img.dtype}")
        self.img = img
        self._indices = None

    # LOKI's index arrays, built only when used (the annulus path below does not need them).
    def _get_indices(self):
        if self._indices is None:
            y, x = np.indices(self.img.shape)
            self._indices = (y, x, x.ravel(), y.ravel())
        return self._indices

    y = property(lambda self: self._get_indices()[0], doc="Row index of every pixel (LOKI's ``y``).")
    x = property(lambda self: self._get_indices()[1], doc="Column index of every pixel (LOKI's ``x``).")
    x1D = property(lambda self: self._get_indices()[2], doc="``x.ravel()`` (LOKI's ``x1D``).")
    y1D = property(lambda self: self._get_indices()[3], doc="``y.ravel()`` (LOKI's ``y1D``).")

    def _half_width(self):
        # LOKI is Python 2: ``ring_width/2`` of an integer is floor division (15 -> 7), of a float a true division.
        w = self.ring_width
        if isinstance(w, (int, np.integer)) and not isinstance(w, (bool, np.bool_)):
            return w // 2
        return w / 2

    def _prepare_fitting_framework(self, beta_i, num_high_pix, num_fitting_pts):
        if not self._prepare_annulus(beta_i, int(num_high_pix), num_fitting_pts):
            self._prepare_full(beta_i, num_high_pix, num_fitting_pts)

    def _prepare_annulus(self, beta_i, k, num_fitting_pts):
        """LOKI's selection from the annulus pixels alone (O(annulus) instead of two argsorts of the image).

        Gives the pixel set of LOKI's steps with a stable argsort; returns False (the caller then runs those steps on
        the whole image) for NaN in the annulus or more low pixels to remove than the image has pixels <= 0.
        """
        from ..ringfit import _annulus_pixels

        h, w = self.img.shape
        half = self._half_width()
        bx, by, br = (float(v) for v in beta_i[:3])
        if k < 0 or not np.isfinite(half):
            return False
        rows, cols = _annulus_pixels(h, w, bx, by, br - half - 1.0, br + half + 1.0)
        rv = np.sqrt((cols - bx) ** 2 + (rows - by) ** 2)  # LOKI's test on the same float64 values
        keep = ~(rv > br + half) & ~(rv < br - half)
        rows, cols = rows[keep], cols[keep]
        vals = self.img[rows, cols]
        if vals.dtype.kind == "f" and np.isnan(vals).any():
            return False
        neg = np.nonzero(vals < 0)[0]
        if neg.size:
            if k <= neg.size:  # LOKI zeroes the k lowest pixels: here the k lowest negatives
                if k:
                    order = np.argsort(vals[neg], kind="stable")  # ties: lowest flat index first (stable)
                    vals = vals.copy()
                    vals[neg[order[:k]]] = 0
            else:
                vals = np.where(vals < 0, 0, vals)
        pos = np.nonzero(vals > 0)[0]
        num_pts = pos.size
        if k > self.img.size - num_pts:  # LOKI would zero some positive pixels too
            return False
        n_fit = num_fitting_pts if num_fitting_pts < num_pts else num_pts // 2
        if n_fit < 3:
            raise _RingFitError(
                f"only {num_pts} positive pixels in the ring r = {br} ± {half} around ({bx}, {by}); cannot fit a "
                "circle")
        n_fit = int(n_fit)
        pv = vals[pos]
        if n_fit < num_pts:
            # the n_fit largest; among values equal to the n_fit-th largest, the largest flat indices (the
            # reversed *stable* ascending argsort; candidates are in row-major, i.e. flat-index, order)
            thr = np.partition(pv, num_pts - n_fit)[num_pts - n_fit]
            above = np.nonzero(pv > thr)[0]
            tied = np.nonzero(pv == thr)[0]
            top = np.concatenate([above, tied[tied.size - (n_fit - above.size):]])
        else:
            top = np.arange(num_pts)
        # descending value, equal values by descending flat index: argsort(kind="stable")[::-1]
        top = top[np.lexsort((-top, -pv[top].astype(np.float64)))]
        sel = pos[top]
        self.img1D = np.zeros(self.img.size, dtype=self.img.dtype)
        self.img1D[rows * w + cols] = vals
        self.fit_indices = rows[sel] * w + cols[sel]
        self.pts = np.vstack([cols[sel], rows[sel]])
        return True

    def _prepare_full(self, beta_i, num_high_pix, num_fitting_pts):
        self.img1D = np.copy(self.img.ravel())
        radius_value = np.sqrt((self.x1D - beta_i[0]) ** 2 + (self.y1D - beta_i[1]) ** 2)
        half = self._half_width()
        self.img1D[radius_value > beta_i[2] + half] = 0
        self.img1D[radius_value < beta_i[2] - half] = 0
        # LOKI's _remove_highest: the first num_high_pix of an ascending argsort (see the class docstring).
        self.img1D[np.argsort(self.img1D, kind="stable")[: int(num_high_pix)]] = 0
        num_pts = int(np.count_nonzero(self.img1D > 0))
        if num_fitting_pts >= num_pts:
            num_fitting_pts = num_pts // 2  # LOKI: num_pts / 2, a float slice index in Python 3
        if num_fitting_pts < 3:
            raise _RingFitError(
                f"only {num_pts} positive pixels in the ring r = {beta_i[2]} ± {self._half_width()} around "
                f"({beta_i[0]}, {beta_i[1]}); cannot fit a circle"
            )
        self.fit_indices = np.argsort(self.img1D, kind="stable")[::-1][: int(num_fitting_pts)]
        self.pts = np.vstack([self.x1D[self.fit_indices], self.y1D[self.fit_indices]])

    def fit_circle(self, beta_i, num_fitting_pts=5000, ring_width=20, num_high_pix=20, return_mean=False):
        """Fit a circle to the ring near ``beta_i = (x_center, y_center, radius)``.

        Parameters
        ----------
        beta_i : (float, float, float)
            Starting ``(x_center, y_center, radius)`` in pixels (x along columns); the annulus is
            ``radius ± ring_width/2``.
        num_fitting_pts : int, default 5000
            Number of the brightest annulus pixels fitted (half the positive ones when the annulus has no more).
        ring_width : float, default 20
            Width of the annulus in pixels (an integer width is floor-halved, as LOKI's Python 2).
        num_high_pix : int, default 20
            Entries zeroed by LOKI's ``_remove_highest`` (the first of an ascending argsort, reproduced as is).
        return_mean : bool, default False
            Accepted and ignored: the mean intensity is always returned (older LOKI versions' flag).

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

    def fit_ellipse(self, beta_i, num_fitting_pts=5000, ring_width=40, num_high_pix=20):
        """Fit an axis-aligned ellipse ``(x - xc)^2 / rx^2 + (y - yc)^2 / ry^2 = 1`` to the ring near ``beta_i``.

        Parameters
        ----------
        beta_i : (x_center, y_center, x_radius, y_radius)
            Starting ellipse; the pixel selection uses the annulus ``x_radius ± ring_width/2``, as LOKI.
        num_fitting_pts, ring_width, num_high_pix
            As in :meth:`fit_circle` (LOKI's defaults for ellipses: ring width 40).

        Returns
        -------
        beta_fit : numpy.ndarray, shape (4,)
            ``[x_center, y_center, x_radius, y_radius]`` minimising the sum of squared orthogonal distances of the
            selected pixels to the ellipse (LOKI's ``scipy.odr`` implicit model solves the same problem).
        """
        b = np.asarray(beta_i, dtype=np.float64).ravel()
        if b.size != 4 or not np.all(np.isfinite(b)) or b[2] <= 0 or b[3] <= 0:
            raise ValueError(f"beta_i must be four finite numbers (x_center, y_center, x_radius > 0, "
                             f"y_radius > 0), got {beta_i}")
        if not ring_width > 0:
            raise ValueError(f"ring_width must be > 0, got {ring_width}")
        self.ring_width = ring_width
        self._prepare_fitting_framework(b[:3], num_high_pix, num_fitting_pts)
        from ._ellipse import fit_ellipse_points

        self.beta_fit = fit_ellipse_points(self.pts[0].astype(np.float64), self.pts[1].astype(np.float64), b)
        return self.beta_fit

    def fit_circle_slow(self, beta_i, ring_scan_width, center_scan_width, resolution=1):
        """LOKI's brute-force centre search: the centre whose radial profile has the highest ring maximum.

        Parameters
        ----------
        beta_i : (x_center, y_center, ring_radius)
            Guess in pixels (rounded as Python 2's ``round``).
        ring_scan_width : float
            Radii ``r - int(w/2) … r + int(w/2) - 1`` are searched for the maximum.
        center_scan_width : float
            Centres on a ``linspace(c - w/2, c + w/2, int(w / resolution))`` grid in x and y.
        resolution : float
            Grid spacing.

        Returns
        -------
        (x_center, y_center, radius) : tuple
            The best centre and the radius (integer pixel bin) of its profile maximum, as LOKI.
        """
        import math

        from ._radial import RadialProfile

        b = np.asarray(beta_i, dtype=np.float64).ravel()
        if b.size != 3 or not np.all(np.isfinite(b)):
            raise ValueError(f"beta_i must be three finite numbers (x_center, y_center, radius), got {beta_i}")
        if not resolution > 0:
            raise ValueError(f"resolution must be > 0, got {resolution}")

        def py2_round(v):
            return math.copysign(math.floor(abs(v) + 0.5), v)

        self.resolution = resolution
        self.ring_radius_guess = py2_round(b[2])
        self.center_x_guess, self.center_y_guess = py2_round(b[0]), py2_round(b[1])
        self.ring_scan_start = self.ring_radius_guess - int(ring_scan_width / 2)
        self.ring_scan_stop = self.ring_radius_guess + int(ring_scan_width / 2)
        num = int(center_scan_width / self.resolution)
        if num < 1 or self.ring_scan_stop <= self.ring_scan_start:
            raise ValueError("center_scan_width / resolution and ring_scan_width must give at least one centre "
                             "and one radius")
        sx = np.linspace(self.center_x_guess - center_scan_width / 2.0, self.center_x_guess + center_scan_width / 2.0,
                         num)
        sy = np.linspace(self.center_y_guess - center_scan_width / 2.0, self.center_y_guess + center_scan_width / 2.0,
                         num)
        self.possible_centers = [(x, y) for x in sx for y in sy]
        rp = RadialProfile((self.center_x_guess, self.center_y_guess), img_shape=self.img.shape, mask=None,
                           minlength=self.img.shape[0])
        lo, hi = int(self.ring_scan_start), int(self.ring_scan_stop)
        # Only radii < hi matter: restrict each profile to the pixels below that radius (same sums per bin).
        img = self.img.astype(np.float64)
        yy, xx = np.indices(self.img.shape)
        maxima, profiles = [], []
        for cx, cy in self.possible_centers:
            r = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2).astype(int)
            sel = r < max(hi, 1)
            length = max(rp.minlength, int(r.max()) + 1)
            s_ = np.bincount(r[sel], weights=img[sel], minlength=length)[lo:hi]
            c_ = np.bincount(r[sel], minlength=length)[lo:hi]
            with np.errstate(divide="ignore", invalid="ignore"):
                prof = np.nan_to_num(s_ / c_)
            profiles.append(prof)
            maxima.append(prof.max())
        best = int(np.argmax(maxima))
        self.possible_ring_profiles = profiles
        self.ring_profile_maxima = maxima
        self.fit_center = self.possible_centers[best]
        self.max_profile = profiles[best]
        return (self.fit_center[0], self.fit_center[1], int(np.argmax(self.max_profile)) + self.ring_scan_start)


__all__ += ["RingFit"]


# ===== RingFetch's radius <-> q conversions and solid-angle factor (issue 11), through xcca.Geometry =====

__all__ += ["r2q", "q2r", "r2theta", "solid_angle_per_radii"]


def _loki_geometry(pixsize, detdist, wavelen=None):
    from ..geometry import Geometry

    # An untilted detector with LOKI's pixel size and distance (any common length unit: only their ratio matters)
    return Geometry.from_beam((0.0, 0.0), distance=detdist, pixel_size=pixsize,
                              wavelength=None if wavelen is None else wavelen * 1e-10)


def r2q(R, pixsize, detdist, wavelen):
    """LOKI's ``RingFetch.r2q``: q (Å⁻¹) of a ring of radius ``R`` pixels on an untilted detector.

    Parameters
    ----------
    R : array_like
        Ring radii in pixels.
    pixsize : float
        Pixel size (the unit of ``detdist``).
    detdist : float
        Sample-detector distance.
    wavelen : float
        Wavelength in Å.

    Returns
    -------
    numpy.ndarray
        ``4 pi sin(arctan(R pixsize / detdist) / 2) / wavelen``, through :meth:`xcca.Geometry.q_from_tth`.
    """
    g = _loki_geometry(pixsize, detdist, wavelen)
    return g.q_from_tth(np.arctan(np.asarray(R, dtype=np.float64) * g.pixel1 / g.dist))


def q2r(Q, pixsize, detdist, wavelen):
    """LOKI's ``RingFetch.q2r``: the radius in pixels of the ring of q (Å⁻¹) on an untilted detector.

    Parameters
    ----------
    Q : array_like
        q in Å⁻¹.
    pixsize : float
        Pixel size (the unit of ``detdist``).
    detdist : float
        Sample-detector distance.
    wavelen : float
        Wavelength in Å.

    Returns
    -------
    numpy.ndarray
        ``tan(2 arcsin(Q wavelen / 4 pi)) detdist / pixsize``, through :meth:`xcca.Geometry.tth_from_q` (q beyond
        4π/λ raises ValueError instead of LOKI's NaN).
    """
    g = _loki_geometry(pixsize, detdist, wavelen)
    return np.tan(g.tth_from_q(Q)) * g.dist / g.pixel1


def r2theta(R, pixsize, detdist):
    """LOKI's ``RingFetch.r2theta``: the half scattering angle θ (radians) of a ring of radius ``R`` pixels.

    Parameters
    ----------
    R : array_like
        Ring radii in pixels.
    pixsize : float
        Pixel size (the unit of ``detdist``).
    detdist : float
        Sample-detector distance.

    Returns
    -------
    numpy.ndarray
        ``arctan(R pixsize / detdist) / 2``.
    """
    g = _loki_geometry(pixsize, detdist)
    return np.arctan(np.asarray(R, dtype=np.float64) * g.pixel1 / g.dist) / 2.0


def solid_angle_per_radii(radii, pixsize, detdist):
    """LOKI's ``RingFetch`` solid-angle factor: ``cos(θ)**3`` per ring radius, θ = :func:`r2theta` (LOKI multiplies
    each ring by it).

    LOKI uses the half scattering angle θ; the solid angle of a pixel of a flat untilted detector is cos³(2θ)
    (pyFAI's ``solidAngleArray``, :meth:`xcca.Geometry.solid_angle`). This function reproduces LOKI's factor; use
    ``xcca.Geometry.polar_grid(..., solid_angle=True)`` for the exact correction (also on tilted detectors).

    Parameters
    ----------
    radii : array_like
        Ring radii in pixels.
    pixsize : float
        Pixel size (the unit of ``detdist``).
    detdist : float
        Sample-detector distance.

    Returns
    -------
    numpy.ndarray
    """
    return np.cos(r2theta(radii, pixsize, detdist)) ** 3


# ===== RadialProfile, InterpCorr (issue 10) and LOKI's import paths =====
from ._radial import InterpCorr, RadialProfile  # noqa: E402

__all__ += ["RadialProfile", "InterpCorr"]

from . import RingData, utils  # noqa: E402,F401  (LOKI's loki.RingData and loki.utils paths)
from .utils import postproc_helper  # noqa: E402,F401
