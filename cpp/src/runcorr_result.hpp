// Private: the pooled estimator's result pass (xcca::runcorr::pooled_result), written once for any SIMD width. It is
// included by runcorr.cpp (baseline ISA, pocketfft's own vector width) and runcorr_avx2.cpp (AVX2 + FMA, 4 double
// lanes, pocketfft under another namespace name); the caller has already checked the arguments and sorted the pairs.
//
// Work item: V ring pairs (neighbours in accumulator order), one per SIMD lane. For each block their numerator and
// count spectra are gathered straight into halfcomplex lane buffers (harmonic by harmonic, prefetching ahead: the
// accumulator is harmonic-major) and inverted with one vector pocketfft call each; then one pass over the lags does,
// for the V pairs at once, the exact counts (rounded sums), the ratio, the leave-one-block-out replicates and the
// jackknife error, and writes the output rows. Working set per thread: 2 * B * n vectors (B = 2, n = 3600, V = 4:
// 460 KB, i.e. L2), no intermediate array of the size of the output.
//
// Every output element depends only on its pair's accumulator entries, in a fixed order of operations: results are
// bit-identical for any thread count.
#pragma once

#include <algorithm>
#include <cmath>
#include <complex>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <mutex>

#include "xcca/threads.hpp"

namespace xcca::runcorr::detail {

template <std::size_t V>
struct VecD {
    typedef double type __attribute__((vector_size(V * sizeof(double))));
};

/// Halfcomplex lanes of one accumulator for the lane pairs at offsets off[l] (sign sg[l] on the imaginary part).
/// `strided`: the lanes' offsets are not neighbours (the packed counts' lower triangle), prefetch each one.
template <class T, class Vd, std::size_t V>
inline void gather_lanes(const std::complex<T>* acc, std::size_t m2, std::size_t nh, std::size_t n,
                         const std::size_t* off, const double* sg, bool strided, Vd* buf) {
    constexpr std::size_t AHEAD = 8;
    const std::size_t lo = off[0], hi = off[V - 1];
    Vd sgv{};
    for (std::size_t l = 0; l < V; ++l) sgv[l] = sg[l];
    for (std::size_t h = 0; h < nh; ++h) {
        if (h + AHEAD < nh) {
            const std::complex<T>* pa = acc + (h + AHEAD) * m2;
            if (strided) {
                for (std::size_t l = 0; l < V; ++l) __builtin_prefetch(pa + off[l]);
            } else {
                __builtin_prefetch(pa + lo);
                if (hi != lo) __builtin_prefetch(pa + hi);
            }
        }
        const std::complex<T>* base = acc + h * m2;
        Vd re, im;
        for (std::size_t l = 0; l < V; ++l) {
            const std::complex<T> v = base[off[l]];
            re[l] = static_cast<double>(v.real());
            im[l] = static_cast<double>(v.imag());
        }
        if (h == 0) {
            buf[0] = re;
        } else if (2 * h < n) {
            buf[2 * h - 1] = re;
            buf[2 * h] = sgv * im;
        } else {
            buf[n - 1] = re;  // h = n / 2, n even
        }
    }
}

template <class T, std::size_t V, class Plan, class Arr>
double pooled_result_lanes(const std::complex<T>* num, const std::complex<double>* cnt, std::size_t B,
                           std::size_t nh, std::size_t nqu, std::size_t n, std::size_t ld,
                           const std::size_t* off_sorted, const double* sg_sorted, const std::size_t* offc_sorted,
                           const double* sgc_sorted, bool cnt_strided, const std::size_t* order, std::size_t P,
                           bool jackknife, double* corr, double* err, std::int64_t* counts, double* rep,
                           int n_threads) {
    using Vd = typename VecD<V>::type;
    const std::size_t m2 = ld * nqu, bstride = nh * m2;
    const std::size_t groups = (P + V - 1) / V;
    const Plan plan(n);
    const double jk = B > 1 ? static_cast<double>(B - 1) / static_cast<double>(B) : 0.0;
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const double scale = 1.0 / static_cast<double>(n);
    const bool do_err = err != nullptr && jackknife && B > 1;  // else err (if given) is NaN
    // Round to nearest (even) for |x| < 2^51, as std::nearbyint in the default rounding mode: counts are < 2^51.
    const double magic = 6755399441055744.0;  // 1.5 * 2^52
    std::mutex dev_mu;
    double dev_max = 0.0;
    xcca::parallel_for(groups, n_threads, 4, [&](std::size_t gb, std::size_t ge) {
        Arr bn(B * n), bc(B * n), rbuf(B);
        Vd* R = rbuf.data();
        Vd* N = bn.data();
        Vd* C = bc.data();
        Vd dev{};
        std::size_t off[V], offc[V], pr[V];
        double sg[V], sgc[V];
        for (std::size_t g = gb; g < ge; ++g) {
            const std::size_t p0 = g * V, nl = std::min(V, P - p0);
            for (std::size_t l = 0; l < V; ++l) {
                const std::size_t i = p0 + std::min(l, nl - 1);
                off[l] = off_sorted[i];
                sg[l] = sg_sorted[i];
                offc[l] = offc_sorted[i];
                sgc[l] = sgc_sorted[i];
                pr[l] = order[i];
            }
            for (std::size_t b = 0; b < B; ++b) {
                gather_lanes<T, Vd, V>(num + b * bstride, m2, nh, n, off, sg, false, N + b * n);  // neighbours in both layouts
                plan.exec(N + b * n, scale, false);
                gather_lanes<double, Vd, V>(cnt + b * bstride, m2, nh, n, offc, sgc, cnt_strided, C + b * n);
                plan.exec(C + b * n, scale, false);
            }
            for (std::size_t k = 0; k < n; ++k) {
                Vd tn = N[k], c = C[k];
                Vd r = (c + magic) - magic;
                Vd d = c - r;
                dev = dev > d ? dev : d;
                dev = dev > -d ? dev : -d;
                C[k] = r;
                Vd tc = r;
                for (std::size_t b = 1; b < B; ++b) {
                    tn += N[b * n + k];
                    c = C[b * n + k];
                    r = (c + magic) - magic;
                    d = c - r;
                    dev = dev > d ? dev : d;
                    dev = dev > -d ? dev : -d;
                    C[b * n + k] = r;
                    tc += r;
                }
                const Vd q = tn / tc;
                for (std::size_t l = 0; l < nl; ++l) {
                    corr[pr[l] * n + k] = tc[l] > 0 ? q[l] : nan;
                    counts[pr[l] * n + k] = static_cast<std::int64_t>(tc[l]);
                }
                if (err != nullptr && !do_err)
                    for (std::size_t l = 0; l < nl; ++l) err[pr[l] * n + k] = nan;
                if (rep == nullptr && !do_err) continue;
                Vd mean{};
                for (std::size_t b = 0; b < B; ++b) {
                    const Vd dc = tc - C[b * n + k];
                    const Vd rv = (tn - N[b * n + k]) / dc;
                    Vd x{};
                    for (std::size_t l = 0; l < V; ++l) x[l] = dc[l] > 0 ? rv[l] : nan;
                    R[b] = x;
                    if (rep != nullptr)
                        for (std::size_t l = 0; l < nl; ++l) rep[(b * P + pr[l]) * n + k] = x[l];
                    mean += x;
                }
                if (!do_err) continue;
                mean /= static_cast<double>(B);
                Vd ss{};
                for (std::size_t b = 0; b < B; ++b) {
                    const Vd d = R[b] - mean;
                    ss += d * d;
                }
                for (std::size_t l = 0; l < nl; ++l) err[pr[l] * n + k] = std::sqrt(ss[l] * jk);
            }
        }
        double dm = 0.0;
        for (std::size_t l = 0; l < V; ++l) dm = std::max(dm, dev[l]);
        std::lock_guard<std::mutex> lock(dev_mu);
        dev_max = std::max(dev_max, dm);
    });
    return dev_max;
}

}  // namespace xcca::runcorr::detail
