// Private: the correlation engine, included (inside an anonymous namespace of xcca::correlate) by correlate.cpp for
// the baseline ISA and by correlate_avx2.cpp under "#pragma GCC target" with pocketfft renamed, so the two builds
// share no symbols. No #include here: the including file provides std, pocketfft, xcca/fft.hpp and
// xcca/threads.hpp first.
// NOLINTBEGIN
// ---------------------------------------------------------------------------------------------------------------
// Mask pair counts
// ---------------------------------------------------------------------------------------------------------------

struct CountScratch {
    std::vector<std::size_t> ra, rb;  // runs as (start, length) pairs
    std::vector<std::int32_t> imp, h;
    std::vector<std::uint32_t> imp2, uv;  // auto_recip: impulses over [0, 2n) (wrapping arithmetic), run offsets
    std::size_t imp2_n = 0;
    std::vector<double> fa, fb;
    std::unique_ptr<fft::RealPlan<double>> plan;
};

void runs_of(const std::uint8_t* m, std::size_t n, std::vector<std::size_t>& runs) {
    runs.clear();
    constexpr std::uint64_t ones = 0x0101010101010101ull;
    std::size_t j = 0;
    while (j < n) {
        for (std::uint64_t w; j + 8 <= n && (std::memcpy(&w, m + j, 8), w == 0);) j += 8;  // skip 8 at a time
        while (j < n && !m[j]) ++j;
        if (j == n) break;
        const std::size_t s = j;
        for (std::uint64_t w; j + 8 <= n && (std::memcpy(&w, m + j, 8), w == ones);) j += 8;
        while (j < n && m[j]) ++j;
        runs.push_back(s);
        runs.push_back(j - s);
    }
}

#if defined(XCCA_CORR_AVX2)
/// Runs of valid samples, 32 mask bytes per step: the run edges are the set bits of valid ^ (valid << 1 | carry).
void runs_of_simd(const std::uint8_t* m, std::size_t n, std::vector<std::size_t>& runs) {
    runs.clear();
    const __m256i zero = _mm256_setzero_si256();
    bool in = false;
    std::size_t start = 0, j = 0;
    for (; j + 32 <= n; j += 32) {
        _mm_prefetch(reinterpret_cast<const char*>(m + j) + 512, _MM_HINT_T0);  // first touch of the mask row
        const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(m + j));
        const auto valid = ~static_cast<std::uint32_t>(_mm256_movemask_epi8(_mm256_cmpeq_epi8(x, zero)));
        for (std::uint32_t e = valid ^ ((valid << 1) | static_cast<std::uint32_t>(in)); e; e &= e - 1) {
            const std::size_t at = j + static_cast<std::size_t>(__builtin_ctz(e));
            if (!in) {
                start = at;
            } else {
                runs.push_back(start);
                runs.push_back(at - start);
            }
            in = !in;
        }
    }
    for (; j < n; ++j)
        if ((m[j] != 0) != in) {
            if (!in) {
                start = j;
            } else {
                runs.push_back(start);
                runs.push_back(j - start);
            }
            in = !in;
        }
    if (in) {
        runs.push_back(start);
        runs.push_back(n - start);
    }
}
/// Inclusive prefix sum of 8 int32 lanes.
inline __m256i prefix8(__m256i x) {
    x = _mm256_add_epi32(x, _mm256_slli_si256(x, 4));
    x = _mm256_add_epi32(x, _mm256_slli_si256(x, 8));
    const __m256i lo = _mm256_shuffle_epi32(x, 0xFF);  // element 3 of each half
    return _mm256_add_epi32(x, _mm256_permute2x128_si256(lo, lo, 0x08));  // low half's total into the high half
}
#else
inline void runs_of_simd(const std::uint8_t* m, std::size_t n, std::vector<std::size_t>& runs) { runs_of(m, n, runs); }
#endif

/// Calls emit(k, count_k) for k = 0..n-1 in order, count_k = sum_j ma_j mb_{(j+k)%n}.
template <class Emit>
void pair_counts(const std::uint8_t* ma, const std::uint8_t* mb, std::size_t n, CountScratch& s, Emit&& emit) {
    runs_of(ma, n, s.ra);
    if (mb != ma) runs_of(mb, n, s.rb);
    const std::vector<std::size_t>& rb = (mb != ma) ? s.rb : s.ra;
    const std::size_t na = s.ra.size() / 2, nb = rb.size() / 2;
    if (na == 0 || nb == 0) {
        for (std::size_t k = 0; k < n; ++k) emit(k, std::int64_t{0});
        return;
    }
    if (na * nb <= 4 * n + 64 && n < (std::size_t{1} << 30)) {
        // Each pair of runs (s, L), (t, M) contributes a trapezoid in the lag d whose second difference is four
        // unit impulses (at t-s-L+1: +1, t-s+1: -1, t-s-L+M+1: -1, t-s+M+1: +1). Folded onto the circle, integrating
        // twice gives the periodic counts up to an added integer a*k + b: a makes the first difference sum to zero
        // over a period, b makes the total sum |A| |B|. Everything is exact integer arithmetic.
        s.imp.assign(n, 0);
        const std::size_t off = 2 * n;  // keeps indices positive
        auto wrap = [n](std::size_t x) {  // x in [2, 4n]: reduce without '%'
            if (x >= 2 * n) x -= 2 * n;
            if (x >= n) x -= n;
            if (x >= n) x -= n;
            return x;
        };
        std::int64_t total_a = 0, total_b = 0;
        for (std::size_t j = 0; j < nb; ++j) total_b += static_cast<std::int64_t>(rb[2 * j + 1]);
        std::int32_t* imp = s.imp.data();
        for (std::size_t i = 0; i < na; ++i) {
            const std::size_t sa = s.ra[2 * i], L = s.ra[2 * i + 1];
            total_a += static_cast<std::int64_t>(L);
            for (std::size_t j = 0; j < nb; ++j) {
                const std::size_t t = rb[2 * j], M = rb[2 * j + 1];
                const std::size_t base = t + off - sa;
                imp[wrap(base - L + 1)] += 1;
                imp[wrap(base + 1)] -= 1;
                imp[wrap(base - L + M + 1)] -= 1;
                imp[wrap(base + M + 1)] += 1;
            }
        }
        const auto nn = static_cast<std::int64_t>(n);
        if (mb == ma) {
            // Autocorrelation: the counts are symmetric (c_k = c_{n-k}), so the true first difference at lag 0 is
            // c_0 - c_1 = number of circular runs, which fixes alpha without a pass; integrate half the lags only.
            const bool full = na == 1 && s.ra[1] == n;
            const bool wraps = na >= 2 && s.ra[0] == 0 && s.ra[2 * na - 2] + s.ra[2 * na - 1] == n;
            const std::int64_t circ_runs = full ? 0 : static_cast<std::int64_t>(wraps ? na - 1 : na);
            const std::int64_t alpha = circ_runs - imp[0];
            std::int64_t d1 = imp[0], h = total_a;
            emit(0, h);
            for (std::size_t k = 1; 2 * k <= n; ++k) {
                d1 += imp[k];
                h += d1 + alpha;
                emit(k, h);
                if (2 * k != n) emit(n - k, h);
            }
            return;
        }
        // Pass 1: first integral d1 (in place) and its sum. alpha = -mean(d1); beta fixes the lag-0 count, which is
        // the overlap |A n B| of the two run lists.
        std::int64_t d1 = 0, sum_d1 = 0;
        for (std::size_t k = 0; k < n; ++k) {
            d1 += imp[k];
            imp[k] = static_cast<std::int32_t>(d1);
            sum_d1 += d1;
        }
        const std::int64_t alpha = -sum_d1 / nn;  // exact (see above)
        std::int64_t c0 = 0;
        if (mb == ma) {
            c0 = total_a;
        } else {
            for (std::size_t i = 0, j = 0; i < na && j < nb;) {
                const std::size_t ea = s.ra[2 * i] + s.ra[2 * i + 1], eb = rb[2 * j] + rb[2 * j + 1];
                const std::size_t lo = std::max(s.ra[2 * i], rb[2 * j]), hi = std::min(ea, eb);
                if (hi > lo) c0 += static_cast<std::int64_t>(hi - lo);
                if (ea < eb) ++i; else ++j;
            }
        }
        (void)total_b;
        // Pass 2: second integral, shifted so that h_0 = c0, straight to the consumer.
        std::int64_t h = c0 - (imp[0] + alpha);
        for (std::size_t k = 0; k < n; ++k) {
            h += imp[k] + alpha;
            emit(k, h);
        }
        return;
    }
    // Many runs (e.g. random masks): float64 FFT, rounded; the error is ~1e-16 n log n, far below 1/2.
    if (!s.plan || s.plan->size() != n) s.plan = std::make_unique<fft::RealPlan<double>>(n);
    s.fa.resize(n);
    s.fb.resize(n);
    for (std::size_t j = 0; j < n; ++j) {
        s.fa[j] = ma[j] ? 1.0 : 0.0;
        s.fb[j] = mb[j] ? 1.0 : 0.0;
    }
    s.plan->forward(s.fa.data());
    s.plan->forward(s.fb.data());
    double* a = s.fa.data();
    const double* b = s.fb.data();
    a[0] *= b[0];
    for (std::size_t k = 1; 2 * k < n; ++k) {
        const double ar = a[2 * k - 1], ai = a[2 * k], br = b[2 * k - 1], bi = b[2 * k];
        a[2 * k - 1] = ar * br + ai * bi;
        a[2 * k] = ar * bi - ai * br;
    }
    if (n % 2 == 0 && n > 1) a[n - 1] *= b[n - 1];
    s.plan->backward(a, 1.0 / static_cast<double>(n));
    for (std::size_t k = 0; k < n; ++k) emit(k, static_cast<std::int64_t>(std::llround(a[k])));
}

/// 1/c as T, NaN for c = 0 (no valid pair); identical to T(1) / T(c).
template <class T>
inline T recip_count(std::int64_t c) {
    const T v = T(1) / static_cast<T>(c);
    return c ? v : std::numeric_limits<T>::quiet_NaN();
}

