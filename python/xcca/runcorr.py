"""The run correlator: C(q, q', Delta) and its harmonics C_n over a whole run, with jackknife error bars.

For shot s and ring q let A_s(q, n) = rfft_phi(m a) and M_s(q, n) = rfft_phi(m) (mask m: True = valid). Then::

    sum_s sum_phi m a(q, phi) m a(q', phi + Delta) = irfft_n[ sum_s conj(A_s(q, n)) A_s(q', n) ](Delta)

and the same with M for the numbers of valid sample pairs. For each harmonic n the sum over a chunk of shots is a
Hermitian rank-k update of an nq x nq matrix (BLAS ``zherk``), so a run costs one FFT per ring and shot plus one
BLAS-3 call per harmonic and chunk; the inverse transforms and the division by the counts happen once, in
:meth:`RunCorrelator.result`. A mask shared by the shots of an ``add`` call needs its count term once.

Estimators (both exact; float64: equal to direct sums to ~1e-12 relative to the rings' energy):

``"pooled"`` (default)
    C = sum_s sum_phi m a m' a' / sum_s sum_phi m m' -- ratio of sums. Every valid sample pair has the same weight,
    so shots with more valid pixels count more; this is the minimum-variance choice when shots are statistically
    alike, and the only one that accumulates in harmonic space with per-shot masks (fast for any mask).
``"per_shot"``
    C = mean over shots of each shot's mask-normalised correlation (what ``xcca.cross_correlate(...,
    average=True)`` gives), taken at each lag over the shots that have a valid pair there. Use it when shots must
    count equally whatever their mask (e.g. strongly varying masks with varying intensity). It needs one inverse FFT
    per shot and pair (O(shots * pairs * nphi log nphi)), so it is much slower than pooled.

Error bars: shot s (counted over the correlator's lifetime, across ``add`` calls) goes to block ``s % blocks``;
``error`` is the jackknife standard error over the blocks, sqrt((B - 1) / B * sum_b (C_{-b} - mean C_{-b})^2),
where C_{-b} is the estimate without block b (``replicates``). blocks=2 are the half-sets FXS papers compare.

Partial results add: :meth:`RunCorrelator.merge` / ``+``, and :meth:`RunCorrelator.save` / :meth:`load` (HDF5), so
chunks of a run processed by different jobs or machines combine exactly.

BLAS: the rank-k updates run in the C++ core (``xcca._core``), which calls SciPy's own OpenBLAS through
``scipy.linalg.cython_blas`` (installed at import, see :func:`blas_info`): the BLAS NumPy/SciPy already ship, no
second copy in the process and no extra wheel. Every harmonic is one single-threaded BLAS call and the harmonics are
spread over xcca's threads (OpenBLAS's per-thread thread count), so results are bit-identical for any
``n_threads``. The C++-only build links a system BLAS (CMake FindBLAS) instead.

Exact counts: the count accumulators are float64 sums of products of 0/1-mask spectra; the inverse transform of
sum_s conj(M_s) M'_s has an absolute error below ~ u * c * log2(nphi) * sum_s |m_s| |m'_s| <= u c log2(nphi) S nphi
(u = 1.1e-16, c a small constant), far below 1/2 for any real run (S * nphi < 1e12), so rounding gives the exact
integers; :meth:`result` also checks that every count is within 0.25 of an integer.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from typing import Optional, Union

import numpy as np

from . import _checks, _core
from .correlate import _float_array, _mask_rows

__all__ = ["RunCorrelator", "RunCorrelation", "blas_info"]

_log = logging.getLogger(__name__)
_FORMAT = "xcca.RunCorrelator"
_FORMAT_VERSION = 1


def _install_scipy_blas() -> None:
    try:
        import scipy
        from scipy.linalg import cython_blas
    except ImportError:  # pragma: no cover - scipy is a dependency
        _log.warning("scipy not importable: the run correlator uses its slow reference loops")
        return
    capi = cython_blas.__pyx_capi__
    _core.runcorr_use_blas(capi["zherk"], capi["cherk"], capi["zgemm"], capi["cgemm"],
                           f"scipy.linalg.cython_blas (SciPy {scipy.__version__})")


_install_scipy_blas()


def blas_info() -> dict:
    """The BLAS the run correlator's rank-k updates call.

    Returns
    -------
    dict
        ``name``: description; ``threads_local``: True when each update runs single-threaded on xcca's own threads
        (OpenBLAS's per-thread control was found), which makes results independent of ``n_threads``.
    """
    return dict(_core.runcorr_blas_info())


def _physical_memory() -> int:
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 8 << 30


def _zeros(shape, dtype) -> np.ndarray:
    """Zeroed array whose pages are first touched later, by the kernels' threads (numpy.zeros: calloc, madvised for
    huge pages by NumPy). The first rank-k update of each harmonic then faults its pages in on the thread that
    updates it, both cores in parallel and while the matrix is in cache, instead of a single-threaded fill pass over
    a GiB of accumulators up front (which on a VM whose host has not backed the memory yet costs seconds)."""
    return np.zeros(shape, dtype)


def _nan_view(shape) -> np.ndarray:
    """A read-only float64 array of NaN of the given shape that takes no memory (a broadcast view)."""
    return np.broadcast_to(np.float64(np.nan), shape)


def _unpack(packed: np.ndarray, counts: bool) -> np.ndarray:
    """Full (nh, m, m) accumulator of one block from its packed (nh, m, m + 1) array (layout: xcca/runcorr.hpp).

    Element (i, j) of harmonic h is full[h, j, i]; only i <= j is set (as herk leaves a full accumulator). The
    numerator (i <= j) is packed[h, j, i]; the count L(j, i) (j >= i, lower triangle at offset 1) is
    packed[h, i, j + 1], and the count of (i, j) is its conjugate."""
    m = packed.shape[-2]
    if not counts:
        return np.tril(packed[..., :m])
    return np.tril(np.conj(np.swapaxes(packed[..., 1:], -1, -2)))


def _pack_into(packed: np.ndarray, full: np.ndarray, counts: bool) -> None:
    """Inverse of :func:`_unpack`: write one block's full accumulator (its i <= j elements) into the packed array."""
    m = packed.shape[-2]
    j, r = np.indices((m, m + 1))
    if not counts:
        packed[:, r <= j] = full[:, np.tri(m, dtype=bool)]
    else:
        packed[:, r > j] = np.conj(np.swapaxes(full, -1, -2))[:, np.tri(m, dtype=bool).T]


