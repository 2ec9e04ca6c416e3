"""Physical detector geometry in the run pipeline: rings of constant q (Å⁻¹) for :func:`xcca.analyze`.

``xcca.analyze(..., geometry=Geometry | "file.poni", q=(qmin, qmax, nq) | array)`` samples every ring of the run at
its exact (q, φ) positions on the (possibly tilted) detector with :meth:`xcca.Geometry.polar_grid`, optionally with
the solid-angle and polarisation corrections and a flat field / dark current (``flat=``, ``dark=``: arrays or files,
pyFAI's ``(raw - dark) / flat`` per pixel) applied during the remap. This module holds the glue:

- :class:`RingGrid` — the picklable description of those rings (geometry, q, nphi, frame shape, corrections) that a
  :class:`xcca.stages.RunPlan` carries to every process; the compiled grid (:class:`xcca.GeometryPolarGrid`) is
  rebuilt where the plan is used, from the same parameters, so local and Dask runs stay bit-identical;
- :func:`prepare_run` — the checks of :func:`xcca.analyze`'s geometry arguments;
- :class:`GeometryNumpyKernels` — the NumPy baseline kernel set (``backend="numpy"``) on such a grid.

Conventions of a geometry run (documented in :func:`xcca.analyze`):

- the rings are the q values given, in Å⁻¹ (``AnalysisResult.q``, the NeXus axis of every polar result);
- ``AnalysisResult.radii`` is *derived*: the pixel-equivalent radius ``dist · tan(2θ) / pixel1`` of each ring, which
  is the exact ring radius on an untilted detector (then the run equals the pixel-radius run with these radii bit for
  bit) and a monotone label of the ring on a tilted one (where a ring of constant q is a conic, not a circle);
- ``ring_for_pairing`` is a q in Å⁻¹ (the nearest ring is used);
- cos ψ uses the exact θ of each ring from the geometry's wavelength (:meth:`xcca.GeometryPolarGrid.cos_psi`);
- the beam centre is the geometry's (its PONI): ``center=``, ``center="auto"`` and a ring fit do not apply, and the
  pixel-radius ``qmin``/``qmax`` and the scalar ``wavelength`` are refused with a geometry.

Masks: True = valid pixel (LOKI's convention).
"""
from __future__ import annotations

import math
import os
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from .geometry import Geometry, GeometryPolarGrid
from .reference import PipelineKernels

__all__ = ["RingGrid", "prepare_run", "resolve_geometry", "GeometryNumpyKernels", "load_flat_dark"]


def load_flat_dark(value, shape: Sequence[int], name: str) -> Tuple[Optional[np.ndarray], Optional[Dict[str, Any]]]:
    """A flat-field or dark-current frame of a run, and its provenance for the result's parameters.

    Parameters
    ----------
    value : None, array_like (H, W), or str / PathLike
        The frame, or a file: ``.npy``, ``file.h5::/path/to/data`` (HDF5) or any image format
        :func:`xcca.io.read_image` reads (one frame).
    shape : (int, int)
        The frames' (H, W); the flat/dark must have it.
    name : str
        ``"flat"`` or ``"dark"`` (named in the errors).

    Returns
    -------
    (numpy.ndarray float64 or None, dict or None)
        The frame (a float64 copy) and ``{"path": absolute path or None, "sha256": digest of shape and float64
        bytes}``; ``(None, None)`` for None.

    Raises
    ------
    OSError
        The file does not exist or cannot be read.
    ValueError
        Not of the frames' shape.
    TypeError
        Not real numbers.
    """
    if value is None:
        return None, None
    path = None
    if isinstance(value, (str, os.PathLike)):
        p = os.fspath(value)
        file = p.partition("::")[0]
        if not os.path.exists(file):
            raise OSError(f"{name} file not found: {file}")
        path = os.path.abspath(file) + (p[len(file):] if "::" in p else "")
        if file.endswith(".npy"):
            arr = np.load(file, allow_pickle=False)
        else:
            from .io import read_image

            arr = read_image(p)
    else:
        arr = np.asarray(value)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be real numbers, got dtype {arr.dtype}")
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} must have the frames' shape {tuple(shape)}, got {arr.shape}"
                         + (f" (file {path})" if path else ""))
    arr = np.array(arr, dtype=np.float64, order="C")  # a copy: the caller's array is never modified
    import hashlib

    h = hashlib.sha256(f"xcca-{name} float64 {arr.shape[0]}x{arr.shape[1]}:".encode())
    h.update(arr.tobytes())
    return arr, {"path": path, "sha256": h.hexdigest()}


