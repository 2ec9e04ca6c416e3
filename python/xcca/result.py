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
    extras : dict
        The reduced partial results of stages plugged into the run (see :mod:`xcca.stages`), by name; kept in
        memory, not written to the file.
    run_correlation : xcca.RunCorrelation or None
        With ``analyze(q_pairs=...)``: the run correlation C(q, q', Δφ) of the selected ring pairs over all good
        frames (cleaned rings; counts², with counts, harmonics and jackknife errors), else None.
    run_difference_correlation : xcca.RunCorrelation or None
        The same for the pair differences (combined masks), else None.
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
    extras: Dict[str, Any] = field(default_factory=dict)
    run_correlation: Any = None
    run_difference_correlation: Any = None

    _ARRAYS = ("radii", "phi", "delta", "difference_correlation", "difference_correlation_norm", "raw_correlation",
               "radial_profile", "mean_polar", "pairs", "pair_distances", "unpaired")
    _SHOTS = ("frames", "fit_rms", "fit_ok", "ring_intensity", "n_outliers")

    @property
    def n_frames(self) -> int:
        """Frames in the run (good + skipped)."""
        return int(self.parameters.get("n_frames", len(self.frames) + len(self.skipped)))

    def write(self, path: Union[str, Path], *, inputs=None) -> Path:
        """Write the result as a NeXus/HDF5 file, atomically (a temporary file renamed into place), never over an
        input file.

        Layout (``format = "xcca-correlation-result-2"``; every array says its unit)::

            /                            @default = "entry"
            /entry                       NXentry, @default = "difference_correlation"; title (the run), end_time
              process                    NXprocess: program, version, date, source_path (absolute), source_dataset,
                                         mask (absolute path or "array"), mask_sha256, parameters_json
                parameters               NXparameters: every analysis parameter as a field
                versions, timings        NXcollection (versions of the software; seconds per stage)
              difference_correlation     NXdata, @signal = "data": the difference correlation normalised by the
                                         squared run-mean ring intensity (dimensionless), @axes = [radius or q, delta];
                                         "unnormalized" (counts²) and "cos_psi" (if known) alongside
              raw_correlation            NXdata: mean per-shot correlation / squared ring mean (dimensionless)
              mean_polar                 NXdata: run-mean polar image (counts), axes [radius or q, phi]
              radial_profile             NXdata: run-mean ring intensity (counts), axis radius or q
              pairs                      NXcollection: pairs (M, 2) frame indices, distances, unpaired
              shots                      NXcollection: frames, fit_rms, fit_ok, ring_intensity, n_outliers
              skipped                    NXcollection: index, reason
              run_correlation            NXdata (with q_pairs only): C(q, q', Δφ) (counts²) of the selected ring
                                         pairs, @axes = [pair, delta]; data_errors (jackknife), counts, q_pairs
                                         (ring indices), radius_pairs (pixels), q_pair_values (1/Å), replicates
              run_correlation_harmonics  NXdata: C_n (complex, counts²), @axes = [pair, n]; data_errors
              run_difference_correlation[_harmonics]  the same for the pair differences

        Axes: ``radius`` in pixels, ``q`` in 1/Å (when known, the first axis of the plots), ``delta`` (Δφ) and ``phi``
        in radians. silx (``silx view``) and h5web plot the default NXdata without help. :meth:`read` reads this
        layout and the earlier flat one (format 1).

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

        from .files import check_not_input

        check_not_input(path, inputs)
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        version = str(self.versions.get("xcca", ""))
        try:
            with h5py.File(tmp, "w") as f:
                f.attrs["default"] = "entry"
                f.attrs["format"] = _FORMAT
                f.attrs["creator"] = f"xcca {version}"
                f.attrs["file_name"] = str(path.resolve())
                f.attrs["file_time"] = created
                f.attrs["HDF5_Version"] = h5py.version.hdf5_version
                f.attrs["h5py_version"] = h5py.version.version
                e = _group(f, "entry", "NXentry", default="difference_correlation")
                e.create_dataset("title", data=str(self.parameters.get("source", "")))
                e.create_dataset("end_time", data=created)
                e.create_dataset("program_name", data="xcca").attrs["version"] = version
                self._write_process(e, created)
                axis0 = "q" if self.q is not None else "radius"
                for name, data, title, units, ax1 in (
                        ("difference_correlation", self.difference_correlation_norm,
                         "difference correlation / <I>²", "", "delta"),
                        ("raw_correlation", self.raw_correlation, "raw correlation / <I>²", "", "delta"),
                        ("mean_polar", self.mean_polar, "mean polar image", "counts", "phi")):
                    g = _group(e, name, "NXdata", signal="data", axes=[axis0, ax1])
                    _field(g, "data", data, units, long_name=title)
                    self._write_axes(g, axis0)
                    g.attrs[f"{ax1}_indices"] = 1
                    if ax1 == "delta":
                        _field(g, "delta", self.delta, "rad", long_name="Δφ (rad)")
                    else:
                        _field(g, "phi", self.phi, "rad", long_name="φ (rad)")
                    g.create_dataset("title", data=title)
                dc = e["difference_correlation"]
                _field(dc, "unnormalized", self.difference_correlation, "counts^2",
                       long_name="difference correlation (counts²)")
                dc.attrs["auxiliary_signals"] = np.array(["unnormalized"], dtype=h5py.string_dtype())
                if self.cos_psi is not None:
                    for name in ("difference_correlation", "raw_correlation"):
                        _field(e[name], "cos_psi", self.cos_psi, "", long_name="cos ψ")
                g = _group(e, "radial_profile", "NXdata", signal="data", axes=[axis0])
                _field(g, "data", self.radial_profile, "counts", long_name="mean ring intensity")
                self._write_axes(g, axis0)
                p = _group(e, "pairs", "NXcollection")
                _field(p, "pairs", self.pairs, "", long_name="frame indices of the pairs")
                _field(p, "distances", self.pair_distances, "counts", long_name="profile distance of the pairs")
                _field(p, "unpaired", self.unpaired, "", long_name="frames without a pair")
                sh = _group(e, "shots", "NXcollection")
                for name, units in zip(self._SHOTS, ("", "counts", "", "counts", "")):
                    _field(sh, name, getattr(self, name), units)
                _write_run_correlations(self, e)
                sk = _group(e, "skipped", "NXcollection")
                sk.create_dataset("index", data=np.asarray([i for i, _ in self.skipped], dtype=np.int64))
                sk.create_dataset("reason", data=np.asarray([r for _, r in self.skipped], dtype=object),
                                  dtype=h5py.string_dtype())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return path

    def _write_axes(self, g, axis0: str) -> None:
        derived = "geometry" in (self.parameters or {})  # a geometry run: radii are pixel-equivalent labels of q
        _field(g, "radius", self.radii, "pixel", long_name="pixel-equivalent radius dist·tan(2θ)/pixel1 (derived)"
               if derived else "radius (pixels)")
        g.attrs["radius_indices"] = 0
        if self.q is not None:
            _field(g, "q", self.q, "1/angstrom", long_name="q (1/Å)")
            g.attrs["q_indices"] = 0

    def _write_process(self, e, created: str) -> None:
        import h5py

        pr = _group(e, "process", "NXprocess")
        pr.create_dataset("program", data="xcca")
        pr.create_dataset("version", data=str(self.versions.get("xcca", "")))
        pr.create_dataset("date", data=created)
        par = self.parameters
        src = par.get("source_path", par.get("source", ""))
        if isinstance(src, (list, tuple)):
            pr.create_dataset("source_path", data=np.asarray(src, dtype=object), dtype=h5py.string_dtype())
        else:
            pr.create_dataset("source_path", data=str(src))
        if par.get("source_dataset"):
            pr.create_dataset("source_dataset", data=str(par["source_dataset"]))
        pr.create_dataset("mask", data=str(par.get("mask")))
        if par.get("mask_sha256"):
            pr.create_dataset("mask_sha256", data=str(par["mask_sha256"]))
        pr.create_dataset("parameters_json", data=json.dumps(par, default=_json_default))
        g = _group(pr, "parameters", "NXparameters")
        _write_fields(g, par)
        v = _group(pr, "versions", "NXcollection")
        for k, val in self.versions.items():
            v.create_dataset(k, data=str(val))
        t = _group(pr, "timings", "NXcollection")
        for k, val in self.timings.items():
            t.create_dataset(k, data=float(val)).attrs["units"] = "s"
        pr.create_dataset("timings_json", data=json.dumps(self.timings))

    @classmethod
    def read(cls, path: Union[str, Path]) -> "AnalysisResult":
        """Read a result written by :meth:`write`, in the NeXus layout (format 2) or the earlier flat one (format 1).

        Parameters
        ----------
        path : str or Path
            The HDF5 result file.

        Returns
        -------
        AnalysisResult

        Raises
        ------
        ValueError
            The file is not an xcca correlation result.
        """
        import h5py

        with h5py.File(path, "r") as f:
            fmt = f.attrs.get("format")
            if isinstance(fmt, bytes):
                fmt = fmt.decode()
            if fmt == "xcca-correlation-result-1":
                return cls._read_v1(f)
            if fmt != _FORMAT:
                raise ValueError(f"{path} is not an xcca correlation result")
            e = f["entry"]
            dc, mp = e["difference_correlation"], e["mean_polar"]
            kw = dict(radii=dc["radius"][()], phi=mp["phi"][()], delta=dc["delta"][()],
                      difference_correlation=dc["unnormalized"][()], difference_correlation_norm=dc["data"][()],
                      raw_correlation=e["raw_correlation/data"][()], radial_profile=e["radial_profile/data"][()],
                      mean_polar=mp["data"][()], pairs=e["pairs/pairs"][()], pair_distances=e["pairs/distances"][()],
                      unpaired=e["pairs/unpaired"][()])
            kw.update({name: e["shots"][name][()] for name in cls._SHOTS})
            kw["q"] = dc["q"][()] if "q" in dc else None
            kw["cos_psi"] = dc["cos_psi"][()] if "cos_psi" in dc else None
            kw["skipped"] = _read_skipped(e["skipped"])
            pr = e["process"]
            kw["parameters"] = json.loads(_text(pr["parameters_json"][()]))
            kw["versions"] = {k: _text(v[()]) for k, v in pr["versions"].items()}
            kw["timings"] = json.loads(_text(pr["timings_json"][()])) if "timings_json" in pr else {}
            kw.update(_read_run_correlations(e))
        return cls(**kw)

    @classmethod
    def _read_v1(cls, f) -> "AnalysisResult":
        kw = {name: f[name][()] for name in cls._ARRAYS}
        kw.update({name: f["shots"][name][()] for name in cls._SHOTS})
        kw["q"] = f["q"][()] if "q" in f else None
        kw["cos_psi"] = f["cos_psi"][()] if "cos_psi" in f else None
        kw["skipped"] = _read_skipped(f["skipped"])
        kw["parameters"] = json.loads(f.attrs["parameters"])
        kw["versions"] = json.loads(f.attrs["versions"])
        kw["timings"] = json.loads(f.attrs.get("timings", "{}"))
        return cls(**kw)


_FORMAT = "xcca-correlation-result-2"


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _read_skipped(g) -> List[Tuple[int, str]]:
    reasons = [_text(r) for r in g["reason"][()]]
    return list(zip(g["index"][()].tolist(), reasons))


def _group(parent, name: str, nx_class: str, **attrs):
    import h5py

    g = parent.create_group(name)
    g.attrs["NX_class"] = nx_class
    for k, v in attrs.items():
        g.attrs[k] = np.array(v, dtype=h5py.string_dtype()) if isinstance(v, list) else v
    return g


def _field(g, name: str, data, units: str, long_name: Optional[str] = None):
    d = g.create_dataset(name, data=np.asarray(data))
    d.attrs["units"] = units
    if long_name:
        d.attrs["long_name"] = long_name
    return d


# Units of the fields of parameter sub-groups (the PONI parameters of a geometry run: pyFAI's metres and radians).
_SUB_UNITS = {"geometry": dict(dist="m", poni1="m", poni2="m", rot1="rad", rot2="rad", rot3="rad", pixel1="m",
                               pixel2="m", wavelength="m")}


def _write_fields(g, values: Dict[str, Any], units: Optional[Dict[str, str]] = None) -> None:
    """Parameters as NeXus fields: numbers and strings as scalars, lists as arrays, dicts as sub-groups; None is
    left out (``parameters_json`` keeps the exact values)."""
    for k, v in values.items():
        if v is None:
            continue
        if isinstance(v, dict):
            _write_fields(_group(g, k, "NXcollection"), v, _SUB_UNITS.get(k))
            continue
        if isinstance(v, (list, tuple)) and any(isinstance(x, str) for x in v):
            import h5py

            g.create_dataset(k, data=np.asarray([str(x) for x in v], dtype=object), dtype=h5py.string_dtype())
            continue
        try:
            arr = np.asarray(v)
        except Exception:  # noqa: BLE001 - an odd value is recorded as its text
            arr = np.asarray(str(v))
        if arr.dtype.kind in "biuf" or arr.dtype.kind == "U":
            g.create_dataset(k, data=arr if arr.dtype.kind != "U" else str(v))
        else:
            g.create_dataset(k, data=str(v))
        if units is not None:
            if k in units:
                g[k].attrs["units"] = units[k]
            continue
        if k in ("center", "qmin", "qmax", "ring_for_pairing"):
            g[k].attrs["units"] = "pixel"
        elif k in ("q", "ring_for_pairing_q"):
            g[k].attrs["units"] = "1/angstrom"
        elif k == "wavelength":
            g[k].attrs["units"] = "angstrom"


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


_RUNCORR_GROUPS = (("run_correlation", "run correlation C(q, q', Δφ)"),
                   ("run_difference_correlation", "run difference correlation C(q, q', Δφ)"))


def _write_run_correlations(res: "AnalysisResult", e) -> None:
    """The run correlations (``analyze(q_pairs=...)``) as NXdata groups: C over [q pair, Δφ] and C_n over
    [q pair, n], with jackknife errors, counts and the pair axes in ring index, pixels and 1/Å."""
    import h5py

    for name, title in _RUNCORR_GROUPS:
        rc = getattr(res, name, None)
        if rc is None:
            continue
        units = f"({rc.units})^2" if rc.units != "counts" else "counts^2"
        npairs = len(rc.q_pairs)
        g = _group(e, name, "NXdata", signal="data", axes=["pair", "delta"])
        g.attrs["pair_indices"] = 0
        g.attrs["delta_indices"] = 1
        g.attrs["estimator"] = rc.estimator
        g.attrs["n_shots"] = int(rc.n_shots)
        _field(g, "data", rc.correlation, units, long_name=title + f" ({units})")
        _field(g, "data_errors", rc.error, units, long_name="jackknife standard error")
        _field(g, "pair", np.arange(npairs), "", long_name="q pair index (row of q_pairs)")
        _field(g, "delta", rc.delta, "rad", long_name="Δφ (rad)")
        _field(g, "counts", rc.counts, "sample pairs", long_name="valid sample pairs summed over the shots")
        _field(g, "q_pairs", rc.q_pairs, "", long_name="ring indices (q, q') of each pair")
        _field(g, "radius_pairs", np.asarray(res.radii)[rc.q_pairs], "pixel", long_name="radii (q, q') (pixels)")
        if rc.q is not None:
            _field(g, "q_pair_values", np.asarray(rc.q)[rc.q_pairs], "1/angstrom", long_name="(q, q') (1/Å)")
        if rc.replicates is not None:  # kept only when asked for (RunCorrelator.result(replicates=True))
            _field(g, "replicates", rc.replicates, units, long_name="leave-one-block-out estimates")
        _field(g, "block_shots", rc.block_shots, "", long_name="shots per jackknife block")
        g.create_dataset("title", data=title)
        h = _group(e, name + "_harmonics", "NXdata", signal="data", axes=["pair", "n"])
        h.attrs["pair_indices"] = 0
        h.attrs["n_indices"] = 1
        harm = rc.harmonics()
        _field(h, "data", harm, units, long_name="C_n = rfft(C)/nphi (complex)")
        if rc.replicates is not None:
            _field(h, "data_errors", rc.harmonics_error(), units,
                   long_name="jackknife errors: real part of Re C_n, imaginary part of Im C_n")
        _field(h, "n", np.arange(harm.shape[1]), "", long_name="harmonic n")
        _field(h, "pair", np.arange(npairs), "", long_name="q pair index (row of q_pairs)")
        h["q_pairs"] = h5py.SoftLink(g["q_pairs"].name)
        h.create_dataset("title", data=title.replace("C(q, q', Δφ)", "harmonics C_n(q, q')"))


def _read_run_correlations(e) -> Dict[str, Any]:
    """The run correlations of a result file (none in files without them)."""
    from .runcorr import RunCorrelation

    out: Dict[str, Any] = {}
    for name, _ in _RUNCORR_GROUPS:
        if name not in e:
            continue
        g = e[name]
        units = _text(g["data"].attrs.get("units", "counts^2"))
        base = "counts" if units == "counts^2" else units[1:-3] if units.startswith("(") else units
        out[name] = RunCorrelation(
            correlation=g["data"][()], error=g["data_errors"][()], counts=g["counts"][()],
            q_pairs=g["q_pairs"][()], n_shots=int(g.attrs["n_shots"]), block_shots=g["block_shots"][()],
            replicates=g["replicates"][()] if "replicates" in g else None, estimator=_text(g.attrs["estimator"]),
            units=base,
            q=e["difference_correlation/q"][()] if "q" in e["difference_correlation"] else None)
    return out
