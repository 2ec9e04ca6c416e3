"""Never lose the user's data: outputs that are inputs are refused before anything is written; writes are atomic."""
from __future__ import annotations

import os

import numpy as np
import pytest

from xcca import _files
from xcca._files import OutputIsInputError, atomic_write, check_not_input
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
