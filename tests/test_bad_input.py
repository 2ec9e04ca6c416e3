"""Bad input across the public API (issue 10, section 4): a clear exception naming the argument or file, or a
documented result -- never a crash, a hang, silent garbage or a modified input.

The module is a set of tables. To cover a new public function, add an entry to the tables it belongs in:

- ``CALLS``: name -> a function ``(**overrides) -> result`` making a valid call; ``ARRAY_ARG`` names its main
  array argument (the one the generic classes -- 0-D, complex, big-endian, read-only, non-contiguous -- replace).
- ``THREADED``: names in CALLS that take ``n_threads``.
- ``OUT``: name -> (call with out=, the input that out is made to overlap).
- ``FLOAT32_KEEPS``: names whose float32 input gives float32 output.
- ``REFUSED``: explicit (call, exception, regex) cases: the regex must name the argument.
"""
from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pytest

import xcca
import xcca.files
from xcca.io import read_image

rng = np.random.default_rng(10)
IMG = rng.random((24, 30)).astype(np.float32) * 100
RINGS = rng.random((4, 3, 32)).astype(np.float32)
RINGS2 = RINGS.reshape(12, 32)
_yy, _xx = np.mgrid[0:24, 0:30]
RING_IMG = (100 * np.exp(-((np.hypot(_xx - 14.0, _yy - 11.0) - 6.0) ** 2) / 0.8) + IMG * 0.01).astype(np.float32)
GRID = xcca.PolarGrid((14.0, 11.0), np.arange(1.0, 9.0), 32, IMG.shape)
PAIRS = np.array([[0, 1], [2, 3]])


def _arg(kw, name, default):
    return kw.pop(name, default)


# name -> callable(**overrides): a valid call of a public function; the main array is passed as ARRAY_ARG[name].
CALLS = {
    "PolarGrid.remap": lambda **kw: GRID.remap(_arg(kw, "images", IMG), **kw),
    "PolarGrid.radial_profile": lambda **kw: GRID.radial_profile(_arg(kw, "polar", GRID.remap(IMG)[0]),
                                                                  np.ones((8, 32), bool), **kw),
    "fill_masked": lambda **kw: xcca.fill_masked(_arg(kw, "polar", GRID.remap(IMG)[0]), np.eye(8, 32, dtype=bool),
                                                 **kw),
    "autocorrelate": lambda **kw: xcca.autocorrelate(_arg(kw, "rings", RINGS), **kw),
    "cross_correlate": lambda **kw: xcca.cross_correlate(_arg(kw, "rings", RINGS), **kw),
    "difference_correlation": lambda **kw: xcca.difference_correlation(_arg(kw, "rings", RINGS), PAIRS, **kw),
    "resample_cos_psi": lambda **kw: xcca.resample_cos_psi(_arg(kw, "corr", RINGS[0]), [1.0, 1.5, 2.0], 1.0, **kw),
    "fit_periodic": lambda **kw: xcca.fit_periodic(_arg(kw, "rings", RINGS2 + 1), deg=_arg(kw, "deg", 4), **kw),
    "remove_peaks": lambda **kw: xcca.remove_peaks(_arg(kw, "rings", RINGS2 + 1), **kw),
    "is_outlier": lambda **kw: xcca.is_outlier(_arg(kw, "points", RINGS2[0]), **kw),
    "pair_shots": lambda **kw: xcca.pair_shots(_arg(kw, "features", RINGS2), **kw),
    "bin_max": lambda **kw: xcca.bin_max(_arg(kw, "image", IMG), 4, **kw),
    "bin_sum": lambda **kw: xcca.bin_sum(_arg(kw, "image", IMG), 4, **kw),
    "dilate_max": lambda **kw: xcca.dilate_max(_arg(kw, "image", IMG), 3, **kw),
    "make_thumbnail": lambda **kw: xcca.make_thumbnail(_arg(kw, "image", IMG), size=_arg(kw, "size", 16), **kw),
    "fit_ring": lambda **kw: xcca.fit_ring(_arg(kw, "image", RING_IMG), (14.0, 11.0, 6.0), width=4, **kw),
}
ARRAY_ARG = {
    "PolarGrid.remap": "images", "PolarGrid.radial_profile": "polar", "fill_masked": "polar",
    "autocorrelate": "rings", "cross_correlate": "rings", "difference_correlation": "rings",
    "resample_cos_psi": "corr", "fit_periodic": "rings", "remove_peaks": "rings", "is_outlier": "points",
    "pair_shots": "features", "bin_max": "image", "bin_sum": "image", "dilate_max": "image",
    "make_thumbnail": "image", "fit_ring": "image",
}
THREADED = ["PolarGrid.remap", "autocorrelate", "cross_correlate", "difference_correlation", "fit_periodic",
            "pair_shots", "bin_max", "bin_sum", "dilate_max", "make_thumbnail"]
FLOAT32_KEEPS = {  # name -> function(result) -> the float array whose dtype must stay float32
    "PolarGrid.remap": lambda r: r[0], "PolarGrid.radial_profile": lambda r: r, "fill_masked": lambda r: r,
    "autocorrelate": lambda r: r, "cross_correlate": lambda r: r, "difference_correlation": lambda r: r,
    "fit_periodic": lambda r: r.curves, "remove_peaks": lambda r: r[0], "bin_max": lambda r: r,
    "dilate_max": lambda r: r,
}


def _out_remap():
    buf = np.zeros((2, 24, 32), np.float32)  # out (8, 32) is made to lie inside the image's memory
    img = buf.reshape(-1)[: 24 * 30].reshape(24, 30)
    img[...] = IMG
    return lambda: GRID.remap(img, out=buf.reshape(-1)[:256].reshape(8, 32))


def _out_corr(fn, *args, **kw):
    def call():
        x = RINGS.copy()
        out_shape = fn(x, *args, **kw).shape
        out = x.reshape(-1)[: int(np.prod(out_shape))].reshape(out_shape)
        return fn(x, *args, out=out, **kw)
    return call


