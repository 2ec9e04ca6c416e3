"""Shot pairing that scales to a million shots (LOKI's pair_fits, exactly, and global greedy matching).

XFEL shots fluctuate; pairing shots whose ring profiles look alike and correlating the difference of each pair
cancels the detector's anisotropy. Both methods run in the C++ core over a k-d tree with deletions: memory O(N·D),
never an N×N distance matrix.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import numpy.typing as npt

from . import _checks, _core
from .rings import PeriodicFit

__all__ = ["PairResult", "pair_shots"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairResult:
    """Result of :func:`pair_shots`.

    Attributes
    ----------
    pairs : ndarray of int64, (M, 2)
        Shot indices of each pair ("loki": [visiting shot, partner] in visiting order; "greedy": [lower, higher]
        in the order greedy selects them, i.e. by increasing distance).
    distances : ndarray of float64, (M,)
        Euclidean distance of each pair (between the features, or between the fitted curves).
    unpaired : ndarray of int64, (K,)
        Shots left without a partner (one shot for odd N).
    """

    pairs: np.ndarray
    distances: np.ndarray
    unpaired: np.ndarray

    def __len__(self) -> int:
        return self.pairs.shape[0]


def _features(features: Union[npt.ArrayLike, PeriodicFit]) -> np.ndarray:
    if isinstance(features, PeriodicFit):
        if not features.shared_mask:
            _log.info("pair_shots: rings have individual masks, pairing the full curves (n = %d dimensions)",
                      features.n)
        return features.features()
    try:
        arr = np.asarray(features)
    except ValueError as exc:
        raise ValueError(f"features must be a rectangular (N, D) array: {exc}") from None
    if arr.dtype == object:
        raise ValueError("features must be a rectangular (N, D) numeric array, got a ragged/object array")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"features must be a real numeric array, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[:, None]  # N scalar features
    if arr.ndim != 2:
        raise ValueError(f"features must be 2-D (N shots, D features), got shape {arr.shape}")
    if arr.shape[1] < 1:
        raise ValueError("features must have at least one column")
    return arr


def pair_shots(
    features: Union[npt.ArrayLike, PeriodicFit], method: str = "loki", *, n_threads: Optional[int] = None
) -> PairResult:
    """Pair shots whose feature vectors are close, without an N×N distance matrix.

    Parameters
    ----------
    features : array_like (N, D) or (N,), or PeriodicFit
        One feature vector per shot (float64 is used internally; not modified). A :class:`xcca.PeriodicFit` with a
        shared mask (True = valid) is paired in deg + 1 dimensions through its whitened coefficients
        (:meth:`PeriodicFit.features`), whose distances equal those between the fitted curves; with per-ring masks
        its full curves are used.
    method : {"loki", "greedy"}
        "loki": LOKI's ``pair_fits`` — shots visited in index order, each shot not yet used takes its nearest unused
        shot (ties → lowest index). "greedy": global greedy matching — repeatedly the two closest remaining shots
        (ties → lowest indices), computed exactly through mutual nearest neighbours.
    n_threads : int, optional
        Threads for the nearest-neighbour searches (None: all usable cores).

    Returns
    -------
    PairResult
        ``.pairs`` (M, 2) int64, ``.distances`` (M,), ``.unpaired``.

    Raises
    ------
    ValueError
        Fewer than 2 shots, a non-finite feature (the message names the shot), a bad method or ragged input.
    """
    if method not in ("loki", "greedy"):
        raise ValueError(f"method must be 'loki' or 'greedy', got {method!r}")
    n_threads = _checks.n_threads(n_threads)
    arr = _features(features)
    if arr.shape[0] < 2:
        raise ValueError(f"features: need at least 2 shots to pair, got {arr.shape[0]}")
    pairs, dist, unpaired = _core.pair_features(np.ascontiguousarray(arr, dtype=np.float64), method, n_threads)
    return PairResult(pairs=pairs, distances=dist, unpaired=unpaired)
