"""The streaming correlation pipeline (xcca.pipeline), the simulated runs (xcca.simulate) and the plots (xcca.plot).

The composition is checked against an independent, direct computation: bilinear polar samples from
scipy.ndimage.map_coordinates, outliers from a per-ring loop, correlations as explicit O(n²) sums, pairs from LOKI's
full-distance-matrix algorithm on polynomial fits of the ring profiles.
"""
from __future__ import annotations

import tracemalloc

import h5py
import numpy as np
import pytest
from hypothesis import given, strategies as st
from scipy.ndimage import map_coordinates

import xcca
from xcca import _core, reference
from xcca import pipeline as P
from xcca.simulate import RunGeometry, q_of_radius, radius_of_q, simulate_frames, simulate_run

GEOM = RunGeometry(shape=(120, 128), center=(63.4, 58.7), distance=0.00559)
QMIN, QMAX, NPHI = 25, 50, 64
BACKENDS = ["numpy"] + (["xcca"] if hasattr(xcca, "PolarGrid") and hasattr(xcca, "pair_shots") else [])


@pytest.fixture(scope="module")
def frames():
    return np.stack(list(simulate_frames(12, GEOM, seed=5)))


@pytest.fixture(scope="module")
def mask():
    from xcca.simulate import _detector_mask

    return _detector_mask(GEOM)


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "run.h5"
    return simulate_run(path, 14, GEOM, seed=5, corrupt=(3, 10))


# ------------------------------------------------------------------ simulation


def test_simulation_is_deterministic_and_masked(mask):
    a = np.stack(list(simulate_frames(3, GEOM, seed=1)))
    b = np.stack(list(simulate_frames(3, GEOM, seed=1)))
    assert np.array_equal(a, b) and a.dtype == np.uint16 and a.shape == (3, 120, 128)
    assert not np.array_equal(a[0], a[1])
    assert (a[:, ~mask] == 0).all() and a[:, mask].mean() > 5
    assert 0.7 < mask.mean() < 0.97
    r = np.array([10.0, 35.0, 80.0])
    np.testing.assert_allclose(radius_of_q(q_of_radius(r, 1.3, 1e-4, 0.02), 1.3, 1e-4, 0.02), r, rtol=1e-12)
    assert abs(GEOM.r111 - 35) < 0.5


def test_simulated_run_file(run_file):
    with h5py.File(run_file, "r") as f:
        d = f["/entry/data/data"]
        assert d.shape == (14, 120, 128) and d.chunks == (1, 120, 128)
        assert not d[3].any() and not d[10].any() and d[4].any()
        assert list(f["/entry"].attrs["corrupt"]) == [3, 10]
        assert f["/entry"].attrs["center_x"] == pytest.approx(63.4)
        assert f["/entry/mask"].dtype == bool


# ------------------------------------------------------------------ outlier removal


def outliers_loop(x, v, thresh):
    out = np.zeros(x.shape, bool)
    for idx in np.ndindex(x.shape[:-1]):
        vv = v[idx] & np.isfinite(x[idx])
        vals = x[idx][vv]
        if vals.size == 0:
            continue
        med = np.median(vals)
        mad = np.median(np.abs(vals - med))
        if mad == 0:
            continue
        out[idx] = vv & (0.6745 * np.abs(x[idx] - med) / mad > thresh)
    return out


@given(
    n=st.integers(1, 40), rows=st.integers(1, 6), p_valid=st.floats(0, 1), seed=st.integers(0, 2**31),
    thresh=st.sampled_from([1.0, 3.5, 6.0]), dtype=st.sampled_from([np.float32, np.float64]),
    ints=st.booleans(),
)
def test_outlier_mask_matches_loop(n, rows, p_valid, seed, thresh, dtype, ints):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 2, n))
    if ints:  # ties and MAD = 0
        x = np.round(x)
    x[rng.random(x.shape) < 0.1] *= 30
    x = x.astype(dtype)
    x[rng.random(x.shape) < 0.05] = np.nan
    v = rng.random(x.shape) < p_valid
    before = x.copy()
    got = P.outlier_mask(x, v, thresh)
    ref = outliers_loop(x.astype(np.float64), v, thresh)  # both in float64
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(x, before)
    spec_valid, spec_removed = reference.ring_outliers(x, v, thresh)
    np.testing.assert_array_equal(spec_valid, v & ~ref)
    if hasattr(_core, "ring_outliers"):  # the compiled kernel against the reference: identical bits, any threads
        xs = [x, x[::-1], x.astype(x.dtype.newbyteorder(">"))]  # non-contiguous and big-endian views too
        for xv, threads in zip(xs, (1, 2, 2)):
            vv = v[::-1] if xv.base is x and xv.strides[0] < 0 else v
            new, removed = _core.ring_outliers(np.ascontiguousarray(xv, dtype=xv.dtype.newbyteorder("=")), vv,
                                               thresh, threads)
            exp_valid, exp_removed = reference.ring_outliers(xv, vv, thresh)
            np.testing.assert_array_equal(new, exp_valid)
            np.testing.assert_array_equal(removed, exp_removed)


