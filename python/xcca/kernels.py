"""The kernel sets the pipeline's stages call, chosen by ``backend``.

A kernel set holds the run geometry (centre, radii, nphi, frame shape) and provides ``remap``, ``outliers``,
``autocorr``, ``diffcorr``, ``fit_profiles`` and ``pair`` with the semantics of :class:`xcca.reference.PipelineKernels`
(the NumPy/SciPy baseline) and a ``fill`` value for the invalid polar samples. ``backend="xcca"`` gives
:class:`XccaKernels` (the compiled kernels of this package), ``"numpy"`` the baseline.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["KernelGeometry", "XccaKernels", "make_kernels"]


class KernelGeometry:
    """The run geometry a kernel set is built for.

    Parameters
    ----------
    center : (float, float)
        Beam centre (x, y) in pixels, x along columns.
    radii : array_like (nq,)
        Ring radii in pixels.
    nphi : int
        Angular samples per ring, ``φ_j = 2πj/nphi``.
    shape : (int, int)
        Frame shape (H, W).
    grid : xcca.geometry_pipeline.RingGrid, optional
        Rings of constant q on a physical geometry (``xcca.analyze(geometry=)``): the kernels remap onto its exact
        (q, φ) samples (:class:`xcca.GeometryPolarGrid`) instead of the circles of ``radii`` around ``center``
        (which then only label the rings).
    """

    def __init__(self, center, radii, nphi, shape, grid=None):
        self.grid = grid
        self.center = (float(center[0]), float(center[1]))
        self.radii = np.asarray(radii, dtype=np.float64)
        self.nphi = int(nphi)
        self.shape = tuple(int(s) for s in shape)
        self.phi = 2 * np.pi * np.arange(self.nphi) / self.nphi


class XccaKernels:
    """The compiled kernels of xcca (polar remap, correlations, fits, pairing) as the pipeline's kernel set.

    Parameters
    ----------
    geom : KernelGeometry
        The run geometry.
    n_threads : int, optional
        Threads of every kernel call (None = all usable cores); results do not depend on it.
    """

    name = "xcca"

    def __init__(self, geom: KernelGeometry, n_threads: Optional[int] = None):
        import xcca as _x

        missing = [name for name in ("PolarGrid", "autocorrelate", "fit_periodic", "pair_shots")
                   if not hasattr(_x, name)]
        if missing:
            raise RuntimeError(f"the compiled kernels {missing} are not available in this build of xcca; "
                               "use backend='numpy'")
        self.geom = geom
        self.n_threads = n_threads
        self._grid = (geom.grid.grid if geom.grid is not None  # a GeometryPolarGrid: the same remap signature
                      else _x.PolarGrid(geom.center, geom.radii, geom.nphi, geom.shape))
        self._autocorrelate = _x.autocorrelate
        self._difference_correlation = _x.difference_correlation
        self._fit_periodic = _x.fit_periodic
        self._pair_shots = _x.pair_shots

    # Invalid samples are filled with 0, not NaN: the stages then need no np.where to zero them.
    fill = 0.0

    def remap(self, frames, mask, out=None):
        """Bilinear polar remap of (c, H, W) frames (``mask`` True = valid pixel): ``(polar, polar_mask)``.

        Parameters
        ----------
        frames : ndarray, (c, H, W)
            A chunk of frames.
        mask : ndarray of bool, (H, W), optional
            True = valid pixel (LOKI's convention); None = all valid.
        out : ndarray, optional
            Destination of the polar images (c, nq, nphi).
        """
        polar, pmask = self._grid.remap(frames, mask=mask, method="bilinear", fill=self.fill, out=out,
                                        n_threads=self.n_threads)
        return polar, np.asarray(pmask, dtype=bool)

    def outliers(self, polar, valid, thresh):
        """Per-ring outlier removal: ``(new valid mask, removed samples per frame)``.

        Parameters
        ----------
        polar : ndarray, (c, nq, nphi)
            Polar images.
        valid : ndarray of bool
            Valid samples, True = valid (LOKI's convention).
        thresh : float
            Modified z-score threshold.
        """
        from . import _core

        v = valid
        if v.ndim == polar.ndim and v.shape[0] > 1 and v.strides[0] == 0:  # broadcast shared mask: pass one copy
            v = v[0]
        new, removed = _core.ring_outliers(np.ascontiguousarray(polar), np.ascontiguousarray(v, dtype=bool),
                                           float(thresh), self.n_threads)
        return new, removed.reshape(len(polar), -1).sum(axis=1)

    def autocorr(self, rings, mask, normalize, average=False, zeroed=False):
        """Masked angular autocorrelation of ``rings`` (True = valid sample), optionally averaged over shots.

        Parameters
        ----------
        rings : ndarray, (..., nq, nphi)
            Rings.
        mask : ndarray of bool
            Valid samples, True = valid (LOKI's convention).
        normalize : {None, 'mean', 'std'}
            As in :func:`xcca.autocorrelate`.
        average : bool
            Mean over the shots.
        zeroed : bool
            The invalid samples of `rings` are already zero (skips a copy).
        """
        # The core selects (not multiplies) the valid samples, so NaN or outliers in masked samples never leak; a
        # mask shared by the shots (a broadcast view) is passed as one (nq, nphi) mask: its pair counts are
        # computed once per ring instead of once per shot.
        m = np.asarray(mask, dtype=bool)
        if m.ndim == rings.ndim and m.shape[0] > 1 and m.strides[0] == 0:
            m = m[0]
        return self._autocorrelate(rings, mask=m, normalize=normalize, average=average, n_threads=self.n_threads)

    def diffcorr(self, polar, valid):
        """Mean over the pairs (2i, 2i+1) of the masked autocorrelation of their difference.

        Parameters
        ----------
        polar : ndarray, (2m, nq, nphi)
            Polar images of m pairs, pair i = frames (2i, 2i+1).
        valid : ndarray of bool
            Valid samples, True = valid (LOKI's convention).
        """
        m = np.asarray(valid, dtype=bool)
        if m.ndim == polar.ndim and m.shape[0] > 1 and m.strides[0] == 0:
            m = m[0]
        pairs = np.arange(len(polar), dtype=np.int64).reshape(-1, 2)
        return self._difference_correlation(polar, pairs, mask=m, average=True, n_threads=self.n_threads)

    def fit_profiles(self, rings, masks, deg, overlap):
        """LOKI's periodic polynomial fit of each ring: ``(curves on x = 0..n-1, ok per ring)``.

        Parameters
        ----------
        rings : ndarray, (c, n)
            The pairing ring of each shot (outliers zeroed).
        masks : ndarray of bool, (n,) or (c, n)
            Valid samples, True = valid (LOKI's convention).
        deg : int
            Polynomial degree.
        overlap : float
            Periodic padding as a fraction of the ring length.
        """
        # masks may be the shared (n,) ring mask with the outliers zeroed in ``rings``: LOKI's fit drops y == 0, so
        # that is the same fit, and fit_periodic's one-projection fast path serves every ring without a zero
        masks = np.asarray(masks, dtype=bool)
        if masks.ndim == 1 and len(rings) > 1:
            # Rings with zeros at valid samples (removed outliers) have their own sample set; fit_periodic would group
            # them by pattern with np.unique over (rings, n) bool rows, which costs more than the fits. Fitting each
            # such ring alone with its own 1-D mask takes fit_periodic's one-projection path: the same least squares.
            irregular = np.flatnonzero(((rings == 0) & masks).any(axis=-1))
            if irregular.size:
                curves = np.empty(rings.shape, dtype=np.float64)
                ok = np.empty(len(rings), dtype=bool)
                regular = np.setdiff1d(np.arange(len(rings)), irregular)
                if regular.size:
                    curves[regular], ok[regular] = self._fit(rings[regular], masks, deg, overlap)
                for i in irregular:
                    c, o = self._fit(rings[i:i + 1], masks & (rings[i] != 0), deg, overlap)
                    curves[i], ok[i] = c[0], o[0]
                return curves, ok
        return self._fit(rings, masks, deg, overlap)

    def _fit(self, rings, masks, deg, overlap):
        res = self._fit_periodic(rings, masks, deg=deg, overlap=overlap, n_threads=self.n_threads)
        curves = _unmasked_curves(res, rings.shape[-1])
        ok = np.asarray(getattr(res, "ok", np.all(np.isfinite(curves), axis=-1)), dtype=bool)
        return curves, ok

    def pair(self, features):
        """LOKI's pairing of the feature rows: ``(pairs (M, 2), distances (M,), unpaired)``.

        Parameters
        ----------
        features : ndarray, (N, D)
            One feature vector per shot.
        """
        res = self._pair_shots(features, method="loki", n_threads=self.n_threads)
        return (np.asarray(res.pairs, dtype=np.int64).reshape(-1, 2), np.asarray(res.distances, dtype=np.float64),
                np.asarray(res.unpaired, dtype=np.int64))


def _unmasked_curves(res, n: int) -> np.ndarray:
    """The fitted profiles evaluated on x = 0..n-1 without the mask, from a fit result of xcca.fit_periodic."""
    for attr in ("evaluate", "__call__"):
        fn = getattr(res, attr, None)
        if callable(fn):
            try:
                return np.asarray(fn(np.arange(n)), dtype=np.float64)
            except TypeError:
                continue
    return np.asarray(res.curves, dtype=np.float64)


def make_kernels(backend: str, center, radii, nphi: int, shape, n_threads: Optional[int] = None, grid=None):
    """Kernel set of the pipeline for one run geometry.

    Parameters
    ----------
    backend : {"xcca", "numpy"}
        ``"xcca"``: the compiled kernels (:class:`XccaKernels`); ``"numpy"``: the NumPy/SciPy baseline
        (:class:`xcca.reference.PipelineKernels`, for comparison and as a test oracle).
    center, radii, nphi, shape
        The run geometry (see :class:`KernelGeometry`).
    n_threads : int, optional
        Threads of the compiled kernels (None = all usable cores).
    grid : xcca.geometry_pipeline.RingGrid, optional
        Rings of constant q on a physical geometry (see :class:`KernelGeometry`).

    Raises
    ------
    ValueError
        Unknown backend.
    """
    geom = KernelGeometry(center, radii, nphi, shape, grid=grid)
    if backend == "xcca":
        return XccaKernels(geom, n_threads)
    if backend == "numpy" and grid is not None:
        from .geometry_pipeline import GeometryNumpyKernels

        return GeometryNumpyKernels(geom, n_threads)
    if backend == "numpy":
        from .reference import PipelineKernels

        return PipelineKernels(geom, n_threads)
    raise ValueError(f"backend must be 'xcca' or 'numpy', got {backend!r}")

