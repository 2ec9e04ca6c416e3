"""xcca.loki.DiffCorr reproduces LOKI's raw circular sums (numpy's rfft/irfft formulation of dermen/loki)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

from xcca.loki import DiffCorr


def _loki_auto(x):  # LOKI's _fft_autocorr
    n = x.shape[-1]
    f = np.fft.rfft(x, n=n, axis=-1)
    return np.fft.irfft(f * np.conjugate(f), n=n, axis=-1)


def _loki_cross(shots, qindex):  # LOKI's crosscorr
    out = []
    for shot in shots:
        qring = np.vstack([shot[qindex]] * shot.shape[0])
        n = shot.shape[-1]
        out.append(np.fft.irfft(np.fft.rfft(qring, n=n, axis=-1) * np.conjugate(np.fft.rfft(shot, n=n, axis=-1)), n=n,
                                axis=-1))
    return np.array(out)


def _direct_cross(shots, qindex):
    n = shots.shape[-1]
    x = shots.astype(np.float64)
    # [s, q, k] = sum_j x[s, qindex, (j+k) % n] x[s, q, j]
    return np.stack([(np.roll(x[:, qindex:qindex + 1, :], -k, axis=-1) * x).sum(-1) for k in range(n)], -1)


@given(st.integers(1, 4), st.integers(1, 5), st.sampled_from([1, 2, 3, 7, 16, 45, 101]), st.integers(0, 2**31),
       st.sampled_from([np.float32, np.float64]), st.booleans(), st.integers(1, 3))
def test_diffcorr_matches_loki(nshot, nq, n, seed, dtype, pre_dif, delta):
    rng = np.random.default_rng(seed)
    shots = rng.normal(size=(nshot + delta, nq, n)).astype(dtype)
    before = shots.copy()
    dc = DiffCorr(shots, q_values=np.arange(nq), k=1.0, delta_shot=delta, pre_dif=pre_dif)
    ab = shots if pre_dif else shots[:-delta] - shots[delta:]
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    scale = float((ab.astype(np.float64) ** 2).sum(-1).max()) + 1e-30
    np.testing.assert_allclose(dc.autocorr(), _loki_auto(ab), rtol=0, atol=rtol * scale)
    qi = nq - 1
    want = _loki_cross(ab, qi)
    np.testing.assert_allclose(dc.crosscorr(qi), want, rtol=0, atol=rtol * scale)
    np.testing.assert_allclose(want, _direct_cross(ab, qi), rtol=0, atol=1e-4 * scale)  # the documented sum
    np.testing.assert_array_equal(shots, before)
    assert dc.autocorr().dtype == (np.float32 if dtype == np.float32 else np.float64)


def test_diffcorr_2d_and_errors():
    x = np.random.default_rng(0).normal(size=(3, 10))
    np.testing.assert_allclose(DiffCorr(x).autocorr(), _loki_auto(x), atol=1e-12)
    with pytest.raises(ValueError):
        DiffCorr(x).crosscorr(0)
    with pytest.raises(ValueError):
        DiffCorr(x[None]).crosscorr(5)
    with pytest.raises(ValueError):
        DiffCorr(x[None], q_values=[1.0, 2.0])
    with pytest.raises(ValueError):
        DiffCorr(x, pre_dif=False, delta_shot=3)
    with pytest.raises(TypeError):
        DiffCorr(x.astype(complex))
    u = np.array([[1, 5, 2]], np.uint16), np.array([[4, 1, 1]], np.uint16)
    d = DiffCorr(np.concatenate(u), pre_dif=False)
    np.testing.assert_allclose(d.shotsAB, [[-3.0, 4.0, 1.0]])  # no unsigned wrap-around
