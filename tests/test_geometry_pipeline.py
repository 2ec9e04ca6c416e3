"""xcca.analyze(geometry=, q=) and the CLI flags --poni/--q/--polarization/--solid-angle: rings of constant q (1/Å)
on physical (tilted) geometries through the run pipeline, against the pixel-radius pipeline and pyFAI-free truths."""
from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest

import xcca
from xcca.geometry_pipeline import RingGrid
from xcca.simulate import RunGeometry, simulate_run

SHAPE = (120, 128)
CENTER = (63.5, 58.5)  # with a power-of-two pixel the PONI round-trips to this centre exactly
PIX = 2.0 ** -13
DIST = 0.125
WL = 1e-10
SIM = RunGeometry(shape=SHAPE, center=CENTER, distance=0.00559)
ARRAYS = ("raw_correlation", "difference_correlation", "difference_correlation_norm", "mean_polar", "radial_profile",
          "pairs", "pair_distances", "unpaired", "frames", "fit_rms", "fit_ok", "ring_intensity", "n_outliers")


def _assert_identical(a, b):
    for name in ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape and x.dtype == y.dtype, name
        assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), f"{name} differs"
    assert a.skipped == b.skipped


def _untilted():
    return xcca.Geometry.from_beam(CENTER, DIST, PIX, WL, shape=SHAPE)


def _q_of_integer_radii(g, radii):
    """q per ring such that the geometry's pixel-equivalent radius is exactly the integer radius (ulp search)."""
    out = []
    for r in radii:
        q = float(g.q_from_tth(np.arctan(r * g.pixel1 / g.dist)))
        for _ in range(200):
            rr = g.dist * np.tan(g.tth_from_q(q)) / g.pixel1
            if rr == r:
                break
            q = np.nextafter(q, np.inf if rr < r else -np.inf)
        else:
            pytest.skip(f"no q maps exactly onto radius {r}")
        out.append(q)
    return np.array(out)


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    return simulate_run(tmp_path_factory.mktemp("grun") / "run.h5", 14, SIM, seed=5, corrupt=(3,))


@pytest.fixture(scope="module")
def poni_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("poni") / "run.poni"
    _untilted().write_poni(p)
    return p


@pytest.mark.parametrize("backend", ["xcca", "numpy"])
def test_untilted_geometry_equals_the_pixel_radius_run_bit_for_bit(run_file, backend):
    g = _untilted()
    radii = np.arange(25.0, 50.0)
    q = _q_of_integer_radii(g, radii)
    kw = dict(dataset="/entry/data/data", mask=f"{run_file}::/entry/mask", nphi=64, chunk=4, backend=backend)
    pix = xcca.analyze(run_file, center=CENTER, qmin=25, qmax=50, wavelength=g.wavelength_A, q=q, **kw)
    geo = xcca.analyze(run_file, geometry=g, q=q, **kw)
    _assert_identical(pix, geo)
    np.testing.assert_array_equal(geo.radii, radii)
    np.testing.assert_array_equal(geo.q, q)
    np.testing.assert_allclose(geo.cos_psi, pix.cos_psi, rtol=0, atol=1e-14)
    p = geo.parameters
    assert p["geometry"]["dist"] == DIST and p["geometry"]["pixel1"] == PIX and p["remap_engine"] == "polar"
    assert p["qmin"] is None and p["center"] == list(CENTER) and p["wavelength"] == pytest.approx(1.0)


def test_ring_for_pairing_is_a_q_with_geometry(run_file):
    g = _untilted()
    q = np.linspace(0.25, 0.45, 12)
    res = xcca.analyze(run_file, dataset="/entry/data/data", geometry=g, q=q, nphi=64, chunk=4,
                       ring_for_pairing=q[5] + 1e-4)
    assert res.parameters["ring_for_pairing_q"] == q[5]
    with pytest.raises(ValueError, match="outside the rings' q range"):
        xcca.analyze(run_file, dataset="/entry/data/data", geometry=g, q=q, nphi=64, ring_for_pairing=1.0)


