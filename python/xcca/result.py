"""The result of an analysis run and its file: :class:`AnalysisResult` (write, read).

The last step of the data flow: sources -> stages -> drivers -> result (see :mod:`xcca.pipeline`).
"""
from __future__ import annotations

import json
import os
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
    radii : (nq,) radii in pixels; ``q`` (nq,) momentum transfer or None.
    phi, delta : (nphi,) angles and correlation lags in radians (the same grid).
    cos_psi : (nq, nphi) cos ψ for each ring and lag, or None without wavelength and q.
    difference_correlation : (nq, nphi) mean over pairs of the masked autocorrelation of the pair difference
        (counts²), and ``difference_correlation_norm`` the same divided by the squared run-mean ring intensity.
    raw_correlation : (nq, nphi) mean over shots of the masked autocorrelation divided by each shot's squared ring
        mean (dimensionless, ~1 + modulation).
    radial_profile : (nq,) run-mean ring intensity; ``mean_polar`` (nq, nphi) run-mean polar image (NaN where never
        valid).
    pairs : (M, 2) frame indices of the pairs; ``pair_distances`` (M,); ``unpaired`` frame indices.
    frames : (G,) indices of the good frames; ``fit_rms``, ``fit_ok``, ``ring_intensity``, ``n_outliers`` per good
        frame.
    skipped : list of (frame index, reason) of the corrupt frames.
    parameters, versions : dicts of the analysis parameters and software versions.
    timings : seconds per stage.
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

    def write(self, path: Union[str, Path]) -> Path:
        """Write the result to an HDF5 file, atomically (a temporary file renamed into place).

        Layout: datasets ``/radii``, ``/phi``, ``/delta``, ``/q`` and ``/cos_psi`` (if known),
        ``/difference_correlation``, ``/difference_correlation_norm``, ``/raw_correlation``, ``/radial_profile``,
        ``/mean_polar``, ``/pairs``, ``/pair_distances``, ``/unpaired``; group ``/shots`` (``frames``, ``fit_rms``,
        ``fit_ok``, ``ring_intensity``, ``n_outliers``); group ``/skipped`` (``index``, ``reason``); root attributes
        ``format``, ``parameters`` (JSON), ``versions`` (JSON), ``timings`` (JSON), ``created``.
        """
        import h5py

        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        try:
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
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return path

    @classmethod
    def read(cls, path: Union[str, Path]) -> "AnalysisResult":
        """Read a result written by :meth:`write`."""
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
