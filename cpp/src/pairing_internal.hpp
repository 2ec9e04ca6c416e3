// Private: the exact k-nearest-neighbour engines behind xcca::pairing (a k-d tree and a blocked GEMM-style scan).
//
// Both answer the same question: for each query point, the k nearest *alive* other points, ranked by the exact
// squared distance (float64, summed over the columns in order: the rounding of xcca.reference) and then by a caller-
// maintained key (the lowest unused shot index of the point), stored as a sorted list. The points are distinct rows
// (duplicates are folded by the caller), so a distance of 0 never occurs between two points.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace xcca::pairing::detail {

/// Candidate lists: list u holds len[u] <= k entries (id, exact d2) sorted by (d2, key at the time of the query).
/// `complete[u]`: the list held every alive other point when it was made (fewer than k of them).
struct Lists {
    std::size_t k = 0;
    std::vector<std::int32_t> id;
    std::vector<double> d2;
    std::vector<std::uint16_t> len;
    std::vector<unsigned char> complete;
    void resize(std::size_t m, std::size_t k_) {
        k = k_;
        id.assign(m * k, -1);
        d2.assign(m * k, 0.0);
        len.assign(m, 0);
        complete.assign(m, 0);
    }
};

/// Exact squared distance of rows a and b (row-major, d columns), columns in order, no FMA.
double exact_d2(const double* a, const double* b, std::size_t d) noexcept;

/// exact_d2(a, b_w) for four rows b0..b3 at once (four independent sums, each bit-identical to exact_d2).
void exact_d2_4(const double* a, const double* b0, const double* b1, const double* b2, const double* b3,
                std::size_t d, double* out) noexcept;

/// The k-d tree engine (wins in low intrinsic dimension) lives in pairing.cpp.
class Engine {
public:
    virtual ~Engine() = default;
    virtual bool is_tree() const { return false; }
    /// Marks point u dead: it is never returned again.
    virtual void remove(std::int32_t u) = 0;
    /// Recomputes the lists of `queries` (each excluding itself) among the alive points, ranked by (d2, key[id]).
    virtual void knn(const std::vector<std::int32_t>& queries, const std::int64_t* key, Lists& lists,
                     int n_threads) = 0;
};

/// Blocked float32 ||a||^2 + ||b||^2 - 2 a.b candidate scan with a certified error bound and an exact float64
/// recheck (wins in high intrinsic dimension, where a tree visits most leaves).
std::unique_ptr<Engine> make_gemm_engine(const double* y, std::size_t m, std::size_t d);

}  // namespace xcca::pairing::detail