def test_ring_outliers_bad_input():
    if not hasattr(_core, "ring_outliers"):
        pytest.skip("compiled kernel not in this build")
    x = np.zeros((2, 5), np.float32)
    with pytest.raises(ValueError):
        _core.ring_outliers(x, np.ones((2, 4), bool), 3.5)
    with pytest.raises(TypeError):
        _core.ring_outliers(x, np.ones((2, 5), np.uint8), 3.5)
    with pytest.raises(TypeError):
        _core.ring_outliers(x.astype(np.int32), np.ones((2, 5), bool), 3.5)
    with pytest.raises(ValueError):
        _core.ring_outliers(x, np.ones((2, 5), bool), 0.0)
    with pytest.raises(ValueError):
        _core.ring_outliers(x, np.ones((2, 5), bool), 3.5, 0)


def test_accumulator_is_nan_aware_and_adds():
    a = P.Accumulator.of(np.array([[1.0, np.nan], [3.0, 4.0]]))
    b = P.Accumulator.of(np.array([[np.nan, np.nan]]))
    s = a + b
    np.testing.assert_array_equal(s.count, [2, 1])
    np.testing.assert_allclose(s.mean(), [2.0, 4.0])
    assert np.isnan(P.Accumulator.zeros(2).mean()).all()


# ------------------------------------------------------------------ composition against a direct computation


def direct_polar(frame, mask, center, radii, nphi):
    phi = 2 * np.pi * np.arange(nphi) / nphi
    x = center[0] + radii[:, None] * np.cos(phi)
    y = center[1] + radii[:, None] * np.sin(phi)
    vals = map_coordinates(frame.astype(np.float64), [y.ravel(), x.ravel()], order=1, mode="constant").reshape(
        x.shape)
    h, w = frame.shape
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    ok = (x0 >= 0) & (y0 >= 0) & (x0 + 1 < w) & (y0 + 1 < h)
    xc, yc = np.clip(x0, 0, w - 2), np.clip(y0, 0, h - 2)
    ok &= mask[yc, xc] & mask[yc, xc + 1] & mask[yc + 1, xc] & mask[yc + 1, xc + 1]
    return vals.astype(np.float32), ok


def direct_autocorr(a, m):
    n = a.shape[-1]
    c = np.full(n, np.nan)
    for k in range(n):
        mm = m & np.roll(m, -k)
        if mm.sum():
            c[k] = np.sum(np.where(mm, a * np.roll(a, -k), 0)) / mm.sum()
    return c


def loki_pairs(curves):
    return reference.pair_loki(curves)[0]


def periodic_fit(ring, m, deg, overlap):
    """LOKI's fit_periodic model via numpy.polynomial (independent of the pipeline's basis)."""
    n = ring.size
    nn = int(overlap * n)
    x = np.arange(-nn, n + nn)
    y = np.concatenate([ring[n - nn:], ring, ring[:nn]])
    mm = np.concatenate([m[n - nn:], m, m[:nn]])
    use = mm & (y != 0)
    fit = np.polynomial.Chebyshev.fit(x[use], y[use], deg)
    return fit(np.arange(n))


