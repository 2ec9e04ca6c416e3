"""Reading detector images: CBF/EDF/TIFF/... through fabio, HDF5 (incl. compressed Eiger data) through h5py.

HDF5 data is addressed as ``"file.h5::/entry/data"`` or ``read_image("file.h5", dataset="/entry/data")``.
"""
from __future__ import annotations

import base64
import errno
import hashlib
import logging
import os
import re
import stat
import threading
from typing import Callable, NamedTuple, Optional, Tuple, Union

import numpy as np

__all__ = ["read_image", "read_image_deferred", "split_hdf5_path"]

_log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

_HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs", ".nx5", ".cxi", ".he5")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_CBF_BINARY_START = b"\x0c\x1a\x04\xd5"


def split_hdf5_path(path: PathLike) -> Tuple[str, Optional[str]]:
    """Split an HDF5 address ``"file.h5::/entry/data"`` into file and dataset.

    Parameters
    ----------
    path : str or path-like
        A file name, optionally followed by ``::`` and an HDF5 dataset path.

    Returns
    -------
    (str, str or None)
        ``("file.h5", "/entry/data")``; without ``::``, ``(path, None)``.
    """
    s = os.fspath(path)
    if "::" in s:
        file, dset = s.split("::", 1)
        return file, dset
    return s, None


def _is_hdf5(path: str) -> bool:
    if path.lower().endswith(_HDF5_SUFFIXES):
        return True
    try:
        with open(path, "rb") as f:
            return f.read(8) == _HDF5_MAGIC
    except OSError:
        return False


def _check_cbf(path: str) -> None:
    """Reject a truncated or damaged uncompressed CBF before fabio sees it (fabio may hang, raise internals or return
    garbage on those): the binary section must be complete, and when the header carries a Content-MD5 (Pilatus
    and fabio write one) the MD5 of the binary section must match it."""
    with open(path, "rb") as f:
        raw = f.read()
    if not raw.startswith(b"###CBF"):
        if raw[:2] == b"\x1f\x8b" or raw[:3] == b"BZh":
            return  # compressed despite the name: fabio decides
        raise OSError(f"{path}: not a CBF file (no '###CBF' header)")
    start = raw.find(_CBF_BINARY_START)
    match = re.search(rb"X-Binary-Size:\s*(\d+)", raw[: start if start >= 0 else len(raw)])
    if start < 0 or match is None:
        raise OSError(f"{path}: truncated or corrupt CBF (no binary section)")
    need = int(match.group(1))
    have = len(raw) - start - len(_CBF_BINARY_START)
    if have < need:
        raise OSError(f"{path}: truncated CBF ({have} of {need} bytes of binary data)")
    md5 = re.search(rb"Content-MD5:\s*([A-Za-z0-9+/=]+)", raw[:start])
    if md5 is not None:
        body = memoryview(raw)[start + len(_CBF_BINARY_START): start + len(_CBF_BINARY_START) + need]
        got = base64.b64encode(hashlib.md5(body).digest())
        if got != md5.group(1):
            raise OSError(f"{path}: corrupt CBF: the binary section's MD5 {got.decode()} does not match the "
                          f"header's Content-MD5 {md5.group(1).decode()}")


# fabio's element types (cbfimage.DATA_TYPES); other types, other conversions or compressed files go to fabio.
_CBF_DTYPES = {"signed 8-bit integer": "i1", "signed 16-bit integer": "<i2", "signed 32-bit integer": "<i4",
               "signed 64-bit integer": "<i8", "unsigned 8-bit integer": "u1", "unsigned 16-bit integer": "<u2",
               "unsigned 32-bit integer": "<u4", "unsigned 64-bit integer": "<u8"}
_CBF_SECTION = b"--CIF-BINARY-FORMAT-SECTION--"

#: Decode byte-offset CBF with xcca's compiled kernel (False: always fabio; for tests and benchmarks).
USE_COMPILED_CBF = True


