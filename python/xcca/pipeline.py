"""The whole correlation analysis of a run, streamed: detector frames -> polar rings -> pairs -> difference correlations.

:func:`analyze` reads frames in chunks from an HDF5 stack (N, H, W), a list of image files or an in-memory array,
never holding the run, and makes two passes over it:

1. per frame: polar remap -> per-ring outlier removal -> ring-profile fit of the pairing ring; the masked angular
   autocorrelation of every ring is accumulated (the *raw* correlation), with the mean polar image and the radial
   profile; the fitted profiles are kept as low-dimensional features (O(N·D) memory, D = deg + 1);
2. pairing of shots with similar ring profiles; then, for each pair, the difference of the two polar images (with the
   combined mask) is correlated and accumulated (the *difference* correlation, which cancels detector artefacts).

This module is the local driver. The data flow reads in the module names:

- :mod:`xcca.sources` — frames in (:func:`~xcca.sources.open_source`: HDF5 stacks, arrays, lists of image files;
  :func:`~xcca.sources.load_mask`);
- :mod:`xcca.stages` — pure functions over a chunk (``polar_stage``, ``clean_stage``, ``profile_stage``,
  ``autocorr_stage``, ``pair_stage``, ``diffcorr_pairs_stage``) whose partial sums are :class:`~xcca.stages.Accumulator`
  objects that add up, so the same stages can be mapped over a cluster and reduced;
- :mod:`xcca.kernels` — the kernel set the stages call: ``backend="xcca"`` (the compiled kernels of this package) or
  ``"numpy"`` (:class:`xcca.reference.PipelineKernels`, the same pipeline in NumPy/SciPy, for comparison and testing);
- :mod:`xcca.pipeline` (here) — :func:`analyze`, which streams a run through the stages in one process;
- :mod:`xcca.result` — :class:`~xcca.result.AnalysisResult` and its file.

The public names of the stages and sources are re-exported here, as before the split.

Corrupt frames (unreadable, wrong shape, no nonzero valid pixel, non-finite valid pixels) are skipped and listed in
the result with the reason, never fatal. Masks: True = valid pixel (LOKI's convention).

Conventions: centre ``(x, y)`` in pixels with x along columns; radii in pixels; ``φ_j = 2πj/nphi``; lag ``k`` is
``Δ = 2πk/nphi``; ``cos ψ = cos Δ cos²θ + sin²θ`` with ``θ = arcsin(qλ/4π)`` (q and λ in reciprocal units, e.g.
1/Å and Å).
"""
from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from .kernels import make_kernels
from .result import AnalysisResult, _versions
from .sources import FrameSource, load_mask, mask_digest, open_source, source_location
from .stages import (Accumulator, ChunkResult, RunPlan, TreeSum, autocorr_stage, blas_single_thread, check_frames, clean_stage,
                     diffcorr_pairs_stage, diffcorr_stage, find_center, outlier_mask, pair_stage, pass1_chunk,
                     pass2_chunk, polar_stage, profile_stage)

__all__ = [
    "analyze",
    "AnalysisResult",
    "Accumulator",
    "FrameSource",
    "open_source",
    "load_mask",
    "find_center",
    "check_frames",
    "polar_stage",
    "clean_stage",
    "profile_stage",
    "autocorr_stage",
    "pair_stage",
    "diffcorr_stage",
    "diffcorr_pairs_stage",
    "outlier_mask",
    "make_kernels",
]

_log = logging.getLogger(__name__)


def _cos_psi(q: np.ndarray, wavelength: float, nphi: int) -> np.ndarray:
    theta = np.arcsin(np.asarray(q, dtype=np.float64) * wavelength / (4 * np.pi))
    delta = 2 * np.pi * np.arange(nphi) / nphi
    return np.cos(delta)[None, :] * np.cos(theta)[:, None] ** 2 + np.sin(theta)[:, None] ** 2


