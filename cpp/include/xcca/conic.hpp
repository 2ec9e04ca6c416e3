// Polar remap along rings of constant scattering angle on a tilted flat detector (conics), with per-sample
// solid-angle and polarisation corrections. Sampling rules (nearest / bilinear, masks, fill) are those of
// xcca/polar.hpp, applied to these coordinates.
//
// Ring i has scattering angle 2theta_i (s_i = sin 2theta_i, c_i = cos 2theta_i); angle j has the lab azimuth chi_j.
// The ray direction in the detector frame is u = s_i A_j + c_i B (A_j = R^T (sin chi_j, cos chi_j, 0),
// B = R^T (0, 0, 1), R pyFAI's rotation), and the sample is where it meets the detector plane:
//     den = s_i A_j[2] + c_i B[2]                       (cos of the incidence angle; den <= 0: no intersection)
//     pol = 0.5 * ((1 + c_i^2) - g_j (1 - c_i^2))       g_j = factor cos(2 (chi_j + offset)); only with polarisation
//     r   = 1 / den                       without polarisation
//     iv  = 1 / (den * pol), r = pol * iv with polarisation (one division per sample; r differs from 1 / den by
//                                         at most ~1e-12 px after scaling, and pol -> 0 makes the sample invalid)
//     y   = cy + ly * ((s_i A_j[0] + c_i B[0]) * r)     row
//     x   = cx + lx * ((s_i A_j[1] + c_i B[1]) * r)     column
// Correction (the value is multiplied by it, = 1 / (solid angle * polarisation)):
//     solid angle and polarisation: (r * r) * iv;  solid angle only: (r * r) * r;  polarisation only: den * iv;
//     neither: 1.
// All evaluated in double precision exactly in this order (explicit intrinsics, no fused multiply-add), so the
// NumPy specification (xcca.reference.conic_coordinates / conic_correction) gives the same values bit for bit.
//
// Single-precision grids (constructed with single = true; src/conic_single.cpp): the same rule with every table
// rounded once to float (s, c, A, B, g, cx, cy, ly, lx) and every operation above, the sampling rules of
// xcca/polar.hpp and the pixel values (float(I)) in float; the output is float. Twice the SIMD lanes of the double
// rule (AVX2: 8), positions to ~1e-3 px on a Pilatus-sized detector; the specification is the same NumPy code run in
// float32 (xcca.reference.conic_coordinates(..., dtype=np.float32), sample_at(..., dtype=np.float32)).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "xcca/polar.hpp"

namespace xcca::conic {

struct Tables;  // private to conic.cpp

using polar::MaskMode;
using polar::Method;

class ConicGrid {
public:
    /// s, c: per ring (same length); a: 3 * nphi (A_j[0], A_j[1], A_j[2] per angle); b: B (3); g: per angle
    /// polarisation terms (empty = no polarisation correction).
    ConicGrid(std::vector<double> s, std::vector<double> c, std::vector<double> a, const double b[3], double cx,
              double cy, double ly, double lx, bool solid_angle, std::vector<double> g, std::size_t height,
              std::size_t width, bool single = false);
    std::size_t n_rings() const noexcept { return s_.size(); }
    std::size_t nphi() const noexcept { return a_.size() / 3; }
    std::size_t height() const noexcept { return height_; }
    std::size_t width() const noexcept { return width_; }
    /// Whether this grid computes in single precision (then remap writes float only).
    bool single() const noexcept { return single_; }

    /// As xcca::polar::PolarGrid::remap (same layout, mask and thread conventions). A single-precision grid needs
    /// Out = float (std::invalid_argument otherwise).
    template <class In, class Out>
    void remap(const In* images, std::size_t n_frames, std::ptrdiff_t frame_stride, std::ptrdiff_t row_stride,
               const std::uint8_t* mask, Method method, MaskMode mode, Out fill, Out* out, std::uint8_t* out_mask,
               int n_threads) const;

    /// As remap, with a per-pixel flat field and dark current applied to every pixel a sample reads: the pixel
    /// value is (double(I) - dark[p]) * inv_flat[p] (p = row * width + column; dark_inv_flat is a C-contiguous
    /// height x width x 2 array holding (dark, inv_flat = 1 / flat) per pixel), then nearest / bilinear sampling
    /// and the per-sample correction as in remap. Portable loops (src/conic_flat.cpp; the fused SIMD paths of remap
    /// are not taken); bit-identical for any thread count; the specification is xcca.reference.conic_flat_dark.
    template <class In, class Out>
    void remap_flat_dark(const In* images, std::size_t n_frames, std::ptrdiff_t frame_stride,
                         std::ptrdiff_t row_stride, const std::uint8_t* mask, Method method, MaskMode mode, Out fill,
                         Out* out, std::uint8_t* out_mask, int n_threads, const double* dark_inv_flat) const;

private:
    // The fused AVX-512 path (bilinear, no pixel mask, 32-bit pixels; see conic.cpp).
    template <class In, class Out, bool SA, bool Pol>
    void remap512(const In* images, std::size_t n_frames, std::ptrdiff_t frame_stride, std::ptrdiff_t row_stride,
                  MaskMode mode, Out fill, Out* out, std::uint8_t* out_mask, int n_threads) const;
    // The fused AVX2 path (the same cases, 4 lanes, and with a pixel mask; see conic.cpp).
    template <class In, class Out, bool SA, bool Pol>
    void remap256(const In* images, std::size_t n_frames, std::ptrdiff_t frame_stride, std::ptrdiff_t row_stride,
                  const std::uint8_t* mask, MaskMode mode, Out fill, Out* out, std::uint8_t* out_mask,
                  int n_threads) const;
    // The single-precision remap (src/conic_single.cpp).
    template <class In>
    void remap_single(const In* images, std::size_t n_frames, std::ptrdiff_t frame_stride, std::ptrdiff_t row_stride,
                      const std::uint8_t* mask, Method method, MaskMode mode, float fill, float* out,
                      std::uint8_t* out_mask, int n_threads) const;
    Tables tables(std::size_t j0) const;
    std::vector<double> s_, c_, a_, g_;
    double b_[3];
    double cx_, cy_, ly_, lx_;
    bool solid_angle_;
    std::size_t height_, width_;
    bool single_ = false;
    // Single precision: the tables rounded once to float (a32_ as three planes like a_).
    std::vector<float> s32_, c32_, a32_, g32_;
    float b32_[3] = {0, 0, 0}, cx32_ = 0, cy32_ = 0, ly32_ = 0, lx32_ = 0;
};

}  // namespace xcca::conic