def _mime_value(head: bytes, key: bytes) -> Optional[bytes]:
    m = re.search(rb"(?m)^\s*" + re.escape(key) + rb"\s*[:=]\s*(.*?)\s*;?\s*$", head)
    return None if m is None else m.group(1).strip(b' "\r\t')


class _CbfFrame(NamedTuple):
    """A byte-offset CBF as the compiled decoders take it (from :func:`_cbf_frame`)."""

    raw: Union[bytes, np.ndarray]  # the file's bytes (a uint8 array when read piece by piece)
    body: int                      # offset of the binary section in `raw`
    need: int                      # its size (X-Binary-Size)
    h: int                         # X-Binary-Size-Second-Dimension
    w: int                         # X-Binary-Size-Fastest-Dimension
    dtype: str                     # NumPy dtype of the pixels
    expected: Optional[bytes]      # the raw 16-byte Content-MD5 still to check (None: none, or checked elsewhere)
    md5_text: Optional[bytes]      # the header's Content-MD5 value (for messages)


# Deferred reads: the first _CBF_HEAD_BYTES hold the header (Pilatus and fabio write ~1-4 KB), the rest is read in
# _CBF_READ_CHUNK pieces that the MD5 thread hashes as they arrive.
_CBF_HEAD_BYTES = 1 << 16
_CBF_READ_CHUNK = 1 << 20


def _cbf_header(path: str, raw: Union[bytes, bytearray], total: int) -> Optional[tuple]:
    """Parse a CBF header from `raw` (the file's first bytes, up to at least the binary section's start; `total`:
    the file's size). Returns (body, need, h, w, dtype, expected_md5, md5_text), or None for a file the compiled
    path does not handle (compressed, another conversion, an unknown element type, no dimensions, the binary
    section not in `raw`). Raises OSError for a damaged header (see :func:`_cbf_frame`)."""
    if not raw.startswith(b"###CBF"):
        return None
    start = raw.find(_CBF_BINARY_START)
    if start < 0:
        return None
    sec = raw.rfind(_CBF_SECTION, 0, start)
    if sec < 0:
        return None
    head = raw[sec:start]
    conv = _mime_value(head, b"conversions")
    size = _mime_value(head, b"X-Binary-Size")
    fast = _mime_value(head, b"X-Binary-Size-Fastest-Dimension")
    slow = _mime_value(head, b"X-Binary-Size-Second-Dimension")
    etype = _mime_value(head, b"X-Binary-Element-Type")
    if conv != b"x-CBF_BYTE_OFFSET" or size is None or fast is None or slow is None:
        return None
    dtype = _CBF_DTYPES.get((etype or b"signed 32-bit integer").decode("latin-1"))
    if dtype is None:
        return None
    try:
        need, w, h = int(size), int(fast), int(slow)
    except ValueError:
        return None
    if need < 0 or w <= 0 or h <= 0:
        return None
    nel = _mime_value(head, b"X-Binary-Number-of-Elements")
    if nel is not None and nel.isdigit() and int(nel) != w * h:
        raise OSError(f"{path}: corrupt CBF: X-Binary-Number-of-Elements {int(nel)} is not {h} x {w} (wrong sizes)")
    body = start + len(_CBF_BINARY_START)
    _check_have(path, total - body, need)
    md5 = _mime_value(raw[:start], b"Content-MD5")
    expected = None
    if md5 is not None:
        try:
            expected = base64.b64decode(md5, validate=True)
        except ValueError:
            expected = b""
        if len(expected) != 16:
            raise OSError(f"{path}: corrupt CBF: Content-MD5 {md5.decode('latin-1')!r} is not a base64 MD5 digest")
    return body, need, h, w, dtype, expected, md5


def _check_have(path: str, have: int, need: int) -> None:
    if have < need:
        raise OSError(f"{path}: truncated CBF ({max(have, 0)} of {need} bytes of binary data)")


