"""xcca.Geometry against pyFAI (the truth), PONI files, rings of constant q on tilted detectors, bad input."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import xcca
from xcca import reference as ref

pyFAI = pytest.importorskip("pyFAI")
from pyFAI.detectors import Detector  # noqa: E402

DEG = np.pi / 180

# (name, dist, poni1, poni2, rot1, rot2, rot3, pixel1, pixel2, shape, orientation)
GEOMETRIES = [
    ("untilted", 0.1, 0.01, 0.012, 0.0, 0.0, 0.0, 100e-6, 100e-6, (200, 240), 3),
    ("rot1+5", 0.1, 0.01, 0.012, 5 * DEG, 0.0, 0.0, 100e-6, 100e-6, (200, 240), 3),
    ("rot1-5", 0.1, 0.01, 0.012, -5 * DEG, 0.0, 0.0, 100e-6, 100e-6, (200, 240), 3),
    ("rot2+5", 0.1, 0.01, 0.012, 0.0, 5 * DEG, 0.0, 100e-6, 100e-6, (200, 240), 3),
    ("rot2-5", 0.1, 0.01, 0.012, 0.0, -5 * DEG, 0.0, 100e-6, 100e-6, (200, 240), 3),
    ("rot3", 0.1, 0.01, 0.012, 2 * DEG, -3 * DEG, 40 * DEG, 100e-6, 120e-6, (200, 240), 3),
    ("poni-off-detector", 0.15, -0.02, 0.05, 3 * DEG, 4 * DEG, 0.1, 172e-6, 172e-6, (150, 170), 3),
    ("small", 0.05, 0.0011, 0.0009, 1 * DEG, 2 * DEG, 0.0, 75e-6, 75e-6, (23, 31), 3),
    ("orientation1", 0.1, 0.01, 0.012, 3 * DEG, 1 * DEG, 0.2, 100e-6, 100e-6, (100, 120), 1),
    ("orientation2", 0.1, 0.01, 0.012, 3 * DEG, 1 * DEG, 0.2, 100e-6, 100e-6, (100, 120), 2),
    ("orientation4", 0.1, 0.01, 0.012, 3 * DEG, 1 * DEG, 0.2, 100e-6, 100e-6, (100, 120), 4),
]
PILATUS = ("pilatus6m", 0.3, 0.2143, 0.2117, 2 * DEG, -1.5 * DEG, 0.3, 172e-6, 172e-6, (2527, 2463), 3)


def _pair(g):
    name, dist, p1, p2, r1, r2, r3, px1, px2, shape, orient = g
    geo = xcca.Geometry(dist, p1, p2, r1, r2, r3, pixel1=px1, pixel2=px2, wavelength=1.0e-10,
                        orientation=orient, detector_shape=shape)
    det = Detector(pixel1=px1, pixel2=px2, max_shape=shape, orientation=orient)
    ai = pyFAI.load({"dist": dist, "poni1": p1, "poni2": p2, "rot1": r1, "rot2": r2, "rot3": r3, "detector": det,
                     "wavelength": 1.0e-10})
    return geo, ai, shape


def _rel(a, b):
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


@pytest.mark.parametrize("g", GEOMETRIES + [PILATUS], ids=lambda g: g[0])
def test_arrays_match_pyfai(g):
    geo, ai, shape = _pair(g)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q_ref = ai.center_array(shape, unit="q_nm^-1", scale=True) / 10
        chi_ref = ai.center_array(shape, unit="chi_rad", scale=False)
        tth_ref = ai.center_array(shape, unit="2th_rad", scale=False)
    # pyFAI's pixel positions go through float32 pixel indices: 1e-6 relative where q is not ~0 (at the beam,
    # absolute agreement to 1e-6 of the q range)
    q = geo.q_array()
    assert np.max(np.abs(q - q_ref)) <= 1e-6 * q_ref.max()
    far = q_ref > 0.05 * q_ref.max()
    assert _rel(q[far], q_ref[far]) < 1e-6
    assert np.max(np.abs(geo.tth_array() - tth_ref)) < 1e-6 * tth_ref.max()
    dchi = np.angle(np.exp(1j * (geo.chi_array() - chi_ref)))
    assert np.max(np.abs(dchi[far])) < 1e-5
    assert _rel(geo.solid_angle(), ai.solidAngleArray(shape)) < 1e-6
    for f, off in ((0.99, 0.0), (0.5, 0.3), (-1.0, 0.0)):
        assert _rel(geo.polarization(factor=f, axis_offset=off), ai.polarization(shape, factor=f, axis_offset=off)) \
            < 1e-6


def test_untilted_chi_is_polargrid_phi():
    geo = xcca.Geometry.from_beam((40.3, 30.7), 0.1, 100e-6, 1e-10, shape=(64, 80))
    y, x = np.mgrid[0:64, 0:80]
    assert np.allclose(geo.chi_array(), np.arctan2(y - 30.7, x - 40.3), atol=1e-12)
    assert geo.beam_center == pytest.approx((40.3, 30.7))


@pytest.mark.parametrize("g", GEOMETRIES[:7], ids=lambda g: g[0])
def test_poni_roundtrip_and_pyfai_reads_ours(g, tmp_path):
    geo, ai, shape = _pair(g)
    path = tmp_path / "g.poni"
    ai.write(str(path))
    back = xcca.Geometry.from_poni(path)
    for k in ("dist", "poni1", "poni2", "rot1", "rot2", "rot3", "pixel1", "pixel2", "wavelength"):
        assert getattr(back, k) == pytest.approx(getattr(geo, k), rel=1e-12, abs=1e-15)
    ours = tmp_path / "ours.poni"
    geo.write_poni(ours)
    ai2 = pyFAI.load(str(ours))
    assert ai2.dist == geo.dist and ai2.rot3 == geo.rot3 and ai2.detector.pixel2 == geo.pixel2
    assert xcca.Geometry.from_pyfai(ai2) == geo
    assert xcca.Geometry.from_pyfai(ai).rot2 == geo.rot2


def test_poni_version1_and_named_detector(tmp_path):
    v1 = tmp_path / "v1.poni"
    v1.write_text("# old\nPixelSize1: 0.000172\nPixelSize2: 0.000172\nDistance: 0.2\nPoni1: 0.1\nPoni2: 0.11\n"
                  "Rot1: 0.01\nRot2: 0.02\nRot3: 0\nWavelength: 1e-10\n")
    g = xcca.Geometry.from_poni(v1)
    assert g.dist == 0.2 and g.pixel1 == 0.000172 and g.rot2 == 0.02
    named = tmp_path / "named.poni"
    named.write_text("poni_version: 2\nDetector: Pilatus6M\nDetector_config: {}\nDistance: 0.2\nPoni1: 0.1\n"
                     "Poni2: 0.11\nRot1: 0\nRot2: 0\nRot3: 0\nWavelength: 1e-10\n")
    g = xcca.Geometry.from_poni(named)
    assert g.pixel1 == pytest.approx(172e-6) and g.detector_shape == (2527, 2463)


@pytest.mark.parametrize("text, match", [
    ("", "empty"),
    ("poni_version: 2.1\nDetector: Detector\nDetector_config: {\"pixel1\": 1e-4, \"pixel2\": 1e-4}\nDistance: 0.1\n"
     "Poni1: 0.01\n", "poni2"),  # truncated
    ("poni_version: 2.1\nDetector: Detector\nDetector_config: {\"pixel1\": 1e-4, \"pixel2\"\nDistance: 0.1\n",
     "JSON"),
    ("Distance 0.1\n", "key: value"),
    ("PixelSize1: 1e-4\nPixelSize2: 1e-4\nDistance: abc\nPoni1: 0\nPoni2: 0\nRot1: 0\nRot2: 0\nRot3: 0\n",
     "not a number"),
    ("PixelSize1: 1e-4\nPixelSize2: 1e-4\nDistance: -0.1\nPoni1: 0\nPoni2: 0\nRot1: 0\nRot2: 0\nRot3: 0\n",
     "dist must be > 0"),
    ("PixelSize1: -1e-4\nPixelSize2: 1e-4\nDistance: 0.1\nPoni1: 0\nPoni2: 0\nRot1: 0\nRot2: 0\nRot3: 0\n",
     "pixel1 must be > 0"),
    ("PixelSize1: 1e-4\nPixelSize2: 1e-4\nDistance: 0.1\nPoni1: 0\nPoni2: 0\nRot1: nan\nRot2: 0\nRot3: 0\n",
     "rot1 must be finite"),
    ("PixelSize1: 1e-4\nPixelSize2: 1e-4\nDistance: 0.1\nPoni1: 0\nPoni2: 0\nRot1: 0\nRot2: 0\nRot3: 0\n"
     "Wavelength: 0\n", "wavelength must be > 0"),
    ("poni_version: 7\nDistance: 0.1\n", "version"),
    ("PixelSize1: 1e-4\nPixelSize2: 1e-4\nSplineFile: /x.spline\nDistance: 0.1\n", "spline"),
    ("poni_version: 2\nDistance: 0.1\n", "Detector_config"),
])
def test_bad_poni(tmp_path, text, match):
    p = tmp_path / "bad.poni"
    p.write_text(text)
    with pytest.raises(ValueError, match=match) as e:
        xcca.Geometry.from_poni(p)
    assert "bad.poni" in str(e.value)


def test_bad_poni_files(tmp_path):
    with pytest.raises(OSError, match="missing.poni"):
        xcca.Geometry.from_poni(tmp_path / "missing.poni")
    b = tmp_path / "binary.poni"
    b.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(ValueError, match="binary.poni"):
        xcca.Geometry.from_poni(b)


@pytest.mark.parametrize("kw, match", [
    (dict(dist=-1.0), "dist"), (dict(dist=0.0), "dist"), (dict(pixel1=-1e-4), "pixel1"), (dict(pixel2=0.0), "pixel2"),
    (dict(wavelength=0.0), "wavelength"), (dict(wavelength=np.nan), "wavelength"), (dict(rot1=np.nan), "rot1"),
    (dict(poni1=np.inf), "poni1"), (dict(orientation=7), "orientation"),
])
def test_bad_parameters(kw, match):
    base = dict(dist=0.1, poni1=0.01, poni2=0.01, pixel1=1e-4, pixel2=1e-4, wavelength=1e-10)
    base.update(kw)
    with pytest.raises(ValueError, match=match):
        xcca.Geometry(base.pop("dist"), base.pop("poni1"), base.pop("poni2"), **base)
    with pytest.raises(TypeError, match="dist"):
        xcca.Geometry("0.1", 0, 0, pixel1=1e-4, pixel2=1e-4)
    with pytest.raises(ValueError, match="wavelength"):
        xcca.Geometry(0.1, 0, 0, pixel1=1e-4, pixel2=1e-4).q_array((4, 4))
    with pytest.raises(ValueError, match="shape"):
        xcca.Geometry(0.1, 0, 0, pixel1=1e-4, pixel2=1e-4, wavelength=1e-10).q_array()


def test_q_out_of_reach_names_range():
    geo = xcca.Geometry(0.1, 0.01, 0.012, 0.05, 0.0, 0.0, pixel1=100e-6, pixel2=100e-6, wavelength=1e-10)
    lo, hi = geo.q_range((200, 240))
    with pytest.raises(ValueError, match=r"reach q in \[.*\] 1/Angstrom"):
        geo.polar_grid([0.5 * (lo + hi), hi * 1.5], 64, (200, 240))
    with pytest.raises(ValueError, match="beyond the detector's reach"):
        geo.polar_grid([1e3], 64, (200, 240))
    with pytest.raises(ValueError, match="4 pi / wavelength"):
        geo.tth_from_q(1e3)
    with pytest.raises(ValueError, match="q must be finite"):
        geo.polar_grid([np.nan], 64, (200, 240))
    with pytest.raises(ValueError, match="nq"):
        geo.polar_grid((0.1, 0.2, 0), 64, (200, 240))


# ----- polar grids -----

TILTED = [g for g in GEOMETRIES if g[0] not in ("untilted", "small")]


def _q(geo, shape, n, a=0.1, b=0.9):
    lo, hi = geo.q_range(shape)
    return (lo + a * (hi - lo), lo + b * (hi - lo), n)


def _image(shape, dtype, seed=0):
    return np.random.default_rng(seed).random(shape).astype(dtype) * 100


@pytest.mark.parametrize("g", TILTED, ids=lambda g: g[0])
@pytest.mark.parametrize("method", ["bilinear", "nearest"])
@pytest.mark.parametrize("corr", [dict(), dict(solid_angle=True, polarization_factor=0.99)])
def test_conic_remap_equals_reference(g, method, corr):
    geo, _, shape = _pair(g)
    lo, hi = geo.q_range(shape)
    grid = geo.polar_grid((lo + 0.05 * (hi - lo), hi, 23), 97, **corr)
    assert grid.engine == "conic"
    img = _image(shape, np.float64)
    mask = np.random.default_rng(1).random(shape) > 0.1
    for m, mode in ((None, "strict"), (mask, "strict"), (mask, "renormalize")):
        p, pm = grid.remap(img, mask=m, method=method, mask_mode=mode)
        x, y = grid.coordinates()
        v, ok = ref.sample_at(img, x, y, mask=m, method=method, mask_mode=mode)
        v = v * grid.correction
        assert pm.any() and np.array_equal(pm, ok)
        np.testing.assert_array_equal(p[ok], v[ok])
        assert np.all(np.isnan(p[~ok]))


def test_conic_stack_threads_out_dtypes():
    geo, _, shape = _pair(GEOMETRIES[5])
    grid = geo.polar_grid(_q(geo, shape, 31), 200, solid_angle=True)
    stack = _image((3,) + shape, np.float32)
    p1, m1 = grid.remap(stack, n_threads=1)
    p2, m2 = grid.remap(stack, n_threads=2)
    assert p1.dtype == np.float32 and p1.shape == (3, 31, 200)
    np.testing.assert_array_equal(p1, p2)
    out = np.empty_like(p1)
    r, _ = grid.remap(stack, out=out)
    assert r is out
    np.testing.assert_array_equal(out, p1)
    single, _ = grid.remap(stack[1])
    np.testing.assert_array_equal(single, p1[1])
    u16, _ = grid.remap(stack.astype(np.uint16))
    assert u16.dtype == np.float32
    with pytest.raises(ValueError, match="out must have shape"):
        grid.remap(stack, out=np.empty((31, 200), np.float32))
    with pytest.raises(TypeError, match="out must have dtype"):
        grid.remap(stack, out=np.empty((3, 31, 200)))
    with pytest.raises(ValueError, match="method"):
        grid.remap(stack, method="cubic")
    with pytest.raises(ValueError, match="per frame"):
        grid.remap(np.zeros((5, 5)))


@pytest.mark.parametrize("method", ["bilinear", "nearest"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16, np.int32])
def test_untilted_geometry_equals_pixel_radius_polargrid(method, dtype):
    shape = (301, 283)
    geo = xcca.Geometry.from_beam((140.3, 151.6), 0.12, 100e-6, 1.0e-10, shape=shape)
    grid = geo.polar_grid(_q(geo, shape, 40), 360)
    assert grid.engine == "polar"
    radii = geo.dist * np.tan(geo.tth_from_q(grid.q)) / geo.pixel1
    pg = xcca.PolarGrid(geo.beam_center, radii, 360, shape)
    img = _image(shape, dtype)
    mask = np.random.default_rng(3).random(shape) > 0.05
    a, am = grid.remap(img, mask=mask, method=method)
    b, bm = pg.remap(img, mask=mask, method=method)
    assert np.array_equal(am, bm) and np.array_equal(a, b, equal_nan=True)
    # rings of constant q are circles of these radii
    x, y = grid.coordinates()
    assert np.allclose(np.hypot(x - 140.3, y - 151.6), radii[:, None], rtol=1e-12)


@pytest.mark.parametrize("g", TILTED[:5] + [PILATUS], ids=lambda g: g[0])
def test_rings_land_where_they_should(g):
    """I(x, y) = f(q(x, y)) with pyFAI's q as the truth: every polar row is f(q_row) within interpolation error."""
    geo, ai, shape = _pair(g)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qpix = ai.center_array(shape, unit="q_nm^-1", scale=True) / 10
    lo, hi = float(qpix.min()), float(qpix.max())
    k = 2 * np.pi / ((hi - lo) / 4)  # four periods over the detector: smooth on the pixel scale

    def f(q):
        return np.cos(k * q)

    img = f(qpix)
    grid = geo.polar_grid((lo + 0.02 * (hi - lo), hi - 0.02 * (hi - lo), 40), 360)
    p, pm = grid.remap(img)
    assert pm.mean() > 0.2
    expect = np.broadcast_to(f(grid.q)[:, None], p.shape)
    # bilinear error <= max|f''| |grad q|^2 / 8 per pixel^2; |grad q| <= the largest q step between neighbours
    dq = max(np.abs(np.diff(qpix, axis=0)).max(), np.abs(np.diff(qpix, axis=1)).max())
    tol = k * k * dq * dq / 4 + 1e-6
    assert np.max(np.abs(p[pm] - expect[pm])) < tol
    # a wrong geometry (2 % longer distance) misses the rings
    wrong = geo.replace(dist=geo.dist * 1.02).polar_grid(grid.q, 360, shape)
    pw, pwm = wrong.remap(img)
    assert np.max(np.abs(pw[pwm] - expect[pwm])) > 10 * tol


