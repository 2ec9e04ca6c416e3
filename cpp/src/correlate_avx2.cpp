// The correlation engine compiled for AVX2 + FMA (8 float / 4 double lanes), chosen at run time by correlate.cpp
// when the CPU has them; wheels stay portable (no -march flags). pocketfft is included here under another namespace
// name so that none of its (inline/template) symbols can be merged with the baseline build's by the linker.
#include "xcca/correlate.hpp"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)

// Every standard header the engine and pocketfft use, before the target pragma: their templates keep the baseline
// ISA wherever they are instantiated.
#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <complex>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <queue>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>

#include <immintrin.h>
#include <vector>

#include "xcca/fft.hpp"
#include "xcca/threads.hpp"
#include "cpu_features.hpp"

#pragma GCC push_options
#pragma GCC target("avx2,fma")

#define POCKETFFT_NO_MULTITHREADING
#define pocketfft xcca_pocketfft_avx2
#include XCCA_POCKETFFT_HEADER

// The target pragma does not change pocketfft's VLEN (chosen from the command-line ISA macros): set the lanes here.
#define XCCA_CORR_LANES_F 8
#define XCCA_CORR_LANES_D 4
// The C++ front end does not see the pragma in __AVX2__ (it lexes the file first): tell the engine explicitly.
#define XCCA_CORR_AVX2 1
namespace xcca::correlate {
namespace {
#include "correlate_engine.hpp"
}  // namespace

namespace isa_avx2 {
void run_engine(const Rings<float>& r, const Options& o, const std::size_t* sp, std::size_t units,
                const std::size_t* qp, std::size_t np, float* out) {
    Engine<float>(r, o, sp, units, qp, np).run(out);
}
void run_engine(const Rings<double>& r, const Options& o, const std::size_t* sp, std::size_t units,
                const std::size_t* qp, std::size_t np, double* out) {
    Engine<double>(r, o, sp, units, qp, np).run(out);
}
}  // namespace isa_avx2
}  // namespace xcca::correlate

#undef pocketfft
#pragma GCC pop_options

namespace xcca::correlate::isa_avx2 {
bool available() noexcept {
    return xcca::detail::cpu_has_avx2_fma();
}
}  // namespace xcca::correlate::isa_avx2

#else  // other compilers / CPUs: the baseline engine only

#include <stdexcept>

namespace xcca::correlate::isa_avx2 {
bool available() noexcept { return false; }
void run_engine(const Rings<float>&, const Options&, const std::size_t*, std::size_t, const std::size_t*,
                std::size_t, float*) {
    throw std::logic_error("xcca: AVX2 engine not built");
}
void run_engine(const Rings<double>&, const Options&, const std::size_t*, std::size_t, const std::size_t*,
                std::size_t, double*) {
    throw std::logic_error("xcca: AVX2 engine not built");
}
}  // namespace xcca::correlate::isa_avx2

#endif
