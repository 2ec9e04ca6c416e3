"""``xcca.loki.utils.postproc_helper``: LOKI's ``loki.utils.postproc_helper``, every function, Python 3.

``from loki.utils.postproc_helper import X`` becomes ``from xcca.loki.utils.postproc_helper import X``. Masks:
True (or 1) = valid sample, as in LOKI. Each function has LOKI's signature and LOKI's result; the deliberate
differences are listed here and in the docstrings:

* ``fit_periodic``, ``pair_fits``, ``is_outlier``, ``remove_peaks`` are :mod:`xcca.loki`'s (stable fits, exact
  pairing without the N×N matrix; see their docstrings). Nothing prints (LOKI prints progress).
* ``random_pairs(total_elements, num_pairs, *, seed=None)``: LOKI reseeds NumPy's global generator from the OS on
  every call (irreproducible, and it changes the caller's global state); here a private generator, reproducible
  with ``seed``. The pairs are distinct unordered-as-drawn tuples with different members, as in LOKI.
* ``smooth``: LOKI's ``b = (window_size - 1) / 2`` is a float slice index in Python 3; it is integer here.
* ``bin_masked_image`` / ``bin_image_naive``: LOKI's branch for shapes that are not multiples of ``bin_fac``
  references an undefined ``self`` and always fails; here it raises a ValueError saying so (use
  :func:`xcca.bin_sum` / :func:`xcca.bin_max`, which handle any shape).
* ``delta_pix`` uses ``np.pi`` where LOKI's code names an undefined ``pi`` (a NameError in LOKI).
* ``get_NP_sizes`` uses ``np.median``, ``np.hstack`` and ``np.log`` where LOKI's code names undefined
  ``median``, ``hstack``, ``log`` (it only ran in LOKI's interactive sessions with ``from pylab import *``).
* ``ptp()`` array methods (removed in NumPy 2) are ``np.ptp``.

Left out, with the reason:

* ``fit_lorentz_offset_fixed_mu``: LOKI's body passes an undefined ``guess`` to ``curve_fit`` and returns
  ``gauss_offset`` of the Lorentzian's parameters; it cannot run and has no defined result. Fit
  :func:`lorentz2_offset` with ``scipy.optimize.curve_fit`` instead.
"""
from __future__ import annotations

import numpy as np

from .. import fit_periodic, is_outlier, pair_fits, remove_peaks  # noqa: F401

__all__ = [
    "pair_fits", "make_mask", "is_outlier", "remove_peaks", "get_ring", "fit_periodic", "fft_crosscorr",
    "random_pairs", "smooth", "lorentz", "lorentz2", "lorentz2_offset", "root", "gauss_offset", "gauss",
    "gauss_var", "fit_gauss_offset", "fit_gauss_offset_fixed", "fit_gauss_offset_fixed_mu",
    "fit_gauss_fixed_mu_fixed_off", "fit_gauss_var", "fit_gauss", "fwhm_gauss", "amp_gauss", "mu_gauss",
    "delta_pix", "scherrer_pixel", "get_NP_sizes", "bin_masked_image", "bin_image_naive", "bin_ndarray",
]


def make_mask(shot, zero_sigma=0.5, max_sigma=2.0):
    """LOKI's ``make_mask``: mask outliers and near-zero samples of each polar row.

    Parameters
    ----------
    shot : array_like, shape (num_q, num_phi)
        Polar intensities of one shot.
    zero_sigma : float, default 0.5
        Samples within ``± zero_sigma * std`` of zero (per row) are masked (detector gaps).
    max_sigma : float, default 2.0
        Samples brighter than ``mean + max_sigma * std`` (per row) are masked.

    Returns
    -------
    numpy.ndarray of bool, shape of ``shot``
        True = valid (kept) sample, as in LOKI.

    Raises
    ------
    ValueError
        If ``shot`` is not 2-D.
    """
    a = np.asarray(shot)
    if a.ndim != 2:
        raise ValueError(f"shot must be 2-D (num_q, num_phi), got shape {a.shape}")
    mean = a.mean(axis=1, keepdims=True)
    std = a.std(axis=1, keepdims=True)
    bright = a > mean + std * max_sigma
    near_zero = (a < std * zero_sigma) & (a > -std * zero_sigma)
    return ~(bright | near_zero)


