// Exact k nearest neighbours by a blocked GEMM-style scan (see pairing_internal.hpp).
//
// Candidate pass in float32: e(a, b) = |a|^2 + |b|^2 - 2 a.b on centred coordinates z = y - mean, register-blocked
// (6 queries x 16 points per micro-tile, AVX2 + FMA when the CPU has them) and compared at once against a per-query
// threshold, so no distance block is ever stored. A BLAS sgemm would write every distance to memory and read it
// back: at D = 16 that traffic, not the arithmetic, is the cost, so the fused kernel is faster (measured: see
// bench/pairing.py); the wheels then need no BLAS either.
//
// Certified bound. With u = 2^-24, |z~ - z| <= u'|z| from the float64 -> float32 rounding, any-order float32 dot
// products off by at most gamma_D sum|a_k b_k| (FMA or not), and single roundings of |b|^2 and of |b|^2 - 2 a.b,
//   |e(a, b) - F(a, b)| <= ((D + 6) u + O(u^2)) (|z_a| + |z_b|)^2,
// where F is the exact float64 distance (itself within (D + 2) 2^-53 of the real one). We use
// delta = (D + 8) 2^-23 (|z_a| + M_J)^2, M_J the largest |z| of the 16*c points of chunk J: more than twice the bound.
// A point is a candidate iff e <= D_k + delta, where D_k is the exact k-th smallest F among the candidates rechecked
// so far (+inf before k are known); every point of the exact top k (including ties at D_k) passes, since then
// e - delta <= F <= D_k. Candidates are rechecked exactly in float64 in batches, which also lowers D_k.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu_features.hpp"
#include "pairing_internal.hpp"
#include "xcca/threads.hpp"

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define XCCA_PAIRING_AVX2 1
#endif

namespace xcca::pairing::detail {
namespace {

constexpr std::size_t kLanes = 16;         // points per panel
constexpr std::size_t kRows = 6;           // queries per micro-tile
constexpr std::size_t kQueryGroup = 240;   // queries sharing one pass over the points (a multiple of kRows)
constexpr std::size_t kBuffer = 64;        // candidates buffered before an exact recheck
constexpr std::size_t kChunkBytes = 128 * 1024;  // points per chunk: L2-resident while the group's queries pass

using HitFn = void (*)(void* ctx, std::size_t row, std::size_t panel, unsigned mask);

// One micro-tile row block (kRows queries, row-major q[r*d + k]) against panels [p0, p1): calls fn for every
// (row, panel) with at least one point whose |b|^2 - 2 a.b <= thr[row]. thr is re-read per panel (fn may lower it).
void tile_generic(const float* q, std::size_t d, const float* panels, const float* nb, std::size_t p0, std::size_t p1,
                  const float* thr, HitFn fn, void* ctx) {
    for (std::size_t p = p0; p < p1; ++p) {
        const float* b = panels + p * kLanes * d;
        float acc[kRows][kLanes] = {};
        for (std::size_t k = 0; k < d; ++k)
            for (std::size_t r = 0; r < kRows; ++r) {
                const float a = q[r * d + k];
                for (std::size_t j = 0; j < kLanes; ++j) acc[r][j] += a * b[k * kLanes + j];
            }
        for (std::size_t r = 0; r < kRows; ++r) {
            unsigned mask = 0;
            const float t = thr[r];
            for (std::size_t j = 0; j < kLanes; ++j)
                if (nb[p * kLanes + j] - 2.0f * acc[r][j] <= t) mask |= 1u << j;
            if (mask) fn(ctx, r, p, mask);
        }
    }
}

#ifdef XCCA_PAIRING_AVX2
__attribute__((target("avx2,fma"))) void tile_avx2(const float* q, std::size_t d, const float* panels, const float* nb,
                                                   std::size_t p0, std::size_t p1, const float* thr, HitFn fn,
                                                   void* ctx) {
    const __m256 two = _mm256_set1_ps(2.0f);
    for (std::size_t p = p0; p < p1; ++p) {
        const float* b = panels + p * kLanes * d;
        __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00,
               c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
        const float *q0 = q, *q1 = q + d, *q2 = q + 2 * d, *q3 = q + 3 * d, *q4 = q + 4 * d, *q5 = q + 5 * d;
        for (std::size_t k = 0; k < d; ++k) {
            const __m256 b0 = _mm256_loadu_ps(b + k * kLanes), b1 = _mm256_loadu_ps(b + k * kLanes + 8);
            __m256 a = _mm256_broadcast_ss(q0 + k);
            c00 = _mm256_fmadd_ps(a, b0, c00), c01 = _mm256_fmadd_ps(a, b1, c01);
            a = _mm256_broadcast_ss(q1 + k);
            c10 = _mm256_fmadd_ps(a, b0, c10), c11 = _mm256_fmadd_ps(a, b1, c11);
            a = _mm256_broadcast_ss(q2 + k);
            c20 = _mm256_fmadd_ps(a, b0, c20), c21 = _mm256_fmadd_ps(a, b1, c21);
            a = _mm256_broadcast_ss(q3 + k);
            c30 = _mm256_fmadd_ps(a, b0, c30), c31 = _mm256_fmadd_ps(a, b1, c31);
            a = _mm256_broadcast_ss(q4 + k);
            c40 = _mm256_fmadd_ps(a, b0, c40), c41 = _mm256_fmadd_ps(a, b1, c41);
            a = _mm256_broadcast_ss(q5 + k);
            c50 = _mm256_fmadd_ps(a, b0, c50), c51 = _mm256_fmadd_ps(a, b1, c51);
        }
        const __m256 n0 = _mm256_loadu_ps(nb + p * kLanes), n1 = _mm256_loadu_ps(nb + p * kLanes + 8);
#define XCCA_ROW(r, lo, hi)                                                                                 \
    {                                                                                                       \
        const __m256 t = _mm256_broadcast_ss(thr + r);                                                      \
        const unsigned mask =                                                                               \
            unsigned(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_fnmadd_ps(lo, two, n0), t, _CMP_LE_OQ))) |       \
            unsigned(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_fnmadd_ps(hi, two, n1), t, _CMP_LE_OQ))) << 8; \
        if (mask) fn(ctx, r, p, mask);                                                                      \
    }
        XCCA_ROW(0, c00, c01)
        XCCA_ROW(1, c10, c11)
        XCCA_ROW(2, c20, c21)
        XCCA_ROW(3, c30, c31)
        XCCA_ROW(4, c40, c41)
        XCCA_ROW(5, c50, c51)
