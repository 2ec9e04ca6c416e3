"""xcca.PolarGrid against the NumPy specification xcca.reference.polar_remap (bit for bit), SciPy, and bad input."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st
from scipy import ndimage

import xcca
from xcca import reference as ref

DTYPES = ["uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float32", "float64", "bool"]


def out_dtype(dtype) -> np.dtype:
    return np.dtype(np.float64 if np.dtype(dtype).itemsize == 8 else np.float32)


def expected(image, center, radii, nphi, phi0, mask, method, mode, fill, dtype):
    values, valid = ref.polar_remap(image, center, radii, nphi, phi0, mask, method, mode, fill)
    return values.astype(out_dtype(dtype)), valid


@st.composite
def cases(draw):
    h = draw(st.integers(1, 24))
    w = draw(st.integers(1, 24))
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if dtype == np.bool_:
        image = rng.random((h, w)) > 0.5
    elif dtype.kind == "f":
        image = (rng.standard_normal((h, w)) * 100).astype(dtype)
    else:
        info = np.iinfo(dtype)
        image = rng.integers(info.min, info.max, size=(h, w), dtype=dtype, endpoint=True)
    # centres inside and outside the image, sometimes exactly on a pixel centre
    cx = draw(st.one_of(st.integers(-5, w + 5).map(float), st.floats(-0.3 * w - 3, 1.3 * w + 3)))
    cy = draw(st.one_of(st.integers(-5, h + 5).map(float), st.floats(-0.3 * h - 3, 1.3 * h + 3)))
    diag = float(np.hypot(h, w)) + 5
    radii = draw(st.lists(st.one_of(st.integers(0, int(diag)).map(float), st.floats(0, diag)), min_size=1,
                          max_size=7))
    nphi = draw(st.integers(1, 40))
    phi0 = draw(st.sampled_from([0.0, 0.25, -np.pi / 3, np.pi / 2]))
    mask = None if draw(st.booleans()) else rng.random((h, w)) > draw(st.sampled_from([0.1, 0.5]))
    method = draw(st.sampled_from(["bilinear", "nearest"]))
    mode = draw(st.sampled_from(["strict", "renormalize"]))
    layout = draw(st.sampled_from(["c", "fortran", "strided", "bigendian"]))
    return image, (cx, cy), np.array(radii), nphi, phi0, mask, method, mode, layout


def with_layout(image, layout):
    if layout == "fortran":
        return np.asfortranarray(image)
    if layout == "strided":
        big = np.zeros((image.shape[0] * 2, image.shape[1] * 3), image.dtype)
        big[::2, ::3] = image
        return big[::2, ::3]
    if layout == "bigendian" and image.dtype.itemsize > 1:
        return image.astype(image.dtype.newbyteorder(">"))
    return image


@given(cases())
def test_remap_matches_reference(case):
    image, center, radii, nphi, phi0, mask, method, mode, layout = case
    img = with_layout(image, layout)
    before = img.copy()
    grid = xcca.PolarGrid(center, radii, nphi, image.shape, phi0=phi0)
    polar, pmask = grid.remap(img, mask, method, mask_mode=mode)
    want, want_mask = expected(image, center, radii, nphi, phi0, mask, method, mode, np.nan, image.dtype)
    assert polar.dtype == out_dtype(image.dtype)
    assert polar.shape == pmask.shape == (len(radii), nphi)
    np.testing.assert_array_equal(pmask, want_mask)
    np.testing.assert_array_equal(polar, want)  # bit for bit (NaN == NaN here)
    assert np.isnan(polar[~pmask]).all()
    np.testing.assert_array_equal(img, before)  # input untouched


@given(cases(), st.integers(1, 4))
def test_stack_equals_frames_and_threads_identical(case, n):
    image, center, radii, nphi, phi0, mask, method, mode, _ = case
    rng = np.random.default_rng(n)
    stack = np.stack([np.roll(image, k, axis=rng.integers(0, 2)) for k in range(n)])
    grid = xcca.PolarGrid(center, radii, nphi, image.shape, phi0=phi0)
    p1, m1 = grid.remap(stack, mask, method, mask_mode=mode, fill=-7.0, n_threads=1)
    p2, m2 = grid.remap(stack, mask, method, mask_mode=mode, fill=-7.0, n_threads=2)
    assert p1.shape == (n, len(radii), nphi)
    assert p1.tobytes() == p2.tobytes()
    np.testing.assert_array_equal(m1, m2)
    for k in range(n):
        pk, mk = grid.remap(stack[k], mask, method, mask_mode=mode, fill=-7.0)
        assert pk.tobytes() == p1[k].tobytes()
        np.testing.assert_array_equal(mk, m1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bilinear_equals_scipy_map_coordinates(dtype):
    rng = np.random.default_rng(5)
    img = rng.standard_normal((53, 71)).astype(dtype)
    mask = rng.random(img.shape) > 0.05
    grid = xcca.PolarGrid((33.7, 25.2), np.linspace(0, 45, 61), 257, img.shape, phi0=0.3)
    polar, pmask = grid.remap(img, mask)
    x = 33.7 + grid.radii[:, None] * np.cos(grid.phi)
    y = 25.2 + grid.radii[:, None] * np.sin(grid.phi)
    sp = ndimage.map_coordinates(img.astype(np.float64), [y, x], order=1, mode="constant", cval=np.nan)
    assert pmask.sum() > 0.5 * pmask.size
    tol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(polar[pmask], sp[pmask], rtol=tol, atol=tol * 10)


def test_nan_pixels_propagate_only_to_samples_using_them():
    img = np.arange(30.0).reshape(5, 6)
    img[2, 3] = np.nan
    # radius 0 at the NaN pixel's centre uses only that pixel; radius 1 at phi=0 uses (2, 4) only
    grid = xcca.PolarGrid((3.0, 2.0), [0.0, 1.0, 0.5], 4, img.shape)
    polar, pmask = grid.remap(img)
    assert np.isnan(polar[0]).all() and pmask[0].all()  # NaN pixel used, still marked valid (documented)
    assert polar[1, 0] == 16.0 and polar[1, 1] == 21.0
    assert np.isnan(polar[2, 0])  # x = 3.5 uses the NaN pixel with weight 0.5


def test_edge_samples_and_fill():
    img = np.arange(12, dtype=np.float32).reshape(3, 4)
    grid = xcca.PolarGrid((0.0, 0.0), [0.0, 3.0, 3.5], 4, img.shape)
    polar, pmask = grid.remap(img, fill=-1.0)
    assert polar[1, 0] == 3.0 and pmask[1, 0]  # x = W-1 exactly: inside
    assert not pmask[2, 0] and polar[2, 0] == -1.0
    ren, rmask = grid.remap(img, mask_mode="renormalize")
    assert rmask[2, 0] and ren[2, 0] == 3.0  # x = 3.5: column 3 alone has weight 0.5 >= 0.5
    near, nmask = grid.remap(img, method="nearest")
    assert not nmask[2, 0] and np.isnan(near[2, 0])  # x = 3.5 = W - 0.5: outside


def test_renormalize_threshold():
    img = np.arange(12, dtype=np.float64).reshape(3, 4)
    grid = xcca.PolarGrid((0.0, 0.0), [3.5, 3.25, 3.75], 1, img.shape)
    polar, pmask = grid.remap(img, mask_mode="renormalize")
    np.testing.assert_array_equal(pmask, [[True], [True], [False]])
    assert polar[0, 0] == 3.0 and polar[1, 0] == 3.0
    strict, smask = grid.remap(img)
    assert not smask.any()


def test_mask_polarity_true_is_valid():
    img = np.ones((9, 9), np.float32)
    mask = np.zeros((9, 9), bool)
    mask[4, 4] = True
    grid = xcca.PolarGrid((4.0, 4.0), [0.0, 2.0], 8, img.shape)
    polar, pmask = grid.remap(img, mask, method="nearest")
    assert pmask[0].all() and not pmask[1].any()
    p_int, m_int = grid.remap(img, mask.astype(np.uint8), method="nearest")
    np.testing.assert_array_equal(m_int, pmask)


def test_radii_tuple_and_properties():
    grid = xcca.PolarGrid((10, 12), (3, 8), 16, (30, 40), phi0=0.5)
    np.testing.assert_array_equal(grid.radii, np.arange(3.0, 8.0))
    np.testing.assert_array_equal(grid.phi, ref.polar_angles(16, 0.5))
    assert grid.polar_shape == (5, 16) and grid.shape == (30, 40) and grid.center == (10.0, 12.0)
    assert "PolarGrid" in repr(grid)


def test_out_argument():
    img = np.random.default_rng(1).random((2, 20, 30)).astype(np.float32)
    grid = xcca.PolarGrid((15, 10), (0, 12), 32, (20, 30))
    out = np.empty((2, 12, 32), np.float32)
    polar, _ = grid.remap(img, out=out)
    assert polar is out
    np.testing.assert_array_equal(out, grid.remap(img)[0])
    with pytest.raises(ValueError, match="out"):
        grid.remap(img, out=np.empty((2, 12, 31), np.float32))
    with pytest.raises(TypeError, match="out"):
        grid.remap(img, out=np.empty((2, 12, 32), np.float64))
    with pytest.raises(ValueError, match="out"):
        grid.remap(img, out=np.empty((2, 32, 12), np.float32).transpose(0, 2, 1))
    with pytest.raises(TypeError, match="out"):
        grid.remap(img, out=[[0.0]])


def test_empty_stack_and_empty_radii():
    grid = xcca.PolarGrid((5, 5), [1.0, 20.0], 8, (10, 10))
    polar, pmask = grid.remap(np.zeros((0, 10, 10), np.float32))
    assert polar.shape == (0, 2, 8) and pmask[0].all() and not pmask[1].any()
    # An empty grid is refused (issue 10: it used to build silently and remap to nothing).
    for radii in ([], (180, 110), (5, 5)):
        with pytest.raises(ValueError, match="radii"):
            xcca.PolarGrid((5, 5), radii, 8, (10, 10))


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(center=(np.nan, 1.0)), ValueError, "center"),
        (dict(center=(1.0, np.inf)), ValueError, "center"),
        (dict(center=(1.0,)), ValueError, "center"),
        (dict(nphi=0), ValueError, "nphi"),
        (dict(nphi=-3), ValueError, "nphi"),
        (dict(nphi=2.5), TypeError, "nphi"),
        (dict(radii=[[1.0, 2.0]]), ValueError, "radii"),
        (dict(radii=[1.0, -2.0]), ValueError, "radii"),
        (dict(radii=[1.0, np.nan]), ValueError, "radii"),
        (dict(radii=["a"]), TypeError, "radii"),
        (dict(shape=(0, 5)), ValueError, "shape"),
        (dict(shape=(5,)), ValueError, "shape"),
        (dict(phi0=np.nan), ValueError, "phi0"),
    ],
)
def test_bad_grid_arguments(kwargs, exc, match):
    args = dict(center=(2.0, 2.0), radii=[0.0, 1.0], nphi=4, shape=(5, 5))
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        xcca.PolarGrid(**args)


def test_bad_remap_arguments():
    grid = xcca.PolarGrid((2.0, 2.0), [0.0, 1.0], 4, (5, 5))
    img = np.zeros((5, 5), np.float32)
    with pytest.raises(ValueError, match="images"):
        grid.remap(np.zeros(5))
    with pytest.raises(ValueError, match="images"):
        grid.remap(np.zeros((1, 1, 5, 5)))
    with pytest.raises(ValueError, match="shape"):
        grid.remap(np.zeros((5, 6)))
    with pytest.raises(TypeError, match="images"):
        grid.remap(np.zeros((5, 5), complex))
    with pytest.raises(TypeError, match="images"):
        grid.remap(np.full((5, 5), "x"))
    with pytest.raises(ValueError, match="mask"):
        grid.remap(img, np.ones((5, 4), bool))
    with pytest.raises(TypeError, match="mask"):
        grid.remap(img, np.ones((5, 5)))
    with pytest.raises(ValueError, match="method"):
        grid.remap(img, method="cubic")
    with pytest.raises(ValueError, match="mask_mode"):
        grid.remap(img, mask_mode="loose")
    with pytest.raises(ValueError, match="n_threads"):
        grid.remap(img, n_threads=0)
    with pytest.raises(ValueError, match="n_threads"):
        grid.remap(img, n_threads=-1)


def test_radial_profile_and_fill_masked():
    rng = np.random.default_rng(3)
    polar = rng.random((3, 6, 10)).astype(np.float32)
    pmask = rng.random((6, 10)) > 0.4
    pmask[2] = False
    grid = xcca.PolarGrid((0, 0), np.arange(6.0), 10, (4, 4))
    prof = grid.radial_profile(polar, pmask)
    assert prof.shape == (3, 6) and prof.dtype == np.float32
    np.testing.assert_allclose(prof, ref.radial_profile(polar, pmask), rtol=1e-6)
    assert np.isnan(prof[:, 2]).all()
    filled = xcca.fill_masked(polar, pmask)
    np.testing.assert_allclose(filled, ref.fill_masked(polar, pmask), rtol=1e-6)
    np.testing.assert_array_equal(filled[:, pmask], polar[:, pmask])
    assert filled is not polar
    f0 = xcca.fill_masked(polar[0], pmask, value=0.0)
    assert (f0[~pmask] == 0).all()
    with pytest.raises(ValueError, match="value"):
        xcca.fill_masked(polar, pmask, value="median")
    with pytest.raises(ValueError, match="polar"):
        grid.radial_profile(polar[:, :5], pmask)
    with pytest.raises(TypeError, match="polar_mask"):
        grid.radial_profile(polar, pmask.astype(int))


def test_real_image_with_mask(data_dir):
    img = np.load(data_dir / "test_img.npy")
    mask = np.load(data_dir / "test_mask.npy")
    h, w = img.shape
    center = (w / 2 - 0.3, h / 2 + 0.7)
    for method in ("bilinear", "nearest"):
        for mode in ("strict", "renormalize"):
            grid = xcca.PolarGrid(center, (10, 160), 360, img.shape)
            polar, pmask = grid.remap(img, mask, method, mask_mode=mode)
            want, want_mask = expected(img, center, grid.radii, 360, 0.0, mask, method, mode, np.nan, img.dtype)
            np.testing.assert_array_equal(pmask, want_mask)
            np.testing.assert_array_equal(polar, want)
            assert 0.3 < pmask.mean() < 1.0  # the gaps and beamstop are masked, most of the ring is valid
    prof = grid.radial_profile(polar, pmask)
    assert np.isfinite(prof).sum() > 100


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.uint16, np.int16])
@pytest.mark.parametrize("method", ["bilinear", "nearest"])
@pytest.mark.parametrize("masked", [None, "strict", "renormalize"])
def test_large_interior_fast_paths_bitexact(dtype, method, masked):
    # Big enough for the vectorised interior loops (and their scalar tails): integer centre, so phi = 0, pi/2, ...
    # hit pixel centres exactly (zero-weight neighbours), NaN pixels, radii reaching past the edges, masks.
    rng = np.random.default_rng(11)
    img = (rng.standard_normal((211, 307)) * 1000).astype(dtype)
    if img.dtype.kind == "f":
        img[rng.integers(0, 211, 40), rng.integers(0, 307, 40)] = np.nan
    mask = None if masked is None else rng.random(img.shape) > 0.03
    mode = masked or "strict"
    center = (150.0, 100.0)
    radii = np.concatenate([np.arange(0, 130, 1.0), [17.25, 99.5]])
    grid = xcca.PolarGrid(center, radii, 1003, img.shape, phi0=0.0)
    polar, pmask = grid.remap(img, mask, method=method, mask_mode=mode)
    want, want_mask = expected(img, center, radii, 1003, 0.0, mask, method, mode, np.nan, img.dtype)
    np.testing.assert_array_equal(pmask, want_mask)
    np.testing.assert_array_equal(polar, want)
    assert pmask.mean() > 0.7


def test_far_away_geometry_is_invalid_not_a_crash():
    img = np.ones((8, 9), np.float32)
    for center, radii in (((1e300, 4.0), [0.0, 1.0]), ((4.0, 4.0), [1e300, 1e17]), ((-1e12, 1e12), [5.0])):
        for method in ("bilinear", "nearest"):
            polar, pmask = xcca.PolarGrid(center, radii, 16, img.shape).remap(img, method=method,
                                                                               mask_mode="renormalize")
            assert not pmask.any() and np.isnan(polar).all()


@pytest.mark.parametrize("dtype", [np.float32, np.int32])
@pytest.mark.parametrize("view", ["contiguous", "flipped rows", "every other row"])
@pytest.mark.parametrize("masked", [None, "strict", "renormalize"])
def test_two_pass_bilinear_chunks_and_row_strides(dtype, view, masked):
    # The AVX-512 bilinear loop for 32-bit pixels works in chunks of 256 samples of a tile row with pixel offsets
    # stored as int32: long rows (several chunks plus a tail), negative and doubled row strides, NaN pixels, masks.
    rng = np.random.default_rng(5)
    base = (rng.standard_normal((2 * 263, 341)) * 1000).astype(dtype)
    if base.dtype.kind == "f":
        base[rng.integers(0, 2 * 263, 60), rng.integers(0, 341, 60)] = np.nan
    img = {"contiguous": base[:263], "flipped rows": base[:263][::-1], "every other row": base[::2]}[view]
    center = (170.3, 131.7)
    radii = np.arange(0.0, 200.0, 0.75)
    nphi = 4001
    mask = None if masked is None else rng.random(img.shape) > 0.02
    mode = masked or "strict"
    grid = xcca.PolarGrid(center, radii, nphi, img.shape, phi0=0.1)
    for nt in (1, 2):
        polar, pmask = grid.remap(img, mask, n_threads=nt, mask_mode=mode)
        want, want_mask = expected(np.ascontiguousarray(img), center, radii, nphi, 0.1, mask, "bilinear", mode,
                                   np.nan, img.dtype)
        np.testing.assert_array_equal(pmask, want_mask)
        np.testing.assert_array_equal(polar, want)
    assert pmask.mean() > 0.5


def test_polar_mask_without_mask_is_cached_read_only_and_exact():
    # Without a pixel mask the validity depends on geometry, method and mode only: shared read-only arrays, each equal
    # to a fresh computation (renormalize keeps edge samples that strict drops).
    img = np.arange(30 * 41, dtype=np.float32).reshape(30, 41)
    grid = xcca.PolarGrid((20.0, 14.5), np.arange(0.0, 30.0, 0.5), 97, img.shape)
    seen = {}
    for _ in range(2):
        for method in ("bilinear", "nearest"):
            for mode in ("strict", "renormalize"):
                polar, pmask = grid.remap(img, method=method, mask_mode=mode)
                assert not pmask.flags.writeable
                fresh = xcca.PolarGrid((20.0, 14.5), np.arange(0.0, 30.0, 0.5), 97, img.shape).remap(
                    img, np.ones(img.shape, bool), method=method, mask_mode=mode)[1]
                np.testing.assert_array_equal(pmask, fresh)
                np.testing.assert_array_equal(np.isnan(polar), ~fresh)
                seen.setdefault((method, mode), pmask)
                assert seen[(method, mode)] is pmask
    assert (seen[("bilinear", "renormalize")] & ~seen[("bilinear", "strict")]).any()
    with pytest.raises(ValueError):
        seen[("nearest", "strict")][0, 0] = False


@pytest.mark.parametrize("dtype", [np.float32, np.uint16, np.int32, np.float64])
@pytest.mark.parametrize("method", ["nearest", "bilinear"])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("nphi, offset", [(1000, 0), (997, 0), (1003, 1)])
def test_large_outputs_streamed_bitexact(dtype, method, masked, nphi, offset):
    # Outputs >= 8 MB are written with non-temporal stores on whole output lines, and tile boundaries move to line
    # boundaries: a stack (rows of any length, an output buffer not 64-byte aligned) must equal its frames (each
    # written with ordinary stores) bit for bit, with 1 and 2 threads, and a frame must equal the reference.
    rng = np.random.default_rng(11)
    n, shape = 64 if np.dtype(dtype).itemsize < 8 else 32, (97, 89)
    stack = (rng.random((n,) + shape) * 1000).astype(dtype)
    mask = rng.random(shape) > 0.02 if masked else None
    grid = xcca.PolarGrid((44.3, 49.6), np.arange(2.0, 42.0), nphi, shape)
    p1, m1 = grid.remap(stack, mask, method, n_threads=1)
    buf = np.empty(p1.size + offset, p1.dtype)
    p2 = buf[offset:].reshape(p1.shape)  # offset 1: 4- or 8-byte aligned only
    m2 = grid.remap(stack, mask, method, n_threads=2, out=p2)[1]
    assert p1.nbytes >= 8 << 20
    assert p1.tobytes() == p2.tobytes()
    np.testing.assert_array_equal(m1, m2)
    for k in (0, 31, n - 1):
        pk, mk = grid.remap(stack[k], mask, method)
        assert pk.tobytes() == p1[k].tobytes()
        np.testing.assert_array_equal(mk, m1)
    want, want_mask = expected(stack[5], grid.center, grid.radii, grid.nphi, 0.0, mask, method, "strict", np.nan,
                               stack.dtype)
    np.testing.assert_array_equal(m1, want_mask)
    np.testing.assert_array_equal(p1[5], want)


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.uint16, np.float64])
@pytest.mark.parametrize("center", [(150.5, 100.5), (150.5 - 1e-7, 100.5 + 1e-9), (150.5 + 3e-5, 100.0 - 2e-6),
                                    (150.25, 100.75)])
@pytest.mark.parametrize("masked", [False, True])
def test_nearest_ties_and_near_ties_exact(dtype, center, masked):
    # Nearest on float32 coordinates (the AVX-512 fast path) must pick the pixel of the double-precision rule wherever
    # float32 cannot tell: half-integer centres and radii put many samples on or within rounding of x = k + 1/2.
    rng = np.random.default_rng(3)
    img = (rng.random((211, 307)) * 60000).astype(dtype)
    mask = rng.random(img.shape) > 0.05 if masked else None
    radii = np.concatenate([np.arange(0.0, 99.0, 0.5), [33.3, 64.000001]])
    for nphi in (1024, 1000):
        grid = xcca.PolarGrid(center, radii, nphi, img.shape)
        polar, pmask = grid.remap(img, mask, method="nearest")
        want, want_mask = expected(img, center, radii, nphi, 0.0, mask, "nearest", "strict", np.nan, img.dtype)
        np.testing.assert_array_equal(pmask, want_mask)
        np.testing.assert_array_equal(polar, want)


def test_large_random_geometries_match_reference():
    # The vectorised interior loops need long interior runs of samples: random geometries on a 300 x 280 image
    # (centres inside and outside, fractional radii steps, odd nphi, phi0, masks, row-strided views, 1 and 2
    # threads) against the NumPy specification.
    rng = np.random.default_rng(2024)
    for case in range(16):
        dtype = [np.float32, np.int32, np.uint16, np.float64, np.int16][case % 5]
        base = (rng.standard_normal((600, 280)) * 500 + 1000).astype(dtype)
        img = base[::2] if case % 3 == 0 else base[:300]
        center = tuple(rng.uniform(-60, 360, 2))
        r0 = rng.uniform(0, 80)
        radii = r0 + np.arange(rng.integers(20, 120)) * rng.uniform(0.3, 2.0)
        nphi = int(rng.integers(100, 1500))
        phi0 = float(rng.uniform(-np.pi, np.pi))
        mask = rng.random(img.shape) > 0.03 if case % 2 else None
        for method in ("nearest", "bilinear"):
            mode = "renormalize" if case % 4 == 1 else "strict"
            grid = xcca.PolarGrid(center, radii, nphi, img.shape, phi0=phi0)
            want, want_mask = expected(np.ascontiguousarray(img), center, radii, nphi, phi0, mask, method, mode,
                                       np.nan, img.dtype)
            for nt in (1, 2):
                polar, pmask = grid.remap(img, mask, method=method, mask_mode=mode, n_threads=nt)
                np.testing.assert_array_equal(pmask, want_mask)
                np.testing.assert_array_equal(polar, want)
