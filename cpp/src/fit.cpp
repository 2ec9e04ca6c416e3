#include "xcca/fit.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "xcca/threads.hpp"

namespace xcca::fit {

namespace {

// One ring: P accumulators in registers (P known at compile time for the common degree-15 case).
template <class T, std::size_t P>
std::uint8_t project_row(const T* row, const std::vector<std::size_t>& idx, const double* fold, double* out) {
    double acc[P] = {};
    std::uint8_t flag = 0;
    for (std::size_t j : idx) {
        const double v = static_cast<double>(row[j]);
        if (v == 0.0) flag |= 1;
        if (!std::isfinite(v)) flag |= 2;
        const double* f = fold + j * P;
        for (std::size_t c = 0; c < P; ++c) acc[c] += v * f[c];
    }
    std::copy(acc, acc + P, out);
    return flag;
}

template <class T>
std::uint8_t project_row_any(const T* row, const std::vector<std::size_t>& idx, const double* fold, std::size_t p,
                             double* out) {
    std::fill(out, out + p, 0.0);
    std::uint8_t flag = 0;
    for (std::size_t j : idx) {
        const double v = static_cast<double>(row[j]);
        if (v == 0.0) flag |= 1;
        if (!std::isfinite(v)) flag |= 2;
        const double* f = fold + j * p;
        for (std::size_t c = 0; c < p; ++c) out[c] += v * f[c];
    }
    return flag;
}

}  // namespace

template <class T>
void fold_project(const T* rings, std::size_t n_rings, std::size_t n, std::ptrdiff_t stride, const double* fold,
                  std::size_t p, const std::uint8_t* valid, double* coef, std::uint8_t* flags, int n_threads) {
    // Only the valid samples contribute: gather their indices once.
    std::vector<std::size_t> idx;
    for (std::size_t j = 0; j < n; ++j)
        if (valid[j]) idx.push_back(j);
    parallel_for(n_rings, n_threads, 64, [&](std::size_t b, std::size_t e) {
        for (std::size_t r = b; r < e; ++r) {
            const T* row = rings + static_cast<std::ptrdiff_t>(r) * stride;
            const std::uint8_t flag = p == 16 ? project_row<T, 16>(row, idx, fold, coef + r * p)
                                              : project_row_any<T>(row, idx, fold, p, coef + r * p);
            flags[r] = flag & 2 ? 2 : flag;
        }
    });
}

#define XCCA_FIT_INSTANTIATE(T)                                                                                  \
    template void fold_project<T>(const T*, std::size_t, std::size_t, std::ptrdiff_t, const double*, std::size_t, \
                                  const std::uint8_t*, double*, std::uint8_t*, int);
XCCA_FIT_INSTANTIATE(float)
XCCA_FIT_INSTANTIATE(double)
XCCA_FIT_INSTANTIATE(std::uint16_t)
XCCA_FIT_INSTANTIATE(std::int32_t)
#undef XCCA_FIT_INSTANTIATE

}  // namespace xcca::fit
