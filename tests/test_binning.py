"""bin_max, bin_sum and dilate_max against xcca.reference and scipy.ndimage, on generated and real inputs."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import xcca
from xcca import reference

DTYPES = [np.uint8, np.uint16, np.int16, np.int32, np.uint32, np.int64, np.float32, np.float64]
LAYOUTS = ["contiguous", "big-endian", "transposed", "strided"]


def _elements(dtype, allow_nan):
    dt = np.dtype(dtype)
    if dt.kind == "f":
        finite = st.floats(-1e6, 1e6, width=dt.itemsize * 8)
        return st.one_of(finite, st.just(float("nan"))) if allow_nan else finite
    info = np.iinfo(dt)
    if dt.itemsize == 8:  # int64 sums may overflow by design; keep generated sums in range
        return st.integers(-2**40, 2**40)
    return st.integers(int(info.min), int(info.max))


def _layout(arr: np.ndarray, layout: str) -> np.ndarray:
    """The same values in another memory layout."""
    if layout == "big-endian":
        return arr.astype(arr.dtype.newbyteorder(">"))
    if layout == "transposed":
        return np.asfortranarray(arr)
    if layout == "strided":
        return np.repeat(arr, 2, axis=1)[:, ::2]
    return arr


@st.composite
def images(draw, allow_nan=True, max_side=33, with_mask=True):
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=max_side))
    arr = draw(hnp.arrays(dtype, shape, elements=_elements(dtype, allow_nan)))
    arr = _layout(arr, draw(st.sampled_from(LAYOUTS)))
    mask = None
    if with_mask and draw(st.booleans()):
        mask = draw(hnp.arrays(np.bool_, shape))
    return arr, mask


factors = st.one_of(st.integers(1, 40), st.tuples(st.integers(1, 40), st.integers(1, 40)))


@given(images(), factors)
def test_bin_max_matches_reference(data, factor):
    img, mask = data
    before = img.copy()
    got = xcca.bin_max(img, factor, mask)
    ref = reference.bin_max(img, factor, mask)
    assert got.dtype == img.dtype.newbyteorder("=")
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(img, before)


@given(images(), factors)
def test_bin_sum_matches_reference(data, factor):
    img, mask = data
    before = img.copy()
    got = xcca.bin_sum(img, factor, mask)
    ref = reference.bin_sum(img, factor, mask)
    assert got.dtype == (np.float64 if img.dtype.kind == "f" else np.int64)
    np.testing.assert_array_equal(got, ref)  # exact: same summation order
    np.testing.assert_array_equal(img, before)


@given(images(max_side=24), st.integers(1, 30))
def test_dilate_matches_reference(data, size):
    img, mask = data
    before = img.copy()
    got = xcca.dilate_max(img, size, mask)
    np.testing.assert_array_equal(got, reference.dilate_max(img, size, mask))
    np.testing.assert_array_equal(img, before)


@given(images(allow_nan=False, max_side=40, with_mask=False), st.integers(1, 25))
def test_dilate_equals_scipy(data, size):
    img, _ = data
    got = xcca.dilate_max(img, size)
    np.testing.assert_array_equal(got, ndi.grey_dilation(img, size=(size, size)))


@pytest.mark.parametrize("size", [2, 3, 4, 9, 10, 11, 64])
@pytest.mark.parametrize("n_threads", [1, 2, 3, 5])
def test_dilate_threads_and_sizes_equal_scipy(size, n_threads):
    rng = np.random.default_rng(size)
    img = rng.normal(size=(701, 263)).astype(np.float32)
    np.testing.assert_array_equal(xcca.dilate_max(img, size, n_threads=n_threads),
                                  ndi.grey_dilation(img, size=(size, size)))


@pytest.fixture(scope="module")
def masked_int_image():
    rng = np.random.default_rng(1)
    img = rng.integers(-5, 1000, (1003, 977)).astype(np.int32)
    mask = rng.random(img.shape) > 0.3
    return img, mask, reference.bin_max(img, (10, 7), mask), reference.bin_sum(img, (10, 7), mask)


@pytest.mark.parametrize("n_threads", [1, 2, 3, 7])
def test_binning_threads_agree(masked_int_image, n_threads):
    img, mask, ref_max, ref_sum = masked_int_image
    np.testing.assert_array_equal(xcca.bin_max(img, (10, 7), mask, n_threads=n_threads), ref_max)
    np.testing.assert_array_equal(xcca.bin_sum(img, (10, 7), mask, n_threads=n_threads), ref_sum)
    lo = np.iinfo(np.int32).min
    np.testing.assert_array_equal(xcca.bin_max(img, 1, mask, n_threads=n_threads), np.where(mask, img, lo))
    np.testing.assert_array_equal(xcca.bin_sum(img, 1, mask, n_threads=n_threads), np.where(mask, img, 0))


def test_stack_is_per_frame_and_mask_broadcasts():
    rng = np.random.default_rng(2)
    stack = rng.normal(size=(3, 17, 23)).astype(np.float32)
    mask = rng.random((17, 23)) > 0.2
    for fn, arg in ((xcca.bin_max, 4), (xcca.bin_sum, (3, 5)), (xcca.dilate_max, 4)):
        got = fn(stack, arg, mask)
        assert got.shape[0] == 3
        for i in range(3):
            np.testing.assert_array_equal(got[i], fn(stack[i], arg, mask))


def test_partial_edge_blocks_and_factor_larger_than_image():
    img = np.arange(35, dtype=np.int32).reshape(5, 7)
    np.testing.assert_array_equal(xcca.bin_max(img, 3), [[16, 19, 20], [30, 33, 34]])
    assert xcca.bin_sum(img, 100).tolist() == [[img.sum()]]
    assert xcca.bin_max(img, (1, 100)).ravel().tolist() == [6, 13, 20, 27, 34]


def test_sum_does_not_overflow():
    img = np.full((100, 100), 2**31 - 1, np.int32)
    assert xcca.bin_sum(img, 10)[0, 0] == 100 * (2**31 - 1)
    img = np.full((10, 10), 700_000, np.uint32)
    assert xcca.bin_sum(img, 10)[0, 0] == 70_000_000


def test_masked_pixels_never_win_and_fill():
    img = np.array([[5, 1], [-1, -2]], np.int32)
    mask = img >= 0
    mask[0, 0] = False
    assert xcca.bin_max(img, 2, mask)[0, 0] == 1
    lo = np.iinfo(np.int32).min
    assert xcca.bin_max(img, 1, mask).tolist() == [[lo, 1], [lo, lo]]
    assert xcca.bin_max(img, 1, mask, fill=0).tolist() == [[0, 1], [0, 0]]
    assert xcca.dilate_max(img, 1, mask, fill=-7).tolist() == [[-7, 1], [-7, -7]]
    assert xcca.dilate_max(img, 3, mask).tolist() == [[1, 1], [1, 1]]
    f = np.array([[np.nan, 2.0], [np.nan, np.nan]], np.float32)
    assert xcca.bin_max(f, 2)[0, 0] == 2.0
    assert xcca.bin_sum(f, 2)[0, 0] == 2.0
    assert xcca.bin_max(f, 1).tolist() == [[-np.inf, 2.0], [-np.inf, -np.inf]]
    np.testing.assert_array_equal(xcca.bin_max(f, 1, fill=np.nan), [[np.nan, 2.0], [np.nan, np.nan]])
    np.testing.assert_array_equal(xcca.dilate_max(f, 1, fill=np.nan), [[np.nan, 2.0], [np.nan, np.nan]])


def test_out_argument():
    img = np.arange(20, dtype=np.float32).reshape(4, 5)
    out = np.empty((2, 3), np.float32)
    assert xcca.bin_max(img, 2, out=out) is out
    np.testing.assert_array_equal(out, reference.bin_max(img, 2))
    with pytest.raises(TypeError, match="out"):
        xcca.bin_max(img, 2, out=np.empty((2, 3), np.float64))
    with pytest.raises(ValueError, match="out"):
        xcca.bin_sum(img, 2, out=np.empty((3, 3), np.float64))
    with pytest.raises(ValueError, match="overlap"):
        xcca.dilate_max(img, 3, out=img)


def test_real_data_with_mask(data_dir):
    img = np.load(data_dir / "test_img.npy")
    mask = np.load(data_dir / "test_mask.npy")
    np.testing.assert_array_equal(xcca.bin_max(img, 7, mask), reference.bin_max(img, 7, mask))
    np.testing.assert_array_equal(xcca.bin_sum(img, (4, 9), mask), reference.bin_sum(img, (4, 9), mask))
    # Independent check of masked dilation: masked pixels set to -inf, then scipy.
    for size in (4, 5):
        expect = ndi.grey_dilation(np.where(mask, img, -np.inf).astype(np.float32), size=(size, size))
        np.testing.assert_array_equal(xcca.dilate_max(img, size, mask), expect)


def test_pilatus_frame_bin_max_equals_numpy():
    frame = xcca.datasets.pilatus6m()
    H, W = frame.shape
    padded = np.pad(frame, ((0, -H % 10), (0, -W % 10)), constant_values=np.iinfo(np.int32).min)
    expect = padded.reshape(padded.shape[0] // 10, 10, -1, 10).max(axis=3).max(axis=1)
    np.testing.assert_array_equal(xcca.bin_max(frame, 10), expect)


@pytest.mark.parametrize("fn", [xcca.bin_max, xcca.bin_sum, xcca.dilate_max])
@pytest.mark.parametrize("image, arg, exc, match", [
    (np.zeros(5, np.int32), 2, ValueError, "image"),
    (np.zeros((2, 2, 2, 2), np.int32), 2, ValueError, "image"),
    (np.zeros((0, 4), np.int32), 2, ValueError, "empty"),
    (np.zeros((4, 4), np.complex64), 2, TypeError, "dtype"),
    (np.zeros((4, 4), object), 2, TypeError, "dtype"),
    (np.zeros((4, 4), np.int8), 2, TypeError, "dtype"),
    (np.zeros((4, 4), np.float16), 2, TypeError, "dtype"),
    (np.zeros((4, 4), bool), 2, TypeError, "dtype"),
    (np.zeros((4, 4), np.int32), 0, ValueError, "positive"),
    (np.zeros((4, 4), np.int32), -3, ValueError, "positive"),
    (np.zeros((4, 4), np.int32), 2.5, TypeError, "factor|size"),
])
def test_bad_input(fn, image, arg, exc, match):
    with pytest.raises(exc, match=match):
        fn(image, arg)


def test_bad_mask_and_factor():
    img = np.zeros((4, 6), np.float32)
    with pytest.raises(ValueError, match="mask"):
        xcca.bin_max(img, 2, np.ones((4, 5), bool))
    with pytest.raises(TypeError, match="mask"):
        xcca.dilate_max(img, 2, np.ones((4, 6), np.float32))
    with pytest.raises(ValueError, match="factor"):
        xcca.bin_sum(img, (2, 0))
    with pytest.raises(ValueError, match="factor"):
        xcca.bin_sum(img, (1, 2, 3))
    with pytest.raises(ValueError, match="n_threads"):
        xcca.bin_max(img, 2, n_threads=0)


@pytest.mark.parametrize("size", [79, 80, 81, 99, 100, 101, 10_000_000])
def test_dilate_huge_windows(size):
    # Windows of 2N and more pixels cover whole lines (the kernel clamps them, so memory stays bounded).
    img = np.random.default_rng(size % 1000).normal(size=(40, 50)).astype(np.float64)
    got = xcca.dilate_max(img, size)
    if size < 1000:
        np.testing.assert_array_equal(got, ndi.grey_dilation(img, size=(size, size)))
    else:
        assert np.all(got == img.max())


# dilate_max row scans: vectorised doubling up to a switch size (with a fused first pass for integer images without
# mask), van Herk above. Both paths (forced through the private switch), every dtype, widths below and around the
# size, sizes around powers of two.
SWITCH_SIZES = [1, 2, 3, 7, 8, 9, 10, 15, 16, 17, 18, 31, 33]


@pytest.fixture(params=["default", "van Herk", "doubling"])
def row_scan_switch(request):
    from xcca import _binning
    old = _binning._row_scan_switch()
    _binning._row_scan_switch({"default": old, "van Herk": 0, "doubling": 1 << 30}[request.param])
    yield request.param
    _binning._row_scan_switch(old)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "int32", "uint32", "int64", "float32", "float64"])
def test_dilate_row_scan_paths_every_dtype(dtype, row_scan_switch):
    rng = np.random.default_rng(7)
    dt = np.dtype(dtype)
    info = np.iinfo(dt) if dt.kind in "iu" else None
    for width in (1, 2, 3, 5, 9, 16, 17, 40):
        # int64 kept within +-2**53: scipy.ndimage itself is not exact at the int64 extremes (the reference is).
        lo, hi = (max(info.min, -2**53), min(info.max, 2**53)) if info else (-1000, 1000)
        full = rng.integers(lo, hi, size=(19, width), endpoint=True).astype(dt)
        mask = rng.random(full.shape) > 0.3
        for size in SWITCH_SIZES:
            np.testing.assert_array_equal(xcca.dilate_max(full, size), ndi.grey_dilation(full, size=(size, size)),
                                          err_msg=f"{dtype} width {width} size {size} {row_scan_switch}")
            np.testing.assert_array_equal(xcca.dilate_max(full, size, mask), reference.dilate_max(full, size, mask),
                                          err_msg=f"{dtype} width {width} size {size} masked {row_scan_switch}")
            if dt.kind == "f":  # NaN never wins, also where rows are read straight from the image
                with_nan = np.where(mask, full, np.nan).astype(dt)
                np.testing.assert_array_equal(xcca.dilate_max(with_nan, size), reference.dilate_max(with_nan, size),
                                              err_msg=f"{dtype} width {width} size {size} NaN {row_scan_switch}")


def test_dilate_switch_point_sizes_on_a_wide_image():
    # Real switch point: sizes just below, at and above it on an image wide enough not to clamp the window.
    from xcca import _binning
    k0 = _binning._row_scan_switch()
    img = np.random.default_rng(3).integers(-1000, 1000, size=(3, 2 * k0 + 5)).astype(np.int32)
    for size in (k0 - 1, k0, k0 + 1):
        np.testing.assert_array_equal(xcca.dilate_max(img, size), ndi.grey_dilation(img, size=(size, size)))


@pytest.mark.parametrize("size", [1, 2, 5, 10, 17])
@pytest.mark.parametrize("n_threads", [1, 3])
def test_dilate_streamed_stores(size, n_threads):
    # Big outputs are written with non-temporal stores (through a block buffer): force that path on small images.
    from xcca import _binning
    old = _binning._stream_min_bytes()
    _binning._stream_min_bytes(0)
    try:
        rng = np.random.default_rng(size)
        for dtype in (np.uint8, np.int32, np.float64):
            img = rng.integers(-100, 100, size=(203, 131)).astype(dtype) if dtype != np.uint8 else \
                rng.integers(0, 255, size=(203, 131)).astype(dtype)
            mask = rng.random(img.shape) > 0.2
            np.testing.assert_array_equal(xcca.dilate_max(img, size, n_threads=n_threads),
                                          ndi.grey_dilation(img, size=(size, size)))
            np.testing.assert_array_equal(xcca.dilate_max(img, size, mask, n_threads=n_threads),
                                          reference.dilate_max(img, size, mask))
    finally:
        _binning._stream_min_bytes(old)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("factor", [1, 2, 3, 7, 8, 10, (10, 7), (3, 16), (5, 33), (2, 64), (1, 100)])
def test_bin_max_unmasked_kernel_bits_equal_masked_kernel(dtype, factor):
    # The unmasked kernel folds the columns of a block through doubling levels, the masked one left to right: with
    # an all-valid mask both must give the same bits, down to the sign of a zero maximum (-0.0 vs +0.0: the
    # leftmost wins in both) and NaN (never wins), for full and partial blocks.
    rng = np.random.default_rng(7)
    shape = (53, 211)
    if np.dtype(dtype).kind == "f":
        img = rng.choice(np.array([0.0, -0.0, -1.0, -np.inf, np.nan, 3.5], dtype), shape,
                         p=[0.3, 0.3, 0.2, 0.1, 0.095, 0.005])
    else:
        info = np.iinfo(dtype)
        img = rng.integers(int(info.min), int(info.max), shape, dtype=dtype, endpoint=True)
    got = xcca.bin_max(img, factor)
    masked = xcca.bin_max(img, factor, np.ones(shape, bool))
    assert got.dtype == masked.dtype and got.tobytes() == masked.tobytes()
    if np.dtype(dtype).kind == "f":
        assert np.signbit(got[got == 0]).any() and not np.isnan(got).any()
