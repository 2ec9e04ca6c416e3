"""fit_ring reports its fit quality and refuses a guess far from any ring (issue 10, section 4); the O(annulus)
pixel selection equals the brute-force selection over the whole image."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from xcca.ringfit import RingFitError, RingFitWarning, fit_ring, select_ring_pixels


def _brute_selection(img, guess, mask, width, n_points):
    cx, cy, r = guess
    yy, xx = np.indices(img.shape)
    d2 = (yy - cy) ** 2 + (xx - cx) ** 2
    r_in, r_out = r - width / 2.0, r + width / 2.0
    sel = (d2 <= r_out * r_out) & np.isfinite(img)
    if r_in > 0:
        sel &= d2 >= r_in * r_in
    if mask is not None:
        sel &= mask
    rows, cols = np.nonzero(sel)
    vals = img[rows, cols].astype(np.float64)
    n = n_points if n_points < vals.size else vals.size // 2
    if n < vals.size:
        top = np.argpartition(vals, vals.size - n)[vals.size - n:]
        rows, cols, vals = rows[top], cols[top], vals[top]
    return cols.astype(float), rows.astype(float), vals


@given(st.integers(0, 2**32 - 1), st.integers(5, 80), st.integers(5, 80), st.floats(-0.5, 1.0), st.floats(-0.5, 1.0),
       st.floats(0.5, 60), st.floats(0.5, 30), st.booleans())
def test_selection_equals_brute_force(seed, h, w, fx, fy, r, width, use_mask):
    rng = np.random.default_rng(seed)
    img = rng.random((h, w)).astype(np.float32)
    img[rng.random((h, w)) < 0.05] = np.nan
    mask = rng.random((h, w)) > 0.2 if use_mask else None
    cx, cy = min(max(fx * w, -0.5), w - 0.51), min(max(fy * h, -0.5), h - 0.51)
    guess = (cx, cy, r)
    try:
        ref = _brute_selection(img, guess, mask, width, 50)
    except Exception:  # noqa: BLE001
        return
    if ref[0].size < 3:
        with pytest.raises(RingFitError):
            select_ring_pixels(img, guess, mask, width, 50)
        return
    got = select_ring_pixels(img, guess, mask, width, 50)
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a, b)


def test_quality_on_loki_image(data_dir):
    img = np.load(data_dir / "test_img.npy")
    mask = np.load(data_dir / "test_mask.npy")
    good = fit_ring(img, (152, 151, 52), mask=mask, width=10)
    assert good.ring_fraction >= 0.8 and good.contrast > 1.05
    # the case: a guess in the corner, far from the rings, gave a "confident" centre near (13, 12.6)
    with pytest.raises(RingFitError, match="no ring at the fitted circle"):
        fit_ring(img, (13, 13, 48), mask=mask, width=20)
    with pytest.warns(RingFitWarning, match="no ring"):
        bad = fit_ring(img, (13, 13, 48), mask=mask, width=20, on_poor_fit="warn")
    assert bad.ring_fraction < 0.6
    # between two rings (no ring at r = 75 around the true centre)
    with pytest.raises(RingFitError, match="no ring"):
        fit_ring(img, (152, 151, 75), mask=mask, width=20)
    off = fit_ring(img, (13, 13, 48), mask=mask, width=20, min_ring_fraction=0)
    assert off.ring_fraction == bad.ring_fraction


def test_quality_simulated():
    rng = np.random.default_rng(0)
    yy, xx = np.indices((512, 512))
    d = np.hypot(xx - 260.3, yy - 249.8)
    img = rng.poisson(1000 * np.exp(-0.5 * ((d - 150.2) / 2.0) ** 2) + 5).astype(np.float32)
    res = fit_ring(img, (258, 252, 149), width=20, n_iter=3)
    assert res.ring_fraction == 1.0 and res.contrast > 10
    assert np.hypot(res.center[0] - 260.3, res.center[1] - 249.8) < 0.05
    flat = rng.poisson(50, (512, 512)).astype(np.float32)
    with pytest.raises(RingFitError, match="no ring"):
        fit_ring(flat, (256, 256, 100), width=20)


def test_quality_arguments():
    img = np.ones((50, 50))
    with pytest.raises(ValueError, match="on_poor_fit"):
        fit_ring(img, (25, 25, 10), on_poor_fit="ignore")
    with pytest.raises(ValueError, match="min_ring_fraction"):
        fit_ring(img, (25, 25, 10), min_ring_fraction=2)


@given(st.integers(0, 2**32 - 1), st.integers(3, 400), st.floats(0.0, 2.0), st.booleans())
@example(seed=650518, n=118, noise=1e-05, with_start=False)  # tiny noise far from the origin: cost rounding dominates
def test_circle_fit_core_equals_reference(seed, n, noise, with_start):
    from xcca import reference
    from xcca.ringfit import fit_circle_points

    rng = np.random.default_rng(seed)
    t = rng.uniform(0, 2 * np.pi * rng.uniform(0.2, 1.0), n)
    cx, cy, r = rng.uniform(-500, 1500, 2).tolist() + [rng.uniform(5, 800)]
    x = cx + r * np.cos(t) + rng.normal(0, noise, n)
    y = cy + r * np.sin(t) + rng.normal(0, noise, n)
    start = (cx + 3, cy - 2, r * 1.01) if with_start else None
    try:
        ref = reference.fit_circle_points(x, y, start)
    except RingFitError:
        with pytest.raises(RingFitError):
            fit_circle_points(x, y, start)
        return
    try:
        got = fit_circle_points(x, y, start)
    except RingFitError:  # borderline conditioning: the reference converged, the core called it degenerate
        assert n < 10 or noise == 0
        return
    scale = 1 + abs(ref[2])
    assert abs(got[0] - ref[0]) <= 1e-7 * scale and abs(got[1] - ref[1]) <= 1e-7 * scale
    assert abs(got[2] - ref[2]) <= 1e-7 * scale
    # The core's cost may exceed the reference's only by rounding: each residual hypot(x - cx, y - cy) - r carries
    # an error of a few ulps of the coordinates' size (delta), so the sum of n squares differs by at most
    # 2 sqrt(n cost) delta + n delta^2 (times a safety factor). A worse minimum costs far more than that.
    delta = 8 * np.finfo(float).eps * (np.max(np.abs(np.concatenate([x, y]))) + abs(ref[2]))
    slack = 4 * np.sqrt(n * ref[3]) * delta + 4 * n * delta**2
    assert got[3] <= ref[3] * (1 + 1e-9) + slack + 1e-18
