#include "xcca/polar.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>

#include "xcca/threads.hpp"
#include "cpu_features.hpp"

#if defined(__GNUC__) && defined(__x86_64__) && !defined(XCCA_NO_SIMD)
#include <immintrin.h>

#include "simd512.hpp"
#endif
#include <type_traits>

// Coordinates must round exactly as written (x = cx + r*cos, no fused multiply-add) so that every code path and the
// NumPy specification pick the same pixels; GCC contracts to FMA by default whenever FMA is enabled (-march=native,
// AVX-512 targets).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#elif defined(__clang__)
#pragma clang fp contract(off)
#endif

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(XCCA_NO_CLONES)
// Portable wheels: an AVX2 clone of the hot loops (inline floor, wider vectors) chosen at load time.
#define XCCA_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define XCCA_CLONES
#endif

#include "sampling.hpp"  // after the pragma: the shared rules are compiled without FMA too

namespace xcca::polar {

namespace {

using sampling::nearest_index;
using sampling::sample_bilinear;
using sampling::split;

constexpr double two_pi = 6.283185307179586476925286766559;

// Prefetch of element k of the array at base. The address is formed as an integer: the offsets only steer
// prefetches, may be approximate, and a prefetch never faults. always_inline: it is called from loops compiled with
// other target/optimize attributes, where a call per prefetch would cost more than the prefetch.
template <class T>
__attribute__((always_inline)) inline void prefetch_elem(const T* base, std::int32_t k) {
    __builtin_prefetch(reinterpret_cast<const char*>(reinterpret_cast<std::uintptr_t>(base) +
                                                     static_cast<std::intptr_t>(k) * std::intptr_t(sizeof(T))));
}

struct Geometry {
    double cx, cy, W, H;  // W, H as doubles for the range checks
    std::ptrdiff_t w, h;
};

// Non-temporal stores are allowed in the byte range [lo, hi) of the output: whole 64-byte lines of the current tile
// row (see PolarGrid::remap). Empty (lo == hi): ordinary stores only.
struct Stream {
    std::uintptr_t lo = 0, hi = 0;
    // Whether the n bytes at a lie inside [lo, hi).
    bool covers(std::uintptr_t a, std::uintptr_t n) const { return a >= lo && a + n <= hi; }
};

// Per-angle prefetch offsets (pixels) for the image and the mask, already advanced to the current angle; null: none.
// `stream`: where output may be written with non-temporal stores.
struct Prefetch {
    const std::int32_t* img = nullptr;
    const std::int32_t* mask = nullptr;
    Stream stream;
    Prefetch shifted(std::size_t j) const { return {img ? img + j : img, mask ? mask + j : mask, stream}; }
};

// float32 geometry of the exact nearest fast path (nearest_interior_f32).
struct Fast32 {
    const float* cs = nullptr;  // float(cos(phi_j)), float(sin(phi_j)), already advanced to the tile's first angle
    const float* sn = nullptr;
    float cx = 0.f, cy = 0.f;
    float lim = 0.f;  // 0.5 - eps, rounded down
};

// Interior bilinear sample: 0 <= x < W-1 and 0 <= y < H-1, so all of the 2x2 block at (floor(y), floor(x)) is inside
// the image (the fast loops may read it whole). Samples on the last row/column take the general path.
inline bool bilinear_interior(const Geometry& g, double x, double y) {
    return x >= 0.0 && x < g.W - 1.0 && y >= 0.0 && y < g.H - 1.0;
}
inline bool nearest_inside(const Geometry& g, double x, double y) {
    return x >= -0.5 && x < g.W - 0.5 && y >= -0.5 && y < g.H - 0.5;
}
// Mask pass of the vectorised interior loops (which compute every lane as if all pixels were valid): okbits bit q
// says whether every pixel lane q uses is valid. The other lanes are redone by the general path (fill in strict
// mode, renormalised weights otherwise).
template <class In, class Out>
inline void mask_lanes_bilinear(int lanes, unsigned okbits, const Geometry& g, double r, const double* cs,
                                const double* sn, const In* img, std::ptrdiff_t rs, const std::uint8_t* mask,
                                MaskMode mode, Out fill, Out* o, std::uint8_t* om) {
    for (int q = 0; q < lanes; ++q) {
        bool ok = (okbits >> q) & 1u;
        if (!ok && mode == MaskMode::strict) {
            o[q] = fill;  // an invalid used pixel: nothing more to compute
        } else if (!ok) {
            double v = 0.0;
            ok = sample_bilinear<In, true>(g, g.cx + r * cs[q], g.cy + r * sn[q], img, rs, mask, mode, v);
            o[q] = ok ? static_cast<Out>(v) : fill;
        }
        if (om) om[q] = ok;
    }
}
template <class Out>
inline void mask_lanes_nearest(int lanes, unsigned okbits, Out fill, Out* o, std::uint8_t* om) {
    for (int q = 0; q < lanes; ++q) {
        const bool ok = (okbits >> q) & 1u;
        if (!ok) o[q] = fill;
        if (om) om[q] = ok;
    }
}

#if defined(__GNUC__) && defined(__x86_64__) && !defined(XCCA_NO_SIMD)
#define XCCA_AVX2 1
// AVX2 versions of the two hot interior loops (float/double/int32 pixels), chosen at run time. They perform the
// same double-precision operations in the same order as the scalar loops (no FMA), so results are bit-identical.
#define XCCA_TARGET_AVX2 __attribute__((target("avx2")))
// GCC 12's intrinsic headers trip -Wmaybe-uninitialized inside target()-attributed functions (false positives).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

bool has_avx2() { return xcca::detail::cpu_has_avx2(); }

XCCA_TARGET_AVX2 inline __m256d gather4(const float* p, __m128i idx) {
    // The masked form with an explicit zero source: the plain one trips GCC 12's -Wmaybe-uninitialized.
    return _mm256_cvtps_pd(_mm_mask_i32gather_ps(_mm_setzero_ps(), p, idx, _mm_castsi128_ps(_mm_set1_epi32(-1)), 4));
}
XCCA_TARGET_AVX2 inline __m256d gather4(const double* p, __m128i idx) {
    return _mm256_mask_i32gather_pd(_mm256_setzero_pd(), p, idx, _mm256_castsi256_pd(_mm256_set1_epi64x(-1)), 8);
}
// (img[idx_k], img[idx_k + 1]) for k = 0..3, widened to double: left pixels in a, right pixels in b.
XCCA_TARGET_AVX2 inline void gather_pairs(const float* img, __m128i idx, __m256d& a, __m256d& b) {
    const __m256i v = _mm256_mask_i32gather_epi64(_mm256_setzero_si256(), reinterpret_cast<const long long*>(img),
                                                  idx, _mm256_set1_epi64x(-1), 4);
    const __m256 f = _mm256_permutevar8x32_ps(_mm256_castsi256_ps(v), _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
    a = _mm256_cvtps_pd(_mm256_castps256_ps128(f));
    b = _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1));
}
XCCA_TARGET_AVX2 inline __m256d gather4(const std::int32_t* p, __m128i idx) {
    return _mm256_cvtepi32_pd(
        _mm_mask_i32gather_epi32(_mm_setzero_si128(), reinterpret_cast<const int*>(p), idx, _mm_set1_epi32(-1), 4));
}
XCCA_TARGET_AVX2 inline void gather_pairs(const std::int32_t* img, __m128i idx, __m256d& a, __m256d& b) {
    const __m256i v = _mm256_mask_i32gather_epi64(_mm256_setzero_si256(), reinterpret_cast<const long long*>(img),
                                                  idx, _mm256_set1_epi64x(-1), 4);
    const __m256i f = _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
    a = _mm256_cvtepi32_pd(_mm256_castsi256_si128(f));
    b = _mm256_cvtepi32_pd(_mm256_extracti128_si256(f, 1));
}
// uint16 pixels: a 32-bit gather at pixel k reads the horizontal pair (k, k+1); a single pixel k is read as the
// pair (k-1, k) (or (0, 1) for k = 0) and shifted, so nothing past the image is read (needs W >= 2, rows > 0).
XCCA_TARGET_AVX2 inline void gather_pairs(const std::uint16_t* img, __m128i idx, __m256d& a, __m256d& b) {
    const __m128i v =
        _mm_mask_i32gather_epi32(_mm_setzero_si128(), reinterpret_cast<const int*>(img), idx, _mm_set1_epi32(-1), 2);
    a = _mm256_cvtepi32_pd(_mm_and_si128(v, _mm_set1_epi32(0xffff)));
    b = _mm256_cvtepi32_pd(_mm_srli_epi32(v, 16));
}
XCCA_TARGET_AVX2 inline __m256d gather4(const std::uint16_t* p, __m128i idx) {
    const __m128i a = _mm_max_epi32(_mm_sub_epi32(idx, _mm_set1_epi32(1)), _mm_setzero_si128());
    const __m128i v =
        _mm_mask_i32gather_epi32(_mm_setzero_si128(), reinterpret_cast<const int*>(p), a, _mm_set1_epi32(-1), 2);
    return _mm256_cvtepi32_pd(
        _mm_and_si128(_mm_srlv_epi32(v, _mm_slli_epi32(_mm_sub_epi32(idx, a), 4)), _mm_set1_epi32(0xffff)));
}
XCCA_TARGET_AVX2 inline void store4(float* o, __m256d v) { _mm_storeu_ps(o, _mm256_cvtpd_ps(v)); }
XCCA_TARGET_AVX2 inline void store4(double* o, __m256d v) { _mm256_storeu_pd(o, v); }

// Software prefetch of the pixels that the row pf_dist radii further out will read at these angles: the ring walk
// jumps between image rows, which hardware prefetchers do not follow. `pf` holds per-angle offsets (in pixels) from
// this row's pixel to that row's; they only steer prefetches, so they may be approximate (and the addresses are
// formed as integers: a prefetch never faults).
// Step: prefetch every Step-th lane only. Bilinear prefetches every lane; nearest every other one (measured on the
// benchmark, AVX-512, 1 thread: nearest 6.0 -> 5.7 ms with every other lane, worse with one lane in four; bilinear
// 9.7 -> 10.2 ms with every other lane, 12 ms with one in four).
template <int Step = 1, class In>
XCCA_TARGET_AVX2 inline void prefetch4(const In* img, __m128i idx) {
    alignas(16) int k[4];
    _mm_store_si128(reinterpret_cast<__m128i*>(k), idx);
    for (int q = 0; q < 4; q += Step)
        prefetch_elem(img, k[q]);
}

// Mask checks on 32-bit gathers of mask bytes (scale 1). Interior bilinear samples have their 2x2 block inside, so
// the top pair is read as bytes [m, m+3] and the bottom pair as [m+W-2, m+W+1] (bytes 2, 3): never past the mask.
// Nearest reads [a, a+3] with a = max(m-3, 0) and shifts byte m down (needs H*W >= 4).
XCCA_TARGET_AVX2 inline unsigned mask_ok4_bilinear(const std::uint8_t* mask, __m128i mi, __m128i w, __m128i right,
                                                   __m128i down) {
    const int* base = reinterpret_cast<const int*>(mask);
    const __m128i zero = _mm_setzero_si128();
    const __m128i top = _mm_mask_i32gather_epi32(zero, base, mi, _mm_set1_epi32(-1), 1);
    const __m128i bot =
        _mm_mask_i32gather_epi32(zero, base, _mm_add_epi32(mi, _mm_sub_epi32(w, _mm_set1_epi32(2))), _mm_set1_epi32(-1), 1);
    auto is_zero = [&](__m128i v, int m) { return _mm_cmpeq_epi32(_mm_and_si128(v, _mm_set1_epi32(m)), zero); };
    __m128i bad = _mm_or_si128(is_zero(top, 0xff), _mm_and_si128(right, is_zero(top, 0xff00)));
    const __m128i badb = _mm_or_si128(is_zero(bot, 0xff0000), _mm_and_si128(right, is_zero(bot, int(0xff000000u))));
    bad = _mm_or_si128(bad, _mm_and_si128(down, badb));
    return ~static_cast<unsigned>(_mm_movemask_ps(_mm_castsi128_ps(bad))) & 0xfu;
}
XCCA_TARGET_AVX2 inline unsigned mask_ok4_nearest(const std::uint8_t* mask, __m128i mi) {
    const __m128i a = _mm_max_epi32(_mm_sub_epi32(mi, _mm_set1_epi32(3)), _mm_setzero_si128());
    const __m128i v = _mm_srlv_epi32(
        _mm_mask_i32gather_epi32(_mm_setzero_si128(), reinterpret_cast<const int*>(mask), a, _mm_set1_epi32(-1), 1),
        _mm_slli_epi32(_mm_sub_epi32(mi, a), 3));
    const __m128i bad = _mm_cmpeq_epi32(_mm_and_si128(v, _mm_set1_epi32(0xff)), _mm_setzero_si128());
    return ~static_cast<unsigned>(_mm_movemask_ps(_mm_castsi128_ps(bad))) & 0xfu;
}

// Interior samples j in [0, n - n % 4); returns how many were done. Needs every pixel offset to fit in int32.
template <class In, class Out, bool HasMask>
XCCA_TARGET_AVX2 std::size_t bilinear_interior_avx2(const Geometry& g, double r, const double* cs, const double* sn,
                                                     std::size_t n, const In* img, std::ptrdiff_t rs, Out* o,
                                                     Prefetch pf, const std::uint8_t* mask, MaskMode mode,
                                                     Out fill, std::uint8_t* om) {
    const __m256d vcx = _mm256_set1_pd(g.cx), vcy = _mm256_set1_pd(g.cy), vr = _mm256_set1_pd(r);
    const __m256d one = _mm256_set1_pd(1.0), zero = _mm256_setzero_pd();
    const __m128i vrs = _mm_set1_epi32(static_cast<int>(rs)), vw = _mm_set1_epi32(static_cast<int>(g.w));
    std::size_t j = 0;
    for (; j + 4 <= n; j += 4) {
        const __m256d x = _mm256_add_pd(vcx, _mm256_mul_pd(vr, _mm256_loadu_pd(cs + j)));
        const __m256d y = _mm256_add_pd(vcy, _mm256_mul_pd(vr, _mm256_loadu_pd(sn + j)));
        const __m256d x0 = _mm256_floor_pd(x), y0 = _mm256_floor_pd(y);
        const __m256d fx = _mm256_sub_pd(x, x0), fy = _mm256_sub_pd(y, y0);
        const __m128i ix = _mm256_cvttpd_epi32(x0), iy = _mm256_cvttpd_epi32(y0);
        const __m128i dx = _mm256_cvttpd_epi32(_mm256_and_pd(_mm256_cmp_pd(fx, zero, _CMP_GT_OQ), one));
        const __m128i dyb = _mm256_cvttpd_epi32(_mm256_and_pd(_mm256_cmp_pd(fy, zero, _CMP_GT_OQ), one));
        const __m128i dy = _mm_mullo_epi32(dyb, vrs);
        const __m128i i00 = _mm_add_epi32(_mm_mullo_epi32(iy, vrs), ix);
        if (pf.img) prefetch4(img, _mm_add_epi32(i00, _mm_loadu_si128(reinterpret_cast<const __m128i*>(pf.img + j))));
        const __m128i i10 = _mm_add_epi32(i00, dy);
        __m256d p00, p01, p10, p11;
        if constexpr (std::is_same_v<In, float> || std::is_same_v<In, std::int32_t> ||
                      std::is_same_v<In, std::uint16_t>) {
            // Two gathers of horizontal pixel pairs instead of four; the right pixel is used only where
            // fx > 0 (else it aliases the left one, as in the scalar loop). The strict interior test guarantees
            // the pair is inside the image.
            const __m256d use_right = _mm256_cmp_pd(fx, zero, _CMP_GT_OQ);
            gather_pairs(img, i00, p00, p01);
            gather_pairs(img, i10, p10, p11);
            p01 = _mm256_blendv_pd(p00, p01, use_right);
            p11 = _mm256_blendv_pd(p10, p11, use_right);
            (void)dx;
        } else {
            p00 = gather4(img, i00);
            p01 = gather4(img, _mm_add_epi32(i00, dx));
            p10 = gather4(img, i10);
            p11 = gather4(img, _mm_add_epi32(i10, dx));
        }
        const __m256d wx0 = _mm256_sub_pd(one, fx), wy0 = _mm256_sub_pd(one, fy);
        const __m256d top = _mm256_add_pd(_mm256_mul_pd(wx0, p00), _mm256_mul_pd(fx, p01));
        const __m256d bot = _mm256_add_pd(_mm256_mul_pd(wx0, p10), _mm256_mul_pd(fx, p11));
        store4(o + j, _mm256_add_pd(_mm256_mul_pd(wy0, top), _mm256_mul_pd(fy, bot)));
        if constexpr (HasMask) {
            const __m128i mi = _mm_add_epi32(_mm_mullo_epi32(iy, vw), ix);
            if (pf.mask)
                prefetch4(mask, _mm_add_epi32(mi, _mm_loadu_si128(reinterpret_cast<const __m128i*>(pf.mask + j))));
            const unsigned ok = mask_ok4_bilinear(mask, mi, vw,
                                                  _mm_sub_epi32(_mm_setzero_si128(), dx),
                                                  _mm_sub_epi32(_mm_setzero_si128(), dyb));
            if (ok == 0xfu) {
                if (om) std::memset(om + j, 1, 4);
            } else {
                mask_lanes_bilinear<In, Out>(4, ok, g, r, cs + j, sn + j, img, rs, mask, mode, fill, o + j,
                                             om ? om + j : nullptr);
            }
        }
    }
    return j;
}

template <class In, class Out, bool HasMask>
XCCA_TARGET_AVX2 std::size_t nearest_interior_avx2(const Geometry& g, double r, const double* cs, const double* sn,
                                                    std::size_t n, const In* img, std::ptrdiff_t rs, Out* o,
                                                    Prefetch pf, const std::uint8_t* mask, Out fill,
                                                    std::uint8_t* om) {
    const __m256d vcx = _mm256_set1_pd(g.cx), vcy = _mm256_set1_pd(g.cy), vr = _mm256_set1_pd(r);
    const __m256d one = _mm256_set1_pd(1.0), half = _mm256_set1_pd(0.5);
    const __m128i vrs = _mm_set1_epi32(static_cast<int>(rs)), vw = _mm_set1_epi32(static_cast<int>(g.w));
    std::size_t j = 0;
    for (; j + 4 <= n; j += 4) {
        const __m256d x = _mm256_add_pd(vcx, _mm256_mul_pd(vr, _mm256_loadu_pd(cs + j)));
        const __m256d y = _mm256_add_pd(vcy, _mm256_mul_pd(vr, _mm256_loadu_pd(sn + j)));
        const __m256d x0 = _mm256_floor_pd(x), y0 = _mm256_floor_pd(y);
        // floor(x) + [x - floor(x) >= 0.5], exactly as nearest_index (x + 0.5 could round up wrongly).
        const __m256d xn = _mm256_add_pd(x0, _mm256_and_pd(_mm256_cmp_pd(_mm256_sub_pd(x, x0), half, _CMP_GE_OQ), one));
        const __m256d yn = _mm256_add_pd(y0, _mm256_and_pd(_mm256_cmp_pd(_mm256_sub_pd(y, y0), half, _CMP_GE_OQ), one));
        const __m128i ixn = _mm256_cvttpd_epi32(xn), iyn = _mm256_cvttpd_epi32(yn);
        const __m128i idx = _mm_add_epi32(_mm_mullo_epi32(iyn, vrs), ixn);
        if (pf.img) prefetch4<2>(img, _mm_add_epi32(idx, _mm_loadu_si128(reinterpret_cast<const __m128i*>(pf.img + j))));
        store4(o + j, gather4(img, idx));
        if constexpr (HasMask) {
            const __m128i mi = _mm_add_epi32(_mm_mullo_epi32(iyn, vw), ixn);
            if (pf.mask)
                prefetch4<2>(mask, _mm_add_epi32(mi, _mm_loadu_si128(reinterpret_cast<const __m128i*>(pf.mask + j))));
            const unsigned ok = mask_ok4_nearest(mask, mi);
            if (ok == 0xfu) {
                if (om) std::memset(om + j, 1, 4);
            } else {
                mask_lanes_nearest<Out>(4, ok, fill, o + j, om ? om + j : nullptr);
            }
        }
    }
    return j;
}

// AVX-512 (8 lanes) versions for float/int32/uint16 pixels, same operations in the same order. fp-contract=off: AVX-512 implies
// FMA, and a fused multiply-add would change the coordinates' rounding.
#define XCCA_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512dq"), optimize("fp-contract=off")))

bool has_avx512() { return xcca::detail::cpu_has_avx512(); }

using simd512::pairs8;
using simd512::widen8;

template <int Step = 1, class T>
XCCA_TARGET_AVX512 inline void prefetch8(const T* img, __m256i idx) {
    alignas(32) int k[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(k), idx);
    for (int q = 0; q < 8; q += Step)
        prefetch_elem(img, k[q]);
}

XCCA_TARGET_AVX512 inline unsigned mask_ok8_bilinear(const std::uint8_t* mask, __m256i mi, __m256i w, __mmask8 right,
                                                     __mmask8 down) {
    const int* base = reinterpret_cast<const int*>(mask);
    const __m256i top = _mm256_mmask_i32gather_epi32(_mm256_setzero_si256(), 0xff, mi, base, 1);
    const __m256i bot = _mm256_mmask_i32gather_epi32(
        _mm256_setzero_si256(), 0xff, _mm256_add_epi32(mi, _mm256_sub_epi32(w, _mm256_set1_epi32(2))), base, 1);
    __mmask8 ok = _mm256_test_epi32_mask(top, _mm256_set1_epi32(0xff));
    ok &= static_cast<__mmask8>(~right | _mm256_test_epi32_mask(top, _mm256_set1_epi32(0xff00)));
    __mmask8 okb = _mm256_test_epi32_mask(bot, _mm256_set1_epi32(0xff0000));
    okb &= static_cast<__mmask8>(~right | _mm256_test_epi32_mask(bot, _mm256_set1_epi32(int(0xff000000u))));
    ok &= static_cast<__mmask8>(~down | okb);
    return ok;
}
XCCA_TARGET_AVX512 inline unsigned mask_ok8_nearest(const std::uint8_t* mask, __m256i mi) {
    const __m256i a = _mm256_max_epi32(_mm256_sub_epi32(mi, _mm256_set1_epi32(3)), _mm256_setzero_si256());
    const __m256i v = _mm256_srlv_epi32(
        _mm256_mmask_i32gather_epi32(_mm256_setzero_si256(), 0xff, a, reinterpret_cast<const int*>(mask), 1),
        _mm256_slli_epi32(_mm256_sub_epi32(mi, a), 3));
    return _mm256_test_epi32_mask(v, _mm256_set1_epi32(0xff));
}

// Eight floats: each aligned 16-byte half inside the stream window is written non-temporally (consecutive halves of a
// tile row fill whole lines in the write-combining buffers), the rest with ordinary stores.
XCCA_TARGET_AVX512 inline void st8f(float* o, __m256 v, const Stream& s) {
    const std::uintptr_t a = reinterpret_cast<std::uintptr_t>(o);
    if (s.hi > s.lo && (a & 15) == 0) {
        const __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
        if (s.covers(a, 16)) _mm_stream_ps(o, lo); else _mm_storeu_ps(o, lo);
        if (s.covers(a + 16, 16)) _mm_stream_ps(o + 4, hi); else _mm_storeu_ps(o + 4, hi);
    } else {
        _mm256_storeu_ps(o, v);
    }
}
template <class Out>
XCCA_TARGET_AVX512 inline void store8(Out* o, __m512d v, const Stream& s) {
    if constexpr (std::is_same_v<Out, float>) {
        st8f(o, _mm512_cvtpd_ps(v), s);
    } else {
        const std::uintptr_t a = reinterpret_cast<std::uintptr_t>(o);
        if ((a & 63) == 0 && s.covers(a, 64)) _mm512_stream_pd(o, v); else _mm512_storeu_pd(o, v);
    }
}

// Interior bilinear samples in two passes over chunks of up to 256 samples of a tile row: the first computes the
// coordinates and stores the pixel offsets of the top and bottom pairs and the fractions (and, with a mask, checks the
// mask bytes); the second reads the offsets back as scalars for the 64-bit pair loads and prefetches, blends, and
// redoes lanes with an invalid pixel by the general path. Same operations in the same order as
// the one-pass loop (bit-identical), but no vector-to-integer-register extracts: those cost more than the arithmetic
// (measured on Zen 4, 1 thread: 9.7 -> 7.7 ms on the benchmark, compute alone 8.6 -> 6.3 ms). Returns how many of the
// n samples were done (a multiple of 8). float and int32 pixels.
template <class In, class Out, bool HasMask>
XCCA_TARGET_AVX512 std::size_t bilinear_interior_2pass(const Geometry& g, double r, const double* cs,
                                                       const double* sn, std::size_t n, const In* img,
                                                       std::ptrdiff_t rs, Out* o, Prefetch pf,
                                                       const std::uint8_t* mask, MaskMode mode, Out fill,
                                                       std::uint8_t* om) {
    static_assert(sizeof(In) == 4, "32-bit pixels: a pair is one 64-bit load");
    constexpr std::size_t B = 256;
    alignas(64) double fxb[B], fyb[B];
    alignas(64) std::int32_t k0[B], k1[B], kp[B];
    alignas(64) std::int32_t m0[HasMask ? B : 1];  // mask prefetch offsets
    std::uint8_t okb[HasMask ? B / 8 : 1];          // per 8 samples: bit l = every pixel lane l uses is valid
    const __m256i vw = _mm256_set1_epi32(static_cast<int>(g.w));
    (void)vw, (void)m0, (void)okb, (void)mask, (void)mode, (void)fill, (void)om;
    const __m512d vcx = _mm512_set1_pd(g.cx), vcy = _mm512_set1_pd(g.cy), vr = _mm512_set1_pd(r);
    const __m512d one = _mm512_set1_pd(1.0), zero = _mm512_setzero_pd();
    const __m256i vrs = _mm256_set1_epi32(static_cast<int>(rs));
    const __m512i deinterleave = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    std::size_t j = 0;
    while (j + 8 <= n) {
        const std::size_t m = std::min(B, (n - j) & ~std::size_t{7});
        for (std::size_t q = 0; q < m; q += 8) {
            const __m512d x = _mm512_add_pd(vcx, _mm512_mul_pd(vr, _mm512_loadu_pd(cs + j + q)));
            const __m512d y = _mm512_add_pd(vcy, _mm512_mul_pd(vr, _mm512_loadu_pd(sn + j + q)));
            const __m512d x0 = _mm512_roundscale_pd(x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
            const __m512d y0 = _mm512_roundscale_pd(y, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
            const __m512d fy = _mm512_sub_pd(y, y0);
            _mm512_store_pd(fxb + q, _mm512_sub_pd(x, x0));
            _mm512_store_pd(fyb + q, fy);
            const __mmask8 down = _mm512_cmp_pd_mask(fy, zero, _CMP_GT_OQ);
            const __m256i i00 =
                _mm256_add_epi32(_mm256_mullo_epi32(_mm512_cvttpd_epi32(y0), vrs), _mm512_cvttpd_epi32(x0));
            _mm256_store_si256(reinterpret_cast<__m256i*>(k0 + q), i00);
            if (pf.img)  // prefetch offsets too: adding them here is one vector add instead of eight scalar ones
                _mm256_store_si256(reinterpret_cast<__m256i*>(kp + q),
                                   _mm256_add_epi32(i00, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pf.img + j + q))));
            _mm256_store_si256(reinterpret_cast<__m256i*>(k1 + q), _mm256_add_epi32(i00, _mm256_maskz_mov_epi32(down, vrs)));
            if constexpr (HasMask) {
                const __m256i mi = _mm256_add_epi32(_mm256_mullo_epi32(_mm512_cvttpd_epi32(y0), vw), _mm512_cvttpd_epi32(x0));
                if (pf.mask)
                    _mm256_store_si256(reinterpret_cast<__m256i*>(m0 + q),
                                       _mm256_add_epi32(mi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pf.mask + j + q))));
                const __mmask8 right = _mm512_cmp_pd_mask(_mm512_load_pd(fxb + q), zero, _CMP_GT_OQ);
                okb[q / 8] = static_cast<std::uint8_t>(mask_ok8_bilinear(mask, mi, vw, right, down));
            }
        }
        for (std::size_t q = 0; q < m; q += 8) {
            if (pf.img)
                for (int l = 0; l < 8; ++l)
                    prefetch_elem(img, kp[q + l]);
            if constexpr (HasMask)
                if (pf.mask)
                    for (int l = 0; l < 8; ++l)
                        prefetch_elem(mask, m0[q + l]);
            const __m512i topi = pairs8(img, k0 + q, deinterleave), boti = pairs8(img, k1 + q, deinterleave);
            const __m512d fx = _mm512_load_pd(fxb + q), fy = _mm512_load_pd(fyb + q);
            // The right pixel is used only where fx > 0 (else it aliases the left one, as in the scalar loop).
            const __mmask8 right = _mm512_cmp_pd_mask(fx, zero, _CMP_GT_OQ);
            const __m512d p00 = widen8<In>(_mm512_castsi512_si256(topi));
            const __m512d p10 = widen8<In>(_mm512_castsi512_si256(boti));
            const __m512d p01 = _mm512_mask_blend_pd(right, p00, widen8<In>(_mm512_extracti64x4_epi64(topi, 1)));
            const __m512d p11 = _mm512_mask_blend_pd(right, p10, widen8<In>(_mm512_extracti64x4_epi64(boti, 1)));
            const __m512d wx0 = _mm512_sub_pd(one, fx), wy0 = _mm512_sub_pd(one, fy);
            const __m512d t = _mm512_add_pd(_mm512_mul_pd(wx0, p00), _mm512_mul_pd(fx, p01));
            const __m512d b = _mm512_add_pd(_mm512_mul_pd(wx0, p10), _mm512_mul_pd(fx, p11));
            store8(o + j + q, _mm512_add_pd(_mm512_mul_pd(wy0, t), _mm512_mul_pd(fy, b)), pf.stream);
            if constexpr (HasMask) {
                const unsigned ok = okb[q / 8];
                if (ok == 0xffu) {
                    if (om) std::memset(om + j + q, 1, 8);
                } else {
                    mask_lanes_bilinear<In, Out>(8, ok, g, r, cs + j + q, sn + j + q, img, rs, mask, mode, fill,
                                                 o + j + q, om ? om + j + q : nullptr);
                }
            }
        }
        j += m;
    }
    return j;
}