def get_ring(pdata, pmask, iq, del_q=2, rm_peaks=True, rm_extent=1, rm_thresh=2.0):
    """LOKI's ``get_ring``: the mean of polar rows ``iq - del_q … iq + del_q``, masked, peaks optionally removed.

    Parameters
    ----------
    pdata : array_like, shape (num_q, num_phi)
        Polar intensities.
    pmask : array_like, shape of ``pdata``
        Polar mask, True (1) = valid sample. A sample of the ring is valid only where every averaged row is.
    iq : int
        Central row.
    del_q : int, default 2
        Half-width in rows; rows outside ``1 … num_q - 1`` are left out (LOKI's ``r > 0`` also drops row 0).
    rm_peaks : bool, default True
        Remove Bragg peaks with :func:`remove_peaks`.
    rm_extent : int, default 1
        ``thick`` of :func:`remove_peaks`.
    rm_thresh : float, default 2.0
        ``peak_thresh`` of :func:`remove_peaks`.

    Returns
    -------
    med : float
        Median of the positive ring values (NaN when there are none).
    ring : numpy.ndarray, shape (num_phi,)
        The averaged ring times its mask.
    mask : numpy.ndarray, shape (num_phi,)
        The ring's mask (1 = valid).

    Raises
    ------
    ValueError
        If the shapes differ or no row is in range.
    """
    pdata = np.asarray(pdata)
    pmask = np.asarray(pmask)
    if pdata.ndim != 2 or pmask.shape != pdata.shape:
        raise ValueError(f"pdata and pmask must be 2-D of one shape, got {pdata.shape} and {pmask.shape}")
    r = np.arange(iq - del_q, iq + del_q + 1)
    r = r[r < pdata.shape[0]]
    r = r[r > 0]
    if r.size == 0:
        raise ValueError(f"no polar rows in {iq} ± {del_q} (LOKI uses rows 1 … {pdata.shape[0] - 1})")
    mask = np.floor(pmask[r].mean(0))
    ring = mask * pdata[r].mean(0)
    if rm_peaks:
        ring, mask, _ = remove_peaks(ring, mask, thick=rm_extent, peak_thresh=rm_thresh)
    ring = ring * mask
    pos = ring[ring > 0]
    med = np.median(pos) if pos.size else np.nan
    return med, ring, mask


def fft_crosscorr(arx, ary):
    """LOKI's ``fft_crosscorr``: circular cross-correlation by FFT along the last axis.

    Parameters
    ----------
    arx, ary : array_like
        Signals of one shape; the correlation runs along the last axis (length n).

    Returns
    -------
    numpy.ndarray
        ``irfft(rfft(arx) * conj(rfft(ary)), n)``, i.e. ``C[k] = sum_j arx[(j + k) % n] ary[j]`` (raw sums).
    """
    arx = np.asarray(arx)
    ary = np.asarray(ary)
    n = arx.shape[-1]
    fx = np.fft.rfft(arx, n=n, axis=-1)
    fy = np.fft.rfft(ary, n=n, axis=-1)
    return np.fft.irfft(fx * np.conjugate(fy), n=n, axis=-1)


def random_pairs(total_elements, num_pairs, *, seed=None):
    """LOKI's ``random_pairs``: distinct random pairs of different indices.

    Parameters
    ----------
    total_elements : int
        Indices are drawn from ``range(total_elements)``.
    num_pairs : int
        Number of distinct pairs ``(i, j)``, ``i != j``.
    seed : int or numpy.random.Generator, optional
        Keyword-only, not in LOKI: seeds a private generator, so results are reproducible.

    Returns
    -------
    numpy.ndarray of int64, shape (num_pairs, 2)
        The pairs in the order first drawn.

    Raises
    ------
    ValueError
        If fewer than 2 elements or more pairs than ``n (n - 1)`` are asked for.

    Notes
    -----
    LOKI reseeds NumPy's global generator from the OS on every call (irreproducible, and it changes the caller's
    global random state) and returns the pairs as a set's order; here a private generator and first-drawn order.
    """
    n = int(total_elements)
    k = int(num_pairs)
    if n < 2 and k > 0:
        raise ValueError(f"total_elements must be >= 2 to draw pairs, got {total_elements}")
    if k > n * (n - 1):
        raise ValueError(f"num_pairs = {k} exceeds the {n * (n - 1)} distinct ordered pairs of {n} elements")
    rng = np.random.default_rng(seed)
    factor = 2
    pairs: list = []
    while len(pairs) < k:
        draw = rng.integers(0, n, (k * factor, 2))
        uniq = list(dict.fromkeys(map(tuple, draw.tolist())))  # LOKI: set() (any order); first-drawn order here
        pairs = [p for p in uniq if p[0] != p[1]]
        factor += 1
    return np.array(pairs[:k], dtype=np.int64).reshape(k, 2)


