"""Deferred CBF Content-MD5 (xcca.io.read_image_deferred): the check overlaps the thumbnail work, and a PNG is only
renamed into place after it passed (xcca.thumbnail.write_png(verify=...)); a mismatch leaves no output."""
from __future__ import annotations

import fabio
import numpy as np
import pytest
from PIL import Image

import xcca
from xcca import io
from xcca.cli import main
from xcca.thumbnail import make_thumbnail, write_png

STARTER = b"\x0c\x1a\x04\xd5"


def frame(seed=0, h=123, w=97):
    rng = np.random.default_rng(seed)
    a = rng.poisson(3.0, (h, w)).astype(np.int32)
    a[h // 3] = -1
    a[7, 9] = 2**30  # a 4-byte escape
    return a


@pytest.fixture()
def good_and_bad(tmp_path):
    good = tmp_path / "good.cbf"
    fabio.cbfimage.CbfImage(data=frame()).write(str(good))
    raw = bytearray(good.read_bytes())
    raw[raw.find(STARTER) + 4 + 50] ^= 0x01  # one bit of one pixel: decodes fine, fails the MD5
    bad = tmp_path / "bad_md5.cbf"
    bad.write_bytes(bytes(raw))
    return good, bad


def test_deferred_read_equals_read_image(good_and_bad):
    good, _ = good_and_bad
    data, verify = io.read_image_deferred(good)
    ref = io.read_image(good)
    assert data.dtype == ref.dtype and np.array_equal(data, ref) and np.array_equal(data, frame())
    assert verify() is None
    assert verify() is None  # may be called again


def test_deferred_mismatch_raises_at_verify_naming_the_file(good_and_bad):
    _, bad = good_and_bad
    with pytest.raises(OSError, match=r"bad_md5\.cbf.*MD5"):
        io.read_image(bad)  # the eager path still refuses it at once
    data, verify = io.read_image_deferred(bad)
    assert data.shape == frame().shape  # the pixels came back before the check finished...
    with pytest.raises(OSError, match=r"bad_md5\.cbf.*MD5.*Content-MD5"):
        verify()  # ...and the check refuses the file


def test_deferred_other_files_checked_eagerly(tmp_path):
    p = tmp_path / "img.h5"
    import h5py
    with h5py.File(p, "w") as f:
        f["data"] = frame(1)
    data, verify = io.read_image_deferred(p, dataset="/data")
    assert np.array_equal(data, frame(1)) and verify() is None
    with pytest.raises(FileNotFoundError):
        io.read_image_deferred(tmp_path / "missing.cbf")


def test_write_png_verify_failure_leaves_nothing(tmp_path, good_and_bad):
    _, bad = good_and_bad
    data, verify = io.read_image_deferred(bad)
    rgb = make_thumbnail(data, size=40)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(OSError, match=r"bad_md5\.cbf"):
        write_png(rgb, out / "t.png", verify=verify)
    assert list(out.iterdir()) == []  # no PNG, no temporary file
    old = out / "old.png"
    write_png(rgb, old)
    before = old.read_bytes()
    with pytest.raises(OSError):
        write_png(np.zeros_like(rgb), old, verify=verify)
    assert old.read_bytes() == before and sorted(p.name for p in out.iterdir()) == ["old.png"]


def test_png_valid_and_lossless(tmp_path):
    rgb = xcca.make_thumbnail(frame(2), size=60)
    p = tmp_path / "t.png"
    write_png(rgb, p, verify=lambda: None)
    with Image.open(p) as im:
        assert im.format == "PNG" and im.mode == "RGB"
        assert np.array_equal(np.asarray(im), rgb)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_cli_refuses_md5_mismatch_without_output(tmp_path, good_and_bad, capsys, workers):
    good, bad = good_and_bad
    out = tmp_path / f"thumbs{workers}"
    assert main(["thumbnail", str(good), str(bad), "-o", str(out), "--size", "50", "-j", workers]) == 1
    err = capsys.readouterr().err
    assert "bad_md5.cbf" in err and "MD5" in err
    assert sorted(p.name for p in out.iterdir()) == ["good.png"]  # no bad_md5.png, no .part file
    with Image.open(out / "good.png") as im:
        assert np.array_equal(np.asarray(im), make_thumbnail(frame(), size=50))
