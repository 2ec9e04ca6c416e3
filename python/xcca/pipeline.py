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
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .kernels import make_kernels
from .result import AnalysisResult, _versions
from .sources import FrameSource, load_mask, open_source
from .stages import (Accumulator, _Projector, autocorr_stage, check_frames, clean_stage, diffcorr_pairs_stage,
                     diffcorr_stage, find_center, outlier_mask, pair_stage, polar_stage, profile_stage)

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
    if wavelength is not None:
        if not isinstance(wavelength, (int, float, np.integer, np.floating)) or not wavelength > 0 \
                or not math.isfinite(wavelength):
            raise ValueError(f"wavelength must be > 0, got {wavelength!r}")
        if q is None:
            raise ValueError("wavelength given without q: give q (one value or one per radius) to compute cos ψ")
    if q is not None and wavelength is None:
        raise ValueError("q given without wavelength: both are needed to compute cos ψ")
    return cx, cy


def analyze(
    source,
    *,
    center: Union[Sequence[float], str],
    qmin: float,
    qmax: float,
    nphi: int,
    mask=None,
    wavelength: Optional[float] = None,
    q=None,
    ring_for_pairing: Optional[float] = None,
    dataset: Optional[str] = None,
    chunk: int = 16,
    outlier_thresh: Optional[float] = 6.0,
    deg: int = 15,
    overlap: float = 0.2,
    backend: str = "xcca",
    n_threads: Optional[int] = None,
    output: Optional[Union[str, Path]] = None,
    progress: Union[bool, Callable[[str, int, int], None]] = False,
) -> AnalysisResult:
    """Run the whole correlation analysis of a run, streaming its frames.

    Parameters
    ----------
    source : str, Path, h5py.Dataset, array or list of paths
        The frames: an HDF5 file with ``dataset=`` (or ``"run.h5::/entry/data"``) holding (N, H, W), an open
        dataset, an (N, H, W) array, or a list of image files (see :func:`open_source`).
    center : (x, y) or "auto"
        Beam centre in pixels (x along columns). ``"auto"`` fits the sharpest ring of the first chunk's mean image
        (:func:`find_center`).
    qmin, qmax : float
        Radial range in pixels: rings at radii ``arange(qmin, qmax)``.
    nphi : int
        Angular samples per ring (>= 2).
    mask : array_like of bool (H, W) or str, optional
        True = valid pixel, shared by all frames; a path to a ``.npy`` file or ``file.h5::/dataset`` is read.
    wavelength : float, optional
        X-ray wavelength; with ``q`` it gives the cos ψ axis. Units: q·λ dimensionless (1/Å and Å).
    q : float or array_like (nq,), optional
        Momentum transfer of the rings: one value (a narrow band around one ring) or one per radius.
    ring_for_pairing : float, optional
        Radius (pixels) of the ring whose fitted profile pairs the shots; default the ring with the highest mean
        intensity in the first chunk.
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
        Write the result there (HDF5, see :meth:`AnalysisResult.write`).
    progress : bool or callable
        True shows a tqdm progress bar on stderr; a callable receives ``(stage, done, total)``.

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
        parent = Path(output).resolve().parent
        if not parent.is_dir():
            raise OSError(f"output directory does not exist: {parent}")
        if not os.access(parent, os.W_OK):
            raise OSError(f"output directory is not writable: {parent}")
    timings = {"read": 0.0, "polar": 0.0, "clean": 0.0, "fit": 0.0, "autocorr": 0.0, "pair": 0.0,
               "diffcorr": 0.0}
    with open_source(source, dataset) as src:
        shape = src.shape
        n = len(src)
        if n == 0:
            raise ValueError("the run has no frames")
        mask_arr = load_mask(mask, shape)
        auto_fit = None
        first = None
        if isinstance(center, str):
            if center != "auto":
                raise ValueError(f"center must be (x, y) or 'auto', got {center!r}")
            t0 = time.perf_counter()
            first = src.read(0, min(chunk, n))
            timings["read"] += time.perf_counter() - t0
            bad = check_frames(first[0], mask_arr, first[1])
            good = [k for k, b in enumerate(bad) if b is None]
            if not good:
                hint = ("; if the mask is inverted: masks are True = valid" if mask_arr is not None else "")
                raise ValueError(f"center='auto' needs at least one good frame in the first chunk, but all "
                                 f"{len(bad)} were rejected (frame 0: {bad[0]}){hint}")
            mean_img = first[0][good].astype(np.float64).mean(axis=0)
            auto_fit = find_center(mean_img, mask_arr)
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
        kernels = make_kernels(backend, (cx, cy), radii, int(nphi), shape, n_threads)
        bar = _progress(progress, 2 * n)
        try:
            result = _run(src, n, shape, chunk, first, mask_arr, kernels, outlier_thresh, ring_for_pairing, radii,
                          nq, int(nphi), deg, overlap, timings, bar)
        finally:
            bar(None)
    frames_good, _, fit_ok, rms_l, inten_l, nout_l, ring, skipped, pairs, pair_dist, unpaired, \
        acc_raw, acc_img, acc_prof, acc_dif = result
    prof = acc_prof.mean()
    dif = acc_dif.mean()
    with np.errstate(invalid="ignore", divide="ignore"):
        dif_norm = dif / (prof * prof)[:, None]
    timings["total"] = time.perf_counter() - t_start
    params: Dict[str, Any] = dict(
        source=str(getattr(src, "describe", source)), center=[cx, cy], center_auto=auto_fit is not None,
        qmin=float(qmin), qmax=float(qmax), nphi=int(nphi), wavelength=wavelength,
        q=None if qarr is None else qarr.tolist(), ring_for_pairing=float(radii[ring]) if ring is not None else None,
        chunk=int(chunk), outlier_thresh=outlier_thresh, deg=int(deg), overlap=float(overlap), backend=backend,
        n_threads=n_threads, n_frames=n, mask=None if mask is None else (mask if isinstance(mask, str) else "array"),
    )
    if auto_fit is not None:
        params["center_fit"] = dict(radius=auto_fit.radius, rms=auto_fit.rms, n_points=auto_fit.n_points)
    result = AnalysisResult(
        radii=radii, phi=2 * np.pi * np.arange(int(nphi)) / int(nphi),
        delta=2 * np.pi * np.arange(int(nphi)) / int(nphi),
        difference_correlation=dif, difference_correlation_norm=dif_norm, raw_correlation=acc_raw.mean(),
        radial_profile=prof, mean_polar=acc_img.mean(), pairs=pairs.astype(np.int64),
        pair_distances=np.asarray(pair_dist, dtype=np.float64), unpaired=unpaired.astype(np.int64),
        frames=frames_good, fit_rms=np.concatenate(rms_l), fit_ok=fit_ok, ring_intensity=np.concatenate(inten_l),
        n_outliers=np.concatenate(nout_l), skipped=skipped, parameters=params, versions=_versions(), q=qarr,
        cos_psi=cos_psi, timings=timings,
    )
    if skipped:
        _log.warning("%d of %d frames skipped as corrupt", len(skipped), n)
    if output is not None:
        result.write(output)
        _log.info("result written to %s", output)
    return result



def _run(src, n, shape, chunk, first, mask_arr, kernels, outlier_thresh, ring_for_pairing, radii, nq, nphi, deg,
         overlap, timings, bar):
    """The two passes of :func:`analyze` (see there)."""
    # ---- pass 1: polar, clean, fit, raw correlation
    acc_raw = Accumulator.zeros((nq, int(nphi)))
    acc_img = Accumulator.zeros((nq, int(nphi)))
    acc_prof = Accumulator.zeros((nq,))
    skipped: List[Tuple[int, str]] = []
    good_idx: List[np.ndarray] = []
    feats: List[np.ndarray] = []
    rms_l: List[np.ndarray] = []
    ok_l: List[np.ndarray] = []
    inten_l: List[np.ndarray] = []
    nout_l: List[np.ndarray] = []
    ring = None
    # Pass 2 remaps the paired frames again; their outlier masks are deterministic, so pass 1 keeps the outlier
    # positions (sparse) while they fit in a small budget, and pass 2 recomputes only the frames it could not keep.
    removed_cache: Dict[int, np.ndarray] = {}
    cache_budget = _OUTLIER_CACHE_BYTES
    projector = None
    ring_mask = None
    buf = [None]  # the polar images of one chunk, reused by every chunk of both passes

    def polar_of(fr, checked):
        c = len(fr)
        out = buf[0][:c] if buf[0] is not None and len(buf[0]) >= c else None
        polar, valid = polar_stage(fr, mask_arr, kernels, out=out, checked=checked)
        if out is None and c == chunk:
            buf[0] = polar
        return polar, valid

    size = nq * int(nphi)
    fbuf = None  # the frames of one chunk, reused (where the source can read into it)
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
        bad = check_frames(frames, mask_arr, errs)
        for k, why in enumerate(bad):
            if why is not None:
                skipped.append((start + k, why))
                _log.info("frame %d skipped: %s", start + k, why)
        keep = np.array([k for k, why in enumerate(bad) if why is None], dtype=np.int64)
        if keep.size:
            fr = frames[keep] if keep.size < len(frames) else frames
            t0 = time.perf_counter()
            # checked: valid is the broadcast polar mask, shared by the chunk (no per-frame copy)
            polar, valid = polar_of(fr, True)
            pmask = valid[0]
            t1 = time.perf_counter()
            # From here on polar is 0 wherever valid is False (the invalid samples and the removed outliers), so the
            # later stages need no masked copies.
            if not kernels.fill == 0:
                polar[:, ~pmask] = 0
            valid, nout = clean_stage(polar, valid, outlier_thresh, kernels)
            if outlier_thresh is not None and nout.any():
                removed = np.flatnonzero(valid < pmask)  # flat positions of the removed outliers in the chunk
                polar.reshape(-1)[removed] = 0
                bounds = np.searchsorted(removed, np.arange(len(polar) + 1) * size)
                for k in range(len(polar)):
                    if cache_budget <= 0:
                        break
                    idx = (removed[bounds[k]:bounds[k + 1]] - k * size).astype(np.int32)
                    removed_cache[int(start + keep[k])] = idx
                    cache_budget -= idx.nbytes + 100
            elif outlier_thresh is not None and cache_budget > 0:
                for k in range(len(polar)):
                    removed_cache[int(start + keep[k])] = np.zeros(0, np.int32)
                cache_budget -= 100 * len(polar)
            t2 = time.perf_counter()
            if ring is None:
                ring = _pick_ring(ring_for_pairing, radii, polar, valid)
                ring_mask = np.array(pmask[ring], dtype=bool)
                projector = _Projector(int(nphi), deg, overlap, ring_mask)
            f_, rms, ok, inten = profile_stage(polar, valid, ring, kernels, projector, deg, overlap,
                                               ring_mask=ring_mask)
            t3 = time.perf_counter()
            a_raw, a_img, a_prof = autocorr_stage(polar, valid, kernels, zeroed=True)
            acc_raw.add(a_raw)
            acc_img.add(a_img)
            acc_prof.add(a_prof)
            t4 = time.perf_counter()
            timings["polar"] += t1 - t0
            timings["clean"] += t2 - t1
            timings["fit"] += t3 - t2
            timings["autocorr"] += t4 - t3
            good_idx.append(start + keep)
            feats.append(f_)
            rms_l.append(rms)
            ok_l.append(ok)
            inten_l.append(inten)
            nout_l.append(nout)
        bar(stop - start)
    if not good_idx:
        raise ValueError(f"no good frame in the run ({len(skipped)} skipped: "
                         f"{'; '.join(f'{i}: {r}' for i, r in skipped[:5])}{' ...' if len(skipped) > 5 else ''})")
    frames_good = np.concatenate(good_idx)
    features = np.concatenate(feats)
    fit_ok = np.concatenate(ok_l)
    # ---- pairing: shots whose profile fit failed are not paired
    t0 = time.perf_counter()
    usable = np.flatnonzero(fit_ok)
    pairs_local, pair_dist, unp_local = pair_stage(features[usable], kernels)
    pairs = frames_good[usable][pairs_local] if pairs_local.size else np.zeros((0, 2), np.int64)
    unpaired = np.sort(np.concatenate([frames_good[usable][unp_local], frames_good[~fit_ok]]))
    timings["pair"] += time.perf_counter() - t0
    if len(pairs) == 0:
        _log.warning("fewer than two usable shots: no pairs, the difference correlation is NaN")
    bar(n - len(pairs) * 2 if len(pairs) * 2 < n else 0)
    # ---- pass 2: difference correlations
    acc_dif = Accumulator.zeros((nq, int(nphi)))
    pchunk = max(1, chunk // 2)
    for p0 in range(0, len(pairs), pchunk):
        pp = pairs[p0:p0 + pchunk]
        t0 = time.perf_counter()
        frames, errs = src.read_indices(pp.ravel(), out=fbuf)
        timings["read"] += time.perf_counter() - t0
        if any(e is not None for e in errs):  # a frame that read in pass 1 fails now: drop its pair, say so
            bad_pairs = {k // 2 for k, e in enumerate(errs) if e is not None}
            _log.warning("pairs %s dropped: a frame became unreadable", [tuple(pp[k]) for k in bad_pairs])
            keep = np.array([k for k in range(len(pp)) if k not in bad_pairs], dtype=np.int64)
            frames = frames.reshape(len(pp), 2, *shape)[keep].reshape(-1, *shape)
            pp = pp[keep]
            if not len(pp):
                continue
        t0 = time.perf_counter()
        polar, valid = polar_of(frames, frames.dtype.kind != "f")
        t1 = time.perf_counter()
        valid = _clean_cached(polar, valid, pp.ravel(), outlier_thresh, kernels, removed_cache)
        t2 = time.perf_counter()
        acc_dif.add(diffcorr_pairs_stage(polar, valid, kernels))
        t3 = time.perf_counter()
        timings["polar"] += t1 - t0
        timings["clean"] += t2 - t1
        timings["diffcorr"] += t3 - t2
        bar(2 * len(pp))
    return (frames_good, features, fit_ok, rms_l, inten_l, nout_l, ring, skipped, pairs, pair_dist, unpaired,
            acc_raw, acc_img, acc_prof, acc_dif)


_OUTLIER_CACHE_BYTES = 64 << 20


def _clean_cached(polar, valid, frame_ids, thresh, kernels, cache: Dict[int, np.ndarray]) -> np.ndarray:
    """clean_stage for pass 2: the outlier positions of pass 1 where cached, recomputed elsewhere (same result)."""
    if thresh is None:
        return valid
    valid = np.array(valid, copy=True)
    todo = [k for k, f in enumerate(frame_ids) if int(f) not in cache]
    for k, f in enumerate(frame_ids):
        idx = cache.get(int(f))
        if idx is not None:
            valid[k].reshape(-1)[idx] = False
    if todo:
        t = np.asarray(todo)
        valid[t] = clean_stage(polar[t], valid[t], thresh, kernels)[0]
    return valid


def _pick_ring(ring_for_pairing, radii: np.ndarray, polar: np.ndarray, valid: np.ndarray) -> int:
    if ring_for_pairing is None:
        with np.errstate(invalid="ignore"):
            cnt = valid.sum(axis=(0, 2))
            mean = np.where(valid, polar, 0).sum(axis=(0, 2), dtype=np.float64) / np.maximum(cnt, 1)
        # rings with too few valid samples for a stable fit are not candidates
        mean[cnt < 0.5 * valid.shape[0] * valid.shape[2]] = -np.inf
        return int(np.argmax(mean))
    r = float(ring_for_pairing)
    if not (radii[0] - 0.5 <= r <= radii[-1] + 0.5):
        raise ValueError(f"ring_for_pairing={r} px is outside qmin..qmax ({radii[0]}..{radii[-1]})")
    return int(np.argmin(np.abs(radii - r)))


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
