// Private: the run correlator's kernels compiled for AVX2 + FMA (runcorr_avx2.cpp) and AVX-512 (runcorr_avx512.cpp),
// chosen at run time by runcorr.cpp. Both units are the one source runcorr_isa_unit.hpp.
#pragma once

#include <complex>
#include <cstddef>
#include <cstdint>

// pooled_result's pass over the sorted pairs (numerator and count offsets and imaginary-part signs, original
// indices; harmonics ld * nqu apart) in G groups of at most V pairs (group g: sorted pairs [gstart[g], gstart[g + 1])),
// `tile` groups per work item, V double lanes (4: AVX2, 8: AVX-512); see runcorr_result.hpp. Parameters and arguments
// written once for both element types and both units.
#define XCCA_RC_POOLED_PARAMS(T)                                                                                    \
    const std::complex<T>*num, const std::complex<double>*cnt, std::size_t B, std::size_t nh, std::size_t nqu,     \
        std::size_t n, std::size_t ld, const std::size_t *off, const double *sg, const std::size_t *offc,          \
        const double *sgc, const std::size_t *order, std::size_t P, const std::size_t *gstart, std::size_t G,      \
        std::size_t tile, bool jackknife, double *corr, double *err, std::int64_t *counts, double *rep, int n_threads
#define XCCA_RC_POOLED_ARGS \
    num, cnt, B, nh, nqu, n, ld, off, sg, offc, sgc, order, P, gstart, G, tile, jackknife, corr, err, counts, rep, n_threads

namespace xcca::runcorr::isa_avx2 {

/// True when the CPU has AVX2 and FMA (and XCCA_DISABLE_AVX2 is not set) and this build has the AVX2 kernels.
bool available() noexcept;

/// The pass with 4 double lanes (groups of at most 4 pairs).
double pooled_result(XCCA_RC_POOLED_PARAMS(float));
double pooled_result(XCCA_RC_POOLED_PARAMS(double));

}  // namespace xcca::runcorr::isa_avx2

namespace xcca::runcorr::isa_avx512 {

/// True when the CPU has AVX-512 F/VL/DQ (and neither XCCA_DISABLE_AVX2 nor XCCA_DISABLE_AVX512 is set) and this
/// build has the AVX-512 kernels.
bool available() noexcept;

/// The pass with 8 double lanes (groups of at most 8 pairs); bit-identical to isa_avx2's.
double pooled_result(XCCA_RC_POOLED_PARAMS(float));
double pooled_result(XCCA_RC_POOLED_PARAMS(double));

}  // namespace xcca::runcorr::isa_avx512
