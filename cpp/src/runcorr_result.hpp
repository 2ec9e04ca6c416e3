// Private: the pooled estimator's result pass (xcca::runcorr::pooled_result), written once for any SIMD width. It is
// included by runcorr.cpp (baseline ISA, pocketfft's own vector width), runcorr_avx2.cpp (AVX2 + FMA, 4 double lanes)
// and runcorr_avx512.cpp (AVX-512, 8 double lanes), pocketfft under another namespace name in each; the caller has
// already checked the arguments and sorted the pairs. Each lane's arithmetic is the same for every width (lane-wise
// vector operations, FMA in both the AVX2 and AVX-512 units), so the AVX2 and AVX-512 passes give the same bits.
//
// Work item (tile): up to 4 groups of V ring pairs (neighbours in accumulator order), one pair per SIMD lane. For each
// block the tile's numerator and count spectra are gathered straight into halfcomplex lane buffers, harmonic by
// harmonic for all its groups at once (prefetching ahead: the accumulator is harmonic-major), so a cache line that
// several groups need (the packed counts, see pooled_result) is read once, and inverted with one vector pocketfft call
// per group; then one pass over the lags does, for the V pairs of a group at once, the exact counts (rounded sums),
// the ratio, the leave-one-block-out replicates and the jackknife error, and writes the output rows V lags at a time
// (a V x V transpose in registers, one vector store per row). Working set per thread: 2 * B * n vectors per group
// (B = 2, n = 3600: 460 KB for V = 4, 920 KB for V = 8; the caller sizes tiles to ~1 MB, i.e. L2), no intermediate
// array of the size of the output.
//
// Every output element depends only on its pair's accumulator entries, in a fixed order of operations: results are
// bit-identical for any thread count.
#pragma once

#include <algorithm>
#include <cmath>
#include <complex>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <mutex>
#include <type_traits>

#include "xcca/threads.hpp"