def smooth(x, beta=10.0, window_size=11):
    """LOKI's ``smooth``: convolution with a normalised Kaiser window over the end-reflected signal.

    Parameters
    ----------
    x : array_like, 1-D
        The signal (at least ``window_size`` samples).
    beta : float, default 10.0
        Shape parameter of ``np.kaiser``.
    window_size : int, default 11
        Window length; an even length is made odd (+1), as in LOKI.

    Returns
    -------
    numpy.ndarray, shape of ``x``
        The smoothed signal.

    Notes
    -----
    LOKI's half-width ``(window_size - 1) / 2`` is a float slice index in Python 3 (a TypeError); it is an integer
    here. Input shorter than the window raises ValueError.
    """
    x = np.asarray(x)
    window_size = int(window_size)
    if window_size % 2 == 0:
        window_size += 1
    if x.ndim != 1 or x.size < window_size:
        raise ValueError(f"x must be 1-D with at least window_size = {window_size} samples, got shape {x.shape}")
    s = np.r_[x[window_size - 1 : 0 : -1], x, x[-1:-window_size:-1]]
    w = np.kaiser(window_size, beta)
    y = np.convolve(w / w.sum(), s, mode="valid")
    b = (window_size - 1) // 2
    return y[b : len(y) - b]


def lorentz(x, p0, p1, p2, p3):
    """LOKI's ``lorentz``: Lorentzian ``(p2 / pi) (p1 / 2) / ((x - p0)^2 + p1^2 / 4) + p3``.

    Parameters
    ----------
    x : array_like
        Positions.
    p0 : float
        Centre.
    p1 : float
        Full width at half maximum.
    p2 : float
        Area.
    p3 : float
        Constant offset.

    Returns
    -------
    numpy.ndarray or float
        The Lorentzian at ``x``.
    """
    return (p2 / np.pi) * (p1 / 2.0) * (1 / ((x - p0) * (x - p0) + p1 * p1 / 4.0)) + p3


def lorentz2(x, p0, p1):
    """LOKI's ``lorentz2``: unit-area Lorentzian at ``p0`` with FWHM ``p1``.

    Parameters
    ----------
    x : array_like
        Positions.
    p0 : float
        Centre.
    p1 : float
        Full width at half maximum.

    Returns
    -------
    numpy.ndarray or float
        ``(1 / pi) (p1 / 2) / ((x - p0)^2 + p1^2 / 4)``.
    """
    return (1.0 / np.pi) * (p1 / 2.0) * (1 / ((x - p0) * (x - p0) + p1 * p1 / 4.0))


def lorentz2_offset(x, p0, p1, offset):
    """LOKI's ``lorentz2_offset``: :func:`lorentz2` plus a constant offset.

    Parameters
    ----------
    x : array_like
        Positions.
    p0 : float
        Centre.
    p1 : float
        Full width at half maximum.
    offset : float
        Constant added.

    Returns
    -------
    numpy.ndarray or float
        ``offset + lorentz2(x, p0, p1)``.
    """
    return offset + lorentz2(x, p0, p1)


def root(x, *p):
    """LOKI's ``root``: square-root model ``m sqrt(x) + b``.

    Parameters
    ----------
    x : array_like
        Positions (>= 0).
    *p : float
        ``(m, b)``: scale and offset (the ``curve_fit`` calling convention).

    Returns
    -------
    numpy.ndarray or float
        ``m sqrt(x) + b``.
    """
    m, b = p
    return m * np.power(x, 1 / 2.0) + b


