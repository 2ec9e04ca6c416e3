// Polar remap: nearest/bilinear against hand-computed values, masks, edges, stacks and thread-count independence.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

#include "check.hpp"
#include "xcca/polar.hpp"

using xcca::polar::MaskMode;
using xcca::polar::Method;
using xcca::polar::PolarGrid;

int main() {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    // 5 x 7 image with value 10*row + col: bilinear is exact for this linear ramp.
    const std::size_t H = 5, W = 7;
    std::vector<float> img(H * W);
    for (std::size_t y = 0; y < H; ++y)
        for (std::size_t x = 0; x < W; ++x) img[y * W + x] = float(10 * y + x);

    // Centre (3, 2), radii 0, 1.5, 3: phi = 0, pi/2, pi, 3pi/2.
    PolarGrid g(3.0, 2.0, {0.0, 1.5, 3.0}, 4, H, W);
    std::vector<double> out(3 * 4);
    std::vector<std::uint8_t> om(3 * 4);
    g.remap<float, double>(img.data(), 1, 0, W, nullptr, Method::bilinear, MaskMode::strict, nan, out.data(),
                           om.data(), 1);
    auto ramp = [](double x, double y) { return 10 * y + x; };
    CHECK_CLOSE(out[0], ramp(3, 2), 0, 1e-12);
    CHECK_CLOSE(out[4 + 0], ramp(4.5, 2), 0, 1e-12);
    CHECK_CLOSE(out[4 + 1], ramp(3, 3.5), 0, 1e-12);
    CHECK_CLOSE(out[4 + 2], ramp(1.5, 2), 0, 1e-12);
    CHECK_CLOSE(out[8 + 0], ramp(6, 2), 0, 1e-12);  // x = W-1 exactly: inside (one column used)
    CHECK(om[8 + 0] == 1);
    CHECK(std::isnan(out[8 + 1]) && om[8 + 1] == 0);  // y = 5 > H-1: outside
    CHECK_CLOSE(out[8 + 2], ramp(0, 2), 0, 1e-12);

    // Nearest: tie x = k + 0.5 goes to k + 1.
    g.remap<float, double>(img.data(), 1, 0, W, nullptr, Method::nearest, MaskMode::strict, -1.0, out.data(),
                           om.data(), 1);
    CHECK(out[4 + 0] == ramp(5, 2));
    CHECK(out[4 + 2] == ramp(2, 2));  // x = 1.5 -> 2
    CHECK(out[8 + 1] == -1.0 && om[8 + 1] == 0);

    // Mask: invalidate pixel (2, 5) (row 2, col 5). Strict: sample at x = 4.5 uses it -> invalid;
    // renormalize: only (2,4) left with weight 0.5 -> valid, value 24.
    std::vector<std::uint8_t> mask(H * W, 1);
    mask[2 * W + 5] = 0;
    g.remap<float, double>(img.data(), 1, 0, W, mask.data(), Method::bilinear, MaskMode::strict, nan, out.data(),
                           om.data(), 2);
    CHECK(std::isnan(out[4]) && om[4] == 0);
    CHECK(om[0] == 1);
    g.remap<float, double>(img.data(), 1, 0, W, mask.data(), Method::bilinear, MaskMode::renormalize, nan,
                           out.data(), om.data(), 2);
    CHECK(om[4] == 1);
    CHECK_CLOSE(out[4], 24.0, 0, 1e-12);

    // Stacks with a row stride (a cropped view) and thread-count independence on a bigger grid.
    const std::size_t h = 61, w = 83, stride = 90;
    std::vector<double> big(2 * h * stride);
    for (std::size_t k = 0; k < big.size(); ++k) big[k] = std::sin(0.37 * double(k)) * 100.0;
    std::vector<double> radii;
    for (int r = 0; r < 60; ++r) radii.push_back(0.7 * r);
    PolarGrid gb(40.3, 29.9, radii, 301, h, w, 0.1);
    std::vector<float> o1(2 * radii.size() * 301), o2(o1.size()), o3(radii.size() * 301);
    for (Method m : {Method::nearest, Method::bilinear}) {
        for (MaskMode mm : {MaskMode::strict, MaskMode::renormalize}) {
            gb.remap<double, float>(big.data(), 2, h * stride, stride, nullptr, m, mm, 0.f, o1.data(), nullptr, 1);
            gb.remap<double, float>(big.data(), 2, h * stride, stride, nullptr, m, mm, 0.f, o2.data(), nullptr, 2);
            CHECK(o1 == o2);
            gb.remap<double, float>(big.data() + h * stride, 1, 0, stride, nullptr, m, mm, 0.f, o3.data(), nullptr,
                                    3);
            CHECK(std::equal(o3.begin(), o3.end(), o1.begin() + o3.size()));
        }
    }

    // The vectorised interior loops (float/double/int32 pixels) against the scalar ones (int16 pixels) on integer-valued
    // images: the values are exact in every type, so the outputs must agree bit for bit. Integer centre: samples
    // at phi = 0, pi/2, ... sit on pixel centres (zero-weight neighbours).
    {
        const std::size_t h2 = 211, w2 = 307;
        std::vector<float> fimg(h2 * w2);
        std::vector<double> dimg(h2 * w2);
        std::vector<std::int32_t> iimg(h2 * w2);
        std::vector<std::int16_t> simg(h2 * w2);
        for (std::size_t k = 0; k < fimg.size(); ++k) {
            iimg[k] = static_cast<std::int32_t>((k * 7919) % 2001) - 1000;
            fimg[k] = float(iimg[k]);
            dimg[k] = double(iimg[k]);
            simg[k] = static_cast<std::int16_t>(iimg[k]);
        }
        std::vector<double> rr;
        for (int r = 0; r < 140; ++r) rr.push_back(r * 1.0);
        rr.push_back(17.25);
        PolarGrid g2(150.0, 100.0, rr, 1003, h2, w2);
        const std::size_t n2 = rr.size() * 1003;
        std::vector<double> a(n2), b(n2), c(n2), d(n2);
        for (Method m : {Method::nearest, Method::bilinear}) {
            g2.remap<float, double>(fimg.data(), 1, 0, w2, nullptr, m, MaskMode::strict, nan, a.data(), nullptr, 2);
            g2.remap<double, double>(dimg.data(), 1, 0, w2, nullptr, m, MaskMode::strict, nan, b.data(), nullptr, 2);
            g2.remap<std::int32_t, double>(iimg.data(), 1, 0, w2, nullptr, m, MaskMode::strict, nan, c.data(),
                                           nullptr, 2);
            g2.remap<std::int16_t, double>(simg.data(), 1, 0, w2, nullptr, m, MaskMode::strict, nan, d.data(),
                                           nullptr, 2);
            bool same = true;
            for (std::size_t k = 0; k < n2; ++k) {
                const bool na = std::isnan(a[k]), nb = std::isnan(b[k]), nc = std::isnan(c[k]), nd = std::isnan(d[k]);
                same = same && na == nb && na == nc && na == nd && (na || (a[k] == b[k] && a[k] == c[k] && a[k] == d[k]));
            }
            CHECK(same);
        }
        // NaN pixels: the fast loops (no mask) against the general path (an all-valid mask), bit for bit; a
        // zero-weight neighbour must not be read into the sum (0 * NaN).
        for (std::size_t k = 0; k < fimg.size(); k += 37) fimg[k] = dimg[k] = nan;
        const std::vector<std::uint8_t> ones(h2 * w2, 1);
        for (Method m : {Method::nearest, Method::bilinear}) {
            g2.remap<float, double>(fimg.data(), 1, 0, w2, nullptr, m, MaskMode::strict, nan, a.data(), nullptr, 2);
            g2.remap<float, double>(fimg.data(), 1, 0, w2, ones.data(), m, MaskMode::strict, nan, b.data(), nullptr,
                                    2);
            g2.remap<double, double>(dimg.data(), 1, 0, w2, nullptr, m, MaskMode::strict, nan, c.data(), nullptr, 2);
            bool same = true;
            for (std::size_t k = 0; k < n2; ++k) {
                const bool na = std::isnan(a[k]), nb = std::isnan(b[k]), nc = std::isnan(c[k]);
                same = same && na == nb && na == nc && (na || (a[k] == b[k] && a[k] == c[k]));
            }
            CHECK(same);
            if (m == Method::bilinear) {  // the formula itself, sample by sample (NaN only where a used pixel is NaN)
                bool ok = true;
                for (std::size_t i = 0; i < rr.size(); ++i)
                    for (std::size_t j = 0; j < 1003; ++j) {
                        const double x = 150.0 + rr[i] * g2.cos_phi()[j], y = 100.0 + rr[i] * g2.sin_phi()[j];
                        const double x0 = std::floor(x), y0 = std::floor(y), fx = x - x0, fy = y - y0;
                        const long c0 = long(x0), r0 = long(y0), c1 = c0 + (fx > 0), r1 = r0 + (fy > 0);
                        if (x < 0 || y < 0 || c1 >= long(w2) || r1 >= long(h2)) continue;
                        const double want = (1 - fy) * ((1 - fx) * fimg[r0 * w2 + c0] + fx * fimg[r0 * w2 + c1]) +
                                            fy * ((1 - fx) * fimg[r1 * w2 + c0] + fx * fimg[r1 * w2 + c1]);
                        const double got = a[i * 1003 + j];
                        ok = ok && (std::isnan(want) ? std::isnan(got) : got == want);
                    }
                CHECK(ok);
            }
        }
    }

    // Nearest near ties: the float32 coordinate fast path must defer to the double-precision rule (floor(x) +
    // [x - floor(x) >= 0.5]) wherever float32 cannot tell. Angle tables of cos = 1, sin = 0 or cos = 0, sin = 1 put
    // every sample of a row at x = cx + r (or y = cy + r), with cx = k + 1/2 - d: float32 rounds most of these to
    // the tie or to the wrong side, the double rule does not.
    {
        const std::size_t h3 = 64, w3 = 300, n3 = 96;
        std::vector<float> img3(h3 * w3);
        for (std::size_t k = 0; k < img3.size(); ++k) img3[k] = float(k);
        const std::vector<double> rr3 = {0.0, 1.0, 7.0, 100.0, 200.5, 37.25};
        for (double d : {0.0, 1e-9, -1e-9, 1e-7, -1e-7, 3e-5, -3e-5, 1e-3}) {
            for (int axis = 0; axis < 2; ++axis) {
                const double cx = axis == 0 ? 40.5 - d : 40.0, cy = axis == 0 ? 30.0 : 20.5 - d;
                std::vector<double> c(n3, axis == 0 ? 1.0 : 0.0), sn(n3, axis == 0 ? 0.0 : 1.0);
                // h3 x w3 covers y = 20.5 + 37.25 = 57.75 and x = 40.5 + 200.5; the 100, 200.5 rows of axis 1 are
                // outside (fill) and the others are interior runs of 96 samples.
                PolarGrid g3(cx, cy, rr3, c, sn, h3, w3);
                std::vector<float> o3(rr3.size() * n3);
                for (int masked = 0; masked < 2; ++masked) {
                    std::vector<std::uint8_t> m3(h3 * w3, 1);
                    g3.remap<float, float>(img3.data(), 1, 0, w3, masked ? m3.data() : nullptr, Method::nearest,
                                           MaskMode::strict, -1.f, o3.data(), nullptr, 1);
                    bool ok = true;
                    for (std::size_t i = 0; i < rr3.size(); ++i) {
                        const double x = cx + rr3[i] * c[0], y = cy + rr3[i] * sn[0];
                        const double ix = std::floor(x) + (x - std::floor(x) >= 0.5);
                        const double iy = std::floor(y) + (y - std::floor(y) >= 0.5);
                        const bool inside = x >= -0.5 && x < w3 - 0.5 && y >= -0.5 && y < h3 - 0.5;
                        const float want = inside ? img3[std::size_t(iy) * w3 + std::size_t(ix)] : -1.f;
                        for (std::size_t j = 0; j < n3; ++j) ok = ok && o3[i * n3 + j] == want;
                    }
                    CHECK(ok);
                }
            }
        }
    }

    CHECK_THROWS(PolarGrid(0, 0, {1.0}, 0, 3, 3), std::invalid_argument);
    CHECK_THROWS(PolarGrid(nan, 0, {1.0}, 4, 3, 3), std::invalid_argument);
    CHECK_THROWS(PolarGrid(0, 0, {-1.0}, 4, 3, 3), std::invalid_argument);
    CHECK_THROWS(PolarGrid(0, 0, {nan}, 4, 3, 3), std::invalid_argument);
    TEST_MAIN_RETURN();
}