def _out_bin(fn, *args):
    def call():
        x = np.zeros((8, 8), np.float64)
        # dilate_max: out is the image itself; binning: out (2, 2) is the image's first four pixels
        out = x if fn is xcca.dilate_max else x.reshape(-1)[:4].reshape(2, 2)
        return fn(x, *args, out=out)
    return call


OUT = {
    "PolarGrid.remap": _out_remap(),
    "autocorrelate": _out_corr(xcca.autocorrelate),
    "cross_correlate": _out_corr(xcca.cross_correlate, average=True),
    "difference_correlation": _out_corr(xcca.difference_correlation, PAIRS),
    "bin_max": _out_bin(xcca.bin_max, 4),
    "bin_sum": _out_bin(xcca.bin_sum, 4),
    "dilate_max": _out_bin(xcca.dilate_max, 3),
}


# ---- public names that landed later: xcca.Geometry / GeometryPolarGrid, RunCorrelator, Legendre, xcca.files
GEOM = xcca.Geometry.from_beam((14.0, 11.0), 0.1, 1e-4, wavelength=1e-10, shape=IMG.shape)
GEOM_TILT = GEOM.replace(rot1=0.01, rot2=-0.005)  # tilted: the conic engine instead of PolarGrid
_QMAX = GEOM.q_range()[1]
GGRID = GEOM.polar_grid(np.linspace(0.1, 0.5, 6) * _QMAX, 32)
GGRID_TILT = GEOM_TILT.polar_grid(np.linspace(0.1, 0.4, 6) * _QMAX, 32)
assert GGRID.engine == "polar" and GGRID_TILT.engine == "conic"
LQ = np.array([1.0, 1.5, 2.0])
LL = np.arange(0, 7, 2)
LB = rng.random((4, 3, 3))
LB = LB + LB.transpose(0, 2, 1)
LCORR = RINGS[0].astype(np.float64)  # (npairs=3, nphi=32), q per pair


def _runcorr(method, **kw):
    rc = xcca.RunCorrelator(3, 32, n_threads=kw.pop("n_threads", None))
    rings = _arg(kw, "rings", RINGS)
    if method == "add":
        rc.add(rings, **kw)
    else:
        rc.add_differences(rings, PAIRS, **kw)
    return rc.result()


CALLS.update({
    "GeometryPolarGrid.remap": lambda **kw: GGRID.remap(_arg(kw, "images", IMG), **kw),
    "GeometryPolarGrid.remap[conic]": lambda **kw: GGRID_TILT.remap(_arg(kw, "images", IMG), **kw),
    "RunCorrelator.add": lambda **kw: _runcorr("add", **kw),
    "RunCorrelator.add_differences": lambda **kw: _runcorr("add_differences", **kw),
    "legendre_decompose": lambda **kw: xcca.legendre_decompose(_arg(kw, "corr", LCORR), LQ, 1.0, l_max=6, **kw),
    "legendre_synthesize": lambda **kw: xcca.legendre_synthesize(_arg(kw, "B", LB), LL, LQ, 1.0, 32, **kw),
})
ARRAY_ARG.update({"GeometryPolarGrid.remap": "images", "GeometryPolarGrid.remap[conic]": "images",
                  "RunCorrelator.add": "rings", "RunCorrelator.add_differences": "rings",
                  "legendre_decompose": "corr", "legendre_synthesize": "B"})
THREADED += ["GeometryPolarGrid.remap", "GeometryPolarGrid.remap[conic]", "RunCorrelator.add",
             "RunCorrelator.add_differences"]
FLOAT32_KEEPS.update({"GeometryPolarGrid.remap": lambda r: r[0], "GeometryPolarGrid.remap[conic]": lambda r: r[0]})
# main array of each name for the generic classes (complex, read-only, strided, big-endian)
SRC = {"RunCorrelator.add": RINGS, "RunCorrelator.add_differences": RINGS, "legendre_decompose": LCORR,
       "legendre_synthesize": LB, "GeometryPolarGrid.remap": IMG, "GeometryPolarGrid.remap[conic]": IMG}


def _out_geom(grid):
    def call():
        buf = np.zeros(2 * 24 * 32, np.float32)  # out (6, 32) lies inside the image's memory
        img = buf[: 24 * 30].reshape(24, 30)
        img[...] = IMG
        return grid.remap(img, out=buf[:192].reshape(6, 32))
    return call


OUT.update({"GeometryPolarGrid.remap": _out_geom(GGRID), "GeometryPolarGrid.remap[conic]": _out_geom(GGRID_TILT)})


# ------------------------------------------------------------------------------------------ generic classes

@pytest.mark.parametrize("name", sorted(CALLS))
def test_valid_call_works(name):
    CALLS[name]()


@pytest.mark.parametrize("name", sorted(CALLS))
def test_zero_dim_input_refused(name):
    with pytest.raises((ValueError, TypeError), match=ARRAY_ARG[name]):
        CALLS[name](**{ARRAY_ARG[name]: np.float32(1.0)})


@pytest.mark.parametrize("name", sorted(CALLS))
def test_complex_input_refused(name):
    base = {"PolarGrid.remap": IMG, "autocorrelate": RINGS, "cross_correlate": RINGS,
            "difference_correlation": RINGS, "resample_cos_psi": RINGS[0]}.get(name)
    base = SRC.get(name, base)
    arr = (IMG if ARRAY_ARG[name] == "image" else RINGS2 if base is None else base).astype(np.complex64)
    if name in ("PolarGrid.radial_profile", "fill_masked"):
        arr = np.ones((8, 32), np.complex64)
    with pytest.raises(TypeError, match=f"{ARRAY_ARG[name]}|dtype"):
        CALLS[name](**{ARRAY_ARG[name]: arr})