def gauss_offset(x, *p):
    """LOKI's ``gauss_offset``: Gaussian over a constant, ``A exp(-(x - mu)^2 / (2 var)) + offset``.

    Parameters
    ----------
    x : array_like
        Positions.
    *p : float
        ``(A, mu, var, offset)``: amplitude, centre, variance, offset.

    Returns
    -------
    numpy.ndarray or float
        The Gaussian at ``x``.
    """
    a, mu, var, offset = p
    return a * np.exp(-((x - mu) ** 2) / (2.0 * var)) + offset


def gauss(x, *p):
    """LOKI's ``gauss``: Gaussian ``A exp(-(x - mu)^2 / (2 sigma^2))``.

    Parameters
    ----------
    x : array_like
        Positions.
    *p : float
        ``(A, mu, sigma)``: amplitude, centre, standard deviation.

    Returns
    -------
    numpy.ndarray or float
        The Gaussian at ``x``.
    """
    a, mu, sigma = p
    return a * np.exp(-((x - mu) ** 2) / (2.0 * sigma**2))


def gauss_var(x, *p):
    """LOKI's ``gauss_var``: Gaussian parametrised by its variance, ``A exp(-(x - mu)^2 / (2 var))``.

    Parameters
    ----------
    x : array_like
        Positions.
    *p : float
        ``(A, mu, var)``: amplitude, centre, variance.

    Returns
    -------
    numpy.ndarray or float
        The Gaussian at ``x``.
    """
    a, mu, var = p
    return a * np.exp(-((x - mu) ** 2) / (2.0 * var))


def _curve_fit(f, xdata, ydata, p0):
    from scipy import optimize

    try:
        return optimize.curve_fit(f, xdata=xdata, ydata=ydata, p0=p0)
    except RuntimeError:  # no convergence: LOKI returns None
        return None


def fit_gauss_offset(peak_pro, xdata, width):
    """LOKI's ``fit_gauss_offset``: fit :func:`gauss_offset` to a peak profile.

    Parameters
    ----------
    peak_pro : array_like, 1-D
        The peak profile (intensities), converted to float64.
    xdata : array_like, 1-D
        Sample positions of ``peak_pro``.
    width : float
        Starting width; the variance starts at ``width**2`` (amplitude: half the range, centre: the argmax,
        offset: the minimum, as in LOKI).

    Returns
    -------
    (params, covariance, curve) or None
        ``scipy.optimize.curve_fit``'s parameters and covariance and the fitted curve on ``xdata``; None when
        the fit does not converge (as in LOKI).
    """
    peak_pro = np.asarray(peak_pro, dtype=np.float64)
    xdata = np.asarray(xdata, dtype=np.float64)
    guess = (np.ptp(peak_pro) / 2.0, xdata[peak_pro.argmax()], width**2, peak_pro.min())
    r = _curve_fit(gauss_offset, xdata, peak_pro, guess)
    return None if r is None else (r[0], r[1], gauss_offset(xdata, *r[0]))


def fit_gauss_offset_fixed(peak_pro, xdata, mu, sigma):
    """LOKI's ``fit_gauss_offset_fixed``: amplitude and offset of a Gaussian of fixed centre and width.

    The profile is linearly resampled on 1000 points over ``xdata``'s range before fitting, as in LOKI.

    Parameters
    ----------
    peak_pro : array_like, 1-D
        The peak profile (intensities), converted to float64.
    xdata : array_like, 1-D
        Sample positions of ``peak_pro``.
    mu : float
        Fixed centre.
    sigma : float
        Fixed standard deviation.

    Returns
    -------
    (params, covariance, curve) or None
        ``scipy.optimize.curve_fit``'s parameters and covariance and the fitted curve on ``xdata``; None when
        the fit does not converge (as in LOKI). ``params = (amp, offset)``.
    """
    from scipy.interpolate import interp1d

    peak_pro = np.asarray(peak_pro, dtype=np.float64)
    xdata = np.asarray(xdata, dtype=np.float64)
    rx = np.linspace(xdata.min(), xdata.max(), 1000)
    ry = interp1d(xdata, peak_pro)(rx)

    def g(x, amp, offset):
        return amp * np.exp(-((x - mu) ** 2) / (2.0 * sigma**2)) + offset

    r = _curve_fit(g, rx, ry, (np.ptp(peak_pro) / 2.0, peak_pro.min()))
    return None if r is None else (r[0], r[1], g(xdata, *r[0]))


