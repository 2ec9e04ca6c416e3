"""Shot pairing that scales to a million shots (LOKI's pair_fits, exactly, and global greedy matching).

XFEL shots fluctuate; pairing shots whose ring profiles look alike and correlating the difference of each pair
cancels the detector's anisotropy. Both methods run in the C++ core, exactly (pairs identical to the full-matrix
reference :mod:`xcca.reference`), in memory O(N·D), never an N×N distance matrix: identical rows are folded first,
then the exact k nearest neighbours of every shot come from a k-d tree (low intrinsic dimension) or from a blocked
float32 ‖a‖² + ‖b‖² − 2a·b scan with a certified error bound and an exact float64 recheck (high intrinsic dimension),
chosen at run time from the data. Pairing within keys (AGIPD memory cells, pulse-energy bins) and random pairs (the
inter-shot control) are here too.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import numpy.typing as npt

from . import _checks, _core
from .rings import PeriodicFit

__all__ = ["PairResult", "pair_shots", "random_pairs"]

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
        Shots left without a partner (one shot for odd N; with ``groups``, one per odd group), ascending.
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


def _group_index(groups: npt.ArrayLike, n: int) -> list[np.ndarray]:
    """Shot indices (ascending) of each group, in sorted key order."""
    try:
        g = np.asarray(groups)
    except ValueError as exc:
        raise ValueError(f"groups must be a 1-D array of N keys: {exc}") from None
    if g.ndim != 1 or g.shape[0] != n:
        raise ValueError(f"groups must be a 1-D array of one key per shot ({n}), got shape {g.shape}")
    if g.dtype == object:
        raise TypeError("groups must be a numeric or string array of keys, got an object array")
    if g.dtype.kind == "f" and not np.isfinite(g).all():
        raise ValueError(f"groups: shot {int(np.flatnonzero(~np.isfinite(g))[0])} has a non-finite key")
    if g.dtype.kind not in "biufUS":
        raise TypeError(f"groups must hold integer, float or string keys, got dtype {g.dtype}")
    _, inv, counts = np.unique(g, return_inverse=True, return_counts=True)
    order = np.argsort(inv.reshape(-1), kind="stable")
    return np.split(order.astype(np.int64), np.cumsum(counts)[:-1])


def pair_shots(
    features: Union[npt.ArrayLike, PeriodicFit],
    method: str = "loki",
    *,
    groups: Optional[npt.ArrayLike] = None,
    n_threads: Optional[int] = None,
) -> PairResult:
    """Pair shots whose feature vectors are close, exactly and without an N×N distance matrix.

    Parameters
    ----------
    features : array_like (N, D) or (N,), or PeriodicFit
        One feature vector per shot (float64 is used internally; not modified; every value finite). A
        :class:`xcca.PeriodicFit` with a shared mask (True = valid) is paired in deg + 1 dimensions through its
        whitened coefficients (:meth:`PeriodicFit.features`), whose distances equal those between the fitted curves;
        with per-ring masks its full curves are used. Features are scaled internally by a power of two (exact), so
        1e±200 give the same pairs as unscaled values; values below 2⁻⁴⁰⁰ (≈ 1e-120) of the largest one count as 0.
    method : {"loki", "greedy"}
        "loki": LOKI's ``pair_fits`` — shots visited in index order, each shot not yet used takes its nearest unused
        shot (ties → lowest index). "greedy": global greedy matching — repeatedly the two closest remaining shots
        (ties → lowest indices), computed exactly through mutual nearest neighbours.
    groups : array_like (N,), optional
        A key per shot (integers, floats or strings: AGIPD memory cell, pulse-energy bin, jet position …): shots are
        paired only with shots of the same key, exactly as if each group were paired alone. Rows come group by group
        in sorted key order, each group's rows in the method's order; a group's odd shot goes to ``unpaired``.
    n_threads : int, optional
        Threads for the nearest-neighbour searches (None: all usable cores).

    Returns
    -------
    PairResult
        ``.pairs`` (M, 2) int64, ``.distances`` (M,), ``.unpaired``.

    Raises
    ------
    ValueError
        Fewer than 2 shots, a non-finite feature (the message names the shot), a bad method, ragged input, or
        ``groups`` of the wrong length or with a non-finite key.
    TypeError
        Non-numeric features or keys.

    Notes
    -----
    Identical shots (blank or saturated frames give equal fits) are folded first, so they cost no more than
    distinct ones. For up to 512 distinct shots all exact distances are computed once (whole ring profiles as
    features, D in the thousands, pair in milliseconds). Beyond, the exact k nearest neighbours of every shot come
    from a k-d tree when sampled queries show that it prunes well (low intrinsic dimension), otherwise from a blocked
    float32 ‖a‖² + ‖b‖² − 2a·b scan whose candidates, selected with a certified rounding-error bound, are rechecked
    exactly in float64.
    """
    if method not in ("loki", "greedy"):
        raise ValueError(f"method must be 'loki' or 'greedy', got {method!r}")
    n_threads = _checks.n_threads(n_threads)
    arr = _features(features)
    if groups is None:
        if arr.shape[0] < 2:
            raise ValueError(f"features: need at least 2 shots to pair, got {arr.shape[0]}")
        pairs, dist, unpaired = _core.pair_features(np.ascontiguousarray(arr, dtype=np.float64), method, n_threads)
        return PairResult(pairs=pairs, distances=dist, unpaired=unpaired)
    if arr.shape[0] < 1:
        raise ValueError("features: need at least 1 shot")
    x = np.ascontiguousarray(arr, dtype=np.float64)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise ValueError(f"features: shot {int(np.flatnonzero(bad)[0])} has a non-finite value (NaN or inf)")
    all_pairs, all_dist, all_unpaired = [], [], []
    for idx in _group_index(groups, x.shape[0]):
        if idx.size < 2:
            all_unpaired.append(idx)
            continue
        p, d, u = _core.pair_features(x[idx], method, n_threads)
        all_pairs.append(idx[p])
        all_dist.append(d)
        all_unpaired.append(idx[u])
    return PairResult(
        pairs=np.concatenate(all_pairs).reshape(-1, 2) if all_pairs else np.empty((0, 2), np.int64),
        distances=np.concatenate(all_dist) if all_dist else np.empty(0),
        unpaired=np.sort(np.concatenate(all_unpaired)) if all_unpaired else np.empty(0, np.int64),
    )


def random_pairs(
    n: int, seed: Union[None, int, np.random.SeedSequence, np.random.Generator] = None, *,
    groups: Optional[npt.ArrayLike] = None,
) -> PairResult:
    """Random disjoint pairs of shots: the inter-shot control of a difference correlation (LOKI's ``random_pairs``).

    Parameters
    ----------
    n : int
        Number of shots (>= 0).
    seed : int, SeedSequence or Generator, optional
        Seed of :func:`numpy.random.default_rng`: the same seed gives the same pairs (None: fresh entropy).
    groups : array_like (n,), optional
        A key per shot: pairs are drawn only within equal keys (as :func:`pair_shots`), groups in sorted key order.

    Returns
    -------
    PairResult
        ``.pairs`` (n // 2 or fewer, 2) int64 in the order drawn; ``.distances`` all NaN (no features);
        ``.unpaired`` the odd shot of each group, ascending.

    Raises
    ------
    ValueError
        A negative or non-integer ``n``, or ``groups`` of the wrong length or with a non-finite key.
    """
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be an integer number of shots, got {type(n).__name__}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    blocks = [np.arange(n, dtype=np.int64)] if groups is None else _group_index(groups, int(n))
    pairs, unpaired = [], []
    for idx in blocks:
        perm = rng.permutation(idx)
        m = perm.size // 2 * 2
        pairs.append(perm[:m].reshape(-1, 2))
        unpaired.append(perm[m:])
    p = np.concatenate(pairs) if pairs else np.empty((0, 2), np.int64)
    return PairResult(pairs=p.astype(np.int64, copy=False), distances=np.full(p.shape[0], np.nan),
                      unpaired=np.sort(np.concatenate(unpaired)).astype(np.int64) if unpaired
                      else np.empty(0, np.int64))
