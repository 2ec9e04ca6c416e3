"""Benchmark of issue 5: periodic ring fits and shot pairing at 1e5-1e6 shots.

Run ``python bench/pairing.py`` (full: 1e5 fitted rings, 1e6 shots) or ``python bench/pairing.py --quick``.
Prints markdown tables with absolute times and ratios against the peers measured in the same run:

* fit_periodic of rings × 5000 samples (degree 15) against a loop of numpy.polynomial Chebyshev.fit and a loop of
  LOKI's own np.ma.polyfit formulation;
* pair_shots ("loki", "greedy") on the whitened degree-15 fit features, against the full-matrix NumPy reference
  (LOKI's algorithm) on a subset, checking that the pairs are identical; peak RSS of each pairing run in a fresh
  process;
* issue 15's hard cases: 1e5 iid 16-dim features (beside scipy's cKDTree k-NN), 1e5 identical rows, nine distinct
  points in d = 2, features scaled by 1e±200;
* whole ring profiles as features (D = 300-5000, LOKI's tutorial: 14 × 5000) against LOKI's pair_fits.

Synthetic shots (no data files needed): 5000-sample rings with four masked detector gaps, shot intensity fluctuating
by 20 %, harmonics 1…H of the ring (beam-pointing jitter, polarisation, detector anisotropy) with random 5 %
amplitudes and phases, and Poisson-like noise (sigma = sqrt(I)). For 1e6 shots the features are drawn from the exact
linear image of the same model (fit features are linear in the ring: signal part mapped through the fit, noise with
the covariance of fitted noise), because generating 5e9 noisy samples would dominate the run.

The cost of exact nearest-neighbour search grows with the number of independent fluctuation modes (the intrinsic
dimension of the features): ``--harmonics 4`` (default, 9 modes) is a hard case, ``--harmonics 2`` (5 modes) a mild one.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

import xcca
from xcca import reference as ref

N_SAMPLES = 5000
DEG = 15


def _mask(n: int = N_SAMPLES) -> np.ndarray:
    m = np.ones(n, bool)
    for start in (600, 1900, 3300, 4200):
        m[start : start + n // 40] = False
    return m


def _signals(n: int, harmonics: int) -> np.ndarray:
    phi = 2 * np.pi * np.arange(n) / n
    return np.array([np.ones(n)] + [f((k + 1) * phi) for k in range(harmonics) for f in (np.cos, np.sin)])


def _amplitudes(count: int, harmonics: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per shot: intensity A (count, 1) and coefficients of the signals (count, 1 + 2H)."""
    a_int = 1000.0 * np.maximum(1 + 0.2 * rng.standard_normal((count, 1)), 0.05)
    amp = 0.05 * rng.standard_normal((count, harmonics))
    ph = rng.uniform(0, 2 * np.pi, (count, harmonics))
    coef = np.concatenate([a_int] + [c for k in range(harmonics) for c in
                                     (a_int * amp[:, k, None] * np.cos(ph[:, k, None]),
                                      -a_int * amp[:, k, None] * np.sin(ph[:, k, None]))], axis=1)
    return a_int, coef


def make_rings(count: int, harmonics: int, rng: np.random.Generator) -> np.ndarray:
    a_int, coef = _amplitudes(count, harmonics, rng)
    clean = coef @ _signals(N_SAMPLES, harmonics)
    return (clean + np.sqrt(np.maximum(clean, 1.0)) * rng.standard_normal(clean.shape)).astype(np.float32)


def linear_features(count: int, harmonics: int, rng: np.random.Generator) -> np.ndarray:
    """Fit features of `count` model shots without generating the rings (the fit is linear in the ring)."""
    mask = _mask()
    sig = _signals(N_SAMPLES, harmonics)
    offset = 10.0  # keeps every valid sample non-zero, so all share the mask's exclusion pattern
    g = xcca.fit_periodic(sig + offset, mask, DEG).features() - xcca.fit_periodic(
        np.full(N_SAMPLES, offset), mask, DEG).features()
    noise = xcca.fit_periodic(offset + rng.standard_normal((2000, N_SAMPLES)), mask, DEG).features()
    chol = np.linalg.cholesky(np.cov(noise.T))
    out = np.empty((count, DEG + 1))
    for b in range(0, count, 100_000):
        a_int, coef = _amplitudes(min(100_000, count - b), harmonics, rng)
        out[b : b + len(a_int)] = coef @ g + np.sqrt(a_int) * (rng.standard_normal((len(a_int), DEG + 1)) @ chol.T)
    return out


