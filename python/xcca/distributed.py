"""The Dask driver of the run pipeline: :func:`xcca.analyze` with ``client=`` runs here.

The data flow is the local driver's (:mod:`xcca.pipeline`) on a cluster of ``dask.distributed`` workers:

1. each pass-1 chunk is a task: the worker opens the run itself (an HDF5 stack or image files; no frame data passes
   through the client), reads its frames and runs :func:`xcca.stages.pass1_chunk`; the :class:`~xcca.stages.ChunkResult`
   partials are reduced on the cluster in the run's fixed grouping (:func:`xcca.stages.tree_sum`, the grouping the
   local driver's :class:`~xcca.stages.TreeSum` uses), so the totals are bit-identical to a local run;
2. the client gathers the reduced pass-1 result (the accumulators, O(nq·nphi), and the per-shot features, O(N·D))
   and pairs the shots once;
3. each pass-2 chunk of pairs is a task again (:func:`xcca.stages.pass2_chunk`), reduced in the same tree.

A worker that dies mid-run loses only its tasks: Dask recomputes them (they are pure functions of the file, the chunk
and the plan) on the other workers, and the result is the same. A corrupt frame is skipped and reported exactly as
locally (the same :func:`xcca.stages.check_frames`). Memory per worker is bounded by one chunk (frames, polar
images) plus the partials it holds. The plan (geometry, mask, thresholds, pairing ring) is sent to every worker once.

Needs the ``xcca[dask]`` extra (``dask[distributed]``). On a SLURM cluster, build the client from
``dask_jobqueue.SLURMCluster`` (see the README); :func:`make_client` makes a local one (``xcca correlate --workers``)
or connects to a running scheduler (``--scheduler``).
"""
from __future__ import annotations

import logging
import threading
import uuid
import time
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .sources import FrameSource, open_source, source_location
from .stages import TREE_BLOCK, ChunkResult, RunPlan, TreeSum, blas_single_thread, pass1_chunk, pass2_chunk

__all__ = ["source_spec", "make_client", "close_client", "run", "task_auto_center", "group_size"]

_log = logging.getLogger(__name__)


def _require_dask():
    try:
        import distributed  # noqa: F401
    except ImportError as exc:  # pragma: no cover - dask is installed with the test extra
        raise ImportError("running on a cluster needs dask.distributed: pip install 'xcca[dask]'") from exc
    return distributed


def source_spec(source, dataset: Optional[str] = None) -> Tuple[Any, Optional[str]]:
    """What a worker needs to open the run itself: ``(absolute path or list of absolute paths, dataset)``.

    Parameters
    ----------
    source : str, Path, h5py.Dataset or sequence of paths
        As for :func:`xcca.sources.open_source`, but files only: an in-memory array would have to be shipped to the
        workers through the client.
    dataset : str, optional
        HDF5 dataset of the frame stack.

    Raises
    ------
    ValueError
        The source is an in-memory array (not a file the workers can open).
    """
    loc = source_location(source, dataset)
    if loc is not None:
        return loc
    raise ValueError("client= runs the chunks on the cluster's workers, which open the run themselves: give the run "
                     "as files (an HDF5 stack or image files), not an in-memory array")


# ----------------------------------------------------------------------------------------------- on the workers

_OPEN: "OrderedDict[str, FrameSource]" = OrderedDict()  # sources this worker process opened, by spec
_OPEN_LOCK = threading.Lock()
_MAX_OPEN = 4


_BLAS = []


def _source(spec) -> FrameSource:
    """The run, opened once per worker process (HDF5 handles stay open between the tasks of a run)."""
    key = repr(spec)
    with _OPEN_LOCK:
        if not _BLAS:  # one BLAS thread in this worker process, for good (see xcca.stages.blas_single_thread)
            _BLAS.append(blas_single_thread())
        src = _OPEN.get(key)
        if src is None:
            src = open_source(*spec)
            _OPEN[key] = src
            while len(_OPEN) > _MAX_OPEN:
                _OPEN.popitem(last=False)[1].close()
        else:
            _OPEN.move_to_end(key)
        return src


_LOCAL = threading.local()  # per worker thread: the frame and polar buffers reused by its tasks