@pytest.mark.parametrize("name", sorted(CALLS))
def test_read_only_and_non_contiguous_inputs(name):
    """Read-only and strided inputs are accepted, never modified, and give the contiguous result."""
    default = CALLS[name]()
    key = ARRAY_ARG[name]
    src = {"image": RING_IMG if name == "fit_ring" else IMG, "images": IMG, "rings": RINGS2 + 1 if name in ("fit_periodic", "remove_peaks") else RINGS,
           "points": RINGS2[0], "features": RINGS2, "corr": RINGS[0],
           "polar": GRID.remap(IMG)[0]}[key] if name not in SRC else SRC[name]
    ro = src.copy()
    ro.setflags(write=False)
    strided = np.repeat(src, 2, axis=-1)[..., ::2]
    assert not strided.flags.c_contiguous
    for arr in (ro, strided):
        before = arr.copy()
        got = CALLS[name](**{key: arr})
        np.testing.assert_array_equal(arr, before)
        _assert_same(got, default)


def _assert_same(a, b):
    if isinstance(a, tuple):
        for x, y in zip(a, b):
            _assert_same(x, y)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    elif hasattr(a, "coef"):
        np.testing.assert_array_equal(a.coef, b.coef)
    elif hasattr(a, "pairs"):
        np.testing.assert_array_equal(a.pairs, b.pairs)
    elif hasattr(a, "center"):
        assert a.center == b.center
    elif hasattr(a, "correlation"):  # RunCorrelation
        np.testing.assert_array_equal(a.correlation, b.correlation)
        np.testing.assert_array_equal(a.counts, b.counts)
    elif hasattr(a, "B"):  # LegendreResult
        np.testing.assert_array_equal(a.B, b.B)
    else:
        raise AssertionError(f"no comparison for {type(a).__name__}")


@pytest.mark.parametrize("name", sorted(FLOAT32_KEEPS))
def test_big_endian_float32_stays_float32(name):
    key = ARRAY_ARG[name]
    src = np.asarray(CALLS["PolarGrid.remap"]()[0]) if key == "polar" else {
        "image": IMG, "images": IMG, "rings": RINGS2 + 1 if name in ("fit_periodic", "remove_peaks") else RINGS}[key]
    be = src.astype(">f4")
    got = FLOAT32_KEEPS[name](CALLS[name](**{key: be}))
    assert got.dtype == np.float32, f"{name}: big-endian float32 gave {got.dtype}"
    np.testing.assert_array_equal(got, FLOAT32_KEEPS[name](CALLS[name](**{key: src})))


@pytest.mark.parametrize("name", THREADED)
@pytest.mark.parametrize("value, exc", [(True, TypeError), (np.True_, TypeError), (2.5, TypeError),
                                        (2.0, TypeError), ("2", TypeError), (0, ValueError), (-1, ValueError),
                                        (2**31, ValueError), (2**64, ValueError)])
def test_n_threads_refused(name, value, exc):
    with pytest.raises(exc, match="n_threads"):
        CALLS[name](n_threads=value)


@pytest.mark.parametrize("name", THREADED)
def test_n_threads_huge_is_capped_not_an_abort(name):
    """10**6 threads used to start one OS thread per chunk (and abort when creation failed); now capped at the
    usable cores, bit-identical to one thread."""
    _assert_same(CALLS[name](n_threads=10**6), CALLS[name](n_threads=1))
    _assert_same(CALLS[name](n_threads=np.int64(3)), CALLS[name](n_threads=1))


def test_core_n_threads_rule_matches():
    # The compiled entry points apply the same rule (a raw pybind11 cast error before).
    for value, exc in ((True, TypeError), (2.5, TypeError), ("2", TypeError), (2**64, ValueError),
                       (2**31, ValueError), (0, ValueError)):
        with pytest.raises(exc, match="n_threads"):
            xcca._core.pair_features(np.zeros((4, 2)), "loki", value)


@pytest.mark.parametrize("name", sorted(OUT))
def test_out_overlapping_input_refused(name):
    with pytest.raises(ValueError, match="out overlaps"):
        OUT[name]()


def test_out_overlap_examples_from_the_issue():
    x = np.ascontiguousarray(np.tile(IMG[:8, :8], (1, 4))[:, :32]).astype(np.float32)  # (8, 32) = one polar frame
    g = xcca.PolarGrid((3.5, 3.5), np.arange(8.0), 32, (8, 32))
    with pytest.raises(ValueError, match="out overlaps the input images"):
        g.remap(x, out=x)
    r = RINGS.copy()
    with pytest.raises(ValueError, match="out overlaps the input rings"):
        xcca.difference_correlation(r, PAIRS, average=False, out=r[:2])
    # a separate array is fine, and equal to out=None
    o = np.empty((3, 32), np.float32)
    np.testing.assert_array_equal(xcca.difference_correlation(r, PAIRS, out=o), xcca.difference_correlation(r, PAIRS))


# ------------------------------------------------------------------------------------------ explicit cases