def test_corrections_equal_pyfai_at_pixel_centres():
    """A sample exactly on a pixel centre gets pyFAI's solid angle and polarisation of that pixel."""
    geo, ai, shape = _pair(GEOMETRIES[5])
    grid = geo.polar_grid(_q(geo, shape, 17), 120, solid_angle=True, polarization_factor=0.95)
    ones = np.ones(shape)
    p, pm = grid.remap(ones, method="nearest")
    np.testing.assert_array_equal(p[pm], grid.correction[pm])
    x, y = grid.coordinates()
    ix, iy = np.rint(x[pm]).astype(int), np.rint(y[pm]).astype(int)
    corr_px = 1.0 / (ai.solidAngleArray(shape) * ai.polarization(shape, factor=0.95))[iy, ix]
    # the factor is evaluated at the exact sample position, which is within half a pixel of that centre
    assert np.allclose(grid.correction[pm], corr_px, rtol=2e-3)


def test_flat_dark():
    geo, _, shape = _pair(GEOMETRIES[5])
    img = _image(shape, np.float64)
    flat = 0.5 + np.random.default_rng(5).random(shape)
    dark = np.random.default_rng(6).random(shape)
    flat[3, 4] = 0.0  # masked
    grid = geo.polar_grid(_q(geo, shape, 11), 90, flat=flat, dark=dark)
    plain = geo.polar_grid(_q(geo, shape, 11), 90)
    p, pm = grid.remap(img)
    ff = np.where(flat > 0, flat, 1.0)
    q, qm = plain.remap((img - dark) * (1.0 / ff), mask=flat > 0)  # pyFAI's (I - dark) / flat, as 1/flat first
    assert np.array_equal(pm, qm)
    np.testing.assert_array_equal(p[pm], q[qm])
    assert img[3, 4] == _image(shape, np.float64)[3, 4]  # input untouched
    with pytest.raises(ValueError, match="flat must have the image shape"):
        geo.polar_grid(_q(geo, shape, 11), 90, flat=np.ones((3, 3)))


