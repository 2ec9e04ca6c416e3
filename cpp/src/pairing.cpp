// Exact nearest-unused-neighbour pairing over a k-d tree with deletions (see xcca/pairing.hpp).
//
// Exactness: squared distances are sums over columns in order; pruning uses a box lower bound computed with the
// same operations, and floating-point rounding is monotone, so the bound never exceeds a computed distance of a
// point inside the box. Boxes are pruned only when strictly farther than the current best, so equal-distance
// points with a lower index are always seen.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")  // a fused multiply-add would change the rounding of the distances
#elif defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#include "xcca/pairing.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>
#include <utility>

#include "xcca/threads.hpp"

namespace xcca::pairing {
namespace {

constexpr std::size_t kLeafSize = 256;
constexpr std::size_t kCandidates = 8;  // candidate list length for the index-order pass
constexpr double kInf = std::numeric_limits<double>::infinity();

// Squared distances from q to the m points of a leaf stored column-major (col k at soa + k*m), each summed over the
// columns in order: the loop vectorises across points, so every individual sum keeps its rounding.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
__attribute__((target_clones("avx2", "default")))
#endif
void leaf_dist2(const double* soa, std::size_t m, std::size_t d, const double* q, double* out) {
    for (std::size_t j = 0; j < m; ++j) out[j] = 0.0;
    for (std::size_t k = 0; k < d; ++k) {
        const double qk = q[k];
        const double* col = soa + k * m;
        for (std::size_t j = 0; j < m; ++j) {
            const double t = qk - col[j];
            out[j] += t * t;
        }
    }
}

struct Best {
    double d2 = kInf;
    std::int64_t idx = -1;
    bool better(double e2, std::int64_t j) const { return e2 < d2 || (e2 == d2 && j < idx); }
};

class KdTree {
public:
    // `x` (row-major n x d) must outlive the tree: queries read the query points from it.
    KdTree(const double* x, std::size_t n, std::size_t d) : x_(x), d_(d) {
        order_.resize(n);
        std::iota(order_.begin(), order_.end(), std::int64_t{0});
        nodes_.reserve(2 * (n / kLeafSize + 1));
        build(x, 0, n, -1);
        // Leaves hold their points column-major and contiguous, for the vectorised distance scan.
        pos_of_.resize(n);
        for (std::size_t p = 0; p < n; ++p) pos_of_[static_cast<std::size_t>(order_[p])] = p;
        soa_.resize(n * d);
        for (const Node& nd : nodes_)
            if (nd.left < 0) {
                const std::size_t m = nd.end - nd.begin;
                for (std::size_t j = 0; j < m; ++j)
                    for (std::size_t k = 0; k < d; ++k)
                        soa_[nd.begin * d + k * m + j] = x[static_cast<std::size_t>(order_[nd.begin + j]) * d + k];
            }
        alive_.assign(n, 1);
        leaf_of_.resize(n);
        for (std::size_t k = 0; k < nodes_.size(); ++k)
            if (nodes_[k].left < 0)
                for (std::size_t p = nodes_[k].begin; p < nodes_[k].end; ++p) leaf_of_[p] = static_cast<int>(k);
    }

    /// Shot at tree position p: visiting shots in this order keeps consecutive queries in the same region.
    std::int64_t shot_at(std::size_t p) const { return order_[p]; }
    const double* point(std::int64_t i) const { return x_ + static_cast<std::size_t>(i) * d_; }
    bool alive(std::int64_t i) const { return alive_[pos_of_[static_cast<std::size_t>(i)]] != 0; }

    void remove(std::int64_t i) {
        const std::size_t p = pos_of_[static_cast<std::size_t>(i)];
        if (!alive_[p]) return;
        alive_[p] = 0;
        for (int k = leaf_of_[p]; k >= 0; k = nodes_[static_cast<std::size_t>(k)].parent)
            --nodes_[static_cast<std::size_t>(k)].count;
    }

    /// Nearest alive point to q other than `self` (ties -> lowest index); idx = -1 if there is none.
    Best nearest(const double* q, std::int64_t self) const {
        Best best;
        if (nodes_[0].count > 0) search1(0, q, self, best);
        return best;
    }