namespace xcca::runcorr::detail {

template <std::size_t V>
struct VecD {
    typedef double type __attribute__((vector_size(V * sizeof(double))));
};

template <std::size_t V>
struct VecI {
    typedef std::int64_t type __attribute__((vector_size(V * sizeof(std::int64_t))));
};

/// Lane-wise square root (correctly rounded, as std::sqrt).
template <class Vd>
inline Vd vsqrt(Vd x) {
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
    // 64 bytes only in the AVX-512 and 32 only in the AVX2 translation unit (their target pragmas do not define
    // __AVX512F__ / __AVX__); SSE2 is baseline.
    if constexpr (sizeof(Vd) == 64) return __builtin_ia32_sqrtpd512_mask(x, x, 0xFF, 4);  // 4: current rounding
    if constexpr (sizeof(Vd) == 32) return __builtin_ia32_sqrtpd256(x);
    if constexpr (sizeof(Vd) == 16) return __builtin_ia32_sqrtpd(x);
#endif
    Vd r = x;
    for (std::size_t l = 0; l < sizeof(Vd) / sizeof(double); ++l) r[l] = std::sqrt(x[l]);
    return r;
}

// Two-vector shuffle with constant lane indices: GCC's __builtin_shuffle takes a mask vector, Clang's
// __builtin_shufflevector the indices themselves (GCC has the latter only from version 12).
#if defined(__clang__)
#define XCCA_SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define XCCA_SHUFFLE(a, b, ...) __builtin_shuffle(a, b, M{__VA_ARGS__})
#endif

/// Writes lags k0 .. k0 + kn - 1 of the nl lane pairs (blk[j][l]: lag k0 + j, lane l) to their output rows
/// out[pr[l] * n + k]: a full V x V block is transposed in registers and stored as one vector per row.
template <std::size_t V, class Vx, class S>
inline void store_rows(const Vx* blk, std::size_t kn, S* out, const std::size_t* pr, std::size_t nl, std::size_t n,
                       std::size_t k0) {
    static_assert(sizeof(Vx) == V * sizeof(S), "lane type");
    using M [[maybe_unused]] = typename VecI<V>::type;  // the shuffle masks' type (GCC)
    if constexpr (V == 8) {
        if (kn == 8) {
            // Three rounds of pairwise interleaves: lanes of 1, 2, then 4 values.
            Vx t[8], u[8];
            for (std::size_t i = 0; i < 8; i += 2) {
                t[i] = XCCA_SHUFFLE(blk[i], blk[i + 1], 0, 8, 2, 10, 4, 12, 6, 14);
                t[i + 1] = XCCA_SHUFFLE(blk[i], blk[i + 1], 1, 9, 3, 11, 5, 13, 7, 15);
            }
            for (std::size_t i = 0; i < 8; i += 4)
                for (std::size_t j = 0; j < 2; ++j) {
                    u[i + j] = XCCA_SHUFFLE(t[i + j], t[i + j + 2], 0, 1, 8, 9, 4, 5, 12, 13);
                    u[i + j + 2] = XCCA_SHUFFLE(t[i + j], t[i + j + 2], 2, 3, 10, 11, 6, 7, 14, 15);
                }
            Vx rows[8];
            for (std::size_t j = 0; j < 4; ++j) {
                rows[j] = XCCA_SHUFFLE(u[j], u[j + 4], 0, 1, 2, 3, 8, 9, 10, 11);
                rows[j + 4] = XCCA_SHUFFLE(u[j], u[j + 4], 4, 5, 6, 7, 12, 13, 14, 15);
            }
            for (std::size_t l = 0; l < nl; ++l) std::memcpy(out + pr[l] * n + k0, &rows[l], sizeof(Vx));
            return;
        }
    } else if constexpr (V == 4) {
        if (kn == 4) {
            const Vx t0 = XCCA_SHUFFLE(blk[0], blk[1], 0, 4, 2, 6);
            const Vx t1 = XCCA_SHUFFLE(blk[0], blk[1], 1, 5, 3, 7);
            const Vx t2 = XCCA_SHUFFLE(blk[2], blk[3], 0, 4, 2, 6);
            const Vx t3 = XCCA_SHUFFLE(blk[2], blk[3], 1, 5, 3, 7);
            const Vx rows[4] = {XCCA_SHUFFLE(t0, t2, 0, 1, 4, 5), XCCA_SHUFFLE(t1, t3, 0, 1, 4, 5),
                                XCCA_SHUFFLE(t0, t2, 2, 3, 6, 7), XCCA_SHUFFLE(t1, t3, 2, 3, 6, 7)};
            for (std::size_t l = 0; l < nl; ++l) std::memcpy(out + pr[l] * n + k0, &rows[l], sizeof(Vx));
            return;
        }
    } else if constexpr (V == 2) {
        if (kn == 2) {
            const Vx rows[2] = {XCCA_SHUFFLE(blk[0], blk[1], 0, 2), XCCA_SHUFFLE(blk[0], blk[1], 1, 3)};
            for (std::size_t l = 0; l < nl; ++l) std::memcpy(out + pr[l] * n + k0, &rows[l], sizeof(Vx));
            return;
        }
    }
    for (std::size_t l = 0; l < nl; ++l)
        for (std::size_t j = 0; j < kn; ++j) out[pr[l] * n + k0 + j] = blk[j][l];
}
#undef XCCA_SHUFFLE

/// Most groups of V lane pairs one work item (tile) gathers together.
constexpr std::size_t kMaxTile = 8;

/// Halfcomplex lanes of one accumulator for `ng` groups of V lane pairs at once: group c's lanes are at offsets
/// off[c * V + l] (sign sg[c * V + l] on the imaginary part) and go to buf + c * gstride. Walking the harmonics once
/// for all groups of a tile means every cache line the tile needs (e.g. the packed counts' lower triangle, where a
/// group's 4 lanes lie in 4 lines that the next groups of its band share) is read once per harmonic and used at once.
/// `pf`: the tile's npf distinct element offsets, sorted; each distinct cache line among them is prefetched AHEAD
/// harmonics ahead (the accumulator is harmonic-major, harmonics far apart). Which offsets share a line repeats with
/// the harmonic's alignment (period 64 / gcd(64, harmonic stride in bytes) <= 8), so the lists of one offset per line
/// are made once per call, not per harmonic.
template <class T, class Vd, std::size_t V>
inline void gather_lanes(const std::complex<T>* acc, std::size_t m2, std::size_t nh, std::size_t n, std::size_t ng,
                         const std::size_t* off, const double* sg, const std::size_t* pf, std::size_t npf, Vd* buf,
                         std::size_t gstride) {
    constexpr std::size_t AHEAD = 8, PERIOD_MAX = 8;
    Vd sgv[kMaxTile];
    for (std::size_t c = 0; c < ng; ++c)
        for (std::size_t l = 0; l < V; ++l) sgv[c][l] = sg[c * V + l];
    const std::size_t stride = m2 * sizeof(std::complex<T>);
    std::size_t period = 1;
    while (period < PERIOD_MAX && (period * stride) % 64 != 0) period *= 2;
    std::size_t lines[PERIOD_MAX][kMaxTile * V], nlines[PERIOD_MAX];
    for (std::size_t q = 0; q < period; ++q) {
        // harmonics h + AHEAD = AHEAD + q (mod period); addresses only (never dereferenced)
        const std::uintptr_t pa = reinterpret_cast<std::uintptr_t>(acc) + (AHEAD + q) * stride;
        std::uintptr_t prev = ~std::uintptr_t{0};
        nlines[q] = 0;
        for (std::size_t i = 0; i < npf; ++i) {
            const std::uintptr_t line = (pa + pf[i] * sizeof(std::complex<T>)) >> 6;
            if (line != prev) lines[q][nlines[q]++] = pf[i];
            prev = line;
        }
    }
    for (std::size_t h = 0; h < nh; ++h) {
        if (h + AHEAD < nh) {
            const std::complex<T>* pa = acc + (h + AHEAD) * m2;
            const std::size_t q = h & (period - 1);
            for (std::size_t i = 0; i < nlines[q]; ++i) __builtin_prefetch(pa + lines[q][i]);
        }
        const std::complex<T>* base = acc + h * m2;
        for (std::size_t c = 0; c < ng; ++c) {
            Vd re, im;
            for (std::size_t l = 0; l < V; ++l) {
                const std::complex<T> v = base[off[c * V + l]];
                re[l] = static_cast<double>(v.real());
                im[l] = static_cast<double>(v.imag());
            }
            Vd* b = buf + c * gstride;
            if (h == 0) {
                b[0] = re;
            } else if (2 * h < n) {
                b[2 * h - 1] = re;
                b[2 * h] = sgv[c] * im;
            } else {
                b[n - 1] = re;  // h = n / 2, n even
            }
        }
    }
}

/// The pass over the sorted pairs: group g is sorted pairs [gstart[g], gstart[g + 1]) (at most V; lanes past the end
/// repeat the last pair and are not written), `tile` consecutive groups per work item (see gather_lanes). BC: the
/// number of blocks when known at compile time (the loops over the blocks unrolled, replicates in registers: the same
/// operations in the same order), 0 for any B.
template <class T, std::size_t V, class Plan, class Arr, std::size_t BC>
double pooled_result_lanes_b(const std::complex<T>* num, const std::complex<double>* cnt, std::size_t B,
                           std::size_t nh, std::size_t nqu, std::size_t n, std::size_t ld,
                           const std::size_t* off_sorted, const double* sg_sorted, const std::size_t* offc_sorted,
                           const double* sgc_sorted, const std::size_t* order, std::size_t P,
                           const std::size_t* gstart, std::size_t G, std::size_t tile, bool jackknife, double* corr,
                           double* err, std::int64_t* counts, double* rep, int n_threads) {
    using Vd = typename VecD<V>::type;
    using Vi = typename VecI<V>::type;
    (void)nqu;
    const std::size_t m2 = ld * nqu, bstride = nh * m2;
    tile = std::max<std::size_t>(1, std::min(tile, kMaxTile));
    const std::size_t tiles = (G + tile - 1) / tile;
    const Plan plan(n);
    const double jk = B > 1 ? static_cast<double>(B - 1) / static_cast<double>(B) : 0.0;
    // x / B == x * (1 / B) exactly when B is a power of two (1 / B is exact, the product the same rounded quotient).
    const bool pow2 = (B & (B - 1)) == 0;
    const double inv_b = 1.0 / static_cast<double>(B);
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const Vd zero{}, nanv = zero + nan;
    const double scale = 1.0 / static_cast<double>(n);
    const bool do_err = err != nullptr && jackknife && B > 1;  // else err (if given) is NaN
    // Round to nearest (even) for |x| < 2^51, as std::nearbyint in the default rounding mode: counts are < 2^51.
    const double magic = 6755399441055744.0;  // 1.5 * 2^52
    std::mutex dev_mu;
    double dev_max = 0.0;
    xcca::parallel_for(tiles, n_threads, std::max<std::size_t>(1, 4 / tile), [&](std::size_t tb, std::size_t te) {
        // Group c of a tile, block b: numerator lanes at bn[(c * B + b) * n], counts at bc[(c * B + b) * n].
        const std::size_t Bk = BC ? BC : B;
        Arr bn(tile * B * n), bc(tile * B * n), rbuf(BC ? 0 : B);
        Vd Rloc[BC ? BC : 1];
        Vd* R = BC ? Rloc : rbuf.data();
        Vd dev{};
        std::size_t off[kMaxTile * V], offc[kMaxTile * V], pr[kMaxTile * V], nls[kMaxTile];
        std::size_t pf[kMaxTile * V], pfc[kMaxTile * V];
        double sg[kMaxTile * V], sgc[kMaxTile * V];
        for (std::size_t t = tb; t < te; ++t) {
            const std::size_t g0 = t * tile, ng = std::min(tile, G - g0);
            for (std::size_t c = 0; c < ng; ++c) {
                const std::size_t p0 = gstart[g0 + c], nl = gstart[g0 + c + 1] - p0;
                nls[c] = nl;
                for (std::size_t l = 0; l < V; ++l) {
                    const std::size_t i = p0 + std::min(l, nl - 1);
                    off[c * V + l] = off_sorted[i];
                    sg[c * V + l] = sg_sorted[i];
                    offc[c * V + l] = offc_sorted[i];
                    sgc[c * V + l] = sgc_sorted[i];
                    pr[c * V + l] = order[i];
                }
            }
            std::copy(off, off + ng * V, pf);
            std::sort(pf, pf + ng * V);
            const std::size_t npf = static_cast<std::size_t>(std::unique(pf, pf + ng * V) - pf);
            std::copy(offc, offc + ng * V, pfc);
            std::sort(pfc, pfc + ng * V);
            const std::size_t npfc = static_cast<std::size_t>(std::unique(pfc, pfc + ng * V) - pfc);
            for (std::size_t b = 0; b < B; ++b) {
                gather_lanes<T, Vd, V>(num + b * bstride, m2, nh, n, ng, off, sg, pf, npf, bn.data() + b * n, B * n);
                gather_lanes<double, Vd, V>(cnt + b * bstride, m2, nh, n, ng, offc, sgc, pfc, npfc, bc.data() + b * n,
                                            B * n);
            }
            for (std::size_t c = 0; c < ng; ++c) {
                Vd* N = bn.data() + c * B * n;
                Vd* C = bc.data() + c * B * n;
                // A group's transforms right before its pass over the lags: its 2 B n vectors are still in L2 then.
                for (std::size_t b = 0; b < Bk; ++b) {
                    plan.exec(N + b * n, scale, false);
                    plan.exec(C + b * n, scale, false);
                }
                const std::size_t nl = nls[c];
                const std::size_t* prc = pr + c * V;
                // Lags in blocks of V: the V x V values of a block (lanes = pairs) are transposed and stored as one
                // vector per output row (instead of one scalar per pair and lag).
                for (std::size_t k0 = 0; k0 < n; k0 += V) {
                    const std::size_t kn = std::min(V, n - k0);
                    Vd Qb[V], Eb[V];
                    Vi Cb[V];
                    for (std::size_t j = 0; j < kn; ++j) {
                        const std::size_t k = k0 + j;
                        Vd tn = N[k], cv = C[k];
                        Vd r = (cv + magic) - magic;
                        Vd d = cv - r;
                        dev = dev > d ? dev : d;
                        dev = dev > -d ? dev : -d;
                        C[k] = r;
                        Vd tc = r;
                        for (std::size_t b = 1; b < Bk; ++b) {
                            tn += N[b * n + k];
                            cv = C[b * n + k];
                            r = (cv + magic) - magic;
                            d = cv - r;
                            dev = dev > d ? dev : d;
                            dev = dev > -d ? dev : -d;
                            C[b * n + k] = r;
                            tc += r;
                        }
                        const Vd q = tn / tc;
                        Qb[j] = tc > zero ? q : nanv;
                        Cb[j] = __builtin_convertvector(tc, Vi);
                        Eb[j] = nanv;
                        if (rep == nullptr && !do_err) continue;
                        Vd mean{};
                        for (std::size_t b = 0; b < Bk; ++b) {
                            const Vd dc = tc - C[b * n + k];
                            const Vd rv = (tn - N[b * n + k]) / dc;
                            const Vd x = dc > zero ? rv : nanv;
                            R[b] = x;
                            if (rep != nullptr)
                                for (std::size_t l = 0; l < nl; ++l) rep[(b * P + prc[l]) * n + k] = x[l];
                            mean += x;
                        }
                        if (!do_err) continue;
                        if (pow2)
                            mean *= inv_b;  // the same value as mean / B, without a division
                        else
                            mean /= static_cast<double>(Bk);
                        Vd ss{};
                        for (std::size_t b = 0; b < Bk; ++b) {
                            const Vd dd = R[b] - mean;
                            ss += dd * dd;
                        }
                        Eb[j] = vsqrt(ss * jk);
                    }
                    store_rows<V>(Qb, kn, corr, prc, nl, n, k0);
                    store_rows<V>(Cb, kn, counts, prc, nl, n, k0);
                    if (err != nullptr) store_rows<V>(Eb, kn, err, prc, nl, n, k0);
                }
            }
        }
        double dm = 0.0;
        for (std::size_t l = 0; l < V; ++l) dm = std::max(dm, dev[l]);
        std::lock_guard<std::mutex> lock(dev_mu);
        dev_max = std::max(dev_max, dm);
    });
    return dev_max;
}

/// pooled_result_lanes_b for the block counts of common use compiled as constants (see there).
template <class T, std::size_t V, class Plan, class Arr>
double pooled_result_lanes(const std::complex<T>* num, const std::complex<double>* cnt, std::size_t B,
                           std::size_t nh, std::size_t nqu, std::size_t n, std::size_t ld,
                           const std::size_t* off_sorted, const double* sg_sorted, const std::size_t* offc_sorted,
                           const double* sgc_sorted, const std::size_t* order, std::size_t P,
                           const std::size_t* gstart, std::size_t G, std::size_t tile, bool jackknife, double* corr,
                           double* err, std::int64_t* counts, double* rep, int n_threads) {
    auto run = [&](auto bc) {
        return pooled_result_lanes_b<T, V, Plan, Arr, decltype(bc)::value>(
            num, cnt, B, nh, nqu, n, ld, off_sorted, sg_sorted, offc_sorted, sgc_sorted, order, P, gstart, G, tile,
            jackknife, corr, err, counts, rep, n_threads);
    };
    if (B == 1) return run(std::integral_constant<std::size_t, 1>{});
    if (B == 2) return run(std::integral_constant<std::size_t, 2>{});
    return run(std::integral_constant<std::size_t, 0>{});
}

}  // namespace xcca::runcorr::detail