REFUSED = [
    # silent results before
    (lambda: xcca.PolarGrid((5, 5), (180, 110), 8, (10, 10)), ValueError, "radii"),
    (lambda: xcca.PolarGrid((5, 5), (5, 5), 8, (10, 10)), ValueError, "radii"),
    (lambda: xcca.PolarGrid((5, 5), [], 8, (10, 10)), ValueError, "radii"),
    (lambda: xcca.autocorrelate(np.float32(1)), ValueError, "rings"),
    (lambda: xcca.autocorrelate(np.zeros((0, 3, 8)), average=True), ValueError, "0 shots"),
    (lambda: xcca.cross_correlate(np.zeros((0, 3, 8)), average=True), ValueError, "0 shots"),
    (lambda: GRID.remap(IMG, fill=1e300), ValueError, "fill"),
    (lambda: GRID.remap(IMG, fill="0"), TypeError, "fill"),
    (lambda: xcca.fill_masked(np.ones((2, 4), np.float32), np.eye(2, 4, dtype=bool), 1e300), ValueError, "value"),
    (lambda: xcca.bin_max(IMG, 4, fill=1e300), ValueError, "fill"),
    (lambda: xcca.bin_max(IMG.astype(np.int16), 4, fill=70000), ValueError, "fill"),
    (lambda: xcca.dilate_max(IMG, 3, IMG > 50, fill=-1e39), ValueError, "fill"),
    (lambda: xcca.cos_psi(2.5, 1.0, 1.0), TypeError, "n"),
    (lambda: xcca.cos_psi("8", 1.0, 1.0), TypeError, "n"),
    (lambda: xcca.cos_psi(True, 1.0, 1.0), TypeError, "n"),
    (lambda: xcca.cos_psi(8, 1.0 + 1j, 1.0), TypeError, "q"),
    (lambda: xcca.cos_psi(8, np.nan, 1.0), ValueError, "q"),
    (lambda: xcca.cos_psi(8, 1.0, np.inf), ValueError, "wavelength"),
    (lambda: xcca.resample_cos_psi(RINGS[0], 1.0, 1.0, grid=0), ValueError, "grid"),
    (lambda: xcca.resample_cos_psi(RINGS[0], 1.0, 1.0, grid=1), ValueError, "grid"),
    (lambda: xcca.resample_cos_psi(RINGS[0], 1.0, 1.0, grid=2.5), TypeError, "grid"),
    (lambda: xcca.resample_cos_psi(RINGS[0], 1.0, 1.0, grid=[0.0, np.nan]), ValueError, "grid"),
    (lambda: xcca.resample_cos_psi(RINGS[0].astype(complex), 1.0, 1.0), TypeError, "corr"),
    (lambda: xcca.is_outlier(RINGS2[0], np.nan), ValueError, "thresh"),
    (lambda: xcca.is_outlier(RINGS2[0], -1.0), ValueError, "thresh"),
    (lambda: xcca.is_outlier(RINGS2[0], "3"), TypeError, "thresh"),
    (lambda: xcca.remove_peaks(RINGS2, peak_thresh=np.inf), ValueError, "peak_thresh"),
    (lambda: xcca.remove_peaks(RINGS2, baseline=np.ones(32, complex)), TypeError, "baseline"),
    # hangs / huge before
    (lambda: xcca.fit_periodic(RINGS2, deg=10**6), ValueError, "deg"),
    (lambda: xcca.make_thumbnail(IMG, size=10**7), ValueError, "size"),
    (lambda: xcca.PolarGrid((5, 5), (0, 1e9), 360, (10, 10)), ValueError, "radii"),
    (lambda: xcca.PolarGrid((5, 5), (0, 10), 2**40, (10, 10)), ValueError, "nphi"),
    (lambda: xcca.PolarGrid((5, 5), (0, 2e5), 2**20, (10, 10)), ValueError, "radii.*nphi"),
    (lambda: xcca.resample_cos_psi(RINGS[0], 1.0, 1.0, grid=10**12), ValueError, "grid"),
    # masks
    (lambda: GRID.remap(IMG, mask=np.ones((3, 3), bool)), ValueError, "mask"),
    (lambda: xcca.autocorrelate(RINGS, np.ones((5, 32), bool)), ValueError, "mask"),
    (lambda: xcca.autocorrelate(RINGS, np.ones((3, 32), complex)), TypeError, "mask"),
    (lambda: xcca.fit_periodic(RINGS2, np.ones(31, bool)), ValueError, "mask"),
    (lambda: xcca.bin_max(IMG, 2, np.ones((2, 2), bool)), ValueError, "mask"),
]

