"""Type stubs for the compiled module xcca._core (pybind11 over the C++ core)."""
from __future__ import annotations

def version() -> str: ...
def usable_cores() -> int: ...

# --- polar (issue 3) ---

# --- correlate (issue 4) ---

# --- pairing (issue 5) ---

# --- pipeline (issue 6) ---
import numpy as _np6

def ring_outliers(
    values: _np6.ndarray, valid: _np6.ndarray, thresh: float, n_threads: int | None = None
) -> tuple[_np6.ndarray, _np6.ndarray]:
    """Per-row (last axis) modified z-score outliers over the valid finite samples of float32/float64 `values`
    (`valid` bool, True = valid): returns (valid & ~outlier, outliers per row int64)."""
