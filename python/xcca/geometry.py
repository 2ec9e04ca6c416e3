r"""Physical detector geometry: pyFAI's parameters and PONI files, q (Å⁻¹) and χ per pixel, solid-angle and
polarisation corrections, and polar grids of exact (q, φ) rings on tilted detectors.

Units: q in Å⁻¹ (as in the LOKI tutorial; pyFAI's ``qArray`` is in nm⁻¹, xcca's is that / 10); geometry parameters
follow pyFAI (metres and radians) because PONI files do: ``dist``, ``poni1``, ``poni2``, ``pixel1``, ``pixel2`` and
``wavelength`` in metres, ``rot1``, ``rot2``, ``rot3`` in radians. Masks: True = valid pixel (LOKI's convention).

pyFAI is *not* a runtime dependency: a PONI file is a short ``key: value`` text file, read here by a small parser
(versions 1, 2 and 2.1; pyFAI is used only if it is installed and the file names a detector without giving its pixel
size, i.e. to look the detector up in pyFAI's detector database). :meth:`Geometry.from_pyfai` and
:meth:`Geometry.to_pyfai` convert to and from pyFAI objects when pyFAI is installed. The tests use pyFAI as the truth
for every per-pixel array.
"""
from __future__ import annotations

import json
import logging
import math
import numbers
import os
from typing import Optional, Sequence, Tuple, Union

import numpy as np

__all__: list[str] = ["Geometry", "GeometryPolarGrid", "calibrate", "ring_points"]

_log = logging.getLogger(__name__)

_H_C = None  # (no energy conversions here: wavelengths only)
_M_TO_A = 1e10  # metres -> Ångström