/// rc[k] = 1/h[k] (NaN for 0) for k < K (K multiple of 8, K <= n), then rc[n-k] = rc[k] for 0 < k < n - n/2.
/// Values at k in (n/2, K) are correct counts too, so the forward overrun is harmless.
template <class T>
void recip_mirror(const std::int32_t* h, std::size_t K, std::size_t n, T* rc) {
    std::size_t k = 0;
    const std::size_t e = n - n / 2;
#if defined(XCCA_CORR_AVX2)
    const __m256i z = _mm256_setzero_si256();
    if constexpr (std::is_same<T, float>::value) {
        const __m256 one = _mm256_set1_ps(1.0f), nan = _mm256_set1_ps(std::numeric_limits<float>::quiet_NaN());
        // Every value written is the right one for its index, so the mirrored stores (lags n-k-7..n-k of block k)
        // may overlap the forward overrun in any order; block 0 would reach rc[n] and is mirrored below.
        const __m256i rev = _mm256_set_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        for (; k < K; k += 8) {
            const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(h + k));
            const __m256 r = _mm256_div_ps(one, _mm256_cvtepi32_ps(c));
            const __m256 y = _mm256_blendv_ps(r, nan, _mm256_castsi256_ps(_mm256_cmpeq_epi32(c, z)));
            _mm256_storeu_ps(rc + k, y);
            if (k) _mm256_storeu_ps(rc + n - k - 7, _mm256_permutevar8x32_ps(y, rev));
        }
        for (k = 1; k < 8 && k < e; ++k) rc[n - k] = rc[k];
        return;
    } else {
        const __m256d one = _mm256_set1_pd(1.0), nan = _mm256_set1_pd(std::numeric_limits<double>::quiet_NaN());
        for (; k < K; k += 4) {
            const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(h + k));
            const __m256d r = _mm256_div_pd(one, _mm256_cvtepi32_pd(c));
            const __m256d zero_c = _mm256_castsi256_pd(_mm256_cmpeq_epi64(_mm256_cvtepi32_epi64(c), z));
            _mm256_storeu_pd(rc + k, _mm256_blendv_pd(r, nan, zero_c));
        }
        for (k = 1; k + 4 <= e; k += 4)
            _mm256_storeu_pd(rc + n - k - 3, _mm256_permute4x64_pd(_mm256_loadu_pd(rc + k), 0x1B));
    }
#else
    for (; k < K; ++k) rc[k] = recip_count<T>(h[k]);
    k = 1;
#endif
    for (; k < e; ++k) rc[n - k] = rc[k];  // c_{n-k} = c_k
}

/// Autocorrelation counts of one mask as reciprocals, rc[k] = 1 / sum_j m_j m_{(j+k)%n} (NaN where 0). Same
/// run-pair impulses as pair_counts, but the two integrations over lags 0..n/2 run as SIMD prefix sums (exact int32)
/// and the symmetric half is mirrored, so the cost per ring is O(R^2) scattered adds plus a few vector ops per lag.
/// With `defer`, a mask with too many runs for the run-pair method is left alone and false is returned: the caller
/// batches such masks through SIMD-lane FFTs (Engine::batch_recip) instead of one scalar FFT route per ring.
/// Number of runs of valid samples (linear, branch-free: rising edges counted 32 bytes at a time with AVX2).
inline std::size_t count_runs(const std::uint8_t* m, std::size_t n) {
    std::size_t runs = 0, j = 0;
    bool prev = false;
#if defined(XCCA_CORR_AVX2)
    const __m256i zero = _mm256_setzero_si256();
    for (; j + 32 <= n; j += 32) {
        const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(m + j));
        const auto valid = ~static_cast<std::uint32_t>(_mm256_movemask_epi8(_mm256_cmpeq_epi8(x, zero)));
        runs += static_cast<std::size_t>(__builtin_popcount(valid & ~((valid << 1) | static_cast<std::uint32_t>(prev))));
        prev = (valid >> 31) != 0;
    }
#endif
    for (; j < n; ++j) {
        const bool v = m[j] != 0;
        runs += v && !prev;
        prev = v;
    }
    return runs;
}

template <class T>
bool auto_recip(const std::uint8_t* m, std::size_t n, CountScratch& s, T* rc, bool defer = false) {
    if (defer && n >= 64 && n < (std::size_t{1} << 30)) {
        const std::size_t r = count_runs(m, n);  // (a run wrapping around the end counts twice: the same as runs_of)
        if (r * r > 4 * n + 64) return false;
    }
    runs_of_simd(m, n, s.ra);
    const std::size_t na = s.ra.size() / 2, half = n / 2;
    if (na == 0) {
        std::fill(rc, rc + n, std::numeric_limits<T>::quiet_NaN());
        return true;
    }
    if (n < 64 || na * na > 4 * n + 64 || n >= (std::size_t{1} << 30)) {
        if (defer && n >= 64 && n < (std::size_t{1} << 30)) return false;
        pair_counts(m, m, n, s, [rc](std::size_t k, std::int64_t c) { rc[k] = recip_count<T>(c); });
        return true;
    }
    // Impulses of run pair (i, j) at t_j - e_i + 1, t_j - s_i + 1, e_j - e_i + 1, e_j - s_i + 1 (e = s + L), each
    // the sum of a per-i and a per-j term in [0, n): they land in [0, 2n) with no modulo, and the two halves are
    // folded while integrating. Only [0, K) and [n, n + K) are read, so only those are cleared; the rest may hold
    // stale (unsigned, wrapping) sums.
    // The integration clears what it reads, so the read regions are zero on entry (whole array cleared when n
    // changes).
    const std::size_t K = (half + 8) & ~std::size_t{7};  // lags 0..half in whole vectors (K <= n as n >= 64)
    if (s.imp2_n != n) {
        s.imp2.assign(2 * n, 0u);
        s.imp2_n = n;
    }
    std::uint32_t* imp = s.imp2.data();
    s.uv.resize(4 * na);
    std::uint32_t* U = s.uv.data();  // per run: (1 - e) mod n, (1 - s) mod n, s, e mod n
    std::int32_t total = 0;
    for (std::size_t i = 0; i < na; ++i) {
        const std::size_t st = s.ra[2 * i], L = s.ra[2 * i + 1];
        total += static_cast<std::int32_t>(L);
        U[4 * i] = static_cast<std::uint32_t>((2 * n + 1 - st - L) % n);
        U[4 * i + 1] = static_cast<std::uint32_t>((n + 1 - st) % n);
        U[4 * i + 2] = static_cast<std::uint32_t>(st);
        U[4 * i + 3] = static_cast<std::uint32_t>((st + L) % n);
    }
    for (std::size_t i = 0; i < na; ++i) {
        const std::uint32_t a = U[4 * i], b = U[4 * i + 1];
        for (std::size_t j = 0; j < na; ++j) {
            const std::uint32_t t = U[4 * j + 2], e = U[4 * j + 3];
            imp[a + t] += 1u;
            imp[b + t] -= 1u;
            imp[a + e] -= 1u;
            imp[b + e] += 1u;
        }
    }
    const std::int32_t imp0 = static_cast<std::int32_t>(imp[0] + imp[n]);
    // See pair_counts: c_0 = |A|, c_k - c_{k-1} = d1_k + alpha with d1 the running sum of the impulses.
    const bool full = na == 1 && s.ra[1] == n;
    const bool wraps = na >= 2 && s.ra[0] == 0 && s.ra[2 * na - 2] + s.ra[2 * na - 1] == n;
    const std::int32_t circ_runs = full ? 0 : static_cast<std::int32_t>(wraps ? na - 1 : na);
    const std::int32_t alpha = circ_runs - imp0;
    s.h.resize(K);
    std::int32_t* h = s.h.data();
#if defined(XCCA_CORR_AVX2)
    const __m256i last = _mm256_set1_epi32(7), va = _mm256_set1_epi32(alpha);
    __m256i cd = _mm256_setzero_si256(), ch = _mm256_setzero_si256();
    for (std::size_t k0 = 0; k0 < K; k0 += 8) {
        __m256i* lo = reinterpret_cast<__m256i*>(imp + k0);
        __m256i* hi = reinterpret_cast<__m256i*>(imp + n + k0);
        const __m256i x = _mm256_add_epi32(_mm256_loadu_si256(lo), _mm256_loadu_si256(hi));
        _mm256_storeu_si256(lo, _mm256_setzero_si256());
        _mm256_storeu_si256(hi, _mm256_setzero_si256());
        const __m256i d = _mm256_add_epi32(prefix8(x), cd);
        cd = _mm256_permutevar8x32_epi32(d, last);
        __m256i g = _mm256_add_epi32(d, va);
        if (k0 == 0) g = _mm256_blend_epi32(g, _mm256_set1_epi32(total), 1);
        const __m256i hv = _mm256_add_epi32(prefix8(g), ch);
        ch = _mm256_permutevar8x32_epi32(hv, last);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(h + k0), hv);
    }
#else
    std::int32_t d1 = imp0, hk = total;
    h[0] = total;
    imp[0] = imp[n] = 0;
    for (std::size_t k = 1; k < K; ++k) {
        d1 += static_cast<std::int32_t>(imp[k] + imp[n + k]);
        imp[k] = imp[n + k] = 0;
        hk += d1 + alpha;
        h[k] = hk;
    }
#endif
    recip_mirror(h, K, n, rc);
    return true;
}

/// x if valid else +0, branch-free (a bit mask, so NaN/inf in masked samples vanish).
inline float masked_select(float x, std::uint8_t valid) {
    std::uint32_t u;
    std::memcpy(&u, &x, 4);
    u &= 0u - static_cast<std::uint32_t>(valid != 0);
    std::memcpy(&x, &u, 4);
    return x;
}
inline double masked_select(double x, std::uint8_t valid) {
    std::uint64_t u;
    std::memcpy(&u, &x, 8);
    u &= std::uint64_t{0} - static_cast<std::uint64_t>(valid != 0);
    std::memcpy(&x, &u, 8);
    return x;
}

#if defined(XCCA_CORR_AVX2)
/// In-register transpose of an 8 x 8 float block.
inline void transpose8(__m256* r) {
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

/// buf[8 j + l] = src[l][j] (0 where msk[l][j] == 0 when msk is given) for 8 rings: 8 x 8 blocks loaded as rows,
/// the mask bytes widened and ANDed in (bitwise, so NaN in masked samples vanishes), transposed in registers.
inline void load8_transposed(const float* const* src, const std::uint8_t* const* msk, std::size_t n, float* buf) {
    std::size_t j = 0;
    __m256 r[8];
    const __m256i zero = _mm256_setzero_si256();
    for (; j + 8 <= n; j += 8) {
        for (int l = 0; l < 8; ++l) {
            r[l] = _mm256_loadu_ps(src[l] + j);
            if (msk) {
                __m128i b;
                std::memcpy(&b, msk[l] + j, 8);  // low 8 bytes; the rest is ignored by the widening
                const __m256i w = _mm256_cvtepu8_epi32(b);
                r[l] = _mm256_and_ps(r[l], _mm256_castsi256_ps(_mm256_cmpgt_epi32(w, zero)));
            }
        }
        transpose8(r);
        for (int i = 0; i < 8; ++i) _mm256_storeu_ps(buf + 8 * (j + i), r[i]);
    }
    for (; j < n; ++j)
        for (int l = 0; l < 8; ++l) buf[8 * j + l] = msk ? masked_select(src[l][j], msk[l][j]) : src[l][j];
}

/// out[l][j] = buf[8 j + l] * f[l] (* rc[l][j] when rc[l]) for 8 rings, transposed back in registers.
inline void store8_transposed(const float* buf, std::size_t n, const float* f, const float* const* rc,
                              float* const* out) {
    std::size_t j = 0;
    __m256 r[8], fv[8];
    for (int l = 0; l < 8; ++l) fv[l] = _mm256_set1_ps(f[l]);
    for (; j + 8 <= n; j += 8) {
        for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(buf + 8 * (j + i));
        transpose8(r);
        for (int l = 0; l < 8; ++l) {
            __m256 y = _mm256_mul_ps(r[l], fv[l]);
            if (rc[l]) y = _mm256_mul_ps(y, _mm256_loadu_ps(rc[l] + j));
            _mm256_storeu_ps(out[l] + j, y);
        }
    }
    for (; j < n; ++j)
        for (int l = 0; l < 8; ++l) out[l][j] = rc[l] ? buf[8 * j + l] * f[l] * rc[l][j] : buf[8 * j + l] * f[l];
}

/// out[l][j] = buf[8 j + l] * f[l] * rcv[8 min(j, n - j) + l] for 8 rings (rcv: interleaved reciprocal counts of
/// lags 0..n/2, symmetric), the products taken in the interleaved layout, then transposed back in registers.
inline void store8_rcv(const float* buf, std::size_t n, const float* f, const float* rcv, float* const* out) {
    const __m256 fv = _mm256_loadu_ps(f);
    __m256 r[8];
    std::size_t j = 0;
    for (; j + 8 <= n; j += 8) {
        for (std::size_t i = 0; i < 8; ++i) {
            const std::size_t k = j + i, km = std::min(k, n - k);
            r[i] = _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(buf + 8 * k), fv), _mm256_loadu_ps(rcv + 8 * km));
        }
        transpose8(r);
        for (int l = 0; l < 8; ++l) _mm256_storeu_ps(out[l] + j, r[l]);
    }
    for (; j < n; ++j) {
        const std::size_t km = std::min(j, n - j);
        for (int l = 0; l < 8; ++l) out[l][j] = buf[8 * j + l] * f[l] * rcv[8 * km + l];
    }
}

