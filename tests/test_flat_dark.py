"""Flat field and dark current applied during the conic remap (issue 11): compiled == xcca.reference bit for bit,
pyFAI's semantics ((raw - dark) / flat per pixel, then the per-sample solid angle / polarisation), invalid pixels
masked, stacks / threads / dtypes, inputs untouched; through xcca.analyze (arrays and files, recorded in the
parameters) and the CLI (--flat / --dark)."""
from __future__ import annotations

import numpy as np
import pytest

import xcca
from xcca import reference as ref

DEG = np.pi / 180
SHAPE = (90, 110)


def _geo(rot=(3 * DEG, -2 * DEG, 0.3), shape=SHAPE):
    return xcca.Geometry(0.08, 0.0042, 0.0051, *rot, pixel1=100e-6, pixel2=100e-6, wavelength=1.0e-10,
                         detector_shape=shape)


def _q(geo, n=13, shape=SHAPE):
    lo, hi = geo.q_range(shape)
    return (lo + 0.05 * (hi - lo), lo + 0.95 * (hi - lo), n)


def _flat_dark(shape=SHAPE, seed=3, bad=True):
    rng = np.random.default_rng(seed)
    flat = 0.6 + 0.8 * rng.random(shape)
    dark = 5.0 * rng.random(shape)
    if bad:
        flat[4, 5] = 0.0
        flat[10, 20:30] = -1.0
        flat[30, 40] = np.nan
        flat[50, 60] = np.inf
        dark[60, 70] = np.nan
    return flat, dark


def _expected(grid, img, flat, dark, mask, method, mode):
    """xcca.reference: per-pixel values, then sample_at at the conic coordinates, times the correction."""
    vals, valid = ref.conic_flat_dark(img, flat, dark)
    m = valid if mask is None else (mask & valid)
    x, y = grid.coordinates()
    v, ok = ref.sample_at(vals, x, y, mask=m, method=method, mask_mode=mode)
    return v * grid.correction, ok


@pytest.mark.parametrize("rot", [(3 * DEG, -2 * DEG, 0.3), (0.0, 0.0, 0.0), (-5 * DEG, 4 * DEG, 0.0)],
                         ids=["tilted", "untilted", "rot1-5"])
@pytest.mark.parametrize("method", ["bilinear", "nearest"])
@pytest.mark.parametrize("corr", [dict(), dict(solid_angle=True, polarization_factor=0.99)], ids=["plain", "corr"])
@pytest.mark.parametrize("which", ["both", "flat", "dark"])
def test_flat_dark_remap_equals_reference_bit_for_bit(rot, method, corr, which):
    geo = _geo(rot)
    flat, dark = _flat_dark()
    f = flat if which in ("both", "flat") else None
    d = dark if which in ("both", "dark") else None
    grid = geo.polar_grid(_q(geo), 101, flat=f, dark=d, **corr)
    assert grid.engine == "conic"  # flat/dark always run through the conic core (also untilted)
    img = np.random.default_rng(1).random(SHAPE) * 1000
    mask = np.random.default_rng(2).random(SHAPE) > 0.1
    for m, mode in ((None, "strict"), (mask, "strict"), (mask, "renormalize"), (None, "renormalize")):
        p, pm = grid.remap(img, mask=m, method=method, mask_mode=mode)
        v, ok = _expected(grid, img, f, d, m, method, mode)
        assert pm.any() and np.array_equal(pm, ok)
        np.testing.assert_array_equal(p[ok], v[ok])
        assert np.all(np.isnan(p[~ok]))


def test_semantics_are_pyfais_raw_minus_dark_over_flat():
    """On a smooth image the flat/dark run equals the plain run of (I - dark) / flat; invalid flat pixels are
    masked; the solid-angle / polarisation factors apply after the flat (per sample)."""
    geo = _geo()
    flat, dark = _flat_dark(bad=False)
    flat[4, 5] = 0.0
    img = np.random.default_rng(4).random(SHAPE) * 100 + 50
    corr = dict(solid_angle=True, polarization_factor=0.95)
    grid = geo.polar_grid(_q(geo), 64, flat=flat, dark=dark, **corr)
    plain = geo.polar_grid(_q(geo), 64, **corr)
    ff = np.where(flat > 0, flat, 1.0)
    p, pm = grid.remap(img)
    q, qm = plain.remap((img - dark) * (1.0 / ff), mask=flat > 0)
    assert np.array_equal(pm, qm) and not pm.all()
    np.testing.assert_array_equal(p[pm], q[qm])
    np.testing.assert_allclose(p[pm], plain.remap((img - dark) / ff, mask=flat > 0)[0][pm], rtol=1e-14)
    d, rflat, valid = grid.pixel_correction
    assert not valid[4, 5] and valid.sum() == valid.size - 1
    np.testing.assert_array_equal(rflat[valid], 1.0 / flat[valid])
    np.testing.assert_array_equal(d[valid], dark[valid])
    assert not rflat.flags.writeable and not d.flags.writeable and not valid.flags.writeable
    assert plain.pixel_correction is None
    np.testing.assert_array_equal(grid.correction, plain.correction)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16, np.int32, np.int64])
