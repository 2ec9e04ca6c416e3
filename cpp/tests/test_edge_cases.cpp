// Edge cases of every kernel, meant to run under ASan + UBSan (-fsanitize=address,undefined,float-cast-overflow,
// see .ci/run): ring lengths n = 1, 2 and odd, radii on the image border, tiny (1e-300) and huge (1e9, 1e300)
// radii, 1-pixel images, masks with a single valid sample, and 1 vs 3 threads (bit-identical results).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <type_traits>
#include <vector>

#include "check.hpp"
#include "xcca/correlate.hpp"
#include "xcca/fit.hpp"
#include "xcca/outliers.hpp"
#include "xcca/pairing.hpp"
#include "xcca/polar.hpp"

namespace {

using xcca::polar::MaskMode;
using xcca::polar::Method;
using xcca::polar::PolarGrid;
namespace xc = xcca::correlate;

std::mt19937 rng(2026);
const double nan_d = std::numeric_limits<double>::quiet_NaN();

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}
bool same_bits(const std::vector<double>& a, const std::vector<double>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0;
}

// Nearest-neighbour reference (polar.hpp): inside when -0.5 <= x < W - 0.5 and -0.5 <= y < H - 0.5, ties to k + 1.
bool nearest_ref(double x, double y, std::size_t H, std::size_t W, long& col, long& row) {
    if (!(x >= -0.5 && x < double(W) - 0.5 && y >= -0.5 && y < double(H) - 0.5)) return false;
    col = static_cast<long>(std::floor(x));
    if (x - std::floor(x) >= 0.5) ++col;
    row = static_cast<long>(std::floor(y));
    if (y - std::floor(y) >= 0.5) ++row;
    return true;
}

// Strict bilinear reference: pixels with a positive weight must be inside and valid.
bool bilinear_ref(double x, double y, const std::vector<double>& img, const std::uint8_t* mask, std::size_t H,
                  std::size_t W, double& v) {
    if (!(x > -1.0 && x < double(W) && y > -1.0 && y < double(H))) return false;
    const double x0 = std::floor(x), y0 = std::floor(y), fx = x - x0, fy = y - y0;
    v = 0.0;
    for (int dy = 0; dy < 2; ++dy)
        for (int dx = 0; dx < 2; ++dx) {
            const double w = (dx ? fx : 1 - fx) * (dy ? fy : 1 - fy);
            if (!(w > 0)) continue;
            const double cx = x0 + dx, cy = y0 + dy;
            if (cx < 0 || cy < 0 || cx > double(W - 1) || cy > double(H - 1)) return false;
            const std::size_t k = static_cast<std::size_t>(cy) * W + static_cast<std::size_t>(cx);
            if (mask && !mask[k]) return false;
            v += w * img[k];
        }
    return true;
}

void polar_case(double cx, double cy, const std::vector<double>& radii, std::size_t nphi, std::size_t H,
                std::size_t W, bool single_valid_pixel) {
    std::vector<double> img(H * W);
    for (auto& p : img) p = double(rng() % 1000) - 300.0;
    std::vector<std::uint8_t> mask(H * W, 0);
    if (single_valid_pixel) mask[(H / 2) * W + W / 2] = 1;
    const std::uint8_t* m = single_valid_pixel ? mask.data() : nullptr;
    PolarGrid g(cx, cy, radii, nphi, H, W);
    const std::size_t nr = radii.size();
    for (Method method : {Method::nearest, Method::bilinear}) {
        for (MaskMode mode : {MaskMode::strict, MaskMode::renormalize}) {
            std::vector<double> o1(nr * nphi), o3(nr * nphi);
            std::vector<std::uint8_t> om1(nr * nphi), om3(nr * nphi);
            g.remap<double, double>(img.data(), 1, 0, std::ptrdiff_t(W), m, method, mode, -7.0, o1.data(),
                                    om1.data(), 1);
            g.remap<double, double>(img.data(), 1, 0, std::ptrdiff_t(W), m, method, mode, -7.0, o3.data(),
                                    om3.data(), 3);
            CHECK(same_bits(o1, o3));
            CHECK(om1 == om3);
            std::vector<float> f1(nr * nphi), f3(nr * nphi);
            std::vector<float> imgf(img.begin(), img.end());
            g.remap<float, float>(imgf.data(), 1, 0, std::ptrdiff_t(W), m, method, mode, -7.f, f1.data(), nullptr, 1);
            g.remap<float, float>(imgf.data(), 1, 0, std::ptrdiff_t(W), m, method, mode, -7.f, f3.data(), nullptr, 3);
            CHECK(same_bits(f1, f3));
            if (mode == MaskMode::renormalize && method == Method::bilinear) continue;  // no simple reference
            for (std::size_t i = 0; i < nr; ++i)
                for (std::size_t j = 0; j < nphi; ++j) {
                    const double x = cx + radii[i] * g.cos_phi()[j], y = cy + radii[i] * g.sin_phi()[j];
                    const std::size_t k = i * nphi + j;
                    if (method == Method::nearest) {
                        long c = 0, r = 0;
                        bool ok = nearest_ref(x, y, H, W, c, r);
                        if (ok && m) ok = m[std::size_t(r) * W + std::size_t(c)] != 0;
                        CHECK(om1[k] == (ok ? 1 : 0));
                        CHECK(o1[k] == (ok ? img[std::size_t(r) * W + std::size_t(c)] : -7.0));
                    } else {
                        double v = 0;
                        const bool ok = bilinear_ref(x, y, img, m, H, W, v);
                        CHECK(om1[k] == (ok ? 1 : 0));
                        if (ok)
                            CHECK_CLOSE(o1[k], v, 1e-12, 1e-9);
                        else
                            CHECK(o1[k] == -7.0);
                    }
                }
        }
    }
}