/// Mask rows as +-1/2 lanes for the float32 count transforms: buf[8 j + l] = ms[l][j] ? 0.5 : -0.5, 8 x 8 blocks
/// widened from the mask bytes and transposed in registers; cnt[l] = number of valid samples of ms[l].
inline void mask8_pm_half(const std::uint8_t* const* ms, std::size_t n, float* buf, std::int32_t* cnt) {
    const __m256i zero = _mm256_setzero_si256();
    const __m256 hi = _mm256_set1_ps(0.5f), lo = _mm256_set1_ps(-0.5f);
    __m256i acc[8];
    for (int l = 0; l < 8; ++l) acc[l] = zero;
    __m256 r[8];
    std::size_t j = 0;
    for (; j + 8 <= n; j += 8) {
        for (int l = 0; l < 8; ++l) {
            std::uint64_t w;
            std::memcpy(&w, ms[l] + j, 8);
            const __m256i v = _mm256_cmpgt_epi32(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<long long>(w))), zero);
            acc[l] = _mm256_sub_epi32(acc[l], v);  // v is -1 where valid
            r[l] = _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(v));
        }
        transpose8(r);
        for (int i = 0; i < 8; ++i) _mm256_storeu_ps(buf + 8 * (j + i), r[i]);
    }
    for (int l = 0; l < 8; ++l) {
        alignas(32) std::int32_t t[8];
        _mm256_store_si256(reinterpret_cast<__m256i*>(t), acc[l]);
        cnt[l] = t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
    }
    for (; j < n; ++j)
        for (int l = 0; l < 8; ++l) {
            const bool v = ms[l][j] != 0;
            buf[8 * j + l] = v ? 0.5f : -0.5f;
            cnt[l] += v;
        }
}

/// h[l][k] = nearest integer to buf[8 k + l] + off[l] for k < K (K a multiple of 8, K <= n), transposed back.
inline void round8_counts(const float* buf, std::size_t K, const float* off, std::int32_t* const* h) {
    __m256 r[8], o[8];
    for (int l = 0; l < 8; ++l) o[l] = _mm256_set1_ps(off[l]);
    for (std::size_t k = 0; k < K; k += 8) {
        for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(buf + 8 * (k + i));
        transpose8(r);
        for (int l = 0; l < 8; ++l)  // round to nearest (the default MXCSR mode)
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(h[l] + k), _mm256_cvtps_epi32(_mm256_add_ps(r[l], o[l])));
    }
}
#endif

// ---------------------------------------------------------------------------------------------------------------
// SIMD lanes: GCC/Clang vector types, which pocketfft's templated exec accepts like its own.
// ---------------------------------------------------------------------------------------------------------------
#if !defined(POCKETFFT_NO_VECTORS)
// As many lanes as the compiler's native vector width (what pocketfft itself would use): wider emulated vectors
// are much slower.
template <class T>
struct Lanes;
template <>
struct Lanes<float> {
#ifdef XCCA_CORR_LANES_F
    static constexpr std::size_t V = XCCA_CORR_LANES_F;  // set by correlate_avx2.cpp
#else
    static constexpr std::size_t V = pocketfft::detail::VLEN<float>::val;
#endif
    typedef float type __attribute__((vector_size(V * sizeof(float))));
};
template <>
struct Lanes<double> {
#ifdef XCCA_CORR_LANES_D
    static constexpr std::size_t V = XCCA_CORR_LANES_D;
#else
    static constexpr std::size_t V = pocketfft::detail::VLEN<double>::val;
#endif
    typedef double type __attribute__((vector_size(V * sizeof(double))));
};
template <class Vt>
inline auto getl(const Vt& v, std::size_t i) {
    return v[i];
}
template <class Vt, class T>
inline void setl(Vt& v, std::size_t i, T x) {
    v[i] = x;
}
#else
template <class T>
struct Lanes {
    static constexpr std::size_t V = 1;
    using type = T;
};
template <class T>
inline T getl(const T& v, std::size_t) {
    return v;
}
template <class T>
inline void setl(T& v, std::size_t, T x) {
    v = x;
}
#endif

/// Per-thread scratch, handed out by a pool so that each concurrently running chunk owns one.
template <class T>
struct LaneSpace {
    using Vt = typename Lanes<T>::type;
    pocketfft::detail::arr<Vt> buf;  // 64-byte aligned (std::vector may under-align wide vector types)
    pocketfft::detail::arr<Vt> buf2;  // second mask of a pair (float32 cross counts)
    pocketfft::detail::arr<typename Lanes<double>::type> dbuf;  // float64 lanes: batched mask-count transforms
    pocketfft::detail::arr<typename Lanes<double>::type> dbuf2;  // second mask of a pair (cross counts)
    std::vector<T> rc;               // V x n reciprocal pair counts computed on the fly
    std::vector<T> stage;            // V x n contiguous rows (loaded rings / results) around the interleaved buf
    std::vector<std::uint8_t> comb;  // V x n combined masks (difference mode, auto)
    std::vector<std::int64_t> cnt;
    std::vector<std::int32_t> hc;   // V x n integer counts (float32 batched counts)
    std::vector<T> rcv;             // V x (n/2 + 1) interleaved reciprocal counts (run_auto, full float groups)
    CountScratch cs;
};

template <class S>
class Pool {
public:
    template <class Init>
    S* acquire(Init&& init) {
        std::lock_guard<std::mutex> lock(mu_);
        if (!free_.empty()) {
            S* s = free_.back();
            free_.pop_back();
            return s;
        }
        all_.push_back(std::make_unique<S>());
        init(*all_.back());
        return all_.back().get();
    }
    void release(S* s) {
        std::lock_guard<std::mutex> lock(mu_);
        free_.push_back(s);
    }
    std::vector<std::unique_ptr<S>>& all() { return all_; }

private:
    std::mutex mu_;
    std::vector<std::unique_ptr<S>> all_;
    std::vector<S*> free_;
};

template <class S>
struct Lease {
    Pool<S>& pool;
    S* s;
    ~Lease() { pool.release(s); }
};

/// One correlation job: units are shots (or shot pairs for differences); each unit has nq rings and R output rows
/// (nq autocorrelations or n_pairs cross-correlations).
template <class T>
class Engine {
public:
    using Vt = typename Lanes<T>::type;
    static constexpr std::size_t V = Lanes<T>::V;
#if defined(XCCA_CORR_AVX2)
    static constexpr bool f8_ = std::is_same<T, float>::value && V == 8;  // AVX2 transposed 8-lane loads/stores
#else
    static constexpr bool f8_ = false;
#endif

    Engine(const Rings<T>& r, const Options& o, const std::size_t* shot_pairs, std::size_t n_units,
           const std::size_t* q_pairs, std::size_t n_pairs)
        : rg_(r), opt_(o), shot_pairs_(shot_pairs), U_(n_units), q_pairs_(q_pairs), P_(n_pairs),
          n_(r.n), nq_(r.nq), plan_(r.n), dplan_(r.n) {
        R_ = q_pairs_ ? P_ : nq_;
        shared_mask_ = rg_.mask && rg_.n_mask_rows <= nq_;
        // Cache the reciprocal counts only when they are reused: by several units, or (auto) by several rings of one
        // unit when fewer mask rows than rings are given (else the cache is just a big temporary).
        use_cache_ = shared_mask_ && (U_ > 1 || (!q_pairs_ && rg_.n_mask_rows < nq_));
        c0_ = opt_.raw_sums ? T(1) : T(1) / static_cast<T>(n_);
        inv_n_ = T(1) / static_cast<T>(n_);
        if (rg_.mask) {
            inv_.resize(n_ + 1);
            inv_[0] = std::numeric_limits<T>::quiet_NaN();
            for (std::size_t c = 1; c <= n_; ++c) inv_[c] = T(1) / static_cast<T>(c);
        }
        if (std::is_same<T, float>::value && n_ >= 64 && n_ < (std::size_t{1} << 22)) {
            // Passes pocketfft's rfftp makes (factors 4 first, then 2, then odd): see batch_recip_f32.
            const double u = 0x1p-24, g = 12 * u / (1 - 12 * u);
            double sum = 0;
            std::size_t len = n_;
            while (len % 4 == 0) len /= 4, sum += 2 * std::sqrt(4.0) * g;
            if (len % 2 == 0) len /= 2, sum += 2 * std::sqrt(2.0) * g;
            while (len % 3 == 0) len /= 3, sum += 2 * std::sqrt(3.0) * g;
            while (len % 5 == 0) len /= 5, sum += 2 * std::sqrt(5.0) * g;
            if (len == 1) f32_eta_ = std::expm1(sum);
        }
        mspec_on_ = std::is_same<T, float>::value && f32_eta_ > 0 && rg_.mask && q_pairs_ && !use_cache_;
    }

    void run(T* out) {
        if (U_ == 0 || R_ == 0) {
            if (opt_.average && R_) std::fill(out, out + R_ * n_, std::numeric_limits<T>::quiet_NaN());
            return;
        }
        if (use_cache_) build_cache();
        if (!q_pairs_ && opt_.average)
            run_auto_average();
        else if (!q_pairs_)
            run_auto(out);
        else
            run_cross(out);
        if (opt_.average) {
            // Partial sums of fixed unit blocks (their number depends only on the sizes), added in block order:
            // the same bits for any thread count.
            const std::size_t rows = R_ * n_;
            const double inv = 1.0 / static_cast<double>(U_);
            for (std::size_t i = 0; i < rows; ++i) {
                double s = 0.0;
                for (std::size_t b = 0; b < n_blocks_; ++b) s += parts_[b * rows + i];
                out[i] = static_cast<T>(s * inv);
            }
        }
    }

private:
    const std::uint8_t* mask_row(std::size_t shot, std::size_t q) const {
        return rg_.mask + ((shot * nq_ + q) % rg_.n_mask_rows) * n_;
    }
    std::size_t shot_a(std::size_t u) const { return shot_pairs_ ? shot_pairs_[2 * u] : u; }

