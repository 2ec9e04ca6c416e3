"""Executable specification of every compiled kernel of xcca, in plain NumPy.

Each function here is the slow, obviously-right version of a compiled kernel; the tests compare the compiled kernel
against it on generated inputs. Nothing here is meant to be fast. Masks: True = valid pixel.
"""
from __future__ import annotations

import numpy as np

__all__: list[str] = []


# ===== binning and dilation (issue 2) =====


# ===== polar remap (issue 3) =====


# ===== correlations (issue 4) =====


# ===== ring fits, outliers and pairing (issue 5) =====


# ===== streaming pipeline: per-ring outliers (issue 6) =====


def ring_outliers(values, valid, thresh: float):
    """Specification of ``_core.ring_outliers``: for each ring (last axis), over the samples that are valid (True)
    and finite, median m and MAD = median(|x - m|) in float64; outliers are 0.6745·|x - m| / MAD > thresh (none
    when MAD = 0 or no sample is valid). Returns ``(valid & ~outlier, outliers per ring)``."""
    x = np.asarray(values, dtype=np.float64)
    v = np.asarray(valid, dtype=bool)
    out = np.zeros(x.shape, dtype=bool)
    for idx in np.ndindex(x.shape[:-1]):
        ok = v[idx] & np.isfinite(x[idx])
        if not ok.any():
            continue
        med = np.median(x[idx][ok])
        mad = np.median(np.abs(x[idx][ok] - med))
        if mad > 0:
            out[idx] = ok & (0.6745 * np.abs(x[idx] - med) / mad > thresh)
    return v & ~out, out.sum(axis=-1).astype(np.int64)


__all__ += ["ring_outliers"]