void polar_edges() {
    // 1-pixel, 1-row and 1-column images; n = 1, 2, odd.
    for (std::size_t nphi : {1, 2, 3, 7, 33}) {
        polar_case(0.0, 0.0, {0.0, 0.5, 1.0}, nphi, 1, 1, false);
        polar_case(3.0, 0.0, {0.0, 1.0, 2.5, 3.0}, nphi, 1, 7, false);
        polar_case(0.0, 4.0, {0.0, 1.0, 4.0}, nphi, 9, 1, false);
    }
    // Radii that end exactly on the border (x = W - 1, y = H - 1) and just beyond it.
    polar_case(10.0, 8.0, {0.0, 8.0, 10.0, 11.0, 11.5, 12.0}, 64, 17, 22, false);
    polar_case(10.0, 8.0, {0.0, 8.0, 10.0, 11.0, 11.5, 12.0}, 65, 17, 22, true);
    // Tiny radii (the tile width used to overflow size_t for rmax = 1e-300) and zero.
    polar_case(5.0, 5.0, {0.0, 1e-300}, 16, 11, 11, false);
    polar_case(5.0, 5.0, {1e-300}, 1, 11, 11, false);
    polar_case(5.0, 5.0, {5e-324}, 31, 11, 11, true);
    // Huge radii: every sample outside, coordinates far beyond any integer type.
    polar_case(5.0, 5.0, {1e9, 1e18, 1e300}, 16, 11, 11, false);
    polar_case(5.0, 5.0, {0.0, 1.0, 1e300}, 17, 11, 11, true);
    // Centre far outside the image; huge centre coordinates.
    polar_case(-1e6, 3.0, {0.0, 1e6, 1e6 + 2.0}, 1024, 7, 7, false);
    polar_case(1e15, -1e15, {0.0, 1.0}, 8, 7, 7, false);
    // Single valid pixel: exactly one pixel can be valid for nearest.
    polar_case(4.0, 3.0, {0.0, 0.25, 0.5, 1.0, 2.0}, 12, 7, 9, true);
}

// Direct correlation reference (NaN where no pair of valid samples).
std::vector<double> direct_corr(const double* a, const double* b, const std::uint8_t* ma, const std::uint8_t* mb,
                                std::size_t n) {
    std::vector<double> c(n);
    for (std::size_t k = 0; k < n; ++k) {
        double s = 0, w = 0;
        for (std::size_t j = 0; j < n; ++j) {
            const std::size_t l = (j + k) % n;
            if ((!ma || ma[j]) && (!mb || mb[l])) s += a[j] * b[l], w += 1;
        }
        c[k] = w > 0 ? s / w : nan_d;
    }
    return c;
}