def _buffer(name: str, shape, dtype) -> np.ndarray:
    """A buffer of this worker thread, reused by its next tasks (a task is done with it when it returns: the
    partial results it sends are reductions, never views of it). Saves the allocation and page faults of tens of
    MB per chunk."""
    bufs = getattr(_LOCAL, "bufs", None)
    if bufs is None:
        bufs = _LOCAL.bufs = {}
    buf = bufs.get(name)
    if buf is None or buf.shape[1:] != tuple(shape[1:]) or len(buf) < shape[0] or buf.dtype != dtype:
        buf = bufs[name] = np.empty(shape, dtype)
    return buf


def _read(spec, fn, start_or_idx, stop=None, chunk=None):
    # h5py serialises its calls itself: worker threads may share one open file
    src = _source(spec)
    m = (stop - start_or_idx) if fn == "read" else len(start_or_idx)
    out = _buffer("frames", (max(m, chunk or m), *src.shape), src.dtype)
    args = (start_or_idx, stop) if fn == "read" else (start_or_idx,)
    t0 = time.perf_counter()
    frames, errs = getattr(src, fn)(*args, out=out)
    return frames, errs, time.perf_counter() - t0


_OUTLIERS: Dict[str, Dict[int, np.ndarray]] = {}  # run token -> frame -> outlier positions found by pass 1 here
_OUTLIER_BYTES = 32 << 20  # per worker process


def _outlier_cache(plan: RunPlan) -> Dict[int, np.ndarray]:
    """Outlier positions of the frames this worker process saw in pass 1 (pass 2 recomputes only the others: the
    same masks either way). Only the current run is kept."""
    with _OPEN_LOCK:
        cache = _OUTLIERS.get(plan.token)
        if cache is None:
            _OUTLIERS.clear()
            cache = _OUTLIERS[plan.token] = {}
            cache_bytes[0] = 0
        return cache


cache_bytes = [0]


def _sink(cache: Dict[int, np.ndarray]):
    def offer(frame: int, idx: np.ndarray) -> bool:
        if cache_bytes[0] > _OUTLIER_BYTES:
            return False
        cache[frame] = idx
        cache_bytes[0] += idx.nbytes + 100
        return True

    return offer


def _polar_buffer(plan: RunPlan) -> np.ndarray:
    return _buffer("polar", (plan.chunk, len(plan.radii), plan.nphi), np.float32)


def task_auto_center(spec, m: int, mask: Optional[np.ndarray]):
    """Worker task of ``center='auto'``: the centre fit of the first ``m`` frames (see :func:`xcca.pipeline.auto_center`).

    Parameters
    ----------
    spec : source location
        Where the worker reopens the run.
    m : int
        Number of leading frames averaged.
    mask : ndarray of bool, optional
        Pixel mask, True = valid (LOKI's convention).
    """
    from .pipeline import auto_center

    frames, errs, _ = _read(spec, "read", 0, m)
    return auto_center(frames, errs, mask)


def _task_choose_ring(spec, n: int, plan: RunPlan, ring_for_pairing) -> RunPlan:
    """Fix the pairing ring from the first chunk with a good frame, as the local driver does."""
    for start in range(0, n, plan.chunk):
        frames, errs, _ = _read(spec, "read", start, min(n, start + plan.chunk))
        pass1_chunk(frames, errs, start, plan, ring_for_pairing=ring_for_pairing)
        if plan.ring is not None:
            break
    return plan


def _task_pass1(spec, start: int, stop: int, plan: RunPlan) -> ChunkResult:
    frames, errs, dt = _read(spec, "read", start, stop, plan.chunk)
    sink = _sink(_outlier_cache(plan)) if plan.outlier_thresh is not None else None
    part = pass1_chunk(frames, errs, start, plan, polar_out=_polar_buffer(plan), outlier_sink=sink)
    part.timings["read"] = part.timings.get("read", 0.0) + dt
    return part


def _task_pass2(spec, pairs: np.ndarray, plan: RunPlan) -> ChunkResult:
    frames, errs, dt = _read(spec, "read_indices", pairs.ravel(), chunk=plan.chunk)
    part = pass2_chunk(frames, errs, pairs, plan, polar_out=_polar_buffer(plan), outlier_cache=_outlier_cache(plan))
    part.timings["read"] = part.timings.get("read", 0.0) + dt
    return part


