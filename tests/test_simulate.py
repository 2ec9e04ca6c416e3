"""The simulated nanocrystals put their spots by the 3-D geometry (Ewald sphere), so cos ψ of the peaks is ±1/3."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import find_peaks

import xcca
from xcca.simulate import AU_Q111, AU_Q200, RunGeometry, crystal_spots, ewald_vector

WL = RunGeometry().wavelength


def test_ewald_vector_is_on_the_sphere():
    k = 2 * math.pi / WL
    for phi in (0.0, 1.0, 4.0):
        g = ewald_vector(AU_Q111, WL, phi)
        assert np.linalg.norm(g) == pytest.approx(AU_Q111, rel=1e-14)
        assert np.linalg.norm(g + [0, 0, k]) == pytest.approx(k, rel=1e-14)
        assert math.atan2(g[1], g[0]) % (2 * math.pi) == pytest.approx(phi)
    with pytest.raises(ValueError):
        ewald_vector(20.0, WL, 0.0)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_crystal_spots_pair_is_on_the_ewald_sphere_at_cos_psi_one_third(sign):
    rng = np.random.default_rng(1)
    phi0 = rng.uniform(0, 2 * np.pi, 20)
    flip = rng.random(20) < 0.5
    sp = crystal_spots(phi0, sign, WL, flip=flip)
    phi, w = sp["111"]
    assert phi.shape == (20, 8) and sp["200"][0].shape == (20, 6)
    # Exactly two 111 reflections satisfy the Bragg condition; the first at phi0.
    on = w > 1 - 1e-9
    assert np.all(on.sum(1) == 2)
    assert np.allclose(phi[:, 0], phi0 % (2 * np.pi))
    dphi = np.abs((phi[on].reshape(20, 2)[:, 1] - phi[on].reshape(20, 2)[:, 0] + np.pi) % (2 * np.pi) - np.pi)
    # xcca.cos_psi at that detector angle is the crystal's 3-D angle: cos ψ = ±1/3 (fcc 111-111).
    theta = math.asin(AU_Q111 * WL / (4 * math.pi))
    cp = np.cos(dphi) * math.cos(theta) ** 2 + math.sin(theta) ** 2
    assert np.allclose(cp, sign / 3, atol=1e-12)
    n = 100000
    k = np.rint(dphi * n / (2 * np.pi)).astype(int)
    assert np.allclose(xcca.cos_psi(n, AU_Q111, WL)[k], sign / 3, atol=1e-4)
    # Not the flat-Ewald angles 70.53°/109.47° any more.
    assert abs(np.degrees(dphi[0]) - (70.53 if sign > 0 else 109.47)) > 2
    assert np.all((sp["200"][1] >= 0) & (sp["200"][1] <= 1))
    assert AU_Q200 > AU_Q111


def test_difference_correlation_peaks_at_cos_psi_pm_one_third(tmp_path):
    """The demo's analysis of a simulated run: the two difference-correlation peaks of the 111 ring sit at
    cos ψ = +1/3 and -1/3 within one Δφ step."""
    from xcca.demo import run_demo

    paths = run_demo(tmp_path, n_frames=100, quiet=True, steps=["simulate", "analysis"])
    res = xcca.AnalysisResult.read(paths["result"])
    geom = RunGeometry()
    i = int(np.argmin(np.abs(res.radii - geom.r111)))
    nphi = len(res.delta)
    seg = res.difference_correlation_norm[i][: nphi // 2 + 1]
    pk, _ = find_peaks(seg)
    pk = pk[(pk >= 20 * nphi // 360) & (pk <= 160 * nphi // 360)]  # away from the Δ = 0 and 180° spikes
    top = np.sort(pk[np.argsort(seg[pk])[::-1][:2]])
    cp = res.cos_psi[i]
    step = np.max(np.abs(np.diff(cp))) * 1.01  # the Δφ resolution in cos ψ
    assert abs(cp[top[0]] - 1 / 3) <= step, (np.degrees(res.delta[top]), cp[top])
    assert abs(cp[top[1]] + 1 / 3) <= step, (np.degrees(res.delta[top]), cp[top])
