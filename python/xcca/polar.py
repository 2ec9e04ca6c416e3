"""Polar remap of detector images (one row per radius, nphi columns around the ring), masks and gap filling.

Masks follow LOKI's convention: True = valid pixel.
"""
from __future__ import annotations

import logging
import numbers
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from . import _checks, _core

__all__: list[str] = ["PolarGrid", "fill_masked"]

_log = logging.getLogger(__name__)

_METHODS = {"nearest": 0, "bilinear": 1}
_MASK_MODES = {"strict": 0, "renormalize": 1}


def _finite_float(value, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    return v


def _positive_int(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    v = int(value)
    if v <= 0:
        raise ValueError(f"{name} must be >= 1, got {v}")
    return v


def _as_radii(radii, nphi: int = 1) -> np.ndarray:
    if isinstance(radii, tuple) and len(radii) == 2 and all(np.ndim(r) == 0 for r in radii):
        rmin, rmax = (_finite_float(r, "radii (rmin, rmax)") for r in radii)
        if not rmax > rmin:
            raise ValueError(f"radii (rmin, rmax) = ({rmin:g}, {rmax:g}) gives no radius: rmax must be > rmin")
        count = float(np.ceil(rmax - rmin))
        # radii table and one output frame (float32 samples and the bool polar mask), before anything is allocated
        _checks.check_memory(8.0 * count + 5.0 * count * nphi,
                             f"radii=({rmin:g}, {rmax:g}) ({count:.3g} radii) x nphi={nphi}")
        r = np.arange(rmin, rmax, dtype=np.float64)
    else:
        r = np.asarray(radii)
        if r.dtype.kind not in "iuf":
            raise TypeError(f"radii must be real numbers, got dtype {r.dtype}")
        r = r.astype(np.float64)
    if r.ndim != 1:
        raise ValueError(f"radii must be 1-D (or a tuple (rmin, rmax)), got shape {r.shape}")
    if not np.all(np.isfinite(r)):
        raise ValueError("radii must be finite")
    if np.any(r < 0):
        raise ValueError("radii must be >= 0")
    if r.size == 0:
        raise ValueError("radii is empty: give at least one radius")
    return np.ascontiguousarray(r)


class PolarGrid:
    r"""Polar sampling geometry, validated and precomputed once and reused for any number of frames.

    Sample ``(i, j)`` is taken at column ``x = cx + r_i cos(phi_j)`` and row ``y = cy + r_i sin(phi_j)`` with
    ``phi_j = phi0 + 2 pi j / nphi``, ``j = 0 .. nphi-1`` (endpoint excluded). Pixel ``(row, col)`` has its centre at
    integer coordinates; ``cx`` runs along columns (the fast axis), ``cy`` along rows::

              col 0   1   2   ... x ->            phi = pi/2 (+y, down the rows)
        row 0   +---+---+---+                              |
            1   +---+-(cx,cy)--> phi = 0 (+x)      pi -----o----- 0
            2   +---+---+---+                              |
            y                                         phi = 3pi/2
            v

    Parameters
    ----------
    center : (float, float)
        ``(cx, cy)`` in pixels: column, then row. Must be finite; may lie outside the image.
    radii : array_like of float, or tuple (rmin, rmax)
        1-D radii ``r_i >= 0`` in pixels (one output row each). A tuple of two numbers means
        ``np.arange(rmin, rmax)`` (LOKI's ``qRmin``/``qRmax``); pass a list or array for explicit radii.
    nphi : int
        Number of angles (>= 1).
    shape : (int, int)
        Image shape ``(H, W)`` the grid will be applied to.
    phi0 : float, optional
        Angle of column 0 in radians (default 0: the +x direction).

    Notes
    -----
    The angle tables and, per tile of the output, whether every sample is inside the image are precomputed here;
    :meth:`remap` computes the coordinates from the per-radius and per-angle tables on the fly, so no coordinate
    map is read or allocated per call.
    """

    def __init__(self, center: Sequence[float], radii, nphi: int, shape: Sequence[int], phi0: float = 0.0):
        try:
            cx, cy = center
        except (TypeError, ValueError):
            raise ValueError(f"center must be a pair (cx, cy), got {center!r}") from None
        self._cx = _finite_float(cx, "center[0] (cx)")
        self._cy = _finite_float(cy, "center[1] (cy)")
        self._nphi = _positive_int(nphi, "nphi")
        try:
            h, w = shape
        except (TypeError, ValueError):
            raise ValueError(f"shape must be a pair (H, W), got {shape!r}") from None
        self._shape = (_positive_int(h, "shape[0]"), _positive_int(w, "shape[1]"))
        self._phi0 = _finite_float(phi0, "phi0")
        # Angle tables (phi, cos, sin in float64, float32 copies in the core): refuse what cannot fit up front.
        _checks.check_memory(40.0 * self._nphi, f"nphi={self._nphi}")
        self._radii = _as_radii(radii, self._nphi)
        # One output frame (float32 samples and the bool polar mask) must fit.
        _checks.check_memory(5.0 * len(self._radii) * self._nphi,
                             f"radii ({len(self._radii)} radii) x nphi={self._nphi} (one polar frame)")
        self._radii.setflags(write=False)
        # Angle tables from NumPy (the same expression as xcca.reference.polar_angles), passed to the core.
        self._phi = self._phi0 + (2.0 * np.pi * np.arange(self._nphi, dtype=np.float64)) / self._nphi
        self._phi.setflags(write=False)
        self._grid = _core.PolarGrid(self._cx, self._cy, self._radii, np.cos(self._phi), np.sin(self._phi),
                                     self._shape[0], self._shape[1])
        # Without a pixel mask, polar_mask depends on the geometry, the method and the mask mode only (renormalize keeps
        # edge samples with enough weight inside): computed by the first such
        # call, then shared (read-only) so that later calls skip writing it (nr * nphi bytes: ~1 ms of the 900 x 5000
        # benchmark).
        self._valid_cache = {}

    @property
    def center(self) -> Tuple[float, float]:
        """``(cx, cy)`` in pixels."""
        return (self._cx, self._cy)

    @property
    def radii(self) -> np.ndarray:
        """Radii (read-only float64 array, one per output row)."""
        return self._radii

    @property
    def phi(self) -> np.ndarray:
        """Angles ``phi_j`` in radians (read-only float64 array, one per output column)."""
        return self._phi

    @property
    def nphi(self) -> int:
        """Number of angular samples per ring."""
        return self._nphi

    @property
    def shape(self) -> Tuple[int, int]:
        """Image shape ``(H, W)``."""
        return self._shape

    @property
    def polar_shape(self) -> Tuple[int, int]:
        """``(nr, nphi)``."""
        return (len(self._radii), self._nphi)

    def __repr__(self) -> str:
        return (f"PolarGrid(center={self.center}, radii=<{len(self._radii)} from {self._radii[:1]} to "
                f"{self._radii[-1:]}>, nphi={self._nphi}, shape={self._shape}, phi0={self._phi0})")

    def remap(self, images, mask=None, method: str = "bilinear", *, fill: float = np.nan,
              mask_mode: str = "strict", out: Optional[np.ndarray] = None,
              n_threads: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Remap an image or a stack of images onto the polar grid.

        Parameters
        ----------
        images : array_like, shape (H, W) or (N, H, W)
            Real numbers (bool, integers, float32/float64; any byte order and strides). float64 and 64-bit integers
            give float64 output; everything else gives float32. NaN pixels propagate to the samples that use them
            (such samples stay marked valid).
        mask : array_like of bool, shape (H, W), optional
            True = valid pixel (LOKI's convention), shared by every frame of the stack. None: all pixels valid.
        method : {"bilinear", "nearest"}
            ``"nearest"``: the pixel whose centre is nearest (ties ``k + 0.5`` go to ``k + 1``); inside when
            ``-0.5 <= x < W - 0.5`` and ``-0.5 <= y < H - 0.5``. ``"bilinear"``: exact weights in double precision,
            equal to ``scipy.ndimage.map_coordinates(order=1)`` wherever all four neighbours are inside and valid. A
            pixel is *used* by a sample when its weight is positive, so a sample on an integer column uses one
            column: samples on the last row/column are inside.
        fill : float, optional
            Value of invalid samples (default NaN); NaN and +-inf are allowed, a finite value beyond the output
            dtype's range (e.g. 1e300 for float32 output) raises ValueError.
        mask_mode : {"strict", "renormalize"}
            ``"strict"``: a sample is valid only if every pixel it uses is inside the image and valid.
            ``"renormalize"``: bilinear uses the valid, inside neighbours with renormalised weights and the sample is
            valid where their weight sum is >= 0.5 (where all used pixels are valid, the value equals the strict
            one). For nearest both modes are the same.
        out : numpy.ndarray, optional
            C-contiguous array of shape ``(..., nr, nphi)`` (matching the images' leading shape) and the output
            dtype, written in place and returned. It must not share memory with `images` or `mask`
            (ValueError: the remap would read overwritten pixels).
        n_threads : int, optional
            Threads to use (>= 1); None = all usable cores. The result does not depend on it, bit for bit.

        Returns
        -------
        polar : numpy.ndarray, shape (..., nr, nphi)
            The polar image(s); ``fill`` where the sample is invalid.
        polar_mask : numpy.ndarray of bool, shape (nr, nphi)
            True where the sample is valid (the same for every frame: the mask is shared by the stack). Without a
            ``mask`` it depends only on the grid, the method and the mask mode, and is one read-only array shared
            by all such calls (copy it to modify it).
        """
        return _remap(self, self._grid, images, mask, method, fill, mask_mode, out, n_threads)

    def radial_profile(self, polar, polar_mask) -> np.ndarray:
        """Masked mean of each ring: the mean of the valid samples along the last (angle) axis.

        Parameters
        ----------
        polar : array_like, shape (..., nr, nphi)
        polar_mask : array_like of bool, shape (nr, nphi) or (..., nr, nphi)
            True = valid sample.

        Returns
        -------
        numpy.ndarray, shape (..., nr)
            float64 for float64 input, else float32; NaN where a ring has no valid sample.
        """
        polar, m = _polar_and_mask(polar, polar_mask, self.polar_shape)
        return _radial_mean(polar, m)

    def _as_stack(self, images) -> Tuple[np.ndarray, bool]:
        a = np.asarray(images)
        if a.ndim not in (2, 3):
            raise ValueError(f"images must be 2-D (H, W) or 3-D (N, H, W), got {a.ndim}-D")
        if a.shape[-2:] != self._shape:
            raise ValueError(f"images have shape {a.shape[-2:]} per frame, the grid expects {self._shape}")
        if a.dtype == np.bool_:
            a = a.view(np.uint8)
        elif a.dtype.kind not in "iuf":
            raise TypeError(f"images must be real numbers, got dtype {a.dtype}")
        elif a.dtype.kind == "f" and a.dtype.itemsize not in (4, 8):
            a = a.astype(np.float32)  # float16 / longdouble
        if not a.dtype.isnative:
            _log.debug("remap: converting %s images to native byte order (a copy)", a.dtype)
            a = a.astype(a.dtype.newbyteorder("="))
        elif a.dtype.byteorder not in "=|":  # native order spelled '<' (e.g. h5py / pipeline buffers): a view
            a = a.view(a.dtype.newbyteorder("="))
        single = a.ndim == 2
        if single:
            a = a[None]
        item = a.dtype.itemsize
        # (strides of length-1 axes are never used, and NumPy leaves them arbitrary)
        if any(n > 1 and (st % item or (ax == 2 and st != item)) for ax, (n, st) in enumerate(zip(a.shape, a.strides))):
            _log.debug("remap: copying images with strides %s to a contiguous array", a.strides)
            a = np.ascontiguousarray(a)  # the core takes any row/frame stride but contiguous columns
        return a, single

    def _as_mask(self, mask) -> Optional[np.ndarray]:
        if mask is None:
            return None
        m = np.asarray(mask)
        if m.shape != self._shape:
            raise ValueError(f"mask must have the image shape {self._shape}, got {m.shape}")
        if m.dtype != np.bool_:
            if m.dtype.kind not in "iu":
                raise TypeError(f"mask must be bool (True = valid), got dtype {m.dtype}")
            m = m != 0
        return np.ascontiguousarray(m)


def _remap(owner, core, images, mask, method, fill, mask_mode, out, n_threads):
    """The checks and the core call of :meth:`PolarGrid.remap`, shared with ``GeometryPolarGrid.remap``.

    owner: the grid (its ``_shape``, ``polar_shape`` and ``_valid_cache``); core: the compiled grid (``remap``).
    """
    method_code = _METHODS.get(method) if isinstance(method, str) else None
    if method_code is None:
        raise ValueError(f"method must be 'bilinear' or 'nearest', got {method!r}")
    mode_code = _MASK_MODES.get(mask_mode) if isinstance(mask_mode, str) else None
    if mode_code is None:
        raise ValueError(f"mask_mode must be 'strict' or 'renormalize', got {mask_mode!r}")
    n_threads = _checks.n_threads(n_threads)

    stack, single = PolarGrid._as_stack(owner, images)
    # float64 for 8-byte pixels, else float32; a grid may fix it (single-precision GeometryPolarGrid: float32)
    out_dtype = getattr(owner, "_out_dtype", None) or (np.float64 if stack.dtype.itemsize == 8 else np.float32)
    fill = _checks.fill_value(fill, out_dtype, "fill")
    nr, nphi = owner.polar_shape
    lead = stack.shape[:1]
    expect = (nr, nphi) if single else (stack.shape[0], nr, nphi)
    if out is None:
        out = np.empty(expect, out_dtype)
    else:
        if not isinstance(out, np.ndarray):
            raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
        if out.shape != expect:
            raise ValueError(f"out must have shape {expect}, got {out.shape}")
        if out.dtype != out_dtype:
            raise TypeError(f"out must have dtype {np.dtype(out_dtype).name} for {stack.dtype} images, "
                            f"got {out.dtype}")
        if not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError("out must be C-contiguous and writeable")
        _checks.no_overlap(out, {"images": images, "mask": mask, "images (converted)": stack})
    mask_arr = PolarGrid._as_mask(owner, mask)
    cached = owner._valid_cache.get((method_code, mode_code)) if mask_arr is None else None
    polar_mask = np.empty((nr, nphi), bool) if cached is None else None
    out3 = out.reshape(lead + (nr, nphi))
    if stack.shape[0] == 0:  # still report which samples are valid
        if polar_mask is not None:
            core.remap(np.zeros((1,) + owner._shape, np.float32), mask_arr, method_code, mode_code, fill,
                       np.empty((1, nr, nphi), np.float32), polar_mask, n_threads)
    else:
        core.remap(stack, mask_arr, method_code, mode_code, fill, out3, polar_mask, n_threads)
    if cached is not None:
        return out, cached
    if mask_arr is None:
        polar_mask.setflags(write=False)
        owner._valid_cache[(method_code, mode_code)] = polar_mask
    return out, polar_mask


def _polar_and_mask(polar, polar_mask, polar_shape=None):
    p = np.asarray(polar)
    if p.ndim < 2:
        raise ValueError(f"polar must be at least 2-D (..., nr, nphi), got {p.ndim}-D")
    if polar_shape is not None and p.shape[-2:] != tuple(polar_shape):
        raise ValueError(f"polar must end with shape {tuple(polar_shape)}, got {p.shape}")
    if p.dtype.kind not in "iuf":
        raise TypeError(f"polar must be real numbers, got dtype {p.dtype}")
    m = np.asarray(polar_mask)
    if m.dtype != np.bool_:
        raise TypeError(f"polar_mask must be bool (True = valid), got dtype {m.dtype}")
    try:
        m = np.broadcast_to(m, p.shape)
    except ValueError:
        raise ValueError(f"polar_mask of shape {m.shape} does not match polar of shape {p.shape}") from None
    return p, m


def _radial_mean(p: np.ndarray, m: np.ndarray) -> np.ndarray:
    dtype = np.float64 if p.dtype == np.float64 or p.dtype.itemsize == 8 else np.float32
    count = m.sum(-1)
    total = np.where(m, p, 0).sum(-1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(dtype)


def fill_masked(polar, polar_mask, value: Union[str, float] = "radial_mean") -> np.ndarray:
    """Fill the invalid samples of polar image(s), as in the LOKI tutorial's gap filling.

    Parameters
    ----------
    polar : array_like, shape (..., nr, nphi)
    polar_mask : array_like of bool, shape (nr, nphi) or (..., nr, nphi)
        True = valid sample.
    value : "radial_mean" or float
        ``"radial_mean"``: each invalid sample takes the mean of the valid samples of its ring (NaN if the ring has
        none); a number: that value.

    Returns
    -------
    numpy.ndarray
        A new array (float64 for float64 / 64-bit input, else float32); the input is not modified.
    """
    p, m = _polar_and_mask(polar, polar_mask)
    dtype = np.float64 if p.dtype.itemsize == 8 else np.float32
    result = np.array(p, dtype=dtype)
    if isinstance(value, str):
        if value != "radial_mean":
            raise ValueError(f"value must be 'radial_mean' or a number, got {value!r}")
        fillv = np.broadcast_to(_radial_mean(p, m)[..., None], p.shape)
        np.copyto(result, fillv, where=~m)
    else:
        v = _checks.fill_value(_finite_or_nan(value), dtype, "value")
        np.copyto(result, np.asarray(v, dtype=dtype), where=~m)
    return result


def _finite_or_nan(value) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"value must be 'radial_mean' or a real number, got {type(value).__name__}")
    return float(value)
