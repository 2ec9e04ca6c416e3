// fold_project against a direct loop, for each instantiated dtype, with zero and non-finite flags.
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "check.hpp"
#include "xcca/fit.hpp"

template <class T>
static void check_type() {
    std::mt19937 rng(3);
    const std::size_t n_rings = 37, n = 53, p = 5;
    std::vector<T> rings(n_rings * n);
    for (auto& v : rings) v = static_cast<T>(1 + rng() % 100);
    rings[3 * n + 7] = 0;  // ring 3: a zero at a valid sample
    rings[5 * n + 1] = 0;  // ring 5: a zero at an invalid sample -> regular
    std::vector<double> fold(n * p);
    for (auto& v : fold) v = std::uniform_real_distribution<double>(-1, 1)(rng);
    std::vector<std::uint8_t> valid(n, 1);
    valid[1] = valid[20] = 0;
    std::vector<double> coef(n_rings * p);
    std::vector<std::uint8_t> flags(n_rings);
    xcca::fit::fold_project<T>(rings.data(), n_rings, n, static_cast<std::ptrdiff_t>(n), fold.data(), p, valid.data(),
                               coef.data(), flags.data(), 2);
    for (std::size_t r = 0; r < n_rings; ++r) {
        CHECK(flags[r] == (r == 3 ? 1 : 0));
        for (std::size_t c = 0; c < p; ++c) {
            double s = 0;
            for (std::size_t j = 0; j < n; ++j)
                if (valid[j]) s += static_cast<double>(rings[r * n + j]) * fold[j * p + c];
            CHECK_CLOSE(coef[r * p + c], s, 1e-12, 1e-12);
        }
    }
}

int main() {
    check_type<float>();
    check_type<double>();
    check_type<std::uint16_t>();
    check_type<std::int32_t>();
    std::vector<double> ring{1.0, NAN, 2.0}, fold{1.0, 1.0, 1.0}, coef(1);
    std::vector<std::uint8_t> valid{1, 1, 1}, flags(1);
    xcca::fit::fold_project<double>(ring.data(), 1, 3, 3, fold.data(), 1, valid.data(), coef.data(), flags.data(), 1);
    CHECK(flags[0] == 2);
    valid[1] = 0;  // a NaN at an invalid sample is ignored
    xcca::fit::fold_project<double>(ring.data(), 1, 3, 3, fold.data(), 1, valid.data(), coef.data(), flags.data(), 1);
    CHECK(flags[0] == 0 && coef[0] == 3.0);
    // circle_fit: points on a noisy circle, from the Kasa start and from a given start; degenerate inputs
    {
        std::mt19937 g(5);
        std::normal_distribution<double> noise(0.0, 0.3);
        std::vector<double> x, y;
        for (int i = 0; i < 2000; ++i) {
            const double t = 0.0031 * i * 6.283185307179586;
            x.push_back(517.3 + 300.2 * std::cos(t) + noise(g));
            y.push_back(498.8 + 300.2 * std::sin(t) + noise(g));
        }
        auto f = xcca::fit::circle_fit(x.data(), y.data(), x.size());
        CHECK(f.status == 0 && std::fabs(f.cx - 517.3) < 0.05 && std::fabs(f.cy - 498.8) < 0.05 &&
              std::fabs(f.r - 300.2) < 0.05);
        const double st[3] = {510.0, 505.0, 295.0};
        auto f2 = xcca::fit::circle_fit(x.data(), y.data(), x.size(), st);
        CHECK(f2.status == 0 && std::fabs(f2.cx - f.cx) < 1e-8 && std::fabs(f2.r - f.r) < 1e-8);
        std::vector<double> lx{0, 1, 2, 3}, ly{0, 1, 2, 3};  // collinear
        CHECK(xcca::fit::circle_fit(lx.data(), ly.data(), 4).status == 2);
        CHECK(xcca::fit::circle_fit(lx.data(), ly.data(), 2).status == 3);
    }
    TEST_MAIN_RETURN();
}