def _tilted():
    return xcca.Geometry(0.05, 0.0071, 0.0079, rot1=np.radians(4.0), rot2=np.radians(-3.0), rot3=0.2,
                         pixel1=1e-4, pixel2=1e-4, wavelength=1.0e-10)


def _f(q):  # a smooth ring profile in q (1/Å)
    return 100.0 + 400.0 * np.exp(-0.5 * ((q - 0.5) / 0.05) ** 2)


def test_tilted_geometry_gives_rings_in_q(tmp_path):
    g = _tilted()
    qpix = g.q_array(SHAPE)
    rng = np.random.default_rng(1)
    frames = np.stack([_f(qpix) * (1 + 0.01 * rng.standard_normal()) for _ in range(8)]).astype(np.float32)
    lo, hi = g.q_range(SHAPE)
    q = np.linspace(max(lo, 0.3), 0.7, 30)
    res = xcca.analyze(frames, geometry=g, q=q, nphi=90, chunk=3, outlier_thresh=None)
    assert res.parameters["remap_engine"] == "conic"
    prof = res.radial_profile
    ok = np.isfinite(prof)
    assert ok.sum() >= 20
    scale = np.mean(frames.mean(axis=(1, 2)) / _f(qpix).mean())
    np.testing.assert_allclose(prof[ok] / scale, _f(q[ok]), rtol=0.02)
    # every valid polar sample of the mean image is f(q_row): the rings are conics of constant q
    mp = res.mean_polar
    good = np.isfinite(mp) & (mp != 0)
    np.testing.assert_allclose((mp / scale)[good], np.broadcast_to(_f(q)[:, None], mp.shape)[good], rtol=0.03)
    # the same rings as circles around the beam centre are wrong on this tilted detector
    np.testing.assert_allclose(res.cos_psi, g.cos_psi(90, q), rtol=0, atol=0)


def test_corrections_divide_the_samples(tmp_path):
    g = _tilted()
    frames = np.stack([_f(g.q_array(SHAPE)) * (1 + 0.01 * k) for k in range(4)]).astype(np.float32)
    q = np.linspace(0.35, 0.6, 10)
    plain = xcca.analyze(frames, geometry=g, q=q, nphi=60, outlier_thresh=None)
    corr = xcca.analyze(frames, geometry=g, q=q, nphi=60, outlier_thresh=None, polarization_factor=0.99,
                        solid_angle=True)
    factor = g.polar_grid(q, 60, SHAPE, solid_angle=True, polarization_factor=0.99).correction
    m = np.isfinite(plain.mean_polar) & (plain.mean_polar != 0)
    np.testing.assert_allclose(corr.mean_polar[m], (plain.mean_polar * factor)[m], rtol=1e-5)
    assert corr.parameters["polarization_factor"] == 0.99 and corr.parameters["solid_angle"] is True


def test_float32_precision_through_the_pipeline(tmp_path):
    """analyze(precision="float32"): the single-precision remap (bit for bit GeometryPolarGrid's, recorded in the
    parameters) and results within float32 accuracy of the float64 run; refused without a geometry or with a flat."""
    g = _tilted()
    frames = np.stack([_f(g.q_array(SHAPE)) * (1 + 0.01 * k) for k in range(6)]).astype(np.float32)
    q = np.linspace(0.35, 0.6, 10)
    kw = dict(geometry=g, q=q, nphi=60, outlier_thresh=None, solid_angle=True, polarization_factor=0.99)
    r64 = xcca.analyze(frames, **kw)
    r32 = xcca.analyze(frames, precision="float32", **kw)
    assert r64.parameters["remap_precision"] == "float64" and r32.parameters["remap_precision"] == "float32"
    m = np.isfinite(r64.mean_polar) & (r64.mean_polar != 0)
    np.testing.assert_allclose(r32.mean_polar[m], r64.mean_polar[m], rtol=1e-5)
    np.testing.assert_allclose(r32.radial_profile, r64.radial_profile, rtol=1e-5)
    ok = np.isfinite(r64.raw_correlation)
    np.testing.assert_allclose(r32.raw_correlation[ok], r64.raw_correlation[ok], rtol=1e-4,
                               atol=1e-6 * np.abs(r64.raw_correlation[ok]).max())
    with pytest.raises(ValueError, match="precision='float32' needs geometry="):
        xcca.analyze(frames, center=(60, 60), qmin=10, qmax=40, nphi=60, precision="float32")
    with pytest.raises(ValueError, match="does not take flat= / dark="):
        xcca.analyze(frames, precision="float32", flat=np.ones(SHAPE), **kw)
    with pytest.raises(ValueError, match="precision must be 'float64' or 'float32'"):
        xcca.analyze(frames, precision="float16", **kw)


