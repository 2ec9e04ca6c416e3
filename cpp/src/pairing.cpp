// Exact shot pairing (see xcca/pairing.hpp): input scaling, duplicate folding, LOKI's index-order pass and greedy
// matching over exact candidate lists, and the k-d tree engine. The GEMM-style engine is in pairing_gemm.cpp.
//
// Exactness: squared distances are sums over columns in order (exact_d2); the tree prunes with a box lower bound
// computed with the same operations (rounding is monotone, so the bound never exceeds a computed distance of a point
// inside the box) and only when strictly farther than the current k-th best, so equal-distance points are seen.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")  // a fused multiply-add would change the rounding of the distances
#elif defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#include "xcca/pairing.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>
#include <utility>

#include "pairing_internal.hpp"
#include "xcca/threads.hpp"

namespace xcca::pairing {
namespace detail {

double exact_d2(const double* a, const double* b, std::size_t d) noexcept {
    double s = 0.0;
    for (std::size_t k = 0; k < d; ++k) {
        const double t = a[k] - b[k];
        s += t * t;
    }
    return s;
}

void exact_d2_4(const double* a, const double* b0, const double* b1, const double* b2, const double* b3,
                std::size_t d, double* out) noexcept {
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    for (std::size_t k = 0; k < d; ++k) {
        const double x = a[k];
        const double t0 = x - b0[k], t1 = x - b1[k], t2 = x - b2[k], t3 = x - b3[k];
        s0 += t0 * t0;
        s1 += t1 * t1;
        s2 += t2 * t2;
        s3 += t3 * t3;
    }
    out[0] = s0, out[1] = s1, out[2] = s2, out[3] = s3;
}

}  // namespace detail

namespace {

using detail::Engine;
using detail::Lists;

constexpr std::size_t kLeafSize = 256;
constexpr std::size_t kCandidates = 8;  // candidate list length
// Up to this many distinct rows every exact distance is computed once (m^2 doubles: 2 MB), in register tiles; a tree
// over so few points is one or two leaves that every query scans, in high dimension one long dependent sum per pair.
constexpr std::size_t kDenseMax = 512;
// Engine choice: the GEMM scan wins when sampled tree queries scan more than this fraction of the points.
constexpr double kGemmFraction = 0.06;
constexpr double kInf = std::numeric_limits<double>::infinity();
// Scaled coordinates below this are set to 0: then any two distinct rows have a squared distance >= 2^-904 (no
// underflow to 0), so distance 0 means identical rows. It is 1e-120 of the largest |feature|: far below anything a
// distance can resolve.
constexpr double kFlush = 0x1p-400;

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

struct Cand {
    double d2;
    std::int64_t key;
    std::int32_t id;
    bool operator<(const Cand& o) const { return d2 != o.d2 ? d2 < o.d2 : key < o.key; }
};

// Keeps the k smallest candidates by (d2, key) in a max-heap.
inline void offer(std::vector<Cand>& heap, std::size_t k, const Cand& c) {
    if (heap.size() < k) {
        heap.push_back(c);
        std::push_heap(heap.begin(), heap.end());
    } else if (c < heap.front()) {
        std::pop_heap(heap.begin(), heap.end());
        heap.back() = c;
        std::push_heap(heap.begin(), heap.end());
    }
}

class TreeEngine final : public Engine {
public:
    TreeEngine(const double* x, std::size_t n, std::size_t d) : x_(x), d_(d) {
        order_.resize(n);
        std::iota(order_.begin(), order_.end(), std::int32_t{0});
        nodes_.reserve(2 * (n / kLeafSize + 1));
        build(0, n, -1);
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

    bool is_tree() const override { return true; }

    void remove(std::int32_t i) override {
        const std::size_t p = pos_of_[static_cast<std::size_t>(i)];
        if (!alive_[p]) return;
        alive_[p] = 0;
        for (int k = leaf_of_[p]; k >= 0; k = nodes_[static_cast<std::size_t>(k)].parent)
            --nodes_[static_cast<std::size_t>(k)].count;
    }

    void knn(const std::vector<std::int32_t>& queries, const std::int64_t* key, Lists& lists,
             int n_threads) override {
        const std::size_t k = lists.k;
        // In tree order: consecutive queries then walk the same nodes and leaves (cache locality).
        std::vector<std::int32_t> q(queries);
        std::sort(q.begin(), q.end(), [&](std::int32_t a, std::int32_t b) {
            return pos_of_[static_cast<std::size_t>(a)] < pos_of_[static_cast<std::size_t>(b)];
        });
        parallel_for(q.size(), n_threads, 64, [&](std::size_t b, std::size_t e) {
            std::vector<Cand> heap;
            heap.reserve(k + 1);
            for (std::size_t s = b; s < e; ++s) query(q[s], key, lists, heap, nullptr);
        });
    }

    /// Mean fraction of the points scanned by a k-NN query, over `samples` spread queries (engine choice).
    double scan_fraction(std::size_t k, std::size_t samples, const std::int64_t* key) {
        const std::size_t n = order_.size();
        samples = std::min(samples, n);
        Lists l;
        l.resize(n, k);
        std::vector<Cand> heap;
        std::size_t scanned = 0;
        for (std::size_t s = 0; s < samples; ++s)
            query(static_cast<std::int32_t>(s * n / samples), key, l, heap, &scanned);
        return static_cast<double>(scanned) / (static_cast<double>(samples) * static_cast<double>(n));
    }

private:
    struct Node {
        std::size_t begin, end;
        int left, right, parent;
        std::size_t count;  // alive points below
    };

    void query(std::int32_t self, const std::int64_t* key, Lists& lists, std::vector<Cand>& heap,
               std::size_t* scanned) const {
        const std::size_t k = lists.k;
        heap.clear();
        if (nodes_[0].count > 0) searchk(0, x_ + static_cast<std::size_t>(self) * d_, self, k, key, heap, scanned);
        std::sort_heap(heap.begin(), heap.end());
        const auto u = static_cast<std::size_t>(self);
        lists.len[u] = static_cast<std::uint16_t>(heap.size());
        lists.complete[u] = heap.size() < k;
        for (std::size_t c = 0; c < heap.size(); ++c) lists.id[u * k + c] = heap[c].id, lists.d2[u * k + c] = heap[c].d2;
    }

    int build(std::size_t b, std::size_t e, int parent) {
        const double* x = x_;
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
        double spread = -1.0;
        for (std::size_t k = 0; k < d_; ++k) spread = std::max(spread, hi[k] - lo[k]);
        if (!(spread > 0.0)) throw std::logic_error("pairing: equal points in a k-d tree");  // folded before
        // Split the dimension of largest variance at the median (copes with anisotropic features; the variance is
        // less swayed by a few outlying shots than the range).
        std::size_t dim = 0;
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
                         order_.begin() + static_cast<std::ptrdiff_t>(e), [&](std::int32_t u, std::int32_t v) {
                             return x[static_cast<std::size_t>(u) * d_ + dim] < x[static_cast<std::size_t>(v) * d_ + dim];
                         });
        const int l = build(b, m, id);
        const int r = build(m, e, id);
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

    void searchk(int node, const double* q, std::int32_t self, std::size_t k, const std::int64_t* key,
                 std::vector<Cand>& heap, std::size_t* scanned) const {
        const Node& nd = nodes_[static_cast<std::size_t>(node)];
        if (nd.left < 0) {
            const std::size_t m = nd.end - nd.begin;
            if (scanned) *scanned += m;
            double dd[kLeafSize];  // leaves hold at most kLeafSize points (distinct points always split)
            leaf_dist2(&soa_[nd.begin * d_], m, d_, q, dd);
            for (std::size_t j = 0; j < m; ++j) {
                const std::size_t p = nd.begin + j;
                if (!alive_[p] || order_[p] == self) continue;
                if (heap.size() == k && dd[j] > heap.front().d2) continue;  // decided without the key's load
                offer(heap, k, Cand{dd[j], key[order_[p]], order_[p]});
            }
            return;
        }
        int a = nd.left, b = nd.right;
        const bool la = nodes_[static_cast<std::size_t>(a)].count > 0, lb = nodes_[static_cast<std::size_t>(b)].count > 0;
        double da = la ? box_lb(a, q) : kInf, db = lb ? box_lb(b, q) : kInf;
        if (db < da) std::swap(a, b), std::swap(da, db);
        auto worst = [&]() { return heap.size() < k ? kInf : heap.front().d2; };
        if (da < kInf && da <= worst()) searchk(a, q, self, k, key, heap, scanned);
        if (db < kInf && db <= worst()) searchk(b, q, self, k, key, heap, scanned);
    }

    const double* x_;
    std::size_t d_;
    std::vector<std::int32_t> order_;  // tree position -> point
    std::vector<std::size_t> pos_of_;  // point -> tree position
    std::vector<double> soa_, lo_, hi_;
    std::vector<Node> nodes_;
    std::vector<unsigned char> alive_;
    std::vector<int> leaf_of_;
};

// ---- the dense engine: all exact distances of a few points, once ----

constexpr std::size_t kPanel = 8;    // points per panel (two 4-double vectors per tile row)
constexpr std::size_t kTileRows = 4; // query rows per register tile
constexpr std::size_t kDepth = 512;  // columns per pass: a panel's slice (32 KB) stays in L1 across a block of rows

// o_r[w] (+)= sum over k in [0, kn) of (q_r[k] - pan[k*8 + w])^2, for 4 rows and the 8 points of a panel: every
// (row, point) sum runs over the columns in order (fp-contract is off), so it equals exact_d2 when the passes over
// the column slices are chained in order. 32 independent sums: throughput-bound, not latency-bound.
#if defined(__GNUC__)
// GCC/clang vector extension: the 32 sums stay in eight registers (plain arrays went through memory every column).
typedef double v4d __attribute__((vector_size(32), aligned(8)));
#if !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
__attribute__((target_clones("avx2", "default")))
#endif
void dense_tile(const double* q0, const double* q1, const double* q2, const double* q3, const double* pan,
                std::size_t kn, double* o0, double* o1, double* o2, double* o3) {
#define XCCA_LD(v, p) std::memcpy(&(v), (p), sizeof(v4d))
    v4d a0, b0, a1, b1, a2, b2, a3, b3, c, e;
    XCCA_LD(a0, o0), XCCA_LD(b0, o0 + 4), XCCA_LD(a1, o1), XCCA_LD(b1, o1 + 4);
    XCCA_LD(a2, o2), XCCA_LD(b2, o2 + 4), XCCA_LD(a3, o3), XCCA_LD(b3, o3 + 4);
    for (std::size_t k = 0; k < kn; ++k) {
        XCCA_LD(c, pan + k * kPanel), XCCA_LD(e, pan + k * kPanel + 4);
        v4d t, u;
        const double x0 = q0[k], x1 = q1[k], x2 = q2[k], x3 = q3[k];
        t = x0 - c, u = x0 - e, a0 += t * t, b0 += u * u;
        t = x1 - c, u = x1 - e, a1 += t * t, b1 += u * u;
        t = x2 - c, u = x2 - e, a2 += t * t, b2 += u * u;
        t = x3 - c, u = x3 - e, a3 += t * t, b3 += u * u;
    }
#define XCCA_ST(p, v) std::memcpy((p), &(v), sizeof(v4d))
    XCCA_ST(o0, a0), XCCA_ST(o0 + 4, b0), XCCA_ST(o1, a1), XCCA_ST(o1 + 4, b1);
    XCCA_ST(o2, a2), XCCA_ST(o2 + 4, b2), XCCA_ST(o3, a3), XCCA_ST(o3 + 4, b3);
#undef XCCA_LD
#undef XCCA_ST
}
#else
void dense_tile(const double* q0, const double* q1, const double* q2, const double* q3, const double* pan,
                std::size_t kn, double* o0, double* o1, double* o2, double* o3) {
    for (std::size_t k = 0; k < kn; ++k)
        for (std::size_t w = 0; w < kPanel; ++w) {
            const double c = pan[k * kPanel + w];
            double t = q0[k] - c;
            o0[w] += t * t;
            t = q1[k] - c;
            o1[w] += t * t;
            t = q2[k] - c;
            o2[w] += t * t;
            t = q3[k] - c;
            o3[w] += t * t;
        }
}
#endif

class DenseEngine final : public Engine {
public:
    DenseEngine(const double* y, std::size_t m, std::size_t d, int n_threads) : m_(m), ld_(ceil8(m)) {
        const std::size_t np = ld_ / kPanel;
        d2_.assign(ld_ * ld_, 0.0);  // padded rows and columns: sums against zero rows, never read
        // Panel p (points 8p..8p+7) against the row tiles up to it: the upper triangle, with a few entries below it.
        // Each slice of kDepth columns is packed [column][point] into a small buffer (no copy of all the points).
        parallel_for(np, n_threads, 1, [&](std::size_t b, std::size_t e) {
            std::vector<double> buf(kPanel * kDepth);
            for (std::size_t p = b; p < e; ++p)
                for (std::size_t k0 = 0; k0 < d; k0 += kDepth) {
                    const std::size_t kn = std::min(kDepth, d - k0);
                    for (std::size_t w = 0; w < kPanel; ++w) {
                        const std::size_t i = p * kPanel + w;
                        for (std::size_t k = 0; k < kn; ++k) buf[k * kPanel + w] = i < m ? y[i * d + k0 + k] : 0.0;
                    }
                    for (std::size_t t = 0; t < 2 * (p + 1); ++t) {
                        const std::size_t i0 = t * kTileRows;
                        const double* q[kTileRows];
                        for (std::size_t r = 0; r < kTileRows; ++r) q[r] = &y[std::min(i0 + r, m - 1) * d + k0];
                        double* o = &d2_[i0 * ld_ + p * kPanel];
                        dense_tile(q[0], q[1], q[2], q[3], buf.data(), kn, o, o + ld_, o + 2 * ld_, o + 3 * ld_);
                    }
                }
        });
        // (a - b)^2 == (b - a)^2 exactly: the lower triangle is the upper one mirrored.
        for (std::size_t i = 0; i < m; ++i)
            for (std::size_t j = 0; j < i; ++j) d2_[i * ld_ + j] = d2_[j * ld_ + i];
        alive_.assign(m, 1);
    }