// One-pass AVX-512 bilinear loop, for uint16 pixels (32-bit gathers of pixel pairs); 32-bit pixels take the
// two-pass loop above.
template <class In, class Out, bool HasMask>
XCCA_TARGET_AVX512 std::size_t bilinear_interior_avx512(const Geometry& g, double r, const double* cs,
                                                        const double* sn, std::size_t n, const In* img,
                                                        std::ptrdiff_t rs, Out* o, Prefetch pf,
                                                        const std::uint8_t* mask, MaskMode mode, Out fill,
                                                        std::uint8_t* om) {
    const __m512d vcx = _mm512_set1_pd(g.cx), vcy = _mm512_set1_pd(g.cy), vr = _mm512_set1_pd(r);
    const __m512d one = _mm512_set1_pd(1.0), zero = _mm512_setzero_pd();
    const __m256i vrs = _mm256_set1_epi32(static_cast<int>(rs)), vw = _mm256_set1_epi32(static_cast<int>(g.w));
    std::size_t j = 0;
    for (; j + 8 <= n; j += 8) {
        const __m512d x = _mm512_add_pd(vcx, _mm512_mul_pd(vr, _mm512_loadu_pd(cs + j)));
        const __m512d y = _mm512_add_pd(vcy, _mm512_mul_pd(vr, _mm512_loadu_pd(sn + j)));
        const __m512d x0 = _mm512_roundscale_pd(x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
        const __m512d y0 = _mm512_roundscale_pd(y, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
        const __m512d fx = _mm512_sub_pd(x, x0), fy = _mm512_sub_pd(y, y0);
        const __mmask8 right = _mm512_cmp_pd_mask(fx, zero, _CMP_GT_OQ);
        const __mmask8 down = _mm512_cmp_pd_mask(fy, zero, _CMP_GT_OQ);
        const __m256i ix = _mm512_cvttpd_epi32(x0), iy = _mm512_cvttpd_epi32(y0);
        const __m256i i00 = _mm256_add_epi32(_mm256_mullo_epi32(iy, vrs), ix);
        if (pf.img) prefetch8(img, _mm256_add_epi32(i00, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pf.img + j))));
        const __m256i i10 = _mm256_add_epi32(i00, _mm256_maskz_mov_epi32(down, vrs));
        __m512d p00, p01, p10, p11;
        if constexpr (std::is_same_v<In, std::uint16_t>) {
            const int* base = reinterpret_cast<const int*>(img);
            const __m256i ff = _mm256_set1_epi32(0xffff);
            const __m256i t = _mm256_mmask_i32gather_epi32(_mm256_setzero_si256(), 0xff, i00, base, 2);
            const __m256i u = _mm256_mmask_i32gather_epi32(_mm256_setzero_si256(), 0xff, i10, base, 2);
            p00 = _mm512_cvtepi32_pd(_mm256_and_si256(t, ff));
            p10 = _mm512_cvtepi32_pd(_mm256_and_si256(u, ff));
            p01 = _mm512_mask_blend_pd(right, p00, _mm512_cvtepi32_pd(_mm256_srli_epi32(t, 16)));
            p11 = _mm512_mask_blend_pd(right, p10, _mm512_cvtepi32_pd(_mm256_srli_epi32(u, 16)));
        } else {
            static_assert(std::is_same_v<In, std::uint16_t>, "32-bit pixels take bilinear_interior_2pass");
        }
        const __m512d wx0 = _mm512_sub_pd(one, fx), wy0 = _mm512_sub_pd(one, fy);
        const __m512d t = _mm512_add_pd(_mm512_mul_pd(wx0, p00), _mm512_mul_pd(fx, p01));
        const __m512d b = _mm512_add_pd(_mm512_mul_pd(wx0, p10), _mm512_mul_pd(fx, p11));
        store8(o + j, _mm512_add_pd(_mm512_mul_pd(wy0, t), _mm512_mul_pd(fy, b)), pf.stream);
        if constexpr (HasMask) {
            const __m256i mi = _mm256_add_epi32(_mm256_mullo_epi32(iy, vw), ix);
            if (pf.mask)
                prefetch8(mask, _mm256_add_epi32(mi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pf.mask + j))));
            const unsigned ok = mask_ok8_bilinear(mask, mi, vw, right, down);
            if (ok == 0xffu) {
                if (om) std::memset(om + j, 1, 8);
            } else {
                mask_lanes_bilinear<In, Out>(8, ok, g, r, cs + j, sn + j, img, rs, mask, mode, fill, o + j,
                                                om ? om + j : nullptr);
            }
        }
    }
    return j;
}