@pytest.mark.parametrize("backend", BACKENDS)
def test_analysis_equals_direct_computation(frames, mask, backend):
    thresh, deg, ring_r = 4.0, 6, 35
    res = P.analyze(frames, center=GEOM.center, qmin=QMIN, qmax=QMAX, nphi=NPHI, mask=mask, backend=backend,
                    outlier_thresh=thresh, deg=deg, ring_for_pairing=ring_r, chunk=5, n_threads=2)
    radii = np.arange(QMIN, QMAX, dtype=float)
    np.testing.assert_array_equal(res.radii, radii)
    polars, valids = [], []
    for fr in frames:
        p, ok = direct_polar(fr, mask, GEOM.center, radii, NPHI)
        ok = ok & ~outliers_loop(p.astype(np.float64), ok, thresh)
        polars.append(p)
        valids.append(ok)
    polars, valids = np.array(polars, dtype=np.float64), np.array(valids)
    # pairs: LOKI's algorithm on the fitted profiles of the pairing ring over the common valid samples
    i = ring_r - QMIN
    common = direct_polar(frames[0], mask, GEOM.center, radii, NPHI)[1][i]
    curves = np.array([periodic_fit(polars[s, i], valids[s, i], deg, 0.2) for s in range(len(frames))])
    np.testing.assert_array_equal(res.pairs, loki_pairs(curves * common))
    assert res.unpaired.size == 0 and len(res.frames) == 12 and not res.skipped
    # raw correlation: mean over shots of C / mean²; difference correlation: mean over pairs
    rtol = 1e-9 if backend == "numpy" else 2e-4
    for q in (0, i, len(radii) - 1):
        raw = []
        for s in range(len(frames)):
            a, m = polars[s, q], valids[s, q]
            raw.append(direct_autocorr(a, m) / np.mean(a[m]) ** 2)
        np.testing.assert_allclose(res.raw_correlation[q], np.nanmean(raw, axis=0), rtol=rtol, atol=0)
        dif = []
        for a_i, b_i in res.pairs:
            m = valids[a_i, q] & valids[b_i, q]
            dif.append(direct_autocorr(np.where(m, polars[a_i, q] - polars[b_i, q], 0), m))
        scale = np.nanmax(np.abs(dif))
        # the pipeline forms the differences in float32 (the polar images' type): 1e-6 of the scale
        np.testing.assert_allclose(res.difference_correlation[q], np.nanmean(dif, axis=0), rtol=0,
                                   atol=max(rtol, 1e-6) * scale)
        prof = np.mean([polars[s, q][valids[s, q]].mean() for s in range(len(frames))])
        assert res.radial_profile[q] == pytest.approx(prof, rel=rtol)
    np.testing.assert_allclose(res.difference_correlation_norm,
                               res.difference_correlation / res.radial_profile[:, None] ** 2, rtol=1e-12)


def test_chunk_size_does_not_change_the_result(frames, mask):
    kw = dict(center=GEOM.center, qmin=QMIN, qmax=QMAX, nphi=NPHI, mask=mask, backend="numpy")
    a = P.analyze(frames, chunk=1, **kw)
    b = P.analyze(frames, chunk=12, **kw)
    np.testing.assert_array_equal(a.pairs, b.pairs)
    for name in ("raw_correlation", "difference_correlation", "radial_profile", "mean_polar"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-12, atol=1e-12)


class CountingStack:
    """An (N, H, W) stack that records how many frames each read asks for."""

    def __init__(self, arr):
        self.arr, self.shape, self.dtype, self.reads = arr, arr.shape, arr.dtype, []

    def __getitem__(self, key):
        out = self.arr[key]
        self.reads.append(1 if out.ndim == 2 else out.shape[0])
        return out


def test_streams_in_chunks(frames, mask):
    stack = CountingStack(frames)
    P.analyze(stack, center=GEOM.center, qmin=QMIN, qmax=QMAX, nphi=NPHI, mask=mask, backend="numpy", chunk=4)
    assert max(stack.reads) <= 4 and sum(stack.reads) >= 2 * len(frames)


def test_peak_memory_independent_of_frame_count(tmp_path):
    g = RunGeometry(shape=(96, 96), center=(48.2, 47.7), distance=0.0045)
    peaks = []
    for n in (8, 40):
        path = simulate_run(tmp_path / f"r{n}.h5", n, g, seed=1)
        P.analyze(path, dataset="/entry/data/data", center=g.center, qmin=15, qmax=40, nphi=64, backend="numpy",
                  chunk=4)  # warm-up (imports, caches)
        tracemalloc.start()
        P.analyze(path, dataset="/entry/data/data", center=g.center, qmin=15, qmax=40, nphi=64, backend="numpy",
                  chunk=4)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 1.25 * peaks[0] + 200_000, peaks


