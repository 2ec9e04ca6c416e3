"""Single-precision tilted remaps (``Geometry.polar_grid(..., precision="float32")``) against their specification
(the float64 NumPy reference run in float32), bit for bit, through every path of the core; accuracy against the
float64 grid; bad input."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import xcca
from xcca import reference as ref

DEG = np.pi / 180

# (name, dist, poni1, poni2, rot1, rot2, rot3, pixel1, pixel2, shape, orientation) as tests/test_geometry.py
GEOMETRIES = [
    ("untilted", 0.1, 0.01, 0.012, 0.0, 0.0, 0.0, 100e-6, 100e-6, (200, 240), 3),
    ("rot1+5", 0.1, 0.01, 0.012, 5 * DEG, 0.0, 0.0, 100e-6, 100e-6, (200, 240), 3),
    ("rot3", 0.1, 0.01, 0.012, 2 * DEG, -3 * DEG, 40 * DEG, 100e-6, 120e-6, (200, 240), 3),
    ("poni-off-detector", 0.15, -0.02, 0.05, 3 * DEG, 4 * DEG, 0.1, 172e-6, 172e-6, (150, 170), 3),
    ("small", 0.05, 0.0011, 0.0009, 1 * DEG, 2 * DEG, 0.0, 75e-6, 75e-6, (23, 31), 3),
    ("orientation2", 0.1, 0.01, 0.012, 3 * DEG, 1 * DEG, 0.2, 100e-6, 100e-6, (100, 120), 2),
]
PILATUS = ("pilatus6m", 0.3, 0.2143, 0.2117, 2 * DEG, -1.5 * DEG, 0.3, 172e-6, 172e-6, (2527, 2463), 3)
CORRECTIONS = [dict(), dict(solid_angle=True), dict(polarization_factor=0.9),
               dict(solid_angle=True, polarization_factor=0.99)]


def _geo(g):
    name, dist, p1, p2, r1, r2, r3, px1, px2, shape, orient = g
    return xcca.Geometry(dist, p1, p2, r1, r2, r3, pixel1=px1, pixel2=px2, wavelength=1.0e-10,
                         orientation=orient, detector_shape=shape), shape


def _grid(g, nq, nphi, a=0.0, b=1.0, **kw):
    geo, shape = _geo(g)
    lo, hi = geo.q_range(shape)
    return geo.polar_grid((lo + a * (hi - lo), lo + b * (hi - lo), nq), nphi, precision="float32", **kw), shape


def _bits(a):
    return a.view(np.uint32 if a.dtype.itemsize == 4 else np.uint64)


def _expected(grid, img, mask, method, mode):
    """The specification: sample_at in float32 at the grid's float32 coordinates, times its float32 factors."""
    x, y = grid.coordinates()
    assert x.dtype == y.dtype == np.float32
    v, ok = ref.sample_at(img, x, y, mask=mask, method=method, mask_mode=mode, dtype=np.float32)
    c = grid.correction
    assert c.dtype == np.float32 and v.dtype == np.float32
    return v * c, ok


@pytest.mark.parametrize("g", GEOMETRIES, ids=lambda g: g[0])
@pytest.mark.parametrize("corr", CORRECTIONS, ids=lambda c: "+".join(c) or "none")
@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.uint16, np.float64])
def test_float32_grid_equals_reference(g, corr, dtype):
    """Every path: the fused AVX2 kernel (float32 / int32 pixels, bilinear, no mask; odd nphi for the scalar tail,
    edge groups through the general path, a row stride that is not the width), the portable loops (masks, nearest,
    other dtypes), both mask modes, 1 and 2 threads; output float32 for every image dtype."""
    grid, shape = _grid(g, 37, 203, **corr)
    assert grid.engine == "conic" and grid.precision is np.float32
    big = (np.random.default_rng(4).random((shape[0], shape[1] + 3)) * 1000).astype(dtype)
    img = big[:, 1:shape[1] + 1]
    mask = np.random.default_rng(1).random(shape) > 0.1
    for m, method, mode in ((None, "bilinear", "strict"), (None, "bilinear", "renormalize"),
                            (mask, "bilinear", "strict"), (mask, "bilinear", "renormalize"),
                            (None, "nearest", "strict"), (mask, "nearest", "strict")):
        expect, ok = _expected(grid, img, m, method, mode)
        for n in (1, 2):
            p, pm = grid.remap(img, mask=m, method=method, mask_mode=mode, n_threads=n)
            assert p.dtype == np.float32
            assert np.array_equal(pm, ok) and pm.any(), (method, mode, m is None, n)
            assert np.array_equal(_bits(p[ok]), _bits(expect[ok])), (method, mode, m is None, n)
            assert np.all(np.isnan(p[~ok]))