def _cbf_frame(path: str, checks: Optional[list] = None) -> Optional[_CbfFrame]:
    """Read a CBF and parse what the compiled byte-offset decoders need, or return None to let fabio read it.

    Only the binary section's MIME header matters. Files the compiled path does not handle (compressed, another
    conversion, an unknown element type, no dimensions) return None. Damaged headers raise OSError naming the file:
    a short binary section, an X-Binary-Number-of-Elements that is not the product of the dimensions, a
    Content-MD5 that is not a base64 MD5 digest.

    With a `checks` list the Content-MD5 check is deferred (:func:`read_image_deferred`): it starts on a pool
    thread as soon as the header is parsed and hashes the binary section piece by piece while this thread is still
    reading the file (hashlib and file reads release the GIL), so the MD5 -- as slow as everything else of a
    thumbnail together -- does not wait for the read. Its future is appended to `checks` (the caller must wait for
    it before it lets anything made from the pixels out) and the frame's `expected` is None.
    """
    with open(path, "rb") as f:
        if checks is None:
            raw = f.read()
            parsed = _cbf_header(path, raw, len(raw))
            return None if parsed is None else _CbfFrame(raw, *parsed)
        total = os.fstat(f.fileno()).st_size
        raw = f.read(_CBF_HEAD_BYTES)
        parsed = _cbf_header(path, raw, total) if len(raw) < total else None
        if parsed is None or parsed[0] + parsed[1] <= len(raw):
            # Small file, huge header or not ours: read it whole and hash it afterwards.
            raw += f.read()
            parsed = _cbf_header(path, raw, len(raw))
            if parsed is None:
                return None
            body, need, expected, md5 = parsed[0], parsed[1], parsed[5], parsed[6]
            if expected is not None:
                checks.append(_md5_pool().submit(_md5_check, path, memoryview(raw)[body:body + need], expected,
                                                 md5))
            return _CbfFrame(raw, *parsed[:5], None, md5)
        body, need, expected, md5 = parsed[0], parsed[1], parsed[5], parsed[6]
        buf = np.empty(total, np.uint8)  # not bytearray(total): no 6 MB zero fill before the read
        have = len(raw)
        buf[:have] = np.frombuffer(raw, np.uint8)
        view = memoryview(buf)
        feed = None if expected is None else _Md5Feed(buf, body, body + need)
        if feed is not None:  # from here on every way out says done, so that the MD5 thread never waits forever
            checks.append(_md5_pool().submit(_md5_feed_check, path, feed, expected, md5))
        try:
            while have < total:
                n = f.readinto(view[have:min(total, have + _CBF_READ_CHUNK)])
                if not n:
                    break  # the file shrank since fstat
                have += n
                if feed is not None:
                    feed.advance(have)
        finally:
            if feed is not None:
                feed.advance(have, done=True)
            view.release()
    _check_have(path, have - body, need)
    return _CbfFrame(buf, *parsed[:5], None, md5)


class _Md5Feed:
    """buf[start:stop] handed to the MD5 thread as the reading thread fills buf (:func:`_cbf_frame`)."""

    def __init__(self, buf: np.ndarray, start: int, stop: int) -> None:
        self.buf, self.start, self.stop = buf, start, stop
        self._have, self._done = 0, False
        self._cond = threading.Condition()

    def advance(self, have: int, done: bool = False) -> None:
        """buf[:have] is read; done: nothing more will come."""
        with self._cond:
            self._have = have
            self._done = self._done or done
            self._cond.notify()

    def digest(self) -> Optional[bytes]:
        """The MD5 of buf[start:stop], hashed piece by piece as it arrives; None if the reading stopped short."""
        h = hashlib.md5()
        pos = self.start
        view = memoryview(self.buf)
        try:
            while pos < self.stop:
                with self._cond:
                    while self._have <= pos and not self._done:
                        self._cond.wait()
                    upto = min(self._have, self.stop)
                if upto <= pos:
                    return None  # the file was shorter than its header says: the reader reports it
                h.update(view[pos:upto])
                pos = upto
        finally:
            view.release()
        return h.digest()