# ------------------------------------------------------------------ files, corrupt frames, result file


def test_hdf5_run_with_corrupt_frames(run_file, tmp_path):
    out = tmp_path / "res.h5"
    res = P.analyze(f"{run_file}::/entry/data/data", mask=f"{run_file}::/entry/mask", center="auto", qmin=QMIN,
                    qmax=QMAX, nphi=NPHI, wavelength=1.3, q=GEOM.q(np.arange(QMIN, QMAX)), backend="numpy",
                    output=out)
    assert [i for i, _ in res.skipped] == [3, 10] and all(r == "all zero" for _, r in res.skipped)
    assert sorted(np.concatenate([res.pairs.ravel(), res.unpaired]).tolist()) == [i for i in range(14)
                                                                                  if i not in (3, 10)]
    assert np.hypot(res.parameters["center"][0] - 63.4, res.parameters["center"][1] - 58.7) < 0.3
    theta = np.arcsin(GEOM.q(res.radii) * 1.3 / (4 * np.pi))
    np.testing.assert_allclose(res.cos_psi, np.cos(res.delta)[None] * np.cos(theta)[:, None] ** 2
                               + np.sin(theta)[:, None] ** 2, rtol=1e-12)
    back = P.AnalysisResult.read(out)
    for name in P.AnalysisResult._ARRAYS + P.AnalysisResult._SHOTS + ("q", "cos_psi"):
        np.testing.assert_array_equal(getattr(back, name), getattr(res, name))
    assert back.skipped == res.skipped
    assert back.parameters["nphi"] == NPHI and back.parameters["center_auto"] is True
    assert back.versions["xcca"] == xcca.__version__ and "numpy" in back.versions
    with h5py.File(out, "r") as f:  # the NeXus layout (issue 14; see test_result_file.py)
        assert f["entry/difference_correlation/data"].shape == (QMAX - QMIN, NPHI)
        assert f["entry/pairs/pairs"].shape[1] == 2 and "parameters" in f["entry/process"]
    assert not (tmp_path / "res.h5.tmp").exists()


def test_nan_frames_and_file_list_source(tmp_path, frames, mask):
    import fabio

    paths = []
    for k, fr in enumerate(frames[:6]):
        p = tmp_path / f"f{k}.edf"
        data = fr.astype(np.float32)
        if k == 2:
            data[:] = np.nan
        fabio.edfimage.EdfImage(data=data).write(str(p))
        paths.append(p)
    (tmp_path / "bad.edf").write_bytes(b"not an image at all")
    paths.insert(4, tmp_path / "bad.edf")
    res = P.analyze([str(p) for p in paths], center=GEOM.center, qmin=QMIN, qmax=QMAX, nphi=NPHI, mask=mask,
                    backend="numpy")
    reasons = dict(res.skipped)
    assert set(reasons) == {2, 4}
    assert "non-finite" in reasons[2] and "unreadable" in reasons[4]
    ref = P.analyze(frames[[0, 1, 3, 4, 5]].astype(np.float32), center=GEOM.center, qmin=QMIN, qmax=QMAX,
                    nphi=NPHI, mask=mask, backend="numpy")
    np.testing.assert_allclose(res.raw_correlation, ref.raw_correlation, rtol=1e-12)


def test_all_frames_corrupt_is_a_clear_error():
    with pytest.raises(ValueError, match="no good frame"):
        P.analyze(np.zeros((3, 40, 40)), center=(20, 20), qmin=2, qmax=10, nphi=8, backend="numpy")


def test_single_good_frame_gives_no_pairs(frames, mask):
    res = P.analyze(frames[:1], center=GEOM.center, qmin=QMIN, qmax=QMAX, nphi=NPHI, mask=mask, backend="numpy")
    assert res.pairs.shape == (0, 2) and res.unpaired.tolist() == [0]
    assert np.isnan(res.difference_correlation).all() and np.isfinite(res.raw_correlation).any()


