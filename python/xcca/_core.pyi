"""Type stubs for the compiled module xcca._core (pybind11 over the C++ core)."""
from __future__ import annotations

def version() -> str: ...
def usable_cores() -> int: ...

# --- polar (issue 3) ---
import numpy as _np
from typing import Optional as _Optional

class PolarGrid:
    """Precomputed polar geometry (use xcca.PolarGrid)."""
    def __init__(self, cx: float, cy: float, radii: _np.ndarray, cos_phi: _np.ndarray, sin_phi: _np.ndarray,
                 height: int, width: int) -> None: ...
    @property
    def n_radii(self) -> int: ...
    @property
    def nphi(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def width(self) -> int: ...
    def remap(self, images: _np.ndarray, mask: _Optional[_np.ndarray], method: int, mask_mode: int, fill: float,
              out: _np.ndarray, out_mask: _Optional[_np.ndarray], n_threads: _Optional[int]) -> None:
        """images (N, H, W) native dtype, contiguous columns; mask (H, W) bool C-contiguous (True = valid) or None;
        method 0 nearest / 1 bilinear; mask_mode 0 strict / 1 renormalize; out (N, nr, nphi) C-contiguous float32
        (float64 for float64 / 64-bit integer images); out_mask (nr, nphi) bool or None."""
        ...

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
import numpy as _np
import numpy.typing as _npt

def pair_features(
    features: _npt.ArrayLike, method: str, n_threads: int | None = None
) -> tuple[_npt.NDArray[_np.int64], _npt.NDArray[_np.float64], _npt.NDArray[_np.int64]]: ...
def fold_project(
    rings: _npt.ArrayLike, fold: _npt.ArrayLike, valid: _npt.ArrayLike, n_threads: int | None = None
) -> tuple[_npt.NDArray[_np.float64], _npt.NDArray[_np.uint8]]: ...
def circle_fit(
    x: _npt.ArrayLike, y: _npt.ArrayLike, start: _npt.ArrayLike | None = None, max_iter: int = 100,
    tol: float = 1e-12,
) -> tuple[float, float, float, float, int, int]: ...


# --- pipeline (issue 6) ---
import numpy as _np6

def ring_outliers(
    values: _np6.ndarray, valid: _np6.ndarray, thresh: float, n_threads: int | None = None
) -> tuple[_np6.ndarray, _np6.ndarray]:
    """Per-row (last axis) modified z-score outliers over the valid finite samples of float32/float64 `values`
    (`valid` bool, True = valid, of the shape of `values` or of its trailing dimensions: a mask shared by the
    leading axes): returns (valid & ~outlier, outliers per row int64)."""

# ---- run correlator (xcca.runcorr drives these; see cpp/include/xcca/runcorr.hpp) ----
def runcorr_use_blas(zherk: object, cherk: object, zgemm: object, cgemm: object, name: str) -> dict: ...
def runcorr_reset_blas() -> dict: ...
def runcorr_blas_info() -> dict: ...
def runcorr_spectra(
    rings: _np.ndarray | None, mask: _np.ndarray | None, n_shots: int, nq: int, n: int, units: _np.ndarray, diff: bool,
    qsel: _np.ndarray, spec: _np.ndarray | None, mspec: _np.ndarray | None, dtype: str, n_threads: int | None
) -> int: ...
def runcorr_herk(spec: _np.ndarray, c0: int, c1: int, alpha: float, acc: _np.ndarray, n_threads: int | None,
                 lower: bool = False) -> None: ...
def runcorr_gemm(spec_a: _np.ndarray, spec_b: _np.ndarray, c0: int, c1: int, alpha: float, acc: _np.ndarray,
                 n_threads: int | None) -> None: ...
def runcorr_lag_sums(acc: _np.ndarray, n: int, upper: bool, pairs: _np.ndarray, out: _np.ndarray,
                     n_threads: int | None) -> None: ...
def runcorr_pooled_result(num: _np.ndarray, cnt: _np.ndarray, n: int, upper: bool, pairs: _np.ndarray,
                          jackknife: bool, corr: _np.ndarray, err: _np.ndarray | None, counts: _np.ndarray,
                          rep: _np.ndarray | None, n_threads: int | None) -> float: ...
def runcorr_per_shot(spec: _np.ndarray, mspec: _np.ndarray, n: int, c0: int, c1: int, pairs: _np.ndarray,
                     sum: _np.ndarray, nvalid: _np.ndarray, counts: _np.ndarray, n_threads: int | None) -> None: ...
# --- conic: rings of constant 2theta on a tilted detector (issue 11) ---
class ConicGrid:
    """Rings of constant 2theta on a tilted detector (use xcca.Geometry.polar_grid)."""
    def __init__(self, s: _np.ndarray, c: _np.ndarray, a: _np.ndarray, b: _np.ndarray, cx: float, cy: float,
                 ly: float, lx: float, solid_angle: bool, g: _np.ndarray, height: int, width: int,
                 single: bool = ...) -> None: ...
    @property
    def n_rings(self) -> int: ...
    @property
    def single(self) -> bool:
        """Whether the grid computes in float32 (then out is always float32)."""
        ...
    @property
    def nphi(self) -> int: ...
    def remap(self, images: _np.ndarray, mask: _Optional[_np.ndarray], method: int, mask_mode: int, fill: float,
              out: _np.ndarray, out_mask: _Optional[_np.ndarray], n_threads: _Optional[int]) -> None:
        """As PolarGrid.remap, out (N, nq, nphi)."""
        ...
    def remap_flat_dark(self, images: _np.ndarray, mask: _Optional[_np.ndarray], method: int, mask_mode: int,
                        fill: float, out: _np.ndarray, out_mask: _Optional[_np.ndarray], n_threads: _Optional[int],
                        dark_inv_flat: _np.ndarray) -> None:
        """As remap with every pixel read as (I - dark) * inv_flat (dark_inv_flat: float64 (H, W, 2))."""
        ...

# ---- CBF byte-offset decoder and MD5 (xcca.io uses these; see cpp/include/xcca/cbf.hpp) ----
def md5(data: bytes | bytearray | memoryview) -> bytes: ...
def cbf_byte_offset(data: bytes | bytearray | memoryview, offset: int, size: int, out: _np.ndarray,
                    expected_md5: bytes | None = ..., n_threads: int | None = ...
                    ) -> tuple[int, str, int, int, bytes | None]: ...
def cbf_byte_offset_bin_max(data: bytes | bytearray | memoryview, offset: int, size: int, height: int, width: int,
                            factor: int, binned: _np.ndarray, empty_rows: _np.ndarray, empty_cols: _np.ndarray,
                            expected_md5: bytes | None = ..., n_threads: int | None = ...
                            ) -> tuple[int, str, int, int, bytes | None]: ...