template <class In, class Out, bool HasMask>
XCCA_TARGET_AVX512 std::size_t nearest_interior_avx512(const Geometry& g, double r, const double* cs,
                                                       const double* sn, std::size_t n, const In* img,
                                                       std::ptrdiff_t rs, Out* o, Prefetch pf,
                                                       const std::uint8_t* mask, Out fill, std::uint8_t* om) {
    const __m512d vcx = _mm512_set1_pd(g.cx), vcy = _mm512_set1_pd(g.cy), vr = _mm512_set1_pd(r);
    const __m512d one = _mm512_set1_pd(1.0), half = _mm512_set1_pd(0.5);
    const __m256i vrs = _mm256_set1_epi32(static_cast<int>(rs)), vw = _mm256_set1_epi32(static_cast<int>(g.w));
    std::size_t j = 0;
    for (; j + 8 <= n; j += 8) {
        const __m512d x = _mm512_add_pd(vcx, _mm512_mul_pd(vr, _mm512_loadu_pd(cs + j)));
        const __m512d y = _mm512_add_pd(vcy, _mm512_mul_pd(vr, _mm512_loadu_pd(sn + j)));
        const __m512d x0 = _mm512_roundscale_pd(x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
        const __m512d y0 = _mm512_roundscale_pd(y, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
        const __m512d xn = _mm512_mask_add_pd(x0, _mm512_cmp_pd_mask(_mm512_sub_pd(x, x0), half, _CMP_GE_OQ), x0, one);
        const __m512d yn = _mm512_mask_add_pd(y0, _mm512_cmp_pd_mask(_mm512_sub_pd(y, y0), half, _CMP_GE_OQ), y0, one);
        const __m256i ixn = _mm512_cvttpd_epi32(xn), iyn = _mm512_cvttpd_epi32(yn);
        const __m256i idx = _mm256_add_epi32(_mm256_mullo_epi32(iyn, vrs), ixn);
        if (pf.img) prefetch8<2>(img, _mm256_add_epi32(idx, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pf.img + j))));
        __m256i v;
        if constexpr (std::is_same_v<In, std::uint16_t>) {
            const __m256i a = _mm256_max_epi32(_mm256_sub_epi32(idx, _mm256_set1_epi32(1)), _mm256_setzero_si256());
            v = _mm256_mmask_i32gather_epi32(_mm256_setzero_si256(), 0xff, a, reinterpret_cast<const int*>(img), 2);
            v = _mm256_and_si256(_mm256_srlv_epi32(v, _mm256_slli_epi32(_mm256_sub_epi32(idx, a), 4)),
                                 _mm256_set1_epi32(0xffff));
        } else {
            v = _mm256_mmask_i32gather_epi32(_mm256_setzero_si256(), 0xff, idx, reinterpret_cast<const int*>(img), 4);
        }
        if constexpr (std::is_same_v<Out, float> && std::is_same_v<In, float>)
            st8f(o + j, _mm256_castsi256_ps(v), pf.stream);
        else
            store8(o + j, widen8<In>(v), pf.stream);  // int32 -> double -> float rounds as int32 -> float directly
        if constexpr (HasMask) {
            const __m256i mi = _mm256_add_epi32(_mm256_mullo_epi32(iyn, vw), ixn);
            if (pf.mask)
                prefetch8<2>(mask, _mm256_add_epi32(mi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pf.mask + j))));
            const unsigned ok = mask_ok8_nearest(mask, mi);
            if (ok == 0xffu) {
                if (om) std::memset(om + j, 1, 8);
            } else {
                mask_lanes_nearest<Out>(8, ok, fill, o + j, om ? om + j : nullptr);
            }
        }
    }
    return j;
}

