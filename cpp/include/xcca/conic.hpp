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
              std::size_t width);
    std::size_t n_rings() const noexcept { return s_.size(); }
    std::size_t nphi() const noexcept { return a_.size() / 3; }
    std::size_t height() const noexcept { return height_; }
    std::size_t width() const noexcept { return width_; }

    /// As xcca::polar::PolarGrid::remap (same layout, mask and thread conventions).
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
    // The fused AVX2 path (the same cases, 4 lanes; see conic.cpp).
    template <class In, class Out, bool SA, bool Pol>
    void remap256(const In* images, std::size_t n_frames, std::ptrdiff_t frame_stride, std::ptrdiff_t row_stride,
                  MaskMode mode, Out fill, Out* out, std::uint8_t* out_mask, int n_threads) const;
    Tables tables(std::size_t j0) const;
    std::vector<double> s_, c_, a_, g_;
    double b_[3];
    double cx_, cy_, ly_, lx_;
    bool solid_angle_;
    std::size_t height_, width_;
};

}  // namespace xcca::conic