@pytest.mark.parametrize("kw,match", [
    (dict(center=(500, 3)), "outside"),
    (dict(center=(np.nan, 3)), "finite"),
    (dict(center="middle"), "auto"),
    (dict(qmin=30, qmax=30), "qmin"),
    (dict(qmin=-1), "qmin"),
    (dict(qmin=500, qmax=600), "beyond"),
    (dict(nphi=1), "nphi"),
    (dict(wavelength=0.0, q=2.0), "wavelength"),
    (dict(wavelength=-1.0, q=2.0), "wavelength"),
    (dict(wavelength=1.3), "q"),
    (dict(wavelength=1.3, q=50.0), "reach"),
    (dict(wavelength=1.3, q=[1.0, 2.0]), "one per radius"),
    (dict(mask=np.ones((3, 3), bool)), "mask"),
    (dict(ring_for_pairing=400), "ring_for_pairing"),
    (dict(chunk=0), "chunk"),
    (dict(backend="cuda"), "backend"),
    (dict(deg=-1), "deg"),
    (dict(overlap=0.7), "overlap"),
])
def test_bad_parameters(frames, kw, match):
    args = dict(center=GEOM.center, qmin=QMIN, qmax=QMAX, nphi=NPHI, backend="numpy")
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        P.analyze(frames[:4], **args)


def test_bad_sources(tmp_path, run_file):
    with pytest.raises(OSError, match="not found"):
        P.analyze(tmp_path / "none.h5", center=(1, 1), qmin=0, qmax=2, nphi=4)
    with pytest.raises(ValueError, match="not found.*datasets there"):
        P.analyze(run_file, dataset="/entry/nothing", center=(1, 1), qmin=0, qmax=2, nphi=4)
    with pytest.raises(ValueError, match="give the dataset"):
        P.analyze(run_file, center=(1, 1), qmin=0, qmax=2, nphi=4)
    with pytest.raises(ValueError, match="group"):
        P.analyze(run_file, dataset="/entry", center=(1, 1), qmin=0, qmax=2, nphi=4)
    with pytest.raises(OSError, match="mask file not found"):
        P.analyze(run_file, dataset="/entry/data/data", mask=str(tmp_path / "m.npy"), center=(1, 1), qmin=0,
                  qmax=2, nphi=4)
    with pytest.raises(OSError, match="output directory"):
        P.analyze(run_file, dataset="/entry/data/data", center=(1, 1), qmin=0, qmax=2, nphi=4,
                  output=tmp_path / "missing" / "r.h5")
    with pytest.raises(ValueError, match="3-D"):
        P.analyze(np.zeros((2, 2, 3, 3)), center=(1, 1), qmin=0, qmax=2, nphi=4)


def test_find_center_on_simulated_frame(frames, mask):
    res = P.find_center(frames[0].astype(float), mask)
    assert np.hypot(res.center[0] - GEOM.center[0], res.center[1] - GEOM.center[1]) < 0.3


# ------------------------------------------------------------------ plots


def test_figures_are_written(tmp_path, frames, mask):
    pytest.importorskip("matplotlib")
    from xcca import plot

    res = P.analyze(frames, center=GEOM.center, qmin=QMIN, qmax=QMAX, nphi=NPHI, mask=mask, backend="numpy",
                    wavelength=1.3, q=2.67)
    paths = plot.save_figures(res, tmp_path / "figs")
    assert {p.name for p in paths} == {"polar_image.png", "radial_profile.png", "correlation_map.png",
                                       "correlation_cos_psi.png", "overview.png"}
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    ax = plot.plot_cos_psi({"d": res.difference_correlation_norm[10]}, res.cos_psi[10])
    x, y = ax.lines[0].get_data()
    assert x.size == NPHI // 2 and np.nanmax(np.abs(y)) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        plot.plot_polar(np.zeros(5))


def test_plot_without_matplotlib_is_a_clear_error(monkeypatch):
    import sys

    from xcca import plot

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match="pip install"):
        plot.plot_radial_profile([1, 2], [3, 4])


def test_outlier_cache_gives_the_same_result(frames, mask, monkeypatch):
    kw = dict(center=GEOM.center, qmin=QMIN, qmax=QMAX, nphi=NPHI, mask=mask, backend="numpy", outlier_thresh=2.0)
    cached = P.analyze(frames, **kw)
    monkeypatch.setattr(P, "_OUTLIER_CACHE_BYTES", 3000)  # only the first frames fit: the rest are recomputed
    partly = P.analyze(frames, **kw)
    monkeypatch.setattr(P, "_OUTLIER_CACHE_BYTES", 0)
    none = P.analyze(frames, **kw)
    assert cached.n_outliers.sum() > 100
    for other in (partly, none):
        np.testing.assert_array_equal(other.pairs, cached.pairs)
        np.testing.assert_array_equal(other.difference_correlation, cached.difference_correlation)


