"""fit_periodic, is_outlier and remove_peaks against numpy.polynomial / xcca.reference, and LOKI's own formulas."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import xcca
from xcca import loki
from xcca import reference as ref


def _loki_yfit(data, mask, deg, overlap=0.2):
    """LOKI's fit_periodic (power-basis np.ma.polyfit), Python 3 — the original algorithm."""
    n = len(data)
    nn = int(overlap * n)
    data_m = data * mask
    y = np.zeros(n + 2 * nn)
    y[nn : n + nn] = data_m
    y[:nn] = data_m[-nn:]
    y[-nn:] = data_m[:nn]
    x = np.arange(-nn, n + nn)
    fit = np.ma.polyfit(np.ma.masked_where(y == 0, x), y, deg=deg)
    return fit, np.polyval(fit, np.arange(n)) * mask


@st.composite
def ring_sets(draw):
    n_rings = draw(st.integers(1, 6))
    n = draw(st.integers(17, 300))
    deg = draw(st.integers(0, 8))
    overlap = draw(st.sampled_from([0.0, 0.1, 0.2, 0.5]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    phi = 2 * np.pi * np.arange(n) / n
    rings = 50 + 10 * np.cos(phi)[None] * rng.uniform(0.5, 2, (n_rings, 1)) + rng.standard_normal((n_rings, n))
    shared = draw(st.booleans())
    mask = rng.random(n if shared else (n_rings, n)) > 0.2
    if draw(st.booleans()):  # zero-valued valid samples are excluded, as in LOKI
        rings[rng.random(rings.shape) < 0.05] = 0
    dtype = draw(st.sampled_from([np.float64, np.float32, ">f8", np.uint16, np.int32, np.int64]))
    rings = rings.astype(dtype)
    if draw(st.booleans()):  # non-contiguous rows
        rings = np.repeat(rings, 2, axis=1)[:, ::2]
    return rings, mask, deg, overlap


@given(ring_sets())
def test_fit_matches_numpy_polynomial(case):
    rings, mask, deg, overlap = case
    before = rings.copy(), mask.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", xcca.FitWarning)
        fit = xcca.fit_periodic(rings, mask, deg, overlap)
    np.testing.assert_array_equal(rings, before[0])
    np.testing.assert_array_equal(mask, before[1])
    assert fit.curves.shape == rings.shape
    assert fit.curves.dtype == (np.float32 if rings.dtype.kind == "f" and rings.dtype.itemsize == 4 else np.float64)
    for r in range(rings.shape[0]):
        m = mask if mask.ndim == 1 else mask[r]
        expect = ref.fit_periodic(rings[r], m, deg, overlap)
        if not fit.ok[r]:
            assert np.isnan(expect).all() and np.isnan(fit.curves[r]).all()
            continue
        tol = 1e-5 if rings.dtype == np.float32 else 1e-9
        np.testing.assert_allclose(fit.curves[r], expect, rtol=tol, atol=tol * np.abs(expect).max())


def test_fit_equals_loki_where_well_conditioned():
    rng = np.random.default_rng(1)
    n = 64
    phi = 2 * np.pi * np.arange(n) / n
    mask = np.ones(n, bool)
    mask[10:14] = False
    for _ in range(5):
        ring = 100 + 20 * np.cos(phi + rng.uniform(0, 6)) + rng.standard_normal(n)
        fit_l, yfit_l = _loki_yfit(ring, mask, 5)
        ofit, fit, yfit = loki.fit_periodic(ring, mask, 5)
        np.testing.assert_allclose(yfit, yfit_l, rtol=1e-6, atol=1e-6 * np.abs(yfit_l).max())
        np.testing.assert_allclose(fit, fit_l, rtol=1e-6, atol=1e-12)
        x = np.arange(-12, n + 12)
        np.testing.assert_allclose(ofit, np.polynomial.chebyshev.chebfit(x, np.polyval(fit_l, x), 5), rtol=1e-5)


def test_fit_real_rings_close_to_loki(data_dir):
    import h5py

    with h5py.File(data_dir / "bragg_rings.hdf5", "r") as f:
        rings = f["111_Bragg_rings"][()]
        mask = f["111_mask"][()]
    res = xcca.fit_periodic(rings, mask, 15)
    assert res.ok.all() and res.coef.shape == (14, 16)
    for r in range(rings.shape[0]):
        _, yfit_l = _loki_yfit(rings[r].astype(float), mask, 15)
        # LOKI's degree-15 power basis over x up to 6000 is near its conditioning limit; agreement is still 1e-6.
        np.testing.assert_allclose(res.curves[r], yfit_l, rtol=1e-6, atol=1e-6 * np.abs(yfit_l).max())


def test_fit_single_ring_and_evaluate():
    n = 100
    ring = 3 + np.arange(n) * 0.01
    fit = xcca.fit_periodic(ring, None, 1, overlap=0.0)
    assert fit.curves.shape == (n,)
    np.testing.assert_allclose(fit.curves, ring, rtol=1e-12)
    np.testing.assert_allclose(fit.evaluate([0.5, 99.0])[0], [3.005, 3.99], rtol=1e-12)


def test_fit_too_few_samples_reported_not_raised():
    rings = np.ones((3, 40))
    mask = np.ones((3, 40), bool)
    mask[1, 3:] = False
    with pytest.warns(xcca.FitWarning, match="ring 1"):
        fit = xcca.fit_periodic(rings, mask, 5, overlap=0.0)
    assert fit.ok.tolist() == [True, False, True]
    assert np.isnan(fit.curves[1]).all() and np.isfinite(fit.curves[[0, 2]]).all()


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(deg=-1), ValueError, "deg"),
        (dict(deg=2.5), TypeError, "deg"),
        (dict(overlap=0.6), ValueError, "overlap"),
        (dict(overlap=-0.1), ValueError, "overlap"),
        (dict(mask=np.ones(7, bool)), ValueError, "mask"),
        (dict(mask=np.ones((3, 20), bool)), ValueError, "mask"),
    ],
)
def test_fit_bad_input(kwargs, exc, match):
    args = dict(rings=np.ones((2, 20)), mask=None, deg=3, overlap=0.2)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        xcca.fit_periodic(**args)