    LaneSpace<T>* lease_lanes() {
        return lanes_.acquire([&](LaneSpace<T>& ls) {
            ls.buf.resize(n_);
            if (rg_.mask) ls.dbuf.resize(n_);
            if (rg_.mask && q_pairs_) {
                ls.dbuf2.resize(n_);
                ls.buf2.resize(n_);
            }
            ls.stage.resize(V * n_);
            if (rg_.mask) {
                ls.rc.resize(V * n_);
                ls.comb.resize(V * n_);
                ls.cnt.resize(n_);
                ls.hc.resize(V * n_);
                ls.rcv.resize(V * (n_ / 2 + 1));
            }
        });
    }

    // Reciprocal pair counts 1/c from a table (c <= n), inv_[0] = NaN: 0 pairs give NaN, never inf.
    void recip(const std::uint8_t* ma, const std::uint8_t* mb, T* rc, std::vector<std::int64_t>&,
               CountScratch& cs) const {
        if (ma == mb) {
            auto_recip(ma, n_, cs, rc);
            return;
        }
        const T* inv = inv_.data();
        pair_counts(ma, mb, n_, cs, [rc, inv](std::size_t k, std::int64_t c) { rc[k] = inv[c]; });
    }

    /// Autocorrelation counts of `cnt` masks (many runs each) as reciprocals, Lanes<double>::V masks per pair of
    /// float64 lane transforms: F = rfft(m), |F|^2, inverse, rounded. Exact: for a 0/1 mask with |A| valid samples
    /// the computed inverse differs from the integer counts by at most
    ///   |A| (2 + sqrt(n)) eps_fft + u |A|,   eps_fft = c log2(n) u   (u = 2^-53),
    /// (forward error ||dF||_2 <= eps_fft ||F||_2 with ||F||_2 = sqrt(n |A|); sum_h |F_h| |dF_h| <= ||F|| ||dF||;
    /// the inverse adds eps_fft ||c||_2 <= eps_fft sqrt(n) |A|); with |A| <= n and a generous c = 10 this stays below
    /// 1e-4 for n <= 2^20 and below 1/2 for n < 2^30 (the engine's limit), so llround gives the exact integers. The
    /// counts are then the same integers as the run-pair method's, and so are the reciprocals.
    void batch_recip(const std::uint8_t* const* ms, T* const* rcs, std::size_t cnt, LaneSpace<T>& ls) const {
        if constexpr (std::is_same<T, float>::value) {
            if (f32_eta_ > 0) {
                for (std::size_t i0 = 0; i0 < cnt; i0 += V) {
                    const std::uint8_t* rest_m[V];
                    T* rest_rc[V];
                    const std::size_t nrest = batch_recip_f32(ms + i0, rcs + i0, std::min(V, cnt - i0), ls, rest_m, rest_rc);
                    if (nrest) batch_recip_f64(rest_m, rest_rc, nrest, ls);
                }
                return;
            }
        }
        batch_recip_f64(ms, rcs, cnt, ls);
    }
    /// Lanes of buf = the V masks mp as m - 1/2 (+-1/2: energy n/4 whatever the density), cnt[l] = |valid| of lane l.
    void fill_pm_half(const std::uint8_t* const* mp, Vt* buf, std::int32_t* cnt) const {
        const std::size_t n = n_;
#if defined(XCCA_CORR_AVX2)
        if constexpr (std::is_same<T, float>::value && V == 8) {
            mask8_pm_half(mp, n, reinterpret_cast<float*>(buf), cnt);
            return;
        }
#endif
        for (std::size_t l = 0; l < V; ++l) cnt[l] = 0;
        for (std::size_t j = 0; j < n; ++j) {
            Vt x;
            for (std::size_t l = 0; l < V; ++l) {
                const bool v = mp[l][j] != 0;
                setl(x, l, v ? T(0.5) : T(-0.5));
                cnt[l] += v;
            }
            buf[j] = x;
        }
    }


    /// The float32 route of batch_recip: V masks per pair of float32 lane transforms (the data's own plan and
    /// buffer, free at this point). Masks whose error bound below does not guarantee exact integers are returned in
    /// rest_m / rest_rc (their count) for the float64 route; every count written is exact.
    ///
    /// Why exact. The transformed signal is s = m - 1/2 (+-1/2 per sample, so ||s||^2 = W = n/4 whatever the
    /// density); the counts are c_k = (s*s)_k + |A| - n/4 (|A| = valid samples, * = circular correlation). The DC
    /// bin F_0 = |A| - n/2 is known exactly, so it is dropped from the spectrum and F_0^2 / n goes into the offset
    /// (rounded once to float32; it would otherwise dominate ||P^|| in (3) for unbalanced masks). With
    /// u = 2^-24, F = DFT(s) over all n bins (||F||^2 = n W), P = |F|^2 and d = IDFT(P)/n = s*s:
    ///  (1) forward: ||F^ - F||_2 <= eta ||F||_2 (normwise bound of the pass sequence, below);
    ///  (2) squares: P^_h = |F^_h|^2 (1 + t), |t| <= 3u, so sum_h |P^_h - P_h| <= n W (2 eta + eta^2 + 3u (1+eta)^2)
    ///      (|P^ - P| <= |dF| (2|F| + |dF|) + 3u |F^|^2, then Cauchy-Schwarz), and as |IDFT(x)_k| <= sum |x_h|, the
    ///      exact inverse of P^ is within W (2 eta + eta^2 + 3u (1+eta)^2) of d at every lag;
    ///  (3) inverse: the computed transform is within eta ||IDFT(P^)||_2 = eta sqrt(n) ||P^||_2 of the exact one
    ///      (2-norm, hence at every lag), i.e. eta ||P^||_2 / sqrt(n) after the 1/n; ||P^||_2 is measured per mask
    ///      from the squared spectrum (summed in float32: inflated by 1 + 2 n u);
    ///  (4) the 1/n scaling (rounded 1/n, one product), the rounded offset and adding it cost < 6 n u.
    /// The sum of (2)-(4) is evaluated per mask; below 3/8 (< 1/2 with margin) the nearest integer is c_k.
    /// eta: pocketfft runs a 5-smooth n as rfftp passes of radix r in {2, 3, 4, 5} (never Bluestein). A pass
    /// (twiddle products, then r-point butterflies) computes each output from its inputs with at most 12 roundings
    /// on any path (twiddles and butterfly constants are rounded from double: one more u each), so its error is
    /// <= gamma_12 |G| |x| componentwise (gamma_12 = 12u / (1 - 12u)); the exact pass G is sqrt(r) times an
    /// orthogonal map of the complex data (unit twiddles, unnormalised r-point DFT), and the entrywise |G| of one
    /// r-point block has Frobenius norm <= sqrt(2) r in real form, so the pass error is <= gamma_12 sqrt(2 r) times
    /// the exact output norm, and <= 2 sqrt(r) gamma_12 with another sqrt(2) for the real (halfcomplex) storage
    /// weighting. Passes compose to eta = prod(1 + e_i) - 1 <= expm1(sum e_i). For n = 5000 (passes 2, 4, 5, 5, 5,
    /// 5) eta = 1.8e-5; with W = 1250 and a random mask (||P^||_2 / sqrt(n) ~ 0.35 n) the bound is ~0.08; it fails
    /// (-> float64) only for n of about 2e4 and more or for strongly periodic masks of many runs.
    /// Observed errors are ~1e-3 at n = 5000 (cpp/tests/test_edge_cases.cpp compares with the run-pair counts).
    std::size_t batch_recip_f32(const std::uint8_t* const* ms, T* const* rcs, std::size_t nl, LaneSpace<T>& ls,
                                const std::uint8_t** rest_m, T** rest_rc) const {
        const std::size_t n = n_;
        T off[V];
        bool ok[V];
        auto_counts_f32(ms, nl, ls, off, ok);
        const Vt* b = ls.buf.data();
        const std::size_t K = (n / 2 + 8) & ~std::size_t{7};  // lags 0..n/2 in whole vectors (K <= n as n >= 64)
        std::int32_t* h[V];
        for (std::size_t l = 0; l < V; ++l) h[l] = ls.hc.data() + l * n;
        if constexpr (f8_) {
#if defined(XCCA_CORR_AVX2)
            round8_counts(reinterpret_cast<const float*>(b), K, off, h);
#endif
        } else {
            for (std::size_t k = 0; k < K; ++k)
                for (std::size_t l = 0; l < V; ++l)
                    h[l][k] = static_cast<std::int32_t>(std::nearbyint(getl(b[k], l) + off[l]));
        }
        std::size_t nrest = 0;
        for (std::size_t l = 0; l < nl; ++l) {
            if (ok[l]) {
                recip_mirror(h[l], K, n, rcs[l]);
            } else {
                rest_m[nrest] = ms[l];
                rest_rc[nrest++] = rcs[l];
            }
        }
        return nrest;
    }

#if defined(XCCA_CORR_AVX2)
    /// AVX2 float32, 8 masks of one full group (run_auto): reciprocal counts kept interleaved,
    /// rcv[8 k + l] = 1 / c_k of mask l for lags k = 0..n/2 (NaN for 0; c_{n-k} = c_k, so store8_rcv reads lag
    /// min(k, n - k)), skipping the transposes and mirrored rows of batch_recip_f32. Same count integers (same
    /// transforms, bound and float64 fallback) and the same reciprocals 1.0f / float(c).
    void auto_rcv_f32(const std::uint8_t* const* ms, LaneSpace<T>& ls, T* rcv) const {
        static_assert(f8_, "8 float lanes");
        const std::size_t n = n_;
        T off[V];
        bool ok[V];
        auto_counts_f32(ms, V, ls, off, ok);
        const float* b = reinterpret_cast<const float*>(ls.buf.data());
        const __m256 offv = _mm256_loadu_ps(off), one = _mm256_set1_ps(1.0f);
        const __m256 nan = _mm256_set1_ps(std::numeric_limits<float>::quiet_NaN());
        const __m256i z = _mm256_setzero_si256();
        for (std::size_t k = 0; 2 * k <= n; ++k) {
            const __m256i c = _mm256_cvtps_epi32(_mm256_add_ps(_mm256_loadu_ps(b + 8 * k), offv));
            const __m256 r = _mm256_div_ps(one, _mm256_cvtepi32_ps(c));
            _mm256_storeu_ps(rcv + 8 * k, _mm256_blendv_ps(r, nan, _mm256_castsi256_ps(_mm256_cmpeq_epi32(c, z))));
        }
        for (std::size_t l = 0; l < V; ++l) {
            if (ok[l]) continue;
            T* row = ls.rc.data() + l * n;
            batch_recip_f64(ms + l, &row, 1, ls);
            for (std::size_t k = 0; 2 * k <= n; ++k) rcv[8 * k + l] = row[k];
        }
    }
#endif

