"""Benchmark of the ring-centre fit, side by side in one run:

1. end to end against LOKI's RingFit procedure (a minimal Python 3 re-expression of ``loki/RingData/RingFit.py``:
   radius of every pixel, annulus zeroing, two argsorts of the image, ``scipy.odr`` implicit circle), on LOKI's
   300×300 image and on a simulated 1024×1024 one, same guess, same centre: ``xcca.fit_ring`` (with its fit-quality
   check) and ``xcca.loki.RingFit(img).fit_circle``;
2. the circle fit alone on 5000 points against ``scipy.optimize.least_squares`` and ``scipy.odr``.

    python bench/ringfit.py            # best of many
    python bench/ringfit.py --quick
"""
from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from xcca import loki
from xcca.ringfit import fit_circle_points, fit_ring

DATA = Path(os.environ.get("XCCA_DATA_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def loki_fit_circle(img, beta, num_fitting_pts=5000, ring_width=20, num_high_pix=20):
    """LOKI's RingFit(img).fit_circle(beta, ...) (Python 2 integer ring_width/2), returning LOKI's triple."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from scipy import odr

    y, x = np.indices(img.shape)
    x1, y1 = x.ravel(), y.ravel()
    img1 = np.copy(img.ravel())
    half = ring_width // 2 if isinstance(ring_width, int) else ring_width / 2
    rad = np.sqrt((x1 - beta[0]) ** 2 + (y1 - beta[1]) ** 2)
    img1[rad > beta[2] + half] = 0
    img1[rad < beta[2] - half] = 0
    img1[np.argsort(img1)[:num_high_pix]] = 0
    num_pts = np.where(img1 > 0)[0].shape[0]
    if num_fitting_pts >= num_pts:
        num_fitting_pts = num_pts // 2
    idx = np.argsort(img1)[::-1][:num_fitting_pts]
    pts = np.vstack([x1[idx], y1[idx]])
    model = odr.Model(lambda b, p: (p[0] - b[0]) ** 2 + (p[1] - b[1]) ** 2 - b[2] ** 2, implicit=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, b, r = odr.ODR(odr.Data(pts, y=1), model, beta).run().beta
    ri = np.sqrt((pts[0] - a) ** 2 + (pts[1] - b) ** 2)
    return np.array([a, b, r]), np.sum((ri - r) ** 2), img1[idx].mean()


def timeit(fn, repeat: int) -> float:
    fn()
    best = np.inf
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(repeat):
            fn()
        best = min(best, (time.perf_counter() - t0) / repeat)
    return best


def simulated(size=1024, cx=517.3, cy=498.8, r=300.2, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.indices((size, size))
    d = np.hypot(xx - cx, yy - cy)
    return rng.poisson(1000 * np.exp(-0.5 * ((d - r) / 2.0) ** 2) + 5).astype(np.float32)


def end_to_end(repeat: int) -> None:
    cases = []
    if (DATA / "test_img.npy").exists():
        mask = np.load(DATA / "test_mask.npy")
        img = np.load(DATA / "test_img.npy") * mask  # LOKI's tutorial zeroes the masked pixels
        cases.append(("LOKI's 300×300 image, r 52, width 10", img, (152.0, 151.0, 52.0), 10, mask))
    cases.append(("simulated 1024×1024, r 300, width 20", simulated(), (512.0, 512.0, 298.0), 20, None))
    print(f"\n### Ring fit end to end vs LOKI's RingFit procedure (load average {os.getloadavg()[0]:.1f})\n")
    print("| image | LOKI's procedure | xcca.fit_ring | ratio | xcca.loki.RingFit | ratio | "
          "|centre difference| fit_ring / RingFit vs LOKI |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, img, beta, width, mask in cases:
        t_loki = timeit(lambda: loki_fit_circle(img, beta, ring_width=width), max(repeat // 20, 3))
        t_fr = timeit(lambda: fit_ring(img, beta, mask=mask, width=width), repeat)
        t_rf = timeit(lambda: loki.RingFit(img).fit_circle(beta, ring_width=width), repeat)
        ref = loki_fit_circle(img, beta, ring_width=width)[0]
        fr = fit_ring(img, beta, mask=mask, width=width).beta
        rf = loki.RingFit(img).fit_circle(beta, ring_width=width)[0]
        d_fr, d_rf = np.hypot(*(fr - ref)[:2]), np.hypot(*(rf - ref)[:2])
        print(f"| {name} | {t_loki * 1e3:.2f} ms | {t_fr * 1e3:.3f} ms | {t_loki / t_fr:.0f}× faster | "
              f"{t_rf * 1e3:.3f} ms | {t_loki / t_rf:.0f}× faster | {d_fr:.1e} / {d_rf:.1e} px |")


def fit_only(repeat: int, n_points: int) -> None:
    size, cx, cy, r = 1024, 517.3, 498.8, 300.2
    img = simulated(size, cx, cy, r)
    guess = (512.0, 512.0, 298.0)
    res = fit_ring(img, guess, width=20, n_points=n_points, n_iter=3)
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
    print(f"\n### Circle fit alone: {len(x)} points on a r = {r} ring ({size}x{size} float32 image)\n")
    print("| method | time ms | xcca is faster by | |centre error| px | radius error px |")
    print("|---|---|---|---|---|")
    t_ours = rows[0][1]
    for name, t, beta in rows:
        err = np.hypot(beta[0] - cx, beta[1] - cy)
        print(f"| {name} | {t * 1e3:.3f} | {t / t_ours:.1f}x | {err:.4f} | {abs(beta[2] - r):.4f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--points", type=int, default=5000)
    args = ap.parse_args()
    repeat = 20 if args.quick else 200
    end_to_end(repeat)
    fit_only(repeat, args.points)


if __name__ == "__main__":
    main()