    void remove(std::int32_t u) override { alive_[static_cast<std::size_t>(u)] = 0; }

    void knn(const std::vector<std::int32_t>& queries, const std::int64_t* key, Lists& lists,
             int n_threads) override {
        const std::size_t k = lists.k;
        parallel_for(queries.size(), n_threads, 64, [&](std::size_t b, std::size_t e) {
            std::vector<Cand> heap;
            heap.reserve(k + 1);
            for (std::size_t s = b; s < e; ++s) {
                const auto u = static_cast<std::size_t>(queries[s]);
                const double* row = &d2_[u * ld_];
                heap.clear();
                for (std::size_t j = 0; j < m_; ++j) {
                    if (!alive_[j] || j == u) continue;
                    if (heap.size() == k && row[j] > heap.front().d2) continue;
                    offer(heap, k, Cand{row[j], key[j], static_cast<std::int32_t>(j)});
                }
                std::sort_heap(heap.begin(), heap.end());
                lists.len[u] = static_cast<std::uint16_t>(heap.size());
                lists.complete[u] = heap.size() < k;
                for (std::size_t c = 0; c < heap.size(); ++c)
                    lists.id[u * k + c] = heap[c].id, lists.d2[u * k + c] = heap[c].d2;
            }
        });
    }

private:
    static std::size_t ceil8(std::size_t m) { return (m + kPanel - 1) / kPanel * kPanel; }
    std::size_t m_, ld_;
    std::vector<double> d2_;  // exact squared distances, ld_ x ld_
    std::vector<unsigned char> alive_;
};

// ---- input: checks, internal scaling, duplicate folding ----

struct Prepared {
    int exponent = 0;                  // features = scaled * 2^exponent
    std::size_t m = 0, d = 0;          // distinct rows
    std::vector<double> y;             // distinct scaled rows (m x d), in order of their first shot
    std::vector<std::int64_t> members; // shots of each distinct row, ascending: members[start[u] .. start[u+1])
    std::vector<std::size_t> start;
    std::vector<std::int32_t> row_of;  // shot -> distinct row
};

void check_input(const double* x, std::size_t n, std::size_t d) {
    if (n < 2) throw std::invalid_argument("features: need at least 2 shots to pair, got " + std::to_string(n));
    if (d < 1) throw std::invalid_argument("features: need at least 1 feature per shot");
    if (x == nullptr) throw std::invalid_argument("features: null pointer");
    if (n > static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()))
        throw std::invalid_argument("features: more than 2^31 - 1 shots");
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t k = 0; k < d; ++k)
            if (!std::isfinite(x[i * d + k]))
                throw std::invalid_argument("features: shot " + std::to_string(i) + " has a non-finite value (NaN or inf)");
}

std::uint64_t mix(std::uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    return h ^ (h >> 33);
}

Prepared prepare(const double* x, std::size_t n, std::size_t d, int n_threads) {
    check_input(x, n, d);
    Prepared P;
    P.d = d;
    double mx = 0.0;
    for (std::size_t i = 0; i < n * d; ++i) mx = std::max(mx, std::fabs(x[i]));
    if (mx > 0.0) std::frexp(mx, &P.exponent);  // mx = f * 2^e, f in [0.5, 1): scaled |values| < 1
    std::vector<double> xs(n * d);
    std::vector<std::uint64_t> hash(n);
    // x * 2^-e is the correctly rounded product, as ldexp is (exact unless below the normal range): one multiply
    // when 2^-e is a double, which fails only for all-subnormal inputs (e < -1023).
    const bool by_mul = P.exponent >= -1023;
    const double scale = by_mul ? std::ldexp(1.0, -P.exponent) : 0.0;
    parallel_for(n, n_threads, std::max<std::size_t>(1, 65536 / d), [&](std::size_t b, std::size_t e) {
        for (std::size_t i = b; i < e; ++i) {
            double* out = &xs[i * d];
            const double* in = &x[i * d];
            for (std::size_t k = 0; k < d; ++k) {
                double v = by_mul ? in[k] * scale : std::ldexp(in[k], -P.exponent);
                if (std::fabs(v) < kFlush) v = 0.0;  // also turns -0 into +0
                out[k] = v;
            }
            // Four interleaved hash chains: a single chain is latency-bound (one multiply chain per value).
            auto bits = [&](std::size_t k) {
                std::uint64_t u;
                std::memcpy(&u, &out[k], sizeof u);
                return u;
            };
            std::uint64_t h0 = 0x9e3779b97f4a7c15ULL, h1 = 0x243f6a8885a308d3ULL, h2 = 0x13198a2e03707344ULL,
                          h3 = 0xa4093822299f31d0ULL;
            std::size_t k = 0;
            for (; k + 4 <= d; k += 4)
                h0 = mix(h0 ^ bits(k)), h1 = mix(h1 ^ bits(k + 1)), h2 = mix(h2 ^ bits(k + 2)), h3 = mix(h3 ^ bits(k + 3));
            for (; k < d; ++k) h0 = mix(h0 ^ bits(k));
            hash[i] = mix(h0 ^ mix(h1 ^ mix(h2 ^ mix(h3))));
        }
    });
    // Group equal rows: sort by hash, split each run of equal hashes into runs of equal rows.
    std::vector<std::int32_t> idx(n);
    std::iota(idx.begin(), idx.end(), 0);
    std::sort(idx.begin(), idx.end(), [&](std::int32_t a, std::int32_t b) {
        return hash[static_cast<std::size_t>(a)] != hash[static_cast<std::size_t>(b)]
                   ? hash[static_cast<std::size_t>(a)] < hash[static_cast<std::size_t>(b)]
                   : a < b;
    });
    auto row = [&](std::int32_t i) { return &xs[static_cast<std::size_t>(i) * d]; };
    std::vector<std::pair<std::int32_t, std::int32_t>> group_of;  // (first shot, group start in idx)
    std::vector<std::size_t> gstart;
    std::vector<std::int32_t> sorted;
    sorted.reserve(n);
    for (std::size_t a = 0; a < n;) {
        std::size_t b = a + 1;
        while (b < n && hash[static_cast<std::size_t>(idx[b])] == hash[static_cast<std::size_t>(idx[a])]) ++b;
        // Runs of one hash: peel off the shots equal to the first remaining one, keeping index order.
        std::vector<std::int32_t> rest(idx.begin() + static_cast<std::ptrdiff_t>(a), idx.begin() + static_cast<std::ptrdiff_t>(b));
        while (!rest.empty()) {
            const std::int32_t r0 = rest[0];
            std::vector<std::int32_t> other;
            gstart.push_back(sorted.size());
            for (std::int32_t i : rest)
                if (i == r0 || std::memcmp(row(i), row(r0), d * sizeof(double)) == 0) sorted.push_back(i);
                else other.push_back(i);
            rest.swap(other);
        }
        a = b;
    }
    gstart.push_back(sorted.size());
    const std::size_t m = gstart.size() - 1;
    std::vector<std::int32_t> gorder(m);
    std::iota(gorder.begin(), gorder.end(), 0);
    std::sort(gorder.begin(), gorder.end(), [&](std::int32_t a, std::int32_t b) {
        return sorted[gstart[static_cast<std::size_t>(a)]] < sorted[gstart[static_cast<std::size_t>(b)]];
    });
    P.m = m;
    if (m == n) {  // all rows distinct: gorder is the shot order, the scaled rows are the distinct rows
        P.y = std::move(xs);
        P.members.resize(n);
        P.start.resize(n + 1);
        P.row_of.resize(n);
        for (std::size_t i = 0; i < n; ++i) {
            P.members[i] = static_cast<std::int64_t>(i);
            P.start[i] = i;
            P.row_of[i] = static_cast<std::int32_t>(i);
        }
        P.start[n] = n;
        return P;
    }
    P.y.resize(m * d);
    P.members.reserve(n);
    P.start.reserve(m + 1);
    P.row_of.resize(n);
    for (std::size_t u = 0; u < m; ++u) {
        const auto g = static_cast<std::size_t>(gorder[u]);
        P.start.push_back(P.members.size());
        std::memcpy(&P.y[u * d], row(sorted[gstart[g]]), d * sizeof(double));
        for (std::size_t t = gstart[g]; t < gstart[g + 1]; ++t) {
            P.members.push_back(sorted[t]);
            P.row_of[static_cast<std::size_t>(sorted[t])] = static_cast<std::int32_t>(u);
        }
    }
    P.start.push_back(P.members.size());
    return P;
}

// ---- engine choice ----

std::unique_ptr<Engine> choose_engine(const double* y, std::size_t m, std::size_t d, std::size_t k,
                                      const std::int64_t* key, int n_threads) {
    const char* env = std::getenv("XCCA_PAIRING_ENGINE");  // "tree" / "gemm" / "dense": forced (tests, diagnosis)
    const std::string force = env ? env : "";
    if (force == "gemm") return detail::make_gemm_engine(y, m, d);
    if (force == "dense" || (force.empty() && m <= kDenseMax)) return std::make_unique<DenseEngine>(y, m, d, n_threads);
    auto tree = std::make_unique<TreeEngine>(y, m, d);
    if (force == "tree" || d < 4 || d > 100000) return tree;
    // A GEMM pass costs about 1/16 of a tree scan per point pair (measured: break-even at 5.5-6.6 % of the points
    // scanned per query for 5, 9 and 16 modes): take it when the sampled tree queries scan more than that.
    // Sampled queries cost up to m*d each: fewer samples in high dimension (at least 8).
    const std::size_t samples = std::clamp<std::size_t>(static_cast<std::size_t>(2e8 / (double(m) * double(d))), 8, 64);
    const double frac = tree->scan_fraction(k, samples, key);
    if (frac > kGemmFraction) return detail::make_gemm_engine(y, m, d);
    return tree;
}

// ---- reading the candidate lists ----

enum class Look { found, none, stale };

// Nearest alive point of u by (d2, key): the first alive entry's distance v; among the alive entries at v the lowest
// current key. Valid only if every alive point at v is in the list: v below the list's last distance, or the list
// held every alive point when made. Otherwise the list must be recomputed.
Look look_up(const Lists& L, std::size_t u, const std::vector<unsigned char>& alive, const std::int64_t* key,
             std::int32_t& v, double& v2) {
    const std::size_t k = L.k, len = L.len[u];
    const std::int32_t* id = &L.id[u * k];
    const double* dd = &L.d2[u * k];
    std::size_t c = 0;
    while (c < len && !alive[static_cast<std::size_t>(id[c])]) ++c;
    if (c == len) return L.complete[u] ? Look::none : Look::stale;
    if (!L.complete[u] && !(dd[c] < dd[len - 1])) return Look::stale;
    v = id[c];
    v2 = dd[c];
    for (std::size_t e = c + 1; e < len && dd[e] == v2; ++e)
        if (alive[static_cast<std::size_t>(id[e])] && key[id[e]] < key[v]) v = id[e];
    return Look::found;
}

// The first entry of a list just recomputed (it is exact at this moment); false if u has no alive other point.
bool fresh_first(const Lists& L, std::size_t u, std::int32_t& v, double& v2) {
    if (L.len[u] == 0) return false;
    v = L.id[u * L.k];
    v2 = L.d2[u * L.k];
    return true;
}

}  // namespace

