"""Ring-centre fit: xcca.fit_ring (LOKI selection + geometric circle fit) and xcca.loki.RingFit."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, strategies as st
from scipy.optimize import least_squares

from xcca.loki import RingFit
from xcca.ringfit import RingFitError, fit_circle_points, fit_ring, select_ring_pixels


def ring_image(shape, cx, cy, r, sigma=1.5, peak=1000.0, bg=5.0, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    yy, xx = np.indices(shape)
    d = np.hypot(xx - cx, yy - cy)
    img = peak * np.exp(-0.5 * ((d - r) / sigma) ** 2) + bg
    return rng.poisson(img).astype(dtype)


def geometric_lsq(x, y, start):
    """Independent geometric circle fit (scipy least_squares, exact Jacobian)."""
    f = lambda p: np.hypot(x - p[0], y - p[1]) - p[2]  # noqa: E731
    return least_squares(f, start, method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15).x


# ------------------------------------------------------------------ circle fit on points


@given(
    cx=st.floats(-500, 500), cy=st.floats(-500, 500), r=st.floats(2, 2000), n=st.integers(3, 400),
    arc=st.floats(0.5, 2 * np.pi), seed=st.integers(0, 2**31),
)
def test_exact_points_on_a_circle(cx, cy, r, n, arc, seed):
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, arc, n)
    if np.ptp(t) < 0.3:  # a tiny arc does not determine a circle
        t = np.linspace(0, arc, n)
    x, y = cx + r * np.cos(t), cy + r * np.sin(t)
    a, b, rr, res, _ = fit_circle_points(x, y)
    scale = 1e-7 * max(r, 1)
    assert abs(a - cx) < scale * 10 and abs(b - cy) < scale * 10 and abs(rr - r) < scale * 10
    assert res < (1e-6 * r) ** 2 * n


@given(seed=st.integers(0, 2**31), n=st.integers(5, 3000), noise=st.floats(0.01, 3.0))
@example(seed=4433, n=5, noise=3.0)  # a flat valley: centre determined only to ~1e-3 (once a flake)
def test_noisy_points_match_least_squares(seed, n, noise):
    rng = np.random.default_rng(seed)
    cx, cy, r = rng.uniform(-100, 100), rng.uniform(-100, 100), rng.uniform(20, 300)
    t = rng.uniform(0, 2 * np.pi, n)
    x = cx + (r + rng.normal(0, noise, n)) * np.cos(t)
    y = cy + (r + rng.normal(0, noise, n)) * np.sin(t)
    a, b, rr, res, _ = fit_circle_points(x, y)
    ref = geometric_lsq(x, y, [a + 0.5, b - 0.5, rr + 0.3])
    ref_cost = np.sum((np.hypot(x - ref[0], y - ref[1]) - ref[2]) ** 2)
    assert res <= ref_cost * (1 + 1e-9) + 1e-12
    # Same minimum: parameters agree to what a 1e-9 relative cost tolerance determines. Near the minimum
    # cost(p + dp) - cost(p) ~ dp^T J^T J dp, so |dp| <= sqrt(1e-9 cost / lambda_min(J^T J)): on few noisy points
    # (e.g. n = 5 on a short arc) the valley is flat and the centre is far less determined than 1e-6 r.
    d = np.hypot(x - ref[0], y - ref[1])
    jac = np.stack([-(x - ref[0]) / d, -(y - ref[1]) / d, -np.ones_like(x)], axis=1)
    lam = max(np.linalg.eigvalsh(jac.T @ jac)[0], 1e-300)
    tol = 1e-6 * (1 + r) + np.sqrt((1e-9 * ref_cost + 1e-12) / lam)
    np.testing.assert_allclose([a, b, rr], ref, rtol=0, atol=tol)


def test_degenerate_points_raise():
    x = np.arange(10.0)
    with pytest.raises(RingFitError):
        fit_circle_points(x, 2 * x + 1)  # collinear
    with pytest.raises(RingFitError):
        fit_circle_points([0.0, 1.0], [0.0, 1.0])
    with pytest.raises(ValueError):
        fit_circle_points([0.0, np.nan, 1.0], [0.0, 1.0, 2.0])


def test_no_convergence_reports_residual():
    rng = np.random.default_rng(3)
    t = rng.uniform(0, 2 * np.pi, 500)
    x, y = 50 + 30 * np.cos(t) + rng.normal(0, 2, 500), 40 + 30 * np.sin(t) + rng.normal(0, 2, 500)
    with pytest.raises(RingFitError, match="residual") as err:
        fit_circle_points(x, y, start=(0, 0, 5), max_iter=1)
    assert np.isfinite(err.value.residual) and err.value.residual > 0


# ------------------------------------------------------------------ fit_ring on images


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.float32, np.float64, ">f4", ">i4"])
def test_synthetic_ring_accuracy_all_dtypes(dtype):
    cx, cy, r = 130.37, 121.81, 80.6
    img = ring_image((256, 240), cx, cy, r, seed=1).astype(dtype)
    before = img.copy()
    res = fit_ring(img, guess=(127, 124, 79), width=20, n_points=2000, n_iter=3)
    assert np.array_equal(img, before)
    assert abs(res.center[0] - cx) <= 0.05 and abs(res.center[1] - cy) <= 0.05
    assert abs(res.radius - r) <= 0.05
    assert res.n_points == 2000 and res.points.shape == (2000, 2)
    assert res.rms == pytest.approx(np.sqrt(res.residual / res.n_points))
    d = np.hypot(res.points[:, 0] - res.center[0], res.points[:, 1] - res.center[1])
    assert res.residual == pytest.approx(np.sum((d - res.radius) ** 2), rel=1e-9)


@given(
    cx=st.floats(60, 100), cy=st.floats(60, 100), r=st.floats(30, 55), gap=st.integers(0, 12),
    seed=st.integers(0, 1000),
)
def test_synthetic_ring_with_masked_gaps(cx, cy, r, gap, seed):
    shape = (170, 160)
    img = ring_image(shape, cx, cy, r, sigma=1.2, seed=seed)
    mask = np.ones(shape, bool)
    mask[:, 70:70 + gap] = False
    mask[int(cy) - 3:int(cy) + 3, :] = False  # a horizontal panel gap through the centre row
    img[~mask] = 1e6  # hot values in the gaps must be ignored through the mask
    # n_points about the pixels within ±1σ of the ring (more would reach into the background)
    res = fit_ring(img, guess=(cx + 1.5, cy - 1.0, r + 1.0), mask=mask, width=12, n_points=int(8 * r), n_iter=4)
    # small, half-masked rings: counting noise of the selection allows a little more than the 0.05 px of a full one
    assert np.hypot(res.center[0] - cx, res.center[1] - cy) <= 0.1
    assert abs(res.radius - r) <= 0.1
    sel = res.points.astype(int)
    assert mask[sel[:, 1], sel[:, 0]].all()


def test_selection_is_lokis_brightest_pixels():
    img = ring_image((100, 100), 50, 50, 30, seed=2)
    x, y, v = select_ring_pixels(img, (50, 50, 30), width=10, n_points=300)
    yy, xx = np.indices(img.shape)
    d = np.hypot(xx - 50, yy - 50)
    cand = img[(d >= 25) & (d <= 35)]
    assert v.size == 300
    assert v.min() >= np.sort(cand)[-300]
    # fewer candidates than asked: the brighter half (LOKI's rule)
    x, y, v = select_ring_pixels(img, (50, 50, 30), width=2, n_points=10**6)
    n_cand = int(((d >= 29) & (d <= 31)).sum())
    assert v.size == n_cand // 2


def test_bad_input():
    img = ring_image((64, 64), 32, 32, 20)
    with pytest.raises(ValueError, match="outside"):
        fit_ring(img, (100, 10, 20))
    with pytest.raises(ValueError, match="mask"):
        fit_ring(img, (32, 32, 20), mask=np.ones((3, 3), bool))
    with pytest.raises(TypeError, match="mask"):
        fit_ring(img, (32, 32, 20), mask=np.ones((64, 64), np.uint8))
    with pytest.raises(ValueError, match="width"):
        fit_ring(img, (32, 32, 20), width=0)
    with pytest.raises(ValueError, match="n_points"):
        fit_ring(img, (32, 32, 20), n_points=2)
    with pytest.raises(ValueError, match="radius"):
        fit_ring(img, (32, 32, -1))
    with pytest.raises(ValueError, match="finite"):
        fit_ring(img, (32, np.nan, 20))
    with pytest.raises(ValueError, match="2-D"):
        fit_ring(img[None], (32, 32, 20))
    with pytest.raises(TypeError):
        fit_ring(img.astype(complex), (32, 32, 20))
    with pytest.raises(RingFitError, match="valid pixels"):
        fit_ring(img, (32, 32, 20), mask=np.zeros((64, 64), bool))
    with pytest.raises(ValueError, match="n_iter"):
        fit_ring(img, (32, 32, 20), n_iter=0)


# ------------------------------------------------------------------ real LOKI data


def test_real_image_centre(data_dir):
    img = np.load(data_dir / "test_img.npy")
    mask = np.load(data_dir / "test_mask.npy")
    res = fit_ring(img, guess=(2 + img.shape[1] / 2, 1 + img.shape[0] / 2, 52), mask=mask, width=10)
    assert np.hypot(res.center[0] - 151.6, res.center[1] - 150.7) < 1.0
    assert abs(res.radius - 52) < 1.5
    res20 = fit_ring(img, guess=(152, 151, 52), mask=mask)
    assert np.hypot(res20.center[0] - 151.6, res20.center[1] - 150.7) < 1.0


# ------------------------------------------------------------------ xcca.loki.RingFit


def loki_reference(img, beta_i, num_fitting_pts=5000, ring_width=20, num_high_pix=20):
    """LOKI's fit_circle written out (its selection; the geometric fit by scipy least_squares instead of odr)."""
    yy, xx = np.indices(img.shape)
    x1, y1 = xx.ravel(), yy.ravel()
    i1 = img.ravel().copy()
    rv = np.sqrt((x1 - beta_i[0]) ** 2 + (y1 - beta_i[1]) ** 2)
    i1[rv > beta_i[2] + ring_width / 2] = 0
    i1[rv < beta_i[2] - ring_width / 2] = 0
    i1[np.argsort(i1)[:num_high_pix]] = 0
    npts = np.count_nonzero(i1 > 0)
    if num_fitting_pts >= npts:
        num_fitting_pts = npts // 2
    fi = np.argsort(i1)[::-1][:num_fitting_pts]
    x, y = x1[fi].astype(float), y1[fi].astype(float)
    beta = geometric_lsq(x, y, np.asarray(beta_i, float))
    resid = np.sum((np.hypot(x - beta[0], y - beta[1]) - beta[2]) ** 2)
    return beta, resid, i1[fi].mean()


