"""Synthetic correlated-scattering runs: gold nanoparticles in solvent, as seen by an XFEL area detector.

Each shot holds tens of small gold nanocrystals (fcc) in random orientations. The Bragg spots are placed by the 3-D
geometry: the incident beam runs along +z with wave number k = 2π/λ, a reflection g lights up when it lies on the
Ewald sphere |k ẑ + g| = k (within the rocking width of a small crystal, :data:`EXCITATION_WIDTH`), and it lands on
the detector at the azimuth of g. Every crystal is oriented so that two of its 111 reflections sit exactly on the
Ewald sphere (the Bragg condition for both; angle ψ between them with cos ψ = +1/3 or -1/3, half of the crystals
each); its other 111 and 200 reflections appear only as far as their excitation error allows. On the detector the
two 111 spots are Δφ apart with cos ψ = cos²θ cos Δφ + sin²θ (θ the Bragg angle of the ring), i.e. Δφ = 73.9° and
116.3° for the default geometry rather than the flat-Ewald 70.5°/109.5° -- so the difference correlation of the 111
ring against ``xcca.cos_psi`` peaks at cos ψ = ±1/3, the fcc 111-111 values. (Friedel mates are not both on the
Ewald sphere, so there is no 180° peak from single crystals.) On top of that:
On top of that:

- a broad solvent ring and a smooth background;
- a detector/beam anisotropy ``1 + a2 cos 2(φ - φ2) + a1 cos(φ - φ1)`` whose amplitudes and angles fluctuate from
  shot to shot (polarisation and beam-pointing jitter) -- the artefact that pairing similar shots cancels;
- a shot-to-shot intensity (pulse energy) fluctuation;
- Poisson counting noise, a few hot pixels and, now and then, one large crystallite's sharp bright spot (what the
  per-ring outlier removal is for);
- horizontal and vertical panel gaps and a beamstop with its holder, which read 0 and are False in the mask
  (True = valid pixel, LOKI's convention);
- optionally corrupt frames (all zero or NaN) to exercise the pipeline's error handling.

Geometry: flat detector normal to the beam at ``distance`` (m), square pixels of ``pixel_size`` (m), centre
``(x, y)`` in pixels (x along columns). ``q = 4π sin(θ)/λ`` with ``2θ = atan(r·pixel_size/distance)``; q in 1/Å for
λ in Å.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["RunGeometry", "q_of_radius", "radius_of_q", "simulate_frames", "simulate_run", "ewald_vector",
           "crystal_spots", "AU_Q111", "AU_Q200", "EXCITATION_WIDTH"]

_log = logging.getLogger(__name__)

#: Gold (fcc, a = 4.078 Å) reflections in 1/Å.
AU_A = 4.078
AU_Q111 = 2 * math.pi * math.sqrt(3.0) / AU_A
AU_Q200 = 2 * math.pi * 2.0 / AU_A
_Q_SOLVENT = 2.0  # water-like solvent ring
#: Rocking width (Gaussian sigma of the excitation error, 1/Å) of the simulated nanocrystals' reflections.
EXCITATION_WIDTH = 0.02

# Reciprocal-lattice directions of the fcc 111 and 200 reflections (unit vectors, crystal frame).
_G111 = np.array([[a, b, c] for a in (1, -1) for b in (1, -1) for c in (1, -1)], dtype=np.float64) / math.sqrt(3)
_G200 = np.vstack([np.eye(3), -np.eye(3)])


def _frame(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Orthonormal frame (3, 3) (rows) whose first axis is u and whose second lies in the (u, v) plane."""
    e1 = u / np.linalg.norm(u)
    e2 = v - (v @ e1) * e1
    e2 /= np.linalg.norm(e2)
    return np.stack([e1, e2, np.cross(e1, e2)])


def ewald_vector(q: float, wavelength: float, phi: float) -> np.ndarray:
    """The scattering vector (3,) of modulus `q` (1/Å) on the Ewald sphere at detector azimuth `phi` (radians).

    Parameters
    ----------
    q : float
        Modulus of the scattering vector, 1/Å.
    wavelength : float
        Wavelength, Å. The beam runs along +z; the Ewald sphere is |k ẑ + q| = k with k = 2π/λ.
    phi : float
        Detector azimuth (radians, from +x towards +y).

    Returns
    -------
    ndarray, shape (3,)
        (q cos θ cos φ, q cos θ sin φ, -q sin θ) with sin θ = qλ/4π.
    """
    st = q * wavelength / (4 * math.pi)
    if not 0 <= st <= 1:
        raise ValueError(f"q = {q} 1/Å is beyond 4π/λ for wavelength {wavelength} Å")
    ct = math.sqrt(1 - st * st)
    return q * np.array([ct * math.cos(phi), ct * math.sin(phi), -st])


