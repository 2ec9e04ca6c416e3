"""Benchmark of the whole correlation pipeline (xcca.analyze) against the same pipeline on NumPy/SciPy kernels.

Synthetic run: N frames H×W uint16 in an uncompressed HDF5 file (built by repeating a pool of simulated
gold-nanoparticle frames, so the file is quick to make; the analysis does not know they repeat) → nq radii × nphi
angles. Each configuration runs in a fresh subprocess so that its peak RSS is its own; the table gives frames/s
(good frames over the whole analysis, both passes), the split per stage, and the peak RSS for two run lengths (it must
not grow with N).

    python bench/pipeline.py            # 1000 frames 1024x1024 -> 400 radii x 3600 angles (NumPy on 100 frames)
    python bench/pipeline.py --quick    # 64 frames 512x512 -> 100 x 720 (NumPy on 16 frames)
    python bench/pipeline.py --repeat 3 # best of 3 runs per configuration (a shared machine is noisy)
    python bench/pipeline.py --runcorr  # with the full run correlator: 1000 frames 1024x1024 -> 100 x 3600, all
                                        # 5050 q pairs (analyze(q_pairs="all")), RSS at N and N/2 frames
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_run(path: Path, n: int, size: int, pool: int) -> dict:
    import h5py

    from xcca.simulate import RunGeometry, simulate_frames

    scale = size / 512
    geom = RunGeometry(shape=(size, size), center=(261.3 * scale, 248.7 * scale), distance=0.0225 * scale)
    frames = np.stack(list(simulate_frames(pool, geom, seed=0)))
    with h5py.File(path, "w") as f:
        d = f.create_dataset("data", shape=(n, size, size), dtype=np.uint16, chunks=(1, size, size))
        for i in range(n):
            d[i] = frames[i % pool]
        from xcca.simulate import _detector_mask

        f.create_dataset("mask", data=_detector_mask(geom))
    return {"center": list(geom.center), "r111": geom.r111}


def worker(args) -> None:
    """One configuration; prints a JSON line."""
    from xcca.pipeline import analyze

    meta = json.loads(args.meta)
    t0 = time.perf_counter()
    extra = {"q_pairs": args.q_pairs} if args.q_pairs else {}
    res = analyze(args.run, dataset=args.dataset, mask=f"{args.run}::/mask", center=tuple(meta["center"]),
                  qmin=meta["qmin"], qmax=meta["qmax"], nphi=meta["nphi"], ring_for_pairing=meta["ring"],
                  backend=args.backend, n_threads=args.threads, chunk=args.chunk, **extra)
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"frames": len(res.frames), "seconds": dt, "timings": res.timings, "rss": rss,
                      "pairs": int(len(res.pairs))}))


def run_config(run: Path, dataset: str, meta: dict, backend: str, threads: int, chunk: int, repeat: int = 1,
               q_pairs: str = "") -> dict:
    """Best (shortest) of `repeat` runs of one configuration, each in a fresh subprocess."""
    runs = [_run_once(run, dataset, meta, backend, threads, chunk, q_pairs) for _ in range(max(1, repeat))]
    return min(runs, key=lambda r: r["seconds"])


def _run_once(run: Path, dataset: str, meta: dict, backend: str, threads: int, chunk: int, q_pairs: str = "") -> dict:
    cmd = [sys.executable, __file__, "--worker", "--run", str(run), "--dataset", dataset, "--meta", json.dumps(meta),
           "--backend", backend, "--threads", str(threads), "--chunk", str(chunk), "--q-pairs", q_pairs]
    # The pipeline's BLAS calls are small (16-column QRs): OpenBLAS threads only add spin-waiting, badly so on a
    # loaded machine, so the workers use one BLAS thread unless told otherwise (both pipelines alike).
    env = dict(os.environ)
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"worker failed: {p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short run")
    ap.add_argument("--frames", type=int, help="frames in the run")
    ap.add_argument("--size", type=int, help="frame side in pixels")
    ap.add_argument("--numpy-frames", type=int, help="frames analysed by the NumPy pipeline (it is slow)")
    ap.add_argument("--chunk", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=1, help="runs per configuration, the best is reported")
    ap.add_argument("--numpy-repeat", type=int, default=1, help="runs of the (slow) NumPy configuration")
    ap.add_argument("--keep", help="directory to keep the run file in (default: a temporary directory)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--run", help=argparse.SUPPRESS)
    ap.add_argument("--dataset", default="data", help=argparse.SUPPRESS)
    ap.add_argument("--meta", help=argparse.SUPPRESS)
    ap.add_argument("--backend", default="xcca", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--runcorr", action="store_true",
                    help="pipeline with the full run correlator (analyze(q_pairs=...)) against the plain pipeline")
    ap.add_argument("--q-pairs", default="", help="q pairs of --runcorr (default all)")
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    if args.runcorr:
        runcorr_main(args)
        return

    n = args.frames or (64 if args.quick else 1000)
    size = args.size or (512 if args.quick else 1024)
    n_np = args.numpy_frames or (16 if args.quick else 100)
    nq, nphi = (100, 720) if args.quick else (400, 3600)
    import xcca

    have_xcca = hasattr(xcca, "PolarGrid") and hasattr(xcca, "pair_shots")
    tmp = tempfile.TemporaryDirectory() if not args.keep else None
    work = Path(args.keep or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    runs = {}
    lengths = sorted({n, max(n // 4, 4), n_np})
    for m in lengths:
        p = work / f"run_{m}_{size}.h5"
        if not p.exists():
            meta = make_run(p, m, size, pool=min(32, m))
        runs[m] = p
    meta = make_run(work / "meta.h5", 1, size, 1)
    rmin = int(meta["r111"] - nq // 2)
    meta.update(qmin=rmin, qmax=rmin + nq, nphi=nphi, ring=round(meta["r111"]))
    print(f"run files ready in {time.perf_counter() - t0:.1f} s ({work})", file=sys.stderr)

    rows = []
    if have_xcca:
        for threads in (1, 2):
            r = run_config(runs[n], "data", meta, "xcca", threads, args.chunk, args.repeat)
            rows.append((f"xcca, {threads} thread{'s' if threads > 1 else ''}", n, r))
        r = run_config(runs[max(n // 4, 4)], "data", meta, "xcca", 2, args.chunk, args.repeat)
        rows.append(("xcca, 2 threads (N/4 frames: RSS check)", max(n // 4, 4), r))
    r = run_config(runs[n_np], "data", meta, "numpy", 1, args.chunk, args.numpy_repeat)
    rows.append(("NumPy/SciPy pipeline", n_np, r))

    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\n### xcca.analyze: {size}x{size} uint16 frames -> {nq} radii x {nphi} angles "
          f"(chunk {args.chunk}, {os.cpu_count()} CPUs, best of {args.repeat} (NumPy: {args.numpy_repeat}), "
          f"load average at the end {load})\n")
    stages = ["read", "polar", "clean", "fit", "autocorr", "pair", "diffcorr"]
    print("| pipeline | frames | total s | frames/s | " + " | ".join(f"{s} ms/frame" for s in stages)
          + " | peak RSS MB | vs NumPy |")
    print("|---" * (6 + len(stages)) + "|")
    base = rows[-1][2]["frames"] / rows[-1][2]["seconds"]
    for name, m, r in rows:
        fps = r["frames"] / r["seconds"]
        per = [1e3 * r["timings"].get(s, 0.0) / max(r["frames"], 1) for s in stages]
        print(f"| {name} | {r['frames']} | {r['seconds']:.2f} | {fps:.1f} | "
              + " | ".join(f"{v:.2f}" for v in per) + f" | {r['rss'] / 2**20:.0f} | {fps / base:.1f}x |")
    print("\nStages: read = HDF5 reads (both passes); polar = remap; clean = per-ring outlier removal "
          "(compiled in xcca); fit = ring-profile fit; autocorr = raw correlations; pair = pairing; "
          "diffcorr = difference correlations. Pass 2 re-reads and re-remaps the paired frames. "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', '1')} in the workers.")
    if not have_xcca:
        print("\n(the compiled kernels are not in this build: only the NumPy pipeline was measured)")
    if tmp is not None:
        tmp.cleanup()


def runcorr_main(args) -> None:
    """--runcorr: the pipeline with the full run correlator on the bench run, frames/s and peak RSS at two run
    lengths (fresh subprocesses), against the same pipeline without it."""
    n = args.frames or (64 if args.quick else 1000)
    size = args.size or (512 if args.quick else 1024)
    nq, nphi = (50, 720) if args.quick else (100, 3600)
    q_pairs = args.q_pairs or "all"
    tmp = tempfile.TemporaryDirectory() if not args.keep else None
    work = Path(args.keep or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    half = max(n // 2, 4)
    runs = {}
    for m in sorted({n, half}):
        p = work / f"run_{m}_{size}.h5"
        if not p.exists():
            make_run(p, m, size, pool=min(32, m))
        runs[m] = p
    meta = make_run(work / "meta.h5", 1, size, 1)
    rmin = int(meta["r111"] - nq // 2)
    meta.update(qmin=rmin, qmax=rmin + nq, nphi=nphi, ring=round(meta["r111"]))
    load0 = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    rows = [("plain pipeline (no run correlator)", run_config(runs[n], "data", meta, "xcca", 2, args.chunk, 1))]
    rows.append((f"q_pairs={q_pairs}", run_config(runs[n], "data", meta, "xcca", 2, args.chunk, args.repeat, q_pairs)))
    rows.append((f"q_pairs={q_pairs}, N/2 frames (RSS check)",
                 run_config(runs[half], "data", meta, "xcca", 2, args.chunk, 1, q_pairs)))
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    npairs = nq * (nq + 1) // 2 if q_pairs == "all" else q_pairs
    print(f"\n### xcca.analyze with the run correlator: {size}x{size} uint16 frames -> {nq} radii x {nphi} angles, "
          f"{npairs} q pairs, 2 threads, chunk {args.chunk} ({os.cpu_count()} CPUs; load average before {load0}, "
          f"after {load})\n")
    print("| pipeline | frames | total s | frames/s | correlator ms/frame | finish s | peak RSS MB | vs plain |")
    print("|---" * 8 + "|")
    base = rows[0][1]["frames"] / rows[0][1]["seconds"]
    per0 = rows[0][1]["seconds"] / rows[0][1]["frames"]
    for name, r in rows:
        t = r["timings"]
        fps = r["frames"] / r["seconds"]
        extra = 1e3 * (r["seconds"] / r["frames"] - per0) if "runcorr_finish" in t else 0.0
        print(f"| {name} | {r['frames']} | {r['seconds']:.1f} | {fps:.2f} | {extra:.1f} | "
              f"{t.get('runcorr_finish', 0):.1f} | {r['rss'] / 2**20:.0f} | {fps / base:.2f}x |")
    print("\ncorrelator ms/frame = wall time per frame beyond the plain pipeline's (the rings kept by the stages, "
          "fed to the correlator in the reduction's sums, both passes); finish = the last feed and "
          "RunCorrelator.result() of both correlators.")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
