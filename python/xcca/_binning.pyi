"""Type stubs for the compiled module xcca._binning (Cython).

Low-level kernels over one C-contiguous native-endian 2-D image and a band of output rows [r0, r1); use
xcca.bin_max / bin_sum / dilate_max instead. Masks are uint8 views of bool arrays, 1 = valid pixel.
Supported image dtypes: uint8, uint16, int16, int32, uint32, int64, float32, float64.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import numpy.typing as npt

def bin_max_rows(
    img: npt.NDArray[np.generic],
    mask: Optional[npt.NDArray[np.uint8]],
    out: npt.NDArray[np.generic],
    valid: Optional[npt.NDArray[np.uint8]],
    fy: int,
    fx: int,
    r0: int,
    r1: int,
) -> None: ...
def bin_sum_rows(
    img: npt.NDArray[np.generic],
    mask: Optional[npt.NDArray[np.uint8]],
    out: npt.NDArray[np.int64] | npt.NDArray[np.float64],
    valid: Optional[npt.NDArray[np.uint8]],
    fy: int,
    fx: int,
    r0: int,
    r1: int,
) -> None: ...
def dilate_max_rows(
    img: npt.NDArray[np.generic],
    mask: Optional[npt.NDArray[np.uint8]],
    out: npt.NDArray[np.generic],
    k: int,
    r0: int,
    r1: int,
) -> None: ...
def empty_lines(
    img: npt.NDArray[np.generic],
    mask: Optional[npt.NDArray[np.uint8]],
    empty_rows: npt.NDArray[np.uint8],
    empty_cols: npt.NDArray[np.uint8],
) -> None: ...
def resample_max(
    src: npt.NDArray[np.generic],
    valid: npt.NDArray[np.uint8],
    y0: npt.NDArray[np.intp],
    y1: npt.NDArray[np.intp],
    x0: npt.NDArray[np.intp],
    x1: npt.NDArray[np.intp],
    out: npt.NDArray[np.generic],
    out_valid: npt.NDArray[np.uint8],
) -> None: ...
def lut_rgb(
    t: npt.NDArray[np.float64],
    valid: npt.NDArray[np.uint8],
    lut: npt.NDArray[np.uint8],
    color: npt.NDArray[np.uint8],
    out: npt.NDArray[np.uint8],
) -> bool: ...
def _row_scan_switch(k: Optional[int] = None) -> int: ...
def _stream_min_bytes(n: Optional[int] = None) -> int: ...
