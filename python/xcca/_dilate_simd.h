/* Elementwise max kernels for xcca._binning's dilation (included by _binning.pyx via cdef extern).
 *
 * Why C: wheels are built for baseline x86-64 (SSE2, which has no packed int32/uint32/int64 max), and Cython cannot
 * attach GCC's target_clones attribute. Each kernel is cloned for AVX2 and the baseline; the loader picks the clone
 * once per process (ifunc: GCC/Clang on glibc), so the wheel stays portable. Elsewhere plain loops as usual.
 * max(a, b) is written "b > a ? b : a": the inputs here never hold NaN (masked/NaN pixels were replaced by the
 * dtype's lowest value before; xcca_vmax4lo handles raw data), and the form compiles to packed max instructions.
 */
#ifndef XCCA_DILATE_SIMD_H
#define XCCA_DILATE_SIMD_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && defined(__GLIBC__) && !defined(__INTEL_COMPILER) \
    && (!defined(__clang__) || __clang_major__ >= 14)
#define XCCA_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define XCCA_CLONES
#endif

#define XCCA_MAX(a, b) ((b) > (a) ? (b) : (a))

/* d[x] = max(a[x], b[x]); d must not overlap a or b (a and b may overlap each other). */
#define XCCA_DEF_VMAX2(S, T)                                                                                      \
    XCCA_CLONES static void xcca_vmax2_##S(T *__restrict d, const T *__restrict a, const T *__restrict b,        \
                                           ptrdiff_t n) {                                                          \
        for (ptrdiff_t x = 0; x < n; ++x) d[x] = XCCA_MAX(a[x], b[x]);                                           \
    }                                                                                                              \
    /* Two doubling steps in one pass: d[x] = max(a[x], a[x + s1], a[x + s2], a[x + s1 + s2]). */              \
    XCCA_CLONES static void xcca_vmax4_##S(T *__restrict d, const T *__restrict a, ptrdiff_t s1, ptrdiff_t s2,   \
                                           ptrdiff_t n) {                                                          \
        const T *b = a + s1, *c = a + s2, *e = a + s1 + s2;                                                        \
        for (ptrdiff_t x = 0; x < n; ++x) {                                                                        \
            T u = XCCA_MAX(a[x], b[x]), v = XCCA_MAX(c[x], e[x]);                                                  \
            d[x] = XCCA_MAX(u, v);                                                                                 \
        }                                                                                                          \
    }                                                                                                              \
    /* Same from raw image data that may hold NaN: the fold starts at lo, and "v > m ? v : m" never lets NaN win. */ \
    XCCA_CLONES static void xcca_vmax4lo_##S(T *__restrict d, const T *__restrict a, ptrdiff_t s1, ptrdiff_t s2, \
                                             ptrdiff_t n, T lo) {                                                  \
        const T *b = a + s1, *c = a + s2, *e = a + s1 + s2;                                                        \
        for (ptrdiff_t x = 0; x < n; ++x) {                                                                        \
            T m = XCCA_MAX(lo, a[x]);                                                                              \
            m = XCCA_MAX(m, b[x]);                                                                                 \
            m = XCCA_MAX(m, c[x]);                                                                                 \
            d[x] = XCCA_MAX(m, e[x]);                                                                              \
        }                                                                                                          \
    }                                                                                                              \
    /* Four consecutive prefix steps in one pass (G is loaded and stored once instead of four times). */         \
    XCCA_CLONES static void xcca_vrun4_##S(T *__restrict G, const T *__restrict r0, const T *__restrict r1,      \
                                           const T *__restrict r2, const T *__restrict r3, const T *__restrict h0, \
                                           const T *__restrict h1, const T *__restrict h2, const T *__restrict h3, \
                                           T *__restrict o0, T *__restrict o1, T *__restrict o2,                  \
                                           T *__restrict o3, ptrdiff_t n) {                                        \
        for (ptrdiff_t x = 0; x < n; ++x) {                                                                        \
            T g = XCCA_MAX(G[x], r0[x]);                                                                           \
            o0[x] = XCCA_MAX(h0[x], g);                                                                            \
            g = XCCA_MAX(g, r1[x]);                                                                                \
            o1[x] = XCCA_MAX(h1[x], g);                                                                            \
            g = XCCA_MAX(g, r2[x]);                                                                                \
            o2[x] = XCCA_MAX(h2[x], g);                                                                            \
            g = XCCA_MAX(g, r3[x]);                                                                                \
            o3[x] = XCCA_MAX(h3[x], g);                                                                            \
            G[x] = g;                                                                                              \
        }                                                                                                          \
    }                                                                                                              \
    /* Vertical van Herk prefix step: g = max(G, r); G = g; o = max(hb, g). */                                     \
    XCCA_CLONES static void xcca_vrun_##S(T *__restrict G, const T *__restrict r, const T *__restrict hb,        \
                                          T *__restrict o, ptrdiff_t n) {                                         \
        for (ptrdiff_t x = 0; x < n; ++x) {                                                                        \
            T g = XCCA_MAX(G[x], r[x]);                                                                            \
            G[x] = g;                                                                                              \
            o[x] = XCCA_MAX(hb[x], g);                                                                             \
        }                                                                                                          \
    }

