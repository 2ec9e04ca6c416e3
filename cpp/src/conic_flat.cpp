// ConicGrid::remap_flat_dark: the tilted-detector remap with a per-pixel flat field and dark current applied to the
// pixels each sample reads (see xcca/conic.hpp). Portable loops only, kept apart from the fused SIMD paths of
// conic.cpp. Every pixel a sample reads has the value (double(I) - dark[p]) * inv_flat[p]; the coordinates, the
// nearest / bilinear rules, masks, both mask modes and the per-sample correction are those of ConicGrid::remap (and
// of xcca.reference.conic_coordinates / sample_at / conic_correction), evaluated in the same operation order.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "xcca/conic.hpp"
#include "xcca/threads.hpp"

// Coordinates and weights must round exactly as written: no contraction to fused multiply-add.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off", "tree-vectorize", "no-trapping-math")
#elif defined(__clang__)
#pragma clang fp contract(off)
#endif

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(XCCA_NO_CLONES)
// The coordinate pass (divisions) vectorises; AVX-512 and AVX2 clones chosen at load time (as conic.cpp).
#define XCCA_FD_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define XCCA_FD_CLONES
#endif

#include "conic_rule.hpp"  // after the pragma (no FMA)
#include "sampling.hpp"  // after the pragma (no FMA)

