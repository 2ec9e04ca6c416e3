"""The run correlator (issue 12) against the direct O(n^2) sums of xcca.reference."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import xcca
from xcca import reference as ref
from xcca.runcorr import RunCorrelator, blas_info


def _tol(rings, mask, qp):
    """Error scale per pair: sqrt(sum (m a)^2 sum (m' a')^2) over the run, divided by the counts (as correlate)."""
    a = np.asarray(rings, np.float64)
    m = np.ones(a.shape, bool) if mask is None else np.broadcast_to(mask, a.shape)
    e = np.sqrt((np.where(m, a, 0) ** 2).sum(-1))  # (S, nq)
    return (e[:, qp[:, 0]] * e[:, qp[:, 1]]).sum(0)[:, None]


def _close(got, want, scale, rtol=1e-12):
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    assert np.all(np.abs(got - want)[ok] <= rtol * np.broadcast_to(scale, want.shape)[ok] + 1e-300)


def _masks(kind, rng, S, nq, n):
    if kind == "none":
        return None
    if kind == "shared":
        return rng.random((nq, n)) > 0.3
    if kind == "per_shot":
        return rng.random((S, nq, n)) > 0.4
    if kind == "single":  # one valid sample per ring, at random places
        m = np.zeros((S, nq, n), bool)
        idx = rng.integers(0, n, (S, nq))
        np.put_along_axis(m, idx[..., None], True, -1)
        return m
    if kind == "dead_ring":  # ring 1 invalid in every shot, ring 0 invalid in shot 0 only
        m = rng.random((S, nq, n)) > 0.2
        m[:, 1 % nq] = False
        m[0, 0] = False
        return m
    raise AssertionError(kind)


def test_blas_is_scipys_openblas_with_thread_control():
    info = blas_info()
    assert "scipy" in info["name"]
    assert info["threads_local"] is True


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 8, 13])
@pytest.mark.parametrize("kind", ["none", "shared", "per_shot", "single", "dead_ring"])
@pytest.mark.parametrize("estimator", ["pooled", "per_shot"])
def test_direct_sums(n, kind, estimator):
    rng = np.random.default_rng(n * 7 + len(kind))
    S, nq = 5, 3
    a = rng.normal(2.0, 1.0, (S, nq, n))
    m = _masks(kind, rng, S, nq, n)
    rc = RunCorrelator(nq, n, estimator=estimator, blocks=2, chunk=3)
    rc.add(a, m)
    r = rc.result()
    want, cnt = ref.run_correlation(a, m, r.q_pairs, estimator)
    np.testing.assert_array_equal(r.counts, cnt)
    _close(r.correlation, want, _tol(a, m, r.q_pairs) / np.maximum(cnt, 1) if estimator == "pooled"
           else np.nanmax(np.abs(want)) + 1.0)
    assert r.correlation.shape == (nq * (nq + 1) // 2, n) and r.n_shots == S
    np.testing.assert_array_equal(r.q_pairs, np.stack(np.triu_indices(nq), 1))
    if kind == "dead_ring":
        assert np.isnan(r.correlation[r.pair_index(1 % nq, 1 % nq)]).all()


def test_all_invalid_everywhere_gives_nan_and_zero_counts():
    rc = RunCorrelator(2, 6)
    rc.add(np.ones((3, 2, 6)), np.zeros((2, 6), bool))
    r = rc.result()
    assert np.isnan(r.correlation).all() and (r.counts == 0).all() and np.isnan(r.error).all()


@pytest.mark.parametrize("estimator", ["pooled", "per_shot"])
def test_q_pairs_subset_with_swapped_pairs(estimator):
    rng = np.random.default_rng(3)
    a = rng.normal(size=(4, 5, 9))
    m = rng.random((4, 5, 9)) > 0.3
    qp = np.array([[4, 1], [1, 4], [2, 2], [4, 2]])
    rc = RunCorrelator(5, 9, q_pairs=qp, estimator=estimator)
    rc.add(a, m)
    r = rc.result()
    want, cnt = ref.run_correlation(a, m, qp, estimator)
    np.testing.assert_array_equal(r.counts, cnt)
    np.testing.assert_allclose(r.correlation, want, rtol=1e-11, atol=1e-12)
    assert rc.nqu == 3  # only the rings named (1, 2, 4) are accumulated
    np.testing.assert_allclose(r.correlation[0], np.roll(r.correlation[1][::-1], 1), rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("kind", ["shared", "per_shot"])
def test_differences(kind):
    rng = np.random.default_rng(5)
    S, nq, n = 6, 3, 10
    a = rng.normal(size=(S, nq, n))
    m = _masks(kind, rng, S, nq, n)
    pairs = np.array([[0, 1], [2, 5], [4, 3], [1, 2]])
    rc = RunCorrelator(nq, n)
    rc.add_differences(a, pairs, m)
    r = rc.result()
    d = a[pairs[:, 0]] - a[pairs[:, 1]]
    mm = np.broadcast_to(m, a.shape)
    dm = mm[pairs[:, 0]] & mm[pairs[:, 1]]
    want, cnt = ref.run_correlation(d, dm, r.q_pairs)
    np.testing.assert_array_equal(r.counts, cnt)
    _close(r.correlation, want, _tol(d, dm, r.q_pairs) / np.maximum(cnt, 1))
    assert r.n_shots == 4
    with pytest.raises(ValueError, match="differences"):
        rc.add(a, m)


def test_inter_shot_term_and_subtraction():
    rng = np.random.default_rng(6)
    S, nq, n = 5, 3, 8
    a = rng.normal(1.0, 1.0, (S, nq, n))
    m = rng.random((S, nq, n)) > 0.3
    pairs = np.array([[0, 1], [1, 2], [2, 3], [3, 4], [4, 0], [2, 0]])
    rc = RunCorrelator(nq, n, blocks=2)
    rc.add(a, m)
    rc.add_random_pairs(a, pairs, m)
    r = rc.result(replicates=True)
    qp = r.q_pairs
    x = np.where(m, a, 0.0)
    num = np.zeros((len(qp), n))
    cnt = np.zeros((len(qp), n), np.int64)
    for i, j in pairs:
        for p, (q, q2) in enumerate(qp):
            for k in range(n):
                num[p, k] += (x[i, q] * np.roll(x[j, q2], -k)).sum()
                cnt[p, k] += (m[i, q] & np.roll(m[j, q2], -k)).sum()
    np.testing.assert_array_equal(r.inter.counts, cnt)
    np.testing.assert_allclose(r.inter.correlation, num / cnt, rtol=1e-11)
    s = r.subtract_inter()
    with pytest.raises(ValueError, match="replicates=True"):
        rc.result().subtract_inter()  # the error of intra - inter needs the replicates
    np.testing.assert_allclose(s.correlation, r.correlation - r.inter.correlation)
    assert np.isfinite(s.error).all()
    # shared mask and default random pairs: each shot once as i and once as j
    rc2 = RunCorrelator(nq, n, blocks=1)
    rc2.add_random_pairs(a, mask=m[0], seed=1)
    assert rc2.n_inter == S and np.isfinite(rc2.result().inter.correlation).all()
    with pytest.raises(ValueError, match="different shots"):
        rc2.add_random_pairs(a, np.array([[1, 1]]))


@pytest.mark.parametrize("estimator", ["pooled", "per_shot"])
def test_merge_equals_all_at_once_and_save_load(tmp_path, estimator):
    rng = np.random.default_rng(7)
    S, nq, n = 9, 3, 11
    a = rng.normal(size=(S, nq, n))
    m = rng.random((S, nq, n)) > 0.3
    whole = RunCorrelator(nq, n, estimator=estimator, blocks=3, q=[0.1, 0.2, 0.3], units="photons")
    whole.add(a[:4], m[:4]).add(a[4:], m[0])  # a per-shot call, then a shared-mask call
    mm = np.concatenate([m[:4], np.broadcast_to(m[0], (5, nq, n))])
    first = RunCorrelator(nq, n, estimator=estimator, blocks=3, q=[0.1, 0.2, 0.3], units="photons")
    first.add(a[:4], m[:4])
    second = RunCorrelator(nq, n, estimator=estimator, blocks=3, q=[0.1, 0.2, 0.3], units="photons")
    second.add(a[4:6], m[0]).add(a[6:], m[0])
    merged = first + second
    rw, rm = whole.result(), merged.result()
    np.testing.assert_allclose(rm.correlation, rw.correlation, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(rm.counts, rw.counts)
    want, cnt = ref.run_correlation(a, mm, rw.q_pairs, estimator)
    np.testing.assert_allclose(rw.correlation, want, rtol=1e-11, atol=1e-12)
    assert first.n_shots == 4 and merged.n_shots == S
    path = tmp_path / "part.h5"
    whole.save(path)
    back = RunCorrelator.load(path)
    rb = back.result()
    np.testing.assert_array_equal(rb.correlation, rw.correlation)
    np.testing.assert_array_equal(rb.error, rw.error)
    assert rb.units == "photons" and np.allclose(rb.q, [0.1, 0.2, 0.3]) and rb.n_shots == S
    np.testing.assert_allclose(rb.q_pair_values[0], [0.1, 0.1])
    back.add(a[:2], m[:2])  # keeps accumulating after a load
    assert back.n_shots == S + 2
    import h5py
    with h5py.File(path) as f:
        assert f["runcorr"].attrs["format"] == "xcca.RunCorrelator"
        assert f["runcorr/q"].attrs["units"] == "1/angstrom"


def test_harmonics_are_the_fft_of_the_correlation():
    rng = np.random.default_rng(8)
    a = rng.normal(size=(4, 3, 12))
    rc = RunCorrelator(3, 12)
    rc.add(a)
    r = rc.result(replicates=True)
    h = r.harmonics(4)
    assert h.shape == (6, 5)
    c = r.correlation
    direct = np.stack([(c * np.exp(-2j * np.pi * nn * np.arange(12) / 12)).sum(-1) / 12 for nn in range(5)], -1)
    np.testing.assert_allclose(h, direct, atol=1e-12)
    assert r.harmonics().shape == (6, 7)
    assert r.harmonics_error(4).shape == (6, 5)
    with pytest.raises(ValueError, match="replicates=True"):
        rc.result().harmonics_error()
    with pytest.raises(ValueError, match="n_max"):
        r.harmonics(7)


@pytest.mark.parametrize("estimator", ["pooled", "per_shot"])
@pytest.mark.parametrize("blocks", [2, 3])
def test_jackknife_against_brute_force(estimator, blocks):
    rng = np.random.default_rng(9 + blocks)
    S, nq, n = 7, 2, 9
    a = rng.normal(1.0, 1.0, (S, nq, n))
    m = rng.random((S, nq, n)) > 0.25
    rc = RunCorrelator(nq, n, estimator=estimator, blocks=blocks, chunk=2)
    rc.add(a[:3], m[:3]).add(a[3:], m[3:])
    r = rc.result(replicates=True)  # the replicates on request
    reps, err = ref.run_jackknife(a, m, r.q_pairs, estimator, blocks)
    np.testing.assert_allclose(r.replicates, reps, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(r.error, err, rtol=1e-8, atol=1e-12)
    # by default they are not kept, and the error (and everything else) is the same, bit for bit
    r0 = rc.result()
    assert r0.replicates is None
    for f in ("correlation", "error", "counts", "block_shots"):
        np.testing.assert_array_equal(getattr(r0, f), getattr(r, f))
    np.testing.assert_array_equal(r.block_shots, np.bincount(np.arange(S) % blocks))
    one = RunCorrelator(nq, n, estimator=estimator, blocks=1)
    one.add(a, m)
    assert np.isnan(one.result().error).all()


@pytest.mark.parametrize("estimator", ["pooled", "per_shot"])
def test_threads_identical_blocks_equal(estimator):
    rng = np.random.default_rng(10)
    S, nq, n = 12, 9, 50
    a = rng.normal(size=(S, nq, n))
    m = rng.random((S, nq, n)) > 0.2
    res = []
    for nt in (1, 2, 3):
        rc = RunCorrelator(nq, n, estimator=estimator, n_threads=nt, chunk=5)
        rc.add(a, m)
        res.append(rc.result())
    for r in res[1:]:
        np.testing.assert_array_equal(r.correlation, res[0].correlation)
        np.testing.assert_array_equal(r.error, res[0].error)
        np.testing.assert_array_equal(r.counts, res[0].counts)
    for b in (1, 4):
        rc = RunCorrelator(nq, n, estimator=estimator, blocks=b)
        rc.add(a, m)
        rb = rc.result()
        np.testing.assert_allclose(rb.correlation, res[0].correlation, rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(rb.counts, res[0].counts)


_SIMD_CASE = """
import hashlib, numpy as np, xcca
h = hashlib.sha256()
for n, nq, blocks, dtype, sub in [(65, 13, 1, np.float64, False), (720, 11, 2, np.float64, False),
                                  (64, 9, 3, np.float64, True), (37, 6, 2, np.float32, False),
                                  (50, 10, 2, np.float64, True)]:
    rng = np.random.default_rng(n)
    a = rng.normal(2.0, 1.0, (7, nq, n))
    m = rng.random((7, nq, n)) > 0.3
    qp = rng.integers(0, nq, (2 * nq, 2)) if sub else "all"
    rc = xcca.RunCorrelator(nq, n, blocks=blocks, dtype=dtype, q_pairs=qp, n_threads=2)
    rc.add(a, m)
    r = rc.result(replicates=True)
    for x in (r.correlation, r.error, r.counts, r.replicates):
        h.update(np.ascontiguousarray(x).tobytes())