def q_of_radius(r, wavelength: float, pixel_size: float, distance: float) -> np.ndarray:
    """Momentum transfer ``q = 4π sin(θ)/λ`` at detector radius ``r`` (pixels) for a flat detector.

    Parameters
    ----------
    r : array_like
        Radii in pixels.
    wavelength : float
        Wavelength (Å gives q in 1/Å).
    pixel_size, distance : float
        Pixel size and sample-detector distance, same length unit.
    """
    two_theta = np.arctan(np.asarray(r, dtype=np.float64) * pixel_size / distance)
    return 4 * np.pi * np.sin(two_theta / 2) / wavelength


def radius_of_q(q, wavelength: float, pixel_size: float, distance: float) -> np.ndarray:
    """Inverse of :func:`q_of_radius`: the detector radius where momentum transfer `q` lands.

    Parameters
    ----------
    q : array_like
        Momentum transfer (1/Å for λ in Å).
    wavelength : float
        Wavelength.
    pixel_size, distance : float
        Pixel size and sample-detector distance, same length unit.

    Returns
    -------
    ndarray
        Radii in pixels.
    """
    s = np.asarray(q, dtype=np.float64) * wavelength / (4 * np.pi)
    if np.any(s > 1) or np.any(s < 0):
        raise ValueError("q·λ/4π must lie in [0, 1]")
    return np.tan(2 * np.arcsin(s)) * distance / pixel_size


def crystal_spots(phi0, cos_psi_sign, wavelength: float, *, flip=None, width: float = EXCITATION_WIDTH
                  ) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """Detector azimuths and excitation weights of the 111 and 200 reflections of oriented gold nanocrystals.

    Crystal i is rotated so that its 111 reflections [111] and [11-1] (``cos_psi_sign[i] > 0``, cos ψ = +1/3) or
    [111] and [1-1-1] (cos ψ = -1/3) both lie exactly on the Ewald sphere, the first at azimuth ``phi0[i]``, the
    second at ``phi0[i] ± Δφ`` with cos Δφ = (cos ψ - sin²θ) / cos²θ (the sign from `flip`).

    Parameters
    ----------
    phi0 : array_like, shape (n,)
        Azimuth (radians) of each crystal's first 111 spot.
    cos_psi_sign : array_like, shape (n,)
        Sign of cos ψ of the pair of 111 reflections put on the Ewald sphere.
    wavelength : float
        Wavelength in Å.
    flip : array_like of bool, shape (n,), optional
        Put the second spot at ``phi0 - Δφ`` instead of ``phi0 + Δφ``.
    width : float
        Rocking width (1/Å): a reflection of excitation error s = |k ẑ + g| - k has weight exp(-s²/2width²).

    Returns
    -------
    dict
        ``{"111": (phi, weight), "200": (phi, weight)}`` with arrays of shape (n, 8) and (n, 6): azimuth (radians,
        in [0, 2π)) and weight (1 on the Ewald sphere) of every reflection of the family.
    """
    phi0 = np.atleast_1d(np.asarray(phi0, dtype=np.float64))
    sign = np.broadcast_to(np.asarray(cos_psi_sign, dtype=np.float64), phi0.shape)
    flip = np.zeros(phi0.shape, bool) if flip is None else np.broadcast_to(np.asarray(flip, bool), phi0.shape)
    k = 2 * math.pi / wavelength
    st = AU_Q111 * wavelength / (4 * math.pi)
    out = {"111": ([], []), "200": ([], [])}
    for p0, sg, fl in zip(phi0, sign, flip):
        c = 1 / 3 if sg > 0 else -1 / 3
        dphi = math.acos((c - st * st) / (1 - st * st)) * (-1 if fl else 1)
        g1, g2 = _G111[0], _G111[1] if sg > 0 else _G111[3]
        t1 = ewald_vector(AU_Q111, wavelength, p0) / AU_Q111
        t2 = ewald_vector(AU_Q111, wavelength, p0 + dphi) / AU_Q111
        rot = _frame(t1, t2).T @ _frame(g1, g2)
        for fam, dirs, q in (("111", _G111, AU_Q111), ("200", _G200, AU_Q200)):
            g = q * dirs @ rot.T
            s = np.linalg.norm(g + np.array([0.0, 0.0, k]), axis=1) - k
            out[fam][0].append(np.arctan2(g[:, 1], g[:, 0]) % (2 * np.pi))
            out[fam][1].append(np.exp(-0.5 * (s / width) ** 2))
    return {fam: (np.reshape(a, (len(phi0), -1)), np.reshape(w, (len(phi0), -1)))
            for fam, (a, w) in out.items()}


