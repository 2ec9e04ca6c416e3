"""xcca.loki.is_outlier on numpy.ma.MaskedArray follows LOKI's result (issue 10, section 5)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import xcca
from xcca import loki


def _loki_is_outlier(points, thresh=3.5):
    """LOKI's postproc_helper.is_outlier, Python 3, run on whatever it is given (masked arrays included)."""
    if len(points.shape) == 1:
        points = points[:, None]
    median = np.median(points, axis=0)
    diff = np.sqrt(np.sum((points - median) ** 2, axis=-1))
    mad = np.median(diff)
    return 0.6745 * diff / mad > thresh


def _loki(points, thresh=3.5):
    """LOKI's result as a script sees it (a masked result read as data), and where it is defined (not masked)."""
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")
        r = _loki_is_outlier(points, thresh)
    # entries LOKI's result leaves masked carry arbitrary data; a script reading them gets no defined answer
    return np.asarray(r), ~np.ma.getmaskarray(r)


def test_issue_example():
    x = np.ma.masked_equal([0, 0, 0, 10, 11, 12, 10, 11, 13, 50.0], 0)
    expected = np.zeros(10, bool)
    expected[-1] = True
    np.testing.assert_array_equal(_loki(x)[0], expected)
    np.testing.assert_array_equal(loki.is_outlier(x), expected)
    # the plain xcca function excludes masked samples from median and MAD: the same flag here
    np.testing.assert_array_equal(xcca.is_outlier(x), expected)
    # without the mask the zeros are data (and outliers)
    assert loki.is_outlier(x.data)[:3].all()


@given(st.integers(0, 2**32 - 1), st.integers(5, 60), st.sampled_from([1.0, 2.0, 3.5]), st.sampled_from([1, 2]))
def test_masked_matches_loki(seed, k, thresh, d):
    rng = np.random.default_rng(seed)
    data = rng.normal(10, 1, (k, d)) if d > 1 else rng.normal(10, 1, k)
    data[rng.random(data.shape[0]) < 0.1] += 20  # some outliers
    mask = rng.random(data.shape) < rng.uniform(0, 0.45)
    if d == 1:
        data[mask] = rng.choice([0.0, 5.0, 100.0])  # masked samples carry arbitrary values
    x = np.ma.masked_array(data, mask=mask)
    ref, defined = _loki(x, thresh)
    ours = loki.is_outlier(x, thresh)
    assert ours.dtype == bool and ours.shape == (k,)
    assert not ours[np.ma.getmaskarray(x).reshape(k, -1).all(axis=1)].any()
    dev = np.sqrt(np.where(mask, 0, (data.reshape(k, -1) - np.median(data.reshape(k, -1), 0)) ** 2).sum(1))
    if np.median(dev) > 0:
        np.testing.assert_array_equal(ours[defined], ref[defined])


def test_bad_thresh():
    with pytest.raises(ValueError, match="thresh"):
        loki.is_outlier(np.arange(5.0), np.nan)


def test_tutorial_image_counts(data_dir):
    """The tutorial's per-ring outlier removal on masked polar rings: xcca.loki flags what LOKI flags."""
    img = np.load(data_dir / "test_img.npy")
    mask = np.load(data_dir / "test_mask.npy")
    (xc, yc, _), _, _ = loki.RingFit(img * mask).fit_circle((152, 151, 52), ring_width=10)
    interp = loki.InterpSimple(xc, yc, 140, 10, 720, img.shape)
    polar = interp.nearest(img).astype(np.float64)
    pmask = interp.nearest(mask.astype(np.float64))
    rings = np.ma.masked_equal(polar * pmask, 0)
    n_loki = n_ours = n_plain = 0
    for ring in rings:
        ref, defined = _loki(ring)
        ours = loki.is_outlier(ring)
        np.testing.assert_array_equal(ours[defined], ref[defined])
        assert not ref[~defined].any()
        n_loki += int(ref.sum())
        n_ours += int(ours.sum())
        n_plain += int(xcca.is_outlier(ring.data).sum())  # what ignoring the mask gives
    assert n_ours == n_loki
    assert n_plain > 3 * n_loki  # the issue's bug: masked zeros flagged