def resolve_geometry(geometry) -> Tuple[Geometry, Optional[str]]:
    """A :class:`xcca.Geometry` from a Geometry or a PONI file path; returns ``(geometry, absolute path or None)``.

    Parameters
    ----------
    geometry : Geometry, str or os.PathLike
        The geometry, or the path of a pyFAI PONI file.

    Returns
    -------
    (Geometry, str or None)

    Raises
    ------
    TypeError
        Neither a Geometry nor a path.
    OSError, ValueError
        The PONI file cannot be read or is malformed (from :meth:`xcca.Geometry.from_poni`).
    """
    if isinstance(geometry, Geometry):
        return geometry, None
    if isinstance(geometry, (str, os.PathLike)):
        path = os.path.abspath(os.fspath(geometry))
        return Geometry.from_poni(path), path
    raise TypeError(f"geometry must be an xcca.Geometry or the path of a PONI file, got {type(geometry).__name__}")


class RingGrid:
    """The rings of a geometry run: picklable, with the compiled grid built lazily in each process.

    Parameters
    ----------
    geometry : Geometry
        The detector geometry (with a wavelength).
    q : array_like or (qmin, qmax, nq)
        Ring momenta in Å⁻¹.
    nphi : int
        Samples per ring.
    shape : (int, int)
        Frame shape (H, W).
    solid_angle : bool
        Divide every sample by its solid angle (cos³ of the incidence angle), during the remap.
    polarization_factor : float, optional
        Divide every sample by pyFAI's polarisation factor with this factor (e.g. 0.99).
    poni : str, optional
        The PONI file the geometry was read from (recorded in the result's parameters).
    flat, dark : numpy.ndarray (H, W), optional
        Flat field and dark current, applied per pixel during the remap (see :meth:`xcca.Geometry.polar_grid`).
    flat_info, dark_info : dict, optional
        Their provenance (path, sha256) for the result's parameters (see :func:`load_flat_dark`).
    precision : {"float64", "float32"}
        Arithmetic of the remap (see :meth:`xcca.Geometry.polar_grid`).

    Raises
    ------
    ValueError
        q beyond the detector's reach (the message gives the reachable range), bad nphi, bad factor.
    """

    def __init__(self, geometry: Geometry, q, nphi: int, shape: Sequence[int], *, solid_angle: bool = False,
                 polarization_factor: Optional[float] = None, poni: Optional[str] = None, flat=None, dark=None,
                 flat_info: Optional[Dict[str, Any]] = None, dark_info: Optional[Dict[str, Any]] = None,
                 precision: str = "float64"):
        self.geometry = geometry
        self.nphi = int(nphi)
        self.shape = (int(shape[0]), int(shape[1]))
        self.solid_angle = bool(solid_angle)
        self.polarization_factor = None if polarization_factor is None else float(polarization_factor)
        self.poni = poni
        self.flat, self.dark = flat, dark
        self.flat_info, self.dark_info = flat_info, dark_info
        self._grid = None
        grid = GeometryPolarGrid(geometry, q, self.nphi, self.shape, solid_angle=self.solid_angle,
                                 polarization_factor=self.polarization_factor, flat=flat, dark=dark,
                                 precision=precision)
        self._grid = grid
        self.precision = np.dtype(grid.precision).name  # "float64" / "float32" (validated by the grid)
        self.q = np.array(grid.q, dtype=np.float64)
        g = geometry
        # the pixel-equivalent radius; the untilted grid samples exactly these radii (see GeometryPolarGrid)
        with np.errstate(invalid="ignore"):
            self.radii = np.where(grid.tth < np.pi / 2, g.dist * np.tan(grid.tth) / g.pixel1, np.inf)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_grid"] = None  # compiled: rebuilt from the same parameters where the plan is used
        return state

    @property
    def grid(self) -> GeometryPolarGrid:
        """The :class:`xcca.GeometryPolarGrid` of these rings (built once per process)."""
        if self._grid is None:
            self._grid = GeometryPolarGrid(self.geometry, self.q, self.nphi, self.shape, solid_angle=self.solid_angle,
                                           polarization_factor=self.polarization_factor, flat=self.flat,
                                           dark=self.dark, precision=self.precision)
        return self._grid

    @property
    def center(self) -> Tuple[float, float]:
        """The beam centre ``(cx, cy)`` in pixels of the geometry's PONI (may lie off the detector)."""
        cx, cy = self.geometry.beam_center
        return float(cx), float(cy)

    @property
    def engine(self) -> str:
        """Which remap runs: ``"polar"`` (untilted, no corrections: :class:`xcca.PolarGrid` itself) or ``"conic"``."""
        return self.grid.engine

    def cos_psi(self) -> np.ndarray:
        """cos ψ (nq, nphi) of each ring at the lags Δ = 2πk/nphi, with the exact θ of the ring.

        Returns
        -------
        numpy.ndarray
        """
        return np.asarray(self.grid.cos_psi(), dtype=np.float64)

    def ring_radius(self, q_ring) -> float:
        """The pixel-equivalent radius of the ring nearest ``q_ring`` (Å⁻¹): what the stages pick the pairing ring by.

        Parameters
        ----------
        q_ring : float
            q of the pairing ring in Å⁻¹.

        Returns
        -------
        float

        Raises
        ------
        ValueError
            ``q_ring`` not a finite number, or more than half a ring spacing outside the rings.
        """
        if isinstance(q_ring, (bool, np.bool_)) or not isinstance(q_ring, (int, float, np.integer, np.floating)) \
                or not math.isfinite(q_ring):
            raise ValueError(f"ring_for_pairing must be a finite q in 1/Å with geometry=, got {q_ring!r}")
        q = self.q
        half = 0.5 * (float(np.min(np.abs(np.diff(q)))) if q.size > 1 else 0.0)
        if not (q.min() - half <= q_ring <= q.max() + half):
            raise ValueError(f"ring_for_pairing={q_ring} 1/Å is outside the rings' q range "
                             f"({q.min():.6g}..{q.max():.6g} 1/Å)")
        return float(self.radii[int(np.argmin(np.abs(q - q_ring)))])

    def parameters(self) -> Dict[str, Any]:
        """The geometry parameters of a result: the PONI parameters (metres, radians) and the corrections.

        Returns
        -------
        dict
        """
        g = self.geometry
        geo = dict(dist=g.dist, poni1=g.poni1, poni2=g.poni2, rot1=g.rot1, rot2=g.rot2, rot3=g.rot3,
                   pixel1=g.pixel1, pixel2=g.pixel2, wavelength=g.wavelength, orientation=int(g.orientation))
        if g.detector_shape is not None:
            geo["detector_shape"] = list(g.detector_shape)
        return dict(geometry=geo, poni=self.poni, solid_angle=self.solid_angle,
                    polarization_factor=self.polarization_factor, flat=self.flat_info, dark=self.dark_info,
                    remap_engine=self.engine, remap_precision=self.precision,
                    radius_definition="pixel-equivalent radius dist*tan(2theta)/pixel1 (exact on an untilted "
                                      "detector)")