PairResult pair_loki(const double* x, std::size_t n, std::size_t d, int n_threads) {
    const Prepared P = prepare(x, n, d, n_threads);
    const std::size_t m = P.m;
    // Shots are visited in index order and a point's shots are taken lowest first, so each point's shots are used
    // in order: next[u] is the first unused one and key[u] its index (the tie-break among equal distances).
    std::vector<std::size_t> next(P.start.begin(), P.start.end() - 1);
    std::vector<std::int64_t> key(m);
    for (std::size_t u = 0; u < m; ++u) key[u] = P.members[P.start[u]];
    std::vector<unsigned char> alive(m, 1), used(n, 0), queued(m, 0);
    const std::size_t k = std::min(kCandidates, std::max<std::size_t>(m, 2) - 1);
    std::unique_ptr<Engine> eng;
    Lists L, L1;
    bool batched = false;
    if (m >= 2) {
        eng = choose_engine(P.y.data(), m, d, k, key.data(), n_threads);
        batched = !eng->is_tree();
        if (!batched) L1.resize(m, 1);
        L.resize(m, k);
        std::vector<std::int32_t> all(m);
        std::iota(all.begin(), all.end(), 0);
        eng->knn(all, key.data(), L, n_threads);
    }
    auto take = [&](std::size_t u) {  // uses the next shot of point u
        const std::int64_t s = P.members[next[u]++];
        used[static_cast<std::size_t>(s)] = 1;
        if (next[u] == P.start[u + 1]) {
            alive[u] = 0;
            if (eng) eng->remove(static_cast<std::int32_t>(u));
        } else {
            key[u] = P.members[next[u]];
        }
        return s;
    };
    PairResult res;
    res.pairs.reserve(n);
    res.distances.reserve(n / 2);
    std::vector<std::int32_t> batch;
    for (std::size_t i = 0; i < n; ++i) {
        if (used[i]) continue;
        const auto u = static_cast<std::size_t>(P.row_of[i]);
        take(u);
        if (alive[u]) {  // an identical unused shot: distance 0, the nearest possible (distinct rows are > 0 apart)
            res.pairs.push_back(static_cast<std::int64_t>(i));
            res.pairs.push_back(take(u));
            res.distances.push_back(0.0);
            continue;
        }
        std::int32_t v = -1;
        double v2 = 0.0;
        bool ok = false;
        if (eng) {
            const Look look = look_up(L, u, alive, key.data(), v, v2);
            if (look == Look::found) {
                ok = true;
            } else if (look == Look::stale) {
                // Recompute u's list, and with it those of the next shots in visiting order whose lists are already
                // stale (they stay stale: points only die), so the engine answers a batch at a time.
                batch.assign(1, static_cast<std::int32_t>(u));
                // The tree answers one nearest-neighbour query cheaply (and a k-NN among sparse survivors scans far
                // more): it gets no look-ahead and a 1-list; the GEMM scan pays per pass, so it gets a batch.
                for (std::size_t j = i + 1, seen = 0; batched && j < n && seen < 8192 && batch.size() < 240;
                     ++j, ++seen) {
                    if (used[j]) continue;
                    const auto w = static_cast<std::size_t>(P.row_of[j]);
                    if (queued[w] || P.start[w + 1] - next[w] != 1) continue;
                    std::int32_t tv;
                    double td;
                    if (look_up(L, w, alive, key.data(), tv, td) == Look::stale) {
                        queued[w] = 1;
                        batch.push_back(static_cast<std::int32_t>(w));
                    }
                }
                Lists& R = batched ? L : L1;
                eng->knn(batch, key.data(), R, n_threads);
                for (std::int32_t w : batch) queued[static_cast<std::size_t>(w)] = 0;
                ok = fresh_first(R, u, v, v2);
            }
        }
        if (!ok) {
            res.unpaired.push_back(static_cast<std::int64_t>(i));
            continue;
        }
        res.pairs.push_back(static_cast<std::int64_t>(i));
        res.pairs.push_back(take(static_cast<std::size_t>(v)));
        res.distances.push_back(std::ldexp(std::sqrt(v2), P.exponent));
    }
    return res;
}

