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

#include "xcca/conic.hpp"
#include "xcca/threads.hpp"

// Coordinates and weights must round exactly as written: no contraction to fused multiply-add.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#elif defined(__clang__)
#pragma clang fp contract(off)
#endif

#include "sampling.hpp"  // after the pragma (no FMA)

namespace xcca::conic {

namespace {

using sampling::nearest_index;
using sampling::split;

struct GeoF {
    double W, H;
    std::ptrdiff_t w, h;
};

// The corrected value of pixel (r, c) of one frame.
template <class In>
struct Pixels {
    const In* img;
    std::ptrdiff_t rs;
    std::ptrdiff_t w;
    const double* dark;
    const double* rflat;
    double operator()(std::ptrdiff_t r, std::ptrdiff_t c) const {
        const std::ptrdiff_t p = r * w + c;
        return (static_cast<double>(img[r * rs + c]) - dark[p]) * rflat[p];
    }
};

// sampling::sample_bilinear with the corrected pixel values (same tests, weights and operation order).
template <class In>
bool bilinear_fd(const GeoF& g, double x, double y, const Pixels<In>& px, const std::uint8_t* mask, MaskMode mode,
                 double& value) {
    if (!(x > -1.0 && x < g.W && y > -1.0 && y < g.H)) return false;  // no used pixel inside (also NaN)
    std::int64_t ix, iy;
    double fx, fy;
    split(x, ix, fx);
    split(y, iy, fy);
    const std::ptrdiff_t c0 = ix, c1 = ix + (fx > 0.0), r0 = iy, r1 = iy + (fy > 0.0);
    const bool ic0 = c0 >= 0, ic1 = c1 < g.w, ir0 = r0 >= 0, ir1 = r1 < g.h;
    bool k00 = ir0 && ic0, k01 = ir0 && ic1, k10 = ir1 && ic0, k11 = ir1 && ic1;
    if (mask) {
        k00 = k00 && mask[r0 * g.w + c0];
        k01 = k01 && mask[r0 * g.w + c1];
        k10 = k10 && mask[r1 * g.w + c0];
        k11 = k11 && mask[r1 * g.w + c1];
    }
    const double wx0 = 1.0 - fx, wx1 = fx, wy0 = 1.0 - fy, wy1 = fy;
    if (k00 && k01 && k10 && k11) {
        const double p00 = px(r0, c0), p01 = px(r0, c1), p10 = px(r1, c0), p11 = px(r1, c1);
        value = wy0 * (wx0 * p00 + wx1 * p01) + wy1 * (wx0 * p10 + wx1 * p11);
        return true;
    }
    if (mode == MaskMode::strict) return false;
    const double w00 = k00 ? wy0 * wx0 : 0.0, w01 = k01 ? wy0 * wx1 : 0.0;
    const double w10 = k10 ? wy1 * wx0 : 0.0, w11 = k11 ? wy1 * wx1 : 0.0;
    const double s = ((w00 + w01) + w10) + w11;
    if (!(s >= 0.5)) return false;
    double acc = 0.0;  // invalid pixels are never read
    if (k00) acc += w00 * px(r0, c0);
    if (k01) acc += w01 * px(r0, c1);
    if (k10) acc += w10 * px(r1, c0);
    if (k11) acc += w11 * px(r1, c1);
    value = acc / s;
    return true;
}

}  // namespace

template <class In, class Out>
void ConicGrid::remap_flat_dark(const In* images, std::size_t n_frames, std::ptrdiff_t frame_stride,
                                std::ptrdiff_t row_stride, const std::uint8_t* mask, Method method, MaskMode mode,
                                Out fill, Out* out, std::uint8_t* out_mask, int n_threads, const double* dark,
                                const double* inv_flat) const {
    if (method != Method::nearest && method != Method::bilinear)
        throw std::invalid_argument("xcca::conic::ConicGrid::remap_flat_dark: unknown method");
    if (mode != MaskMode::strict && mode != MaskMode::renormalize)
        throw std::invalid_argument("xcca::conic::ConicGrid::remap_flat_dark: unknown mask mode");
    const std::size_t nr = s_.size(), nphi = a_.size() / 3;
    if (n_frames == 0 || nr == 0) return;
    if (!images || !out || !dark || !inv_flat)
        throw std::invalid_argument("xcca::conic::ConicGrid::remap_flat_dark: null image, output, dark or flat");
    const GeoF geo{double(width_), double(height_), std::ptrdiff_t(width_), std::ptrdiff_t(height_)};
    const bool corr = solid_angle_ || !g_.empty(), pol = !g_.empty();
    const double* a0 = a_.data();
    const double* a1 = a_.data() + nphi;
    const double* a2 = a_.data() + 2 * nphi;
    const bool nearest = method == Method::nearest;
    // One task per (frame, ring); every sample is computed on its own, so the result does not depend on threads.
    parallel_for(n_frames * nr, n_threads, 4, [&](std::size_t t0, std::size_t t1) {
        for (std::size_t t = t0; t < t1; ++t) {
            const std::size_t f = t / nr, i = t % nr;
            const Pixels<In> px{images + static_cast<std::ptrdiff_t>(f) * frame_stride, row_stride, geo.w, dark,
                                inv_flat};
            const double s = s_[i], c = c_[i];
            const double cb0 = c * b_[0], cb1 = c * b_[1], cb2 = c * b_[2], c2 = c * c;
            Out* o = out + (f * nr + i) * nphi;
            std::uint8_t* om = (f == 0 && out_mask) ? out_mask + i * nphi : nullptr;
            for (std::size_t j = 0; j < nphi; ++j) {
                // coordinates and correction: conic.hpp's formulas in its order
                const double d = s * a2[j] + cb2;
                const double r = 1.0 / d;
                const double y = cy_ + ly_ * ((s * a0[j] + cb0) * r);
                const double x = cx_ + lx_ * ((s * a1[j] + cb1) * r);
                double v = 0.0;
                bool ok = d > 0.0;
                if (ok && nearest) {
                    ok = x >= -0.5 && x < geo.W - 0.5 && y >= -0.5 && y < geo.H - 0.5;
                    if (ok) {
                        const std::ptrdiff_t ix = nearest_index(x), iy = nearest_index(y);
                        ok = !mask || mask[iy * geo.w + ix] != 0;
                        if (ok) v = px(iy, ix);
                    }
                } else if (ok) {
                    ok = bilinear_fd(geo, x, y, px, mask, mode, v);
                }
                if (corr) {
                    const double sa = solid_angle_ ? (d * d * d) : 1.0;
                    const double pf = pol ? (0.5 * ((1.0 + c2) - g_[j] * (1.0 - c2))) : 1.0;
                    v *= 1.0 / (sa * pf);
                }
                o[j] = ok ? static_cast<Out>(v) : fill;
                if (om) om[j] = ok;
            }
        }
    });
}

#define XCCA_CONIC_FD_INSTANTIATE(In)                                                                             \
    template void ConicGrid::remap_flat_dark<In, float>(const In*, std::size_t, std::ptrdiff_t, std::ptrdiff_t,  \
                                                        const std::uint8_t*, Method, MaskMode, float, float*,     \
                                                        std::uint8_t*, int, const double*, const double*) const;  \
    template void ConicGrid::remap_flat_dark<In, double>(const In*, std::size_t, std::ptrdiff_t, std::ptrdiff_t, \
                                                         const std::uint8_t*, Method, MaskMode, double, double*,  \
                                                         std::uint8_t*, int, const double*, const double*) const;
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
