"""The fused CBF decode + thumbnail binning (issue 15): xcca._core.cbf_byte_offset_bin_max against its spec
(xcca.reference.cbf_bin_max), and xcca.thumbnail.thumbnail_file against make_thumbnail(read_image(path)).

The kernel decodes an int32 byte-offset frame row by row straight into the block maxima and the empty-row/column
flags; it must give exactly what decoding, xcca.bin_max and xcca.reference.empty_lines give, with the decoder's
statuses for damaged data. thumbnail_file must give make_thumbnail's pixels for every file and option (the fused path
where it applies, read + make_thumbnail elsewhere) and read_image's errors.
"""
from __future__ import annotations

import base64
import hashlib
import os

import fabio
import numpy as np
import pytest
from hypothesis import given, strategies as st

import xcca
from xcca import _core, io, reference, thumbnail
from xcca.thumbnail import make_thumbnail, thumbnail_file

from test_cbf import STARTER, encode32, make_cbf  # the CBF writers of the plain decoder's tests

STATUS = {"ok": 0, "truncated_escape": 1, "too_few_values": 2, "trailing_bytes": 3, "md5_mismatch": 4}


def kernel(blob, h, w, f, expected=None, n_threads=None):
    binned = np.full((-(-h // f), -(-w // f)), 99, np.int32)
    er = np.full(h, 7, np.uint8)
    ec = np.full(w, 7, np.uint8)
    res = _core.cbf_byte_offset_bin_max(blob, 0, len(blob), h, w, f, binned, er, ec, expected, n_threads)
    return res, binned, er, ec


@st.composite
def frames(draw):
    """int32 frames with small counts, 16/32-bit escapes, -1/-2 gaps and whole invalid rows and columns."""
    h = draw(st.integers(1, 29))
    w = draw(st.integers(1, 29))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    a = rng.poisson(3.0, (h, w)).astype(np.int64)
    k = rng.random((h, w))
    a[k < 0.1] = rng.integers(128, 32767, (k < 0.1).sum())                     # 2-byte escapes
    a[k > 0.95] = rng.integers(-(2**31), 2**31, (k > 0.95).sum())           # 4-byte escapes, both signs
    a[(k > 0.5) & (k < 0.55)] = -1
    a[(k > 0.6) & (k < 0.62)] = -2
    for r in rng.choice(h, draw(st.integers(0, h)), replace=False):  # all-invalid rows
        a[r] = rng.choice([-1, -2, -(2**31)], w)
    for c in rng.choice(w, draw(st.integers(0, min(w, 5))), replace=False):  # all-invalid columns
        a[:, c] = rng.choice([-1, -2], h)
    if draw(st.booleans()) and h * w > 1:
        a.flat[-1] = 2**31 - 1
    return a.astype(np.int32)


@given(frames(), st.integers(1, 20), st.booleans(), st.sampled_from([None, 1, 2]))  # > 16: the generic loop
def test_kernel_equals_reference(frame, f, with_md5, n_threads):
    h, w = frame.shape
    blob = encode32(frame)
    expected = hashlib.md5(blob).digest() if with_md5 else None
    (status, message, values, used, digest), binned, er, ec = kernel(blob, h, w, f, expected, n_threads)
    ref = reference.cbf_bin_max(blob, h, w, f, expected)
    assert (status, values, used) == (0, h * w, len(blob)) == (STATUS[ref[0]], ref[1], ref[2])
    assert message == "ok" and (digest == expected if with_md5 else digest is None)
    assert binned.dtype == np.int32 and np.array_equal(binned, ref[3])
    assert np.array_equal(binned, xcca.bin_max(frame, f))
    assert np.array_equal(er.view(bool), ref[4]) and np.array_equal(ec.view(bool), ref[5])
    assert np.array_equal(er.view(bool), ~(frame >= 0).any(axis=1))


@given(st.lists(st.sampled_from([0x80, 0x00, 0x01, 0x7F, 0xFF, 0x81]), min_size=0, max_size=80),
       st.integers(1, 9), st.integers(1, 9), st.integers(1, 12))
def test_corrupt_streams_same_status_as_decoder(data, h, w, f):
    """Random byte streams: the decoder's status, value count and bytes used (the spec's, and the plain kernel's)."""
    blob = bytes(data)
    (status, message, values, used, _), binned, er, ec = kernel(blob, h, w, f)
    ref = reference.cbf_bin_max(blob, h, w, f)
    plain = _core.cbf_byte_offset(blob, 0, len(blob), np.empty(h * w, np.int32))
    assert (status, values, used) == (STATUS[ref[0]], ref[1], ref[2]) == (plain[0], plain[2], plain[3])
    assert message == plain[1]
    if status == 0:
        assert np.array_equal(binned, ref[3]) and np.array_equal(er.view(bool), ref[4])
        assert np.array_equal(ec.view(bool), ref[5])


@pytest.mark.parametrize("n_threads", [1, 2])
def test_kernel_md5_mismatch(n_threads):
    frame = np.arange(60, dtype=np.int32).reshape(6, 10)
    blob = bytearray(encode32(frame))
    expected = hashlib.md5(blob).digest()
    blob[3] ^= 0x01
    (status, message, values, used, digest), *_ = kernel(bytes(blob), 6, 10, 3, expected, n_threads)
    assert status == 4 and "MD5" in message and digest == hashlib.md5(blob).digest()
    assert reference.cbf_bin_max(bytes(blob), 6, 10, 3, expected)[0] == "md5_mismatch"


def test_kernel_bad_arguments():
    blob = encode32(np.arange(12))
    ok = dict(binned=np.empty((2, 2), np.int32), empty_rows=np.empty(3, np.uint8), empty_cols=np.empty(4, np.uint8))

    def call(**kw):
        args = dict(data=blob, offset=0, size=len(blob), height=3, width=4, factor=2, **ok)
        args.update(kw)
        return _core.cbf_byte_offset_bin_max(**args)

    assert call()[0] == 0
    with pytest.raises(ValueError, match="positive"):
        call(factor=0)
    with pytest.raises(ValueError, match="positive"):
        call(height=-1)
    with pytest.raises(ValueError, match="binned.*shape"):
        call(binned=np.empty((3, 2), np.int32))
    with pytest.raises(TypeError, match="binned.*int32"):
        call(binned=np.empty((2, 2), np.int64))
    with pytest.raises(TypeError, match="binned"):
        call(binned=np.empty((2, 4), np.int32)[:, ::2])
    with pytest.raises(TypeError, match="empty_rows"):
        call(empty_rows=np.empty(3, bool))
    with pytest.raises(ValueError, match="empty_cols.*shape"):
        call(empty_cols=np.empty(5, np.uint8))
    with pytest.raises(ValueError, match="offset"):
        call(offset=len(blob) + 1)
    with pytest.raises(ValueError, match="16 bytes"):
        call(expected_md5=b"abc")
    with pytest.raises(TypeError, match="n_threads"):
        call(n_threads=1.5)
    ro = np.empty((2, 2), np.int32)
    ro.flags.writeable = False
    with pytest.raises(TypeError, match="writeable"):
        call(binned=ro)


# ------------------------------------------------------------------------------------------ thumbnail_file


def pilatus_like(h, w, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.poisson(3.0, (h, w)).astype(np.int32)
    if h > 20:
        a[h // 3: h // 3 + 3] = -1
    if w > 20:
        a[:, w // 2] = -1
    a.flat[:: max(1, a.size // 11)] = -2
    a.flat[5::997] = 2**30   # 4-byte escapes
    a.flat[7::89] = 40000    # 2-byte escapes
    return a


@pytest.fixture()
def used_fused(monkeypatch):
    """Counts the calls of the fused path."""
    calls = []
    orig = io._cbf_bin_max

    def spy(*args, **kw):
        calls.append(args[2])
        return orig(*args, **kw)

    monkeypatch.setattr(io, "_cbf_bin_max", spy)
    return calls


def same_as_make_thumbnail(path, **kw):
    ref = make_thumbnail(io.read_image(path), **{k: v for k, v in kw.items() if k not in ("dataset", "frame")})
    rgb, verify = thumbnail_file(path, **kw)
    assert verify() is None
    assert rgb.dtype == np.uint8 and rgb.shape == ref.shape and np.array_equal(rgb, ref)


@pytest.mark.parametrize("shape", [(2527, 2463), (123, 97), (300, 17), (17, 301), (1, 50), (50, 1), (1, 1), (61, 61)])
@pytest.mark.parametrize("size", [300, 64, 7])
def test_thumbnail_file_equals_make_thumbnail(tmp_path, used_fused, shape, size):
    if shape == (2527, 2463) and size == 7:
        size = 1000  # enlarging a binned axis (factor 2, 1264 -> 1000 rows)
    path = tmp_path / "f.cbf"
    fabio.cbfimage.CbfImage(data=pilatus_like(*shape, seed=shape[0])).write(str(path))
    for n_threads in (None, 1, 2):
        same_as_make_thumbnail(path, size=size, n_threads=n_threads)
    assert len(used_fused) == 3


@pytest.mark.parametrize("options", [dict(scale="linear"), dict(scale="asinh", percentiles=(5, 95)),
                                     dict(cmap="gray", masked_color=(255, 0, 0)), dict(show_gaps=False),
                                     dict(size=2000), dict(size=1, n_threads=1), dict(frame=0)])
def test_thumbnail_file_options_fused(tmp_path, used_fused, options):
    path = tmp_path / "o.cbf"
    fabio.cbfimage.CbfImage(data=pilatus_like(250, 190, seed=3)).write(str(path))
    same_as_make_thumbnail(path, **options)
    assert len(used_fused) == 1


def test_thumbnail_file_all_invalid_and_flat(tmp_path, used_fused):
    for k, data in enumerate([np.full((40, 30), -1, np.int32), np.zeros((40, 30), np.int32),
                              np.full((40, 30), 2**31 - 1, np.int32), np.full((9, 700), -2, np.int32)]):
        path = tmp_path / f"{k}.cbf"
        fabio.cbfimage.CbfImage(data=data).write(str(path))
        same_as_make_thumbnail(path, size=16)
    assert len(used_fused) == 4


def test_thumbnail_file_falls_back(tmp_path, used_fused):
    """Every option or file the fused path does not take: read + make_thumbnail, the same pixels."""
    data = pilatus_like(130, 110, seed=5)
    path = tmp_path / "a.cbf"
    fabio.cbfimage.CbfImage(data=data).write(str(path))
    mask = np.ones(data.shape, bool)
    mask[10:20, 30:40] = False
    for kw in (dict(mode="sum"), dict(dilate=3), dict(mask=mask), dict(mask=mask, mode="sum", dilate=2)):
        ref = make_thumbnail(io.read_image(path), size=50, **kw)
        rgb, verify = thumbnail_file(path, size=50, **kw)
        verify()
        assert np.array_equal(rgb, ref)
    u16 = tmp_path / "u16.cbf"
    fabio.cbfimage.CbfImage(data=np.abs(data).astype(np.uint16)).write(str(u16))
    same_as_make_thumbnail(u16, size=40)
    edf = tmp_path / "a.edf"
    fabio.edfimage.EdfImage(data=data).write(str(edf))
    same_as_make_thumbnail(edf, size=40)
    h5 = tmp_path / "s.h5"
    import h5py
    with h5py.File(h5, "w") as f:
        f["data"] = np.stack([data, data[::-1]])
    ref = make_thumbnail(io.read_image(h5, dataset="/data", frame=1), size=40)
    rgb, verify = thumbnail_file(f"{h5}::/data", size=40, frame=1)
    verify()
    assert np.array_equal(rgb, ref)
    rgb, verify = thumbnail_file(h5, size=40, dataset="/data")  # a stack: one thumbnail per frame
    verify()
    assert rgb.shape[0] == 2 and np.array_equal(rgb, make_thumbnail(io.read_image(h5, dataset="/data"), size=40))
    assert used_fused == []


def test_thumbnail_file_compiled_switch(tmp_path, used_fused, monkeypatch):
    path = tmp_path / "s.cbf"
    fabio.cbfimage.CbfImage(data=pilatus_like(60, 70)).write(str(path))
    monkeypatch.setattr(io, "USE_COMPILED_CBF", False)
    same_as_make_thumbnail(path, size=30)
    assert used_fused == []


def corrupt_files(tmp_path):
    """CBFs whose header (size, MD5) matches the data, but whose data do not decode to the frame."""
    vals = np.arange(12, dtype=np.int32)
    blob = encode32(vals)
    cases = {"few.cbf": make_cbf(blob, 4, 4),            # too few values
             "many.cbf": make_cbf(blob, 2, 5),           # bytes left over
             "esc.cbf": make_cbf(encode32([1, 2, 40000])[:-2], 1, 3)}  # an escape cut off by the end
    good = tmp_path / "good.cbf"
    fabio.cbfimage.CbfImage(data=pilatus_like(50, 40, seed=2)).write(str(good))
    raw = good.read_bytes()
    size = int(raw.split(b"X-Binary-Size:")[1].split(b"\r\n")[0])
    cases["cut.cbf"] = raw[: raw.find(STARTER) + 4 + size - 10]  # truncated file
    out = []
    for name, data in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        out.append(p)
    return out


@pytest.mark.parametrize("n_threads", [None, 1])
def test_thumbnail_file_corrupt_same_error_as_read_image(tmp_path, n_threads):
    for path in corrupt_files(tmp_path):
        with pytest.raises(OSError) as ref:
            io.read_image(path)
        with pytest.raises(OSError) as got:
            thumbnail_file(path, size=8, n_threads=n_threads)
        assert str(got.value) == str(ref.value) and str(path) in str(got.value)


def test_thumbnail_file_md5_mismatch(tmp_path):
    path = tmp_path / "bad_md5.cbf"
    fabio.cbfimage.CbfImage(data=pilatus_like(90, 80, seed=4)).write(str(path))
    raw = bytearray(path.read_bytes())
    raw[raw.find(STARTER) + 4 + 100] ^= 0x01  # one bit of one pixel: decodes, fails the MD5
    path.write_bytes(bytes(raw))
    with pytest.raises(OSError) as ref:
        io.read_image(path)
    rgb, verify = thumbnail_file(path, size=20)  # deferred: the check runs while the thumbnail is made
    assert rgb.shape[2] == 3
    with pytest.raises(OSError) as got:
        verify()
    assert str(got.value) == str(ref.value) and "bad_md5.cbf" in str(got.value) and "Content-MD5" in str(got.value)
    with pytest.raises(OSError) as got:  # one thread: checked before returning
        thumbnail_file(path, size=20, n_threads=1)
    assert str(got.value) == str(ref.value)
    out = tmp_path / "t.png"
    rgb, verify = thumbnail_file(path, size=20)
    with pytest.raises(OSError, match="bad_md5"):
        thumbnail.write_png(rgb, out, verify=verify)
    assert not out.exists()


def test_thumbnail_file_bad_input(tmp_path):
    path = tmp_path / "g.cbf"
    fabio.cbfimage.CbfImage(data=pilatus_like(30, 20)).write(str(path))
    with pytest.raises(ValueError, match="size"):
        thumbnail_file(path, size=0)
    with pytest.raises(TypeError, match="size"):
        thumbnail_file(path, size=2.5)
    with pytest.raises(TypeError, match="size"):
        thumbnail_file(path, size=True)
    with pytest.raises(ValueError, match="mode"):
        thumbnail_file(path, mode="mean")
    with pytest.raises(ValueError, match="scale"):
        thumbnail_file(path, scale="sqrt")
    with pytest.raises(ValueError, match="percentiles"):
        thumbnail_file(path, percentiles=(90, 10))
    with pytest.raises(ValueError, match="masked_color"):
        thumbnail_file(path, masked_color=(0, 0, 300))
    with pytest.raises(ValueError, match="cmap"):
        thumbnail_file(path, cmap="no-such-map")
    with pytest.raises(ValueError, match="n_threads"):
        thumbnail_file(path, n_threads=0)
    with pytest.raises(TypeError, match="n_threads"):
        thumbnail_file(path, n_threads=1.0)
    with pytest.raises(ValueError, match="dilate"):
        thumbnail_file(path, dilate=0)
    with pytest.raises(ValueError, match="mask"):
        thumbnail_file(path, mask=np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="memory|size="):
        thumbnail_file(path, size=10**7)
    with pytest.raises(FileNotFoundError):
        thumbnail_file(tmp_path / "missing.cbf")
    with pytest.raises(IsADirectoryError):
        thumbnail_file(tmp_path)
    empty = tmp_path / "e.cbf"
    empty.write_bytes(b"")
    with pytest.raises(OSError, match="empty"):
        thumbnail_file(empty)
    with pytest.raises(IndexError):
        thumbnail_file(path, frame=3)
    with pytest.raises(OSError, match="not a CBF|not a readable"):
        (tmp_path / "junk.cbf").write_bytes(b"hello world")
        thumbnail_file(tmp_path / "junk.cbf")


def test_cli_uses_thumbnail_file(tmp_path, used_fused):
    from PIL import Image

    from xcca.cli import main

    srcs = []
    for k in range(3):
        p = tmp_path / f"img{k}.cbf"
        fabio.cbfimage.CbfImage(data=pilatus_like(140, 120, seed=k)).write(str(p))
        srcs.append(str(p))
    out = tmp_path / "thumbs"
    for workers in ("1", "2"):
        assert main(["thumbnail", *srcs, "-o", str(out), "--size", "50", "-j", workers, "-q"]) == 0
        for k, src in enumerate(srcs):
            with Image.open(out / f"img{k}.png") as im:
                assert np.array_equal(np.asarray(im), make_thumbnail(io.read_image(src), size=50))
    assert len(used_fused) == 6


# ---------------------------------------------- deferred MD5 hashed while the file is read (io._cbf_frame)


def big_cbf(tmp_path, name="big.cbf", flip=None):
    path = tmp_path / name
    fabio.cbfimage.CbfImage(data=pilatus_like(400, 380, seed=9)).write(str(path))  # ~ 200 KB: several pieces
    if flip is not None:
        raw = bytearray(path.read_bytes())
        start = raw.find(STARTER) + 4
        size = int(bytes(raw).split(b"X-Binary-Size:")[1].split(b"\r\n")[0])
        raw[start + int(flip * (size - 1))] ^= 0x01
        path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("chunk", [7, 4096, 1 << 18])
@pytest.mark.parametrize("flip", [None, 0.0, 0.5, 1.0])
def test_md5_hashed_while_reading(tmp_path, monkeypatch, chunk, flip):
    monkeypatch.setattr(io, "_CBF_HEAD_BYTES", 1 << 12)
    monkeypatch.setattr(io, "_CBF_READ_CHUNK", chunk)
    path = big_cbf(tmp_path, flip=flip)
    assert path.stat().st_size > 3 * (1 << 12)
    checks = []
    fr = io._cbf_frame(str(path), checks)
    assert fr.expected is None and len(checks) == 1 and isinstance(fr.raw, np.ndarray)
    ref = io._cbf_frame(str(path))
    assert fr.raw.tobytes() == ref.raw and fr[1:6] == ref[1:6]
    data, verify = io.read_image_deferred(path)
    rgb, verify2 = thumbnail_file(path, size=40)
    if flip is None:
        checks[0].result()
        verify()
        verify2()
        assert np.array_equal(data, io.read_image(path))
        assert np.array_equal(rgb, make_thumbnail(data, size=40))
    else:
        with pytest.raises(OSError) as ref_err:
            io.read_image(path)
        for check in (checks[0].result, verify, verify2):
            with pytest.raises(OSError) as err:
                check()
            assert str(err.value) == str(ref_err.value) and "Content-MD5" in str(err.value)


def test_file_shorter_than_fstat_said(tmp_path, monkeypatch):
    """The file shrinks between fstat and the read: a complete binary section still decodes (and passes its MD5);
    a cut one is refused as truncated, and the MD5 thread stops instead of waiting for bytes that never come."""
    monkeypatch.setattr(io, "_CBF_HEAD_BYTES", 1 << 12)
    monkeypatch.setattr(io, "_CBF_READ_CHUNK", 1 << 14)
    real_fstat = io.os.fstat
    extra = {"n": 0}

    def fstat(fd):
        st = real_fstat(fd)
        return os.stat_result((st.st_mode, st.st_ino, st.st_dev, st.st_nlink, st.st_uid, st.st_gid,
                               st.st_size + extra["n"], st.st_atime, st.st_mtime, st.st_ctime))

    monkeypatch.setattr(io.os, "fstat", fstat)
    path = big_cbf(tmp_path)
    extra["n"] = 5000
    checks = []
    fr = io._cbf_frame(str(path), checks)
    checks[0].result(timeout=10)
    assert np.array_equal(io._cbf_pixels(str(path), fr), io.read_image(path))
    raw = path.read_bytes()
    cut = tmp_path / "cut.cbf"
    cut.write_bytes(raw[:-3000])  # the binary section is 3000 - (the trailer) bytes short
    extra["n"] = 3000
    checks = []
    with pytest.raises(OSError, match=r"cut\.cbf: truncated CBF"):
        io._cbf_frame(str(cut), checks)
    assert checks[0].result(timeout=10) is None
