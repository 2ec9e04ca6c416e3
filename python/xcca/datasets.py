"""Synthetic detector data for the demo, the tests and the benchmarks."""
from __future__ import annotations

import functools

import numpy as np

__all__ = ["pilatus6m", "pilatus_gap_mask", "PILATUS6M_SHAPE"]

#: (rows, columns) of a Pilatus 6M frame: 12 x 5 modules of 195 x 487 pixels with 17- and 7-pixel gaps.
PILATUS6M_SHAPE = (2527, 2463)
_MODULE = (195, 487)
_GAP = (17, 7)
_N_MODULES = (12, 5)


def pilatus_gap_mask(shape=PILATUS6M_SHAPE) -> np.ndarray:
    """The module layout of a Pilatus 6M: True = pixel on a module (valid), False = inter-module gap.

    Parameters
    ----------
    shape : (int, int)
        Frame shape (rows, columns); modules are laid out from the top-left corner.

    Returns
    -------
    ndarray of bool, shape `shape`
    """
    valid = np.zeros(shape, bool)
    for i in range(_N_MODULES[0]):
        y = i * (_MODULE[0] + _GAP[0])
        for j in range(_N_MODULES[1]):
            x = j * (_MODULE[1] + _GAP[1])
            valid[y:y + _MODULE[0], x:x + _MODULE[1]] = True
    return valid


@functools.lru_cache(maxsize=2)
def _pilatus6m(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    H, W = PILATUS6M_SHAPE
    cy, cx = 1263.5 + rng.uniform(-20, 20), 1231.5 + rng.uniform(-20, 20)  # beam centre (pixels)
    y = np.arange(H, dtype=np.float32)[:, None] - np.float32(cy)
    x = np.arange(W, dtype=np.float32)[None, :] - np.float32(cx)
    r = np.sqrt(y * y + x * x)
    # Smooth background: air scatter falling off with radius plus the water ring near 3.2 A.
    mean = 3.0 + 400.0 / (1.0 + (r / 60.0) ** 2) + 60.0 * np.exp(-0.5 * ((r - 720.0) / 70.0) ** 2)
    # Beamstop shadow: a disc at the centre and its arm to the right edge.
    shadow = (r < 45) | ((np.abs(y) < 12) & (x > 0))
    mean = np.where(shadow, 0.5, mean).astype(np.float64)
    img = rng.poisson(mean).astype(np.int32)

    # A few hundred sharp Bragg spots (Gaussian, sigma ~ 0.8 px) with intensities up to 7e5 counts.
    n_spots = int(rng.integers(300, 450))
    rs = rng.uniform(80, 1200, n_spots)
    phi = rng.uniform(0, 2 * np.pi, n_spots)
    peak = 10.0 ** rng.uniform(2.5, 5.85, n_spots)  # log-uniform, 300 .. 7e5 counts
    yy, xx = np.mgrid[-3:4, -3:4]
    for ri, p, a in zip(rs, phi, peak):
        sy, sx = cy + ri * np.sin(p), cx + ri * np.cos(p)
        iy, ix = int(round(sy)), int(round(sx))
        if not (3 <= iy < H - 3 and 3 <= ix < W - 3):
            continue
        s = rng.uniform(0.6, 1.0)
        blob = a * np.exp(-((yy + iy - sy) ** 2 + (xx + ix - sx) ** 2) / (2 * s * s))
        img[iy - 3:iy + 4, ix - 3:ix + 4] += blob.astype(np.int32)
    np.clip(img, 0, 700_000, out=img)

    img[~pilatus_gap_mask()] = -1
    # Bad pixels (-2): scattered dead pixels and one dead column segment.
    bad_y, bad_x = rng.integers(0, H, 200), rng.integers(0, W, 200)
    img[bad_y, bad_x] = np.where(img[bad_y, bad_x] >= 0, -2, img[bad_y, bad_x])
    img[430:600, 1500] = -2  # inside one module
    img.flags.writeable = False
    return img


def pilatus6m(seed: int = 0) -> np.ndarray:
    """A synthetic Pilatus 6M frame.

    2527 x 2463 int32: 12 x 5 modules separated by gaps marked -1, a few bad pixels marked -2, a beamstop shadow,
    a water ring, Poisson background and a few hundred sharp Bragg spots; valid values lie in 0 .. 7e5. The valid
    pixel mask (True = valid) is ``frame >= 0``.

    Parameters
    ----------
    seed : int
        Seed of the random generator; the same seed gives the same frame.

    Returns
    -------
    ndarray, shape (2527, 2463), int32
        A fresh, writeable array.
    """
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {seed!r}")
    return _pilatus6m(int(seed)).copy()
