// Correlations against the direct O(n^2) sums: masks (few runs, random, all masked), cross pairs, differences,
// averages and normalisations, float and double.
#include <cmath>
#include <algorithm>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

#include "check.hpp"
#include "xcca/correlate.hpp"

namespace xc = xcca::correlate;

static std::mt19937 rng(12345);

// Direct definition: sum_j ma mb a_j b_{j+k} / sum_j ma mb (NaN if 0); mask null = all valid.
// tol[k] = sqrt(sum a^2 sum b^2) / count[k]: the scale of the rounding error of an FFT-based result.
static std::vector<double> direct(const std::vector<double>& a, const std::vector<double>& b, const std::uint8_t* ma,
                                  const std::uint8_t* mb, std::size_t n, std::vector<double>& tol) {
    std::vector<double> c(n);
    double ea = 0, eb = 0;
    for (std::size_t j = 0; j < n; ++j) {
        if (!ma || ma[j]) ea += a[j] * a[j];
        if (!mb || mb[j]) eb += b[j] * b[j];
    }
    tol.assign(n, 0.0);
    for (std::size_t k = 0; k < n; ++k) {
        double s = 0, w = 0;
        for (std::size_t j = 0; j < n; ++j) {
            const std::size_t l = (j + k) % n;
            if ((!ma || ma[j]) && (!mb || mb[l])) {
                s += a[j] * b[l];
                w += 1;
            }
        }
        c[k] = w > 0 ? s / w : std::numeric_limits<double>::quiet_NaN();
        tol[k] = w > 0 ? std::sqrt(ea * eb) / w : 0.0;
    }
    return c;
}

static std::vector<std::uint8_t> make_mask(std::size_t rows, std::size_t n, int kind) {
    std::vector<std::uint8_t> m(rows * n, 1);
    std::uniform_int_distribution<std::size_t> pos(0, n ? n - 1 : 0);
    for (std::size_t r = 0; r < rows; ++r) {
        std::uint8_t* row = m.data() + r * n;
        if (kind == 0) {  // a few gaps
            for (int g = 0; g < 3; ++g) {
                const std::size_t s = pos(rng), len = pos(rng) / 4;
                for (std::size_t j = 0; j < len; ++j) row[(s + j) % n] = 0;
            }
        } else if (kind == 1) {  // random
            for (std::size_t j = 0; j < n; ++j) row[j] = (rng() % 3) != 0;
        } else {  // all masked
            for (std::size_t j = 0; j < n; ++j) row[j] = 0;
        }
    }
    return m;
}

static void check_counts() {
    for (std::size_t n : {1, 2, 3, 7, 64, 97, 500}) {
        for (int kind = 0; kind < 3; ++kind) {
            auto ma = make_mask(1, n, kind), mb = make_mask(1, n, kind);
            std::vector<std::int64_t> c(n);
            xc::mask_pair_counts(ma.data(), mb.data(), n, c.data());
            for (std::size_t k = 0; k < n; ++k) {
                std::int64_t ref = 0;
                for (std::size_t j = 0; j < n; ++j) ref += ma[j] && mb[(j + k) % n];
                CHECK(c[k] == ref);
            }
        }
    }
}

