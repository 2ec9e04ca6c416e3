"""The compiled CBF byte-offset reader (xcca.io + xcca._core.cbf_byte_offset) against fabio, the reference reader.

Every file here is written by fabio or assembled byte by byte; the compiled path must give fabio's pixels bit for bit
(values, dtype, shape) and a clear OSError naming the file where fabio fails or returns garbage.
"""
from __future__ import annotations

import base64
import hashlib
import os

import fabio
import numpy as np
import pytest

import xcca
from xcca import _core, io

STARTER = b"\x0c\x1a\x04\xd5"


def fabio_read(path):
    img = fabio.open(str(path))
    return np.asarray(img.data)


def compiled_read(path):
    data = io._read_cbf_compiled(str(path))
    assert data is not None, "the compiled path must take this file"
    return data


def same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


def frame_like(h, w, rng, big=True, dtype=np.int32):
    """Pilatus-like counts: small values, -1 gap rows/columns, -2 bad pixels, rare huge spots."""
    a = rng.poisson(3.0, (h, w)).astype(np.int64)
    if big:
        k = rng.random((h, w))
        a[k < 0.02] = rng.integers(128, 32767, (k < 0.02).sum())          # 2-byte escapes
        a[k > 0.995] = rng.integers(40000, 2**30, (k > 0.995).sum())     # 4-byte escapes
    if h > 4:
        a[h // 3, :] = -1
    if w > 4:
        a[:, w // 2] = -1
    a.flat[:: max(1, a.size // 7)] = -2
    info = np.iinfo(dtype)
    return np.clip(a, info.min, info.max).astype(dtype)


def make_cbf(blob, h, w, etype="signed 32-bit integer", md5=True, nel=None, size=None):
    """A CBF in fabio's layout around an arbitrary byte-offset blob."""
    lines = [b"###CBF: VERSION 1.5", b"data_xcca_test", b"", b"_array_data.data", b";",
             b"--CIF-BINARY-FORMAT-SECTION--", b"Content-Type: application/octet-stream;",
             b'     conversions="x-CBF_BYTE_OFFSET"', b"Content-Transfer-Encoding: BINARY",
             b"X-Binary-Size: %d" % (len(blob) if size is None else size), b"X-Binary-ID: 1",
             b'X-Binary-Element-Type: "%s"' % etype.encode(), b"X-Binary-Element-Byte-Order: LITTLE_ENDIAN"]
    if md5:
        lines.append(b"Content-MD5: " + base64.b64encode(hashlib.md5(blob).digest()))
    lines += [b"X-Binary-Number-of-Elements: %d" % (h * w if nel is None else nel),
              b"X-Binary-Size-Fastest-Dimension: %d" % w, b"X-Binary-Size-Second-Dimension: %d" % h,
              b"X-Binary-Size-Padding: 1", b"", STARTER + blob, b"", b"--CIF-BINARY-FORMAT-SECTION----", b";", b""]
    return b"\r\n".join(lines)


def encode32(values):
    """Byte offset as fabio's int32 writer does it: int32 deltas (wrapping), 1/2/4-byte forms."""
    out, last = bytearray(), 0
    for v in np.asarray(values, np.int64).ravel():
        d = int(np.array(v - last).astype(np.int64).astype(np.int32)) if abs(v - last) >= 2**31 else int(v - last)
        if -127 <= d <= 127:
            out += np.int8(d).tobytes()
        elif -32767 <= d <= 32767:
            out += b"\x80" + np.int16(d).astype("<i2").tobytes()
        else:
            out += b"\x80\x00\x80" + np.int32(d).astype("<i4").tobytes()
        last = int(v)
    return bytes(out)


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (3, 5), (17, 9), (64, 63), (257, 129), (2527, 2463)])
def test_fabio_written_int32_frames_identical(tmp_path, shape):
    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    data = frame_like(*shape, rng)
    path = tmp_path / "f.cbf"
    fabio.cbfimage.CbfImage(data=data).write(str(path))
    got = compiled_read(path)
    assert same(got, fabio_read(path))
    assert same(got, data)
    assert same(xcca.io.read_image(path), got)


def test_pilatus6m_demo_frame_identical(tmp_path):
    frame = xcca.datasets.pilatus6m()
    path = tmp_path / "p6m.cbf"
    fabio.cbfimage.CbfImage(data=frame).write(str(path))
    assert same(compiled_read(path), fabio_read(path))


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.uint16, np.uint32, np.int64])
def test_other_element_types_identical(tmp_path, dtype):
    rng = np.random.default_rng(5)
    info = np.iinfo(dtype)
    data = rng.integers(max(info.min, -(2**40)), min(info.max, 2**40), (33, 47), endpoint=True).astype(dtype)
    data[::5] = rng.integers(0, 3, data[::5].shape).astype(dtype)  # runs of small deltas
    path = tmp_path / "t.cbf"
    fabio.cbfimage.CbfImage(data=data).write(str(path))
    got = compiled_read(path)
    ref = fabio_read(path)
    assert same(got, ref)
    assert np.array_equal(got, data)