def _task_pass1_group(spec, start: int, stop: int, plan: RunPlan) -> ChunkResult:
    """Consecutive pass-1 chunks [start, stop) of one task, summed as :func:`xcca.stages.tree_sum` sums them: an
    aligned power-of-two group of chunks is a subtree of the run's tree, so the total keeps its bits."""
    acc = TreeSum()
    for s in range(start, stop, plan.chunk):
        acc.push(_task_pass1(spec, s, min(stop, s + plan.chunk), plan))
    return acc.result()


def _task_pass2_group(spec, chunks: List[np.ndarray], plan: RunPlan) -> ChunkResult:
    """Consecutive pass-2 chunks of pairs of one task, summed like :func:`_task_pass1_group`."""
    acc = TreeSum()
    for pp in chunks:
        acc.push(_task_pass2(spec, pp, plan))
    return acc.result()


def _add(a, b):
    return a + b


def group_size(n_chunks: int, slots: int, cap: int = TREE_BLOCK) -> int:
    """Chunks per task: the largest power of two that still leaves at least 4 tasks per worker thread (balance, and
    little work lost with a dead worker), at most ``cap``. Fewer tasks mean fewer partials sent between workers
    and fewer tasks for the scheduler; a power of two keeps the reduction tree (see :func:`_task_pass1_group`).

    Parameters
    ----------
    n_chunks : int
        Chunks in the pass.
    slots : int
        Worker threads of the cluster.
    cap : int
        Largest group (at most TREE_BLOCK: a group must lie inside one block of the reduction).
    """
    cap = min(int(cap), TREE_BLOCK)
    g = 1
    while 2 * g <= cap and n_chunks >= 2 * g * 4 * max(1, slots):
        g *= 2
    return g


# ----------------------------------------------------------------------------------------------- on the client