@st.composite
def _cases(draw):
    """Small random tilted geometries, odd image shapes and nphi, every pixel dtype and layout, masks, both methods
    and mask modes, optional corrections."""
    h, w = draw(st.integers(2, 40)), draw(st.integers(2, 40))
    px = 1e-4
    geo = xcca.Geometry(draw(st.floats(0.02, 0.2)), draw(st.floats(-0.3, 1.3)) * h * px,
                        draw(st.floats(-0.3, 1.3)) * w * px, draw(st.floats(-0.2, 0.2)), draw(st.floats(-0.2, 0.2)),
                        draw(st.floats(-np.pi, np.pi)), pixel1=px, pixel2=px * draw(st.sampled_from([1.0, 1.25])),
                        wavelength=1e-10)
    dtype = np.dtype(draw(st.sampled_from(["f4", "f8", "i4", "u2", "i8", "u1"])))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    img = (rng.random((h, w)) * 1000).astype(dtype)
    layout = draw(st.sampled_from(["c", "strided", "bigendian", "fortran"]))
    if layout == "strided":
        big = np.zeros((h, 2 * w), dtype)
        big[:, ::2] = img
        img = big[:, ::2]
    elif layout == "bigendian" and dtype.itemsize > 1:
        img = img.astype(dtype.newbyteorder(">"))
    elif layout == "fortran":
        img = np.asfortranarray(img)
    mask = None if draw(st.booleans()) else rng.random((h, w)) > draw(st.sampled_from([0.05, 0.5]))
    corr = draw(st.sampled_from(CORRECTIONS))
    return (geo, (h, w), draw(st.integers(1, 70)), draw(st.integers(1, 9)), img, mask,
            draw(st.sampled_from(["bilinear", "nearest"])), draw(st.sampled_from(["strict", "renormalize"])), corr)


@settings(max_examples=60, deadline=None)
@given(_cases())
def test_float32_grid_equals_reference_generated(case):
    geo, shape, nphi, nq, img, mask, method, mode, corr = case
    lo, hi = geo.q_range(shape)
    grid = geo.polar_grid((lo, hi, nq), nphi, shape, precision="float32", **corr)
    before = img.copy()
    expect, ok = _expected(grid, np.asarray(img), mask, method, mode)
    for n in (1, 2):
        p, pm = grid.remap(img, mask=mask, method=method, mask_mode=mode, n_threads=n)
        assert p.dtype == np.float32 and p.shape == (nq, nphi)
        assert np.array_equal(pm, ok)
        assert np.array_equal(_bits(p[ok]), _bits(expect[ok]))
        assert np.all(np.isnan(p[~ok]))
    np.testing.assert_array_equal(img, before)  # input untouched


