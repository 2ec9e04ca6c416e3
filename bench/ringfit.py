"""Benchmark of the ring-centre fit: xcca's geometric circle fit against scipy.optimize.least_squares (the same
geometric problem, analytic Jacobian, Levenberg-Marquardt) and, only if it still imports, the deprecated scipy.odr
implicit-model fit that LOKI's RingFit uses (xcca does not depend on it).

    python bench/ringfit.py            # 5000 points, 200 repeats
    python bench/ringfit.py --quick
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from scipy.optimize import least_squares

from xcca.ringfit import fit_circle_points, fit_ring


def timeit(fn, repeat: int) -> float:
    fn()
    best = np.inf
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(repeat):
            fn()
        best = min(best, (time.perf_counter() - t0) / repeat)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--points", type=int, default=5000)
    args = ap.parse_args()
    repeat = 20 if args.quick else 200
    rng = np.random.default_rng(0)
    size, cx, cy, r = 1024, 517.3, 498.8, 300.2
    yy, xx = np.indices((size, size))
    d = np.hypot(xx - cx, yy - cy)
    img = rng.poisson(1000 * np.exp(-0.5 * ((d - r) / 2.0) ** 2) + 5).astype(np.float32)
    guess = (512.0, 512.0, 298.0)
    res = fit_ring(img, guess, width=20, n_points=args.points, n_iter=3)
    x, y = res.points[:, 0].copy(), res.points[:, 1].copy()
    start = np.array(guess)

    def ours():
        return fit_circle_points(x, y)

    def lsq():
        f = lambda p: np.hypot(x - p[0], y - p[1]) - p[2]  # noqa: E731

        def jac(p):
            dd = np.hypot(x - p[0], y - p[1])
            return np.stack([(p[0] - x) / dd, (p[1] - y) / dd, -np.ones_like(x)], axis=1)

        return least_squares(f, start, jac=jac, method="lm").x

    rows = [("xcca fit_circle_points (Kasa + LM)", timeit(ours, repeat), np.array(ours()[:3])),
            ("scipy.optimize.least_squares (lm, analytic Jacobian)", timeit(lsq, max(repeat // 4, 5)), lsq())]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from scipy import odr

            model = odr.Model(lambda b, p: (p[0] - b[0]) ** 2 + (p[1] - b[1]) ** 2 - b[2] ** 2, implicit=True)

            def run_odr():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return odr.ODR(odr.Data(np.vstack([x, y]), y=1), model, start).run().beta

            rows.append(("scipy.odr implicit (LOKI's RingFit; deprecated)", timeit(run_odr, max(repeat // 20, 3)),
                         run_odr()))
    except Exception:  # noqa: BLE001 - scipy.odr removed: nothing to compare with
        pass
    sel = timeit(lambda: fit_ring(img, guess, width=20, n_points=args.points), max(repeat // 10, 5))

    print(f"\n### Ring fit: {len(x)} points on a r = {r} ring ({size}x{size} float32 image)\n")
    print("| method | time ms | xcca is faster by | |centre error| px | radius error px |")
    print("|---|---|---|---|---|")
    t_ours = rows[0][1]
    for name, t, beta in rows:
        err = np.hypot(beta[0] - cx, beta[1] - cy)
        print(f"| {name} | {t * 1e3:.3f} | {t / t_ours:.1f}x | {err:.4f} | {abs(beta[2] - r):.4f} |")
    print(f"| xcca.fit_ring (selection + fit, one round) | {sel * 1e3:.3f} | | | |")


if __name__ == "__main__":
    main()
