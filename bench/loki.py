"""xcca.loki against LOKI's own algorithm, step by step through LOKI's tutorial, side by side in one run.

The peer is a minimal Python 3 re-expression of each LOKI step (github dermen/loki, ``loki/RingData/*.py`` and
``loki/utils/postproc_helper.py``): the same NumPy/SciPy calls in the same order, without LOKI's printing. Data:
LOKI's own ``test_img.npy`` / ``test_mask.npy`` and ``bragg_rings.hdf5`` (``XCCA_DATA_DIR`` or ../shared/data).

    python bench/loki.py            # best of 7
    python bench/loki.py --quick
"""
from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import h5py
import numpy as np

from xcca import loki

from ringfit import loki_fit_circle  # noqa: E402  (bench/ringfit.py: LOKI's RingFit procedure)

DATA = Path(os.environ.get("XCCA_DATA_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


# ---------------------------------------------------------------- LOKI's algorithm (the peer)

def loki_radial_profile(img, center, mask, minlength):
    y, x = np.indices(img.shape)
    r = np.sqrt((y - center[1]) ** 2 + (x - center[0]) ** 2).astype(int)
    cnt = np.bincount(r[mask].ravel(), minlength=minlength)
    r1 = r.ravel()  # LOKI's constructor also sorts the radii (_set_R_sorted_idx)
    sort_idx = np.argsort(r1)
    rsort = r1[sort_idx]
    _ = np.array([0] + list(np.where(rsort[1:] - rsort[:-1] == 1)[0] + 1) + [len(r1)])
    s = np.bincount(r.ravel(), weights=(mask * img).ravel(), minlength=minlength)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.nan_to_num(s / cnt)


def loki_fit_circle_slow(img, beta, ring_scan_width, center_scan_width, resolution):
    import math

    rnd = lambda v: math.copysign(math.floor(abs(v) + 0.5), v)  # noqa: E731  (Python 2 round)
    r0, cx, cy = rnd(beta[2]), rnd(beta[0]), rnd(beta[1])
    start, stop = r0 - int(ring_scan_width / 2), r0 + int(ring_scan_width / 2)
    num = int(center_scan_width / resolution)
    sx = np.linspace(cx - center_scan_width / 2.0, cx + center_scan_width / 2.0, num)
    sy = np.linspace(cy - center_scan_width / 2.0, cy + center_scan_width / 2.0, num)
    centers = [(a, b) for a in sx for b in sy]
    yy, xx = np.indices(img.shape)
    profs = []
    for c in centers:
        r = np.sqrt((yy - c[1]) ** 2 + (xx - c[0]) ** 2).astype(int)
        cnt = np.bincount(r.ravel(), minlength=img.shape[0])
        s = np.bincount(r.ravel(), weights=img.ravel(), minlength=img.shape[0])
        with np.errstate(divide="ignore", invalid="ignore"):
            profs.append(np.nan_to_num(s / cnt)[int(start):int(stop)])
    best = int(np.argmax([max(p) for p in profs]))
    return centers[best][0], centers[best][1], int(np.argmax(profs[best])) + start


def loki_interp_nearest(img, a, b, qmax, qmin, nphi):
    phis = np.arange(nphi) * 2 * np.pi / nphi
    radii = np.arange(qmin, qmax)
    q = np.repeat(radii[:, None].astype(float), nphi, axis=1)
    ph = np.repeat(phis[None], radii.size, axis=0)
    xr = q * np.cos(ph - np.pi) + a
    yr = q * np.sin(ph - np.pi) + b
    xn = xr.astype(int) + np.round(xr - np.floor(xr)).astype(int)
    yn = yr.astype(int) + np.round(yr - np.floor(yr)).astype(int)
    return np.take(img.ravel(), img.shape[1] * yn + xn)


def loki_is_outlier(points, thresh=3.5):
    if len(points.shape) == 1:
        points = points[:, None]
    median = np.median(points, axis=0)
    diff = np.sqrt(np.sum((points - median) ** 2, axis=-1))
    return 0.6745 * diff / np.median(diff) > thresh


def loki_autocorr(shots):
    fx = np.fft.rfft(shots, n=shots.shape[-1], axis=-1)
    return np.fft.irfft(fx * np.conjugate(fx), n=shots.shape[-1], axis=-1)


def loki_fit_periodic(data, mask, deg, overlap=0.2):
    n = len(data)
    nn = int(overlap * n)
    data_m = data * mask
    y = np.zeros(n + 2 * nn)
    y[nn:n + nn] = data_m
    y[:nn] = data_m[-nn:]
    y[-nn:] = data_m[:nn]
    x = np.arange(-nn, n + nn)
    fit = np.ma.polyfit(np.ma.masked_where(y == 0, x), y, deg=deg)
    yfit = np.polyval(fit, np.arange(n)) * mask
    ofit = np.polynomial.chebyshev.chebfit(x, np.polyval(fit, x), deg=deg)
    return ofit, fit, yfit


def loki_pair_fits(fits):
    from collections import deque

    from scipy.spatial import distance

    eps = distance.cdist(fits, fits)
    eps += 1.1 * eps.max(1) * np.identity(eps.shape[0])
    order = eps.argsort(1)
    pairs, dists, used = [], [], []
    for i in range(len(order)):
        row = deque(order[i])
        pair = [i, row.popleft()]
        while np.any([j in used for j in pair]):
            try:
                pair = [i, row.popleft()]
            except IndexError:
                pair = None
                break
        if pair is not None and len(set(pair)) > 1:
            used.extend(pair)
            pairs.append(pair)
            dists.append(eps[pair[0], pair[1]])
    return pairs, dists


# ---------------------------------------------------------------- timing

def best(fn, repeat):
    fn()
    t = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        t = min(t, time.perf_counter() - t0)
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    rep = 3 if args.quick else 7
    warnings.simplefilter("ignore")
    img = np.load(DATA / "test_img.npy")
    mask = np.load(DATA / "test_mask.npy")
    with h5py.File(DATA / "bragg_rings.hdf5", "r") as f:
        rings = f["111_Bragg_rings"][()].astype(np.float64)
        rmask = f["111_mask"][()].astype(bool)
    guess = (2 + img.shape[1] / 2.0, 1 + img.shape[0] / 2.0)
    (xc, yc, _), _, _ = loki.RingFit(img * mask).fit_circle((guess[0], guess[1], 52), ring_width=10)
    nphi, qmin, qmax = 720, 10, 140
    interp = loki.InterpSimple(xc, yc, qmax, qmin, nphi, img.shape)
    polar = interp.nearest(img).astype(np.float64)
    pmask = interp.nearest(mask.astype(np.float64))
    masked = np.ma.masked_equal(polar * pmask, 0)
    filled = np.where(pmask > 0, polar, polar.mean())
    yfits = np.array([loki.fit_periodic(r, rmask, 15)[2] for r in rings])
    pairs = np.asarray(loki.pair_fits(yfits)[0])
    diffs = ((rings[pairs[:, 0]] - rings[pairs[:, 1]]) * rmask)[:, None, :]

    steps = [
        ("RadialProfile(...).calculate (300×300, minlength 300)",
         lambda: loki_radial_profile(img, guess, mask, 300),
         lambda: loki.RadialProfile(guess, img_shape=img.shape, mask=mask, minlength=300).calculate(img)),
        ("RingFit(img).fit_circle (r 52, width 10)",
         lambda: loki_fit_circle(img * mask, (guess[0], guess[1], 52), ring_width=10),
         lambda: loki.RingFit(img * mask).fit_circle((guess[0], guess[1], 52), ring_width=10)),
        ("RingFit.fit_circle_slow (4 px, resolution 0.1: 1600 centres)",
         lambda: loki_fit_circle_slow(img, (guess[0], guess[1], 16), 4, 4, 0.1),
         lambda: loki.RingFit(img).fit_circle_slow((guess[0], guess[1], 16), 4, 4, 0.1)),
        ("InterpSimple + nearest (130 radii × 720)",
         lambda: loki_interp_nearest(img, xc, yc, qmax, qmin, nphi),
         lambda: loki.InterpSimple(xc, yc, qmax, qmin, nphi, img.shape).nearest(img)),
        ("is_outlier per masked ring (130 rings)",
         lambda: [loki_is_outlier(r) for r in masked],
         lambda: [loki.is_outlier(r) for r in masked]),
        ("DiffCorr(polar).autocorr (130 × 720)",
         lambda: loki_autocorr(filled[None]),
         lambda: loki.DiffCorr(filled[None]).autocorr()),
        ("fit_periodic per ring (14 rings × 5000, deg 15)",
         lambda: [loki_fit_periodic(r, rmask, 15) for r in rings],
         lambda: [loki.fit_periodic(r, rmask, 15) for r in rings]),
        ("pair_fits (14 shots)", lambda: loki_pair_fits(yfits), lambda: loki.pair_fits(yfits)),
        ("DiffCorr(differences).autocorr (7 pairs)",
         lambda: loki_autocorr(diffs), lambda: loki.DiffCorr(diffs).autocorr()),
    ]
    load = os.getloadavg()[0]
    print(f"\n### xcca.loki vs LOKI's algorithm (LOKI's tutorial data; load average {load:.1f})\n")
    print("| step | LOKI's algorithm | xcca.loki | xcca.loki is faster by |")
    print("|---|---:|---:|---:|")
    tot_l = tot_x = 0.0
    for name, peer, ours in steps:
        rp = max(1, rep // 3) if "slow" in name else rep
        tl, tx = best(peer, rp), best(ours, rp)
        if "slow" not in name:
            tot_l, tot_x = tot_l + tl, tot_x + tx
        print(f"| {name} | {tl * 1e3:.2f} ms | {tx * 1e3:.2f} ms | {tl / tx:.1f}× |")
    print(f"| whole tutorial chain (all steps but fit_circle_slow) | {tot_l * 1e3:.1f} ms | {tot_x * 1e3:.1f} ms | "
          f"{tot_l / tot_x:.1f}× |")


if __name__ == "__main__":
    main()