def fit_gauss_offset_fixed_mu(peak_pro, xdata, mu, var_guess):
    """LOKI's ``fit_gauss_offset_fixed_mu``: amplitude, offset and variance of a Gaussian at a fixed centre.

    The profile is linearly resampled on 1000 points over ``xdata``'s range before fitting, as in LOKI.

    Parameters
    ----------
    peak_pro : array_like, 1-D
        The peak profile (intensities), converted to float64.
    xdata : array_like, 1-D
        Sample positions of ``peak_pro``.
    mu : float
        Fixed centre.
    var_guess : float
        Starting variance.

    Returns
    -------
    (params, covariance, curve) or None
        ``scipy.optimize.curve_fit``'s parameters and covariance and the fitted curve on ``xdata``; None when
        the fit does not converge (as in LOKI). ``params = (amp, offset, var)``.
    """
    from scipy.interpolate import interp1d

    peak_pro = np.asarray(peak_pro, dtype=np.float64)
    xdata = np.asarray(xdata, dtype=np.float64)
    rx = np.linspace(xdata.min(), xdata.max(), 1000)
    ry = interp1d(xdata, peak_pro)(rx)

    def g(x, amp, offset, var):
        return amp * np.exp(-((x - mu) ** 2) / (2.0 * var)) + offset

    r = _curve_fit(g, rx, ry, (np.ptp(peak_pro) / 2.0, peak_pro.min(), var_guess))
    return None if r is None else (r[0], r[1], g(xdata, *r[0]))


def fit_gauss_fixed_mu_fixed_off(peak_pro, xdata, mu, var_guess, offset):
    """LOKI's ``fit_gauss_fixed_mu_fixed_off``: amplitude and variance of a Gaussian at a fixed centre and offset.

    Parameters
    ----------
    peak_pro : array_like, 1-D
        The peak profile (intensities), converted to float64.
    xdata : array_like, 1-D
        Sample positions of ``peak_pro``.
    mu : float
        Fixed centre.
    var_guess : float
        Starting variance (the amplitude starts at ``max(peak_pro) - offset``).
    offset : float
        Fixed constant offset.

    Returns
    -------
    (params, covariance, curve) or None
        ``scipy.optimize.curve_fit``'s parameters and covariance and the fitted curve on ``xdata``; None when
        the fit does not converge (as in LOKI). ``params = (amp, var)``.
    """
    peak_pro = np.asarray(peak_pro, dtype=np.float64)
    xdata = np.asarray(xdata, dtype=np.float64)

    def g(x, amp, var):
        return amp * np.exp(-((x - mu) ** 2) / (2.0 * var)) + offset

    r = _curve_fit(g, xdata, peak_pro, (peak_pro.max() - offset, var_guess))
    return None if r is None else (r[0], r[1], g(xdata, *r[0]))


def fit_gauss_var(peak_pro, xdata, var):
    """LOKI's ``fit_gauss_var``: fit :func:`gauss_var` to a peak profile.

    Parameters
    ----------
    peak_pro : array_like, 1-D
        The peak profile (intensities), converted to float64.
    xdata : array_like, 1-D
        Sample positions of ``peak_pro``.
    var : float
        Starting variance (amplitude: half the range, centre: the argmax, as in LOKI).

    Returns
    -------
    (params, covariance, curve) or None
        ``scipy.optimize.curve_fit``'s parameters and covariance and the fitted curve on ``xdata``; None when
        the fit does not converge (as in LOKI).

    Notes
    -----
    As in LOKI the returned curve is ``gauss(xdata, *params)``: the fitted variance is used as a sigma there.
    This is LOKI's result, reproduced so that scripts give the same numbers.
    """
    peak_pro = np.asarray(peak_pro, dtype=np.float64)
    xdata = np.asarray(xdata, dtype=np.float64)
    r = _curve_fit(gauss_var, xdata, peak_pro, (np.ptp(peak_pro) / 2.0, xdata[peak_pro.argmax()], var))
    return None if r is None else (r[0], r[1], gauss(xdata, *r[0]))