def _validate(center, qmin, qmax, nphi, shape, wavelength, q, chunk, outlier_thresh, deg, overlap):
    h, w = shape
    try:
        cx, cy = (float(c) for c in center)
    except (TypeError, ValueError):
        raise ValueError(f"center must be (x, y) or 'auto', got {center!r}") from None
    if not (math.isfinite(cx) and math.isfinite(cy)):
        raise ValueError(f"center must be finite, got ({cx}, {cy})")
    if not (-0.5 <= cx < w - 0.5 and -0.5 <= cy < h - 0.5):
        raise ValueError(f"center ({cx}, {cy}) is outside the {h}x{w} frames")
    for name, v in (("qmin", qmin), ("qmax", qmax)):
        if not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a finite radius >= 0 in pixels, got {v!r}")
    if qmin >= qmax:
        raise ValueError(f"qmin must be < qmax, got qmin={qmin}, qmax={qmax}")
    corner = max(math.hypot(x - cx, y - cy) for x in (0, w - 1) for y in (0, h - 1))
    if qmin >= corner:
        raise ValueError(f"qmin={qmin} px lies beyond the detector (farthest corner at {corner:.1f} px)")
    _validate_run(nphi, chunk, outlier_thresh, deg, overlap)
    if wavelength is not None:
        if not isinstance(wavelength, (int, float, np.integer, np.floating)) or not wavelength > 0 \
                or not math.isfinite(wavelength):
            raise ValueError(f"wavelength must be > 0, got {wavelength!r}")
        if q is None:
            raise ValueError("wavelength given without q: give q (one value or one per radius) to compute cos ψ")
    if q is not None and wavelength is None:
        raise ValueError("q given without wavelength: both are needed to compute cos ψ")
    return cx, cy


def _validate_run(nphi, chunk, outlier_thresh, deg, overlap):
    """The checks of the parameters that do not depend on how the rings are defined."""
    if int(nphi) != nphi or nphi < 2:
        raise ValueError(f"nphi must be an integer >= 2, got {nphi!r}")
    if int(chunk) != chunk or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    if outlier_thresh is not None and not outlier_thresh > 0:
        raise ValueError(f"outlier_thresh must be > 0 or None, got {outlier_thresh!r}")
    if int(deg) != deg or deg < 0:
        raise ValueError(f"deg must be an integer >= 0, got {deg!r}")
    if not 0 <= overlap <= 0.5:
        raise ValueError(f"overlap must lie in [0, 0.5], got {overlap!r}")