    /// The k nearest points to q other than `self`, all points alive, sorted by (d2, index).
    void knn(const double* q, std::int64_t self, std::size_t k, std::vector<std::pair<double, std::int64_t>>& heap) const {
        heap.clear();
        searchk(0, q, self, k, heap);
        std::sort_heap(heap.begin(), heap.end());
    }

private:
    struct Node {
        std::size_t begin, end;
        int left, right, parent;
        std::size_t count;  // alive points below
    };

    int build(const double* x, std::size_t b, std::size_t e, int parent) {
        const int id = static_cast<int>(nodes_.size());
        nodes_.push_back(Node{b, e, -1, -1, parent, e - b});
        // Tight bounding box of the points below.
        lo_.resize(lo_.size() + d_, kInf);
        hi_.resize(hi_.size() + d_, -kInf);
        double* lo = &lo_[static_cast<std::size_t>(id) * d_];
        double* hi = &hi_[static_cast<std::size_t>(id) * d_];
        for (std::size_t p = b; p < e; ++p) {
            const double* r = x + static_cast<std::size_t>(order_[p]) * d_;
            for (std::size_t k = 0; k < d_; ++k) {
                lo[k] = std::min(lo[k], r[k]);
                hi[k] = std::max(hi[k], r[k]);
            }
        }
        if (e - b <= kLeafSize) return id;
        // Split the dimension of largest variance at the median (copes with anisotropic features; the variance is
        // less swayed by a few outlying shots than the range).
        std::size_t dim = 0;
        double spread = -1.0;
        for (std::size_t k = 0; k < d_; ++k)
            if (hi[k] - lo[k] > spread) spread = hi[k] - lo[k], dim = k;
        if (!(spread > 0.0)) return id;  // all points equal: keep as one (large) leaf
        {
            std::vector<double> mean(d_, 0.0), var(d_, 0.0);
            for (std::size_t p = b; p < e; ++p) {
                const double* r = x + static_cast<std::size_t>(order_[p]) * d_;
                for (std::size_t k = 0; k < d_; ++k) mean[k] += r[k];
            }
            for (std::size_t k = 0; k < d_; ++k) mean[k] /= double(e - b);
            for (std::size_t p = b; p < e; ++p) {
                const double* r = x + static_cast<std::size_t>(order_[p]) * d_;
                for (std::size_t k = 0; k < d_; ++k) var[k] += (r[k] - mean[k]) * (r[k] - mean[k]);
            }
            double best = -1.0;
            for (std::size_t k = 0; k < d_; ++k)
                if (var[k] > best) best = var[k], dim = k;
        }
        const std::size_t m = b + (e - b) / 2;
        std::nth_element(order_.begin() + static_cast<std::ptrdiff_t>(b), order_.begin() + static_cast<std::ptrdiff_t>(m),
                         order_.begin() + static_cast<std::ptrdiff_t>(e), [&](std::int64_t u, std::int64_t v) {
                             return x[static_cast<std::size_t>(u) * d_ + dim] < x[static_cast<std::size_t>(v) * d_ + dim];
                         });
        const int l = build(x, b, m, id);
        const int r = build(x, m, e, id);
        nodes_[static_cast<std::size_t>(id)].left = l;
        nodes_[static_cast<std::size_t>(id)].right = r;
        return id;
    }

    // Lower bound of the squared distance from q to any point in the node's box (see the exactness note above).
    double box_lb(int node, const double* q) const {
        const double* lo = &lo_[static_cast<std::size_t>(node) * d_];
        const double* hi = &hi_[static_cast<std::size_t>(node) * d_];
        double s = 0.0;
        for (std::size_t k = 0; k < d_; ++k) {
            double t = 0.0;
            if (q[k] < lo[k]) t = q[k] - lo[k];
            else if (q[k] > hi[k]) t = q[k] - hi[k];
            s += t * t;
        }
        return s;
    }

    void search1(int node, const double* q, std::int64_t self, Best& best) const {
        const Node& nd = nodes_[static_cast<std::size_t>(node)];
        if (nd.left < 0) {
            const std::size_t m = nd.end - nd.begin;
            thread_local std::vector<double> dd;
            if (dd.size() < m) dd.resize(m);
            leaf_dist2(&soa_[nd.begin * d_], m, d_, q, dd.data());
            for (std::size_t j = 0; j < m; ++j) {
                const std::size_t p = nd.begin + j;
                if (!alive_[p] || order_[p] == self) continue;
                if (best.better(dd[j], order_[p])) best.d2 = dd[j], best.idx = order_[p];
            }
            return;
        }
        int a = nd.left, b = nd.right;
        const bool la = nodes_[static_cast<std::size_t>(a)].count > 0, lb = nodes_[static_cast<std::size_t>(b)].count > 0;
        double da = la ? box_lb(a, q) : kInf, db = lb ? box_lb(b, q) : kInf;
        if (db < da) std::swap(a, b), std::swap(da, db);
        if (da <= best.d2 && da < kInf) search1(a, q, self, best);
        if (db <= best.d2 && db < kInf) search1(b, q, self, best);
    }

