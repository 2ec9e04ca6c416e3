"""The pipeline's stages: pure functions over one chunk of frames (chunk in, partial result out).

The chain of one frame: image -> :func:`polar_stage` (polar rings, with their validity mask) -> :func:`clean_stage`
(per-ring outliers removed) -> :func:`profile_stage` (fitted profile of the pairing ring: the low-dimensional feature
of the shot) and :func:`autocorr_stage` (the raw correlation) ; over the run: :func:`pair_stage` (shots with similar
profiles) -> :func:`diffcorr_pairs_stage` / :func:`diffcorr_stage` (correlations of pair differences).
:func:`check_frames` tells the corrupt frames of a chunk, :func:`find_center` fits the beam centre of a run.

The partial results of the chunk stages are :class:`Accumulator` objects (NaN-aware sums with counts): the partial
results of disjoint chunks add up, in any grouping, so a driver (:mod:`xcca.pipeline` locally, a cluster driver) can
run the stages anywhere and reduce them. The stages call a kernel set (:mod:`xcca.kernels`: compiled, or the NumPy
baseline of :mod:`xcca.reference`). Masks: True = valid pixel / sample (LOKI's convention).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "Accumulator",
    "check_frames",
    "outlier_mask",
    "polar_stage",
    "clean_stage",
    "profile_stage",
    "autocorr_stage",
    "pair_stage",
    "diffcorr_stage",
    "diffcorr_pairs_stage",
    "find_center",
    "RunPlan",
    "ChunkResult",
    "pass1_chunk",
    "pass2_chunk",
    "clean_cached",
    "pick_ring",
    "blas_single_thread",
    "tree_sum",
    "TreeSum",
    "TREE_BLOCK",
    "PASS1_STAGES",
    "PASS2_STAGES",
]


def check_frames(frames: np.ndarray, mask: Optional[np.ndarray],
                 errors: Optional[List[Optional[str]]] = None) -> List[Optional[str]]:
    """Why each frame of a chunk is corrupt (None = good): read errors, no nonzero valid pixel, non-finite valid
    pixels. ``mask``: True = valid pixel (shared by the run).

    Parameters
    ----------
    frames : ndarray, (c, H, W)
        A chunk of frames.
    mask : ndarray of bool, (H, W), optional
        Valid pixels, True = valid (LOKI's convention).
    errors : list of (str or None), optional
        Read errors of the chunk's frames (kept first).
    """
    out: List[Optional[str]] = list(errors) if errors is not None else [None] * len(frames)
    inval = None
    for k in range(len(frames)):
        if out[k] is not None:
            continue
        fr = frames[k]
        if fr.dtype.kind in "biu":
            # integers: some valid pixel is nonzero iff the frame has more nonzeros than its few invalid pixels
            # (count_nonzero is ~10x faster than copying the valid pixels out with fr[mask])
            if mask is not None and inval is None:
                inval = np.flatnonzero(~mask)
            nz = np.count_nonzero(fr)
            if nz == 0 or (inval is not None and nz == np.count_nonzero(fr.reshape(-1)[inval])):
                out[k] = "all zero"
            continue
        vals = fr[mask] if mask is not None else fr
        if fr.dtype.kind == "f":
            finite = np.isfinite(vals)
            if not finite.all():
                out[k] = "all non-finite" if not finite.any() else f"{vals.size - int(finite.sum())} non-finite valid pixels"
                continue
        if not np.any(vals):
            out[k] = "all zero"
    return out


@dataclass
class Accumulator:
    """NaN-aware running sum: ``total`` and ``count`` per element; ``mean()`` = total / count (NaN where 0).

    Accumulators of disjoint chunks add up (``a + b``), so a stage can run anywhere and be reduced later.

    Attributes
    ----------
    total : ndarray, float64
        Sum of the finite values per element.
    count : ndarray, int64
        Number of finite values per element.
    """

    total: np.ndarray
    count: np.ndarray

    @classmethod
    def zeros(cls, shape) -> "Accumulator":
        """An empty accumulator (all totals and counts zero).

        Parameters
        ----------
        shape : tuple of int
            Shape of the accumulated arrays.
        """
        return cls(np.zeros(shape, dtype=np.float64), np.zeros(shape, dtype=np.int64))

    @classmethod
    def of(cls, values: np.ndarray, axis: int = 0) -> "Accumulator":
        """Sum of ``values`` over ``axis`` ignoring NaN.

        Parameters
        ----------
        values : ndarray
            Values (NaN = missing).
        axis : int
            Axis summed over.
        """
        v = np.asarray(values, dtype=np.float64)
        ok = np.isfinite(v)
        return cls(np.where(ok, v, 0.0).sum(axis=axis), ok.sum(axis=axis).astype(np.int64))

    @classmethod
    def of_mean(cls, mean: np.ndarray, weight: int) -> "Accumulator":
        """The accumulator of ``weight`` items whose mean is ``mean`` (NaN entries count for nothing).

        Parameters
        ----------
        mean : ndarray
            The mean of the items (NaN = no item).
        weight : int
            Number of items behind each mean.
        """
        m = np.asarray(mean, dtype=np.float64)
        ok = np.isfinite(m)
        return cls(np.where(ok, m * weight, 0.0), ok.astype(np.int64) * int(weight))

    def add(self, other: "Accumulator") -> "Accumulator":
        """Add ``other`` into this accumulator (in place) and return it.

        Parameters
        ----------
        other : Accumulator
            An accumulator of the same shape (partial results of chunks, workers or runs add).
        """
        self.total += other.total
        self.count += other.count
        return self

    def __add__(self, other: "Accumulator") -> "Accumulator":
        return Accumulator(self.total + other.total, self.count + other.count)

    def __getstate__(self):
        # Sent between cluster processes once per chunk: the counts travel in the smallest integer type that holds
        # them (a chunk's counts are <= its frames), and come back as int64 (the same values).
        c = self.count
        hi = int(c.max()) if c.size else 0
        lo = int(c.min()) if c.size else 0
        for dt in (np.uint8, np.uint16, np.uint32):
            if lo >= 0 and hi <= np.iinfo(dt).max:
                c = c.astype(dt)
                break
        return {"total": self.total, "count": c}

    def __setstate__(self, state):
        self.total = state["total"]
        self.count = np.asarray(state["count"]).astype(np.int64)

    def mean(self) -> np.ndarray:
        """``total / count`` per element, NaN where ``count`` is 0."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.total / np.maximum(self.count, 1), np.nan)


def outlier_mask(rings: np.ndarray, valid: np.ndarray, thresh: float = 3.5) -> np.ndarray:
    """Per-ring outliers by LOKI's modified z-score: ``0.6745·|x - median| / MAD > thresh`` over the valid samples
    of each ring (last axis); MAD = 0 gives no outlier. Returns a bool array of ``rings``' shape (True = outlier).

    Computed in float64 (as the compiled ``_core.ring_outliers``, which gives identical results). Vectorised with one
    ``np.partition`` per statistic: invalid samples are replaced by -inf/+inf in equal numbers so that the valid
    median sits at the same two positions in every row.
    

    Parameters
    ----------
    rings : ndarray, (..., n)
        Rings.
    valid : ndarray of bool
        Valid samples, True = valid (LOKI's convention).
    thresh : float
        Modified z-score threshold.
    """
    x = np.asarray(rings, dtype=np.float64)
    v = np.asarray(valid, dtype=bool) & np.isfinite(x)
    v = np.broadcast_to(v, x.shape)
    n = x.shape[-1]
    k = v.sum(axis=-1)  # valid samples per ring

    def valid_median(a: np.ndarray) -> np.ndarray:
        inval = ~v
        n_low = (n - k) // 2  # invalid samples pushed to -inf; the rest go to +inf
        rank = np.cumsum(inval, axis=-1, dtype=np.int32)
        dt = a.dtype if a.dtype.kind == "f" else np.dtype(np.float64)  # float32 stays float32: chunks are big
        filled = np.where(rank <= n_low[..., None], dt.type(-np.inf), dt.type(np.inf))
        np.copyto(filled, a, where=v, casting="unsafe")
        lo_pos = (n - 1) // 2 - (1 if n % 2 else 0) if n > 1 else 0
        hi_pos = n // 2 if n % 2 == 0 else (n - 1) // 2
        kth = sorted({max(lo_pos, 0), hi_pos, max(hi_pos - 1, 0)})
        part = np.partition(filled, kth, axis=-1)
        p1 = n_low + (k - 1) // 2
        p2 = n_low + k // 2
        a1 = np.take_along_axis(part, np.clip(p1, 0, n - 1)[..., None], axis=-1)[..., 0]
        a2 = np.take_along_axis(part, np.clip(p2, 0, n - 1)[..., None], axis=-1)[..., 0]
        return 0.5 * (a1 + a2)

    with np.errstate(invalid="ignore"):
        med = valid_median(x)
        dev = np.abs(x - med[..., None])
        mad = valid_median(dev)
        z = 0.6745 * dev / np.where(mad > 0, mad, np.inf)[..., None]
        return v & (k[..., None] > 0) & (z > thresh)


def polar_stage(frames: np.ndarray, mask: Optional[np.ndarray], kernels, out: Optional[np.ndarray] = None,
                checked: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Polar remap of a chunk (c, H, W) -> ``polar`` (c, nq, nphi) float32 and ``valid`` (c, nq, nphi) bool.

    ``mask``: True = valid pixel. ``out``: a reused (c, nq, nphi) buffer for ``polar``. Invalid samples hold the
    kernels' ``fill`` (NaN or 0). ``checked=True`` says the frames passed :func:`check_frames` (their valid pixels are
    finite), or they are integers: ``valid`` is then the read-only broadcast of the polar mask shared by the chunk,
    with no per-frame copy.
    

    Parameters
    ----------
    frames : ndarray, (c, H, W)
        A chunk of frames.
    mask : ndarray of bool, (H, W), optional
        Valid pixels, True = valid (LOKI's convention).
    kernels : kernel set
        An :class:`xcca.kernels.XccaKernels` (or the NumPy baseline).
    out : ndarray, optional
        Destination of the polar images.
    checked : bool
        The frames were already checked by :func:`check_frames`.
    """
    if out is not None:
        try:
            polar, pmask = kernels.remap(frames, mask, out=out)
        except (TypeError, ValueError):  # a buffer of another dtype (e.g. float64 frames): allocate
            polar, pmask = kernels.remap(frames, mask)
    else:
        polar, pmask = kernels.remap(frames, mask)
    valid = np.broadcast_to(pmask, polar.shape)
    if not checked and np.asarray(frames).dtype.kind == "f":  # NaN pixels propagate into valid samples
        valid = valid & np.isfinite(polar)
    return polar, valid


def clean_stage(polar: np.ndarray, valid: np.ndarray, thresh: Optional[float], kernels=None
                ) -> Tuple[np.ndarray, np.ndarray]:
    """Per-ring outlier removal (LOKI's modified z-score, see :func:`outlier_mask`): returns the new ``valid`` mask
    and the number of removed samples per frame. ``thresh=None`` removes nothing.

    Parameters
    ----------
    polar : ndarray, (c, nq, nphi)
        Polar images.
    valid : ndarray of bool
        Valid samples, True = valid (LOKI's convention).
    thresh : float or None
        Modified z-score threshold; None disables the stage.
    kernels : kernel set, optional
        Kernel set (default: the NumPy :func:`outlier_mask`).
    """
    if thresh is None:
        return valid, np.zeros(len(polar), dtype=np.int64)
    if kernels is not None:
        return kernels.outliers(polar, valid, thresh)
    out = outlier_mask(polar, valid, thresh)
    return valid & ~out, out.reshape(len(polar), -1).sum(axis=1)


class _Projector:
    """Orthonormal basis Q (n, deg+1) of the polynomial profiles restricted to the run's common valid samples:
    for curves in that span, ‖Qᵀ(c₁ - c₂)‖ = ‖c₁ - c₂‖ over those samples, so pairing works in deg+1 dimensions."""

    def __init__(self, n: int, deg: int, overlap: float, common: np.ndarray):
        nn = int(overlap * n)
        x = np.arange(n)
        t = (2 * x - (n - 1)) / (n - 1 + 2 * nn) if n + 2 * nn > 1 else np.zeros(n)
        v = np.polynomial.chebyshev.chebvander(t, deg) * common[:, None]
        q, r = np.linalg.qr(v)
        keep = np.abs(np.diag(r)) > 1e-10 * max(np.abs(np.diag(r)).max(), 1e-300)
        self.q = q[:, keep]
        self.common = common

    def __call__(self, curves: np.ndarray) -> np.ndarray:
        return (np.where(self.common, curves, 0.0)) @ self.q


def profile_stage(polar: np.ndarray, valid: np.ndarray, ring: int, kernels, projector: _Projector,
                  deg: int, overlap: float, ring_mask: Optional[np.ndarray] = None):
    """Ring-profile fit of the pairing ring for a chunk: returns (features (c, D), fit rms (c,), ok (c,),
    ring mean intensity (c,)).

    ``ring_mask`` (nphi,): the polar mask of the ring shared by the chunk (True = valid), given when ``polar`` is 0
    wherever ``valid`` is False (so per-frame exclusions are zeros, which LOKI's fit drops anyway): all rings are
    then fitted with one shared mask.
    

    Parameters
    ----------
    polar : ndarray, (c, nq, nphi)
        Polar images.
    valid : ndarray of bool
        Valid samples, True = valid (LOKI's convention).
    ring : int
        Index of the pairing ring.
    kernels : kernel set
        The kernel set.
    projector : _Projector
        Projection onto the run's common valid samples (makes the features comparable).
    deg : int
        Polynomial degree.
    overlap : float
        Periodic padding fraction.
    ring_mask : ndarray of bool, optional
        The shared mask of the pairing ring, True = valid (LOKI's convention).
    """
    rings = polar[:, ring, :].astype(np.float64)
    masks = valid[:, ring, :]
    if ring_mask is not None:
        curves, ok = kernels.fit_profiles(rings, np.asarray(ring_mask, dtype=bool), deg, overlap)
    else:
        curves, ok = kernels.fit_profiles(np.where(masks, rings, 0.0), masks, deg, overlap)
    ok = ok & np.all(np.isfinite(curves), axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        resid = np.where(masks, rings - curves, 0.0)
        cnt = masks.sum(axis=-1)
        rms = np.sqrt((resid**2).sum(axis=-1) / np.maximum(cnt, 1))
        mean = np.where(cnt > 0, np.where(masks, rings, 0).sum(axis=-1) / np.maximum(cnt, 1), np.nan)
    feats = projector(np.where(np.isfinite(curves), curves, 0.0))
    rms = np.where(ok, rms, np.nan)
    return feats, rms, ok, mean


def autocorr_stage(polar: np.ndarray, valid: np.ndarray, kernels, zeroed: bool = False
                   ) -> Tuple[Accumulator, Accumulator, Accumulator]:
    """Raw correlation of a chunk: accumulators of the per-shot masked autocorrelation normalised by the squared
    ring mean (nq, nphi), of the polar image (nq, nphi), and of the ring means (nq,). ``zeroed=True``: ``polar`` is
    already 0 wherever ``valid`` is False.

    Parameters
    ----------
    polar : ndarray, (c, nq, nphi)
        Polar images.
    valid : ndarray of bool
        Valid samples, True = valid (LOKI's convention).
    kernels : kernel set
        The kernel set.
    zeroed : bool
        Invalid samples of `polar` are already zero.
    """
    # The chunk mean of the correlations (the kernel averages over shots without materialising them all); a NaN
    # there means a ring with no valid sample pair, which is static (corrupt frames never get here).
    zeroed = polar if zeroed else np.where(valid, polar, 0)
    c = kernels.autocorr(zeroed, valid, "mean", average=True, zeroed=True)
    # counts over the chunk: summing bytes into int32 is 2x faster than NumPy's bool -> int64 sum
    cnt0 = np.add.reduce(valid.view(np.uint8), axis=0, dtype=np.int32) if valid.dtype == bool else valid.sum(axis=0)
    img = Accumulator(zeroed.sum(axis=0, dtype=np.float64), cnt0.astype(np.int64))
    with np.errstate(invalid="ignore"):
        cnt = valid.sum(axis=-1)
        ring_mean = np.where(cnt > 0, zeroed.sum(axis=-1, dtype=np.float64) / np.maximum(cnt, 1), np.nan)
    return Accumulator.of_mean(c, len(polar)), img, Accumulator.of(ring_mean)


def pair_stage(features: np.ndarray, kernels):
    """Pair the shots (rows of ``features``): LOKI's order (index order, nearest unused shot).
    Returns (pairs (M, 2) int64, distances (M,), unpaired indices).

    Parameters
    ----------
    features : ndarray, (N, D)
        Features of all good shots.
    kernels : kernel set
        The kernel set.
    """
    if len(features) < 2:
        return np.zeros((0, 2), np.int64), np.zeros(0), np.arange(len(features), dtype=np.int64)
    return kernels.pair(np.ascontiguousarray(features, dtype=np.float64))


def diffcorr_stage(polar_a: np.ndarray, valid_a: np.ndarray, polar_b: np.ndarray, valid_b: np.ndarray,
                   kernels) -> Accumulator:
    """Difference correlation of a chunk of pairs: masked autocorrelation of ``a - b`` with the mask ``va & vb``,
    accumulated over the pairs (nq, nphi), unnormalised.

    Parameters
    ----------
    polar_a, polar_b : ndarray, (m, nq, nphi)
        Polar images of the first and second shot of each pair.
    valid_a, valid_b : ndarray of bool
        Their valid samples, True = valid (LOKI's convention).
    kernels : kernel set
        The kernel set.
    """
    m = valid_a & valid_b
    with np.errstate(invalid="ignore"):
        d = np.where(m, polar_a - polar_b, 0)  # in the polar images' float type
    return Accumulator.of_mean(kernels.autocorr(d, m, None, average=True, zeroed=True), len(d))


def diffcorr_pairs_stage(polar: np.ndarray, valid: np.ndarray, kernels) -> Accumulator:
    """:func:`diffcorr_stage` of the pairs (2i, 2i+1) of one chunk, without splitting it (the compiled kernels
    form the differences and combined masks themselves); ``valid`` (c, nq, nphi) or shared (nq, nphi).

    Parameters
    ----------
    polar : ndarray, (2m, nq, nphi)
        Polar images, pair i = frames (2i, 2i+1).
    valid : ndarray of bool
        Valid samples, True = valid (LOKI's convention).
    kernels : kernel set
        The kernel set.
    """
    return Accumulator.of_mean(kernels.diffcorr(polar, valid), len(polar) // 2)


def find_center(image, mask=None, guess: Optional[Sequence[float]] = None, *, width: float = 10,
                n_points: int = 5000, n_iter: int = 20):
    """Automatic beam centre: pick the most prominent ring of the radial profile around ``guess`` (default: the
    image centre) and fit it with :func:`xcca.fit_ring` (a wide annulus first, then ``width``, re-selecting the
    annulus up to ``n_iter`` times).

    ``mask``: True = valid pixel. Returns the :class:`xcca.ringfit.RingFitResult`.
    

    Parameters
    ----------
    image : array_like, (H, W)
        A detector image (e.g. the mean of good frames).
    mask : array_like of bool, optional
        Valid pixels, True = valid (LOKI's convention).
    guess : (float, float), optional
        Centre guess (x, y) in pixels (default: the image centre).
    width : float
        Width of the annulus around the chosen ring.
    n_points : int
        Brightest annulus pixels fitted.
    n_iter : int
        Selection/fit rounds (see :func:`xcca.fit_ring`).
    """
    from scipy.ndimage import median_filter
    from scipy.signal import find_peaks

    from .ringfit import fit_ring

    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"image must be 2-D, got shape {img.shape}")
    h, w = img.shape
    cx, cy = ((w - 1) / 2, (h - 1) / 2) if guess is None else (float(guess[0]), float(guess[1]))
    valid = np.isfinite(img) if mask is None else (np.asarray(mask, bool) & np.isfinite(img))
    yy, xx = np.indices(img.shape)
    r = np.hypot(xx - cx, yy - cy).astype(np.int64)
    prof = np.bincount(r[valid], img[valid]) / np.maximum(np.bincount(r[valid]), 1)
    rmax = int(min(h, w) * 0.48)
    rmin = max(3, int(min(h, w) * 0.05))
    if rmax <= rmin + 5:
        raise ValueError(f"image {img.shape} too small to find a ring automatically")
    # The most prominent peak of the profile (a 3-bin median first removes single-bin spikes of hot pixels).
    prof = median_filter(prof[:rmax], size=3, mode="nearest")
    peaks, props = find_peaks(prof, prominence=0)
    ok = peaks >= rmin
    if not ok.any():
        raise ValueError("no ring found in the radial profile for center='auto'; give the centre")
    r0 = int(peaks[ok][np.argmax(props["prominences"][ok])])
    # A wide first annulus tolerates a poor guess; the narrow rounds then converge on the ring's crest.
    first = fit_ring(img, (cx, cy, float(r0)), mask=mask, width=2 * width, n_points=n_points, n_iter=3)
    return fit_ring(img, first.beta, mask=mask, width=width, n_points=n_points, n_iter=n_iter)


# --------------------------------------------------------------------------------------------------- chunk protocol
#
# The drivers (xcca.pipeline locally, xcca.distributed on Dask) know nothing of what a chunk computes. They hand a
# chunk of frames and a RunPlan to pass1_chunk / pass2_chunk, get a ChunkResult back, and reduce the ChunkResults of
# all chunks with `+` in one fixed grouping (tree_sum / TreeSum: the same binary trees over blocks of TREE_BLOCK chunk
# indices, folded block after block, in every driver, so results are bit-identical whichever driver and however many
# workers ran them; the fold keeps the partials held at any time bounded, however long the run).
#
# To plug a new partial result into the run (e.g. a run correlator C(q, q', Δφ), a q-binned profile, B_l inputs):
#   1. write a function ``stage(polar, valid, plan) -> partial`` for pass 1 (every good frame: ``polar``
#      (c, nq, nphi) float32, 0 wherever ``valid`` is False, ``valid`` (c, nq, nphi) bool, True = valid sample,
#      possibly a read-only broadcast of one (nq, nphi) mask) or ``stage(polar, valid, plan) -> partial`` for pass 2
#      (the paired frames: rows 2i and 2i+1 of ``polar`` are a pair; ``valid`` their masks);
#   2. the partial must support ``a + b`` (a new object; a and b unchanged) for partials of disjoint chunks, be
#      picklable and small (independent of the number of frames; a cluster ships it between processes);
#   3. register it before the run: ``PASS1_STAGES["name"] = stage`` (or PASS2_STAGES; a stage may also return a
#      dict of named partials). Each RunPlan copies the registries when it is made and travels to the workers, so
#      a cluster runs what the client registered. ``ChunkResult.accumulators["name"]`` holds the run total after
#      the reduction, and ``AnalysisResult.extras["name"]`` the reduced partial (finish it there, e.g. ``.mean()``).
# Neither driver changes for a new stage.


@dataclass
class RunPlan:
    """Everything a chunk stage needs about the run, fixed before the chunks run (picklable; built by a driver).

    Attributes
    ----------
    backend : {"xcca", "numpy"}
        Kernel set (see :func:`xcca.kernels.make_kernels`).
    center : (float, float)
        Beam centre (x, y) in pixels.
    radii : numpy.ndarray
        Ring radii in pixels (nq,).
    nphi : int
        Angular samples per ring.
    shape : (int, int)
        Frame shape (H, W).
    mask : numpy.ndarray of bool or None
        Pixel mask shared by the run (True = valid pixel).
    outlier_thresh : float or None
        Per-ring modified z-score threshold (None: no outlier removal).
    deg, overlap : int, float
        Ring-profile fit parameters.
    chunk : int
        Frames per pass-1 chunk (pass 2 takes ``max(1, chunk // 2)`` pairs per chunk).
    ring : int or None
        Index of the pairing ring (None until :meth:`choose_ring` ran on the first chunk with a good frame).
    n_threads : int, optional
        Threads of the compiled kernels in one chunk.
    token : str
        Names the run for per-process caches of a distributed driver (set by the driver).
    ring_mask : ndarray of bool, (nphi,), or None
        Polar mask of the pairing ring (True = valid), fixed with ``ring``.
    projector : _Projector or None
        Projection of the ring profiles onto the ring's valid samples (the pairing features), fixed with ``ring``.
    pass1_stages, pass2_stages : dict
        The stages of this run by name: a copy of PASS1_STAGES / PASS2_STAGES when the plan is made (so workers
        run the stages the client registered; functions travel by reference, closures by value).
    grid : xcca.geometry_pipeline.RingGrid or None
        Rings of constant q on a physical geometry (``xcca.analyze(geometry=)``); ``radii`` are then the rings'
        pixel-equivalent radii (labels), ``center`` the geometry's beam centre. None: circles of ``radii`` pixels.
    """

    backend: str
    center: Tuple[float, float]
    radii: np.ndarray
    nphi: int
    shape: Tuple[int, int]
    mask: Optional[np.ndarray]
    outlier_thresh: Optional[float]
    deg: int
    overlap: float
    chunk: int
    ring: Optional[int] = None
    n_threads: Optional[int] = None
    pass1_stages: dict = field(default_factory=lambda: dict(PASS1_STAGES))
    pass2_stages: dict = field(default_factory=lambda: dict(PASS2_STAGES))
    ring_mask: Optional[np.ndarray] = None
    projector: Optional["_Projector"] = None
    token: str = ""
    grid: Optional[Any] = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_kernels", None)  # rebuilt where the plan is used (compiled grids do not pickle)
        return state

    @property
    def kernels(self):
        """The kernel set of the run, built once per process."""
        k = self.__dict__.get("_kernels")
        if k is None:
            from .kernels import make_kernels

            k = make_kernels(self.backend, self.center, self.radii, self.nphi, self.shape, self.n_threads,
                             grid=self.grid)
            self.__dict__["_kernels"] = k
        return k

    @property
    def pchunk(self) -> int:
        """Pairs per pass-2 chunk."""
        return max(1, self.chunk // 2)

    def choose_ring_from_geometry(self, ring_for_pairing) -> None:
        """Fix the pairing ring without frames when its radius is given: the ring nearest ``ring_for_pairing`` and
        its polar mask (geometry and pixel mask only), as :meth:`choose_ring` would on any chunk.

        Parameters
        ----------
        ring_for_pairing : float
            Radius (pixels) of the pairing ring.
        """
        kernels = self.kernels
        zero = np.zeros((1, *self.shape), np.uint8)
        _, valid = polar_stage(zero, self.mask, kernels, checked=True)
        self.choose_ring(ring_for_pairing, None, valid)

    def choose_ring(self, ring_for_pairing, polar: np.ndarray, valid: np.ndarray,
                    polar_mask: Optional[np.ndarray] = None) -> None:
        """Fix the pairing ring (and the projector of its profiles) from the first chunk with a good frame.

        Parameters
        ----------
        ring_for_pairing : float or None
            Radius (pixels) of the pairing ring, or None for the brightest.
        polar : ndarray, (c, nq, nphi), or None
            Polar images of the chunk.
        valid : ndarray of bool
            Their valid samples, True = valid (LOKI's convention).
        polar_mask : ndarray of bool, (nq, nphi), optional
            The polar mask of geometry and pixel mask alone (True = valid), before any outlier removal; default
            ``valid[0]``. The profile projector must not depend on the outliers of the chunk's first frame, or the
            fits would depend on which chunk chose the ring.
        """
        self.ring = pick_ring(ring_for_pairing, self.radii, polar, valid)
        pmask = valid[0] if polar_mask is None else polar_mask
        self.ring_mask = np.array(pmask[self.ring], dtype=bool)
        self.projector = _Projector(int(self.nphi), self.deg, self.overlap, self.ring_mask)


def blas_single_thread():
    """Context manager holding NumPy/SciPy's BLAS to one thread (threadpoolctl) while chunk stages run.

    Multi-threaded OpenBLAS splits a product differently from one thread, so the last bits of the profile fits
    depended on the BLAS thread count of the process: one thread everywhere makes the local and the distributed
    drivers bit-identical (Dask's nanny starts workers with one BLAS thread too), and it is faster here (the stages'
    BLAS calls are small: extra BLAS threads only spin). Without threadpoolctl this does nothing.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a dependency of xcca
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def pick_ring(ring_for_pairing, radii: np.ndarray, polar: np.ndarray, valid: np.ndarray) -> int:
    """Index of the pairing ring: the ring nearest ``ring_for_pairing`` (pixels), or by default the ring with the
    highest mean over the valid samples of the chunk among those with at least half of their samples valid.

    Parameters
    ----------
    ring_for_pairing : float or None
        Radius (pixels) of the pairing ring, or None for the brightest.
    radii : ndarray, (nq,)
        Ring radii in pixels.
    polar : ndarray, (c, nq, nphi)
        Polar images of a chunk.
    valid : ndarray of bool
        Their valid samples, True = valid (LOKI's convention).
    """
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


def _concat(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return np.concatenate([a, b])


@dataclass
class ChunkResult:
    """The partial result of one or more consecutive chunks; ``a + b`` is the result of a's chunks then b's.

    Attributes
    ----------
    accumulators : dict
        Partial sums by stage name (:class:`Accumulator` or any partial that adds); a name missing on one side counts
        as zero.
    shots : dict of numpy.ndarray
        Per-good-frame rows (``frames``, ``features``, ``fit_rms``, ``fit_ok``, ``ring_intensity``, ``n_outliers``),
        concatenated in chunk order.
    skipped : list of (int, str)
        Corrupt frames and why.
    dropped_pairs : list of (int, int)
        Pairs dropped in pass 2 (a frame became unreadable).
    timings : dict
        Seconds per stage, summed.
    """

    accumulators: Dict[str, Any] = field(default_factory=dict)
    shots: Dict[str, np.ndarray] = field(default_factory=dict)
    skipped: List[Tuple[int, str]] = field(default_factory=list)
    dropped_pairs: List[Tuple[int, int]] = field(default_factory=list)
    timings: Dict[str, float] = field(default_factory=dict)

    def __add__(self, other: "ChunkResult") -> "ChunkResult":
        acc = dict(self.accumulators)
        for k, v in other.accumulators.items():
            acc[k] = acc[k] + v if k in acc else v
        shots = {k: _concat(self.shots.get(k), other.shots.get(k)) for k in {**self.shots, **other.shots}}
        tim = dict(self.timings)
        for k, v in other.timings.items():
            tim[k] = tim.get(k, 0.0) + v
        return ChunkResult(acc, shots, self.skipped + other.skipped, self.dropped_pairs + other.dropped_pairs, tim)


TREE_BLOCK = 64  # chunks per block of the reduction: a binary tree inside, folded in order across blocks


def tree_sum(items: Sequence[Any]):
    """Sum of ``items`` in the run's fixed grouping: the items in blocks of :data:`TREE_BLOCK` (64), each block summed
    as a binary tree (adjacent pairs level by level, an odd last item moving up unchanged), the block sums added in
    order, ``((B0 + B1) + B2) + ...``. :class:`TreeSum` gives the same grouping streaming.

    The tree keeps the rounding of float64 sums at O(log) inside a block; folding the blocks bounds what a driver
    holds (one running total, a block's O(log 64) partials) however long the run, which matters for partials of
    a gigabyte (a full run correlator). Any aligned power-of-two group of at most 64 items is a subtree, so a task
    may sum such a group itself (the Dask driver's chunk groups).

    Parameters
    ----------
    items : sequence
        Partial results (anything with ``+``), in run order.
    """
    items = list(items)
    if not items:
        raise ValueError("tree_sum of no items")
    total = None
    for b in range(0, len(items), TREE_BLOCK):
        level = items[b:b + TREE_BLOCK]
        while len(level) > 1:
            nxt = [level[i] + level[i + 1] for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                nxt.append(level[-1])
            level = nxt
        total = level[0] if total is None else total + level[0]
    return total


class TreeSum:
    """Streaming :func:`tree_sum`: ``push`` the items in order, ``result()`` is the same sum, bit for bit, with at
    most one running total and log2(64) + 1 partials held."""

    def __init__(self):
        self._stack: List[Tuple[int, Any]] = []  # (level, partial): a binary counter over the block's items
        self._n = 0  # items pushed into the current block
        self._total = None  # the fold of the finished blocks

    def push(self, item) -> None:
        """Add the next item.

        Parameters
        ----------
        item : object supporting +
            The next partial result, in run order.
        """
        level = 0
        while self._stack and self._stack[-1][0] == level:
            _, prev = self._stack.pop()
            item = prev + item
            level += 1
        self._stack.append((level, item))
        self._n += 1
        if self._n == TREE_BLOCK:  # the block's tree is complete: a single partial
            block = self._stack.pop()[1]
            self._total = block if self._total is None else self._total + block
            self._n = 0

    def result(self):
        """The sum of the items pushed (None if none)."""
        if not self._stack:
            return self._total
        acc = self._stack[-1][1]
        for _, prev in reversed(self._stack[:-1]):
            acc = prev + acc
        return acc if self._total is None else self._total + acc


def _raw_stage(polar, valid, plan):
    a_raw, a_img, a_prof = autocorr_stage(polar, valid, plan.kernels, zeroed=True)
    return {"raw": a_raw, "mean_polar": a_img, "radial_profile": a_prof}


def _difference_stage(polar, valid, plan):
    return {"difference": diffcorr_pairs_stage(polar, valid, plan.kernels)}


# Stages of the run by name (see the chunk protocol above). A stage returning a dict contributes several partials.
PASS1_STAGES: Dict[str, Callable] = {"raw": _raw_stage}
PASS2_STAGES: Dict[str, Callable] = {"difference": _difference_stage}


def _run_stages(stages, polar, valid, plan, acc, timings, tname):
    for name, stage in stages.items():
        t0 = time.perf_counter()
        out = stage(polar, valid, plan)
        if isinstance(out, dict):
            acc.update(out)
        else:
            acc[name] = out
        key = tname if name in ("raw", "difference") else name
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0


def pass1_chunk(frames: np.ndarray, errors: List[Optional[str]], start: int, plan: RunPlan, *,
                ring_for_pairing=None, polar_out: Optional[np.ndarray] = None,
                outlier_sink: Optional[Callable[[int, np.ndarray], bool]] = None) -> ChunkResult:
    """Pass 1 of one chunk (frames ``start ..``): corrupt frames out, polar remap, outliers, profile fit of the
    pairing ring, and the pass-1 stages (the raw correlation and whatever else is registered).

    ``plan.ring`` None: this chunk chooses the pairing ring (only ever the first chunk with a good frame; a
    distributed driver chooses it before the chunks run). ``polar_out``: a reusable polar buffer.
    ``outlier_sink(frame, flat_positions)``: receives each frame's removed outlier positions (for a driver's cache;
    it returns False to stop offering).
    

    Parameters
    ----------
    frames : ndarray, (c, H, W)
        The chunk's frames.
    errors : list of (str or None)
        Read errors per frame.
    start : int
        Index of the chunk's first frame.
    plan : RunPlan
        The run's fixed parameters.
    ring_for_pairing : float, optional
        Radius (pixels) of the pairing ring when this chunk chooses it.
    polar_out : ndarray, optional
        A reusable polar buffer.
    outlier_sink : callable, optional
        ``sink(frame, outlier_mask) -> bool`` keeps pass-1 outlier masks for pass 2.
    """
    t = {"polar": 0.0, "clean": 0.0, "fit": 0.0, "autocorr": 0.0}
    res = ChunkResult(timings=t)
    bad = check_frames(frames, plan.mask, errors)
    res.skipped = [(start + k, why) for k, why in enumerate(bad) if why is not None]
    keep = np.array([k for k, why in enumerate(bad) if why is None], dtype=np.int64)
    if not keep.size:
        return res
    kernels = plan.kernels
    fr = frames[keep] if keep.size < len(frames) else frames
    t0 = time.perf_counter()
    # checked: valid is the broadcast polar mask, shared by the chunk (no per-frame copy)
    out = polar_out if polar_out is not None and len(polar_out) >= len(fr) else None
    polar, valid = polar_stage(fr, plan.mask, kernels, out=None if out is None else out[:len(fr)], checked=True)
    pmask = valid[0]
    t1 = time.perf_counter()
    # From here on polar is 0 wherever valid is False (the invalid samples and the removed outliers), so the later
    # stages need no masked copies.
    if not kernels.fill == 0:
        polar[:, ~pmask] = 0
    valid, nout = clean_stage(polar, valid, plan.outlier_thresh, kernels)
    size = polar[0].size
    if plan.outlier_thresh is not None and nout.any():
        removed = np.flatnonzero(valid < pmask)  # flat positions of the removed outliers in the chunk
        polar.reshape(-1)[removed] = 0
        if outlier_sink is not None:
            bounds = np.searchsorted(removed, np.arange(len(polar) + 1) * size)
            for k in range(len(polar)):
                if not outlier_sink(int(start + keep[k]), (removed[bounds[k]:bounds[k + 1]] - k * size)
                                    .astype(np.int32)):
                    break
    elif plan.outlier_thresh is not None and outlier_sink is not None:
        for k in range(len(polar)):
            if not outlier_sink(int(start + keep[k]), np.zeros(0, np.int32)):
                break
    t2 = time.perf_counter()
    if plan.ring is None:
        plan.choose_ring(ring_for_pairing, polar, valid, polar_mask=pmask)
    f_, rms, ok, inten = profile_stage(polar, valid, plan.ring, kernels, plan.projector, plan.deg, plan.overlap,
                                       ring_mask=plan.ring_mask)
    t3 = time.perf_counter()
    _run_stages(plan.pass1_stages, polar, valid, plan, res.accumulators, t, "autocorr")
    t["polar"] += t1 - t0
    t["clean"] += t2 - t1
    t["fit"] += t3 - t2
    res.shots = dict(frames=start + keep, features=f_, fit_rms=rms, fit_ok=ok, ring_intensity=inten,
                     n_outliers=nout)
    return res


def clean_cached(polar, valid, frame_ids, thresh, kernels, cache: Optional[Dict[int, np.ndarray]]) -> np.ndarray:
    """:func:`clean_stage` for pass 2: the outlier positions of pass 1 where ``cache`` has them, recomputed
    elsewhere (the same result: the outlier masks are deterministic).

    Parameters
    ----------
    polar : ndarray, (c, nq, nphi)
        Polar images.
    valid : ndarray of bool
        Valid samples, True = valid (LOKI's convention).
    frame_ids : sequence of int
        Frame index of each image.
    thresh : float or None
        Modified z-score threshold (None: no cleaning).
    kernels : kernel set
        The kernel set.
    cache : dict of int to ndarray, optional
        Pass-1 outlier masks by frame index.
    """
    if thresh is None:
        return valid
    cache = cache or {}
    valid = np.array(valid, copy=True)
    todo = [k for k, f in enumerate(frame_ids) if int(f) not in cache]
    for k, f in enumerate(frame_ids):
        idx = cache.get(int(f))
        if idx is not None:
            valid[k].reshape(-1)[idx] = False
    if todo:
        tt = np.asarray(todo)
        valid[tt] = clean_stage(polar[tt], valid[tt], thresh, kernels)[0]
    return valid


def pass2_chunk(frames: np.ndarray, errors: List[Optional[str]], pairs: np.ndarray, plan: RunPlan, *,
                polar_out: Optional[np.ndarray] = None, outlier_cache: Optional[Dict[int, np.ndarray]] = None
                ) -> ChunkResult:
    """Pass 2 of one chunk of pairs: ``frames`` are the frames of ``pairs.ravel()`` (a pair's frames adjacent);
    polar remap, the pass-1 outlier masks (``outlier_cache`` or recomputed), and the pass-2 stages (the difference
    correlation and whatever else is registered). A pair with a frame that became unreadable is dropped and listed
    in ``dropped_pairs``.

    Parameters
    ----------
    frames : ndarray, (2m, H, W)
        The frames of ``pairs.ravel()``.
    errors : list of (str or None)
        Read errors per frame.
    pairs : ndarray of int, (m, 2)
        The chunk's pairs.
    plan : RunPlan
        The run's fixed parameters.
    polar_out : ndarray, optional
        A reusable polar buffer.
    outlier_cache : dict of int to ndarray, optional
        Pass-1 outlier masks by frame index.
    """
    t = {"polar": 0.0, "clean": 0.0, "diffcorr": 0.0}
    res = ChunkResult(timings=t)
    pp = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if any(e is not None for e in errors):  # a frame that read in pass 1 fails now: drop its pair
        bad_pairs = {k // 2 for k, e in enumerate(errors) if e is not None}
        res.dropped_pairs = [(int(pp[k][0]), int(pp[k][1])) for k in sorted(bad_pairs)]
        keep = np.array([k for k in range(len(pp)) if k not in bad_pairs], dtype=np.int64)
        frames = frames.reshape(len(pp), 2, *plan.shape)[keep].reshape(-1, *plan.shape)
        pp = pp[keep]
        if not len(pp):
            return res
    kernels = plan.kernels
    t0 = time.perf_counter()
    out = polar_out if polar_out is not None and len(polar_out) >= len(frames) else None
    polar, valid = polar_stage(frames, plan.mask, kernels, out=None if out is None else out[:len(frames)],
                               checked=frames.dtype.kind != "f")
    t1 = time.perf_counter()
    valid = clean_cached(polar, valid, pp.ravel(), plan.outlier_thresh, kernels, outlier_cache)
    t2 = time.perf_counter()
    _run_stages(plan.pass2_stages, polar, valid, plan, res.accumulators, t, "diffcorr")
    t["polar"] += t1 - t0
    t["clean"] += t2 - t1
    return res
