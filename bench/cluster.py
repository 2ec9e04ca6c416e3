"""Local vs Dask throughput of xcca.analyze, and the measured inputs of the cost model on N nodes (README).

The same synthetic HDF5 run (bench/pipeline.py's: simulated gold-nanoparticle frames, uint16) is analysed
- locally: one process, the compiled kernels on 2 threads;
- on Dask: a LocalCluster of 2 worker processes with 1 thread each (loopback TCP), the workers opening the file
  themselves; the cluster is started and warmed up (imports, first file open) before the timing.
Runs alternate local / Dask in rounds and the ratio is taken per round (the machine is shared: a ratio from the same
moment is what holds). Also measured: per-chunk compute, the pickled size of a pass-1 and a pass-2 partial and of the
plan, and the time of one reduction (`a + b`) — the numbers the README's cost model uses.

    python bench/cluster.py              # 96 frames 1024x1024 -> 400 radii x 3600 angles, chunk 8, 3 rounds
    python bench/cluster.py --quick      # 128 frames 512x512 -> 100 x 720
"""
from __future__ import annotations

import argparse
import os
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--frames", type=int)
    ap.add_argument("--size", type=int)
    ap.add_argument("--chunk", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import xcca
    from pipeline import make_run  # bench/pipeline.py
    from xcca import stages
    from xcca.sources import open_source

    n = args.frames or (128 if args.quick else 96)
    size = args.size or (512 if args.quick else 1024)
    nq, nphi = (100, 720) if args.quick else (400, 3600)
    tmp = tempfile.TemporaryDirectory()
    run = Path(tmp.name) / "run.h5"
    meta = make_run(run, n, size, pool=min(32, n))
    rmin = int(meta["r111"] - nq // 2)
    kw = dict(dataset="data", mask=f"{run}::/mask", center=tuple(meta["center"]), qmin=rmin, qmax=rmin + nq,
              nphi=nphi, ring_for_pairing=round(meta["r111"]), chunk=args.chunk)

    from xcca.distributed import close_client, make_client

    client = make_client(workers=2, threads_per_worker=1)  # what `xcca correlate --workers 2` uses
    t0 = time.perf_counter()
    xcca.analyze(run, client=client, **{**kw, "chunk": max(1, n // 4)})  # warm-up: imports, file handles
    warm = time.perf_counter() - t0

    rows = []
    for r in range(args.rounds):
        t0 = time.perf_counter()
        loc = xcca.analyze(run, n_threads=2, **kw)
        t_loc = time.perf_counter() - t0
        t0 = time.perf_counter()
        dist = xcca.analyze(run, client=client, **kw)
        t_dask = time.perf_counter() - t0
        same = all(np.array_equal(getattr(loc, a), getattr(dist, a), equal_nan=True)
                   for a in ("raw_correlation", "difference_correlation", "pairs", "fit_rms"))
        rows.append((t_loc, t_dask, same))
        print(f"round {r}: local {t_loc:.2f} s, dask {t_dask:.2f} s, ratio {t_loc / t_dask:.2f}, "
              f"bit-identical {same}", file=sys.stderr)
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    close_client(client)

    # ---- the cost model's inputs, measured on one chunk in this process (1 thread)
    with open_source(run, "data") as src:
        from xcca.sources import load_mask

        mask = load_mask(kw["mask"], src.shape)
        plan = stages.RunPlan("xcca", kw["center"], np.arange(kw["qmin"], kw["qmax"], dtype=np.float64), nphi,
                              src.shape, mask, 6.0, 15, 0.2, args.chunk, n_threads=1)
        frames, errs = src.read(0, args.chunk)
        with stages.blas_single_thread():
            stages.pass1_chunk(frames, errs, 0, plan, ring_for_pairing=kw["ring_for_pairing"])
            t0 = time.perf_counter()
            p1 = stages.pass1_chunk(frames, errs, 0, plan)
            t_p1 = time.perf_counter() - t0
            pairs = np.arange(2 * plan.pchunk).reshape(-1, 2)
            f2, e2 = src.read_indices(pairs.ravel())
            t0 = time.perf_counter()
            p2 = stages.pass2_chunk(f2, e2, pairs, plan)
            t_p2 = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(5):
            p1 + p1
        t_add = (time.perf_counter() - t0) / 5
    s_p1, s_p2 = len(pickle.dumps(p1, protocol=5)), len(pickle.dumps(p2, protocol=5))
    s_plan = len(pickle.dumps(plan, protocol=5))
    s_frames = frames.nbytes

    ratios = [a / b for a, b, _ in rows]
    med = statistics.median(ratios)
    t_loc = statistics.median(a for a, _, _ in rows)
    t_dask = statistics.median(b for _, b, _ in rows)
    print(f"\n### xcca.analyze, local (1 process, 2 threads) vs Dask (2 worker processes x 1 thread): {n} frames "
          f"{size}x{size} uint16 -> {nq} x {nphi}, chunk {args.chunk}, {os.cpu_count()} CPUs, "
          f"load average at the end {load}\n")
    print("| driver | median s | frames/s | Dask / local throughput (per round) |")
    print("|---|---|---|---|")
    print(f"| local, 2 threads | {t_loc:.2f} | {n / t_loc:.1f} | |")
    print(f"| Dask, 2 x 1 thread | {t_dask:.2f} | {n / t_dask:.1f} | {med:.2f} "
          f"({', '.join(f'{r:.2f}' for r in ratios)}) |")
    print(f"\nresults bit-identical in every round: {all(s for _, _, s in rows)}; cluster warm-up {warm:.1f} s "
          "(not timed)")
    print(f"\ncost-model inputs (one chunk, 1 thread): pass-1 compute {1e3 * t_p1:.1f} ms per chunk of "
          f"{args.chunk} frames, pass-2 {1e3 * t_p2:.1f} ms per {plan.pchunk} pairs; frames read per chunk "
          f"{s_frames / 2**20:.1f} MiB (read by the worker from the file); partial result sent per chunk: pass 1 "
          f"{s_p1 / 2**20:.2f} MiB, pass 2 {s_p2 / 2**20:.2f} MiB; one reduction (a + b) {1e3 * t_add:.1f} ms; plan "
          f"(geometry + mask, sent once per worker) {s_plan / 2**20:.2f} MiB")
    tmp.cleanup()


if __name__ == "__main__":
    main()