// Nearest-neighbour interior loop on float32 coordinates, 16 samples per step: about a third of the arithmetic of
// the double-precision loop. Exact nonetheless: with xf = fma(float(r), float(cos), float(cx)),
// |xf - x| <= eps for the double-precision x = cx + r*cos of the specification (eps from PolarGrid::init, with a
// factor 2 of margin). Wherever xf lies farther than 0.5 - eps from a half-integer, rint(xf) is the pixel the double
// computation picks (x is then strictly within 0.5 of it); the rare lanes that do not ("ambiguous", about 0.2 % of
// samples on a Pilatus 6M) are redone exactly in double precision, so the result equals the double loop bit for bit.
// Three stages per chunk of up to 256 samples of a tile row: vector coordinates and offsets, scalar pixel loads
// (nearest_loads), vector conversion and stores. Measured on the 2527x2463 -> 900x5000 benchmark, 1 thread, against
// the double-precision loop with gathers: 5.2-5.6 -> 4.5-4.8 ms.

XCCA_TARGET_AVX512 inline void st16f(float* o, __m512 v, const Stream& s) {
    const std::uintptr_t a = reinterpret_cast<std::uintptr_t>(o);
    if ((a & 63) == 0 && s.covers(a, 64)) {
        _mm512_stream_ps(o, v);
    } else {
        st8f(o, _mm512_castps512_ps256(v), s);
        st8f(o + 8, _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)), s);
    }
}

