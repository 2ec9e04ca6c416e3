// Conic (tilted-detector) remap: an untilted geometry's rings are circles of radius L tan(2theta) / pixel, bilinear
// is exact on a linear ramp, solid-angle factors are cos^-3 of the incidence angle, results independent of threads.
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

#include "check.hpp"
#include "xcca/conic.hpp"

using xcca::conic::ConicGrid;
using xcca::polar::MaskMode;
using xcca::polar::Method;

int main() {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const std::size_t H = 64, W = 80;
    std::vector<double> img(H * W);
    for (std::size_t y = 0; y < H; ++y)
        for (std::size_t x = 0; x < W; ++x) img[y * W + x] = 3.0 * double(y) + 0.5 * double(x);
    // Untilted (R = identity): A_j = (sin chi, cos chi, 0), B = (0, 0, 1); L / pixel = 100.
    const std::size_t nphi = 8, nq = 3;
    std::vector<double> chi(nphi), a(3 * nphi), s(nq), c(nq), tth = {0.05, 0.1, 0.2};
    for (std::size_t j = 0; j < nphi; ++j) {
        chi[j] = 2 * M_PI * double(j) / double(nphi);
        a[3 * j] = std::sin(chi[j]);
        a[3 * j + 1] = std::cos(chi[j]);
        a[3 * j + 2] = 0.0;
    }
    for (std::size_t i = 0; i < nq; ++i) s[i] = std::sin(tth[i]), c[i] = std::cos(tth[i]);
    const double b[3] = {0.0, 0.0, 1.0};
    const double cx = 40.0, cy = 30.0, l = 100.0;
    ConicGrid g(s, c, a, b, cx, cy, l, l, false, {}, H, W);
    CHECK(g.n_rings() == nq && g.nphi() == nphi);
    std::vector<double> out(nq * nphi), out2(nq * nphi);
    std::vector<std::uint8_t> om(nq * nphi);
    g.remap<double, double>(img.data(), 1, 0, W, nullptr, Method::bilinear, MaskMode::strict, nan, out.data(),
                            om.data(), 1);
    for (std::size_t i = 0; i < nq; ++i)
        for (std::size_t j = 0; j < nphi; ++j) {
            const double r = l * std::tan(tth[i]);
            const double x = cx + r * std::cos(chi[j]), y = cy + r * std::sin(chi[j]);
            const bool inside = x >= 0 && x <= W - 1 && y >= 0 && y <= H - 1;
            CHECK(om[i * nphi + j] == inside);
            if (inside) CHECK_CLOSE(out[i * nphi + j], 3.0 * y + 0.5 * x, 1e-12, 1e-9);
            else CHECK(std::isnan(out[i * nphi + j]));
        }
    // Solid angle: the value is divided by cos^3(2theta) (untilted: the incidence angle is 2theta).
    ConicGrid gs(s, c, a, b, cx, cy, l, l, true, {}, H, W);
    gs.remap<double, double>(img.data(), 1, 0, W, nullptr, Method::bilinear, MaskMode::strict, nan, out2.data(),
                             nullptr, 2);
    for (std::size_t i = 0; i < nq; ++i)
        for (std::size_t j = 0; j < nphi; ++j)
            if (om[i * nphi + j])
                CHECK_CLOSE(out2[i * nphi + j] * std::pow(std::cos(tth[i]), 3), out[i * nphi + j], 1e-12, 1e-12);
    // Threads do not change bits; a ray pointing away from the detector (den <= 0) is invalid.
    std::vector<double> o1(nq * nphi), o2(nq * nphi);
    g.remap<double, double>(img.data(), 1, 0, W, nullptr, Method::nearest, MaskMode::strict, nan, o1.data(),
                            nullptr, 1);
    g.remap<double, double>(img.data(), 1, 0, W, nullptr, Method::nearest, MaskMode::strict, nan, o2.data(),
                            nullptr, 3);
    for (std::size_t k = 0; k < o1.size(); ++k) CHECK((std::isnan(o1[k]) && std::isnan(o2[k])) || o1[k] == o2[k]);
    const double bb[3] = {0.0, 0.0, -1.0};
    ConicGrid away(s, c, a, bb, cx, cy, l, l, false, {}, H, W);
    away.remap<double, double>(img.data(), 1, 0, W, nullptr, Method::nearest, MaskMode::strict, nan, o1.data(),
                               om.data(), 1);
    for (auto v : om) CHECK(v == 0);
    // float32 pixels (the fused AVX-512 path where the CPU has it) equal the double-pixel path (the portable loops)
    // rounded to float, on a tilted geometry with both corrections, odd nphi (tail lanes) and edge samples.
    {
        const std::size_t np = 203, nr = 21;
        const double t1 = 0.05, t2 = -0.03;  // small rotations: R = Ry(t2) Rx(t1), applied as A_j = R^T (...)
        const double R[3][3] = {{std::cos(t2), 0.0, -std::sin(t2)},
                                {std::sin(t1) * std::sin(t2), std::cos(t1), std::sin(t1) * std::cos(t2)},
                                {std::cos(t1) * std::sin(t2), -std::sin(t1), std::cos(t1) * std::cos(t2)}};
        std::vector<double> at(3 * np), gp(np), st(nr), ct(nr);
        for (std::size_t j = 0; j < np; ++j) {
            const double ch = 2 * M_PI * double(j) / double(np);
            for (int k = 0; k < 3; ++k) at[3 * j + k] = std::sin(ch) * R[0][k] + std::cos(ch) * R[1][k];
            gp[j] = 0.99 * std::cos(2 * ch);
        }
        for (std::size_t i = 0; i < nr; ++i) st[i] = std::sin(0.02 * double(i + 1)), ct[i] = std::cos(0.02 * double(i + 1));
        const double bt[3] = {R[2][0], R[2][1], R[2][2]};
        ConicGrid gt(st, ct, at, bt, cx, cy, l, l, true, gp, H, W);
        std::vector<float> imgf(H * W);
        std::vector<double> imgd(H * W);
        for (std::size_t k = 0; k < H * W; ++k) imgf[k] = float((k * 2654435761u) % 1000) * 0.37f, imgd[k] = imgf[k];
        std::vector<float> of1(nr * np), of2(nr * np);
        std::vector<double> od(nr * np);
        std::vector<std::uint8_t> m1(nr * np), m2(nr * np);
        for (auto mode : {MaskMode::strict, MaskMode::renormalize}) {
            gt.remap<float, float>(imgf.data(), 1, 0, W, nullptr, Method::bilinear, mode, float(nan), of1.data(), m1.data(), 1);
            gt.remap<float, float>(imgf.data(), 1, 0, W, nullptr, Method::bilinear, mode, float(nan), of2.data(), nullptr, 2);
            gt.remap<double, double>(imgd.data(), 1, 0, W, nullptr, Method::bilinear, mode, nan, od.data(), m2.data(), 1);
            std::size_t valid = 0;
            for (std::size_t k = 0; k < od.size(); ++k) {
                CHECK(m1[k] == m2[k]);
                valid += m1[k];
                if (m1[k]) CHECK(of1[k] == float(od[k]) && of2[k] == of1[k]);
                else CHECK(std::isnan(of1[k]) && std::isnan(of2[k]));
            }
            CHECK(valid > 0 && valid < od.size());
            // with a pixel mask: the fused AVX2 path (float pixels) reads the mask bytes of each sample's block,
            // the portable loops (double pixels) agree
            std::vector<std::uint8_t> pm(H * W);
            for (std::size_t k = 0; k < H * W; ++k) pm[k] = ((k * 2246822519u) >> 7) % 10 != 0;
            gt.remap<float, float>(imgf.data(), 1, 0, W, pm.data(), Method::bilinear, mode, float(nan), of1.data(), m1.data(), 2);
            gt.remap<double, double>(imgd.data(), 1, 0, W, pm.data(), Method::bilinear, mode, nan, od.data(), m2.data(), 1);
            valid = 0;
            for (std::size_t k = 0; k < od.size(); ++k) {
                CHECK(m1[k] == m2[k]);
                valid += m1[k];
                if (m1[k]) CHECK(of1[k] == float(od[k]));
                else CHECK(std::isnan(of1[k]) && std::isnan(od[k]));
            }
            CHECK(valid > 0 && valid < od.size());
        }
        // A stack (pass 1 once per tile and block of frames) equals frame-by-frame remaps bit for bit: 5 different
        // frames 7 pixels apart (not contiguous), fused (float) and portable (double, nearest) paths, 1 and 2
        // threads; the valid-sample mask comes from the stack call.
        const std::size_t nf = 5, fs = H * W + 7;
        std::vector<float> sf(nf * fs);
        std::vector<double> sd(nf * fs);
        for (std::size_t k = 0; k < sf.size(); ++k) sf[k] = float((k * 40503u) % 977) * 0.53f, sd[k] = sf[k];
        for (int nth : {1, 2}) {
            std::vector<float> so(nf * nr * np), fo(nr * np);
            std::vector<double> sdo(nf * nr * np), fdo(nr * np);
            gt.remap<float, float>(sf.data(), nf, fs, W, nullptr, Method::bilinear, MaskMode::strict, float(nan),
                                   so.data(), m1.data(), nth);
            gt.remap<double, double>(sd.data(), nf, fs, W, nullptr, Method::nearest, MaskMode::strict, nan,
                                     sdo.data(), m2.data(), nth);
            for (std::size_t f = 0; f < nf; ++f) {
                gt.remap<float, float>(sf.data() + f * fs, 1, 0, W, nullptr, Method::bilinear, MaskMode::strict,
                                       float(nan), fo.data(), nullptr, 1);
                gt.remap<double, double>(sd.data() + f * fs, 1, 0, W, nullptr, Method::nearest, MaskMode::strict,
                                         nan, fdo.data(), nullptr, 1);
                for (std::size_t k = 0; k < fo.size(); ++k) {
                    const float a = so[f * nr * np + k];
                    const double ad = sdo[f * nr * np + k];
                    CHECK((std::isnan(a) && std::isnan(fo[k])) || a == fo[k]);
                    CHECK((std::isnan(ad) && std::isnan(fdo[k])) || ad == fdo[k]);
                    if (f == 0) CHECK(m1[k] == !std::isnan(fo[k]) && m2[k] == !std::isnan(fdo[k]));
                }
            }
        }
        // Single precision: the fused float path (float pixels, bilinear, no mask; AVX2) equals the portable float
        // loops (double pixels, rounded to float first: the same pixel values), for any thread count and in a
        // stack; both stay within float rounding of the double grid; a double output is refused.
        ConicGrid g1(st, ct, at, bt, cx, cy, l, l, true, gp, H, W, true);
        CHECK(g1.single() && !gt.single());
        std::vector<float> p1(nr * np), p2(nr * np), p3(nr * np), ps(nf * nr * np);
        std::vector<double> dimg(H * W);
        for (std::size_t k = 0; k < H * W; ++k) dimg[k] = imgf[k];
        for (auto mode : {MaskMode::strict, MaskMode::renormalize}) {
            g1.remap<float, float>(imgf.data(), 1, 0, W, nullptr, Method::bilinear, mode, float(nan), p1.data(), m1.data(), 1);
            g1.remap<float, float>(imgf.data(), 1, 0, W, nullptr, Method::bilinear, mode, float(nan), p2.data(), nullptr, 2);
            g1.remap<double, float>(dimg.data(), 1, 0, W, nullptr, Method::bilinear, mode, float(nan), p3.data(), m2.data(), 1);
            gt.remap<double, double>(imgd.data(), 1, 0, W, nullptr, Method::bilinear, mode, nan, od.data(), nullptr, 1);
            std::size_t valid = 0;
            for (std::size_t k = 0; k < p1.size(); ++k) {
                CHECK(m1[k] == m2[k]);
                valid += m1[k];
                if (m1[k]) {
                    CHECK(p1[k] == p2[k] && p1[k] == p3[k]);
                    CHECK_CLOSE(double(p1[k]), od[k], 1e-3, 1e-4);
                } else {
                    CHECK(std::isnan(p1[k]) && std::isnan(p2[k]) && std::isnan(p3[k]));
                }
            }
            CHECK(valid > 0 && valid < p1.size());
        }
        // With a pixel mask: the fused path (float pixels) checks each sample's mask bytes and sends the samples
        // with a masked pixel to the general path; the portable loops (double pixels) agree bit for bit.
        std::vector<std::uint8_t> pmask(H * W);
        for (std::size_t k = 0; k < H * W; ++k) pmask[k] = ((k * 2246822519u) >> 7) % 10 != 0;
        for (auto mode : {MaskMode::strict, MaskMode::renormalize}) {
            g1.remap<float, float>(imgf.data(), 1, 0, W, pmask.data(), Method::bilinear, mode, float(nan), p1.data(),
                                   m1.data(), 2);
            g1.remap<double, float>(dimg.data(), 1, 0, W, pmask.data(), Method::bilinear, mode, float(nan), p3.data(),
                                    m2.data(), 1);
            std::size_t valid = 0;
            for (std::size_t k = 0; k < p1.size(); ++k) {
                CHECK(m1[k] == m2[k]);
                valid += m1[k];
                CHECK((std::isnan(p1[k]) && std::isnan(p3[k])) || p1[k] == p3[k]);
            }
            CHECK(valid > 0 && valid < p1.size());
        }
        for (int nth : {1, 2}) {
            g1.remap<float, float>(sf.data(), nf, fs, W, nullptr, Method::bilinear, MaskMode::strict, float(nan),
                                   ps.data(), nullptr, nth);
            for (std::size_t f = 0; f < nf; ++f) {
                g1.remap<float, float>(sf.data() + f * fs, 1, 0, W, nullptr, Method::bilinear, MaskMode::strict,
                                       float(nan), p1.data(), nullptr, 1);
                for (std::size_t k = 0; k < p1.size(); ++k) {
                    const float v = ps[f * nr * np + k];
                    CHECK((std::isnan(v) && std::isnan(p1[k])) || v == p1[k]);
                }
            }
        }
        bool refused = false;
        try {
            g1.remap<double, double>(imgd.data(), 1, 0, W, nullptr, Method::bilinear, MaskMode::strict, nan,
                                     od.data(), nullptr, 1);
        } catch (const std::invalid_argument&) {
            refused = true;
        }
        CHECK(refused);
    }
    bool threw = false;
    try {
        ConicGrid bad(s, c, std::vector<double>(4, 0.0), b, cx, cy, l, l, false, {}, H, W);
    } catch (const std::invalid_argument&) {
        threw = true;
    }
    CHECK(threw);
    return xcca_test::failures() ? 1 : 0;
}