def _md5_feed_check(path: str, feed: _Md5Feed, expected: bytes, header_value: bytes) -> None:
    digest = feed.digest()
    if digest is not None and digest != expected:
        raise OSError(f"{path}: corrupt CBF: the binary section's MD5 {base64.b64encode(digest).decode()} does not "
                      f"match the header's Content-MD5 {header_value.decode('latin-1')}")


def _cbf_decode(path: str, fr: _CbfFrame, decode: Callable[[Optional[bytes]], tuple],
                n_threads: Optional[int] = None) -> None:
    """Run a compiled byte-offset decode of `fr` and turn its status into the reader's OSError.

    ``decode(expected_md5)`` calls the kernel (xcca._core.cbf_byte_offset or cbf_byte_offset_bin_max) with
    ``fr.expected``: when that is not None the kernel checks the Content-MD5 itself on a second thread while it
    decodes. On one thread (`n_threads` 1 or one usable core) the MD5 is hashlib's instead, after the decode
    (OpenSSL's MD5 is ~1.1x faster than the kernel's here: 13.2-14.1 vs 14.6-15.2 ms for a Pilatus 6M frame);
    a mismatch is still reported before any decode error.
    """
    from .binning import _resolve_threads

    here = fr.expected is not None and _resolve_threads(n_threads) < 2
    status, message, values, used, digest = decode(None if here else fr.expected)
    if here:
        digest = hashlib.md5(memoryview(fr.raw)[fr.body:fr.body + fr.need]).digest()
        if digest != fr.expected:
            status = 4
    if status == 4:  # md5_mismatch
        got = base64.b64encode(digest).decode()
        raise OSError(f"{path}: corrupt CBF: the binary section's MD5 {got} does not match the header's "
                      f"Content-MD5 {fr.md5_text.decode('latin-1')}")
    if status != 0:
        raise OSError(f"{path}: corrupt CBF: {message} ({values} of {fr.h * fr.w} pixels from {used} of "
                      f"{fr.need} bytes)")


def _read_cbf_compiled(path: str, n_threads: Optional[int] = None) -> Optional[np.ndarray]:
    """Decode a byte-offset CBF with the compiled kernel, or return None to let fabio read it.

    The header is parsed by :func:`_cbf_frame`; the binary section goes to xcca._core.cbf_byte_offset, which also
    checks the header's Content-MD5 (on a second thread while it decodes; deferred under
    :func:`read_image_deferred`). The pixels are bit-identical to fabio's. Files this path does not handle return
    None and go to fabio unchanged. Damaged files raise OSError naming the file where fabio would fail or return
    garbage: a short binary section, an escape cut off by the end of the data, fewer values than pixels, bytes left
    after the last pixel or an X-Binary-Number-of-Elements that is not the product of the dimensions (wrong sizes),
    a Content-MD5 mismatch.
    """
    fr = _cbf_frame(path, getattr(_deferred, "checks", None))
    return None if fr is None else _cbf_pixels(path, fr, n_threads)


def _cbf_pixels(path: str, fr: _CbfFrame, n_threads: Optional[int] = None) -> np.ndarray:
    """The pixels of `fr` (from :func:`_cbf_frame`), decoded by xcca._core.cbf_byte_offset; errors as
    :func:`_read_cbf_compiled`."""
    from . import _core

    out = np.empty((fr.h, fr.w), np.dtype(fr.dtype).newbyteorder("="))
    _cbf_decode(path, fr, lambda exp: _core.cbf_byte_offset(fr.raw, fr.body, fr.need, out, exp, n_threads),
                n_threads)
    return out


