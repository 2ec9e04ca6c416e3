"""The result of an analysis run and its file: :class:`AnalysisResult` (write, read).

The last step of the data flow: sources -> stages -> drivers -> result (see :mod:`xcca.pipeline`).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

__all__ = ["AnalysisResult"]


@dataclass
class AnalysisResult:
    """Result of :func:`analyze` (see :meth:`write` for the HDF5 layout).

    Attributes
    ----------
    radii : ndarray, (nq,)
        Ring radii in pixels.
    q : ndarray, (nq,), or None
        Momentum transfer of each ring (1/Å), if known.
    phi, delta : ndarray, (nphi,)
        Angles and correlation lags in radians (the same grid).
    cos_psi : ndarray, (nq, nphi), or None
        cos ψ for each ring and lag, or None without wavelength and q.
    difference_correlation : ndarray, (nq, nphi)
        Mean over pairs of the masked autocorrelation of the pair difference (counts²).
    difference_correlation_norm : ndarray, (nq, nphi)
        The same divided by the squared run-mean ring intensity (dimensionless).
    raw_correlation : ndarray, (nq, nphi)
        Mean over shots of the masked autocorrelation divided by each shot's squared ring mean (dimensionless,
        ~1 + modulation).
    radial_profile : ndarray, (nq,)
        Run-mean ring intensity (counts).
    mean_polar : ndarray, (nq, nphi)
        Run-mean polar image (counts; NaN where never valid).
    pairs : ndarray of int, (M, 2)
        Frame indices of the pairs.
    pair_distances : ndarray, (M,)
        Distance of the paired shots' ring-profile features.
    unpaired : ndarray of int
        Good frames left without a partner.
    frames : ndarray of int, (G,)
        Indices of the good frames.
    fit_rms, fit_ok, ring_intensity, n_outliers : ndarray, (G,)
        Per good frame: rms of the ring-profile fit, whether it succeeded, mean intensity of the pairing ring and
        number of outlier samples removed.
    skipped : list of (int, str)
        (frame index, reason) of the corrupt frames.
    parameters, versions : dict
        The analysis parameters and software versions.
    timings : dict
        Seconds per stage.
    """

    radii: np.ndarray
    phi: np.ndarray
    delta: np.ndarray
    difference_correlation: np.ndarray
    difference_correlation_norm: np.ndarray
    raw_correlation: np.ndarray
    radial_profile: np.ndarray
    mean_polar: np.ndarray
    pairs: np.ndarray
    pair_distances: np.ndarray
    unpaired: np.ndarray
    frames: np.ndarray
    fit_rms: np.ndarray
    fit_ok: np.ndarray
    ring_intensity: np.ndarray
    n_outliers: np.ndarray
    skipped: List[Tuple[int, str]]
    parameters: Dict[str, Any]
    versions: Dict[str, str]
    q: Optional[np.ndarray] = None
    cos_psi: Optional[np.ndarray] = None
    timings: Dict[str, float] = field(default_factory=dict)

    _ARRAYS = ("radii", "phi", "delta", "difference_correlation", "difference_correlation_norm", "raw_correlation",
               "radial_profile", "mean_polar", "pairs", "pair_distances", "unpaired")
    _SHOTS = ("frames", "fit_rms", "fit_ok", "ring_intensity", "n_outliers")

    @property
    def n_frames(self) -> int:
        """Frames in the run (good + skipped)."""
        return int(self.parameters.get("n_frames", len(self.frames) + len(self.skipped)))

    def write(self, path: Union[str, Path], *, inputs=None) -> Path:
        """Write the result to an HDF5 file, atomically (a temporary file renamed into place), never over an input.

        Layout: datasets ``/radii``, ``/phi``, ``/delta``, ``/q`` and ``/cos_psi`` (if known),
        ``/difference_correlation``, ``/difference_correlation_norm``, ``/raw_correlation``, ``/radial_profile``,
        ``/mean_polar``, ``/pairs``, ``/pair_distances``, ``/unpaired``; group ``/shots`` (``frames``, ``fit_rms``,
        ``fit_ok``, ``ring_intensity``, ``n_outliers``); group ``/skipped`` (``index``, ``reason``); root attributes
        ``format``, ``parameters`` (JSON), ``versions`` (JSON), ``timings`` (JSON), ``created``.

        Parameters
        ----------
        path : str or Path
            The HDF5 file to write (replaced only once the new file is complete).
        inputs : path-like or sequence of them, optional
            Files the result was computed from (the run, the mask file): `path` must not be one of them (also not
            through a symlink or hard link); checked before anything is written.

        Returns
        -------
        Path
            `path`.

        Raises
        ------
        ValueError
            `path` is one of `inputs` (:class:`xcca.files.OutputIsInputError`).
        """
        import h5py

        from .files import atomic_write

        path = Path(path)
        with atomic_write(path, inputs=inputs) as tmp:
            with h5py.File(tmp, "w") as f:
                for name in self._ARRAYS:
                    f.create_dataset(name, data=np.asarray(getattr(self, name)))
                if self.q is not None:
                    f.create_dataset("q", data=np.asarray(self.q))
                if self.cos_psi is not None:
                    f.create_dataset("cos_psi", data=np.asarray(self.cos_psi))
                g = f.create_group("shots")
                for name in self._SHOTS:
                    g.create_dataset(name, data=np.asarray(getattr(self, name)))
                s = f.create_group("skipped")
                s.create_dataset("index", data=np.asarray([i for i, _ in self.skipped], dtype=np.int64))
                s.create_dataset("reason", data=np.asarray([r for _, r in self.skipped], dtype=object),
                                 dtype=h5py.string_dtype())
                f.attrs["format"] = "xcca-correlation-result-1"
                f.attrs["parameters"] = json.dumps(self.parameters, default=_json_default)
                f.attrs["versions"] = json.dumps(self.versions)
                f.attrs["timings"] = json.dumps(self.timings)
                f.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return path

    @classmethod
    def read(cls, path: Union[str, Path]) -> "AnalysisResult":
        """Read a result written by :meth:`write`.

        Parameters
        ----------
        path : str or Path
            The HDF5 result file.

        Returns
        -------
        AnalysisResult
        """
        import h5py

        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != "xcca-correlation-result-1":
                raise ValueError(f"{path} is not an xcca correlation result")
            kw = {name: f[name][()] for name in cls._ARRAYS}
            kw.update({name: f["shots"][name][()] for name in cls._SHOTS})
            kw["q"] = f["q"][()] if "q" in f else None
            kw["cos_psi"] = f["cos_psi"][()] if "cos_psi" in f else None
            reasons = [r.decode() if isinstance(r, bytes) else str(r) for r in f["skipped/reason"][()]]
            kw["skipped"] = list(zip(f["skipped/index"][()].tolist(), reasons))
            kw["parameters"] = json.loads(f.attrs["parameters"])
            kw["versions"] = json.loads(f.attrs["versions"])
            kw["timings"] = json.loads(f.attrs.get("timings", "{}"))
        return cls(**kw)


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    return str(o)


def _versions() -> Dict[str, str]:
    import h5py
    import scipy

    from . import __version__

    return {"xcca": __version__, "numpy": np.__version__, "scipy": scipy.__version__, "h5py": h5py.__version__}