def _real(value, name: str, *, positive: bool = False, nonneg: bool = False, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if positive and not v > 0:
        raise ValueError(f"{name} must be > 0, got {v}")
    if nonneg and v < 0:
        raise ValueError(f"{name} must be >= 0, got {v}")
    return v


def _shape(shape, name: str = "shape") -> Tuple[int, int]:
    try:
        h, w = shape
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (H, W), got {shape!r}") from None
    out = []
    for k, v in enumerate((h, w)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (numbers.Integral, np.integer)):
            raise TypeError(f"{name}[{k}] must be an integer, got {type(v).__name__}")
        if int(v) <= 0:
            raise ValueError(f"{name}[{k}] must be >= 1, got {int(v)}")
        out.append(int(v))
    return out[0], out[1]


class Geometry:
    r"""A flat detector's geometry in pyFAI's convention (the parameters of a PONI file).

    The PONI (point of normal incidence) is the foot of the perpendicular from the sample onto the detector plane, at
    ``(poni1, poni2)`` metres from the detector's first pixel corner along the slow (rows, axis 1) and fast (columns,
    axis 2) axes; ``dist`` is the sample-PONI distance. Pixel ``(row i, col j)`` has its centre at
    ``p1 = (i + 0.5) pixel1 - poni1``, ``p2 = (j + 0.5) pixel2 - poni2``, ``p3 = dist`` in the detector frame (for
    pyFAI's default detector orientation 3; orientations 1, 2 and 4 flip the row and/or column index first, as
    pyFAI does), and at ``t = R (p1, p2, p3)`` in the lab frame with pyFAI's rotation ``R = R3(rot3) R2(rot2)
    R1(rot1)`` (rot1 about axis 1, left-handed; rot2 about axis 2, left-handed; rot3 about the beam, right-handed).
    The beam runs along ``t3``. Then ``2θ = atan2(hypot(t1, t2), t3)``, ``q = 4π sin(θ) / λ`` and the azimuth
    ``χ = atan2(t1, t2)`` (pyFAI's χ, range (-π, π]).

    Azimuth convention: xcca's polar angle φ *is* pyFAI's χ. On an untilted detector (rot1 = rot2 = rot3 = 0) it is
    the angle of the pixel around the beam centre measured from +x (increasing column) towards +y (increasing row),
    exactly the φ of :class:`xcca.PolarGrid`; on a tilted detector it is the lab-frame azimuth of the scattered ray,
    so a ring of constant q (a conic on the detector) is sampled at equal steps of the physical azimuth::

              col 0   1   2  ...  x (axis 2, t2) ->          φ = χ = +π/2  (+y: down the rows, t1)
        row 0   +---+---+---+                                        |
            1   +---+-(beam)---> φ = χ = 0 (+x, t2)       ±π  -------o-------  0
            2   +---+---+---+                                        |
            y (axis 1, t1)                                     φ = χ = -π/2
            v

    Parameters
    ----------
    dist : float
        Sample-detector (PONI) distance in metres, > 0.
    poni1, poni2 : float
        PONI coordinates in metres along the slow (row) and fast (column) axes; may lie off the detector.
    rot1, rot2, rot3 : float
        pyFAI's rotations in radians.
    pixel1, pixel2 : float
        Pixel sizes in metres along the slow (row) and fast (column) axes, > 0.
    wavelength : float, optional
        Wavelength in metres (> 0), as in a PONI file; needed for anything in q. None: unknown.
    orientation : int, optional
        pyFAI's detector orientation (1-4, default 3: pixel (0, 0) at the origin of both axes).
    detector_shape : (int, int), optional
        The detector's (H, W), if known (from the PONI file or pyFAI detector); the default of every ``shape``.

    Notes
    -----
    ``dist``, ``pixel1``, ``pixel2`` and ``wavelength`` are in metres (pyFAI's unit); every q in and out is in Å⁻¹
    and :attr:`wavelength_A` gives λ in Å.
    """

    def __init__(self, dist: float, poni1: float, poni2: float, rot1: float = 0.0, rot2: float = 0.0,
                 rot3: float = 0.0, *, pixel1: float, pixel2: float, wavelength: Optional[float] = None,
                 orientation: int = 3, detector_shape: Optional[Sequence[int]] = None):
        self._dist = _real(dist, "dist", positive=True)
        self._poni1 = _real(poni1, "poni1")
        self._poni2 = _real(poni2, "poni2")
        self._rot = (_real(rot1, "rot1"), _real(rot2, "rot2"), _real(rot3, "rot3"))
        self._pixel1 = _real(pixel1, "pixel1", positive=True)
        self._pixel2 = _real(pixel2, "pixel2", positive=True)
        self._wavelength = _real(wavelength, "wavelength", positive=True, allow_none=True)
        if isinstance(orientation, (bool, np.bool_)) or not isinstance(orientation, (numbers.Integral, np.integer)) \
                or int(orientation) not in (0, 1, 2, 3, 4):
            raise ValueError(f"orientation must be 1, 2, 3 or 4 (pyFAI's detector orientation), got {orientation!r}")
        self._orientation = 3 if int(orientation) == 0 else int(orientation)
        self._detector_shape = None if detector_shape is None else _shape(detector_shape, "detector_shape")

    # ----- constructors -----
    @classmethod
    def from_poni(cls, path: Union[str, os.PathLike]) -> "Geometry":
        """Read a pyFAI PONI file (versions 1, 2 and 2.1).

        Parameters
        ----------
        path : str or path-like
            The ``.poni`` file.

        Returns
        -------
        Geometry

        Raises
        ------
        OSError
            The file cannot be read.
        ValueError
            The file is malformed or truncated (a missing or non-numeric parameter, bad detector_config JSON), its
            version is not supported, or it needs a correction xcca does not model (spline distortion, parallax).

        Notes
        -----
        Pixel sizes come from ``PixelSize1/2`` (version 1) or ``Detector_config`` (versions 2 and 2.1). A file that
        names a detector (``Detector: Pilatus6M``) without pixel sizes needs pyFAI's detector database: pyFAI is
        imported for that case only.
        """
        if not isinstance(path, (str, bytes, os.PathLike)):
            raise TypeError(f"path must be a PONI file path, got {type(path).__name__}")
        path = os.fspath(path)
        try:
            with open(path, "r", encoding="utf-8") as fh:
                text = fh.read()
        except UnicodeDecodeError:
            raise ValueError(f"{path}: not a PONI file (not UTF-8 text)") from None
        except OSError as e:
            raise OSError(f"{path}: cannot read the PONI file: {e.strerror or e}") from e
        return cls._from_poni_text(text, path)

    @classmethod
    def _from_poni_text(cls, text: str, path: str = "<PONI>") -> "Geometry":
        entries = {}
        for n, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            key, sep, value = line.partition(":")
            if not sep or not key.strip():
                raise ValueError(f"{path}, line {n}: expected 'key: value', got {raw!r}")
            entries[key.strip().lower()] = value.strip()
        if not entries:
            raise ValueError(f"{path}: empty PONI file (no 'key: value' lines)")

        def num(key, *, required=True):
            if key not in entries or entries[key].lower() in ("", "none"):
                if required:
                    raise ValueError(f"{path}: PONI file has no {key!r} (truncated or malformed?)")
                return None
            try:
                return float(entries[key])
            except ValueError:
                raise ValueError(f"{path}: PONI {key!r} is not a number: {entries[key]!r}") from None

        try:
            version = float(entries.get("poni_version", "1"))
        except ValueError:
            raise ValueError(f"{path}: PONI poni_version is not a number: {entries['poni_version']!r}") from None
        if version not in (1.0, 2.0, 2.1):
            if version == 3.0 and entries.get("parallax", "false").strip().lower() in ("false", "0", "none"):
                pass  # version 3 only adds the parallax flag; without parallax it is a 2.1 file
            else:
                raise ValueError(f"{path}: PONI version {entries.get('poni_version')} is not supported (1, 2, 2.1; "
                                 "3 only without parallax correction)")
        spline = entries.get("splinefile")
        if spline and spline.lower() != "none":
            raise ValueError(f"{path}: spline distortion correction ({spline}) is not supported by xcca.Geometry")
        pixel1 = pixel2 = None
        orientation = 3
        shape = None
        detector = entries.get("detector", "").strip()
        if "detector_config" in entries:
            try:
                config = json.loads(entries["detector_config"]) if entries["detector_config"] else {}
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: PONI Detector_config is not valid JSON ({e.msg})") from None
            if not isinstance(config, dict):
                raise ValueError(f"{path}: PONI Detector_config must be a JSON object")
            if config.get("splinefile"):
                raise ValueError(f"{path}: spline distortion correction is not supported by xcca.Geometry")
            pixel1, pixel2 = config.get("pixel1"), config.get("pixel2")
            orientation = config.get("orientation", 3)
            if config.get("max_shape") is not None:
                shape = config["max_shape"]
        elif version >= 2:
            raise ValueError(f"{path}: PONI version {version:g} file has no Detector_config (truncated?)")
        if pixel1 is None:
            pixel1 = num("pixelsize1", required=False)
        if pixel2 is None:
            pixel2 = num("pixelsize2", required=False)
        if (pixel1 is None or pixel2 is None) and detector and detector.lower() not in ("detector", "none"):
            pixel1, pixel2, shape, orientation = cls._pyfai_detector(detector, path, orientation)
        if pixel1 is None or pixel2 is None:
            raise ValueError(f"{path}: PONI file gives no pixel size (PixelSize1/2 or Detector_config pixel1/2)")
        try:
            return cls(num("distance") if "distance" in entries else num("dist"), num("poni1"), num("poni2"),
                       num("rot1"), num("rot2"), num("rot3"), pixel1=pixel1, pixel2=pixel2,
                       wavelength=num("wavelength", required=False), orientation=orientation,
                       detector_shape=shape)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from None

    @staticmethod
    def _pyfai_detector(name: str, path: str, orientation):
        try:
            from pyFAI import detectors
        except ImportError:
            raise ValueError(f"{path}: the PONI file names detector {name!r} without its pixel size; reading it needs "
                             "pyFAI's detector database (pip install pyFAI)") from None
        try:
            det = detectors.detector_factory(name)
        except Exception as e:  # pyFAI raises RuntimeError/KeyError for unknown names
            raise ValueError(f"{path}: unknown detector {name!r} ({e})") from None
        return det.pixel1, det.pixel2, det.max_shape, orientation

    @classmethod
    def from_pyfai(cls, ai) -> "Geometry":
        """From a pyFAI ``AzimuthalIntegrator`` or ``Geometry`` (flat detector, no spline, no parallax).

        Parameters
        ----------
        ai : pyFAI.geometry.Geometry or pyFAI.integrator.azimuthal.AzimuthalIntegrator

        Returns
        -------
        Geometry
        """
        for attr in ("dist", "poni1", "poni2", "rot1", "rot2", "rot3", "detector"):
            if not hasattr(ai, attr):
                raise TypeError(f"ai must be a pyFAI Geometry/AzimuthalIntegrator, got {type(ai).__name__}")
        det = ai.detector
        if getattr(det, "spline", None) is not None or getattr(det, "_pixel_corners", None) is not None and \
                not getattr(det, "IS_FLAT", True):
            raise ValueError("ai: detectors with spline distortion or non-flat pixels are not supported")
        orientation = int(getattr(getattr(det, "orientation", 3), "value", getattr(det, "orientation", 3)))
        wl = ai.wavelength if getattr(ai, "_wavelength", 1) is not None else None
        return cls(ai.dist, ai.poni1, ai.poni2, ai.rot1, ai.rot2, ai.rot3, pixel1=det.pixel1, pixel2=det.pixel2,
                   wavelength=wl, orientation=orientation, detector_shape=getattr(det, "max_shape", None))

    @classmethod
    def from_beam(cls, center: Sequence[float], distance: float, pixel_size: Union[float, Sequence[float]],
                  wavelength: Optional[float] = None, shape: Optional[Sequence[int]] = None) -> "Geometry":
        """Untilted detector from the beam centre in pixels (xcca's ``(cx, cy)``, as in :class:`xcca.PolarGrid`).

        Parameters
        ----------
        center : (float, float)
            ``(cx, cy)``: column, then row, of the direct beam in pixels (pixel centres at integer coordinates).
        distance : float
            Sample-detector distance in metres.
        pixel_size : float or (float, float)
            Pixel size in metres (square), or ``(pixel1, pixel2)`` (rows, columns).
        wavelength : float, optional
            Wavelength in metres.
        shape : (int, int), optional
            Detector shape (H, W).

        Returns
        -------
        Geometry
            With ``poni1 = (cy + 0.5) pixel1`` and ``poni2 = (cx + 0.5) pixel2`` and no rotation.
        """
        try:
            cx, cy = center
        except (TypeError, ValueError):
            raise ValueError(f"center must be a pair (cx, cy), got {center!r}") from None
        cx, cy = _real(cx, "center[0] (cx)"), _real(cy, "center[1] (cy)")
        if np.ndim(pixel_size) == 0:
            p1 = p2 = _real(pixel_size, "pixel_size", positive=True)
        else:
            try:
                p1, p2 = pixel_size
            except (TypeError, ValueError):
                raise ValueError(f"pixel_size must be a number or a pair, got {pixel_size!r}") from None
            p1, p2 = _real(p1, "pixel_size[0]", positive=True), _real(p2, "pixel_size[1]", positive=True)
        return cls(distance, (cy + 0.5) * p1, (cx + 0.5) * p2, pixel1=p1, pixel2=p2, wavelength=wavelength,
                   detector_shape=shape)

    # ----- parameters -----
    dist = property(lambda self: self._dist, doc="Sample-PONI distance in metres.")
    poni1 = property(lambda self: self._poni1, doc="PONI along the slow (row) axis, metres.")
    poni2 = property(lambda self: self._poni2, doc="PONI along the fast (column) axis, metres.")
    rot1 = property(lambda self: self._rot[0], doc="pyFAI rot1 in radians.")
    rot2 = property(lambda self: self._rot[1], doc="pyFAI rot2 in radians.")
    rot3 = property(lambda self: self._rot[2], doc="pyFAI rot3 in radians.")
    pixel1 = property(lambda self: self._pixel1, doc="Pixel size along the rows (slow axis), metres.")
    pixel2 = property(lambda self: self._pixel2, doc="Pixel size along the columns (fast axis), metres.")
    wavelength = property(lambda self: self._wavelength, doc="Wavelength in metres (None if unknown).")
    orientation = property(lambda self: self._orientation, doc="pyFAI detector orientation (1-4).")
    detector_shape = property(lambda self: self._detector_shape, doc="Detector (H, W) if known, else None.")

    @property
    def wavelength_A(self) -> float:
        """Wavelength in Å."""
        return self._need_wavelength() * _M_TO_A

    @property
    def tilted(self) -> bool:
        """Whether any rotation is nonzero."""
        return any(r != 0.0 for r in self._rot)

    @property
    def beam_center(self) -> Tuple[float, float]:
        """``(cx, cy)`` in pixels of the PONI (the direct beam of an untilted detector), orientation 3 indices."""
        return (self._poni2 / self._pixel2 - 0.5, self._poni1 / self._pixel1 - 0.5)

    def replace(self, **changes) -> "Geometry":
        """A copy with some parameters changed (keywords as in the constructor).

        Parameters
        ----------
        **changes
            Any of dist, poni1, poni2, rot1, rot2, rot3, pixel1, pixel2, wavelength, orientation, detector_shape.

        Returns
        -------
        Geometry
        """
        p = dict(dist=self._dist, poni1=self._poni1, poni2=self._poni2, rot1=self._rot[0], rot2=self._rot[1],
                 rot3=self._rot[2], pixel1=self._pixel1, pixel2=self._pixel2, wavelength=self._wavelength,
                 orientation=self._orientation, detector_shape=self._detector_shape)
        unknown = set(changes) - set(p)
        if unknown:
            raise TypeError(f"replace: unknown parameter(s) {sorted(unknown)}")
        p.update(changes)
        d = p.pop("dist"); a = p.pop("poni1"); b = p.pop("poni2")
        return Geometry(d, a, b, p.pop("rot1"), p.pop("rot2"), p.pop("rot3"), **p)

    def __repr__(self) -> str:
        return (f"Geometry(dist={self._dist!r}, poni1={self._poni1!r}, poni2={self._poni2!r}, rot1={self._rot[0]!r}, "
                f"rot2={self._rot[1]!r}, rot3={self._rot[2]!r}, pixel1={self._pixel1!r}, pixel2={self._pixel2!r}, "
                f"wavelength={self._wavelength!r})")

    def __eq__(self, other) -> bool:
        return isinstance(other, Geometry) and repr(self) == repr(other) and \
            self._orientation == other._orientation

    __hash__ = None

    # ----- conversions -----
    def to_pyfai(self):
        """An equivalent ``pyFAI`` AzimuthalIntegrator (needs pyFAI).

        Returns
        -------
        pyFAI.integrator.azimuthal.AzimuthalIntegrator
        """
        try:
            import pyFAI
            from pyFAI.detectors import Detector
        except ImportError:
            raise ImportError("Geometry.to_pyfai needs pyFAI (pip install pyFAI)") from None
        det = Detector(pixel1=self._pixel1, pixel2=self._pixel2, max_shape=self._detector_shape,
                       orientation=self._orientation)
        ai = pyFAI.load({"dist": self._dist, "poni1": self._poni1, "poni2": self._poni2, "rot1": self._rot[0],
                         "rot2": self._rot[1], "rot3": self._rot[2], "detector": det,
                         "wavelength": self._wavelength})
        return ai

    def to_poni(self) -> str:
        """The geometry as PONI version 2.1 text (what :meth:`write_poni` writes).

        Returns
        -------
        str
        """
        config = {"pixel1": self._pixel1, "pixel2": self._pixel2, "orientation": self._orientation}
        if self._detector_shape is not None:
            config["max_shape"] = list(self._detector_shape)
        lines = ["# Nota: C-Order, 1 refers to the Y axis, 2 to the X axis", "# written by xcca",
                 "poni_version: 2.1", "Detector: Detector", f"Detector_config: {json.dumps(config)}",
                 f"Distance: {self._dist!r}", f"Poni1: {self._poni1!r}", f"Poni2: {self._poni2!r}",
                 f"Rot1: {self._rot[0]!r}", f"Rot2: {self._rot[1]!r}", f"Rot3: {self._rot[2]!r}"]
        if self._wavelength is not None:
            lines.append(f"Wavelength: {self._wavelength!r}")
        return "\n".join(lines) + "\n"

    def write_poni(self, path: Union[str, os.PathLike]) -> None:
        """Write the geometry as a PONI (version 2.1) file readable by pyFAI and :meth:`from_poni`.

        Parameters
        ----------
        path : str or path-like
        """
        with open(os.fspath(path), "w", encoding="utf-8") as fh:
            fh.write(self.to_poni())

    def _need_wavelength(self) -> float:
        if self._wavelength is None:
            raise ValueError("the geometry has no wavelength (needed for q): pass wavelength= or use a PONI file "
                             "with a Wavelength line")
        return self._wavelength

    def q_from_tth(self, tth) -> np.ndarray:
        """q in Å⁻¹ from the scattering angle 2θ in radians: q = 4π sin(θ) / λ.

        Parameters
        ----------
        tth : array_like
            2θ in radians.

        Returns
        -------
        numpy.ndarray (float64)
        """
        return 4.0 * np.pi * np.sin(0.5 * np.asarray(tth, np.float64)) / (self._need_wavelength() * _M_TO_A)

    def tth_from_q(self, q) -> np.ndarray:
        """The scattering angle 2θ in radians of q in Å⁻¹ (q must be in [0, 4π/λ]).

        Parameters
        ----------
        q : array_like
            q in Å⁻¹.

        Returns
        -------
        numpy.ndarray (float64)
        """
        q = np.asarray(q, np.float64)
        s = q * (self._need_wavelength() * _M_TO_A) / (4.0 * np.pi)
        if not np.all(np.isfinite(q)):
            raise ValueError("q must be finite")
        if np.any((s < 0) | (s > 1)):
            raise ValueError(f"q must be within [0, 4 pi / wavelength] = [0, {4 * np.pi / self.wavelength_A:.6g}] "
                             "1/Angstrom")
        return 2.0 * np.arcsin(s)

    # ----- per-pixel arrays -----
    def rotation_matrix(self) -> np.ndarray:
        """pyFAI's rotation ``R = R3 R2 R1`` (lab = R · detector), a (3, 3) float64 array.

        Returns
        -------
        numpy.ndarray
        """
        c1, c2, c3 = (math.cos(r) for r in self._rot)
        s1, s2, s3 = (math.sin(r) for r in self._rot)
        r1 = np.array([[1.0, 0.0, 0.0], [0.0, c1, s1], [0.0, -s1, c1]])
        r2 = np.array([[c2, 0.0, -s2], [0.0, 1.0, 0.0], [s2, 0.0, c2]])
        r3 = np.array([[c3, -s3, 0.0], [s3, c3, 0.0], [0.0, 0.0, 1.0]])
        return r3 @ r2 @ r1

    def _shape_arg(self, shape) -> Tuple[int, int]:
        if shape is None:
            if self._detector_shape is None:
                raise ValueError("shape is required (the geometry has no detector_shape)")
            return self._detector_shape
        h, w = _shape(shape)
        # the per-pixel arrays (tth, q, chi, lab coordinates) are several float64 (H, W) arrays: refuse up front
        from ._checks import check_memory
        check_memory(6 * 8.0 * h * w, f"shape={(h, w)}")
        return h, w

    def _pixel_indices(self, shape):
        h, w = shape
        i = np.arange(h, dtype=np.float64)
        j = np.arange(w, dtype=np.float64)
        if self._orientation in (1, 2):
            i = i[::-1].copy()
        if self._orientation in (1, 4):
            j = j[::-1].copy()
        return i, j

    def _detector_positions(self, shape):
        """p1 (H, 1), p2 (1, W) in metres relative to the PONI."""
        i, j = self._pixel_indices(shape)
        p1 = (i + 0.5) * self._pixel1 - self._poni1
        p2 = (j + 0.5) * self._pixel2 - self._poni2
        return p1[:, None], p2[None, :]

    def _lab(self, shape):
        p1, p2 = self._detector_positions(shape)
        L = self._dist
        R = self.rotation_matrix()
        t1 = R[0, 0] * p1 + R[0, 1] * p2 + R[0, 2] * L
        t2 = R[1, 0] * p1 + R[1, 1] * p2 + R[1, 2] * L
        t3 = R[2, 0] * p1 + R[2, 1] * p2 + R[2, 2] * L
        return t1, t2, t3

    def tth_array(self, shape: Optional[Sequence[int]] = None) -> np.ndarray:
        """Scattering angle 2θ (radians) at every pixel centre, float64 (H, W) (pyFAI's ``twoThetaArray``).

        Parameters
        ----------
        shape : (int, int), optional
            Image shape; default :attr:`detector_shape`.

        Returns
        -------
        numpy.ndarray
        """
        t1, t2, t3 = self._lab(self._shape_arg(shape))
        return np.arctan2(np.hypot(t1, t2), t3)

    def q_array(self, shape: Optional[Sequence[int]] = None) -> np.ndarray:
        """|q| in Å⁻¹ at every pixel centre, float64 (H, W): pyFAI's ``qArray`` (nm⁻¹) / 10.

        Parameters
        ----------
        shape : (int, int), optional
            Image shape; default :attr:`detector_shape`.

        Returns
        -------
        numpy.ndarray
        """
        return self.q_from_tth(self.tth_array(shape))

    def chi_array(self, shape: Optional[Sequence[int]] = None) -> np.ndarray:
        """Azimuth χ = φ in radians, range (-π, π], at every pixel centre (pyFAI's ``chiArray``), float64 (H, W).

        See the class docstring for the convention (φ of :class:`xcca.PolarGrid` on an untilted detector).

        Parameters
        ----------
        shape : (int, int), optional
            Image shape; default :attr:`detector_shape`.

        Returns
        -------
        numpy.ndarray
        """
        t1, t2, _ = self._lab(self._shape_arg(shape))
        return np.arctan2(t1, t2)

    def solid_angle(self, shape: Optional[Sequence[int]] = None) -> np.ndarray:
        """Relative solid angle of every pixel, cos³(incidence) (1 at the PONI), float64 (H, W).

        pyFAI's ``solidAngleArray`` (relative). Divide an image by it to correct it (as pyFAI does).

        Parameters
        ----------
        shape : (int, int), optional
            Image shape; default :attr:`detector_shape`.

        Returns
        -------
        numpy.ndarray
        """
        p1, p2 = self._detector_positions(self._shape_arg(shape))
        L = self._dist
        cos_inc = L / np.sqrt(p1 * p1 + p2 * p2 + L * L)
        return cos_inc ** 3

    def polarization(self, shape: Optional[Sequence[int]] = None, factor: float = 0.99,
                     axis_offset: float = 0.0) -> np.ndarray:
        """Polarisation factor of every pixel, float64 (H, W) (pyFAI's ``polarization(factor, axis_offset)``).

        ``P = (1 + cos²2θ - factor · cos(2(χ + axis_offset)) · sin²2θ) / 2``; divide an image by it to correct it.

        Parameters
        ----------
        shape : (int, int), optional
            Image shape; default :attr:`detector_shape`.
        factor : float
            (I_h - I_v) / (I_h + I_v) in [-1, 1]: 0 unpolarised, 0.99 a typical synchrotron (horizontal, along the
            detector's x / columns for axis_offset = 0), -1 vertical.
        axis_offset : float
            Angle in radians of the polarisation plane from the detector's x axis.

        Returns
        -------
        numpy.ndarray
        """
        factor = _polarization_factor(factor)
        axis_offset = _real(axis_offset, "axis_offset")
        t1, t2, t3 = self._lab(self._shape_arg(shape))
        tth = np.arctan2(np.hypot(t1, t2), t3)
        chi = np.arctan2(t1, t2)
        c2 = np.cos(tth) ** 2
        return 0.5 * (1.0 + c2 - factor * np.cos(2.0 * (chi + axis_offset)) * (1.0 - c2))

    def q_range(self, shape: Optional[Sequence[int]] = None) -> Tuple[float, float]:
        """(min, max) of q in Å⁻¹ over the pixel centres of an image of this shape.

        Parameters
        ----------
        shape : (int, int), optional

        Returns
        -------
        (float, float)
        """
        q = self.q_array(shape)
        return float(q.min()), float(q.max())

    def _reach(self, shape) -> Tuple[float, float]:
        """(min, max) q in Å⁻¹ over the pixel centres of the image (from its border and the direct beam)."""
        h, w = shape
        i, j = self._pixel_indices(shape)
        p1 = (i + 0.5) * self._pixel1 - self._poni1
        p2 = (j + 0.5) * self._pixel2 - self._poni2
        # border pixels: the extrema of 2theta over a plane region lie on its border or at the direct beam
        P1 = np.concatenate([p1, p1, np.full(w, p1[0]), np.full(w, p1[-1])])
        P2 = np.concatenate([np.full(h, p2[0]), np.full(h, p2[-1]), p2, p2])
        R = self.rotation_matrix()
        L = self._dist
        t = R @ np.vstack([P1, P2, np.full(P1.shape, L)])
        tth = np.arctan2(np.hypot(t[0], t[1]), t[2])
        lo, hi = float(tth.min()), float(tth.max())
        b = R[2]
        if b[2] > 0:  # where the direct beam meets the detector plane, in metres from the first pixel corner
            y = L * b[0] / b[2] + self._poni1
            x = L * b[1] / b[2] + self._poni2
            ys = sorted((p1[0] + self._poni1, p1[-1] + self._poni1))
            xs = sorted((p2[0] + self._poni2, p2[-1] + self._poni2))
            if ys[0] <= y <= ys[1] and xs[0] <= x <= xs[1]:
                lo = 0.0
        return float(self.q_from_tth(lo)), float(self.q_from_tth(hi))

    # ----- polar grid, cos psi -----
    def polar_grid(self, q, nphi: int, shape: Optional[Sequence[int]] = None, *, phi0: float = 0.0,
                   solid_angle: bool = False, polarization_factor: Optional[float] = None,
                   polarization_axis_offset: float = 0.0, flat=None, dark=None,
                   precision: str = "float64") -> "GeometryPolarGrid":
        """A polar grid of rings of constant q (Å⁻¹), each sampled at its exact detector position (a conic).

        Parameters
        ----------
        q : array_like of float, or tuple (qmin, qmax, nq)
            Ring momenta in Å⁻¹ (one output row each), or ``(qmin, qmax, nq)`` for ``np.linspace(qmin, qmax, nq)``.
        nphi : int
            Angles per ring: φ_j = phi0 + 2πj/nphi, φ = pyFAI's χ (see the class docstring).
        shape : (int, int), optional
            Image shape (default :attr:`detector_shape`).
        phi0 : float
            First angle in radians.
        solid_angle : bool
            Divide every sample by the solid angle cos³(incidence) at its position (as pyFAI does).
        polarization_factor : float, optional
            Divide every sample by the polarisation factor at its position (see :meth:`polarization`).
        polarization_axis_offset : float
            ``axis_offset`` of the polarisation (radians).
        flat, dark : array_like (H, W), optional
            Per-pixel flat field and dark current, applied inside the remap as pyFAI does: every pixel a sample
            reads has the value ``(I - dark) · (1 / flat)`` (float64; see
            :func:`xcca.reference.conic_flat_dark`), before interpolation and the per-sample solid-angle /
            polarisation factors. Pixels with ``flat <= 0`` or a non-finite flat or dark are invalid (they join
            the pixel mask).
        precision : {"float64", "float32"}
            The arithmetic of the remap. "float64" (default): coordinates, weights and corrections in double
            precision (exact to the last bit of its specification). "float32": the same rule with every table
            rounded once to float32 and every operation, pixel value and output in float32: positions within
            about 5e-4 px of the float64 rule on a Pilatus-sized detector, about 1.7x faster on machines without
            AVX-512 (see :class:`GeometryPolarGrid`). Not with ``flat`` / ``dark``.

        Returns
        -------
        GeometryPolarGrid
            Raises ValueError if any q is beyond what the detector reaches (the message gives the reachable range).
        """
        return GeometryPolarGrid(self, q, nphi, shape, phi0=phi0, solid_angle=solid_angle,
                                 polarization_factor=polarization_factor,
                                 polarization_axis_offset=polarization_axis_offset, flat=flat, dark=dark,
                                 precision=precision)

    def cos_psi(self, n: int, q, q2=None) -> np.ndarray:
        """cos ψ between q and q′ at the lags Δ = 2πk/n with θ from this geometry's wavelength (q in Å⁻¹).

        ``cos ψ = cos Δ cos θ cos θ′ + sin θ sin θ′`` with ``θ = 2θ/2`` of each ring (exact, from
        :meth:`tth_from_q`): the same as ``xcca.cos_psi(n, q, geometry.wavelength_A, q2)``, with the units checked.

        Parameters
        ----------
        n : int
            Ring length (number of lags).
        q, q2 : array_like
            Ring momenta in Å⁻¹ (q2 defaults to q); broadcast against each other.

        Returns
        -------
        numpy.ndarray, shape broadcast(q, q2).shape + (n,)
        """
        from .correlate import cos_psi
        self.tth_from_q(q)
        if q2 is not None:
            self.tth_from_q(q2)
        return cos_psi(n, q, self.wavelength_A, q2)


def _polarization_factor(factor) -> float:
    f = _real(factor, "polarization_factor")
    if not -1.0 <= f <= 1.0:
        raise ValueError(f"polarization_factor must be within [-1, 1], got {f}")
    return f




def _as_q(q) -> np.ndarray:
    if isinstance(q, tuple) and len(q) == 3 and all(np.ndim(v) == 0 for v in q):
        qmin, qmax = _real(q[0], "q (qmin)"), _real(q[1], "q (qmax)")
        nq = q[2]
        if isinstance(nq, (bool, np.bool_)) or not isinstance(nq, (numbers.Integral, np.integer)) or int(nq) < 1:
            raise ValueError(f"q (qmin, qmax, nq): nq must be an integer >= 1, got {nq!r}")
        if qmax < qmin:
            raise ValueError(f"q (qmin, qmax, nq): qmax {qmax} < qmin {qmin}")
        arr = np.linspace(qmin, qmax, int(nq))
    else:
        arr = np.asarray(q)
        if arr.dtype.kind not in "iuf":
            raise TypeError(f"q must be real numbers (1/Angstrom), got dtype {arr.dtype}")
        arr = arr.astype(np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"q must be a non-empty 1-D array (or a tuple (qmin, qmax, nq)), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("q must be finite")
    if np.any(arr < 0):
        raise ValueError("q must be >= 0 (1/Angstrom)")
    return np.ascontiguousarray(arr)


class GeometryPolarGrid:
    r"""Rings of constant q (Å⁻¹) sampled at their exact positions on a (possibly tilted) detector.

    Made by :meth:`Geometry.polar_grid`. Row ``i`` is the ring ``q_i`` (2θ_i), column ``j`` the azimuth
    ``φ_j = phi0 + 2πj/nphi`` (pyFAI's χ, see :class:`Geometry`). The sample is where the ray of (2θ_i, φ_j) meets the
    detector plane (xcca::conic::ConicGrid, computed on the fly in the C++ core); the nearest / bilinear rules, masks,
    stacks, threads and ``out=`` are those of :class:`xcca.PolarGrid`. An untilted geometry (rot1 = rot2 = rot3 = 0,
    square pixels, orientation 3) without corrections runs through :class:`xcca.PolarGrid` itself, with radii
    ``dist tan(2θ_i) / pixel`` around :attr:`Geometry.beam_center`, so its results are those of today's pixel-radius
    grid bit for bit (:attr:`engine` says which path runs). With ``flat`` or ``dark`` the conic engine always runs.

    Corrections are applied per sample during the remap: with ``solid_angle`` the value is divided by cos³ of the
    incidence angle at the sample, with ``polarization_factor`` by the polarisation factor at (2θ_i, φ_j); the
    multiplier is :attr:`correction`. ``flat`` / ``dark`` are applied per pixel as the samples read them, as in
    pyFAI: signal = ``(I - dark) · (1 / flat)`` in float64 (no extra pass over the frames, inputs untouched), then
    interpolation, then the per-sample factors; pixels with ``flat <= 0`` or a non-finite flat or dark are invalid
    (joined to the pixel mask). The per-pixel factors are :attr:`pixel_correction`. The exact operation order is
    :func:`xcca.reference.conic_flat_dark`.

    ``precision="float32"`` runs the same rule in single precision: the tables (sin/cos 2θ, directions, detector
    position and scale, polarisation terms) rounded once to float32, then every operation of the coordinates, the
    corrections, the nearest/bilinear rules and the pixel values (``float32(I)``) in float32, output float32 for any
    image dtype. It always runs the conic engine. The specification is the float64 one run in float32
    (:func:`xcca.reference.conic_coordinates`, :func:`~xcca.reference.conic_correction` and
    :func:`~xcca.reference.sample_at` with ``dtype=np.float32``); the results are bit-identical to it and for any
    thread count. Use it where speed matters more than the last digits: on a Pilatus-6M-sized tilted detector the
    sample positions are within about 5e-4 px of the float64 rule's (float32 maps rounded from exact positions, as
    ``cv2.remap`` takes them, are within 6e-5 px), values within about 1e-6 relative on smooth images and, on white
    noise of 0..1000 counts (the steepest case), within about 1 count (median 0.02; ``bench/geometry.py`` prints
    both). On machines without AVX-512 it runs about 1.7x faster than the float64 remap (8 float lanes per AVX2
    instruction instead of 4 doubles).

    Masks: True = valid pixel (LOKI's convention).
    Parameters
    ----------
    geometry : Geometry
        The detector geometry.
    q : array_like or (qmin, qmax, nq)
        Ring momenta in Å⁻¹, or an evenly spaced range.
    nphi : int
        Samples per ring.
    shape : (int, int), optional
        Detector shape (H, W) (default: the geometry's detector shape).
    phi0 : float
        First azimuth in radians.
    solid_angle : bool
        Divide by the solid-angle factor (cos³ of the incidence angle) of every sample.
    polarization_factor : float, optional
        Divide by pyFAI's polarisation factor with this factor (e.g. 0.99); None: no correction.
    polarization_axis_offset : float
        Azimuth (radians) of the polarisation plane, as in pyFAI.
    flat, dark : array_like, (H, W), optional
        Flat field and dark frame (real numbers of the image shape): every pixel read is ``(I - dark) / flat``.
    precision : {"float64", "float32"}
        Arithmetic of the remap (above).
    """

    def __init__(self, geometry: Geometry, q, nphi, shape=None, *, phi0=0.0, solid_angle=False,
                 polarization_factor=None, polarization_axis_offset=0.0, flat=None, dark=None,
                 precision="float64"):
        from .polar import PolarGrid, _positive_int
        if not isinstance(geometry, Geometry):
            raise TypeError(f"geometry must be an xcca.Geometry, got {type(geometry).__name__}")
        self._geometry = geometry
        self._shape = geometry._shape_arg(shape)
        self._nphi = _positive_int(nphi, "nphi")
        self._phi0 = _real(phi0, "phi0")
        self._q = _as_q(q)
        self._single = _precision(precision)
        if self._single and (flat is not None or dark is not None):
            raise ValueError("precision='float32' does not take flat= / dark= (they are applied in float64); use "
                             "precision='float64'")
        # what xcca.polar._remap writes: float32 always for a single-precision grid (None: by the image dtype)
        self._out_dtype = np.float32 if self._single else None
        from ._checks import check_memory  # the polar output and the sample tables are (nq, nphi) arrays
        check_memory(4 * 8.0 * self._nphi * max(1, self._q.size), f"nphi={self._nphi}")
        self._q.setflags(write=False)
        self._solid_angle = bool(solid_angle)
        self._pol = None if polarization_factor is None else _polarization_factor(polarization_factor)
        self._pol_offset = _real(polarization_axis_offset, "polarization_axis_offset")
        lo, hi = geometry._reach(self._shape)
        bad = (self._q < lo * (1 - 1e-12)) | (self._q > hi * (1 + 1e-12))
        if np.any(bad):
            raise ValueError(f"q = {self._q[bad][0]:.6g} 1/Angstrom is beyond the detector's reach: this geometry "
                             f"and shape {self._shape} reach q in [{lo:.6g}, {hi:.6g}] 1/Angstrom")
        self._tth = geometry.tth_from_q(self._q)
        self._tth.setflags(write=False)
        self._phi = self._phi0 + (2.0 * np.pi * np.arange(self._nphi, dtype=np.float64)) / self._nphi
        self._phi.setflags(write=False)
        self._flat_dark = self._prepare_flat_dark(flat, dark)
        g = geometry
        corrected = self._solid_angle or self._pol is not None
        corrected = corrected or self._flat_dark is not None  # flat/dark: always the conic core
        if not g.tilted and g.pixel1 == g.pixel2 and g.orientation == 3 and not corrected and \
                not self._single and np.all(self._tth < np.pi / 2):
            self.engine = "polar"
            radii = g.dist * np.tan(self._tth) / g.pixel1
            self._grid = PolarGrid(g.beam_center, radii, self._nphi, self._shape, phi0=self._phi0)
            self._core = None
        else:
            self.engine = "conic"
            self._grid = None
            self._args = self._conic_args()
            self._core = _core_conic(*self._args, *self._shape, single=self._single)
        self._valid_cache = {}

    # -- construction helpers
    def _conic_args(self):
        g = self._geometry
        R = g.rotation_matrix()
        sc, cc = np.sin(self._phi), np.cos(self._phi)
        a = sc[:, None] * R[0][None, :] + cc[:, None] * R[1][None, :]  # (nphi, 3): R^T (sin chi, cos chi, 0)
        b = R[2].copy()
        cx, cy = g.poni2 / g.pixel2 - 0.5, g.poni1 / g.pixel1 - 0.5
        ly, lx = g.dist / g.pixel1, g.dist / g.pixel2
        h, w = self._shape
        if g.orientation in (1, 2):  # pyFAI flips the row index: row = H - 1 - y
            cy, ly = (h - 1) - cy, -ly
        if g.orientation in (1, 4):
            cx, lx = (w - 1) - cx, -lx
        s, c = np.sin(self._tth), np.cos(self._tth)
        gpol = (self._pol * np.cos(2.0 * (self._phi + self._pol_offset)) if self._pol is not None
                else np.empty(0))
        return (s, c, np.ascontiguousarray(a), b, float(cx), float(cy), float(ly), float(lx), self._solid_angle,
                gpol)

    def _prepare_flat_dark(self, flat, dark):
        """((dark, 1/flat) float64 (H, W, 2), valid bool (H, W) or None if all valid), read-only, as
        xcca.reference.conic_flat_dark; None without flat and dark."""
        if flat is None and dark is None:
            return None
        arrs = {}
        for name, arr in (("flat", flat), ("dark", dark)):
            if arr is None:
                continue
            a = np.asarray(arr)
            if a.dtype.kind not in "iuf":
                raise TypeError(f"{name} must be real numbers, got dtype {a.dtype}")
            if a.shape != self._shape:
                raise ValueError(f"{name} must have the image shape {self._shape}, got {a.shape}")
            arrs[name] = a.astype(np.float64)  # a copy: the caller's array is never modified or kept
        f = arrs.get("flat", np.ones(self._shape))
        d = arrs.get("dark", np.zeros(self._shape))
        valid = np.isfinite(f) & (f > 0) & np.isfinite(d)
        n_bad = int(valid.size - np.count_nonzero(valid))
        if n_bad == valid.size:
            raise ValueError("flat= / dark= leave no valid pixel (every flat is <= 0 or non-finite, or every "
                             "dark non-finite)")
        if n_bad:
            _log.info("polar_grid: %d pixels with flat <= 0 or a non-finite flat or dark are masked", n_bad)
        fd = np.empty(self._shape + (2,))  # (dark, 1/flat) interleaved per pixel: what the core reads
        with np.errstate(divide="ignore", invalid="ignore"):
            fd[..., 1] = np.where(valid, 1.0 / np.where(valid, f, 1.0), 1.0)
        fd[..., 0] = np.where(valid, d, 0.0)
        for a in (fd, valid):
            a.setflags(write=False)
        return fd, (valid if n_bad else None)

    @property
    def pixel_correction(self):
        """The per-pixel flat/dark factors the remap applies: ``(dark, inverse_flat, valid)`` (float64, float64,
        bool, each (H, W), read-only; a pixel read has the value ``(I - dark) * inverse_flat``; invalid pixels have
        dark 0 and inverse flat 1 and are masked), or None without ``flat`` / ``dark``.
        """
        if self._flat_dark is None:
            return None
        fd, valid = self._flat_dark
        if valid is None:
            valid = np.ones(self._shape, bool)
            valid.setflags(write=False)
        return fd[..., 0], fd[..., 1], valid

    # -- properties
    geometry = property(lambda self: self._geometry, doc="The :class:`Geometry`.")
    q = property(lambda self: self._q, doc="Ring momenta in Å⁻¹ (read-only float64, one per output row).")
    tth = property(lambda self: self._tth, doc="Ring scattering angles 2θ in radians (read-only float64).")
    phi = property(lambda self: self._phi, doc="Azimuths φ_j = pyFAI's χ in radians (read-only float64).")
    nphi = property(lambda self: self._nphi, doc="Number of angles.")
    shape = property(lambda self: self._shape, doc="Image shape (H, W).")
    polar_shape = property(lambda self: (len(self._q), self._nphi), doc="(nq, nphi).")

    def cos_psi(self, q2=None) -> np.ndarray:
        """cos ψ at the correlator's lags Δ = 2πk/nphi for these rings (and q2, default the same), exact θ per ring.

        Parameters
        ----------
        q2 : array_like, optional
            Second rings' q in Å⁻¹ (broadcast against :attr:`q`).

        Returns
        -------
        numpy.ndarray, shape broadcast(q, q2).shape + (nphi,)
        """
        return self._geometry.cos_psi(self._nphi, self._q, q2)

    def coordinates(self) -> Tuple[np.ndarray, np.ndarray]:
        """Detector coordinates (x = column, y = row, (nq, nphi), float64, or float32 for ``precision="float32"``)
        of every sample, exactly those the remap samples at; NaN where the ray misses the detector plane. Pixel centres
        at integer coordinates, as :class:`xcca.PolarGrid`.

        Returns
        -------
        (numpy.ndarray, numpy.ndarray)
        """
        from . import reference
        if self.engine == "polar":
            r = self._grid.radii[:, None]
            cx, cy = self._grid.center
            return cx + r * np.cos(self._phi)[None, :], cy + r * np.sin(self._phi)[None, :]
        s, c, a, b, cx, cy, ly, lx, _, gpol = self._args
        x, y, den = reference.conic_coordinates(s, c, a, b, cx, cy, ly, lx,
                                                gpol if self._pol is not None else None, dtype=self.precision)
        miss = ~(den > 0)
        x[miss] = np.nan
        y[miss] = np.nan
        return x, y

    @property
    def correction(self) -> np.ndarray:
        """The multiplier applied to every sample, 1 / (solid angle × polarisation), (nq, nphi) in the grid's
        :attr:`precision` (all ones without corrections). Exactly the kernel's factor.
        """
        from . import reference
        dt = self.precision
        if self.engine == "polar" or not (self._solid_angle or self._pol is not None):
            return np.ones(self.polar_shape, dt)
        s, c, a, b, cx, cy, ly, lx, sa, gpol = self._args
        g = gpol if self._pol is not None else None
        _, _, den = reference.conic_coordinates(s, c, a, b, cx, cy, ly, lx, g, dtype=dt)
        return reference.conic_correction(c, den, g, sa, dtype=dt)

    @property
    def precision(self) -> type:
        """The remap's arithmetic: ``numpy.float64`` or ``numpy.float32`` (see the class docstring)."""
        return np.float32 if self._single else np.float64

    def __repr__(self) -> str:
        prec = ", precision='float32'" if self._single else ""
        return (f"GeometryPolarGrid(q=<{len(self._q)} from {self._q[0]:.6g} to {self._q[-1]:.6g} 1/A>, "
                f"nphi={self._nphi}, shape={self._shape}, engine={self.engine!r}{prec})")

    def remap(self, images, mask=None, method: str = "bilinear", *, fill: float = np.nan,
              mask_mode: str = "strict", out: Optional[np.ndarray] = None,
              n_threads: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Remap an image or a stack onto the rings; arguments and results as :meth:`xcca.PolarGrid.remap`.

        Parameters
        ----------
        images : array_like, shape (H, W) or (N, H, W)
            Real numbers; float64 and 64-bit integers give float64 output, everything else float32 (a grid with
            ``precision="float32"``: float32 for every dtype).
        mask : array_like of bool, shape (H, W), optional
            True = valid pixel (LOKI's convention), shared by the stack.
        method : {"bilinear", "nearest"}
        fill : float
            Value of invalid samples (default NaN).
        mask_mode : {"strict", "renormalize"}
        out : numpy.ndarray, optional
            C-contiguous output of shape (..., nq, nphi) and the output dtype.
        n_threads : int, optional
            None = all usable cores; the result does not depend on it.

        Returns
        -------
        polar : numpy.ndarray, shape (..., nq, nphi)
            Corrected samples (see :attr:`correction`); ``fill`` where invalid.
        polar_mask : numpy.ndarray of bool, shape (nq, nphi)
            True where the sample is valid.
        """
        from .polar import _remap
        if self._flat_dark is not None:
            fd, valid = self._flat_dark
            if valid is not None:
                from .polar import PolarGrid
                m = PolarGrid._as_mask(self, mask)
                mask = valid if m is None else (m & valid)
            return _remap(self, _FlatDarkCore(self._core, fd), images, mask, method, fill, mask_mode, out,
                          n_threads)
        if self.engine == "polar":
            return self._grid.remap(images, mask, method, fill=fill, mask_mode=mask_mode, out=out,
                                    n_threads=n_threads)
        return _remap(self, self._core, images, mask, method, fill, mask_mode, out, n_threads)

    def radial_profile(self, polar, polar_mask) -> np.ndarray:
        """Masked mean of each ring (see :meth:`xcca.PolarGrid.radial_profile`): I(q) on :attr:`q`.

        Parameters
        ----------
        polar : array_like, shape (..., nq, nphi)
        polar_mask : array_like of bool, True = valid sample.

        Returns
        -------
        numpy.ndarray, shape (..., nq)
        """
        from .polar import _polar_and_mask, _radial_mean
        p, m = _polar_and_mask(polar, polar_mask, self.polar_shape)
        return _radial_mean(p, m)


class _FlatDarkCore:
    """The compiled grid's ``remap`` with the flat/dark arrays bound (what :func:`xcca.polar._remap` calls)."""

    def __init__(self, core, dark_inv_flat):
        self._core, self._fd = core, dark_inv_flat

    def remap(self, images, mask, method, mask_mode, fill, out, out_mask, n_threads):
        self._core.remap_flat_dark(images, mask, method, mask_mode, fill, out, out_mask, n_threads, self._fd)


def _core_conic(s, c, a, b, cx, cy, ly, lx, sa, g, h, w, single=False):
    from . import _core
    return _core.ConicGrid(s, c, a.ravel(), b, cx, cy, ly, lx, sa, g, h, w, single)


def _precision(precision) -> bool:
    """True for "float32" (np.float32 accepted too), False for "float64"; ValueError otherwise."""
    try:
        dt = np.dtype(precision) if precision is not None and not isinstance(precision, (bool, np.bool_)) else None
    except TypeError:
        dt = None
    if dt == np.float32:
        return True
    if dt == np.float64:
        return False
    raise ValueError(f"precision must be 'float64' or 'float32', got {precision!r}")


# ----- calibration from powder rings -----

_PARAMS = ("dist", "poni1", "poni2", "rot1", "rot2", "rot3", "wavelength")


def _tth_at(rows, cols, p, pixel1, pixel2, orientation, shape):
    """2θ at fractional pixel coordinates (orientation-3 convention after the flips) for parameters p (7,)."""
    dist, poni1, poni2, r1, r2, r3 = p[:6]
    if orientation in (1, 2):
        rows = (shape[0] - 1) - rows
    if orientation in (1, 4):
        cols = (shape[1] - 1) - cols
    p1 = (rows + 0.5) * pixel1 - poni1
    p2 = (cols + 0.5) * pixel2 - poni2
    c1, c2, c3 = np.cos(r1), np.cos(r2), np.cos(r3)
    s1, s2, s3 = np.sin(r1), np.sin(r2), np.sin(r3)
    t1 = p1 * c2 * c3 + p2 * (c3 * s1 * s2 - c1 * s3) - dist * (c1 * c3 * s2 + s1 * s3)
    t2 = p1 * c2 * s3 + p2 * (c1 * c3 + s1 * s2 * s3) - dist * (-c3 * s1 + c1 * s2 * s3)
    t3 = p1 * s2 - p2 * c2 * s1 + dist * c1 * c2
    return np.arctan2(np.hypot(t1, t2), t3)


def ring_points(image, geometry: Geometry, d_spacings, *, mask=None, width: float = 0.02, nphi: int = 360,
                min_contrast: float = 0.2) -> np.ndarray:
    """Sub-pixel points on powder rings of known d-spacings, found around their positions in a guessed geometry.

    For each ring the image is remapped onto ``2·⌈...⌉`` fine q rows spanning ±``width`` (relative) around the
    ring's q in the guess; in each of ``nphi`` directions the peak row is located and refined by a parabola, and the
    detector position of that (q, φ) is a point on the true ring.

    Parameters
    ----------
    image : array_like (H, W)
        A powder image (e.g. Au, Ag behenate, LaB6).
    geometry : Geometry
        The starting geometry (with a wavelength).
    d_spacings : array_like of float
        d-spacings in Å of the rings to use (the user's standard).
    mask : array_like of bool (H, W), optional
        True = valid pixel (LOKI's convention).
    width : float
        Half-width of the search window, relative to each ring's q.
    nphi : int
        Directions per ring.
    min_contrast : float
        A direction is kept only when its peak stands above the window's median by this fraction of the image's
        intensity range in that window.

    Returns
    -------
    numpy.ndarray, shape (n, 3)
        ``(row, col, ring index)`` per point (fractional pixel coordinates, pixel centres at integers).
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"image must be 2-D, got shape {img.shape}")
    d = np.atleast_1d(np.asarray(d_spacings, dtype=np.float64))
    if d.ndim != 1 or d.size == 0 or not np.all(np.isfinite(d)) or np.any(d <= 0):
        raise ValueError("d_spacings must be a non-empty 1-D array of positive d-spacings in Angstrom")
    lam = geometry.wavelength_A
    pts = []
    lo, hi = geometry._reach(img.shape)
    for k, dk in enumerate(d):
        if lam / (2 * dk) >= 1:
            raise ValueError(f"d_spacings[{k}] = {dk} Angstrom is below lambda / 2: no such reflection")
        qk = 2 * np.pi / dk
        if not lo <= qk <= hi:
            _log.info("ring_points: ring %d (d = %g A, q = %g 1/A) is not on the detector", k, dk, qk)
            continue
        qs = np.linspace(max(qk * (1 - width), lo), min(qk * (1 + width), hi), 81)
        grid = geometry.polar_grid(qs, nphi, img.shape)
        p, pm = grid.remap(img, mask=mask, method="bilinear")
        x, y = grid.coordinates()
        good = pm.all(axis=0)
        prof = np.where(pm, p, np.nan)
        for j in np.flatnonzero(good):
            col = prof[:, j]
            i = int(np.argmax(col))
            rng_ = np.nanmax(col) - np.nanmin(col)
            if not (0 < i < len(col) - 1) or not rng_ > 0:
                continue
            if col[i] - np.median(col) < min_contrast * rng_:
                continue
            # centroid of the part above half maximum (over the window's median): a parabola through the top three
            # samples is biased towards pixel lines, because bilinear interpolation peaks on them
            base = np.median(col)
            half = base + 0.5 * (col[i] - base)
            lo_i = i
            while lo_i > 0 and col[lo_i - 1] > half:
                lo_i -= 1
            hi_i = i
            while hi_i < len(col) - 1 and col[hi_i + 1] > half:
                hi_i += 1
            if lo_i == 0 or hi_i == len(col) - 1:
                continue  # the peak is cut by the window
            w = col[lo_i:hi_i + 1] - half
            rows_ = np.arange(lo_i, hi_i + 1)
            c = float(np.sum(w * rows_) / np.sum(w))
            i0 = min(int(np.floor(c)), len(col) - 2)
            t = c - i0
            pts.append(((1 - t) * y[i0, j] + t * y[i0 + 1, j], (1 - t) * x[i0, j] + t * x[i0 + 1, j], k))
    if not pts:
        raise ValueError("ring_points: no ring found near the guessed geometry (check the guess and d_spacings)")
    return np.asarray(pts, dtype=np.float64)


def calibrate(image, geometry: Geometry, d_spacings, *, mask=None, refine=("dist", "poni1", "poni2", "rot1", "rot2"),
              width: float = 0.02, nphi: int = 360, iterations: int = 3):
    """Refine a geometry from powder rings of known d-spacings (distance, PONI/centre, tilts; optionally wavelength).

    Like LOKI's two-ring calibration and pyFAI's ``GeometryRefinement``: ring points are found around the rings of
    the current geometry (:func:`ring_points`), then the parameters in ``refine`` are fitted by least squares to
    ``2θ(point) = 2 arcsin(λ / 2d)``; points are re-extracted with the refined geometry ``iterations`` times.

    Parameters
    ----------
    image : array_like (H, W)
        A powder image of a known standard.
    geometry : Geometry
        Starting guess (with a wavelength).
    d_spacings : array_like of float
        d-spacings in Å of rings on the detector (e.g. LaB6, Ag behenate, Au), given by the user.
    mask : array_like of bool (H, W), optional
        True = valid pixel (LOKI's convention).
    refine : sequence of str
        Parameters to fit, from dist, poni1, poni2, rot1, rot2, rot3, wavelength. Refining the wavelength together
        with the distance needs rings at large angles (at small angles only their ratio is determined).
    width, nphi : float, int
        See :func:`ring_points`.
    iterations : int
        Rounds of point extraction and fit.

    Returns
    -------
    geometry : Geometry
        The refined geometry.
    points : numpy.ndarray (n, 3)
        The ring points (row, col, ring index) of the last round.
    rms : float
        Root-mean-square residual of 2θ in radians.
    """
    from scipy.optimize import least_squares
    bad = set(refine) - set(_PARAMS)
    if bad:
        raise ValueError(f"refine: unknown parameter(s) {sorted(bad)}; choose from {_PARAMS}")
    d = np.atleast_1d(np.asarray(d_spacings, dtype=np.float64))
    img = np.asarray(image)
    g = geometry
    free = [k for k in _PARAMS if k in refine]
    scale = {"dist": 1e-2, "poni1": 1e-3, "poni2": 1e-3, "rot1": 1e-3, "rot2": 1e-3, "rot3": 1e-3,
             "wavelength": 1e-12}
    pts = None
    rms = np.nan
    for _ in range(max(1, int(iterations))):
        pts = ring_points(img, g, d, mask=mask, width=width, nphi=nphi)
        rows, cols, ring = pts[:, 0], pts[:, 1], pts[:, 2].astype(int)
        base = np.array([g.dist, g.poni1, g.poni2, g.rot1, g.rot2, g.rot3, g.wavelength])
        idx = [_PARAMS.index(k) for k in free]
        sc = np.array([scale[k] for k in free])

        def resid(v):
            p = base.copy()
            p[idx] = base[idx] + v * sc
            target = 2 * np.arcsin(p[6] * 1e10 / (2 * d[ring]))
            return _tth_at(rows, cols, p, g.pixel1, g.pixel2, g.orientation, img.shape) - target

        sol = least_squares(resid, np.zeros(len(free)), method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15)
        p = base.copy()
        p[idx] = base[idx] + sol.x * sc
        g = g.replace(dist=p[0], poni1=p[1], poni2=p[2], rot1=p[3], rot2=p[4], rot3=p[5], wavelength=p[6])
        rms = float(np.sqrt(np.mean(sol.fun ** 2)))
    return g, pts, rms
