// Single-precision tilted remap (ConicGrid constructed with single = true; see xcca/conic.hpp): the coordinate and
// correction rule, the sampling rules and the pixel values in float, the tables rounded once to float. Why: on
// AVX2-only machines (Zen 2/3, Intel without AVX-512) the double rule runs 4 lanes per instruction and the remap is
// instruction-bound; the same rule in float runs 8 (measured in bench/geometry.py). The specification is the NumPy
// code of the double rule run in float32 (xcca.reference.conic_coordinates / conic_correction / sample_at with
// dtype=np.float32); no fused multiply-add, so every path here gives those bits.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "cpu_features.hpp"
#include "xcca/conic.hpp"
#include "xcca/threads.hpp"

#if defined(__GNUC__) && defined(__x86_64__) && !defined(XCCA_NO_SIMD)
#include <immintrin.h>
#define XCCA_SINGLE_AVX2 1
#endif

// The bits are part of the specification: no contraction to fused multiply-add.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off", "no-trapping-math")
#elif defined(__clang__)
#pragma clang fp contract(off)
#endif

#include "conic_rule.hpp"  // after the pragma (no FMA)
#include "sampling.hpp"    // after the pragma (no FMA)

namespace xcca::conic {

namespace {

struct Geo32 {  // the G of sampling.hpp
    double W, H;
    std::ptrdiff_t w, h;
};

// The per-angle float tables of one chunk of angles and the grid's float scalars.
struct Tab32 {
    const float *a0, *a1, *a2, *g;
    float b0, b1, b2, cx, cy, ly, lx;
    bool sa;
};

// Per-ring constants, rounded as conic_rule::ring_loop computes them (in float here).
struct Ring32 {
    float s, cb0, cb1, cb2, p1, m1;
};
inline Ring32 ring32(const Tab32& t, float s, float c) {
    const float c2 = c * c;
    return Ring32{s, c * t.b0, c * t.b1, c * t.b2, 1.0f + c2, 1.0f - c2};
}

// One sample's coordinates (x column, y row, d = cos of the incidence angle); returns its correction factor.
inline float coord32(const Tab32& t, const Ring32& r, std::size_t q, float& x, float& y, float& d) {
    return conic_rule::sample_any(t.g != nullptr, t.sa, r.s, r.cb0, r.cb1, r.cb2, r.p1, r.m1, t.a0[q], t.a1[q],
                                  t.a2[q], t.g ? t.g[q] : 0.0f, t.cx, t.cy, t.ly, t.lx, x, y, d);
}

// The general sample at (x, y): validity, and the value times its correction factor (exact for factor 1).
// Nearest: inside when d > 0 and -0.5 <= x < W - 0.5 (same for y; exact in float for W <= 2^22).
template <class In, bool HasMask>
inline bool sample32(const Geo32& g, Method method, MaskMode mode, float x, float y, float d, float corr,
                     const In* img, std::ptrdiff_t rs, const std::uint8_t* mask, float& v) {
    if (!(d > 0.0f)) return false;
    if (method == Method::nearest) {
        if (!(x >= -0.5f && x < static_cast<float>(g.W - 0.5) && y >= -0.5f && y < static_cast<float>(g.H - 0.5)))
            return false;
        const std::ptrdiff_t ix = sampling::nearest_index(x), iy = sampling::nearest_index(y);
        if (HasMask && !mask[iy * g.w + ix]) return false;
        v = static_cast<float>(img[iy * rs + ix]) * corr;
        return true;
    }
    float w = 0.0f;
    if (!sampling::sample_bilinear<In, HasMask>(g, x, y, img, rs, mask, mode, w)) return false;
    v = w * corr;
    return true;
}

constexpr std::size_t chunk = 128;  // angles per task (as conic.cpp)
constexpr std::size_t tile_rings = 16;

// Any method, mask, pixel type and ISA: per task the coordinates of each ring once, then every frame of the block.
template <class In, bool HasMask>
void portable(const Geo32& geo, const conic_rule::Tiling& tiling, const float* s, const float* c,
              const Tab32& base, std::size_t nphi, const In* images, std::ptrdiff_t frame_stride, std::ptrdiff_t rs,
              const std::uint8_t* mask, Method method, MaskMode mode, float fill, float* out,
              std::uint8_t* out_mask, int n_threads) {
    const std::size_t nr = tiling.nr;
    parallel_for(tiling.tasks(), n_threads, 4, [&](std::size_t t0, std::size_t t1) {
        std::vector<float> xs(chunk), ys(chunk), ds(chunk), cs(chunk);
        for (std::size_t t = t0; t < t1; ++t) {
            const conic_rule::Task tk = tiling(t);
            Tab32 tab = base;
            tab.a0 += tk.j0;
            tab.a1 += tk.j0;
            tab.a2 += tk.j0;
            if (tab.g) tab.g += tk.j0;
            for (std::size_t i = tk.i0; i < tk.i1; ++i) {
                const Ring32 r = ring32(tab, s[i], c[i]);
                for (std::size_t q = 0; q < tk.n; ++q) cs[q] = coord32(tab, r, q, xs[q], ys[q], ds[q]);
                for (std::size_t f = tk.f0; f < tk.f1; ++f) {
                    const In* img = images + static_cast<std::ptrdiff_t>(f) * frame_stride;
                    float* o = out + (f * nr + i) * nphi + tk.j0;
                    std::uint8_t* om = (f == 0 && out_mask) ? out_mask + i * nphi + tk.j0 : nullptr;
                    for (std::size_t q = 0; q < tk.n; ++q) {
                        float v = 0.0f;
                        const bool ok = sample32<In, HasMask>(geo, method, mode, xs[q], ys[q], ds[q], cs[q], img, rs,
                                                              mask, v);
                        o[q] = ok ? v : fill;
                        if (om) om[q] = ok;
                    }
                }
            }
        }
    });
}

#ifdef XCCA_SINGLE_AVX2
// Fused AVX2 path (bilinear, float / int32 pixels, with or without a pixel mask): the structure of conic.cpp's fused
// paths with 8 float lanes. Pass 1 (coordinates, fractions, pixel offsets, correction factors) of ring i + pf runs in
// the same loop as pass 2 (pixel pairs, blend) of ring i, whose pixels it prefetches. With a mask, pass 1 stores each
// sample's mask offset and pass 2 reads its 2x2 mask bytes (the mask lines prefetched with the pixels): in strict
// mode a sample inside the image with a masked pixel gets the fill; otherwise (renormalize, or the detector edge)
// it takes the general path (sample_bilinear's rules).
#define XCCA_SINGLE_TARGET __attribute__((target("avx2"), optimize("fp-contract=off", "no-trapping-math")))
#define XCCA_SINGLE_INLINE XCCA_SINGLE_TARGET __attribute__((always_inline)) inline
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

using Slot32 = conic_rule::FusedSlot<float, 8, chunk>;

struct Ring8 {
    __m256 s, cb0, cb1, cb2, cx, cy, ly, lx, wl, hl, p1, m1;
    __m256i rs, w;  // row strides of the image and of the mask (W)
};

XCCA_SINGLE_INLINE Ring8 ring8(const Tab32& t, const Ring32& r, const Geo32& g, std::ptrdiff_t rs) {
    return Ring8{_mm256_set1_ps(r.s),   _mm256_set1_ps(r.cb0), _mm256_set1_ps(r.cb1),
                 _mm256_set1_ps(r.cb2), _mm256_set1_ps(t.cx),  _mm256_set1_ps(t.cy),
                 _mm256_set1_ps(t.ly),  _mm256_set1_ps(t.lx),  _mm256_set1_ps(static_cast<float>(g.W - 1.0)),
                 _mm256_set1_ps(static_cast<float>(g.H - 1.0)), _mm256_set1_ps(r.p1), _mm256_set1_ps(r.m1),
                 _mm256_set1_epi32(static_cast<int>(rs)),       _mm256_set1_epi32(static_cast<int>(g.w))};
}

// The lanes of the interior lanes `in` (bits) whose used mask pixels are all valid: the top-left pixel at mask offset
// km, the right column where `right`, the bottom row where `down` (bits; as sampling.hpp). Interior lanes have their
// 2x2 block inside, so the 32-bit reads [km, km + 3] and [km + W - 2, km + W + 1] stay inside the mask; other lanes
// are not read.
XCCA_SINGLE_INLINE unsigned mask_ok8(const int* mask, std::ptrdiff_t w, const std::int32_t* km, unsigned in,
                                     unsigned right, unsigned down) {
    const __m256i zero = _mm256_setzero_si256(), bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    auto lanes = [&](unsigned b) {
        return _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(static_cast<int>(b)), bits), bits);
    };
    const __m256i mi = _mm256_load_si256(reinterpret_cast<const __m256i*>(km)), on = lanes(in);
    const __m256i top = _mm256_mask_i32gather_epi32(zero, mask, mi, on, 1);
    const __m256i bot =
        _mm256_mask_i32gather_epi32(zero, mask, _mm256_add_epi32(mi, _mm256_set1_epi32(static_cast<int>(w - 2))), on, 1);
    auto is_zero = [&](__m256i v, int m) { return _mm256_cmpeq_epi32(_mm256_and_si256(v, _mm256_set1_epi32(m)), zero); };
    const __m256i r = lanes(right), d = lanes(down);
    __m256i bad = _mm256_or_si256(is_zero(top, 0xff), _mm256_and_si256(r, is_zero(top, 0xff00)));
    const __m256i badb =
        _mm256_or_si256(is_zero(bot, 0xff0000), _mm256_and_si256(r, is_zero(bot, static_cast<int>(0xff000000u))));
    bad = _mm256_or_si256(bad, _mm256_and_si256(d, badb));
    return in & ~static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(bad)));
}