@dataclass(frozen=True)
class RunGeometry:
    """Geometry and content of a simulated run (all lengths in metres, wavelength in Å, q in 1/Å).

    Parameters
    ----------
    shape : (int, int)
        Detector shape (rows, columns).
    center : (float, float)
        Beam centre (x, y) in pixels (x along columns).
    wavelength : float
        Wavelength in Å.
    pixel_size : float
        Square pixel size in metres.
    distance : float
        Sample-detector distance in metres (flat detector normal to the beam).
    n_particles : float
        Mean number of nanocrystals per shot (Poisson).
    background : float
        Mean counts of the smooth background.
    ring_counts : float
        Peak counts of the 111 powder ring.
    spot_counts : float
        Peak counts of one nanocrystal's Bragg spot.
    extra : dict
        Free-form extra parameters (stored, not used by the model).
    """

    shape: Tuple[int, int] = (512, 512)
    center: Tuple[float, float] = (261.3, 248.7)  # (x, y), deliberately off the image centre
    wavelength: float = 1.3
    pixel_size: float = 100e-6
    distance: float = 0.0225
    n_particles: float = 40.0  # mean number of nanocrystals per shot (Poisson)
    background: float = 20.0  # mean counts of the smooth background
    ring_counts: float = 60.0  # peak counts of the 111 powder ring
    spot_counts: float = 12.0  # peak counts of one nanocrystal's Bragg spot
    extra: Dict[str, float] = field(default_factory=dict)

    @property
    def r111(self) -> float:
        """Detector radius (pixels) of the Au 111 ring."""
        return float(radius_of_q(AU_Q111, self.wavelength, self.pixel_size, self.distance))

    @property
    def r200(self) -> float:
        """Detector radius (pixels) of the Au 200 ring."""
        return float(radius_of_q(AU_Q200, self.wavelength, self.pixel_size, self.distance))

    @property
    def r_solvent(self) -> float:
        """Detector radius (pixels) of the solvent ring (q = 2 1/Å)."""
        return float(radius_of_q(_Q_SOLVENT, self.wavelength, self.pixel_size, self.distance))

    def q(self, r) -> np.ndarray:
        """Momentum transfer at detector radii.

        Parameters
        ----------
        r : array_like
            Radii in pixels.

        Returns
        -------
        ndarray
            q in 1/Å.
        """
        return q_of_radius(r, self.wavelength, self.pixel_size, self.distance)


