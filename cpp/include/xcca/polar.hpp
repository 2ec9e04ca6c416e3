// Polar remap of detector images: one output row per radius, nphi columns around the ring.
//
// Convention: centre (cx, cy) in pixels, cx along columns (fast axis), cy along rows; pixel (row, col) has its centre
// at integer coordinates. Sample (i, j) is taken at column x = cx + r_i cos(phi_j), row y = cy + r_i sin(phi_j),
// with phi_j = phi0 + 2 pi j / nphi (endpoint excluded).
//
// nearest : the pixel whose centre is nearest; the sample is inside when -0.5 <= x < W - 0.5 and -0.5 <= y < H - 0.5
//           (ties x = k + 0.5 go to k + 1).
// bilinear: exact weights in double precision. A pixel is *used* by a sample when its weight is > 0 (a sample at an
//           integer column uses one column, not two), so samples on the last row/column are still inside.
// mask    : nonzero = valid pixel (LOKI's convention). strict: a sample is valid only if every pixel it uses is
//           inside and valid. renormalize: the valid used pixels, weights renormalised; valid where their weight sum
//           is >= 0.5 (where all used pixels are valid the value equals the strict one bit for bit).
// Invalid samples hold `fill`. NaN pixels propagate to the samples that use them (they are not marked invalid).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace xcca::polar {

enum class Method : int { nearest = 0, bilinear = 1 };
enum class MaskMode : int { strict = 0, renormalize = 1 };

/// Geometry of a polar remap, validated and precomputed once, reusable for any number of frames (thread-safe: all
/// methods are const).
class PolarGrid {
public:
    /// Angles phi_j = phi0 + 2 pi j / nphi, cos/sin from std::cos/std::sin.
    PolarGrid(double cx, double cy, std::vector<double> radii, std::size_t nphi, std::size_t height,
              std::size_t width, double phi0 = 0.0);
    /// Caller-supplied cos(phi_j) and sin(phi_j) tables (same length nphi >= 1), e.g. to match another library's
    /// rounding of the angles bit for bit.
    PolarGrid(double cx, double cy, std::vector<double> radii, std::vector<double> cos_phi,
              std::vector<double> sin_phi, std::size_t height, std::size_t width);

    std::size_t n_radii() const noexcept { return radii_.size(); }
    std::size_t nphi() const noexcept { return cos_.size(); }
    std::size_t height() const noexcept { return height_; }
    std::size_t width() const noexcept { return width_; }
    double cx() const noexcept { return cx_; }
    double cy() const noexcept { return cy_; }
    const std::vector<double>& radii() const noexcept { return radii_; }
    const std::vector<double>& cos_phi() const noexcept { return cos_; }
    const std::vector<double>& sin_phi() const noexcept { return sin_; }

    /// Remaps `n_frames` images of height() x width() into out[f][i][j] (n_frames x n_radii x nphi, contiguous).
    /// Image f, row y starts at images + f * frame_stride + y * row_stride (strides in elements; columns contiguous).
    /// mask: height x width contiguous bytes, nonzero = valid, or nullptr (all pixels valid). out_mask: n_radii x nphi
    /// bytes (1 = valid sample) or nullptr. n_threads: 0 = all usable cores. Results do not depend on n_threads.
    /// In: any of uint8/int8/uint16/int16/uint32/int32/uint64/int64/float/double; Out: float or double.
    template <class In, class Out>
    void remap(const In* images, std::size_t n_frames, std::ptrdiff_t frame_stride, std::ptrdiff_t row_stride,
               const std::uint8_t* mask, Method method, MaskMode mode, Out fill, Out* out, std::uint8_t* out_mask,
               int n_threads) const;

    /// Output tiles are tile_radii() x tile_phi() samples (chosen at construction, see polar.cpp); in each output row
    /// a tile's angle range starts at the next 64-byte line of the output, so no output line is shared by two tiles.
    std::size_t tile_phi() const noexcept { return tile_phi_; }
    std::size_t tile_radii() const noexcept { return tile_radii_; }

private:
    void init();
    double cx_, cy_;
    std::vector<double> radii_, cos_, sin_;
    std::size_t height_, width_;
    std::size_t tile_phi_ = 0, tile_radii_ = 0;
    std::size_t n_blocks_ = 0;  // ceil(nphi / tile_phi)
    // Per (radius, block of tile_phi angles): 1 if every sample's pixels are inside the image (bounds-check-free path).
    std::vector<std::uint8_t> interior_nearest_, interior_bilinear_;
    // float32 copies of the geometry for the nearest-neighbour fast path (exact; see polar.cpp), and its margin:
    // empty when coordinates are too large for it.
    std::vector<float> cos_f_, sin_f_;
    float cx_f_ = 0.f, cy_f_ = 0.f, lim_f_ = 0.f;
};

}  // namespace xcca::polar