def _timeit(fn, repeat: int = 1):
    best = float("inf")
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def _loki_polyfit_yfit(data, mask, deg, overlap=0.2):
    """LOKI's fit_periodic formulation (power basis, np.ma.polyfit) — the peer."""
    n = len(data)
    nn = int(overlap * n)
    data_m = data * mask
    y = np.concatenate([data_m[-nn:], data_m, data_m[:nn]]).astype(np.float64)
    x = np.arange(-nn, n + nn)
    fit = np.ma.polyfit(np.ma.masked_where(y == 0, x), y, deg=deg)
    return np.polyval(fit, np.arange(n)) * mask


def bench_fit(n_rings: int, n_peer: int, harmonics: int, threads: int, rng) -> tuple[list[str], np.ndarray]:
    mask = _mask()
    chunk = 5000
    t_fit = 0.0
    feats = []
    for b in range(0, n_rings, chunk):
        rings = make_rings(min(chunk, n_rings - b), harmonics, rng)
        t, fit = _timeit(lambda: xcca.fit_periodic(rings, mask, DEG, n_threads=threads))
        t_fit += t
        feats.append(fit.features())
    peer_rings = rings[:n_peer]
    t_np, _ = _timeit(lambda: [ref.fit_periodic(r, mask, DEG) for r in peer_rings])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_loki, _ = _timeit(lambda: [_loki_polyfit_yfit(r, mask, DEG) for r in peer_rings])
    rate = n_rings / t_fit
    rows = [
        f"| fit_periodic, {n_rings} rings × {N_SAMPLES}, deg {DEG} | xcca.fit_periodic ({threads} threads) | "
        f"{t_fit:.3f} s | {rate:,.0f} rings/s | 1.0 |",
        f"| | loop of numpy.polynomial Chebyshev.fit ({n_peer} rings) | {t_np:.3f} s | {n_peer / t_np:,.0f} rings/s | "
        f"{rate / (n_peer / t_np):.0f}× slower |",
        f"| | loop of LOKI's np.ma.polyfit ({n_peer} rings) | {t_loki:.3f} s | {n_peer / t_loki:,.0f} rings/s | "
        f"{rate / (n_peer / t_loki):.0f}× slower |",
    ]
    return rows, np.concatenate(feats)