def test_int64_full_range_uses_8_byte_escapes(tmp_path):
    data = np.array([[0, 2**60, -(2**60), 5, 2**61, -(2**61), 1, -1]], np.int64)
    path = tmp_path / "w.cbf"
    fabio.cbfimage.CbfImage(data=data).write(str(path))
    assert same(compiled_read(path), fabio_read(path))
    assert np.array_equal(compiled_read(path), data)
    # Deltas beyond int64 (fabio's writer overflows them): still fabio's pixels, whatever they are.
    data = np.array([[0, 2**62, -(2**62), 5, 2**63 - 1, -(2**63), 1, -1]], np.int64)
    fabio.cbfimage.CbfImage(data=data).write(str(path))
    assert same(compiled_read(path), fabio_read(path))


def test_int32_escape_edges_and_wrapping(tmp_path):
    vals = np.array([0, 127, -127, 128, -128, 32767, -32767, 32768, -32768, 2**31 - 1, -(2**31), 2**31 - 1, 0, -1,
                     -(2**31), 7], np.int64)
    # fabio writes the delta INT32_MIN (0 -> -2^31) as a 4-byte escape 00 00 00 80; its int32 decoder (and ours)
    # take it as a delta, not as the 64-bit marker.
    blob = encode32(vals)
    path = tmp_path / "e.cbf"
    path.write_bytes(make_cbf(blob, 1, vals.size))
    got = compiled_read(path)
    assert same(got, fabio_read(path))
    assert np.array_equal(got.ravel(), vals.astype(np.int32))


def test_random_streams_identical_or_refused(tmp_path):
    """Random byte-offset streams: whenever fabio returns the image we return the same; otherwise OSError."""
    rng = np.random.default_rng(11)
    for trial in range(60):
        n = int(rng.integers(1, 60))
        blob = bytes(rng.choice([0x80, 0x00, 0x01, 0x7F, 0xFF, 0x81], size=int(rng.integers(1, 200))).astype(np.uint8))
        path = tmp_path / f"r{trial}.cbf"
        path.write_bytes(make_cbf(blob, 1, n))
        try:
            got = compiled_read(path)
        except OSError as e:
            assert str(path) in str(e)
            continue
        # We accepted it: the stream decodes to exactly n values with no byte left, so fabio must agree.
        assert same(got, fabio_read(path))


def test_md5_mismatch_refused_naming_the_file(tmp_path):
    data = frame_like(40, 30, np.random.default_rng(1))
    path = tmp_path / "bad_md5.cbf"
    fabio.cbfimage.CbfImage(data=data).write(str(path))
    raw = bytearray(path.read_bytes())
    start = raw.find(STARTER) + 4
    raw[start + 100] ^= 0x01  # one bit of one pixel
    path.write_bytes(bytes(raw))
    with pytest.raises(OSError, match=r"bad_md5\.cbf.*MD5"):
        xcca.io.read_image(path)
    with pytest.raises(OSError, match="MD5"):
        compiled_read(path)


def test_bad_content_md5_value_refused(tmp_path):
    blob = encode32([1, 2, 3])
    raw = make_cbf(blob, 1, 3).replace(b"Content-MD5: ", b"Content-MD5: !!")
    path = tmp_path / "m.cbf"
    path.write_bytes(raw)
    with pytest.raises(OSError, match="m.cbf.*Content-MD5"):
        xcca.io.read_image(path)


def test_no_md5_is_decoded(tmp_path):
    path = tmp_path / "nomd5.cbf"
    path.write_bytes(make_cbf(encode32([5, -1, 300]), 1, 3, md5=False))
    assert same(compiled_read(path), fabio_read(path))


@pytest.mark.parametrize("cut", [1, 2, 5, 100, 1000])
def test_truncated_files_refused(tmp_path, cut):
    data = frame_like(50, 40, np.random.default_rng(2))
    path = tmp_path / "cut.cbf"
    fabio.cbfimage.CbfImage(data=data).write(str(path))
    raw = path.read_bytes()
    size = int(raw.split(b"X-Binary-Size:")[1].split(b"\r\n")[0])
    blob_end = raw.find(STARTER) + 4 + size  # cut `cut` bytes off the end of the binary section
    path.write_bytes(raw[: blob_end - cut])
    with pytest.raises(OSError, match="cut.cbf"):
        xcca.io.read_image(path)


