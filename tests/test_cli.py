"""The xcca command: thumbnail (one, many, a bad file among good ones), demo, python -m xcca."""
from __future__ import annotations

import subprocess
import sys

import fabio
import numpy as np
import pytest
from PIL import Image

import xcca
from xcca.cli import COMMANDS, main


@pytest.fixture(scope="module")
def cbf_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(5)
    paths = []
    for i in range(3):
        data = rng.integers(0, 1000, (400, 380)).astype(np.int32)
        data[100:117] = -1
        p = d / f"img_{i:03d}.cbf"
        fabio.cbfimage.CbfImage(data=data).write(str(p))
        paths.append(p)
    return paths


def test_one_image_to_png(cbf_files, tmp_path, capsys):
    out = tmp_path / "thumb.png"
    assert main(["thumbnail", str(cbf_files[0]), "-o", str(out), "--size", "120", "--scale", "asinh"]) == 0
    with Image.open(out) as im:
        assert im.size == (114, 120) and im.mode == "RGB"
        png = np.asarray(im)
    expect = xcca.make_thumbnail(xcca.io.read_image(cbf_files[0]), size=120, scale="asinh")
    np.testing.assert_array_equal(png, expect)
    assert str(out) in capsys.readouterr().out


def test_bad_file_among_good_ones(cbf_files, tmp_path, capsys):
    bad = tmp_path / "broken.cbf"
    bad.write_bytes(cbf_files[1].read_bytes()[:3000])
    missing = tmp_path / "missing.cbf"
    outdir = tmp_path / "thumbs"
    rc = main(["thumbnail", str(cbf_files[0]), str(bad), str(missing), str(cbf_files[2]), "-o", str(outdir),
               "--mode", "sum", "--dilate", "3"])
    assert rc != 0
    assert sorted(p.name for p in outdir.iterdir()) == ["img_000.png", "img_002.png"]
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "xcca: error" in ln]
    assert len(lines) == 2
    assert any("broken.cbf" in ln for ln in lines) and any("missing.cbf" in ln for ln in lines)
    assert "Traceback" not in err


def test_hdf5_input_and_frame(tmp_path):
    import h5py

    h5 = tmp_path / "stack.h5"
    with h5py.File(h5, "w") as f:
        f["entry/data"] = np.arange(2 * 50 * 60, dtype=np.uint16).reshape(2, 50, 60)
    out = tmp_path / "out"
    assert main(["thumbnail", f"{h5}::/entry/data", "--frame", "1", "-o", str(out), "-q", "--size", "30"]) == 0
    with Image.open(out / "stack_entry_data.png") as im:
        assert im.size == (30, 25)


def test_usage_errors(cbf_files, tmp_path, capsys):
    assert main(["thumbnail", str(cbf_files[0]), str(cbf_files[1]), "-o", str(tmp_path / "x.png")]) == 2
    assert main(["thumbnail", str(cbf_files[0]), "--size", "0", "-o", str(tmp_path)]) == 2
    assert main(["thumbnail", str(cbf_files[0]), "--mode", "median"]) == 2
    assert main([]) == 2
    assert main(["--version"]) == 0
    assert xcca.__version__ in capsys.readouterr().out


def test_demo(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    png = tmp_path / "demo" / "pilatus6m_thumbnail.png"
    with Image.open(png) as im:
        assert max(im.size) == 300
    assert str(png) in capsys.readouterr().out


def test_subcommands_are_registered():
    assert {"thumbnail", "demo"} <= set(COMMANDS)


def test_python_dash_m(cbf_files, tmp_path):
    out = tmp_path / "m"
    r = subprocess.run([sys.executable, "-m", "xcca", "thumbnail", str(cbf_files[0]), str(tmp_path / "nope.cbf"),
                        "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert (out / "img_000.png").exists()
    assert "nope.cbf" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "xcca", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "thumbnail" in r.stdout and "demo" in r.stdout


# ------------------------------------------------------------------------------------------ issue 10, section 4

def test_thumbnail_huge_size_refused_up_front(cbf_files, tmp_path, capsys):
    import time

    t0 = time.perf_counter()
    assert main(["thumbnail", str(cbf_files[0]), "--size", "10000000", "-o", str(tmp_path)]) == 2
    assert time.perf_counter() - t0 < 5  # refused before reading or allocating anything (14 s before)
    err = capsys.readouterr().err
    assert "--size" in err and "memory" in err


def test_thumbnail_exit_codes_and_help(cbf_files, tmp_path, capsys):
    bad = tmp_path / "empty.cbf"
    bad.write_bytes(b"")
    assert main(["thumbnail", str(cbf_files[0]), str(bad), "-o", str(tmp_path / "out"), "-q"]) == 1
    assert "empty.cbf" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["thumbnail", str(cbf_files[0]), "-o", str(tmp_path / "file" / "sub"), "-q"]) == 2
    for cmd in ("thumbnail", "demo"):
        with pytest.raises(SystemExit):
            from xcca.cli import build_parser

            build_parser().parse_args([cmd, "--help"])
        out = " ".join(capsys.readouterr().out.split())
        assert "0 = all done" in out and "2 = usage error" in out