def _detector_mask(geom: RunGeometry) -> np.ndarray:
    h, w = geom.shape
    cx, cy = geom.center
    mask = np.ones((h, w), dtype=bool)
    gap = max(2, w // 64)
    # Panel gaps: one vertical and one horizontal strip (a 2x2-module detector) and two extra strips further out.
    mask[:, int(w * 0.47):int(w * 0.47) + gap] = False
    mask[int(h * 0.53):int(h * 0.53) + gap, :] = False
    mask[int(h * 0.2):int(h * 0.2) + gap // 2, :] = False
    yy, xx = np.indices((h, w))
    # Beamstop (a disk) and its holder (a rod from the disk to the right edge).
    r_bs = 0.06 * min(h, w)
    mask[(xx - cx) ** 2 + (yy - cy) ** 2 < r_bs**2] = False
    mask[(np.abs(yy - cy) < r_bs / 3) & (xx > cx)] = False
    return mask


class _Model:
    """Precomputed per-pixel geometry for fast frame synthesis."""

    def __init__(self, geom: RunGeometry, n_phi_bins: int = 4096):
        h, w = geom.shape
        cx, cy = geom.center
        yy, xx = np.indices((h, w), dtype=np.float64)
        r = np.hypot(xx - cx, yy - cy)
        phi = np.arctan2(yy - cy, xx - cx) % (2 * np.pi)
        self.geom = geom
        self.n_phi_bins = n_phi_bins
        self.phi_bin = np.minimum((phi * n_phi_bins / (2 * np.pi)).astype(np.int64), n_phi_bins - 1).ravel()
        self.cos1, self.sin1 = np.cos(phi).ravel(), np.sin(phi).ravel()
        self.cos2, self.sin2 = np.cos(2 * phi).ravel(), np.sin(2 * phi).ravel()
        width = max(1.5, 0.012 * min(h, w))  # radial width (sigma) of the Bragg rings in pixels
        g111 = np.exp(-0.5 * ((r - geom.r111) / width) ** 2).ravel()
        g200 = np.exp(-0.5 * ((r - geom.r200) / width) ** 2).ravel()
        solvent = np.exp(-0.5 * ((r - geom.r_solvent) / (6 * width)) ** 2).ravel()
        bg = np.exp(-r / (0.6 * min(h, w))).ravel()
        self.g111, self.g200 = g111, g200
        self.iso = geom.background * bg + 0.8 * geom.ring_counts * solvent + geom.ring_counts * (g111 + 0.5 * g200)
        self.mask = _detector_mask(geom)
        self.flat_mask = self.mask.ravel()
        self.phi_grid = (np.arange(n_phi_bins) + 0.5) * 2 * np.pi / n_phi_bins

    def spots(self, pos: np.ndarray, weight: np.ndarray, sigma_deg: float) -> np.ndarray:
        """Angular profile (n_phi_bins,) of spots at azimuths `pos` (radians) with amplitudes `weight`."""
        # Histogram the spot positions on the φ grid, then convolve with the spot shape (circular FFT).
        pos = np.asarray(pos, dtype=np.float64).ravel() % (2 * np.pi)
        hist = np.bincount((pos * self.n_phi_bins / (2 * np.pi)).astype(np.int64) % self.n_phi_bins,
                           weights=np.asarray(weight, dtype=np.float64).ravel(), minlength=self.n_phi_bins)
        d = (self.phi_grid - self.phi_grid[0] + np.pi) % (2 * np.pi) - np.pi
        kern = np.exp(-0.5 * (d / math.radians(sigma_deg)) ** 2)
        return np.fft.irfft(np.fft.rfft(hist) * np.fft.rfft(kern), self.n_phi_bins)

    def frame(self, rng: np.random.Generator, dtype) -> np.ndarray:
        g = self.geom
        scale = rng.lognormal(0.0, 0.2)  # pulse-energy fluctuation
        a2, p2 = rng.normal(0.15, 0.05), rng.normal(0.0, 0.3)
        a1, p1 = rng.normal(0.05, 0.03), rng.uniform(0, 2 * np.pi)
        aniso = (1 + a2 * (self.cos2 * math.cos(2 * p2) + self.sin2 * math.sin(2 * p2))
                 + a1 * (self.cos1 * math.cos(p1) + self.sin1 * math.sin(p1)))
        npart = rng.poisson(g.n_particles)
        phi0 = rng.uniform(0, 2 * np.pi, npart)
        amp = rng.uniform(0.5, 1.5, npart)
        sp = crystal_spots(phi0, rng.choice((-1.0, 1.0), npart), g.wavelength, flip=rng.random(npart) < 0.5)
        (p111, w111), (p200, w200) = sp["111"], sp["200"]
        s111 = self.spots(p111, amp[:, None] * w111, 3.0)[self.phi_bin]
        s200 = self.spots(p200, amp[:, None] * w200, 3.0)[self.phi_bin]
        expected = scale * aniso * (self.iso + g.spot_counts * (self.g111 * s111 + 0.5 * self.g200 * s200))
        if rng.random() < 0.2:  # a large crystallite: one sharp, bright spot on the 111 ring
            big = self.spots(rng.uniform(0, 2 * np.pi, 1), np.ones(1), 0.4)[self.phi_bin]
            expected = expected + 20 * g.ring_counts * self.g111 * big
        counts = rng.poisson(np.maximum(expected, 0.0))
        hot = rng.integers(0, counts.size, 5)  # hot pixels
        counts[hot] = np.iinfo(np.uint16).max // 4
        counts = counts.astype(dtype)
        counts[~self.flat_mask] = 0
        return counts.reshape(g.shape)


def simulate_frames(
    n_frames: int, geometry: Optional[RunGeometry] = None, *, seed: int = 0, dtype=np.uint16
) -> Iterable[np.ndarray]:
    """Yield ``n_frames`` simulated frames (H, W) one at a time (nothing is held for the whole run).

    Parameters
    ----------
    n_frames : int
        Number of shots.
    geometry : RunGeometry, optional
        Detector geometry and sample; default ``RunGeometry()`` (512×512).
    seed : int
        Random seed: the same seed gives the same run.
    dtype : dtype
        Output dtype of the counts (uint16, int32, float32, ...).
    """
    if int(n_frames) != n_frames or n_frames < 0:
        raise ValueError(f"n_frames must be a non-negative integer, got {n_frames}")
    geom = geometry or RunGeometry()
    model = _Model(geom)
    rng = np.random.default_rng(seed)
    for _ in range(int(n_frames)):
        yield model.frame(rng, dtype)


def simulate_run(
    path: Union[str, Path],
    n_frames: int = 100,
    geometry: Optional[RunGeometry] = None,
    *,
    seed: int = 0,
    dataset: str = "/entry/data/data",
    dtype=np.uint16,
    corrupt: Sequence[int] = (),
    compression: Optional[str] = "lzf",
) -> Path:
    """Write a simulated gold-nanoparticle run into an HDF5 file.

    The file holds ``dataset`` (N, H, W) chunked one frame per chunk, ``/entry/mask`` (bool, True = valid pixel)
    and the geometry as attributes of ``/entry`` (``center_x``, ``center_y``, ``wavelength`` (Å), ``pixel_size``
    and ``distance`` (m), ``r111``, ``r200``, ``r_solvent`` (pixels), ``q111``, ``q200`` (1/Å), ``corrupt``).

    Parameters
    ----------
    path : str or Path
        Output file (overwritten).
    n_frames : int
        Number of shots.
    geometry : RunGeometry, optional
        Geometry and sample (default 512×512).
    seed : int
        Random seed.
    dataset : str
        HDF5 path of the frame stack.
    dtype : dtype
        Stored dtype (uint16 by default, like integrating detectors; float32 allows NaN-corrupt frames).
    corrupt : sequence of int
        Frame indices to corrupt: all zero, or all NaN for float dtypes when the index is odd.
    compression : str or None
        h5py compression filter for the stack ("lzf", "gzip" or None).

    Returns
    -------
    Path
        The written file.
    """
    import h5py

    geom = geometry or RunGeometry()
    path = Path(path)
    n_frames = int(n_frames)
    h, w = geom.shape
    corrupt = sorted({int(i) for i in corrupt})
    for i in corrupt:
        if not 0 <= i < n_frames:
            raise ValueError(f"corrupt frame index {i} outside 0..{n_frames - 1}")
    dtype = np.dtype(dtype)
    with h5py.File(path, "w") as f:
        dset = f.create_dataset(dataset, shape=(n_frames, h, w), dtype=dtype, chunks=(1, h, w),
                                compression=compression)
        for i, frame in enumerate(simulate_frames(n_frames, geom, seed=seed, dtype=dtype)):
            if i in corrupt:
                frame = np.full_like(frame, np.nan) if (dtype.kind == "f" and i % 2) else np.zeros_like(frame)
            dset[i] = frame
        entry = f.require_group("/entry")
        entry.create_dataset("mask", data=_detector_mask(geom))
        attrs = dict(center_x=geom.center[0], center_y=geom.center[1], wavelength=geom.wavelength,
                     pixel_size=geom.pixel_size, distance=geom.distance, r111=geom.r111, r200=geom.r200,
                     r_solvent=geom.r_solvent, q111=AU_Q111, q200=AU_Q200, seed=seed)
        for k, v in attrs.items():
            entry.attrs[k] = v
        entry.attrs["corrupt"] = np.asarray(corrupt, dtype=np.int64)
    _log.info("simulated %d frames %dx%d into %s", n_frames, h, w, path)
    return path