def test_escape_cut_at_end_refused(tmp_path):
    # The header's size and MD5 agree with the short blob: only the decoder can see the cut escape. fabio would
    # read past its buffer here.
    blob = encode32([1, 2, 40000])[:-2]
    path = tmp_path / "esc.cbf"
    path.write_bytes(make_cbf(blob, 1, 3))
    with pytest.raises(OSError, match="esc.cbf.*escape"):
        xcca.io.read_image(path)


def test_wrong_sizes_refused(tmp_path):
    vals = list(range(12))
    blob = encode32(vals)
    cases = {"few.cbf": make_cbf(blob, 4, 4),          # dims want 16 values, data hold 12 (fabio: AssertionError)
             "many.cbf": make_cbf(blob, 2, 5),         # 10 pixels, 12 values: bytes left over
             "nel.cbf": make_cbf(blob, 3, 4, nel=13)}  # Number-of-Elements disagrees with the dimensions
    for name, raw in cases.items():
        path = tmp_path / name
        path.write_bytes(raw)
        with pytest.raises(OSError, match=name.replace(".", r"\.")):
            xcca.io.read_image(path)
    with pytest.raises(Exception):
        fabio_read(tmp_path / "few.cbf")


def test_random_bytes_refused(tmp_path):
    rng = np.random.default_rng(3)
    path = tmp_path / "noise.cbf"
    path.write_bytes(bytes(rng.integers(0, 256, 5000, dtype=np.uint8)))
    with pytest.raises(OSError, match="noise.cbf"):
        xcca.io.read_image(path)
    # Random bytes behind a valid header (size and MD5 made to match): decoded exactly like fabio or refused.
    blob = bytes(rng.integers(0, 256, 3000, dtype=np.uint8))
    path = tmp_path / "noise2.cbf"
    path.write_bytes(make_cbf(blob, 1, 2000))
    with pytest.raises(OSError, match="noise2.cbf"):
        xcca.io.read_image(path)


def test_unhandled_files_go_to_fabio(tmp_path, monkeypatch):
    # Another element type: fabio decides (the compiled path declines).
    raw = make_cbf(encode32([1, 2, 3]), 1, 3, etype="signed 32-bit real IEEE")
    path = tmp_path / "real.cbf"
    path.write_bytes(raw)
    assert io._read_cbf_compiled(str(path)) is None
    # The switch turns the compiled path off: same pixels through fabio.
    data = frame_like(20, 30, np.random.default_rng(4))
    p2 = tmp_path / "f.cbf"
    fabio.cbfimage.CbfImage(data=data).write(str(p2))
    a = xcca.io.read_image(p2)
    monkeypatch.setattr(io, "USE_COMPILED_CBF", False)
    assert same(xcca.io.read_image(p2), a)


def test_threads_give_identical_pixels(tmp_path):
    data = frame_like(300, 200, np.random.default_rng(6))
    path = tmp_path / "t.cbf"
    fabio.cbfimage.CbfImage(data=data).write(str(path))
    assert same(io._read_cbf_compiled(str(path), n_threads=1), io._read_cbf_compiled(str(path), n_threads=2))


def test_core_md5_matches_hashlib():
    rng = np.random.default_rng(7)
    for n in (0, 1, 55, 56, 64, 65, 1000, 123457):
        b = bytes(rng.integers(0, 256, n, dtype=np.uint8))
        assert _core.md5(b) == hashlib.md5(b).digest()
        assert _core.md5(memoryview(b)) == hashlib.md5(b).digest()


def test_core_decoder_bad_arguments():
    out = np.empty(3, np.int32)
    with pytest.raises(ValueError, match="offset"):
        _core.cbf_byte_offset(b"\x01\x02\x03", 5, 1, out)
    with pytest.raises(ValueError, match="exceed"):
        _core.cbf_byte_offset(b"\x01\x02\x03", 1, 5, out)
    with pytest.raises(TypeError, match="integer"):
        _core.cbf_byte_offset(b"\x01\x02\x03", 0, 3, np.empty(3, np.float32))
    with pytest.raises(ValueError, match="16 bytes"):
        _core.cbf_byte_offset(b"\x01\x02\x03", 0, 3, out, b"abc")
    with pytest.raises(TypeError, match="writeable"):
        _core.cbf_byte_offset(b"\x01\x02\x03", 0, 3, np.empty((3, 2), np.int32)[:, 0])
    with pytest.raises(TypeError, match="n_threads"):
        _core.cbf_byte_offset(b"\x01\x02\x03", 0, 3, out, None, 1.5)
    st = _core.cbf_byte_offset(b"\x01\x02\x03", 0, 3, out)
    assert st[0] == 0 and list(out) == [1, 3, 6]
    assert os.sep  # (keeps the import used on every platform)