#undef XCCA_ROW
    }
}
#endif

struct Cand {
    double d2;
    std::int64_t key;
    std::int32_t id;
    bool operator<(const Cand& o) const { return d2 != o.d2 ? d2 < o.d2 : key < o.key; }
};

struct QState {
    std::int32_t self;
    double n2, nrm;  // |z~|^2 as the kernel's threshold uses it; |z| bound
    double dk;       // exact k-th smallest F so far (+inf while fewer than k are known)
    std::vector<Cand> top;
    std::vector<std::int32_t> buf;
};

class GemmEngine final : public Engine {
public:
    GemmEngine(const double* y, std::size_t m, std::size_t d) : y_(y), m_(m), d_(d) {
        std::vector<double> mean(d, 0.0);
        for (std::size_t i = 0; i < m; ++i)
            for (std::size_t k = 0; k < d; ++k) mean[k] += y[i * d + k];
        for (double& v : mean) v /= static_cast<double>(m);
        z_.resize(m * d);
        n2_.resize(m);
        nrm_.resize(m);
        for (std::size_t i = 0; i < m; ++i) {
            double s = 0.0;
            for (std::size_t k = 0; k < d; ++k) {
                const float v = static_cast<float>(y[i * d + k] - mean[k]);
                z_[i * d + k] = v;
                s += static_cast<double>(v) * static_cast<double>(v);
            }
            n2_[i] = s;
            nrm_[i] = std::sqrt(s) * (1.0 + 0x1p-20);  // covers |z| <= |z~| (1 + u') and the roundings
        }
        cfac_ = (static_cast<double>(d) + 8.0) * 0x1p-23;
        // In high dimension a recheck costs d and a stale threshold admits many: recheck every 4 (the width of
        // exact_d2_4) so the threshold follows; in low dimension batch them.
        flush_ = d >= 64 ? 4 : kBuffer;
        alive_.assign(m, 1);
        n_alive_ = m;
        chunk_ = std::max<std::size_t>(1, kChunkBytes / (kLanes * d * sizeof(float)));
        pack();
#ifdef XCCA_PAIRING_AVX2
        tile_ = xcca::detail::cpu_has_avx2_fma() ? tile_avx2 : tile_generic;
#else
        tile_ = tile_generic;
#endif
    }