template <class T>
void correlate_edges() {
    for (std::size_t n : {1, 2, 3, 5, 17, 64, 127}) {
        const std::size_t shots = 3, nq = 2;
        std::vector<T> data(shots * nq * n);
        std::vector<double> dd(data.size());
        for (std::size_t i = 0; i < data.size(); ++i) {
            data[i] = T(int(rng() % 200) - 100) / T(8);
            dd[i] = double(data[i]);
        }
        // mask kinds: none, a single valid sample per row, all valid
        for (int kind = 0; kind < 3; ++kind) {
            std::vector<std::uint8_t> mask(nq * n, kind == 2 ? 1 : 0);
            if (kind == 1)
                for (std::size_t q = 0; q < nq; ++q) mask[q * n + (q * 7) % n] = 1;
            xc::Rings<T> r;
            r.data = data.data();
            r.n_shots = shots;
            r.nq = nq;
            r.n = n;
            if (kind != 0) {
                r.mask = mask.data();
                r.n_mask_rows = nq;
            }
            xc::Options o1, o3;
            o1.n_threads = 1;
            o3.n_threads = 3;
            std::vector<T> c1(shots * nq * n), c3(c1.size());
            xc::autocorrelate(r, c1.data(), o1);
            xc::autocorrelate(r, c3.data(), o3);
            CHECK(std::memcmp(c1.data(), c3.data(), c1.size() * sizeof(T)) == 0);
            for (std::size_t s = 0; s < shots; ++s)
                for (std::size_t q = 0; q < nq; ++q) {
                    const double* a = dd.data() + (s * nq + q) * n;
                    const std::uint8_t* m = kind ? mask.data() + q * n : nullptr;
                    const auto ref = direct_corr(a, a, m, m, n);
                    for (std::size_t k = 0; k < n; ++k) {
                        const double got = double(c1[(s * nq + q) * n + k]);
                        if (std::isnan(ref[k]))
                            CHECK(std::isnan(got));
                        else
                            CHECK_CLOSE(got, ref[k], 1e-4, 1e-4);
                    }
                }
            // cross-correlation (0, 1) and difference correlation of shots (0, 2), averaged, 1 vs 3 threads
            const std::size_t qp[2] = {0, 1}, sp[4] = {0, 2, 1, 2};
            std::vector<T> x1(shots * n), x3(shots * n), d1(nq * n), d3(nq * n);
            xc::cross_correlate(r, qp, 1, x1.data(), o1);
            xc::cross_correlate(r, qp, 1, x3.data(), o3);
            CHECK(std::memcmp(x1.data(), x3.data(), x1.size() * sizeof(T)) == 0);
            o1.average = o3.average = true;
            xc::difference_correlate(r, sp, 2, nullptr, 0, d1.data(), o1);
            xc::difference_correlate(r, sp, 2, nullptr, 0, d3.data(), o3);
            CHECK(std::memcmp(d1.data(), d3.data(), d1.size() * sizeof(T)) == 0);
            // and the averaged cross-correlation of the same differences
            std::vector<T> y1(n), y3(n);
            xc::difference_correlate(r, sp, 2, qp, 1, y1.data(), o1);
            xc::difference_correlate(r, sp, 2, qp, 1, y3.data(), o3);
            CHECK(std::memcmp(y1.data(), y3.data(), y1.size() * sizeof(T)) == 0);
            o1.normalize = o3.normalize = xc::Normalize::std_;
            xc::autocorrelate(r, d1.data(), o1);
            xc::autocorrelate(r, d3.data(), o3);
            CHECK(std::memcmp(d1.data(), d3.data(), d1.size() * sizeof(T)) == 0);
        }
    }
}

// Averages over many units (shot pairs) with per-shot masks: the partial sums must not depend on the thread count.
template <class T>
void average_many_units() {
    const std::size_t shots = 301, nq = 3, n = 37, npairs = 150;
    std::vector<T> data(shots * nq * n);
    for (auto& v : data) v = T(int(rng() % 2000) - 1000) / T(7);
    std::vector<std::uint8_t> mask(data.size());
    for (auto& m : mask) m = std::uint8_t(rng() % 5 != 0);
    std::vector<std::size_t> sp(2 * npairs);
    for (auto& s : sp) s = rng() % shots;
    const std::size_t qp[4] = {0, 1, 2, 2};
    for (int masked = 0; masked < 2; ++masked)
        for (int norm = 0; norm < 2; ++norm) {
            xc::Rings<T> r;
            r.data = data.data();
            r.n_shots = shots;
            r.nq = nq;
            r.n = n;
            if (masked) {
                r.mask = mask.data();
                r.n_mask_rows = shots * nq;
            }
            std::vector<T> a1(nq * n), x1(2 * n);
            for (int th : {1, 2, 3, 7}) {
                xc::Options o;
                o.n_threads = th;
                o.average = true;
                if (norm) o.normalize = xc::Normalize::std_;
                std::vector<T> a(nq * n), x(2 * n);
                xc::difference_correlate(r, sp.data(), npairs, nullptr, 0, a.data(), o);
                xc::difference_correlate(r, sp.data(), npairs, qp, 2, x.data(), o);
                if (th == 1) {
                    a1 = a;
                    x1 = x;
                    continue;
                }
                CHECK(std::memcmp(a.data(), a1.data(), a.size() * sizeof(T)) == 0);
                CHECK(std::memcmp(x.data(), x1.data(), x.size() * sizeof(T)) == 0);
            }
        }
}