// Pass 1 of the 8 samples from q: conic_rule::sample's operations in order, then the interior test (d > 0,
// 0 <= x < W - 1, 0 <= y < H - 1: the 2x2 block is inside; NaN is not interior), fractions and offsets (the
// bottom row only where fy > 0, as sampling.hpp). Lanes that are not interior point at pixel 0.
template <bool SA, bool Pol, bool HasMask>
XCCA_SINGLE_INLINE void pass1(const Tab32& t, const Ring8& k, std::size_t q, Slot32& o) {
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    const __m256 d = _mm256_add_ps(_mm256_mul_ps(k.s, _mm256_loadu_ps(t.a2 + q)), k.cb2);
    __m256 r, iv = zero;
    if constexpr (Pol) {
        const __m256 p = _mm256_mul_ps(_mm256_set1_ps(0.5f),
                                       _mm256_sub_ps(k.p1, _mm256_mul_ps(_mm256_loadu_ps(t.g + q), k.m1)));
        iv = _mm256_div_ps(one, _mm256_mul_ps(d, p));
        r = _mm256_mul_ps(p, iv);
    } else {
        r = _mm256_div_ps(one, d);
    }
    const __m256 y = _mm256_add_ps(
        k.cy, _mm256_mul_ps(k.ly, _mm256_mul_ps(_mm256_add_ps(_mm256_mul_ps(k.s, _mm256_loadu_ps(t.a0 + q)), k.cb0), r)));
    const __m256 x = _mm256_add_ps(
        k.cx, _mm256_mul_ps(k.lx, _mm256_mul_ps(_mm256_add_ps(_mm256_mul_ps(k.s, _mm256_loadu_ps(t.a1 + q)), k.cb1), r)));
    __m256 in = _mm256_and_ps(
        _mm256_and_ps(_mm256_and_ps(_mm256_cmp_ps(d, zero, _CMP_GT_OQ), _mm256_cmp_ps(x, zero, _CMP_GE_OQ)),
                      _mm256_and_ps(_mm256_cmp_ps(x, k.wl, _CMP_LT_OQ), _mm256_cmp_ps(y, zero, _CMP_GE_OQ))),
        _mm256_cmp_ps(y, k.hl, _CMP_LT_OQ));
    const __m256 xs = _mm256_and_ps(in, x), ys = _mm256_and_ps(in, y);  // 0 where not interior
    const __m256 x0 = _mm256_floor_ps(xs), y0 = _mm256_floor_ps(ys);
    const __m256 fx = _mm256_sub_ps(xs, x0), fy = _mm256_sub_ps(ys, y0);
    _mm256_store_ps(o.fx + q, fx);
    _mm256_store_ps(o.fy + q, fy);
    const __m256i ix = _mm256_cvttps_epi32(x0), iy = _mm256_cvttps_epi32(y0);
    const __m256i i00 = _mm256_add_epi32(_mm256_mullo_epi32(iy, k.rs), ix);
    const __m256 below = _mm256_cmp_ps(fy, zero, _CMP_GT_OQ);
    const __m256i down = _mm256_and_si256(_mm256_castps_si256(below), k.rs);
    _mm256_store_si256(reinterpret_cast<__m256i*>(o.k0 + q), i00);
    _mm256_store_si256(reinterpret_cast<__m256i*>(o.k1 + q), _mm256_add_epi32(i00, down));
    if constexpr (HasMask) {  // the mask itself is read in pass 2, after its lines were prefetched
        _mm256_store_si256(reinterpret_cast<__m256i*>(o.km + q), _mm256_add_epi32(_mm256_mullo_epi32(iy, k.w), ix));
        o.right[q / 8] = static_cast<std::uint8_t>(_mm256_movemask_ps(_mm256_cmp_ps(fx, zero, _CMP_GT_OQ)));
        o.down[q / 8] = static_cast<std::uint8_t>(_mm256_movemask_ps(below));
    }
    o.ok[q / 8] = static_cast<std::uint8_t>(_mm256_movemask_ps(in));
    if constexpr (SA && Pol) _mm256_store_ps(o.inv + q, _mm256_mul_ps(_mm256_mul_ps(r, r), iv));
    else if constexpr (SA) _mm256_store_ps(o.inv + q, _mm256_mul_ps(_mm256_mul_ps(r, r), r));
    else if constexpr (Pol) _mm256_store_ps(o.inv + q, _mm256_mul_ps(d, iv));
}

