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