    /// The transforms of batch_recip_f32 for nl <= V masks (spare lanes repeat the last): leaves in ls.buf the
    /// computed (s * s)_k without the DC term, off[l] the offset to add before rounding, ok[l] whether lane l's
    /// bound (see batch_recip_f32) guarantees the nearest integer is the exact count.
    void auto_counts_f32(const std::uint8_t* const* ms, std::size_t nl, LaneSpace<T>& ls, T* off, bool* ok) const {
        Vt* b = ls.buf.data();
        const std::size_t n = n_;
        std::int32_t A[V];
        const std::uint8_t* mp[V];
        for (std::size_t l = 0; l < V; ++l) mp[l] = ms[std::min(l, nl - 1)];  // spare lanes repeat the last mask
        fill_pm_half(mp, b, A);
        plan_.exec(b, T(1), true);
        b[0] = Vt{};  // the DC term F_0 = |A| - n/2 is known exactly: added to the offset instead (keeps ||P^|| small)
        Vt ss{};
        for (std::size_t k = 1; 2 * k < n; ++k) {
            const Vt p = b[2 * k - 1] * b[2 * k - 1] + b[2 * k] * b[2 * k];
            b[2 * k - 1] = p;
            b[2 * k] = Vt{};
            ss += p * p;
        }
        Vt pn{};
        if (n % 2 == 0) {
            b[n - 1] = b[n - 1] * b[n - 1];
            pn = b[n - 1];
        }
        plan_.exec(b, T(1) / static_cast<T>(n), false);
        const double u = 0x1p-24, eta = f32_eta_, W = static_cast<double>(n) / 4.0;
        const double fwd = W * (2 * eta + eta * eta + 3 * u * (1 + eta) * (1 + eta)) + 6 * u * static_cast<double>(n);
        for (std::size_t l = 0; l < V; ++l) {
            const double f0 = static_cast<double>(A[l]) - static_cast<double>(n) / 2.0;
            off[l] = static_cast<T>(static_cast<double>(A[l]) - static_cast<double>(n) / 4.0 + f0 * f0 / static_cast<double>(n));
            const double pnl = getl(pn, l);
            const double ssl = (2.0 * static_cast<double>(getl(ss, l)) + pnl * pnl) *
                               (1.0 + 2.0 * u * static_cast<double>(n));
            ok[l] = fwd + eta * (1 + eta) * std::sqrt(ssl / static_cast<double>(n)) <= 0.375;
        }
    }

    /// Cross counts c_k = sum_j ma_j mb_{(j+k)%n} of `cnt` mask pairs as reciprocals, Lanes<double>::V pairs per
    /// float64 lane pass: rfft of both masks, conj(A) B, inverse, rounded. Exact by the argument of batch_recip_f64
    /// with |F_a| |dF_b| + |dF_a| |F_b| in place of 2 |F| |dF| (Cauchy-Schwarz: <= 2 eta n sqrt(|A| |B|) <= 2 eta n^2)
    /// and ||c||_2 <= sqrt(n) min(|A|, |B|): the same bound, below 1/2 for n < 2^30.
    void batch_cross_recip(const std::uint8_t* const* ma, const std::uint8_t* const* mb, T* const* rcs,
                           std::size_t cnt, LaneSpace<T>& ls) const {
        if constexpr (std::is_same<T, float>::value) {
            if (f32_eta_ > 0) {
                for (std::size_t i0 = 0; i0 < cnt; i0 += V) {
                    const std::uint8_t* ra[V];
                    const std::uint8_t* rb[V];
                    T* rr[V];
                    const std::size_t nr = batch_cross_f32(ma + i0, mb + i0, rcs + i0, std::min(V, cnt - i0), ls,
                                                           ra, rb, rr);
                    if (nr) batch_cross_f64(ra, rb, rr, nr, ls);
                }
                return;
            }
        }
        batch_cross_f64(ma, mb, rcs, cnt, ls);
    }

    /// Float32 route of batch_cross_recip, V pairs per lane pass; the proof of batch_recip_f32 with s_a, s_b = m - 1/2
    /// (c_k = (s_a * s_b)_k + (|A| + |B|) / 2 - n/4; DC term F_a0 F_b0 / n into the offset), sum_h |P^_h - P_h| <=
    /// ||F_a|| ||dF_b|| + ||dF_a|| ||F_b|| + ||dF_a|| ||dF_b|| + 4u ||F^_a|| ||F^_b|| <= n W (2 eta + eta^2 +
    /// 4u (1 + eta)^2) (W = n/4 for both; the complex product rounds twice per part), and ||P^||_2 measured from
    /// the products. Pairs whose bound exceeds 3/8 are returned for the float64 route.
    std::size_t batch_cross_f32(const std::uint8_t* const* ma, const std::uint8_t* const* mb, T* const* rcs,
                                std::size_t nl, LaneSpace<T>& ls, const std::uint8_t** rest_a,
                                const std::uint8_t** rest_b, T** rest_rc) const {
        Vt* a = ls.buf.data();
        Vt* b = ls.buf2.data();
        const std::size_t n = n_;
        std::int32_t A[V], B[V];
        const std::uint8_t* pa[V];
        const std::uint8_t* pb[V];
        for (std::size_t l = 0; l < V; ++l) {
            pa[l] = ma[std::min(l, nl - 1)];
            pb[l] = mb[std::min(l, nl - 1)];
        }
        fill_pm_half(pa, a, A);
        fill_pm_half(pb, b, B);
        plan_.exec(a, T(1), true);
        plan_.exec(b, T(1), true);
        a[0] = Vt{};
        Vt ss{};
        for (std::size_t k = 1; 2 * k < n; ++k) {
            const Vt ar = a[2 * k - 1], ai = a[2 * k], br = b[2 * k - 1], bi = b[2 * k];
            const Vt pr = ar * br + ai * bi, pi = ar * bi - ai * br;
            a[2 * k - 1] = pr;
            a[2 * k] = pi;
            ss += pr * pr + pi * pi;
        }
        Vt pn{};
        if (n % 2 == 0) {
            a[n - 1] = a[n - 1] * b[n - 1];
            pn = a[n - 1];
        }
        double ssl[V];
        for (std::size_t l = 0; l < V; ++l) {
            const double pnl = getl(pn, l);
            ssl[l] = 2.0 * static_cast<double>(getl(ss, l)) + pnl * pnl;
        }
        return cross_f32_finish(a, ssl, A, B, ma, mb, rcs, nl, ls, rest_a, rest_b, rest_rc);
    }

    /// Common end of the float32 cross-count routes: a holds conj(F_a) F_b of V mask pairs (DC bin zeroed,
    /// halfcomplex), ssl[l] the sum of the squared moduli of lane l's computed products over all n bins. Inverse,
    /// offset, rounding, the per-pair bound of batch_cross_f32, reciprocals; pairs failing the bound go to rest_*.
    std::size_t cross_f32_finish(Vt* a, const double* ssl_in, const std::int32_t* A, const std::int32_t* B,
                                 const std::uint8_t* const* ma, const std::uint8_t* const* mb, T* const* rcs,
                                 std::size_t nl, LaneSpace<T>& ls, const std::uint8_t** rest_a,
                                 const std::uint8_t** rest_b, T** rest_rc) const {
        const std::size_t n = n_;
        plan_.exec(a, T(1) / static_cast<T>(n), false);
        const double u = 0x1p-24, eta = f32_eta_, W = static_cast<double>(n) / 4.0;
        const double fwd = W * (2 * eta + eta * eta + 4 * u * (1 + eta) * (1 + eta)) + 6 * u * static_cast<double>(n);
        T off[V];
        std::int32_t* h[V];
        for (std::size_t l = 0; l < V; ++l) {
            const double fa = static_cast<double>(A[l]) - static_cast<double>(n) / 2.0;
            const double fb = static_cast<double>(B[l]) - static_cast<double>(n) / 2.0;
            off[l] = static_cast<T>((static_cast<double>(A[l]) + static_cast<double>(B[l])) / 2.0 -
                                    static_cast<double>(n) / 4.0 + fa * fb / static_cast<double>(n));
            h[l] = ls.hc.data() + l * n;
        }
        const std::size_t K = n & ~std::size_t{7};
        if constexpr (f8_) {
#if defined(XCCA_CORR_AVX2)
            round8_counts(reinterpret_cast<const float*>(a), K, off, h);
#endif
        } else {
            for (std::size_t k = 0; k < K; ++k)
                for (std::size_t l = 0; l < V; ++l)
                    h[l][k] = static_cast<std::int32_t>(std::nearbyint(getl(a[k], l) + off[l]));
        }
        for (std::size_t k = K; k < n; ++k)
            for (std::size_t l = 0; l < V; ++l)
                h[l][k] = static_cast<std::int32_t>(std::nearbyint(getl(a[k], l) + off[l]));
        const T* inv = inv_.data();
        std::size_t nrest = 0;
        for (std::size_t l = 0; l < nl; ++l) {
            const double ssl = ssl_in[l] * (1.0 + 2.0 * u * static_cast<double>(n));
            const double bound = fwd + eta * (1 + eta) * std::sqrt(ssl / static_cast<double>(n));
            if (bound <= 0.375) {
                T* rc = rcs[l];
                const std::int32_t* hl = h[l];
                for (std::size_t k = 0; k < n; ++k)  // exact counts in [0, n] (clamped only for memory safety)
                    rc[k] = inv[std::min<std::uint32_t>(static_cast<std::uint32_t>(hl[k]), static_cast<std::uint32_t>(n))];
            } else {
                rest_a[nrest] = ma[l];
                rest_b[nrest] = mb[l];
                rest_rc[nrest++] = rcs[l];
            }
        }
        return nrest;
    }

    void batch_cross_f64(const std::uint8_t* const* ma, const std::uint8_t* const* mb, T* const* rcs,
                         std::size_t cnt, LaneSpace<T>& ls) const {
        using Vd = typename Lanes<double>::type;
        constexpr std::size_t VD = Lanes<double>::V;
        Vd* a = ls.dbuf.data();
        Vd* b = ls.dbuf2.data();
        const std::size_t n = n_;
        const T* inv = inv_.data();
        for (std::size_t i0 = 0; i0 < cnt; i0 += VD) {
            const std::size_t nl = std::min(VD, cnt - i0);
            double* ad = reinterpret_cast<double*>(a);
            double* bd = reinterpret_cast<double*>(b);
            if (nl < VD) {
                std::fill(ad, ad + n * VD, 0.0);
                std::fill(bd, bd + n * VD, 0.0);
            }
            for (std::size_t l = 0; l < nl; ++l) {
                const std::uint8_t* ra = ma[i0 + l];
                const std::uint8_t* rb = mb[i0 + l];
                for (std::size_t j = 0; j < n; ++j) {
                    ad[j * VD + l] = static_cast<double>(static_cast<int>(ra[j] != 0));
                    bd[j * VD + l] = static_cast<double>(static_cast<int>(rb[j] != 0));
                }
            }
            dplan_.exec(a, 1.0, true);
            dplan_.exec(b, 1.0, true);
            a[0] = a[0] * b[0];
            for (std::size_t k = 1; 2 * k < n; ++k) {
                const Vd ar = a[2 * k - 1], ai = a[2 * k], br = b[2 * k - 1], bi = b[2 * k];
                a[2 * k - 1] = ar * br + ai * bi;
                a[2 * k] = ar * bi - ai * br;
            }
            if (n % 2 == 0) a[n - 1] = a[n - 1] * b[n - 1];
            dplan_.exec(a, 1.0 / static_cast<double>(n), false);
            for (std::size_t l = 0; l < nl; ++l) {
                T* rc = rcs[i0 + l];
                for (std::size_t j = 0; j < n; ++j) {
                    const auto c = static_cast<std::size_t>(getl(a[j], l) + 0.5);  // values in [-1/2, n + 1/2]
                    rc[j] = inv[c < n ? c : n];
                }
            }
        }
    }

