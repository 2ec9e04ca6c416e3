"""Never lose the user's data: outputs that are inputs are refused before anything is written; writes are atomic."""
from __future__ import annotations

import os

import numpy as np
import pytest

from xcca import files as _files
from xcca.files import OutputIsInputError, atomic_write, check_not_input
from xcca.cli import main
from xcca.thumbnail import write_png


def _cbf(path, shape=(40, 50), seed=0):
    import fabio.cbfimage

    data = np.random.default_rng(seed).integers(0, 1000, shape).astype(np.int32)
    data[10:13, :] = -1  # a module gap
    fabio.cbfimage.CbfImage(data=data).write(str(path))
    return path


@pytest.fixture
def links(tmp_path):
    src = tmp_path / "data.bin"
    src.write_bytes(b"precious")
    sym = tmp_path / "sym.bin"
    sym.symlink_to(src)
    hard = tmp_path / "hard.bin"
    os.link(src, hard)
    return src, sym, hard


def test_same_file_refused_by_name_symlink_hardlink(links, tmp_path):
    src, sym, hard = links
    for out in (src, str(src), sym, hard, tmp_path / "sub" / ".." / "data.bin"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        with pytest.raises(OutputIsInputError, match="refusing to overwrite an input"):
            check_not_input(out, [str(src)])
    with pytest.raises(ValueError):  # it is a ValueError for callers that catch those
        check_not_input(f"{hard}::/entry/data", {"run": f"{src}::/entry/data/data"})
    check_not_input(tmp_path / "new.bin", [src])  # does not exist yet: fine
    check_not_input(tmp_path / "other.bin", [src, np.zeros(3), None, 5])  # non-path inputs are ignored
    assert src.read_bytes() == b"precious"


def test_atomic_write_replaces_only_on_success(tmp_path):
    dst = tmp_path / "out.txt"
    dst.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(dst) as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".txt" and tmp != dst
            tmp.write_text("half")
            raise RuntimeError("writer failed")
    assert dst.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]  # no temporary left behind
    with atomic_write(dst) as tmp:
        tmp.write_text("new")
    assert dst.read_text() == "new"
    assert oct(dst.stat().st_mode & 0o777) == oct(0o666 & ~_files._umask())
    with pytest.raises(IsADirectoryError):
        with atomic_write(tmp_path):
            pass


def test_atomic_write_through_symlink(tmp_path):
    target = tmp_path / "real.txt"
    target.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    with atomic_write(link) as tmp:
        tmp.write_text("new")
    assert link.is_symlink() and target.read_text() == "new"


def test_write_png_refuses_its_input(links, tmp_path):
    src, sym, hard = links
    rgb = np.zeros((4, 5, 3), np.uint8)
    for out in (src, sym, hard):
        with pytest.raises(OutputIsInputError):
            write_png(rgb, out, inputs=[src])
    assert src.read_bytes() == b"precious"
    write_png(rgb, tmp_path / "t.png", inputs=[src])
    assert (tmp_path / "t.png").read_bytes().startswith(b"\x89PNG")


def test_cli_thumbnail_output_is_input(tmp_path, capsys):
    v = _cbf(tmp_path / "v.cbf")
    before = v.read_bytes()
    assert main(["thumbnail", str(v), "-o", str(v)]) == 2
    err = capsys.readouterr().err
    assert "is an existing file, not a directory" in err and ".png" in err and "File exists" not in err
    # A PNG input and a .png output that is the same file (or a link to it).
    png = tmp_path / "img.png"
    write_png(np.full((30, 40, 3), 100, np.uint8), png)
    png_before = png.read_bytes()
    (tmp_path / "alias.png").symlink_to(png)
    for out in (png, tmp_path / "alias.png"):
        assert main(["thumbnail", str(png), "-o", str(out)]) == 2
        assert "refusing to overwrite an input" in capsys.readouterr().err
    # A directory output whose generated name is an input file: refused before anything is written.
    assert main(["thumbnail", str(v), str(png), "-o", str(tmp_path)]) == 2
    assert "refusing to overwrite an input" in capsys.readouterr().err
    assert v.read_bytes() == before and png.read_bytes() == png_before
    assert not (tmp_path / "v.png").exists()
    # The normal case still works.
    assert main(["thumbnail", str(v), "-o", str(tmp_path / "thumbs"), "-q"]) == 0
    assert (tmp_path / "thumbs" / "v.png").exists()
    # Many inputs (their identities taken once): a generated name that is a hard link of another input.
    d = tmp_path / "many"
    d.mkdir()
    os.link(png, d / "w.png")
    w = _cbf(tmp_path / "w.cbf")
    assert main(["thumbnail", str(v), str(w), str(png), "-o", str(d), "-q"]) == 2
    assert "refusing to overwrite an input" in capsys.readouterr().err and png.read_bytes() == png_before