def _peak_rss_mb() -> float:
    """Peak RSS of this process (VmHWM: unlike ru_maxrss it is not inherited from the forking parent)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _pair_child(path: str, method: str, threads: int) -> None:
    """Run in a fresh process: pair the features in `path`, print time and peak RSS as JSON."""
    feats = np.load(path)
    rss0 = _peak_rss_mb()
    c0 = time.process_time()
    t, res = _timeit(lambda: xcca.pair_shots(feats, method, n_threads=threads))
    cpu = time.process_time() - c0  # all threads: on a shared machine the wall time alone says little
    print(json.dumps(dict(time=t, cpu=cpu, load=os.getloadavg()[0], rss_mb=_peak_rss_mb(), rss_before_mb=rss0,
                          pairs=len(res))))


# Wall times of the 1e6-shot, 5-mode case before issue 15 (README, main at 7eaea4c's parent): the goal is "not slower".
PREVIOUS_1E6 = {"loki": 15.3, "greedy": 14.9}


def bench_pairing(feats: np.ndarray, label: str, threads: int, tmpdir: str,
                  previous: dict | None = None) -> list[str]:
    path = os.path.join(tmpdir, f"xcca_bench_feats_{os.getpid()}_{len(feats)}.npy")
    np.save(path, feats)
    rows = []
    try:
        for method in ("loki", "greedy"):
            out = subprocess.run([sys.executable, __file__, "--_child", path, method, str(threads)],
                                 check=True, capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            ratio = f"{r['time'] / previous[method]:.2f}× the previous {previous[method]} s" if previous else ""
            rows.append(f"| pair_shots \"{method}\", {label} | xcca ({threads} threads) | {r['time']:.3f} s "
                        f"(CPU {r['cpu']:.1f} s, load {r['load']:.1f}) | "
                        f"peak RSS {r['rss_mb']:.0f} MB (features loaded: {r['rss_before_mb']:.0f} MB) | {ratio} |")
    finally:
        os.remove(path)
    return rows


def bench_exact(feats: np.ndarray, threads: int) -> list[str]:
    rows = []
    for method, fn in (("loki", ref.pair_loki), ("greedy", ref.pair_greedy)):
        t_ref, (p, d, u) = _timeit(lambda: fn(feats))
        t_x, res = _timeit(lambda: xcca.pair_shots(feats, method, n_threads=threads), repeat=3)
        same = np.array_equal(res.pairs, p) and np.array_equal(res.distances, d) and np.array_equal(res.unpaired, u)
        rows.append(f"| pair_shots \"{method}\", {len(feats)} shots (subset) | xcca ({threads} threads) | {t_x:.4f} s | "
                    f"pairs identical to reference: **{'yes' if same else 'NO'}** | 1.0 |")
        rows.append(f"| | NumPy full-matrix reference (LOKI's algorithm) | {t_ref:.3f} s | O(N²) memory | "
                    f"{t_ref / t_x:.0f}× slower |")
    return rows


def bench_hard_cases(n_iid: int, threads: int, tmpdir: str) -> list[str]:
    """Issue 15: iid features (every dimension independent: the worst case for a tree), identical rows, nine distinct
    points in d = 2, features scaled by 1e±200; peers: scipy's cKDTree k-NN (only the neighbour lists that pairing
    starts from) and the full-matrix reference on a subset (identity check)."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(15)
    rows = []
    iid = rng.standard_normal((n_iid, 16))
    rows += bench_pairing(iid, f"{n_iid} iid shots (16 independent dims)", threads, tmpdir)
    kd = iid[:20_000]  # scipy's tree needs minutes for 1e5 iid shots: compared on a subset, same machine and run
    t_kd, _ = _timeit(lambda: cKDTree(kd).query(kd, k=9, workers=threads))
    t_x, _ = _timeit(lambda: xcca.pair_shots(kd, "loki", n_threads=threads))
    rows.append(f"| pair_shots \"loki\", {len(kd)} iid shots (16 dims) | xcca ({threads} threads) | {t_x:.3f} s | | 1.0 |")
    rows.append(f"| | scipy cKDTree: only the 8 nearest neighbours of every shot ({threads} workers) | {t_kd:.3f} s | "
                f"not a pairing | {t_kd / t_x:.1f}× slower |")
    sub = iid[: min(3000, n_iid)]
    for method, fn in (("loki", ref.pair_loki), ("greedy", ref.pair_greedy)):
        t_ref, (p, d, u) = _timeit(lambda: fn(sub))
        t_s, res = _timeit(lambda: xcca.pair_shots(sub, method, n_threads=threads), repeat=3)
        same = np.array_equal(res.pairs, p) and np.array_equal(res.distances, d) and np.array_equal(res.unpaired, u)
        rows.append(f"| pair_shots \"{method}\", {len(sub)} iid shots (subset) | xcca | {t_s:.4f} s | pairs "
                    f"identical to reference: **{'yes' if same else 'NO'}** | reference {t_ref:.2f} s, "
                    f"{t_ref / t_s:.0f}× slower |")
    cases = [("100000 identical shots (16 dims)", np.ones((100_000, 16))),
             ("16385 shots, 9 distinct points (d = 2)", rng.integers(0, 3, (16385, 2)).astype(np.float64))]
    for label, x in cases:
        for method in ("loki", "greedy"):
            t, r = _timeit(lambda: xcca.pair_shots(x, method, n_threads=threads))
            rows.append(f"| pair_shots \"{method}\", {label} | xcca ({threads} threads) | {t:.3f} s | "
                        f"{len(r)} pairs | |")
    base = rng.standard_normal((20000, 16))
    for method in ("loki", "greedy"):
        a = xcca.pair_shots(base, method, n_threads=threads)
        ok = all(np.array_equal(a.pairs, xcca.pair_shots(base * s, method, n_threads=threads).pairs)
                 for s in (1e200, 1e-200))
        rows.append(f"| pair_shots \"{method}\", 20000 shots × 1e+200 and × 1e-200 | xcca | | same pairs as "
                    f"unscaled: **{'yes' if ok else 'NO'}** | |")
    return rows


