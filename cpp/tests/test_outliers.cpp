// ring_outliers against a sort-based reference: odd/even counts, masks, MAD = 0, many ties (the quickselect's
// fallback), empty rows, NaN, in-place use, a shared mask (valid_rows), every thread count giving identical bits.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

#include "check.hpp"
#include "xcca/outliers.hpp"

namespace {

double ref_median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const std::size_t k = v.size();
    return k % 2 ? v[k / 2] : (v[k / 2 - 1] + v[k / 2]) / 2.0;
}

template <class T>
void reference(const std::vector<T>& x, const std::vector<std::uint8_t>& v, std::size_t rows, std::size_t n,
               double thresh, std::vector<std::uint8_t>& out, std::vector<std::int64_t>& removed) {
    out.assign(rows * n, 0);
    removed.assign(rows, 0);
    for (std::size_t r = 0; r < rows; ++r) {
        std::vector<double> vals;
        for (std::size_t j = 0; j < n; ++j)
            if (v[r * n + j] && std::isfinite(double(x[r * n + j]))) vals.push_back(double(x[r * n + j]));
        double med = 0, mad = 0;
        if (!vals.empty()) {
            med = ref_median(vals);
            std::vector<double> dev;
            for (double a : vals) dev.push_back(std::abs(a - med));
            mad = ref_median(dev);
        }
        for (std::size_t j = 0; j < n; ++j) {
            const double xj = double(x[r * n + j]);
            const bool o = mad > 0 && v[r * n + j] && std::isfinite(xj) && 0.6745 * std::abs(xj - med) / mad > thresh;
            out[r * n + j] = v[r * n + j] && !o;
            removed[r] += o;
        }
    }
}

template <class T>
void check_random(unsigned seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    std::uniform_real_distribution<double> uni(0.0, 1.0);
    for (std::size_t n : {1, 2, 3, 4, 7, 64, 361, 3600}) {
        const std::size_t rows = 37;
        std::vector<T> x(rows * n);
        std::vector<std::uint8_t> v(rows * n);
        for (std::size_t i = 0; i < x.size(); ++i) {
            double a = normal(rng);
            if (seed % 2) a = std::round(a);  // ties and MAD = 0
            if (uni(rng) < 0.1) a *= 40;
            if (uni(rng) < 0.03) a = std::numeric_limits<double>::quiet_NaN();
            x[i] = static_cast<T>(a);
            v[i] = uni(rng) < (i / n % 5 == 0 ? 0.0 : 0.8);  // some rows fully masked
        }
        std::vector<std::uint8_t> ref_out;
        std::vector<std::int64_t> ref_removed;
        reference(x, v, rows, n, 3.5, ref_out, ref_removed);
        for (int threads : {1, 2, 5}) {
            std::vector<std::uint8_t> out(rows * n, 7);
            std::vector<std::int64_t> removed(rows, -1);
            xcca::ring_outliers(x.data(), v.data(), rows, n, 3.5, out.data(), removed.data(), threads);
            CHECK(out == ref_out);
            CHECK(removed == ref_removed);
        }
        {  // a mask shared by the leading axis: valid row r % vrows
            const std::size_t vrows = 4, stack = 3;
            std::vector<T> xs(x.begin(), x.begin() + static_cast<std::ptrdiff_t>(stack * vrows * n));
            std::vector<std::uint8_t> vs(stack * vrows * n), so, out(stack * vrows * n, 7);
            for (std::size_t i = 0; i < vs.size(); ++i) vs[i] = v[i % (vrows * n)];
            std::vector<std::int64_t> sr, removed(stack * vrows, -1);
            reference(xs, vs, stack * vrows, n, 3.5, so, sr);
            xcca::ring_outliers(xs.data(), v.data(), stack * vrows, n, 3.5, out.data(), removed.data(), 2, vrows);
            CHECK(out == so);
            CHECK(removed == sr);
        }
        std::vector<std::uint8_t> inplace = v;  // out may alias valid
        xcca::ring_outliers(x.data(), inplace.data(), rows, n, 3.5, inplace.data(), nullptr, 2);
        CHECK(inplace == ref_out);
    }
}

}  // namespace

int main() {
    for (unsigned seed = 0; seed < 6; ++seed) {
        check_random<float>(seed);
        check_random<double>(seed);
    }
    // one obvious outlier among constant-ish values
    std::vector<double> x = {1, 2, 1, 2, 1, 2, 100, 1};
    std::vector<std::uint8_t> v(x.size(), 1), out(x.size());
    std::int64_t removed = 0;
    xcca::ring_outliers(x.data(), v.data(), 1, x.size(), 3.5, out.data(), &removed, 1);
    CHECK(removed == 1 && out[6] == 0 && out[0] == 1);
    CHECK_THROWS(xcca::ring_outliers(x.data(), v.data(), 1, x.size(), 0.0, out.data(), &removed, 1),
                 std::invalid_argument);
    TEST_MAIN_RETURN();
}