    void searchk(int node, const double* q, std::int64_t self, std::size_t k,
                 std::vector<std::pair<double, std::int64_t>>& heap) const {
        const Node& nd = nodes_[static_cast<std::size_t>(node)];
        auto worst = [&]() { return heap.size() < k ? kInf : heap.front().first; };
        if (nd.left < 0) {
            const std::size_t m = nd.end - nd.begin;
            thread_local std::vector<double> dd;
            if (dd.size() < m) dd.resize(m);
            leaf_dist2(&soa_[nd.begin * d_], m, d_, q, dd.data());
            for (std::size_t j = 0; j < m; ++j) {
                const std::size_t p = nd.begin + j;
                if (order_[p] == self) continue;
                const std::pair<double, std::int64_t> c{dd[j], order_[p]};
                if (heap.size() < k) {
                    heap.push_back(c);
                    std::push_heap(heap.begin(), heap.end());
                } else if (c < heap.front()) {
                    std::pop_heap(heap.begin(), heap.end());
                    heap.back() = c;
                    std::push_heap(heap.begin(), heap.end());
                }
            }
            return;
        }
        int a = nd.left, b = nd.right;
        double da = box_lb(a, q), db = box_lb(b, q);
        if (db < da) std::swap(a, b), std::swap(da, db);
        if (da <= worst()) searchk(a, q, self, k, heap);
        if (db <= worst()) searchk(b, q, self, k, heap);
    }

    const double* x_;
    std::size_t d_;
    std::vector<std::int64_t> order_;  // tree position -> shot index
    std::vector<std::size_t> pos_of_;  // shot index -> tree position
    std::vector<double> soa_, lo_, hi_;
    std::vector<Node> nodes_;
    std::vector<unsigned char> alive_;
    std::vector<int> leaf_of_;
};

void check_input(const double* x, std::size_t n, std::size_t d) {
    if (n < 2) throw std::invalid_argument("features: need at least 2 shots to pair, got " + std::to_string(n));
    if (d < 1) throw std::invalid_argument("features: need at least 1 feature per shot");
    if (x == nullptr) throw std::invalid_argument("features: null pointer");
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t k = 0; k < d; ++k)
            if (!std::isfinite(x[i * d + k]))
                throw std::invalid_argument("features: shot " + std::to_string(i) + " has a non-finite value (NaN or inf)");
}

/// The k nearest other shots of every shot (all alive), by (d2, index), computed in parallel.
void candidates(const KdTree& tree, std::size_t n, std::size_t k, int n_threads, std::vector<std::int64_t>& cand,
                std::vector<double>& cand_d2) {
    cand.resize(n * k);
    cand_d2.resize(n * k);
    parallel_for(n, n_threads, 256, [&](std::size_t b, std::size_t e) {
        std::vector<std::pair<double, std::int64_t>> heap;
        heap.reserve(k + 1);
        for (std::size_t p = b; p < e; ++p) {
            const std::int64_t si = tree.shot_at(p);
            const auto i = static_cast<std::size_t>(si);
            tree.knn(tree.point(si), si, k, heap);
            for (std::size_t c = 0; c < k; ++c) cand[i * k + c] = heap[c].second, cand_d2[i * k + c] = heap[c].first;
        }
    });
}

// The nearest shot still alive for shot p: the first alive entry of its exact top-k candidate list (sorted by
// (distance, index)), or a tree query when all k candidates are used.
Best nearest_alive(const KdTree& tree, const std::vector<std::int64_t>& cand, const std::vector<double>& cand_d2,
                   std::size_t k, std::int64_t p) {
    const auto sp = static_cast<std::size_t>(p);
    for (std::size_t c = 0; c < k; ++c)
        if (tree.alive(cand[sp * k + c])) {
            Best best;
            best.idx = cand[sp * k + c];
            best.d2 = cand_d2[sp * k + c];
            return best;
        }
    return tree.nearest(tree.point(p), p);
}

}  // namespace