// Pixel pairs (img[k], img[k + 1]) of samples a, a + 1 (low half) and b, b + 1 (high half): scalar 64-bit loads
// (as conic.cpp's pairs4: faster than a gather on the machines measured there).
template <class In>
XCCA_SINGLE_INLINE __m256 pairs(const In* img, const std::int32_t* k, int a, int b) {
    long long e0, e1, e2, e3;
    std::memcpy(&e0, img + k[a], 8);
    std::memcpy(&e1, img + k[a + 1], 8);
    std::memcpy(&e2, img + k[b], 8);
    std::memcpy(&e3, img + k[b + 1], 8);
    const __m128i lo = _mm_insert_epi64(_mm_cvtsi64_si128(e0), e1, 1);
    const __m128i hi = _mm_insert_epi64(_mm_cvtsi64_si128(e2), e3, 1);
    return _mm256_castsi256_ps(_mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1));
}

// Left and right pixels of the 8 samples from the row offsets k, in sample order, as float.
template <class In>
XCCA_SINGLE_INLINE void row_pairs(const In* img, const std::int32_t* k, __m256& left, __m256& right) {
    // (0, 1 | 4, 5) and (2, 3 | 6, 7): the in-lane shuffles below then give samples 0..7 in order
    const __m256 u = pairs(img, k, 0, 4), w = pairs(img, k, 2, 6);
    left = _mm256_shuffle_ps(u, w, _MM_SHUFFLE(2, 0, 2, 0));
    right = _mm256_shuffle_ps(u, w, _MM_SHUFFLE(3, 1, 3, 1));
    if constexpr (std::is_same_v<In, std::int32_t>) {
        left = _mm256_cvtepi32_ps(_mm256_castps_si256(left));
        right = _mm256_cvtepi32_ps(_mm256_castps_si256(right));
    }
}

