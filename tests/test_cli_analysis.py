"""The analysis subcommands: `xcca correlate`, `xcca polar` (through xcca.cli_analysis and the `xcca` entry point)."""
from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest

import xcca
from xcca import cli_analysis
from xcca.pipeline import AnalysisResult
from xcca.simulate import RunGeometry, simulate_run

GEOM = RunGeometry(shape=(120, 128), center=(63.4, 58.7), distance=0.00559)
# Before the compiled polar/correlation/pairing kernels exist the commands are exercised on the NumPy backend.
BACKEND = [] if hasattr(xcca, "PolarGrid") and hasattr(xcca, "pair_shots") else ["--backend", "numpy"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return simulate_run(tmp_path_factory.mktemp("cli") / "run.h5", 12, GEOM, seed=2, corrupt=(4,))


def correlate_args(run, out, *extra):
    return ["correlate", str(run), "--dataset", "/entry/data/data", "--center", "auto", "--qmin", "25",
            "--qmax", "50", "--nphi", "64", "--mask", f"{run}::/entry/mask", "-o", str(out), "-q", *BACKEND,
            *extra]


def test_correlate_writes_result_and_plot(run, tmp_path, capsys):
    out, png = tmp_path / "res.h5", tmp_path / "res.png"
    rc = cli_analysis.main(correlate_args(run, out, "--wavelength", "1.3", "--q", "2.67", "--plot", str(png)))
    cap = capsys.readouterr()
    assert rc == 1, cap.err  # done, but frame 4 was skipped (issue 10: one exit-code convention)
    res = AnalysisResult.read(out)
    assert res.skipped == [(4, "all zero")] and res.cos_psi.shape == (25, 64)
    assert len(res.pairs) == 5 and res.unpaired.size == 1
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "wrote" in cap.out and "1 corrupt frames skipped: 4: all zero" in cap.err
    assert "Traceback" not in cap.err


@pytest.mark.parametrize("extra,match", [
    (["--dataset", "/nope"], "not found"),
    (["--center", "900,3"], "outside"),
    (["--qmin", "60", "--qmax", "40"], "qmin"),
    (["--nphi", "1"], "nphi"),
    (["--wavelength", "-1", "--q", "2"], "wavelength"),
    (["--wavelength", "1.3", "--q", "40"], "reach"),
    (["--mask", "/nonexistent/mask.npy"], "mask file not found"),
])
def test_correlate_bad_input_is_one_line(run, tmp_path, capsys, extra, match):
    args = correlate_args(run, tmp_path / "r.h5")
    # later options override earlier ones in argparse
    rc = cli_analysis.main(args + extra)
    err = capsys.readouterr().err
    assert rc == 2
    assert match in err and "Traceback" not in err
    assert err.strip().count("\n") == 0
    assert not (tmp_path / "r.h5").exists()


def test_correlate_missing_file(tmp_path, capsys):
    rc = cli_analysis.main(["correlate", str(tmp_path / "none.h5"), "--center", "1,1", "--qmin", "0", "--qmax",
                            "3", "--nphi", "4", "-o", str(tmp_path / "r.h5"), *BACKEND])
    assert rc == 2 and "not found" in capsys.readouterr().err


def test_bad_center_syntax_is_a_usage_error(run, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli_analysis.main(correlate_args(run, tmp_path / "r.h5", "--center", "12"))
    assert e.value.code == 2 and "--center" in capsys.readouterr().err


def test_polar_png_and_npy(run, tmp_path, capsys):
    png, npy = tmp_path / "p.png", tmp_path / "p.npy"
    assert cli_analysis.main(["polar", f"{run}::/entry/data/data", "--frame", "2", "--mask",
                              f"{run}::/entry/mask", "-o", str(png), *BACKEND]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert cli_analysis.main(["polar", str(run), "--dataset", "/entry/data/data", "--center", "63.4,58.7",
                              "--qmin", "10", "--qmax", "50", "--nphi", "90", "-o", str(npy), *BACKEND]) == 0
    arr = np.load(npy)
    assert arr.shape == (40, 90)
    with h5py.File(run) as f:
        frame = f["/entry/data/data"][0].astype(float)
    # sample (r=35, φ=0) is at column cx + 35, row cy: bilinear between its neighbours
    x, y = 63.4 + 35, 58.7
    x0, y0 = int(x), int(y)
    fx, fy = x - x0, y - y0
    ref = ((1 - fy) * ((1 - fx) * frame[y0, x0] + fx * frame[y0, x0 + 1])
           + fy * ((1 - fx) * frame[y0 + 1, x0] + fx * frame[y0 + 1, x0 + 1]))
    assert arr[25, 0] == pytest.approx(ref, rel=1e-5)
    rc = cli_analysis.main(["polar", str(tmp_path / "missing.cbf"), "-o", str(png), *BACKEND])
    assert rc == 2 and "not found" in capsys.readouterr().err
    rc = cli_analysis.main(["polar", str(run), "--dataset", "/entry/data/data", "--frame", "99", "-o", str(png),
                            *BACKEND])
    assert rc == 2 and "out of range" in capsys.readouterr().err


def test_module_entry_point_has_no_traceback(tmp_path):
    p = subprocess.run([sys.executable, "-m", "xcca.cli_analysis", "correlate", str(tmp_path / "x.h5"), "--center",
                        "1,1", "--qmin", "0", "--qmax", "3", "--nphi", "4", "-o", str(tmp_path / "r.h5")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "not found" in p.stderr


def _xcca_cli():
    cli = pytest.importorskip("xcca.cli")
    if "correlate" not in getattr(cli, "COMMANDS", {}):
        pytest.skip("correlate is not wired into the xcca command in this build")
    return cli


def test_xcca_command_correlate_and_polar(run, tmp_path, capsys):
    cli = _xcca_cli()
    out = tmp_path / "res.h5"
    assert cli.main(correlate_args(run, out)) == 1  # frame 4 skipped
    assert AnalysisResult.read(out).skipped == [(4, "all zero")]
    assert cli.main(["polar", f"{run}::/entry/data/data", "-o", str(tmp_path / "p.png"), *BACKEND]) == 0
    assert cli.main(correlate_args(run, out, "--nphi", "1")) == 2
    assert "--nphi" in capsys.readouterr().err


def test_xcca_demo_runs_the_correlation_analysis(tmp_path, capsys):
    cli = _xcca_cli()
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out), "--frames", "12", "-q"]) == 0
    text = capsys.readouterr().out
    for name in ("result.h5", "polar_image.png", "radial_profile.png", "correlation_cos_psi.png", "run.h5"):
        assert (out / name).exists() and name in text
    assert any(p.name.endswith("thumbnail.png") for p in out.iterdir())  # the thumbnail part stays
    res = AnalysisResult.read(out / "result.h5")
    assert res.skipped == [(4, "all zero")] and len(res.pairs) == 5
    assert res.cos_psi is not None and np.all(np.diff(res.q) > 0)
    assert np.hypot(res.parameters["center"][0] - 261.3, res.parameters["center"][1] - 248.7) < 0.3
    assert "centre fitted" in text


# ------------------------------------------------------------------------------------------ issue 10, section 4

def test_errors_name_flags_not_parameters(run, tmp_path, capsys):
    for extra, flag, param in ((["--ring", "999"], "--ring", "ring_for_pairing"), (["--nphi", "1"], "--nphi", None)):
        assert cli_analysis.main(correlate_args(run, tmp_path / "r.h5", *extra)) == 2
        err = capsys.readouterr().err
        assert flag in err and (param is None or param not in err), err


def test_qmax_beyond_the_detector_warns_with_the_usable_range(run, tmp_path, capsys):
    rc = cli_analysis.main(correlate_args(run, tmp_path / "r.h5", "--qmax", "400"))
    err = capsys.readouterr().err
    assert rc == 1  # frame 4 skipped
    assert "rings have no valid sample" in err and "usable radius range 25.." in err


def test_huge_qmax_refused_up_front(run, tmp_path, capsys):
    rc = cli_analysis.main(correlate_args(run, tmp_path / "r.h5", "--qmax", "1e9"))
    err = capsys.readouterr().err
    assert rc == 2 and "--qmax" in err and "memory" in err and "Traceback" not in err
    rc = cli_analysis.main(["polar", f"{run}::/entry/data/data", "--center", "60,60", "--qmax", "1e9", "-o",
                            str(tmp_path / "p.npy"), *BACKEND])
    err = capsys.readouterr().err
    assert rc == 2 and "--qmax" in err and "memory" in err


def test_polar_without_suffix_writes_and_says_png(run, tmp_path, capsys):
    out = tmp_path / "p6"
    assert cli_analysis.main(["polar", f"{run}::/entry/data/data", "-o", str(out), *BACKEND]) == 0
    assert (tmp_path / "p6.png").read_bytes()[:4] == b"\x89PNG"
    assert "wrote " + str(tmp_path / "p6.png") in capsys.readouterr().out


def test_inverted_mask_message(run, tmp_path, capsys):
    with h5py.File(run) as f:
        mask = f["/entry/mask"][()]
    np.save(tmp_path / "none.npy", np.zeros_like(mask, dtype=bool))
    rc = cli_analysis.main(correlate_args(run, tmp_path / "r.h5", "--mask", str(tmp_path / "none.npy")))
    err = capsys.readouterr().err
    assert rc == 2 and "leaves no valid pixel" in err and "True = valid" in err


@pytest.mark.parametrize("command", ["correlate", "polar"])
def test_help_documents_exit_codes(command, capsys):
    with pytest.raises(SystemExit):
        cli_analysis.main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "0 = all done" in out and "1 = done, but some inputs were skipped" in out and "2 = usage error" in out