    void batch_recip_f64(const std::uint8_t* const* ms, T* const* rcs, std::size_t cnt, LaneSpace<T>& ls) const {
        using Vd = typename Lanes<double>::type;
        constexpr std::size_t VD = Lanes<double>::V;
        Vd* b = ls.dbuf.data();
        const std::size_t n = n_;
        for (std::size_t i0 = 0; i0 < cnt; i0 += VD) {
            const std::size_t nl = std::min(VD, cnt - i0);
            // Lane by lane, branch-free (a compare-and-convert per byte; a branch per sample mispredicts on random
            // masks): b[j][l] = (ms[l][j] != 0).
            double* bd = reinterpret_cast<double*>(b);
            if (nl < VD) std::fill(bd, bd + n * VD, 0.0);
            for (std::size_t l = 0; l < nl; ++l) {
                const std::uint8_t* mr = ms[i0 + l];
                for (std::size_t j = 0; j < n; ++j) bd[j * VD + l] = static_cast<double>(static_cast<int>(mr[j] != 0));
            }
            dplan_.exec(b, 1.0, true);
            b[0] = b[0] * b[0];
            for (std::size_t k = 1; 2 * k < n; ++k) {
                b[2 * k - 1] = b[2 * k - 1] * b[2 * k - 1] + b[2 * k] * b[2 * k];
                b[2 * k] = Vd{};
            }
            if (n % 2 == 0) b[n - 1] = b[n - 1] * b[n - 1];
            dplan_.exec(b, 1.0 / static_cast<double>(n), false);
            // Round to nearest (values lie in [-1/2, n + 1/2], so truncating v + 1/2 is llround), then 1/c from the
            // table (inv_[c] == T(1) / T(c), NaN for 0: the same values recip_count gives).
            const T* inv = inv_.data();
            for (std::size_t l = 0; l < nl; ++l) {
                T* rc = rcs[i0 + l];
                for (std::size_t j = 0; j < n; ++j) {
                    const auto c = static_cast<std::size_t>(getl(b[j], l) + 0.5);
                    rc[j] = inv[c < n ? c : n];
                }
            }
        }
    }

    // Shared masks: the reciprocal pair counts depend only on q (auto) or on the q pair (cross): compute once.
    void build_cache() {
        const std::size_t rows = q_pairs_ ? P_ : std::min(rg_.n_mask_rows, nq_);
        cache_.resize(rows * n_);
        parallel_for(rows, opt_.n_threads, 8, [&](std::size_t b, std::size_t e) {
            CountScratch cs;
            std::vector<std::int64_t> cnt(n_);
            for (std::size_t i = b; i < e; ++i) {
                const std::uint8_t* ma = mask_row(0, q_pairs_ ? q_pairs_[2 * i] : i);
                const std::uint8_t* mb = mask_row(0, q_pairs_ ? q_pairs_[2 * i + 1] : i);
                T* dst = cache_.data() + i * n_;
                if (i > b && !q_pairs_ && std::memcmp(ma, ma - n_, n_) == 0) {  // polar masks often repeat
                    std::memcpy(dst, dst - n_, n_ * sizeof(T));
                    continue;
                }
                recip(ma, mb, dst, cnt, cs);
            }
        });
    }
    const T* cached_rc(std::size_t row) const {
        return cache_.data() + (q_pairs_ ? row : row % rg_.n_mask_rows) * n_;
    }

    /// Loads ring q of unit u into lane `ln` of buf (valid samples, 0 elsewhere, mean removed for std), returns its
    /// normalisation factor; *mrow receives the mask row used (combined masks are written to comb).
    T load(std::size_t u, std::size_t q, T* dst, std::uint8_t* comb, const std::uint8_t** mrow) const {
        const std::size_t sa = shot_a(u);
        const T* a = rg_.data + (sa * nq_ + q) * n_;
        const T* b = nullptr;
        if (shot_pairs_) b = rg_.data + (shot_pairs_[2 * u + 1] * nq_ + q) * n_;
        const std::uint8_t* m = nullptr;
        if (rg_.mask) {
            m = mask_row(sa, q);
            if (b && !shared_mask_) {
                const std::uint8_t* m2 = mask_row(shot_pairs_[2 * u + 1], q);
                for (std::size_t j = 0; j < n_; ++j) comb[j] = static_cast<std::uint8_t>(m[j] && m2[j]);
                m = comb;
            }
        }
        *mrow = m;
        if (!m && !b) {
            std::memcpy(dst, a, n_ * sizeof(T));
        } else if (!m) {
            for (std::size_t j = 0; j < n_; ++j) dst[j] = a[j] - b[j];
        } else if (!b) {  // select (bitwise), not multiply: NaN in masked samples must not leak
            for (std::size_t j = 0; j < n_; ++j) dst[j] = masked_select(a[j], m[j]);
        } else {
            for (std::size_t j = 0; j < n_; ++j) dst[j] = masked_select(static_cast<T>(a[j] - b[j]), m[j]);
        }
        if (opt_.normalize == Normalize::none) return T(1);
        double sum = 0;
        std::size_t cnt = 0;
        for (std::size_t j = 0; j < n_; ++j)
            if (!m || m[j]) {
                sum += dst[j];
                ++cnt;
            }
        const double mu = cnt ? sum / static_cast<double>(cnt) : std::numeric_limits<double>::quiet_NaN();
        if (opt_.normalize == Normalize::mean) return static_cast<T>(1.0 / mu);
        const T tmu = static_cast<T>(mu);
        double var = 0;
        for (std::size_t j = 0; j < n_; ++j)
            if (!m || m[j]) {
                const T v = static_cast<T>(dst[j] - tmu);
                dst[j] = v;
                var += static_cast<double>(v) * static_cast<double>(v);
            }
        var = cnt ? var / static_cast<double>(cnt) : std::numeric_limits<double>::quiet_NaN();
        return static_cast<T>(1.0 / std::sqrt(var));
    }

    /// buf[j][l] = stage[l * n + j] for the first nl lanes, 0 in the others.
    void interleave(const T* stage, std::size_t nl, Vt* buf) const {
        if (nl == V) {
            for (std::size_t j = 0; j < n_; ++j) {
                Vt x;
                for (std::size_t l = 0; l < V; ++l) setl(x, l, stage[l * n_ + j]);
                buf[j] = x;
            }
            return;
        }
        for (std::size_t j = 0; j < n_; ++j) {
            Vt x = Vt{};
            for (std::size_t l = 0; l < nl; ++l) setl(x, l, stage[l * n_ + j]);
            buf[j] = x;
        }
    }
    /// buf[j][l] = src[l][j] (masked: 0 where msk[l][j] == 0) straight from the rings, 0 in lanes >= nl.
    void interleave_direct(const T* const* src, const std::uint8_t* const* msk, std::size_t nl, Vt* buf) const {
        if (nl == V && !msk[0]) {
            for (std::size_t j = 0; j < n_; ++j) {
                Vt x;
                for (std::size_t l = 0; l < V; ++l) setl(x, l, src[l][j]);
                buf[j] = x;
            }
        } else if (nl == V) {
            for (std::size_t j = 0; j < n_; ++j) {
                Vt x;
                for (std::size_t l = 0; l < V; ++l) setl(x, l, masked_select(src[l][j], msk[l][j]));
                buf[j] = x;
            }
        } else {
            for (std::size_t j = 0; j < n_; ++j) {
                Vt x = Vt{};
                for (std::size_t l = 0; l < nl; ++l)
                    setl(x, l, msk[l] ? masked_select(src[l][j], msk[l][j]) : src[l][j]);
                buf[j] = x;
            }
        }
    }

    // Full groups of 8 float rings under AVX2: transposed block loads/stores (no-ops elsewhere, never called).
    void load8(const T* const* src, const std::uint8_t* const* msk, Vt* buf) const {
#if defined(XCCA_CORR_AVX2)
        if constexpr (std::is_same<T, float>::value && V == 8)
            load8_transposed(src, msk, n_, reinterpret_cast<float*>(buf));
#else
        (void)src, (void)msk, (void)buf;
#endif
    }
    void store8(const Vt* buf, const T* f, const T* const* rc, T* const* out) const {
#if defined(XCCA_CORR_AVX2)
        if constexpr (std::is_same<T, float>::value && V == 8)
            store8_transposed(reinterpret_cast<const float*>(buf), n_, f, rc, out);
#else
        (void)buf, (void)f, (void)rc, (void)out;
#endif
    }

    /// stage[l * n + j] = buf[j][l] for the first nl lanes.
    void deinterleave(const Vt* buf, std::size_t nl, T* stage) const {
        if (nl == V) {
            for (std::size_t j = 0; j < n_; ++j) {
                const Vt x = buf[j];
                for (std::size_t l = 0; l < V; ++l) stage[l * n_ + j] = getl(x, l);
            }
            return;
        }
        for (std::size_t j = 0; j < n_; ++j)
            for (std::size_t l = 0; l < nl; ++l) stage[l * n_ + j] = getl(buf[j], l);
    }

    /// Writes a result row: src times f and the reciprocal counts rc (null: none), into out_row or added to acc_row.
    void store(const T* src, T f, const T* rc, T* out_row, double* acc_row) const {
        if (acc_row) {
            if (rc)
                for (std::size_t k = 0; k < n_; ++k) acc_row[k] += static_cast<double>(src[k] * f * rc[k]);
            else
                for (std::size_t k = 0; k < n_; ++k) acc_row[k] += static_cast<double>(src[k] * f);
        } else {
            if (rc)
                for (std::size_t k = 0; k < n_; ++k) out_row[k] = src[k] * f * rc[k];
            else
                for (std::size_t k = 0; k < n_; ++k) out_row[k] = src[k] * f;
        }
    }