def analyze(
    source,
    *,
    center: Union[Sequence[float], str, None] = None,
    qmin: Optional[float] = None,
    qmax: Optional[float] = None,
    nphi: int,
    mask=None,
    wavelength: Optional[float] = None,
    q=None,
    ring_for_pairing: Optional[float] = None,
    pair_groups=None,
    dataset: Optional[str] = None,
    chunk: int = 16,
    outlier_thresh: Optional[float] = 6.0,
    deg: int = 15,
    overlap: float = 0.2,
    backend: str = "xcca",
    n_threads: Optional[int] = None,
    output: Optional[Union[str, Path]] = None,
    progress: Union[bool, Callable[[str, int, int], None]] = False,
    client=None,
    geometry=None,
    polarization_factor: Optional[float] = None,
    solid_angle: bool = False,
    flat=None,
    dark=None,
    q_pairs=None,
    estimator: str = "pooled",
    blocks: int = 2,
    precision: str = "float64",
) -> AnalysisResult:
    """Run the whole correlation analysis of a run, streaming its frames.

    Parameters
    ----------
    source : str, Path, h5py.Dataset, array or list of paths
        The frames: an HDF5 file with ``dataset=`` (or ``"run.h5::/entry/data"``) holding (N, H, W), an open
        dataset, an (N, H, W) array, or a list of image files (see :func:`open_source`).
    center : (x, y) or "auto"
        Beam centre in pixels (x along columns). ``"auto"`` fits the sharpest ring of the first chunk's mean image
        (:func:`find_center`). Required without ``geometry``; refused with it.
    qmin, qmax : float
        Radial range in pixels: rings at radii ``arange(qmin, qmax)``. Required without ``geometry``; refused with
        it (give ``q`` in 1/Å).
    nphi : int
        Angular samples per ring (>= 2).
    mask : array_like of bool (H, W) or str, optional
        True = valid pixel, shared by all frames; a path to a ``.npy`` file or ``file.h5::/dataset`` is read.
    wavelength : float, optional
        X-ray wavelength; with ``q`` it gives the cos ψ axis. Units: q·λ dimensionless (1/Å and Å).
    q : float or array_like (nq,), optional
        Momentum transfer of the rings: one value (a narrow band around one ring) or one per radius. With
        ``geometry``: the rings themselves, in 1/Å, as ``(qmin, qmax, nq)`` (``linspace``) or an array.
    pair_groups : array_like (N,) or str, optional
        A key per frame (AGIPD memory cell, pulse-energy bin, ...): shots are paired only within equal keys
        (:func:`xcca.pair_shots` with ``groups``). A string is an HDF5 dataset path in the run's file
        (``/entry/cell_id``) or ``file.h5::/path`` in another file.
    ring_for_pairing : float, optional
        Radius (pixels) of the ring whose fitted profile pairs the shots (with ``geometry``: its q in 1/Å); default
        the ring with the highest mean intensity in the first chunk.
    dataset : str, optional
        HDF5 dataset of the frame stack.
    chunk : int
        Frames per chunk: memory is O(chunk·H·W + chunk·nq·nphi), independent of the number of frames.
    outlier_thresh : float or None
        Per-ring modified z-score threshold (LOKI's ``is_outlier``; 3.5 is LOKI's default, the milder 6 here keeps
        genuine speckle and drops hot pixels and sharp peaks); None keeps every sample.
    deg, overlap : int, float
        Degree and periodic padding of the ring-profile fit (LOKI's ``fit_periodic``).
    backend : {"xcca", "numpy"}
        Compiled kernels or the NumPy/SciPy baseline.
    n_threads : int, optional
        Threads of the compiled kernels (default: all usable cores).
    output : str or Path, optional
        Write the result there (HDF5, see :meth:`AnalysisResult.write`), atomically. An output that is the run or
        the mask file (also through a symlink or hard link) is refused with a ValueError before anything is read.
    progress : bool or callable
        True shows a tqdm progress bar on stderr; a callable receives ``(stage, done, total)``.
    client : dask.distributed.Client, optional
        Run the chunks on this Dask cluster (:mod:`xcca.distributed`): every worker opens the run itself (so
        ``source`` must be files the workers can read: an HDF5 stack or image files, not an in-memory array), the
        partial results are tree-reduced on the cluster and pairing runs once here on the gathered features. The
        result is bit-identical to the local run (the same chunks, reduced in the same fixed tree). Needs the
        ``xcca[dask]`` extra.
    geometry : xcca.Geometry or str or Path, optional
        The detector's physical geometry, or a pyFAI PONI file: every ring ``q`` (1/Å) is sampled at its exact
        (q, φ) positions on the (possibly tilted) detector (:meth:`xcca.Geometry.polar_grid`, φ = pyFAI's χ). The
        result's ``q`` is the rings' q (the NeXus axis), ``cos_psi`` uses the exact θ of each ring, ``radii`` are
        derived pixel-equivalent radii ``dist·tan(2θ)/pixel1`` (exact on an untilted detector, where the run equals
        the pixel-radius run with these radii bit for bit), and the parameters record the PONI parameters
        (``geometry``: metres, radians). ``center``, ``qmin``/``qmax`` (pixels) and ``wavelength`` are refused with
        a geometry (its PONI fixes the centre and the wavelength: no ring fit, no ``center="auto"``); q beyond the
        detector's reach is refused with the reachable range. See :mod:`xcca.geometry_pipeline`.
    polarization_factor : float, optional
        With ``geometry``: divide every sample by pyFAI's polarisation factor with this factor (e.g. 0.99), during
        the remap.
    solid_angle : bool
        With ``geometry``: divide every sample by its solid angle (cos³ of the incidence angle), during the remap.
    flat, dark : array_like (H, W) or str / Path, optional
        With ``geometry``: a flat field and a dark current (arrays, or files: ``.npy``, ``file.h5::/path`` or any
        image :func:`xcca.io.read_image` reads), applied during the remap as pyFAI does: every pixel a sample reads
        is ``(I - dark) / flat``, before interpolation and the solid-angle / polarisation factors. Pixels with
        ``flat <= 0`` or a non-finite flat or dark are invalid (joined to the mask). The parameters record each
        one's path (None for an array) and SHA-256 (``flat``, ``dark``). Pixel-radius runs (no geometry) refuse
        them (ValueError).
    q_pairs : None, "all", "band:K" or array_like of int (npairs, 2)
        Also accumulate the full run correlation C(q, q', Δφ) of these ring pairs with an :class:`xcca.RunCorrelator`
        (ring indices into ``arange(qmin, qmax)``; ``"all"``: every q <= q'; ``"band:K"``: q <= q' <= q + K): of the
        cleaned rings of every good frame (pass 1, :attr:`AnalysisResult.run_correlation`) and of the pair
        differences with the combined mask (pass 2, :attr:`AnalysisResult.run_difference_correlation`), with counts,
        harmonics C_n and jackknife error bars (:class:`xcca.RunCorrelation`). Memory is independent of the number of
        frames and checked before anything is read (MemoryError suggesting a band). None (default): off. See
        :mod:`xcca.runcorr_stages`.
    estimator : {"pooled", "per_shot"}
        Estimator of the run correlation (see :class:`xcca.RunCorrelator`); only with ``q_pairs``.
    blocks : int
        Jackknife blocks of the run correlation (2 = the half-sets); the k-th good frame (pair) of a chunk goes to
        block k % blocks.
    precision : {"float64", "float32"}
        With ``geometry``: the arithmetic of the remap (see :meth:`xcca.Geometry.polar_grid`); "float32" runs the
        same rule in single precision (positions to ~5e-4 px), about 1.7x faster on machines without AVX-512.
        Recorded in the parameters (``remap_precision``). Not with ``flat`` / ``dark``.

    Returns
    -------
    AnalysisResult

    Raises
    ------
    ValueError
        Bad parameters (centre outside the frames, qmin >= qmax, nphi < 2, wavelength <= 0, q out of reach, ...),
        a missing dataset, or no good frame at all.
    OSError
        The run or mask file cannot be opened.
    """
    t_start = time.perf_counter()
    from . import _checks

    n_threads = _checks.n_threads(n_threads)  # the one n_threads rule, before any file is opened
    if output is not None:  # fail now rather than after the whole run
        from .files import check_not_input

        # Never write the result over the run or the mask (also through symlinks or hard links).
        check_not_input(output, [source, mask, flat, dark], name="output")
        parent = Path(output).resolve().parent
        if not parent.is_dir():
            raise OSError(f"output directory does not exist: {parent}")
        if not os.access(parent, os.W_OK):
            raise OSError(f"output directory is not writable: {parent}")
    timings = {"read": 0.0, "polar": 0.0, "clean": 0.0, "fit": 0.0, "autocorr": 0.0, "pair": 0.0,
               "diffcorr": 0.0}
    spec = None
    if client is not None:
        from . import distributed as _dist

        spec = _dist.source_spec(source, dataset)  # what a worker needs to open the run itself
    with open_source(source, dataset) as src:
        shape = src.shape
        n = len(src)
        if n == 0:
            raise ValueError("the run has no frames")
        mask_arr = load_mask(mask, shape)
        auto_fit = None
        first = None
        rings = None
        if geometry is not None:  # rings of constant q on the physical geometry (xcca.geometry_pipeline)
            from .geometry_pipeline import prepare_run

            _validate_run(nphi, chunk, outlier_thresh, deg, overlap)
            rings = prepare_run(geometry, q, int(nphi), shape, center=center, qmin=qmin, qmax=qmax,
                                wavelength=wavelength, solid_angle=solid_angle, polarization_factor=polarization_factor,
                                flat=flat, dark=dark, precision=precision)
            cx, cy = rings.center
            radii = rings.radii
            nq = radii.size
            qarr = rings.q.copy()
            cos_psi = rings.cos_psi()
            wavelength = rings.geometry.wavelength_A
            if ring_for_pairing is not None:
                ring_for_pairing = rings.ring_radius(ring_for_pairing)
        else:
            if polarization_factor is not None or solid_angle:
                raise ValueError("polarization_factor= and solid_angle= need geometry= (a Geometry or a PONI file)")
            if flat is not None or dark is not None:
                raise ValueError("flat= and dark= need geometry= (a Geometry or a PONI file): the pixel-radius "
                                 "remap takes no flat field or dark current")
            if not (isinstance(precision, str) and precision == "float64"):
                raise ValueError(f"precision={precision!r} needs geometry= (a Geometry or a PONI file): the "
                                 "pixel-radius remap runs in float64")
            if center is None or qmin is None or qmax is None:
                raise ValueError("center, qmin and qmax (pixels) are required without geometry=")
            if isinstance(center, str):
                if center != "auto":
                    raise ValueError(f"center must be (x, y) or 'auto', got {center!r}")
                if client is not None:  # the frames stay on the cluster: a worker fits the centre
                    auto_fit = client.submit(_dist.task_auto_center, spec, min(chunk, n), mask_arr, pure=False).result()
                else:
                    t0 = time.perf_counter()
                    first = src.read(0, min(chunk, n))
                    timings["read"] += time.perf_counter() - t0
                    with blas_single_thread():  # as on a worker: the same centre to the last bit
                        auto_fit = auto_center(first[0], first[1], mask_arr)
                center = auto_fit.center
                _log.info("auto centre: (%.3f, %.3f), ring radius %.2f, rms %.3g px", *center, auto_fit.radius,
                          auto_fit.rms)
            cx, cy = _validate(center, qmin, qmax, nphi, shape, wavelength, q, chunk, outlier_thresh, deg, overlap)
            _checks.check_memory(8.0 * (1 + int(nphi)) * math.ceil(qmax - qmin) * 4,
                                 f"qmin={qmin}, qmax={qmax} with nphi={nphi} ({math.ceil(qmax - qmin)} rings)")
            radii = np.arange(qmin, qmax, dtype=np.float64)
            nq = radii.size
            qarr = None
            cos_psi = None
            if q is not None:
                qarr = np.broadcast_to(np.asarray(q, dtype=np.float64), (nq,)).copy() if np.ndim(q) == 0 \
                    else np.asarray(q, dtype=np.float64)
                if qarr.shape != (nq,):
                    raise ValueError(f"q must be one value or one per radius ({nq}), got shape {qarr.shape}")
                s = qarr * wavelength / (4 * np.pi)
                if not np.all(np.isfinite(s)) or np.any(s <= 0) or np.any(s > 1):
                    raise ValueError(f"q outside the detector's reach: q·λ/4π must lie in (0, 1], got "
                                     f"{s.min():.4g}..{s.max():.4g} (q in 1/Å with λ in Å)")
                cos_psi = _cos_psi(qarr, wavelength, int(nphi))
        if backend not in ("xcca", "numpy"):
            raise ValueError(f"backend must be 'xcca' or 'numpy', got {backend!r}")
        plan = RunPlan(backend=backend, center=(cx, cy), radii=radii, nphi=int(nphi), shape=shape, mask=mask_arr,
                       outlier_thresh=outlier_thresh, deg=int(deg), overlap=float(overlap), chunk=int(chunk),
                       n_threads=n_threads, grid=rings)
        plan.kernels  # noqa: B018 - build the kernels now: a bad geometry fails before the run
        runcorr_spec = None
        if q_pairs is not None:  # checked (pairs, memory) before any frame is read
            from .runcorr_stages import make_stages

            st_raw, st_dif = make_stages(nq, int(nphi), q_pairs, estimator=estimator, blocks=blocks, q=qarr,
                                         n_threads=n_threads)
            plan.pass1_stages["runcorr_raw"] = st_raw
            plan.pass2_stages["runcorr_difference"] = st_dif
            runcorr_spec = st_raw.spec
        groups = _pair_groups(pair_groups, source, n)
        bar = _progress(progress, 2 * n)
        try:
            if client is None:
                with blas_single_thread():
                    p1, pairing, p2 = _run(src, n, first, plan, ring_for_pairing, timings, bar, groups)
            else:
                p1, pairing, p2 = _dist.run(client, spec, n, plan, ring_for_pairing, timings, bar,
                                            pair_groups=groups)
        finally:
            bar(None)
        describe = str(getattr(src, "describe", source))
    pairs, pair_dist, unpaired = pairing
    for k, v in (p1 + p2).timings.items():
        timings[k] = timings.get(k, 0.0) + v
    acc = {**p1.accumulators, **p2.accumulators}
    prof = acc["radial_profile"].mean()
    dif = acc["difference"].mean() if "difference" in acc else np.full((nq, int(nphi)), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        dif_norm = dif / (prof * prof)[:, None]
    run_corr = run_dcorr = None
    if runcorr_spec is not None:  # the run correlators' partials, finished (and out of the extras)
        run_corr, run_dcorr = _finish_runcorr(acc, runcorr_spec, timings)
    timings["total"] = time.perf_counter() - t_start
    params: Dict[str, Any] = dict(
        source=describe, center=[cx, cy], center_auto=auto_fit is not None,
        qmin=None if qmin is None else float(qmin), qmax=None if qmax is None else float(qmax), nphi=int(nphi),
        wavelength=wavelength,
        q=None if qarr is None else qarr.tolist(),
        ring_for_pairing=float(radii[plan.ring]) if plan.ring is not None else None,
        chunk=int(chunk), outlier_thresh=outlier_thresh, deg=int(deg), overlap=float(overlap), backend=backend,
        n_threads=n_threads, n_frames=n,
        mask=None if mask is None else (os.path.abspath(os.fspath(mask)) if isinstance(mask, (str, os.PathLike))
                                        else "array"),
        mask_sha256=mask_digest(mask_arr),
    )
    loc = source_location(source, dataset)
    if loc is not None:  # absolute, so the result still names its run when moved
        params["source_path"] = loc[0]
        params["source_dataset"] = loc[1] if loc[1] is not None else _split_ds(loc[0])
    if rings is not None:  # the rings are q (1/Å); qmin/qmax/ring_for_pairing in pixels do not apply
        params.update(qmin=None, qmax=None, **rings.parameters())
        if ring_for_pairing is not None:
            params["ring_for_pairing_q"] = float(qarr[plan.ring])
    if client is not None:
        params["driver"] = "dask"
    if auto_fit is not None:
        params["center_fit"] = dict(radius=auto_fit.radius, rms=auto_fit.rms, n_points=auto_fit.n_points)
    sh = p1.shots
    skipped = p1.skipped
    extras = {k: v for k, v in acc.items() if k not in ("raw", "mean_polar", "radial_profile", "difference")}
    if runcorr_spec is not None:
        params.update(q_pairs=_q_pairs_param(q_pairs), estimator=estimator, blocks=int(blocks))
    result = AnalysisResult(
        radii=radii, phi=2 * np.pi * np.arange(int(nphi)) / int(nphi),
        delta=2 * np.pi * np.arange(int(nphi)) / int(nphi),
        difference_correlation=dif, difference_correlation_norm=dif_norm, raw_correlation=acc["raw"].mean(),
        radial_profile=prof, mean_polar=acc["mean_polar"].mean(), pairs=pairs.astype(np.int64),
        pair_distances=np.asarray(pair_dist, dtype=np.float64), unpaired=unpaired.astype(np.int64),
        frames=sh["frames"], fit_rms=sh["fit_rms"], fit_ok=sh["fit_ok"], ring_intensity=sh["ring_intensity"],
        n_outliers=sh["n_outliers"], skipped=skipped, parameters=params, versions=_versions(), q=qarr,
        cos_psi=cos_psi, timings=timings, extras=extras, run_correlation=run_corr,
        run_difference_correlation=run_dcorr,
    )
    if skipped:
        _log.warning("%d of %d frames skipped as corrupt", len(skipped), n)
    if output is not None:
        result.write(output, inputs=[source, mask])
        _log.info("result written to %s", output)
    return result


def _finish_runcorr(extras, spec, timings):
    """The run correlations from the reduced partials (a run without pairs gets an empty, all-NaN one)."""
    from .runcorr_stages import RunCorrPartial

    t0 = time.perf_counter()
    raw = extras.pop("runcorr_raw", None) or RunCorrPartial(spec, "shots")
    dif = extras.pop("runcorr_difference", None) or RunCorrPartial(spec, "differences")
    out = raw.result(consume=True), dif.result(consume=True)  # the run's own partials: no copies
    timings["runcorr_finish"] = time.perf_counter() - t0
    return out


def _q_pairs_param(q_pairs):
    """q_pairs as recorded in the parameters: the text, or the pairs as a list."""
    return q_pairs if isinstance(q_pairs, str) else np.asarray(q_pairs).tolist()


def _split_ds(path) -> Optional[str]:
    if isinstance(path, str) and "::" in path:
        return path.partition("::")[2]
    return None


def auto_center(frames: np.ndarray, errors, mask: Optional[np.ndarray]):
    """``center='auto'``: :func:`xcca.stages.find_center` on the mean of the good frames of the first chunk
    (``mask`` True = valid pixel). Raises ValueError if the chunk has no good frame."""
    bad = check_frames(frames, mask, errors)
    good = [k for k, b in enumerate(bad) if b is None]
    if not good:
        hint = "; if the mask is inverted: masks are True = valid" if mask is not None else ""
        raise ValueError(f"center='auto' needs at least one good frame in the first chunk, but all {len(bad)} "
                         f"were rejected (frame 0: {bad[0]}){hint}")
    mean_img = frames[good].astype(np.float64).mean(axis=0)
    return find_center(mean_img, mask)


def _pair_groups(pair_groups, source, n: int) -> Optional[np.ndarray]:
    """One pairing key per frame: an array, or an HDF5 dataset path in the run's file (``/entry/cell_id``) or in
    another file (``file.h5::/entry/cell_id``)."""
    if pair_groups is None:
        return None
    if isinstance(pair_groups, (str, Path)):
        spec = str(pair_groups)
        if "::" in spec:
            path, dset = spec.split("::", 1)
        elif isinstance(source, (str, Path)):
            path, dset = str(source).split("::", 1)[0], spec
        else:
            raise ValueError("pair_groups: a dataset path needs the run to come from an HDF5 file "
                             "(or give 'file.h5::/path')")
        import h5py

        try:
            with h5py.File(path, "r") as f:
                if dset not in f or not isinstance(f[dset], h5py.Dataset):
                    raise ValueError(f"pair_groups: no dataset {dset!r} in {path}")
                keys = f[dset][()]
        except OSError as exc:
            raise OSError(f"pair_groups: cannot read {path}: {exc}") from None
    else:
        keys = pair_groups
    keys = np.asarray(keys)
    if keys.ndim != 1 or keys.shape[0] != n:
        raise ValueError(f"pair_groups must hold one key per frame ({n}), got shape {keys.shape}")
    from .pairing import _group_index

    _group_index(keys, n)  # key checks (kind, finiteness) now, before the run
    return keys


def pair_run(p1: ChunkResult, kernels, groups: Optional[np.ndarray] = None
             ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairing of a run from its reduced pass-1 result (both drivers): the shots whose profile fit failed are not
    paired; with ``groups`` (one key per frame of the run) only shots of equal keys are paired, each group alone.
    Returns (pairs (M, 2) of frame indices, distances (M,), unpaired frame indices)."""
    sh = p1.shots
    frames_good, features, fit_ok = sh["frames"], sh["features"], sh["fit_ok"]
    usable = np.flatnonzero(fit_ok)
    if groups is None:
        pairs_local, pair_dist, unp_local = pair_stage(features[usable], kernels)
    else:
        from .pairing import _group_index

        f = features[usable]
        parts_p, parts_d, parts_u = [np.zeros((0, 2), np.int64)], [np.zeros(0)], [np.zeros(0, np.int64)]
        for idx in _group_index(np.asarray(groups)[frames_good[usable]], len(usable)):
            p, d, u = pair_stage(f[idx], kernels)
            parts_p.append(idx[p].reshape(-1, 2))
            parts_d.append(np.asarray(d, dtype=np.float64))
            parts_u.append(idx[u])
        pairs_local, pair_dist, unp_local = np.concatenate(parts_p), np.concatenate(parts_d), np.concatenate(parts_u)
    pairs = frames_good[usable][pairs_local] if pairs_local.size else np.zeros((0, 2), np.int64)
    unpaired = np.sort(np.concatenate([frames_good[usable][unp_local], frames_good[~fit_ok]]))
    if len(pairs) == 0:
        _log.warning("fewer than two usable shots: no pairs, the difference correlation is NaN")
    return pairs, pair_dist, unpaired


def pair_between_passes(p1: ChunkResult, plan, groups, n: int, timings: Dict[str, float], bar
                        ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both drivers between their passes: refuse a run without a good frame, pair the shots (:func:`pair_run`),
    time it and advance the progress bar past the frames left unpaired."""
    if not p1.shots:
        raise no_good_frame(p1.skipped)
    t0 = time.perf_counter()
    pairs, pair_dist, unpaired = pair_run(p1, plan.kernels, groups)
    timings["pair"] += time.perf_counter() - t0
    bar(n - len(pairs) * 2 if len(pairs) * 2 < n else 0)
    return pairs, pair_dist, unpaired


def no_good_frame(skipped) -> ValueError:
    """The error of a run without a single good frame."""
    return ValueError(f"no good frame in the run ({len(skipped)} skipped: "
                      f"{'; '.join(f'{i}: {r}' for i, r in skipped[:5])}{' ...' if len(skipped) > 5 else ''})")


def _run(src, n, first, plan: RunPlan, ring_for_pairing, timings, bar, pair_groups=None):
    """The two passes of :func:`analyze` in this process: chunk by chunk through :func:`xcca.stages.pass1_chunk`
    and :func:`xcca.stages.pass2_chunk`, reduced in the run's fixed tree (:class:`xcca.stages.TreeSum`)."""
    chunk = plan.chunk
    # Pass 2 remaps the paired frames again; their outlier masks are deterministic, so pass 1 keeps the outlier
    # positions (sparse) while they fit in a small budget, and pass 2 recomputes only the frames it could not keep.
    cache: Dict[int, np.ndarray] = {}
    budget = [_OUTLIER_CACHE_BYTES]

    def sink(frame: int, idx: np.ndarray) -> bool:
        if budget[0] <= 0:
            return False
        cache[frame] = idx
        budget[0] -= idx.nbytes + 100
        return True

    # the polar images of one chunk, reused by every chunk of both passes (float64 frames give float64 polar
    # images: polar_stage then allocates)
    pbuf = np.empty((chunk, len(plan.radii), plan.nphi), np.float32)
    fbuf = None  # the frames of one chunk, reused (where the source can read into it)
    tree = TreeSum()
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        t0 = time.perf_counter()
        if first is not None and start == 0 and len(first[0]) == stop - start:
            frames, errs = first
        else:
            frames, errs = src.read(start, stop, out=fbuf)
            if fbuf is None and len(frames) == chunk and frames.flags.owndata and frames.flags.c_contiguous \
                    and frames.dtype == src.dtype:  # never a view of the caller's array: it is written into
                fbuf = frames
        timings["read"] += time.perf_counter() - t0
        part = pass1_chunk(frames, errs, start, plan, ring_for_pairing=ring_for_pairing, polar_out=pbuf,
                           outlier_sink=sink if plan.outlier_thresh is not None else None)
        for i, why in part.skipped:
            _log.info("frame %d skipped: %s", i, why)
        tree.push(part)
        bar(stop - start)
    p1 = tree.result()
    pairs, pair_dist, unpaired = pair_between_passes(p1, plan, pair_groups, n, timings, bar)
    tree = TreeSum()
    pchunk = plan.pchunk
    for p0 in range(0, len(pairs), pchunk):
        pp = pairs[p0:p0 + pchunk]
        t0 = time.perf_counter()
        frames, errs = src.read_indices(pp.ravel(), out=fbuf)
        timings["read"] += time.perf_counter() - t0
        part = pass2_chunk(frames, errs, pp, plan, polar_out=pbuf, outlier_cache=cache)
        if part.dropped_pairs:
            _log.warning("pairs %s dropped: a frame became unreadable", part.dropped_pairs)
        tree.push(part)
        bar(2 * len(pp))
    p2 = tree.result() or ChunkResult()
    return p1, (pairs, pair_dist, unpaired), p2


_OUTLIER_CACHE_BYTES = 64 << 20


def _progress(progress, total: int) -> Callable[[Optional[int]], None]:
    """A callable advancing a progress display by k frames (None closes it)."""
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="frame", desc="correlation analysis", leave=False)

        def step(k):
            if k is None:
                bar.close()
            else:
                bar.update(k)

        return step
    if callable(progress):
        done = [0]

        def step(k):
            if k is not None:
                done[0] += k
                progress("frames", min(done[0], total), total)

        return step
    return lambda k: None
