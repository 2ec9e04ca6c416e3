"""LOKI's tutorial flow with `from xcca.loki import ...` in place of `from loki...`, on LOKI's own test data.

Image part: load image + mask, fit the beam centre on a ring (RingFit), remap to polar (InterpSimple), drop outliers
per ring (is_outlier), fill masked samples with the ring mean, autocorrelate (DiffCorr).
Many-shot part (bragg_rings.hdf5, 14 real gold 111 rings): fit the ring profiles (fit_periodic), pair the shots
(pair_fits), correlate the differences of pairs (DiffCorr), normalise and convert Δ to cos ψ.
"""
from __future__ import annotations

import h5py
import numpy as np
import pytest

import xcca
from xcca import loki
from xcca.ringfit import fit_ring

needs = pytest.mark.skipif(
    not all(hasattr(loki, n) for n in ("InterpSimple", "DiffCorr", "fit_periodic", "pair_fits", "is_outlier")),
    reason="the polar/correlation/pairing parts of xcca.loki are not in this build yet",
)


def test_ring_fit_step(data_dir):
    img = np.load(data_dir / "test_img.npy")
    mask = np.load(data_dir / "test_mask.npy")
    # LOKI's tutorial guesses the centre near the image middle and picks a ring from the radial profile
    center_guess = (2 + img.shape[1] / 2.0, 1 + img.shape[0] / 2.0)
    rf = loki.RingFit(img * mask)
    (x_center, y_center, radius), residual, mean_intens = rf.fit_circle(
        (center_guess[0], center_guess[1], 52), num_fitting_pts=5000, ring_width=10, num_high_pix=20)
    assert np.hypot(x_center - 151.6, y_center - 150.7) < 0.5
    assert abs(radius - 52) < 1.0
    assert residual > 0 and mean_intens > np.median(img[mask])
    # the modern call agrees on the centre within the ring's width-limited precision
    res = fit_ring(img, guess=(center_guess[0], center_guess[1], 52), mask=mask, width=10)
    assert np.hypot(res.center[0] - x_center, res.center[1] - y_center) < 0.1


@needs
def test_image_flow(data_dir):
    img = np.load(data_dir / "test_img.npy")
    mask = np.load(data_dir / "test_mask.npy")
    (xc, yc, _), _, _ = loki.RingFit(img * mask).fit_circle((152, 151, 52), ring_width=10)
    nphi, rmin, rmax = 360, 40, 70
    interp = loki.InterpSimple(xc, yc, rmax, rmin, nphi, img.shape)
    polar = interp.nearest(img).astype(np.float64)
    pmask = interp.nearest(mask.astype(np.float64)) > 0.5
    assert polar.shape == (rmax - rmin, nphi) and pmask.shape == polar.shape
    # drop outliers per ring, then fill masked samples with the ring mean (the tutorial's gap filling)
    for i in range(polar.shape[0]):
        valid = np.flatnonzero(pmask[i])
        out = loki.is_outlier(polar[i, valid])
        pmask[i, valid[out]] = False
    ring_mean = np.array([polar[i, pmask[i]].mean() for i in range(polar.shape[0])])
    filled = np.where(pmask, polar, ring_mean[:, None])
    corr = loki.DiffCorr(filled[None]).autocorr()[0]
    assert corr.shape == (rmax - rmin, nphi)
    # LOKI's raw circular sums: C[k] = Σ_j x_j x_{j+k}
    for i in (0, 12, 29):
        x = filled[i]
        ref = np.array([np.dot(x, np.roll(x, -k)) for k in range(nphi)])
        np.testing.assert_allclose(corr[i], ref, rtol=1e-9)
    # the ring near r = 52 is the brightest of the band
    assert abs(rmin + int(np.argmax(ring_mean)) - 52) <= 3


@needs
def test_many_shot_flow(data_dir):
    with h5py.File(data_dir / "bragg_rings.hdf5", "r") as f:
        rings = f["111_Bragg_rings"][()].astype(np.float64)
        mask = f["111_mask"][()].astype(bool)
    n_shots, nphi = rings.shape
    yfits = []
    for ring in rings:
        ofit, fit, yfit = loki.fit_periodic(ring, mask, 15)
        yfits.append(yfit)
    yfits = np.array(yfits)
    assert yfits.shape == rings.shape
    assert np.all(yfits[:, ~mask] == 0)
    pairs, dists = loki.pair_fits(yfits)
    pairs = np.asarray(pairs)
    assert pairs.shape == (n_shots // 2, 2) and sorted(pairs.ravel()) == list(range(n_shots))
    # LOKI's pairing: each shot in index order takes its nearest unused shot
    d = np.sqrt(((yfits[:, None] - yfits[None]) ** 2).sum(-1))
    used = set()
    for i, j in pairs:
        assert i not in used and j not in used
        cand = [k for k in range(n_shots) if k != i and k not in used]
        assert d[i, j] == pytest.approx(min(d[i, k] for k in cand))
        used |= {int(i), int(j)}
    # difference correlation of the pairs, normalised by the mean ring intensity squared
    diffs = (rings[pairs[:, 0]] - rings[pairs[:, 1]]) * mask
    dc = loki.DiffCorr(diffs[:, None, :], pre_dif=True).autocorr()
    assert dc.shape == (len(pairs), 1, nphi)
    ref = np.array([np.dot(diffs[0], np.roll(diffs[0], -k)) for k in range(nphi)])
    np.testing.assert_allclose(dc[0, 0], ref, rtol=1e-8)
    mean_int = rings[:, mask].mean()
    corr = dc.mean(axis=0)[0] / mean_int**2
    assert np.all(np.isfinite(corr))
    # Δ -> cos ψ for the gold 111 ring (q = 2.67 1/Å) at 1.3 Å
    cpsi = xcca.cos_psi(nphi, 2.67, 1.3)
    theta = np.arcsin(2.67 * 1.3 / (4 * np.pi))
    delta = 2 * np.pi * np.arange(nphi) / nphi
    np.testing.assert_allclose(np.asarray(cpsi).ravel(), np.cos(delta) * np.cos(theta) ** 2 + np.sin(theta) ** 2,
                               rtol=1e-10, atol=1e-12)