def test_cos_psi_exact_theta_per_ring():
    geo = xcca.Geometry.from_beam((500, 500), 0.1, 100e-6, 1.3e-10, shape=(1001, 1001))
    grid = geo.polar_grid((0.5, 1.5, 5), 64)
    c = grid.cos_psi()
    th = geo.tth_from_q(grid.q) / 2
    d = 2 * np.pi * np.arange(64) / 64
    np.testing.assert_allclose(c, np.cos(d) * np.cos(th)[:, None] ** 2 + np.sin(th)[:, None] ** 2, rtol=1e-13)
    c2 = geo.cos_psi(64, grid.q[:, None], grid.q[None, :])
    assert c2.shape == (5, 5, 64)
    np.testing.assert_allclose(c2[2, 3], np.cos(d) * np.cos(th[2]) * np.cos(th[3]) + np.sin(th[2]) * np.sin(th[3]))
    np.testing.assert_allclose(c2, xcca.cos_psi(64, grid.q[:, None], 1.3, grid.q[None, :]))


# ----- calibration -----

def _powder(true, d, sigma=0.0025):
    tth = true.tth_array()
    img = np.zeros(tth.shape)
    for dk in d:
        img += np.exp(-0.5 * ((tth - 2 * np.arcsin(true.wavelength_A / (2 * dk))) / sigma) ** 2)
    return img