    void run_auto(T* out) {
        const std::size_t G = U_ * nq_;
        const std::size_t ng = (G + V - 1) / V;
        const unsigned th = resolve_threads(opt_.n_threads);
        // Small chunks (handed out dynamically) keep the threads finishing together; a chunk costs one atomic.
        const std::size_t grain = std::max<std::size_t>(1, std::min<std::size_t>(16, ng / (16 * th)));
        parallel_for(ng, opt_.n_threads, grain, [&](std::size_t gb, std::size_t ge) {
            Lease<LaneSpace<T>> lease{lanes_, lease_lanes()};
            LaneSpace<T>& ls = *lease.s;
            Vt* buf = ls.buf.data();
            T scale[V];
            const T* rc[V];
            for (std::size_t g = gb; g < ge; ++g) {
                const std::size_t r0 = g * V, nl = std::min(V, G - r0);
                // Plain rows (no difference, no normalisation) go straight from the input into the lanes.
                const bool direct = !shot_pairs_ && opt_.normalize == Normalize::none;
                const T* src[V];
                const std::uint8_t* msk[V];
                const std::uint8_t* mprev = nullptr;
                const std::uint8_t* pend_m[V];  // masks with many runs: counts batched through lane FFTs below
                T* pend_rc[V];
                std::size_t npend = 0;
                for (std::size_t v = 0; v < nl; ++v) {
                    const std::size_t r = r0 + v;
                    const std::uint8_t* m = nullptr;
                    if (direct) {
                        src[v] = rg_.data + r * n_;
                        m = msk[v] = rg_.mask ? mask_row(r / nq_, r % nq_) : nullptr;
                        scale[v] = T(1);
                    } else {
                        scale[v] = load(r / nq_, r % nq_, ls.stage.data() + v * n_,
                                        rg_.mask ? ls.comb.data() + v * n_ : nullptr, &m);
                    }
                    rc[v] = lane_rc(m, r % nq_, v, mprev, v ? rc[v - 1] : nullptr, ls, pend_m, pend_rc, npend);
                    mprev = m;
                }
#if defined(XCCA_CORR_AVX2)
                constexpr bool f8 = std::is_same<T, float>::value && V == 8;
#else
                constexpr bool f8 = false;
#endif
                // A full group of 8 float rings, every mask with many runs: counts stay interleaved (auto_rcv_f32).
                const bool fused = f8 && direct && nl == V && npend == V && f32_eta_ > 0;
                if (npend && !fused) batch_recip(pend_m, pend_rc, npend, ls);
#if defined(XCCA_CORR_AVX2)
                if constexpr (f8_) {
                    if (fused) {
                        auto_rcv_f32(pend_m, ls, ls.rcv.data());
                        load8(src, msk, buf);
                        autocorr_lanes(buf);
                        T f[V];
                        T* orow[V];
                        for (std::size_t v = 0; v < V; ++v) {
                            f[v] = scale[v] * scale[v] * inv_n_;
                            orow[v] = out + (r0 + v) * n_;
                        }
                        store8_rcv(reinterpret_cast<const float*>(buf), n_, f, ls.rcv.data(), orow);
                        continue;
                    }
                }
#endif
                if (f8 && direct && nl == V)
                    load8(src, rg_.mask ? msk : nullptr, buf);
                else if (direct)
                    interleave_direct(src, msk, nl, buf);
                else
                    interleave(ls.stage.data(), nl, buf);
                autocorr_lanes(buf);
                if (f8 && nl == V) {
                    T f[V];
                    T* orow[V];
                    for (std::size_t v = 0; v < V; ++v) {
                        f[v] = scale[v] * scale[v] * (rc[v] ? inv_n_ : inv_n_ * c0_);
                        orow[v] = out + (r0 + v) * n_;
                    }
                    store8(buf, f, rc, orow);
                    continue;
                }
                deinterleave(buf, nl, ls.stage.data());
                for (std::size_t v = 0; v < nl; ++v) {
                    const std::size_t r = r0 + v;
                    const T f = scale[v] * scale[v] * (rc[v] ? inv_n_ : inv_n_ * c0_);
                    store(ls.stage.data() + v * n_, f, rc[v], out + r * n_, nullptr);
                }
            }
        });
    }

    /// Reciprocal pair counts of lane v's mask m (ring q; null: no mask): the cached row, the previous lane's when the
    /// mask repeats (memcmp stops at the first difference), or computed here (masks with many runs are deferred to
    /// pend_* for one batched transform).
    const T* lane_rc(const std::uint8_t* m, std::size_t q, std::size_t v, const std::uint8_t* mprev, const T* prev_rc,
                     LaneSpace<T>& ls, const std::uint8_t** pend_m, T** pend_rc, std::size_t& npend) const {
        if (!m) return nullptr;
        if (use_cache_) return cached_rc(q);
        if (v > 0 && mprev && (m == mprev || std::memcmp(m, mprev, n_) == 0)) return prev_rc;
        T* dst = ls.rc.data() + v * n_;
        if (!auto_recip(m, n_, ls.cs, dst, true)) {
            pend_m[npend] = m;
            pend_rc[npend++] = dst;
        }
        return dst;
    }

    /// In place over the lanes: forward transform, |F|^2 (halfcomplex order), inverse: the unnormalised circular
    /// autocorrelation of every lane.
    void autocorr_lanes(Vt* buf) const {
        plan_.exec(buf, T(1), true);
        buf[0] = buf[0] * buf[0];
        for (std::size_t k = 1; 2 * k < n_; ++k) {
            buf[2 * k - 1] = buf[2 * k - 1] * buf[2 * k - 1] + buf[2 * k] * buf[2 * k];
            buf[2 * k] = Vt{};
        }
        if (n_ % 2 == 0 && n_ > 1) buf[n_ - 1] = buf[n_ - 1] * buf[n_ - 1];
        plan_.exec(buf, T(1), false);
    }

    /// Averaged autocorrelations, deterministic: work items are (block of units, ring q) with a block count that
    /// depends only on nq and the number of units; an item transforms V units of its ring at a time (lanes) and
    /// adds them, in unit order, into its own partial row.
    void run_auto_average() {
        std::size_t nb = std::max<std::size_t>(1, std::min((64 + nq_ - 1) / nq_, (U_ + V - 1) / V));
        const std::size_t ub = (U_ + nb - 1) / nb;
        nb = (U_ + ub - 1) / ub;
        n_blocks_ = nb;
        parts_.assign(nb * nq_ * n_, 0.0);
        parallel_for(nb * nq_, opt_.n_threads, 1, [&](std::size_t ib, std::size_t ie) {
            Lease<LaneSpace<T>> lease{lanes_, lease_lanes()};
            LaneSpace<T>& ls = *lease.s;
            Vt* buf = ls.buf.data();
            T scale[V];
            const T* rc[V];
            for (std::size_t it = ib; it < ie; ++it) {
                const std::size_t blk = it / nq_, q = it % nq_;
                const std::size_t u1 = std::min(U_, (blk + 1) * ub);
                double* acc = parts_.data() + it * n_;
                for (std::size_t u0 = blk * ub; u0 < u1; u0 += V) {
                    const std::size_t nl = std::min(V, u1 - u0);
                    const std::uint8_t* mprev = nullptr;
                    const std::uint8_t* pend_m[V];
                    T* pend_rc[V];
                    std::size_t npend = 0;
                    for (std::size_t v = 0; v < nl; ++v) {
                        const std::uint8_t* m = nullptr;
                        scale[v] = load(u0 + v, q, ls.stage.data() + v * n_,
                                        rg_.mask ? ls.comb.data() + v * n_ : nullptr, &m);
                        rc[v] = lane_rc(m, q, v, mprev, v ? rc[v - 1] : nullptr, ls, pend_m, pend_rc, npend);
                        mprev = m;
                    }
                    if (npend) batch_recip(pend_m, pend_rc, npend, ls);
                    interleave(ls.stage.data(), nl, buf);
                    autocorr_lanes(buf);
                    deinterleave(buf, nl, ls.stage.data());
                    for (std::size_t v = 0; v < nl; ++v) {
                        const T f = scale[v] * scale[v] * (rc[v] ? inv_n_ : inv_n_ * c0_);
                        store(ls.stage.data() + v * n_, f, rc[v], nullptr, acc);
                    }
                }
            }
        });
    }

    struct UnitSpace {
        std::vector<T> spec, scale;
        std::vector<const std::uint8_t*> mrow;
        std::vector<std::uint8_t> comb;
        // Per-ring masks (cross, no count cache): runs of each ring's mask, and for masks with many runs their
        // float32 +-1/2 spectra (halfcomplex rows), valid counts and a ready flag (float32 count route only).
        std::vector<std::size_t> mruns;
        std::vector<T> mspec;
        std::vector<std::int32_t> mvalid;
        std::vector<std::uint8_t> mready;
    };

    UnitSpace* lease_unit() {
        return units_.acquire([&](UnitSpace& us) {
            us.spec.resize(nq_ * n_);
            us.scale.resize(nq_);
            us.mrow.resize(nq_);
            if (rg_.mask && shot_pairs_ && !shared_mask_) us.comb.resize(nq_ * n_);
            if (rg_.mask && !use_cache_) us.mruns.resize(nq_);
            if (mspec_on_) {
                us.mspec.resize(nq_ * n_);
                us.mvalid.resize(nq_);
                us.mready.resize(nq_);
            }
        });
    }

    // Forward transforms of rings [qb, qe) of unit u into us.spec (scalar rows, halfcomplex order).
    void cross_forward(std::size_t u, UnitSpace& us, LaneSpace<T>& ls, std::size_t gb, std::size_t ge) const {
        Vt* buf = ls.buf.data();
        for (std::size_t g = gb; g < ge; ++g) {
            const std::size_t q0 = g * V, nl = std::min(V, nq_ - q0);
            for (std::size_t v = 0; v < nl; ++v) {
                const std::size_t q = q0 + v;
                us.scale[q] = load(u, q, ls.stage.data() + v * n_,
                                   us.comb.empty() ? nullptr : us.comb.data() + q * n_, &us.mrow[q]);
            }
            interleave(ls.stage.data(), nl, buf);
            plan_.exec(buf, T(1), true);
            deinterleave(buf, nl, us.spec.data() + q0 * n_);  // rows q0 .. q0 + nl - 1 are consecutive
            if (rg_.mask && !use_cache_) mask_spectra(us, ls, q0, nl);
        }
    }

    /// Runs of the masks of rings [q0, q0 + nl) and, on the float32 count route, the +-1/2 spectra of those with
    /// many runs (one lane transform for up to V rings): a ring's mask spectrum then serves every pair it is in,
    /// instead of two forward transforms per pair.
    void mask_spectra(UnitSpace& us, LaneSpace<T>& ls, std::size_t q0, std::size_t nl) const {
        const std::size_t many = 4 * n_ + 64;
        const std::uint8_t* mp[V];
        std::size_t qs[V], nm = 0;
        for (std::size_t v = 0; v < nl; ++v) {
            const std::size_t q = q0 + v;
            const std::uint8_t* m = us.mrow[q];
            const std::size_t r = m ? count_runs(m, n_) : 0;
            us.mruns[q] = r;
            if (!mspec_on_) continue;
            us.mready[q] = 0;
            if (m && r * r > many) {
                mp[nm] = m;
                qs[nm++] = q;
            }
        }
        if (nm == 0) return;
        for (std::size_t l = nm; l < V; ++l) mp[l] = mp[nm - 1];
        Vt* b = ls.buf2.data();
        std::int32_t A[V];
        fill_pm_half(mp, b, A);
        plan_.exec(b, T(1), true);
        const T* bs = reinterpret_cast<const T*>(b);
        for (std::size_t l = 0; l < nm; ++l) {
            T* row = us.mspec.data() + qs[l] * n_;
            for (std::size_t j = 0; j < n_; ++j) row[j] = bs[j * V + l];
            us.mvalid[qs[l]] = A[l];
            us.mready[qs[l]] = 1;
        }
    }

