#include "xcca/polar.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

#include "xcca/threads.hpp"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(XCCA_NO_CLONES)
// Portable wheels: an AVX2 clone of the hot loops (inline floor, wider vectors) chosen at load time.
#define XCCA_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define XCCA_CLONES
#endif

namespace xcca::polar {

namespace {

constexpr double two_pi = 6.283185307179586476925286766559;

// floor(x) as an integer and x - floor(x) (exact); only for |x| well inside the int64 range. Cast-based because
// std::floor is a library call on baseline x86-64 (no SSE4.1).
inline void split(double x, std::int64_t& i, double& f) {
    std::int64_t t = static_cast<std::int64_t>(x);
    t -= static_cast<double>(t) > x;
    i = t;
    f = x - static_cast<double>(t);
}

struct Geometry {
    double cx, cy, W, H;  // W, H as doubles for the range checks
    std::ptrdiff_t w, h;
};

// Whether the bilinear sample at (x, y) uses only pixels inside the image: 0 <= x <= W-1 and 0 <= y <= H-1.
inline bool bilinear_interior(const Geometry& g, double x, double y) {
    return x >= 0.0 && x <= g.W - 1.0 && y >= 0.0 && y <= g.H - 1.0;
}
inline bool nearest_inside(const Geometry& g, double x, double y) {
    return x >= -0.5 && x < g.W - 0.5 && y >= -0.5 && y < g.H - 0.5;
}
// Nearest pixel index along one axis for a coordinate already known inside [-0.5, n - 0.5).
inline std::ptrdiff_t nearest_index(double x) {
    std::int64_t i;
    double f;
    split(x, i, f);
    return static_cast<std::ptrdiff_t>(i + (f >= 0.5));
}

// One output row (radius r, angles [j0, j1)) of the nearest-neighbour remap.
template <class In, class Out, bool Interior, bool HasMask>
XCCA_CLONES void row_nearest(const Geometry& g, double r, const double* cs, const double* sn, std::size_t n,
                             const In* img, std::ptrdiff_t rs, const std::uint8_t* mask, Out fill, Out* o,
                             std::uint8_t* om) {
    for (std::size_t j = 0; j < n; ++j) {
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

// The general bilinear sample (any position, optional mask, both modes). Returns validity, writes the value.
template <class In, bool HasMask>
inline bool sample_bilinear(const Geometry& g, double x, double y, const In* img, std::ptrdiff_t rs,
                            const std::uint8_t* mask, MaskMode mode, double& value) {
    if (!(x > -1.0 && x < g.W && y > -1.0 && y < g.H)) return false;  // no used pixel inside (also NaN)
    std::int64_t ix, iy;
    double fx, fy;
    split(x, ix, fx);
    split(y, iy, fy);
    // The second column/row is used only with a positive weight; otherwise it aliases the first (weight 0).
    const std::ptrdiff_t c0 = ix, c1 = ix + (fx > 0.0), r0 = iy, r1 = iy + (fy > 0.0);
    const bool ic0 = c0 >= 0, ic1 = c1 < g.w, ir0 = r0 >= 0, ir1 = r1 < g.h;
    bool k00 = ir0 && ic0, k01 = ir0 && ic1, k10 = ir1 && ic0, k11 = ir1 && ic1;
    if (HasMask) {
        k00 = k00 && mask[r0 * g.w + c0];
        k01 = k01 && mask[r0 * g.w + c1];
        k10 = k10 && mask[r1 * g.w + c0];
        k11 = k11 && mask[r1 * g.w + c1];
    }
    const double wx0 = 1.0 - fx, wx1 = fx, wy0 = 1.0 - fy, wy1 = fy;
    if (k00 && k01 && k10 && k11) {
        const double p00 = img[r0 * rs + c0], p01 = img[r0 * rs + c1];
        const double p10 = img[r1 * rs + c0], p11 = img[r1 * rs + c1];
        value = wy0 * (wx0 * p00 + wx1 * p01) + wy1 * (wx0 * p10 + wx1 * p11);
        return true;
    }
    if (mode == MaskMode::strict) return false;
    const double w00 = k00 ? wy0 * wx0 : 0.0, w01 = k01 ? wy0 * wx1 : 0.0;
    const double w10 = k10 ? wy1 * wx0 : 0.0, w11 = k11 ? wy1 * wx1 : 0.0;
    const double s = ((w00 + w01) + w10) + w11;
    if (!(s >= 0.5)) return false;
    double acc = 0.0;  // invalid pixels are never read (their value may be NaN or outside the image)
    if (k00) acc += w00 * static_cast<double>(img[r0 * rs + c0]);
    if (k01) acc += w01 * static_cast<double>(img[r0 * rs + c1]);
    if (k10) acc += w10 * static_cast<double>(img[r1 * rs + c0]);
    if (k11) acc += w11 * static_cast<double>(img[r1 * rs + c1]);
    value = acc / s;
    return true;
}

// One output row of the bilinear remap. Interior: every sample's pixels are inside the image, so no bounds checks;
// without a mask that is a pure gather-and-blend loop.
template <class In, class Out, bool Interior, bool HasMask>
XCCA_CLONES void row_bilinear(const Geometry& g, double r, const double* cs, const double* sn, std::size_t n,
                              const In* img, std::ptrdiff_t rs, const std::uint8_t* mask, MaskMode mode, Out fill,
                              Out* o, std::uint8_t* om) {
    if (Interior && !HasMask) {
        for (std::size_t j = 0; j < n; ++j) {
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
        if (om)
            for (std::size_t j = 0; j < n; ++j) om[j] = 1;
        return;
    }
    for (std::size_t j = 0; j < n; ++j) {
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
    n_blocks_ = (nphi + tile_phi - 1) / tile_phi;
    interior_nearest_.assign(nr * n_blocks_, 0);
    interior_bilinear_.assign(nr * n_blocks_, 0);
    for (std::size_t i = 0; i < nr; ++i) {
        const double r = radii_[i];
        for (std::size_t b = 0; b < n_blocks_; ++b) {
            bool nn = true, bl = true;
            for (std::size_t j = b * tile_phi; j < std::min(nphi, (b + 1) * tile_phi); ++j) {
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
    const std::size_t n_rtiles = (nr + tile_radii - 1) / tile_radii;
    const std::size_t per_frame = n_rtiles * n_blocks_;
    // Tiles of tile_radii x tile_phi samples; consecutive tiles walk around an annulus, so the source pixels they
    // touch stay in cache. Each output element is computed by one thread with the same code: bits do not depend on
    // the thread count.
    parallel_for(n_frames * per_frame, n_threads, 1, [&](std::size_t t0, std::size_t t1) {
        for (std::size_t t = t0; t < t1; ++t) {
            const std::size_t f = t / per_frame, rt = (t % per_frame) / n_blocks_, b = t % n_blocks_;
            const In* img = images + static_cast<std::ptrdiff_t>(f) * frame_stride;
            const std::size_t j0 = b * tile_phi, n = std::min(nphi, j0 + tile_phi) - j0;
            const double* cs = cos_.data() + j0;
            const double* sn = sin_.data() + j0;
            for (std::size_t i = rt * tile_radii; i < std::min(nr, (rt + 1) * tile_radii); ++i) {
                Out* o = out + (f * nr + i) * nphi + j0;
                std::uint8_t* om = (f == 0 && out_mask) ? out_mask + i * nphi + j0 : nullptr;
                const double r = radii_[i];
                if (method == Method::nearest) {
                    const bool in = interior_nearest_[i * n_blocks_ + b];
                    if (in && !mask)
                        row_nearest<In, Out, true, false>(g, r, cs, sn, n, img, row_stride, mask, fill, o, om);
                    else if (in)
                        row_nearest<In, Out, true, true>(g, r, cs, sn, n, img, row_stride, mask, fill, o, om);
                    else if (!mask)
                        row_nearest<In, Out, false, false>(g, r, cs, sn, n, img, row_stride, mask, fill, o, om);
                    else
                        row_nearest<In, Out, false, true>(g, r, cs, sn, n, img, row_stride, mask, fill, o, om);
                } else {
                    const bool in = interior_bilinear_[i * n_blocks_ + b];
                    if (in && !mask)
                        row_bilinear<In, Out, true, false>(g, r, cs, sn, n, img, row_stride, mask, mode, fill, o,
                                                           om);
                    else if (!mask)
                        row_bilinear<In, Out, false, false>(g, r, cs, sn, n, img, row_stride, mask, mode, fill, o,
                                                            om);
                    else
                        row_bilinear<In, Out, false, true>(g, r, cs, sn, n, img, row_stride, mask, mode, fill, o,
                                                           om);
                }
            }
        }
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
