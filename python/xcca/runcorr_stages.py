"""The run correlator as pipeline stages: C(q, q', Δφ) of the raw shots (pass 1) and of the pair differences (pass 2).

:func:`xcca.analyze` with ``q_pairs=`` registers two stages of the chunk protocol (see :mod:`xcca.stages`):

- :class:`RunCorrStage` ``"runcorr_raw"`` (pass 1): every good frame's cleaned polar rings (outliers and invalid
  samples at 0, their mask True = valid) go into an :class:`xcca.RunCorrelator` (``add``);
- :class:`RunCorrStage` ``"runcorr_difference"`` (pass 2): the paired frames' rings (rows 2i, 2i+1) go in as
  differences with the combined mask (``add_differences``).

Their partials (:class:`RunCorrPartial`) add with ``+`` in the run's fixed tree like every other partial, so the Dask
driver runs them unchanged and stays bit-identical to the local one. A full correlator's accumulators are large
(``blocks · (nphi/2+1) · nq_used² · 32`` bytes: 1.15 GB for 100 rings × 3600 φ) and do not depend on the number of
shots, while a chunk's rings are small (16 frames × 100 × 3600 float32 = 23 MB). So a partial keeps the (selected)
rings of its chunks, packed masks included, until they would exceed ``lazy_bytes`` (default: half the correlator's
memory); only then are they fed into a correlator (one BLAS rank-k update per harmonic for many shots at once). The
partial of a chunk is therefore cheap to ship between processes, and a tree level holds at most one correlator.
Every ``+`` is a deterministic function of its operands, so the same tree gives the same bits in every driver.

Jackknife blocks: the unit at position ``k`` of its chunk (pass 1: the k-th good frame of the chunk; pass 2: the
k-th pair of the chunk) goes to block ``k % blocks`` (the correlator's own rule within one ``add``). With no skipped
frame and ``chunk`` (pass 2: ``chunk // 2``) a multiple of ``blocks`` — the defaults — this is the frame (pair) index
modulo ``blocks`` over the whole run, independent of the driver.

Memory: checked before the run by the correlator's own check (:func:`check_memory`), at the run correlator's peak of
about :data:`PEAK_ACCUMULATORS` accumulators (the two passes' totals and the operands of a merge). It does not grow
with the run: the drivers reduce binary trees over blocks of 64 chunks and fold the block sums in order
(:func:`xcca.stages.tree_sum`), so a driver holds one running total, at most one block's lazy rings and the operands
of one merge.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import List, Optional

import numpy as np

from .runcorr import RunCorrelation, RunCorrelator, _physical_memory

__all__ = ["RunCorrSpec", "RunCorrPartial", "RunCorrStage", "parse_q_pairs", "check_memory", "PEAK_ACCUMULATORS"]

#: Accumulators of one size alive at the pipeline's peak (pass-1 total, pass-2 operands of a merge and its result).
PEAK_ACCUMULATORS = 4

_LAZY_BYTES: Optional[int] = None  # override of the lazy budget (tests); None: half the correlator's memory


def parse_q_pairs(q_pairs, nq: int, name: str = "q_pairs") -> np.ndarray:
    """The q pairs of a run correlator from ``"all"``, ``"band:K"`` or an (npairs, 2) array of ring indices.

    Parameters
    ----------
    q_pairs : "all", "band:K" or array_like of int, shape (npairs, 2)
        ``"all"``: every pair q <= q' (``numpy.triu_indices(nq)`` order, nq (nq + 1) / 2 pairs). ``"band:K"``: the
        pairs with q <= q' <= q + K (K >= 0 an integer; ``band:0`` are the autocorrelations). An array: ring indices
        (0-based, into the run's rings ``arange(qmin, qmax)``).
    nq : int
        Rings in the run.
    name : str
        The argument's name in error messages.

    Returns
    -------
    ndarray of int64, shape (npairs, 2)

    Raises
    ------
    ValueError, TypeError
        Unknown text, K not an integer >= 0, a bad shape or indices outside [0, nq).
    """
    if isinstance(q_pairs, str):
        text = q_pairs.strip()
        if text == "all":
            i, j = np.triu_indices(nq)
            return np.stack([i, j], 1).astype(np.int64)
        if text.startswith("band:"):
            k = text[5:].strip()
            if not k.isdigit():
                raise ValueError(f"{name}: band:K needs an integer K >= 0, got {q_pairs!r}")
            i, j = np.triu_indices(nq)
            keep = j - i <= int(k)
            return np.stack([i[keep], j[keep]], 1).astype(np.int64)
        raise ValueError(f"{name} must be 'all', 'band:K' or an (npairs, 2) array of ring indices, got {q_pairs!r}")
    qp = np.asarray(q_pairs)
    if qp.dtype.kind == "f" and qp.size and np.all(np.isfinite(qp)) and np.all(qp == np.round(qp)):
        qp = qp.astype(np.int64)  # a text file of integers read as floats
    if qp.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer ring indices, got dtype {qp.dtype}")
    if qp.ndim != 2 or qp.shape[1] != 2 or qp.shape[0] == 0:
        raise ValueError(f"{name} must have shape (npairs, 2) with npairs >= 1, got {qp.shape}")
    qp = qp.astype(np.int64)
    if qp.min() < 0 or qp.max() >= nq:
        raise ValueError(f"{name} holds ring indices outside [0, {nq}) (the run's rings): min {qp.min()}, "
                         f"max {qp.max()}")
    return qp


@dataclass
class RunCorrSpec:
    """The fixed parameters of a pipeline run correlator (picklable; travels in the :class:`xcca.stages.RunPlan`).

    Attributes
    ----------
    nq, nphi : int
        Rings of the run and samples per ring.
    q_pairs : ndarray of int64, (npairs, 2)
        Ring index pairs (into the run's rings).
    estimator : {"pooled", "per_shot"}
        See :class:`xcca.RunCorrelator`.
    blocks : int
        Jackknife blocks.
    q : ndarray or None
        q of every ring in 1/Å (stored with the results).
    n_threads : int or None
        Threads of the correlator.
    lazy_bytes : int
        Ring bytes a partial keeps before it feeds them into a correlator.
    """

    nq: int
    nphi: int
    q_pairs: np.ndarray
    estimator: str = "pooled"
    blocks: int = 2
    q: Optional[np.ndarray] = None
    n_threads: Optional[int] = None
    lazy_bytes: int = 0
    rings: np.ndarray = field(init=False)  # the rings used (sorted)
    local_pairs: np.ndarray = field(init=False)  # q_pairs as indices into `rings`

    def __post_init__(self):
        self.rings, inv = np.unique(self.q_pairs, return_inverse=True)
        self.local_pairs = np.ascontiguousarray(inv.reshape(-1, 2).astype(np.int64))
        if not self.lazy_bytes:
            self.lazy_bytes = int(_LAZY_BYTES) if _LAZY_BYTES is not None else max(1 << 20, self.memory_bytes() // 2)

    def correlator(self, max_memory: Optional[int] = None) -> RunCorrelator:
        """A new, empty correlator over the used rings (its own memory check applies).

        Parameters
        ----------
        max_memory : int, optional
            Byte limit of the correlator's check (default: its own, half the physical memory).
        """
        return RunCorrelator(len(self.rings), self.nphi, q_pairs=self.local_pairs, estimator=self.estimator,
                             blocks=self.blocks, dtype=np.float64, units="counts", n_threads=self.n_threads,
                             max_memory=max_memory if max_memory is not None else 1 << 62)

    def memory_bytes(self) -> int:
        """Bytes of one correlator (accumulators and chunk buffers), as the correlator states them."""
        nqu, nh = len(self.rings), self.nphi // 2 + 1
        if self.estimator == "pooled":
            return self.blocks * nh * nqu * (nqu + 1) * 16 + 64 * nh * nqu * 32  # float64: packed triangles
        return self.blocks * len(self.q_pairs) * self.nphi * 24 + 64 * nh * nqu * 32


def check_memory(spec: RunCorrSpec) -> None:
    """Refuse a run correlator that does not fit, before the run: the correlator's own check, with the budget of
    half the physical memory shared by :data:`PEAK_ACCUMULATORS` accumulators.

    Parameters
    ----------
    spec : RunCorrSpec
        The correlator of the run.

    Raises
    ------
    MemoryError
        Too large; the message names ``q_pairs`` and suggests a band or fewer rings.
    """
    limit = _physical_memory() // 2 // PEAK_ACCUMULATORS
    try:
        spec.correlator(max_memory=limit)  # checks before allocating; np.zeros pages are not touched
    except MemoryError as exc:
        raise MemoryError(f"q_pairs: the run correlator does not fit ({PEAK_ACCUMULATORS} accumulators alive at "
                          f"the pipeline's peak): {exc}") from None


def _runs(labels: np.ndarray, blocks: int) -> List[slice]:
    """Maximal runs of units whose block labels go 0, 1, 2, ... (mod blocks) consecutively."""
    if not len(labels):
        return []
    brk = np.flatnonzero(labels[1:] != (labels[:-1] + 1) % blocks) + 1
    edges = [0, *brk.tolist(), len(labels)]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


@dataclass
class _Piece:
    rings: np.ndarray  # (K, nqu, nphi), 0 where invalid; K shots, or 2K frames of K pairs
    mask: np.ndarray  # packed bits (1 or K, nqu, ceil(nphi / 8)); 1 = one mask shared by the piece's frames
    labels: np.ndarray  # block label per unit (shot or pair)

    @property
    def nbytes(self) -> int:
        return self.rings.nbytes + self.mask.nbytes + self.labels.nbytes


class RunCorrPartial:
    """The partial run correlation of consecutive chunks: a correlator (or none yet) plus pending rings.

    ``a + b`` is a new partial (a and b unchanged) holding a's shots then b's; it is a deterministic function of
    the operands, so a fixed reduction tree gives the same bits anywhere. :meth:`result` finishes it.

    Parameters
    ----------
    spec : RunCorrSpec
        The correlator's parameters.
    kind : {"shots", "differences"}
        Pass-1 shots or pass-2 pair differences.
    corr : RunCorrelator, optional
        Accumulated so far (never modified: ``+`` copies before adding).
    pieces : list, optional
        Pending chunks' rings, in run order.
    """

    def __init__(self, spec: RunCorrSpec, kind: str, corr: Optional[RunCorrelator] = None,
                 pieces: Optional[list] = None):
        self.spec, self.kind, self.corr = spec, kind, corr
        self.pieces: List[_Piece] = list(pieces or [])

    @property
    def pending_bytes(self) -> int:
        """Bytes of the rings not yet fed into the correlator."""
        return sum(p.nbytes for p in self.pieces)

    @property
    def n_units(self) -> int:
        """Shots (or pairs) in this partial."""
        n = 0 if self.corr is None else int(self.corr.n_shots)
        return n + sum(len(p.labels) for p in self.pieces)

    def _feed(self, corr: RunCorrelator, pieces: List[_Piece]) -> RunCorrelator:
        """Add the pieces' rings to ``corr`` (in place), every unit into its labelled block."""
        # In groups of about the correlator's own chunk of units: no copy of all pending rings at once.
        group: List[_Piece] = []
        units = 0
        for p in pieces:
            group.append(p)
            units += len(p.labels)
            if units >= corr.chunk:
                self._feed_group(corr, group)
                group, units = [], 0
        if group:
            self._feed_group(corr, group)
        return corr

    def _feed_group(self, corr: RunCorrelator, pieces: List[_Piece]) -> None:
        s = self.spec
        nphi, B = s.nphi, s.blocks
        rings = np.concatenate([p.rings for p in pieces]) if len(pieces) > 1 else pieces[0].rings
        labels = np.concatenate([p.labels for p in pieces])
        shared = all(p.mask.shape[0] == 1 for p in pieces) and all(
            np.array_equal(p.mask, pieces[0].mask) for p in pieces[1:])
        if shared:
            mask = np.unpackbits(pieces[0].mask[0], axis=-1, count=nphi).astype(bool)
        else:
            per = [np.broadcast_to(p.mask, (len(p.rings), *p.mask.shape[1:])) for p in pieces]
            mask = np.unpackbits(np.concatenate(per), axis=-1, count=nphi).astype(bool)
        n0 = int(corr.n_shots)
        done = 0
        for run in _runs(labels, B):
            # The correlator puts the k-th unit of an add into block (n_shots + k) % blocks: start the run there.
            corr.n_shots = int(labels[run.start])
            if self.kind == "shots":
                corr.add(rings[run], mask=mask if shared else mask[run])
            else:
                pr = np.arange(2 * run.start, 2 * run.stop, dtype=np.int64).reshape(-1, 2)
                corr.add_differences(rings, pr, mask=mask)
            done += run.stop - run.start
        corr.n_shots = n0 + done

    def _materialized(self) -> RunCorrelator:
        """A new correlator with everything of this partial (self unchanged)."""
        base = self.corr.copy() if self.corr is not None else self.spec.correlator()
        return self._feed(base, self.pieces)

    def __add__(self, other: "RunCorrPartial") -> "RunCorrPartial":
        if not isinstance(other, RunCorrPartial) or other.kind != self.kind:
            return NotImplemented
        if other.corr is None:
            res = RunCorrPartial(self.spec, self.kind, self.corr, self.pieces + other.pieces)
            if res.pending_bytes > self.spec.lazy_bytes:
                res = RunCorrPartial(self.spec, self.kind, res._materialized())
            return res
        left = self._materialized()
        left.merge(other.corr)
        res = RunCorrPartial(self.spec, self.kind, left, other.pieces)
        if res.pending_bytes > self.spec.lazy_bytes:
            res = RunCorrPartial(self.spec, self.kind, res._materialized())
        return res

    def correlator(self) -> RunCorrelator:
        """The :class:`xcca.RunCorrelator` of all shots of this partial (over the used rings only; a new object).

        Returns
        -------
        RunCorrelator
        """
        return self._materialized()

    def result(self, consume: bool = False) -> RunCorrelation:
        """The finished correlation, with the run's ring indices in ``q_pairs`` and its q values.

        Parameters
        ----------
        consume : bool
            Feed the pending rings into this partial's own correlator instead of a copy (saves one correlator's
            memory; the partial must not be used in a sum afterwards). The driver's final step uses it.

        Returns
        -------
        RunCorrelation
        """
        if consume:
            if self.corr is None:
                self.corr = self.spec.correlator()
            self._feed(self.corr, self.pieces)
            self.pieces = []
            res = self.corr.result(replicates=True)  # written to the results file (error propagation)
        else:
            res = self._materialized().result(replicates=True)
        s = self.spec
        q = None if s.q is None else np.asarray(s.q, dtype=np.float64).copy()
        return replace(res, q_pairs=s.q_pairs.copy(), q=q)

    def __repr__(self) -> str:
        return (f"RunCorrPartial({self.kind}, {self.n_units} units, correlator={'yes' if self.corr else 'no'}, "
                f"pending={self.pending_bytes / 2**20:.1f} MiB)")


class RunCorrStage:
    """A chunk stage (:mod:`xcca.stages` protocol) feeding a run correlator: ``stage(polar, valid, plan)`` returns
    the chunk's :class:`RunCorrPartial`.

    Parameters
    ----------
    spec : RunCorrSpec
        The correlator's parameters.
    kind : {"shots", "differences"}
        Pass 1 (every good frame) or pass 2 (rows 2i, 2i+1 are a pair: their difference with the combined mask).
    """

    def __init__(self, spec: RunCorrSpec, kind: str):
        if kind not in ("shots", "differences"):
            raise ValueError(f"kind must be 'shots' or 'differences', got {kind!r}")
        self.spec, self.kind = spec, kind

    def __call__(self, polar: np.ndarray, valid: np.ndarray, plan) -> RunCorrPartial:
        s = self.spec
        sel = s.rings
        v = np.asarray(valid)
        if v.ndim == 2:
            v = v[None]
        shared = v.shape[0] == 1 or v.strides[0] == 0 or bool(np.all(v == v[:1]))
        m = v[:1, sel] if shared else v[:, sel]
        x = polar[:, sel]
        # zero wherever invalid (pass 2's polar images hold the kernels' fill there)
        rings = np.where(m, x, x.dtype.type(0))
        n_units = len(polar) if self.kind == "shots" else len(polar) // 2
        labels = (np.arange(n_units) % s.blocks).astype(np.int8)
        piece = _Piece(np.ascontiguousarray(rings), np.packbits(m, axis=-1), labels)
        return RunCorrPartial(s, self.kind, None, [piece])


def make_stages(nq: int, nphi: int, q_pairs, *, estimator: str = "pooled", blocks: int = 2, q=None,
                n_threads: Optional[int] = None):
    """The two stages of a pipeline run correlator, checked (q pairs, estimator, blocks, memory) before the run.

    Parameters
    ----------
    nq, nphi : int
        Rings of the run and samples per ring.
    q_pairs : "all", "band:K" or array_like (npairs, 2)
        See :func:`parse_q_pairs`.
    estimator : {"pooled", "per_shot"}
        See :class:`xcca.RunCorrelator`.
    blocks : int
        Jackknife blocks (>= 1; 2 = the half-sets).
    q : array_like (nq,), optional
        q of the rings in 1/Å.
    n_threads : int, optional
        Threads of the correlator.

    Returns
    -------
    (RunCorrStage, RunCorrStage)
        The pass-1 (raw shots) and pass-2 (pair differences) stages.
    """
    qp = parse_q_pairs(q_pairs, nq)
    if estimator not in ("pooled", "per_shot"):
        raise ValueError(f"estimator must be 'pooled' or 'per_shot', got {estimator!r}")
    if isinstance(blocks, (bool, np.bool_)) or not isinstance(blocks, (int, np.integer)) or blocks < 1:
        raise ValueError(f"blocks must be an integer >= 1, got {blocks!r}")
    spec = RunCorrSpec(int(nq), int(nphi), qp, estimator, int(blocks),
                       None if q is None else np.asarray(q, dtype=np.float64), n_threads)
    check_memory(spec)
    return RunCorrStage(spec, "shots"), RunCorrStage(spec, "differences")