def _ratio(num: np.ndarray, den: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """num / den, NaN where den == 0 (den: float64 counts), into out."""
    out = np.empty(num.shape) if out is None else out
    np.divide(num, den, out=out, where=den > 0)
    out[den <= 0] = np.nan
    return out


def _jackknife(replicates: np.ndarray) -> np.ndarray:
    """sqrt((B - 1) / B * sum_b (r_b - mean r)^2) over the first axis."""
    b = replicates.shape[0]
    if b < 2:
        return np.full(replicates.shape[1:], np.nan)
    mean = replicates.mean(0)
    acc = np.zeros(replicates.shape[1:])
    for r in replicates:  # one block at a time: no (B, P, n) temporaries
        d = r - mean
        d *= d
        acc += d
    acc *= (b - 1) / b
    return np.sqrt(acc, out=acc)


@dataclass
class RunCorrelation:
    """Result of :meth:`RunCorrelator.result`: plain arrays, one row per q pair.

    Attributes
    ----------
    correlation : ndarray, float64, shape (npairs, nphi)
        C(q, q', Delta_k), Delta_k = 2 pi k / nphi, for the pairs in ``q_pairs``; NaN where no valid sample pair
        exists. Unit: the rings' unit squared (``units``).
    error : ndarray, float64, shape (npairs, nphi)
        Jackknife standard error over the blocks (NaN with fewer than 2 non-empty blocks; for the pooled estimator
        that NaN array is a read-only view taking no memory).
    counts : ndarray, int64, shape (npairs, nphi)
        Number of valid sample pairs summed over the shots, sum_s sum_phi m(q, phi) m(q', phi + Delta) (exact).
    q_pairs : ndarray, int64, shape (npairs, 2)
        Ring indices (q, q') of each row. C(q', q, Delta) = C(q, q', -Delta).
    n_shots : int
        Shots (or shot pairs for a correlator of differences) accumulated.
    block_shots : ndarray, int64, shape (blocks,)
        Shots per jackknife block.
    replicates : ndarray, float64, shape (blocks, npairs, nphi), or None
        Leave-one-block-out estimates C_{-b} (what the error is computed from; decompose each to propagate errors).
        Only kept when asked for (``RunCorrelator.result(replicates=True)``), else None: the error does not need
        them stored. With blocks=1 (pooled) all NaN, as a read-only view taking no memory.
    estimator : str
        "pooled" or "per_shot".
    units : str
        Unit of the ring intensities.
    q : ndarray or None, shape (nq,)
        Ring q values in 1/Angstrom, if the correlator was given them.
    inter : RunCorrelation or None
        The inter-shot control term from :meth:`RunCorrelator.add_random_pairs`, same layout.
    """

    correlation: np.ndarray
    error: np.ndarray
    counts: np.ndarray
    q_pairs: np.ndarray
    n_shots: int
    block_shots: np.ndarray
    replicates: Optional[np.ndarray]
    estimator: str = "pooled"
    units: str = "arb. units"
    q: Optional[np.ndarray] = None
    inter: Optional["RunCorrelation"] = field(default=None, repr=False)

    @property
    def nphi(self) -> int:
        """Number of lags (ring length)."""
        return int(self.correlation.shape[-1])

    @property
    def delta(self) -> np.ndarray:
        """Lags Delta_k = 2 pi k / nphi in radians, shape (nphi,)."""
        return 2 * np.pi * np.arange(self.nphi) / self.nphi

    @property
    def q_pair_values(self) -> Optional[np.ndarray]:
        """(q, q') in 1/Angstrom of each row, shape (npairs, 2), or None without q values."""
        return None if self.q is None else np.asarray(self.q)[self.q_pairs]

    def pair_index(self, q: int, q2: int) -> int:
        """Row of the pair (q, q') in the arrays.

        Parameters
        ----------
        q, q2 : int
            Ring indices.

        Returns
        -------
        int
            The first row holding (q, q2); ValueError if the pair was not correlated.
        """
        hit = np.flatnonzero((self.q_pairs[:, 0] == q) & (self.q_pairs[:, 1] == q2))
        if hit.size == 0:
            raise ValueError(f"q pair ({q}, {q2}) is not among the correlated pairs")
        return int(hit[0])

    def harmonics(self, n_max: Optional[int] = None) -> np.ndarray:
        """Angular Fourier components C_n(q, q') of the correlation.

        Parameters
        ----------
        n_max : int, optional
            Highest harmonic (<= nphi // 2); default nphi // 2.

        Returns
        -------
        ndarray, complex128, shape (npairs, n_max + 1)
            C_n = (1 / nphi) sum_k C(Delta_k) exp(-i n Delta_k) (numpy.fft.rfft of ``correlation`` / nphi); NaN
            rows where the correlation has NaN lags.
        """
        return self._harm(self.correlation, n_max)

    def harmonics_error(self, n_max: Optional[int] = None) -> np.ndarray:
        """Jackknife standard errors of :meth:`harmonics`.

        Parameters
        ----------
        n_max : int, optional
            Highest harmonic; default nphi // 2.

        Returns
        -------
        ndarray, complex128, shape (npairs, n_max + 1)
            Real part: error of Re C_n; imaginary part: error of Im C_n.
        """
        self._need_replicates("harmonics_error")
        h = self._harm(self.replicates, n_max)
        return _jackknife(h.real) + 1j * _jackknife(h.imag)

    def _need_replicates(self, what: str) -> None:
        if self.replicates is None:
            raise ValueError(f"{what} needs the jackknife replicates: call RunCorrelator.result(replicates=True)")

    def _harm(self, c: np.ndarray, n_max: Optional[int]) -> np.ndarray:
        top = self.nphi // 2
        n_max = top if n_max is None else int(n_max)
        if not 0 <= n_max <= top:
            raise ValueError(f"n_max must be within [0, nphi // 2 = {top}], got {n_max}")
        return np.fft.rfft(c, axis=-1)[..., : n_max + 1] / self.nphi

    def subtract_inter(self) -> "RunCorrelation":
        """Intra-shot minus inter-shot correlation (the standard control for detector correlations).

        Returns
        -------
        RunCorrelation
            correlation = intra - inter, with replicates (and so the jackknife error) taken block by block.
        """
        if self.inter is None:
            raise ValueError("no inter-shot term: call RunCorrelator.add_random_pairs first")
        self._need_replicates("subtract_inter")
        self.inter._need_replicates("subtract_inter")
        if self.replicates.shape != self.inter.replicates.shape:
            raise ValueError("intra and inter terms have different shapes")
        rep = self.replicates - self.inter.replicates
        return replace(self, correlation=self.correlation - self.inter.correlation, error=_jackknife(rep),
                       replicates=rep, inter=None)


class RunCorrelator:
    """Accumulates the angular correlations C(q, q', Delta) of every selected ring pair over a run.

    Parameters
    ----------
    nq, nphi : int
        Rings per shot and samples per ring (the polar grid of the run).
    q_pairs : "all" or array_like of int, shape (npairs, 2)
        "all": every q <= q' (numpy.triu_indices(nq) order); or the (q, q') pairs to report. Only the rings named
        are transformed and accumulated.
    estimator : {"pooled", "per_shot"}
        See the module docstring: ratio of sums (fast for any mask) or mean of per-shot normalised correlations.
    blocks : int
        Jackknife blocks (>= 1); shot s goes to block s % blocks.
    dtype : {numpy.float64, numpy.float32}
        Precision of the data spectra and accumulators (counts are always float64 and exact). float32 halves memory
        and doubles BLAS speed at ~1e-6 relative accuracy.
    q : array_like, shape (nq,), optional
        q of each ring in 1/Angstrom (stored with the results).
    units : str
        Unit of the ring intensities (the correlation's unit is its square).
    chunk : int
        Shots per chunk (per BLAS call set); sets the chunk buffers' memory.
    n_threads : int, optional
        Threads (None: all usable cores). Results do not depend on it.
    max_memory : int, optional
        Byte limit for the accumulators and chunk buffers (default: half the physical memory); larger needs raise
        MemoryError before anything is allocated.

    Notes
    -----
    Memory (pooled): blocks * (nphi // 2 + 1) * nqu * (nqu + 1) * 16 bytes for the float64 accumulators (nqu = rings
    used; numerator and counts are the two triangles of one packed array), blocks * (nphi // 2 + 1) * nqu^2 * 24 for
    float32 (a complex64 numerator and complex128 counts, full matrices); the inter-shot term adds blocks *
    (nphi // 2 + 1) * nqu^2 * (c + 16) (c = 16 for float64, 8 for float32); plus chunk * (nphi // 2 + 1)
    * nqu * (c + 16) for a chunk's spectra (an upper bound: ``add`` transforms one block of a chunk at a time,
    ceil(chunk / blocks) shots). per_shot: blocks * npairs * nphi * 24 bytes. See ``memory_bytes``. The accumulators
    are allocated zeroed but untouched; their pages are faulted in by the first rank-k updates, on the worker threads.
    Masks: True = valid sample (LOKI's convention).
    """

    def __init__(self, nq: int, nphi: int, *, q_pairs: Union[str, np.ndarray] = "all", estimator: str = "pooled",
                 blocks: int = 2, dtype=np.float64, q=None, units: str = "arb. units", chunk: int = 64,
                 n_threads: Optional[int] = None, max_memory: Optional[int] = None):
        for name, v in (("nq", nq), ("nphi", nphi), ("blocks", blocks), ("chunk", chunk)):
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{name} must be a positive integer, got {v!r} ({type(v).__name__})")
            if v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        self.nq, self.nphi, self.blocks, self.chunk = int(nq), int(nphi), int(blocks), int(chunk)
        self.nh = self.nphi // 2 + 1
        if estimator not in ("pooled", "per_shot"):
            raise ValueError(f"estimator must be 'pooled' or 'per_shot', got {estimator!r}")
        self.estimator = estimator
        dt = np.dtype(dtype)
        if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"dtype must be float32 or float64, got {dt}")
        self.dtype = dt
        self._cdtype = np.dtype(np.complex64 if dt == np.float32 else np.complex128)
        # float64 pooled: numerator and counts share one packed array (both complex128; half the memory of two full
        # matrices, of which herk writes only a triangle each). float32 keeps a complex64 numerator of its own.
        self._packed = self.estimator == "pooled" and self._cdtype == np.complex128
        if isinstance(q_pairs, str):
            if q_pairs != "all":
                raise ValueError(f"q_pairs must be 'all' or an (npairs, 2) integer array, got {q_pairs!r}")
            i, j = np.triu_indices(self.nq)
            qp = np.stack([i, j], 1).astype(np.int64)
        else:
            qp = np.asarray(q_pairs)
            if qp.dtype.kind not in "iu":
                raise TypeError(f"q_pairs must hold integer ring indices, got dtype {qp.dtype}")
            if qp.ndim != 2 or qp.shape[1] != 2 or qp.shape[0] == 0:
                raise ValueError(f"q_pairs must have shape (npairs, 2) with npairs >= 1, got {qp.shape}")
            qp = qp.astype(np.int64)
            if qp.min() < 0 or qp.max() >= self.nq:
                raise ValueError(f"q_pairs holds ring indices outside [0, nq = {self.nq}): min {qp.min()}, "
                                 f"max {qp.max()}")
        self.q_pairs = np.ascontiguousarray(qp)
        self._qsel, inv = np.unique(self.q_pairs, return_inverse=True)
        self._qsel = self._qsel.astype(np.int64)
        self._lpairs = np.ascontiguousarray(inv.reshape(-1, 2).astype(np.int64))
        self.nqu = len(self._qsel)
        self.q = None if q is None else _checks.real_array(q, "q").astype(np.float64)
        if self.q is not None and self.q.shape != (self.nq,):
            raise ValueError(f"q must have shape (nq,) = ({self.nq},), got {self.q.shape}")
        if self.q is not None and not (np.all(np.isfinite(self.q)) and np.all(self.q >= 0)):
            raise ValueError("q must hold finite ring momenta >= 0 (1/Angstrom)")
        self.units = str(units)
        self.n_threads = n_threads
        if max_memory is not None:
            max_memory = _checks.positive_int(max_memory, "max_memory")
        self.max_memory = _physical_memory() // 2 if max_memory is None else max_memory
        self.memory_bytes = self._memory(inter=False)
        self._check_memory(self.memory_bytes)
        self.n_shots = 0
        self.block_shots = np.zeros(self.blocks, np.int64)
        self._kind: Optional[str] = None  # "shots" or "differences"
        B, nh, m = self.blocks, self.nh, self.nqu
        if self.estimator == "pooled":
            if self._packed:  # one array: numerator upper triangles, counts lower triangles (see _pack)
                self._num = _zeros((B, nh, m, m + 1), np.complex128)
                self._cnt = self._num
            else:
                self._num = _zeros((B, nh, m, m), self._cdtype)
                self._cnt = _zeros((B, nh, m, m), np.complex128)
        else:
            P, n = len(self.q_pairs), self.nphi
            self._ps_sum = _zeros((B, P, n), np.float64)
            self._ps_nv = _zeros((B, P, n), np.int64)
            self._ps_cnt = _zeros((B, P, n), np.int64)
        self._pending: list = [None, np.zeros(B)]  # shared mask rows (nqu, n) and their shot weights per block
        # Inter-shot term (pooled only), allocated by add_random_pairs.
        self._inum = self._icnt = None
        self._ipending: list = [None, np.zeros(B)]
        self.n_inter = 0
        self.inter_block_shots = np.zeros(B, np.int64)

    # ---- memory --------------------------------------------------------------------------------------------------
    def _memory(self, inter: bool) -> int:
        c = self._cdtype.itemsize
        chunk = self.chunk * self.nh * self.nqu * (c + 16) * (2 if inter else 1)
        if self.estimator == "pooled":
            m = self.nqu
            acc = self.blocks * self.nh * (m * (m + 1) * 16 if self._packed else m * m * (c + 16))
            inter_acc = self.blocks * self.nh * m * m * (c + 16)  # the inter-shot term keeps full matrices
            return acc + (inter_acc if inter else 0) + chunk
        return self.blocks * len(self.q_pairs) * self.nphi * 24 + chunk

    def _check_memory(self, need: int) -> None:
        if need > self.max_memory:
            raise MemoryError(
                f"RunCorrelator needs {need / 2**30:.2f} GiB ({self.blocks} blocks x {self.nh} harmonics x "
                f"{self.nqu}^2 ring pairs of accumulators plus chunk buffers), more than max_memory = "
                f"{self.max_memory / 2**30:.2f} GiB: select q_pairs (e.g. a band |q - q'| <= K), use fewer rings, "
                f"fewer blocks, dtype=float32 or a smaller chunk")

    # ---- input ---------------------------------------------------------------------------------------------------
    def _rings(self, rings, name="rings") -> np.ndarray:
        a = _float_array(rings, name)
        if a.ndim == 2:
            a = a[None]
        if a.ndim != 3 or a.shape[1:] != (self.nq, self.nphi):
            raise ValueError(f"{name} must have shape (N, nq, nphi) = (N, {self.nq}, {self.nphi}) or (nq, nphi), "
                             f"got {np.shape(rings)}")
        return np.ascontiguousarray(a, dtype=self.dtype)

    def _mask(self, mask, n_shots: int):
        """(rows (M, n) bool C-contiguous or None, shared: bool)."""
        if mask is None:
            return None, True
        m = np.asarray(mask)
        try:
            rows = _mask_rows(m, (n_shots, self.nq, self.nphi))
        except ValueError as e:
            raise ValueError(f"mask: {e}") from None
        return rows, rows.shape[0] in (1, self.nq)

    def _check_finite(self, a: np.ndarray, rows, units: np.ndarray, diff: bool) -> None:
        # Fast path: a finite sum means every sample is finite (NaN and inf propagate); differences also need
        # |a| <= max / 2 so that no difference overflows.
        if np.isfinite(a.sum(dtype=np.float64)):
            if not diff:
                return
            half = np.finfo(a.dtype).max / 2
            if a.size == 0 or (a.max() <= half and a.min() >= -half):
                return
        for s0 in range(0, len(units), 16):
            u = units[s0:s0 + 16]
            x = a[u[:, 0]] - a[u[:, 1]] if diff else a[u]
            x = x[:, self._qsel]
            bad = ~np.isfinite(x)
            if not bad.any():
                continue
            if rows is not None:
                def valid(s):
                    if rows.shape[0] == 1:
                        return np.broadcast_to(rows[0], (len(s), self.nq, self.nphi))
                    if rows.shape[0] == self.nq:
                        return np.broadcast_to(rows, (len(s), self.nq, self.nphi))
                    return rows.reshape(-1, self.nq, self.nphi)[s]
                v = valid(u[:, 0]) & valid(u[:, 1]) if diff else valid(u)
                bad &= v[:, self._qsel]
            if bad.any():
                raise ValueError(f"rings: {int(bad.sum())} non-finite (NaN/inf) samples under a valid mask; mask "
                                 f"them out (mask True = valid)")

    def _start(self, kind: str) -> None:
        if self._kind is not None and self._kind != kind:
            raise ValueError(f"this correlator accumulates {self._kind}; use a separate RunCorrelator for {kind}")
        self._kind = kind

    # ---- accumulation --------------------------------------------------------------------------------------------
    def add(self, rings, mask=None) -> "RunCorrelator":
        """Accumulate shots.

        Parameters
        ----------
        rings : array_like, shape (N, nq, nphi) or (nq, nphi)
            Polar rings of N shots (converted to the correlator's dtype).
        mask : array_like of bool, optional
            True = valid sample (LOKI's convention): shared by all shots (broadcastable to (nq, nphi)) or one per
            shot (N, nq, nphi). A NaN/inf under a valid mask is an error.

        Returns
        -------
        RunCorrelator
            self.
        """
        a = self._rings(rings)
        rows, shared = self._mask(mask, a.shape[0])
        units = np.arange(a.shape[0], dtype=np.int64)
        self._check_finite(a, rows, units, False)
        self._start("shots")
        self._accumulate(a, rows, shared, units, diff=False)
        return self

    def add_differences(self, rings, pairs, mask=None) -> "RunCorrelator":
        """Accumulate differences of paired shots, rings[i] - rings[j] with the combined mask m_i & m_j.

        Differences cancel what paired shots share (detector artefacts, the mean pattern). A correlator holds
        either shots or differences, never both.

        Parameters
        ----------
        rings : array_like, shape (N, nq, nphi)
            Polar rings.
        pairs : array_like of int, shape (npairs, 2)
            Shot pairs (i, j), e.g. from xcca.pair_shots.
        mask : array_like of bool, optional
            True = valid sample; shared (nq, nphi) or per shot (N, nq, nphi).

        Returns
        -------
        RunCorrelator
            self.
        """
        a = self._rings(rings)
        p = np.asarray(pairs)
        if p.dtype.kind not in "iu":
            raise TypeError(f"pairs must hold integer shot indices, got dtype {p.dtype}")
        if p.ndim != 2 or p.shape[1] != 2:
            raise ValueError(f"pairs must have shape (npairs, 2), got {p.shape}")
        p = np.ascontiguousarray(p, dtype=np.int64)
        if p.size and (p.min() < 0 or p.max() >= a.shape[0]):
            raise ValueError(f"pairs holds shot indices outside [0, {a.shape[0]})")
        rows, shared = self._mask(mask, a.shape[0])
        self._check_finite(a, rows, p, True)
        self._start("differences")
        if len(p):
            self._accumulate(a, rows, shared, p, diff=True)
        return self

    def add_random_pairs(self, rings, pairs=None, mask=None, *, seed=None) -> "RunCorrelator":
        """Accumulate the inter-shot term: correlations of ring q of shot i with ring q' of another shot j.

        intra - inter (:meth:`RunCorrelation.subtract_inter`) removes correlations that do not come from a single
        shot's structure (detector, background), the control of thor and the AGIPD scripts. Pooled estimator only.

        Parameters
        ----------
        rings : array_like, shape (N, nq, nphi), N >= 2
            Polar rings.
        pairs : array_like of int, shape (npairs, 2), optional
            Shot pairs (i, j), i != j; default: a random cycle through all N shots (each shot once as i, once as j).
        mask : array_like of bool, optional
            True = valid sample; shared or per shot.
        seed : int or numpy.random.Generator, optional
            For the default pairs.

        Returns
        -------
        RunCorrelator
            self.
        """
        if self.estimator != "pooled":
            raise ValueError("add_random_pairs needs estimator='pooled'")
        a = self._rings(rings)
        N = a.shape[0]
        if pairs is None:
            if N < 2:
                raise ValueError("add_random_pairs needs at least 2 shots")
            perm = np.random.default_rng(seed).permutation(N)
            p = np.stack([perm, np.roll(perm, -1)], 1).astype(np.int64)
        else:
            p = np.asarray(pairs)
            if p.dtype.kind not in "iu" or p.ndim != 2 or p.shape[1] != 2:
                raise ValueError(f"pairs must be an integer array of shape (npairs, 2), got {p.dtype} {p.shape}")
            p = np.ascontiguousarray(p, dtype=np.int64)
            if p.size and (p.min() < 0 or p.max() >= N):
                raise ValueError(f"pairs holds shot indices outside [0, {N})")
            if np.any(p[:, 0] == p[:, 1]):
                raise ValueError("pairs: an inter-shot pair needs two different shots")
        rows, shared = self._mask(mask, N)
        self._check_finite(a, rows, np.arange(N, dtype=np.int64), False)
        if self._inum is None:
            self._check_memory(self._memory(inter=True))
            self.memory_bytes = self._memory(inter=True)
            B, nh, m = self.blocks, self.nh, self.nqu
            self._inum = _zeros((B, nh, m, m), self._cdtype)
            self._icnt = _zeros((B, nh, m, m), np.complex128)
        nt = self.n_threads
        blk = (self.n_inter + np.arange(len(p))) % self.blocks
        for c0 in range(0, len(p), self.chunk):
            ch = p[c0:c0 + self.chunk]
            order = np.argsort(blk[c0:c0 + self.chunk], kind="stable")
            ch = np.ascontiguousarray(ch[order])
            bl = blk[c0:c0 + self.chunk][order]
            K = len(ch)
            sa = np.empty((self.nh, K, self.nqu), self._cdtype)
            sb = np.empty_like(sa)
            ma = mb = None
            if not shared:
                ma = np.empty((self.nh, K, self.nqu), np.complex128)
                mb = np.empty_like(ma)
            self._spectra(a, rows, ch[:, 0], False, sa, ma)
            self._spectra(a, rows, ch[:, 1], False, sb, mb)
            for b in range(self.blocks):
                lo, hi = np.searchsorted(bl, b), np.searchsorted(bl, b, side="right")
                if hi > lo:
                    _core.runcorr_gemm(sa, sb, int(lo), int(hi), 1.0, self._inum[b], nt)
                    if not shared:
                        _core.runcorr_gemm(ma, mb, int(lo), int(hi), 1.0, self._icnt[b], nt)
            if shared:
                self._pend(self._ipending, self._icnt, rows, np.bincount(bl, minlength=self.blocks))
        self.inter_block_shots += np.bincount(blk, minlength=self.blocks)
        self.n_inter += len(p)
        return self

    def _spectra(self, a, rows, units, diff, spec, mspec) -> None:
        bad = _core.runcorr_spectra(a, rows, a.shape[0], self.nq, self.nphi, np.ascontiguousarray(units), diff,
                                    self._qsel, spec, mspec, str(self.dtype), self.n_threads)
        if bad:  # pragma: no cover - _check_finite rejects these first
            raise ValueError(f"rings: {bad} non-finite samples under a valid mask")

    def _mask_spectrum(self, rows) -> np.ndarray:
        """Spectra (nh, 1, nqu) of one shared mask (None: all valid)."""
        ms = np.empty((self.nh, 1, self.nqu), np.complex128)
        _core.runcorr_spectra(None, rows, 1, self.nq, self.nphi, np.zeros(1, np.int64), False, self._qsel, None, ms,
                              str(self.dtype), self.n_threads)
        return ms

    def _pend(self, pending: list, acc, rows, weights) -> None:
        """Shared-mask count terms: one rank-1 update per block with the shot count as weight, deferred while the
        same mask keeps coming."""
        key = None if rows is None else np.ascontiguousarray(np.broadcast_to(
            rows, (self.nq, self.nphi)) if rows.shape[0] == 1 else rows)
        if pending[0] is not None or pending[1].any():
            same = (key is None and pending[0] is None) or (
                key is not None and pending[0] is not None and np.array_equal(key, pending[0]))
            if not same:
                self._flush(pending, acc)
        pending[0] = key
        pending[1] = pending[1] + weights

    def _flush(self, pending: list, acc) -> None:
        w = pending[1]
        if acc is not None and w.any():
            ms = self._mask_spectrum(pending[0])
            for b in range(self.blocks):
                if not w[b]:
                    continue
                if acc is self._icnt:  # the inter-shot term keeps full matrices
                    _core.runcorr_gemm(ms, ms, 0, 1, float(w[b]), acc[b], self.n_threads)
                else:
                    _core.runcorr_herk(ms, 0, 1, float(w[b]), acc[b], self.n_threads, lower=self._packed)
        pending[0], pending[1] = None, np.zeros(self.blocks)

    def _flush_all(self) -> None:
        if self.estimator == "pooled":
            self._flush(self._pending, self._cnt)
            self._flush(self._ipending, self._icnt)

    def _accumulate(self, a, rows, shared, units, diff) -> None:
        nt = self.n_threads
        N = len(units)
        blk = (self.n_shots + np.arange(N)) % self.blocks
        pooled = self.estimator == "pooled"
        ms_shared = None
        if shared and not pooled:
            ms_shared = self._mask_spectrum(None if rows is None else rows)
        # Spectra are computed one block of a chunk at a time into buffers reused for every block and chunk of the
        # call: a block's columns are the same rank-k update as before (bit-identical), and the buffers hold
        # ceil(chunk / blocks) columns instead of chunk (blocks=2, chunk=64, 100 rings x 3600 phi: 185 MB less
        # memory to fault in).
        kmax = min(N, -(-self.chunk // self.blocks)) if N else 0
        sbuf = np.empty(self.nh * kmax * self.nqu, self._cdtype)
        mbuf = None if shared else np.empty(self.nh * kmax * self.nqu, np.complex128)
        for c0 in range(0, N, self.chunk):
            order = np.argsort(blk[c0:c0 + self.chunk], kind="stable")
            ch = np.ascontiguousarray(units[c0:c0 + self.chunk][order])
            bl = blk[c0:c0 + self.chunk][order]
            for b in range(self.blocks):
                lo, hi = int(np.searchsorted(bl, b)), int(np.searchsorted(bl, b, side="right"))
                if hi == lo:
                    continue
                K = hi - lo
                spec = sbuf[: self.nh * K * self.nqu].reshape(self.nh, K, self.nqu)
                mspec = None if shared else mbuf[: self.nh * K * self.nqu].reshape(self.nh, K, self.nqu)
                self._spectra(a, rows, np.ascontiguousarray(ch[lo:hi]), diff, spec, mspec)
                if pooled:
                    _core.runcorr_herk(spec, 0, K, 1.0, self._num[b], nt)
                    if not shared:
                        _core.runcorr_herk(mspec, 0, K, 1.0, self._cnt[b], nt, lower=self._packed)
                else:
                    _core.runcorr_per_shot(spec, mspec if mspec is not None else ms_shared, self.nphi, 0, K,
                                           self._lpairs, self._ps_sum[b], self._ps_nv[b], self._ps_cnt[b], nt)
            if shared and pooled:
                self._pend(self._pending, self._cnt, rows, np.bincount(bl, minlength=self.blocks))
        self.block_shots += np.bincount(blk, minlength=self.blocks)
        self.n_shots += N

    # ---- combination ---------------------------------------------------------------------------------------------
    def _compatible(self, other) -> None:
        if not isinstance(other, RunCorrelator):
            raise TypeError(f"can only merge a RunCorrelator, got {type(other).__name__}")
        for name in ("nq", "nphi", "estimator", "blocks", "dtype"):
            if getattr(self, name) != getattr(other, name):
                raise ValueError(f"cannot merge correlators with different {name}: {getattr(self, name)!r} vs "
                                 f"{getattr(other, name)!r}")
        if not np.array_equal(self.q_pairs, other.q_pairs):
            raise ValueError("cannot merge correlators with different q_pairs")
        if self._kind and other._kind and self._kind != other._kind:
            raise ValueError(f"cannot merge a correlator of {self._kind} with one of {other._kind}")

    def merge(self, other: "RunCorrelator") -> "RunCorrelator":
        """Add another correlator's sums into this one (same nq, nphi, q_pairs, estimator, blocks, dtype).

        Parameters
        ----------
        other : RunCorrelator
            Partial result of other shots (block b adds to block b).

        Returns
        -------
        RunCorrelator
            self.
        """
        self._compatible(other)
        self._flush_all()
        other._flush_all()
        if self.estimator == "pooled":
            self._num += other._num
            if not self._packed:  # packed: _cnt is _num
                self._cnt += other._cnt
            if other._inum is not None:
                if self._inum is None:
                    self._inum, self._icnt = other._inum.copy(), other._icnt.copy()
                else:
                    self._inum += other._inum
                    self._icnt += other._icnt
        else:
            self._ps_sum += other._ps_sum
            self._ps_nv += other._ps_nv
            self._ps_cnt += other._ps_cnt
        self.n_shots += other.n_shots
        self.block_shots += other.block_shots
        self.n_inter += other.n_inter
        self.inter_block_shots += other.inter_block_shots
        self._kind = self._kind or other._kind
        return self

    def copy(self) -> "RunCorrelator":
        """An independent copy.

        Returns
        -------
        RunCorrelator
        """
        import copy as _copy
        return _copy.deepcopy(self)

    def __add__(self, other: "RunCorrelator") -> "RunCorrelator":
        return self.copy().merge(other)

    def __iadd__(self, other: "RunCorrelator") -> "RunCorrelator":
        return self.merge(other)

    # ---- results -------------------------------------------------------------------------------------------------
    def _pooled(self, num_acc, cnt_acc, upper: bool, block_shots, keep_rep: bool) -> RunCorrelation:
        # One C++ pass over the pairs: per-block inverse FFTs of numerator and counts (SIMD lanes of pairs), exact
        # counts, ratio, replicates and jackknife error. The outputs are written once, by the kernel's threads (no
        # zero-fill pass); what is NaN by construction (the error without a jackknife, the replicates of a single
        # block) is a read-only NaN view instead of an array of its own. The replicates are only written when asked
        # for (the kernel's jackknife keeps them per lane of pairs either way: the error is the same, bit for bit).
        P, n = len(self.q_pairs), self.nphi
        corr, counts = np.empty((P, n), np.float64), np.empty((P, n), np.int64)
        jack = bool(self.blocks > 1 and np.all(block_shots > 0))
        err = np.empty((P, n), np.float64) if jack else None
        rep = np.empty((self.blocks, P, n), np.float64) if self.blocks > 1 and keep_rep else None
        dev = _core.runcorr_pooled_result(num_acc, cnt_acc, n, upper, self._lpairs, jack, corr, err, counts, rep,
                                          self.n_threads)
        if dev > 0.25:  # pragma: no cover - see the bound in the module docstring
            raise RuntimeError(f"run correlator: mask pair counts off an integer by {dev} (precision exhausted)")
        if err is None:
            err = _nan_view((P, n))
        if rep is None and keep_rep:
            rep = _nan_view((self.blocks, P, n))
        return RunCorrelation(correlation=corr, error=err, counts=counts, q_pairs=self.q_pairs.copy(),
                              n_shots=int(block_shots.sum()), block_shots=block_shots.copy(), replicates=rep,
                              estimator=self.estimator, units=self.units,
                              q=None if self.q is None else self.q.copy())

    def _make(self, corr, counts, rep, block_shots, keep_rep: bool) -> RunCorrelation:
        err = _jackknife(rep) if np.all(block_shots > 0) else np.full(corr.shape, np.nan)
        if not keep_rep:
            rep = None
        return RunCorrelation(correlation=corr, error=err, counts=counts, q_pairs=self.q_pairs.copy(),
                              n_shots=int(block_shots.sum()), block_shots=block_shots.copy(), replicates=rep,
                              estimator=self.estimator, units=self.units,
                              q=None if self.q is None else self.q.copy())

    def result(self, replicates: bool = False) -> RunCorrelation:
        """The correlations of the shots so far (the correlator can keep accumulating).

        Parameters
        ----------
        replicates : bool
            Also keep the leave-one-block-out estimates (``blocks`` x npairs x nphi float64; what
            :meth:`RunCorrelation.harmonics_error`, :meth:`RunCorrelation.subtract_inter` and error propagation
            through decompositions need). Default False: ``replicates`` is None and the error is the same, bit for
            bit.

        Returns
        -------
        RunCorrelation
            correlation, error, counts, q_pairs, n_shots, replicates, harmonics(n_max); ``inter`` when
            add_random_pairs was used.
        """
        self._flush_all()
        if self.estimator == "pooled":
            keep = bool(replicates)
            res = self._pooled(self._num, self._cnt, True, self.block_shots, keep)
            if self._inum is not None:
                res.inter = self._pooled(self._inum, self._icnt, False, self.inter_block_shots, keep)
            return res
        ts, tv = self._ps_sum.sum(0), self._ps_nv.sum(0)
        corr = _ratio(ts, tv.astype(np.float64))
        rep = _ratio(ts - self._ps_sum, (tv - self._ps_nv).astype(np.float64))
        return self._make(corr, self._ps_cnt.sum(0), rep, self.block_shots, bool(replicates))

    # ---- files ---------------------------------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write the correlator's state to an HDF5 file (to merge jobs later with :meth:`load` and :meth:`merge`).

        Parameters
        ----------
        path : str or os.PathLike
            Output file (overwritten).
        """
        import h5py
        self._flush_all()
        try:
            f = h5py.File(path, "w")
        except OSError as e:
            raise OSError(f"cannot write run correlator file {os.fspath(path)!r}: {e}") from None
        with f:
            g = f.create_group("runcorr")
            g.attrs.update(format=_FORMAT, version=_FORMAT_VERSION, nq=self.nq, nphi=self.nphi,
                           estimator=self.estimator, blocks=self.blocks, dtype=str(self.dtype), units=self.units,
                           chunk=self.chunk, n_shots=self.n_shots, n_inter=self.n_inter, kind=self._kind or "")
            g.attrs["description"] = ("Partial sums of xcca.RunCorrelator: harmonic-space accumulators acc[b, h, j, i] "
                                      "= sum over shots of block b of A(i, h) conj(A(j, h)), A = rfft of m*a (numerator, "
                                      "units^2) or of m (counts)")
            g["q_pairs"] = self.q_pairs
            g["block_shots"] = self.block_shots
            g["inter_block_shots"] = self.inter_block_shots
            if self.q is not None:
                g["q"] = self.q
                g["q"].attrs["units"] = "1/angstrom"
            names = (("num", "_num", f"({self.units})^2"), ("cnt", "_cnt", "sample pairs"),
                     ("inter_num", "_inum", f"({self.units})^2"), ("inter_cnt", "_icnt", "sample pairs"),
                     ("ps_sum", "_ps_sum", f"({self.units})^2"), ("ps_nvalid", "_ps_nv", "shots"),
                     ("ps_counts", "_ps_cnt", "sample pairs"))
            for key, attr, unit in names:
                v = getattr(self, attr, None)
                if v is None:
                    continue
                if self._packed and attr in ("_num", "_cnt"):
                    # The file keeps full (nh, nqu, nqu) matrices, as before packing: written block by block.
                    B, nh, m = self.blocks, self.nh, self.nqu
                    d = g.create_dataset(key, (B, nh, m, m), np.complex128)
                    for b in range(B):
                        d[b] = _unpack(v[b], attr == "_cnt")
                else:
                    g[key] = v
                g[key].attrs["units"] = unit

    @classmethod
    def load(cls, path, *, n_threads: Optional[int] = None) -> "RunCorrelator":
        """Read a correlator written by :meth:`save`.

        Parameters
        ----------
        path : str or os.PathLike
            File from :meth:`save`.
        n_threads : int, optional
            Threads for further work.

        Returns
        -------
        RunCorrelator
        """
        import h5py
        try:
            f = h5py.File(path, "r")
        except OSError as e:
            raise OSError(f"cannot read run correlator file {os.fspath(path)!r}: {e}") from None
        with f:
            if "runcorr" not in f or f["runcorr"].attrs.get("format") != _FORMAT:
                raise ValueError(f"{os.fspath(path)!r} is not an xcca.RunCorrelator file")
            g = f["runcorr"]
            at = g.attrs
            if int(at["version"]) > _FORMAT_VERSION:
                raise ValueError(f"{os.fspath(path)!r}: format version {at['version']} is newer than this xcca")
            self = cls(int(at["nq"]), int(at["nphi"]), q_pairs=g["q_pairs"][()], estimator=str(at["estimator"]),
                       blocks=int(at["blocks"]), dtype=np.dtype(str(at["dtype"])),
                       q=g["q"][()] if "q" in g else None, units=str(at["units"]), chunk=int(at["chunk"]),
                       n_threads=n_threads, max_memory=1 << 62)
            self.n_shots, self.n_inter = int(at["n_shots"]), int(at["n_inter"])
            self._kind = str(at["kind"]) or None
            self.block_shots = g["block_shots"][()]
            self.inter_block_shots = g["inter_block_shots"][()]
            for key, attr in (("num", "_num"), ("cnt", "_cnt"), ("inter_num", "_inum"), ("inter_cnt", "_icnt"),
                              ("ps_sum", "_ps_sum"), ("ps_nvalid", "_ps_nv"), ("ps_counts", "_ps_cnt")):
                if key not in g:
                    continue
                if self._packed and attr in ("_num", "_cnt"):
                    d = g[key]
                    if d.shape != self._num.shape[:3] + (self.nqu,):
                        raise ValueError(f"{os.fspath(path)!r}: dataset {key} has shape {d.shape}")
                    for b in range(self.blocks):
                        _pack_into(self._num[b], d[b], attr == "_cnt")
                else:
                    setattr(self, attr, np.ascontiguousarray(g[key][()]))
        return self

    def __repr__(self) -> str:
        return (f"RunCorrelator(nq={self.nq}, nphi={self.nphi}, npairs={len(self.q_pairs)}, "
                f"estimator={self.estimator!r}, blocks={self.blocks}, n_shots={self.n_shots}, "
                f"memory={self.memory_bytes / 2**20:.1f} MiB)")
