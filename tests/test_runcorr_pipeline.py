"""xcca.analyze(q_pairs=...): the run correlator as pipeline stages (xcca.runcorr_stages), against a RunCorrelator
fed directly with the same cleaned polar rings and the direct sums of xcca.reference; Dask identity; the result file;
the CLI's --pairs."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

import xcca
from xcca import cli_analysis, reference, runcorr_stages, stages
from xcca.kernels import make_kernels
from xcca.simulate import RunGeometry, simulate_run

GEOM = RunGeometry(shape=(120, 128), center=(63.4, 58.7), distance=0.00559)
KW = dict(qmin=25, qmax=41, nphi=48)
NQ = 16


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    return simulate_run(tmp_path_factory.mktemp("rcrun") / "run.h5", 26, GEOM, seed=5, corrupt=(3, 13))


def _kw(run, **extra):
    return dict(dataset="/entry/data/data", mask=f"{run}::/entry/mask", center=GEOM.center, chunk=4, **KW, **extra)


def _cleaned(run, frames, thresh=6.0):
    """Polar rings of `frames` with the pipeline's own stages: invalid samples and outliers at 0, and their mask."""
    with h5py.File(run, "r") as f:
        data = f["/entry/data/data"][sorted(frames)]
        mask = f["/entry/mask"][()]
    kern = make_kernels("xcca", GEOM.center, np.arange(KW["qmin"], KW["qmax"], dtype=np.float64), KW["nphi"],
                        GEOM.shape, None)
    polar, valid = stages.polar_stage(data, mask, kern, checked=True)
    polar = np.array(polar, dtype=np.float64)
    valid, _ = stages.clean_stage(np.array(polar, np.float32), np.array(valid), thresh, kern)
    order = np.argsort(np.argsort(frames))
    polar, valid = polar[order], valid[order]
    return np.where(valid, polar, 0.0), valid