print(h.hexdigest())
"""


def test_result_pass_avx512_equals_avx2():
    # The pooled result pass runs 8 pairs per vector with AVX-512 and 4 with AVX2 (the same lane-wise operations, FMA
    # in both): the two give the same bits (on a CPU without AVX-512 both runs take the AVX2 path). The switch is read
    # once per process, hence the child processes. The portable baseline (SSE2, no FMA) may differ in the last bits;
    # it is checked against the reference by the CI's rerun without AVX2.
    import os
    import subprocess
    import sys

    def run(env):
        return subprocess.run([sys.executable, "-c", _SIMD_CASE], check=True, capture_output=True, text=True,
                              env={**os.environ, **env}).stdout.strip()
    here = run({})
    assert len(here) == 64 and run({"XCCA_DISABLE_AVX512": "1"}) == here


def test_float32_accumulators():
    rng = np.random.default_rng(11)
    a = rng.normal(2.0, 1.0, (6, 3, 20)).astype(np.float32)
    m = rng.random((6, 3, 20)) > 0.3
    rc = RunCorrelator(3, 20, dtype=np.float32)
    rc.add(a, m)
    r = rc.result()
    want, cnt = ref.run_correlation(a, m, r.q_pairs)
    np.testing.assert_array_equal(r.counts, cnt)
    _close(r.correlation, want, _tol(a, m, r.q_pairs) / np.maximum(cnt, 1), rtol=3e-6)
    assert rc._num.dtype == np.complex64


@settings(max_examples=25)
@given(n=st.integers(1, 30), nq=st.integers(1, 4), S=st.integers(1, 5), seed=st.integers(0, 2**31),
       estimator=st.sampled_from(["pooled", "per_shot"]), p=st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]))
def test_hypothesis_per_shot_masks(n, nq, S, seed, estimator, p):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(S, nq, n))
    m = rng.random((S, nq, n)) >= p
    rc = RunCorrelator(nq, n, estimator=estimator, chunk=2)
    rc.add(a, m)
    r = rc.result()
    want, cnt = ref.run_correlation(a, m, r.q_pairs, estimator)
    np.testing.assert_array_equal(r.counts, cnt)
    np.testing.assert_allclose(r.correlation, want, rtol=1e-10, atol=1e-10)


def test_one_shot_and_nan_under_invalid_samples_ignored():
    rng = np.random.default_rng(12)
    a = rng.normal(size=(2, 7))
    m = np.ones((2, 7), bool)
    m[0, 3] = False
    a[0, 3] = np.nan
    rc = RunCorrelator(2, 7)
    rc.add(a, m)
    r = rc.result()
    want, _ = ref.run_correlation(a[None], m[None], r.q_pairs)
    np.testing.assert_allclose(r.correlation, want, rtol=1e-12)


def test_bad_input():
    rc = RunCorrelator(3, 8)
    with pytest.raises(ValueError, match="shape"):
        rc.add(np.zeros((2, 4, 8)))
    with pytest.raises(ValueError, match="shape"):
        rc.add(np.zeros((2, 3, 9)))
    with pytest.raises(ValueError, match="mask"):
        rc.add(np.zeros((2, 3, 8)), np.ones((3, 3, 8), bool))
    bad = np.zeros((2, 3, 8))
    bad[1, 2, 5] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        rc.add(bad)
    assert rc.n_shots == 0  # nothing was accumulated
    with pytest.raises(TypeError, match="complex"):
        rc.add(np.zeros((2, 3, 8), complex))
    with pytest.raises(ValueError, match="q_pairs"):
        RunCorrelator(3, 8, q_pairs=[[0, 3]])
    with pytest.raises(ValueError, match="q_pairs"):
        RunCorrelator(3, 8, q_pairs=[[-1, 0]])
    with pytest.raises(ValueError, match="q_pairs"):
        RunCorrelator(3, 8, q_pairs="band")
    with pytest.raises(ValueError, match="estimator"):
        RunCorrelator(3, 8, estimator="mean")
    with pytest.raises(ValueError, match="blocks"):
        RunCorrelator(3, 8, blocks=0)
    with pytest.raises(ValueError, match="nphi"):
        RunCorrelator(3, 0)
    with pytest.raises(TypeError, match="dtype"):
        RunCorrelator(3, 8, dtype=np.int32)
    with pytest.raises(MemoryError, match="q_pairs"):
        RunCorrelator(1000, 3600, max_memory=1 << 30)
    with pytest.raises(ValueError, match="nq"):
        rc.merge(RunCorrelator(4, 8))
    with pytest.raises(ValueError, match="nphi"):
        rc.merge(RunCorrelator(3, 9))
    with pytest.raises(ValueError, match="blocks"):
        rc.merge(RunCorrelator(3, 8, blocks=3))
    with pytest.raises(TypeError):
        rc.merge(np.zeros(3))
    with pytest.raises(ValueError, match="pairs"):
        rc.add_differences(np.zeros((2, 3, 8)), [[0, 2]])
    with pytest.raises(ValueError, match="pooled"):
        RunCorrelator(3, 8, estimator="per_shot").add_random_pairs(np.zeros((2, 3, 8)))
    with pytest.raises(OSError, match="cannot read"):
        RunCorrelator.load("/nonexistent/x.h5")


def test_memory_is_stated():
    rc = RunCorrelator(100, 3600, blocks=2, chunk=64)
    nh = 1801
    assert rc.memory_bytes == 2 * nh * 100 * 101 * 16 + 64 * nh * 100 * 32  # packed float64 triangles
    assert RunCorrelator(100, 3600, blocks=2, chunk=64, dtype=np.float32).memory_bytes == (
        2 * nh * 100 ** 2 * 24 + 64 * nh * 100 * 24)
    assert "MiB" in repr(rc)
    assert xcca.RunCorrelator is RunCorrelator


# ---- the mask-count cliff (issue 12): masks with many runs go through batched float64 lane FFTs ----------------------
@pytest.mark.parametrize("n", [64, 5000, 8191])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_many_run_mask_counts_exact_at_the_edge(n, dtype):
    rng = np.random.default_rng(n)
    rows = 6
    a = rng.normal(2.0, 1.0, (rows, n)).astype(dtype)
    m = np.empty((rows, n), bool)
    m[0] = rng.random(n) >= 0.1    # 10 % invalid
    m[1] = rng.random(n) >= 0.5    # 50 %
    m[2] = np.arange(n) % 2 == 0   # the most runs possible
    m[3] = True
    m[3, ::3] = False
    m[4] = rng.random(n) >= 0.99   # few valid samples: many lags with count 0 -> NaN
    m[5] = m[2]                    # same mask as the previous ring
    got = xcca.autocorrelate(a, m)
    want = ref.correlate_direct(a, a, m, m)
    cnt = ref.mask_pair_counts(m, m)
    np.testing.assert_array_equal(np.isnan(got), cnt == 0)
    ok = cnt > 0
    e = (np.where(m, a.astype(np.float64), 0) ** 2).sum(-1, keepdims=True)
    tol = (3e-5 if dtype == np.float32 else 1e-12) * e / np.maximum(cnt, 1)
    # a count off by one would move C by C / count, far above tol
    assert np.all(np.abs(got.astype(np.float64) - want)[ok] <= np.broadcast_to(tol, want.shape)[ok])
    # difference autocorrelations use the same path with the combined masks
    d = xcca.difference_correlation(a[None].repeat(2, 0) * np.array([1.0, 0.5], dtype)[:, None, None], [[0, 1]],
                                    mask=m, average=False)[0]
    want_d = ref.correlate_direct(0.5 * a.astype(np.float64), 0.5 * a.astype(np.float64), m, m)
    np.testing.assert_array_equal(np.isnan(d), cnt == 0)
    assert np.all(np.abs(d.astype(np.float64) - want_d)[ok] <= np.broadcast_to(tol, want.shape)[ok])


def test_single_block_nan_error_and_replicates_take_no_memory():
    rng = np.random.default_rng(11)
    a = rng.normal(size=(4, 3, 8))
    m = rng.random((4, 3, 8)) > 0.3
    r1 = RunCorrelator(3, 8, blocks=1).add(a, m).result(replicates=True)
    r2 = RunCorrelator(3, 8, blocks=2).add(a, m).result(replicates=True)
    assert r1.error.shape == r1.correlation.shape and np.isnan(r1.error).all()
    assert r1.replicates.shape == (1,) + r1.correlation.shape and np.isnan(r1.replicates).all()
    assert not r1.error.flags.writeable and r1.error.strides == (0, 0)
    np.testing.assert_array_equal(r1.counts, r2.counts)
    np.testing.assert_allclose(r1.correlation, r2.correlation, rtol=1e-12, atol=1e-12)
    assert r2.error.flags.writeable and r2.replicates.flags.writeable and np.isfinite(r2.error).all()


@pytest.mark.parametrize("blocks,chunk", [(1, 4), (2, 4), (2, 5), (3, 2), (3, 7)])
def test_per_block_spectra_match_whole_chunk_updates(blocks, chunk):
    # add() transforms one block of a chunk at a time into reused buffers; the accumulators must be bit-identical to
    # transforming the whole (block-sorted) chunk and updating each block with its column range of it.
    from xcca import _core
    rng = np.random.default_rng(7)
    S, nq, n = 11, 5, 12
    a = rng.normal(1.0, 1.0, (S, nq, n))
    m = rng.random((S, nq, n)) > 0.3
    rc = RunCorrelator(nq, n, blocks=blocks, chunk=chunk, n_threads=2)
    rc.add(a, m)
    nh = n // 2 + 1
    assert rc._packed and rc._cnt is rc._num  # float64: one packed array
    num = np.zeros_like(rc._num)
    cnt = num
    blk = np.arange(S) % blocks
    rows = m.reshape(-1, n)
    for c0 in range(0, S, chunk):
        order = np.argsort(blk[c0:c0 + chunk], kind="stable")
        ch = np.ascontiguousarray(np.arange(S, dtype=np.int64)[c0:c0 + chunk][order])
        bl = blk[c0:c0 + chunk][order]
        spec = np.empty((nh, len(ch), nq), np.complex128)
        mspec = np.empty_like(spec)
        _core.runcorr_spectra(a, rows, S, nq, n, ch, False, rc._qsel, spec, mspec, "float64", 2)
        for b in range(blocks):
            lo, hi = int(np.searchsorted(bl, b)), int(np.searchsorted(bl, b, side="right"))
            if hi > lo:
                _core.runcorr_herk(spec, lo, hi, 1.0, num[b], 2)
                _core.runcorr_herk(mspec, lo, hi, 1.0, cnt[b], 2, lower=True)
    assert np.array_equal(rc._num, num)
    assert np.any(num != 0)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), nq=st.integers(1, 23), S=st.integers(1, 4), K=st.integers(1, 4),
       mask_rows=st.sampled_from(["none", "one", "per_ring", "per_shot"]), diff=st.booleans(),
       dtype=st.sampled_from(["float32", "float64"]), n_bad=st.integers(0, 5), threads=st.integers(1, 3),
       seed=st.integers(0, 2**31))
def test_spectra_kernel_against_numpy(n, nq, S, K, mask_rows, diff, dtype, n_bad, threads, seed):
    # runcorr_spectra transforms rings in tiles of 8 and groups of SIMD lanes: ring counts and subsets that leave
    # partial tiles and groups, every mask layout, differences, and the count of non-finite samples under a valid
    # mask, against numpy's rfft of m a and m.
    from xcca import _core
    rng = np.random.default_rng(seed)
    a = rng.normal(1.0, 1.0, (S, nq, n)).astype(dtype)
    flat = a.reshape(-1)
    flat[rng.integers(0, flat.size, n_bad)] = rng.choice([np.nan, np.inf, -np.inf], n_bad)
    rows = {"none": 0, "one": 1, "per_ring": nq, "per_shot": S * nq}[mask_rows]
    m = None if not rows else (rng.integers(0, 4, (rows, n)) * rng.integers(1, 200, (rows, n))).astype(np.uint8)
    units = rng.integers(0, S, (K, 2) if diff else K).astype(np.int64)
    qsel = rng.permutation(nq)[: rng.integers(1, nq + 1)].astype(np.int64)
    nh = n // 2 + 1
    spec = np.full((nh, K, len(qsel)), np.nan, np.complex64 if dtype == "float32" else np.complex128)
    mspec = np.full((nh, K, len(qsel)), np.nan, np.complex128)
    bad = _core.runcorr_spectra(a, m, S, nq, n, units.reshape(-1), diff, qsel, spec, mspec, dtype, threads)
    mk = np.ones((S * nq, n), bool) if m is None else (m != 0)[np.arange(S * nq) % rows]
    mk = mk.reshape(S, nq, n)
    if diff:
        x = a[units[:, 0]] - a[units[:, 1]]
        v = mk[units[:, 0]] & mk[units[:, 1]]
    else:
        x, v = a[units], mk[units]
    x, v = x[:, qsel], v[:, qsel]  # (K, nqu, n)
    assert bad == int((v & ~np.isfinite(x)).sum())
    want_m = np.fft.rfft(v.astype(np.float64), axis=-1).transpose(2, 0, 1)
    np.testing.assert_allclose(mspec, want_m, rtol=0, atol=1e-12 * n)
    if bad == 0:
        xm = np.where(v, x, 0).astype(np.float64)
        want = np.fft.rfft(xm, axis=-1).transpose(2, 0, 1)
        scale = np.sqrt((xm ** 2).sum(-1))[None] * np.sqrt(n) + 1e-30  # (1, K, nqu)
        tol = 1e-5 if dtype == "float32" else 1e-12
        assert np.all(np.abs(spec - want) <= tol * scale)


# ---- packed float64 accumulators: numerator upper and counts lower triangle of one array --------------------------
def _full_accumulators(rc, a, m):
    """The pre-packing accumulators: separate full (B, nh, nqu, nqu) numerator and counts, upper triangles by herk,
    block-sorted chunks as RunCorrelator.add makes them (per-shot masks)."""
    from xcca import _core
    S, n = a.shape[0], rc.nphi
    B, nh, nqu = rc.blocks, rc.nh, rc.nqu
    num = np.zeros((B, nh, nqu, nqu), np.complex128)
    cnt = np.zeros_like(num)
    blk = np.arange(S) % B
    rows = m.reshape(-1, n)
    for c0 in range(0, S, rc.chunk):
        order = np.argsort(blk[c0:c0 + rc.chunk], kind="stable")
        ch = np.ascontiguousarray(np.arange(S, dtype=np.int64)[c0:c0 + rc.chunk][order])
        bl = blk[c0:c0 + rc.chunk][order]
        for b in range(B):
            lo, hi = int(np.searchsorted(bl, b)), int(np.searchsorted(bl, b, side="right"))
            if hi > lo:
                u = np.ascontiguousarray(ch[lo:hi])
                spec = np.empty((nh, hi - lo, nqu), np.complex128)
                mspec = np.empty_like(spec)
                _core.runcorr_spectra(a, rows, S, rc.nq, n, u, False, rc._qsel, spec, mspec, "float64", 2)
                _core.runcorr_herk(spec, 0, hi - lo, 1.0, num[b], 2)
                _core.runcorr_herk(mspec, 0, hi - lo, 1.0, cnt[b], 2)
    return num, cnt


@pytest.mark.parametrize("nq,n,S,blocks,pairs", [(5, 12, 11, 2, "all"), (7, 15, 9, 3, "all"),
                                                 (6, 16, 5, 1, [[4, 1], [2, 2], [0, 5], [3, 0]])])
def test_packed_accumulators_equal_separate_full_ones(nq, n, S, blocks, pairs):
    from xcca import _core
    from xcca.runcorr import _pack_into, _unpack
    rng = np.random.default_rng(nq * n + S)
    a = rng.normal(1.0, 1.0, (S, nq, n))
    m = rng.random((S, nq, n)) > 0.3
    rc = RunCorrelator(nq, n, blocks=blocks, chunk=4, q_pairs=pairs, n_threads=2)
    rc.add(a, m)
    num, cnt = _full_accumulators(rc, a, m)
    # the numerator triangle is the full one's, bit for bit; the counts agree to rounding (lower vs upper zherk)
    for b in range(blocks):
        assert np.array_equal(_unpack(rc._num[b], False), num[b])
        np.testing.assert_allclose(_unpack(rc._num[b], True), cnt[b], rtol=0, atol=1e-12 * n)
    # results from the packed array are bit-identical to those of the separate full accumulators
    P = len(rc.q_pairs)
    outs = []
    for acc in ((rc._num, rc._num), (num, cnt)):
        corr, counts = np.empty((P, n)), np.empty((P, n), np.int64)
        err, rep = np.empty((P, n)), np.empty((blocks, P, n))
        dev = _core.runcorr_pooled_result(acc[0], acc[1], n, True, rc._lpairs, blocks > 1, corr, err, counts, rep,
                                          2)
        assert dev < 1e-6
        outs.append((corr, counts, err if blocks > 1 else None, rep))
    for x, y in zip(*outs):
        if x is not None:
            np.testing.assert_array_equal(x, y)
    # pack(unpack) is the identity on the packed array
    back = np.zeros_like(rc._num)
    for b in range(blocks):
        _pack_into(back[b], _unpack(rc._num[b], False), False)
        _pack_into(back[b], _unpack(rc._num[b], True), True)
    assert np.array_equal(back, rc._num)
    with pytest.raises(ValueError, match="packed"):
        _core.runcorr_pooled_result(rc._num, rc._num.copy(), n, True, rc._lpairs, False, np.empty((P, n)), None,
                                    np.empty((P, n), np.int64), None, 2)


def test_old_format_file_with_full_accumulators_loads(tmp_path):
    # A file as written before packing: full (B, nh, nqu, nqu) num and cnt, upper triangles only.
    import h5py
    rng = np.random.default_rng(3)
    S, nq, n, B = 8, 4, 10, 2
    a = rng.normal(1.0, 1.0, (S, nq, n))
    m = rng.random((S, nq, n)) > 0.3
    rc = RunCorrelator(nq, n, blocks=B, chunk=3)
    rc.add(a, m)
    num, cnt = _full_accumulators(rc, a, m)
    path = tmp_path / "new.h5"
    rc.save(path)
    with h5py.File(path, "r+") as f:  # the format is unchanged: full matrices, same datasets
        g = f["runcorr"]
        assert g["num"].shape == g["cnt"].shape == (B, n // 2 + 1, nq, nq)
        assert np.array_equal(g["num"][()], num)
        np.testing.assert_allclose(g["cnt"][()], cnt, rtol=0, atol=1e-12)
        g["cnt"][...] = cnt  # now exactly what the previous version wrote
    back = RunCorrelator.load(path)
    r0, r1 = rc.result(replicates=True), back.result(replicates=True)
    for k in ("correlation", "counts", "error", "replicates"):
        np.testing.assert_array_equal(getattr(r1, k), getattr(r0, k))
    np.testing.assert_array_equal(r1.harmonics(), r0.harmonics())
    back2 = RunCorrelator.load(path).merge(RunCorrelator.load(path))
    np.testing.assert_array_equal(back2.result().counts, 2 * r0.counts)
