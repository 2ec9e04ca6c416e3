#include "xcca/conic.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <utility>

#include "xcca/threads.hpp"
#include "cpu_features.hpp"

#if defined(__GNUC__) && defined(__x86_64__) && !defined(XCCA_NO_SIMD)
#include <immintrin.h>
#endif
#include <type_traits>

// Coordinates must round exactly as written (see conic.hpp): no contraction to fused multiply-add.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off", "tree-vectorize", "vect-cost-model=dynamic", "no-trapping-math")
#elif defined(__clang__)
#pragma clang fp contract(off)
#endif

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(XCCA_NO_CLONES)
// The coordinate pass (divisions) vectorises; AVX-512 and AVX2 clones chosen at load time.
#define XCCA_CONIC_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define XCCA_CONIC_CLONES
#endif

#include "conic_rule.hpp"  // after the pragma (no FMA)
#include "sampling.hpp"  // after the pragma (no FMA)
#if defined(__GNUC__) && defined(__x86_64__) && !defined(XCCA_NO_SIMD)
// After the pragma too: GCC inlines a function only into callers with the same optimisation options, and the pixel
// loads must inline into the loops below (measured: called out of line before, a quarter of the fused path's time).
#include "simd512.hpp"
#endif

namespace xcca::conic {

// The per-angle tables of one chunk of angles and the grid's scalars (see ConicGrid::tables).
struct Tables {
    const double *a0, *a1, *a2, *g;
    double b0, b1, b2, cx, cy, ly, lx;
    bool sa;
};

namespace {

// The sampling rules of xcca/polar.hpp: the same helpers as polar.cpp (sampling.hpp).
using sampling::nearest_index;
using sampling::sample_bilinear;
using sampling::split;

struct Geo {
    double W, H;
    std::ptrdiff_t w, h;
    const std::uint8_t* mask = nullptr;  // the fused AVX2 path's pixel mask (nonzero = valid), or null
};

constexpr std::size_t chunk = 128;  // samples per coordinate pass: pf + 1 rows of buffers stay in L1


// The portable path's pass-1 results for one ring of a tile (coordinates, correction factors, offsets, fractions).
struct PortableSlot {
    alignas(64) double x[chunk], y[chunk], den[chunk], inv[chunk], fx[chunk], fy[chunk];
    alignas(64) std::int64_t k[chunk];
    alignas(64) std::uint8_t ok[chunk];
};


// Pass 1: coordinates (and correction factors) of n samples of ring (s, c) from angle j0: conic_rule.hpp's loops,
// vectorised by the compiler (the division dominates) in each clone.
XCCA_CONIC_CLONES void coordinates(const Tables& t, double s, double c, std::size_t n, double* __restrict x,
                                   double* __restrict y, double* __restrict den, double* __restrict inv) {
    conic_rule::ring_coordinates(n, s, c, t.b0, t.b1, t.b2, t.a0, t.a1, t.a2, t.g, t.sa, t.cx, t.cy, t.ly, t.lx, x, y,
                                 den, inv);
}

// Pass 1b (vectorised): pixel offsets and fractions of the samples the fast loops take. Bilinear: interior samples
// (den > 0, 0 <= x < W-1, 0 <= y < H-1: the 2x2 block is inside), k = offset of the top-left pixel, fractions fx, fy.
// Nearest: inside samples (den > 0, -0.5 <= x < W-0.5, same for y), k = offset of the nearest pixel. floor() is
// exact, so these are the rules of xcca/polar.hpp (split / nearest_index) for the same coordinates.
XCCA_CONIC_CLONES void prepare(bool nearest, std::size_t n, const double* __restrict x, const double* __restrict y,
                               const double* __restrict den, double W, double H, std::ptrdiff_t rs,
                               std::int64_t* __restrict k, double* __restrict fx, double* __restrict fy,
                               std::uint8_t* __restrict ok) {
    // Non-short-circuit tests (&) and selects only: if-converted and vectorised by the compiler.
    const std::int64_t rs64 = rs;
    if (nearest) {
        const double wl = W - 0.5, hl = H - 0.5;
        for (std::size_t q = 0; q < n; ++q) {
            const double xq = x[q], yq = y[q];
            const bool in = (den[q] > 0.0) & (xq >= -0.5) & (xq < wl) & (yq >= -0.5) & (yq < hl);
            const double xs = in ? xq : 0.0, ys = in ? yq : 0.0;
            const double x0 = std::floor(xs), y0 = std::floor(ys);
            const double xn = x0 + ((xs - x0) >= 0.5 ? 1.0 : 0.0), yn = y0 + ((ys - y0) >= 0.5 ? 1.0 : 0.0);
            k[q] = static_cast<std::int64_t>(yn) * rs64 + static_cast<std::int64_t>(xn);
            ok[q] = static_cast<std::uint8_t>(in);
        }
        return;
    }
    const double wl = W - 1.0, hl = H - 1.0;
    for (std::size_t q = 0; q < n; ++q) {
        const double xq = x[q], yq = y[q];
        const bool in = (den[q] > 0.0) & (xq >= 0.0) & (xq < wl) & (yq >= 0.0) & (yq < hl);
        const double xs = in ? xq : 0.0, ys = in ? yq : 0.0;
        const double x0 = std::floor(xs), y0 = std::floor(ys);
        fx[q] = xs - x0;
        fy[q] = ys - y0;
        k[q] = static_cast<std::int64_t>(y0) * rs64 + static_cast<std::int64_t>(x0);
        ok[q] = static_cast<std::uint8_t>(in);
    }
}

// Pass 2 fast loops (no pixel mask): every sample is computed branch-free as if interior (prepare() points the
// others at pixel 0 with zero fractions, so the loads stay inside the image), which lets the compiler vectorise them
// with gathers; the non-interior samples are then redone by the general path.
template <class In, class Out, bool Corr>
XCCA_CONIC_CLONES void fast_bilinear(std::size_t n, const std::int64_t* __restrict k, const double* __restrict fxb,
                                     const double* __restrict fyb, const double* __restrict inv, const In* img,
                                     std::ptrdiff_t rs, Out* __restrict o) {
    for (std::size_t q = 0; q < n; ++q) {
        const double fx = fxb[q], fy = fyb[q];
        const std::ptrdiff_t dx = fx > 0.0 ? 1 : 0, dy = fy > 0.0 ? rs : 0;
        const In* p = img + k[q];
        const double p00 = p[0], p01 = p[dx], p10 = p[dy], p11 = p[dy + dx];
        const double wx0 = 1.0 - fx, wy0 = 1.0 - fy;
        double v = wy0 * (wx0 * p00 + fx * p01) + fy * (wx0 * p10 + fx * p11);
        if (Corr) v *= inv[q];
        o[q] = static_cast<Out>(v);
    }
}
template <class In, class Out, bool Corr>
XCCA_CONIC_CLONES void fast_nearest(std::size_t n, const std::int64_t* __restrict k, const double* __restrict inv,
                                    const In* img, Out* __restrict o) {
    for (std::size_t q = 0; q < n; ++q) {
        double v = static_cast<double>(img[k[q]]);
        if (Corr) v *= inv[q];
        o[q] = static_cast<Out>(v);
    }
}

// Pass 2: one row chunk of samples.
template <class In, class Out, bool HasMask, bool Corr>
void sample_row(const Geo& g, Method method, MaskMode mode, std::size_t n, const double* x, const double* y,
                const double* den, const double* inv, const std::int64_t* k, const double* fxb, const double* fyb,
                const std::uint8_t* okb, const In* img, std::ptrdiff_t rs, const std::uint8_t* mask, Out fill,
                Out* o, std::uint8_t* om) {
    if (method == Method::nearest) {
        if (!HasMask) {
            fast_nearest<In, Out, Corr>(n, k, inv, img, o);
            for (std::size_t q = 0; q < n; ++q) {
                if (!okb[q]) o[q] = fill;
                if (om) om[q] = okb[q];
            }
            return;
        }
        for (std::size_t q = 0; q < n; ++q) {
            bool ok = okb[q];
            double v = 0.0;
            if (ok) {
                const std::ptrdiff_t ix = nearest_index(x[q]), iy = nearest_index(y[q]);
                ok = mask[iy * g.w + ix] != 0;
                if (ok) v = static_cast<double>(img[k[q]]);
            }
            if (Corr) v *= inv[q];
            o[q] = ok ? static_cast<Out>(v) : fill;
            if (om) om[q] = ok;
        }
        return;
    }
    if (!HasMask) {
        fast_bilinear<In, Out, Corr>(n, k, fxb, fyb, inv, img, rs, o);
        for (std::size_t q = 0; q < n; ++q) {
            if (okb[q]) {
                if (om) om[q] = 1;
                continue;
            }
            double v = 0.0;
            const bool ok = den[q] > 0.0 && sample_bilinear<In, false>(g, x[q], y[q], img, rs, mask, mode, v);
            if (Corr) v *= inv[q];
            o[q] = ok ? static_cast<Out>(v) : fill;
            if (om) om[q] = ok;
        }
        return;
    }
    for (std::size_t q = 0; q < n; ++q) {
        double v = 0.0;
        const bool ok = den[q] > 0.0 && sample_bilinear<In, true>(g, x[q], y[q], img, rs, mask, mode, v);
        if (Corr) v *= inv[q];
        o[q] = ok ? static_cast<Out>(v) : fill;
        if (om) om[q] = ok;
    }
}


#if defined(__GNUC__) && defined(__x86_64__) && !defined(XCCA_NO_SIMD)
#define XCCA_CONIC_AVX512 1
// Fused AVX-512 path (bilinear, no pixel mask, 32-bit pixels): pass 1 computes, 8 samples at a time, the
// coordinates, the interior test, the pixel offsets of the top and bottom pixel pairs, the fractions and the
// correction factor in double precision with the operations of coordinates() / prepare() in the same order (no FMA:
// fp-contract is off, and every operation is an explicit intrinsic), so the results are bit-identical; pass 2 loads
// the pixel pairs as 64-bit scalars (gathers are microcoded on Zen and stall the instructions around them) and
// blends. Lanes that are not interior are redone by the general path. Measured on the 2527x2463 -> 900x5000
// benchmark, 1 thread: see README and CHANGELOG.md.
#define XCCA_CONIC_TARGET512 __attribute__((target("avx512f,avx512vl,avx512dq"), optimize("fp-contract=off")))
#define XCCA_CONIC_INLINE inline __attribute__((always_inline))
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// Angles per tile of the fused AVX-512 path: 256, not 128 (half as many tiles, each ring's arc twice as long; with
// the far prefetch of ring512, 2527x2463 -> 900x5000, 1 thread: tilted/untilted 1.40x -> 1.36x, see README).
constexpr std::size_t chunk512 = 256;

struct Slot512 {
    alignas(64) double fx[chunk512], fy[chunk512], inv[chunk512];
    alignas(64) std::int32_t k0[chunk512], k1[chunk512];
    std::uint8_t ok[chunk512 / 8];
};

// Scalar coordinates of one sample: conic_rule.hpp's rule, as coordinates() (and the vector pass 1 groups).
// Returns the sample's correction factor (1 without corrections).
inline double coord1(const Tables& t, double s, double c, std::size_t q, double& x, double& y, double& d) {
    const double cb0 = c * t.b0, cb1 = c * t.b1, cb2 = c * t.b2, c2 = c * c, p1 = 1.0 + c2, m1 = 1.0 - c2;
    return conic_rule::sample_any(t.g != nullptr, t.sa, s, cb0, cb1, cb2, p1, m1, t.a0[q], t.a1[q], t.a2[q],
                                  t.g ? t.g[q] : 0.0, t.cx, t.cy, t.ly, t.lx, x, y, d);
}

// Pass 1 of the samples [q0, n) after the last whole vector group (both fused paths): the general path takes them,
// so only their correction factor is stored (and offset 0, a harmless prefetch address).
template <bool SA, bool Pol, std::size_t Lanes, class Slot>
inline void pass1_tail(const Tables& t, double s, double c, std::size_t q0, std::size_t n, Slot& o) {
    if (q0 < n) o.ok[q0 / Lanes] = 0;
    for (std::size_t q = q0; q < n; ++q) {
        o.k0[q] = 0;
        double x, y, d;
        const double corr = coord1(t, s, c, q, x, y, d);
        if constexpr (SA || Pol) o.inv[q] = corr;
    }
}

// Non-temporal stores are allowed in the byte range [lo, hi) of the output (whole 64-byte lines that this tile row
// writes entirely with vector stores); empty (lo == hi): ordinary stores only. Whole lines only, and only those the
// vector stores write in full (groups of Lanes samples; the scalar tail group is excluded): a line written partly by
// streams and partly by ordinary stores costs far more than the stream saves (see polar.cpp).
struct Stream512 {
    std::uintptr_t lo = 0, hi = 0;
};
template <class Out>
inline Stream512 stream_range(const Out* o, std::size_t n, std::size_t lanes, bool stream) {
    Stream512 st;
    if (stream) {
        const std::uintptr_t a = reinterpret_cast<std::uintptr_t>(o);
        st.lo = (a + 63) & ~std::uintptr_t{63};
        st.hi = std::max(st.lo, (a + (n - n % lanes) * sizeof(Out)) & ~std::uintptr_t{63});
    }
    return st;
}

// The per-lane kernels below share one driver (fused_remap): for each tile (16 rings x one chunk of angles) pass 1
// of the first pf rings, then per ring i one fused loop over the vector groups that runs pass 1 of ring i + pf (same
// tile) and pass 2 of ring i group by group, so that the divisions of pass 1 overlap the pixel loads of pass 2
// (separate loops ran them one after the other: measured in CHANGELOG.md).
//
// Stacks: pass 1 depends on the geometry only, not on the frame. A task is then (block of frames, ring tile, angle
// chunk): the first frame of the block runs the fused loops above, keeping the slots of all 16 rings of the tile
// (~66 KB with 128 angles, AVX2; ~133 KB with 256, AVX-512: L2), and every further frame of the block runs pass 2
// alone from those slots (the same operations on the same slot values: bit-identical to remapping frame by frame).
// The pixel prefetch keeps its distance of pf rings, across frames too (the last rings of a frame prefetch the first
// rings of the next).

template <class K, class In, class Out, class TablesFn>
void fused_remap(const Geo& geo, const double* s, const double* c, std::size_t nr, std::size_t nphi,
                 TablesFn&& tables, const In* images, std::size_t n_frames, std::ptrdiff_t frame_stride,
                 std::ptrdiff_t row_stride, MaskMode mode, Out fill, Out* out, std::uint8_t* out_mask,
                 int n_threads) {
    using Slot = typename K::Slot;
    constexpr std::size_t tr = 16, pf = 4, slots = pf + 1;
    const conic_rule::Tiling tiling(n_frames, nr, nphi, tr, K::angles);
    const bool stack = n_frames > 1;
    // Non-temporal stores for outputs well beyond the caches (they skip reading every output line before writing
    // it); small outputs stay cached for the caller (as polar.cpp).
    const bool stream = n_frames * nr * nphi * sizeof(Out) >= (std::size_t{8} << 20);
    // Compiled twice: one frame (the ring buffer of pf + 1 slots, no stack bookkeeping per ring) and stacks.
    auto run = [&](auto stack_tag) {
        constexpr bool Stack = decltype(stack_tag)::value;
        parallel_for(tiling.tasks(), n_threads, 4, [&](std::size_t t0, std::size_t t1) {
            // a ring buffer of pf + 1 slots for one frame (~20-41 KB), one slot per ring of the tile for a stack
            // (~66-133 KB): heap, not the (small) thread stack
            std::vector<Slot> buf(Stack ? tr : slots);
            for (std::size_t t = t0; t < t1; ++t) {
                const conic_rule::Task tk = tiling(t);  // plain copies below: the lambdas capture them
                const std::size_t f0 = tk.f0, f1 = tk.f1, i0 = tk.i0, i1 = tk.i1, j0 = tk.j0, n = tk.n;
                const std::size_t nt = i1 - i0;
                const Tables tab = tables(j0);
                auto slot = [&](std::size_t i) -> Slot& { return Stack ? buf[i - i0] : buf[i % slots]; };
                auto frame = [&](std::size_t f) { return images + static_cast<std::ptrdiff_t>(f) * frame_stride; };
                for (std::size_t f = f0; f < f1; ++f) {
                    const In* img = frame(f);
                    if (f == f0)
                        for (std::size_t i = i0; i < std::min(i1, i0 + pf); ++i)
                            K::prime(tab, s[i], c[i], n, geo.W, geo.H, row_stride, slot(i));
                    for (std::size_t i = i0; i < i1; ++i) {
                        const std::size_t ip = i + pf;
                        // First frame of the block: ring i + pf is prepared (pass 1) while ring i is sampled, and
                        // its pixels are prefetched: the ring walk jumps between image rows, which hardware
                        // prefetchers do not follow. Only rings of this tile (the next tile's first rings are
                        // prepared there).
                        Slot* next = f == f0 && ip < i1 ? &slot(ip) : nullptr;
                        // Further frames of a stack: the pixels pf rings ahead are prefetched from their slot
                        // (ring i + pf of this frame, or ring i + pf - nt of the next frame of the block).
                        const Slot* pre = nullptr;
                        const In* pimg = nullptr;
                        if constexpr (Stack) {
                            if (!next && ip < i1) {
                                pre = &slot(ip);
                                pimg = img;
                            } else if (!next && f + 1 < f1 && ip - nt < i1) {
                                pre = &slot(ip - nt);
                                pimg = frame(f + 1);
                            }
                        }
                        Out* o = out + (f * nr + i) * nphi + j0;
                        std::uint8_t* om = (f == 0 && out_mask) ? out_mask + i * nphi + j0 : nullptr;
                        if (pre)
                            K::replay(geo, tab, n, s[i], c[i], slot(i), *pre, pimg, img, row_stride, mode, fill, o,
                                      om, stream);
                        else
                            K::ring(geo, tab, n, s[i], c[i], slot(i), next ? s[ip] : 0.0, next ? c[ip] : 0.0, next,
                                    img, row_stride, mode, fill, o, om, stream);
                    }
                }
            }
            if (stream) _mm_sfence();  // non-temporal stores are weakly ordered: drain before the join
        });
    };
    if (stack) run(std::true_type{});
    else run(std::false_type{});
}

// The broadcast constants of pass 1 for one ring.
struct Ring512 {
    __m512d vs, cb0, cb1, cb2, vcx, vcy, vly, vlx, p1, m1;
    __m256i vrs, wi, hi;  // row stride, W - 1, H - 1
};
XCCA_CONIC_TARGET512 XCCA_CONIC_INLINE Ring512 ring_consts512(const Tables& t, double s, double c, double W, double H,
                                                   std::ptrdiff_t rs) {
    const double c2 = c * c;
    // W, H <= 2^31 (ConicGrid's constructor): W - 1 and H - 1 fit in int32.
    return Ring512{_mm512_set1_pd(s),       _mm512_set1_pd(c * t.b0), _mm512_set1_pd(c * t.b1),
                   _mm512_set1_pd(c * t.b2), _mm512_set1_pd(t.cx),    _mm512_set1_pd(t.cy),
                   _mm512_set1_pd(t.ly),    _mm512_set1_pd(t.lx),     _mm512_set1_pd(1.0 + c2),
                   _mm512_set1_pd(1.0 - c2), _mm256_set1_epi32(static_cast<int>(rs)),
                   _mm256_set1_epi32(static_cast<int>(static_cast<std::int64_t>(W) - 1)),
                   _mm256_set1_epi32(static_cast<int>(static_cast<std::int64_t>(H) - 1))};
}

// Pass 1, samples [q, q + 8) of one ring.
template <bool SA, bool Pol>
XCCA_CONIC_TARGET512 XCCA_CONIC_INLINE void pass1_group512(const Tables& t, const Ring512& k, std::size_t q, Slot512& o) {
    const __m512d one = _mm512_set1_pd(1.0), zero = _mm512_setzero_pd(), half = _mm512_set1_pd(0.5);
    const __m512d d = _mm512_add_pd(_mm512_mul_pd(k.vs, _mm512_loadu_pd(t.a2 + q)), k.cb2);
    // one division per sample (see coordinates())
    __m512d r, iv = one;
    if constexpr (Pol) {
        const __m512d p = _mm512_mul_pd(half, _mm512_sub_pd(k.p1, _mm512_mul_pd(_mm512_loadu_pd(t.g + q), k.m1)));
        iv = _mm512_div_pd(one, _mm512_mul_pd(d, p));
        r = _mm512_mul_pd(p, iv);
    } else {
        r = _mm512_div_pd(one, d);
    }
    const __m512d y = _mm512_add_pd(k.vcy, _mm512_mul_pd(k.vly, _mm512_mul_pd(_mm512_add_pd(_mm512_mul_pd(k.vs, _mm512_loadu_pd(t.a0 + q)), k.cb0), r)));
    const __m512d x = _mm512_add_pd(k.vcx, _mm512_mul_pd(k.vlx, _mm512_mul_pd(_mm512_add_pd(_mm512_mul_pd(k.vs, _mm512_loadu_pd(t.a1 + q)), k.cb1), r)));
    // Interior: den > 0, 0 <= x < W-1, 0 <= y < H-1, tested as 0 <= floor(x) < W-1 (and y) on the int32 floors
    // compared unsigned: the same set (the bounds are integers), and NaN or out-of-range floors convert to INT_MIN,
    // which is not interior. Three compares instead of five; the stored fractions and offsets are those of
    // prepare() (zero where not interior).
    const __m512d x0 = _mm512_roundscale_pd(x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    const __m512d y0 = _mm512_roundscale_pd(y, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    const __m256i ix = _mm512_cvttpd_epi32(x0), iy = _mm512_cvttpd_epi32(y0);
    const __mmask8 in = _mm512_cmp_pd_mask(d, zero, _CMP_GT_OQ) & _mm256_cmplt_epu32_mask(ix, k.wi) &
                        _mm256_cmplt_epu32_mask(iy, k.hi);
    const __m512d fy = _mm512_maskz_sub_pd(in, y, y0);
    _mm512_store_pd(o.fx + q, _mm512_maskz_sub_pd(in, x, x0));
    _mm512_store_pd(o.fy + q, fy);
    const __mmask8 down = _mm512_cmp_pd_mask(fy, zero, _CMP_GT_OQ);
    const __m256i i00 = _mm256_maskz_add_epi32(in, _mm256_mullo_epi32(iy, k.vrs), ix);
    _mm256_store_si256(reinterpret_cast<__m256i*>(o.k0 + q), i00);
    _mm256_store_si256(reinterpret_cast<__m256i*>(o.k1 + q), _mm256_add_epi32(i00, _mm256_maskz_mov_epi32(down, k.vrs)));
    o.ok[q / 8] = static_cast<std::uint8_t>(in);
    if constexpr (SA || Pol) {
        __m512d corr;
        if constexpr (SA && Pol) corr = _mm512_mul_pd(_mm512_mul_pd(r, r), iv);
        else if constexpr (SA) corr = _mm512_mul_pd(_mm512_mul_pd(r, r), r);
        else corr = _mm512_mul_pd(d, iv);
        _mm512_store_pd(o.inv + q, corr);
    }
}

// Pass 1 of a whole ring (the first rings of a tile).
template <bool SA, bool Pol>
XCCA_CONIC_TARGET512 void pass1_ring512(const Tables& t, double s, double c, std::size_t n, double W, double H,
                                        std::ptrdiff_t rs, Slot512& o) {
    const Ring512 k = ring_consts512(t, s, c, W, H, rs);
    const std::size_t n8 = n & ~std::size_t{7};
    for (std::size_t q = 0; q < n8; q += 8) pass1_group512<SA, Pol>(t, k, q, o);
    pass1_tail<SA, Pol, 8>(t, s, c, n8, n, o);
}

using simd512::pairs8;  // the pixel-pair loads of polar.cpp (simd512.hpp)
using simd512::widen8;

template <class Out>
XCCA_CONIC_TARGET512 inline void store8(Out* o, __m512d v, const Stream512& st) {
    const std::uintptr_t a = reinterpret_cast<std::uintptr_t>(o);
    const bool nt = a >= st.lo && a + 8 * sizeof(Out) <= st.hi && (a & (8 * sizeof(Out) - 1)) == 0;
    if constexpr (std::is_same_v<Out, float>) {
        if (nt) _mm256_stream_ps(o, _mm512_cvtpd_ps(v)); else _mm256_storeu_ps(o, _mm512_cvtpd_ps(v));
    } else {
        if (nt) _mm512_stream_pd(o, v); else _mm512_storeu_pd(o, v);
    }
}

// Pass 2, samples [q, q + 8) of one ring (fewer at the end of the ring): 64-bit pixel-pair loads (gathers are
// microcoded on Zen and stall the instructions around them) and blends; lanes that are not interior are redone by
// the general path.
template <class In, class Out, bool Corr>
XCCA_CONIC_TARGET512 XCCA_CONIC_INLINE void pass2_group512(const Geo& g, const Tables& t, double s, double c, std::size_t n,
                                                std::size_t q, const Slot512& sl, const In* img, std::ptrdiff_t rs,
                                                MaskMode mode, Out fill, Out* o, std::uint8_t* om,
                                                const Stream512& st) {
    const __m512i deinterleave = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    const __m512d one = _mm512_set1_pd(1.0), zero = _mm512_setzero_pd();
    const unsigned ok = sl.ok[q / 8];
    alignas(64) double v[8];
    if (ok) {
        const __m512i topi = pairs8(img, sl.k0 + q, deinterleave), boti = pairs8(img, sl.k1 + q, deinterleave);
        const __m512d fx = _mm512_load_pd(sl.fx + q), fy = _mm512_load_pd(sl.fy + q);
        const __mmask8 right = _mm512_cmp_pd_mask(fx, zero, _CMP_GT_OQ);
        const __m512d p00 = widen8<In>(_mm512_castsi512_si256(topi));
        const __m512d p10 = widen8<In>(_mm512_castsi512_si256(boti));
        const __m512d p01 = _mm512_mask_blend_pd(right, p00, widen8<In>(_mm512_extracti64x4_epi64(topi, 1)));
        const __m512d p11 = _mm512_mask_blend_pd(right, p10, widen8<In>(_mm512_extracti64x4_epi64(boti, 1)));
        const __m512d wx0 = _mm512_sub_pd(one, fx), wy0 = _mm512_sub_pd(one, fy);
        const __m512d tp = _mm512_add_pd(_mm512_mul_pd(wx0, p00), _mm512_mul_pd(fx, p01));
        const __m512d bt = _mm512_add_pd(_mm512_mul_pd(wx0, p10), _mm512_mul_pd(fx, p11));
        __m512d val = _mm512_add_pd(_mm512_mul_pd(wy0, tp), _mm512_mul_pd(fy, bt));
        if constexpr (Corr) val = _mm512_mul_pd(val, _mm512_load_pd(sl.inv + q));
        if (ok == 0xffu && q + 8 <= n) {
            store8(o + q, val, st);
            if (om) std::memset(om + q, 1, 8);
            return;
        }
        _mm512_store_pd(v, val);
    }
    // Lanes that are not interior: the general path, written into v (a full group is then stored as a vector,
    // like the others, so that streamed lines are written by vector stores only).
    const std::size_t m = std::min<std::size_t>(8, n - q);
    alignas(64) std::uint8_t good[8];
    for (std::size_t l = 0; l < m; ++l) {
        good[l] = 1;
        if ((ok >> l) & 1u) continue;
        double x, y, d, w = 0.0;
        coord1(t, s, c, q + l, x, y, d);
        const bool gl = d > 0.0 && sample_bilinear<In, false>(g, x, y, img, rs, nullptr, mode, w);
        if (Corr) w *= sl.inv[q + l];
        v[l] = w;
        good[l] = gl;
    }
    if (m == 8) {
        __m512d val = _mm512_load_pd(v);
        // invalid lanes hold fill (converted to Out exactly as the scalar assignment would)
        alignas(64) Out tmp[8];
        if constexpr (std::is_same_v<Out, float>) _mm256_store_ps(tmp, _mm512_cvtpd_ps(val));
        else _mm512_store_pd(tmp, val);
        for (int l = 0; l < 8; ++l) if (!good[l]) tmp[l] = fill;
        if constexpr (std::is_same_v<Out, float>) val = _mm512_cvtps_pd(_mm256_load_ps(tmp));
        else val = _mm512_load_pd(tmp);
        store8(o + q, val, st);
    } else {
        for (std::size_t l = 0; l < m; ++l) o[q + l] = good[l] ? static_cast<Out>(v[l]) : fill;
    }
    if (om) std::memcpy(om + q, good, m);
}

// A second, farther prefetch into L2 (2 pf rings ahead), every other sample: the offsets of ring i + 2 pf
// extrapolated from those of rings i + pf and i (2 k(i + pf) - k(i): within about a row of the true ones; a
// prefetch only steers the caches, so approximate addresses do no harm and are formed as integers: never a fault).
// The near prefetch alone leaves the fused loop waiting for pixels: with every pixel in L2 (a timing-only build) it
// ran in 0.72x of the time (README). L lanes: 8 for ring512, 4 for ring256.
template <std::size_t L, class In>
XCCA_CONIC_INLINE void far_prefetch(const In* img, const std::int32_t* kn, const std::int32_t* kc) {
    const std::uintptr_t base = reinterpret_cast<std::uintptr_t>(img);
    for (std::size_t l = 0; l < L; l += 2) {
        // 2 kn - kc in wrapping 32-bit arithmetic (as a vector add/sub would), then sign-extended
        const auto e = static_cast<std::int32_t>(2u * static_cast<std::uint32_t>(kn[l]) - static_cast<std::uint32_t>(kc[l]));
        const std::uintptr_t off = static_cast<std::uintptr_t>(static_cast<std::intptr_t>(e)) * sizeof(In);
        _mm_prefetch(reinterpret_cast<const char*>(base + off), _MM_HINT_T1);
    }
}

// One ring of the fused AVX-512 path: pass 2 of ring (s, c) from slot sl, and (next != nullptr) pass 1 of ring
// (sn, cn) into next, group by group, with prefetches of the next ring's pixels (every other sample).
template <class In, class Out, bool SA, bool Pol>
XCCA_CONIC_TARGET512 void ring512(const Geo& g, const Tables& t, std::size_t n, double s, double c,
                                  const Slot512& sl, double sn, double cn, Slot512* next, const In* img,
                                  std::ptrdiff_t rs, MaskMode mode, Out fill, Out* o, std::uint8_t* om, bool stream) {
    const Stream512 st = stream_range(o, n, 8, stream);
    const std::size_t n8 = n & ~std::size_t{7};
    if (next) {
        const Ring512 k = ring_consts512(t, sn, cn, g.W, g.H, rs);
        // The prefetches of a group's pixels come one group later: reading offsets just stored by a vector store
        // stalls on the store forwarding.
        for (std::size_t q = 0; q < n8; q += 8) {
            pass1_group512<SA, Pol>(t, k, q, *next);
            if (q) {
                for (int l = 0; l < 8; l += 2) __builtin_prefetch(img + next->k0[q - 8 + l]);
                far_prefetch<8>(img, next->k0 + q - 8, sl.k0 + q - 8);
            }
            pass2_group512<In, Out, SA || Pol>(g, t, s, c, n, q, sl, img, rs, mode, fill, o, om, st);
        }
        if (n8)
            for (int l = 0; l < 8; l += 2) __builtin_prefetch(img + next->k0[n8 - 8 + l]);
        pass1_tail<SA, Pol, 8>(t, sn, cn, n8, n, *next);
    } else {
        for (std::size_t q = 0; q < n8; q += 8)
            pass2_group512<In, Out, SA || Pol>(g, t, s, c, n, q, sl, img, rs, mode, fill, o, om, st);
    }
    if (n8 < n) pass2_group512<In, Out, SA || Pol>(g, t, s, c, n, n8, sl, img, rs, mode, fill, o, om, st);
}

// A further frame of a stack (pass 1 done): pass 2 of ring (s, c) from slot sl, with prefetches of the pixels of
// slot pre (every other sample) in image pimg: its offsets are ready, so in the same group. Kept apart from ring512
// (the one-frame path's code unchanged).
template <class In, class Out, bool SA, bool Pol>
XCCA_CONIC_TARGET512 void replay512(const Geo& g, const Tables& t, std::size_t n, double s, double c,
                                    const Slot512& sl, const Slot512& pre, const In* pimg, const In* img,
                                    std::ptrdiff_t rs, MaskMode mode, Out fill, Out* o, std::uint8_t* om,
                                    bool stream) {
    const Stream512 st = stream_range(o, n, 8, stream);
    const std::size_t n8 = n & ~std::size_t{7};
    for (std::size_t q = 0; q < n8; q += 8) {
        for (int l = 0; l < 8; l += 2) __builtin_prefetch(pimg + pre.k0[q + l]);
        pass2_group512<In, Out, SA || Pol>(g, t, s, c, n, q, sl, img, rs, mode, fill, o, om, st);
    }
    if (n8 < n) pass2_group512<In, Out, SA || Pol>(g, t, s, c, n, n8, sl, img, rs, mode, fill, o, om, st);
}

template <class In, class Out, bool SA, bool Pol>
struct Fused512 {
    using Slot = Slot512;
    static constexpr std::size_t angles = chunk512;
    static void prime(const Tables& t, double s, double c, std::size_t n, double W, double H, std::ptrdiff_t rs,
                      Slot& o) {
        pass1_ring512<SA, Pol>(t, s, c, n, W, H, rs, o);
    }
    static void ring(const Geo& g, const Tables& t, std::size_t n, double s, double c, const Slot& sl, double sn,
                     double cn, Slot* next, const In* img, std::ptrdiff_t rs, MaskMode mode, Out fill, Out* o,
                     std::uint8_t* om, bool stream) {
        ring512<In, Out, SA, Pol>(g, t, n, s, c, sl, sn, cn, next, img, rs, mode, fill, o, om, stream);
    }
    static void replay(const Geo& g, const Tables& t, std::size_t n, double s, double c, const Slot& sl,
                       const Slot& pre, const In* pimg, const In* img, std::ptrdiff_t rs, MaskMode mode, Out fill,
                       Out* o, std::uint8_t* om, bool stream) {
        replay512<In, Out, SA, Pol>(g, t, n, s, c, sl, pre, pimg, img, rs, mode, fill, o, om, stream);
    }
};
#pragma GCC diagnostic pop

// Fused AVX2 path (4 lanes; Zen 2/3 and Intel without AVX-512): the same passes and driver as the AVX-512 path
// above, with the operations of coordinates() / prepare() in the same order (explicit intrinsics, no FMA), so the
// results are bit-identical to the general path. Not the clone in coordinates(): fusing the passes avoids writing
// and rereading x, y, den and the int64 offsets per sample. It also takes a pixel mask (the AVX-512 path does not):
// pass 1 stores each sample's mask offset, pass 2 reads its 2x2 mask bytes (the mask lines prefetched with the
// pixels); strict samples inside the image with a masked pixel get the fill, the rest with a masked pixel (and the
// detector edges) take the general path. Measured with Pilatus module gaps: 2.7-3.1x the untilted masked PolarGrid
// through the portable loops before, 1.1-1.3x now.
#define XCCA_CONIC_AVX2 1
#define XCCA_CONIC_TARGET2 __attribute__((target("avx2"), optimize("fp-contract=off")))
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

using Slot2 = conic_rule::FusedSlot<double, 4, chunk>;

struct Ring256 {
    __m256d vs, cb0, cb1, cb2, vcx, vcy, vly, vlx, wl, hl, p1, m1;
    __m128i vrs, vw;  // row strides of the image and of the mask (W)
};

// The interior lanes `in` (bits) whose used mask pixels are all valid: the top-left pixel at mask offset km, the
// right column where `right`, the bottom row where `down` (bits; as sampling.hpp). Interior lanes have their 2x2
// block inside, so the 32-bit reads [km, km + 3] and [km + W - 2, km + W + 1] stay inside the mask; other lanes
// are not read (as polar.cpp's mask_ok4_bilinear).
XCCA_CONIC_TARGET2 XCCA_CONIC_INLINE unsigned mask_ok4(const std::uint8_t* mask, std::ptrdiff_t w,
                                                      const std::int32_t* km, unsigned in, unsigned right,
                                                      unsigned down) {
    const __m128i zero = _mm_setzero_si128(), bits = _mm_setr_epi32(1, 2, 4, 8);
    auto lanes = [&](unsigned b) { return _mm_cmpeq_epi32(_mm_and_si128(_mm_set1_epi32(static_cast<int>(b)), bits), bits); };
    const int* base = reinterpret_cast<const int*>(mask);
    const __m128i mi = _mm_load_si128(reinterpret_cast<const __m128i*>(km)), on = lanes(in);
    const __m128i top = _mm_mask_i32gather_epi32(zero, base, mi, on, 1);
    const __m128i bot = _mm_mask_i32gather_epi32(zero, base, _mm_add_epi32(mi, _mm_set1_epi32(static_cast<int>(w - 2))), on, 1);
    auto is_zero = [&](__m128i v, int m) { return _mm_cmpeq_epi32(_mm_and_si128(v, _mm_set1_epi32(m)), zero); };
    const __m128i r = lanes(right), d = lanes(down);
    __m128i bad = _mm_or_si128(is_zero(top, 0xff), _mm_and_si128(r, is_zero(top, 0xff00)));
    const __m128i badb = _mm_or_si128(is_zero(bot, 0xff0000), _mm_and_si128(r, is_zero(bot, static_cast<int>(0xff000000u))));
    bad = _mm_or_si128(bad, _mm_and_si128(d, badb));
    return in & ~static_cast<unsigned>(_mm_movemask_ps(_mm_castsi128_ps(bad)));
}
XCCA_CONIC_TARGET2 XCCA_CONIC_INLINE Ring256 ring_consts256(const Tables& t, double s, double c, double W, double H,
                                                 std::ptrdiff_t rs) {
    const double c2 = c * c;
    return Ring256{_mm256_set1_pd(s),      _mm256_set1_pd(c * t.b0), _mm256_set1_pd(c * t.b1),
                   _mm256_set1_pd(c * t.b2), _mm256_set1_pd(t.cx),   _mm256_set1_pd(t.cy),
                   _mm256_set1_pd(t.ly),   _mm256_set1_pd(t.lx),     _mm256_set1_pd(W - 1.0),
                   _mm256_set1_pd(H - 1.0), _mm256_set1_pd(1.0 + c2), _mm256_set1_pd(1.0 - c2),
                   _mm_set1_epi32(static_cast<int>(rs)), _mm_set1_epi32(static_cast<int>(W))};
}

template <bool SA, bool Pol, bool HasMask>
XCCA_CONIC_TARGET2 XCCA_CONIC_INLINE void pass1_group256(const Tables& t, const Ring256& k, std::size_t q, Slot2& o) {
    const __m256d one = _mm256_set1_pd(1.0), zero = _mm256_setzero_pd(), half = _mm256_set1_pd(0.5);
    const __m256d d = _mm256_add_pd(_mm256_mul_pd(k.vs, _mm256_loadu_pd(t.a2 + q)), k.cb2);
    // one division per sample (see coordinates())
    __m256d r, iv = one;
    if constexpr (Pol) {
        const __m256d p = _mm256_mul_pd(half, _mm256_sub_pd(k.p1, _mm256_mul_pd(_mm256_loadu_pd(t.g + q), k.m1)));
        iv = _mm256_div_pd(one, _mm256_mul_pd(d, p));
        r = _mm256_mul_pd(p, iv);
    } else {
        r = _mm256_div_pd(one, d);
    }
    const __m256d y = _mm256_add_pd(k.vcy, _mm256_mul_pd(k.vly, _mm256_mul_pd(_mm256_add_pd(_mm256_mul_pd(k.vs, _mm256_loadu_pd(t.a0 + q)), k.cb0), r)));
    const __m256d x = _mm256_add_pd(k.vcx, _mm256_mul_pd(k.vlx, _mm256_mul_pd(_mm256_add_pd(_mm256_mul_pd(k.vs, _mm256_loadu_pd(t.a1 + q)), k.cb1), r)));
    // interior: den > 0, 0 <= x < W-1, 0 <= y < H-1 (ordered compares: NaN is not interior)
    const __m256d in = _mm256_and_pd(
        _mm256_and_pd(_mm256_and_pd(_mm256_cmp_pd(d, zero, _CMP_GT_OQ), _mm256_cmp_pd(x, zero, _CMP_GE_OQ)),
                      _mm256_and_pd(_mm256_cmp_pd(x, k.wl, _CMP_LT_OQ), _mm256_cmp_pd(y, zero, _CMP_GE_OQ))),
        _mm256_cmp_pd(y, k.hl, _CMP_LT_OQ));
    const __m256d xs = _mm256_and_pd(in, x), ys = _mm256_and_pd(in, y);  // 0.0 where not interior
    const __m256d x0 = _mm256_floor_pd(xs), y0 = _mm256_floor_pd(ys);
    const __m256d fx = _mm256_sub_pd(xs, x0), fy = _mm256_sub_pd(ys, y0);
    _mm256_store_pd(o.fx + q, fx);
    _mm256_store_pd(o.fy + q, fy);
    const __m256d below = _mm256_cmp_pd(fy, zero, _CMP_GT_OQ);
    const __m128i down = _mm256_cvttpd_epi32(_mm256_and_pd(below, one));
    const __m128i ix = _mm256_cvttpd_epi32(x0), iy = _mm256_cvttpd_epi32(y0);
    const __m128i i00 = _mm_add_epi32(_mm_mullo_epi32(iy, k.vrs), ix);
    _mm_store_si128(reinterpret_cast<__m128i*>(o.k0 + q), i00);
    _mm_store_si128(reinterpret_cast<__m128i*>(o.k1 + q), _mm_add_epi32(i00, _mm_mullo_epi32(down, k.vrs)));
    o.ok[q / 4] = static_cast<std::uint8_t>(_mm256_movemask_pd(in));
    if constexpr (HasMask) {  // the mask itself is read in pass 2, after its lines were prefetched
        _mm_store_si128(reinterpret_cast<__m128i*>(o.km + q), _mm_add_epi32(_mm_mullo_epi32(iy, k.vw), ix));
        o.right[q / 4] = static_cast<std::uint8_t>(_mm256_movemask_pd(_mm256_cmp_pd(fx, zero, _CMP_GT_OQ)));
        o.down[q / 4] = static_cast<std::uint8_t>(_mm256_movemask_pd(below));
    }
    if constexpr (SA || Pol) {
        __m256d corr;
        if constexpr (SA && Pol) corr = _mm256_mul_pd(_mm256_mul_pd(r, r), iv);
        else if constexpr (SA) corr = _mm256_mul_pd(_mm256_mul_pd(r, r), r);
        else corr = _mm256_mul_pd(d, iv);
        _mm256_store_pd(o.inv + q, corr);
    }
}

template <bool SA, bool Pol, bool HasMask>
XCCA_CONIC_TARGET2 void pass1_ring256(const Tables& t, double s, double c, std::size_t n, double W, double H,
                                      std::ptrdiff_t rs, Slot2& o) {
    const Ring256 k = ring_consts256(t, s, c, W, H, rs);
    const std::size_t n4 = n & ~std::size_t{3};
    for (std::size_t q = 0; q < n4; q += 4) pass1_group256<SA, Pol, HasMask>(t, k, q, o);
    pass1_tail<SA, Pol, 4>(t, s, c, n4, n, o);
}

// Four pixel pairs (img[k[l]], img[k[l] + 1]) widened to double: left pixels in a, right pixels in b. Scalar
// 64-bit loads, not a gather: measured on the benchmark (Zen 4 VM, XCCA_DISABLE_AVX512=1, same process as the
// previous version), 0.71x of the previous time with scalar loads, 0.83x with gathers (-DXCCA_CONIC_GATHER).
template <class In>
XCCA_CONIC_TARGET2 inline void pairs4(const In* img, const std::int32_t* k, __m256d& a, __m256d& b) {
#ifdef XCCA_CONIC_GATHER
    const __m128i idx = _mm_load_si128(reinterpret_cast<const __m128i*>(k));
    const __m256i v = _mm256_mask_i32gather_epi64(_mm256_setzero_si256(), reinterpret_cast<const long long*>(img),
                                                  idx, _mm256_set1_epi64x(-1), 4);
#else
    long long e[4];
    for (int l = 0; l < 4; ++l) std::memcpy(&e[l], img + k[l], 8);
    const __m128i lo = _mm_insert_epi64(_mm_cvtsi64_si128(e[0]), e[1], 1);
    const __m128i hi = _mm_insert_epi64(_mm_cvtsi64_si128(e[2]), e[3], 1);
    const __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
#endif
    const __m256i f = _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
    if constexpr (std::is_same_v<In, float>) {
        a = _mm256_cvtps_pd(_mm_castsi128_ps(_mm256_castsi256_si128(f)));
        b = _mm256_cvtps_pd(_mm_castsi128_ps(_mm256_extracti128_si256(f, 1)));
    } else {
        a = _mm256_cvtepi32_pd(_mm256_castsi256_si128(f));
        b = _mm256_cvtepi32_pd(_mm256_extracti128_si256(f, 1));
    }
}

template <class Out>
XCCA_CONIC_TARGET2 inline void store4(Out* o, __m256d v, const Stream512& st) {
    const std::uintptr_t a = reinterpret_cast<std::uintptr_t>(o);
    const bool nt = a >= st.lo && a + 4 * sizeof(Out) <= st.hi && (a & (4 * sizeof(Out) - 1)) == 0;
    if constexpr (std::is_same_v<Out, float>) {
        if (nt) _mm_stream_ps(o, _mm256_cvtpd_ps(v)); else _mm_storeu_ps(o, _mm256_cvtpd_ps(v));
    } else {
        if (nt) _mm256_stream_pd(o, v); else _mm256_storeu_pd(o, v);
    }
}

template <class In, class Out, bool Corr, bool HasMask>
XCCA_CONIC_TARGET2 XCCA_CONIC_INLINE void pass2_group256(const Geo& g, const Tables& t, double s, double c, std::size_t n,
                                              std::size_t q, const Slot2& sl, const In* img, std::ptrdiff_t rs,
                                              MaskMode mode, Out fill, Out* o, std::uint8_t* om,
                                              const Stream512& st) {
    const __m256d one = _mm256_set1_pd(1.0), zero = _mm256_setzero_pd();
    const unsigned inside = sl.ok[q / 4];
    unsigned ok = inside;
    if constexpr (HasMask)
        if (inside) ok = mask_ok4(g.mask, g.w, sl.km + q, inside, sl.right[q / 4], sl.down[q / 4]);
    alignas(32) double v[4];
    if (inside) {  // every lane's pixel offsets are inside the image (0 where not interior)
        __m256d p00, p01, p10, p11;
        pairs4(img, sl.k0 + q, p00, p01);
        pairs4(img, sl.k1 + q, p10, p11);
        const __m256d fx = _mm256_load_pd(sl.fx + q), fy = _mm256_load_pd(sl.fy + q);
        const __m256d right = _mm256_cmp_pd(fx, zero, _CMP_GT_OQ);
        p01 = _mm256_blendv_pd(p00, p01, right);
        p11 = _mm256_blendv_pd(p10, p11, right);
        const __m256d wx0 = _mm256_sub_pd(one, fx), wy0 = _mm256_sub_pd(one, fy);
        const __m256d tp = _mm256_add_pd(_mm256_mul_pd(wx0, p00), _mm256_mul_pd(fx, p01));
        const __m256d bt = _mm256_add_pd(_mm256_mul_pd(wx0, p10), _mm256_mul_pd(fx, p11));
        __m256d val = _mm256_add_pd(_mm256_mul_pd(wy0, tp), _mm256_mul_pd(fy, bt));
        if constexpr (Corr) val = _mm256_mul_pd(val, _mm256_load_pd(sl.inv + q));
        if (ok == 0xfu && q + 4 <= n) {
            store4(o + q, val, st);
            if (om) std::memset(om + q, 1, 4);
            return;
        }
        _mm256_store_pd(v, val);
    }
    // Lanes that are not interior: the general path, written into v (then stored like the others).
    const std::size_t m = std::min<std::size_t>(4, n - q);
    alignas(32) std::uint8_t good[4];
    for (std::size_t l = 0; l < m; ++l) {
        good[l] = 1;
        if ((ok >> l) & 1u) continue;
        if (HasMask && mode == MaskMode::strict && ((inside >> l) & 1u)) {  // inside, a masked pixel used: invalid
            good[l] = 0;
            continue;
        }
        double x, y, d, w = 0.0;
        coord1(t, s, c, q + l, x, y, d);
        const bool gl = d > 0.0 && sample_bilinear<In, HasMask>(g, x, y, img, rs, g.mask, mode, w);
        if (Corr) w *= sl.inv[q + l];
        v[l] = w;
        good[l] = gl;
    }
    if (m == 4) {
        alignas(32) Out tmp[4];
        if constexpr (std::is_same_v<Out, float>) _mm_store_ps(tmp, _mm256_cvtpd_ps(_mm256_load_pd(v)));
        else _mm256_store_pd(tmp, _mm256_load_pd(v));
        for (int l = 0; l < 4; ++l) if (!good[l]) tmp[l] = fill;
        __m256d val;
        if constexpr (std::is_same_v<Out, float>) val = _mm256_cvtps_pd(_mm_load_ps(tmp));
        else val = _mm256_load_pd(tmp);
        store4(o + q, val, st);
    } else {
        for (std::size_t l = 0; l < m; ++l) o[q + l] = good[l] ? static_cast<Out>(v[l]) : fill;
    }
    if (om) std::memcpy(om + q, good, m);
}


template <class In, class Out, bool SA, bool Pol, bool HasMask>
XCCA_CONIC_TARGET2 void ring256(const Geo& g, const Tables& t, std::size_t n, double s, double c, const Slot2& sl,
                                double sn, double cn, Slot2* next, const In* img, std::ptrdiff_t rs, MaskMode mode,
                                Out fill, Out* o, std::uint8_t* om, bool stream) {
    const Stream512 st = stream_range(o, n, 4, stream);
    const std::size_t n4 = n & ~std::size_t{3};
    if (next) {
        const Ring256 k = ring_consts256(t, sn, cn, g.W, g.H, rs);
        for (std::size_t q = 0; q < n4; q += 4) {
            pass1_group256<SA, Pol, HasMask>(t, k, q, *next);
            if (q) {  // one group later (as ring512)
                __builtin_prefetch(img + next->k0[q - 4]);
                __builtin_prefetch(img + next->k0[q - 2]);
                far_prefetch<4>(img, next->k0 + q - 4, sl.k0 + q - 4);  // as ring512
                if constexpr (HasMask) {  // the mask lines pass 2 reads (64 pixels per line)
                    __builtin_prefetch(g.mask + next->km[q - 4]);
                    __builtin_prefetch(g.mask + next->km[q - 4] + g.w);
                }
            }
            pass2_group256<In, Out, SA || Pol, HasMask>(g, t, s, c, n, q, sl, img, rs, mode, fill, o, om, st);
        }
        if (n4) {
            __builtin_prefetch(img + next->k0[n4 - 4]);
            __builtin_prefetch(img + next->k0[n4 - 2]);
        }
        pass1_tail<SA, Pol, 4>(t, sn, cn, n4, n, *next);
    } else {
        for (std::size_t q = 0; q < n4; q += 4)
            pass2_group256<In, Out, SA || Pol, HasMask>(g, t, s, c, n, q, sl, img, rs, mode, fill, o, om, st);
    }
    if (n4 < n) pass2_group256<In, Out, SA || Pol, HasMask>(g, t, s, c, n, n4, sl, img, rs, mode, fill, o, om, st);
}

// A further frame of a stack (as replay512).
template <class In, class Out, bool SA, bool Pol, bool HasMask>
XCCA_CONIC_TARGET2 void replay256(const Geo& g, const Tables& t, std::size_t n, double s, double c, const Slot2& sl,
                                  const Slot2& pre, const In* pimg, const In* img, std::ptrdiff_t rs, MaskMode mode,
                                  Out fill, Out* o, std::uint8_t* om, bool stream) {
    const Stream512 st = stream_range(o, n, 4, stream);
    const std::size_t n4 = n & ~std::size_t{3};
    for (std::size_t q = 0; q < n4; q += 4) {
        __builtin_prefetch(pimg + pre.k0[q]);
        __builtin_prefetch(pimg + pre.k0[q + 2]);
        if (HasMask && (q & 7) == 0) __builtin_prefetch(g.mask + pre.km[q]);
        pass2_group256<In, Out, SA || Pol, HasMask>(g, t, s, c, n, q, sl, img, rs, mode, fill, o, om, st);
    }
    if (n4 < n) pass2_group256<In, Out, SA || Pol, HasMask>(g, t, s, c, n, n4, sl, img, rs, mode, fill, o, om, st);
}

template <class In, class Out, bool SA, bool Pol, bool HasMask>
struct Fused256 {
    using Slot = Slot2;
    static constexpr std::size_t angles = chunk;
    static void prime(const Tables& t, double s, double c, std::size_t n, double W, double H, std::ptrdiff_t rs,
                      Slot& o) {
        pass1_ring256<SA, Pol, HasMask>(t, s, c, n, W, H, rs, o);
    }
    static void ring(const Geo& g, const Tables& t, std::size_t n, double s, double c, const Slot& sl, double sn,
                     double cn, Slot* next, const In* img, std::ptrdiff_t rs, MaskMode mode, Out fill, Out* o,
                     std::uint8_t* om, bool stream) {
        ring256<In, Out, SA, Pol, HasMask>(g, t, n, s, c, sl, sn, cn, next, img, rs, mode, fill, o, om, stream);
    }
    static void replay(const Geo& g, const Tables& t, std::size_t n, double s, double c, const Slot& sl,
                       const Slot& pre, const In* pimg, const In* img, std::ptrdiff_t rs, MaskMode mode, Out fill,
                       Out* o, std::uint8_t* om, bool stream) {
        replay256<In, Out, SA, Pol, HasMask>(g, t, n, s, c, sl, pre, pimg, img, rs, mode, fill, o, om, stream);
    }
};
#pragma GCC diagnostic pop
#endif
}  // namespace

ConicGrid::ConicGrid(std::vector<double> s, std::vector<double> c, std::vector<double> a, const double b[3],
                     double cx, double cy, double ly, double lx, bool solid_angle, std::vector<double> g,
                     std::size_t height, std::size_t width, bool single)
    : s_(std::move(s)), c_(std::move(c)), g_(std::move(g)), b_{b[0], b[1], b[2]}, cx_(cx), cy_(cy), ly_(ly),
      lx_(lx), solid_angle_(solid_angle), height_(height), width_(width), single_(single) {
    if (s_.size() != c_.size()) throw std::invalid_argument("xcca::conic::ConicGrid: s and c differ in length");
    if (a.empty() || a.size() % 3 != 0)
        throw std::invalid_argument("xcca::conic::ConicGrid: a must hold 3 values per angle (nphi >= 1)");
    const std::size_t nphi = a.size() / 3;
    if (!g_.empty() && g_.size() != nphi)
        throw std::invalid_argument("xcca::conic::ConicGrid: g must be empty or hold one value per angle");
    if (height_ == 0 || width_ == 0 || height_ > (std::size_t{1} << 31) || width_ > (std::size_t{1} << 31))
        throw std::invalid_argument("xcca::conic::ConicGrid: image dimensions must be in [1, 2^31]");
    for (double v : {cx, cy, ly, lx, b[0], b[1], b[2]})
        if (!std::isfinite(v)) throw std::invalid_argument("xcca::conic::ConicGrid: non-finite parameter");
    // Stored as three planes (A0 | A1 | A2) so the coordinate loop reads contiguous arrays.
    a_.resize(a.size());
    for (std::size_t j = 0; j < nphi; ++j)
        for (int k = 0; k < 3; ++k) a_[k * nphi + j] = a[3 * j + k];
    for (double v : a_)
        if (!std::isfinite(v)) throw std::invalid_argument("xcca::conic::ConicGrid: non-finite angle table");
    if (single_) {
        // W - 0.5 and H - 0.5 (the nearest rule's bounds) exact in float
        if (height_ > (std::size_t{1} << 22) || width_ > (std::size_t{1} << 22))
            throw std::invalid_argument("xcca::conic::ConicGrid: single precision needs image dimensions <= 2^22");
        auto f32 = [](const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); };
        s32_ = f32(s_);
        c32_ = f32(c_);
        a32_ = f32(a_);
        g32_ = f32(g_);
        for (int k = 0; k < 3; ++k) b32_[k] = static_cast<float>(b_[k]);
        cx32_ = static_cast<float>(cx_);
        cy32_ = static_cast<float>(cy_);
        ly32_ = static_cast<float>(ly_);
        lx32_ = static_cast<float>(lx_);
    }
}

// The per-angle tables from angle j0 on (the ring loops' view of this grid).
Tables ConicGrid::tables(std::size_t j0) const {
    const std::size_t nphi = a_.size() / 3;
    return Tables{a_.data() + j0, a_.data() + nphi + j0, a_.data() + 2 * nphi + j0,
                  g_.empty() ? nullptr : g_.data() + j0, b_[0], b_[1], b_[2], cx_, cy_, ly_, lx_, solid_angle_};
}

#ifdef XCCA_CONIC_AVX512
template <class In, class Out, bool SA, bool Pol>
void ConicGrid::remap512(const In* images, std::size_t n_frames, std::ptrdiff_t frame_stride,
                         std::ptrdiff_t row_stride, MaskMode mode, Out fill, Out* out, std::uint8_t* out_mask,
                         int n_threads) const {
    const Geo geo{double(width_), double(height_), std::ptrdiff_t(width_), std::ptrdiff_t(height_)};
    fused_remap<Fused512<In, Out, SA, Pol>>(geo, s_.data(), c_.data(), s_.size(), a_.size() / 3,
                                            [this](std::size_t j0) { return tables(j0); }, images, n_frames,
                                            frame_stride, row_stride, mode, fill, out, out_mask, n_threads);
}
#endif

#ifdef XCCA_CONIC_AVX2
template <class In, class Out, bool SA, bool Pol>
void ConicGrid::remap256(const In* images, std::size_t n_frames, std::ptrdiff_t frame_stride,
                         std::ptrdiff_t row_stride, const std::uint8_t* mask, MaskMode mode, Out fill, Out* out,
                         std::uint8_t* out_mask, int n_threads) const {
    // with a pixel mask: pass 1 stores the mask offsets, pass 2 reads the mask (see pass2_group256)
    const Geo geo{double(width_), double(height_), std::ptrdiff_t(width_), std::ptrdiff_t(height_), mask};
    // compiled with and without the mask checks: the unmasked loops carry none of them
    if (mask)
        fused_remap<Fused256<In, Out, SA, Pol, true>>(geo, s_.data(), c_.data(), s_.size(), a_.size() / 3,
                                                      [this](std::size_t j0) { return tables(j0); }, images,
                                                      n_frames, frame_stride, row_stride, mode, fill, out, out_mask,
                                                      n_threads);
    else
        fused_remap<Fused256<In, Out, SA, Pol, false>>(geo, s_.data(), c_.data(), s_.size(), a_.size() / 3,
                                                       [this](std::size_t j0) { return tables(j0); }, images,
                                                       n_frames, frame_stride, row_stride, mode, fill, out, out_mask,
                                                       n_threads);
}
#endif

template <class In, class Out>
void ConicGrid::remap(const In* images, std::size_t n_frames, std::ptrdiff_t frame_stride, std::ptrdiff_t row_stride,
                      const std::uint8_t* mask, Method method, MaskMode mode, Out fill, Out* out,
                      std::uint8_t* out_mask, int n_threads) const {
    if (method != Method::nearest && method != Method::bilinear)
        throw std::invalid_argument("xcca::conic::ConicGrid::remap: unknown method");
    if (mode != MaskMode::strict && mode != MaskMode::renormalize)
        throw std::invalid_argument("xcca::conic::ConicGrid::remap: unknown mask mode");
    const std::size_t nr = s_.size(), nphi = a_.size() / 3;
    if (n_frames == 0 || nr == 0) return;
    if (!images || !out) throw std::invalid_argument("xcca::conic::ConicGrid::remap: null image or output");
    if (single_) {
        if constexpr (std::is_same_v<Out, float>) {
            remap_single<In>(images, n_frames, frame_stride, row_stride, mask, method, mode, fill, out, out_mask,
                             n_threads);
            return;
        } else {
            throw std::invalid_argument("xcca::conic::ConicGrid::remap: a single-precision grid writes float");
        }
    }
    const Geo geo{double(width_), double(height_), std::ptrdiff_t(width_), std::ptrdiff_t(height_)};
    const bool corr = solid_angle_ || !g_.empty();
    // Tiles: 16 rings x 128 angles (an arc of a few hundred pixels per ring: few image rows and pages per tile).
    constexpr std::size_t tr = 16;
    const conic_rule::Tiling tiling(n_frames, nr, nphi, tr, chunk);
    // Software prefetch: the coordinates of ring i + pf are computed while ring i is sampled (a ring buffer of pf + 1
    // rows), and its pixels are prefetched: the ring walk jumps between image rows, which hardware prefetchers do
    // not follow (as in polar.cpp).
    constexpr std::size_t pf = 4, slots = pf + 1;
#ifdef XCCA_CONIC_AVX512
    // The fused AVX-512 path: bilinear without a pixel mask, 32-bit pixels, every pixel offset within int32 (with a
    // mask the AVX2 path below runs: it reads the mask in pass 2).
    if constexpr (std::is_same_v<In, float> || std::is_same_v<In, std::int32_t>) {
        const double span = std::fabs(double(row_stride)) * double(height_) + double(width_);
        if (method == Method::bilinear && !mask && span < 2147483647.0 && xcca::detail::cpu_has_avx512()) {
            const bool sa = solid_angle_, pol = !g_.empty();
            if (sa && pol) remap512<In, Out, true, true>(images, n_frames, frame_stride, row_stride, mode, fill, out, out_mask, n_threads);
            else if (sa) remap512<In, Out, true, false>(images, n_frames, frame_stride, row_stride, mode, fill, out, out_mask, n_threads);
            else if (pol) remap512<In, Out, false, true>(images, n_frames, frame_stride, row_stride, mode, fill, out, out_mask, n_threads);
            else remap512<In, Out, false, false>(images, n_frames, frame_stride, row_stride, mode, fill, out, out_mask, n_threads);
            return;
        }
    }
#endif
#ifdef XCCA_CONIC_AVX2
    // The fused AVX2 path: the same cases (no AVX-512 here, or XCCA_DISABLE_AVX512=1), and with a pixel mask.
    if constexpr (std::is_same_v<In, float> || std::is_same_v<In, std::int32_t>) {
        const double span = std::fabs(double(row_stride)) * double(height_) + double(width_);
        if (method == Method::bilinear && span < 2147483647.0 && xcca::detail::cpu_has_avx2()) {
            const bool sa = solid_angle_, pol = !g_.empty();
            if (sa && pol) remap256<In, Out, true, true>(images, n_frames, frame_stride, row_stride, mask, mode, fill, out, out_mask, n_threads);
            else if (sa) remap256<In, Out, true, false>(images, n_frames, frame_stride, row_stride, mask, mode, fill, out, out_mask, n_threads);
            else if (pol) remap256<In, Out, false, true>(images, n_frames, frame_stride, row_stride, mask, mode, fill, out, out_mask, n_threads);
            else remap256<In, Out, false, false>(images, n_frames, frame_stride, row_stride, mask, mode, fill, out, out_mask, n_threads);
            return;
        }
    }
#endif
    // Stacks (as fused_remap): pass 1 (coordinates and offsets) once per tile and block of frames, one slot per ring
    // of the tile; the further frames of the block sample from the slots.
    const bool stack = n_frames > 1;
    parallel_for(tiling.tasks(), n_threads, 4, [&](std::size_t t0, std::size_t t1) {
        std::vector<PortableSlot> buf(stack ? tr : slots);  // heap, not the (small) thread stack
        for (std::size_t t = t0; t < t1; ++t) {
            const conic_rule::Task tk = tiling(t);  // plain copies below: the lambdas capture them
            const std::size_t f0 = tk.f0, f1 = tk.f1, i0 = tk.i0, i1 = tk.i1, j0 = tk.j0, n = tk.n;
            const std::size_t nt = i1 - i0;
            const Tables tab = tables(j0);
            auto slot = [&](std::size_t i) -> PortableSlot& { return stack ? buf[i - i0] : buf[i % slots]; };
            auto frame = [&](std::size_t f) { return images + static_cast<std::ptrdiff_t>(f) * frame_stride; };
            auto fill_slot = [&](std::size_t i) {
                PortableSlot& sl = slot(i);
                coordinates(tab, s_[i], c_[i], n, sl.x, sl.y, sl.den, corr ? sl.inv : nullptr);
                prepare(method == Method::nearest, n, sl.x, sl.y, sl.den, geo.W, geo.H, row_stride, sl.k, sl.fx,
                        sl.fy, sl.ok);
            };
            // samples outside point at pixel 0: harmless prefetches, no branches
            auto prefetch = [&](const In* img, const PortableSlot& sl) {
                for (std::size_t q = 0; q < n; q += 2) __builtin_prefetch(img + sl.k[q]);
            };
            for (std::size_t f = f0; f < f1; ++f) {
                const In* img = frame(f);
                if (f == f0)
                    for (std::size_t i = i0; i < std::min(i1, i0 + pf); ++i) fill_slot(i);
                for (std::size_t i = i0; i < i1; ++i) {
                    // pixels pf rings ahead (this tile's rings only): ring i + pf, prepared now in the first frame
                    // of the block; in a stack, ring i + pf - nt of the next frame near the end of the tile
                    const std::size_t ip = i + pf;
                    if (ip < i1) {
                        if (f == f0) fill_slot(ip);
                        prefetch(img, slot(ip));
                    } else if (stack && f + 1 < f1 && ip - nt < i1) {
                        prefetch(frame(f + 1), slot(ip - nt));
                    }
                    const PortableSlot& sl = slot(i);
                    Out* o = out + (f * nr + i) * nphi + j0;
                    std::uint8_t* om = (f == 0 && out_mask) ? out_mask + i * nphi + j0 : nullptr;
                    if (mask) {
                        if (corr)
                            sample_row<In, Out, true, true>(geo, method, mode, n, sl.x, sl.y, sl.den, sl.inv, sl.k, sl.fx, sl.fy, sl.ok, img, row_stride, mask, fill, o, om);
                        else
                            sample_row<In, Out, true, false>(geo, method, mode, n, sl.x, sl.y, sl.den, sl.inv, sl.k, sl.fx, sl.fy, sl.ok, img, row_stride, mask, fill, o, om);
                    } else {
                        if (corr)
                            sample_row<In, Out, false, true>(geo, method, mode, n, sl.x, sl.y, sl.den, sl.inv, sl.k, sl.fx, sl.fy, sl.ok, img, row_stride, mask, fill, o, om);
                        else
                            sample_row<In, Out, false, false>(geo, method, mode, n, sl.x, sl.y, sl.den, sl.inv, sl.k, sl.fx, sl.fy, sl.ok, img, row_stride, mask, fill, o, om);
                    }
                }
            }
        }
    });
}

#define XCCA_CONIC_INSTANTIATE(In)                                                                                \
    template void ConicGrid::remap<In, float>(const In*, std::size_t, std::ptrdiff_t, std::ptrdiff_t,           \
                                              const std::uint8_t*, Method, MaskMode, float, float*,              \
                                              std::uint8_t*, int) const;                                         \
    template void ConicGrid::remap<In, double>(const In*, std::size_t, std::ptrdiff_t, std::ptrdiff_t,          \
                                               const std::uint8_t*, Method, MaskMode, double, double*,           \
                                               std::uint8_t*, int) const;
XCCA_CONIC_INSTANTIATE(std::uint8_t)
XCCA_CONIC_INSTANTIATE(std::int8_t)
XCCA_CONIC_INSTANTIATE(std::uint16_t)
XCCA_CONIC_INSTANTIATE(std::int16_t)
XCCA_CONIC_INSTANTIATE(std::uint32_t)
XCCA_CONIC_INSTANTIATE(std::int32_t)
XCCA_CONIC_INSTANTIATE(std::uint64_t)
XCCA_CONIC_INSTANTIATE(std::int64_t)
XCCA_CONIC_INSTANTIATE(float)
XCCA_CONIC_INSTANTIATE(double)
#undef XCCA_CONIC_INSTANTIATE

}  // namespace xcca::conic
