// Per-ring outlier removal by LOKI's modified z-score, for the streaming correlation pipeline.
#pragma once

#include <cstddef>
#include <cstdint>

namespace xcca {

/// For each row r of `values` (n_rows × n, row-major), over the samples j with valid[r·n + j] != 0 and a finite
/// value: median m and MAD = median(|x − m|) (the mean of the two middle values for an even count, as NumPy), and
/// a sample is an outlier when 0.6745·|x − m| / MAD > thresh (LOKI's `is_outlier`). A row with no such sample or
/// MAD = 0 has no outlier. Writes out_valid[i] = valid[i] && !outlier[i] (out_valid may alias valid) and, if
/// `n_removed` is not null, the number of outliers of each row. All arithmetic is in double precision.
/// Threads over rows (0 = all usable cores). Throws std::invalid_argument unless thresh > 0.
/// `valid_rows` > 0: `valid` has only that many rows, row r using valid row r % valid_rows (a polar mask shared by
/// a stack of images: valid_rows = nq); out_valid must not alias valid then. 0 = n_rows.
template <class T>
void ring_outliers(const T* values, const std::uint8_t* valid, std::size_t n_rows, std::size_t n, double thresh,
                   std::uint8_t* out_valid, std::int64_t* n_removed, int n_threads, std::size_t valid_rows = 0);

extern template void ring_outliers<float>(const float*, const std::uint8_t*, std::size_t, std::size_t, double,
                                          std::uint8_t*, std::int64_t*, int, std::size_t);
extern template void ring_outliers<double>(const double*, const std::uint8_t*, std::size_t, std::size_t, double,
                                           std::uint8_t*, std::int64_t*, int, std::size_t);

}  // namespace xcca
