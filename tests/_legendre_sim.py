"""Point scatterers in random 3-D orientations on the Ewald sphere, and their analytic Kam coefficients B_l.

Used by test_legendre.py (the end-to-end physical check) and bench/legendre.py (the README's per-l agreement).
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation
from scipy.special import eval_legendre, spherical_jn


def object_atoms(seed: int = 3, n_atoms: int = 5, size: float = 3.0) -> np.ndarray:
    """A rigid object: n_atoms point scatterers (unit form factors) within a box of `size` Angstrom."""
    rng = np.random.default_rng(seed)
    r = rng.uniform(-size / 2, size / 2, size=(n_atoms, 3))
    return r - r.mean(0)


def analytic_B(atoms: np.ndarray, q: np.ndarray, l_max: int) -> np.ndarray:
    """Kam's B_l(q, q') of |F|^2 for point scatterers, averaged over uniform 3-D orientations.

    With I(q) = sum_jk exp(i q . r_jk) and the plane-wave expansion, I_lm(q) = 4 pi i^l sum_jk j_l(q r_jk)
    Y_lm*(r_jk^), and <I(R q1) I(R q2)>_R = sum_l P_l(cos psi) / (4 pi) sum_m I_lm(q1) I_lm*(q2), so
    B_l(q1, q2) = (2l + 1) sum_{jk, j'k'} j_l(q1 r_jk) j_l(q2 r_j'k') P_l(r_jk^ . r_j'k^).
    Returns (l_max + 1, nq, nq).
    """
    d = (atoms[:, None, :] - atoms[None, :, :]).reshape(-1, 3)
    r = np.linalg.norm(d, axis=1)
    u = np.where(r[:, None] > 0, d / np.where(r > 0, r, 1)[:, None], 0.0)
    cosg = np.clip(u @ u.T, -1, 1)
    out = np.empty((l_max + 1, q.size, q.size))
    for l in range(l_max + 1):
        J = spherical_jn(l, np.outer(q, r))  # (nq, npairs); j_l(0) = delta_l0
        P = eval_legendre(l, cosg)
        if l == 0:
            P = np.ones_like(P)  # zero vectors: direction irrelevant for l = 0
        out[l] = (2 * l + 1) * J @ P @ J.T
    return out


def simulate_rings(atoms: np.ndarray, q: np.ndarray, wavelength: float, nphi: int, n_shots: int,
                   seed: int = 0, chunk: int = 256) -> np.ndarray:
    """|F(q)|^2 on the Ewald sphere for rings q (1/Angstrom) and nphi azimuths, one random rotation per shot.

    q vector of ring q at azimuth phi: q (cos t cos phi, cos t sin phi, -sin t), t = arcsin(q lambda / 4 pi).
    Returns (n_shots, nq, nphi) float64.
    """
    t = np.arcsin(q * wavelength / (4 * np.pi))
    phi = 2 * np.pi * np.arange(nphi) / nphi
    qv = q[:, None, None] * np.stack([np.cos(t)[:, None] * np.cos(phi), np.cos(t)[:, None] * np.sin(phi),
                                      -np.sin(t)[:, None] * np.ones_like(phi)], axis=-1)  # (nq, nphi, 3)
    rots = Rotation.random(n_shots, random_state=seed).as_matrix()
    out = np.empty((n_shots, q.size, nphi))
    for s0 in range(0, n_shots, chunk):
        R = rots[s0:s0 + chunk]
        ra = np.einsum("sab,jb->sja", R, atoms)  # rotated atoms
        ph = np.einsum("qpa,sja->sqpj", qv, ra)
        F = np.exp(1j * ph).sum(-1)
        out[s0:s0 + chunk] = F.real ** 2 + F.imag ** 2
    return out


def mean_cross_correlation(rings: np.ndarray, blocks: int = 10):
    """C(q, q', Delta) = <I(q, phi) I(q', phi + Delta)>_{phi, shots}, its standard error from `blocks` shot blocks,
    and the block means. Returns (C (nq, nq, n), error (nq, nq, n), block means (K, nq, nq, n))."""
    n_shots, nq, n = rings.shape
    A = np.fft.rfft(rings, axis=-1)
    idx = np.array_split(np.arange(n_shots), blocks)
    bm = np.empty((blocks, nq, nq, n))
    for k, ii in enumerate(idx):
        S = np.einsum("sqn,spn->qpn", np.conj(A[ii]), A[ii]) / len(ii)
        bm[k] = np.fft.irfft(S, n=n, axis=-1) / n
    C = bm.mean(0)
    err = bm.std(0, ddof=1) / np.sqrt(blocks)
    return C, err, bm