struct Stream {  // non-temporal stores allowed in [lo, hi) (whole 64-byte lines written by the vector stores)
    std::uintptr_t lo = 0, hi = 0;
};

XCCA_SINGLE_INLINE void store8(float* o, __m256 v, const Stream& st) {
    const auto a = reinterpret_cast<std::uintptr_t>(o);
    if (a >= st.lo && a + 32 <= st.hi && (a & 31) == 0) _mm256_stream_ps(o, v);
    else _mm256_storeu_ps(o, v);
}

struct Ctx {  // what the general path of a ring needs
    const Geo32& geo;
    const Tab32& tab;
    MaskMode mode;
    float fill;
    std::ptrdiff_t rs;
    const std::uint8_t* mask;  // or null
    const int* mask32;         // the same, for the 32-bit gathers
};

// A group of 8 samples that are not all interior: the general path per lane, stored as one vector like the others.
// Out of line: rare (the detector edges; with a mask in renormalize mode also the samples next to masked pixels),
// and kept out of the hot loop's code.
template <class In, bool HasMask>
XCCA_SINGLE_TARGET __attribute__((noinline, cold)) void partial8(const Ctx& cx, const Ring32& ring, std::size_t q,
                                                                 const In* img, float* o, std::uint8_t* om,
                                                                 const Stream& st) {
    alignas(32) float v[8];
    std::uint8_t good[8];
    for (int l = 0; l < 8; ++l) {
        float x, y, d;
        const float corr = coord32(cx.tab, ring, q + l, x, y, d);
        float w = 0.0f;
        good[l] = sample32<In, HasMask>(cx.geo, Method::bilinear, cx.mode, x, y, d, corr, img, cx.rs, cx.mask, w);
        v[l] = good[l] ? w : cx.fill;
    }
    store8(o + q, _mm256_load_ps(v), st);
    if (om) std::memcpy(om + q, good, 8);
}