def _cbf_bin_max(path: str, fr: _CbfFrame, factor: int,
                 n_threads: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode an int32 byte-offset CBF (`fr` from :func:`_cbf_frame`, dtype ``<i4``) straight into its
    `factor` x `factor` block maxima and the rows and columns without a pixel >= 0, never storing the frame
    (xcca._core.cbf_byte_offset_bin_max; spec :func:`xcca.reference.cbf_bin_max`). Errors and the MD5 as
    :func:`_cbf_pixels`.

    Returns
    -------
    (ndarray int32 (ceil(h / factor), ceil(w / factor)), ndarray bool (h,), ndarray bool (w,))
        ``bin_max(frame, factor)`` and ``reference.empty_lines(frame)`` of the decoded frame.
    """
    from . import _core

    binned = np.empty((-(-fr.h // factor), -(-fr.w // factor)), np.int32)
    er = np.empty(fr.h, np.uint8)
    ec = np.empty(fr.w, np.uint8)
    _cbf_decode(path, fr, lambda exp: _core.cbf_byte_offset_bin_max(fr.raw, fr.body, fr.need, fr.h, fr.w, factor,
                                                                    binned, er, ec, exp, n_threads), n_threads)
    return binned, er.view(np.bool_), ec.view(np.bool_)


_deferred = threading.local()  # .checks: list of MD5 futures while read_image_deferred runs on this thread
_md5_executor = None
_md5_lock = threading.Lock()


def _md5_pool():
    global _md5_executor
    with _md5_lock:
        if _md5_executor is None:
            from concurrent.futures import ThreadPoolExecutor

            _md5_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="xcca-cbf-md5")
        return _md5_executor


def _md5_check(path: str, body: memoryview, expected: bytes, header_value: bytes) -> None:
    digest = hashlib.md5(body).digest()
    if digest != expected:
        raise OSError(f"{path}: corrupt CBF: the binary section's MD5 {base64.b64encode(digest).decode()} does not "
                      f"match the header's Content-MD5 {header_value.decode('latin-1')}")


def read_image_deferred(path: PathLike, dataset: Optional[str] = None,
                        frame: Optional[int] = None) -> Tuple[np.ndarray, Callable[[], None]]:
    """Read one detector image like :func:`read_image`, with the CBF Content-MD5 check still running.

    For a byte-offset CBF with a Content-MD5 the pixels are returned as soon as they are decoded while the MD5 of
    the binary section is computed on another thread; every other file is read (and checked) exactly as by
    :func:`read_image`. Call the returned `verify` before anything made from the pixels leaves the program (e.g.
    pass it to :func:`xcca.thumbnail.write_png`, which calls it before the PNG is renamed into place): until it
    returned, the data may come from a corrupt file.

    Parameters
    ----------
    path : str or path-like
        As for :func:`read_image`.
    dataset : str, optional
        As for :func:`read_image`.
    frame : int, optional
        As for :func:`read_image`.

    Returns
    -------
    data : ndarray
        As returned by :func:`read_image`.
    verify : callable
        ``verify()`` waits for the pending check and raises OSError naming the file if the binary section's MD5
        does not match the header's Content-MD5; it returns None otherwise (at once when nothing is pending).

    Raises
    ------
    FileNotFoundError, OSError, ValueError
        As :func:`read_image` (all checks but the deferred MD5).
    """
    _deferred.checks = checks = []
    try:
        data = read_image(path, dataset=dataset, frame=frame)
    finally:
        _deferred.checks = None

    def verify() -> None:
        for fut in checks:
            fut.result()

    return data, verify


_EDF_ITEMSIZE = {"signedbyte": 1, "unsignedbyte": 1, "signedshort": 2, "unsignedshort": 2, "signedinteger": 4,
                 "unsignedinteger": 4, "signedlong": 4, "unsignedlong": 4, "signed64": 8, "unsigned64": 8,
                 "floatvalue": 4, "float": 4, "doublevalue": 8, "double": 8}


def _check_edf(path: str) -> None:
    """Reject a truncated EDF (fabio zero-fills the missing data): every header block's data (``Size`` bytes, or
    Dim_1 x Dim_2 x the item size) must be present in the file."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        pos, block = 0, 0
        while pos < size:
            f.seek(pos)
            head = f.read(1 << 16)
            lead = len(head) - len(head.lstrip())
            if not head.strip():
                return  # trailing padding
            if head[lead:lead + 1] != b"{":
                if block == 0:
                    return  # not a plain EDF (e.g. compressed): fabio decides
                raise OSError(f"{path}: corrupt EDF (block {block} does not start with a header)")
            end = head.find(b"}", lead)
            if end < 0:
                raise OSError(f"{path}: truncated EDF (header of block {block} is not closed)")
            data_start = pos + end + 1 + (1 if head[end + 1:end + 2] == b"\n" else 0)
            keys = {k.strip().lower(): v.strip() for k, v in
                    re.findall(r"([A-Za-z0-9_]+)\s*=\s*([^;]*);", head[lead:end].decode("latin-1"))}
            try:
                if "size" in keys:
                    need = int(keys["size"])
                else:
                    item = _EDF_ITEMSIZE.get(keys.get("datatype", "").lower(), 0)
                    need = int(keys.get("dim_1", 0)) * int(keys.get("dim_2", 1)) * item
            except ValueError:
                raise OSError(f"{path}: corrupt EDF header (block {block}: bad Size or Dim)") from None
            have = size - data_start
            if have < need:
                raise OSError(f"{path}: truncated EDF ({max(have, 0)} of {need} bytes of data in block {block})")
            pos, block = data_start + need, block + 1


