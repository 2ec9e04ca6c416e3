"""make_thumbnail: size, masks, visibility of spots, options, bad input; and the synthetic Pilatus frame."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import xcca

MASKED = (40, 110, 200)


@pytest.fixture(scope="module")
def frame():
    return xcca.datasets.pilatus6m()


def test_pilatus6m_frame(frame):
    assert frame.shape == (2527, 2463) and frame.dtype == np.int32
    assert frame.max() <= 700_000 and frame.max() > 50_000  # sharp Bragg spots
    assert set(np.unique(frame[frame < 0])) == {-1, -2}
    gaps = xcca.datasets.pilatus_gap_mask()
    assert (frame[~gaps] == -1).all()
    assert np.all((frame[195:212] == -1))  # first horizontal gap: 17 rows
    assert np.all((frame[:, 487:494] == -1))  # first vertical gap: 7 columns
    np.testing.assert_array_equal(frame, xcca.datasets.pilatus6m(0))
    assert not np.array_equal(frame, xcca.datasets.pilatus6m(1))
    frame2 = xcca.datasets.pilatus6m()
    frame2[0, 0] = 5  # a fresh, writeable copy each time
    assert xcca.datasets.pilatus6m()[0, 0] == frame[0, 0]


def test_pilatus_thumbnail(frame):
    before = frame.copy()
    rgb = xcca.make_thumbnail(frame)
    np.testing.assert_array_equal(frame, before)
    assert rgb.dtype == np.uint8 and rgb.shape == (300, round(2463 * 300 / 2527), 3)
    masked = np.all(rgb == MASKED, axis=2)
    # Rows made only of the 17-pixel horizontal gaps are masked; most of the image is not.
    assert masked.any(axis=1).sum() >= 11
    assert 0.01 < masked.mean() < 0.2
    # Bragg spots survive binning: dark (gray_r) pixels exist, most valid pixels are light background.
    grey = rgb[~masked][:, 0]
    assert (grey < 40).sum() >= 50
    assert np.median(grey) > 80


@given(st.integers(1, 400), st.integers(1, 400), st.integers(1, 320))
def test_longest_side_is_size(h, w, size):
    img = np.arange(h * w, dtype=np.float32).reshape(h, w)
    rgb = xcca.make_thumbnail(img, size=size)
    assert max(rgb.shape[:2]) == size
    assert rgb.shape[2] == 3
    assert min(rgb.shape[:2]) == max(1, round(min(h, w) * size / max(h, w)))


def test_single_hot_pixel_survives_max_but_masked_never_wins():
    img = np.zeros((2000, 1500), np.int32)
    img[1234, 567] = 10_000
    img[100, 100] = 1_000_000
    mask = np.ones(img.shape, bool)
    mask[100, 100] = False
    for mode in ("max", "sum"):
        rgb = xcca.make_thumbnail(img, size=200, mode=mode, mask=mask, scale="linear", percentiles=(0, 100))
        y, x = 1234 * 200 // 2000, 567 * 200 // 2000
        assert rgb[y, x, 0] == 0  # full scale = black in gray_r
        assert (rgb[:, :, 0] == 0).sum() == 1
        assert rgb[10, 10, 0] == 255  # the masked 1e6 pixel did not win its block


def test_masked_colour_and_nan():
    img = np.ones((90, 90), np.float64)
    img[:30] = -1  # Pilatus gap value -> masked by default
    img[60:, :] = np.nan  # NaN always masked
    rgb = xcca.make_thumbnail(img, size=90)
    assert np.all(rgb[:30] == MASKED) and np.all(rgb[60:] == MASKED)
    assert not np.any(np.all(rgb[30:60] == MASKED, axis=2))
    rgb = xcca.make_thumbnail(img, size=90, mask=np.ones(img.shape, bool), masked_color=(255, 0, 0))
    assert not np.any(np.all(rgb[:30] == (255, 0, 0), axis=2)) and np.all(rgb[60:] == (255, 0, 0))


def test_all_masked_image():
    rgb = xcca.make_thumbnail(np.full((50, 40), -1, np.int32), size=25)
    assert rgb.shape == (25, 20, 3) and np.all(rgb == MASKED)


@pytest.mark.parametrize("scale", ["log", "asinh", "linear"])
@pytest.mark.parametrize("mode", ["max", "sum"])
@pytest.mark.parametrize("dilate", [None, 1, 6])
def test_options_give_monotone_grey(scale, mode, dilate):
    # A smooth ramp: larger values are never lighter (gray_r) along it.
    img = np.tile(np.arange(1000, dtype=np.float32) ** 2, (40, 1))
    rgb = xcca.make_thumbnail(img, size=100, mode=mode, scale=scale, dilate=dilate, percentiles=(0, 100))
    row = rgb[2, :, 0].astype(int)
    assert np.all(np.diff(row) <= 0) and row[0] > row[-1]


def test_dilate_grows_spots():
    img = np.zeros((1000, 1000), np.uint16)
    img[500, 500] = 1000
    plain = xcca.make_thumbnail(img, size=100, percentiles=(0, 100))
    grown = xcca.make_thumbnail(img, size=100, dilate=40, percentiles=(0, 100))
    assert (plain[:, :, 0] < 128).sum() == 1
    assert (grown[:, :, 0] < 128).sum() >= 9


def test_big_endian_and_non_contiguous(frame):
    small = frame[::4, ::4]
    expect = xcca.make_thumbnail(np.ascontiguousarray(small), size=150)
    np.testing.assert_array_equal(xcca.make_thumbnail(small, size=150), expect)
    np.testing.assert_array_equal(xcca.make_thumbnail(small.astype(">i4"), size=150), expect)


def test_real_data(data_dir):
    img = np.load(data_dir / "test_img.npy")
    mask = np.load(data_dir / "test_mask.npy")
    rgb = xcca.make_thumbnail(img, size=150, mask=mask)
    assert rgb.shape == (150, 150, 3)
    masked = np.all(rgb == MASKED, axis=2)
    # A thumbnail pixel covers 2x2 pixels: it is masked exactly when all of them are.
    np.testing.assert_array_equal(masked, ~mask.reshape(150, 2, 150, 2).any(axis=(1, 3)))


def test_matplotlib_cmap():
    pytest.importorskip("matplotlib")
    rgb = xcca.make_thumbnail(np.arange(100.0).reshape(10, 10), size=10, cmap="viridis", scale="linear")
    assert rgb.shape == (10, 10, 3) and len(np.unique(rgb.reshape(-1, 3), axis=0)) > 10


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(size=0), ValueError, "size"),
    (dict(size=2.5), TypeError, "size"),
    (dict(mode="mean"), ValueError, "mode"),
    (dict(scale="sqrt"), ValueError, "scale"),
    (dict(dilate=0), ValueError, "dilate"),
    (dict(mask=np.ones((3, 3), bool)), ValueError, "mask"),
    (dict(percentiles=(90, 10)), ValueError, "percentiles"),
    (dict(masked_color=(1, 2)), ValueError, "masked_color"),
    (dict(cmap="no-such-map"), ValueError, "cmap"),
])
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        xcca.make_thumbnail(np.ones((20, 30), np.float32), **kwargs)


@pytest.mark.parametrize("image, exc", [
    (np.ones(5), ValueError),
    (np.ones((2, 3, 4, 5), np.float32), ValueError),
    (np.ones((0, 3), np.float32), ValueError),
    (np.ones((3, 3), complex), TypeError),
])
def test_bad_images(image, exc):
    with pytest.raises(exc, match="image"):
        xcca.make_thumbnail(image)


def test_stack_gives_one_thumbnail_per_frame():
    rng = np.random.default_rng(7)
    stack = rng.integers(-1, 100, (3, 60, 40)).astype(np.int32)
    rgb = xcca.make_thumbnail(stack, size=30)
    assert rgb.shape == (3, 30, 20, 3)
    for i in range(3):
        np.testing.assert_array_equal(rgb[i], xcca.make_thumbnail(stack[i], size=30))


def test_write_png(tmp_path):
    from PIL import Image

    rgb = xcca.make_thumbnail(np.arange(1200, dtype=np.float32).reshape(30, 40), size=40)
    xcca.thumbnail.write_png(rgb, tmp_path / "t.png")
    with Image.open(tmp_path / "t.png") as im:
        np.testing.assert_array_equal(np.asarray(im), rgb)
    with pytest.raises(ValueError, match="rgb"):
        xcca.thumbnail.write_png(rgb[..., 0], tmp_path / "u.png")