def test_cli_correlate_precision_float32(run_file, poni_file, tmp_path, capsys):
    out = tmp_path / "r32.h5"
    rc = _cli("correlate", run_file, "--dataset", "/entry/data/data", "--nphi", 32, "--poni", poni_file,
              "--q", "0.25:0.45:12", "--solid-angle", "--precision", "float32", "-o", out, "-q")
    assert rc == 1  # one corrupt frame skipped
    res = xcca.analyze(run_file, dataset="/entry/data/data", nphi=32, geometry=poni_file, q=(0.25, 0.45, 12),
                       solid_angle=True, precision="float32")
    assert res.parameters["remap_precision"] == "float32"
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["entry/raw_correlation/data"][()], res.raw_correlation)
    for extra, msg in ((["--center", "63,58", "--qmin", "20", "--qmax", "40"], "--precision float32 needs --poni"),
                       (["--poni", poni_file, "--q", "0.25:0.45:12", "--flat", poni_file],
                        "--precision float32 does not take --flat/--dark")):
        rc = _cli("correlate", run_file, "--dataset", "/entry/data/data", "--nphi", 32, "--precision", "float32",
                  *extra, "-o", tmp_path / "x.h5", "-q")
        assert rc == 2 and msg in capsys.readouterr().err
        assert not (tmp_path / "x.h5").exists()


def test_poni_path_and_result_file(run_file, poni_file, tmp_path):
    out = tmp_path / "res.h5"
    res = xcca.analyze(run_file, dataset="/entry/data/data", geometry=str(poni_file), q=(0.25, 0.45, 8), nphi=32,
                       output=out)
    assert res.parameters["poni"] == str(poni_file.resolve())
    with h5py.File(out, "r") as f:
        found = {}

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                found[name] = obj.attrs.get("units")

        f.visititems(visit)
        qs = [k for k in found if k.endswith("/q") and "parameters" not in k]
        assert qs and all(found[k] == "1/angstrom" for k in qs)
        geo = [k for k in found if "/geometry/" in k]
        assert {k.rsplit("/", 1)[-1] for k in geo} >= {"dist", "poni1", "poni2", "rot1", "rot2", "rot3", "pixel1",
                                                       "pixel2", "wavelength"}
        assert all(found[k] == ("rad" if "/rot" in k else "m") for k in geo
                   if k.rsplit("/", 1)[-1] not in ("orientation", "detector_shape"))
    back = xcca.AnalysisResult.read(out) if hasattr(xcca.AnalysisResult, "read") else None
    if back is not None:
        np.testing.assert_allclose(back.q, res.q)


def test_ring_grid_pickles_without_its_compiled_grid():
    rg = RingGrid(_tilted(), (0.35, 0.6, 5), 16, SHAPE, solid_angle=True)
    rg.grid  # noqa: B018
    back = pickle.loads(pickle.dumps(rg))
    assert back._grid is None
    x = np.random.default_rng(0).random((2,) + SHAPE).astype(np.float32)
    a, ma = rg.grid.remap(x)
    b, mb = back.grid.remap(x)
    assert np.array_equal(a, b, equal_nan=True) and np.array_equal(ma, mb)