def _read_hdf5(file: str, dataset: str, frame: Optional[int]) -> np.ndarray:
    import h5py
    import hdf5plugin  # noqa: F401  (registers the Eiger/bitshuffle/LZ4 filters)

    try:
        f = h5py.File(file, "r")
    except OSError as e:
        raise OSError(f"{file}: not a readable HDF5 file ({e})") from None
    with f:
        if dataset not in f:
            raise ValueError(f"{file}: no dataset {dataset!r} in this HDF5 file")
        ds = f[dataset]
        if not isinstance(ds, h5py.Dataset):
            raise ValueError(f"{file}: {dataset!r} is a group, not a dataset")
        if ds.ndim not in (2, 3):
            raise ValueError(f"{file}::{dataset} has shape {ds.shape}; expected an image (H, W) or a stack (N, H, W)")
        try:
            if frame is None:
                return ds[()]
            if ds.ndim == 2:
                _check_frame(frame, 1, f"{file}::{dataset}")
                return ds[()]
            _check_frame(frame, ds.shape[0], f"{file}::{dataset}")
            return ds[frame]
        except (OSError, RuntimeError) as e:  # e.g. a missing compression filter or a damaged chunk
            raise OSError(f"{file}::{dataset}: cannot read data ({e})") from None


def _check_frame(frame: int, n: int, where: str) -> None:
    if isinstance(frame, (bool, np.bool_)) or not isinstance(frame, (int, np.integer)):
        raise TypeError(f"frame must be an int, got {frame!r}")
    if not -n <= frame < n:
        raise IndexError(f"frame {frame} out of range for {where} with {n} frame(s)")


def _compiled_cbf_route(file: str, frame: Optional[int]) -> bool:
    """Whether a fabio-read `file` goes to the compiled byte-offset CBF reader first (:func:`_read_fabio`; the one
    rule that :func:`_compiled_cbf_file` shares with it)."""
    return USE_COMPILED_CBF and frame in (None, 0) and file.lower().endswith(".cbf")


def _compiled_cbf_file(path: PathLike, dataset: Optional[str], frame: Optional[int]) -> Optional[str]:
    """The file name when :func:`read_image` would hand `path` to the compiled byte-offset CBF reader (a regular,
    non-empty, non-HDF5 ``.cbf`` file, no dataset, frame None or 0); None when it would take another route (which
    includes every error it reports before reading)."""
    if dataset is not None:
        return None
    file, dset = split_hdf5_path(path)
    if dset is not None or not _compiled_cbf_route(file, frame):
        return None
    try:
        st = os.stat(file)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_size == 0 or _is_hdf5(file):
        return None
    return file