def test_stacks_threads_dtypes_and_inputs_untouched(dtype):
    geo = _geo()
    flat, dark = _flat_dark()
    flat0, dark0 = flat.copy(), dark.copy()
    grid = geo.polar_grid(_q(geo, 17), 130, flat=flat, dark=dark, solid_angle=True)
    flat[:] = 1.0  # the grid holds its own copies
    dark[:] = 0.0
    stack = (np.random.default_rng(7).random((3,) + SHAPE) * 1000).astype(dtype)
    keep = stack.copy()
    out_dtype = np.float64 if np.dtype(dtype).itemsize == 8 else np.float32
    p1, m1 = grid.remap(stack, n_threads=1)
    p3, m3 = grid.remap(stack, n_threads=3)
    assert p1.dtype == out_dtype and p1.shape == (3, 17, 130)
    assert np.array_equal(p1, p3, equal_nan=True) and np.array_equal(m1, m3)
    for k in range(3):
        one, mk = grid.remap(stack[k])
        assert np.array_equal(one, p1[k], equal_nan=True) and np.array_equal(mk, m1)
        v, ok = _expected(grid, stack[k], flat0, dark0, None, "bilinear", "strict")
        assert np.array_equal(ok, m1)
        np.testing.assert_array_equal(p1[k][ok], v[ok].astype(out_dtype))
    out = np.empty((3, 17, 130), out_dtype)
    r, _ = grid.remap(stack, out=out)
    assert r is out and np.array_equal(out, p1, equal_nan=True)
    assert np.array_equal(stack, keep)
    # a strided (non-contiguous) stack gives the same bits
    big = np.zeros((3, SHAPE[0], SHAPE[1] + 7), dtype)
    big[:, :, 3:3 + SHAPE[1]] = stack
    ps, _ = grid.remap(big[:, :, 3:3 + SHAPE[1]])
    assert np.array_equal(ps, p1, equal_nan=True)


def test_native_order_spelled_explicitly_is_accepted():
    """A native-order dtype spelled '<' on a little-endian machine (as some readers make them) is not refused."""
    geo = _geo()
    img = np.random.default_rng(3).random((2,) + SHAPE).astype(np.float32)
    spelled = img.view(img.dtype.newbyteorder("<" if np.little_endian else ">"))
    assert spelled.dtype.isnative
    for grid in (geo.polar_grid(_q(geo), 40), geo.polar_grid(_q(geo), 40, flat=np.ones(SHAPE))):
        a, _ = grid.remap(img)
        b, _ = grid.remap(spelled)
        assert np.array_equal(a, b, equal_nan=True)


def test_ones_and_zeros_equal_the_plain_conic_remap():
    geo = _geo()
    img = (np.random.default_rng(9).random(SHAPE) * 100).astype(np.float64)
    plain = geo.polar_grid(_q(geo), 77, polarization_factor=0.9)
    fd = geo.polar_grid(_q(geo), 77, polarization_factor=0.9, flat=np.ones(SHAPE), dark=np.zeros(SHAPE, np.int16))
    for method in ("bilinear", "nearest"):
        a, ma = plain.remap(img, method=method)
        b, mb = fd.remap(img, method=method)
        assert np.array_equal(ma, mb) and np.array_equal(a, b, equal_nan=True)


@pytest.mark.parametrize("kw, exc, match", [
    (dict(flat=np.ones((3, 3))), ValueError, "flat must have the image shape"),
    (dict(dark=np.ones((SHAPE[1], SHAPE[0]))), ValueError, "dark must have the image shape"),
    (dict(flat=np.ones(SHAPE, complex)), TypeError, "flat must be real"),
    (dict(dark=np.full(SHAPE, "a")), TypeError, "dark must be real"),
    (dict(flat=np.zeros(SHAPE)), ValueError, "no valid pixel"),
    (dict(dark=np.full(SHAPE, np.nan)), ValueError, "no valid pixel"),
])
def test_bad_flat_dark(kw, exc, match):
    geo = _geo()
    with pytest.raises(exc, match=match):
        geo.polar_grid(_q(geo), 16, **kw)


# ---- through xcca.analyze and the CLI ----