_NAN_RINGS = np.where(RINGS > 0.9, np.nan, RINGS)
_TMPF = os.path.abspath(__file__)  # an existing file, as an "input" of the xcca.files helpers
REFUSED += [
    # xcca.Geometry: construction, per-pixel arrays, polar grids
    (lambda: xcca.Geometry.from_beam((np.nan, 1.0), 0.1, 1e-4), ValueError, "center"),
    (lambda: xcca.Geometry.from_beam((1.0,), 0.1, 1e-4), ValueError, "center"),
    (lambda: xcca.Geometry.from_beam((1j, 1.0), 0.1, 1e-4), TypeError, "center"),
    (lambda: xcca.Geometry.from_beam((1.0, 1.0), 0.0, 1e-4), ValueError, "dist"),
    (lambda: xcca.Geometry.from_beam((1.0, 1.0), np.inf, 1e-4), ValueError, "dist"),
    (lambda: xcca.Geometry.from_beam((1.0, 1.0), "0.1", 1e-4), TypeError, "dist"),
    (lambda: xcca.Geometry.from_beam((1.0, 1.0), 0.1, np.nan), ValueError, "pixel_size"),
    (lambda: xcca.Geometry.from_beam((1.0, 1.0), 0.1, (1e-4,)), ValueError, "pixel_size"),
    (lambda: xcca.Geometry.from_beam((1.0, 1.0), 0.1, 1e-4, wavelength=0.0), ValueError, "wavelength"),
    (lambda: xcca.Geometry.from_beam((1.0, 1.0), 0.1, 1e-4, wavelength=1j), TypeError, "wavelength"),
    (lambda: xcca.Geometry.from_beam((1.0, 1.0), 0.1, 1e-4, shape=(0, 3)), ValueError, "shape"),
    (lambda: xcca.Geometry.from_poni(_TMPF + ".missing.poni"), OSError, "missing.poni"),
    (lambda: xcca.Geometry.from_poni(5), TypeError, "path"),  # os.fspath's message before
    (lambda: xcca.Geometry.from_poni(os.path.dirname(_TMPF)), OSError, "PONI"),
    (lambda: GEOM.q_array((0, 5)), ValueError, "shape"),
    (lambda: GEOM.q_array((5,)), ValueError, "shape"),
    (lambda: GEOM.solid_angle((2.5, 3)), TypeError, "shape"),
    (lambda: GEOM.solid_angle((True, 3)), TypeError, "shape"),
    (lambda: GEOM.polarization("ab"), TypeError, "shape"),
    (lambda: GEOM.q_array((10**6, 10**6)), ValueError, "shape.*memory"),  # a numpy MemoryError before
    (lambda: GEOM.polarization(factor=np.nan), ValueError, "polarization_factor"),
    (lambda: GEOM.polarization(factor=2.0), ValueError, "polarization_factor"),
    (lambda: GEOM.polarization(factor="0.9"), TypeError, "polarization_factor"),
    (lambda: GEOM.polar_grid([], 32), ValueError, "q"),
    (lambda: GEOM.polar_grid(0.01, 32), ValueError, "q"),
    (lambda: GEOM.polar_grid([np.nan], 32), ValueError, "q"),
    (lambda: GEOM.polar_grid([np.inf], 32), ValueError, "q"),
    (lambda: GEOM.polar_grid([0.01j], 32), TypeError, "q"),
    (lambda: GEOM.polar_grid([-0.01], 32), ValueError, "q"),
    (lambda: GEOM.polar_grid([10 * _QMAX], 32), ValueError, "q.*reach"),
    (lambda: GEOM.polar_grid([0.2 * _QMAX], 0), ValueError, "nphi"),
    (lambda: GEOM.polar_grid([0.2 * _QMAX], 2.5), TypeError, "nphi"),
    (lambda: GEOM.polar_grid([0.2 * _QMAX], True), TypeError, "nphi"),
    (lambda: GEOM.polar_grid([0.2 * _QMAX], 2**40), ValueError, "nphi.*memory"),  # a numpy MemoryError before
    (lambda: GEOM.polar_grid([0.2 * _QMAX], 8, phi0=np.nan), ValueError, "phi0"),
    (lambda: GEOM.polar_grid([0.2 * _QMAX], 8, flat=np.ones((3, 3))), ValueError, "flat"),
    (lambda: GEOM.polar_grid([0.2 * _QMAX], 8, flat=np.ones(IMG.shape, complex)), TypeError, "flat"),
    (lambda: GEOM.polar_grid([0.2 * _QMAX], 8, dark=np.float32(1)), ValueError, "dark"),
    (lambda: GEOM.polar_grid([0.2 * _QMAX], 8, dark=np.ones((IMG.shape[0] + 1, IMG.shape[1]))), ValueError,
     "dark must have the image shape"),
    (lambda: GEOM.polar_grid([0.2 * _QMAX], 8, flat=np.zeros(IMG.shape)), ValueError, "flat= / dark= leave no valid"),
    (lambda: GEOM.polar_grid([0.2 * _QMAX], 8, flat=np.ones(IMG.shape, bool)), TypeError, "flat must be real"),
    (lambda: GEOM.polar_grid([0.2 * _QMAX], 8, dark=np.full(IMG.shape, np.nan)), ValueError, "no valid pixel"),
    (lambda: xcca.analyze(np.stack([IMG] * 2), geometry=GEOM, q=[0.3 * _QMAX], nphi=8, flat=np.ones((3, 3))),
     ValueError, "flat must have the frames' shape"),
    (lambda: xcca.analyze(np.stack([IMG] * 2), geometry=GEOM, q=[0.3 * _QMAX], nphi=8, dark="/nonexistent/d.npy"),
     OSError, "dark file not found"),
    (lambda: xcca.analyze(np.stack([IMG] * 2), center=(14.0, 11.0), qmin=1, qmax=5, nphi=8,
                          dark=np.zeros(IMG.shape)), ValueError, "flat= and dark= need geometry="),
    # GeometryPolarGrid.remap, both engines
    *[c for g in (GGRID, GGRID_TILT) for c in (
        (lambda g=g: g.remap(IMG[0]), ValueError, "images"),
        (lambda g=g: g.remap(IMG[None, None]), ValueError, "images"),
        (lambda g=g: g.remap(IMG, mask=np.ones((3, 3), bool)), ValueError, "mask"),
        (lambda g=g: g.remap(IMG, mask=np.ones(IMG.shape, complex)), TypeError, "mask"),
        (lambda g=g: g.remap(IMG, mask=np.full(IMG.shape, 0.5)), TypeError, "mask"),
        (lambda g=g: g.remap(IMG, fill=1e300), ValueError, "fill"),  # conic: inf before
        (lambda g=g: g.remap(IMG, fill="0"), TypeError, "fill"),  # conic: accepted before
        (lambda g=g: g.remap(IMG, method="cubic"), ValueError, "method"),
        (lambda g=g: g.remap(IMG, mask_mode="x"), ValueError, "mask_mode"),
        (lambda g=g: g.remap(IMG, out=np.empty((6, 32), np.float64)), TypeError, "out"),
        (lambda g=g: g.remap(IMG, out=np.empty((5, 32), np.float32)), ValueError, "out"),
    )],
    # RunCorrelator
    (lambda: xcca.RunCorrelator(0, 32), ValueError, "nq"),
    (lambda: xcca.RunCorrelator(3, 2.5), TypeError, "nphi"),  # a ValueError before
    (lambda: xcca.RunCorrelator(3, True), TypeError, "nphi"),
    (lambda: xcca.RunCorrelator(3, 32, blocks=0), ValueError, "blocks"),
    (lambda: xcca.RunCorrelator(3, 32, estimator="x"), ValueError, "estimator"),
    (lambda: xcca.RunCorrelator(3, 32, dtype=complex), TypeError, "dtype"),
    (lambda: xcca.RunCorrelator(3, 32, q_pairs=np.array([[0, 5]])), ValueError, "q_pairs"),
    (lambda: xcca.RunCorrelator(3, 32, q_pairs=np.array([[0.0, 1.0]])), TypeError, "q_pairs"),
    (lambda: xcca.RunCorrelator(3, 32, q=[1.0, 2.0]), ValueError, "q"),
    (lambda: xcca.RunCorrelator(3, 32, q=[np.nan, 1.0, 2.0]), ValueError, "q"),  # accepted before
    (lambda: xcca.RunCorrelator(3, 32, q=[-1.0, 1.0, 2.0]), ValueError, "q"),  # accepted before
    (lambda: xcca.RunCorrelator(3, 32, q=[1j, 1.0, 2.0]), TypeError, "q"),
    (lambda: xcca.RunCorrelator(3, 32, max_memory=-1), ValueError, "max_memory"),  # a MemoryError before
    (lambda: xcca.RunCorrelator(3, 32, max_memory=2.5), TypeError, "max_memory"),
    (lambda: xcca.RunCorrelator(3, 32).add(RINGS[0, 0]), ValueError, "rings"),
    (lambda: xcca.RunCorrelator(3, 32).add(RINGS[None]), ValueError, "rings"),
    (lambda: xcca.RunCorrelator(3, 32).add(RINGS[:, :, :16]), ValueError, "rings"),
    (lambda: xcca.RunCorrelator(3, 32).add(_NAN_RINGS), ValueError, "rings.*non-finite"),
    (lambda: xcca.RunCorrelator(3, 32).add(np.where(RINGS > 0.9, np.inf, RINGS)), ValueError, "rings.*non-finite"),
    (lambda: xcca.RunCorrelator(3, 32).add_differences(_NAN_RINGS, PAIRS), ValueError, "rings.*non-finite"),
    (lambda: xcca.RunCorrelator(3, 32).add(RINGS, mask=np.ones((5, 32), bool)), ValueError, "mask"),
    (lambda: xcca.RunCorrelator(3, 32).add(RINGS, mask=np.ones((3, 32), complex)), TypeError, "mask"),
    (lambda: xcca.RunCorrelator(3, 32).add(RINGS, mask=np.full((3, 32), 0.5)), ValueError, "mask"),
    (lambda: xcca.RunCorrelator(3, 32).add_differences(RINGS, [[0, 4]]), ValueError, "pairs"),
    (lambda: xcca.RunCorrelator(3, 32).add_differences(RINGS, [[-1, 0]]), ValueError, "pairs"),
    (lambda: xcca.RunCorrelator(3, 32).add_differences(RINGS, [[0.0, 1.0]]), TypeError, "pairs"),
    (lambda: xcca.RunCorrelator(3, 32).add_differences(RINGS, [0, 1]), ValueError, "pairs"),
    (lambda: xcca.RunCorrelator(3, 32).add_differences(RINGS, [[True, False]]), TypeError, "pairs"),
    (lambda: xcca.RunCorrelator(3, 32).add(RINGS).add_differences(RINGS, PAIRS), ValueError, "differences"),
    (lambda: xcca.RunCorrelator(3, 32).merge(5), TypeError, "RunCorrelator"),
    (lambda: xcca.RunCorrelator(3, 32).merge(xcca.RunCorrelator(4, 32)), ValueError, "nq"),
    (lambda: xcca.RunCorrelator(3, 32).merge(xcca.RunCorrelator(3, 16)), ValueError, "nphi"),
    (lambda: xcca.RunCorrelator(3, 32).merge(xcca.RunCorrelator(3, 32, dtype=np.float32)), ValueError, "dtype"),
    (lambda: xcca.RunCorrelator(3, 32).merge(xcca.RunCorrelator(3, 32, estimator="per_shot")), ValueError,
     "estimator"),
    (lambda: xcca.RunCorrelator(3, 32).add(RINGS).merge(xcca.RunCorrelator(3, 32).add_differences(RINGS, PAIRS)),
     ValueError, "differences"),
    # Legendre
    (lambda: xcca.legendre_decompose(LCORR[None, None], LQ, 1.0, l_max=6), ValueError, "corr"),
    (lambda: xcca.legendre_decompose(np.zeros((3, 0)), LQ, 1.0, l_max=6), ValueError, "corr"),
    (lambda: xcca.legendre_decompose(np.where(LCORR > 0.9, np.nan, LCORR), LQ, 1.0, l_max=6), ValueError, "corr"),
    (lambda: xcca.legendre_decompose(np.where(LCORR > 0.9, np.inf, LCORR), LQ, 1.0, l_max=6), ValueError, "corr"),
    (lambda: xcca.legendre_decompose(LCORR, [1.0, 2.0], 1.0, l_max=6), ValueError, "q"),
    (lambda: xcca.legendre_decompose(LCORR, [1.0, np.nan, 2.0], 1.0, l_max=6), ValueError, "q"),
    (lambda: xcca.legendre_decompose(LCORR, [1j, 1.0, 2.0], 1.0, l_max=6), TypeError, "q"),  # float() msg before
    (lambda: xcca.legendre_decompose(LCORR, "abc", 1.0, l_max=6), TypeError, "q"),  # float() msg before
    (lambda: xcca.legendre_decompose(LCORR, [-1.0, 1.0, 2.0], 1.0, l_max=6), ValueError, "q"),  # accepted before
    (lambda: xcca.legendre_decompose(LCORR, LQ, 0.0, l_max=6), ValueError, "wavelength"),
    (lambda: xcca.legendre_decompose(LCORR, LQ, np.nan, l_max=6), ValueError, "wavelength"),
    (lambda: xcca.legendre_decompose(LCORR, LQ, 1.0, l_max=-1), ValueError, "l_max"),
    (lambda: xcca.legendre_decompose(LCORR, LQ, 1.0, l_max=2.5), TypeError, "l_max"),
    (lambda: xcca.legendre_decompose(LCORR, LQ, 1.0, l_max=10**9), ValueError, "l_max"),
    (lambda: xcca.legendre_decompose(LCORR, LQ, 1.0, l_max=6, error=np.zeros_like(LCORR)), ValueError, "error"),
    (lambda: xcca.legendre_decompose(LCORR, LQ, 1.0, l_max=6, error=np.ones(3)), ValueError, "error"),
    (lambda: xcca.legendre_decompose(LCORR, LQ, 1.0, l_max=6, error=np.ones(LCORR.shape, complex)), TypeError,
     "error"),  # imaginary part silently dropped before
    (lambda: xcca.legendre_decompose(LCORR, LQ, 1.0, l_max=6, n_reg=2.5), TypeError, "n_reg"),  # truncated before
    (lambda: xcca.legendre_decompose(LCORR, LQ, 1.0, l_max=6, n_reg=2), ValueError, "n_reg"),
    (lambda: xcca.legendre_decompose(LCORR, LQ, 1.0, l_max=6, method="x"), ValueError, "method"),
    (lambda: xcca.legendre_decompose(LCORR, LQ, 1.0, l_max=6, reg=-1.0), ValueError, "reg"),
    (lambda: xcca.legendre_decompose(LCORR, LQ, 1.0, l_max=6, nan_policy="x"), ValueError, "nan_policy"),
    (lambda: xcca.legendre_decompose(LCORR, LQ, 1.0, l_max=6, pairs=[[0, 9]] * 3), ValueError, "pairs"),
    (lambda: xcca.legendre_synthesize(np.full_like(LB, np.nan), LL, LQ, 1.0, 32), ValueError, "B"),
    (lambda: xcca.legendre_synthesize(np.full(LB.shape, "a"), LL, LQ, 1.0, 32), TypeError, "B"),  # numpy msg before
    (lambda: xcca.legendre_synthesize(LB[:3], LL, LQ, 1.0, 32), ValueError, "B"),
    (lambda: xcca.legendre_synthesize(LB + np.eye(3)[:, ::-1] * [[0], [0], [1]], LL, LQ, 1.0, 32), ValueError,
     "symmetric"),
    (lambda: xcca.legendre_synthesize(LB, [0.0, 2.0, 4.0, 6.0], LQ, 1.0, 32), ValueError, "l"),
    (lambda: xcca.legendre_synthesize(LB, [0, 0, 2, 4], LQ, 1.0, 32), ValueError, "l"),
    (lambda: xcca.legendre_synthesize(LB, LL, LQ, 1.0, 0), ValueError, "nphi"),
    (lambda: xcca.legendre_synthesize(LB, LL, LQ, 1.0, 2.5), TypeError, "nphi"),  # nphi=2 before
    (lambda: xcca.legendre_synthesize(LB, LL, LQ, 1.0, True), TypeError, "nphi"),  # nphi=1 before
    (lambda: xcca.legendre_synthesize(LB, LL, LQ, 1.0, "32"), TypeError, "nphi"),  # accepted before
    (lambda: xcca.legendre_synthesize(LB, LL, LQ, 1.0, 2**40), ValueError, "nphi.*memory"),  # MemoryError before
    (lambda: xcca.legendre_synthesize(LB, LL, [1j, 1.0, 2.0], 1.0, 32), TypeError, "q"),
    (lambda: xcca.legendre_synthesize(LB, LL, LQ, -1.0, 32), ValueError, "wavelength"),
    # xcca.files
    (lambda: xcca.files.check_not_input(None, [_TMPF]), TypeError, "output"),
    (lambda: xcca.files.check_not_input(_TMPF, [_TMPF], name="-o"), ValueError, "-o.*input"),
    (lambda: xcca.files.check_outputs_distinct([_TMPF, _TMPF]), ValueError, "output.*same file"),
    (lambda: xcca.files.check_outputs_distinct([_TMPF, 5]), TypeError, "output"),  # os.fspath's message before
    (lambda: xcca.files.atomic_write(None).__enter__(), TypeError, "output"),
    (lambda: xcca.files.atomic_write(os.path.dirname(_TMPF)).__enter__(), IsADirectoryError, "output"),
    (lambda: xcca.files.atomic_write(_TMPF + ".nodir/x.h5").__enter__(), FileNotFoundError, "output"),
]