    /// Cross counts of `cnt` pairs of rings (qa[i], qb[i]) of unit space us whose mask spectra are ready: the
    /// products conj(F_a) F_b of the cached float32 spectra, V pairs per inverse lane transform, then
    /// cross_f32_finish. The proof of batch_cross_f32 holds unchanged: each cached spectrum is the same computed
    /// forward transform of the same +-1/2 lanes (a lane's result does not depend on the other lanes), the products
    /// round as there, and ||P^||_2 is summed here in float64 from the computed float32 products (its error is far
    /// inside the 1 + 2 n u allowance).
    void batch_cross_spec(const std::size_t* qa, const std::size_t* qb, T* const* rcs, std::size_t cnt,
                          const UnitSpace& us, LaneSpace<T>& ls) const {
        const std::size_t n = n_;
        for (std::size_t i0 = 0; i0 < cnt; i0 += V) {
            const std::size_t nl = std::min(V, cnt - i0);
            T* a = reinterpret_cast<T*>(ls.buf2.data());
            std::int32_t A[V], B[V];
            const std::uint8_t* ma[V];
            const std::uint8_t* mb[V];
            double ssl[V];
            for (std::size_t l = 0; l < V; ++l) {
                const std::size_t i = i0 + std::min(l, nl - 1);  // spare lanes repeat the last pair
                const T* fa = us.mspec.data() + qa[i] * n;
                const T* fb = us.mspec.data() + qb[i] * n;
                A[l] = us.mvalid[qa[i]];
                B[l] = us.mvalid[qb[i]];
                ma[l] = us.mrow[qa[i]];
                mb[l] = us.mrow[qb[i]];
                double ss = 0;
                a[l] = T(0);  // DC bin: known exactly, in the offset
                for (std::size_t k = 1; 2 * k < n; ++k) {
                    const T ar = fa[2 * k - 1], ai = fa[2 * k], br = fb[2 * k - 1], bi = fb[2 * k];
                    const T pr = ar * br + ai * bi, pi = ar * bi - ai * br;
                    a[(2 * k - 1) * V + l] = pr;
                    a[2 * k * V + l] = pi;
                    ss += static_cast<double>(pr) * pr + static_cast<double>(pi) * pi;
                }
                ss *= 2.0;
                if (n % 2 == 0) {
                    const T pn = fa[n - 1] * fb[n - 1];
                    a[(n - 1) * V + l] = pn;
                    ss += static_cast<double>(pn) * pn;
                }
                ssl[l] = ss;
            }
            const std::uint8_t* ra[V];
            const std::uint8_t* rb[V];
            T* rr[V];
            const std::size_t nr = cross_f32_finish(ls.buf2.data(), ssl, A, B, ma, mb, rcs + i0, nl, ls, ra, rb, rr);
            if (nr) batch_cross_f64(ra, rb, rr, nr, ls);
        }
    }

    // conj(A) B for pairs [pb, pe), inverse, division, store.
    void cross_inverse(std::size_t u, const UnitSpace& us, LaneSpace<T>& ls, std::size_t gb, std::size_t ge,
                       T* out, double* acc) const {
        Vt* buf = ls.buf.data();
        const T* rc[V];
        for (std::size_t g = gb; g < ge; ++g) {
            const std::size_t p0 = g * V, nl = std::min(V, P_ - p0);
            const std::uint8_t* pend_a[V];
            const std::uint8_t* pend_b[V];
            T* pend_rc[V];
            std::size_t npend = 0;
            std::size_t spec_a[V], spec_b[V];  // pairs whose two mask spectra are cached in us
            T* spec_rc[V];
            std::size_t nspec = 0;
            for (std::size_t v = 0; v < nl; ++v) {
                const std::size_t qa = q_pairs_[2 * (p0 + v)], qb = q_pairs_[2 * (p0 + v) + 1];
                const T* A = us.spec.data() + qa * n_;
                const T* B = us.spec.data() + qb * n_;
                T* C = ls.stage.data() + v * n_;  // conj(A) B in halfcomplex order
                C[0] = A[0] * B[0];
                for (std::size_t k = 1; 2 * k < n_; ++k) {
                    const T ar = A[2 * k - 1], ai = A[2 * k], br = B[2 * k - 1], bi = B[2 * k];
                    C[2 * k - 1] = ar * br + ai * bi;
                    C[2 * k] = ar * bi - ai * br;
                }
                if (n_ % 2 == 0 && n_ > 1) C[n_ - 1] = A[n_ - 1] * B[n_ - 1];
                rc[v] = nullptr;
                if (rg_.mask) {
                    if (use_cache_) {
                        rc[v] = cached_rc(p0 + v);
                    } else {
                        const std::uint8_t *ma = us.mrow[qa], *mb = us.mrow[qb];
                        T* dst = ls.rc.data() + v * n_;
                        // Masks with many runs: batched lane FFTs below (the run-pair method is O(runs^2)).
                        if (n_ >= 64 && n_ < (std::size_t{1} << 30) && us.mruns[qa] * us.mruns[qb] > 4 * n_ + 64) {
                            if (mspec_on_ && us.mready[qa] && us.mready[qb]) {
                                spec_a[nspec] = qa;
                                spec_b[nspec] = qb;
                                spec_rc[nspec++] = dst;
                                rc[v] = dst;
                                continue;
                            }
                            pend_a[npend] = ma;
                            pend_b[npend] = mb;
                            pend_rc[npend++] = dst;
                        } else {
                            recip(ma, mb, dst, ls.cnt, ls.cs);
                        }
                        rc[v] = dst;
                    }
                }
            }
            if (npend) batch_cross_recip(pend_a, pend_b, pend_rc, npend, ls);
            if (nspec) batch_cross_spec(spec_a, spec_b, spec_rc, nspec, us, ls);
            interleave(ls.stage.data(), nl, buf);
            plan_.exec(buf, T(1), false);
            deinterleave(buf, nl, ls.stage.data());
            for (std::size_t v = 0; v < nl; ++v) {
                const std::size_t p = p0 + v;
                const std::size_t qa = q_pairs_[2 * p], qb = q_pairs_[2 * p + 1];
                const T f = us.scale[qa] * us.scale[qb] * (rc[v] ? inv_n_ : inv_n_ * c0_);
                store(ls.stage.data() + v * n_, f, rc[v], acc ? nullptr : out + (u * P_ + p) * n_,
                      acc ? acc + p * n_ : nullptr);
            }
        }
    }

    void run_cross(T* out) {
        const unsigned th = resolve_threads(opt_.n_threads);
        const std::size_t gq = (nq_ + V - 1) / V, gp = (P_ + V - 1) / V;
        if (opt_.average) {
            // Fixed blocks of units, each summed in unit order into its own partial (at most 256 MiB of partials;
            // one block: units in order, parallel inside each unit).
            const std::size_t row_bytes = P_ * n_ * sizeof(double);
            std::size_t nb = std::min<std::size_t>({U_, 32, std::max<std::size_t>(1, (std::size_t(1) << 28) / row_bytes)});
            const std::size_t ub = (U_ + nb - 1) / nb;
            nb = (U_ + ub - 1) / ub;
            n_blocks_ = nb;
            parts_.assign(nb * P_ * n_, 0.0);
            if (nb > 1) {
                parallel_for(nb, opt_.n_threads, 1, [&](std::size_t bb, std::size_t be) {
                    Lease<UnitSpace> lu{units_, lease_unit()};
                    Lease<LaneSpace<T>> ll{lanes_, lease_lanes()};
                    for (std::size_t b = bb; b < be; ++b)
                        for (std::size_t u = b * ub; u < std::min(U_, (b + 1) * ub); ++u) {
                            cross_forward(u, *lu.s, *ll.s, 0, gq);
                            cross_inverse(u, *lu.s, *ll.s, 0, gp, nullptr, parts_.data() + b * P_ * n_);
                        }
                });
                return;
            }
            Lease<UnitSpace> lu{units_, lease_unit()};
            for (std::size_t u = 0; u < U_; ++u) {
                parallel_for(gq, opt_.n_threads, 1, [&](std::size_t b, std::size_t e) {
                    Lease<LaneSpace<T>> ll{lanes_, lease_lanes()};
                    cross_forward(u, *lu.s, *ll.s, b, e);
                });
                parallel_for(gp, opt_.n_threads, 1, [&](std::size_t b, std::size_t e) {
                    Lease<LaneSpace<T>> ll{lanes_, lease_lanes()};
                    cross_inverse(u, *lu.s, *ll.s, b, e, nullptr, parts_.data());
                });
            }
            return;
        }
        if (U_ >= 2 * th || th == 1) {
            parallel_for(U_, opt_.n_threads, 1, [&](std::size_t ub, std::size_t ue) {
                Lease<UnitSpace> lu{units_, lease_unit()};
                Lease<LaneSpace<T>> ll{lanes_, lease_lanes()};
                for (std::size_t u = ub; u < ue; ++u) {
                    cross_forward(u, *lu.s, *ll.s, 0, gq);
                    cross_inverse(u, *lu.s, *ll.s, 0, gp, out, nullptr);
                }
            });
            return;
        }
        // Few units: parallel inside each unit.
        Lease<UnitSpace> lu{units_, lease_unit()};
        for (std::size_t u = 0; u < U_; ++u) {
            parallel_for(gq, opt_.n_threads, 1, [&](std::size_t b, std::size_t e) {
                Lease<LaneSpace<T>> ll{lanes_, lease_lanes()};
                cross_forward(u, *lu.s, *ll.s, b, e);
            });
            parallel_for(gp, opt_.n_threads, 1, [&](std::size_t b, std::size_t e) {
                Lease<LaneSpace<T>> ll{lanes_, lease_lanes()};
                cross_inverse(u, *lu.s, *ll.s, b, e, out, nullptr);
            });
        }
    }

    const Rings<T>& rg_;
    Options opt_;
    const std::size_t* shot_pairs_;
    std::size_t U_;
    const std::size_t* q_pairs_;
    std::size_t P_, n_, nq_, R_ = 0;
    pocketfft::detail::pocketfft_r<T> plan_;
    pocketfft::detail::pocketfft_r<double> dplan_;  // mask counts (always float64: exact, see batch_recip)
    bool shared_mask_ = false, use_cache_ = false;
    bool mspec_on_ = false;  // cross, per-unit masks, float32 counts: per-ring mask spectra (mask_spectra)
    double f32_eta_ = 0;  // float32 count transforms: normwise error bound of the passes (0: not used)
    T c0_, inv_n_;
    std::vector<T> cache_, inv_;
    std::vector<double> parts_;  // average: n_blocks_ partial sums of R x n
    std::size_t n_blocks_ = 0;
    Pool<LaneSpace<T>> lanes_;
    Pool<UnitSpace> units_;
};

// NOLINTEND