@pytest.mark.parametrize("guess,kw", [
    ((152, 151, 52), {}),
    ((152, 151, 52), dict(ring_width=10)),
    ((150, 150, 59), dict(num_fitting_pts=800, num_high_pix=2)),
    ((152, 151, 16), dict(num_fitting_pts=20, ring_width=10, num_high_pix=2)),  # LOKI's example.py call
])
def test_loki_ringfit_matches_reference(data_dir, guess, kw):
    img = np.load(data_dir / "test_img.npy")
    mask = np.load(data_dir / "test_mask.npy")
    img = img * mask
    before = img.copy()
    beta, resid, mean = RingFit(img).fit_circle(guess, **kw)
    assert np.array_equal(img, before)
    rbeta, rresid, rmean = loki_reference(img, guess, **kw)
    np.testing.assert_allclose(beta, rbeta, rtol=0, atol=1e-6)
    assert resid == pytest.approx(rresid, rel=1e-6)
    assert mean == pytest.approx(rmean, rel=1e-6)
    assert beta.shape == (3,)


def test_loki_ringfit_few_pixels_python3_fix():
    img = ring_image((60, 60), 30, 30, 12, seed=4)
    rf = RingFit(img)
    beta, resid, mean = rf.fit_circle((30, 30, 12), num_fitting_pts=5000, ring_width=4)
    assert np.hypot(beta[0] - 30, beta[1] - 30) < 0.3
    with pytest.raises(RingFitError):
        rf.fit_circle((30, 30, 12), ring_width=0.01)  # no pixel in the annulus
    with pytest.raises(ValueError):
        RingFit(np.zeros(5))