def _frames(geo, n=6):
    qa = geo.q_array(SHAPE)
    rng = np.random.default_rng(11)
    base = 100 + 50 * np.cos(7 * qa) ** 2
    return np.stack([base * (1 + 0.05 * rng.standard_normal(SHAPE)) for _ in range(n)]).astype(np.float32)


def test_analyze_with_flat_and_dark(tmp_path):
    geo = _geo()
    frames = _frames(geo)
    flat, dark = _flat_dark(bad=False)
    flat[4, 5] = 0.0
    q = (0.3, 0.9, 9)
    kw = dict(geometry=geo, q=q, nphi=48, outlier_thresh=None)
    res = xcca.analyze(frames, flat=flat, dark=dark, **kw)
    np.save(tmp_path / "flat.npy", flat)
    np.save(tmp_path / "dark.npy", dark)
    res_f = xcca.analyze(frames, flat=tmp_path / "flat.npy", dark=str(tmp_path / "dark.npy"), **kw)
    for name in ("mean_polar", "radial_profile", "raw_correlation", "difference_correlation"):
        assert np.array_equal(getattr(res, name), getattr(res_f, name), equal_nan=True), name
    # the same as correcting the frames first ((I - dark) * (1 / flat) in float64, rounded to float32 by the remap)
    ff = np.where(flat > 0, flat, 1.0)
    pre = xcca.analyze(((frames - dark) * (1.0 / ff)).astype(np.float64), mask=flat > 0, **kw)
    m = np.isfinite(res.mean_polar)
    assert np.array_equal(m, np.isfinite(pre.mean_polar))
    np.testing.assert_allclose(res.mean_polar[m], pre.mean_polar[m], rtol=1e-5)
    p = res_f.parameters
    assert p["flat"]["path"] == str((tmp_path / "flat.npy").resolve())
    assert p["dark"]["path"] == str((tmp_path / "dark.npy").resolve())
    assert res.parameters["flat"]["path"] is None
    assert p["flat"]["sha256"] == res.parameters["flat"]["sha256"] and len(p["flat"]["sha256"]) == 64
    assert p["flat"]["sha256"] != p["dark"]["sha256"]
    plain = xcca.analyze(frames, **kw)
    assert plain.parameters["flat"] is None and plain.parameters["dark"] is None
    out = tmp_path / "r.h5"
    xcca.analyze(frames, flat=flat, dark=dark, output=out, **kw)
    assert out.exists()
    # numpy backend: the same per-pixel corrections
    num = xcca.analyze(frames, flat=flat, dark=dark, backend="numpy", **kw)
    m = np.isfinite(res.mean_polar) & np.isfinite(num.mean_polar)
    assert m.sum() > 0.9 * np.isfinite(res.mean_polar).sum()
    np.testing.assert_allclose(num.mean_polar[m], res.mean_polar[m], rtol=1e-4)


def test_analyze_flat_dark_bad_input(tmp_path):
    geo = _geo()
    frames = _frames(geo, 4)
    kw = dict(geometry=geo, q=(0.3, 0.9, 9), nphi=48)
    with pytest.raises(ValueError, match="flat must have the frames' shape"):
        xcca.analyze(frames, flat=np.ones((3, 3)), **kw)
    with pytest.raises(OSError, match="dark file not found"):
        xcca.analyze(frames, dark=tmp_path / "missing.npy", **kw)
    with pytest.raises(TypeError, match="flat must be real"):
        xcca.analyze(frames, flat=np.ones(SHAPE, bool), **kw)
    with pytest.raises(ValueError, match="flat= and dark= need geometry="):
        xcca.analyze(frames, center=(50, 40), qmin=5, qmax=30, nphi=32, flat=np.ones(SHAPE))


def _cli(*argv):
    from xcca.cli import main

    return main([str(a) for a in argv])


@pytest.fixture()
def cli_files(tmp_path):
    geo = _geo()
    frames = _frames(geo, 6)
    import h5py

    run = tmp_path / "run.h5"
    with h5py.File(run, "w") as f:
        f["/entry/data/data"] = frames
    poni = tmp_path / "g.poni"
    geo.write_poni(poni)
    flat, dark = _flat_dark(bad=False)
    np.save(tmp_path / "flat.npy", flat)
    np.save(tmp_path / "dark.npy", dark)
    np.save(tmp_path / "small.npy", np.ones((3, 3)))
    return dict(run=run, poni=poni, flat=tmp_path / "flat.npy", dark=tmp_path / "dark.npy",
                small=tmp_path / "small.npy", frames=frames, flatarr=flat, darkarr=dark, geo=geo)