@pytest.mark.parametrize("kw, match", [
    (dict(center=CENTER), "center= does not apply with geometry"),
    (dict(center="auto"), "center= does not apply with geometry"),
    (dict(qmin=20, qmax=40), "qmin/qmax are ring radii in pixels"),
    (dict(wavelength=1.0), "wavelength= does not apply"),
    (dict(q=None), "geometry= needs q"),
    (dict(q=(0.2, 3.0, 10)), r"beyond the detector's reach.*reach q in \["),
    (dict(polarization_factor=2.0), "polarization_factor"),
])
def test_bad_geometry_arguments(run_file, kw, match):
    args = dict(dataset="/entry/data/data", geometry=_untilted(), q=(0.25, 0.45, 8), nphi=32)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        xcca.analyze(run_file, **args)


def test_bad_geometry_types_and_pixel_mode_errors(run_file, tmp_path):
    with pytest.raises(TypeError, match="geometry must be"):
        xcca.analyze(run_file, dataset="/entry/data/data", geometry=3.0, q=(0.25, 0.45, 8), nphi=32)
    with pytest.raises(ValueError, match="need geometry="):
        xcca.analyze(run_file, dataset="/entry/data/data", center=CENTER, qmin=20, qmax=40, nphi=32,
                     solid_angle=True)
    with pytest.raises(ValueError, match="required without geometry"):
        xcca.analyze(run_file, dataset="/entry/data/data", qmin=20, qmax=40, nphi=32)
    with pytest.raises(ValueError, match="no wavelength"):
        xcca.analyze(run_file, dataset="/entry/data/data", geometry=_untilted().replace(wavelength=None),
                     q=(0.25, 0.45, 8), nphi=32)
    with pytest.raises(ValueError, match="detector shape"):
        xcca.analyze(run_file, dataset="/entry/data/data", geometry=_untilted().replace(detector_shape=(10, 10)),
                     q=(0.25, 0.45, 8), nphi=32)
    (tmp_path / "bad.poni").write_text("Distance: x\n")
    with pytest.raises((ValueError, OSError), match="bad.poni"):
        xcca.analyze(run_file, dataset="/entry/data/data", geometry=tmp_path / "bad.poni", q=(0.25, 0.45, 8),
                     nphi=32)


def test_dask_geometry_run_is_bit_identical_to_local(run_file, poni_file):
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address=None)
    client = distributed.Client(cluster)
    try:
        g = _tilted()
        # a tilted geometry on the run's frame shape, PONI written for the workers
        kw = dict(dataset="/entry/data/data", mask=f"{run_file}::/entry/mask", geometry=g,
                  q=(0.3, 0.6, 12), nphi=48, chunk=4, polarization_factor=0.95, solid_angle=True)
        local = xcca.analyze(run_file, **kw)
        dist = xcca.analyze(run_file, client=client, **kw)
        _assert_identical(local, dist)
        np.testing.assert_array_equal(local.cos_psi, dist.cos_psi)
        kw2 = dict(kw, geometry=str(poni_file), q=(0.25, 0.45, 8), ring_for_pairing=0.3)
        kw2.pop("polarization_factor")
        _assert_identical(xcca.analyze(run_file, **kw2), xcca.analyze(run_file, client=client, **kw2))
        # flat field and dark current (applied in the remap on every worker): still bit-identical
        rng = np.random.default_rng(8)
        flat = 0.7 + 0.6 * rng.random(SHAPE)
        flat[5, 7] = 0.0  # an invalid pixel joins the mask
        kw3 = dict(kw, flat=flat, dark=rng.random(SHAPE).astype(np.float32))
        local3 = xcca.analyze(run_file, **kw3)
        dist3 = xcca.analyze(run_file, client=client, **kw3)
        _assert_identical(local3, dist3)
        assert local3.parameters["flat"] == dist3.parameters["flat"]
        assert not np.array_equal(local3.mean_polar, local.mean_polar, equal_nan=True)
    finally:
        client.close()
        cluster.close()