// The bilinear values (times the correction factors) of the 8 samples from q, all with their 2x2 block inside.
template <class In, bool Corr>
XCCA_SINGLE_INLINE __m256 blend8(const Slot32& sl, std::size_t q, const In* img) {
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    __m256 p00, p01, p10, p11;
    row_pairs(img, sl.k0 + q, p00, p01);
    row_pairs(img, sl.k1 + q, p10, p11);
    const __m256 fx = _mm256_load_ps(sl.fx + q), fy = _mm256_load_ps(sl.fy + q);
    const __m256 right = _mm256_cmp_ps(fx, zero, _CMP_GT_OQ);  // else the right pixel aliases the left
    p01 = _mm256_blendv_ps(p00, p01, right);
    p11 = _mm256_blendv_ps(p10, p11, right);
    const __m256 wx0 = _mm256_sub_ps(one, fx), wy0 = _mm256_sub_ps(one, fy);
    const __m256 tp = _mm256_add_ps(_mm256_mul_ps(wx0, p00), _mm256_mul_ps(fx, p01));
    const __m256 bt = _mm256_add_ps(_mm256_mul_ps(wx0, p10), _mm256_mul_ps(fx, p11));
    __m256 v = _mm256_add_ps(_mm256_mul_ps(wy0, tp), _mm256_mul_ps(fy, bt));
    if constexpr (Corr) v = _mm256_mul_ps(v, _mm256_load_ps(sl.inv + q));
    return v;
}

