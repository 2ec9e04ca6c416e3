"""The thumbnail's colour steps against straightforward NumPy formulations: gap-line scan, axis resize, scaling."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import xcca
from xcca import reference
from xcca.thumbnail import _cell_ranges, _empty_lines, _resample_axis, _scaled

DTYPES = [np.uint8, np.uint16, np.int16, np.int32, np.uint32, np.int64, np.float32, np.float64]


@st.composite
def frames(draw, max_side=40):
    """A small image whose rows and columns are often entirely invalid (negative, NaN or masked)."""
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    if dtype.kind == "f":
        elements = st.one_of(st.floats(-5, 5, width=dtype.itemsize * 8), st.just(float("nan")))
    else:
        info = np.iinfo(dtype)
        elements = st.integers(max(int(info.min), -3), min(int(info.max), 5))
    img = draw(hnp.arrays(dtype, (h, w), elements=elements))
    dead_rows = draw(hnp.arrays(np.bool_, h))
    dead_cols = draw(hnp.arrays(np.bool_, w))
    bad = 0 if dtype.kind == "u" else -1
    img[dead_rows, :] = bad
    img[:, dead_cols] = bad
    mask = None
    if draw(st.booleans()):
        mask = draw(hnp.arrays(np.bool_, (h, w)))
        mask[dead_rows, :] = False
        mask[:, dead_cols] = False
    return img, mask


@given(frames())
def test_empty_lines_equal_reference(data):
    img, mask = data
    before = img.copy()
    rows, cols = _empty_lines(mask, img)
    ref_rows, ref_cols = reference.empty_lines(img, mask)
    assert rows.dtype == np.bool_ and cols.dtype == np.bool_
    np.testing.assert_array_equal(rows, ref_rows)
    np.testing.assert_array_equal(cols, ref_cols)
    np.testing.assert_array_equal(img, before)


def test_empty_lines_pilatus_gaps():
    frame = xcca.datasets.pilatus6m()
    gaps = xcca.datasets.pilatus_gap_mask()
    for mask in (None, frame >= 0, gaps):
        rows, cols = _empty_lines(mask, frame)
        np.testing.assert_array_equal(rows, ~gaps.any(axis=1))
        np.testing.assert_array_equal(cols, ~gaps.any(axis=0))
    # With a mask, the mask alone decides (NaN or negative pixels under True count as valid).
    img = np.full((4, 5), np.nan)
    rows, cols = _empty_lines(np.eye(4, 5, dtype=bool), img)
    assert rows.tolist() == [False] * 4 and cols.tolist() == [False] * 4 + [True]


def test_empty_lines_bad_arguments():
    img = np.zeros((3, 4), np.int32)
    with pytest.raises(ValueError, match="empty_lines"):
        xcca._binning.empty_lines(img, None, np.empty(2, np.uint8), np.empty(4, np.uint8))
    with pytest.raises(ValueError, match="empty_lines"):
        xcca._binning.empty_lines(img, np.ones((3, 3), np.uint8), np.empty(3, np.uint8), np.empty(4, np.uint8))


def _resample_loop(values, valid, n_out, axis, mode):
    """Cell by cell: max of the valid source cells (-inf if none), or their mean (summed in order), as float64."""
    v = np.moveaxis(values.astype(np.float64), axis, 0)
    ok = np.moveaxis(valid, axis, 0)
    n_in = v.shape[0]
    out = np.empty((n_out,) + v.shape[1:])
    has = np.empty((n_out,) + v.shape[1:], bool)
    for j in range(n_out):
        if n_in <= n_out:
            a = (j * n_in) // n_out
            out[j], has[j] = (v[a], ok[a]) if n_in < n_out else (v[j], ok[j])
            if mode == "max":  # an enlarged (or unchanged) cell keeps its value; only valid values are compared
                out[j] = np.where(ok[a if n_in < n_out else j], out[j], -np.inf)
            continue
        a, b = (j * n_in) // n_out, ((j + 1) * n_in) // n_out
        if mode == "max":
            out[j] = np.where(ok[a:b], v[a:b], -np.inf).max(axis=0)
        else:
            s = np.where(ok[a], v[a], 0.0)
            for i in range(a + 1, b):
                s = s + np.where(ok[i], v[i], 0.0)
            out[j] = s / np.maximum(ok[a:b].sum(axis=0), 1)
        has[j] = ok[a:b].any(axis=0)
    return np.moveaxis(out, 0, axis), np.moveaxis(has, 0, axis)


@given(st.sampled_from(DTYPES), st.integers(1, 30), st.integers(1, 12), st.integers(1, 60), st.integers(0, 1),
       st.sampled_from(["max", "sum"]), st.integers(0, 2**32 - 1))
def test_resample_axis_equals_cell_loop(dtype, n_in, n_other, n_out, axis, mode, seed):
    rng = np.random.default_rng(seed)
    shape = (n_in, n_other) if axis == 0 else (n_other, n_in)
    dt = np.dtype(dtype)
    values = (rng.normal(0, 100, shape) if dt.kind == "f" else rng.integers(0, 100, shape)).astype(dt)
    valid = rng.random(shape) > 0.3
    if mode == "sum":
        values = values.astype(np.float64)  # make_thumbnail's sum path resizes float64
    got, ok = _resample_axis(values, valid, n_out, axis, mode)
    ref, ref_ok = _resample_loop(values, valid, n_out, axis, mode)
    np.testing.assert_array_equal(ok, ref_ok)
    longest = -(-n_in // n_out) + 1
    if mode == "max" or longest <= 4:  # wider cells use np.add.reduceat, whose summation order may differ
        np.testing.assert_array_equal(got.astype(np.float64)[ok], ref[ok])
    else:
        np.testing.assert_allclose(got[ok], ref[ok], rtol=1e-12)


@st.composite
def ranges(draw, n):
    """Non-empty ranges inside [0, n), in any order (they may overlap)."""
    k = draw(st.integers(1, 12))
    a = np.array(draw(st.lists(st.integers(0, n - 1), min_size=k, max_size=k)), np.intp)
    b = np.array([draw(st.integers(int(x) + 1, n)) for x in a], np.intp)
    return a, b


@given(frames(max_side=20), st.data())
def test_resample_max_kernel_equals_reference(data, draw):
    img, mask = data
    valid = np.ones(img.shape, bool) if mask is None else mask
    img = np.ascontiguousarray(img)
    y0, y1 = draw.draw(ranges(img.shape[0]))
    x0, x1 = draw.draw(ranges(img.shape[1]))
    out = np.empty((len(y0), len(x0)), img.dtype)
    ok = np.empty(out.shape, np.uint8)
    xcca._binning.resample_max(img, valid.view(np.uint8), y0, y1, x0, x1, out, ok)
    ref, ref_ok = reference.resample_max(img, valid, y0, y1, x0, x1)
    np.testing.assert_array_equal(ok.view(bool), ref_ok)
    np.testing.assert_array_equal(out, ref)


@given(st.sampled_from(DTYPES), st.integers(1, 40), st.integers(1, 40), st.integers(1, 60), st.integers(1, 60),
       st.integers(0, 2**32 - 1))
def test_resample_max_equals_two_axis_passes(dtype, h, w, out_h, out_w, seed):
    """make_thumbnail's one-pass resize (max mode) against the two NumPy axis passes it replaced."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    values = (rng.normal(0, 100, (h, w)) if dt.kind == "f" else rng.integers(0, 100, (h, w))).astype(dt)
    valid = rng.random((h, w)) > 0.4
    v, ok = _resample_axis(values.astype(np.float64), valid, out_h, 0, "max")
    v, ok = _resample_axis(v, ok, out_w, 1, "max")
    (y0, y1), (x0, x1) = _cell_ranges(h, out_h), _cell_ranges(w, out_w)
    out = np.empty((out_h, out_w), dt)
    got_ok = np.empty(out.shape, np.uint8)
    xcca._binning.resample_max(values, valid.view(np.uint8), y0, y1, x0, x1, out, got_ok)
    np.testing.assert_array_equal(got_ok.view(bool), ok)
    np.testing.assert_array_equal(out.astype(np.float64)[ok], v[ok])