def fit_gauss(peak_pro, xdata, width):
    """LOKI's ``fit_gauss``: fit :func:`gauss` to a peak profile.

    Parameters
    ----------
    peak_pro : array_like, 1-D
        The peak profile (intensities), converted to float64.
    xdata : array_like, 1-D
        Sample positions of ``peak_pro``.
    width : float
        Starting sigma (amplitude: half the range, centre: the argmax, as in LOKI).

    Returns
    -------
    (params, covariance, curve) or None
        ``scipy.optimize.curve_fit``'s parameters and covariance and the fitted curve on ``xdata``; None when
        the fit does not converge (as in LOKI). ``params = (A, mu, sigma)``.
    """
    peak_pro = np.asarray(peak_pro, dtype=np.float64)
    xdata = np.asarray(xdata, dtype=np.float64)
    r = _curve_fit(gauss, xdata, peak_pro, (np.ptp(peak_pro) / 2.0, xdata[peak_pro.argmax()], width))
    return None if r is None else (r[0], r[1], gauss(xdata, *r[0]))


def _fit_gauss_or_raise(peak_pro, xdata, width):
    r = fit_gauss(peak_pro, xdata, width)
    if r is None:  # LOKI unpacks None and fails with a TypeError
        raise ValueError("fit_gauss did not converge on this profile")
    return r


_GAUSS_DOC = """LOKI's ``{name}``: {what} of :func:`fit_gauss`.

    Parameters
    ----------
    peak_pro : array_like, 1-D
        The peak profile (intensities), converted to float64.
    xdata : array_like, 1-D
        Sample positions of ``peak_pro``.
    width : float
        Starting sigma of :func:`fit_gauss`.

    Returns
    -------
    float
        {returns}

    Raises
    ------
    ValueError
        If the fit does not converge (LOKI fails with a TypeError unpacking None).
    """


def _gauss_parameter(name, index, scale, what, returns):
    # LOKI's three one-line wrappers of fit_gauss differ only in which parameter they return.
    def f(peak_pro, xdata, width):
        return scale * _fit_gauss_or_raise(peak_pro, xdata, width)[0][index]

    f.__name__ = f.__qualname__ = name
    f.__doc__ = _GAUSS_DOC.format(name=name, what=what, returns=returns)
    return f


fwhm_gauss = _gauss_parameter("fwhm_gauss", 2, 2.3548, "the full width at half maximum, ``2.3548 sigma``",
                              "The full width at half maximum, ``2.3548 sigma`` of the fitted Gaussian.")
amp_gauss = _gauss_parameter("amp_gauss", 0, 1.0, "the amplitude ``A``", "The amplitude ``A`` of the fitted Gaussian.")
mu_gauss = _gauss_parameter("mu_gauss", 1, 1.0, "the centre ``mu``", "The centre ``mu`` of the fitted Gaussian.")


def delta_pix(qR, NP_diam, wavelen, q111, fraction=1 / 3.0):
    """LOKI's ``delta_pix``: the Bragg peak's radial width in pixels for a nanoparticle of given diameter.

    Parameters
    ----------
    qR : float
        Radius of the ring in pixels.
    NP_diam : float
        Particle diameter (the unit of ``wavelen``).
    wavelen : float
        Wavelength in Å.
    q111 : float
        q of the ring in Å⁻¹.
    fraction : float, default 1/3
        Fraction of the volume-equivalent cube size taken as the crystallite size.

    Returns
    -------
    float or numpy.ndarray
        ``4 pi 0.9 (qR / q111) / (size cos theta)`` with ``size = fraction (4/3 pi (NP_diam/2)^3)^(1/3)`` and
        ``theta = arcsin(q111 wavelen / 4 pi)``.

    Notes
    -----
    Uses ``np.pi`` where LOKI's code names an undefined ``pi`` (a NameError in LOKI).
    """
    np_vol = (4 / 3) * np.pi * ((NP_diam / 2) ** 3)
    np_size = np.power(np_vol, 1 / 3.0) * fraction
    th = np.arcsin(q111 * wavelen / 4 / np.pi)
    return 4 * np.pi * 0.9 * (qR / q111) / (np_size * np.cos(th))


