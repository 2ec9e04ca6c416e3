// Shot pairing: LOKI's index-order nearest-unused pairing and exact global greedy matching, without an N x N matrix.
//
// Distances are Euclidean between feature rows; the squared distance of two rows is accumulated in float64 in
// column order (sum_k (a_k - b_k)^2, no reassociation, no FMA), so results are bit-reproducible against a
// straightforward full-matrix reference. Ties in distance go to the lowest shot index.
//
// Internally the features are scaled by a power of two (exact) so that the largest |value| is in [0.5, 1) and values
// below 2^-400 of it are set to 0: d^2 can neither overflow nor underflow (features of 1e+-200 pair like unscaled
// ones) and distance 0 means identical rows. Identical rows are folded before the search, so they cost nothing
// extra. The exact k nearest neighbours come, for at most 512 distinct rows, from all exact distances computed once
// in register tiles (LOKI's 14 shots x 5000 samples: no tree, no float32 pass); beyond, from a k-d tree or, when
// sampled tree queries scan more than ~6 % of the points (high intrinsic dimension), from a blocked float32
// |a|^2 + |b|^2 - 2 a.b scan with a certified error bound and an exact float64 recheck.
// XCCA_PAIRING_ENGINE=tree|gemm|dense forces one (tests, diagnosis); results are identical.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace xcca::pairing {

/// Result of a pairing: rows (pairs[2m], pairs[2m+1]), their Euclidean distances, and the shots left unpaired.
struct PairResult {
    std::vector<std::int64_t> pairs;      ///< 2*M indices, row-major (M, 2)
    std::vector<double> distances;        ///< M distances
    std::vector<std::int64_t> unpaired;   ///< shots without a partner (at most one for complete inputs)
};

/// LOKI's pair_fits semantics: shots are visited in index order; a shot not yet used takes its nearest unused
/// shot (ties -> lowest index); rows are [visiting shot, partner]. `features` is row-major (n, d), finite.
/// Memory O(n*d + n*k), where k is a small candidate-list length; never an n x n matrix. Results are identical for
/// any thread count.
/// Throws std::invalid_argument for n < 2, d < 1 or a non-finite feature (naming the shot).
PairResult pair_loki(const double* features, std::size_t n, std::size_t d, int n_threads = 0);

/// Global greedy matching: repeatedly pairs the two closest remaining shots (ties -> lexicographically smallest
/// (distance, lower index, higher index)). Computed exactly through rounds of mutual nearest neighbours.
/// Rows are [lower index, higher index] in the order greedy selects them (non-decreasing distance).
PairResult pair_greedy(const double* features, std::size_t n, std::size_t d, int n_threads = 0);

}  // namespace xcca::pairing