template <class T>
static void check_all(std::size_t n_shots, std::size_t nq, std::size_t n, int mask_kind, std::size_t mask_rows,
                      xc::Normalize norm, double rtol) {
    std::normal_distribution<double> dist(1.0, 1.0);
    std::vector<T> data(n_shots * nq * n);
    for (auto& v : data) v = static_cast<T>(dist(rng));
    std::vector<std::uint8_t> mask;
    xc::Rings<T> rg{data.data(), n_shots, nq, n, nullptr, 0};
    if (mask_kind >= 0) {
        mask = make_mask(mask_rows, n, mask_kind);
        rg.mask = mask.data();
        rg.n_mask_rows = mask_rows;
    }
    auto ring = [&](std::size_t s, std::size_t q, std::size_t s2, bool diff, const std::uint8_t** m,
                    std::vector<std::uint8_t>& comb) {
        std::vector<double> a(n);
        for (std::size_t j = 0; j < n; ++j) {
            a[j] = data[(s * nq + q) * n + j];
            if (diff) a[j] = static_cast<double>(static_cast<T>(a[j] - data[(s2 * nq + q) * n + j]));
        }
        *m = nullptr;
        if (rg.mask) {
            const std::uint8_t* m1 = rg.mask + ((s * nq + q) % mask_rows) * n;
            const std::uint8_t* m2 = rg.mask + ((s2 * nq + q) % mask_rows) * n;
            comb.resize(n);
            for (std::size_t j = 0; j < n; ++j) comb[j] = m1[j] && (!diff || m2[j]);
            *m = comb.data();
        }
        if (norm != xc::Normalize::none) {
            double sum = 0, cnt = 0;
            for (std::size_t j = 0; j < n; ++j)
                if (!*m || (*m)[j]) sum += a[j], cnt += 1;
            const double mu = sum / cnt;
            if (norm == xc::Normalize::mean) {
                for (auto& v : a) v /= mu;
            } else {
                double var = 0;
                for (std::size_t j = 0; j < n; ++j)
                    if (!*m || (*m)[j]) var += (a[j] - mu) * (a[j] - mu);
                const double sd = std::sqrt(var / cnt);
                for (auto& v : a) v = (v - mu) / sd;
            }
        }
        return a;
    };
    auto compare = [&](const T* got, const std::vector<double>& ref, const std::vector<double>& tol) {
        for (std::size_t k = 0; k < n; ++k) {
            if (std::isnan(ref[k])) {
                CHECK(std::isnan(got[k]));
            } else {
                CHECK_CLOSE(got[k], ref[k], 0, rtol * tol[k] + 1e-12);
            }
        }
    };
    const std::uint8_t *m1, *m2;
    std::vector<std::uint8_t> c1, c2;
    std::vector<double> e;
    for (int avg = 0; avg < 2; ++avg) {
        xc::Options opt;
        opt.normalize = norm;
        opt.average = avg;
        opt.n_threads = 2;
        // Autocorrelation.
        std::vector<T> out((avg ? 1 : n_shots) * nq * n);
        xc::autocorrelate(rg, out.data(), opt);
        std::vector<double> mean(nq * n, 0.0), mtol(nq * n, 0.0);
        for (std::size_t s = 0; s < n_shots; ++s)
            for (std::size_t q = 0; q < nq; ++q) {
                auto a = ring(s, q, s, false, &m1, c1);
                auto ref = direct(a, a, m1, m1, n, e);
                if (!avg) compare(out.data() + (s * nq + q) * n, ref, e);
                for (std::size_t k = 0; k < n; ++k) {
                    mean[q * n + k] += ref[k] / n_shots;
                    mtol[q * n + k] = std::max(mtol[q * n + k], e[k]);
                }
            }
        if (avg)
            for (std::size_t q = 0; q < nq; ++q)
                compare(out.data() + q * n, std::vector<double>(mean.begin() + q * n, mean.begin() + (q + 1) * n),
                        std::vector<double>(mtol.begin() + q * n, mtol.begin() + (q + 1) * n));
        // Cross-correlation for all q <= q'.
        std::vector<std::size_t> qp;
        for (std::size_t q = 0; q < nq; ++q)
            for (std::size_t q2 = q; q2 < nq; ++q2) qp.insert(qp.end(), {q, q2});
        const std::size_t P = qp.size() / 2;
        std::vector<T> xo((avg ? 1 : n_shots) * P * n);
        xc::cross_correlate(rg, qp.data(), P, xo.data(), opt);
        if (!avg)
            for (std::size_t s = 0; s < n_shots; ++s)
                for (std::size_t p = 0; p < P; ++p) {
                    auto a = ring(s, qp[2 * p], s, false, &m1, c1);
                    auto b = ring(s, qp[2 * p + 1], s, false, &m2, c2);
                    auto ref = direct(a, b, m1, m2, n, e);
                    compare(xo.data() + (s * P + p) * n, ref, e);
                }
        // Difference autocorrelations over consecutive shot pairs.
        if (n_shots >= 2) {
            std::vector<std::size_t> sp;
            for (std::size_t s = 0; s + 1 < n_shots; ++s) sp.insert(sp.end(), {s, s + 1});
            const std::size_t SP = sp.size() / 2;
            std::vector<T> dout((avg ? 1 : SP) * nq * n);
            xc::difference_correlate(rg, sp.data(), SP, nullptr, 0, dout.data(), opt);
            if (!avg)
                for (std::size_t p = 0; p < SP; ++p)
                    for (std::size_t q = 0; q < nq; ++q) {
                        auto a = ring(sp[2 * p], q, sp[2 * p + 1], true, &m1, c1);
                        auto ref = direct(a, a, m1, m1, n, e);
                        compare(dout.data() + (p * nq + q) * n, ref, e);
                    }
        }
    }
}

int main() {
    check_counts();
    for (std::size_t n : {1, 2, 5, 16, 97, 128, 361}) {
        for (int mk = -1; mk < 3; ++mk) {
            for (std::size_t mrows : {std::size_t(1), std::size_t(3), std::size_t(12)}) {
                if (mk < 0 && mrows != 1) continue;
                check_all<double>(4, 3, n, mk, mrows, xc::Normalize::none, 1e-12);
                check_all<float>(4, 3, n, mk, mrows, xc::Normalize::none, 2e-5);
            }
        }
        check_all<double>(3, 5, n, 0, 5, xc::Normalize::mean, 1e-11);
        check_all<double>(3, 5, n, 0, 15, xc::Normalize::std_, 1e-11);
        check_all<float>(3, 5, n, -1, 1, xc::Normalize::std_, 5e-5);
    }
    // Bad input.
    std::vector<double> d(12, 1.0), o(12);
    xc::Rings<double> rg{d.data(), 2, 2, 3, nullptr, 0};
    std::size_t bad[2] = {0, 2};
    CHECK_THROWS(xc::cross_correlate(rg, bad, 1, o.data(), xc::Options{}), std::out_of_range);
    CHECK_THROWS(xc::difference_correlate(rg, bad, 1, nullptr, 0, o.data(), xc::Options{}), std::out_of_range);
    xc::Rings<double> r0{d.data(), 2, 2, 0, nullptr, 0};
    CHECK_THROWS(xc::autocorrelate(r0, o.data(), xc::Options{}), std::invalid_argument);
    std::vector<std::uint8_t> m(6, 1);
    xc::Rings<double> rm{d.data(), 2, 2, 3, m.data(), 3};
    CHECK_THROWS(xc::autocorrelate(rm, o.data(), xc::Options{}), std::invalid_argument);
    TEST_MAIN_RETURN();
}
