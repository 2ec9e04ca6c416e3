"""xcca.loki.InterpSimple reproduces LOKI's nearest-neighbour polar images, and refuses to wrap around edges."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

from xcca.loki import InterpSimple


def loki_indices(a, b, qRmax, qRmin, nphi, shape):
    """LOKI's InterpSimple index formula, written out from its documented behaviour."""
    phis = np.arange(nphi) * 2 * np.pi / nphi
    q = np.arange(qRmin, qRmax).astype(np.float64)[:, None]
    x = q * np.cos(phis - np.pi) + a
    y = q * np.sin(phis - np.pi) + b
    xn = np.trunc(x).astype(int) + np.round(x - np.floor(x)).astype(int)
    yn = np.trunc(y).astype(int) + np.round(y - np.floor(y)).astype(int)
    return xn, yn


@given(st.integers(20, 60), st.integers(20, 60), st.floats(0.3, 0.7), st.floats(0.3, 0.7), st.integers(0, 5),
       st.integers(1, 12), st.integers(1, 90), st.sampled_from(["float32", "float64", "uint16", "int32"]))
def test_matches_loki_formula(h, w, fa, fb, qmin, nq, nphi, dtype):
    a, b = fa * w, fb * h
    qmax = qmin + nq
    xn, yn = loki_indices(a, b, qmax, qmin, nphi, (h, w))
    img = (np.random.default_rng(h * w).random((h, w)) * 1000).astype(dtype)
    ok = (xn >= 0).all() and (xn < w).all() and (yn >= 0).all() and (yn < h).all()
    if not ok:
        with pytest.raises(ValueError, match="wrap"):
            InterpSimple(a, b, qmax, qmin, nphi, (h, w))
        return
    interp = InterpSimple(a, b, qmax, qmin, nphi, (h, w))
    polar = interp.nearest(img)
    assert polar.dtype == img.dtype and polar.shape == (nq, nphi)
    np.testing.assert_array_equal(polar, img[yn, xn])
    np.testing.assert_array_equal(interp.indices_1d, w * yn + xn)


def test_real_image(data_dir):
    img = np.load(data_dir / "test_img.npy")
    h, w = img.shape
    interp = InterpSimple(w / 2, h / 2, 140, 20, 720, img.shape)
    xn, yn = loki_indices(w / 2, h / 2, 140, 20, 720, img.shape)
    polar = interp.nearest(img)
    np.testing.assert_array_equal(polar, img[yn, xn])
    assert polar.dtype == np.float32 and polar.shape == (120, 720)


def test_wrap_raises_and_bad_input():
    with pytest.raises(ValueError, match="wrap"):
        InterpSimple(10, 10, 15, 0, 64, (30, 30))  # radius 14 from (10, 10) leaves the image
    with pytest.raises(ValueError, match="nphi"):
        InterpSimple(10, 10, 5, 0, 0, (30, 30))
    with pytest.raises(ValueError, match="a"):
        InterpSimple(np.nan, 10, 5, 0, 8, (30, 30))
    with pytest.raises(ValueError, match="radii"):
        InterpSimple(10, 10, 5, 5, 8, (30, 30))
    interp = InterpSimple(10, 10, 5, 0, 8, (30, 30))
    with pytest.raises(ValueError, match="shape"):
        interp.nearest(np.zeros((30, 31)))