    void remove(std::int32_t u) override {
        const auto su = static_cast<std::size_t>(u);
        if (!alive_[su]) return;
        alive_[su] = 0;
        --n_alive_;
        nb_[static_cast<std::size_t>(packed_of_[su])] = std::numeric_limits<float>::infinity();
    }

    void knn(const std::vector<std::int32_t>& queries, const std::int64_t* key, Lists& lists,
             int n_threads) override {
        if (2 * n_alive_ < pos_.size()) pack();  // dead points cost a scan: compact when more than half are dead
        parallel_for(queries.size(), n_threads, kQueryGroup, [&](std::size_t b, std::size_t e) {
            run_group(queries.data() + b, e - b, key, lists);
        });
    }

private:
    // Packs the alive points into panels of 16, column-major within a panel; pads with dead points.
    void pack() {
        pos_.clear();
        for (std::size_t i = 0; i < m_; ++i)
            if (alive_[i]) pos_.push_back(static_cast<std::int32_t>(i));
        packed_of_.assign(m_, -1);
        const std::size_t np = (pos_.size() + kLanes - 1) / kLanes;
        panels_.assign(np * kLanes * d_, 0.0f);
        nb_.assign(np * kLanes, std::numeric_limits<float>::infinity());
        for (std::size_t s = 0; s < pos_.size(); ++s) {
            const auto i = static_cast<std::size_t>(pos_[s]);
            packed_of_[i] = static_cast<std::int32_t>(s);
            const std::size_t p = s / kLanes, j = s % kLanes;
            for (std::size_t k = 0; k < d_; ++k) panels_[(p * d_ + k) * kLanes + j] = z_[i * d_ + k];
            nb_[s] = static_cast<float>(n2_[i]);
        }
        n_panels_ = np;
        const std::size_t nc = (np + chunk_ - 1) / chunk_;
        chunk_max_.assign(nc, 0.0);
        for (std::size_t s = 0; s < pos_.size(); ++s) {
            double& mx = chunk_max_[s / kLanes / chunk_];
            mx = std::max(mx, nrm_[static_cast<std::size_t>(pos_[s])]);
        }
    }

    float threshold(const QState& s, std::size_t chunk) const {
        if (!(s.dk < std::numeric_limits<double>::infinity())) return FLT_MAX;
        const double r = s.nrm + chunk_max_[chunk];
        const double delta = cfac_ * r * r;
        double t = s.dk + delta - s.n2;
        t += (s.dk + delta + s.n2) * 0x1p-50;  // rounding of this expression, and of t to float below
        if (t >= static_cast<double>(FLT_MAX)) return FLT_MAX;
        float tf = static_cast<float>(t);
        if (static_cast<double>(tf) < t) tf = std::nextafter(tf, FLT_MAX);
        return tf;
    }

    void recheck(QState& s, const std::int64_t* key, std::size_t k) const {
        const double* ya = y_ + static_cast<std::size_t>(s.self) * d_;
        const std::size_t nb = s.buf.size();
        std::size_t c = 0;
        for (; c + 4 <= nb; c += 4) {  // four independent sums at a time: one sum alone is latency-bound
            double dd[4];
            exact_d2_4(ya, y_ + static_cast<std::size_t>(s.buf[c]) * d_, y_ + static_cast<std::size_t>(s.buf[c + 1]) * d_,
                       y_ + static_cast<std::size_t>(s.buf[c + 2]) * d_, y_ + static_cast<std::size_t>(s.buf[c + 3]) * d_,
                       d_, dd);
            for (std::size_t w = 0; w < 4; ++w) s.top.push_back(Cand{dd[w], key[s.buf[c + w]], s.buf[c + w]});
        }
        for (; c < nb; ++c) {
            const std::int32_t id = s.buf[c];
            s.top.push_back(Cand{exact_d2(ya, y_ + static_cast<std::size_t>(id) * d_, d_), key[id], id});
        }
        s.buf.clear();
        if (s.top.size() > k) {
            std::nth_element(s.top.begin(), s.top.begin() + static_cast<std::ptrdiff_t>(k - 1), s.top.end());
            s.top.resize(k);  // nth_element leaves the k smallest in front
        }
        if (s.top.size() == k) {
            double mx = -1.0;
            for (const Cand& c : s.top) mx = std::max(mx, c.d2);
            s.dk = mx;
        }
    }

