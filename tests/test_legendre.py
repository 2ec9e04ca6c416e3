"""xcca.legendre: forward model, round trips with Ewald curvature, regularisation choice, error bars, PSD fit,
half-set consistency, LOKI's quadrature, the physical check (point scatterers) and bad input."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.special import eval_legendre

import xcca
from xcca import _loki_legendre as lokileg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _legendre_sim import analytic_B, mean_cross_correlation, object_atoms, simulate_rings  # noqa: E402

LAM = 1.0


def _q(nq, lo=5.0, hi=30.0):
    return 4 * np.pi * np.sin(np.deg2rad(np.linspace(lo, hi, nq))) / LAM


def _random_psd(rng, nq, l, decay=5.0):
    B = np.empty((l.size, nq, nq))
    for i, lv in enumerate(l):
        Y = rng.normal(size=(nq, min(2 * lv + 1, nq)))
        B[i] = Y @ Y.T * np.exp(-lv / decay) / Y.shape[1]
    return B


def _noise(rng, nq, n, sig):
    """Noise with the correlator's symmetries: independent per lag for q < q', mirrored for q > q',
    symmetric in Delta for autocorrelations."""
    e = rng.normal(size=(nq, nq, n)) * sig
    mirror = (-np.arange(n)) % n
    i, j = np.tril_indices(nq, -1)
    e[i, j] = e[j, i][:, mirror]
    for a in range(nq):
        e[a, a] = e[a, a][np.minimum(np.arange(n), mirror)]
    return e


def _case(seed, nq, n, sig, l_max=20):
    rng = np.random.default_rng(seed)
    q = _q(nq)
    l = np.arange(0, l_max + 1, 2)
    B = _random_psd(rng, nq, l)
    C = xcca.legendre_synthesize(B, l, q, LAM, n)
    return q, l, B, C + _noise(rng, nq, n, sig), np.full(C.shape, sig)


def _err(r, B):
    iu = np.triu_indices(B.shape[1])
    return float(np.linalg.norm((r.B - B)[:, iu[0], iu[1]]))


# ----------------------------------------------------------------------------------------------- forward model


@pytest.mark.parametrize("n", [7, 64, 361])
def test_synthesize_equals_direct_sum(n):
    rng = np.random.default_rng(0)
    nq = 5
    q = _q(nq)
    l = np.array([0, 1, 2, 5, 8, 13])
    B = rng.normal(size=(l.size, nq, nq))
    B = B + np.swapaxes(B, 1, 2)
    C = xcca.legendre_synthesize(B, l, q, LAM, n)
    cp = xcca.cos_psi(n, q[:, None], LAM, q[None, :])
    direct = sum(B[i][..., None] * eval_legendre(lv, cp) for i, lv in enumerate(l))
    np.testing.assert_allclose(C, direct, rtol=0, atol=1e-12 * np.abs(direct).max())
    # pair layouts give the same rows
    i, j = np.triu_indices(nq)
    Cp = xcca.legendre_synthesize(B[:, i, j], l, q, LAM, n, pairs=np.stack([i, j], 1))
    np.testing.assert_allclose(Cp, C[i, j], atol=1e-12 * np.abs(direct).max())
    Cl = xcca.legendre_synthesize(B[:, i, j], l, q[i], LAM, n, q2=q[j])
    np.testing.assert_allclose(Cl, C[i, j], atol=1e-12 * np.abs(direct).max())
    C1 = xcca.legendre_synthesize(B[:, 0, 3], l, q[0], LAM, n, q2=q[3])
    np.testing.assert_allclose(C1, C[0, 3], atol=1e-12 * np.abs(direct).max())


# ----------------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("nq,n,sig", [(8, 360, 1e-3), (20, 720, 3e-3)])
def test_round_trip_within_error_bars(nq, n, sig):
    q, l, B, C, E = _case(1, nq, n, sig)
    r = xcca.legendre_decompose(C, q, LAM, l_max=20, error=E, method="lstsq")
    assert r.B.shape == B.shape and r.error_source == "error"
    iu = np.triu_indices(nq)
    z = ((r.B - B) / r.B_error)[:, iu[0], iu[1]]
    well = (r.condition[iu] < 1e3)[None, :].repeat(l.size, 0)
    assert well.mean() > 0.5
    assert np.mean(np.abs(z[well]) > 3) < 0.01  # within 3 sigma where well conditioned (0.27 % expected outside)
    assert 0.85 < np.std(z) < 1.15  # the error bars are the actual scatter
    assert 0.9 < np.median(r.chi2) < 1.1
    assert np.all(r.condition >= 1)
    # residual = data - forward(B), everywhere
    np.testing.assert_allclose(r.residual, C - xcca.legendre_synthesize(r.B, l, q, LAM, n), atol=1e-12)


def test_error_from_residual_without_error_bars():
    q, l, B, C, E = _case(2, 10, 360, 2e-3)
    r = xcca.legendre_decompose(C, q, LAM, l_max=20, method="lstsq")
    assert r.error_source == "residual"
    iu = np.triu_indices(10)
    z = ((r.B - B) / r.B_error)[:, iu[0], iu[1]]
    assert 0.85 < np.std(z) < 1.15


_GCV_CASES = [(seed, nq) for nq in (8, 10, 12, 14, 16, 20) for seed in range(5)] + [(s, 8) for s in range(5, 10)]


@pytest.mark.parametrize("seed,nq", _GCV_CASES)
def test_gcv_within_1p5_of_oracle(seed, nq):
    q, l, B, C, E = _case(seed, nq, 360, 3e-3)
    r = xcca.legendre_decompose(C, q, LAM, l_max=20, error=E, reg="gcv")
    assert r.criterion_name == "gcv" and r.criterion.shape == r.reg_grid.shape
    scan = np.logspace(-2, 2, 25)
    oracle = min(_err(xcca.legendre_decompose(C, q, LAM, l_max=20, error=E, reg=v), B) for v in scan)
    assert _err(r, B) <= 1.5 * oracle
    # and regularisation pays: least squares is worse than the oracle
    assert _err(xcca.legendre_decompose(C, q, LAM, l_max=20, error=E, method="lstsq"), B) > oracle


def test_psd_structured_prior_scale_nq8_seed0():
    """nq = 8, seed 0: one cross pair of strong rings (theta 5 / 30 deg, condition 2.9e3) carries most of the error.
    A pooled prior scale (one tau_l for all pairs) over-shrinks it: GCV is 2x its oracle and even the best fixed
    lambda is worse than with the PSD-structured scale tau_l(q, q')^2 ~ B_l(q, q) B_l(q', q') (the default)."""
    q, l, B, C, E = _case(0, 8, 360, 3e-3)
    scan = np.logspace(-2, 2, 25)

    def oracle(penalty):
        return min(_err(xcca.legendre_decompose(C, q, LAM, l_max=20, error=E, reg=v, penalty=penalty), B)
                   for v in scan)

    o_pooled, o_psd = oracle("pooled"), oracle("scaled")
    e_pooled = _err(xcca.legendre_decompose(C, q, LAM, l_max=20, error=E, penalty="pooled"), B)
    e_psd = _err(xcca.legendre_decompose(C, q, LAM, l_max=20, error=E), B)
    assert e_pooled > 1.5 * o_pooled  # the failure the structured scale cures
    assert e_psd <= 1.5 * o_psd and e_psd < e_pooled and o_psd < o_pooled
    r = xcca.legendre_decompose(C, q, LAM, l_max=20, error=E, penalty="pooled")
    iu = np.triu_indices(8)
    per_pair = np.linalg.norm((r.B - B)[:, iu[0], iu[1]], axis=0)
    assert per_pair.max() ** 2 > 0.5 * np.sum(per_pair ** 2)  # one pair carries most of the squared error
    assert r.condition[iu][np.argmax(per_pair)] > 1e3
    # without the ring index (q per pair) the PSD structure is unknown: the pooled scale is used
    i, j = iu
    rl = xcca.legendre_decompose(C[i, j], q[i], LAM, q2=q[j], l_max=20, error=E[i, j])
    np.testing.assert_allclose(rl.B, r.B[:, i, j], rtol=1e-9, atol=1e-12)


def test_classical_gcv_undersmooths_with_few_pairs():
    # nq = 8, seed 2: classical GCV (gamma = 1) picks lambda ~ 0.07, > 10x the oracle error; robust GCV does not
    q, l, B, C, E = _case(2, 8, 360, 3e-3)
    # with the pooled prior scale (the default without the ring index); the PSD-structured default uses gamma = 1
    rc = xcca.legendre_decompose(C, q, LAM, l_max=20, error=E, reg="gcv", gcv_gamma=1.0, penalty="pooled")
    rr = xcca.legendre_decompose(C, q, LAM, l_max=20, error=E, reg="gcv", penalty="pooled")
    assert float(rc.reg.flat[0]) < 0.2 < float(rr.reg.flat[0])
    assert _err(rc, B) > 5 * _err(rr, B)
    with pytest.raises(ValueError, match="gcv_gamma"):
        xcca.legendre_decompose(C, q, LAM, l_max=20, error=E, gcv_gamma=0.0)


def test_other_criteria_and_scopes():
    q, l, B, C, E = _case(4, 10, 360, 3e-3)
    e_ls = _err(xcca.legendre_decompose(C, q, LAM, l_max=20, error=E, method="lstsq"), B)
    for reg in ("lcurve", "discrepancy"):
        for scope in ("global", "pair"):
            r = xcca.legendre_decompose(C, q, LAM, l_max=20, error=E, reg=reg, scope=scope)
            assert np.all(np.isfinite(r.B)) and np.all(r.reg > 0)
            assert _err(r, B) < 3 * e_ls
    r = xcca.legendre_decompose(C, q, LAM, l_max=20, error=E, reg="discrepancy", scope="pair")
    # the discrepancy principle puts each pair's residual at the noise level (or keeps least squares)
    assert r.criterion.shape == (10, 10, r.reg_grid.size)
    for method in ("tsvd",):
        for reg in ("gcv", "lcurve", "discrepancy", 1e-3):
            r = xcca.legendre_decompose(C, q, LAM, l_max=20, error=E, method=method, reg=reg)
            assert np.all((r.reg >= 1) & (r.reg <= l.size))
    r = xcca.legendre_decompose(C, q, LAM, l_max=20, error=E, penalty="identity")
    assert np.all(np.isfinite(r.B))


def test_tsvd_equals_pypadf_pinv_formulation():
    """method='tsvd', reg=0.5 is pypadf's pinv(cond=0.5) on the (weighted) Legendre design matrix."""
    rng = np.random.default_rng(5)
    n, q1, q2 = 90, 2.0, 3.5
    l = np.arange(0, 13, 2)
    C = xcca.legendre_synthesize(rng.normal(size=l.size), l, q1, LAM, n, q2=q2) + 1e-3 * rng.normal(size=n)
    r = xcca.legendre_decompose(C, q1, LAM, q2=q2, l_max=12, method="tsvd", reg=0.5, exclude=0)
    # the same problem built directly: folded lags 0..n/2, weight 2 where k and n-k are both present
    k = np.arange(n // 2 + 1)
    cp = xcca.cos_psi(n, q1, LAM, q2)[k]
    y = 0.5 * (C[k] + C[(n - k) % n])
    w = np.where((k == 0) | (2 * k == n), 1.0, 2.0)
    A = eval_legendre(l[None, :], cp[:, None]) * np.sqrt(w)[:, None]
    ref = np.linalg.pinv(A, rcond=0.5) @ (np.sqrt(w) * y)
    np.testing.assert_allclose(r.B, ref, rtol=1e-9, atol=1e-12)
    lsq = np.linalg.lstsq(A, np.sqrt(w) * y, rcond=None)[0]
    r2 = xcca.legendre_decompose(C, q1, LAM, q2=q2, l_max=12, method="lstsq", exclude=0)
    np.testing.assert_allclose(r2.B, lsq, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(r2.condition, np.linalg.cond(A), rtol=1e-6)


def test_psd_fit_and_distance():
    q, l, B, C, E = _case(6, 10, 360, 3e-3)
    rt = xcca.legendre_decompose(C, q, LAM, l_max=20, error=E)
    rp = xcca.legendre_decompose(C, q, LAM, l_max=20, error=E, method="psd")
    assert rp.psd_info["objective"] <= rp.psd_info["objective_start"]
    assert np.all(rp.psd_distance < 1e-6)
    assert rt.psd_distance.shape == (l.size,) and np.any(rt.psd_distance > 1e-3)
    for i, lv in enumerate(l):
        w = np.linalg.eigvalsh(rp.B[i])
        assert w.min() > -1e-9 * w.max()
        assert np.sum(w > 1e-9 * w.max()) <= 2 * lv + 1
    assert _err(rp, B) < _err(rt, B)
    # the pairs layout (the run correlator's q-pair index) gives the same fit
    i, j = np.triu_indices(10)
    rq = xcca.legendre_decompose(C[i, j], q, LAM, l_max=20, error=E[i, j], pairs=np.stack([i, j], 1), method="psd")
    np.testing.assert_allclose(rq.B, rp.B[:, i, j], rtol=1e-5, atol=1e-6 * np.abs(rp.B).max())


def test_blocks_jackknife_and_consistency():
    rng = np.random.default_rng(7)
    nq, n, sig, K = 8, 180, 2e-3, 4
    q = _q(nq)
    l = np.arange(0, 17, 2)
    B = _random_psd(rng, nq, l)
    C0 = xcca.legendre_synthesize(B, l, q, LAM, n)
    blocks = np.stack([C0 + _noise(rng, nq, n, sig * np.sqrt(K)) for _ in range(K)])
    C = blocks.mean(0)
    r = xcca.legendre_decompose(C, q, LAM, l_max=16, blocks=blocks, method="lstsq")
    assert r.error_source == "blocks" and r.B_blocks.shape == (K,) + B.shape
    np.testing.assert_allclose(r.B_blocks.mean(0), r.B, atol=1e-10 * np.abs(B).max())
    # jackknife over equal blocks = standard error of the block mean
    ref = r.B_blocks.std(0, ddof=1) / np.sqrt(K)
    np.testing.assert_allclose(r.B_error, ref, rtol=1e-9)
    assert r.consistency.shape == (l.size,)
    assert np.all(r.consistency[:3] > 0.99) and np.all(r.consistency[:6] > 0.9) and np.all(r.consistency <= 1 + 1e-12)
    # with error bars, B_error is propagated and the jackknife kept alongside
    r2 = xcca.legendre_decompose(C, q, LAM, l_max=16, blocks=blocks, error=np.full(C.shape, sig), method="lstsq")
    assert r2.error_source == "error"
    ratio = np.median(r2.B_error_blocks / r2.B_error)
    assert 0.6 < ratio < 1.5


def test_exclude_mask():
    m = xcca.legendre_exclude_mask(3600)
    assert m.sum() == 3600 - 11 - 11  # +-5 samples around 0 and around pi
    assert not m[0] and not m[5] and m[6] and not m[3595] and m[3594] and not m[1800] and not m[1795]
    assert xcca.legendre_exclude_mask(100, 0).all()
    m = xcca.legendre_exclude_mask(360, [(0.5, 1.0)])
    k = np.arange(360)
    d = 2 * np.pi * np.minimum(k, 360 - k) / 360
    np.testing.assert_array_equal(~m, (d >= 0.5 - 1e-9) & (d <= 1.0 + 1e-9))
    q, l, B, C, E = _case(8, 6, 360, 1e-3)
    C2 = C.copy()
    C2[..., 0] += 100.0  # a shot-noise spike at Delta = 0: excluded by default
    r = xcca.legendre_decompose(C2, q, LAM, l_max=20, error=E)
    assert _err(r, B) < 1.0
    assert not r.valid_lags[0]


def test_nan_policy_and_adapter():
    q, l, B, C, E = _case(9, 6, 360, 1e-3)
    C2 = C.copy()
    C2[1, 2, 40] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        xcca.legendre_decompose(C2, q, LAM, l_max=20, error=E)
    r = xcca.legendre_decompose(C2, q, LAM, l_max=20, error=E, nan_policy="omit")
    ref = xcca.legendre_decompose(C, q, LAM, l_max=20, error=E)
    assert np.abs(r.B - ref.B).max() < 5 * ref.B_error.max()

    class Res:  # what a run-correlator result offers
        i, j = np.triu_indices(6)
        correlation = C[i, j]
        error = E[i, j]
        q_pairs = np.stack([i, j], 1)

    ra = xcca.legendre_decompose(Res(), q, LAM, l_max=20)
    np.testing.assert_allclose(ra.B, ref.B[:, Res.i, Res.j], rtol=1e-8, atol=1e-12)


def test_float32_and_dict():
    q, l, B, C, E = _case(10, 5, 180, 1e-3, l_max=12)
    r = xcca.legendre_decompose(C.astype(np.float32), q, LAM, l_max=12, error=E)
    assert r.B.dtype == np.float64
    d = r.to_dict()
    assert d["B"].shape == r.B.shape and d["method"] == "tikhonov"


# ----------------------------------------------------------------------------------------------- physics


def test_point_scatterers_random_orientations_match_kam():
    """Random 3-D orientations of 6 point scatterers, |F|^2 on the Ewald sphere (theta 4-19 deg), run-averaged
    cross-correlations with block errors -> B_l(q, q) against the analytic spherical-harmonic expansion."""
    atoms = object_atoms(seed=3, n_atoms=6, size=7.0)
    lam, q, nphi, lmax = 2.0, np.linspace(0.5, 2.0, 6), 96, 16
    rings = simulate_rings(atoms, q, lam, nphi, 3000, seed=1)
    C, _, bm = mean_cross_correlation(rings, blocks=10)
    Bt = analytic_B(atoms, q, lmax)
    assert np.abs(Bt[1::2]).max() < 1e-9 * np.abs(Bt).max()  # Friedel: odd l vanish
    r = xcca.legendre_decompose(C, q, lam, l_max=lmax, blocks=bm, method="lstsq", exclude=0)
    d = np.diagonal(r.B, axis1=1, axis2=2)
    dt = np.diagonal(Bt[::2], axis1=1, axis2=2)
    de = np.diagonal(r.B_error, axis1=1, axis2=2)
    for i, lv in enumerate(r.l):
        signif = np.abs(dt[i]) > 10 * de[i]
        if signif.any():
            assert np.all(np.abs(d[i] - dt[i])[signif] < 5 * de[i][signif]), lv
    rel = np.linalg.norm(d - dt, axis=1) / np.linalg.norm(dt, axis=1)
    assert np.all(rel[:5] < 0.05), rel  # l = 0..8 to 5 %
    assert np.all(r.consistency[:5] > 0.95)


# ----------------------------------------------------------------------------------------------- LOKI


def test_loki_projection_recovers_even_polynomial():
    n = 200
    x = np.linspace(-1, 1, n)
    coefs = np.array([0.7, 0, 1.3, 0, -0.4])
    f = np.polynomial.legendre.legval(x, coefs)
    out = lokileg.compute_legendre_projection(np.stack([f, 2 * f]), np.stack([x, x]), 6)
    np.testing.assert_allclose(out[0, :5], [0, 0, 1.3, 0, -0.4], atol=1e-10)
    np.testing.assert_allclose(out[1, :5], [0, 0, 2.6, 0, -0.8], atol=1e-10)
    assert np.all(out[:, 5:] == 0) or abs(out[0, 6]) < 1e-10
    keep = lokileg.compute_legendre_projection(f[None], x[None], 4, remove_zero=False)
    np.testing.assert_allclose(keep[0, 0], 0.7, atol=1e-10)


def test_loki_projection_equals_loki_recipe():
    """LOKI's recipe written out (FITPACK quintic interpolation, Gauss-Legendre nodes, (2l+1)/sum(w) projection)."""
    from numpy.polynomial.legendre import leggauss, legval
    from scipy.interpolate import splev, splrep

    rng = np.random.default_rng(11)
    n = 64
    cp = xcca.cos_psi(2 * n, np.array([1.5, 2.5]), 1.2)[:, n:]  # lags n..2n-1: cos psi increasing
    assert np.all(np.diff(cp, axis=1) > 0)
    corr = rng.normal(size=(2, n)).cumsum(1)
    out = lokileg.compute_legendre_projection(corr, cp, 10)
    xg, wg = leggauss(n)
    for i in range(2):
        s = splev(xg, splrep(cp[i], corr[i], k=5, s=0))
        for lv in range(11):
            e = np.zeros(lv + 1)
            e[lv] = 1
            ref = 0.0 if (lv % 2 or lv == 0) else np.sum(wg * legval(xg, e) * s) / np.sum(wg) * (2 * lv + 1)
            assert out[i, lv] == pytest.approx(ref, rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(lokileg.get_cpsi(n * 2, 1.2, 1.5, 1.5)[n:], cp[0], rtol=1e-15)


def test_loki_bad_input():
    x = np.cos(np.linspace(0, np.pi, 50))  # decreasing: LOKI/FITPACK refuses
    with pytest.raises(ValueError, match="increasing"):
        lokileg.compute_legendre_projection(x[None] ** 2, x[None], 4)
    with pytest.raises(ValueError):
        lokileg.leg_proj_legguass(np.zeros(3), np.zeros(4), np.zeros(3), 2)


# ----------------------------------------------------------------------------------------------- bad input


def test_bad_input():
    q, l, B, C, E = _case(12, 4, 64, 1e-3, l_max=12)
    with pytest.raises(ValueError, match="l_max"):
        xcca.legendre_decompose(C, q, LAM, l_max=40)  # beyond nphi // 2
    with pytest.raises(ValueError, match="l_max"):
        xcca.legendre_decompose(C, q, LAM, l_max=30, exclude=3)  # too few lags left
    with pytest.raises(ValueError, match="no lag"):
        xcca.legendre_decompose(C, q, LAM, l_max=4, exclude=[(0, 2 * np.pi)])
    with pytest.raises(ValueError, match="q must have shape"):
        xcca.legendre_decompose(C, q[:3], LAM, l_max=4)
    with pytest.raises(ValueError, match="q"):
        xcca.legendre_decompose(C[0], q[:3], LAM, l_max=4)
    with pytest.raises(ValueError, match="wavelength"):
        xcca.legendre_decompose(C, q, -1.0, l_max=4)
    with pytest.raises(ValueError, match="error"):
        xcca.legendre_decompose(C, q, LAM, l_max=4, error=E[0])
    with pytest.raises(ValueError, match="error"):
        xcca.legendre_decompose(C, q, LAM, l_max=4, error=np.zeros(C.shape))
    with pytest.raises(ValueError, match="method"):
        xcca.legendre_decompose(C, q, LAM, l_max=4, method="magic")
    with pytest.raises(ValueError, match="reg"):
        xcca.legendre_decompose(C, q, LAM, l_max=4, reg="aic")
    with pytest.raises(ValueError, match="reg"):
        xcca.legendre_decompose(C, q, LAM, l_max=4, method="lstsq", reg=0.1)
    with pytest.raises(ValueError, match="reg"):
        xcca.legendre_decompose(C, q, LAM, l_max=4, reg=-1.0)
    with pytest.raises(TypeError, match="l_max"):
        xcca.legendre_decompose(C, q, LAM, l_max=4.5)
    with pytest.raises(ValueError, match="psd"):
        xcca.legendre_decompose(C[0], q, LAM, l_max=4, method="psd", q2=q[1])
    with pytest.raises(ValueError, match="blocks"):
        xcca.legendre_decompose(C, q, LAM, l_max=4, blocks=C[None])
    with pytest.raises(ValueError, match="pairs"):
        xcca.legendre_decompose(C[0], q, LAM, l_max=4, pairs=np.array([[0, 9]] * 4))
    with pytest.raises(TypeError):
        xcca.legendre_decompose(np.array(["a"] * 64), 1.0, LAM, l_max=4)
    with pytest.raises(ValueError, match="symmetric"):
        xcca.legendre_synthesize(np.arange(8.0).reshape(2, 2, 2), [0, 2], q[:2], LAM, 16)
    with pytest.raises(ValueError, match="l must"):
        xcca.legendre_synthesize(np.ones(2), [2, 2], 1.0, LAM, 16)
    with pytest.raises(ValueError, match="NaN"):
        xcca.legendre_synthesize(np.array([np.nan]), [0], 1.0, LAM, 16)
    C_in = C.copy()
    xcca.legendre_decompose(C_in, q, LAM, l_max=8)
    np.testing.assert_array_equal(C_in, C)  # inputs are not modified


# ----------------------------------------------------------------------------------------------- plots


def test_plots(tmp_path):
    pytest.importorskip("matplotlib")
    from xcca import plot

    q, l, B, C, E = _case(13, 6, 180, 1e-3, l_max=12)
    r = xcca.legendre_decompose(C, q, LAM, l_max=12, error=E)
    fig = plot.plot_legendre_maps(r, ls=[2, 4, 6])
    assert len(fig.axes) >= 3
    ax = plot.plot_legendre_diagonal(r)
    assert len(ax.containers) == l.size - 1  # one errorbar container per l (l = 0 left out)
    ax = plot.plot_legendre_criterion(r)
    assert len(ax.lines) >= 2
    ax = plot.plot_legendre_residuals(r, error=E)
    assert len(ax.lines) >= 3
    ax.figure.savefig(tmp_path / "res.png")
    assert (tmp_path / "res.png").stat().st_size > 1000
    with pytest.raises(ValueError):
        plot.plot_legendre_maps(r, ls=[3])
    with pytest.raises(ValueError):
        plot.plot_legendre_criterion(xcca.legendre_decompose(C, q, LAM, l_max=12, method="lstsq"))


# ----------------------------------------------------------------------------------------------- pipeline / CLI


def test_cli_correlate_legendre(tmp_path, capsys):
    import h5py

    from xcca import cli_analysis
    from xcca.simulate import RunGeometry, simulate_run

    geom = RunGeometry(shape=(120, 128), center=(63.4, 58.7), distance=0.00559)
    run = simulate_run(tmp_path / "run.h5", 10, geom, seed=2)
    base = ["correlate", str(run), "--dataset", "/entry/data/data", "--center", "auto", "--qmin", "25", "--qmax",
            "50", "--nphi", "64", "--mask", f"{run}::/entry/mask", "-q"]
    out = tmp_path / "res.h5"
    rc = cli_analysis.main(base + ["-o", str(out), "--wavelength", "1.3", "--q", "2.67", "--legendre", "12"])
    assert rc == 0, capsys.readouterr().err
    res = xcca.AnalysisResult.read(out)  # the result file stays readable
    with h5py.File(out) as f:
        g = f["entry/legendre"]  # inside the NeXus entry
        assert g.attrs["NX_class"] == "NXcollection"
        assert g["B"].shape == (7, 25) and list(g["l"][()]) == list(range(0, 13, 2))
        assert np.all(np.isfinite(g["B"][()])) and g.attrs["method"] == "tikhonov"
        assert g["B_error"].shape == (7, 25)
    # the stored B_l reproduce the stored difference correlations at the used lags
    lr = xcca.legendre_from_analysis(res, 12)
    model = xcca.legendre_synthesize(lr.B, lr.l, res.q, 1.3, 64)
    resid = (res.difference_correlation_norm - model)[:, lr.valid_lags]
    assert np.linalg.norm(resid) < np.linalg.norm(res.difference_correlation_norm[:, lr.valid_lags])
    rc = cli_analysis.main(base + ["-o", str(tmp_path / "r2.h5"), "--legendre", "12"])
    err = capsys.readouterr().err
    assert rc == 2 and "--legendre needs --wavelength" in err and "Traceback" not in err  # a usage error
    assert not (tmp_path / "r2.h5").exists()  # refused before the analysis


def test_public_names_have_numpydoc_docstrings():
    import inspect

    from xcca import legendre, plot_legendre

    for mod in (legendre, plot_legendre, lokileg):
        for name in mod.__all__:
            obj = getattr(mod, name)
            doc = inspect.getdoc(obj) or ""
            assert doc, f"{mod.__name__}.{name}"
            if inspect.isfunction(obj):
                assert "Parameters" in doc and "Returns" in doc, f"{mod.__name__}.{name}"
            for mname, meth in inspect.getmembers(obj, inspect.isfunction) if inspect.isclass(obj) else []:
                if not mname.startswith("_"):
                    assert inspect.getdoc(meth), f"{name}.{mname}"


def test_loki_import_path():
    from xcca.loki.utils import postproc_legendre as pl

    assert pl.compute_legendre_projection is lokileg.compute_legendre_projection
    assert set(pl.__all__) == {"interpolate_corr", "leg_proj_legguass", "compute_legendre_projection", "get_cpsi"}


def test_run_correlator_result_with_half_sets():
    """xcca.RunCorrelator on the point-scatterer run: decompose its result directly (q, pairs, errors and the
    half-sets from the result object) and compare with the analytic B_l."""
    atoms = object_atoms(seed=3, n_atoms=6, size=7.0)
    lam, q, nphi, lmax = 2.0, np.linspace(0.5, 2.0, 5), 96, 14
    rings = simulate_rings(atoms, q, lam, nphi, 2000, seed=4)
    rc = xcca.RunCorrelator(q.size, nphi, blocks=2, q=q)
    rc.add(rings)
    res = rc.result(replicates=True)
    r = xcca.legendre_decompose(res, None, lam, l_max=lmax, method="lstsq", exclude=0)
    assert r.B.shape == (lmax // 2 + 1, len(res.q_pairs)) and r.B_blocks.shape[0] == 2
    # without the replicates (the default result): the same B and error propagation, no blocks
    r0 = xcca.legendre_decompose(rc.result(), None, lam, l_max=lmax, method="lstsq", exclude=0)
    np.testing.assert_array_equal(r0.B, r.B)
    assert r0.B_blocks is None
    # blocks recovered from the leave-one-out replicates: their jackknife equals the decomposed replicates' one
    rep = np.stack([xcca.legendre_decompose(res.replicates[b], q, lam, l_max=lmax, method="lstsq", exclude=0,
                                            pairs=res.q_pairs, error=res.error).B for b in range(2)])
    np.testing.assert_allclose(r.B_error_blocks, np.sqrt(0.5 * np.sum((rep - rep.mean(0)) ** 2, axis=0)),
                               rtol=1e-6, atol=1e-12 * np.abs(r.B).max())
    assert np.all(r.consistency[:4] > 0.95)
    Bt = analytic_B(atoms, q, lmax)[::2]
    diag = [k for k, (i, j) in enumerate(res.q_pairs) if i == j]
    dt = np.stack([Bt[:, i, i] for i, _ in res.q_pairs[diag]], axis=1)
    rel = np.linalg.norm(r.B[:, diag] - dt, axis=1) / np.linalg.norm(dt, axis=1)
    assert np.all(rel[:4] < 0.1), rel