def prepare_run(geometry, q, nphi: int, shape: Sequence[int], *, center=None, qmin=None, qmax=None,
                wavelength=None, solid_angle: bool = False, polarization_factor=None, flat=None,
                dark=None, precision: str = "float64") -> RingGrid:
    """Check :func:`xcca.analyze`'s geometry arguments and build the run's :class:`RingGrid`.

    Parameters
    ----------
    geometry : Geometry, str or os.PathLike
        The geometry or a PONI file.
    q : array_like or (qmin, qmax, nq)
        Ring momenta in Å⁻¹.
    nphi : int
        Samples per ring.
    shape : (int, int)
        Frame shape of the run.
    center, qmin, qmax, wavelength
        The pixel-radius options of :func:`xcca.analyze`: must be None with a geometry.
    solid_angle : bool
        Solid-angle correction.
    polarization_factor : float, optional
        Polarisation correction factor.
    flat, dark : array_like (H, W) or str / PathLike, optional
        Flat field and dark current (arrays or files, see :func:`load_flat_dark`), applied per pixel during the
        remap as ``(I - dark) / flat``; pixels with ``flat <= 0`` or a non-finite flat or dark are masked.
    precision : {"float64", "float32"}
        Arithmetic of the remap (see :meth:`xcca.Geometry.polar_grid`).

    Returns
    -------
    RingGrid

    Raises
    ------
    ValueError
        A pixel-radius option given with the geometry, no q, a geometry without wavelength, a detector shape that is
        not the frames', or q beyond the detector's reach (the message gives the reachable range).
    TypeError
        A geometry that is neither a Geometry nor a path.
    """
    if center is not None:
        raise ValueError("center= does not apply with geometry=: the geometry (its PONI) fixes the beam centre; "
                         "center='auto' and the ring fit do not apply either")
    if qmin is not None or qmax is not None:
        raise ValueError("qmin/qmax are ring radii in pixels and do not apply with geometry=: give the rings as "
                         "q=(qmin, qmax, nq) or an array, in 1/Å")
    if wavelength is not None:
        raise ValueError("wavelength= does not apply with geometry=: the geometry carries the wavelength "
                         "(Geometry.replace(wavelength=...) in metres)")
    if q is None:
        raise ValueError("geometry= needs q: the rings' momenta in 1/Å, as (qmin, qmax, nq) or an array")
    geo, poni = resolve_geometry(geometry)
    if geo.wavelength is None:
        raise ValueError("the geometry has no wavelength: q in 1/Å needs it (a PONI file with a Wavelength line, "
                         "or Geometry(..., wavelength=) in metres)")
    if geo.detector_shape is not None and tuple(geo.detector_shape) != tuple(shape):
        raise ValueError(f"the geometry's detector shape {tuple(geo.detector_shape)} is not the frames' shape "
                         f"{tuple(shape)}")
    if isinstance(solid_angle, (np.bool_, bool)) is False and solid_angle not in (0, 1):
        raise TypeError(f"solid_angle must be True or False, got {solid_angle!r}")
    flat_arr, flat_info = load_flat_dark(flat, shape, "flat")
    dark_arr, dark_info = load_flat_dark(dark, shape, "dark")
    return RingGrid(geo, q, nphi, shape, solid_angle=bool(solid_angle), polarization_factor=polarization_factor,
                    poni=poni, flat=flat_arr, dark=dark_arr, flat_info=flat_info, dark_info=dark_info,
                    precision=precision)