def _cli(*argv):
    from xcca.cli import main

    return main([str(a) for a in argv])


def test_cli_correlate_with_poni(run_file, poni_file, tmp_path, capsys):
    out = tmp_path / "r.h5"
    rc = _cli("correlate", run_file, "--dataset", "/entry/data/data", "--nphi", 32, "--poni", poni_file,
              "--q", "0.25:0.45:12", "--polarization", 0.99, "--solid-angle", "-o", out, "-q")
    assert rc == 1  # one corrupt frame skipped
    assert "q 0.25..0.45 1/Å" in capsys.readouterr().out
    res = xcca.analyze(run_file, dataset="/entry/data/data", nphi=32, geometry=poni_file, q=(0.25, 0.45, 12),
                       polarization_factor=0.99, solid_angle=True)
    with h5py.File(out, "r") as f:
        found = []
        f.visititems(lambda n, o: found.append(n) if n.endswith("/q") and isinstance(o, h5py.Dataset) else None)
        assert found
        np.testing.assert_allclose(f[[n for n in found if "parameters" not in n][0]][()], res.q)


@pytest.mark.parametrize("args, flag", [
    (["--poni", "P", "--q", "0.25:0.45:12", "--center", "3,4"], "--center"),
    (["--poni", "P", "--q", "0.25:0.45:12", "--qmin", "3"], "--qmin"),
    (["--poni", "P", "--q", "0.25:0.45:12", "--wavelength", "1"], "--wavelength"),
    (["--poni", "P"], "--q"),
    (["--poni", "P", "--q", "0.25:9:12"], "--q"),
    (["--poni", "P", "--q", "0.25:0.45:12", "--polarization", "3"], "--polarization"),
    (["--center", "63,58", "--qmin", "20", "--qmax", "40", "--solid-angle"], "--solid-angle"),
    (["--center", "63,58", "--qmin", "20", "--qmax", "40", "--q", "0.2:0.3:4"], "--q"),
    (["--qmin", "20", "--qmax", "40"], "--center"),
    (["--poni", "missing.poni", "--q", "0.2:0.3:4"], "missing.poni"),
])
def test_cli_bad_geometry_flags_exit_2_naming_the_flag(run_file, poni_file, tmp_path, capsys, args, flag):
    args = [str(poni_file) if a == "P" else a for a in args]
    rc = _cli("correlate", run_file, "--dataset", "/entry/data/data", "--nphi", 32, *args, "-o", tmp_path / "x.h5",
              "-q")
    assert rc == 2
    assert flag in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists()


def test_cli_polar_with_poni(run_file, poni_file, tmp_path, capsys):
    out = tmp_path / "p.npy"
    assert _cli("polar", run_file, "--dataset", "/entry/data/data", "--poni", poni_file, "--q", "0.2:0.5:40",
                "--nphi", 90, "-o", out) == 0
    polar = np.load(out)
    with h5py.File(run_file, "r") as f:
        img = f["/entry/data/data"][0]
    ref, _ = xcca.Geometry.from_poni(poni_file).polar_grid((0.2, 0.5, 40), 90, SHAPE).remap(img)
    np.testing.assert_array_equal(polar, ref)
    assert _cli("polar", run_file, "--dataset", "/entry/data/data", "--poni", poni_file, "--q", "0.2:5:40",
                "-o", tmp_path / "q.npy") == 2
    assert "reach" in capsys.readouterr().err
    assert _cli("polar", run_file, "--dataset", "/entry/data/data", "--q", "0.2:0.5:40", "-o", tmp_path / "q.npy") == 2
    out32 = tmp_path / "p32.npy"
    assert _cli("polar", run_file, "--dataset", "/entry/data/data", "--poni", poni_file, "--q", "0.2:0.5:40",
                "--nphi", 90, "--precision", "float32", "-o", out32) == 0
    ref32, _ = xcca.Geometry.from_poni(poni_file).polar_grid((0.2, 0.5, 40), 90, SHAPE, precision="float32").remap(img)
    np.testing.assert_array_equal(np.load(out32), ref32)
    capsys.readouterr()
    assert _cli("polar", run_file, "--dataset", "/entry/data/data", "--precision", "float32", "-o",
                tmp_path / "q.npy") == 2
    assert "--precision need --poni" in capsys.readouterr().err


