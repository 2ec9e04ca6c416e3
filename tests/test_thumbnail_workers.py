"""`xcca thumbnail` over many files: reading ahead on a worker thread (--workers 2, the default) writes the same
PNGs as one image after the other (--workers 1), keeps going past bad files and reports frames/s."""
from __future__ import annotations

import fabio
import numpy as np
import pytest

from xcca.cli import main


@pytest.fixture()
def many_cbfs(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(7):
        a = rng.poisson(2.0 + i, (97 + 13 * i, 83 + 7 * i)).astype(np.int32)
        a[::17] = -1
        a[5, 5] = 70000 * (i + 1)  # a spot needing a 4-byte escape
        p = tmp_path / f"f{i}.cbf"
        fabio.cbfimage.CbfImage(data=a).write(str(p))
        paths.append(p)
    bad = tmp_path / "f3_bad.cbf"
    raw = bytearray(paths[3].read_bytes())
    raw[-60] ^= 0xFF  # corrupt the binary section: MD5 mismatch
    bad.write_bytes(bytes(raw))
    paths.insert(4, bad)
    return paths


def test_two_workers_write_the_same_pngs(many_cbfs, tmp_path, capsys):
    out1, out2 = tmp_path / "one", tmp_path / "two"
    files = [str(p) for p in many_cbfs]
    assert main(["thumbnail", *files, "-o", str(out1), "--size", "50", "-j", "1"]) == 1
    capsys.readouterr()
    assert main(["thumbnail", *files, "-o", str(out2), "--size", "50", "-j", "2"]) == 1
    captured = capsys.readouterr()
    assert "frames/s" in captured.out and "1 failed" in captured.out
    assert "f3_bad.cbf" in captured.err and "MD5" in captured.err
    names = sorted(p.name for p in out1.iterdir())
    assert names == sorted(p.name for p in out2.iterdir()) and len(names) == len(files) - 1
    for n in names:
        assert (out1 / n).read_bytes() == (out2 / n).read_bytes()


def test_three_workers_and_bad_workers(many_cbfs, tmp_path, capsys):
    files = [str(p) for p in many_cbfs if "bad" not in p.name]
    assert main(["thumbnail", *files, "-o", str(tmp_path / "three"), "--size", "40", "-j", "3", "-q"]) == 0
    assert len(list((tmp_path / "three").iterdir())) == len(files)
    assert main(["thumbnail", *files, "-o", str(tmp_path / "x"), "-j", "0"]) == 2
    assert "--workers" in capsys.readouterr().err
