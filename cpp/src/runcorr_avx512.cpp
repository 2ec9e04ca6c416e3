// The run correlator's result pass compiled for AVX-512 (F, VL, DQ; 8 double lanes), chosen at run time by runcorr.cpp
// when the CPU has it; wheels stay portable (no -march flags). The same source as runcorr_avx2.cpp (runcorr_result.hpp)
// with twice the lanes: pocketfft's vector transforms are lane-wise, with the same operations (and the same FMA
// contractions: both units are compiled with FMA) in every lane, so each pair's results are bit-identical to the AVX2
// pass's; what changes is that one vector inverse FFT serves 8 pairs (measured: about half the FFT time at n = 3600).
// pocketfft is included under yet another namespace name, so that none of its inline/template symbols can be merged
// with the other builds'.
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
#pragma GCC target("avx2,fma,avx512f,avx512vl,avx512dq")

#define POCKETFFT_NO_MULTITHREADING
#define pocketfft xcca_pocketfft_rc_avx512
#include XCCA_POCKETFFT_HEADER

#include "runcorr_result.hpp"

namespace xcca::runcorr::isa_avx512 {
namespace {
using Vd8 = detail::VecD<8>::type;
template <class T>
double run(const std::complex<T>* num, const std::complex<double>* cnt, std::size_t B, std::size_t nh,
           std::size_t nqu, std::size_t n, std::size_t ld, const std::size_t* off, const double* sg,
           const std::size_t* offc, const double* sgc, const std::size_t* order, std::size_t P,
           const std::size_t* gstart, std::size_t G, std::size_t tile, bool jackknife, double* corr, double* err,
           std::int64_t* counts, double* rep, int n_threads) {
    return detail::pooled_result_lanes<T, 8, pocketfft::detail::pocketfft_r<double>, pocketfft::detail::arr<Vd8>>(
        num, cnt, B, nh, nqu, n, ld, off, sg, offc, sgc, order, P, gstart, G, tile, jackknife, corr, err, counts,
        rep, n_threads);
}
}  // namespace

double pooled_result(const std::complex<float>* num, const std::complex<double>* cnt, std::size_t B, std::size_t nh,
                     std::size_t nqu, std::size_t n, std::size_t ld, const std::size_t* off, const double* sg,
                     const std::size_t* offc, const double* sgc, const std::size_t* order, std::size_t P,
                     const std::size_t* gstart, std::size_t G, std::size_t tile, bool jackknife, double* corr,
                     double* err, std::int64_t* counts, double* rep, int n_threads) {
    return run(num, cnt, B, nh, nqu, n, ld, off, sg, offc, sgc, order, P, gstart, G, tile, jackknife, corr, err,
               counts, rep, n_threads);
}
double pooled_result(const std::complex<double>* num, const std::complex<double>* cnt, std::size_t B, std::size_t nh,
                     std::size_t nqu, std::size_t n, std::size_t ld, const std::size_t* off, const double* sg,
                     const std::size_t* offc, const double* sgc, const std::size_t* order, std::size_t P,
                     const std::size_t* gstart, std::size_t G, std::size_t tile, bool jackknife, double* corr,
                     double* err, std::int64_t* counts, double* rep, int n_threads) {
    return run(num, cnt, B, nh, nqu, n, ld, off, sg, offc, sgc, order, P, gstart, G, tile, jackknife, corr, err,
               counts, rep, n_threads);
}
}  // namespace xcca::runcorr::isa_avx512

#undef pocketfft
#pragma GCC pop_options

namespace xcca::runcorr::isa_avx512 {
bool available() noexcept { return xcca::detail::cpu_has_avx512() && xcca::detail::cpu_has_avx2_fma(); }
}  // namespace xcca::runcorr::isa_avx512

#else  // other compilers / CPUs: the baseline pass only

#include <stdexcept>

namespace xcca::runcorr::isa_avx512 {
bool available() noexcept { return false; }
double pooled_result(const std::complex<float>*, const std::complex<double>*, std::size_t, std::size_t, std::size_t,
                     std::size_t, std::size_t, const std::size_t*, const double*, const std::size_t*, const double*,
                     const std::size_t*, std::size_t, const std::size_t*, std::size_t, std::size_t, bool, double*,
                     double*, std::int64_t*, double*, int) {
    throw std::logic_error("xcca::runcorr: AVX-512 kernels not built");
}
double pooled_result(const std::complex<double>*, const std::complex<double>*, std::size_t, std::size_t,
                     std::size_t, std::size_t, std::size_t, const std::size_t*, const double*, const std::size_t*,
                     const double*, const std::size_t*, std::size_t, const std::size_t*, std::size_t, std::size_t,
                     bool, double*, double*, std::int64_t*, double*, int) {
    throw std::logic_error("xcca::runcorr: AVX-512 kernels not built");
}
}  // namespace xcca::runcorr::isa_avx512

#endif