/* bin_max without a mask, output rows [r0, r1): for each, t0 = the column maxima of its fy image rows (from lo, rows
 * in order; NaN never wins), then out[j] = max(t0[j*fx : min((j+1)*fx, W)]), folded left to right.
 * Horizontal pass: "b > a ? b : a" keeps the left operand on ties, so for NaN-free values it returns the leftmost
 * maximal element and is associative; any bracketing that keeps the operands in order gives the same bits (ties
 * are only +0/-0) as the scalar left fold. The full blocks are split into the binary pieces of fx (largest piece
 * leftmost), each piece's max read from a doubling level (level p: max of p consecutive columns, a contiguous
 * vectorised pass from level p/2, ping-pong between t0 and t1); pieces are harvested smallest (rightmost) first
 * and folded as max(left piece, right part). t0 and t1 hold W elements each. */
#define XCCA_DEF_BINMAX(S, T)                                                                                     \
    XCCA_CLONES static void xcca_binmax_band_##S(const T *img, ptrdiff_t H, ptrdiff_t W, T *out, ptrdiff_t Wo,     \
                                                 ptrdiff_t fy, ptrdiff_t fx, ptrdiff_t r0, ptrdiff_t r1,           \
                                                 T *__restrict t0, T *__restrict t1, T lo) {                       \
        const ptrdiff_t nfull = W / fx, Wf = nfull * fx;                                                           \
        for (ptrdiff_t r = r0; r < r1; ++r) {                                                                      \
            ptrdiff_t y = r * fy, y1 = (r + 1) * fy < H ? (r + 1) * fy : H;                                       \
            T *o = out + r * Wo;                                                                                   \
            /* Column strips of 128 bytes: the strip's maxima stay in registers over all the block's rows and are \
             * stored once (storing t0 after every few rows made this pass 1.6x slower). */                        \
            enum { CH = 128 / sizeof(T) };                                                                         \
            ptrdiff_t x = 0;                                                                                       \
            for (; x + CH <= W; x += CH) {                                                                         \
                T m[CH];                                                                                           \
                for (ptrdiff_t i = 0; i < CH; ++i) m[i] = lo;                                                      \
                const T *p = img + y * W + x;                                                                      \
                for (ptrdiff_t yy = y; yy < y1; ++yy, p += W)                                                      \
                    for (ptrdiff_t i = 0; i < CH; ++i) m[i] = XCCA_MAX(m[i], p[i]);                                \
                for (ptrdiff_t i = 0; i < CH; ++i) t0[x + i] = m[i];                                               \
            }                                                                                                      \
            if (x < W) { /* the last < 128 bytes of columns: row by row through t0 (vectorised over columns) */  \
                const ptrdiff_t x0 = x;                                                                            \
                for (x = x0; x < W; ++x) t0[x] = lo;                                                               \
                for (ptrdiff_t yy = y; yy < y1; ++yy) {                                                            \
                    const T *__restrict a = img + yy * W;                                                          \
                    for (x = x0; x < W; ++x) t0[x] = XCCA_MAX(t0[x], a[x]);                                        \
                }                                                                                                  \
            }                                                                                                      \
            if (Wf < W) { /* the partial last block, scalar */                                                     \
                T m = t0[Wf];                                                                                      \
                for (ptrdiff_t x = Wf + 1; x < W; ++x) m = XCCA_MAX(m, t0[x]);                                    \
                o[nfull] = m;                                                                                      \
            }                                                                                                      \
            if (nfull == 0) continue;                                                                              \
            T *cur = t0, *nxt = t1;                                                                                \
            int first = 1;                                                                                         \
            for (ptrdiff_t p = 1; p <= fx; p *= 2) {                                                               \
                if (fx & p) { /* piece of p columns at offset (fx with bits < 2p cleared) of each block */         \
                    const T *src = cur + (fx & ~(2 * p - 1));                                                      \
                    if (first) {                                                                                   \
                        for (ptrdiff_t j = 0; j < nfull; ++j) o[j] = src[j * fx];                                 \
                        first = 0;                                                                                 \
                    } else {                                                                                       \
                        for (ptrdiff_t j = 0; j < nfull; ++j) o[j] = XCCA_MAX(src[j * fx], o[j]);                 \
                    }                                                                                              \
                }                                                                                                  \
                if (2 * p > fx) break;                                                                             \
                /* level 2p from level p (valid on x <= Wf - p): valid on x <= Wf - 2p */                          \
                const ptrdiff_t n = Wf - 2 * p + 1;                                                                \
                for (ptrdiff_t x = 0; x < n; ++x) nxt[x] = XCCA_MAX(cur[x], cur[x + p]);                          \
                T *sw = cur; cur = nxt; nxt = sw;                                                                  \
            }                                                                                                      \
        }                                                                                                          \
    }

