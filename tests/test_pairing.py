"""xcca.pair_shots ("loki" and "greedy") against the full-matrix NumPy references in xcca.reference."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import xcca
from xcca import loki
from xcca import reference as ref


def _check(res, expected):
    pairs, dist, unpaired = expected
    np.testing.assert_array_equal(res.pairs, pairs)
    np.testing.assert_array_equal(res.distances, dist)  # same rounding: bit-identical
    np.testing.assert_array_equal(res.unpaired, unpaired)
    assert res.pairs.dtype == np.int64 and res.pairs.shape == (len(dist), 2)


@st.composite
def feature_sets(draw):
    n = draw(st.integers(2, 400))
    d = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["normal", "grid", "dup", "aniso"]))
    if kind == "normal":
        x = rng.standard_normal((n, d))
    elif kind == "grid":  # small integers: many exact distance ties
        x = rng.integers(0, 4, (n, d)).astype(np.float64)
    elif kind == "dup":  # many identical shots
        x = rng.standard_normal((max(1, n // 5), d))[rng.integers(0, max(1, n // 5), n)]
    else:
        x = rng.standard_normal((n, d)) * np.logspace(3, -2, d)
    dtype = draw(st.sampled_from([np.float64, np.float32, ">f8", np.int32]))
    return x.astype(dtype) if np.dtype(dtype).kind == "f" else np.round(x * 3).astype(dtype)


@given(feature_sets(), st.sampled_from([1, 2, None]))
def test_loki_matches_full_matrix_reference(x, threads):
    x_before = x.copy()
    _check(xcca.pair_shots(x, "loki", n_threads=threads), ref.pair_loki(x))
    np.testing.assert_array_equal(x, x_before)


@given(feature_sets(), st.sampled_from([1, 2, None]))
def test_greedy_matches_bruteforce_reference(x, threads):
    _check(xcca.pair_shots(x, "greedy", n_threads=threads), ref.pair_greedy(x))


@pytest.mark.parametrize("n", [1999, 2000])
@pytest.mark.parametrize("d", [1, 3, 16])
def test_large_against_reference(n, d):
    # Beyond one k-d tree leaf (256 shots): pruning and deletions are exercised; odd and even N.
    rng = np.random.default_rng(n * d)
    x = rng.standard_normal((n, d)) * np.logspace(1, -1, d)
    if d == 1:
        x = np.round(x * 50)  # ties in 1-D
    _check(xcca.pair_shots(x, "loki"), ref.pair_loki(x))
    _check(xcca.pair_shots(x, "greedy"), ref.pair_greedy(x))


def test_non_contiguous_and_1d():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((301, 8))[:, ::2]
    _check(xcca.pair_shots(x), ref.pair_loki(np.ascontiguousarray(x)))
    v = rng.standard_normal(51)
    _check(xcca.pair_shots(v, "greedy"), ref.pair_greedy(v[:, None]))


def test_semantics_small():
    x = np.array([[0.0], [10.0], [1.0], [11.0], [5.0]])
    r = xcca.pair_shots(x, "loki")
    assert r.pairs.tolist() == [[0, 2], [1, 3]] and r.unpaired.tolist() == [4]
    # Tie: shot 0 is equally far from 1 and 2 -> the lowest index.
    r = xcca.pair_shots(np.array([0.0, 1.0, -1.0, 5.0]), "loki")
    assert r.pairs.tolist() == [[0, 1], [2, 3]]
    g = xcca.pair_shots(np.array([0.0, 3.0, 4.0, 10.0]), "greedy")
    assert g.pairs.tolist() == [[1, 2], [0, 3]]
    np.testing.assert_allclose(g.distances, [1.0, 10.0])


def test_loki_pair_fits_api():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((41, 7))
    pairs, dists = loki.pair_fits(x)
    p, d, _ = ref.pair_loki(x)
    assert pairs == p.tolist() and isinstance(pairs[0], list)
    np.testing.assert_array_equal(dists, d)


@pytest.mark.parametrize(
    "bad, exc, match",
    [
        (np.array([[0.0, 1.0], [np.nan, 2.0], [3.0, 4.0]]), ValueError, "shot 1"),
        (np.array([[0.0], [np.inf]]), ValueError, "shot 1"),
        (np.zeros((1, 3)), ValueError, "at least 2"),
        (np.zeros((0, 3)), ValueError, "at least 2"),
        ([[1.0, 2.0], [3.0]], ValueError, "features"),
        (np.zeros((4, 2, 2)), ValueError, "2-D"),
        (np.zeros((4, 0)), ValueError, "column"),
        (np.array([[1 + 1j], [2.0]]), TypeError, "features"),
        (np.array([["a"], ["b"]]), TypeError, "features"),
    ],
)
def test_bad_input(bad, exc, match):
    with pytest.raises(exc, match=match):
        xcca.pair_shots(bad)


def test_bad_method_and_threads():
    with pytest.raises(ValueError, match="method"):
        xcca.pair_shots(np.zeros((4, 2)), "exact")
    with pytest.raises(ValueError, match="n_threads"):
        xcca.pair_shots(np.zeros((4, 2)), n_threads=0)


def test_fit_features_pair_like_full_curves():
    # Whitened coefficients (deg + 1 dims) give the same pairs as the full masked curves (n dims).
    rng = np.random.default_rng(11)
    n, N = 600, 300
    phi = 2 * np.pi * np.arange(n) / n
    mask = np.ones(n, bool)
    mask[100:160] = False
    mask[400:420] = False
    a = 1 + 0.3 * rng.standard_normal((N, 1))
    rings = a * (100 + 10 * rng.standard_normal((N, 3)) @ np.array([np.cos(phi), np.sin(2 * phi), np.cos(3 * phi)]))
    rings += rng.standard_normal(rings.shape)
    fit = xcca.fit_periodic(rings, mask, 15)
    assert fit.features().shape == (N, 16)
    d_feat = np.sqrt(ref.pairwise_sq_distances(fit.features()))
    d_curve = np.sqrt(ref.pairwise_sq_distances(fit.curves))
    np.testing.assert_allclose(d_feat, d_curve, rtol=1e-9, atol=1e-9 * d_curve.max())
    for method in ("loki", "greedy"):
        a_ = xcca.pair_shots(fit, method)
        b_ = xcca.pair_shots(fit.curves, method)
        np.testing.assert_array_equal(a_.pairs, b_.pairs)
        np.testing.assert_allclose(a_.distances, b_.distances, rtol=1e-9)


def test_fit_with_failed_ring_names_the_shot():
    rings = np.random.default_rng(0).uniform(1, 2, (5, 50))
    mask = np.ones((5, 50), bool)
    mask[3, 5:] = False  # ring 3: too few samples for deg 15
    with pytest.warns(xcca.FitWarning):
        fit = xcca.fit_periodic(rings, mask, 15, overlap=0.0)
    with pytest.raises(ValueError, match="shot 3"):
        xcca.pair_shots(fit)


def test_bragg_rings_end_to_end(data_dir):
    # The LOKI tutorial path: fit each real gold ring with 111_mask at degree 15, pair the yfit curves.
    import h5py

    with h5py.File(data_dir / "bragg_rings.hdf5", "r") as f:
        rings = f["111_Bragg_rings"][()]
        mask = f["111_mask"][()]
    yfits = []
    for ring in rings:
        ofit, fit, yfit = loki.fit_periodic(ring, mask, 15)
        yfits.append(yfit)
        np.testing.assert_allclose(yfit, ref.fit_periodic(ring, mask, 15), rtol=1e-9, atol=1e-9 * np.abs(yfit).max())
    yfits = np.array(yfits)
    pairs, dists = loki.pair_fits(yfits)
    p, d, un = ref.pair_loki(yfits)
    assert pairs == p.tolist() and len(pairs) == 7 and un.size == 0
    np.testing.assert_array_equal(dists, d)
    # The batched fit result pairs identically in 16 dimensions.
    res = xcca.fit_periodic(rings, mask, 15)
    np.testing.assert_allclose(res.curves, yfits, rtol=1e-9, atol=1e-9 * np.abs(yfits).max())
    for method in ("loki", "greedy"):
        np.testing.assert_array_equal(xcca.pair_shots(res, method).pairs, xcca.pair_shots(yfits, method).pairs)
