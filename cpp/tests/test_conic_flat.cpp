// ConicGrid::remap_flat_dark: with dark = 0 and inv_flat = 1 it equals ConicGrid::remap bit for bit (double pixels,
// every method / mask / mode, with corrections); with a dark and a flat it samples (I - dark) / flat; threads do not
// change bits; frames of a stack are independent.
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "check.hpp"
#include "xcca/conic.hpp"

using xcca::conic::ConicGrid;
using xcca::polar::MaskMode;
using xcca::polar::Method;

static bool same(double a, double b) { return (std::isnan(a) && std::isnan(b)) || a == b; }

int main() {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const std::size_t H = 48, W = 56, np = 77, nr = 9;
    const double t1 = 0.04, t2 = -0.02;
    const double R[3][3] = {{std::cos(t2), 0.0, -std::sin(t2)},
                            {std::sin(t1) * std::sin(t2), std::cos(t1), std::sin(t1) * std::cos(t2)},
                            {std::cos(t1) * std::sin(t2), -std::sin(t1), std::cos(t1) * std::cos(t2)}};
    std::vector<double> a(3 * np), gp(np), s(nr), c(nr);
    for (std::size_t j = 0; j < np; ++j) {
        const double ch = 2 * M_PI * double(j) / double(np);
        for (int k = 0; k < 3; ++k) a[3 * j + k] = std::sin(ch) * R[0][k] + std::cos(ch) * R[1][k];
        gp[j] = 0.99 * std::cos(2 * ch);
    }
    for (std::size_t i = 0; i < nr; ++i) {
        const double tth = 0.02 + 0.03 * double(i);
        s[i] = std::sin(tth), c[i] = std::cos(tth);
    }
    const double b[3] = {R[2][0], R[2][1], R[2][2]};
    ConicGrid g(s, c, a, b, 26.3, 21.7, 120.0, 120.0, true, gp, H, W);
    const std::size_t nf = 2;
    std::vector<double> img(nf * H * W), dark(H * W), rflat(H * W), id(2 * H * W), fd(2 * H * W);
    std::vector<std::uint8_t> mask(H * W);
    for (std::size_t k = 0; k < nf * H * W; ++k) img[k] = std::sin(0.37 * double(k)) * 100.0 + double(k % 7);
    for (std::size_t k = 0; k < H * W; ++k) {
        dark[k] = 0.25 * double(k % 5);
        rflat[k] = 1.0 / (0.8 + 0.01 * double(k % 41));
        mask[k] = (k % 13) != 0;
        id[2 * k] = 0.0, id[2 * k + 1] = 1.0;  // dark 0, flat 1
        fd[2 * k] = dark[k], fd[2 * k + 1] = rflat[k];
    }
    const std::size_t n = nf * nr * np;
    std::vector<double> o1(n), o2(n), o3(n);
    std::vector<std::uint8_t> m1(nr * np), m2(nr * np);
    for (Method method : {Method::nearest, Method::bilinear})
        for (MaskMode mode : {MaskMode::strict, MaskMode::renormalize})
            for (const std::uint8_t* mk : {static_cast<const std::uint8_t*>(nullptr), static_cast<const std::uint8_t*>(mask.data())}) {
                g.remap<double, double>(img.data(), nf, H * W, W, mk, method, mode, nan, o1.data(), m1.data(), 1);
                g.remap_flat_dark<double, double>(img.data(), nf, H * W, W, mk, method, mode, nan, o2.data(),
                                                  m2.data(), 3, id.data());
                for (std::size_t k = 0; k < n; ++k) CHECK(same(o1[k], o2[k]));
                for (std::size_t k = 0; k < nr * np; ++k) CHECK(m1[k] == m2[k]);
                // (I - dark) / flat per pixel, then the same remap; threads do not change bits
                std::vector<double> corr(nf * H * W);
                for (std::size_t k = 0; k < nf * H * W; ++k)
                    corr[k] = (img[k] - dark[k % (H * W)]) * rflat[k % (H * W)];
                g.remap<double, double>(corr.data(), nf, H * W, W, mk, method, mode, nan, o1.data(), nullptr, 2);
                g.remap_flat_dark<double, double>(img.data(), nf, H * W, W, mk, method, mode, nan, o2.data(),
                                                  nullptr, 1, fd.data());
                g.remap_flat_dark<double, double>(img.data(), nf, H * W, W, mk, method, mode, nan, o3.data(),
                                                  nullptr, 4, fd.data());
                for (std::size_t k = 0; k < n; ++k) CHECK(same(o1[k], o2[k]) && same(o2[k], o3[k]));
            }
    // float32 pixels, float output: the double computation rounded once
    std::vector<float> imf(H * W), of(nr * np);
    std::vector<double> imd(H * W);
    for (std::size_t k = 0; k < H * W; ++k) imf[k] = static_cast<float>(img[k]), imd[k] = double(imf[k]);
    g.remap_flat_dark<float, float>(imf.data(), 1, 0, W, nullptr, Method::bilinear, MaskMode::strict, 0.0f,
                                    of.data(), nullptr, 2, fd.data());
    g.remap_flat_dark<double, double>(imd.data(), 1, 0, W, nullptr, Method::bilinear, MaskMode::strict, 0.0,
                                      o1.data(), nullptr, 2, fd.data());
    for (std::size_t k = 0; k < nr * np; ++k) CHECK(of[k] == static_cast<float>(o1[k]));
    return xcca_test::failures() ? 1 : 0;
}