void outlier_edges() {
    for (std::size_t n : {1, 2, 3, 9}) {
        const std::size_t rows = 4;
        std::vector<double> x(rows * n);
        for (auto& v : x) v = double(rng() % 50);
        x[0] = 1e300;  // a huge value
        std::vector<std::uint8_t> valid(rows * n, 1), o1(rows * n), o3(rows * n);
        valid[n] = 1;
        for (std::size_t j = 1; j < n; ++j) valid[n + j] = 0;  // row 1: a single valid sample
        std::vector<std::int64_t> r1(rows), r3(rows);
        xcca::ring_outliers(x.data(), valid.data(), rows, n, 3.5, o1.data(), r1.data(), 1);
        xcca::ring_outliers(x.data(), valid.data(), rows, n, 3.5, o3.data(), r3.data(), 3);
        CHECK(o1 == o3 && r1 == r3);
        CHECK(r1[1] == 0);  // one sample: MAD = 0, nothing is an outlier
        for (std::size_t j = 0; j < n; ++j) CHECK(o1[n + j] == valid[n + j]);
    }
}

void fit_edges() {
    for (std::size_t n : {1, 2, 3, 7}) {
        const std::size_t rings = 5, p = 3;
        std::vector<float> x(rings * n);
        for (auto& v : x) v = float(rng() % 9);
        std::vector<double> fold(n * p);
        for (auto& v : fold) v = double(int(rng() % 7) - 3);
        std::vector<std::uint8_t> valid(n, 0);
        valid[n - 1] = 1;  // a single valid sample
        std::vector<double> c1(rings * p), c3(rings * p);
        std::vector<std::uint8_t> f1(rings), f3(rings);
        xcca::fit::fold_project<float>(x.data(), rings, n, std::ptrdiff_t(n), fold.data(), p, valid.data(),
                                       c1.data(), f1.data(), 1);
        xcca::fit::fold_project<float>(x.data(), rings, n, std::ptrdiff_t(n), fold.data(), p, valid.data(),
                                       c3.data(), f3.data(), 3);
        CHECK(same_bits(c1, c3) && f1 == f3);
        for (std::size_t r = 0; r < rings; ++r) {
            const double v = x[r * n + n - 1];
            CHECK(f1[r] == (v == 0 ? 1 : 0));
            if (v != 0)
                for (std::size_t k = 0; k < p; ++k) CHECK(c1[r * p + k] == v * fold[(n - 1) * p + k]);
        }
    }
}

void pairing_edges() {
    for (std::size_t n : {2, 3, 5}) {
        for (std::size_t d : {1, 2, 3}) {
            std::vector<double> f(n * d);
            for (auto& v : f) v = double(rng() % 4);
            for (int method = 0; method < 2; ++method) {
                const auto a = method ? xcca::pairing::pair_greedy(f.data(), n, d, 1)
                                      : xcca::pairing::pair_loki(f.data(), n, d, 1);
                const auto b = method ? xcca::pairing::pair_greedy(f.data(), n, d, 3)
                                      : xcca::pairing::pair_loki(f.data(), n, d, 3);
                CHECK(a.pairs == b.pairs && a.unpaired == b.unpaired);
                CHECK(a.pairs.size() == 2 * (n / 2) && a.unpaired.size() == n % 2);
            }
        }
    }
}