PairResult pair_greedy(const double* x, std::size_t n, std::size_t d, int n_threads) {
    const Prepared P = prepare(x, n, d, n_threads);
    struct Edge {
        double d2;
        std::int64_t i, j;
    };
    std::vector<Edge> edges;
    edges.reserve(n / 2);
    // Identical shots are at distance 0, the smallest: greedy pairs each point's shots first, lowest indices first
    // ((a1, a2), (a3, a4), ...); of an odd number the highest shot is left to pair with other points.
    std::vector<std::int64_t> key;  // the remaining shot of each surviving point, ascending
    std::vector<std::size_t> src;
    for (std::size_t u = 0; u < P.m; ++u) {
        const std::size_t b = P.start[u], e = P.start[u + 1];
        for (std::size_t t = b; t + 1 < e; t += 2) edges.push_back(Edge{0.0, P.members[t], P.members[t + 1]});
        if ((e - b) % 2) key.push_back(P.members[e - 1]), src.push_back(u);
    }
    std::vector<std::size_t> perm(key.size());
    std::iota(perm.begin(), perm.end(), std::size_t{0});
    std::sort(perm.begin(), perm.end(), [&](std::size_t a, std::size_t b) { return key[a] < key[b]; });
    const std::size_t m = key.size();
    std::vector<double> ycopy;
    const double* yp = P.y.data();  // the surviving points in key order (P.y itself when that is its order)
    bool same = m == P.m;
    for (std::size_t p = 0; same && p < m; ++p) same = src[perm[p]] == p;
    {
        std::vector<std::int64_t> k2(m);
        for (std::size_t p = 0; p < m; ++p) k2[p] = key[perm[p]];
        key.swap(k2);
    }
    if (!same) {
        ycopy.resize(m * d);
        for (std::size_t p = 0; p < m; ++p) std::memcpy(&ycopy[p * d], &P.y[src[perm[p]] * d], d * sizeof(double));
        yp = ycopy.data();
    }
    std::vector<std::int32_t> remaining(m);
    std::iota(remaining.begin(), remaining.end(), 0);
    if (m >= 2) {
        const std::size_t k = std::min(kCandidates, m - 1);
        auto eng = choose_engine(yp, m, d, k, key.data(), n_threads);
        Lists L, L1;
        L.resize(m, k);
        if (eng->is_tree()) L1.resize(m, 1);
        eng->knn(remaining, key.data(), L, n_threads);
        std::vector<unsigned char> alive(m, 1);
        std::vector<std::int32_t> nn(m, -1);
        std::vector<double> nn_d2(m, kInf);
        std::vector<std::int32_t> stale;
        // Rounds of mutual nearest neighbours: a mutual pair among the remaining points is the cheapest edge at both
        // of its ends, so greedy must select it; the globally cheapest edge (by (d2, i, j)) is always mutual, so
        // every round makes progress. A nearest neighbour changes only when it is removed (keys are fixed here).
        while (remaining.size() >= 2) {
            stale.clear();
            for (std::int32_t p : remaining) {
                const auto sp = static_cast<std::size_t>(p);
                if (nn[sp] >= 0 && alive[static_cast<std::size_t>(nn[sp])]) continue;
                std::int32_t v;
                double v2;
                const Look look = look_up(L, sp, alive, key.data(), v, v2);
                if (look == Look::found) nn[sp] = v, nn_d2[sp] = v2;
                else if (look == Look::stale) stale.push_back(p);
                else nn[sp] = -1;  // cannot happen with >= 2 remaining points
            }
            if (!stale.empty()) {
                // The tree recomputes only the nearest neighbour (a k-NN among sparse survivors scans far more).
                Lists& R = eng->is_tree() ? L1 : L;
                eng->knn(stale, key.data(), R, n_threads);
                for (std::int32_t p : stale) {
                    const auto sp = static_cast<std::size_t>(p);
                    std::int32_t v;
                    double v2;
                    if (fresh_first(R, sp, v, v2)) nn[sp] = v, nn_d2[sp] = v2;
                    else nn[sp] = -1;
                }
            }
            for (std::int32_t p : remaining) {  // the mutual test reads only nn, so removing as we go is safe
                const std::int32_t q = nn[static_cast<std::size_t>(p)];
                if (q > p && nn[static_cast<std::size_t>(q)] == p) {
                    edges.push_back(Edge{nn_d2[static_cast<std::size_t>(p)], key[static_cast<std::size_t>(p)],
                                         key[static_cast<std::size_t>(q)]});
                    alive[static_cast<std::size_t>(p)] = alive[static_cast<std::size_t>(q)] = 0;
                    eng->remove(p);
                    eng->remove(q);
                }
            }
            std::size_t w = 0;
            for (std::int32_t p : remaining)
                if (alive[static_cast<std::size_t>(p)]) remaining[w++] = p;
            remaining.resize(w);
        }
    }
    // Greedy selects edges in increasing (d2, i, j): that order is the order of selection.
    std::sort(edges.begin(), edges.end(), [](const Edge& a, const Edge& b) {
        if (a.d2 != b.d2) return a.d2 < b.d2;
        if (a.i != b.i) return a.i < b.i;
        return a.j < b.j;
    });
    PairResult res;
    res.pairs.reserve(2 * edges.size());
    res.distances.reserve(edges.size());
    for (const Edge& e : edges) {
        res.pairs.push_back(e.i);
        res.pairs.push_back(e.j);
        res.distances.push_back(std::ldexp(std::sqrt(e.d2), P.exponent));
    }
    for (std::int32_t p : remaining) res.unpaired.push_back(key[static_cast<std::size_t>(p)]);
    std::sort(res.unpaired.begin(), res.unpaired.end());
    return res;
}

}  // namespace xcca::pairing
