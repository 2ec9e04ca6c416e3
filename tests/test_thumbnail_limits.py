"""The thumbnail's colour limits: one sort plus NumPy's 'linear' rule, bit-identical to np.percentile."""
import numpy as np
import pytest

import xcca
from xcca import thumbnail as th


def _bits(a):
    return np.asarray(a, np.float64).view(np.int64)


@pytest.mark.parametrize("kind", ["normal", "small_ints", "gamma", "with_inf", "constant"])
def test_percentiles_equal_numpy(kind):
    rng = np.random.default_rng(hash(kind) % 2**32)
    for trial in range(300):
        n = int(rng.integers(1, 3000))
        if kind == "normal":
            x = rng.normal(size=n)
        elif kind == "small_ints":
            x = rng.integers(0, 20, n).astype(np.float64)
        elif kind == "gamma":
            x = rng.gamma(1.5, 100.0, n)
        elif kind == "with_inf":
            x = np.concatenate([rng.integers(0, 5, n).astype(np.float64), [np.inf] * int(rng.integers(1, 3))])
        else:
            x = np.full(n, 7.0)
        q = tuple(sorted(rng.uniform(0, 100, 2)))
        q = [(0.0, 100.0), (1.0, 99.9), (50.0, 50.0), q][trial % 4]
        qq = (q[0], 50.0, q[1])
        with np.errstate(invalid="ignore"):
            want = np.percentile(x, qq)
        got = th._percentiles(x.copy(), qq)
        assert np.array_equal(_bits(got), _bits(want)), (kind, n, qq, got, want)


def test_percentiles_nan_falls_back():
    x = np.array([1.0, np.nan, 3.0])
    with np.errstate(invalid="ignore"):
        assert np.isnan(th._percentiles(x.copy(), (1.0, 50.0, 99.9))).all()


def _old_percentiles(values, q):
    return np.percentile(values, q)


def _frames():
    rng = np.random.default_rng(5)
    full = xcca.datasets.pilatus6m()
    small = rng.poisson(8.0, (517, 491)).astype(np.int32)
    small[::97, :] = -1                      # module-gap rows
    small[:, 200:207] = -1                   # a vertical gap
    small[rng.random(small.shape) < 0.002] = -2   # bad pixels
    small[rng.random(small.shape) < 0.0005] = 100000  # Bragg spots
    return [full, small, small.astype(np.float32)]


@pytest.mark.parametrize("kw", [dict(), dict(mode="sum"), dict(dilate=3), dict(scale="linear"),
                                dict(scale="asinh", percentiles=(5.0, 99.0)), dict(size=64), dict(size=800),
                                dict(mask="given")])
def test_thumbnail_identical_to_np_percentile_path(monkeypatch, kw):
    kw = dict(kw)
    for img in _frames():
        if kw.get("mask") is not None:
            kw["mask"] = (img >= 0) & (np.arange(img.shape[1]) % 50 != 3)
        new = xcca.make_thumbnail(img, **kw)
        with monkeypatch.context() as m:
            m.setattr(th, "_percentiles", _old_percentiles)
            old = xcca.make_thumbnail(img, **kw)
        assert new.dtype == np.uint8 and np.array_equal(new, old)