// Per-sample random masks (many runs: counts from batched lane FFTs, float32 under its proven bound, float64
// otherwise) and periodic ones (float32 bound fails -> float64): rings of ones give 1 where the exact count c
// (run-pair / direct) is > 0, |C - 1| c < 1/4 (a count off by one gives ~1/2 or more), and NaN where c = 0; auto, cross (incl. (q, q)) and difference, 1/2/3 threads
// bit-identical.
template <class T>
void random_mask_counts() {
    std::mt19937 g(99);
    for (const std::size_t n : {std::size_t{64}, std::size_t{999}, std::size_t{5000}}) {
        const std::size_t shots = 2, nq = 11;
        std::vector<T> ones(shots * nq * n, T(1));
        std::vector<std::uint8_t> mask(shots * nq * n);
        for (std::size_t i = 0; i < mask.size(); ++i) {
            const std::size_t row = i / n, j = i % n;
            const double p = row % 3 == 0 ? 0.1 : row % 3 == 1 ? 0.5 : 0.9;
            mask[i] = static_cast<std::uint8_t>(double(g() % 1000) / 1000.0 >= p);
            if (row == 4) mask[i] = static_cast<std::uint8_t>(j % 2);             // periodic, many runs
            if (row == 5) mask[i] = static_cast<std::uint8_t>(j == 3);            // one valid sample
            if (row == 6) mask[i] = 0;                                            // all invalid
            if (row == 12) mask[i] = static_cast<std::uint8_t>((j + 1) % 2);      // periodic in a full group
        }
        xc::Rings<T> r;
        r.data = ones.data();
        r.n_shots = shots;
        r.nq = nq;
        r.n = n;
        r.mask = mask.data();
        r.n_mask_rows = shots * nq;
        auto expect_ones = [&](const std::vector<T>& c, std::size_t row, const std::uint8_t* ma,
                               const std::uint8_t* mb) {
            std::vector<std::int64_t> cnt(n);
            xc::mask_pair_counts(ma, mb, n, cnt.data());
            for (std::size_t k = 0; k < n; ++k) {
                const double v = double(c[row * n + k]);
                if (cnt[k] == 0)
                    CHECK(std::isnan(v));
                else
                    CHECK(std::fabs(v - 1.0) * double(cnt[k]) < 0.25);  // a count off by one: >= ~1/2
            }
        };
        std::vector<T> a1(shots * nq * n), a2(a1.size()), a3(a1.size());
        xc::Options o;
        o.n_threads = 1;
        xc::autocorrelate(r, a1.data(), o);
        o.n_threads = 2;
        xc::autocorrelate(r, a2.data(), o);
        o.n_threads = 3;
        xc::autocorrelate(r, a3.data(), o);
        CHECK(std::memcmp(a1.data(), a2.data(), a1.size() * sizeof(T)) == 0);
        CHECK(std::memcmp(a1.data(), a3.data(), a1.size() * sizeof(T)) == 0);
        for (std::size_t row = 0; row < shots * nq; ++row)
            expect_ones(a1, row, mask.data() + row * n, mask.data() + row * n);
        const std::size_t qp[10] = {0, 1, 2, 2, 3, 4, 5, 7, 6, 10};
        const std::size_t np = 5;
        std::vector<T> x1(shots * np * n), x3(x1.size());
        o.n_threads = 1;
        xc::cross_correlate(r, qp, np, x1.data(), o);
        o.n_threads = 3;
        xc::cross_correlate(r, qp, np, x3.data(), o);
        CHECK(std::memcmp(x1.data(), x3.data(), x1.size() * sizeof(T)) == 0);
        for (std::size_t s = 0; s < shots; ++s)
            for (std::size_t p = 0; p < np; ++p)
                expect_ones(x1, s * np + p, mask.data() + (s * nq + qp[2 * p]) * n,
                            mask.data() + (s * nq + qp[2 * p + 1]) * n);
        // Differences of shots (0, 1): combined masks, per q pair; data 1 - 1 = 0, so only NaN placement checked.
        const std::size_t sp[2] = {0, 1};
        std::vector<T> d1(np * n), d3(np * n);
        o.n_threads = 1;
        xc::difference_correlate(r, sp, 1, qp, np, d1.data(), o);
        o.n_threads = 3;
        xc::difference_correlate(r, sp, 1, qp, np, d3.data(), o);
        CHECK(std::memcmp(d1.data(), d3.data(), d1.size() * sizeof(T)) == 0);
        std::vector<std::uint8_t> ca(n), cb(n);
        for (std::size_t p = 0; p < np; ++p) {
            for (std::size_t j = 0; j < n; ++j) {
                ca[j] = mask[qp[2 * p] * n + j] & mask[(nq + qp[2 * p]) * n + j];
                cb[j] = mask[qp[2 * p + 1] * n + j] & mask[(nq + qp[2 * p + 1]) * n + j];
            }
            std::vector<std::int64_t> cnt(n);
            xc::mask_pair_counts(ca.data(), cb.data(), n, cnt.data());
            for (std::size_t k = 0; k < n; ++k) CHECK(std::isnan(double(d1[p * n + k])) == (cnt[k] == 0));
        }
    }
}
}  // namespace

int main() {
    polar_edges();
    correlate_edges<float>();
    correlate_edges<double>();
    average_many_units<float>();
    average_many_units<double>();
    random_mask_counts<float>();
    random_mask_counts<double>();
    outlier_edges();
    fit_edges();
    pairing_edges();
    TEST_MAIN_RETURN();
}
