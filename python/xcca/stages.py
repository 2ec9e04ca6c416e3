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

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

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
]


def check_frames(frames: np.ndarray, mask: Optional[np.ndarray],
                 errors: Optional[List[Optional[str]]] = None) -> List[Optional[str]]:
    """Why each frame of a chunk is corrupt (None = good): read errors, no nonzero valid pixel, non-finite valid
    pixels. ``mask``: True = valid pixel (shared by the run)."""
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
    """

    total: np.ndarray
    count: np.ndarray

    @classmethod
    def zeros(cls, shape) -> "Accumulator":
        return cls(np.zeros(shape, dtype=np.float64), np.zeros(shape, dtype=np.int64))

    @classmethod
    def of(cls, values: np.ndarray, axis: int = 0) -> "Accumulator":
        """Sum of ``values`` over ``axis`` ignoring NaN."""
        v = np.asarray(values, dtype=np.float64)
        ok = np.isfinite(v)
        return cls(np.where(ok, v, 0.0).sum(axis=axis), ok.sum(axis=axis).astype(np.int64))

    @classmethod
    def of_mean(cls, mean: np.ndarray, weight: int) -> "Accumulator":
        """The accumulator of ``weight`` items whose mean is ``mean`` (NaN entries count for nothing)."""
        m = np.asarray(mean, dtype=np.float64)
        ok = np.isfinite(m)
        return cls(np.where(ok, m * weight, 0.0), ok.astype(np.int64) * int(weight))

    def add(self, other: "Accumulator") -> "Accumulator":
        self.total += other.total
        self.count += other.count
        return self

    def __add__(self, other: "Accumulator") -> "Accumulator":
        return Accumulator(self.total + other.total, self.count + other.count)

    def mean(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.total / np.maximum(self.count, 1), np.nan)


def outlier_mask(rings: np.ndarray, valid: np.ndarray, thresh: float = 3.5) -> np.ndarray:
    """Per-ring outliers by LOKI's modified z-score: ``0.6745·|x - median| / MAD > thresh`` over the valid samples
    of each ring (last axis); MAD = 0 gives no outlier. Returns a bool array of ``rings``' shape (True = outlier).

    Computed in float64 (as the compiled ``_core.ring_outliers``, which gives identical results). Vectorised with one
    ``np.partition`` per statistic: invalid samples are replaced by -inf/+inf in equal numbers so that the valid
    median sits at the same two positions in every row.
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
    and the number of removed samples per frame. ``thresh=None`` removes nothing."""
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
    already 0 wherever ``valid`` is False."""
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
    Returns (pairs (M, 2) int64, distances (M,), unpaired indices)."""
    if len(features) < 2:
        return np.zeros((0, 2), np.int64), np.zeros(0), np.arange(len(features), dtype=np.int64)
    return kernels.pair(np.ascontiguousarray(features, dtype=np.float64))


def diffcorr_stage(polar_a: np.ndarray, valid_a: np.ndarray, polar_b: np.ndarray, valid_b: np.ndarray,
                   kernels) -> Accumulator:
    """Difference correlation of a chunk of pairs: masked autocorrelation of ``a - b`` with the mask ``va & vb``,
    accumulated over the pairs (nq, nphi), unnormalised."""
    m = valid_a & valid_b
    with np.errstate(invalid="ignore"):
        d = np.where(m, polar_a - polar_b, 0)  # in the polar images' float type
    return Accumulator.of_mean(kernels.autocorr(d, m, None, average=True, zeroed=True), len(d))


def diffcorr_pairs_stage(polar: np.ndarray, valid: np.ndarray, kernels) -> Accumulator:
    """:func:`diffcorr_stage` of the pairs (2i, 2i+1) of one chunk, without splitting it (the compiled kernels
    form the differences and combined masks themselves); ``valid`` (c, nq, nphi) or shared (nq, nphi)."""
    return Accumulator.of_mean(kernels.diffcorr(polar, valid), len(polar) // 2)


def find_center(image, mask=None, guess: Optional[Sequence[float]] = None, *, width: float = 10,
                n_points: int = 5000, n_iter: int = 20):
    """Automatic beam centre: pick the most prominent ring of the radial profile around ``guess`` (default: the
    image centre) and fit it with :func:`xcca.fit_ring` (a wide annulus first, then ``width``, re-selecting the
    annulus up to ``n_iter`` times).

    ``mask``: True = valid pixel. Returns the :class:`xcca.ringfit.RingFitResult`.
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