def test_fit_bad_rings():
    with pytest.raises(ValueError, match="rings"):
        xcca.fit_periodic([[1.0, 2.0], [3.0]], None, 1)
    with pytest.raises(ValueError, match="ring 1"):
        xcca.fit_periodic(np.array([[1.0, 2, 3, 4], [1, np.nan, 3, 4]]), None, 1)
    with pytest.raises(TypeError, match="rings"):
        xcca.fit_periodic(np.ones(5, complex), None, 1)


def _loki_is_outlier(points, thresh=3.5):
    if len(points.shape) == 1:
        points = points[:, None]
    diff = np.sqrt(np.sum((points - np.median(points, axis=0)) ** 2, axis=-1))
    return 0.6745 * diff / np.median(diff) > thresh


@given(st.integers(0, 2**32 - 1), st.integers(1, 3), st.integers(3, 200), st.floats(1.0, 5.0))
def test_is_outlier_matches_loki(seed, d, k, thresh):
    rng = np.random.default_rng(seed)
    pts = rng.standard_cauchy((k, d)) if d > 1 else rng.standard_cauchy(k)
    np.testing.assert_array_equal(xcca.is_outlier(pts, thresh), _loki_is_outlier(pts, thresh))
    np.testing.assert_array_equal(loki.is_outlier(pts, thresh), ref.is_outlier(pts, thresh))


def test_is_outlier_mad_zero():
    pts = np.array([1.0, 1.0, 1.0, 1.0, 50.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not xcca.is_outlier(pts).any()


@st.composite
def peak_cases(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(8, 200))
    n_rings = draw(st.integers(1, 4))
    rings = 100 + rng.standard_normal((n_rings, n))
    for _ in range(draw(st.integers(0, 4))):
        rings[rng.integers(0, n_rings), rng.integers(0, n)] += 50  # Bragg peaks, also at the seam
    if draw(st.booleans()):
        rings[:, 0] += 60
    mask = rng.random((n_rings, n)) > 0.1
    thick = draw(st.sampled_from([None, 0, 1, 3]))
    base = draw(st.sampled_from([None, "arr"]))
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    return rings.astype(dtype), mask, thick, (100 + 0.01 * np.arange(n) * np.ones((n_rings, 1)) if base else None)


@given(peak_cases(), st.sampled_from([2.0, 3.0]))
def test_remove_peaks_matches_reference(case, thresh):
    rings, mask, thick, base = case
    before = rings.copy()
    cleaned, new_mask, removed = xcca.remove_peaks(rings, mask, baseline=base, peak_thresh=thresh, thick=thick)
    np.testing.assert_array_equal(rings, before)
    assert cleaned.dtype == rings.dtype and new_mask.dtype == bool
    for r in range(rings.shape[0]):
        b = None if base is None else np.broadcast_to(base, rings.shape)[r]
        c, m, rem = ref.remove_peaks(rings[r], mask[r], b, thresh, thick)
        np.testing.assert_array_equal(new_mask[r], m)
        np.testing.assert_array_equal(cleaned[r], c)
        np.testing.assert_array_equal(removed[r], rem)


def test_remove_peaks_wraps_and_loki_api():
    ring = np.full(50, 10.0) + np.random.default_rng(0).standard_normal(50) * 0.1
    ring[0] = 100.0  # a peak at the seam
    mask = np.ones(50, dtype=int)
    c, m, rem = loki.remove_peaks(ring, mask, thick=2)
    assert m.dtype == mask.dtype
    assert m[[48, 49, 0, 1, 2]].tolist() == [0] * 5 and m[3] == 1 and m[47] == 1  # wraps around (LOKI clips)
    assert rem[0] == 100.0 and c[0] == 0
    c2, m2, rem2 = xcca.remove_peaks(ring, mask.astype(bool), thick=2)
    np.testing.assert_array_equal(m2, m.astype(bool))
    # A Chebyshev baseline in raw sample coordinates (LOKI's coef) is subtracted before the test.
    x = np.arange(50)
    slope = ring + 5 * x
    _, m3, _ = loki.remove_peaks(slope, mask, coef=np.polynomial.chebyshev.chebfit(x, 10 + 5 * x, 1))
    assert m3[0] == 0 and m3[1:].all()


def test_remove_peaks_with_fit_baseline():
    rng = np.random.default_rng(2)
    n = 300
    phi = 2 * np.pi * np.arange(n) / n
    rings = 100 + 30 * np.cos(phi) + rng.standard_normal((3, n))
    rings[1, 77] += 40
    fit = xcca.fit_periodic(rings, None, 6)
    _, m, rem = xcca.remove_peaks(rings, None, baseline=fit, peak_thresh=5.0)
    assert (~m).sum() == 1 and not m[1, 77] and rem[1, 77] == rings[1, 77]
