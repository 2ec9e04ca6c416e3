// Private: the coordinate and correction rule of xcca/conic.hpp (one division per sample), shared by conic.cpp
// (ConicGrid::remap's portable loops and the fused paths' scalar tails) and conic_flat.cpp (remap_flat_dark), so
// that every path evaluates the same operations in the same order (xcca.reference.conic_coordinates /
// conic_correction). The fused AVX-512/AVX2 kernels in conic.cpp spell the same operations with intrinsics.
// Include after the fp-contract=off pragma (no fused multiply-add: the bits are part of the specification).
#pragma once

#include <cstddef>

namespace xcca::conic_rule {

// Internal linkage: each including file compiles its own copy under its own optimisation and target attributes.
namespace {

// One sample at direction (a0, a1, a2) of ring (s, c): den, row y, column x; returns the correction factor
// (1 without corrections). cbK = c * B[K]; p1 = 1 + c^2, m1 = 1 - c^2, g = g_j (read only with polarisation).
// T: double, or float for the float32 grids (conic_single.cpp: the same operations in float32).
template <bool Pol, bool SA, class T>
__attribute__((always_inline)) inline T sample(T s, T cb0, T cb1, T cb2, T p1, T m1, T a0, T a1, T a2, T g, T cx,
                                               T cy, T ly, T lx, T& x, T& y, T& d) {
    d = s * a2 + cb2;
    T r, iv = T(0);
    if constexpr (Pol) {
        const T p = T(0.5) * (p1 - g * m1);
        iv = T(1) / (d * p);
        r = p * iv;
    } else {
        r = T(1) / d;
    }
    y = cy + ly * ((s * a0 + cb0) * r);
    x = cx + lx * ((s * a1 + cb1) * r);
    if constexpr (Pol && SA) return (r * r) * iv;
    else if constexpr (Pol) return d * iv;
    else if constexpr (SA) return (r * r) * r;
    else return T(1);
}

// sample() with the two corrections chosen at run time (the scalar paths: conic.cpp's coord1, conic_single.cpp's
// coord32); g is read only with polarisation.
template <class T>
__attribute__((always_inline)) inline T sample_any(bool pol, bool sa, T s, T cb0, T cb1, T cb2, T p1, T m1, T a0,
                                                   T a1, T a2, T g, T cx, T cy, T ly, T lx, T& x, T& y, T& d) {
    if (pol)
        return sa ? sample<true, true>(s, cb0, cb1, cb2, p1, m1, a0, a1, a2, g, cx, cy, ly, lx, x, y, d)
                  : sample<true, false>(s, cb0, cb1, cb2, p1, m1, a0, a1, a2, g, cx, cy, ly, lx, x, y, d);
    return sa ? sample<false, true>(s, cb0, cb1, cb2, p1, m1, a0, a1, a2, g, cx, cy, ly, lx, x, y, d)
              : sample<false, false>(s, cb0, cb1, cb2, p1, m1, a0, a1, a2, g, cx, cy, ly, lx, x, y, d);
}

// n samples of ring (s, c) over the per-angle tables a0, a1, a2 (and g with polarisation); inv receives the
// correction factors when there is a correction. Restrict pointers and the cases hoisted: each loop vectorises.
template <bool Pol, bool SA>
__attribute__((always_inline)) inline void ring_loop(std::size_t n, double s, double c, double b0, double b1,
                                                     double b2, const double* __restrict a0,
                                                     const double* __restrict a1, const double* __restrict a2,
                                                     const double* __restrict g, double cx, double cy, double ly,
                                                     double lx, double* __restrict x, double* __restrict y,
                                                     double* __restrict den, double* __restrict inv) {
    const double cb0 = c * b0, cb1 = c * b1, cb2 = c * b2, c2 = c * c, p1 = 1.0 + c2, m1 = 1.0 - c2;
    for (std::size_t q = 0; q < n; ++q) {
        double xq, yq, d;
        const double corr = sample<Pol, SA>(s, cb0, cb1, cb2, p1, m1, a0[q], a1[q], a2[q], Pol ? g[q] : 0.0, cx, cy,
                                            ly, lx, xq, yq, d);
        den[q] = d;
        y[q] = yq;
        x[q] = xq;
        if constexpr (Pol || SA) inv[q] = corr;
    }
}

// The four cases: polarisation when g is given, solid angle when sa (and inv is given).
__attribute__((always_inline)) inline void ring_coordinates(std::size_t n, double s, double c, double b0, double b1,
                                                            double b2, const double* a0, const double* a1,
                                                            const double* a2, const double* g, bool sa, double cx,
                                                            double cy, double ly, double lx, double* x, double* y,
                                                            double* den, double* inv) {
    if (g && sa) ring_loop<true, true>(n, s, c, b0, b1, b2, a0, a1, a2, g, cx, cy, ly, lx, x, y, den, inv);
    else if (g) ring_loop<true, false>(n, s, c, b0, b1, b2, a0, a1, a2, g, cx, cy, ly, lx, x, y, den, inv);
    else if (sa && inv) ring_loop<false, true>(n, s, c, b0, b1, b2, a0, a1, a2, g, cx, cy, ly, lx, x, y, den, inv);
    else ring_loop<false, false>(n, s, c, b0, b1, b2, a0, a1, a2, g, cx, cy, ly, lx, x, y, den, inv);
}

// The per-ring buffer of the fused SIMD paths' pass 1 (conic.cpp in double, conic_single.cpp in float): N samples
// of one ring of a task in groups of Lanes, read by pass 2.
template <class T, std::size_t Lanes, std::size_t N>
struct FusedSlot {
    alignas(64) T fx[N], fy[N], inv[N];     // fractions, correction factors
    alignas(64) std::int32_t k0[N], k1[N];  // pixel offsets of the top-left pixel and of the bottom row's left one
    alignas(64) std::int32_t km[N];         // with a mask: mask offset of the top-left pixel (interior lanes)
    unsigned char ok[N / Lanes];            // interior lanes of each group (2x2 block inside the image)
    unsigned char right[N / Lanes];         // with a mask: lanes that use the right column (fx > 0)
    unsigned char down[N / Lanes];          // with a mask: lanes that use the bottom row (fy > 0)
};

// The remap's tasks, shared by every path (conic.cpp's fused and portable loops, conic_flat.cpp): task t is (block
// of up to frame_block frames, tile of `rings` rings, chunk of `angles` angles), the block outermost. The coordinates
// depend on the geometry only, so a task computes them once for its tile and samples every frame of its block from
// them (the same values for every frame: bit-identical to remapping frame by frame, for any thread count).
constexpr std::size_t frame_block = 16;

struct Task {
    std::size_t f0, f1;  // frames [f0, f1)
    std::size_t i0, i1;  // rings [i0, i1)
    std::size_t j0, n;   // angles [j0, j0 + n)
};

struct Tiling {
    std::size_t n_frames, nr, nphi, rings, angles, n_pt, per_block, fb, n_fb;
    Tiling(std::size_t n_frames_, std::size_t nr_, std::size_t nphi_, std::size_t rings_, std::size_t angles_)
        : n_frames(n_frames_), nr(nr_), nphi(nphi_), rings(rings_), angles(angles_),
          n_pt((nphi_ + angles_ - 1) / angles_), per_block((nr_ + rings_ - 1) / rings_ * n_pt),
          fb(n_frames_ < frame_block ? n_frames_ : frame_block), n_fb((n_frames_ + fb - 1) / fb) {}
    std::size_t tasks() const { return n_fb * per_block; }
    Task operator()(std::size_t t) const {
        const std::size_t b = t / per_block, rt = (t % per_block) / n_pt, pt = t % n_pt;
        const std::size_t f0 = b * fb, i0 = rt * rings, j0 = pt * angles;
        return Task{f0,  f0 + fb < n_frames ? f0 + fb : n_frames, i0, i0 + rings < nr ? i0 + rings : nr,
                    j0, (j0 + angles < nphi ? j0 + angles : nphi) - j0};
    }
};

}  // namespace

}  // namespace xcca::conic_rule
