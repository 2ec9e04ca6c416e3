// Private: the sampling rules of xcca/polar.hpp (nearest pixel, exact bilinear weights, masks, both mask modes) at a
// given coordinate, shared by polar.cpp (PolarGrid) and conic.cpp (ConicGrid) so that both pick the same pixels and
// weights for the same coordinates. Include after the fp-contract=off pragma (no fused multiply-add: the bits of
// the weights are part of the specification, xcca.reference.sample_at).
#pragma once

#include <cstddef>
#include <cstdint>

#include "xcca/polar.hpp"

namespace xcca::sampling {

// Internal linkage: each including file compiles its own copy under its own optimisation attributes.
namespace {

using polar::MaskMode;

// floor(x) as an integer and x - floor(x) (exact); only for |x| well inside the int64 range. Cast-based because
// std::floor is a library call on baseline x86-64 (no SSE4.1). T: double, or float for the float32 grids.
template <class T>
inline void split(T x, std::int64_t& i, T& f) {
    std::int64_t t = static_cast<std::int64_t>(x);
    t -= static_cast<T>(t) > x;
    i = t;
    f = x - static_cast<T>(t);
}

// Nearest pixel index along one axis for a coordinate already known inside [-0.5, n - 0.5).
template <class T>
inline std::ptrdiff_t nearest_index(T x) {
    std::int64_t i;
    T f;
    split(x, i, f);
    return static_cast<std::ptrdiff_t>(i + (f >= 0.5));
}

// G: any type with W, H (image width and height as doubles) and w, h (the same as integers).
// The general bilinear sample (any position, optional mask, both modes) over a pixel accessor px(r, c) -> T
// (the raw pixel, or a corrected one: conic_flat.cpp). Returns validity, writes the value. Every operation in T
// (double; float for the float32 grids of conic_single.cpp, whose specification is the same rule in float32).
template <bool HasMask, class G, class Px, class T>
inline bool sample_bilinear_px(const G& g, T x, T y, const Px& px, const std::uint8_t* mask, MaskMode mode,
                               T& value) {
    if (!(x > -1.0 && x < g.W && y > -1.0 && y < g.H)) return false;  // no used pixel inside (also NaN)
    std::int64_t ix, iy;
    T fx, fy;
    split(x, ix, fx);
    split(y, iy, fy);
    // The second column/row is used only with a positive weight; otherwise it aliases the first (weight 0).
    const std::ptrdiff_t c0 = ix, c1 = ix + (fx > T(0)), r0 = iy, r1 = iy + (fy > T(0));
    const bool ic0 = c0 >= 0, ic1 = c1 < g.w, ir0 = r0 >= 0, ir1 = r1 < g.h;
    bool k00 = ir0 && ic0, k01 = ir0 && ic1, k10 = ir1 && ic0, k11 = ir1 && ic1;
    if (HasMask) {
        k00 = k00 && mask[r0 * g.w + c0];
        k01 = k01 && mask[r0 * g.w + c1];
        k10 = k10 && mask[r1 * g.w + c0];
        k11 = k11 && mask[r1 * g.w + c1];
    }
    const T wx0 = T(1) - fx, wx1 = fx, wy0 = T(1) - fy, wy1 = fy;
    if (k00 && k01 && k10 && k11) {
        const T p00 = px(r0, c0), p01 = px(r0, c1);
        const T p10 = px(r1, c0), p11 = px(r1, c1);
        value = wy0 * (wx0 * p00 + wx1 * p01) + wy1 * (wx0 * p10 + wx1 * p11);
        return true;
    }
    if (mode == MaskMode::strict) return false;
    const T w00 = k00 ? wy0 * wx0 : T(0), w01 = k01 ? wy0 * wx1 : T(0);
    const T w10 = k10 ? wy1 * wx0 : T(0), w11 = k11 ? wy1 * wx1 : T(0);
    const T s = ((w00 + w01) + w10) + w11;
    if (!(s >= T(0.5))) return false;
    T acc = T(0);  // invalid pixels are never read (their value may be NaN or outside the image)
    if (k00) acc += w00 * px(r0, c0);
    if (k01) acc += w01 * px(r0, c1);
    if (k10) acc += w10 * px(r1, c0);
    if (k11) acc += w11 * px(r1, c1);
    value = acc / s;
    return true;
}

// sample_bilinear_px on the raw pixels of img (row stride rs), converted to T.
template <class In, bool HasMask, class G, class T>
inline bool sample_bilinear(const G& g, T x, T y, const In* img, std::ptrdiff_t rs, const std::uint8_t* mask,
                            MaskMode mode, T& value) {
    const auto px = [img, rs](std::ptrdiff_t r, std::ptrdiff_t c) { return static_cast<T>(img[r * rs + c]); };
    return sample_bilinear_px<HasMask>(g, x, y, px, mask, mode, value);
}

}  // namespace

}  // namespace xcca::sampling
