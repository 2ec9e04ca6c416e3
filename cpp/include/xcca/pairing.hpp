// Shot pairing: LOKI's index-order nearest-unused pairing and exact global greedy matching, without an N x N matrix.
//
// Distances are Euclidean between feature rows; the squared distance of two rows is accumulated in float64 in
// column order (sum_k (a_k - b_k)^2, no reassociation, no FMA), so results are bit-reproducible against a
// straightforward full-matrix reference. Ties in distance go to the lowest shot index.
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
/// Memory O(n*d + n*k), where k is a small candidate-list length; never an n x n matrix.
/// Throws std::invalid_argument for n < 2, d < 1 or a non-finite feature (naming the shot).
PairResult pair_loki(const double* features, std::size_t n, std::size_t d, int n_threads = 0);

/// Global greedy matching: repeatedly pairs the two closest remaining shots (ties -> lexicographically smallest
/// (distance, lower index, higher index)). Computed exactly through rounds of mutual nearest neighbours.
/// Rows are [lower index, higher index] in the order greedy selects them (non-decreasing distance).
PairResult pair_greedy(const double* features, std::size_t n, std::size_t d, int n_threads = 0);

}  // namespace xcca::pairing