// Pass 2 of the 8 samples from q of one ring: all interior (and unmasked) -> the vector blend. With a mask in strict
// mode, a group whose 2x2 blocks are all inside the image is still vector work: a sample with a masked pixel is
// invalid (fill). Otherwise (the detector edge, or renormalize with masked pixels) the general path per lane (the
// same rule), stored as one vector like the others.
template <class In, bool Corr, bool HasMask>
XCCA_SINGLE_INLINE void pass2(const Ctx& cx, const Ring32& ring, std::size_t q, const Slot32& sl,
                              const In* img, float* o, std::uint8_t* om, const Stream& st) {
    const unsigned inside = sl.ok[q / 8];
    unsigned ok = inside;
    if constexpr (HasMask)
        if (inside) ok = mask_ok8(cx.mask32, cx.geo.w, sl.km + q, inside, sl.right[q / 8], sl.down[q / 8]);
    if (ok == 0xffu) {
        store8(o + q, blend8<In, Corr>(sl, q, img), st);
        if (om) std::memset(om + q, 1, 8);
        return;
    }
    if constexpr (HasMask) {
        if (cx.mode == MaskMode::strict && inside == 0xffu) {
            const __m256i bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
            const __m256i lanes =
                _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(static_cast<int>(ok)), bits), bits);
            const __m256 v = _mm256_blendv_ps(_mm256_set1_ps(cx.fill), blend8<In, Corr>(sl, q, img),
                                              _mm256_castsi256_ps(lanes));
            store8(o + q, v, st);
            if (om)
                for (int l = 0; l < 8; ++l) om[q + l] = static_cast<std::uint8_t>((ok >> l) & 1u);
            return;
        }
    }
    partial8<In, HasMask>(cx, ring, q, img, o, om, st);
}

// Pass 1 of a whole ring (the first pf rings of a task).
template <bool SA, bool Pol, bool HasMask>
XCCA_SINGLE_TARGET void prime(const Ctx& cx, float s, float c, std::size_t n8, Slot32& o) {
    const Ring8 k = ring8(cx.tab, ring32(cx.tab, s, c), cx.geo, cx.rs);
    for (std::size_t q = 0; q < n8; q += 8) pass1<SA, Pol, HasMask>(cx.tab, k, q, o);
}

// One ring of a task: pass 2 of ring i (with pass 1 of ring ip into next, or prefetches from pre), then the
// scalar tail. A target function of its own: the remap's lambdas do not inherit the AVX2 target.
template <class In, bool SA, bool Pol, bool HasMask>
XCCA_SINGLE_TARGET void ring(const Ctx& cx, const float* s, const float* c, std::size_t i, std::size_t ip,
                             const Slot32& sl, Slot32* next, const Slot32* pre, const In* pimg, const In* img,
                             float* o, std::uint8_t* om, const Stream& st, std::size_t n, std::size_t n8) {
    constexpr bool Corr = SA || Pol;
    const Tab32& tab = cx.tab;
    const Geo32& geo = cx.geo;
    const Ring32 ring = ring32(tab, s[i], c[i]);
    if (next) {
        const Ring8 k = ring8(tab, ring32(tab, s[ip], c[ip]), geo, cx.rs);
        for (std::size_t q = 0; q < n8; q += 8) {
            pass1<SA, Pol, HasMask>(tab, k, q, *next);
            if (q) {  // one group later: the offsets are stored
                __builtin_prefetch(img + next->k0[q - 8]);
                __builtin_prefetch(img + next->k0[q - 6]);
                __builtin_prefetch(img + next->k0[q - 4]);
                __builtin_prefetch(img + next->k0[q - 2]);
                __builtin_prefetch(img + next->k1[q - 8]);  // the bottom rows too (measured: 0.59 -> 0.57x)
                __builtin_prefetch(img + next->k1[q - 4]);
                if constexpr (HasMask) {  // and the mask lines pass 2 reads (64 pixels per line)
                    __builtin_prefetch(cx.mask + next->km[q - 8]);
                    __builtin_prefetch(cx.mask + next->km[q - 8] + geo.w);
                }
            }
            pass2<In, Corr, HasMask>(cx, ring, q, sl, img, o, om, st);
        }
    } else {
        for (std::size_t q = 0; q < n8; q += 8) {
            if (pre) {
                __builtin_prefetch(pimg + pre->k0[q]);
                __builtin_prefetch(pimg + pre->k0[q + 2]);
                __builtin_prefetch(pimg + pre->k0[q + 4]);
                __builtin_prefetch(pimg + pre->k0[q + 6]);
                __builtin_prefetch(pimg + pre->k1[q]);
                __builtin_prefetch(pimg + pre->k1[q + 4]);
            }
            pass2<In, Corr, HasMask>(cx, ring, q, sl, img, o, om, st);
        }
    }
    for (std::size_t q = n8; q < n; ++q) {  // the scalar tail: the general path
        float x, y, d, v = 0.0f;
        const float corr = coord32(tab, ring, q, x, y, d);
        const bool ok =
            sample32<In, HasMask>(geo, Method::bilinear, cx.mode, x, y, d, corr, img, cx.rs, cx.mask, v);
        o[q] = ok ? v : cx.fill;
        if (om) om[q] = ok;
    }
}