namespace xcca::conic {

namespace {

using sampling::nearest_index;
using sampling::split;

struct GeoF {
    double W, H;
    std::ptrdiff_t w, h;
};

// The corrected value of pixel (r, c) of one frame; fd holds (dark, 1 / flat) per pixel, interleaved (one cache
// line serves both).
template <class In>
struct Pixels {
    const In* img;
    std::ptrdiff_t rs;
    std::ptrdiff_t w;
    const double* fd;
    double operator()(std::ptrdiff_t r, std::ptrdiff_t c) const {
        const double* p = fd + 2 * (r * w + c);
        return (static_cast<double>(img[r * rs + c]) - p[0]) * p[1];
    }
};

// Coordinates (and correction factors: inv, null without corrections) of n samples of ring (s, c): the loops of
// conic_rule.hpp (those of conic.cpp's coordinates()), vectorised by the compiler in each clone.
XCCA_FD_CLONES void coords_fd(std::size_t n, double s, double c, double b0, double b1, double b2,
                              const double* __restrict a0, const double* __restrict a1, const double* __restrict a2,
                              double cx, double cy, double ly, double lx, bool sa, const double* __restrict g,
                              double* __restrict x, double* __restrict y, double* __restrict den,
                              double* __restrict inv) {
    conic_rule::ring_coordinates(n, s, c, b0, b1, b2, a0, a1, a2, g, sa, cx, cy, ly, lx, x, y, den, inv);
}

}  // namespace

template <class In, class Out>
void ConicGrid::remap_flat_dark(const In* images, std::size_t n_frames, std::ptrdiff_t frame_stride,
                                std::ptrdiff_t row_stride, const std::uint8_t* mask, Method method, MaskMode mode,
                                Out fill, Out* out, std::uint8_t* out_mask, int n_threads,
                                const double* dark_inv_flat) const {
    if (method != Method::nearest && method != Method::bilinear)
        throw std::invalid_argument("xcca::conic::ConicGrid::remap_flat_dark: unknown method");
    if (mode != MaskMode::strict && mode != MaskMode::renormalize)
        throw std::invalid_argument("xcca::conic::ConicGrid::remap_flat_dark: unknown mask mode");
    if (single_)
        throw std::invalid_argument("xcca::conic::ConicGrid::remap_flat_dark: not available on a single-precision "
                                    "grid (flat/dark are applied in double precision)");
    const std::size_t nr = s_.size(), nphi = a_.size() / 3;
    if (n_frames == 0 || nr == 0) return;
    if (!images || !out || !dark_inv_flat)
        throw std::invalid_argument("xcca::conic::ConicGrid::remap_flat_dark: null image, output, dark or flat");
    const GeoF geo{double(width_), double(height_), std::ptrdiff_t(width_), std::ptrdiff_t(height_)};
    const bool corr = solid_angle_ || !g_.empty(), pol = !g_.empty();
    const double* a0 = a_.data();
    const double* a1 = a_.data() + nphi;
    const double* a2 = a_.data() + 2 * nphi;
    const bool nearest = method == Method::nearest;
    // Tasks: one frame x 16 rings x 128 angles (an arc of a few hundred pixels per ring: the pixels and their
    // (dark, 1/flat) stay in cache from ring to ring, as the tiles of conic.cpp). Every sample is computed on its
    // own, so the result does not depend on the threads.
    constexpr std::size_t tr = 16, tc = 128;
    const conic_rule::Tiling tiling(n_frames, nr, nphi, tr, tc);
    // Stacks: the coordinates depend on the geometry only. A task is then (block of frames, 16 rings, 128 angles):
    // the coordinates of the tile's rings are computed once (one buffer per ring, ~64 KB) and every frame of the
    // block is sampled from them (the same values: bit-identical to remapping frame by frame).
    const bool stack = n_frames > 1;
    struct Ring {
        alignas(64) double x[tc], y[tc], den[tc], inv[tc];
    };
    parallel_for(tiling.tasks(), n_threads, 4, [&](std::size_t t0, std::size_t t1) {
        std::vector<Ring> buf(stack ? tr : 2);  // heap, not the (small) thread stack
        for (std::size_t t = t0; t < t1; ++t) {
            const conic_rule::Task tk = tiling(t);  // plain copies below: the lambdas capture them
            const std::size_t f0 = tk.f0, f1 = tk.f1, i0 = tk.i0, i1 = tk.i1, j0 = tk.j0, n = tk.n;
            const std::size_t nt = i1 - i0;
            auto slot = [&](std::size_t i) -> Ring& { return buf[stack ? i - i0 : (i - i0) & 1]; };
            auto frame = [&](std::size_t f) { return images + static_cast<std::ptrdiff_t>(f) * frame_stride; };
            auto prefetch = [&](const In* img, const Ring& rg) {
                for (std::size_t q = 0; q < n; q += 2) {
                    const double xq = rg.x[q], yq = rg.y[q];
                    if (!(xq >= 0.0 && xq < geo.W && yq >= 0.0 && yq < geo.H)) continue;
                    const std::ptrdiff_t r = static_cast<std::ptrdiff_t>(yq), cc = static_cast<std::ptrdiff_t>(xq);
                    __builtin_prefetch(dark_inv_flat + 2 * (r * geo.w + cc));
                    __builtin_prefetch(img + r * row_stride + cc);
                }
            };
            // coordinates of ring i into its slot
            auto prepare_ring = [&](std::size_t i) {
                Ring& rg = slot(i);
                coords_fd(n, s_[i], c_[i], b_[0], b_[1], b_[2], a0 + j0, a1 + j0, a2 + j0, cx_, cy_, ly_, lx_,
                          solid_angle_, pol ? g_.data() + j0 : nullptr, rg.x, rg.y, rg.den, corr ? rg.inv : nullptr);
            };
            for (std::size_t f = f0; f < f1; ++f) {
                const Pixels<In> px{frame(f), row_stride, geo.w, dark_inv_flat};
                if (f == f0) prepare_ring(i0);
                for (std::size_t i = i0; i < i1; ++i) {
                    // ring i + 1 is prepared in the first frame of the block (and its pixels prefetched) while ring
                    // i is sampled: the ring walk jumps between image rows, which hardware prefetchers do not
                    // follow; in a stack, the last ring prefetches the next frame's first ring
                    if (i + 1 < i1) {
                        if (f == f0) prepare_ring(i + 1);
                        prefetch(px.img, slot(i + 1));
                    } else if (stack && f + 1 < f1) {
                        prefetch(frame(f + 1), slot(i + 1 - nt));
                    }
                    const Ring& rg = slot(i);
                    const double* x = rg.x;
                    const double* y = rg.y;
                    const double* den = rg.den;
                    const double* inv = rg.inv;
                    Out* o = out + (f * nr + i) * nphi + j0;
                    std::uint8_t* om = (f == 0 && out_mask) ? out_mask + i * nphi + j0 : nullptr;
                    for (std::size_t q = 0; q < n; ++q) {
                        const double xq = x[q], yq = y[q];
                        double v = 0.0;
                        bool ok = den[q] > 0.0;
                        if (ok && nearest) {
                            ok = xq >= -0.5 && xq < geo.W - 0.5 && yq >= -0.5 && yq < geo.H - 0.5;
                            if (ok) {
                                const std::ptrdiff_t ix = nearest_index(xq), iy = nearest_index(yq);
                                ok = !mask || mask[iy * geo.w + ix] != 0;
                                if (ok) v = px(iy, ix);
                            }
                        } else if (ok) {
                            ok = mask ? sampling::sample_bilinear_px<true>(geo, xq, yq, px, mask, mode, v)
                                 : sampling::sample_bilinear_px<false>(geo, xq, yq, px, nullptr, mode, v);
                        }
                        if (corr) v *= inv[q];
                        o[q] = ok ? static_cast<Out>(v) : fill;
                        if (om) om[q] = ok;
                    }
                }
            }
        }
    });
}

#define XCCA_CONIC_FD_INSTANTIATE(In)                                                                             \
    template void ConicGrid::remap_flat_dark<In, float>(const In*, std::size_t, std::ptrdiff_t, std::ptrdiff_t,  \
                                                        const std::uint8_t*, Method, MaskMode, float, float*,     \
                                                        std::uint8_t*, int, const double*) const;  \
    template void ConicGrid::remap_flat_dark<In, double>(const In*, std::size_t, std::ptrdiff_t, std::ptrdiff_t, \
                                                         const std::uint8_t*, Method, MaskMode, double, double*,  \
                                                         std::uint8_t*, int, const double*) const;
XCCA_CONIC_FD_INSTANTIATE(std::uint8_t)
XCCA_CONIC_FD_INSTANTIATE(std::int8_t)
XCCA_CONIC_FD_INSTANTIATE(std::uint16_t)
XCCA_CONIC_FD_INSTANTIATE(std::int16_t)
XCCA_CONIC_FD_INSTANTIATE(std::uint32_t)
XCCA_CONIC_FD_INSTANTIATE(std::int32_t)
XCCA_CONIC_FD_INSTANTIATE(std::uint64_t)
XCCA_CONIC_FD_INSTANTIATE(std::int64_t)
XCCA_CONIC_FD_INSTANTIATE(float)
XCCA_CONIC_FD_INSTANTIATE(double)
#undef XCCA_CONIC_FD_INSTANTIATE

}  // namespace xcca::conic