def scherrer_pixel(qR, pixsize, detdist, wavelen, NP_diam, extra_fac=1.0, K=0.9):
    """LOKI's ``scherrer_pixel``: Scherrer peak width in pixels at ring radius ``qR``.

    Parameters
    ----------
    qR : float
        Radius of the ring in pixels.
    pixsize : float
        Pixel size (the unit of ``detdist``).
    detdist : float
        Sample-detector distance.
    wavelen : float
        Wavelength (the unit of ``NP_diam``).
    NP_diam : float
        Particle diameter; its volume-equivalent cube size is used.
    extra_fac : float, default 1.0
        The width is divided by this factor.
    K : float, default 0.9
        Scherrer constant.

    Returns
    -------
    float or numpy.ndarray
        ``qR K wavelen / (size cos theta) / extra_fac`` with ``theta = arctan(qR pixsize / detdist) / 2``.
    """
    np_vol = (4 / 3) * np.pi * ((NP_diam / 2) ** 3)
    np_size = np.power(np_vol, 1 / 3.0)
    th = np.arctan(qR * pixsize / detdist) / 2.0
    del_2th = K * wavelen / np_size / np.cos(th) / extra_fac
    return qR * del_2th


def get_NP_sizes(Iphi, wavelen=1.442, q=2.668, k=0.94, rad="sphere"):
    """LOKI's ``get_NP_sizes``: nanoparticle sizes (nm) from the angular widths of the Bragg peaks on a ring.

    The profile is smoothed (:func:`smooth` with beta 30, window 10), interpolated ×10, peaks found by
    :func:`is_outlier` (threshold 3), each peak's variance fitted (:func:`fit_gauss_fixed_mu_fixed_off`) and the
    FWHM converted by Scherrer's formula.

    Parameters
    ----------
    Iphi : array_like, 1-D
        Intensity around the ring, evenly spaced over 2 pi.
    wavelen : float, default 1.442
        Wavelength in Å.
    q : float, default 2.668
        q of the ring in Å⁻¹.
    k : float, default 0.94
        Scherrer constant.
    rad : {"sphere", "tetra"}, default "sphere"
        Particle shape of the size formula.

    Returns
    -------
    list of float
        One diameter (nm) per peak whose fit converged and gave a finite size.

    Notes
    -----
    Uses ``np.median``, ``np.hstack``, ``np.log`` where LOKI's code names undefined ``median``, ``hstack``,
    ``log`` (it only ran in interactive ``from pylab import *`` sessions); peaks without a minimum on both sides
    or whose fit does not converge are skipped (LOKI fails); an unknown ``rad`` raises ValueError.
    """
    from scipy.interpolate import interp1d
    from scipy.signal import argrelextrema

    if rad not in ("sphere", "tetra"):
        raise ValueError(f"rad must be 'sphere' or 'tetra', got {rad!r}")
    th = np.arcsin(q * wavelen / (4 * np.pi))
    fact = k * wavelen / np.cos(th)
    if rad == "sphere":
        def rad_form(beta):
            return fact * np.power(4 * np.pi / 3.0, 1 / 3.0) / beta
    else:
        def rad_form(beta):
            return fact * np.power(6, 1 / 3.0) * np.power(2, 1 / 6.0) / beta
    d = np.asarray(Iphi, dtype=np.float64)
    n = d.shape[0]
    dphi = 2 * np.pi / n
    d_ = smooth(d, 30, 10)
    x = np.linspace(0, n, 10 * n)
    interp = interp1d(np.arange(n), d_, bounds_error=0, fill_value=np.median(d_))
    dx = interp(x)
    peak_pos = np.nonzero(is_outlier(dx, 3))[0]
    d_peaks = np.ones_like(dx) * np.median(d_)
    d_peaks[peak_pos] = dx[peak_pos]
    edge = np.zeros_like(dx)
    edge[peak_pos] = 1
    re = np.nonzero(np.roll(edge, -1) - edge < 0)[0]
    le = np.nonzero(np.roll(edge, 1) - edge < 0)[0]
    mins = argrelextrema(d_peaks, np.less)[0]
    all_mins = np.sort(np.hstack((le, re, mins)))
    maxs = argrelextrema(d_peaks, np.greater)[0]
    diams = []
    for mx in maxs:
        min_l = all_mins[all_mins < mx]
        min_r = all_mins[all_mins > mx]
        if min_l.size == 0 or min_r.size == 0:
            continue
        a = np.arange(min_l[-1], min_r[0])
        gfit = fit_gauss_fixed_mu_fixed_off(d_peaks[a], x[a], x[mx], np.sqrt(10.0), np.median(d_))
        if gfit is None:
            continue
        width = 2 * np.sqrt(2 * np.log(2)) * np.sqrt(gfit[0][1])
        diam_nm = rad_form(width * dphi) / 5
        if np.isnan(diam_nm):
            continue
        diams.append(diam_nm)
    return diams


