"""The result file (xcca.result): NeXus layout with units, axes and a default plot; old (format 1) files still read."""
from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest

import xcca
from xcca.result import AnalysisResult
from xcca.simulate import RunGeometry, simulate_run
from xcca.sources import mask_digest

GEOM = RunGeometry(shape=(120, 128), center=(63.4, 58.7), distance=0.00559)
QMIN, QMAX, NPHI = 25, 50, 64


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    d = tmp_path_factory.mktemp("res")
    run = simulate_run(d / "run.h5", 10, GEOM, seed=2, corrupt=(5,))
    cwd = os.getcwd()
    os.chdir(d)  # relative paths in, absolute paths recorded
    try:
        res = xcca.analyze("run.h5::/entry/data/data", mask="run.h5::/entry/mask", center=GEOM.center, qmin=QMIN,
                           qmax=QMAX, nphi=NPHI, wavelength=1.3, q=GEOM.q(np.arange(QMIN, QMAX)),
                           output="result.h5")
    finally:
        os.chdir(cwd)
    with h5py.File(run, "r") as f:
        mask = f["entry/mask"][()].astype(bool)
    return res, d / "result.h5", run, mask


def _s(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def test_nexus_structure_units_and_default_chain(result):
    res, path, run, mask = result
    with h5py.File(path, "r") as f:
        assert _s(f.attrs["default"]) == "entry"
        e = f["entry"]
        assert _s(e.attrs["NX_class"]) == "NXentry"
        dname = _s(e.attrs["default"])
        g = e[dname]
        assert dname == "difference_correlation" and _s(g.attrs["NX_class"]) == "NXdata"
        assert _s(g.attrs["signal"]) == "data"
        assert [_s(a) for a in g.attrs["axes"]] == ["q", "delta"]
        assert g.attrs["q_indices"] == 0 and g.attrs["delta_indices"] == 1 and g.attrs["radius_indices"] == 0
        assert g["data"].shape == (QMAX - QMIN, NPHI)
        assert _s(g["q"].attrs["units"]) == "1/angstrom" and _s(g["radius"].attrs["units"]) == "pixel"
        assert _s(g["delta"].attrs["units"]) == "rad" and _s(g["unnormalized"].attrs["units"]) == "counts^2"
        np.testing.assert_array_equal(g["cos_psi"][()], res.cos_psi)
        for name, ax1 in (("raw_correlation", "delta"), ("mean_polar", "phi")):
            h = e[name]
            assert _s(h.attrs["NX_class"]) == "NXdata" and [_s(a) for a in h.attrs["axes"]] == ["q", ax1]
            assert h["data"].shape == (QMAX - QMIN, NPHI) and h[ax1].shape == (NPHI,)
        assert [_s(a) for a in e["radial_profile"].attrs["axes"]] == ["q"]
        pr = e["process"]
        assert _s(pr.attrs["NX_class"]) == "NXprocess" and _s(pr["program"][()]) == "xcca"
        assert _s(pr["version"][()]) == xcca.__version__
        src = _s(pr["source_path"][()])
        assert os.path.isabs(src) and os.path.samefile(src.partition("::")[0], run)
        assert _s(pr["source_dataset"][()]) == "/entry/data/data"
        assert os.path.isabs(_s(pr["mask"][()]).partition("::")[0])
        assert _s(pr["mask_sha256"][()]) == mask_digest(mask)
        par = pr["parameters"]
        assert _s(par.attrs["NX_class"]) == "NXparameters"
        assert par["nphi"][()] == NPHI and _s(par["qmin"].attrs["units"]) == "pixel"
        np.testing.assert_array_equal(par["center"][()], res.parameters["center"])
        assert json.loads(_s(pr["parameters_json"][()]))["nphi"] == NPHI


def test_mask_digest_tells_masks_apart():
    m = np.ones((4, 5), bool)
    m2 = m.copy()
    m2[1, 2] = False
    assert mask_digest(m) != mask_digest(m2) and mask_digest(m) == mask_digest(m.copy())
    assert mask_digest(m) != mask_digest(np.ones((5, 4), bool)) and mask_digest(None) is None


def test_read_round_trip(result):
    res, path, _, _ = result
    back = AnalysisResult.read(path)
    for name in AnalysisResult._ARRAYS + AnalysisResult._SHOTS + ("q", "cos_psi"):
        a, b = getattr(res, name), getattr(back, name)
        assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True), name
    assert back.skipped == res.skipped == [(5, "all zero")]
    assert back.parameters == json.loads(json.dumps(res.parameters))
    assert back.versions == res.versions and set(back.timings) == set(res.timings)


