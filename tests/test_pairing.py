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


# ===== issue 15: any intrinsic dimension, duplicates, scaling, groups, random pairs =====

from hypothesis import HealthCheck, settings  # noqa: E402


@pytest.fixture(params=["tree", "gemm", "dense", "auto"])
def engine(request, monkeypatch):
    """Forces the k-d tree, the GEMM-style scan or the dense all-pairs engine (the run-time choice otherwise): all
    must be exact."""
    if request.param == "auto":
        monkeypatch.delenv("XCCA_PAIRING_ENGINE", raising=False)
    else:
        monkeypatch.setenv("XCCA_PAIRING_ENGINE", request.param)
    return request.param


def _kind(kind, n, d, rng):
    if kind == "iid":
        return rng.standard_normal((n, d))
    if kind == "lowrank":
        r = max(1, d // 8)
        return rng.standard_normal((n, r)) @ rng.standard_normal((r, d)) + 1e-3 * rng.standard_normal((n, d))
    if kind == "clustered":  # tight clusters far from the origin: distances tiny next to the norms
        c = 100 * rng.standard_normal((7, d))
        return c[rng.integers(0, 7, n)] + 1e-2 * rng.standard_normal((n, d))
    if kind == "dup":
        return rng.standard_normal((max(2, n // 6), d))[rng.integers(0, max(2, n // 6), n)]
    if kind == "grid":  # exact distance ties between distinct points
        return rng.integers(0, 3, (n, d)).astype(np.float64)
    raise AssertionError(kind)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(2, 700), st.sampled_from([2, 3, 5, 16, 40, 300]),
       st.sampled_from(["iid", "lowrank", "clustered", "dup", "grid"]), st.integers(0, 2**32 - 1),
       st.sampled_from([1, 2]))
def test_identical_to_reference_any_dimension(engine, n, d, kind, seed, threads):
    if d == 300:
        n = min(n, 250)
    x = _kind(kind, n, d, np.random.default_rng(seed))
    _check(xcca.pair_shots(x, "loki", n_threads=threads), ref.pair_loki(x))
    _check(xcca.pair_shots(x, "greedy", n_threads=threads), ref.pair_greedy(x))


@pytest.mark.parametrize("kind", ["iid", "clustered", "dup", "grid"])
def test_large_high_dimension(engine, kind):
    # Beyond one query group (240) and chunk (2048 points at D = 16), so the blocked scan's bookkeeping is exercised.
    x = _kind(kind, 2600, 16, np.random.default_rng(7))
    _check(xcca.pair_shots(x, "loki"), ref.pair_loki(x))
    _check(xcca.pair_shots(x, "greedy"), ref.pair_greedy(x))


@pytest.mark.parametrize("shape", [(14, 5000), (150, 2000), (700, 500), (1100, 500)])
@pytest.mark.parametrize("kind", ["iid", "lowrank", "dup", "curves"])
def test_high_dimension_identical_to_reference(engine, shape, kind):
    # LOKI pairs whole ring profiles (14 shots x 5000 samples in its tutorial): D in the thousands, dense engine for
    # few shots, GEMM scan with rechecks every 4 candidates (D >= 64) beyond.
    n, d = shape
    if engine in ("tree", "dense") and n * n * d > 2e8:
        pytest.skip("the forced engine is the slow choice here; 'auto' and 'gemm' cover the size")
    rng = np.random.default_rng(n + d)
    if kind == "curves":  # smooth ring profiles: intensity and a few harmonics vary, plus noise
        phi = np.linspace(0, 2 * np.pi, d, endpoint=False)
        x = 1000 * (1 + 0.2 * rng.standard_normal((n, 1))) * (
            1 + 0.05 * rng.standard_normal((n, 1)) * np.cos(2 * phi) + 0.05 * rng.standard_normal((n, 1))
            * np.sin(3 * phi)) + 30 * rng.standard_normal((n, d))
    else:
        x = _kind(kind, n, d, rng)
    key = (shape, kind)
    if key not in _HD_REFERENCE:  # the references cost seconds: computed once for all engines
        _HD_REFERENCE[key] = (ref.pair_loki(x), ref.pair_greedy(x))
    _check(xcca.pair_shots(x, "loki", n_threads=2), _HD_REFERENCE[key][0])
    _check(xcca.pair_shots(x, "greedy", n_threads=1), _HD_REFERENCE[key][1])


_HD_REFERENCE: dict = {}


@pytest.mark.parametrize("n, d", [(2, 100_000), (3, 20_000), (5, 1), (512, 40), (513, 40), (1500, 8)])
def test_dense_engine_boundaries(n, d):
    # 512 distinct rows: the dense engine; 513: the tree or the scan; 1500 rows on 300 distinct points: dense after
    # folding. Padded panels (n not a multiple of 8) and tiles (of 4) must never leak into the lists.
    rng = np.random.default_rng(n * 7 + d)
    x = rng.standard_normal((n, d)) if n != 1500 else rng.standard_normal((300, d))[rng.integers(0, 300, n)]
    _check(xcca.pair_shots(x, "loki"), ref.pair_loki(x))
    _check(xcca.pair_shots(x, "greedy"), ref.pair_greedy(x))


def test_high_dimension_threads_bit_identical():
    x = np.random.default_rng(3).standard_normal((300, 777))
    a, b = xcca.pair_shots(x, "greedy", n_threads=1), xcca.pair_shots(x, "greedy", n_threads=2)
    np.testing.assert_array_equal(a.pairs, b.pairs)
    np.testing.assert_array_equal(a.distances, b.distances)


def test_portable_kernel_same_pairs(monkeypatch):
    x = np.random.default_rng(2).standard_normal((900, 24))
    monkeypatch.setenv("XCCA_PAIRING_ENGINE", "gemm")
    a = xcca.pair_shots(x, "greedy")
    monkeypatch.setenv("XCCA_DISABLE_AVX2", "1")  # read once per process: run the baseline in a child
    import subprocess
    import sys
    code = ("import numpy as np, xcca; x = np.random.default_rng(2).standard_normal((900, 24)); "
            "r = xcca.pair_shots(x, 'greedy'); print(r.pairs.tobytes().hex())")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()
    assert out == a.pairs.tobytes().hex()


@pytest.mark.parametrize("method", ["loki", "greedy"])
def test_duplicates_cost_like_distinct(method):
    # 1e5 identical rows used to take 70 s ("loki") and not finish ("greedy"); 9 distinct points in d = 2 was cubic.
    r = xcca.pair_shots(np.ones((100_000, 16)), method)
    assert len(r) == 50_000 and r.unpaired.size == 0 and not r.distances.any()
    if method == "loki":
        np.testing.assert_array_equal(r.pairs, np.arange(100_000).reshape(-1, 2))
    x = np.random.default_rng(0).integers(0, 3, (16385, 2)).astype(float)
    r = xcca.pair_shots(x, method)
    assert len(r) == 8192 and r.unpaired.size == 1
    small = x[:3001]
    _check(xcca.pair_shots(small, method), (ref.pair_loki if method == "loki" else ref.pair_greedy)(small))


@pytest.mark.parametrize("method", ["loki", "greedy"])
@pytest.mark.parametrize("scale", [1e200, 1e-200, 2.0**-1060, 1e300])
def test_scaled_features_same_pairs(engine, method, scale):
    x = np.random.default_rng(4).standard_normal((600, 6))
    a = xcca.pair_shots(x, method)
    b = xcca.pair_shots(x * scale, method)
    if scale > 1e-300:  # subnormal inputs are themselves rounded: then only the reference can be matched
        np.testing.assert_array_equal(a.pairs, b.pairs)
        np.testing.assert_allclose(b.distances, a.distances * scale, rtol=1e-12)
    _check(b, (ref.pair_loki if method == "loki" else ref.pair_greedy)(x * scale))


@pytest.mark.parametrize("method", ["loki", "greedy"])
def test_nine_at_zero_one_far(method):
    x = np.zeros(10)
    x[9] = 1e300
    r = xcca.pair_shots(x, method)  # "greedy" used to loop forever, "loki" left 8 and 9 unpaired
    _check(r, (ref.pair_loki if method == "loki" else ref.pair_greedy)(x))
    assert [8, 9] in r.pairs.tolist() and r.distances.max() == 1e300


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_refused_with_groups(bad):
    x = np.zeros((5, 2))
    x[3, 1] = bad
    for groups in (None, [0, 0, 1, 1, 1]):
        with pytest.raises(ValueError, match="shot 3"):
            xcca.pair_shots(x, groups=groups)


@given(st.integers(1, 300), st.integers(1, 6), st.integers(1, 5), st.integers(0, 2**32 - 1),
       st.sampled_from(["loki", "greedy"]))
def test_groups_equal_each_group_alone(n, d, n_groups, seed, method):
    rng = np.random.default_rng(seed)
    x = np.round(rng.standard_normal((n, d)) * 2)
    keys = rng.integers(0, n_groups, n) * 10 - 7
    r = xcca.pair_shots(x, method, groups=keys)
    rows, dists, unpaired = [], [], []
    for k in np.unique(keys):
        idx = np.flatnonzero(keys == k)
        if idx.size < 2:
            unpaired.extend(idx)
            continue
        p, dd, u = (ref.pair_loki if method == "loki" else ref.pair_greedy)(x[idx])
        rows.append(idx[p])
        dists.append(dd)
        unpaired.extend(idx[u])
    np.testing.assert_array_equal(r.pairs, np.concatenate(rows) if rows else np.empty((0, 2), np.int64))
    np.testing.assert_array_equal(r.distances, np.concatenate(dists) if dists else np.empty(0))
    np.testing.assert_array_equal(r.unpaired, np.sort(unpaired))
    for a, b in r.pairs:
        assert keys[a] == keys[b]


def test_groups_keys_of_any_kind():
    x = np.arange(8.0)
    r = xcca.pair_shots(x, groups=np.array(["b", "a", "b", "a", "b", "a", "b", "c"]))
    assert r.pairs.tolist() == [[1, 3], [0, 2], [4, 6]] and r.unpaired.tolist() == [5, 7]
    with pytest.raises(ValueError, match="groups"):
        xcca.pair_shots(x, groups=[0, 1])
    with pytest.raises(ValueError, match="shot 2"):
        xcca.pair_shots(x, groups=[0, 0, np.nan, 0, 0, 0, 0, 0])
    with pytest.raises(TypeError, match="groups"):
        xcca.pair_shots(x, groups=np.array([object()] * 8))


@pytest.mark.parametrize("groups", [None, [3, 1, 3, 3, 1, 2, 1, 3, 3, 1, 1]])
def test_random_pairs_reproducible(groups):
    a = xcca.random_pairs(11, seed=5, groups=groups)
    b = xcca.random_pairs(11, seed=5, groups=groups)
    np.testing.assert_array_equal(a.pairs, b.pairs)
    np.testing.assert_array_equal(a.unpaired, b.unpaired)
    assert a.pairs.dtype == np.int64 and np.isnan(a.distances).all() and len(a.distances) == len(a)
    used = np.concatenate([a.pairs.ravel(), a.unpaired])
    np.testing.assert_array_equal(np.sort(used), np.arange(11))  # every shot exactly once
    if groups is not None:
        g = np.asarray(groups)
        assert (g[a.pairs[:, 0]] == g[a.pairs[:, 1]]).all()
        assert sorted(g[a.unpaired].tolist()) == [1, 2, 3]  # one odd shot per group
    c = xcca.random_pairs(11, seed=6, groups=groups)
    assert not np.array_equal(a.pairs, c.pairs) or groups is not None


def test_random_pairs_bad_input():
    with pytest.raises(ValueError, match="n must be"):
        xcca.random_pairs(-1)
    with pytest.raises(TypeError, match="n must be"):
        xcca.random_pairs(2.5)
    with pytest.raises(ValueError, match="groups"):
        xcca.random_pairs(4, groups=[1, 2])
    assert len(xcca.random_pairs(0)) == 0 and xcca.random_pairs(1).unpaired.tolist() == [0]