class GeometryNumpyKernels(PipelineKernels):
    """``backend="numpy"`` on a geometry run: :class:`xcca.reference.PipelineKernels` (the NumPy baseline) with its
    bilinear sample positions taken from the geometry's exact (q, φ) coordinates and the grid's correction factor.

    Parameters
    ----------
    geom : xcca.kernels.KernelGeometry
        The run geometry (its ``grid`` is a :class:`RingGrid`).
    n_threads : int, optional
        Ignored (NumPy decides).
    """

    def __init__(self, geom, n_threads=None):
        self.geom = geom
        h, w = geom.shape
        xs, ys = geom.grid.grid.coordinates()
        miss = ~(np.isfinite(xs) & np.isfinite(ys))
        xs = np.where(miss, -10.0, xs)
        ys = np.where(miss, -10.0, ys)
        x0, y0 = np.floor(xs), np.floor(ys)
        self.fx, self.fy = xs - x0, ys - y0
        self.inside = (x0 >= 0) & (y0 >= 0) & (x0 + 1 <= w - 1) & (y0 + 1 <= h - 1) & ~miss
        x0c = np.clip(x0, 0, w - 2).astype(np.int64)
        y0c = np.clip(y0, 0, h - 2).astype(np.int64)
        self.idx = y0c * w + x0c  # flat index of the top-left neighbour
        self.correction = np.asarray(geom.grid.grid.correction, dtype=np.float64)
        self.pixel_correction = geom.grid.grid.pixel_correction  # (dark, 1/flat, valid) or None

    def remap(self, frames, mask, out=None):
        """Bilinear remap onto the geometry's rings, corrected (``mask`` True = valid pixel).

        Parameters
        ----------
        frames : ndarray, (c, H, W)
            A chunk of frames.
        mask : ndarray of bool, (H, W), optional
            True = valid pixel (LOKI's convention); None = all valid.
        out : ndarray, optional
            Destination of the polar images (c, nq, nphi).
        """
        if self.pixel_correction is not None:  # (I - dark) / flat per pixel (xcca.reference.conic_flat_dark)
            d, rflat, valid = self.pixel_correction
            fr = np.asarray(frames)
            frames = ((fr.astype(np.float64) - d) * rflat).astype(np.float64 if fr.dtype.itemsize == 8
                                                                  else np.float32)
            mask = valid if mask is None else (np.asarray(mask, bool) & valid)
        polar, pmask = super().remap(frames, mask, out=out)
        if not np.all(self.correction == 1.0):
            polar *= self.correction.astype(polar.dtype)
        return polar, pmask


def polarization_at(tth, chi, factor: float, axis_offset: float = 0.0) -> np.ndarray:
    """pyFAI's polarisation factor at scattering angles ``tth`` and azimuths ``chi`` (radians, broadcast).

    ``P = ½ (1 + cos²2θ − factor · cos(2 (χ + axis_offset)) · sin²2θ)``: the value :meth:`xcca.Geometry.polarization`
    gives per pixel, here at any (2θ, χ) (e.g. the samples of a polar ring). LOKI's ``correct_polarization`` with the
    y-polarised fraction ``f`` is this with ``factor = 1 − 2f`` and χ = LOKI's φ.

    Parameters
    ----------
    tth : array_like
        Scattering angles 2θ in radians.
    chi : array_like
        Azimuths χ in radians (pyFAI's χ = xcca's φ).
    factor : float
        Polarisation factor in [-1, 1] (0: unpolarised, 1: fully polarised along the detector's horizontal).
    axis_offset : float
        Azimuth of the polarisation plane in radians.

    Returns
    -------
    numpy.ndarray (float64)
    """
    from .geometry import _polarization_factor

    f = _polarization_factor(factor)
    c2 = np.cos(np.asarray(tth, dtype=np.float64)) ** 2
    return 0.5 * (1.0 + c2 - f * np.cos(2.0 * (np.asarray(chi, dtype=np.float64) + axis_offset)) * (1.0 - c2))


__all__ += ["polarization_at"]
