"""LOKI-compatible API: existing LOKI scripts switch to xcca by changing their import lines.

Each class and function reproduces LOKI's signature and return values (Python 3); every deliberate difference is
documented in its docstring. Masks: True = valid pixel, as in LOKI.
"""
from __future__ import annotations

import numpy as np

__all__: list[str] = []


# ===== InterpSimple (issue 3) =====


# ===== DiffCorr (issue 4) =====


# ===== fit_periodic, pair_fits, is_outlier, remove_peaks (issue 5) =====


# ===== RingFit (issue 6) =====