# ---- xcca.loki routed to the geometry code, against LOKI's own formulas (dermen/loki RingData) ----

def test_loki_correct_polarization_equals_lokis_formula():
    from xcca.loki import DiffCorr

    rng = np.random.default_rng(2)
    shots = rng.random((3, 4, 50)) + 1.0
    q = np.array([0.5, 1.2, 2.6, 3.1])
    k = 2 * np.pi / 1.3
    for f in (0.0, 0.3, 1.0):
        dc = DiffCorr(shots.copy(), q_values=q, k=k, pre_dif=True)
        dc.correct_polarization(f)
        # LOKI: theta = arcsin(q / 2k), s = sin(2 theta), P = (1-f)(1-(s cos phi)^2) + f(1-(s sin phi)^2)
        s = np.sin(2 * np.arcsin(q / (2 * k)))[:, None]
        ph = dc.phi_values[None, :]
        p = (1 - f) * (1 - (s * np.cos(ph)) ** 2) + f * (1 - (s * np.sin(ph)) ** 2)
        np.testing.assert_allclose(dc.shotsAB, shots / p, rtol=1e-13)
    with pytest.raises(ValueError, match="yaxis_polarization"):
        DiffCorr(shots.copy(), q_values=q, k=k).correct_polarization(1.5)


def test_polarization_at_is_geometry_polarization():
    from xcca.geometry_pipeline import polarization_at

    g = _tilted()
    np.testing.assert_allclose(polarization_at(g.tth_array(SHAPE), g.chi_array(SHAPE), 0.9),
                               g.polarization(SHAPE, 0.9), rtol=1e-12)


def test_loki_radius_q_helpers_and_solid_angle():
    from xcca import loki

    R = np.array([10.0, 150.5, 800.0])
    pix, d, wl = 0.000172, 0.3, 1.3
    q_loki = np.sin(np.arctan(R * pix / d) / 2.0) * 4 * np.pi / wl
    np.testing.assert_allclose(loki.r2q(R, pix, d, wl), q_loki, rtol=1e-14)
    np.testing.assert_allclose(loki.q2r(q_loki, pix, d, wl), R, rtol=1e-12)
    np.testing.assert_allclose(loki.q2r(q_loki, pix, d, wl),
                               np.tan(2 * np.arcsin(q_loki * wl / 4 / np.pi)) * d / pix, rtol=1e-14)
    th = np.arctan(R * pix / d) / 2.0
    np.testing.assert_allclose(loki.r2theta(R, pix, d), th, rtol=1e-15)
    np.testing.assert_allclose(loki.solid_angle_per_radii(R, pix, d), np.cos(th) ** 3, rtol=1e-15)
    # the same q as the geometry's rings: an untilted Geometry with this distance and pixel
    g = xcca.Geometry.from_beam((0, 0), d, pix, wl * 1e-10)
    np.testing.assert_allclose(loki.r2q(R, pix, d, wl), g.q_from_tth(np.arctan(R * pix / d)), rtol=0)
    with pytest.raises(ValueError):
        loki.r2q(R, -1.0, d, wl)


def test_geometry_run_with_the_run_correlator(run_file):
    res = xcca.analyze(run_file, dataset="/entry/data/data", geometry=_tilted(), q=(0.3, 0.5, 6), nphi=32, chunk=4,
                       q_pairs="band:1")
    assert res.run_correlation is not None and res.run_difference_correlation is not None
    assert np.isfinite(res.run_correlation.correlation).any()