def test_calibration_recovers_geometry_and_agrees_with_pyfai():
    from pyFAI.calibrant import Calibrant
    from pyFAI.geometryRefinement import GeometryRefinement
    shape, px = (600, 640), 100e-6
    true = xcca.Geometry(0.1, 0.031, 0.0335, 1.2 * DEG, -0.8 * DEG, 0.0, pixel1=px, pixel2=px,
                         wavelength=0.7e-10, detector_shape=shape)
    d = 4.1568 / np.sqrt([1, 2, 3, 4, 5, 6])  # a cubic standard (LaB6-like lattice), given by the user
    img = _powder(true, d)
    guess = true.replace(dist=0.102, poni1=0.0305, poni2=0.0340, rot1=0.5 * DEG, rot2=0.0)
    g, pts, rms = xcca.geometry.calibrate(img, guess, d)
    assert rms < 2e-5
    assert abs(g.dist - true.dist) / true.dist < 1e-4
    assert abs(g.poni1 - true.poni1) / px < 0.05 and abs(g.poni2 - true.poni2) / px < 0.05
    assert abs(g.rot1 - true.rot1) < 0.01 * DEG and abs(g.rot2 - true.rot2) < 0.01 * DEG
    # pyFAI's own refinement on the same control points lands on the same geometry
    cal = Calibrant(dSpacing=list(d), wavelength=true.wavelength)
    det = Detector(pixel1=px, pixel2=px, max_shape=shape)
    gr = GeometryRefinement(pts.tolist(), dist=guess.dist, poni1=guess.poni1, poni2=guess.poni2, rot1=guess.rot1,
                            rot2=guess.rot2, rot3=0.0, detector=det, wavelength=true.wavelength, calibrant=cal)
    gr.refine2(1000000, fix=["wavelength", "rot3"])
    assert abs(gr.dist - g.dist) / g.dist < 1e-4
    # pyFAI's refine2 stops earlier (measured: its PONI 0.07-0.09 px from the truth, ours 0.007 px)
    assert abs(gr.poni1 - g.poni1) / px < 0.15 and abs(gr.poni2 - g.poni2) / px < 0.15
    assert abs(gr.rot1 - g.rot1) < 0.01 * DEG and abs(gr.rot2 - g.rot2) < 0.01 * DEG