    struct Ctx {
        const GemmEngine* eng;
        QState* st;
        float* thr;
        const std::int64_t* key;
        std::size_t k, chunk;
    };

    static void on_hit(void* vctx, std::size_t r, std::size_t panel, unsigned mask) {
        Ctx& c = *static_cast<Ctx*>(vctx);
        QState& s = c.st[r];
        while (mask) {
            const unsigned j = static_cast<unsigned>(__builtin_ctz(mask));
            mask &= mask - 1;
            const std::int32_t id = c.eng->pos_[panel * kLanes + j];
            if (id == s.self) continue;
            s.buf.push_back(id);
            // Recheck as soon as k candidates are known (the threshold then drops from +inf), then in batches.
            if (s.buf.size() >= c.eng->flush_ || (s.top.size() < c.k && s.buf.size() + s.top.size() >= c.k)) {
                c.eng->recheck(s, c.key, c.k);
                c.thr[r] = c.eng->threshold(s, c.chunk);
            }
        }
    }

    void run_group(const std::int32_t* q, std::size_t nq, const std::int64_t* key, Lists& lists) const {
        const std::size_t k = lists.k, nrow = (nq + kRows - 1) / kRows * kRows;
        std::vector<float> qz(nrow * d_, 0.0f);
        std::vector<float> thr(nrow, -std::numeric_limits<float>::infinity());  // padding rows never hit
        std::vector<QState> st(nrow);
        for (std::size_t r = 0; r < nq; ++r) {
            const auto i = static_cast<std::size_t>(q[r]);
            std::memcpy(&qz[r * d_], &z_[i * d_], d_ * sizeof(float));
            st[r].self = q[r];
            st[r].n2 = n2_[i];
            st[r].nrm = nrm_[i];
            st[r].dk = std::numeric_limits<double>::infinity();
            st[r].top.reserve(k + kBuffer);
            st[r].buf.reserve(kBuffer);
        }
        for (std::size_t c0 = 0, chunk = 0; c0 < n_panels_; c0 += chunk_, ++chunk) {
            const std::size_t c1 = std::min(n_panels_, c0 + chunk_);
            for (std::size_t r = 0; r < nq; ++r) thr[r] = threshold(st[r], chunk);
            for (std::size_t r0 = 0; r0 < nrow; r0 += kRows) {
                Ctx ctx{this, &st[r0], &thr[r0], key, k, chunk};
                tile_(&qz[r0 * d_], d_, panels_.data(), nb_.data(), c0, c1, &thr[r0], on_hit, &ctx);
            }
        }
        for (std::size_t r = 0; r < nq; ++r) {
            QState& s = st[r];
            recheck(s, key, k);
            std::sort(s.top.begin(), s.top.end());
            const auto u = static_cast<std::size_t>(q[r]);
            lists.len[u] = static_cast<std::uint16_t>(s.top.size());
            lists.complete[u] = s.top.size() < k;  // then every alive other point passed (threshold +inf)
            for (std::size_t c = 0; c < s.top.size(); ++c) {
                lists.id[u * k + c] = s.top[c].id;
                lists.d2[u * k + c] = s.top[c].d2;
            }
        }
    }

    const double* y_;
    std::size_t m_, d_;
    std::vector<float> z_;             // centred float32 coordinates, row-major
    std::vector<double> n2_, nrm_;     // |z~|^2, bound on |z|
    double cfac_ = 0.0;
    std::size_t flush_ = kBuffer;  // candidates buffered before a recheck
    std::vector<unsigned char> alive_;
    std::size_t n_alive_ = 0;
    std::vector<std::int32_t> pos_;        // packed position -> point
    std::vector<std::int32_t> packed_of_;  // point -> packed position (-1: not packed)
    std::vector<float> panels_, nb_;       // nb_ = |z~|^2 as float, +inf for dead and padding
    std::vector<double> chunk_max_;
    std::size_t chunk_ = 1, n_panels_ = 0;
    void (*tile_)(const float*, std::size_t, const float*, const float*, std::size_t, std::size_t, const float*, HitFn,
                  void*) = nullptr;
};

}  // namespace

std::unique_ptr<Engine> make_gemm_engine(const double* y, std::size_t m, std::size_t d) {
    return std::make_unique<GemmEngine>(y, m, d);
}

}  // namespace xcca::pairing::detail
