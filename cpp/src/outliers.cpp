// Per-ring modified z-score outliers (see outliers.hpp): one selection (+ max) per statistic and row, on a
// per-thread buffer of the row's valid samples, instead of NumPy's masked partitions over whole chunks.
#include "xcca/outliers.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <utility>
#include <vector>

#include "xcca/threads.hpp"

namespace xcca {

namespace {

// Puts the k-th smallest element of a[0, n) at a[k], with a[0, k) <= a[k] (as std::nth_element). Quickselect with
// a branch-free Lomuto partition: on noisy data std::nth_element's comparisons mispredict about half the time, which
// dominates its cost. After too many rounds (many equal values, adversarial input) it hands the rest to
// std::nth_element, so the worst case stays O(n log n).
template <class U>
void select_kth(U* a, std::size_t n, std::size_t k) {
    std::size_t lo = 0, hi = n;  // the k-th element lies in [lo, hi)
    int budget = 64;
    while (hi - lo > 24) {
        if (--budget < 0) {
            std::nth_element(a + lo, a + k, a + hi);
            return;
        }
        const std::size_t mid = lo + (hi - lo) / 2;
        // median of three to the end as the pivot
        if (a[mid] < a[lo]) std::swap(a[mid], a[lo]);
        if (a[hi - 1] < a[lo]) std::swap(a[hi - 1], a[lo]);
        if (a[mid] < a[hi - 1]) std::swap(a[mid], a[hi - 1]);
        const U pivot = a[hi - 1];
        std::size_t i = lo;
        for (std::size_t j = lo; j + 1 < hi; ++j) {  // invariant: a[lo, i) < pivot <= a[i, j)
            const U x = a[j];
            const bool smaller = x < pivot;
            a[j] = a[i];
            a[i] = x;
            i += smaller;
        }
        std::swap(a[i], a[hi - 1]);
        if (k == i) return;
        if (k < i) {
            hi = i;
            continue;
        }
        std::size_t e = i + 1;
        if ((hi - i) * 8 > (hi - lo) * 7) {
            // a lopsided split: typically many copies of the pivot (zeros, integer counts). Gather them right after
            // it (a[i+1, e) == pivot), so a run of equal values costs one pass instead of one round per element.
            for (std::size_t j = i + 1; j < hi; ++j) {  // a[j] >= pivot here: !(pivot < x) means x == pivot
                const U x = a[j];
                const bool equal = !(pivot < x);
                a[j] = a[e];
                a[e] = x;
                e += equal;
            }
            if (k < e) return;
        }
        lo = e;
    }
    for (std::size_t i = lo + 1; i < hi; ++i) {  // insertion sort of the small rest
        const U x = a[i];
        std::size_t j = i;
        for (; j > lo && x < a[j - 1]; --j) a[j] = a[j - 1];
        a[j] = x;
    }
}

// Median of buf (reordered), NumPy's definition: the mean of the two middle values for an even count. The
// selection runs in the values' own type (order statistics do not depend on the precision); the mean in double.
template <class U>
double median_inplace(U* buf, std::size_t k) {
    const std::size_t mid = k / 2;
    select_kth(buf, k, mid);
    const double upper = static_cast<double>(buf[mid]);
    if (k % 2) return upper;
    const double lower = static_cast<double>(*std::max_element(buf, buf + mid));
    return (lower + upper) / 2.0;
}

}  // namespace

template <class T>
void ring_outliers(const T* values, const std::uint8_t* valid, std::size_t n_rows, std::size_t n, double thresh,
                   std::uint8_t* out_valid, std::int64_t* n_removed, int n_threads, std::size_t valid_rows) {
    if (!(thresh > 0)) throw std::invalid_argument("ring_outliers: thresh must be > 0");
    if (n == 0 || n_rows == 0) return;
    if (valid_rows == 0) valid_rows = n_rows;
    const std::size_t grain = std::max<std::size_t>(1, 32768 / n);
    parallel_for(n_rows, n_threads, grain, [&](std::size_t begin, std::size_t end) {
        std::vector<T> buf(n);
        std::vector<double> dev(n);
        for (std::size_t r = begin; r < end; ++r) {
            const T* x = values + r * n;
            const std::uint8_t* v = valid + (r % valid_rows) * n;
            std::uint8_t* o = out_valid + r * n;
            std::size_t k = 0;  // branch-free gather of the valid finite samples
            for (std::size_t j = 0; j < n; ++j) {
                buf[k] = x[j];
                k += static_cast<std::size_t>((v[j] != 0) & std::isfinite(x[j]));
            }
            std::int64_t removed = 0;
            double med = 0.0, mad = 0.0;
            if (k) {
                med = median_inplace(buf.data(), k);
                for (std::size_t i = 0; i < k; ++i) dev[i] = std::abs(static_cast<double>(buf[i]) - med);
                mad = median_inplace(dev.data(), k);
            }
            if (!(mad > 0.0)) {  // no valid sample, or MAD = 0: nothing is an outlier
                if (o != v) std::copy(v, v + n, o);
            } else {
                for (std::size_t j = 0; j < n; ++j) {
                    const double xj = static_cast<double>(x[j]);
                    // the same operations, in the same order, as the NumPy formulation
                    const bool ok = (v[j] != 0) & std::isfinite(xj);
                    const bool out = ok & (0.6745 * std::abs(xj - med) / mad > thresh);
                    o[j] = static_cast<std::uint8_t>((v[j] != 0) & !out);
                    removed += out;
                }
            }
            if (n_removed) n_removed[r] = removed;
        }
    });
}

template void ring_outliers<float>(const float*, const std::uint8_t*, std::size_t, std::size_t, double,
                                   std::uint8_t*, std::int64_t*, int, std::size_t);
template void ring_outliers<double>(const double*, const std::uint8_t*, std::size_t, std::size_t, double,
                                    std::uint8_t*, std::int64_t*, int, std::size_t);

}  // namespace xcca
