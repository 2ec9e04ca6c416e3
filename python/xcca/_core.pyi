"""Type stubs for the compiled module xcca._core (pybind11 over the C++ core)."""
from __future__ import annotations

def version() -> str: ...
def usable_cores() -> int: ...

# --- polar (issue 3) ---

# --- correlate (issue 4) ---

# --- pairing (issue 5) ---
import numpy as _np
import numpy.typing as _npt

def pair_features(
    features: _npt.ArrayLike, method: str, n_threads: int | None = None
) -> tuple[_npt.NDArray[_np.int64], _npt.NDArray[_np.float64], _npt.NDArray[_np.int64]]: ...
def fold_project(
    rings: _npt.ArrayLike, fold: _npt.ArrayLike, valid: _npt.ArrayLike, n_threads: int | None = None
) -> tuple[_npt.NDArray[_np.float64], _npt.NDArray[_np.uint8]]: ...