def test_float32_pilatus_equals_reference_and_is_close_to_float64():
    """A Pilatus-6M-sized tilted detector with both corrections: bit-identical to the float32 specification; the
    positions within 2e-3 px of the float64 grid's, the factors within 1e-5 relative, and a smooth image I = f(q)
    gives the float64 grid's values within 1e-4 relative."""
    grid, shape = _grid(PILATUS, 64, 1001, a=0.05, b=0.75, solid_angle=True, polarization_factor=0.99)
    geo, _ = _geo(PILATUS)
    g64 = geo.polar_grid(grid.q, 1001, solid_angle=True, polarization_factor=0.99)
    img = (np.random.default_rng(0).random(shape) * 1000).astype(np.float32)
    expect, ok = _expected(grid, img, None, "bilinear", "strict")
    p, pm = grid.remap(img)
    assert np.array_equal(pm, ok) and np.array_equal(_bits(p[ok]), _bits(expect[ok]))
    x, y = grid.coordinates()
    x6, y6 = g64.coordinates()
    fin = np.isfinite(x6)
    assert np.array_equal(np.isfinite(x), fin)
    assert np.max(np.abs(x[fin] - x6[fin])) < 2e-3 and np.max(np.abs(y[fin] - y6[fin])) < 2e-3
    c6 = g64.correction
    assert np.max(np.abs(grid.correction[fin] / c6[fin] - 1)) < 1e-5
    qmap = geo.q_array(shape)
    smooth = (1000 + 500 * np.cos(2 * np.pi * qmap / 0.7)).astype(np.float32)
    a, am = grid.remap(smooth)
    b, bm = g64.remap(smooth)
    both = am & bm
    assert both.mean() > 0.95
    assert np.max(np.abs(a[both] / b[both] - 1)) < 1e-4


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.float64])
def test_float32_stack_equals_frame_by_frame(dtype):
    """Stacks (pass 1 once per tile and block of 16 frames, pass 2 per frame) equal frame-by-frame remaps bit for
    bit: a non-contiguous stack, more frames than a block, an output big enough for non-temporal stores."""
    grid, shape = _grid(GEOMETRIES[3], 21, 157, solid_angle=True, polarization_factor=0.99)
    big = (np.random.default_rng(5).random((40, shape[0], shape[1] + 3)) * 1000).astype(dtype)
    stack = big[:38:2, :, 1:shape[1] + 1]  # 19 frames, frame and row strides
    for n in (1, 2):
        p, pm = grid.remap(stack, n_threads=n)
        for k in (0, 1, 15, 16, 18):
            f, fm = grid.remap(stack[k], n_threads=1)
            assert np.array_equal(fm, pm) and np.array_equal(_bits(p[k]), _bits(f)), (k, n)
    wide, _ = _grid(GEOMETRIES[3], 64, 6001, solid_angle=True)  # 3 x 64 x 6001 x 4 B > 8 MB: streamed stores
    for n in (1, 2):
        p, pm = wide.remap(stack[:3], n_threads=n)
        for k in range(3):
            f, fm = wide.remap(stack[k], n_threads=1)
            assert np.array_equal(fm, pm) and np.array_equal(_bits(p[k]), _bits(f)), (k, n)


def test_float32_untilted_runs_the_conic_engine_close_to_polargrid():
    """An untilted geometry without corrections takes the pixel-radius PolarGrid in float64; in float32 it runs the
    conic engine, and agrees with the float64 result to float32 accuracy."""
    geo, shape = _geo(GEOMETRIES[0])
    lo, hi = geo.q_range(shape)
    q = (lo + 0.1 * (hi - lo), lo + 0.6 * (hi - lo), 30)
    g64, g32 = geo.polar_grid(q, 360), geo.polar_grid(q, 360, precision=np.float32)
    assert g64.engine == "polar" and g32.engine == "conic" and g64.precision is np.float64
    assert "precision='float32'" in repr(g32) and "precision" not in repr(g64)
    img = np.random.default_rng(3).random(shape).astype(np.float32) * 100
    a, am = g32.remap(img)
    b, bm = g64.remap(img)
    assert np.array_equal(am, bm) and am.all()
    assert np.max(np.abs(a - b)) < 1e-2  # pixel steps of up to 100 counts, positions to ~1e-4 px here


def test_float32_bad_input():
    geo, shape = _geo(GEOMETRIES[1])
    lo, hi = geo.q_range(shape)
    q = (lo, hi, 5)
    for bad in ("float16", "half", None, True, "nonsense", np.int32):
        with pytest.raises(ValueError, match="precision must be 'float64' or 'float32'"):
            geo.polar_grid(q, 16, precision=bad)
    with pytest.raises(ValueError, match="does not take flat= / dark="):
        geo.polar_grid(q, 16, precision="float32", flat=np.ones(shape))
    grid = geo.polar_grid(q, 16, precision="float32")
    img = np.ones(shape)
    with pytest.raises(TypeError, match="out must have dtype float32"):
        grid.remap(img, out=np.empty((5, 16)))
    out = np.empty((5, 16), np.float32)
    r, _ = grid.remap(img, out=out)
    assert r is out and out.dtype == np.float32
