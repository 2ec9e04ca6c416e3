"""The SIMD run decoder of the int32 byte-offset kernels (cpp/src/cbf.cpp: escape-free runs decoded 16 (AVX-512)
or 8 (AVX2) deltas per vector, the scalar loop for escapes and tails) against the spec
xcca.reference.cbf_byte_offset_int32: random streams with 1-byte deltas, 16-bit, 32-bit and (for int32 a plain
delta) 64-bit-marker escapes at every offset, runs crossing 8/16/32/64-byte blocks and the kernels' row chunks,
truncations inside escapes, too few and too many bytes. Each CPU path (AVX-512, AVX2, scalar; forced with
XCCA_DISABLE_AVX512 / XCCA_DISABLE_AVX2, read once per process) is checked in a subprocess too.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import xcca
from xcca import _core, reference

STATUS = {"ok": 0, "truncated_escape": 1, "too_few_values": 2, "trailing_bytes": 3, "md5_mismatch": 4}

# One piece of a stream: a run of escape-free bytes, or one escape (its kind and delta).
_run = st.tuples(st.just("run"), st.integers(0, 150), st.integers(0, 2**32 - 1))
_esc16 = st.tuples(st.just("e16"), st.integers(-32767, 32767), st.just(0))
_esc32 = st.tuples(st.just("e32"), st.integers(-(2**31), 2**31 - 1), st.just(0))
_esc64 = st.tuples(st.just("e64"), st.integers(-(2**31), 2**31 - 1), st.just(0))  # int32: the 32-bit INT32_MIN
_bare = st.tuples(st.just("bare"), st.integers(0, 3), st.just(0))  # 0x80 with 0-3 random bytes: cut escapes


def build(pieces, rng_bytes=None) -> bytes:
    out = bytearray()
    for kind, a, seed in pieces:
        if kind == "run":
            b = np.random.default_rng(seed).integers(0, 256, a).astype(np.uint8)
            b[b == 0x80] = 0x7F  # no escape byte inside a run
            out += b.tobytes()
        elif kind == "e16":
            out += b"\x80" + int(a).to_bytes(2, "little", signed=True)
        elif kind == "e32":
            out += b"\x80\x00\x80" + int(a).to_bytes(4, "little", signed=True)
        elif kind == "e64":
            out += b"\x80\x00\x80\x00\x00\x00\x80"  # int32 INT32_MIN: a delta for int32, never the 64-bit marker
        else:
            out += b"\x80" + bytes([0x00, 0x80, 0x00][:a])
    return bytes(out)


def check_stream(blob: bytes, n_values: int, widths=(1, 3, 7, 16, 17, 64, 65)) -> None:
    status, values, used = reference.cbf_byte_offset_int32(blob, n_values)
    pad = np.full(n_values + 4, 12345, np.int32)
    out = pad[1:n_values + 1]  # not 64-byte aligned
    res = _core.cbf_byte_offset(blob, 0, len(blob), out, None, 1)
    assert (res[0], res[2], res[3]) == (STATUS[status], len(values), used)
    assert np.array_equal(out[:len(values)], values)
    assert pad[0] == 12345 and pad[n_values + 1] == 12345  # nothing written outside
    # The fused kernel chunks by image rows: every width that divides n_values.
    for w in widths:
        if n_values % w or n_values == 0:
            continue
        h = n_values // w
        for f in (1, 3):
            binned = np.empty((-(-h // f), -(-w // f)), np.int32)
            er, ec = np.empty(h, np.uint8), np.empty(w, np.uint8)
            r = _core.cbf_byte_offset_bin_max(blob, 0, len(blob), h, w, f, binned, er, ec, None, 1)
            ref = reference.cbf_bin_max(blob, h, w, f)
            assert (r[0], r[2], r[3]) == (STATUS[ref[0]], ref[1], ref[2])
            if ref[0] == "ok":
                assert np.array_equal(binned, ref[3])
                assert np.array_equal(er.view(bool), ref[4]) and np.array_equal(ec.view(bool), ref[5])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_run, _run, _esc16, _esc32, _esc64, _bare), max_size=12), st.integers(-3, 3),
       st.integers(0, 10))
def test_random_streams_equal_spec(pieces, extra, cut):
    blob = build(pieces)
    if cut and blob:  # truncated: possibly inside an escape
        blob = blob[:max(0, len(blob) - cut)]
    status, values, used = reference.cbf_byte_offset_int32(blob, 10**9)  # how many values the bytes hold
    check_stream(blob, max(0, len(values) + extra))


@pytest.mark.parametrize("pos", range(0, 130))
def test_escape_at_every_offset(pos):
    """One escape of each kind at every offset of a 200-byte run (every place within 8/16/32/64-byte blocks)."""
    rng = np.random.default_rng(pos)
    base = rng.integers(0, 256, 200).astype(np.uint8)
    base[base == 0x80] = 0x01
    for esc in (b"\x80\x10\x27", b"\x80\x00\x80\x40\x42\x0f\x00", b"\x80\x00\x80\x00\x00\x00\x80", b"\x80"):
        blob = base[:pos].tobytes() + esc + base[pos:].tobytes()
        n = len(reference.cbf_byte_offset_int32(blob, 10**9)[1])
        check_stream(blob, n, widths=(1, 16, n or 1))
        check_stream(blob[:pos + len(esc) - 1], n)  # cut inside the escape (or just before it)


def test_pilatus_frame_identical():
    frame = xcca.datasets.pilatus6m()
    from test_cbf import encode32

    blob = encode32(frame)
    out = np.empty(frame.shape, np.int32)
    res = _core.cbf_byte_offset(blob, 0, len(blob), out, None, 1)
    assert res[0] == 0 and np.array_equal(out, frame)


_SUBPROCESS = r"""
import numpy as np, sys
sys.path.insert(0, {tests!r})
from test_cbf_simd import build, check_stream
from xcca import reference
rng = np.random.default_rng(7)
for t in range(400):
    pieces = []
    for _ in range(int(rng.integers(0, 10))):
        k = int(rng.integers(0, 6))
        if k < 2:
            pieces.append(("run", int(rng.integers(0, 150)), int(rng.integers(0, 2**32))))
        elif k == 2:
            pieces.append(("e16", int(rng.integers(-32767, 32768)), 0))
        elif k == 3:
            pieces.append(("e32", int(rng.integers(-(2**31), 2**31)), 0))
        elif k == 4:
            pieces.append(("e64", 0, 0))
        else:
            pieces.append(("bare", int(rng.integers(0, 4)), 0))
    blob = build(pieces)
    if rng.random() < 0.3 and blob:
        blob = blob[:len(blob) - int(rng.integers(1, 8))]
    n = len(reference.cbf_byte_offset_int32(blob, 10**9)[1])
    check_stream(blob, max(0, n + int(rng.integers(-3, 4))))
print("ok")
"""


@pytest.mark.parametrize("env", [{"XCCA_DISABLE_AVX512": "1"}, {"XCCA_DISABLE_AVX2": "1"}, {}])
def test_every_cpu_path(env):
    tests = os.path.dirname(os.path.abspath(__file__))
    r = subprocess.run([sys.executable, "-c", _SUBPROCESS.format(tests=tests)], env={**os.environ, **env},
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