def _check_bin(image, bin_fac):
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D, got shape {image.shape}")
    b = int(bin_fac)
    if b != bin_fac or b < 1:
        raise ValueError(f"bin_fac must be a positive integer, got {bin_fac!r}")
    if image.shape[0] % b or image.shape[1] % b:
        raise ValueError(f"image shape {image.shape} is not a multiple of bin_fac = {b} (LOKI's branch for this "
                         "case cannot run); use xcca.bin_sum / xcca.bin_max")
    return b


def bin_masked_image(image, mask, bin_fac):
    """LOKI's ``bin_masked_image``: mean of the valid pixels in each ``bin_fac × bin_fac`` block.

    Parameters
    ----------
    image : array_like, 2-D
        The image; both sizes must be multiples of ``bin_fac``.
    mask : array_like, shape of ``image``
        True = valid pixel (LOKI's convention); invalid pixels are left out of each block's mean.
    bin_fac : int
        Block size.

    Returns
    -------
    numpy.ndarray, shape (Y // bin_fac, X // bin_fac)
        The data of NumPy's masked mean (blocks without valid pixels: the value the masked mean leaves there).

    Raises
    ------
    ValueError
        For a shape not a multiple of ``bin_fac`` (LOKI's branch for it references an undefined ``self`` and
        always fails; use :func:`xcca.bin_sum` / :func:`xcca.bin_max`), a bad ``bin_fac`` or a mask of another
        shape.
    """
    image = np.asarray(image)
    b = _check_bin(image, bin_fac)
    mask = np.asarray(mask)
    if mask.shape != image.shape:
        raise ValueError(f"mask must have the image's shape {image.shape}, got {mask.shape}")
    img = np.ma.MaskedArray(image, mask=~mask.astype(bool))
    h, w = image.shape[0] // b, image.shape[1] // b
    return img.reshape([h, b, w, b]).mean(3).mean(1).data


def bin_image_naive(image, bin_fac):
    """LOKI's ``bin_image_naive``: mean of each ``bin_fac × bin_fac`` block.

    Parameters
    ----------
    image : array_like, 2-D
        The image; both sizes must be multiples of ``bin_fac``.
    bin_fac : int
        Block size.

    Returns
    -------
    numpy.ndarray, shape (Y // bin_fac, X // bin_fac)
        The block means.

    Raises
    ------
    ValueError
        For a shape not a multiple of ``bin_fac`` (LOKI's branch for it always fails; use :func:`xcca.bin_sum`)
        or a bad ``bin_fac``.
    """
    image = np.asarray(image)
    b = _check_bin(image, bin_fac)
    h, w = image.shape[0] // b, image.shape[1] // b
    return image.reshape([h, b, w, b]).mean(3).mean(1)


def bin_ndarray(ndarray, new_shape):
    """LOKI's ``bin_ndarray``: sum over blocks so that the result has ``new_shape``.

    Parameters
    ----------
    ndarray : array_like
        The array to bin.
    new_shape : sequence of int
        The result's shape, one entry per axis, each dividing the corresponding size.

    Returns
    -------
    numpy.ndarray, shape new_shape
        Block sums.

    Raises
    ------
    ValueError
        If ``new_shape`` does not divide the shape axis by axis.
    """
    a = np.asarray(ndarray)
    if len(new_shape) != a.ndim or any(c % d for d, c in zip(new_shape, a.shape)):
        raise ValueError(f"new_shape {tuple(new_shape)} must divide the shape {a.shape} axis by axis")
    pairs = [(d, c // d) for d, c in zip(new_shape, a.shape)]
    a = a.reshape([v for p in pairs for v in p])
    for i in range(len(new_shape)):
        a = a.sum(-1 * (i + 1))
    return a