// Scalar pass of nearest_interior_f32: v[q] = img[k[q]] (raw 32-bit pixel, or a uint16 widened), mask byte checks,
// prefetches of every other sample's pixel one prefetch distance further out. Kept scalar on purpose (no
// auto-vectorisation): gathers are microcoded on Zen 4 and stall the instructions around them; plain loads overlap.
template <class In, bool HasMask>
__attribute__((noinline, optimize("no-tree-vectorize"))) void nearest_loads(
    const In* img, const std::int32_t* k, const std::int32_t* kp, std::size_t m, std::uint32_t* v,
    const std::uint8_t* mask, const std::int32_t* mk, const std::int32_t* mkp, std::uint8_t* ok) {
    // (No lambdas here: they would not inherit this function's optimize attribute and would not be inlined.)
    for (std::size_t q = 0; q < m; q += 2) {  // m is even
        if (kp)
            prefetch_elem(img, kp[q]);
        if constexpr (sizeof(In) == 4) {
            std::memcpy(&v[q], img + k[q], 4);
            std::memcpy(&v[q + 1], img + k[q + 1], 4);
        } else {
            v[q] = img[k[q]];
            v[q + 1] = img[k[q + 1]];
        }
        if constexpr (HasMask) {
            if (mkp)
                prefetch_elem(mask, mkp[q]);
            ok[q] = mask[mk[q]];
            ok[q + 1] = mask[mk[q + 1]];
        }
    }
    (void)mask, (void)mk, (void)mkp, (void)ok;
}