template <class In, bool SA, bool Pol, bool HasMask>
void fused(const Geo32& geo, const conic_rule::Tiling& tiling, const float* s, const float* c, const Tab32& base,
           std::size_t nphi, const In* images, std::ptrdiff_t frame_stride, std::ptrdiff_t rs,
           const std::uint8_t* mask, MaskMode mode, float fill, float* out, std::uint8_t* out_mask, int n_threads) {
    constexpr std::size_t pf = 4, slots = pf + 1;
    const std::size_t nr = tiling.nr, n_frames = tiling.n_frames;
    const bool stack = n_frames > 1;
    // Non-temporal stores for outputs well beyond the caches (as conic.cpp).
    const bool stream = n_frames * nr * nphi * sizeof(float) >= (std::size_t{8} << 20);
    parallel_for(tiling.tasks(), n_threads, 4, [&](std::size_t t0, std::size_t t1) {
        // one slot per ring of the tile for a stack (pass 1 once per block of frames), else a ring buffer
        std::vector<Slot32> buf(stack ? tile_rings : slots);
        for (std::size_t t = t0; t < t1; ++t) {
            const conic_rule::Task tk = tiling(t);
            const std::size_t i0 = tk.i0, i1 = tk.i1, n = tk.n, n8 = n & ~std::size_t{7}, nt = i1 - i0;
            Tab32 tab = base;
            tab.a0 += tk.j0;
            tab.a1 += tk.j0;
            tab.a2 += tk.j0;
            if (tab.g) tab.g += tk.j0;
            const Ctx cx{geo, tab, mode, fill, rs, mask, reinterpret_cast<const int*>(mask)};
            auto slot = [&](std::size_t i) -> Slot32& { return stack ? buf[i - i0] : buf[i % slots]; };
            auto frame = [&](std::size_t f) { return images + static_cast<std::ptrdiff_t>(f) * frame_stride; };
            for (std::size_t f = tk.f0; f < tk.f1; ++f) {
                const In* img = frame(f);
                if (f == tk.f0)
                    for (std::size_t i = i0; i < std::min(i1, i0 + pf); ++i)
                        prime<SA, Pol, HasMask>(cx, s[i], c[i], n8, slot(i));
                for (std::size_t i = i0; i < i1; ++i) {
                    const std::size_t ip = i + pf;
                    Slot32* next = f == tk.f0 && ip < i1 ? &slot(ip) : nullptr;
                    // further frames of a stack: prefetch from the slot pf rings ahead (or the next frame's)
                    const Slot32* pre = nullptr;
                    const In* pimg = nullptr;
                    if (stack && !next) {
                        if (ip < i1) {
                            pre = &slot(ip);
                            pimg = img;
                        } else if (f + 1 < tk.f1 && ip - nt < i1) {
                            pre = &slot(ip - nt);
                            pimg = frame(f + 1);
                        }
                    }
                    float* o = out + (f * nr + i) * nphi + tk.j0;
                    std::uint8_t* om = (f == 0 && out_mask) ? out_mask + i * nphi + tk.j0 : nullptr;
                    Stream st;
                    if (stream) {
                        const auto a = reinterpret_cast<std::uintptr_t>(o);
                        st.lo = (a + 63) & ~std::uintptr_t{63};
                        st.hi = std::max(st.lo, (a + n8 * sizeof(float)) & ~std::uintptr_t{63});
                    }
                    ring<In, SA, Pol, HasMask>(cx, s, c, i, ip, slot(i), next, pre, pimg, img, o, om, st, n, n8);
                }
            }
        }
        if (stream) _mm_sfence();  // non-temporal stores are weakly ordered: drain before the join
    });
}
#pragma GCC diagnostic pop
#endif

}  // namespace

