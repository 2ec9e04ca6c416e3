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

/// Result of circle_fit. status: 0 converged, 1 not converged in max_iter, 2 degenerate points (collinear or
/// coincident: singular normal equations), 3 fewer than 3 points.
struct CircleFit {
    double cx = 0, cy = 0, r = 0, cost = 0;
    int n_iter = 0, status = 0;
};

/// Geometric least-squares circle through n points (x[i], y[i]): minimises sum_i (|p_i - c| - r)^2. Works on
/// coordinates relative to the centroid; starts from the algebraic (Kasa) circle, or from `start` = (cx, cy, r) if
/// not null, then Levenberg-Marquardt on (cx, cy, r) with 3x3 normal equations (the algorithm of
/// xcca.reference.fit_circle_points). Convergence: step <= tol (1 + |r|) or relative cost decrease <= 1e-15, or no
/// step decreases the cost.
CircleFit circle_fit(const double* x, const double* y, std::size_t n, const double* start = nullptr,
                     int max_iter = 100, double tol = 1e-12);

}  // namespace xcca::fit
