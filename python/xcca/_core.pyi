"""Type stubs for the compiled module xcca._core (pybind11 over the C++ core)."""
from __future__ import annotations

def version() -> str: ...
def usable_cores() -> int: ...

# --- polar (issue 3) ---

# --- correlate (issue 4) ---
import numpy as np
from typing import Optional

def correlate(
    rings: np.ndarray,
    mask: Optional[np.ndarray],
    shot_pairs: Optional[np.ndarray],
    q_pairs: Optional[np.ndarray],
    normalize: Optional[str],
    average: bool,
    raw_sums: bool,
    out: np.ndarray,
    n_threads: Optional[int],
) -> None: ...
def mask_pair_counts(ma: np.ndarray, mb: np.ndarray) -> np.ndarray: ...

# --- pairing (issue 5) ---