PairResult pair_loki(const double* x, std::size_t n, std::size_t d, int n_threads) {
    check_input(x, n, d);
    KdTree tree(x, n, d);
    // Candidate lists: in the sequential pass the first still-unused candidate is the exact nearest unused shot
    // (each list is the exact top-k by (distance, index)); only when every candidate is used is the tree queried.
    const std::size_t k = std::min(kCandidates, n - 1);
    std::vector<std::int64_t> cand;
    std::vector<double> cand_d2;
    candidates(tree, n, k, n_threads, cand, cand_d2);
    PairResult res;
    res.pairs.reserve(n);
    res.distances.reserve(n / 2);
    for (std::size_t i = 0; i < n; ++i) {
        const auto si = static_cast<std::int64_t>(i);
        if (!tree.alive(si)) continue;
        tree.remove(si);
        const Best best = nearest_alive(tree, cand, cand_d2, k, si);
        if (best.idx < 0) {
            res.unpaired.push_back(si);
            continue;
        }
        tree.remove(best.idx);
        res.pairs.push_back(si);
        res.pairs.push_back(best.idx);
        res.distances.push_back(std::sqrt(best.d2));
    }
    return res;
}

PairResult pair_greedy(const double* x, std::size_t n, std::size_t d, int n_threads) {
    check_input(x, n, d);
    KdTree tree(x, n, d);
    const std::size_t k = std::min(kCandidates, n - 1);
    std::vector<std::int64_t> cand;
    std::vector<double> cand_d2;
    candidates(tree, n, k, n_threads, cand, cand_d2);
    std::vector<std::int64_t> nn(n, -1);
    std::vector<double> nn_d2(n, kInf);
    std::vector<std::int64_t> remaining(n);  // in tree order, for locality of the recomputed queries
    for (std::size_t p = 0; p < n; ++p) remaining[p] = tree.shot_at(p);
    std::vector<std::int64_t> stale;
    struct Edge {
        double d2;
        std::int64_t i, j;
    };
    std::vector<Edge> edges;
    edges.reserve(n / 2);
    // Rounds of mutual nearest neighbours: a mutual pair among the remaining shots is the cheapest edge at both of
    // its ends, so greedy must select it; the globally cheapest edge is always mutual, so every round makes progress.
    // A shot's nearest neighbour only changes when that neighbour is removed, so only those are recomputed.
    while (remaining.size() >= 2) {
        stale.clear();
        for (std::int64_t p : remaining)
            if (nn[static_cast<std::size_t>(p)] < 0 || !tree.alive(nn[static_cast<std::size_t>(p)])) stale.push_back(p);
        parallel_for(stale.size(), n_threads, 256, [&](std::size_t b, std::size_t e) {
            for (std::size_t s = b; s < e; ++s) {
                const std::int64_t p = stale[s];
                const auto sp = static_cast<std::size_t>(p);
                const Best best = nearest_alive(tree, cand, cand_d2, k, p);
                nn[sp] = best.idx;
                nn_d2[sp] = best.d2;
            }
        });
        for (std::int64_t p : remaining) {  // the mutual test reads only nn, so removing as we go is safe
            const std::int64_t q = nn[static_cast<std::size_t>(p)];
            if (q > p && nn[static_cast<std::size_t>(q)] == p) {
                edges.push_back(Edge{nn_d2[static_cast<std::size_t>(p)], p, q});
                tree.remove(p);
                tree.remove(q);
            }
        }
        std::size_t w = 0;
        for (std::int64_t p : remaining)
            if (tree.alive(p)) remaining[w++] = p;
        remaining.resize(w);
    }
    // Greedy selects edges in increasing (d2, i, j): that order is the order of selection.
    std::sort(edges.begin(), edges.end(), [](const Edge& a, const Edge& b) {
        if (a.d2 != b.d2) return a.d2 < b.d2;
        if (a.i != b.i) return a.i < b.i;
        return a.j < b.j;
    });
    PairResult res;
    for (const Edge& e : edges) {
        res.pairs.push_back(e.i);
        res.pairs.push_back(e.j);
        res.distances.push_back(std::sqrt(e.d2));
    }
    res.unpaired.assign(remaining.begin(), remaining.end());
    std::sort(res.unpaired.begin(), res.unpaired.end());
    return res;
}

}  // namespace xcca::pairing