template <class In, class Out, bool HasMask>
XCCA_TARGET_AVX512 std::size_t nearest_interior_f32(const Geometry& g, double r, const double* cs, const double* sn,
                                                    const Fast32& f, std::size_t n, const In* img,
                                                    std::ptrdiff_t rs, Out* o, Prefetch pf,
                                                    const std::uint8_t* mask, Out fill, std::uint8_t* om) {
    constexpr std::size_t B = 256;
    alignas(64) std::int32_t k[B], kp[B];
    alignas(64) std::uint32_t v[B];
    alignas(64) std::int32_t mk[HasMask ? B : 1], mkp[HasMask ? B : 1];
    alignas(64) std::uint8_t ok[HasMask ? B : 1];
    const __m512 vr = _mm512_set1_ps(static_cast<float>(r)), vcx = _mm512_set1_ps(f.cx), vcy = _mm512_set1_ps(f.cy);
    const __m512 lim = _mm512_set1_ps(f.lim);
    const __m512 abs_bits = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    const __m512i vrs = _mm512_set1_epi32(static_cast<int>(rs)), vw = _mm512_set1_epi32(static_cast<int>(g.w));
    (void)vw, (void)mask, (void)fill, (void)om, (void)mk, (void)mkp, (void)ok;
    std::size_t j = 0;
    while (j + 16 <= n) {
        const std::size_t m = std::min(B, (n - j) & ~std::size_t{15});
        for (std::size_t q = 0; q < m; q += 16) {
            const std::size_t jq = j + q;
            const __m512 x = _mm512_fmadd_ps(vr, _mm512_loadu_ps(f.cs + jq), vcx);
            const __m512 y = _mm512_fmadd_ps(vr, _mm512_loadu_ps(f.sn + jq), vcy);
            // |x - rint(x)| (vreduceps is exact); a lane is ambiguous when it is >= 0.5 - eps in x or in y.
            const __m512 dx = _mm512_and_ps(_mm512_reduce_ps(x, _MM_FROUND_TO_NEAREST_INT), abs_bits);
            const __m512 dy = _mm512_and_ps(_mm512_reduce_ps(y, _MM_FROUND_TO_NEAREST_INT), abs_bits);
            const __mmask16 amb = _mm512_cmp_ps_mask(dx, lim, _CMP_GE_OQ) | _mm512_cmp_ps_mask(dy, lim, _CMP_GE_OQ);
            __m512i ix = _mm512_cvt_roundps_epi32(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            __m512i iy = _mm512_cvt_roundps_epi32(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            if (amb) {  // rare: the exact double-precision rule for those lanes
                alignas(64) std::int32_t kx[16], ky[16];
                _mm512_store_si512(kx, ix);
                _mm512_store_si512(ky, iy);
                for (unsigned a = amb; a; a &= a - 1) {
                    const int l = __builtin_ctz(a);
                    kx[l] = static_cast<std::int32_t>(nearest_index(g.cx + r * cs[jq + l]));
                    ky[l] = static_cast<std::int32_t>(nearest_index(g.cy + r * sn[jq + l]));
                }
                ix = _mm512_load_si512(kx);
                iy = _mm512_load_si512(ky);
            }
            const __m512i idx = _mm512_add_epi32(_mm512_mullo_epi32(iy, vrs), ix);
            _mm512_store_si512(k + q, idx);
            if (pf.img) _mm512_store_si512(kp + q, _mm512_add_epi32(idx, _mm512_loadu_si512(pf.img + jq)));
            if constexpr (HasMask) {
                const __m512i mi = _mm512_add_epi32(_mm512_mullo_epi32(iy, vw), ix);
                _mm512_store_si512(mk + q, mi);
                if (pf.mask) _mm512_store_si512(mkp + q, _mm512_add_epi32(mi, _mm512_loadu_si512(pf.mask + jq)));
            }
        }
        nearest_loads<In, HasMask>(img, k, pf.img ? kp : nullptr, m, v, mask, mk, pf.mask ? mkp : nullptr, ok);
        for (std::size_t q = 0; q < m; q += 16) {
            const __m512i vv = _mm512_load_si512(v + q);
            Out* oq = o + j + q;
            if constexpr (std::is_same_v<Out, float>) {
                // int32 -> float rounds once, as int32 -> double -> float does (a double holds every int32).
                st16f(oq, std::is_same_v<In, float> ? _mm512_castsi512_ps(vv) : _mm512_cvtepi32_ps(vv), pf.stream);
            } else {
                store8(oq, widen8<In>(_mm512_castsi512_si256(vv)), pf.stream);
                store8(oq + 8, widen8<In>(_mm512_extracti64x4_epi64(vv, 1)), pf.stream);
            }
            if constexpr (HasMask) {
                const unsigned okbits = ~static_cast<unsigned>(_mm_movemask_epi8(_mm_cmpeq_epi8(
                                            _mm_load_si128(reinterpret_cast<const __m128i*>(ok + q)),
                                            _mm_setzero_si128()))) & 0xffffu;
                if (okbits == 0xffffu) {
                    if (om) std::memset(om + j + q, 1, 16);
                } else {
                    mask_lanes_nearest<Out>(16, okbits, fill, oq, om ? om + j + q : nullptr);
                }
            }
        }
        j += m;
    }
    return j;
}

template <class In>
constexpr bool simd_pixel = std::is_same_v<In, float> || std::is_same_v<In, double> ||
                             std::is_same_v<In, std::int32_t> || std::is_same_v<In, std::uint16_t>;
template <class In>
constexpr bool simd512_pixel =
    std::is_same_v<In, float> || std::is_same_v<In, std::int32_t> || std::is_same_v<In, std::uint16_t>;
#pragma GCC diagnostic pop
#endif

// Whether the vectorised interior loops may run: float/double/int32/uint16 pixels, every pixel offset within int32.
template <class In>
bool use_simd(const Geometry& g, std::ptrdiff_t rs) {
#ifdef XCCA_AVX2
    if constexpr (simd_pixel<In>) {
        const double span = std::fabs(double(rs)) * double(g.h) + double(g.w);
        // uint16 reads pixel pairs (k-1, k): a positive row stride and W >= 2 keep them inside the image.
        if constexpr (std::is_same_v<In, std::uint16_t>)
            if (rs <= 0 || g.w < 2) return false;
        return span < 2147483647.0 && has_avx2();
    }
#endif
    (void)g;
    (void)rs;
    return false;
}

// One output row (radius r, angles [j0, j1)) of the nearest-neighbour remap.
// f32: the float32 geometry for nearest_interior_f32, or null.
template <class In, class Out, bool Interior, bool HasMask>
XCCA_CLONES void row_nearest(const Geometry& g, double r, const double* cs, const double* sn, std::size_t n,
                             const In* img, std::ptrdiff_t rs, const std::uint8_t* mask, Out fill, Out* o,
                             std::uint8_t* om, bool simd, Prefetch pf, const Fast32* f32) {
    std::size_t j = 0;
#ifdef XCCA_AVX2
    if constexpr (Interior && simd_pixel<In>)
        if (simd) {
            if constexpr (simd512_pixel<In>)
                if (has_avx512()) {
                    if (f32)
                        j = nearest_interior_f32<In, Out, HasMask>(g, r, cs, sn, *f32, n, img, rs, o, pf, mask, fill,
                                                                   om);
                    j += nearest_interior_avx512<In, Out, HasMask>(g, r, cs + j, sn + j, n - j, img, rs, o + j,
                                                                   pf.shifted(j), mask, fill, om ? om + j : nullptr);
                }
            j += nearest_interior_avx2<In, Out, HasMask>(g, r, cs + j, sn + j, n - j, img, rs, o + j,
                                                         pf.shifted(j), mask, fill, om ? om + j : nullptr);
        }
#endif
    (void)simd;
    (void)pf;
    (void)f32;
    if (om && !HasMask && j > 0) std::memset(om, 1, j);
    for (; j < n; ++j) {
        const double x = g.cx + r * cs[j];
        const double y = g.cy + r * sn[j];
        bool ok;
        std::ptrdiff_t ix = 0, iy = 0;
        if (Interior) {
            ok = true;
        } else {
            ok = nearest_inside(g, x, y);
        }
        if (ok) {
            ix = nearest_index(x);
            iy = nearest_index(y);
            if (HasMask) ok = mask[iy * g.w + ix] != 0;
        }
        o[j] = ok ? static_cast<Out>(img[iy * rs + ix]) : fill;
        if (om) om[j] = ok;
    }
}

// One output row of the bilinear remap. Interior: every sample's pixels are inside the image, so no bounds checks;
// without a mask that is a pure gather-and-blend loop.
template <class In, class Out, bool Interior, bool HasMask>
XCCA_CLONES void row_bilinear(const Geometry& g, double r, const double* cs, const double* sn, std::size_t n,
                              const In* img, std::ptrdiff_t rs, const std::uint8_t* mask, MaskMode mode, Out fill,
                              Out* o, std::uint8_t* om, bool simd, Prefetch pf) {
    std::size_t j = 0;
#ifdef XCCA_AVX2
    if constexpr (Interior && simd_pixel<In>)
        if (simd) {
            if constexpr (simd512_pixel<In>)
                if (has_avx512()) {
                    if constexpr (sizeof(In) == 4)  // float, int32
                        j = bilinear_interior_2pass<In, Out, HasMask>(g, r, cs, sn, n, img, rs, o, pf, mask, mode,
                                                                      fill, om);
                    else
                        j = bilinear_interior_avx512<In, Out, HasMask>(g, r, cs, sn, n, img, rs, o, pf, mask, mode,
                                                                       fill, om);
                }
            j += bilinear_interior_avx2<In, Out, HasMask>(g, r, cs + j, sn + j, n - j, img, rs, o + j,
                                                          pf.shifted(j), mask, mode, fill, om ? om + j : nullptr);
        }
#endif
    (void)simd;
    (void)pf;
    if (Interior && !HasMask) {
        for (; j < n; ++j) {
            const double x = g.cx + r * cs[j];
            const double y = g.cy + r * sn[j];
            std::int64_t ix, iy;
            double fx, fy;
            split(x, ix, fx);
            split(y, iy, fy);
            const std::ptrdiff_t dx = fx > 0.0, dy = fy > 0.0 ? rs : 0;
            const In* p = img + iy * rs + ix;
            const double p00 = p[0], p01 = p[dx], p10 = p[dy], p11 = p[dy + dx];
            const double wx0 = 1.0 - fx, wy0 = 1.0 - fy;
            o[j] = static_cast<Out>(wy0 * (wx0 * p00 + fx * p01) + fy * (wx0 * p10 + fx * p11));
        }
        if (om) std::memset(om, 1, n);
        return;
    }
    for (; j < n; ++j) {
        const double x = g.cx + r * cs[j];
        const double y = g.cy + r * sn[j];
        double v = 0.0;
        const bool ok = sample_bilinear<In, HasMask>(g, x, y, img, rs, mask, mode, v);
        o[j] = ok ? static_cast<Out>(v) : fill;
        if (om) om[j] = ok;
    }
}

}  // namespace

PolarGrid::PolarGrid(double cx, double cy, std::vector<double> radii, std::size_t nphi, std::size_t height,
                     std::size_t width, double phi0)
    : cx_(cx), cy_(cy), radii_(std::move(radii)), height_(height), width_(width) {
    if (nphi == 0) throw std::invalid_argument("xcca::polar::PolarGrid: nphi must be >= 1");
    if (!std::isfinite(phi0)) throw std::invalid_argument("xcca::polar::PolarGrid: phi0 must be finite");
    cos_.resize(nphi);
    sin_.resize(nphi);
    for (std::size_t j = 0; j < nphi; ++j) {
        const double phi = phi0 + two_pi * static_cast<double>(j) / static_cast<double>(nphi);
        cos_[j] = std::cos(phi);
        sin_[j] = std::sin(phi);
    }
    init();
}

PolarGrid::PolarGrid(double cx, double cy, std::vector<double> radii, std::vector<double> cos_phi,
                     std::vector<double> sin_phi, std::size_t height, std::size_t width)
    : cx_(cx), cy_(cy), radii_(std::move(radii)), cos_(std::move(cos_phi)), sin_(std::move(sin_phi)),
      height_(height), width_(width) {
    if (cos_.empty() || cos_.size() != sin_.size())
        throw std::invalid_argument("xcca::polar::PolarGrid: cos_phi and sin_phi must have the same length >= 1");
    for (std::size_t j = 0; j < cos_.size(); ++j)
        if (!std::isfinite(cos_[j]) || !std::isfinite(sin_[j]) || std::fabs(cos_[j]) > 1.0 ||
            std::fabs(sin_[j]) > 1.0)
            throw std::invalid_argument("xcca::polar::PolarGrid: cos_phi/sin_phi must be finite and within [-1, 1]");
    init();
}

void PolarGrid::init() {
    if (!std::isfinite(cx_) || !std::isfinite(cy_))
        throw std::invalid_argument("xcca::polar::PolarGrid: the centre must be finite");
    if (height_ == 0 || width_ == 0) throw std::invalid_argument("xcca::polar::PolarGrid: empty image shape");
    // Limits keep every index computation in range (and images below 2^62 elements).
    if (height_ > (std::size_t{1} << 31) || width_ > (std::size_t{1} << 31))
        throw std::invalid_argument("xcca::polar::PolarGrid: image dimensions must be < 2^31");
    for (double r : radii_)
        if (!(r >= 0.0) || !std::isfinite(r))
            throw std::invalid_argument("xcca::polar::PolarGrid: radii must be finite and >= 0");
    const Geometry g{cx_, cy_, double(width_), double(height_), std::ptrdiff_t(width_), std::ptrdiff_t(height_)};
    const std::size_t nphi = cos_.size(), nr = radii_.size();
    // Tile shape: an arc of about `arc` pixels at the largest radius per tile row, so that a tile touches few image
    // rows (cache lines and pages) while its rows still share most of them.
    double rmax = 0.0;
    for (double r : radii_) rmax = std::max(rmax, r);
    // Measured on the 2527x2463 -> 900x5000 benchmark: 160-600 px arcs are equally good; whole rings (>1000 px) and
    // short arcs (< 64 px) are slower.
    const double arc = 256.0, tr = 16.0;
    const double step = rmax * two_pi / double(nphi);  // pixels between neighbouring angles at rmax
    // Clamped in double before the conversion: for a tiny rmax (1e-300) arc / step is far beyond size_t (UB).
    const double tpd = step > 0 ? std::min(arc / step, 1024.0) : 1024.0;
    std::size_t tp = static_cast<std::size_t>(tpd);
    tp = std::max<std::size_t>(16, std::min<std::size_t>(tp, 1024)) & ~std::size_t{3};
    tile_phi_ = tp;
    tile_radii_ = static_cast<std::size_t>(tr);
    n_blocks_ = (nphi + tile_phi_ - 1) / tile_phi_;
    // Float32 fast path for nearest (nearest_interior_f32): the bound eps on |xf - x| is
    // 2^-22 (max(|cx|, |cy|) + rmax + 1) >= 2^-23 (|cx| + 1.5 r) + rounding of the double x, twice what the float32
    // roundings of cx, r, cos and the fused multiply-add can add up to. Used while eps < 1/64 (coordinates below
    // about 65000 pixels), so ambiguous lanes stay rare.
    cos_f_.clear();
    sin_f_.clear();
    const double eps = std::ldexp(std::max(std::fabs(cx_), std::fabs(cy_)) + rmax + 1.0, -22);
    if (eps < 1.0 / 64) {
        cos_f_.assign(cos_.begin(), cos_.end());
        sin_f_.assign(sin_.begin(), sin_.end());
        cx_f_ = static_cast<float>(cx_);
        cy_f_ = static_cast<float>(cy_);
        float lim = static_cast<float>(0.5 - eps);
        if (static_cast<double>(lim) > 0.5 - eps) lim = std::nextafter(lim, 0.f);
        lim_f_ = lim;
    }
    interior_nearest_.assign(nr * n_blocks_, 0);
    interior_bilinear_.assign(nr * n_blocks_, 0);
    for (std::size_t i = 0; i < nr; ++i) {
        const double r = radii_[i];
        for (std::size_t b = 0; b < n_blocks_; ++b) {
            bool nn = true, bl = true;
            for (std::size_t j = b * tile_phi_; j < std::min(nphi, (b + 1) * tile_phi_); ++j) {
                // Exactly the expressions of the kernels, so the flags are exact.
                const double x = g.cx + r * cos_[j];
                const double y = g.cy + r * sin_[j];
                nn = nn && nearest_inside(g, x, y);
                bl = bl && bilinear_interior(g, x, y);
            }
            interior_nearest_[i * n_blocks_ + b] = nn;
            interior_bilinear_[i * n_blocks_ + b] = bl;
        }
    }
}

template <class In, class Out>
void PolarGrid::remap(const In* images, std::size_t n_frames, std::ptrdiff_t frame_stride, std::ptrdiff_t row_stride,
                      const std::uint8_t* mask, Method method, MaskMode mode, Out fill, Out* out,
                      std::uint8_t* out_mask, int n_threads) const {
    if (method != Method::nearest && method != Method::bilinear)
        throw std::invalid_argument("xcca::polar::PolarGrid::remap: unknown method");
    if (mode != MaskMode::strict && mode != MaskMode::renormalize)
        throw std::invalid_argument("xcca::polar::PolarGrid::remap: unknown mask mode");
    const std::size_t nr = radii_.size(), nphi = cos_.size();
    if (n_frames == 0 || nr == 0) return;
    if (!images || !out) throw std::invalid_argument("xcca::polar::PolarGrid::remap: null image or output");
    const Geometry g{cx_, cy_, double(width_), double(height_), std::ptrdiff_t(width_), std::ptrdiff_t(height_)};
    const std::size_t n_rtiles = (nr + tile_radii_ - 1) / tile_radii_;
    const std::size_t per_frame = n_rtiles * n_blocks_;
    // (The vectorised mask checks read 4 mask bytes at a time: images of >= 4 pixels.)
    const bool simd = use_simd<In>(g, row_stride) && (!mask || height_ * width_ >= 4);
    // Prefetch distance in radii (rows of a tile): the pixels of radius i + pf_dist are requested while radius i is
    // computed. Measured: 2-8 all give ~2x over none on the benchmark (memory latency hidden); 4 it is.
    constexpr std::size_t pf_dist = 4;
    // Per-angle offset (pixels) from radius r_i to r_i + pf_dist * (mean radius step), for the prefetches: O(nphi).
    // The mask (row stride W) gets its own table, after the image's.
    std::vector<std::int32_t> pf_offsets;
    if (simd && nr > pf_dist) {
        const double d = double(pf_dist) * (radii_.back() - radii_.front()) / double(nr - 1);
        const double stride = std::max(std::fabs(double(row_stride)), double(width_));
        if (std::fabs(d) * (stride + 1.0) < 1e9) {
            pf_offsets.resize(2 * nphi);
            for (std::size_t j = 0; j < nphi; ++j) {
                const long dy = std::lround(d * sin_[j]), dx = std::lround(d * cos_[j]);
                pf_offsets[j] = static_cast<std::int32_t>(dy * row_stride + dx);
                pf_offsets[nphi + j] = static_cast<std::int32_t>(dy * static_cast<long>(width_) + dx);
            }
        }
    }
    // Tiles of tile_radii_ x tile_phi_ samples; consecutive tiles walk around an annulus, so the source pixels they
    // touch stay in cache. Each output element is computed by one thread with the same code: bits do not depend on
    // the thread count.
    // Non-temporal stores for outputs well beyond the caches: they skip reading every output line before writing it
    // (a third of the memory traffic of nearest), which matters most when two threads share the memory bandwidth
    // (measured: nearest 2 threads 3.4 -> 2.75 ms, bilinear 4.0 -> 3.9 ms). Small outputs stay cached for the caller.
    // Not with a pixel mask: the masked kernels overwrite invalid lanes right after the store, and an ordinary store
    // to a line still in a write-combining buffer costs far more than the stream saves (masked 15 -> 48 ms).
    const bool stream = !mask && n_frames * nr * nphi * sizeof(Out) >= (std::size_t{8} << 20);
    // Chunks of 4 tiles (~20 us of work on the benchmark): a quarter of the shared-counter traffic of single tiles,
    // 1-3% faster at 2 threads, and a tail of at most 4 tiles.
    // First angle of block b (0..n_blocks_) in the output row starting at `row`: b * tile_phi_, moved up to the next
    // 64-byte line when the output elements are aligned (tile_phi_ >= 16 > the move keeps blocks in order).
    const bool align_blocks = reinterpret_cast<std::uintptr_t>(out) % sizeof(Out) == 0;
    auto block_start = [&](const Out* row, std::size_t b) -> std::size_t {
        if (b == 0) return 0;
        if (b >= n_blocks_) return nphi;
        std::size_t j = b * tile_phi_;
        if (align_blocks) j += ((64 - (reinterpret_cast<std::uintptr_t>(row + j) & 63)) & 63) / sizeof(Out);
        return std::min(j, nphi);
    };
    parallel_for(n_frames * per_frame, n_threads, 4, [&](std::size_t t0, std::size_t t1) {
        for (std::size_t t = t0; t < t1; ++t) {
            const std::size_t f = t / per_frame;
            const std::size_t rt = (t % per_frame) / n_blocks_, b = t % n_blocks_;
            const In* img = images + static_cast<std::ptrdiff_t>(f) * frame_stride;
            const std::size_t i0 = rt * tile_radii_, i1 = std::min(nr, (rt + 1) * tile_radii_);
            const std::uint8_t* interior =
                method == Method::nearest ? interior_nearest_.data() : interior_bilinear_.data();
            for (std::size_t i = i0; i < i1; ++i) {
                Out* const row = out + (f * nr + i) * nphi;
                // This row's part of the tile: angles [j0, j1), block boundaries moved up to the next 64-byte line
                // of the output so that no output line is shared by two tiles (no line written in two pieces at
                // different times, and no false sharing between threads). The moved part (< one line) belongs to
                // block b + 1, so the interior flag of that block counts too.
                const std::size_t j0 = block_start(row, b), j1 = block_start(row, b + 1), n = j1 - j0;
                if (n == 0) continue;
                const bool in = interior[i * n_blocks_ + b] &&
                                (j1 <= std::min(nphi, (b + 1) * tile_phi_) || interior[i * n_blocks_ + b + 1]);
                Out* o = row + j0;
                const double* cs = cos_.data() + j0;
                const double* sn = sin_.data() + j0;
                std::uint8_t* om = (f == 0 && out_mask) ? out_mask + i * nphi + j0 : nullptr;
                const double r = radii_[i];
                Prefetch pf;
                if (stream) {
                    // Whole lines only, and only those the vector loops write in full (multiples of 8 samples): a
                    // line written partly by streams and partly by ordinary stores (tail loops, the neighbouring
                    // tile) leaves the write-combining buffer half-full, which costs far more than the stream
                    // saves (measured before this rule: nearest 4.8 -> 11.9 ms with 156-angle tiles).
                    const std::uintptr_t a = reinterpret_cast<std::uintptr_t>(o);
                    pf.stream.lo = (a + 63) & ~std::uintptr_t{63};
                    pf.stream.hi =
                        std::max(pf.stream.lo, (a + (n & ~std::size_t{7}) * sizeof(Out)) & ~std::uintptr_t{63});
                }
                Fast32 f32v;
                const Fast32* f32 = nullptr;
                if (!cos_f_.empty()) {
                    f32v = Fast32{cos_f_.data() + j0, sin_f_.data() + j0, cx_f_, cy_f_, lim_f_};
                    f32 = &f32v;
                }
                if (!pf_offsets.empty() && i + pf_dist < nr && interior[(i + pf_dist) * n_blocks_ + b]) {
                    pf.img = pf_offsets.data() + j0;
                    if (mask) pf.mask = pf_offsets.data() + nphi + j0;
                }
                if (method == Method::nearest) {
                    if (in && !mask)
                        row_nearest<In, Out, true, false>(g, r, cs, sn, n, img, row_stride, mask, fill, o, om, simd, pf, f32);
                    else if (in)
                        row_nearest<In, Out, true, true>(g, r, cs, sn, n, img, row_stride, mask, fill, o, om, simd, pf, f32);
                    else if (!mask)
                        row_nearest<In, Out, false, false>(g, r, cs, sn, n, img, row_stride, mask, fill, o, om, simd, pf, f32);
                    else
                        row_nearest<In, Out, false, true>(g, r, cs, sn, n, img, row_stride, mask, fill, o, om, simd, pf, f32);
                } else {
                    if (in && !mask)
                        row_bilinear<In, Out, true, false>(g, r, cs, sn, n, img, row_stride, mask, mode, fill, o,
                                                           om, simd, pf);
                    else if (in)
                        row_bilinear<In, Out, true, true>(g, r, cs, sn, n, img, row_stride, mask, mode, fill, o,
                                                          om, simd, pf);
                    else if (!mask)
                        row_bilinear<In, Out, false, false>(g, r, cs, sn, n, img, row_stride, mask, mode, fill, o,
                                                            om, simd, pf);
                    else
                        row_bilinear<In, Out, false, true>(g, r, cs, sn, n, img, row_stride, mask, mode, fill, o,
                                                           om, simd, pf);
                }
            }
        }
#ifdef XCCA_AVX2
        if (stream && simd) _mm_sfence();  // non-temporal stores are weakly ordered: drain before the join
#endif
    });
}

#define XCCA_POLAR_INSTANTIATE(In)                                                                                \
    template void PolarGrid::remap<In, float>(const In*, std::size_t, std::ptrdiff_t, std::ptrdiff_t,           \
                                              const std::uint8_t*, Method, MaskMode, float, float*,              \
                                              std::uint8_t*, int) const;                                         \
    template void PolarGrid::remap<In, double>(const In*, std::size_t, std::ptrdiff_t, std::ptrdiff_t,          \
                                               const std::uint8_t*, Method, MaskMode, double, double*,           \
                                               std::uint8_t*, int) const;
XCCA_POLAR_INSTANTIATE(std::uint8_t)
XCCA_POLAR_INSTANTIATE(std::int8_t)
XCCA_POLAR_INSTANTIATE(std::uint16_t)
XCCA_POLAR_INSTANTIATE(std::int16_t)
XCCA_POLAR_INSTANTIATE(std::uint32_t)
XCCA_POLAR_INSTANTIATE(std::int32_t)
XCCA_POLAR_INSTANTIATE(std::uint64_t)
XCCA_POLAR_INSTANTIATE(std::int64_t)
XCCA_POLAR_INSTANTIATE(float)
XCCA_POLAR_INSTANTIATE(double)
#undef XCCA_POLAR_INSTANTIATE

}  // namespace xcca::polar
