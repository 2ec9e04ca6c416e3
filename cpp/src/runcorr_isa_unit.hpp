// Private: the body of runcorr_avx2.cpp and runcorr_avx512.cpp, the run correlator's result pass compiled for one
// SIMD width, chosen at run time by runcorr.cpp; wheels stay portable (no -march flags). The including unit defines
//   XCCA_RC_ISA        its namespace under xcca::runcorr (isa_avx2, isa_avx512; declared in runcorr_isa.hpp),
//   XCCA_RC_LANES      double lanes per vector (4, 8),
//   XCCA_RC_TARGET     the target pragma, as _Pragma("GCC target(\"...\")"),
//   XCCA_RC_POCKETFFT  the namespace name pocketfft is included under, so that none of its inline/template symbols
//                      can be merged with another unit's (the baseline build's or the other width's),
//   XCCA_RC_AVAILABLE  the CPU test (an expression),
//   XCCA_RC_NAME       the ISA's name, for the error of a build without it.
// pocketfft's vector transforms are lane-wise, with the same operations (and the same FMA contractions: every unit
// is compiled with FMA) in every lane, so each pair's results are the same bits at any width.
#include "runcorr_isa.hpp"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)

// Every standard header pocketfft and the kernel use, before the target pragma: their templates keep the baseline
// ISA wherever they are instantiated.
#include <algorithm>
#include <array>
#include <cmath>
#include <complex>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <vector>

#include "cpu_features.hpp"
#include "xcca/threads.hpp"

#pragma GCC push_options
XCCA_RC_TARGET

#define POCKETFFT_NO_MULTITHREADING
#define pocketfft XCCA_RC_POCKETFFT
#include XCCA_POCKETFFT_HEADER

#include "runcorr_result.hpp"

namespace xcca::runcorr::XCCA_RC_ISA {
namespace {
template <class T>
double run(XCCA_RC_POOLED_PARAMS(T)) {
    using Vd = detail::VecD<XCCA_RC_LANES>::type;
    return detail::pooled_result_lanes<T, XCCA_RC_LANES, pocketfft::detail::pocketfft_r<double>,
                                       pocketfft::detail::arr<Vd>>(XCCA_RC_POOLED_ARGS);
}
}  // namespace

double pooled_result(XCCA_RC_POOLED_PARAMS(float)) { return run<float>(XCCA_RC_POOLED_ARGS); }
double pooled_result(XCCA_RC_POOLED_PARAMS(double)) { return run<double>(XCCA_RC_POOLED_ARGS); }
}  // namespace xcca::runcorr::XCCA_RC_ISA

#undef pocketfft
#pragma GCC pop_options

namespace xcca::runcorr::XCCA_RC_ISA {
bool available() noexcept { return XCCA_RC_AVAILABLE; }
}  // namespace xcca::runcorr::XCCA_RC_ISA

#else  // other compilers / CPUs: the baseline pass only

#include <stdexcept>

namespace xcca::runcorr::XCCA_RC_ISA {
namespace {
template <class... A>
[[noreturn]] double not_built(const A&...) {
    throw std::logic_error("xcca::runcorr: " XCCA_RC_NAME " kernels not built");
}
}  // namespace
bool available() noexcept { return false; }
double pooled_result(XCCA_RC_POOLED_PARAMS(float)) { not_built(XCCA_RC_POOLED_ARGS); }
double pooled_result(XCCA_RC_POOLED_PARAMS(double)) { not_built(XCCA_RC_POOLED_ARGS); }
}  // namespace xcca::runcorr::XCCA_RC_ISA

#endif