# ------------------------------------------------------------------ the analysis and the CLI commands that write

@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    from xcca.simulate import RunGeometry, simulate_run

    d = tmp_path_factory.mktemp("run")
    return simulate_run(d / "run.h5", 6, RunGeometry(shape=(128, 128), center=(63.2, 64.7)), seed=1)


def _analyze_kw(run):
    return dict(dataset="/entry/data/data", center=(63.2, 64.7), qmin=20, qmax=50, nphi=64,
                mask=f"{run}::/entry/mask")


def test_analyze_refuses_output_that_is_the_run_or_mask(small_run, tmp_path):
    import xcca

    before = small_run.read_bytes()
    link = tmp_path / "link.h5"
    link.symlink_to(small_run)
    hard = tmp_path / "hard.h5"
    os.link(small_run, hard)
    for out in (small_run, link, hard, f"{small_run}"):
        with pytest.raises(OutputIsInputError, match="refusing to overwrite"):
            xcca.analyze(str(small_run), output=out, **_analyze_kw(small_run))
    assert small_run.read_bytes() == before
    res = xcca.analyze(str(small_run), output=tmp_path / "result.h5", **_analyze_kw(small_run))
    assert xcca.AnalysisResult.read(tmp_path / "result.h5").radii.shape == res.radii.shape
    with pytest.raises(OutputIsInputError):
        res.write(small_run, inputs=[small_run])
    assert small_run.read_bytes() == before


def test_cli_correlate_and_polar_refuse_their_inputs(small_run, tmp_path, capsys):
    before = small_run.read_bytes()
    link = tmp_path / "alias.h5"
    link.symlink_to(small_run)
    base = ["correlate", str(small_run), "--dataset", "/entry/data/data", "--center", "63.2,64.7", "--qmin", "20",
            "--qmax", "50", "--nphi", "64", "-q"]
    for out in (str(small_run), str(link)):
        assert main(base + ["-o", out]) == 2
        assert "refusing to overwrite an input" in capsys.readouterr().err
    assert main(base + ["-o", str(tmp_path / "r.h5"), "--plot", str(small_run)]) == 2
    capsys.readouterr()
    npy = tmp_path / "img.npy"
    np.save(npy, np.random.default_rng(0).random((64, 64)).astype(np.float32))
    npy_before = npy.read_bytes()
    assert main(["polar", str(npy), "--center", "32,32", "--qmax", "20", "-o", str(npy)]) == 2
    assert "refusing to overwrite an input" in capsys.readouterr().err
    assert main(["polar", f"{small_run}::/entry/data/data", "--center", "63,64", "--qmax", "40",
                 "-o", str(link)]) == 2
    assert small_run.read_bytes() == before and npy.read_bytes() == npy_before
    assert main(["polar", str(npy), "--center", "32,32", "--qmax", "20", "-o", str(tmp_path / "p.npy")]) == 0
    assert np.load(tmp_path / "p.npy").shape == (20, 360)


def test_two_d_hdf5_dataset_is_one_image_everywhere(tmp_path, capsys):
    import h5py

    import xcca
    from xcca.sources import open_source

    img = np.random.default_rng(0).poisson(10, (80, 90)).astype(np.uint16)
    path = tmp_path / "image.h5"
    with h5py.File(path, "w") as f:
        f["/entry/data"] = img
    assert np.array_equal(xcca.io.read_image(f"{path}::/entry/data"), img)
    with open_source(f"{path}::/entry/data") as src:
        assert len(src) == 1 and src.shape == (80, 90)
    assert main(["polar", f"{path}::/entry/data", "--center", "44,40", "--qmax", "30",
                 "-o", str(tmp_path / "p.npy")]) == 0
    assert main(["polar", str(path), "--dataset", "/entry/data", "--center", "44,40", "--qmax", "30",
                 "-o", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").read_bytes().startswith(b"\x89PNG")