def test_calibration_wavelength_and_bad_input():
    shape, px = (500, 500), 100e-6
    true = xcca.Geometry(0.08, 0.025, 0.025, pixel1=px, pixel2=px, wavelength=1.0e-10, detector_shape=shape)
    d = 4.1568 / np.sqrt([1, 2, 3, 4, 5, 6, 8, 9])  # wide angles: wavelength and distance separate
    img = _powder(true, d)
    g, _, _ = xcca.geometry.calibrate(img, true.replace(wavelength=1.01e-10), d,
                                      refine=("poni1", "poni2", "wavelength"))
    assert abs(g.wavelength - true.wavelength) / true.wavelength < 1e-4
    with pytest.raises(ValueError, match="refine"):
        xcca.geometry.calibrate(img, true, d, refine=("tilt",))
    with pytest.raises(ValueError, match="d_spacings"):
        xcca.geometry.calibrate(img, true, [-1.0])
    with pytest.raises(ValueError, match="no ring"):
        xcca.geometry.calibrate(np.zeros(shape), true, d)


@pytest.mark.parametrize("g", TILTED + [PILATUS], ids=lambda g: g[0])
@pytest.mark.parametrize("dtype", [np.float32, np.int32])
@pytest.mark.parametrize("corr", [dict(), dict(solid_angle=True), dict(polarization_factor=0.9),
                                  dict(solid_angle=True, polarization_factor=0.99)])