template <class In>
void ConicGrid::remap_single(const In* images, std::size_t n_frames, std::ptrdiff_t frame_stride,
                             std::ptrdiff_t row_stride, const std::uint8_t* mask, Method method, MaskMode mode,
                             float fill, float* out, std::uint8_t* out_mask, int n_threads) const {
    const std::size_t nr = s_.size(), nphi = a_.size() / 3;
    const Geo32 geo{double(width_), double(height_), std::ptrdiff_t(width_), std::ptrdiff_t(height_)};
    const Tab32 base{a32_.data(),       a32_.data() + nphi, a32_.data() + 2 * nphi, g32_.empty() ? nullptr : g32_.data(),
                     b32_[0],           b32_[1],            b32_[2],                cx32_,
                     cy32_,             ly32_,              lx32_,                  solid_angle_};
    const conic_rule::Tiling tiling(n_frames, nr, nphi, tile_rings, chunk);
#ifdef XCCA_SINGLE_AVX2
    if constexpr (std::is_same_v<In, float> || std::is_same_v<In, std::int32_t>) {
        const double span = std::fabs(double(row_stride)) * double(height_) + double(width_);
        if (method == Method::bilinear && span < 2147483647.0 && xcca::detail::cpu_has_avx2()) {
            const bool sa = solid_angle_, pol = !g32_.empty();
            auto go = [&](auto sa_tag, auto pol_tag) {
                constexpr bool SA = decltype(sa_tag)::value, Pol = decltype(pol_tag)::value;
                if (mask)
                    fused<In, SA, Pol, true>(geo, tiling, s32_.data(), c32_.data(), base, nphi, images, frame_stride,
                                             row_stride, mask, mode, fill, out, out_mask, n_threads);
                else
                    fused<In, SA, Pol, false>(geo, tiling, s32_.data(), c32_.data(), base, nphi, images,
                                              frame_stride, row_stride, nullptr, mode, fill, out, out_mask, n_threads);
            };
            using T = std::true_type;
            using F = std::false_type;
            if (sa && pol) go(T{}, T{});
            else if (sa) go(T{}, F{});
            else if (pol) go(F{}, T{});
            else go(F{}, F{});
            return;
        }
    }
#endif
    if (mask)
        portable<In, true>(geo, tiling, s32_.data(), c32_.data(), base, nphi, images, frame_stride, row_stride, mask,
                           method, mode, fill, out, out_mask, n_threads);
    else
        portable<In, false>(geo, tiling, s32_.data(), c32_.data(), base, nphi, images, frame_stride, row_stride,
                            nullptr, method, mode, fill, out, out_mask, n_threads);
}

#define XCCA_SINGLE_INSTANTIATE(In)                                                                               \
    template void ConicGrid::remap_single<In>(const In*, std::size_t, std::ptrdiff_t, std::ptrdiff_t,           \
                                              const std::uint8_t*, Method, MaskMode, float, float*, std::uint8_t*, \
                                              int) const;
XCCA_SINGLE_INSTANTIATE(std::uint8_t)
XCCA_SINGLE_INSTANTIATE(std::int8_t)
XCCA_SINGLE_INSTANTIATE(std::uint16_t)
XCCA_SINGLE_INSTANTIATE(std::int16_t)
XCCA_SINGLE_INSTANTIATE(std::uint32_t)
XCCA_SINGLE_INSTANTIATE(std::int32_t)
XCCA_SINGLE_INSTANTIATE(std::uint64_t)
XCCA_SINGLE_INSTANTIATE(std::int64_t)
XCCA_SINGLE_INSTANTIATE(float)
XCCA_SINGLE_INSTANTIATE(double)
#undef XCCA_SINGLE_INSTANTIATE

}  // namespace xcca::conic
