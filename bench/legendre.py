"""Benchmark of xcca.legendre_decompose (issue 13) against pypadf's truncated-SVD formulation in NumPy, same run.

    python bench/legendre.py [--quick] [--rings 100] [--n 3600] [--physics] [--peer-pairs N]

Case: all pairs of 100 rings (theta 5-30 degrees, so every pair has its own cos psi grid) x 3600 lags, with error
bars, l_max = 20 (even l), 5050 pairs q <= q' solved.
  * xcca: Tikhonov, GCV over 50 regularisation values (global and per pair), error bars, residual, condition;
    and the fixed TSVD cut (reg = 0.5) for the like-for-like comparison.
  * peer: pypadf's formulation, one pair at a time: the Legendre design matrix P_l(cos psi_k) of the pair, and
    numpy.linalg.pinv(A, rcond=0.5) @ C (a fixed cut, no criterion, no error bars).
--peer-pairs N times the peer on the first N pairs and scales its time to all pairs (it takes minutes otherwise).
--physics prints the README's per-l agreement of the end-to-end point-scatterer check.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scipy.special import eval_legendre

import xcca


def best_time(fn, repeats):
    """Best warm wall time of `repeats` calls after one warm-up call, and the process CPU time of that call."""
    fn()
    best, cpu = np.inf, np.inf
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        w = time.perf_counter() - t
        if w < best:
            best, cpu = w, time.process_time() - c
    return best, cpu


def peer_pypadf(C, q, lam, l, rcond=0.5, max_pairs=None):
    """Per pair: A[k, l] = P_l(cos psi_k) on all lags, B = pinv(A, rcond) @ C. With max_pairs, only the first
    max_pairs pairs (i <= j, row by row) are solved (the rest stay NaN)."""
    nq, _, n = C.shape
    k = np.arange(n)
    out = np.full((l.size, nq, nq), np.nan)
    done = 0
    for i in range(nq):
        for j in range(i, nq):
            if max_pairs is not None and done >= max_pairs:
                return out
            cp = xcca.cos_psi(n, q[i], lam, q[j])[k]
            A = eval_legendre(l[None, :], cp[:, None])
            out[:, i, j] = out[:, j, i] = np.linalg.pinv(A, rcond=rcond) @ C[i, j, k]
            done += 1
    return out


def physics_table():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from _legendre_sim import analytic_B, mean_cross_correlation, object_atoms, simulate_rings

    atoms = object_atoms(seed=3, n_atoms=6, size=7.0)
    lam, q, nphi, lmax = 2.0, np.linspace(0.5, 2.5, 8), 128, 24
    rings = simulate_rings(atoms, q, lam, nphi, 20000, seed=1)
    C, _, bm = mean_cross_correlation(rings, blocks=20)
    Bt = analytic_B(atoms, q, lmax)[::2]
    th = np.rad2deg(np.arcsin(q * lam / (4 * np.pi)))
    print(f"\nPoint scatterers (6 atoms in 7 A), 20000 random 3-D orientations, 8 rings q = 0.5-2.5 1/A "
          f"(theta {th[0]:.1f}-{th[-1]:.1f} deg, lambda = 2 A), 128 lags, 20 blocks; B_l(q, q) vs Kam's analytic "
          "expansion:\n")
    r = xcca.legendre_decompose(C, q, lam, l_max=lmax, blocks=bm, method="lstsq", exclude=0)
    rt = xcca.legendre_decompose(C, q, lam, l_max=lmax, blocks=bm, exclude=0)
    d, dt = np.diagonal(r.B, axis1=1, axis2=2), np.diagonal(Bt, axis1=1, axis2=2)
    de = np.diagonal(r.B_error, axis1=1, axis2=2)
    dg = np.diagonal(rt.B, axis1=1, axis2=2)
    print("| l | max B_l(q,q) | rel. error lstsq | max abs z (jackknife) | rel. error Tikhonov-GCV | half-set corr. |")
    print("|---|---|---|---|---|---|")
    for i, lv in enumerate(r.l):
        rel = np.linalg.norm(d[i] - dt[i]) / np.linalg.norm(dt[i])
        relg = np.linalg.norm(dg[i] - dt[i]) / np.linalg.norm(dt[i])
        print(f"| {lv} | {np.abs(dt[i]).max():.3g} | {rel:.2%} | {np.max(np.abs(d[i] - dt[i]) / de[i]):.2f} | "
              f"{relg:.2%} | {r.consistency[i]:.3f} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rings", type=int, default=100)
    ap.add_argument("--n", type=int, default=3600)
    ap.add_argument("--physics", action="store_true")
    ap.add_argument("--peer-pairs", type=int, default=None,
                    help="time the peer on the first N pairs only and scale its time to all pairs (the per-pair "
                         "cost is the same for every pair: one pinv of an nphi x nl matrix)")
    ap.add_argument("--first-call", action="store_true", help=argparse.SUPPRESS)  # child of the cold timing
    ap.add_argument("--touch", action="store_true", help=argparse.SUPPRESS)  # child: cost of fresh memory
    a = ap.parse_args()
    nq, n = (30, 720) if a.quick else (a.rings, a.n)
    rng = np.random.default_rng(0)
    lam = 1.0
    q = 4 * np.pi * np.sin(np.deg2rad(np.linspace(5, 30, nq))) / lam
    l = np.arange(0, 21, 2)
    B = np.empty((l.size, nq, nq))
    for i, lv in enumerate(l):
        Y = rng.normal(size=(nq, min(2 * lv + 1, nq)))
        B[i] = Y @ Y.T * np.exp(-lv / 5) / Y.shape[1]
    sig = 3e-3
    C = xcca.legendre_synthesize(B, l, q, lam, n) + sig * rng.normal(size=(nq, nq, n))
    E = np.full(C.shape, sig)
    rep = 1 if a.quick else 3
    if a.first_call:  # a fresh process: the first call pays the first touch of ~1 GB of new temporaries
        t, c = time.perf_counter(), time.process_time()
        xcca.legendre_decompose(C, q, lam, l_max=20, error=E, reg="gcv")
        print(f"{time.perf_counter() - t:.3f} {time.process_time() - c:.3f}")
        return
    if a.touch:  # the same fresh process state, filling a new array of the residual's size instead
        t, c = time.perf_counter(), time.process_time()
        z = np.empty_like(C)
        z.fill(1.0)
        print(f"{time.perf_counter() - t:.3f} {time.process_time() - c:.3f}")
        return
    touch = subprocess.run([sys.executable, __file__, "--touch", "--rings", str(nq), "--n", str(n)],
                           capture_output=True, text=True, check=True).stdout.split()
    cold = subprocess.run([sys.executable, __file__, "--first-call", "--rings", str(nq), "--n", str(n)],
                          capture_output=True, text=True, check=True).stdout.split()
    print(f"# bench/legendre.py: {nq} x {nq} ring pairs ({nq * (nq + 1) // 2} solved) x {n} lags, l_max = 20 even; "
          f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs\n")
    rows = []
    t_gcv, c_gcv = best_time(lambda: xcca.legendre_decompose(C, q, lam, l_max=20, error=E, reg="gcv"), rep)
    rows.append(("xcca tikhonov, GCV over 50 values (global), error bars + residual", t_gcv))
    t_pair, _ = best_time(lambda: xcca.legendre_decompose(C, q, lam, l_max=20, error=E, reg="gcv", scope="pair"), rep)
    rows.append(("xcca tikhonov, GCV over 50 values per pair", t_pair))
    t_tsvd, _ = best_time(lambda: xcca.legendre_decompose(C, q, lam, l_max=20, method="tsvd", reg=0.5, exclude=0), rep)
    rows.append(("xcca tsvd reg=0.5 (pypadf's cut)", t_tsvd))
    npairs = nq * (nq + 1) // 2
    sub = a.peer_pairs if a.peer_pairs is not None and a.peer_pairs < npairs else None
    t0 = time.perf_counter()
    Bp = peer_pypadf(C, q, lam, l, max_pairs=sub)
    t_peer = (time.perf_counter() - t0) * (npairs / sub if sub else 1.0)
    rows.append(("peer: pypadf formulation, pinv(rcond=0.5) per pair (NumPy)"
                 + (f", timed on {sub} pairs x {npairs / sub:.1f}" if sub else ""), t_peer))
    rx = xcca.legendre_decompose(C, q, lam, l_max=20, method="tsvd", reg=0.5, exclude=0)
    ok = np.isfinite(Bp)
    same = np.max(np.abs(rx.B - Bp)[ok]) / np.max(np.abs(Bp[ok]))
    print("| case | time (s) | peer / case |")
    print("|---|---|---|")
    for name, t in rows:
        print(f"| {name} | {t:.3f} | {t_peer / t:.1f}x |")
    iu = np.triu_indices(nq)
    err = lambda X: np.linalg.norm((X - B)[:, iu[0], iu[1]])  # noqa: E731
    rg = xcca.legendre_decompose(C, q, lam, l_max=20, error=E, reg="gcv")
    pe = f"pypadf cut {err(Bp):.3g}" if not sub else "pypadf cut: not all pairs solved"
    print(f"\nxcca tsvd vs peer: max |diff| / max |B| = {same:.1e}. Error ||B - B_true||: GCV {err(rg.B):.3g}, "
          f"{pe}. Goal: GCV over 50 values <= 2 s: {'met' if t_gcv <= 2 else 'NOT met'}.")
    print(f"GCV case, CPU time (process, all threads): warm {c_gcv:.3f} s for {t_gcv:.3f} s wall; first call of a "
          f"fresh process {float(cold[0]):.3f} s wall, {float(cold[1]):.3f} s CPU (after `import xcca`).")
    print(f"Fresh memory in a fresh process (same state, np.empty_like(C).fill(1), {C.nbytes / 1e6:.0f} MB, the "
          f"residual's size): {float(touch[0]):.3f} s wall, {float(touch[1]):.3f} s CPU.")
    if a.physics:
        physics_table()


if __name__ == "__main__":
    main()