def test_cos_psi_matches_xcca_cos_psi(frames, mask):
    if not hasattr(xcca, "cos_psi"):
        pytest.skip("xcca.cos_psi not in this build")
    q = GEOM.q(np.arange(QMIN, QMAX))
    res = P.analyze(frames[:4], center=GEOM.center, qmin=QMIN, qmax=QMAX, nphi=NPHI, mask=mask, backend="numpy",
                    wavelength=1.3, q=q)
    np.testing.assert_allclose(res.cos_psi, xcca.cos_psi(NPHI, q, 1.3), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_buffer_reuse_keeps_inputs_and_results(frames, mask, tmp_path, backend):
    # The pipeline reuses its frame and polar buffers between chunks (HDF5 read_direct, out=): an HDF5 run with a
    # corrupt frame gives the result of the same in-memory stack, whose array is never written into.
    stack = np.array(frames)
    stack[3] = 0  # corrupt: all zero
    before = stack.copy()
    path = tmp_path / "run.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=stack, chunks=(1, *stack.shape[1:]))
    kw = dict(center=GEOM.center, qmin=QMIN, qmax=QMAX, nphi=NPHI, mask=mask, backend=backend, chunk=4,
              n_threads=1)
    a = P.analyze(stack, **kw)
    b = P.analyze(str(path), dataset="data", **kw)
    np.testing.assert_array_equal(stack, before)
    assert a.skipped == b.skipped == [(3, "all zero")]
    np.testing.assert_array_equal(a.pairs, b.pairs)
    for name in ("raw_correlation", "difference_correlation", "radial_profile", "mean_polar", "fit_rms"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


# ------------------------------------------------------------------ pairing within keys (issue 15)


def test_pair_groups_array_and_dataset(frames, mask, run_file, tmp_path):
    keys = np.arange(len(frames)) % 3  # e.g. three memory cells
    kw = dict(center=GEOM.center, qmin=QMIN, qmax=QMAX, nphi=NPHI, mask=mask, backend="numpy")
    res = P.analyze(frames, pair_groups=keys, **kw)
    assert len(res.pairs) and (keys[res.pairs[:, 0]] == keys[res.pairs[:, 1]]).all()
    assert sorted(np.concatenate([res.pairs.ravel(), res.unpaired]).tolist()) == list(range(len(frames)))
    plain = P.analyze(frames, **kw)
    assert not np.array_equal(plain.pairs, res.pairs)
    with pytest.raises(ValueError, match="pair_groups"):
        P.analyze(frames, pair_groups=keys[:-1], **kw)
    with pytest.raises(ValueError, match="pair_groups"):
        P.analyze(frames, pair_groups="/entry/cell_id", **kw)  # an array run has no file
    # A dataset in the run's own file, as `xcca correlate --pair-groups /entry/cell_id`.
    import shutil

    run = tmp_path / "run.h5"
    shutil.copy(run_file, run)
    with h5py.File(run, "a") as f:
        n = f["/entry/data/data"].shape[0]
        f["/entry/cell_id"] = np.arange(n) % 2
    kw = dict(center="auto", qmin=QMIN, qmax=QMAX, nphi=NPHI, backend="numpy")
    res = P.analyze(f"{run}::/entry/data/data", pair_groups="/entry/cell_id", **kw)
    cell = np.arange(n) % 2
    assert len(res.pairs) and (cell[res.pairs[:, 0]] == cell[res.pairs[:, 1]]).all()
    with pytest.raises(ValueError, match="no dataset"):
        P.analyze(f"{run}::/entry/data/data", pair_groups="/entry/nothing", **kw)
    from xcca.cli import main

    out = tmp_path / "res.h5"
    rc = main(["correlate", str(run), "--dataset", "/entry/data/data", "--center", "auto", "--qmin", str(QMIN),
               "--qmax", str(QMAX), "--nphi", str(NPHI), "--pair-groups", "/entry/cell_id", "-o", str(out), "-q"])
    assert rc == 1  # done, with the run's two corrupt frames skipped (exit code 1)
    back = P.AnalysisResult.read(out)
    assert (cell[back.pairs[:, 0]] == cell[back.pairs[:, 1]]).all()