def test_conic_fused_path_equals_reference(g, dtype, corr):
    """32-bit pixels, bilinear, no mask: the fused AVX-512 kernel (where the CPU has it) against the specification,
    including odd nphi (tail lanes), edge samples (general path), strided images and both thread counts."""
    geo, _, shape = _pair(g)
    lo, hi = geo.q_range(shape)
    nphi = 1001 if g[0] == "pilatus6m" else 203
    grid = geo.polar_grid((lo, hi, 37), nphi, **corr)
    big = _image((shape[0], shape[1] + 3), dtype, seed=4)
    img = big[:, 1:shape[1] + 1]  # a row stride that is not the width
    x, y = grid.coordinates()
    for mode in ("strict", "renormalize"):
        v, ok = ref.sample_at(img, x, y, method="bilinear", mask_mode=mode)
        expect = (v * grid.correction).astype(np.float32)
        for n in (1, 2):
            p, pm = grid.remap(img, mask_mode=mode, n_threads=n)
            assert np.array_equal(pm, ok) and pm.any() and not pm.all()
            np.testing.assert_array_equal(p[ok], expect[ok])
            assert np.all(np.isnan(p[~ok]))


@pytest.mark.parametrize("g", TILTED[:4] + [PILATUS], ids=lambda g: g[0])
@pytest.mark.parametrize("dtype", [np.float32, np.int32])
@pytest.mark.parametrize("corr", [dict(), dict(solid_angle=True, polarization_factor=0.99)])
def test_conic_fused_path_with_mask_equals_reference(g, dtype, corr):
    """32-bit pixels, bilinear, a pixel mask (random pixels and Pilatus-like gap lines): the fused AVX2 path reads the
    mask bytes of each sample's 2x2 block (masked samples in strict mode get the fill, renormalize and the detector
    edges take the general path), against the specification, both mask modes, 1 and 2 threads, a stack."""
    geo, _, shape = _pair(g)
    lo, hi = geo.q_range(shape)
    nphi = 1001 if g[0] == "pilatus6m" else 203
    grid = geo.polar_grid((lo, hi, 37), nphi, **corr)
    img = _image(shape, dtype, seed=7)
    mask = np.random.default_rng(8).random(shape) > 0.05
    mask[shape[0] // 3: shape[0] // 3 + 3] = False
    mask[:, shape[1] // 2: shape[1] // 2 + 2] = False
    x, y = grid.coordinates()
    for mode in ("strict", "renormalize"):
        v, ok = ref.sample_at(img, x, y, mask=mask, method="bilinear", mask_mode=mode)
        expect = (v * grid.correction).astype(np.float32)
        for n in (1, 2):
            p, pm = grid.remap(img, mask=mask, mask_mode=mode, n_threads=n)
            assert np.array_equal(pm, ok) and pm.any() and not pm.all()
            np.testing.assert_array_equal(p[ok], expect[ok])
            assert np.all(np.isnan(p[~ok]))
        stack = np.stack([img, img[::-1, ::-1].copy(), img])
        ps, pms = grid.remap(stack, mask=mask, mask_mode=mode, n_threads=2)
        assert np.array_equal(pms, ok)
        np.testing.assert_array_equal(ps[0][ok], expect[ok])
        np.testing.assert_array_equal(ps[2][ok], expect[ok])
        p1, _ = grid.remap(stack[1], mask=mask, mask_mode=mode, n_threads=1)
        assert np.array_equal(_bits(ps[1]), _bits(p1))


def _bits(a):
    """The array's bytes as unsigned integers (bit-for-bit comparison, NaN fills included)."""
    return a.view(np.uint32 if a.dtype.itemsize == 4 else np.uint64)


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.float64, np.int64])
@pytest.mark.parametrize("corr", [dict(), dict(solid_angle=True), dict(polarization_factor=0.9),
                                  dict(solid_angle=True, polarization_factor=0.99)])