XCCA_DEF_BINMAX(u8, uint8_t)
XCCA_DEF_BINMAX(u16, uint16_t)
XCCA_DEF_BINMAX(i16, int16_t)
XCCA_DEF_BINMAX(i32, int32_t)
XCCA_DEF_BINMAX(u32, uint32_t)
XCCA_DEF_BINMAX(i64, int64_t)
XCCA_DEF_BINMAX(f32, float)
XCCA_DEF_BINMAX(f64, double)

XCCA_DEF_VMAX2(u8, uint8_t)
XCCA_DEF_VMAX2(u16, uint16_t)
XCCA_DEF_VMAX2(i16, int16_t)
XCCA_DEF_VMAX2(i32, int32_t)
XCCA_DEF_VMAX2(u32, uint32_t)
XCCA_DEF_VMAX2(i64, int64_t)
XCCA_DEF_VMAX2(f32, float)
XCCA_DEF_VMAX2(f64, double)

/* Copy n bytes with non-temporal (cache-bypassing) stores where the target is 16-byte aligned: for outputs far
 * larger than the caches this saves reading every output line before writing it. Call xcca_stream_fence() before
 * another thread reads the data. Without SSE2 a plain memcpy. */
static inline void xcca_stream_copy(void *dst, const void *src, size_t n) {
#if defined(__SSE2__)
    unsigned char *d = (unsigned char *)dst;
    const unsigned char *s = (const unsigned char *)src;
    size_t head = (size_t)(-(uintptr_t)d) & 15u;
    if (head > n) head = n;
    memcpy(d, s, head);
    d += head; s += head; n -= head;
    for (; n >= 16; n -= 16, d += 16, s += 16)
        _mm_stream_si128((__m128i *)d, _mm_loadu_si128((const __m128i *)s));
    memcpy(d, s, n);
#else
    memcpy(dst, src, n);
#endif
}

static inline void xcca_stream_fence(void) {
#if defined(__SSE2__)
    _mm_sfence();
#endif
}

#endif