def test_resample_max_bad_ranges():
    img = np.zeros((3, 4), np.int32)
    valid = np.ones((3, 4), np.uint8)
    out, ok = np.empty((1, 1), np.int32), np.empty((1, 1), np.uint8)
    r = np.array([0], np.intp)
    for y0, y1 in ((r, r), (r, r + 4)):  # empty, outside
        with pytest.raises(ValueError, match="resample_max"):
            xcca._binning.resample_max(img, valid, y0, y1, r, r + 1, out, ok)
    with pytest.raises(ValueError, match="resample_max"):
        xcca._binning.resample_max(img, valid[:2], r, r + 1, r, r + 1, out, ok)


def _scaled_plain(v, valid, scale, percentiles):
    """The limits and scales of make_thumbnail written out with temporaries (np.percentile for the limits)."""
    good = v[valid]
    if good.size == 0:
        return np.zeros(v.shape)
    lo, med, hi = np.percentile(good, (percentiles[0], 50.0, percentiles[1]))
    x = np.clip(v - lo, 0.0, None)
    span = float(hi - lo)
    if not np.isfinite(span) or span <= 0:
        return (x > 0).astype(np.float64)
    if scale == "linear":
        t = x / span
    else:
        unit = max(float(med - lo), span * 1e-4, 1e-300)
        f = np.log1p if scale == "log" else np.arcsinh
        t = f(x / unit) / f(span / unit)
    return np.clip(t, 0.0, 1.0)