@pytest.mark.parametrize("call, exc, match", REFUSED, ids=range(len(REFUSED)))
def test_refused(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_documented_results():
    # an inverted (all False) mask: every sample invalid, filled, reported invalid -- not an error
    polar, pm = GRID.remap(IMG, mask=np.zeros(IMG.shape, bool), fill=-1.0)
    assert not pm.any() and (polar == -1.0).all()
    c = xcca.autocorrelate(RINGS, np.zeros((3, 32), bool))
    assert np.isnan(c).all()  # no pair of valid samples: NaN by definition
    # a single valid sample: the lag-0 autocorrelation is its square, every other lag has no pair
    m = np.zeros(32, bool)
    m[5] = True
    c1 = xcca.autocorrelate(RINGS[0, 0], m)
    assert c1[0] == pytest.approx(float(RINGS[0, 0, 5]) ** 2, rel=1e-6) and np.isnan(c1[1:]).all()
    # zero shots without averaging: an empty result of the right shape
    assert xcca.autocorrelate(np.zeros((0, 3, 8))).shape == (0, 3, 8)
    # NaN in a valid sample spreads over its ring (documented in xcca.correlate), inf fill stays allowed
    r = RINGS[0].copy()
    r[1, 3] = np.nan
    c = xcca.autocorrelate(r)
    assert np.isnan(c[1]).all() and np.isfinite(c[[0, 2]]).all()
    assert np.isinf(GRID.remap(IMG, mask=np.zeros(IMG.shape, bool), fill=np.inf)[0]).all()
    # fill=1e300 is fine where the output is float64
    assert (GRID.remap(IMG.astype(np.float64), mask=np.zeros(IMG.shape, bool), fill=1e300)[0] == 1e300).all()


# ------------------------------------------------------------------------------------------ files

def _no_hang(fn, seconds=10):
    """Run fn, failing the test (instead of hanging the suite) if it blocks."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGALRM"):
        return fn()

    def alarm(*_):
        raise TimeoutError("hung")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        return fn()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def good_files(tmp_path_factory):
    import fabio

    d = tmp_path_factory.mktemp("bad_input_files")
    frame = (np.arange(60 * 50).reshape(60, 50) % 251).astype(np.int32)
    cbf, edf = d / "good.cbf", d / "good.edf"
    fabio.cbfimage.CbfImage(data=frame).write(str(cbf))
    fabio.edfimage.EdfImage(data=frame.astype(np.float32)).write(str(edf))
    return d, cbf, edf, frame


def _file_cases(d, cbf, edf):
    raw_cbf, raw_edf = cbf.read_bytes(), edf.read_bytes()
    start = raw_cbf.find(b"\x0c\x1a\x04\xd5") + 4
    flipped = bytearray(raw_cbf)
    flipped[start + 100] ^= 0x5A  # one byte of the binary section: the header's Content-MD5 catches it
    cases = {
        "empty.cbf": b"",
        "empty.edf": b"",
        "garbage.cbf": b"\x00garbage" * 10,
        "flipped.cbf": bytes(flipped),
        "truncated.cbf": raw_cbf[: start + 200],
        "truncated.edf": raw_edf[:-100],
        "headeronly.edf": raw_edf[:512],
        "garbage.edf": b"{\nSize = abc ;\n}\n" + b"\x00" * 100,
        "garbage.tif": b"II*\x00" + b"\xff" * 40,
    }
    paths = {}
    for name, data in cases.items():
        p = d / name
        p.write_bytes(data)
        paths[name] = p
    return paths


def test_good_files_still_read(good_files):
    _, cbf, edf, frame = good_files
    np.testing.assert_array_equal(read_image(cbf), frame)
    np.testing.assert_array_equal(read_image(edf), frame.astype(np.float32))


@pytest.mark.parametrize("name", ["empty.cbf", "empty.edf", "garbage.cbf", "flipped.cbf", "truncated.cbf",
                                  "truncated.edf", "headeronly.edf", "garbage.edf", "garbage.tif"])
def test_corrupt_files_refused_naming_the_file(good_files, name):
    d, cbf, edf, _ = good_files
    path = _file_cases(d, cbf, edf)[name]
    with pytest.raises(OSError) as info:
        _no_hang(lambda: read_image(path))
    msg = str(info.value)
    assert name in msg
    for internal in ("AttributeError", "AssertionError", "NoneType", "KeyError"):
        assert internal not in msg, msg


def test_flipped_cbf_names_the_checksum(good_files):
    d, cbf, edf, _ = good_files
    with pytest.raises(OSError, match="MD5"):
        read_image(_file_cases(d, cbf, edf)["flipped.cbf"])


def test_missing_directory_fifo(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.cbf"):
        read_image(tmp_path / "nope.cbf")
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        read_image(str(tmp_path / "nope.h5") + "::/entry/data")
    (tmp_path / "dir.cbf").mkdir()
    with pytest.raises(IsADirectoryError, match="dir.cbf"):
        read_image(tmp_path / "dir.cbf")
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    for name in ("pipe.cbf", "pipe.h5", "pipe"):  # by suffix: fabio, HDF5, and the HDF5 magic sniffing
        fifo = tmp_path / name
        os.mkfifo(fifo)
        with pytest.raises(OSError, match=f"{name}.*FIFO|FIFO.*{name}"):
            _no_hang(lambda: read_image(fifo), seconds=5)


@pytest.mark.parametrize("value, exc", [(True, TypeError), (2.5, TypeError), ("2", TypeError), (0, ValueError),
                                        (2**64, ValueError)])
def test_analyze_n_threads_refused_before_reading(tmp_path, value, exc):
    # the run file does not even exist: n_threads is checked first
    with pytest.raises(exc, match="n_threads"):
        xcca.analyze(str(tmp_path / "none.h5"), center=(1, 1), qmin=0, qmax=3, nphi=4, n_threads=value)


@pytest.mark.parametrize("name", sorted(SRC))
def test_big_endian_input_same_result(name):
    """The float64 results of RunCorrelator and the Legendre functions do not depend on the input's byte order."""
    src = SRC[name]
    _assert_same(CALLS[name](**{ARRAY_ARG[name]: src.astype(src.dtype.newbyteorder(">"))}), CALLS[name]())


def test_later_names_documented_results():
    # empty stacks: an empty remap of the right shape, an empty correlator (no shots) that still gives a result
    for g in (GGRID, GGRID_TILT):
        p, m = g.remap(np.zeros((0,) + IMG.shape, np.float32))
        assert p.shape == (0, 6, 32) and m.shape == (6, 32)
        p, m = g.remap(IMG, mask=np.zeros(IMG.shape, bool), fill=-1.0)  # inverted mask: all invalid, filled
        assert not m.any() and (p == -1.0).all()
    rc = xcca.RunCorrelator(3, 32).add(np.zeros((0, 3, 32)))
    assert rc.n_shots == 0
    # NaN under an invalid mask is allowed (the mask says it is not data)
    xcca.RunCorrelator(3, 32).add(_NAN_RINGS, mask=np.isfinite(_NAN_RINGS))
    # an all-invalid mask: no pairs, NaN correlation and zero counts, not an error
    r = xcca.RunCorrelator(3, 32).add(RINGS, mask=np.zeros((3, 32), bool)).result()
    assert (r.counts == 0).all() and np.isnan(r.correlation).all()
    # NaN where excluded: nan_policy="omit" leaves those samples out
    xcca.legendre_decompose(np.where(LCORR > 0.9, np.nan, LCORR), LQ, 1.0, l_max=6, nan_policy="omit")
    # a flat field with NaN / 0: those pixels count as masked (documented in Geometry.polar_grid)
    flat = np.ones(IMG.shape)
    flat[:5] = np.nan
    assert GEOM.polar_grid([0.3 * _QMAX], 32, flat=flat).remap(IMG)[0].shape == (1, 32)
    # a dark with NaN (a dead pixel): masked likewise, not an error (pyFAI's rule: non-finite flat/dark = invalid)
    dark = np.zeros(IMG.shape)
    dark[:3] = np.nan
    g = GEOM.polar_grid([0.3 * _QMAX], 32, dark=dark)
    assert not g.pixel_correction[2][:3].any() and g.remap(IMG)[0].shape == (1, 32)


@pytest.mark.parametrize("name, data, match", [
    ("empty.poni", b"", "empty"), ("binary.poni", b"\x00\xff\x12garbage", "not a PONI"),
    ("nodist.poni", b"PixelSize1: 1e-4\nPixelSize2: 1e-4\nPoni1: 0.01\nPoni2: 0.01\n", "dist"),
    ("strdist.poni", b"PixelSize1: 1e-4\nPixelSize2: 1e-4\nDistance: abc\nPoni1: 0.01\nPoni2: 0.01\n", "distance"),
    ("badjson.poni", b"poni_version: 2\nDetector: Pilatus1M\nDetector_config: {not json\nDistance: 0.1\n", "JSON"),
])
def test_bad_poni_files_refused_naming_the_file(tmp_path, name, data, match):
    p = tmp_path / name
    p.write_bytes(data)
    with pytest.raises(ValueError, match=match) as info:
        xcca.Geometry.from_poni(p)
    assert name in str(info.value)