def _tree(client, futures: List[Any], group: int = 1):
    """The futures' sum on the cluster, grouped as :func:`xcca.stages.tree_sum` groups: each future is the sum of an
    aligned ``group`` of chunks (a power of two dividing TREE_BLOCK), so TREE_BLOCK / group futures form one block's
    binary tree, and the block sums are added in order. The same bits as the local driver's streaming TreeSum."""
    per = max(1, TREE_BLOCK // group)
    total = None
    for b in range(0, len(futures), per):
        level = list(futures[b:b + per])
        while len(level) > 1:
            nxt = [client.submit(_add, level[i], level[i + 1], pure=False) for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                nxt.append(level[-1])
            level = nxt
        total = level[0] if total is None else client.submit(_add, total, level[0], pure=False)
    return total


def _follow(futures: Sequence[Any], weights: Sequence[int], bar) -> None:
    """Advance the progress display as chunks complete on the cluster (errors surface at ``.result()``)."""
    from distributed import as_completed

    w = {f.key: k for f, k in zip(futures, weights)}
    for f in as_completed(list(futures)):
        bar(w.get(f.key, 0))


def run(client, spec, n: int, plan: RunPlan, ring_for_pairing, timings: Dict[str, float], bar,
        pair_groups=None):
    """The two passes of :func:`xcca.analyze` on a Dask cluster (see the module docstring); returns the reduced
    pass-1 result, the pairing and the reduced pass-2 result, as the local driver does.

    Parameters
    ----------
    client : dask.distributed.Client
        The cluster's client.
    spec : source location
        Where the workers reopen the run (:func:`xcca.sources.source_location`).
    n : int
        Frames in the run.
    plan : xcca.stages.RunPlan
        The run's fixed parameters.
    ring_for_pairing : float or None
        Radius (pixels) of the pairing ring, or None for the brightest.
    timings : dict
        Seconds per stage, updated in place.
    bar : progress bar or None
        A tqdm-like bar updated as chunks finish.
    pair_groups : numpy.ndarray or None
        One pairing key per frame (shots pair only within equal keys), or None to pair over the whole run.
    """
    _require_dask()
    from .pipeline import pair_between_passes

    if plan.n_threads is None:  # the cluster's parallelism is its workers' threads: one kernel thread per task
        plan.n_threads = 1
    if plan.ring is None and ring_for_pairing is not None:  # no frames needed: fixed here, no serial task
        with blas_single_thread():
            plan.choose_ring_from_geometry(ring_for_pairing)
    if plan.ring is None:  # the brightest ring of the first chunk with a good frame, found on a worker
        plan = client.submit(_task_choose_ring, spec, n, plan, ring_for_pairing, pure=False).result()
    plan.token = uuid.uuid4().hex
    plan_f = client.scatter(plan, broadcast=True, hash=False)  # once per worker, not once per task
    try:
        slots = sum(client.nthreads().values())
    except Exception:  # pragma: no cover - a client without worker information
        slots = 1
    starts = list(range(0, n, plan.chunk))
    g = group_size(len(starts), slots)
    spans = [(starts[i], min(n, starts[i] + g * plan.chunk)) for i in range(0, len(starts), g)]
    futs = [client.submit(_task_pass1_group, spec, a, b, plan_f, pure=False) for a, b in spans]
    total = _tree(client, futs, g)
    _follow(futs, [b - a for a, b in spans], bar)
    p1 = total.result()
    del futs, total
    for i, why in p1.skipped:
        _log.info("frame %d skipped: %s", i, why)
    pairs, pair_dist, unpaired = pair_between_passes(p1, plan, pair_groups, n, timings, bar)
    pc = plan.pchunk
    chunks = [pairs[p0:p0 + pc] for p0 in range(0, len(pairs), pc)]
    g = group_size(len(chunks), slots)
    groups = [chunks[i:i + g] for i in range(0, len(chunks), g)]
    futs = [client.submit(_task_pass2_group, spec, gg, plan_f, pure=False) for gg in groups]
    if futs:
        total = _tree(client, futs, g)
        _follow(futs, [2 * sum(len(pp) for pp in gg) for gg in groups], bar)
        p2 = total.result()
    else:
        p2 = ChunkResult()
    if p2.dropped_pairs:
        _log.warning("pairs %s dropped: a frame became unreadable", p2.dropped_pairs)
    return p1, (pairs, pair_dist, unpaired), p2


def make_client(scheduler: Optional[str] = None, workers: Optional[int] = None, threads_per_worker: int = 1,
                timeout: float = 10):
    """A ``dask.distributed.Client``: connected to ``scheduler`` (e.g. ``"tcp://host:8786"``), or on a new
    LocalCluster of ``workers`` processes with ``threads_per_worker`` threads each (loopback only, no dashboard).

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler (``dask scheduler``, dask-jobqueue, ...).
    workers : int, optional
        Worker processes of a LocalCluster (when no scheduler is given).
    threads_per_worker : int
        Threads per LocalCluster worker.
    timeout : float
        Seconds to wait for the scheduler.

    Returns
    -------
    distributed.Client
        Close it (and its LocalCluster) with ``client.close()``; it is a context manager.

    Raises
    ------
    ValueError
        Neither or both of ``scheduler`` and ``workers``, or ``workers`` < 1.
    OSError
        The scheduler cannot be reached.
    """
    distributed = _require_dask()
    if (scheduler is None) == (workers is None):
        raise ValueError("give exactly one of scheduler (an address) and workers (a number of local processes)")
    if scheduler is not None:
        try:
            return distributed.Client(scheduler, timeout=f"{float(timeout)}s")
        except (OSError, TimeoutError) as exc:
            raise OSError(f"cannot connect to the Dask scheduler at {scheduler}: {exc}") from exc
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    import dask

    env = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {})
    # Dask's default MALLOC_TRIM_THRESHOLD_ makes glibc unmap every large temporary on free: the stages' chunk-sized
    # temporaries then page-fault again in every task (measured 30-50 % slower chunks here). Worker memory stays
    # bounded without it: the frame and polar buffers are reused, the partials are O(nq * nphi).
    env.pop("MALLOC_TRIM_THRESHOLD_", None)
    with dask.config.set({"distributed.nanny.pre-spawn-environ": env}):
        cluster = distributed.LocalCluster(n_workers=int(workers), threads_per_worker=int(threads_per_worker),
                                           processes=True, host="127.0.0.1", dashboard_address=None)
    client = distributed.Client(cluster)
    client._xcca_owns_cluster = cluster  # closed with the client (see close_client)
    return client


def close_client(client) -> None:
    """Close a client from :func:`make_client` and the LocalCluster it started.

    Parameters
    ----------
    client : dask.distributed.Client
        A client from :func:`make_client`.
    """
    cluster = getattr(client, "_xcca_owns_cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()
