"""Angular correlations (issue 4) against the direct O(n^2) sums of xcca.reference."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

import xcca
from xcca import _core, reference as ref

# Tolerance: |C[k] - C_ref[k]| <= RTOL * sqrt(sum (ma a)^2 * sum (mb b)^2) / count[k]  (relative to ring energy).
RTOL = {np.float32: 3e-5, np.float64: 1e-12}

LENGTHS = st.one_of(st.sampled_from([1, 2, 3, 4, 5, 7, 13, 16, 64, 97, 128, 360, 1009]), st.integers(1, 40))


def _tol(rings, mask, normalize, qa=None, qb=None):
    """Per-lag error scale for autocorrelations (qa None) or the cross pairs (qa, qb)."""
    a = np.asarray(rings, np.float64)
    m = np.ones(a.shape, bool) if mask is None else np.broadcast_to(np.asarray(mask, bool), a.shape)
    x = ref._masked_norm(a, m, normalize)
    e = np.sqrt(np.nansum(x * x, -1))
    if qa is None:
        return (e * e)[..., None] / np.maximum(ref.mask_pair_counts(m, m), 1)
    return (e[..., qa] * e[..., qb])[..., None] / np.maximum(ref.mask_pair_counts(m[..., qa, :], m[..., qb, :]), 1)


def _assert_close(got, want, tol, dtype):
    assert got.shape == want.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    err = np.abs(got.astype(np.float64) - want)[ok]
    assert np.all(err <= RTOL[dtype] * np.broadcast_to(tol, want.shape)[ok] + 1e-30)


@st.composite
def ring_stacks(draw, per_shot_masks=True):
    n = draw(LENGTHS)
    nq = draw(st.integers(1, 4))
    shots = draw(st.integers(1, 3))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    rings = rng.normal(2.0, 1.0, (shots, nq, n)).astype(dtype)
    kind = draw(st.sampled_from(["none", "gaps", "random", "all_false", "all_true", "row_false"]
                                + (["per_shot"] if per_shot_masks else [])))
    mask = None
    if kind == "gaps":
        mask = np.ones((nq, n), bool)
        for q in range(nq):
            s, ln = rng.integers(0, n, 2)
            mask[q, (s + np.arange(ln // 2)) % n] = False
    elif kind == "random":
        mask = rng.random((nq, n)) > 0.4
    elif kind == "all_false":
        mask = np.zeros(n, bool)
    elif kind == "all_true":
        mask = np.ones((nq, n), bool)
    elif kind == "row_false":
        mask = rng.random((nq, n)) > 0.3
        mask[0] = False
    elif kind == "per_shot":
        mask = rng.random((shots, nq, n)) > 0.3
    if draw(st.booleans()):  # non-contiguous or big-endian input of the same values
        rings = rings.astype(rings.dtype.newbyteorder(">")) if draw(st.booleans()) else \
            np.repeat(rings, 2, axis=-1)[..., ::2]
    return rings, mask


@given(ring_stacks(), st.sampled_from([None, "mean", "std"]), st.booleans())
def test_autocorrelate_matches_reference(data, normalize, average):
    rings, mask = data
    dtype = np.float32 if rings.dtype.kind == "f" and rings.dtype.itemsize == 4 else np.float64  # any byte order
    before = rings.copy()
    got = xcca.autocorrelate(rings, mask, normalize=normalize, average=average, n_threads=2)
    want = ref.autocorrelate(rings, mask, normalize=normalize, average=average)
    assert got.dtype == dtype
    tol = _tol(rings, mask, normalize)
    _assert_close(got, want, tol.max(0) if average else tol, dtype)
    np.testing.assert_array_equal(rings, before)  # input untouched


@given(ring_stacks(), st.sampled_from([None, "mean", "std"]), st.booleans())
def test_cross_correlate_matches_reference(data, normalize, average):
    rings, mask = data
    dtype = np.float32 if rings.dtype.kind == "f" and rings.dtype.itemsize == 4 else np.float64  # any byte order
    got = xcca.cross_correlate(rings, mask=mask, normalize=normalize, average=average)
    want = ref.cross_correlate(rings, mask=mask, normalize=normalize, average=average)
    qa, qb = np.triu_indices(rings.shape[-2])
    tol = _tol(rings, mask, normalize, qa, qb)
    _assert_close(got, want, tol.max(0) if average else tol, dtype)


@given(ring_stacks())
def test_cross_symmetry_and_auto_diagonal(data):
    rings, mask = data
    nq, n = rings.shape[-2:]
    pairs = [(q, p) for q in range(nq) for p in range(nq)]
    c = xcca.cross_correlate(rings, pairs, mask)
    c = c.reshape(c.shape[:-2] + (nq, nq, n)).astype(np.float64)
    rev = (-np.arange(n)) % n
    # C(q', q, Delta) = C(q, q', -Delta), exactly up to rounding.
    np.testing.assert_allclose(c, np.swapaxes(c, -2, -3)[..., rev], rtol=1e-4, atol=1e-4 * np.nanmax(np.abs(c), initial=1))
    diag = c[..., np.arange(nq), np.arange(nq), :]
    np.testing.assert_allclose(diag, xcca.autocorrelate(rings, mask), rtol=1e-4, atol=1e-4 * np.nanmax(np.abs(diag), initial=1))


@given(ring_stacks(per_shot_masks=False))
def test_all_true_mask_equals_unmasked(data):
    rings, _ = data
    full = np.ones(rings.shape[-1], bool)
    a = xcca.autocorrelate(rings)
    b = xcca.autocorrelate(rings, full)
    np.testing.assert_allclose(a, b, rtol=1e-5 if rings.dtype == np.float32 else 1e-12,
                               atol=1e-5 * float(np.abs(a).max()))


@given(ring_stacks(), st.sampled_from([None, "std"]))
def test_average_equals_mean_of_individual(data, normalize):
    rings, mask = data
    one = xcca.autocorrelate(rings, mask, normalize=normalize).astype(np.float64)
    avg = xcca.autocorrelate(rings, mask, normalize=normalize, average=True)
    np.testing.assert_allclose(avg, one.reshape(-1, *rings.shape[-2:]).mean(0), rtol=1e-5, atol=1e-6)
    onex = xcca.cross_correlate(rings, mask=mask, normalize=normalize).astype(np.float64)
    avgx = xcca.cross_correlate(rings, mask=mask, normalize=normalize, average=True)
    np.testing.assert_allclose(avgx, onex.reshape(-1, *onex.shape[-2:]).mean(0), rtol=1e-5, atol=1e-6)


@given(ring_stacks(), st.booleans(), st.booleans())
def test_difference_correlation_matches_reference(data, average, cross):
    rings, mask = data
    if rings.shape[0] < 2:
        rings = np.concatenate([rings, rings[::-1] * 0.5 + 1])
        if mask is not None and np.ndim(mask) == 3:
            mask = np.concatenate([mask, mask[::-1]])
    dtype = np.float32 if rings.dtype.kind == "f" and rings.dtype.itemsize == 4 else np.float64  # any byte order
    ns = rings.shape[0]
    pairs = [(i, (i + 1) % ns) for i in range(ns)]
    q_pairs = [(0, q) for q in range(rings.shape[1])] if cross else None
    got = xcca.difference_correlation(rings, pairs, mask, q_pairs=q_pairs, average=average)
    want = ref.difference_correlation(rings, pairs, mask, q_pairs=q_pairs, average=average)
    assert got.shape == want.shape
    scale = float(np.abs(rings).max()) ** 2 * 8
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    # Counts can be small: bound the error by the energy / 1 (the count) times the dtype's tolerance.
    assert np.all(np.abs(got[ok] - want[ok]) <= RTOL[dtype] * scale * rings.shape[-1] + 1e-30)


def test_length_5000_and_primes_float32():
    rng = np.random.default_rng(1)
    for n in (4999, 5000):
        rings = rng.normal(3, 1, (2, n)).astype(np.float32)
        mask = np.ones((2, n), bool)
        mask[0, 100:400] = False
        mask[1, rng.random(n) < 0.3] = False
        got = xcca.autocorrelate(rings, mask)
        want = ref.autocorrelate(rings, mask)
        _assert_close(got, want, _tol(rings, mask, None), np.float32)


@pytest.mark.parametrize("n", [360, 1000])
def test_per_ring_random_masks_float32_batched_counts(n):
    """Full groups of 8 float32 rings with per-ring many-run masks (counts from batched float32 lane FFTs, kept
    interleaved for autocorrelations; per-ring mask spectra shared by the cross pairs), a periodic mask among them
    (its float32 bound fails: float64 route), against the direct sums; threads bit-identical."""
    rng = np.random.default_rng(7)
    shots, nq = 2, 9
    rings = rng.normal(3, 1, (shots, nq, n)).astype(np.float32)
    p = np.array([0.1, 0.5, 0.9])[np.arange(shots * nq) % 3].reshape(shots, nq, 1)
    mask = rng.random((shots, nq, n)) >= p
    mask[0, 3] = np.arange(n) % 2 == 1  # periodic, many runs
    got = xcca.autocorrelate(rings, mask, n_threads=1)
    _assert_close(got, ref.autocorrelate(rings, mask), _tol(rings, mask, None), np.float32)
    np.testing.assert_array_equal(got, xcca.autocorrelate(rings, mask, n_threads=2))
    qp = np.array([(a, b) for a in range(nq) for b in range(a, min(nq, a + 3))])
    got = xcca.cross_correlate(rings, qp, mask, n_threads=1)
    want = ref.cross_correlate(rings, qp, mask)
    _assert_close(got, want, _tol(rings, mask, None, qp[:, 0], qp[:, 1]), np.float32)
    np.testing.assert_array_equal(got, xcca.cross_correlate(rings, qp, mask, n_threads=2))
    # Rings of ones: 1 wherever a pair exists, so a count off by one would show as ~1/c.
    ones = np.ones_like(rings)
    c = xcca.cross_correlate(ones, qp, mask)
    cnt = ref.mask_pair_counts(mask[:, qp[:, 0]], mask[:, qp[:, 1]])
    np.testing.assert_array_equal(np.isnan(c), cnt == 0)
    assert np.all(np.abs(c[cnt > 0] - 1) * cnt[cnt > 0] < 0.25)


def test_mask_pair_counts_exact():
    rng = np.random.default_rng(2)
    for n in (1, 2, 9, 100, 777):
        for p in (0.0, 0.02, 0.5, 0.98, 1.0):
            ma, mb = rng.random(n) >= p, rng.random(n) >= p
            np.testing.assert_array_equal(_core.mask_pair_counts(ma, mb), ref.mask_pair_counts(ma, mb))


def test_nan_handling():
    rng = np.random.default_rng(3)
    rings = rng.normal(size=(3, 16))
    mask = np.ones((3, 16), bool)
    rings[0, 5] = np.nan  # valid sample: ring 0's correlation is NaN
    rings[1, 7] = np.nan  # masked sample: ignored
    mask[1, 7] = False
    mask[2] = False  # all masked: NaN, never a crash
    c = xcca.autocorrelate(rings, mask)
    assert np.isnan(c[0]).all()
    assert np.isfinite(c[1]).all()
    assert np.isnan(c[2]).all()
    np.testing.assert_allclose(c[1], ref.autocorrelate(rings[1], mask[1]), rtol=1e-12, atol=1e-12)


def test_dtypes_and_out():
    rings = np.arange(2 * 3 * 8, dtype=np.int16).reshape(2, 3, 8)
    c = xcca.autocorrelate(rings)
    assert c.dtype == np.float64
    np.testing.assert_allclose(c, ref.autocorrelate(rings), rtol=1e-12)
    out = np.empty((2, 3, 8), np.float64)
    assert xcca.autocorrelate(rings, out=out) is out
    np.testing.assert_allclose(out, c)
    strided = np.empty((2, 3, 16))[..., ::2]
    assert xcca.autocorrelate(rings, out=strided) is strided
    np.testing.assert_allclose(strided, c)
    assert xcca.autocorrelate(rings.astype(np.float32)).dtype == np.float32
    assert xcca.autocorrelate(rings[0, 0]).shape == (8,)


def test_lokis_convention_unnormalised():
    # Without a mask and normalisation, C * n is numpy's irfft(|rfft|^2).
    rng = np.random.default_rng(4)
    x = rng.normal(size=(4, 30))
    f = np.fft.rfft(x)
    np.testing.assert_allclose(xcca.autocorrelate(x) * 30, np.fft.irfft(f * f.conj(), 30), rtol=1e-12, atol=1e-12)


def test_cos_psi():
    n, lam = 12, 1.3
    q = np.array([0.5, 1.0, 2.0])
    np.testing.assert_allclose(xcca.cos_psi(n, q, lam), ref.cos_psi(n, q, lam), rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(xcca.cos_psi(n, q, lam, q2=1.5), ref.cos_psi(n, q, lam, 1.5), rtol=1e-14,
                               atol=1e-14)
    # Small q: the Ewald sphere is flat and cos psi -> cos Delta.
    np.testing.assert_allclose(xcca.cos_psi(8, 1e-9, 1.0), np.cos(2 * np.pi * np.arange(8) / 8), atol=1e-12)
    with pytest.raises(ValueError):
        xcca.cos_psi(8, 20.0, 1.0)
    with pytest.raises(ValueError):
        xcca.cos_psi(0, 1.0, 1.0)


def test_resample_cos_psi():
    n, lam, q = 64, 1.0, 2.0
    cp = xcca.cos_psi(n, q, lam)
    corr = 3 * cp + 1  # linear in cos psi: interpolation must be exact
    grid, val = xcca.resample_cos_psi(corr, q, lam, grid=np.linspace(-1, 1, 41))
    inside = (grid >= cp.min()) & (grid <= cp.max())
    np.testing.assert_allclose(val[inside], 3 * grid[inside] + 1, rtol=1e-12)
    assert np.isnan(val[~inside]).all()


@pytest.mark.parametrize(
    "call, exc",
    [
        (lambda: xcca.autocorrelate(np.zeros((2, 0))), ValueError),
        (lambda: xcca.autocorrelate(np.zeros((2, 8)), np.ones(7, bool)), ValueError),
        (lambda: xcca.autocorrelate(np.zeros((2, 8), complex)), TypeError),
        (lambda: xcca.autocorrelate(np.zeros((2, 8)), out=np.zeros((2, 7))), ValueError),
        (lambda: xcca.autocorrelate(np.zeros((2, 8)), out=np.zeros((2, 8), np.float32)), ValueError),
        (lambda: xcca.autocorrelate(np.zeros((2, 8)), normalize="max"), ValueError),
        (lambda: xcca.autocorrelate(np.zeros((2, 8)), n_threads=0), ValueError),
        (lambda: xcca.cross_correlate(np.zeros((2, 8)), [(0, 2)]), ValueError),
        (lambda: xcca.cross_correlate(np.zeros((2, 8)), [(0, -1)]), ValueError),
        (lambda: xcca.cross_correlate(np.zeros((2, 8)), [(0, 1.5)]), TypeError),
        (lambda: xcca.cross_correlate(np.zeros(8)), ValueError),
        (lambda: xcca.difference_correlation(np.zeros((3, 2, 8)), [(0, 3)]), ValueError),
        (lambda: xcca.difference_correlation(np.zeros((3, 2, 8)), []), ValueError),
        (lambda: xcca.difference_correlation(np.zeros((3, 2, 8)), [(0, 1)], np.ones((3, 2, 9), bool)), ValueError),
    ],
)
def test_bad_input(call, exc):
    with pytest.raises(exc):
        call()


def test_real_bragg_rings(data_dir):
    import h5py

    with h5py.File(data_dir / "bragg_rings.hdf5", "r") as f:
        rings = f["111_Bragg_rings"][()]
        mask = f["111_mask"][()]
    valid = mask[None, :] & (rings > 0)  # 0 = masked in the data too
    got = xcca.autocorrelate(rings, valid, normalize="std")
    want = ref.autocorrelate(rings, valid, normalize="std")
    _assert_close(got, want, _tol(rings, valid, "std"), np.float64)
    np.testing.assert_allclose(got[:, 0], 1.0, rtol=1e-12)


def _gap_masks(rng, rows, n, max_gaps):
    """Detector-like masks: a few gaps per ring (some wrapping around phi = 0)."""
    m = np.ones((rows, n), bool)
    for i in range(rows):
        for _ in range(rng.integers(0, max_gaps + 1)):
            s = rng.integers(0, n)
            m[i, (s + np.arange(rng.integers(1, max(2, n // 8)))) % n] = False
    return m


@pytest.mark.parametrize("n", [64, 65, 127, 500, 1001, 4096])
def test_masked_auto_run_counts_and_mask_reuse(n):
    """The run-pair count integration (few runs, n >= 64), full and partial groups of SIMD lanes, masks repeated
    between neighbouring rings, one mask row for all rings, and NaN in masked samples."""
    rng = np.random.default_rng(n)
    rows = 19  # two full groups of 8 lanes and a partial one
    rings = rng.normal(3.0, 1.0, (rows, n))
    mask = _gap_masks(rng, rows, n, 15)
    mask[5] = mask[4]  # identical neighbours reuse the counts
    mask[6] = mask[4]
    mask[0, :] = True
    mask[1, : n // 2] = False
    mask[1, n // 2:] = True  # one run
    mask[2, ::7] = False  # many runs: the FFT fallback
    rings[mask == 0] = np.nan  # masked samples must not leak
    for dtype in (np.float32, np.float64):
        x = rings.astype(dtype)
        for mk in (mask, mask[3], np.broadcast_to(mask[3], mask.shape).copy()):
            got = xcca.autocorrelate(x, mk)
            want = ref.autocorrelate(x, mk)
            _assert_close(got, want, _tol(x, mk, None), dtype)
            assert got.dtype == dtype


def _random_masks(rng, shape, invalid):
    """Per-sample random masks (True = valid) with single valid samples and all-invalid rings mixed in."""
    m = rng.random(shape) >= invalid
    flat = m.reshape(-1, shape[-1])
    flat[1] = False  # all invalid: NaN everywhere
    flat[2] = False
    flat[2, 3] = True  # a single valid sample: counts 1 at lag 0, 0 elsewhere
    return m


@pytest.mark.parametrize("n", [64, 65, 360, 999, 1000, 1024, 5000])
@pytest.mark.parametrize("invalid", [0.1, 0.5, 0.9])
def test_random_mask_counts_batched(n, invalid):
    """Masks with many runs (counts from batched lane FFTs: float32 with its proven bound, else float64): the exact
    integer counts, so ones divided by the counts give 1 with |C - 1| c < 1/4 (a count off by one: ~1/2); NaN where
    no pair is valid; agrees with the reference; odd and even n, partial lane groups."""
    rng = np.random.default_rng(n + int(invalid * 10))
    rows = 19 if n <= 1024 else 9
    mask = _random_masks(rng, (rows, n), invalid)
    counts = ref.mask_pair_counts(mask, mask)
    for dtype in (np.float32, np.float64):
        got = xcca.autocorrelate(np.ones((rows, n), dtype), mask)
        ok = counts > 0
        assert np.isnan(got[~ok]).all()
        assert np.max(np.abs(got[ok] - 1) * counts[ok]) < 0.25  # a count off by one: >= ~1/2
        x = rng.normal(3.0, 1.0, (rows, n)).astype(dtype)
        x[~mask] = np.nan  # masked samples must not leak
        got = xcca.autocorrelate(x, mask)
        _assert_close(got, ref.autocorrelate(x, mask), _tol(x, mask, None), dtype)


@pytest.mark.parametrize("n", [64, 97, 360, 1000])
def test_random_mask_cross_and_difference(n):
    """Cross and difference correlations with per-shot random masks (many runs: batched pair-count FFTs), including
    (q, q) pairs, all-invalid rings and single valid samples, against the reference."""
    rng = np.random.default_rng(n)
    shots, nq = 4, 5
    mask = _random_masks(rng, (shots, nq, n), 0.3)
    x = rng.normal(3.0, 1.0, (shots, nq, n))
    qp = np.array([[0, 1], [2, 2], [1, 3], [3, 4], [0, 0], [4, 2], [1, 2]])
    qa, qb = qp[:, 0], qp[:, 1]
    pairs = np.array([[0, 1], [2, 3], [1, 2]])
    for dtype in (np.float32, np.float64):
        xd = x.astype(dtype)
        for average in (False, True):
            got = xcca.cross_correlate(xd, qp, mask, average=average)
            want = ref.cross_correlate(xd, qp, mask, average=average)
            tol = _tol(xd, mask, None, qa, qb)
            _assert_close(got, want, tol.mean(0) if average else tol, dtype)
        d = xd[pairs[:, 0]] - xd[pairs[:, 1]]
        dm = mask[pairs[:, 0]] & mask[pairs[:, 1]]
        got = xcca.difference_correlation(xd, pairs, mask, q_pairs=qp, average=False)
        _assert_close(got, ref.cross_correlate(d, qp, dm), _tol(d, dm, None, qa, qb), dtype)
        ones = xcca.cross_correlate(np.ones_like(xd), qp, mask)
        counts = ref.mask_pair_counts(mask[:, qa], mask[:, qb])
        assert np.isnan(ones[counts == 0]).all()
        assert np.max(np.abs(ones[counts > 0] - 1) * counts[counts > 0]) < 0.25


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_random_mask_threads_bit_identical(dtype):
    """1, 2 and 3 threads give the same bits with per-sample random masks, for every correlation function and the
    averaged modes."""
    rng = np.random.default_rng(7)
    shots, nq, n = 5, 7, 720
    mask = _random_masks(rng, (shots, nq, n), 0.2)
    x = rng.normal(3.0, 1.0, (shots, nq, n)).astype(dtype)
    qp = np.array([[0, 1], [2, 2], [1, 3], [3, 6]])
    pairs = np.array([[0, 1], [2, 3], [4, 0]])
    calls = [
        lambda t: xcca.autocorrelate(x, mask, n_threads=t),
        lambda t: xcca.autocorrelate(x, mask, average=True, normalize="std", n_threads=t),
        lambda t: xcca.cross_correlate(x, qp, mask, n_threads=t),
        lambda t: xcca.cross_correlate(x, qp, mask, average=True, n_threads=t),
        lambda t: xcca.difference_correlation(x, pairs, mask, n_threads=t),
        lambda t: xcca.difference_correlation(x, pairs, mask, q_pairs=qp, average=False, n_threads=t),
    ]
    for call in calls:
        one = call(1)
        for t in (2, 3):
            assert call(t).tobytes() == one.tobytes()


def test_periodic_many_run_masks_use_float64_counts():
    """Strongly periodic masks with many runs fail the float32 count bound (the spectrum is concentrated): their
    counts come from the float64 route, still exact."""
    n = 5000
    mask = np.ones((3, n), bool)
    mask[0, ::2] = False  # alternating: counts n/2 at even lags, 0 at odd lags
    mask[1, ::5] = False
    mask[2, (np.arange(n) % 10) < 3] = False
    counts = ref.mask_pair_counts(mask, mask)
    got = xcca.autocorrelate(np.ones((3, n), np.float32), mask)
    assert np.isnan(got[counts == 0]).all()
    assert np.max(np.abs(got[counts > 0] - 1) * counts[counts > 0]) < 0.25