@pytest.mark.parametrize("scale", ["log", "asinh", "linear"])
@pytest.mark.parametrize("kind", ["gamma", "spots", "constant", "empty"])
def test_scaled_equals_plain_formulation(scale, kind):
    rng = np.random.default_rng(3)
    v = {"gamma": rng.gamma(2.0, 30.0, (57, 61)), "spots": rng.poisson(3.0, (57, 61)) * 1.0,
         "constant": np.full((57, 61), 7.0), "empty": rng.normal(size=(57, 61))}[kind]
    if kind == "spots":
        v[rng.random(v.shape) < 0.01] = 1e5
    valid = rng.random(v.shape) > (1.0 if kind == "empty" else 0.1)
    before = v.copy()
    got = _scaled(v, valid, scale, (1.0, 99.9))
    np.testing.assert_array_equal(got, _scaled_plain(v, valid, scale, (1.0, 99.9)))
    np.testing.assert_array_equal(v, before)


@pytest.mark.parametrize("shape", [(1, 1), (37, 20), (150, 146), (300, 292), (301, 700)])
def test_png_halves_decode_to_the_pixels_and_do_not_depend_on_threads(tmp_path, monkeypatch, shape):
    import zlib

    from PIL import Image

    from xcca import binning, thumbnail

    rng = np.random.default_rng(shape[0])
    rgb = rng.integers(0, 256, shape + (3,)).astype(np.uint8)
    rgb[: shape[0] // 3] = 255  # some compressible rows as well
    data = thumbnail._png_bytes(rgb)
    monkeypatch.setattr(binning, "_usable_cores", lambda: 1)
    assert thumbnail._png_bytes(rgb) == data  # the same bytes without a second thread
    idat = data[33 + 8:-12 - 4]  # after signature + IHDR and the IDAT length/type; before its CRC and IEND
    scan = zlib.decompress(idat)
    assert len(scan) == shape[0] * (1 + 3 * shape[1])
    (tmp_path / "t.png").write_bytes(data)
    with Image.open(tmp_path / "t.png") as im:
        assert im.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(im), rgb)


# ---- the colouring pass (xcca._binning.lut_rgb, spec reference.lut_rgb) -------------------------------------

def _numpy_colouring(t, valid, lut, color):
    """The NumPy steps lut_rgb replaced in thumbnail._finish (a 257th LUT row for the masked colour)."""
    t = t * 255
    idx = np.rint(t, out=t).astype(np.intp)
    idx[~valid] = 256
    lut4 = np.zeros((257, 4), np.uint8)
    lut4[:256, :3] = lut
    lut4[256, :3] = color
    return np.take(lut4.view(np.uint32).reshape(257), idx).view(np.uint8).reshape(idx.shape + (4,))[..., :3]


@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, max_side=30),
                  elements=st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.5 / 255, 1.5 / 255, 254.5 / 255,
                                                                           np.nextafter(0.5, 1) / 255]))),
       st.integers(0, 2**32 - 1))
def test_lut_rgb_equals_spec_and_numpy(t, seed):
    from xcca import _binning
    from xcca.thumbnail import _colormap

    rng = np.random.default_rng(seed)
    valid = rng.random(t.shape) < 0.8
    lut = rng.integers(0, 256, (256, 3)).astype(np.uint8) if seed % 2 else _colormap("gray_r")
    color = rng.integers(0, 256, 3).astype(np.uint8)
    out = np.full(t.shape + (3,), 7, np.uint8)
    assert _binning.lut_rgb(t, valid.view(np.uint8), lut, color, out)
    assert np.array_equal(out, reference.lut_rgb(t, valid, lut, color))
    assert np.array_equal(out, _numpy_colouring(t, valid, lut, color))


def test_lut_rgb_refuses_out_of_range():
    from xcca import _binning

    lut, color = np.zeros((256, 3), np.uint8), np.zeros(3, np.uint8)
    out = np.empty((1, 2, 3), np.uint8)
    for bad in (np.nan, 1.01, -0.01, np.inf):
        assert not _binning.lut_rgb(np.array([[0.5, bad]]), np.ones((1, 2), np.uint8), lut, color, out)
    assert _binning.lut_rgb(np.array([[0.5, np.nan]]), np.array([[1, 0]], np.uint8), lut, color, out)  # masked
    with pytest.raises(ValueError, match="lut_rgb"):
        _binning.lut_rgb(np.zeros((2, 2)), np.ones((2, 3), np.uint8), lut, color, np.empty((2, 2, 3), np.uint8))
