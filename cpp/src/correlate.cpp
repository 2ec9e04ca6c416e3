// Masked circular correlations: pocketfft real transforms run on several rings at once (one ring per SIMD lane,
// like scipy.fft does across rows), with |F|^2 (or conj(A) B), the inverse and the division by the mask pair counts
// fused per group of rings, so no full-size temporaries are made. The engine itself is in correlate_engine.hpp,
// built here for the baseline ISA and in correlate_avx2.cpp for AVX2 (picked at run time).
#include "xcca/correlate.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "pocketfft_impl.hpp"
#include "xcca/fft.hpp"
#include "xcca/threads.hpp"

namespace xcca::correlate {

namespace isa_avx2 {  // correlate_avx2.cpp
bool available() noexcept;
void run_engine(const Rings<float>&, const Options&, const std::size_t*, std::size_t, const std::size_t*,
                std::size_t, float*);
void run_engine(const Rings<double>&, const Options&, const std::size_t*, std::size_t, const std::size_t*,
                std::size_t, double*);
}  // namespace isa_avx2

namespace {

#include "correlate_engine.hpp"

template <class T>
void run_engine(const Rings<T>& r, const Options& o, const std::size_t* sp, std::size_t units,
                const std::size_t* qp, std::size_t np, T* out) {
    if (isa_avx2::available())
        isa_avx2::run_engine(r, o, sp, units, qp, np, out);
    else
        Engine<T>(r, o, sp, units, qp, np).run(out);
}

template <class T>
void check_rings(const Rings<T>& r, const Options& opt) {
    if (r.n == 0) throw std::invalid_argument("xcca::correlate: ring length n must be >= 1");
    if (!r.data && r.n_shots * r.nq > 0) throw std::invalid_argument("xcca::correlate: null ring data");
    if (r.mask) {
        const std::size_t m = r.n_mask_rows;
        if (!(m == 1 || m == r.nq || m == r.n_shots * r.nq))
            throw std::invalid_argument("xcca::correlate: n_mask_rows must be 1, nq or n_shots * nq, got " +
                                        std::to_string(m));
    }
    if (opt.raw_sums && (r.mask || opt.normalize != Normalize::none))
        throw std::invalid_argument("xcca::correlate: raw_sums needs no mask and Normalize::none");
}

void check_pairs(const std::size_t* pairs, std::size_t n_pairs, std::size_t limit, const char* what) {
    if (n_pairs && !pairs) throw std::invalid_argument(std::string("xcca::correlate: null ") + what);
    for (std::size_t i = 0; i < 2 * n_pairs; ++i)
        if (pairs[i] >= limit)
            throw std::out_of_range(std::string("xcca::correlate: ") + what + " index " + std::to_string(pairs[i]) +
                                    " out of range [0, " + std::to_string(limit) + ")");
}

}  // namespace

void mask_pair_counts(const std::uint8_t* ma, const std::uint8_t* mb, std::size_t n, std::int64_t* out) {
    if (n == 0) return;
    CountScratch cs;
    pair_counts(ma, mb, n, cs, [out](std::size_t k, std::int64_t c) { out[k] = c; });
}

template <class T>
void autocorrelate(const Rings<T>& rings, T* out, const Options& opt) {
    check_rings(rings, opt);
    run_engine(rings, opt, nullptr, rings.n_shots, nullptr, 0, out);
}

template <class T>
void cross_correlate(const Rings<T>& rings, const std::size_t* q_pairs, std::size_t n_pairs, T* out,
                     const Options& opt) {
    check_rings(rings, opt);
    check_pairs(q_pairs, n_pairs, rings.nq, "q pair");
    if (n_pairs == 0) return;
    run_engine(rings, opt, nullptr, rings.n_shots, q_pairs, n_pairs, out);
}

template <class T>
void difference_correlate(const Rings<T>& rings, const std::size_t* shot_pairs, std::size_t n_shot_pairs,
                          const std::size_t* q_pairs, std::size_t n_q_pairs, T* out, const Options& opt) {
    check_rings(rings, opt);
    check_pairs(shot_pairs, n_shot_pairs, rings.n_shots, "shot pair");
    if (q_pairs) {
        check_pairs(q_pairs, n_q_pairs, rings.nq, "q pair");
        if (n_q_pairs == 0) return;
    }
    run_engine(rings, opt, shot_pairs, n_shot_pairs, q_pairs, n_q_pairs, out);
}

template void autocorrelate<float>(const Rings<float>&, float*, const Options&);
template void autocorrelate<double>(const Rings<double>&, double*, const Options&);
template void cross_correlate<float>(const Rings<float>&, const std::size_t*, std::size_t, float*, const Options&);
template void cross_correlate<double>(const Rings<double>&, const std::size_t*, std::size_t, double*,
                                      const Options&);
template void difference_correlate<float>(const Rings<float>&, const std::size_t*, std::size_t, const std::size_t*,
                                          std::size_t, float*, const Options&);
template void difference_correlate<double>(const Rings<double>&, const std::size_t*, std::size_t,
                                           const std::size_t*, std::size_t, double*, const Options&);

}  // namespace xcca::correlate