def test_conic_stack_equals_frame_by_frame(dtype, corr):
    """A stack (pass 1 once per tile and block of frames, then pass 2 per frame) equals frame-by-frame remaps bit
    for bit: odd stack sizes, different frames, a non-contiguous stack (frame and row strides), the fused paths
    (32-bit pixels, bilinear, no mask) and the portable ones (mask, nearest, 64-bit pixels), 1 and 2 threads."""
    geo, _, shape = _pair(GEOMETRIES[5])
    grid = geo.polar_grid(_q(geo, shape, 37, a=0.0, b=1.0), 203, **corr)
    mask = np.random.default_rng(2).random(shape) > 0.1
    big = (np.random.default_rng(5).random((10, shape[0], shape[1] + 3)) * 1000).astype(dtype)
    for nf in (3, 5):
        stack = big[: 2 * nf : 2, :, 1 : shape[1] + 1]  # frame stride 2 frames, row stride width + 3
        assert not stack.flags.c_contiguous and not np.array_equal(stack[0], stack[1])
        for m, method in ((None, "bilinear"), (mask, "bilinear"), (None, "nearest"), (mask, "nearest")):
            frames = [grid.remap(stack[k], mask=m, method=method, n_threads=1) for k in range(nf)]
            for n in (1, 2):
                p, pm = grid.remap(stack, mask=m, method=method, n_threads=n)
                assert p.dtype == frames[0][0].dtype == (np.float64 if np.dtype(dtype).itemsize == 8
                                                         else np.float32)
                assert np.array_equal(pm, frames[0][1]) and pm.any() and not pm.all()
                for k in range(nf):
                    assert np.array_equal(_bits(p[k]), _bits(frames[k][0])), (nf, k, method, m is None, n)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conic_stack_blocks_and_streamed_output(dtype):
    """Stacks longer than a block of frames (16 per task) and outputs large enough for non-temporal stores: equal
    to frame-by-frame remaps bit for bit, polar_mask from the first frame."""
    geo, _, shape = _pair(GEOMETRIES[6])
    grid = geo.polar_grid(_q(geo, shape, 21, a=0.0, b=1.0), 157, solid_angle=True, polarization_factor=0.99)
    stack = _image((19,) + shape, dtype, seed=6)
    for n in (1, 2):
        p, pm = grid.remap(stack, n_threads=n)
        for k in (0, 1, 15, 16, 18):
            f, fm = grid.remap(stack[k], n_threads=1)
            assert np.array_equal(fm, pm) and np.array_equal(_bits(p[k]), _bits(f)), (k, n)
    big = geo.polar_grid(_q(geo, shape, 64, a=0.0, b=1.0), 6001, solid_angle=True)  # 3 x 64 x 6001 x 4 B > 8 MB
    st = stack[:3]
    for n in (1, 2):
        p, pm = big.remap(st, n_threads=n)
        for k in range(3):
            f, fm = big.remap(st[k], n_threads=1)
            assert np.array_equal(fm, pm) and np.array_equal(_bits(p[k]), _bits(f)), (k, n)
