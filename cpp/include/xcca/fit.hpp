// Batched linear projection of ring profiles, the hot loop of xcca.fit_periodic for rings sharing one mask.
#pragma once

#include <cstddef>
#include <cstdint>

namespace xcca::fit {

/// For each ring r (row r of `rings`, row stride `stride` elements, n samples), with `fold` row-major (n, p):
///   coef[r, :] = sum over samples j with valid[j] of rings[r, j] * fold[j, :]   (accumulated in double)
///   flags[r]   = 1 if a valid sample of ring r is 0 (LOKI excludes such samples: the ring needs its own fit),
///                2 if a valid sample is not finite, else 0.
/// Rows are independent and processed on up to n_threads threads (0 = all usable cores).
template <class T>
void fold_project(const T* rings, std::size_t n_rings, std::size_t n, std::ptrdiff_t stride, const double* fold,
                  std::size_t p, const std::uint8_t* valid, double* coef, std::uint8_t* flags, int n_threads = 0);

}  // namespace xcca::fit