def _read_fabio(path: str, frame: Optional[int]) -> np.ndarray:
    import fabio

    low = path.lower()
    if low.endswith(".cbf"):
        if _compiled_cbf_route(path, frame):
            data = _read_cbf_compiled(path)
            if data is not None:
                return data
        _check_cbf(path)
    elif low.endswith(".edf"):
        _check_edf(path)
    try:
        img = fabio.open(path)
    except Exception as e:  # fabio raises many types for unreadable files; its internals are not the user's problem
        _log.debug("fabio.open(%s) failed", path, exc_info=True)
        detail = f" ({e})" if isinstance(e, (OSError, ValueError)) and str(e) else ""
        raise OSError(f"{path}: not a readable detector image (unknown, damaged or unsupported format){detail}") \
            from None
    try:
        n = int(getattr(img, "nframes", 1) or 1)
        if frame is None and n > 1:
            data = np.stack([np.asarray(img.getframe(i).data) for i in range(n)])
        elif frame is None or n == 1:
            if frame is not None:
                _check_frame(frame, 1, path)
            data = img.data
        else:
            _check_frame(frame, n, path)
            data = img.getframe(frame % n).data
    except (IndexError, TypeError):
        raise
    except Exception:
        _log.debug("fabio could not decode %s", path, exc_info=True)
        raise OSError(f"{path}: corrupt detector image (its data cannot be decoded)") from None
    finally:
        close = getattr(img, "close", None)
        if close is not None:
            close()
    if data is None or np.asarray(data).ndim not in (2, 3) or np.asarray(data).size == 0:
        raise OSError(f"{path}: no image data")
    return np.asarray(data)


def read_image(path: PathLike, dataset: Optional[str] = None, frame: Optional[int] = None) -> np.ndarray:
    """Read one detector image (or a stack) from a file.

    Parameters
    ----------
    path : str or path-like
        A detector image readable by fabio (CBF, EDF, TIFF, ...) or an HDF5 file. HDF5 data may be addressed as
        ``"file.h5::/entry/data"``.
    dataset : str, optional
        The HDF5 dataset (instead of the ``::`` form). Required for HDF5 files.
    frame : int, optional
        Index of the frame in a stack (HDF5 dataset (N, H, W) or a multi-frame file); negative counts from the end.
        None returns the whole file: (H, W) for one frame, (N, H, W) for a stack. 0 is also accepted for a
        single frame.

    Returns
    -------
    ndarray
        The stored dtype (e.g. int32 for Pilatus CBF, uint32/uint16 for Eiger), possibly big-endian.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    OSError
        The file is unreadable, empty, a directory, a FIFO or device (never opened, so never a hang), corrupt or
        truncated: a CBF whose binary section is short, fails the header's Content-MD5 or does not decode to
        exactly the header's pixel count (byte-offset CBF is decoded by xcca's compiled kernel, bit-identical to
        fabio; other CBF variants by fabio), an EDF with fewer data
        bytes than its header announces (fabio would zero-fill it), or data fabio cannot decode. The message names
        the file.
    ValueError
        An HDF5 file without a dataset, a missing dataset, or data that is not an image.
    """
    file, dset = split_hdf5_path(path)
    if dataset is not None:
        if dset is not None and dset != dataset:
            raise ValueError(f"{path}: dataset given twice ({dset!r} in the path and dataset={dataset!r})")
        dset = dataset
    try:
        st = os.stat(file)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "no such file", file) from None
    except OSError as e:
        raise OSError(e.errno, f"cannot access the file ({e.strerror})", file) from None
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory, not an image file", file)
    if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or stream forever: never opened
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else "not a regular file"
        raise OSError(errno.EINVAL, f"is {kind}, not an image file", file)
    if st.st_size == 0:
        raise OSError(errno.EINVAL, "is empty (0 bytes), not an image file", file)
    if dset is not None or _is_hdf5(file):
        if dset is None:
            raise ValueError(f"{file}: an HDF5 file needs a dataset: use 'FILE::/entry/data' or dataset=")
        data = _read_hdf5(file, dset, frame)
    else:
        data = _read_fabio(file, frame)
    _log.debug("read %s: shape %s, dtype %s", path, data.shape, data.dtype)
    return data