def test_format_1_files_still_read(result, tmp_path):
    res, _, _, _ = result
    old = tmp_path / "old.h5"
    with h5py.File(old, "w") as f:  # the flat layout written before the NeXus one
        for name in AnalysisResult._ARRAYS:
            f.create_dataset(name, data=np.asarray(getattr(res, name)))
        f.create_dataset("q", data=res.q)
        g = f.create_group("shots")
        for name in AnalysisResult._SHOTS:
            g.create_dataset(name, data=getattr(res, name))
        s = f.create_group("skipped")
        s.create_dataset("index", data=np.array([5]))
        s.create_dataset("reason", data=np.array(["all zero"], dtype=object), dtype=h5py.string_dtype())
        f.attrs["format"] = "xcca-correlation-result-1"
        f.attrs["parameters"] = json.dumps({"nphi": NPHI})
        f.attrs["versions"] = json.dumps({"xcca": "0.0"})
    back = AnalysisResult.read(old)
    np.testing.assert_array_equal(back.difference_correlation_norm, res.difference_correlation_norm)
    assert back.cos_psi is None and back.skipped == [(5, "all zero")] and back.parameters == {"nphi": NPHI}
    bad = tmp_path / "other.h5"
    with h5py.File(bad, "w") as f:
        f.create_dataset("x", data=1)
    with pytest.raises(ValueError, match="not an xcca correlation result"):
        AnalysisResult.read(bad)


def test_silx_plots_the_default_nxdata(result):
    nxdata = pytest.importorskip("silx.io.nxdata")
    silx_io = pytest.importorskip("silx.io")
    res, path, _, _ = result
    with silx_io.open(str(path)) as f:
        d = nxdata.get_default(f)
        assert d is not None and d.is_valid
        assert d.signal.name == "/entry/difference_correlation/data" and d.signal_is_2d
        assert [a.name.rsplit("/", 1)[1] for a in d.axes] == ["q", "delta"]
        assert d.signal_name == "difference correlation / <I>²"  # the long_name labels the plot
        np.testing.assert_array_equal(d.signal[()], res.difference_correlation_norm)
        np.testing.assert_array_equal(d.axes[0][()], res.q)
        assert nxdata.is_valid_nxdata(f["entry/mean_polar"]) and nxdata.is_valid_nxdata(f["entry/radial_profile"])


def test_result_without_q_uses_radius_axes(tmp_path):
    run = simulate_run(tmp_path / "r.h5", 4, GEOM, seed=1)
    res = xcca.analyze(run, dataset="/entry/data/data", center=GEOM.center, qmin=QMIN, qmax=QMAX, nphi=NPHI,
                       output=tmp_path / "o.h5")
    with h5py.File(tmp_path / "o.h5", "r") as f:
        g = f["entry/difference_correlation"]
        assert [_s(a) for a in g.attrs["axes"]] == ["radius", "delta"] and "q" not in g and "cos_psi" not in g
    back = AnalysisResult.read(tmp_path / "o.h5")
    assert back.q is None and back.cos_psi is None and np.array_equal(back.radii, res.radii)


def test_file_list_run_records_every_absolute_path(tmp_path):
    from xcca.simulate import simulate_frames

    paths = []
    for k, fr in enumerate(simulate_frames(4, GEOM, seed=4)):
        np.save(tmp_path / f"f{k}.npy", fr)
        paths.append(str(tmp_path / f"f{k}.npy"))
    xcca.analyze(paths, center=GEOM.center, qmin=QMIN, qmax=QMAX, nphi=NPHI, output=tmp_path / "o.h5")
    with h5py.File(tmp_path / "o.h5", "r") as f:
        recorded = [_s(p) for p in f["entry/process/source_path"][()]]
        assert _s(f["entry/process/mask"][()]) == "None" and "mask_sha256" not in f["entry/process"]
    assert recorded == paths
    assert AnalysisResult.read(tmp_path / "o.h5").parameters["source_path"] == paths


def test_run_correlation_without_replicates_writes_and_reads(tmp_path):
    """A RunCorrelation from result() (replicates not kept: the default) goes into the file with its error and
    harmonics but without replicates or harmonic errors, and reads back equal."""
    import dataclasses

    run = simulate_run(tmp_path / "run.h5", 6, GEOM, seed=5)
    res = xcca.analyze(str(run) + "::/entry/data/data", mask=str(run) + "::/entry/mask", center=GEOM.center,
                       qmin=QMIN, qmax=QMIN + 6, nphi=NPHI, q_pairs="all")
    assert res.run_correlation is not None and res.run_correlation.replicates is not None
    rng = np.random.default_rng(0)
    rc = xcca.RunCorrelator(6, NPHI, blocks=2).add(rng.normal(size=(8, 6, NPHI)), rng.random((8, 6, NPHI)) > 0.2)
    plain = rc.result()  # no replicates kept
    assert plain.replicates is None
    res = dataclasses.replace(res, run_correlation=plain, run_difference_correlation=None)
    path = res.write(tmp_path / "out.h5")
    with h5py.File(path, "r") as f:
        g = f["entry/run_correlation"]
        assert "replicates" not in g and "data_errors" not in f["entry/run_correlation_harmonics"]
        np.testing.assert_array_equal(g["data"][()], plain.correlation)
        np.testing.assert_array_equal(g["data_errors"][()], plain.error)
        np.testing.assert_array_equal(f["entry/run_correlation_harmonics/data"][()], plain.harmonics())
        assert "run_difference_correlation" not in f["entry"]
    back = AnalysisResult.read(path).run_correlation
    assert back.replicates is None and back.n_shots == plain.n_shots == 8
    np.testing.assert_array_equal(back.correlation, plain.correlation)
    np.testing.assert_array_equal(back.counts, plain.counts)
    np.testing.assert_array_equal(back.q_pairs, plain.q_pairs)