def _chunked_direct(polar, valid, frame_ids, chunk, n_frames, q_pairs="all", blocks=2, diff_pairs=None):
    """A RunCorrelator per chunk fed directly (its own block rule: k-th unit of an add -> block k % blocks),
    merged: what the stages compute, written plainly."""
    total = None
    if diff_pairs is None:
        pos = {f: k for k, f in enumerate(frame_ids)}
        for start in range(0, n_frames, chunk):
            idx = [pos[f] for f in range(start, min(n_frames, start + chunk)) if f in pos]
            if not idx:
                continue
            rc = xcca.RunCorrelator(NQ, KW["nphi"], q_pairs=q_pairs, blocks=blocks).add(polar[idx], valid[idx])
            total = rc if total is None else total.merge(rc)
    else:
        pc = max(1, chunk // 2)
        pos = {f: k for k, f in enumerate(frame_ids)}
        for p0 in range(0, len(diff_pairs), pc):
            pp = np.array([[pos[a], pos[b]] for a, b in diff_pairs[p0:p0 + pc]])
            rc = xcca.RunCorrelator(NQ, KW["nphi"], q_pairs=q_pairs, blocks=blocks)
            rc.add_differences(polar, pp, valid)
            total = rc if total is None else total.merge(rc)
    return total.result()


def _close(a, b, rtol=1e-10):
    """Equal to rtol relative to the largest magnitude (and NaN at the same places)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    assert np.array_equal(np.isnan(a), np.isnan(b))
    scale = np.nanmax(np.abs(b)) if np.isfinite(b).any() else 1.0
    np.testing.assert_allclose(np.nan_to_num(a), np.nan_to_num(b), rtol=0, atol=rtol * scale)


@pytest.fixture(scope="module")
def res_all(run_file):
    return xcca.analyze(run_file, q_pairs="all", **_kw(run_file))


def test_raw_run_correlation_equals_a_direct_correlator_and_the_direct_sums(run_file, res_all):
    res = res_all
    rc = res.run_correlation
    frames = res.frames.tolist()
    assert 3 not in frames and 13 not in frames and rc.n_shots == len(frames) == 24  # corrupt frames skipped
    assert rc.q_pairs.shape == (NQ * (NQ + 1) // 2, 2) and rc.correlation.shape == (len(rc.q_pairs), KW["nphi"])
    polar, valid = _cleaned(run_file, frames)
    want = _chunked_direct(polar, valid, frames, 4, 26)
    _close(rc.correlation, want.correlation)
    np.testing.assert_array_equal(rc.counts, want.counts)
    _close(rc.error, want.error)
    np.testing.assert_array_equal(rc.block_shots, want.block_shots)
    # the executable specification: direct O(n^2) sums over the same rings
    corr, counts = reference.run_correlation(polar, valid)
    _close(rc.correlation, corr)
    np.testing.assert_array_equal(rc.counts, counts)
    # harmonics are the FFT of the correlation; errors finite with two non-empty blocks
    np.testing.assert_allclose(rc.harmonics(), np.fft.rfft(rc.correlation, axis=-1) / KW["nphi"])
    assert np.isfinite(rc.error).all() and (rc.error > 0).any()
    # LOKI-style per-ring results are unchanged by the correlator
    plain = xcca.analyze(run_file, **_kw(run_file))
    for name in ("raw_correlation", "difference_correlation", "pairs", "mean_polar"):
        np.testing.assert_array_equal(getattr(plain, name), getattr(res, name))
    assert plain.run_correlation is None and plain.run_difference_correlation is None


def test_difference_run_correlation_equals_add_differences(run_file, res_all):
    res = res_all
    d = res.run_difference_correlation
    frames = res.frames.tolist()
    assert d.n_shots == len(res.pairs) > 5
    polar, valid = _cleaned(run_file, frames)
    want = _chunked_direct(polar, valid, frames, 4, 26, diff_pairs=res.pairs.tolist())
    _close(d.correlation, want.correlation)
    np.testing.assert_array_equal(d.counts, want.counts)
    _close(d.error, want.error)
    # the autocorrelation rows (q == q') of the pooled difference correlation: sum of per-pair sums / counts
    pos = {f: k for k, f in enumerate(frames)}
    ia = [pos[a] for a, _ in res.pairs]
    ib = [pos[b] for _, b in res.pairs]
    m = valid[ia] & valid[ib]
    dd = np.where(m, polar[ia] - polar[ib], 0.0)
    c, n = reference.run_correlation(dd, m)
    _close(d.correlation, c)
    np.testing.assert_array_equal(d.counts, n)


def test_band_selection_and_explicit_pairs(run_file, res_all):
    band = xcca.analyze(run_file, q_pairs="band:2", **_kw(run_file)).run_correlation
    qp = band.q_pairs
    assert np.all(qp[:, 1] - qp[:, 0] <= 2) and np.all(qp[:, 1] >= qp[:, 0])
    assert len(qp) == NQ + (NQ - 1) + (NQ - 2)
    full = res_all.run_correlation
    rows = [full.pair_index(a, b) for a, b in qp]
    _close(band.correlation, full.correlation[rows])
    np.testing.assert_array_equal(band.counts, full.counts[rows])
    pairs = np.array([[2, 9], [0, 0], [15, 3]])
    sel = xcca.analyze(run_file, q_pairs=pairs, **_kw(run_file)).run_correlation
    np.testing.assert_array_equal(sel.q_pairs, pairs)
    _close(sel.correlation[:2], full.correlation[[full.pair_index(2, 9), full.pair_index(0, 0)]])
    # C(q', q, Δ) = C(q, q', -Δ)
    _close(sel.correlation[2], np.roll(full.correlation[full.pair_index(3, 15)][::-1], 1))


@pytest.mark.parametrize("bad, err", [("band:x", ValueError), ("some", ValueError), (np.array([[0, 16]]), ValueError),
                                      (np.array([[0.5, 1]]), TypeError), (np.zeros((2, 3), int), ValueError)])
def test_bad_q_pairs_are_refused_before_the_run(run_file, bad, err):
    with pytest.raises(err, match="q_pairs"):
        xcca.analyze(run_file, q_pairs=bad, **_kw(run_file))


def test_bad_estimator_and_blocks(run_file):
    with pytest.raises(ValueError, match="estimator"):
        xcca.analyze(run_file, q_pairs="all", estimator="mean", **_kw(run_file))
    with pytest.raises(ValueError, match="blocks"):
        xcca.analyze(run_file, q_pairs="all", blocks=0, **_kw(run_file))


def test_memory_is_checked_before_anything_is_read(tmp_path, monkeypatch):
    # 200 rings x 8192 angles, all pairs: ~10 GB per accumulator -- refused before the (missing) frames are read.
    calls = []
    monkeypatch.setattr(runcorr_stages, "_physical_memory", lambda: 8 << 30)
    frames = np.ones((3, 420, 420), np.float32)
    from xcca import pipeline

    orig = pipeline.pass1_chunk
    monkeypatch.setattr(pipeline, "pass1_chunk", lambda *a, **k: calls.append(1) or orig(*a, **k))
    with pytest.raises(MemoryError, match="q_pairs.*band"):
        xcca.analyze(frames, center=(210, 210), qmin=0, qmax=200, nphi=8192, q_pairs="all")
    assert not calls
    # pairs of a few rings fit (the pooled accumulators are nq_used^2 per harmonic)
    st = runcorr_stages.make_stages(200, 8192, np.array([[0, 1], [5, 5]]), q=None)
    assert st[0].spec.memory_bytes() < (8 << 30) // 2 // runcorr_stages.PEAK_ACCUMULATORS


def test_partials_add_in_any_grouping_and_materialise(run_file, monkeypatch):
    # a tiny lazy budget: partials turn into correlators in the tree; the result equals the all-lazy one
    monkeypatch.setattr(runcorr_stages, "_LAZY_BYTES", 20000)
    small = xcca.analyze(run_file, q_pairs="band:3", **_kw(run_file))
    monkeypatch.setattr(runcorr_stages, "_LAZY_BYTES", None)
    lazy = xcca.analyze(run_file, q_pairs="band:3", **_kw(run_file))
    for name in ("run_correlation", "run_difference_correlation"):
        a, b = getattr(small, name), getattr(lazy, name)
        _close(a.correlation, b.correlation)
        _close(a.error, b.error)
        np.testing.assert_array_equal(a.counts, b.counts)
    # partials: a + b leaves a and b unchanged and pickles small
    import pickle

    spec = runcorr_stages.RunCorrSpec(4, 16, runcorr_stages.parse_q_pairs("all", 4), lazy_bytes=1)
    st = runcorr_stages.RunCorrStage(spec, "shots")
    rng = np.random.default_rng(0)
    x = rng.random((6, 4, 16)).astype(np.float32)
    v = rng.random((6, 4, 16)) > 0.2
    a, b = st(x[:3], v[:3], None), st(x[3:], v[3:], None)
    ab = a + b
    assert a.corr is None and len(a.pieces) == 1 and ab.corr is not None  # lazy_bytes=1: materialised
    c = pickle.loads(pickle.dumps(ab)).result()
    corr, counts = reference.run_correlation(np.where(v, x, 0).astype(np.float64), v)
    _close(c.correlation, corr)
    np.testing.assert_array_equal(c.counts, counts)


def test_per_shot_estimator(run_file, res_all):
    ps = xcca.analyze(run_file, q_pairs="band:1", estimator="per_shot", **_kw(run_file)).run_correlation
    polar, valid = _cleaned(run_file, res_all.frames.tolist())
    qp = runcorr_stages.parse_q_pairs("band:1", NQ)
    corr, _ = reference.run_correlation(polar, valid, qp, estimator="per_shot")
    _close(ps.correlation, corr)
    assert ps.estimator == "per_shot"


def test_result_file_round_trip(run_file, res_all, tmp_path):
    res = xcca.analyze(run_file, q_pairs="band:2", wavelength=1.3, q=GEOM.q(np.arange(25, 41)),
                       output=tmp_path / "r.h5", **_kw(run_file))
    back = xcca.AnalysisResult.read(tmp_path / "r.h5")
    for name in ("run_correlation", "run_difference_correlation"):
        a, b = getattr(res, name), getattr(back, name)
        for f in ("correlation", "error", "counts", "q_pairs", "block_shots", "replicates", "q"):
            np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
        assert (a.n_shots, a.estimator, a.units) == (b.n_shots, b.estimator, b.units)
        np.testing.assert_array_equal(a.harmonics(), b.harmonics())
    with h5py.File(tmp_path / "r.h5", "r") as f:
        g = f["/entry/run_correlation"]
        assert g.attrs["NX_class"] == "NXdata" and g.attrs["signal"] == "data"
        assert list(g.attrs["axes"]) == ["pair", "delta"]
        assert g["delta"].attrs["units"] == "rad" and g["data"].attrs["units"] == "counts^2"
        assert g["q_pair_values"].attrs["units"] == "1/angstrom" and g["radius_pairs"].attrs["units"] == "pixel"
        h = f["/entry/run_correlation_harmonics"]
        assert list(h.attrs["axes"]) == ["pair", "n"] and h["n"][-1] == KW["nphi"] // 2
        np.testing.assert_array_equal(h["data"][()], res.run_correlation.harmonics())
        assert f["/entry/process/parameters/q_pairs"][()] == b"band:2"
    # files without the run correlation still read
    plain = xcca.analyze(run_file, output=tmp_path / "p.h5", **_kw(run_file))
    back = xcca.AnalysisResult.read(tmp_path / "p.h5")
    assert back.run_correlation is None and plain.run_correlation is None


def _cli(run, out, *extra):
    return cli_analysis.main(["correlate", str(run), "--dataset", "/entry/data/data", "--mask",
                              f"{run}::/entry/mask", "--center", f"{GEOM.center[0]},{GEOM.center[1]}", "--qmin",
                              str(KW["qmin"]), "--qmax", str(KW["qmax"]), "--nphi", str(KW["nphi"]), "--chunk", "4",
                              "-q", "-o", str(out), *extra])


def test_cli_pairs(run_file, res_all, tmp_path, capsys):
    assert _cli(run_file, tmp_path / "a.h5", "--pairs", "band:1") == 1  # two corrupt frames skipped
    back = xcca.AnalysisResult.read(tmp_path / "a.h5")
    assert np.all(np.diff(back.run_correlation.q_pairs, axis=1) <= 1)
    pairs = np.array([[1, 4], [7, 7]])
    np.savetxt(tmp_path / "p.txt", pairs, fmt="%d")
    np.save(tmp_path / "p.npy", pairs)
    for f in ("p.txt", "p.npy"):
        assert _cli(run_file, tmp_path / "b.h5", "--pairs", str(tmp_path / f)) == 1
        rc = xcca.AnalysisResult.read(tmp_path / "b.h5").run_correlation
        np.testing.assert_array_equal(rc.q_pairs, pairs)
        full = res_all.run_correlation
        _close(rc.correlation, full.correlation[[full.pair_index(1, 4), full.pair_index(7, 7)]])
    capsys.readouterr()


def test_cli_legendre_from_the_run_correlation(run_file, tmp_path, capsys):
    from xcca.legendre import legendre_decompose

    q = ",".join(str(v) for v in GEOM.q(np.arange(25, 41)))
    assert _cli(run_file, tmp_path / "l.h5", "--pairs", "band:1", "--wavelength", "1.3", "--q", q,
                "--legendre", "6") == 1
    back = xcca.AnalysisResult.read(tmp_path / "l.h5")
    want = legendre_decompose(back.run_difference_correlation, None, 1.3, l_max=6)
    with h5py.File(tmp_path / "l.h5", "r") as f:
        B = f["/entry/legendre/B"][()]
    assert B.shape == want.B.shape == (4, len(back.run_difference_correlation.q_pairs))
    np.testing.assert_allclose(B, want.B, rtol=1e-10, atol=1e-12 * np.abs(want.B).max())
    capsys.readouterr()


@pytest.mark.parametrize("content", ["band:-1", "band:x", "nofile.txt", "1 2 3\n4 5 6\n", "0 99\n", "0.5 1\n",
                                     "a b\n", ""])
def test_cli_bad_pairs_exit_2_naming_the_flag(run_file, tmp_path, capsys, content):
    arg = content
    if "\n" in content or content == "":
        (tmp_path / "bad.txt").write_text(content)
        arg = str(tmp_path / "bad.txt")
    elif content == "nofile.txt":
        arg = str(tmp_path / "nofile.txt")
    assert _cli(run_file, tmp_path / "c.h5", "--pairs", arg) == 2
    err = capsys.readouterr().err
    assert "--pairs" in err and "Traceback" not in err
    assert not (tmp_path / "c.h5").exists()


def test_cli_pairs_too_large_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runcorr_stages, "_physical_memory", lambda: 1 << 30)
    run = simulate_run(tmp_path / "big.h5", 2, RunGeometry(shape=(300, 300), center=(150, 150), distance=0.00559))
    rc = cli_analysis.main(["correlate", str(run), "--dataset", "/entry/data/data", "--center", "150,150",
                            "--qmin", "0", "--qmax", "140", "--nphi", "4096", "--pairs", "all", "-q", "-o",
                            str(tmp_path / "o.h5")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--pairs" in err and "band" in err


distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address=None)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.mark.parametrize("lazy", [None, 20000])
def test_dask_run_correlation_is_bit_identical_to_local(client, run_file, monkeypatch, lazy):
    monkeypatch.setattr(runcorr_stages, "_LAZY_BYTES", lazy)  # 20000: partials become correlators on the workers
    kw = _kw(run_file, q_pairs="all")
    local = xcca.analyze(run_file, **kw)
    dist = xcca.analyze(run_file, client=client, **kw)
    assert dist.parameters["driver"] == "dask"
    for name in ("run_correlation", "run_difference_correlation"):
        a, b = getattr(local, name), getattr(dist, name)
        for f in ("correlation", "error", "counts", "replicates", "block_shots", "q_pairs"):
            x, y = getattr(a, f), getattr(b, f)
            assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), f"{name}.{f} differs"
    np.testing.assert_array_equal(local.pairs, dist.pairs)
