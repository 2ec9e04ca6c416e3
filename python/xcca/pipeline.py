"""The whole correlation analysis of a run, streamed: detector frames -> polar rings -> pairs -> difference correlations.

:func:`analyze` reads frames in chunks from an HDF5 stack (N, H, W), a list of image files or an in-memory array,
never holding the run, and makes two passes over it:

1. per frame: polar remap -> per-ring outlier removal -> ring-profile fit of the pairing ring; the masked angular
   autocorrelation of every ring is accumulated (the *raw* correlation), with the mean polar image and the radial
   profile; the fitted profiles are kept as low-dimensional features (O(N·D) memory, D = deg + 1);
2. pairing of shots with similar ring profiles; then, for each pair, the difference of the two polar images (with the
   combined mask) is correlated and accumulated (the *difference* correlation, which cancels detector artefacts).

Each stage is a plain function over a chunk (``polar_stage``, ``clean_stage``, ``profile_stage``, ``autocorr_stage``,
``pair_stage``, ``diffcorr_stage``) whose partial sums are :class:`Accumulator` objects that add up, so the same
stages can be mapped over a cluster (e.g. Dask) and reduced. The kernels come from a backend: ``"xcca"`` (the
compiled kernels of this package) or ``"numpy"`` (the same pipeline in NumPy/SciPy, for comparison and testing).

Corrupt frames (unreadable, wrong shape, no nonzero valid pixel, non-finite valid pixels) are skipped and listed in
the result with the reason, never fatal. Masks: True = valid pixel (LOKI's convention).

Conventions: centre ``(x, y)`` in pixels with x along columns; radii in pixels; ``φ_j = 2πj/nphi``; lag ``k`` is
``Δ = 2πk/nphi``; ``cos ψ = cos Δ cos²θ + sin²θ`` with ``θ = arcsin(qλ/4π)`` (q and λ in reciprocal units, e.g.
1/Å and Å).
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import io as _io
from .io import _is_hdf5

__all__ = [
    "analyze",
    "AnalysisResult",
    "Accumulator",
    "FrameSource",
    "open_source",
    "find_center",
    "check_frames",
    "polar_stage",
    "clean_stage",
    "profile_stage",
    "autocorr_stage",
    "pair_stage",
    "diffcorr_stage",
    "diffcorr_pairs_stage",
    "outlier_mask",
    "make_kernels",
]

_log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------- frame sources


class FrameSource:
    """Random-access reader of a run's frames, one frame or a range at a time.

    Use :func:`open_source` to build one. ``len(src)`` is the number of frames; ``src.shape`` the (H, W) expected of
    every frame; ``src.read(start, stop)`` returns ``(frames, errors)`` where ``errors[i]`` is None or a message for a
    frame that could not be read (its slot in ``frames`` is then zero); ``src.read_indices(idx)`` is the same for
    arbitrary indices. A FrameSource is a context manager that closes what it opened.
    """

    def __init__(self, n: int, shape: Tuple[int, int], dtype, describe: str):
        self.n = int(n)
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)
        self.describe = describe

    def __len__(self) -> int:
        return self.n

    def _read_one(self, i: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _read_range(self, start: int, stop: int, out: Optional[np.ndarray] = None) -> np.ndarray:
        return np.stack([self._read_one(i) for i in range(start, stop)])

    def _buffer(self, m: int, out: Optional[np.ndarray]) -> Optional[np.ndarray]:
        """``out[:m]`` if ``out`` can hold m frames of this source, else None."""
        if out is None or out.dtype != self.dtype or out.shape[1:] != self.shape or len(out) < m \
                or not out.flags.c_contiguous or not out.flags.writeable:
            return None
        return out[:m]

    def read(self, start: int, stop: int, out: Optional[np.ndarray] = None
             ) -> Tuple[np.ndarray, List[Optional[str]]]:
        """Frames ``start:stop`` as an array (stop - start, H, W) and the per-frame read errors.

        ``out``: a reusable C-contiguous buffer (>= stop - start, H, W) of the source's dtype; the frames are then
        read into it where the source allows (the result is a view of it), saving an allocation per chunk.
        """
        try:
            frames = self._read_range(start, stop, out)
            if frames.shape[1:] != self.shape:
                raise ValueError("shape")
            return frames, [None] * (stop - start)
        except Exception:  # a bad frame in the block: fall back to frame by frame to isolate it
            return self.read_indices(range(start, stop), out)

    def read_indices(self, indices, out: Optional[np.ndarray] = None) -> Tuple[np.ndarray, List[Optional[str]]]:
        """Frames at ``indices`` (any order) and the per-frame read errors (``out``: as in :meth:`read`)."""
        indices = list(indices)
        buf = self._buffer(len(indices), out)
        if buf is None:
            out = np.zeros((len(indices), *self.shape), dtype=self.dtype)
        else:
            out = buf
        errors: List[Optional[str]] = []
        for k, i in enumerate(indices):
            try:
                fr = np.asarray(self._read_one(int(i)))
            except Exception as exc:  # noqa: BLE001 - any reader failure makes the frame corrupt, not the run
                errors.append(f"unreadable: {type(exc).__name__}: {exc}")
                continue
            if fr.shape != self.shape:
                errors.append(f"wrong shape {fr.shape}, expected {self.shape}")
                continue
            if fr.dtype.kind not in "biuf":
                errors.append(f"unsupported dtype {fr.dtype}")
                continue
            out[k] = fr
            errors.append(None)
        if buf is not None:
            for k, e in enumerate(errors):
                if e is not None:
                    out[k] = 0  # a reused buffer holds an older frame there
        return out, errors

    def close(self) -> None:
        pass

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _ArraySource(FrameSource):
    def __init__(self, arr, describe: str = "array", closer: Optional[Callable[[], None]] = None):
        if len(arr.shape) == 2 and isinstance(arr, np.ndarray):  # one image
            arr = arr[None]
        if len(arr.shape) != 3:
            raise ValueError(f"a frame stack must be 3-D (N, H, W) (or one 2-D image), got shape {arr.shape}")
        if np.dtype(arr.dtype).kind not in "biuf":
            raise TypeError(f"frames must have a real numeric dtype, got {arr.dtype}")
        super().__init__(arr.shape[0], arr.shape[1:], arr.dtype if np.dtype(arr.dtype).kind != "b" else np.uint8,
                         describe)
        self._arr = arr
        self._closer = closer

    def _read_one(self, i: int) -> np.ndarray:
        return np.asarray(self._arr[i])

    def _read_range(self, start: int, stop: int, out: Optional[np.ndarray] = None) -> np.ndarray:
        buf = self._buffer(stop - start, out)
        if buf is not None and hasattr(self._arr, "read_direct") and self._arr.dtype == buf.dtype:
            # h5py: straight into the reused buffer (no allocation, no page faults of a fresh 10s-of-MB array)
            self._arr.read_direct(buf, np.s_[start:stop])
            return buf
        return np.asarray(self._arr[start:stop])

    def read_indices(self, indices, out: Optional[np.ndarray] = None) -> Tuple[np.ndarray, List[Optional[str]]]:
        indices = list(indices)
        buf = self._buffer(len(indices), out)
        if buf is None or not hasattr(self._arr, "read_direct") or self._arr.dtype != buf.dtype:
            return super().read_indices(indices, out)
        errors: List[Optional[str]] = []
        for k, i in enumerate(indices):  # h5py: each frame straight into its slot of the reused buffer
            try:
                self._arr.read_direct(buf[k], np.s_[int(i)])
                errors.append(None)
            except Exception as exc:  # noqa: BLE001 - any reader failure makes the frame corrupt, not the run
                buf[k] = 0
                errors.append(f"unreadable: {type(exc).__name__}: {exc}")
        return buf, errors

    def close(self) -> None:
        if self._closer is not None:
            self._closer()
            self._closer = None


def _read_image_file(path: str) -> np.ndarray:
    """One image file through :func:`xcca.io.read_image` (all detector formats, HDF5) or a .npy file."""
    if str(path).endswith(".npy"):
        return np.load(path, allow_pickle=False)
    return np.asarray(_io.read_image(path))


class _FileListSource(FrameSource):
    def __init__(self, paths: Sequence[Union[str, os.PathLike]]):
        self._paths = [os.fspath(p) for p in paths]
        if not self._paths:
            raise ValueError("the list of image files is empty")
        first_err = None
        for p in self._paths:  # the first readable file defines the frame shape
            try:
                fr = _read_image_file(p)
                break
            except Exception as exc:  # noqa: BLE001
                first_err = exc
        else:
            raise OSError(f"none of the {len(self._paths)} image files could be read (first error: {first_err})")
        if fr.ndim != 2:
            raise ValueError(f"image files must hold 2-D frames, {p} has shape {fr.shape}")
        super().__init__(len(self._paths), fr.shape, np.result_type(fr.dtype, np.float32)
                         if fr.dtype.kind == "f" else fr.dtype, f"{len(self._paths)} files")

    def _read_one(self, i: int) -> np.ndarray:
        return _read_image_file(self._paths[i])

    def read(self, start: int, stop: int, out: Optional[np.ndarray] = None):
        return self.read_indices(range(start, stop), out)


def _split_h5_path(source: str, dataset: Optional[str]) -> Tuple[str, Optional[str]]:
    """``"file.h5::/data"`` and/or ``dataset=`` -> (file, dataset), via :func:`xcca.io.split_hdf5_path`."""
    path, ds = _io.split_hdf5_path(source)
    if ds is None:
        return path, dataset
    if dataset is not None and dataset != ds:
        raise ValueError(f"dataset given twice: {ds!r} in the path and {dataset!r}")
    return path, ds


def _list_datasets(f) -> List[str]:
    import h5py

    names: List[str] = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and len(names) < 20:
            names.append("/" + name)

    f.visititems(visit)
    return names


def open_source(source, dataset: Optional[str] = None) -> FrameSource:
    """Open a run for streaming.

    Parameters
    ----------
    source : str, Path, h5py.Dataset, numpy.ndarray or sequence of paths
        An HDF5 file (with ``dataset=`` or ``"file.h5::/path/to/data"``) holding an (N, H, W) stack; an open
        ``h5py.Dataset``; an (N, H, W) array (or anything with ``shape``, ``dtype`` and slicing); or a list of image
        files (one frame each, any format :func:`xcca.io.read_image` reads).
    dataset : str, optional
        HDF5 path of the stack inside the file.

    Raises
    ------
    OSError
        The file does not exist or cannot be opened.
    ValueError
        The dataset is missing or not a stack of 2-D frames.
    """
    if isinstance(source, (str, os.PathLike)):
        path, ds = _split_h5_path(os.fspath(source), dataset)
        if not os.path.exists(path):
            raise OSError(f"file not found: {path}")
        if not _is_hdf5(path):
            if ds is not None:
                raise ValueError(f"{path} is not an HDF5 file, but a dataset ({ds}) was given")
            return _FileListSource([path])
        import h5py
        import hdf5plugin  # noqa: F401 - registers the compression filters of detector data

        f = h5py.File(path, "r")
        try:
            if ds is None:
                raise ValueError(f"{path} is an HDF5 file: give the dataset of the frame stack "
                                 f"(datasets there: {', '.join(_list_datasets(f)) or 'none'})")
            if ds not in f:
                raise ValueError(f"dataset {ds!r} not found in {path} "
                                 f"(datasets there: {', '.join(_list_datasets(f)) or 'none'})")
            obj = f[ds]
            if not isinstance(obj, h5py.Dataset):
                raise ValueError(f"{ds!r} in {path} is a group, not a dataset "
                                 f"(datasets there: {', '.join(_list_datasets(f)) or 'none'})")
            return _ArraySource(obj, describe=f"{path}::{ds}", closer=f.close)
        except BaseException:
            f.close()
            raise
    if isinstance(source, (list, tuple)) and all(isinstance(p, (str, os.PathLike)) for p in source):
        return _FileListSource(source)
    if hasattr(source, "shape") and hasattr(source, "dtype"):
        name = getattr(source, "name", None)
        return _ArraySource(source if not isinstance(source, list) else np.asarray(source),
                            describe=f"dataset {name}" if isinstance(name, str) else "array")
    arr = np.asarray(source)
    return _ArraySource(arr)


# --------------------------------------------------------------------------------------------------- stages


def check_frames(frames: np.ndarray, mask: Optional[np.ndarray],
                 errors: Optional[List[Optional[str]]] = None) -> List[Optional[str]]:
    """Why each frame of a chunk is corrupt (None = good): read errors, no nonzero valid pixel, non-finite valid
    pixels. ``mask``: True = valid pixel (shared by the run)."""
    out: List[Optional[str]] = list(errors) if errors is not None else [None] * len(frames)
    inval = None
    for k in range(len(frames)):
        if out[k] is not None:
            continue
        fr = frames[k]
        if fr.dtype.kind in "biu":
            # integers: some valid pixel is nonzero iff the frame has more nonzeros than its few invalid pixels
            # (count_nonzero is ~10x faster than copying the valid pixels out with fr[mask])
            if mask is not None and inval is None:
                inval = np.flatnonzero(~mask)
            nz = np.count_nonzero(fr)
            if nz == 0 or (inval is not None and nz == np.count_nonzero(fr.reshape(-1)[inval])):
                out[k] = "all zero"
            continue
        vals = fr[mask] if mask is not None else fr
        if fr.dtype.kind == "f":
            finite = np.isfinite(vals)
            if not finite.all():
                out[k] = "all non-finite" if not finite.any() else f"{vals.size - int(finite.sum())} non-finite valid pixels"
                continue
        if not np.any(vals):
            out[k] = "all zero"
    return out


@dataclass
class Accumulator:
    """NaN-aware running sum: ``total`` and ``count`` per element; ``mean()`` = total / count (NaN where 0).

    Accumulators of disjoint chunks add up (``a + b``), so a stage can run anywhere and be reduced later.
    """

    total: np.ndarray
    count: np.ndarray

    @classmethod
    def zeros(cls, shape) -> "Accumulator":
        return cls(np.zeros(shape, dtype=np.float64), np.zeros(shape, dtype=np.int64))

    @classmethod
    def of(cls, values: np.ndarray, axis: int = 0) -> "Accumulator":
        """Sum of ``values`` over ``axis`` ignoring NaN."""
        v = np.asarray(values, dtype=np.float64)
        ok = np.isfinite(v)
        return cls(np.where(ok, v, 0.0).sum(axis=axis), ok.sum(axis=axis).astype(np.int64))

    @classmethod
    def of_mean(cls, mean: np.ndarray, weight: int) -> "Accumulator":
        """The accumulator of ``weight`` items whose mean is ``mean`` (NaN entries count for nothing)."""
        m = np.asarray(mean, dtype=np.float64)
        ok = np.isfinite(m)
        return cls(np.where(ok, m * weight, 0.0), ok.astype(np.int64) * int(weight))

    def add(self, other: "Accumulator") -> "Accumulator":
        self.total += other.total
        self.count += other.count
        return self

    def __add__(self, other: "Accumulator") -> "Accumulator":
        return Accumulator(self.total + other.total, self.count + other.count)

    def mean(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.total / np.maximum(self.count, 1), np.nan)


def outlier_mask(rings: np.ndarray, valid: np.ndarray, thresh: float = 3.5) -> np.ndarray:
    """Per-ring outliers by LOKI's modified z-score: ``0.6745·|x - median| / MAD > thresh`` over the valid samples
    of each ring (last axis); MAD = 0 gives no outlier. Returns a bool array of ``rings``' shape (True = outlier).

    Computed in float64 (as the compiled ``_core.ring_outliers``, which gives identical results). Vectorised with one
    ``np.partition`` per statistic: invalid samples are replaced by -inf/+inf in equal numbers so that the valid
    median sits at the same two positions in every row.
    """
    x = np.asarray(rings, dtype=np.float64)
    v = np.asarray(valid, dtype=bool) & np.isfinite(x)
    v = np.broadcast_to(v, x.shape)
    n = x.shape[-1]
    k = v.sum(axis=-1)  # valid samples per ring

    def valid_median(a: np.ndarray) -> np.ndarray:
        inval = ~v
        n_low = (n - k) // 2  # invalid samples pushed to -inf; the rest go to +inf
        rank = np.cumsum(inval, axis=-1, dtype=np.int32)
        dt = a.dtype if a.dtype.kind == "f" else np.dtype(np.float64)  # float32 stays float32: chunks are big
        filled = np.where(rank <= n_low[..., None], dt.type(-np.inf), dt.type(np.inf))
        np.copyto(filled, a, where=v, casting="unsafe")
        lo_pos = (n - 1) // 2 - (1 if n % 2 else 0) if n > 1 else 0
        hi_pos = n // 2 if n % 2 == 0 else (n - 1) // 2
        kth = sorted({max(lo_pos, 0), hi_pos, max(hi_pos - 1, 0)})
        part = np.partition(filled, kth, axis=-1)
        p1 = n_low + (k - 1) // 2
        p2 = n_low + k // 2
        a1 = np.take_along_axis(part, np.clip(p1, 0, n - 1)[..., None], axis=-1)[..., 0]
        a2 = np.take_along_axis(part, np.clip(p2, 0, n - 1)[..., None], axis=-1)[..., 0]
        return 0.5 * (a1 + a2)

    with np.errstate(invalid="ignore"):
        med = valid_median(x)
        dev = np.abs(x - med[..., None])
        mad = valid_median(dev)
        z = 0.6745 * dev / np.where(mad > 0, mad, np.inf)[..., None]
        return v & (k[..., None] > 0) & (z > thresh)


class _Geometry:
    def __init__(self, center, radii, nphi, shape):
        self.center = (float(center[0]), float(center[1]))
        self.radii = np.asarray(radii, dtype=np.float64)
        self.nphi = int(nphi)
        self.shape = tuple(int(s) for s in shape)
        self.phi = 2 * np.pi * np.arange(self.nphi) / self.nphi


class _NumpyKernels:
    """The pipeline's kernels in NumPy/SciPy (the comparison baseline and a test oracle)."""

    name = "numpy"
    fill = np.nan  # value of the invalid polar samples

    def __init__(self, geom: _Geometry, n_threads: Optional[int] = None):
        self.geom = geom
        h, w = geom.shape
        xs = geom.center[0] + geom.radii[:, None] * np.cos(geom.phi)[None, :]
        ys = geom.center[1] + geom.radii[:, None] * np.sin(geom.phi)[None, :]
        x0, y0 = np.floor(xs), np.floor(ys)
        self.fx, self.fy = xs - x0, ys - y0
        inside = (x0 >= 0) & (y0 >= 0) & (x0 + 1 <= w - 1) & (y0 + 1 <= h - 1)
        x0c = np.clip(x0, 0, w - 2).astype(np.int64)
        y0c = np.clip(y0, 0, h - 2).astype(np.int64)
        self.inside = inside
        self.idx = y0c * w + x0c  # flat index of the top-left neighbour

    def remap(self, frames: np.ndarray, mask: Optional[np.ndarray], out: Optional[np.ndarray] = None):
        h, w = self.geom.shape
        i = self.idx
        fx, fy = self.fx, self.fy
        flat = frames.reshape(len(frames), -1).astype(np.float64)
        polar = ((1 - fy) * ((1 - fx) * flat[:, i] + fx * flat[:, i + 1])
                 + fy * ((1 - fx) * flat[:, i + w] + fx * flat[:, i + w + 1]))
        pmask = self.inside.copy()
        if mask is not None:
            m = mask.ravel()
            pmask &= m[i] & m[i + 1] & m[i + w] & m[i + w + 1]
        if out is None:
            out = np.empty(polar.shape, np.float32)
        out[...] = polar
        out[:, ~pmask] = np.nan
        return out, pmask

    @staticmethod
    def outliers(polar: np.ndarray, valid: np.ndarray, thresh: float) -> Tuple[np.ndarray, np.ndarray]:
        """Per-ring outlier removal, one frame at a time (bounds the float64 temporaries)."""
        new = np.empty(polar.shape, dtype=bool)
        nout = np.zeros(len(polar), dtype=np.int64)
        for k in range(len(polar)):
            out = outlier_mask(polar[k], valid[k], thresh)
            new[k] = valid[k] & ~out
            nout[k] = int(out.sum())
        return new, nout

    @staticmethod
    def autocorr(rings: np.ndarray, mask: np.ndarray, normalize: Optional[str], average: bool = False,
                 zeroed: bool = False) -> np.ndarray:
        """Masked circular autocorrelation C[k] = Σ m_j m_{j+k} a_j a_{j+k} / Σ m_j m_{j+k} (NaN if empty);
        ``average`` gives the mean over the leading (shot) axis."""
        m = np.broadcast_to(mask, rings.shape).astype(np.float64)
        a = np.where(m > 0, rings, 0.0).astype(np.float64)
        n = rings.shape[-1]
        fa = np.fft.rfft(a, axis=-1)
        fm = np.fft.rfft(m, axis=-1)
        num = np.fft.irfft(fa * fa.conj(), n, axis=-1)
        den = np.rint(np.fft.irfft(fm * fm.conj(), n, axis=-1))
        with np.errstate(invalid="ignore", divide="ignore"):
            c = np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)
            if normalize == "mean":
                cnt = m.sum(axis=-1)
                mean = np.where(cnt > 0, a.sum(axis=-1) / np.maximum(cnt, 1), np.nan)
                c = c / (mean * mean)[..., None]
        return c.mean(axis=0) if average else c

    def diffcorr(self, polar: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Mean over the pairs (2i, 2i+1) of the masked autocorrelation of ``polar[2i] - polar[2i+1]`` with the mask
        ``valid[2i] & valid[2i+1]`` (``valid`` (c, nq, nphi) or shared (nq, nphi))."""
        va = valid[0::2] if valid.ndim == polar.ndim else valid
        vb = valid[1::2] if valid.ndim == polar.ndim else valid
        m = va & vb
        with np.errstate(invalid="ignore"):
            d = np.where(m, polar[0::2] - polar[1::2], 0)  # in the polar images' float type
        return self.autocorr(d, m, None, average=True, zeroed=True)

    def fit_profiles(self, rings: np.ndarray, masks: np.ndarray, deg: int, overlap: float):
        """LOKI's periodic polynomial fit, evaluated on x = 0..n-1 (unmasked); Chebyshev basis + lstsq."""
        n = rings.shape[-1]
        nn = int(overlap * n)
        x = np.arange(-nn, n + nn)
        t = (2 * x - (n - 1)) / (n - 1 + 2 * nn) if n + 2 * nn > 1 else np.zeros_like(x, dtype=float)
        basis = np.polynomial.chebyshev.chebvander(t, deg)
        eval_basis = basis[nn:nn + n]
        curves = np.full(rings.shape, np.nan)
        ok = np.zeros(len(rings), dtype=bool)
        masks = np.broadcast_to(masks, rings.shape)
        for s in range(len(rings)):
            y = np.concatenate([rings[s, n - nn:], rings[s], rings[s, :nn]]) if nn else rings[s]
            m = np.concatenate([masks[s, n - nn:], masks[s], masks[s, :nn]]) if nn else masks[s]
            use = m & (y != 0) & np.isfinite(y)
            if use.sum() <= deg:
                continue
            coef, *_ = np.linalg.lstsq(basis[use], y[use].astype(np.float64), rcond=None)
            curves[s] = eval_basis @ coef
            ok[s] = True
        return curves, ok

    @staticmethod
    def pair(features: np.ndarray):
        """LOKI's pairing (full distance matrix): xcca.reference's specification of it."""
        from . import reference

        return reference.pair_loki(features)


class _XccaKernels(_NumpyKernels):
    """The compiled kernels of xcca (polar remap, correlations, fits, pairing)."""

    name = "xcca"

    def __init__(self, geom: _Geometry, n_threads: Optional[int] = None):
        import xcca as _x

        missing = [name for name in ("PolarGrid", "autocorrelate", "fit_periodic", "pair_shots")
                   if not hasattr(_x, name)]
        if missing:
            raise RuntimeError(f"the compiled kernels {missing} are not available in this build of xcca; "
                               "use backend='numpy'")
        self.geom = geom
        self.n_threads = n_threads
        self._grid = _x.PolarGrid(geom.center, geom.radii, geom.nphi, geom.shape)
        self._autocorrelate = _x.autocorrelate
        self._difference_correlation = _x.difference_correlation
        self._fit_periodic = _x.fit_periodic
        self._pair_shots = _x.pair_shots

    # Invalid samples are filled with 0, not NaN: the stages then need no np.where to zero them.
    fill = 0.0

    def remap(self, frames, mask, out=None):
        polar, pmask = self._grid.remap(frames, mask=mask, method="bilinear", fill=self.fill, out=out,
                                        n_threads=self.n_threads)
        return polar, np.asarray(pmask, dtype=bool)

    def outliers(self, polar, valid, thresh):
        from . import _core

        v = valid
        if v.ndim == polar.ndim and v.shape[0] > 1 and v.strides[0] == 0:  # broadcast shared mask: pass one copy
            v = v[0]
        new, removed = _core.ring_outliers(np.ascontiguousarray(polar), np.ascontiguousarray(v, dtype=bool),
                                           float(thresh), self.n_threads)
        return new, removed.reshape(len(polar), -1).sum(axis=1)

    def autocorr(self, rings, mask, normalize, average=False, zeroed=False):
        # The core selects (not multiplies) the valid samples, so NaN or outliers in masked samples never leak; a
        # mask shared by the shots (a broadcast view) is passed as one (nq, nphi) mask: its pair counts are
        # computed once per ring instead of once per shot.
        m = np.asarray(mask, dtype=bool)
        if m.ndim == rings.ndim and m.shape[0] > 1 and m.strides[0] == 0:
            m = m[0]
        return self._autocorrelate(rings, mask=m, normalize=normalize, average=average, n_threads=self.n_threads)

    def diffcorr(self, polar, valid):
        m = np.asarray(valid, dtype=bool)
        if m.ndim == polar.ndim and m.shape[0] > 1 and m.strides[0] == 0:
            m = m[0]
        pairs = np.arange(len(polar), dtype=np.int64).reshape(-1, 2)
        return self._difference_correlation(polar, pairs, mask=m, average=True, n_threads=self.n_threads)

    def fit_profiles(self, rings, masks, deg, overlap):
        # masks may be the shared (n,) ring mask with the outliers zeroed in ``rings``: LOKI's fit drops y == 0, so
        # that is the same fit, and fit_periodic's one-projection fast path serves every ring without a zero
        masks = np.asarray(masks, dtype=bool)
        if masks.ndim == 1 and len(rings) > 1:
            # Rings with zeros at valid samples (removed outliers) have their own sample set; fit_periodic would group
            # them by pattern with np.unique over (rings, n) bool rows, which costs more than the fits. Fitting each
            # such ring alone with its own 1-D mask takes fit_periodic's one-projection path: the same least squares.
            irregular = np.flatnonzero(((rings == 0) & masks).any(axis=-1))
            if irregular.size:
                curves = np.empty(rings.shape, dtype=np.float64)
                ok = np.empty(len(rings), dtype=bool)
                regular = np.setdiff1d(np.arange(len(rings)), irregular)
                if regular.size:
                    curves[regular], ok[regular] = self._fit(rings[regular], masks, deg, overlap)
                for i in irregular:
                    c, o = self._fit(rings[i:i + 1], masks & (rings[i] != 0), deg, overlap)
                    curves[i], ok[i] = c[0], o[0]
                return curves, ok
        return self._fit(rings, masks, deg, overlap)

    def _fit(self, rings, masks, deg, overlap):
        res = self._fit_periodic(rings, masks, deg=deg, overlap=overlap, n_threads=self.n_threads)
        curves = _unmasked_curves(res, rings.shape[-1])
        ok = np.asarray(getattr(res, "ok", np.all(np.isfinite(curves), axis=-1)), dtype=bool)
        return curves, ok

    def pair(self, features):
        res = self._pair_shots(features, method="loki", n_threads=self.n_threads)
        return (np.asarray(res.pairs, dtype=np.int64).reshape(-1, 2), np.asarray(res.distances, dtype=np.float64),
                np.asarray(res.unpaired, dtype=np.int64))


def _unmasked_curves(res, n: int) -> np.ndarray:
    """The fitted profiles evaluated on x = 0..n-1 without the mask, from a fit result of xcca.fit_periodic."""
    for attr in ("evaluate", "__call__"):
        fn = getattr(res, attr, None)
        if callable(fn):
            try:
                return np.asarray(fn(np.arange(n)), dtype=np.float64)
            except TypeError:
                continue
    return np.asarray(res.curves, dtype=np.float64)


def make_kernels(backend: str, center, radii, nphi: int, shape, n_threads: Optional[int] = None):
    """Kernel set of the pipeline: ``backend="xcca"`` (compiled) or ``"numpy"`` (NumPy/SciPy baseline)."""
    geom = _Geometry(center, radii, nphi, shape)
    if backend == "xcca":
        return _XccaKernels(geom, n_threads)
    if backend == "numpy":
        return _NumpyKernels(geom, n_threads)
    raise ValueError(f"backend must be 'xcca' or 'numpy', got {backend!r}")


def polar_stage(frames: np.ndarray, mask: Optional[np.ndarray], kernels, out: Optional[np.ndarray] = None,
                checked: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Polar remap of a chunk (c, H, W) -> ``polar`` (c, nq, nphi) float32 and ``valid`` (c, nq, nphi) bool.

    ``mask``: True = valid pixel. ``out``: a reused (c, nq, nphi) buffer for ``polar``. Invalid samples hold the
    kernels' ``fill`` (NaN or 0). ``checked=True`` says the frames passed :func:`check_frames` (their valid pixels are
    finite), or they are integers: ``valid`` is then the read-only broadcast of the polar mask shared by the chunk,
    with no per-frame copy.
    """
    if out is not None:
        try:
            polar, pmask = kernels.remap(frames, mask, out=out)
        except (TypeError, ValueError):  # a buffer of another dtype (e.g. float64 frames): allocate
            polar, pmask = kernels.remap(frames, mask)
    else:
        polar, pmask = kernels.remap(frames, mask)
    valid = np.broadcast_to(pmask, polar.shape)
    if not checked and np.asarray(frames).dtype.kind == "f":  # NaN pixels propagate into valid samples
        valid = valid & np.isfinite(polar)
    return polar, valid


def clean_stage(polar: np.ndarray, valid: np.ndarray, thresh: Optional[float], kernels=None
                ) -> Tuple[np.ndarray, np.ndarray]:
    """Per-ring outlier removal (LOKI's modified z-score, see :func:`outlier_mask`): returns the new ``valid`` mask
    and the number of removed samples per frame. ``thresh=None`` removes nothing."""
    if thresh is None:
        return valid, np.zeros(len(polar), dtype=np.int64)
    if kernels is not None:
        return kernels.outliers(polar, valid, thresh)
    out = outlier_mask(polar, valid, thresh)
    return valid & ~out, out.reshape(len(polar), -1).sum(axis=1)


class _Projector:
    """Orthonormal basis Q (n, deg+1) of the polynomial profiles restricted to the run's common valid samples:
    for curves in that span, ‖Qᵀ(c₁ - c₂)‖ = ‖c₁ - c₂‖ over those samples, so pairing works in deg+1 dimensions."""

    def __init__(self, n: int, deg: int, overlap: float, common: np.ndarray):
        nn = int(overlap * n)
        x = np.arange(n)
        t = (2 * x - (n - 1)) / (n - 1 + 2 * nn) if n + 2 * nn > 1 else np.zeros(n)
        v = np.polynomial.chebyshev.chebvander(t, deg) * common[:, None]
        q, r = np.linalg.qr(v)
        keep = np.abs(np.diag(r)) > 1e-10 * max(np.abs(np.diag(r)).max(), 1e-300)
        self.q = q[:, keep]
        self.common = common

    def __call__(self, curves: np.ndarray) -> np.ndarray:
        return (np.where(self.common, curves, 0.0)) @ self.q


def profile_stage(polar: np.ndarray, valid: np.ndarray, ring: int, kernels, projector: _Projector,
                  deg: int, overlap: float, ring_mask: Optional[np.ndarray] = None):
    """Ring-profile fit of the pairing ring for a chunk: returns (features (c, D), fit rms (c,), ok (c,),
    ring mean intensity (c,)).

    ``ring_mask`` (nphi,): the polar mask of the ring shared by the chunk (True = valid), given when ``polar`` is 0
    wherever ``valid`` is False (so per-frame exclusions are zeros, which LOKI's fit drops anyway): all rings are
    then fitted with one shared mask.
    """
    rings = polar[:, ring, :].astype(np.float64)
    masks = valid[:, ring, :]
    if ring_mask is not None:
        curves, ok = kernels.fit_profiles(rings, np.asarray(ring_mask, dtype=bool), deg, overlap)
    else:
        curves, ok = kernels.fit_profiles(np.where(masks, rings, 0.0), masks, deg, overlap)
    ok = ok & np.all(np.isfinite(curves), axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        resid = np.where(masks, rings - curves, 0.0)
        cnt = masks.sum(axis=-1)
        rms = np.sqrt((resid**2).sum(axis=-1) / np.maximum(cnt, 1))
        mean = np.where(cnt > 0, np.where(masks, rings, 0).sum(axis=-1) / np.maximum(cnt, 1), np.nan)
    feats = projector(np.where(np.isfinite(curves), curves, 0.0))
    rms = np.where(ok, rms, np.nan)
    return feats, rms, ok, mean


def autocorr_stage(polar: np.ndarray, valid: np.ndarray, kernels, zeroed: bool = False
                   ) -> Tuple[Accumulator, Accumulator, Accumulator]:
    """Raw correlation of a chunk: accumulators of the per-shot masked autocorrelation normalised by the squared
    ring mean (nq, nphi), of the polar image (nq, nphi), and of the ring means (nq,). ``zeroed=True``: ``polar`` is
    already 0 wherever ``valid`` is False."""
    # The chunk mean of the correlations (the kernel averages over shots without materialising them all); a NaN
    # there means a ring with no valid sample pair, which is static (corrupt frames never get here).
    zeroed = polar if zeroed else np.where(valid, polar, 0)
    c = kernels.autocorr(zeroed, valid, "mean", average=True, zeroed=True)
    # counts over the chunk: summing bytes into int32 is 2x faster than NumPy's bool -> int64 sum
    cnt0 = np.add.reduce(valid.view(np.uint8), axis=0, dtype=np.int32) if valid.dtype == bool else valid.sum(axis=0)
    img = Accumulator(zeroed.sum(axis=0, dtype=np.float64), cnt0.astype(np.int64))
    with np.errstate(invalid="ignore"):
        cnt = valid.sum(axis=-1)
        ring_mean = np.where(cnt > 0, zeroed.sum(axis=-1, dtype=np.float64) / np.maximum(cnt, 1), np.nan)
    return Accumulator.of_mean(c, len(polar)), img, Accumulator.of(ring_mean)


def pair_stage(features: np.ndarray, kernels):
    """Pair the shots (rows of ``features``): LOKI's order (index order, nearest unused shot).
    Returns (pairs (M, 2) int64, distances (M,), unpaired indices)."""
    if len(features) < 2:
        return np.zeros((0, 2), np.int64), np.zeros(0), np.arange(len(features), dtype=np.int64)
    return kernels.pair(np.ascontiguousarray(features, dtype=np.float64))


def diffcorr_stage(polar_a: np.ndarray, valid_a: np.ndarray, polar_b: np.ndarray, valid_b: np.ndarray,
                   kernels) -> Accumulator:
    """Difference correlation of a chunk of pairs: masked autocorrelation of ``a - b`` with the mask ``va & vb``,
    accumulated over the pairs (nq, nphi), unnormalised."""
    m = valid_a & valid_b
    with np.errstate(invalid="ignore"):
        d = np.where(m, polar_a - polar_b, 0)  # in the polar images' float type
    return Accumulator.of_mean(kernels.autocorr(d, m, None, average=True, zeroed=True), len(d))


def diffcorr_pairs_stage(polar: np.ndarray, valid: np.ndarray, kernels) -> Accumulator:
    """:func:`diffcorr_stage` of the pairs (2i, 2i+1) of one chunk, without splitting it (the compiled kernels
    form the differences and combined masks themselves); ``valid`` (c, nq, nphi) or shared (nq, nphi)."""
    return Accumulator.of_mean(kernels.diffcorr(polar, valid), len(polar) // 2)


# --------------------------------------------------------------------------------------------------- centre


def find_center(image, mask=None, guess: Optional[Sequence[float]] = None, *, width: float = 10,
                n_points: int = 5000, n_iter: int = 20):
    """Automatic beam centre: pick the most prominent ring of the radial profile around ``guess`` (default: the
    image centre) and fit it with :func:`xcca.fit_ring` (a wide annulus first, then ``width``, re-selecting the
    annulus up to ``n_iter`` times).

    ``mask``: True = valid pixel. Returns the :class:`xcca.ringfit.RingFitResult`.
    """
    from scipy.ndimage import median_filter
    from scipy.signal import find_peaks

    from .ringfit import fit_ring

    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"image must be 2-D, got shape {img.shape}")
    h, w = img.shape
    cx, cy = ((w - 1) / 2, (h - 1) / 2) if guess is None else (float(guess[0]), float(guess[1]))
    valid = np.isfinite(img) if mask is None else (np.asarray(mask, bool) & np.isfinite(img))
    yy, xx = np.indices(img.shape)
    r = np.hypot(xx - cx, yy - cy).astype(np.int64)
    prof = np.bincount(r[valid], img[valid]) / np.maximum(np.bincount(r[valid]), 1)
    rmax = int(min(h, w) * 0.48)
    rmin = max(3, int(min(h, w) * 0.05))
    if rmax <= rmin + 5:
        raise ValueError(f"image {img.shape} too small to find a ring automatically")
    # The most prominent peak of the profile (a 3-bin median first removes single-bin spikes of hot pixels).
    prof = median_filter(prof[:rmax], size=3, mode="nearest")
    peaks, props = find_peaks(prof, prominence=0)
    ok = peaks >= rmin
    if not ok.any():
        raise ValueError("no ring found in the radial profile for center='auto'; give the centre")
    r0 = int(peaks[ok][np.argmax(props["prominences"][ok])])
    # A wide first annulus tolerates a poor guess; the narrow rounds then converge on the ring's crest.
    first = fit_ring(img, (cx, cy, float(r0)), mask=mask, width=2 * width, n_points=n_points, n_iter=3)
    return fit_ring(img, first.beta, mask=mask, width=width, n_points=n_points, n_iter=n_iter)


# --------------------------------------------------------------------------------------------------- result


@dataclass
class AnalysisResult:
    """Result of :func:`analyze` (see :meth:`write` for the HDF5 layout).

    Attributes
    ----------
    radii : (nq,) radii in pixels; ``q`` (nq,) momentum transfer or None.
    phi, delta : (nphi,) angles and correlation lags in radians (the same grid).
    cos_psi : (nq, nphi) cos ψ for each ring and lag, or None without wavelength and q.
    difference_correlation : (nq, nphi) mean over pairs of the masked autocorrelation of the pair difference
        (counts²), and ``difference_correlation_norm`` the same divided by the squared run-mean ring intensity.
    raw_correlation : (nq, nphi) mean over shots of the masked autocorrelation divided by each shot's squared ring
        mean (dimensionless, ~1 + modulation).
    radial_profile : (nq,) run-mean ring intensity; ``mean_polar`` (nq, nphi) run-mean polar image (NaN where never
        valid).
    pairs : (M, 2) frame indices of the pairs; ``pair_distances`` (M,); ``unpaired`` frame indices.
    frames : (G,) indices of the good frames; ``fit_rms``, ``fit_ok``, ``ring_intensity``, ``n_outliers`` per good
        frame.
    skipped : list of (frame index, reason) of the corrupt frames.
    parameters, versions : dicts of the analysis parameters and software versions.
    timings : seconds per stage.
    """

    radii: np.ndarray
    phi: np.ndarray
    delta: np.ndarray
    difference_correlation: np.ndarray
    difference_correlation_norm: np.ndarray
    raw_correlation: np.ndarray
    radial_profile: np.ndarray
    mean_polar: np.ndarray
    pairs: np.ndarray
    pair_distances: np.ndarray
    unpaired: np.ndarray
    frames: np.ndarray
    fit_rms: np.ndarray
    fit_ok: np.ndarray
    ring_intensity: np.ndarray
    n_outliers: np.ndarray
    skipped: List[Tuple[int, str]]
    parameters: Dict[str, Any]
    versions: Dict[str, str]
    q: Optional[np.ndarray] = None
    cos_psi: Optional[np.ndarray] = None
    timings: Dict[str, float] = field(default_factory=dict)

    _ARRAYS = ("radii", "phi", "delta", "difference_correlation", "difference_correlation_norm", "raw_correlation",
               "radial_profile", "mean_polar", "pairs", "pair_distances", "unpaired")
    _SHOTS = ("frames", "fit_rms", "fit_ok", "ring_intensity", "n_outliers")

    @property
    def n_frames(self) -> int:
        """Frames in the run (good + skipped)."""
        return int(self.parameters.get("n_frames", len(self.frames) + len(self.skipped)))

    def write(self, path: Union[str, Path]) -> Path:
        """Write the result to an HDF5 file, atomically (a temporary file renamed into place).

        Layout: datasets ``/radii``, ``/phi``, ``/delta``, ``/q`` and ``/cos_psi`` (if known),
        ``/difference_correlation``, ``/difference_correlation_norm``, ``/raw_correlation``, ``/radial_profile``,
        ``/mean_polar``, ``/pairs``, ``/pair_distances``, ``/unpaired``; group ``/shots`` (``frames``, ``fit_rms``,
        ``fit_ok``, ``ring_intensity``, ``n_outliers``); group ``/skipped`` (``index``, ``reason``); root attributes
        ``format``, ``parameters`` (JSON), ``versions`` (JSON), ``timings`` (JSON), ``created``.
        """
        import h5py

        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        try:
            with h5py.File(tmp, "w") as f:
                for name in self._ARRAYS:
                    f.create_dataset(name, data=np.asarray(getattr(self, name)))
                if self.q is not None:
                    f.create_dataset("q", data=np.asarray(self.q))
                if self.cos_psi is not None:
                    f.create_dataset("cos_psi", data=np.asarray(self.cos_psi))
                g = f.create_group("shots")
                for name in self._SHOTS:
                    g.create_dataset(name, data=np.asarray(getattr(self, name)))
                s = f.create_group("skipped")
                s.create_dataset("index", data=np.asarray([i for i, _ in self.skipped], dtype=np.int64))
                s.create_dataset("reason", data=np.asarray([r for _, r in self.skipped], dtype=object),
                                 dtype=h5py.string_dtype())
                f.attrs["format"] = "xcca-correlation-result-1"
                f.attrs["parameters"] = json.dumps(self.parameters, default=_json_default)
                f.attrs["versions"] = json.dumps(self.versions)
                f.attrs["timings"] = json.dumps(self.timings)
                f.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return path

    @classmethod
    def read(cls, path: Union[str, Path]) -> "AnalysisResult":
        """Read a result written by :meth:`write`."""
        import h5py

        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != "xcca-correlation-result-1":
                raise ValueError(f"{path} is not an xcca correlation result")
            kw = {name: f[name][()] for name in cls._ARRAYS}
            kw.update({name: f["shots"][name][()] for name in cls._SHOTS})
            kw["q"] = f["q"][()] if "q" in f else None
            kw["cos_psi"] = f["cos_psi"][()] if "cos_psi" in f else None
            reasons = [r.decode() if isinstance(r, bytes) else str(r) for r in f["skipped/reason"][()]]
            kw["skipped"] = list(zip(f["skipped/index"][()].tolist(), reasons))
            kw["parameters"] = json.loads(f.attrs["parameters"])
            kw["versions"] = json.loads(f.attrs["versions"])
            kw["timings"] = json.loads(f.attrs.get("timings", "{}"))
        return cls(**kw)


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    return str(o)


def _versions() -> Dict[str, str]:
    import h5py
    import scipy

    from . import __version__

    return {"xcca": __version__, "numpy": np.__version__, "scipy": scipy.__version__, "h5py": h5py.__version__}


# --------------------------------------------------------------------------------------------------- analyze


def _cos_psi(q: np.ndarray, wavelength: float, nphi: int) -> np.ndarray:
    theta = np.arcsin(np.asarray(q, dtype=np.float64) * wavelength / (4 * np.pi))
    delta = 2 * np.pi * np.arange(nphi) / nphi
    return np.cos(delta)[None, :] * np.cos(theta)[:, None] ** 2 + np.sin(theta)[:, None] ** 2


def _validate(center, qmin, qmax, nphi, shape, wavelength, q, chunk, outlier_thresh, deg, overlap):
    h, w = shape
    try:
        cx, cy = (float(c) for c in center)
    except (TypeError, ValueError):
        raise ValueError(f"center must be (x, y) or 'auto', got {center!r}") from None
    if not (math.isfinite(cx) and math.isfinite(cy)):
        raise ValueError(f"center must be finite, got ({cx}, {cy})")
    if not (-0.5 <= cx < w - 0.5 and -0.5 <= cy < h - 0.5):
        raise ValueError(f"center ({cx}, {cy}) is outside the {h}x{w} frames")
    for name, v in (("qmin", qmin), ("qmax", qmax)):
        if not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a finite radius >= 0 in pixels, got {v!r}")
    if qmin >= qmax:
        raise ValueError(f"qmin must be < qmax, got qmin={qmin}, qmax={qmax}")
    corner = max(math.hypot(x - cx, y - cy) for x in (0, w - 1) for y in (0, h - 1))
    if qmin >= corner:
        raise ValueError(f"qmin={qmin} px lies beyond the detector (farthest corner at {corner:.1f} px)")
    if int(nphi) != nphi or nphi < 2:
        raise ValueError(f"nphi must be an integer >= 2, got {nphi!r}")
    if int(chunk) != chunk or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    if outlier_thresh is not None and not outlier_thresh > 0:
        raise ValueError(f"outlier_thresh must be > 0 or None, got {outlier_thresh!r}")
    if int(deg) != deg or deg < 0:
        raise ValueError(f"deg must be an integer >= 0, got {deg!r}")
    if not 0 <= overlap <= 0.5:
        raise ValueError(f"overlap must lie in [0, 0.5], got {overlap!r}")
    if wavelength is not None:
        if not isinstance(wavelength, (int, float, np.integer, np.floating)) or not wavelength > 0 \
                or not math.isfinite(wavelength):
            raise ValueError(f"wavelength must be > 0, got {wavelength!r}")
        if q is None:
            raise ValueError("wavelength given without q: give q (one value or one per radius) to compute cos ψ")
    if q is not None and wavelength is None:
        raise ValueError("q given without wavelength: both are needed to compute cos ψ")
    return cx, cy


def analyze(
    source,
    *,
    center: Union[Sequence[float], str],
    qmin: float,
    qmax: float,
    nphi: int,
    mask=None,
    wavelength: Optional[float] = None,
    q=None,
    ring_for_pairing: Optional[float] = None,
    dataset: Optional[str] = None,
    chunk: int = 16,
    outlier_thresh: Optional[float] = 6.0,
    deg: int = 15,
    overlap: float = 0.2,
    backend: str = "xcca",
    n_threads: Optional[int] = None,
    output: Optional[Union[str, Path]] = None,
    progress: Union[bool, Callable[[str, int, int], None]] = False,
) -> AnalysisResult:
    """Run the whole correlation analysis of a run, streaming its frames.

    Parameters
    ----------
    source : str, Path, h5py.Dataset, array or list of paths
        The frames: an HDF5 file with ``dataset=`` (or ``"run.h5::/entry/data"``) holding (N, H, W), an open
        dataset, an (N, H, W) array, or a list of image files (see :func:`open_source`).
    center : (x, y) or "auto"
        Beam centre in pixels (x along columns). ``"auto"`` fits the sharpest ring of the first chunk's mean image
        (:func:`find_center`).
    qmin, qmax : float
        Radial range in pixels: rings at radii ``arange(qmin, qmax)``.
    nphi : int
        Angular samples per ring (>= 2).
    mask : array_like of bool (H, W) or str, optional
        True = valid pixel, shared by all frames; a path to a ``.npy`` file or ``file.h5::/dataset`` is read.
    wavelength : float, optional
        X-ray wavelength; with ``q`` it gives the cos ψ axis. Units: q·λ dimensionless (1/Å and Å).
    q : float or array_like (nq,), optional
        Momentum transfer of the rings: one value (a narrow band around one ring) or one per radius.
    ring_for_pairing : float, optional
        Radius (pixels) of the ring whose fitted profile pairs the shots; default the ring with the highest mean
        intensity in the first chunk.
    dataset : str, optional
        HDF5 dataset of the frame stack.
    chunk : int
        Frames per chunk: memory is O(chunk·H·W + chunk·nq·nphi), independent of the number of frames.
    outlier_thresh : float or None
        Per-ring modified z-score threshold (LOKI's ``is_outlier``; 3.5 is LOKI's default, the milder 6 here keeps
        genuine speckle and drops hot pixels and sharp peaks); None keeps every sample.
    deg, overlap : int, float
        Degree and periodic padding of the ring-profile fit (LOKI's ``fit_periodic``).
    backend : {"xcca", "numpy"}
        Compiled kernels or the NumPy/SciPy baseline.
    n_threads : int, optional
        Threads of the compiled kernels (default: all usable cores).
    output : str or Path, optional
        Write the result there (HDF5, see :meth:`AnalysisResult.write`).
    progress : bool or callable
        True shows a tqdm progress bar on stderr; a callable receives ``(stage, done, total)``.

    Returns
    -------
    AnalysisResult

    Raises
    ------
    ValueError
        Bad parameters (centre outside the frames, qmin >= qmax, nphi < 2, wavelength <= 0, q out of reach, ...),
        a missing dataset, or no good frame at all.
    OSError
        The run or mask file cannot be opened.
    """
    t_start = time.perf_counter()
    if output is not None:  # fail now rather than after the whole run
        parent = Path(output).resolve().parent
        if not parent.is_dir():
            raise OSError(f"output directory does not exist: {parent}")
        if not os.access(parent, os.W_OK):
            raise OSError(f"output directory is not writable: {parent}")
    timings = {"read": 0.0, "polar": 0.0, "clean": 0.0, "fit": 0.0, "autocorr": 0.0, "pair": 0.0,
               "diffcorr": 0.0}
    with open_source(source, dataset) as src:
        shape = src.shape
        n = len(src)
        if n == 0:
            raise ValueError("the run has no frames")
        mask_arr = _load_mask(mask, shape)
        auto_fit = None
        first = None
        if isinstance(center, str):
            if center != "auto":
                raise ValueError(f"center must be (x, y) or 'auto', got {center!r}")
            t0 = time.perf_counter()
            first = src.read(0, min(chunk, n))
            timings["read"] += time.perf_counter() - t0
            bad = check_frames(first[0], mask_arr, first[1])
            good = [k for k, b in enumerate(bad) if b is None]
            if not good:
                raise ValueError("center='auto' needs at least one good frame in the first chunk")
            mean_img = first[0][good].astype(np.float64).mean(axis=0)
            auto_fit = find_center(mean_img, mask_arr)
            center = auto_fit.center
            _log.info("auto centre: (%.3f, %.3f), ring radius %.2f, rms %.3g px", *center, auto_fit.radius,
                      auto_fit.rms)
        cx, cy = _validate(center, qmin, qmax, nphi, shape, wavelength, q, chunk, outlier_thresh, deg, overlap)
        radii = np.arange(qmin, qmax, dtype=np.float64)
        nq = radii.size
        qarr = None
        cos_psi = None
        if q is not None:
            qarr = np.broadcast_to(np.asarray(q, dtype=np.float64), (nq,)).copy() if np.ndim(q) == 0 \
                else np.asarray(q, dtype=np.float64)
            if qarr.shape != (nq,):
                raise ValueError(f"q must be one value or one per radius ({nq}), got shape {qarr.shape}")
            s = qarr * wavelength / (4 * np.pi)
            if not np.all(np.isfinite(s)) or np.any(s <= 0) or np.any(s > 1):
                raise ValueError(f"q outside the detector's reach: q·λ/4π must lie in (0, 1], got "
                                 f"{s.min():.4g}..{s.max():.4g} (q in 1/Å with λ in Å)")
            cos_psi = _cos_psi(qarr, wavelength, int(nphi))
        kernels = make_kernels(backend, (cx, cy), radii, int(nphi), shape, n_threads)
        bar = _progress(progress, 2 * n)
        try:
            result = _run(src, n, shape, chunk, first, mask_arr, kernels, outlier_thresh, ring_for_pairing, radii,
                          nq, int(nphi), deg, overlap, timings, bar)
        finally:
            bar(None)
    frames_good, _, fit_ok, rms_l, inten_l, nout_l, ring, skipped, pairs, pair_dist, unpaired, \
        acc_raw, acc_img, acc_prof, acc_dif = result
    prof = acc_prof.mean()
    dif = acc_dif.mean()
    with np.errstate(invalid="ignore", divide="ignore"):
        dif_norm = dif / (prof * prof)[:, None]
    timings["total"] = time.perf_counter() - t_start
    params: Dict[str, Any] = dict(
        source=str(getattr(src, "describe", source)), center=[cx, cy], center_auto=auto_fit is not None,
        qmin=float(qmin), qmax=float(qmax), nphi=int(nphi), wavelength=wavelength,
        q=None if qarr is None else qarr.tolist(), ring_for_pairing=float(radii[ring]) if ring is not None else None,
        chunk=int(chunk), outlier_thresh=outlier_thresh, deg=int(deg), overlap=float(overlap), backend=backend,
        n_threads=n_threads, n_frames=n, mask=None if mask is None else (mask if isinstance(mask, str) else "array"),
    )
    if auto_fit is not None:
        params["center_fit"] = dict(radius=auto_fit.radius, rms=auto_fit.rms, n_points=auto_fit.n_points)
    result = AnalysisResult(
        radii=radii, phi=2 * np.pi * np.arange(int(nphi)) / int(nphi),
        delta=2 * np.pi * np.arange(int(nphi)) / int(nphi),
        difference_correlation=dif, difference_correlation_norm=dif_norm, raw_correlation=acc_raw.mean(),
        radial_profile=prof, mean_polar=acc_img.mean(), pairs=pairs.astype(np.int64),
        pair_distances=np.asarray(pair_dist, dtype=np.float64), unpaired=unpaired.astype(np.int64),
        frames=frames_good, fit_rms=np.concatenate(rms_l), fit_ok=fit_ok, ring_intensity=np.concatenate(inten_l),
        n_outliers=np.concatenate(nout_l), skipped=skipped, parameters=params, versions=_versions(), q=qarr,
        cos_psi=cos_psi, timings=timings,
    )
    if skipped:
        _log.warning("%d of %d frames skipped as corrupt", len(skipped), n)
    if output is not None:
        result.write(output)
        _log.info("result written to %s", output)
    return result



def _run(src, n, shape, chunk, first, mask_arr, kernels, outlier_thresh, ring_for_pairing, radii, nq, nphi, deg,
         overlap, timings, bar):
    """The two passes of :func:`analyze` (see there)."""
    # ---- pass 1: polar, clean, fit, raw correlation
    acc_raw = Accumulator.zeros((nq, int(nphi)))
    acc_img = Accumulator.zeros((nq, int(nphi)))
    acc_prof = Accumulator.zeros((nq,))
    skipped: List[Tuple[int, str]] = []
    good_idx: List[np.ndarray] = []
    feats: List[np.ndarray] = []
    rms_l: List[np.ndarray] = []
    ok_l: List[np.ndarray] = []
    inten_l: List[np.ndarray] = []
    nout_l: List[np.ndarray] = []
    ring = None
    # Pass 2 remaps the paired frames again; their outlier masks are deterministic, so pass 1 keeps the outlier
    # positions (sparse) while they fit in a small budget, and pass 2 recomputes only the frames it could not keep.
    removed_cache: Dict[int, np.ndarray] = {}
    cache_budget = _OUTLIER_CACHE_BYTES
    projector = None
    ring_mask = None
    buf = [None]  # the polar images of one chunk, reused by every chunk of both passes

    def polar_of(fr, checked):
        c = len(fr)
        out = buf[0][:c] if buf[0] is not None and len(buf[0]) >= c else None
        polar, valid = polar_stage(fr, mask_arr, kernels, out=out, checked=checked)
        if out is None and c == chunk:
            buf[0] = polar
        return polar, valid

    size = nq * int(nphi)
    fbuf = None  # the frames of one chunk, reused (where the source can read into it)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        t0 = time.perf_counter()
        if first is not None and start == 0 and len(first[0]) == stop - start:
            frames, errs = first
        else:
            frames, errs = src.read(start, stop, out=fbuf)
            if fbuf is None and len(frames) == chunk and frames.flags.owndata and frames.flags.c_contiguous \
                    and frames.dtype == src.dtype:  # never a view of the caller's array: it is written into
                fbuf = frames
        timings["read"] += time.perf_counter() - t0
        bad = check_frames(frames, mask_arr, errs)
        for k, why in enumerate(bad):
            if why is not None:
                skipped.append((start + k, why))
                _log.info("frame %d skipped: %s", start + k, why)
        keep = np.array([k for k, why in enumerate(bad) if why is None], dtype=np.int64)
        if keep.size:
            fr = frames[keep] if keep.size < len(frames) else frames
            t0 = time.perf_counter()
            # checked: valid is the broadcast polar mask, shared by the chunk (no per-frame copy)
            polar, valid = polar_of(fr, True)
            pmask = valid[0]
            t1 = time.perf_counter()
            # From here on polar is 0 wherever valid is False (the invalid samples and the removed outliers), so the
            # later stages need no masked copies.
            if not kernels.fill == 0:
                polar[:, ~pmask] = 0
            valid, nout = clean_stage(polar, valid, outlier_thresh, kernels)
            if outlier_thresh is not None and nout.any():
                removed = np.flatnonzero(valid < pmask)  # flat positions of the removed outliers in the chunk
                polar.reshape(-1)[removed] = 0
                bounds = np.searchsorted(removed, np.arange(len(polar) + 1) * size)
                for k in range(len(polar)):
                    if cache_budget <= 0:
                        break
                    idx = (removed[bounds[k]:bounds[k + 1]] - k * size).astype(np.int32)
                    removed_cache[int(start + keep[k])] = idx
                    cache_budget -= idx.nbytes + 100
            elif outlier_thresh is not None and cache_budget > 0:
                for k in range(len(polar)):
                    removed_cache[int(start + keep[k])] = np.zeros(0, np.int32)
                cache_budget -= 100 * len(polar)
            t2 = time.perf_counter()
            if ring is None:
                ring = _pick_ring(ring_for_pairing, radii, polar, valid)
                ring_mask = np.array(pmask[ring], dtype=bool)
                projector = _Projector(int(nphi), deg, overlap, ring_mask)
            f_, rms, ok, inten = profile_stage(polar, valid, ring, kernels, projector, deg, overlap,
                                               ring_mask=ring_mask)
            t3 = time.perf_counter()
            a_raw, a_img, a_prof = autocorr_stage(polar, valid, kernels, zeroed=True)
            acc_raw.add(a_raw)
            acc_img.add(a_img)
            acc_prof.add(a_prof)
            t4 = time.perf_counter()
            timings["polar"] += t1 - t0
            timings["clean"] += t2 - t1
            timings["fit"] += t3 - t2
            timings["autocorr"] += t4 - t3
            good_idx.append(start + keep)
            feats.append(f_)
            rms_l.append(rms)
            ok_l.append(ok)
            inten_l.append(inten)
            nout_l.append(nout)
        bar(stop - start)
    if not good_idx:
        raise ValueError(f"no good frame in the run ({len(skipped)} skipped: "
                         f"{'; '.join(f'{i}: {r}' for i, r in skipped[:5])}{' ...' if len(skipped) > 5 else ''})")
    frames_good = np.concatenate(good_idx)
    features = np.concatenate(feats)
    fit_ok = np.concatenate(ok_l)
    # ---- pairing: shots whose profile fit failed are not paired
    t0 = time.perf_counter()
    usable = np.flatnonzero(fit_ok)
    pairs_local, pair_dist, unp_local = pair_stage(features[usable], kernels)
    pairs = frames_good[usable][pairs_local] if pairs_local.size else np.zeros((0, 2), np.int64)
    unpaired = np.sort(np.concatenate([frames_good[usable][unp_local], frames_good[~fit_ok]]))
    timings["pair"] += time.perf_counter() - t0
    if len(pairs) == 0:
        _log.warning("fewer than two usable shots: no pairs, the difference correlation is NaN")
    bar(n - len(pairs) * 2 if len(pairs) * 2 < n else 0)
    # ---- pass 2: difference correlations
    acc_dif = Accumulator.zeros((nq, int(nphi)))
    pchunk = max(1, chunk // 2)
    for p0 in range(0, len(pairs), pchunk):
        pp = pairs[p0:p0 + pchunk]
        t0 = time.perf_counter()
        frames, errs = src.read_indices(pp.ravel(), out=fbuf)
        timings["read"] += time.perf_counter() - t0
        if any(e is not None for e in errs):  # a frame that read in pass 1 fails now: drop its pair, say so
            bad_pairs = {k // 2 for k, e in enumerate(errs) if e is not None}
            _log.warning("pairs %s dropped: a frame became unreadable", [tuple(pp[k]) for k in bad_pairs])
            keep = np.array([k for k in range(len(pp)) if k not in bad_pairs], dtype=np.int64)
            frames = frames.reshape(len(pp), 2, *shape)[keep].reshape(-1, *shape)
            pp = pp[keep]
            if not len(pp):
                continue
        t0 = time.perf_counter()
        polar, valid = polar_of(frames, frames.dtype.kind != "f")
        t1 = time.perf_counter()
        valid = _clean_cached(polar, valid, pp.ravel(), outlier_thresh, kernels, removed_cache)
        t2 = time.perf_counter()
        acc_dif.add(diffcorr_pairs_stage(polar, valid, kernels))
        t3 = time.perf_counter()
        timings["polar"] += t1 - t0
        timings["clean"] += t2 - t1
        timings["diffcorr"] += t3 - t2
        bar(2 * len(pp))
    return (frames_good, features, fit_ok, rms_l, inten_l, nout_l, ring, skipped, pairs, pair_dist, unpaired,
            acc_raw, acc_img, acc_prof, acc_dif)


_OUTLIER_CACHE_BYTES = 64 << 20


def _clean_cached(polar, valid, frame_ids, thresh, kernels, cache: Dict[int, np.ndarray]) -> np.ndarray:
    """clean_stage for pass 2: the outlier positions of pass 1 where cached, recomputed elsewhere (same result)."""
    if thresh is None:
        return valid
    valid = np.array(valid, copy=True)
    todo = [k for k, f in enumerate(frame_ids) if int(f) not in cache]
    for k, f in enumerate(frame_ids):
        idx = cache.get(int(f))
        if idx is not None:
            valid[k].reshape(-1)[idx] = False
    if todo:
        t = np.asarray(todo)
        valid[t] = clean_stage(polar[t], valid[t], thresh, kernels)[0]
    return valid


def _pick_ring(ring_for_pairing, radii: np.ndarray, polar: np.ndarray, valid: np.ndarray) -> int:
    if ring_for_pairing is None:
        with np.errstate(invalid="ignore"):
            cnt = valid.sum(axis=(0, 2))
            mean = np.where(valid, polar, 0).sum(axis=(0, 2), dtype=np.float64) / np.maximum(cnt, 1)
        # rings with too few valid samples for a stable fit are not candidates
        mean[cnt < 0.5 * valid.shape[0] * valid.shape[2]] = -np.inf
        return int(np.argmax(mean))
    r = float(ring_for_pairing)
    if not (radii[0] - 0.5 <= r <= radii[-1] + 0.5):
        raise ValueError(f"ring_for_pairing={r} px is outside qmin..qmax ({radii[0]}..{radii[-1]})")
    return int(np.argmin(np.abs(radii - r)))


def _load_mask(mask, shape) -> Optional[np.ndarray]:
    if mask is None:
        return None
    if isinstance(mask, (str, os.PathLike)):
        p = os.fspath(mask)
        path, _, ds = p.partition("::")
        if not os.path.exists(path):
            raise OSError(f"mask file not found: {path}")
        if path.endswith(".npy"):
            arr = np.load(path, allow_pickle=False)
        elif _is_hdf5(path):
            import h5py

            with h5py.File(path, "r") as f:
                if not ds:
                    raise ValueError(f"mask file {path} is HDF5: give the dataset as {path}::/path/to/mask")
                if ds not in f:
                    raise ValueError(f"mask dataset {ds!r} not found in {path}")
                arr = f[ds][()]
        else:
            arr = _read_image_file(path)
        if arr.dtype != bool:
            arr = arr != 0  # an integer mask file: nonzero = valid
    else:
        arr = np.asarray(mask)
        if arr.dtype != bool:
            raise TypeError(f"mask must be boolean (True = valid pixel), got {arr.dtype}")
    if arr.shape != tuple(shape):
        raise ValueError(f"mask has shape {arr.shape}, the frames {tuple(shape)}")
    if not arr.any():
        raise ValueError("mask has no valid pixel (True = valid)")
    return np.ascontiguousarray(arr)


def _progress(progress, total: int) -> Callable[[Optional[int]], None]:
    """A callable advancing a progress display by k frames (None closes it)."""
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="frame", desc="correlation analysis", leave=False)

        def step(k):
            if k is None:
                bar.close()
            else:
                bar.update(k)

        return step
    if callable(progress):
        done = [0]

        def step(k):
            if k is not None:
                done[0] += k
                progress("frames", min(done[0], total), total)

        return step
    return lambda k: None