def test_cli_correlate_and_polar_with_flat_dark(cli_files, tmp_path, capsys):
    c = cli_files
    out = tmp_path / "r.h5"
    rc = _cli("correlate", c["run"], "--dataset", "/entry/data/data", "--nphi", 32, "--poni", c["poni"],
              "--q", "0.3:0.9:9", "--flat", c["flat"], "--dark", c["dark"], "-o", out, "-q")
    assert rc == 0
    res = xcca.analyze(c["run"], dataset="/entry/data/data", nphi=32, geometry=c["poni"], q=(0.3, 0.9, 9),
                       flat=c["flat"], dark=c["dark"])
    back = xcca.AnalysisResult.read(out)
    np.testing.assert_array_equal(back.mean_polar, res.mean_polar)
    np.testing.assert_array_equal(back.difference_correlation, res.difference_correlation)
    assert back.parameters["flat"]["path"] == str(c["flat"].resolve())
    assert back.parameters["dark"]["sha256"] == res.parameters["dark"]["sha256"]
    plain = xcca.analyze(c["run"], dataset="/entry/data/data", nphi=32, geometry=c["poni"], q=(0.3, 0.9, 9))
    assert not np.array_equal(plain.mean_polar, res.mean_polar, equal_nan=True)
    npy = tmp_path / "p.npy"
    assert _cli("polar", c["run"], "--dataset", "/entry/data/data", "--poni", c["poni"], "--q", "0.3:0.9:20",
                "--nphi", 60, "--flat", c["flat"], "--dark", c["dark"], "-o", npy) == 0
    grid = xcca.Geometry.from_poni(c["poni"]).polar_grid((0.3, 0.9, 20), 60, SHAPE, flat=c["flatarr"],
                                                          dark=c["darkarr"])
    np.testing.assert_array_equal(np.load(npy), grid.remap(c["frames"][0])[0])


@pytest.mark.parametrize("cmd", ["correlate", "polar"])
@pytest.mark.parametrize("args, flag", [
    (["--flat", "F"], "--flat"),  # without --poni
    (["--dark", "D"], "--dark"),
    (["--poni", "P", "--q", "0.3:0.9:9", "--flat", "S"], "--flat"),  # wrong shape
    (["--poni", "P", "--q", "0.3:0.9:9", "--dark", "S"], "--dark"),
    (["--poni", "P", "--q", "0.3:0.9:9", "--dark", "missing.npy"], "--dark"),
])
def test_cli_bad_flat_dark_exit_2_naming_the_flag(cli_files, tmp_path, capsys, cmd, args, flag):
    c = cli_files
    sub = {"F": c["flat"], "D": c["dark"], "P": c["poni"], "S": c["small"]}
    args = [str(sub.get(a, a)) for a in args]
    if cmd == "correlate":
        extra = ["--nphi", 32] + ([] if "--poni" in args else ["--center", "50,40", "--qmin", 5, "--qmax", 30])
    else:
        extra = ["--nphi", 32]
    out = tmp_path / ("x.h5" if cmd == "correlate" else "x.npy")
    rc = _cli(cmd, c["run"], "--dataset", "/entry/data/data", *extra, *args, "-o", out, "-q") if cmd == "correlate" \
        else _cli(cmd, c["run"], "--dataset", "/entry/data/data", *extra, *args, "-o", out)
    assert rc == 2
    assert flag in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("corr", [dict(), dict(solid_angle=True), dict(polarization_factor=0.9),
                                  dict(solid_angle=True, polarization_factor=0.99)])
def test_stack_equals_frame_by_frame_bit_for_bit(corr):
    """Coordinates once per tile and block of frames, then every frame: odd stacks (3, 5), a stack longer than a
    block (19 > 16), non-contiguous frames, mask / nearest, float32 and float64 outputs, 1 and 2 threads."""
    geo = _geo()
    flat, dark = _flat_dark()
    grid = geo.polar_grid(_q(geo, 37), 203, flat=flat, dark=dark, **corr)
    mask = np.random.default_rng(2).random(SHAPE) > 0.1
    for dtype in (np.float32, np.float64):
        big = (np.random.default_rng(8).random((38, SHAPE[0], SHAPE[1] + 3)) * 1000).astype(dtype)
        for nf in (3, 5, 19):
            stack = big[: 2 * nf : 2, :, 1 : SHAPE[1] + 1]
            for m, method in ((None, "bilinear"), (mask, "nearest")):
                frames = [grid.remap(stack[k], mask=m, method=method, n_threads=1) for k in range(nf)]
                for n in (1, 2):
                    p, pm = grid.remap(stack, mask=m, method=method, n_threads=n)
                    bits = np.uint32 if p.dtype == np.float32 else np.uint64
                    assert np.array_equal(pm, frames[0][1])
                    for k in range(nf):
                        assert np.array_equal(p[k].view(bits), frames[k][0].view(bits)), (dtype, nf, k, n)