def bench_high_dim(threads: int, quick: bool) -> list[str]:
    """Whole ring profiles as features (LOKI's tutorial pairs 14 shots x 5000 samples): D in the hundreds to
    thousands. Peers: LOKI's pair_fits (cdist, argsort, Python loop over a list of used shots) where it finishes in
    seconds, else its distance matrix and row sorts alone (a lower bound of its cost); identity with the reference."""
    from scipy.spatial import distance

    from loki import loki_pair_fits  # bench/loki.py: LOKI's pair_fits re-expressed in Python 3

    rng = np.random.default_rng(16)
    shapes = [(14, 5000), (200, 5000), (2000, 300)] + ([] if quick else [(2000, 5000)])
    rows = []
    for n, d in shapes:
        x = rng.standard_normal((n, d))
        rep = 5 if n * d <= 2e6 else 1
        t_l, r_l = _timeit(lambda: xcca.pair_shots(x, "loki", n_threads=threads), repeat=rep)
        t_g, _ = _timeit(lambda: xcca.pair_shots(x, "greedy", n_threads=threads), repeat=rep)
        if n <= 200:
            t_p, (pp, _) = _timeit(lambda: loki_pair_fits(x), repeat=rep)
            same = np.array_equal(r_l.pairs, np.asarray(pp))  # LOKI's pairs: (visited shot, its partner), in order
            peer = f"LOKI pair_fits {t_p * 1e3:.1f} ms, same pairs: **{'yes' if same else 'NO'}**"
        else:
            t_p, _ = _timeit(lambda: distance.cdist(x, x).argsort(1), repeat=rep)
            same = n * d > 1e6 or np.array_equal(r_l.pairs, ref.pair_loki(x)[0])
            peer = (f"LOKI's cdist + argsort alone {t_p * 1e3:.1f} ms (its loop: minutes)"
                    + ("" if n * d > 1e6 else f", pairs identical to reference: **{'yes' if same else 'NO'}**"))
        rows.append(f"| pair_shots, {n} iid shots × {d} features | xcca \"loki\" / \"greedy\" ({threads} threads) | "
                    f"{t_l * 1e3:.2f} / {t_g * 1e3:.2f} ms | {peer} | {t_l / t_p:.2f}× |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short run (1e4 shots, no 1e6)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--harmonics", type=int, default=4,
                    help="ring harmonics that fluctuate shot to shot (intrinsic dimension = 1 + 2 * harmonics)")
    ap.add_argument("--big-harmonics", type=int, default=2,
                    help="harmonics of the 1e6-shot model (default 2: with 4, exact search at 1e6 takes minutes)")
    ap.add_argument("--only-big", action="store_true",
                    help="only the 1e6-shot case against the previous timings (re-timing on a quiet machine)")
    ap.add_argument("--_child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        _pair_child(args._child[0], args._child[1], int(args._child[2]))
        return
    rng = np.random.default_rng(2024)
    n_fit, n_peer, n_exact, n_big = (10_000, 20, 2000, 0) if args.quick else (100_000, 200, 5000, 1_000_000)
    tmpdir = os.environ.get("TMPDIR", "/tmp")
    print(f"xcca {xcca.__version__}, {xcca._core.usable_cores()} usable cores, harmonics={args.harmonics}\n")
    print("| case | implementation | time | rate / memory | ratio |")
    print("|---|---|---|---|---|")
    if args.only_big:
        n_fit = n_exact = 0
    if n_fit:
        _bench_small(args, rng, n_fit, n_peer, n_exact, tmpdir)
    if n_big:
        big_modes = 1 + 2 * args.big_harmonics
        big = linear_features(n_big, args.big_harmonics, np.random.default_rng(2025))  # same with --only-big
        print("\n".join(bench_pairing(big, f"{n_big} shots (model features, 16 dims, {big_modes} modes)",
                                       args.threads, tmpdir,
                                       PREVIOUS_1E6 if big_modes == 5 else None)), flush=True)


def _bench_small(args, rng, n_fit: int, n_peer: int, n_exact: int, tmpdir: str) -> None:
    rows, feats = bench_fit(n_fit, n_peer, args.harmonics, args.threads, rng)
    print("\n".join(rows), flush=True)
    print("\n".join(bench_exact(feats[:n_exact], args.threads)), flush=True)
    modes = 1 + 2 * args.harmonics
    print("\n".join(bench_pairing(feats, f"{len(feats)} fitted shots (16 dims, {modes} modes)", args.threads, tmpdir)),
          flush=True)
    print("\n".join(bench_hard_cases(20_000 if args.quick else 100_000, args.threads, tmpdir)), flush=True)
    print("\n".join(bench_high_dim(args.threads, args.quick)), flush=True)


if __name__ == "__main__":
    main()
